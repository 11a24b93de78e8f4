/*
 * prodcons: bounded queues between producer and consumer threads, normally on
 * different nodes; the queue's head, tail and slots ping-pong between them.
 * queue=spsc gives each producer its own single-producer/single-consumer
 * ring read by one consumer (so producers must equal consumers);
 * queue=mpmc shares one multi-producer/multi-consumer ring (Vyukov's bounded
 * queue) among all threads.
 *
 * Check: items are (producer, sequence). Every item must arrive exactly once
 * (a global bitmap), in order per producer as seen by each consumer, and the
 * consumers' checksum must equal the independently computed sum over all items.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("producers", "1", 1, 64, "producer threads"),
	WL_INT_PARAM("consumers", "1", 1, 64, "consumer threads (spsc: must equal producers)"),
	WL_ENUM_PARAM("queue", "spsc", "spsc,mpmc", "one ring per producer/consumer pair, or one shared ring"),
	WL_INT_PARAM("depth", "256", 2, 1048576, "slots per ring (rounded up to a power of two)"),
	WL_INT_PARAM("items", "200000", 1, 1000000000, "items sent by each producer"),
	WL_PARAMS_END,
};

#define SEQ_BITS 40
#define MAX_SAMPLES 4096

struct cell {
	_Atomic uint64_t seq; /* mpmc only: the slot's turn */
	uint64_t item;
	uint64_t stamp_ns;
};

/* Head and tail on separate cache lines: on real hardware they do not false-share. */
struct ring {
	_Alignas(64) _Atomic uint64_t tail; /* next slot to fill */
	_Alignas(64) _Atomic uint64_t head; /* next slot to drain */
	_Alignas(64) struct cell *cells;
	uint64_t mask;
};

static struct ring *rings;
static int producers, consumers;
static long long items;
static bool mpmc;
static _Atomic uint64_t *seen; /* one bit per item */
static _Atomic long long consumed, duplicates, out_of_order;
static pthread_barrier_t start;

static void ring_init(struct ring *r, uint64_t depth)
{
	r->cells = wl_alloc(depth * sizeof(struct cell));
	r->mask = depth - 1;
	for (uint64_t i = 0; i < depth; i++)
		atomic_init(&r->cells[i].seq, i);
}

static bool spsc_push(struct ring *r, uint64_t item, uint64_t stamp)
{
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);

	if (t - atomic_load_explicit(&r->head, memory_order_acquire) > r->mask)
		return false;
	r->cells[t & r->mask].item = item;
	r->cells[t & r->mask].stamp_ns = stamp;
	atomic_store_explicit(&r->tail, t + 1, memory_order_release);
	return true;
}

static bool spsc_pop(struct ring *r, uint64_t *item, uint64_t *stamp)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);

	if (atomic_load_explicit(&r->tail, memory_order_acquire) == h)
		return false;
	*item = r->cells[h & r->mask].item;
	*stamp = r->cells[h & r->mask].stamp_ns;
	atomic_store_explicit(&r->head, h + 1, memory_order_release);
	return true;
}

static bool mpmc_push(struct ring *r, uint64_t item, uint64_t stamp)
{
	uint64_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);

	for (;;) {
		struct cell *c = &r->cells[pos & r->mask];
		int64_t dif = (int64_t)atomic_load_explicit(&c->seq, memory_order_acquire) - (int64_t)pos;

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&r->tail, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed)) {
				c->item = item;
				c->stamp_ns = stamp;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false; /* full */
		} else {
			pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
		}
	}
}

static bool mpmc_pop(struct ring *r, uint64_t *item, uint64_t *stamp)
{
	uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);

	for (;;) {
		struct cell *c = &r->cells[pos & r->mask];
		int64_t dif = (int64_t)atomic_load_explicit(&c->seq, memory_order_acquire) - (int64_t)(pos + 1);

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed)) {
				*item = c->item;
				*stamp = c->stamp_ns;
				atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false; /* empty */
		} else {
			pos = atomic_load_explicit(&r->head, memory_order_relaxed);
		}
	}
}

struct worker {
	pthread_t thread;
	int index;
	uint64_t checksum;
	uint64_t samples[MAX_SAMPLES];
	size_t nsamples;
};

static void *produce(void *arg)
{
	struct worker *w = arg;
	struct ring *r = &rings[mpmc ? 0 : w->index];

	pthread_barrier_wait(&start);
	for (long long s = 1; s <= items; s++) {
		long long seq = s;
		unsigned spins = 0;

		/* The injected fault: one item repeats its predecessor's sequence number. */
		if (wl_inject() && w->index == 0 && s == items / 2 + 1 && s > 1)
			seq = s - 1;
		uint64_t item = (uint64_t)w->index << SEQ_BITS | (uint64_t)seq;
		while (!(mpmc ? mpmc_push(r, item, wl_now_ns()) : spsc_push(r, item, wl_now_ns())))
			wl_relax(&spins);
	}
	return NULL;
}

static void *consume(void *arg)
{
	struct worker *w = arg;
	struct ring *r = &rings[mpmc ? 0 : w->index];
	uint64_t *last = calloc((size_t)producers, sizeof(*last));
	long long total = items * producers, mine = 0;
	long long share = mpmc ? total / consumers : items;

	pthread_barrier_wait(&start);
	if (!last)
		return NULL;
	for (;;) {
		uint64_t item, stamp;
		unsigned spins = 0;

		while (!(mpmc ? mpmc_pop(r, &item, &stamp) : spsc_pop(r, &item, &stamp))) {
			if (mpmc ? atomic_load(&consumed) >= total : mine == items)
				goto done;
			wl_relax(&spins);
		}
		uint64_t now = wl_now_ns();
		uint64_t p = item >> SEQ_BITS, seq = item & ((1ull << SEQ_BITS) - 1);

		if (p >= (uint64_t)producers || seq == 0 || seq > (uint64_t)items) {
			atomic_fetch_add(&out_of_order, 1);
		} else {
			uint64_t bit = (uint64_t)p * (uint64_t)items + seq - 1;
			uint64_t old = atomic_fetch_or(&seen[bit / 64], 1ull << (bit % 64));

			if (old & (1ull << (bit % 64)))
				atomic_fetch_add(&duplicates, 1);
			if (seq <= last[p])
				atomic_fetch_add(&out_of_order, 1);
			last[p] = seq;
		}
		w->checksum += wl_mix64(item);
		if (mine % (share / MAX_SAMPLES + 1) == 0 && w->nsamples < MAX_SAMPLES)
			w->samples[w->nsamples++] = now - stamp;
		mine++;
		atomic_fetch_add_explicit(&consumed, 1, memory_order_relaxed);
	}
done:
	free(last);
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("prodcons", params, argc, argv);
	producers = (int)wl_int("producers");
	consumers = (int)wl_int("consumers");
	items = wl_int("items");
	mpmc = strcmp(wl_str("queue"), "mpmc") == 0;
	if (!mpmc && producers != consumers) {
		fprintf(stderr, "prodcons: queue=spsc needs producers == consumers (got %d and %d)\n", producers,
			consumers);
		return 2;
	}
	uint64_t depth = 1;
	while (depth < (uint64_t)wl_int("depth"))
		depth <<= 1;
	int nrings = mpmc ? 1 : producers;
	rings = wl_alloc((size_t)nrings * sizeof(*rings));
	for (int i = 0; i < nrings; i++)
		ring_init(&rings[i], depth);
	uint64_t total = (uint64_t)items * (uint64_t)producers;
	seen = wl_alloc((total + 63) / 64 * sizeof(uint64_t));

	struct worker *w = wl_alloc((size_t)(producers + consumers) * sizeof(*w));
	pthread_barrier_init(&start, NULL, (unsigned)(producers + consumers + 1));
	/* Producer i and consumer i get neighbouring slots in the cpus list, so
	 * cpus=0,1 puts each pair's two ends on different vCPUs. */
	for (int i = 0; i < producers + consumers; i++) {
		bool is_producer = i < producers;
		int index = is_producer ? i : i - producers;
		int slot = is_producer ? 2 * index : 2 * index + 1;

		w[i].index = index;
		wl_thread_create(&w[i].thread, slot, is_producer ? produce : consume, &w[i]);
	}
	uint64_t t0 = wl_now_ns();
	pthread_barrier_wait(&start);
	for (int i = 0; i < producers + consumers; i++)
		wl_thread_join(w[i].thread);
	uint64_t elapsed = wl_now_ns() - t0;

	uint64_t checksum = 0, expected = 0;
	size_t nsamples = 0;
	for (int i = producers; i < producers + consumers; i++) {
		checksum += w[i].checksum;
		nsamples += w[i].nsamples;
	}
	for (int p = 0; p < producers; p++)
		for (long long s = 1; s <= items; s++)
			expected += wl_mix64((uint64_t)p << SEQ_BITS | (uint64_t)s);
	long long missing = 0;
	for (uint64_t b = 0; b < total; b++)
		missing += !(atomic_load(&seen[b / 64]) & (1ull << (b % 64)));
	uint64_t *lat = wl_alloc((nsamples + 1) * sizeof(uint64_t));
	size_t k = 0;
	for (int i = producers; i < producers + consumers; i++)
		for (size_t j = 0; j < w[i].nsamples; j++)
			lat[k++] = w[i].samples[j];

	wl_put_rate(atomic_load(&consumed), elapsed);
	wl_put_latency("lat_ns", lat, k);
	wl_put_int("bytes", (long long)(atomic_load(&consumed) * (long long)sizeof(struct cell)));
	wl_put_int("missing", missing);
	wl_put_int("duplicates", atomic_load(&duplicates));
	wl_put_int("out_of_order", atomic_load(&out_of_order));
	wl_put_int("checksum_ok", checksum == expected);
	bool ok = missing == 0 && atomic_load(&duplicates) == 0 && atomic_load(&out_of_order) == 0 &&
		  checksum == expected && (uint64_t)atomic_load(&consumed) == total;
	wl_finish(ok, ok ? NULL : "items_mismatch");
}
