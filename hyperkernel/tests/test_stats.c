/* test_stats.c - histogram percentiles and the JSON export. */
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
	hk_stats_fault_at(&st, 7, 0x9c4); /* line 0x9c0, twice: named once */
	hk_stats_stall_done(&st, 42, 7, false, 30000);
	hk_stats_fault_at(&st, 7, 0x9f8);
	hk_stats_stall_done(&st, 42, 7, true, 50000);
	hk_stats_fault_at(&st, 7, 0x10);
	hk_stats_fault_at(&st, 100, 0x10); /* no such page: ignored */
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
	CHECK(strstr(js, "\"hottest_pages\":[{\"offset\":28672,\"stalls\":2,\"lines\":[2496,0]}"));
	CHECK(strstr(js, "{\"offset\":36864,\"stalls\":1,\"lines\":[]}"));
	CHECK(js[0] == '{' && js[strlen(js) - 1] == '}');
	free(js);
	hk_stats_destroy(&st);
}

/* Hazard 4 (issue 8): the export scans every page for the hottest ones; the
 * event thread completes stalls under the stats lock, so the scan must not
 * hold it.  The per-page counters here live in memory whose second page is
 * missing (userfaultfd): the scan blocks there, and while it does the lock
 * must be free.  Deterministic: no timing. */
struct export_arg {
	struct hk_stats *st;
	char *js;
};

static void *export_main(void *arg)
{
	struct export_arg *a = arg;
	a->js = hk_stats_to_json(a->st, 0, 0, 0, 0, "page");
	return NULL;
}

static void test_the_page_scan_does_not_hold_the_stats_lock(void)
{
	struct hk_memory mem;
	CHECK(hk_memory_open(&mem) == 0);
	size_t len = 2 * HK_PAGE_SIZE;
	uint8_t *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(region != MAP_FAILED && hk_memory_add_region(&mem, region, len) == 0);
	CHECK(hk_memory_install_zero(&mem, 0, false) == 0); /* page 0 present, page 1 missing */
	struct hk_stats st;
	CHECK(hk_stats_init(&st, 1) == 0);
	free(st.page_stalls);
	free(st.page_lines);
	st.page_stalls = (uint32_t *)region;
	st.npages = len / sizeof(uint32_t);
	st.page_lines = calloc(st.npages, sizeof(*st.page_lines));
	st.page_stalls[3] = 7;
	struct export_arg a = { &st, NULL };
	pthread_t th;
	pthread_create(&th, NULL, export_main, &a);
	/* wait until the scan is blocked in the missing page */
	struct pollfd p = { .fd = mem.uffd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
	int r = pthread_mutex_trylock(&st.lock);
	CHECK(r == 0); /* the scan runs without the lock */
	if (r == 0)
		pthread_mutex_unlock(&st.lock);
	CHECK(hk_memory_install_zero(&mem, 1, false) == 0); /* let the scan finish */
	pthread_join(th, NULL);
	CHECK(a.js && strstr(a.js, "\"hottest_pages\":[{\"offset\":12288,\"stalls\":7,\"lines\":[]}]"));
	free(a.js);
	st.page_stalls = NULL;
	hk_stats_destroy(&st);
	hk_memory_close(&mem);
	munmap(region, len);
}

int main(void)
{
	RUN(test_histogram_percentiles);
	RUN(test_json_has_everything);
	RUN(test_the_page_scan_does_not_hold_the_stats_lock);
	TEST_DONE();
}
