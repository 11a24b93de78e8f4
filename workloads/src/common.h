/*
 * Shared plumbing for the guest workloads: key=value arguments with defaults
 * and ranges, pinning threads to a vCPU list, timing, a watchdog, and the one
 * result line the harness parses.
 *
 * Every workload prints exactly one line:
 *   workload=<name> ok=<0|1> <parameters echoed> <figures> [reason=<why>]
 * and exits 0 if ok=1, 1 if ok=0, 2 on bad arguments.
 */
#ifndef WORKLOADS_COMMON_H
#define WORKLOADS_COMMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wl_type { WL_INT, WL_ENUM, WL_STR, WL_CPULIST };

struct wl_param {
	const char *name;
	enum wl_type type;
	const char *def;     /* default as text; "" for a cpulist means all usable CPUs */
	long long min, max;  /* WL_INT only */
	const char *choices; /* WL_ENUM only: comma-separated */
	const char *help;
};

#define WL_INT_PARAM(n, d, lo, hi, h) { (n), WL_INT, (d), (lo), (hi), NULL, (h) }
#define WL_ENUM_PARAM(n, d, c, h) { (n), WL_ENUM, (d), 0, 0, (c), (h) }
#define WL_STR_PARAM(n, d, h) { (n), WL_STR, (d), 0, 0, NULL, (h) }
#define WL_PARAMS_END { NULL, WL_INT, NULL, 0, 0, NULL, NULL }

/*
 * Parses argv against the workload's own table plus the common parameters
 * (cpus, inject, timeout_s), handles --params and --help, and starts the
 * watchdog. Exits 2 with the list of valid parameters on bad input.
 */
void wl_init(const char *workload, const struct wl_param *params, int argc, char **argv);

long long wl_int(const char *name);
const char *wl_str(const char *name);
bool wl_inject(void);

/* The cpus list: thread i runs on wl_cpu(i), round-robin over the list. */
int wl_ncpus(void);
int wl_cpu(int i);
void wl_pin_self(int i);
/* Creates a thread already pinned to wl_cpu(i); exits on failure. */
void wl_thread_create(pthread_t *t, int i, void *(*fn)(void *), void *arg);
void wl_thread_join(pthread_t t);

uint64_t wl_now_ns(void);
/*
 * One step of a spin-wait. Under TCG a vCPU is a host thread and preemption is
 * coarse, so a waiter that never yields can burn its whole time slice while
 * the thread it waits for is descheduled: spin briefly, then sched_yield().
 */
void wl_relax(unsigned *spins);

/* splitmix64: a cheap, well-mixed hash and a seedable generator. */
uint64_t wl_mix64(uint64_t x);
struct wl_rng { uint64_t state; };
uint64_t wl_rand(struct wl_rng *rng);
/* Uniform in [0, bound). */
uint64_t wl_rand_below(struct wl_rng *rng, uint64_t bound);

/* Anonymous, zeroed memory; exits with ok=0 reason=nomem if unavailable. */
void *wl_alloc(size_t bytes);
void wl_free(void *p, size_t bytes);

/* Figures for the result line, in the order they are added. */
void wl_put_int(const char *key, long long v);
void wl_put_double(const char *key, double v);
void wl_put_str(const char *key, const char *v);
/* Sorts the samples and adds <prefix>_p50, _p99 and _max. */
void wl_put_latency(const char *prefix, uint64_t *samples, size_t n);
/* ops, elapsed_s and ops_per_s. */
void wl_put_rate(long long ops, uint64_t elapsed_ns);

/* Runs before the watchdog's result line, e.g. to kill a child server. */
void wl_on_timeout(void (*fn)(void));

/* Prints the result line (first caller wins) and exits 0 or 1. */
_Noreturn void wl_finish(bool ok, const char *reason);

#endif
