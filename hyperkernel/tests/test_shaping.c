/* test_shaping.c - latency is added per message, bandwidth serialises. */
#include "hk.h"
#include "hk_test.h"

static void test_latency_and_bandwidth(void)
{
	struct hk_shaper s;
	hk_shaper_init(&s, 0, 0);
	CHECK(!hk_shaper_active(&s));
	hk_shaper_init(&s, 100, 1000000); /* 100 us, 1 MB/s */
	CHECK(hk_shaper_active(&s));
	uint64_t t = 1000000000ull;
	/* 1000 bytes at 1 MB/s = 1 ms on the wire, + 100 us */
	CHECK(hk_shaper_release_ns(&s, t, 1000) == t + 1000000 + 100000);
	/* queued behind the first: wire busy until t+1ms */
	CHECK(hk_shaper_release_ns(&s, t, 1000) == t + 2000000 + 100000);
	/* long after: the wire is idle again */
	CHECK(hk_shaper_release_ns(&s, t + 10000000, 0) == t + 10000000 + 100000);
}

int main(void)
{
	RUN(test_latency_and_bandwidth);
	TEST_DONE();
}
