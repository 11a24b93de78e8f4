/*
 * falseshare: each thread increments its own counter, the counters spaced
 * 8, 64 or 4096 bytes apart. 64 bytes apart is fine on real hardware (one
 * cache line each) but still one page on a page-granular cluster; 4096
 * should behave like private data.
 *
 * Check: every counter equals exactly its thread's increments, and the bytes
 * between counters are untouched.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("threads", "2", 1, 256, "threads, one counter each"),
	WL_ENUM_PARAM("spacing", "64", "8,64,4096", "bytes between neighbouring counters"),
	WL_INT_PARAM("iters", "2000000", 1, 10000000000LL, "increments per thread"),
	WL_PARAMS_END,
};

struct worker {
	pthread_t thread;
	volatile uint64_t *counter;
	long long iters;
	pthread_barrier_t *start;
};

static void *run(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->start);
	/* volatile: every increment is a real load and store to the shared line or page. */
	for (long long i = 0; i < w->iters; i++)
		*w->counter = *w->counter + 1;
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("falseshare", params, argc, argv);
	int threads = (int)wl_int("threads");
	size_t spacing = (size_t)atoi(wl_str("spacing"));
	long long iters = wl_int("iters");
	size_t bytes = spacing * (size_t)threads + 4096;
	unsigned char *area = wl_alloc(bytes);
	struct worker *w = calloc((size_t)threads, sizeof(*w));
	pthread_barrier_t start;

	if (!w)
		wl_finish(false, "nomem");
	pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
	for (int t = 0; t < threads; t++) {
		w[t] = (struct worker){ .counter = (volatile uint64_t *)(area + spacing * (size_t)t),
					.iters = iters, .start = &start };
		wl_thread_create(&w[t].thread, t, run, &w[t]);
	}
	uint64_t t0 = wl_now_ns();
	pthread_barrier_wait(&start);
	for (int t = 0; t < threads; t++)
		wl_thread_join(w[t].thread);
	uint64_t elapsed = wl_now_ns() - t0;

	if (wl_inject())
		*w[threads / 2].counter += 1;

	long long wrong = 0, stray = 0;
	for (int t = 0; t < threads; t++)
		wrong += *w[t].counter != (uint64_t)iters;
	/* Anything non-zero outside the counters means a write landed in the wrong place. */
	for (size_t off = 0; off < bytes; off += sizeof(uint64_t))
		if (off % spacing != 0 || off / spacing >= (size_t)threads)
			stray += *(uint64_t *)(area + off) != 0;

	long long ops = iters * threads;
	wl_put_rate(ops, elapsed);
	wl_put_double("ns_per_op", (double)elapsed * threads / (double)ops);
	wl_put_int("bytes", (long long)(spacing * (size_t)threads));
	wl_put_int("wrong_counters", wrong);
	wl_put_int("stray_writes", stray);
	bool ok = wrong == 0 && stray == 0;
	wl_finish(ok, ok ? NULL : "count_mismatch");
}
