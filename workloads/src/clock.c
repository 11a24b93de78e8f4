/*
 * clock: guest time must never go backwards, on any vCPU, even while vCPUs
 * migrate between nodes.
 *
 * One thread per vCPU in `cpus` reads CLOCK_MONOTONIC and the TSC in a loop.
 * Two checks:
 *  - per thread (so per vCPU, since threads are pinned): both the monotonic
 *    clock and the TSC never step back;
 *  - across vCPUs: a reading must not be older than the latest reading any
 *    thread had already published before it read (a shared atomic maximum),
 *    which catches nodes whose clocks disagree.
 * inject=1 makes one reading of one thread one millisecond too old.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("duration_ms", "2000", 10, 3600000, "how long each thread reads the clocks"),
	WL_PARAMS_END,
};

struct reader {
	pthread_t thread;
	int index;
	long long reads, mono_back, tsc_back, cross_back;
	uint64_t worst_back_ns;
};

static _Atomic uint64_t latest_published;
static uint64_t deadline_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void publish(uint64_t t)
{
	uint64_t cur = atomic_load_explicit(&latest_published, memory_order_relaxed);
	while (cur < t && !atomic_compare_exchange_weak(&latest_published, &cur, t))
		;
}

static void *read_clocks(void *arg)
{
	struct reader *r = arg;
	uint64_t last_mono = 0, last_tsc = 0;
	bool injected = false;

	for (;;) {
		uint64_t seen = atomic_load_explicit(&latest_published, memory_order_acquire);
		uint64_t t = mono_ns();
		uint64_t tsc = __rdtsc();

		if (wl_inject() && r->index == 0 && !injected && r->reads == 1000) {
			t = seen > 1000000 ? seen - 1000000 : 0;
			injected = true;
		}
		if (t < last_mono) {
			r->mono_back++;
			if (last_mono - t > r->worst_back_ns)
				r->worst_back_ns = last_mono - t;
		}
		if (t < seen) {
			r->cross_back++;
			if (seen - t > r->worst_back_ns)
				r->worst_back_ns = seen - t;
		}
		if (tsc < last_tsc)
			r->tsc_back++;
		last_mono = t > last_mono ? t : last_mono;
		last_tsc = tsc > last_tsc ? tsc : last_tsc;
		publish(t);
		r->reads++;
		if (t >= deadline_ns && r->reads > 1000)
			return NULL;
	}
}

int main(int argc, char **argv)
{
	wl_init("clock", params, argc, argv);
	int n = wl_ncpus();
	struct reader *readers = calloc((size_t)n, sizeof(*readers));
	if (!readers)
		wl_finish(false, "nomem");

	uint64_t start = wl_now_ns();
	deadline_ns = mono_ns() + (uint64_t)wl_int("duration_ms") * 1000000ull;
	for (int i = 0; i < n; i++) {
		readers[i].index = i;
		wl_thread_create(&readers[i].thread, i, read_clocks, &readers[i]);
	}
	long long reads = 0, mono_back = 0, tsc_back = 0, cross_back = 0;
	uint64_t worst = 0;
	for (int i = 0; i < n; i++) {
		wl_thread_join(readers[i].thread);
		reads += readers[i].reads;
		mono_back += readers[i].mono_back;
		tsc_back += readers[i].tsc_back;
		cross_back += readers[i].cross_back;
		if (readers[i].worst_back_ns > worst)
			worst = readers[i].worst_back_ns;
	}
	wl_put_rate(reads, wl_now_ns() - start);
	wl_put_int("threads", n);
	wl_put_int("mono_backwards", mono_back);
	wl_put_int("tsc_backwards", tsc_back);
	wl_put_int("cross_vcpu_backwards", cross_back);
	wl_put_int("worst_step_back_ns", (long long)worst);
	bool ok = mono_back == 0 && tsc_back == 0 && cross_back == 0;
	wl_finish(ok, ok ? NULL : "time went backwards");
}
