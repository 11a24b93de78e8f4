/*
 * lock: many threads on one lock. Under a page-coherent cluster the lock's
 * page ping-pongs between nodes (or the scheduler gathers the vCPUs).
 *
 * Check: inside the critical section a plain (non-atomic) counter and a plain
 * shadow are both advanced; the counter value each holder obtains is a ticket
 * that must be unique. At the end the counter, the shadow and the number of
 * acquisitions agree exactly, and the tickets sum to n(n+1)/2. Any failure
 * of mutual exclusion (or of coherence) loses an increment.
 */
#include "common.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("threads", "2", 1, 256, "threads contending for the lock"),
	WL_INT_PARAM("iters", "100000", 1, 1000000000, "acquisitions per thread"),
	WL_ENUM_PARAM("kind", "mutex", "mutex,spin", "pthread mutex, or a test-and-test-and-set spinlock"),
	WL_INT_PARAM("hold", "10", 0, 1000000, "work units done while holding the lock"),
	WL_PARAMS_END,
};

/* The lock and the data it protects share a page, as they usually do. */
static struct {
	pthread_mutex_t mutex;
	atomic_bool spin;
	uint64_t counter;
	uint64_t shadow;
	uint64_t scratch;
} shared __attribute__((aligned(4096))) = { .mutex = PTHREAD_MUTEX_INITIALIZER };

static bool use_spin;
static long long iters, hold;

struct worker {
	pthread_t thread;
	unsigned __int128 ticket_sum;
	uint64_t wait_samples[1024];
	size_t nsamples;
	pthread_barrier_t *start;
};

static void acquire(void)
{
	if (!use_spin) {
		pthread_mutex_lock(&shared.mutex);
		return;
	}
	unsigned spins = 0;
	for (;;) {
		if (!atomic_load_explicit(&shared.spin, memory_order_relaxed) &&
		    !atomic_exchange_explicit(&shared.spin, true, memory_order_acquire))
			return;
		wl_relax(&spins);
	}
}

static void release(void)
{
	if (use_spin)
		atomic_store_explicit(&shared.spin, false, memory_order_release);
	else
		pthread_mutex_unlock(&shared.mutex);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	long long every = iters / 1024 + 1;

	pthread_barrier_wait(w->start);
	for (long long i = 0; i < iters; i++) {
		bool sample = i % every == 0 && w->nsamples < 1024;
		uint64_t t0 = sample ? wl_now_ns() : 0;

		acquire();
		if (sample)
			w->wait_samples[w->nsamples++] = wl_now_ns() - t0;
		/* Read, work, write back: a second holder in here would lose an update. */
		uint64_t c = *(volatile uint64_t *)&shared.counter;
		for (long long h = 0; h < hold; h++)
			*(volatile uint64_t *)&shared.scratch += (uint64_t)h;
		*(volatile uint64_t *)&shared.counter = c + 1;
		*(volatile uint64_t *)&shared.shadow += 1;
		release();
		w->ticket_sum += c + 1;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("lock", params, argc, argv);
	int threads = (int)wl_int("threads");
	iters = wl_int("iters");
	hold = wl_int("hold");
	use_spin = strcmp(wl_str("kind"), "spin") == 0;
	struct worker *w = calloc((size_t)threads, sizeof(*w));
	pthread_barrier_t start;

	if (!w)
		wl_finish(false, "nomem");
	pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
	for (int t = 0; t < threads; t++) {
		w[t].start = &start;
		wl_thread_create(&w[t].thread, t, run, &w[t]);
	}
	uint64_t t0 = wl_now_ns();
	pthread_barrier_wait(&start);
	for (int t = 0; t < threads; t++)
		wl_thread_join(w[t].thread);
	uint64_t elapsed = wl_now_ns() - t0;

	if (wl_inject())
		shared.shadow += 1;

	uint64_t n = (uint64_t)iters * (uint64_t)threads;
	unsigned __int128 tickets = 0, expected = (unsigned __int128)n * (n + 1) / 2;
	size_t total_samples = 0;
	for (int t = 0; t < threads; t++) {
		tickets += w[t].ticket_sum;
		total_samples += w[t].nsamples;
	}
	uint64_t *waits = calloc(total_samples + 1, sizeof(*waits));
	size_t k = 0;
	for (int t = 0; waits && t < threads; t++)
		for (size_t i = 0; i < w[t].nsamples; i++)
			waits[k++] = w[t].wait_samples[i];

	wl_put_rate((long long)n, elapsed);
	wl_put_double("ns_per_op", (double)elapsed / (double)n);
	if (waits)
		wl_put_latency("acquire_ns", waits, k);
	wl_put_int("counter", (long long)shared.counter);
	wl_put_int("shadow", (long long)shared.shadow);
	bool ok = shared.counter == n && shared.shadow == n && tickets == expected;
	wl_put_int("tickets_ok", tickets == expected);
	wl_finish(ok, ok ? NULL : "count_mismatch");
}
