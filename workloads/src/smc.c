/*
 * smc: code rewritten on one vCPU and run on another (cross-modifying code),
 * normally on two vCPUs of different nodes.  A writer thread rewrites a small
 * function in an executable page so that version k returns k, then publishes
 * k on another page; a caller thread waits for it, serialises (CPUID, as the
 * SDM asks of cross-modifying code), calls the function and must get k back,
 * then acknowledges.  On a cluster the code page moves to the writer's node
 * and back each round: a node that kept running its translation of the old
 * code would return k - 1.
 *
 * race=1 makes the writer's store wait for its page while the caller keeps
 * translating: the writer and the caller share a node (cpus=0,1 of four on two
 * nodes), a third thread on the other node (thread 2: cpus=0,1,2) keeps taking
 * read copies of the code page, so each rewrite waits for a write upgrade,
 * and the caller calls the function in its wait loop, so its node translates
 * the page again and again, also while the store waits.  A translation made
 * from the old bytes in that window must not survive the store (it did once:
 * see qemu-glue's tb.c).
 *
 * inject=1: the writer skips one rewrite but still publishes, so the caller
 * sees an old version and the run must report ok=0.
 */
#include "common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("rounds", "1000", 1, 10000000, "rewrite-and-call rounds"),
	WL_INT_PARAM("race", "0", 0, 1,
		     "1: call while waiting, and a third thread reads the code page (cpus=0,1,2)"),
	WL_PARAMS_END,
};

typedef int (*fn_t)(void);

static uint8_t *code;                              /* the rewritten page */
static _Alignas(4096) _Atomic long long published; /* version the writer published */
static _Alignas(4096) _Atomic long long acked;     /* version the caller checked */
static _Atomic bool abort_run;
static _Atomic long long mismatches;
static long long rounds;
static bool race;

/* mov $k, %eax; ret */
static void write_version(long long k)
{
	int32_t imm = (int32_t)k;
	code[0] = 0xb8;
	memcpy(code + 1, &imm, 4);
	code[5] = 0xc3;
}

static void serialize(void)
{
	unsigned a = 0, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");
}

static long long await(_Atomic long long *v, long long want, bool call)
{
	unsigned spins = 0;
	long long x;
	while ((x = atomic_load_explicit(v, memory_order_acquire)) < want) {
		if (atomic_load_explicit(&abort_run, memory_order_relaxed))
			return -1;
		if (call)
			(void)((fn_t)(void *)code)(); /* any version: it only translates */
		wl_relax(&spins);
	}
	return x;
}

/* race=1: keep a read copy of the code page on this thread's node */
static void *sharer(void *arg)
{
	(void)arg;
	unsigned spins = 0;
	while (!atomic_load_explicit(&abort_run, memory_order_relaxed)) {
		(void)*(volatile uint8_t *)(code + 2048);
		wl_relax(&spins);
	}
	return NULL;
}

static void *caller(void *arg)
{
	(void)arg;
	for (long long k = 1; k <= rounds; k++) {
		if (await(&published, k, race) < 0)
			return NULL;
		serialize();
		int got = ((fn_t)(void *)code)();
		if (got != (int)k) {
			if (atomic_fetch_add(&mismatches, 1) < 3)
				fprintf(stderr, "smc: round %lld: the function returned %d\n", k, got);
		}
		atomic_store_explicit(&acked, k, memory_order_release);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init("smc", params, argc, argv);
	rounds = wl_int("rounds");
	race = wl_int("race") != 0;
	code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (code == MAP_FAILED)
		wl_finish(false, "no_exec_memory");
	write_version(0);

	wl_pin_self(0);
	pthread_t t, sh;
	wl_thread_create(&t, 1, caller, NULL);
	if (race)
		wl_thread_create(&sh, 2, sharer, NULL);
	uint64_t start = wl_now_ns();
	long long done = 0;
	for (long long k = 1; k <= rounds; k++) {
		/* the injected fault: one version is published but never written */
		if (!(wl_inject() && k == rounds / 2 + 1))
			write_version(k);
		atomic_store_explicit(&published, k, memory_order_release);
		if (await(&acked, k, false) < 0)
			break;
		done++;
	}
	uint64_t elapsed = wl_now_ns() - start;
	atomic_store(&abort_run, true);
	wl_thread_join(t);
	if (race)
		wl_thread_join(sh);

	wl_put_int("rounds_done", done);
	wl_put_rate(done, elapsed);
	wl_put_int("mismatches", atomic_load(&mismatches));
	bool ok = done == rounds && atomic_load(&mismatches) == 0;
	wl_finish(ok, ok ? NULL : "stale_code");
}
