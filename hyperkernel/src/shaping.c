/* shaping.c - per-link latency and bandwidth emulation for experiments.
 * A message leaves the simulated wire after the wire has carried everything
 * queued before it (bandwidth) plus the fixed one-way latency. */
#include "hk.h"

void hk_shaper_init(struct hk_shaper *s, uint32_t latency_us, uint64_t bandwidth)
{
	s->latency_us = latency_us;
	s->bandwidth = bandwidth;
	s->next_free_ns = 0;
}

bool hk_shaper_active(const struct hk_shaper *s)
{
	return s->latency_us || s->bandwidth;
}

uint64_t hk_shaper_release_ns(struct hk_shaper *s, uint64_t now_ns, size_t len)
{
	uint64_t start = now_ns > s->next_free_ns ? now_ns : s->next_free_ns;
	uint64_t wire = s->bandwidth ? (uint64_t)len * 1000000000ull / s->bandwidth : 0;
	s->next_free_ns = start + wire;
	return start + wire + (uint64_t)s->latency_us * 1000ull;
}
