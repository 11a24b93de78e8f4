/* test_stats.c - histogram percentiles and the JSON export. */
#include <string.h>

#include "hk.h"
#include "hk_test.h"

static void test_histogram_percentiles(void)
{
	struct hk_hist h = { 0 };
	CHECK(hk_hist_percentile(&h, 0.5) == 0);
	for (int i = 0; i < 99; i++)
		hk_hist_add(&h, 1000); /* bucket [512, 1024) .. */
	hk_hist_add(&h, 1000000);
	uint64_t p50 = hk_hist_percentile(&h, 0.5), p99 = hk_hist_percentile(&h, 0.99);
	CHECK(p50 >= 1000 && p50 < 2048);
	CHECK(p99 >= 1000 && p99 < 2048);
	CHECK(hk_hist_percentile(&h, 1.0) == 1000000);
	CHECK(h.count == 100 && h.max_ns == 1000000);
}

static void test_json_has_everything(void)
{
	struct hk_stats st;
	CHECK(hk_stats_init(&st, 100) == 0);
	hk_stats_stall_done(&st, 42, 7, false, 30000);
	hk_stats_stall_done(&st, 42, 7, true, 50000);
	hk_stats_stall_done(&st, 43, 9, false, 10000);
	hk_stats_set_vcpu(&st, 42, 3);
	hk_stats_msg(&st, true, HK_MSG_DATA, 4124);
	atomic_fetch_add(&st.malformed, 2);
	char *js = hk_stats_to_json(&st, 1, 5, 7, 10, "page");
	CHECK(js != NULL);
	CHECK(strstr(js, "\"node\":1"));
	CHECK(strstr(js, "\"resident_pages\":5,\"peak_resident_pages\":7,\"budget_pages\":10"));
	CHECK(strstr(js, "\"read_stalls\":2"));
	CHECK(strstr(js, "\"write_stalls\":1"));
	CHECK(strstr(js, "\"tid\":42,\"vcpu\":3"));
	CHECK(strstr(js, "\"data\":{\"sent\":1,\"sent_bytes\":4124"));
	CHECK(strstr(js, "\"malformed_messages\":2"));
	CHECK(strstr(js, "\"hottest_pages\":[{\"offset\":28672,\"stalls\":2}"));
	CHECK(js[0] == '{' && js[strlen(js) - 1] == '}');
	free(js);
	hk_stats_destroy(&st);
}

int main(void)
{
	RUN(test_histogram_percentiles);
	RUN(test_json_has_everything);
	TEST_DONE();
}
