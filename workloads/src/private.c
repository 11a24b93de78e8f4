/*
 * private (control): every thread updates its own buffer and nothing else, so
 * a page-coherent cluster should run it near single-node speed once each
 * thread's pages have settled on its node.
 *
 * The rate (ops_per_s) counts the passes after warm-up: every thread has
 * written its whole buffer once before the clock starts, so it measures the
 * steady state the catalogue asks about. The warm-up (thread start and the
 * first touch of every page, where a cluster pays its one-time transfers and
 * the guest's page faults) is reported on its own as warmup_s, and the whole
 * run as total_ops_per_s, so neither cost hides in the other.
 *
 * Check: each element's final value is a closed function of its index, the
 * thread and the number of passes, so the main thread recomputes every
 * element independently and compares buffer contents and checksums.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("threads", "2", 1, 256, "worker threads, each with its own buffer"),
	WL_INT_PARAM("size_kb", "4096", 4, 1048576, "buffer size per thread in KiB"),
	WL_INT_PARAM("passes", "8", 1, 100000, "read-modify-write passes over each buffer"),
	WL_PARAMS_END,
};

struct worker {
	pthread_t thread;
	int index;
	uint64_t *buf;
	size_t words;
	long passes;
	uint64_t checksum;
	pthread_barrier_t *warm;
};

static uint64_t initial(int thread, size_t i)
{
	return wl_mix64(((uint64_t)thread << 40) ^ i);
}

/* One pass's update; every step depends on the previous value, so a lost or stale write shows. */
static uint64_t step(uint64_t v, long pass)
{
	return v * 6364136223846793005ull + 1442695040888963407ull + (uint64_t)pass;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	uint64_t sum = 0;

	for (size_t i = 0; i < w->words; i++)
		w->buf[i] = initial(w->index, i);
	pthread_barrier_wait(w->warm);
	for (long p = 0; p < w->passes; p++)
		for (size_t i = 0; i < w->words; i++)
			w->buf[i] = step(w->buf[i], p);
	for (size_t i = 0; i < w->words; i++)
		sum += w->buf[i] ^ i;
	w->checksum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("private", params, argc, argv);
	int threads = (int)wl_int("threads");
	size_t words = (size_t)wl_int("size_kb") * 1024 / sizeof(uint64_t);
	long passes = (long)wl_int("passes");
	struct worker *w = calloc((size_t)threads, sizeof(*w));
	pthread_barrier_t warm;

	if (!w)
		wl_finish(false, "nomem");
	pthread_barrier_init(&warm, NULL, (unsigned)threads + 1);
	for (int t = 0; t < threads; t++) {
		w[t] = (struct worker){ .index = t, .words = words, .passes = passes, .warm = &warm };
		w[t].buf = wl_alloc(words * sizeof(uint64_t));
	}
	uint64_t start = wl_now_ns();
	for (int t = 0; t < threads; t++)
		wl_thread_create(&w[t].thread, t, run, &w[t]);
	pthread_barrier_wait(&warm);
	uint64_t warmed = wl_now_ns();
	for (int t = 0; t < threads; t++)
		wl_thread_join(w[t].thread);
	uint64_t end = wl_now_ns();
	uint64_t elapsed = end - warmed;

	if (wl_inject())
		w[threads - 1].buf[words / 2] ^= 1;

	long long mismatches = 0, bad_checksums = 0;
	for (int t = 0; t < threads; t++) {
		uint64_t sum = 0;

		for (size_t i = 0; i < words; i++) {
			uint64_t v = initial(t, i);

			for (long p = 0; p < passes; p++)
				v = step(v, p);
			mismatches += w[t].buf[i] != v;
			sum += v ^ i;
		}
		bad_checksums += sum != w[t].checksum;
	}

	long long ops = (long long)threads * (long long)words * passes;
	wl_put_rate(ops, elapsed);
	wl_put_double("warmup_s", (double)(warmed - start) / 1e9);
	wl_put_double("total_ops_per_s", (double)(ops + (long long)threads * (long long)words) /
					   ((double)(end - start) / 1e9));
	wl_put_int("bytes", (long long)(threads * words * sizeof(uint64_t)));
	wl_put_double("bytes_per_s", (double)ops * 16 / ((double)elapsed / 1e9));
	wl_put_int("mismatches", mismatches);
	wl_put_int("bad_checksums", bad_checksums);
	bool ok = mismatches == 0 && bad_checksums == 0;
	wl_finish(ok, ok ? NULL : "data_mismatch");
}
