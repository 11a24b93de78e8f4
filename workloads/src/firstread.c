/*
 * firstread: pages written on one vCPU, then read for the first time on
 * another, normally a vCPU of a different node. This is the stall a guest
 * thread sees when it touches data the other node owns, measured from inside
 * the guest (testbed bench stall).
 *
 * The writer (pinned to the first cpu of cpus=) writes one value into each of
 * `pages` distinct pages and fills a `stream_mb` region, then publishes. So its
 * node owns all of them, written, when the reader starts. The reader (pinned to
 * the second cpu) then
 *   1. reads each page once, in a shuffled order (so read-ahead of
 *      sequential pages cannot hide the per-page cost), timing each read with
 *      clock_gettime around the single load: first_read_ns. It times a second
 *      read of the same page the same way right after: reread_ns, the cost of
 *      the timing itself on a page that is already here;
 *   2. reads the whole region once, sequentially, summing it: stream_mb_per_s
 *      (MiB/s, as sweep reports).
 *
 * Check: every value read must be the value the writer wrote. The first reads
 * are compared with the writer's values; the streamed region is verified word
 * by word after the timed pass, and the timed pass's sum must equal the sum of
 * what was written (a stale page seen while streaming, then fresh when
 * verified, still fails).
 *
 * inject=1: the writer corrupts one value in the pages and one word in the
 * region after the expected values are fixed; both checks must see it.
 */
#include "common.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))

static const struct wl_param params[] = {
	WL_INT_PARAM("pages", "1000", 1, 1000000,
		     "pages written on the first cpu, each read once (timed) on the second"),
	WL_INT_PARAM("stream_mb", "64", 1, 65536,
		     "MiB written on the first cpu, then read through once on the second"),
	WL_PARAMS_END,
};

static uint64_t *pages_area;  /* `pages` pages, one value in each */
static uint64_t *stream_area; /* the streamed region */
static size_t npages, nwords;
static _Alignas(4096) _Atomic bool written;
static int writer_cpu = -1, reader_cpu = -1;

static uint64_t page_value(size_t i)
{
	return wl_mix64(i ^ 0x5eed5eed00000000ull);
}

static uint64_t stream_value(size_t w)
{
	return wl_mix64(w + 0x57ea000000000000ull);
}

/* Where page i's value lives: a different word in each page. */
static volatile uint64_t *page_slot(size_t i)
{
	return &pages_area[i * WORDS_PER_PAGE + i % WORDS_PER_PAGE];
}

static void *writer(void *arg)
{
	(void)arg;
	writer_cpu = sched_getcpu();
	for (size_t i = 0; i < npages; i++)
		*page_slot(i) = page_value(i);
	for (size_t w = 0; w < nwords; w++)
		stream_area[w] = stream_value(w);
	if (wl_inject()) {
		*page_slot(npages / 2) ^= 1ull << 17;
		stream_area[nwords / 3] ^= 1ull << 17;
	}
	atomic_store_explicit(&written, true, memory_order_release);
	return NULL;
}

struct reader_out {
	uint64_t *first_ns, *reread_ns;
	long long read_mismatches, stream_mismatches;
	uint64_t pages_ns, stream_ns;
};

static void *reader(void *arg)
{
	struct reader_out *out = arg;
	size_t *order = malloc(npages * sizeof(*order));
	struct wl_rng rng = { 1 };
	unsigned spins = 0;

	reader_cpu = sched_getcpu();
	out->first_ns = calloc(npages, sizeof(uint64_t));
	out->reread_ns = calloc(npages, sizeof(uint64_t));
	if (!order || !out->first_ns || !out->reread_ns)
		wl_finish(false, "nomem");
	/* Fisher-Yates; every buffer of ours is touched here, before the timing. */
	for (size_t i = 0; i < npages; i++)
		order[i] = i;
	for (size_t i = npages - 1; i > 0; i--) {
		size_t j = (size_t)wl_rand_below(&rng, i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	memset(out->first_ns, 0, npages * sizeof(uint64_t));
	memset(out->reread_ns, 0, npages * sizeof(uint64_t));
	while (!atomic_load_explicit(&written, memory_order_acquire))
		wl_relax(&spins);

	uint64_t start = wl_now_ns();
	for (size_t k = 0; k < npages; k++) {
		size_t i = order[k];
		volatile uint64_t *slot = page_slot(i);
		uint64_t t0 = wl_now_ns();
		uint64_t first = *slot;
		uint64_t t1 = wl_now_ns();
		uint64_t again = *slot;
		uint64_t t2 = wl_now_ns();

		out->first_ns[k] = t1 - t0;
		out->reread_ns[k] = t2 - t1;
		out->read_mismatches += (first != page_value(i)) + (again != page_value(i));
	}
	out->pages_ns = wl_now_ns() - start;

	const volatile uint64_t *region = stream_area;
	uint64_t sum = 0;
	start = wl_now_ns();
	for (size_t w = 0; w < nwords; w++)
		sum += region[w];
	out->stream_ns = wl_now_ns() - start;

	uint64_t expected = 0;
	for (size_t w = 0; w < nwords; w++) {
		expected += stream_value(w);
		out->stream_mismatches += region[w] != stream_value(w);
	}
	if (sum != expected && out->stream_mismatches == 0)
		out->stream_mismatches = 1; /* the timed pass saw data the verification did not */
	free(order);
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("firstread", params, argc, argv);
	npages = (size_t)wl_int("pages");
	size_t stream_bytes = (size_t)wl_int("stream_mb") << 20;
	nwords = stream_bytes / sizeof(uint64_t);
	/* Mapped here, first touched by the writer: its node owns every page. */
	pages_area = wl_alloc(npages * PAGE);
	stream_area = wl_alloc(stream_bytes);

	struct reader_out out = { 0 };
	pthread_t w, r;
	wl_thread_create(&r, 1, reader, &out);
	wl_thread_create(&w, 0, writer, NULL);
	wl_thread_join(w);
	wl_thread_join(r);

	double stream_s = (double)out.stream_ns / 1e9;
	wl_put_int("writer_cpu", writer_cpu);
	wl_put_int("reader_cpu", reader_cpu);
	wl_put_rate((long long)npages, out.pages_ns);
	wl_put_latency("first_read_ns", out.first_ns, npages);
	wl_put_latency("reread_ns", out.reread_ns, npages);
	wl_put_int("stream_bytes", (long long)stream_bytes);
	wl_put_double("stream_s", stream_s);
	wl_put_double("stream_mb_per_s", stream_s > 0 ? (double)stream_bytes / stream_s / 1048576.0 : 0.0);
	wl_put_int("read_mismatches", out.read_mismatches);
	wl_put_int("stream_mismatches", out.stream_mismatches);
	bool ok = out.read_mismatches == 0 && out.stream_mismatches == 0;
	wl_finish(ok, ok ? NULL : "stale_read");
}
