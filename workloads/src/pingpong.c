/*
 * pingpong: one word handed back and forth between two threads, normally on
 * two vCPUs of different nodes. Each hand-off moves the word's page: this is
 * the latency floor of the cluster.
 *
 * The token counts hand-offs: ping turns an even value 2k into 2k+1, pong
 * turns 2k+1 into 2k+2. Each side checks that the value it receives is
 * exactly the next in sequence, and the final value must be 2 * rounds.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("rounds", "5000", 1, 100000000, "round trips (two hand-offs each)"),
	WL_PARAMS_END,
};

static _Alignas(4096) _Atomic uint64_t token;
static _Atomic bool abort_run;
static _Atomic long long errors;
static long long rounds;

/* Waits until the token moves away from `mine`; returns the new value, or `mine` on abort. */
static uint64_t await_change(uint64_t mine)
{
	unsigned spins = 0;
	uint64_t v;

	while ((v = atomic_load_explicit(&token, memory_order_acquire)) == mine) {
		if (atomic_load_explicit(&abort_run, memory_order_relaxed))
			return mine;
		wl_relax(&spins);
	}
	return v;
}

static void fail_sequence(void)
{
	atomic_fetch_add(&errors, 1);
	atomic_store(&abort_run, true);
}

static void *pong(void *arg)
{
	(void)arg;
	uint64_t last = 0; /* the value pong last wrote (or the initial token) */

	for (long long k = 0; k < rounds; k++) {
		uint64_t v = await_change(last);

		if (v == last)
			return NULL;
		if (v != 2 * (uint64_t)k + 1) {
			fail_sequence();
			return NULL;
		}
		uint64_t next = v + 1;
		/* The injected fault: one hand-off skips a number. */
		if (wl_inject() && k == rounds / 2)
			next++;
		atomic_store_explicit(&token, next, memory_order_release);
		last = next;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("pingpong", params, argc, argv);
	rounds = wl_int("rounds");
	size_t nsamples = (size_t)(rounds < 100000 ? rounds : 100000);
	uint64_t *rtt = calloc(nsamples, sizeof(*rtt));
	pthread_t t;

	if (!rtt)
		wl_finish(false, "nomem");
	wl_pin_self(0);
	wl_thread_create(&t, 1, pong, NULL);

	uint64_t start = wl_now_ns();
	long long done = 0;
	for (long long k = 0; k < rounds; k++) {
		uint64_t sent = 2 * (uint64_t)k + 1;
		uint64_t t0 = wl_now_ns();

		atomic_store_explicit(&token, sent, memory_order_release);
		uint64_t v = await_change(sent);
		if (v == sent)
			break;
		if (v != sent + 1) {
			fail_sequence();
			break;
		}
		if ((size_t)k < nsamples)
			rtt[k] = wl_now_ns() - t0;
		done++;
	}
	uint64_t elapsed = wl_now_ns() - start;
	wl_thread_join(t);

	uint64_t final = atomic_load(&token);
	wl_put_int("handoffs", done * 2);
	wl_put_rate(done, elapsed);
	wl_put_latency("rtt_ns", rtt, (size_t)(done < (long long)nsamples ? done : (long long)nsamples));
	wl_put_double("handoff_ns", done ? (double)elapsed / (double)(2 * done) : 0.0);
	wl_put_int("final_token", (long long)final);
	wl_put_int("sequence_errors", atomic_load(&errors));
	bool ok = atomic_load(&errors) == 0 && done == rounds && final == 2 * (uint64_t)rounds;
	wl_finish(ok, ok ? NULL : "sequence_mismatch");
}
