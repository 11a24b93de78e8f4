/* clock.c - the library's notion of now.  A file of its own so that the
 * deterministic simulation (tests/sim) can link a virtual clock instead. */
#include <time.h>

#include "hk.h"

uint64_t hk_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
