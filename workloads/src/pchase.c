/*
 * pchase: dependent random loads over a large set. Each hop is a load whose
 * address comes from the previous load, so on a cluster every hop to a
 * remote page is a stall, unless the vCPU moves to the data.
 *
 * The nodes form one random cycle (Sattolo's algorithm). Each thread chases
 * it from its own start and checks, with its own bitmap, that one cycle
 * visits every node exactly once and returns to the start; every node also
 * carries a tag derived from its index that the chase verifies.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("threads", "1", 1, 256, "threads chasing the same cycle from different starts"),
	WL_INT_PARAM("size_mb", "16", 1, 65536, "working set in MiB (64-byte nodes)"),
	WL_INT_PARAM("cycles", "2", 1, 100000, "full cycles each thread chases"),
	WL_INT_PARAM("seed", "1", 0, 1000000000, "seed of the random permutation"),
	WL_PARAMS_END,
};

/* One node per cache line: the chase touches one line per hop. */
struct node {
	uint64_t next;
	uint64_t tag;
	uint64_t pad[6];
};

static struct node *nodes;
static size_t count;
static long cycles;
static _Atomic long long errors;

struct worker {
	pthread_t thread;
	int index;
	uint64_t hops;
	uint64_t elapsed_ns;
};

static uint64_t tag_of(size_t i)
{
	return wl_mix64(i ^ 0x5bd1e995);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	uint64_t *seen = calloc((count + 63) / 64, sizeof(uint64_t));
	size_t start = count * (size_t)w->index / 256 % count;
	long long bad = 0;

	if (!seen) {
		atomic_fetch_add(&errors, 1);
		return NULL;
	}
	uint64_t t0 = wl_now_ns();
	for (long c = 0; c < cycles && !bad; c++) {
		size_t at = start, steps = 0;

		memset(seen, 0, (count + 63) / 64 * sizeof(uint64_t));
		do {
			uint64_t bit = 1ull << (at % 64);

			if (seen[at / 64] & bit || nodes[at].tag != tag_of(at)) {
				bad++; /* revisited before closing the cycle, or a corrupt node */
				break;
			}
			seen[at / 64] |= bit;
			at = nodes[at].next;
			steps++;
			if (at >= count) {
				bad++;
				break;
			}
		} while (at != start);
		w->hops += steps;
		bad += !bad && steps != count;
	}
	w->elapsed_ns = wl_now_ns() - t0;
	free(seen);
	if (bad)
		atomic_fetch_add(&errors, bad);
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("pchase", params, argc, argv);
	int threads = (int)wl_int("threads");
	cycles = (long)wl_int("cycles");
	size_t bytes = (size_t)wl_int("size_mb") << 20;
	struct wl_rng rng = { .state = (uint64_t)wl_int("seed") };
	struct worker *w = calloc((size_t)threads, sizeof(*w));
	size_t *order;

	count = bytes / sizeof(struct node);
	nodes = wl_alloc(count * sizeof(struct node));
	order = wl_alloc(count * sizeof(size_t));
	if (!w)
		wl_finish(false, "nomem");
	/* Sattolo: a uniformly random permutation with a single cycle. */
	for (size_t i = 0; i < count; i++)
		order[i] = i;
	for (size_t i = count - 1; i > 0; i--) {
		size_t j = (size_t)wl_rand_below(&rng, i);
		size_t tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	for (size_t i = 0; i < count; i++) {
		nodes[order[i]].next = order[(i + 1) % count];
		nodes[i].tag = tag_of(i);
	}
	wl_free(order, count * sizeof(size_t));

	if (wl_inject() && count > 2) {
		/* Short-circuit one link: the cycle now skips a node. */
		size_t a = count / 2;
		nodes[a].next = nodes[nodes[a].next].next;
	}

	for (int t = 0; t < threads; t++) {
		w[t].index = t;
		wl_thread_create(&w[t].thread, t, run, &w[t]);
	}
	uint64_t hops = 0, slowest = 0;
	for (int t = 0; t < threads; t++) {
		wl_thread_join(w[t].thread);
		hops += w[t].hops;
		if (w[t].elapsed_ns > slowest)
			slowest = w[t].elapsed_ns;
	}

	wl_put_rate((long long)hops, slowest);
	wl_put_double("ns_per_hop", hops ? (double)slowest * threads / (double)hops : 0.0);
	wl_put_int("bytes", (long long)(count * sizeof(struct node)));
	wl_put_int("nodes", (long long)count);
	wl_put_int("errors", atomic_load(&errors));
	bool ok = atomic_load(&errors) == 0 && hops == (uint64_t)threads * (uint64_t)cycles * count;
	wl_finish(ok, ok ? NULL : "cycle_broken");
}
