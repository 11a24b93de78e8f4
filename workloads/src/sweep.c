/*
 * sweep: sequential passes over a large region, the bulk-streaming case. Each
 * pass verifies the previous pass's pattern and writes its own. With several
 * threads, thread t takes slice (t + pass) mod threads, so every pass moves
 * each slice to a different thread (and node).
 *
 * Check: every word is verified against the pattern of the pass that wrote
 * it, and the final pass is verified in full by the main thread.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("threads", "1", 1, 256, "threads; slices rotate between them each pass"),
	WL_INT_PARAM("size_mb", "64", 1, 65536, "region size in MiB"),
	WL_INT_PARAM("passes", "4", 1, 100000, "verify-and-rewrite passes"),
	WL_PARAMS_END,
};

static uint64_t *region;
static size_t words;
static int threads;
static long passes;
static pthread_barrier_t barrier;
static _Atomic long long mismatches;

/* Depends on pass and index, so a stale page from any earlier pass is caught. */
static uint64_t pattern(long pass, size_t i)
{
	return (i * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)(pass + 1) * 0xd6e8feb86659fd93ull);
}

struct worker {
	pthread_t thread;
	int index;
};

static void *run(void *arg)
{
	struct worker *w = arg;

	for (long p = 0; p < passes; p++) {
		int slice = (int)((w->index + p) % threads);
		size_t lo = words * (size_t)slice / (size_t)threads;
		size_t hi = words * (size_t)(slice + 1) / (size_t)threads;
		long long bad = 0;

		if (p == 0) {
			for (size_t i = lo; i < hi; i++)
				region[i] = pattern(p, i);
		} else {
			for (size_t i = lo; i < hi; i++) {
				bad += region[i] != pattern(p - 1, i);
				region[i] = pattern(p, i);
			}
		}
		if (bad)
			atomic_fetch_add(&mismatches, bad);
		pthread_barrier_wait(&barrier);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("sweep", params, argc, argv);
	threads = (int)wl_int("threads");
	passes = (long)wl_int("passes");
	size_t bytes = (size_t)wl_int("size_mb") << 20;
	words = bytes / sizeof(uint64_t);
	region = wl_alloc(bytes);
	struct worker *w = calloc((size_t)threads, sizeof(*w));

	if (!w)
		wl_finish(false, "nomem");
	pthread_barrier_init(&barrier, NULL, (unsigned)threads);
	uint64_t start = wl_now_ns();
	for (int t = 0; t < threads; t++) {
		w[t].index = t;
		wl_thread_create(&w[t].thread, t, run, &w[t]);
	}
	for (int t = 0; t < threads; t++)
		wl_thread_join(w[t].thread);
	uint64_t elapsed = wl_now_ns() - start;

	if (wl_inject())
		region[words / 3] ^= 1ull << 17;

	long long final_bad = 0;
	for (size_t i = 0; i < words; i++)
		final_bad += region[i] != pattern(passes - 1, i);

	/* The first pass only writes; later passes read and write. */
	double moved = (double)bytes * (double)(2 * passes - 1);
	double s = (double)elapsed / 1e9;
	wl_put_rate((long long)passes, elapsed);
	wl_put_int("bytes", (long long)bytes);
	wl_put_double("bytes_moved", moved);
	wl_put_double("mb_per_s", moved / s / 1048576.0);
	wl_put_int("mismatches", atomic_load(&mismatches) + final_bad);
	bool ok = atomic_load(&mismatches) == 0 && final_bad == 0;
	wl_finish(ok, ok ? NULL : "pattern_mismatch");
}
