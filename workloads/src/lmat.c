/*
 * lmat: an LMAT-like table. Reader threads do random, read-mostly lookups
 * while a compactor periodically rewrites every record into a new encoding:
 * in place (mode=inplace), or into a fresh buffer that replaces the old one
 * (mode=swap: copy, atomic pointer swap, wait for a grace period, unmap).
 * On a page-coherent cluster the whole working set moves every period.
 *
 * Consistency: each record has a seqlock version. Writers (the compactor and
 * updating readers) lock it by setting bit 0; readers retry torn reads. In
 * swap mode the compactor freezes every record it has copied (bit 1), and an
 * updater that meets a frozen record waits for the new table and retries
 * there, so no update is lost. A reader that may still hold the old table
 * announces itself (RCU-like), and the old buffer is unmapped only once
 * every reader has passed a quiescent point.
 *
 * Check: a record's values are a pure function of its key and its update
 * count, stored XOR-ed with a mask of its encoding epoch, and guarded by a
 * checksum. Every lookup verifies this; at the end every record must be in
 * the last compaction's epoch and the update counts must sum to the number
 * of updates the threads performed.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("readers", "2", 1, 256, "lookup threads"),
	WL_INT_PARAM("table_mb", "16", 1, 65536, "table size in MiB (64-byte records)"),
	WL_ENUM_PARAM("mode", "inplace", "inplace,swap", "compaction rewrites in place, or copies and swaps"),
	WL_INT_PARAM("duration_ms", "2000", 10, 3600000, "how long the readers run"),
	WL_INT_PARAM("period_ms", "500", 0, 3600000, "pause between compactions"),
	WL_INT_PARAM("write_pct", "1", 0, 100, "percent of lookups that update the record"),
	WL_INT_PARAM("seed", "1", 0, 1000000000, "seed of the readers' random keys"),
	WL_PARAMS_END,
};

#define LOCKED 1ull
#define MOVED 2ull
#define VERSION_STEP 4ull
#define NVALUES 3
#define MAX_SAMPLES 4096

struct record {
	_Atomic uint64_t ver;
	uint64_t key;
	uint64_t epoch;
	uint64_t updates;
	uint64_t payload[NVALUES];
	uint64_t check;
};
_Static_assert(sizeof(struct record) == 64, "one record per cache line");

static _Atomic(struct record *) table;
static size_t nrecords;
static bool swap_mode;
static _Atomic bool stop;
static _Atomic long long bad_reads;

struct reader {
	pthread_t thread;
	int index;
	_Atomic uint64_t active;    /* 1 while it may hold a table pointer */
	_Atomic uint64_t quiescent; /* bumped after every lookup */
	long long lookups, updates, torn_retries;
	uint64_t samples[MAX_SAMPLES];
	size_t nsamples;
	uint64_t seed;
	int write_pct;
};

static struct reader *readers;
static int nreaders;

static uint64_t value_of(uint64_t key, int j, uint64_t updates)
{
	return wl_mix64(key * NVALUES + (uint64_t)j + (updates << 40));
}

static uint64_t mask_of(uint64_t epoch, uint64_t key, int j)
{
	return wl_mix64(epoch * 0x9e3779b97f4a7c15ull ^ (key * NVALUES + (uint64_t)j));
}

static uint64_t check_of(uint64_t key, uint64_t updates, const uint64_t *values)
{
	uint64_t h = wl_mix64(key ^ updates * 0xff51afd7ed558ccdull);

	for (int j = 0; j < NVALUES; j++)
		h = wl_mix64(h ^ values[j]);
	return h;
}

/* Writes the record's content for a given update count, encoded for `epoch`. */
static void encode(struct record *r, uint64_t key, uint64_t epoch, uint64_t updates)
{
	uint64_t values[NVALUES];

	for (int j = 0; j < NVALUES; j++) {
		values[j] = value_of(key, j, updates);
		r->payload[j] = values[j] ^ mask_of(epoch, key, j);
	}
	r->key = key;
	r->epoch = epoch;
	r->updates = updates;
	r->check = check_of(key, updates, values);
}

/* True if a copy of a record is internally consistent and belongs at `index`. */
static bool verify(const struct record *copy, uint64_t index)
{
	uint64_t values[NVALUES];

	if (copy->key != index)
		return false;
	for (int j = 0; j < NVALUES; j++) {
		values[j] = copy->payload[j] ^ mask_of(copy->epoch, copy->key, j);
		if (values[j] != value_of(copy->key, j, copy->updates))
			return false;
	}
	return copy->check == check_of(copy->key, copy->updates, values);
}

/* Locks a record for writing; returns its unlocked version, or fails if it is frozen (moved). */
static bool lock_record(struct record *r, uint64_t *ver)
{
	unsigned spins = 0;

	for (;;) {
		uint64_t v = atomic_load_explicit(&r->ver, memory_order_relaxed);

		if (v & MOVED)
			return false;
		if (!(v & LOCKED) &&
		    atomic_compare_exchange_weak_explicit(&r->ver, &v, v | LOCKED, memory_order_acquire,
							  memory_order_relaxed)) {
			*ver = v;
			return true;
		}
		wl_relax(&spins);
	}
}

static void unlock_record(struct record *r, uint64_t ver, uint64_t flags)
{
	atomic_store_explicit(&r->ver, (ver + VERSION_STEP) | flags, memory_order_release);
}

/* Seqlock read: copies a consistent snapshot; returns the number of retries. */
static long long read_record(struct record *r, struct record *copy)
{
	long long retries = 0;
	unsigned spins = 0;

	for (;;) {
		uint64_t v1 = atomic_load_explicit(&r->ver, memory_order_acquire);

		if (!(v1 & LOCKED)) {
			const volatile struct record *src = r;

			copy->key = src->key;
			copy->epoch = src->epoch;
			copy->updates = src->updates;
			for (int j = 0; j < NVALUES; j++)
				copy->payload[j] = src->payload[j];
			copy->check = src->check;
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&r->ver, memory_order_relaxed) == v1)
				return retries;
		}
		retries++;
		wl_relax(&spins);
	}
}

static void update_record(struct reader *me, uint64_t index)
{
	for (;;) {
		struct record *t = atomic_load(&table);
		struct record *r = &t[index];
		uint64_t ver = 0;
		unsigned spins = 0;

		if (lock_record(r, &ver)) {
			encode(r, index, r->epoch, r->updates + 1);
			unlock_record(r, ver, 0);
			me->updates++;
			return;
		}
		/* Frozen: the compactor has copied it and will publish a new table. */
		while (atomic_load(&table) == t)
			wl_relax(&spins);
	}
}

static void *read_loop(void *arg)
{
	struct reader *me = arg;
	struct wl_rng rng = { .state = me->seed };

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t index = wl_rand_below(&rng, nrecords);
		bool write = (int)wl_rand_below(&rng, 100) < me->write_pct;
		uint64_t t0 = wl_now_ns();

		atomic_store(&me->active, 1); /* seq_cst: ordered before the table load */
		if (write) {
			update_record(me, index);
		} else {
			struct record copy;

			me->torn_retries += read_record(&atomic_load(&table)[index], &copy);
			if (!verify(&copy, index))
				atomic_fetch_add(&bad_reads, 1);
		}
		atomic_store(&me->active, 0);
		atomic_fetch_add_explicit(&me->quiescent, 1, memory_order_release);
		if (me->lookups % 64 == 0)
			me->samples[(me->lookups / 64) % MAX_SAMPLES] = wl_now_ns() - t0;
		me->lookups++;
	}
	me->nsamples = (size_t)(me->lookups / 64 + 1 < MAX_SAMPLES ? me->lookups / 64 + 1 : MAX_SAMPLES);
	return NULL;
}

/* Waits until no reader can still hold a pointer loaded before the swap. */
static void wait_for_readers(void)
{
	for (int i = 0; i < nreaders; i++) {
		uint64_t seen = atomic_load(&readers[i].quiescent);
		unsigned spins = 0;

		while (atomic_load(&readers[i].active) && atomic_load(&readers[i].quiescent) == seen)
			wl_relax(&spins);
	}
}

struct compactor {
	pthread_t thread;
	long period_ms;
	long long passes;
	uint64_t max_ns, total_ns, max_grace_ns;
};

static void compact_inplace(uint64_t epoch)
{
	struct record *t = atomic_load(&table);

	for (size_t i = 0; i < nrecords; i++) {
		uint64_t ver = 0;

		lock_record(&t[i], &ver); /* never frozen in this mode */
		encode(&t[i], i, epoch, t[i].updates);
		unlock_record(&t[i], ver, 0);
	}
}

static uint64_t compact_swap(uint64_t epoch)
{
	struct record *old = atomic_load(&table);
	struct record *fresh = wl_alloc(nrecords * sizeof(struct record));

	for (size_t i = 0; i < nrecords; i++) {
		uint64_t ver = 0;

		lock_record(&old[i], &ver);
		encode(&fresh[i], i, epoch, old[i].updates);
		atomic_init(&fresh[i].ver, 0);
		/* Frozen but readable: readers of the old table still see a consistent record. */
		unlock_record(&old[i], ver, MOVED);
	}
	atomic_store(&table, fresh);
	uint64_t t0 = wl_now_ns();
	wait_for_readers();
	uint64_t grace = wl_now_ns() - t0;
	wl_free(old, nrecords * sizeof(struct record));
	return grace;
}

static void *compact_loop(void *arg)
{
	struct compactor *c = arg;

	do {
		uint64_t t0 = wl_now_ns();

		if (swap_mode) {
			uint64_t grace = compact_swap((uint64_t)c->passes + 1);
			if (grace > c->max_grace_ns)
				c->max_grace_ns = grace;
		} else {
			compact_inplace((uint64_t)c->passes + 1);
		}
		uint64_t took = wl_now_ns() - t0;
		c->passes++;
		c->total_ns += took;
		if (took > c->max_ns)
			c->max_ns = took;
		/* Sleep in short steps so the run ends promptly. */
		uint64_t until = wl_now_ns() + (uint64_t)c->period_ms * 1000000u;
		while (!atomic_load(&stop) && wl_now_ns() < until) {
			struct timespec ts = { 0, 5000000 };
			nanosleep(&ts, NULL);
		}
	} while (!atomic_load(&stop));
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("lmat", params, argc, argv);
	nreaders = (int)wl_int("readers");
	swap_mode = strcmp(wl_str("mode"), "swap") == 0;
	size_t bytes = (size_t)wl_int("table_mb") << 20;
	nrecords = bytes / sizeof(struct record);
	long duration_ms = (long)wl_int("duration_ms");

	struct record *t = wl_alloc(bytes);
	for (size_t i = 0; i < nrecords; i++)
		encode(&t[i], i, 0, 0);
	atomic_store(&table, t);

	readers = wl_alloc((size_t)nreaders * sizeof(*readers));
	struct compactor comp = { .period_ms = (long)wl_int("period_ms") };
	uint64_t start = wl_now_ns();
	for (int i = 0; i < nreaders; i++) {
		readers[i].index = i;
		readers[i].seed = wl_mix64((uint64_t)wl_int("seed") * 1000 + (uint64_t)i);
		readers[i].write_pct = (int)wl_int("write_pct");
		wl_thread_create(&readers[i].thread, i, read_loop, &readers[i]);
	}
	wl_thread_create(&comp.thread, nreaders, compact_loop, &comp);

	struct timespec ts = { duration_ms / 1000, (duration_ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0)
		;
	atomic_store(&stop, true);
	/* The compactor finishes its current pass (at least one), then the readers stop. */
	wl_thread_join(comp.thread);
	for (int i = 0; i < nreaders; i++)
		wl_thread_join(readers[i].thread);
	uint64_t elapsed = wl_now_ns() - start;

	t = atomic_load(&table);
	if (wl_inject())
		t[nrecords / 2].payload[1] ^= 1ull << 33;

	long long lookups = 0, updates = 0, torn = 0, bad_final = 0;
	size_t nsamples = 0;
	for (int i = 0; i < nreaders; i++) {
		lookups += readers[i].lookups;
		updates += readers[i].updates;
		torn += readers[i].torn_retries;
		nsamples += readers[i].nsamples;
	}
	uint64_t update_sum = 0;
	for (size_t i = 0; i < nrecords; i++) {
		uint64_t v = atomic_load(&t[i].ver);

		bad_final += (v & (LOCKED | MOVED)) || t[i].epoch != (uint64_t)comp.passes || !verify(&t[i], i);
		update_sum += t[i].updates;
	}
	uint64_t *lat = wl_alloc((nsamples + 1) * sizeof(uint64_t));
	size_t k = 0;
	for (int i = 0; i < nreaders; i++)
		for (size_t j = 0; j < readers[i].nsamples; j++)
			lat[k++] = readers[i].samples[j];

	wl_put_rate(lookups, elapsed);
	wl_put_latency("lat_ns", lat, k);
	wl_put_int("updates", updates);
	wl_put_int("torn_retries", torn);
	wl_put_int("compactions", comp.passes);
	wl_put_double("compact_ms_avg", comp.passes ? (double)comp.total_ns / 1e6 / (double)comp.passes : 0.0);
	wl_put_double("compact_ms_max", (double)comp.max_ns / 1e6);
	if (swap_mode)
		wl_put_double("grace_ms_max", (double)comp.max_grace_ns / 1e6);
	wl_put_int("bytes", (long long)bytes);
	wl_put_double("rewritten_bytes", (double)bytes * (double)comp.passes);
	wl_put_int("bad_reads", atomic_load(&bad_reads));
	wl_put_int("bad_records", bad_final);
	wl_put_int("lost_updates", (long long)updates - (long long)update_sum);
	bool ok = atomic_load(&bad_reads) == 0 && bad_final == 0 && update_sum == (uint64_t)updates;
	wl_finish(ok, ok ? NULL : "table_inconsistent");
}
