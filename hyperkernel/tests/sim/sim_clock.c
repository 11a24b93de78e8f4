/* sim_clock.c - virtual time for the simulation (replaces src/clock.c). */
#include "sim.h"

uint64_t hk_now_ns(void)
{
	return sim.now_ns;
}
