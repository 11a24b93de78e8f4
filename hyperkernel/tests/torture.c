/* torture.c (hk-torture) - N node processes x T threads hammer one region
 * through the library and check, with data that is verified by everyone:
 *   torn:      a slot record (8 words written under a seqlock by its single
 *              owner thread) read whole must be self-consistent;
 *   backwards: a reader never sees a slot's sequence go down;
 *   stale:     a writer publishes its completed sequence out of band (a
 *              MAP_SHARED memfd made before fork, not under the library);
 *              a reader that reads the published value first must then see
 *              at least it in the slot;
 *   counters:  the sum of all atomic increments counted by the threads must
 *              equal the counters' final values, read through coherence;
 *   final:     every node re-reads every slot at the end.
 * Exit 0 only with zero violations.  --kill K@MS SIGKILLs node K after MS ms
 * and then requires every other node to exit with status 3 (peer lost)
 * within 10 s. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hyperkernel.h"

#define MAX_NODES 16
#define MAX_THREADS 32
#define MAX_SLOTS (MAX_NODES * MAX_THREADS)
#define NCOUNTERS 16
#define SLOT_WORDS 8
#define MAX_REPORTS 10

struct shared {
	_Atomic uint64_t published[MAX_SLOTS];
	_Atomic uint64_t tally[NCOUNTERS];
	_Atomic uint64_t ops, violations, torn, backwards, stale, counter_bad, final_bad;
	_Atomic uint64_t reports, evictions;
	_Atomic int barrier[4];
	_Atomic int ready;
};

static struct shared *sh;
static int budget_pages; /* 0: unlimited */
static int nnodes = 4, nthreads = 4, npages = 64, chunk = 1, duration_s = 0;
static long ops_per_thread = 20000;
static uint64_t seed = 1;
static int kill_node = -1, kill_after_ms = 0, timeout_s = 120;
static char sockdir[128];
static uint8_t *region;
static int my_node;

static uint64_t *slot_addr(int slot)
{
	return (uint64_t *)(region + (size_t)(slot % npages) * 4096 + (size_t)(slot / npages) * 64);
}

static uint64_t *counter_addr(int k)
{
	return (uint64_t *)(region + (size_t)(k % npages) * 4096 + 2048 + (size_t)(k / npages) * 8);
}

static uint64_t mix(int slot, uint64_t s, int i)
{
	uint64_t x = (uint64_t)slot * 0x9e3779b97f4a7c15ull ^ s * 0xbf58476d1ce4e5b9ull ^
		     (uint64_t)i * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x * 0xd6e8feb86659fd93ull;
}

static void violation(_Atomic uint64_t *kind, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void violation(_Atomic uint64_t *kind, const char *fmt, ...)
{
	atomic_fetch_add(kind, 1);
	atomic_fetch_add(&sh->violations, 1);
	if (atomic_fetch_add(&sh->reports, 1) < MAX_REPORTS) {
		char buf[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		fprintf(stderr, "VIOLATION node %d: %s\n", my_node, buf);
	}
}

/* Seqlock writer: begin word first, data, end word last. */
static void write_slot(int slot, uint64_t s)
{
	uint64_t *w = slot_addr(slot);
	__atomic_store_n(&w[0], 2 * s + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (int i = 1; i < SLOT_WORDS - 1; i++)
		__atomic_store_n(&w[i], mix(slot, s, i), __ATOMIC_RELAXED);
	__atomic_store_n(&w[SLOT_WORDS - 1], 2 * s + 2, __ATOMIC_RELEASE);
}

/* Reader: end word first, data, begin word last; equal generations mean the
 * data belongs to that write.  Returns the sequence or -1 (never settled). */
static int64_t read_slot(int slot, bool *torn)
{
	uint64_t *w = slot_addr(slot);
	*torn = false;
	for (int tries = 0; tries < 100000; tries++) {
		uint64_t e = __atomic_load_n(&w[SLOT_WORDS - 1], __ATOMIC_ACQUIRE);
		uint64_t d[SLOT_WORDS];
		for (int i = 1; i < SLOT_WORDS - 1; i++)
			d[i] = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		uint64_t b = __atomic_load_n(&w[0], __ATOMIC_RELAXED);
		if (e == 0 && b == 0) {
			for (int i = 1; i < SLOT_WORDS - 1; i++)
				if (d[i])
					*torn = true;
			return 0; /* never written: all zero */
		}
		if (b + 1 != e || !(b & 1))
			continue; /* a write is in progress */
		uint64_t s = (b - 1) / 2;
		for (int i = 1; i < SLOT_WORDS - 1; i++)
			if (d[i] != mix(slot, s, i))
				*torn = true;
		return (int64_t)s;
	}
	return -1;
}

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct worker {
	pthread_t th;
	int slot;
};

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	int nslots = nnodes * nthreads;
	uint64_t x = seed * 0x2545f4914f6cdd1dull + (uint64_t)wk->slot * 7919 + 1;
	uint64_t myseq = 0, local_tally[NCOUNTERS] = { 0 }, last_ctr[NCOUNTERS] = { 0 };
	int64_t *last_seen = calloc((size_t)nslots, sizeof(int64_t));
	uint64_t deadline = duration_s ? now_ms() + (uint64_t)duration_s * 1000 : 0;
	long done = 0;
	for (long i = 0; duration_s ? now_ms() < deadline : i < ops_per_thread; i++, done++) {
		unsigned op = (unsigned)(rnd(&x) % 100);
		if (op < 40) {
			int s = (int)(rnd(&x) % (uint64_t)nslots);
			uint64_t pub = atomic_load(&sh->published[s]);
			bool torn;
			int64_t v = read_slot(s, &torn);
			if (v < 0)
				continue;
			if (torn)
				violation(&sh->torn, "slot %d torn at seq %ld", s, (long)v);
			if ((uint64_t)v < pub)
				violation(&sh->stale, "slot %d: read seq %ld after seq %lu was acknowledged",
					  s, (long)v, pub);
			if (v < last_seen[s])
				violation(&sh->backwards, "slot %d went back from %ld to %ld", s,
					  (long)last_seen[s], (long)v);
			if (v > last_seen[s])
				last_seen[s] = v;
		} else if (op < 70) {
			write_slot(wk->slot, ++myseq);
			atomic_store(&sh->published[wk->slot], myseq);
		} else if (op < 90) {
			int k = (int)(rnd(&x) % NCOUNTERS);
			__atomic_fetch_add(counter_addr(k), 1, __ATOMIC_SEQ_CST);
			local_tally[k]++;
		} else {
			int k = (int)(rnd(&x) % NCOUNTERS);
			uint64_t v = __atomic_load_n(counter_addr(k), __ATOMIC_ACQUIRE);
			if (v < last_ctr[k])
				violation(&sh->backwards, "counter %d went back from %lu to %lu", k,
					  last_ctr[k], v);
			last_ctr[k] = v;
		}
	}
	for (int k = 0; k < NCOUNTERS; k++)
		atomic_fetch_add(&sh->tally[k], local_tally[k]);
	atomic_fetch_add(&sh->ops, (uint64_t)done);
	free(last_seen);
	return NULL;
}

static void barrier(int idx)
{
	atomic_fetch_add(&sh->barrier[idx], 1);
	while (atomic_load(&sh->barrier[idx]) < nnodes)
		usleep(1000);
}

static void on_lost(void *opaque, int node, const struct hk_page_range *r, size_t nr,
		    uint64_t lost)
{
	(void)opaque;
	char ranges[256] = "";
	size_t off = 0;
	for (size_t i = 0; i < nr && off < sizeof(ranges) - 40; i++)
		off += (size_t)snprintf(ranges + off, sizeof(ranges) - off, "%s0x%lx+%lu",
					i ? "," : "", r[i].offset, r[i].pages);
	fprintf(stderr, "hk-torture node %d: node %d died; lost %lu pages (%s); stopping\n",
		my_node, node, lost, ranges);
	_exit(3);
}

static int run_node(int id)
{
	my_node = id;
	size_t len = (size_t)npages * 4096;
	region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		return 10;
	char *addrs[MAX_NODES];
	for (int k = 0; k < nnodes; k++) {
		addrs[k] = malloc(200);
		snprintf(addrs[k], 200, "unix:%s/node%d.sock", sockdir, k);
	}
	struct hk_config cfg;
	hk_config_init(&cfg);
	cfg.node_id = id;
	cfg.node_count = nnodes;
	cfg.peers = (const char *const *)addrs;
	cfg.secret = "torture-secret";
	cfg.home_chunk_pages = (uint32_t)chunk;
	cfg.cb.on_peer_lost = on_lost;
	if (budget_pages) {
		/* every node over its budget most of the time: evictions from
		 * the fault path and every 10 ms tick, from all nodes at once */
		cfg.budget_bytes = (uint64_t)budget_pages * HK_PAGE_SIZE;
		cfg.heartbeat_ms = 10;
	}
	struct hk_node *n;
	int r = hk_node_new(&cfg, &n);
	if (r < 0) {
		fprintf(stderr, "node %d: hk_node_new: %s\n", id, strerror(-r));
		return 10;
	}
	if (hk_region_register(n, region, len) < 0 || (r = hk_node_start(n)) < 0) {
		fprintf(stderr, "node %d: start: %s\n", id, strerror(-r));
		return 10;
	}
	barrier(0);
	struct worker wk[MAX_THREADS];
	for (int t = 0; t < nthreads; t++) {
		wk[t].slot = id * nthreads + t;
		pthread_create(&wk[t].th, NULL, worker_main, &wk[t]);
	}
	for (int t = 0; t < nthreads; t++)
		pthread_join(wk[t].th, NULL);
	barrier(1);
	/* Final verification, through coherence, on every node. */
	for (int s = 0; s < nnodes * nthreads; s++) {
		bool torn;
		int64_t v = read_slot(s, &torn);
		uint64_t pub = atomic_load(&sh->published[s]);
		if (torn || v < 0 || (uint64_t)v != pub)
			violation(&sh->final_bad, "final: slot %d has seq %ld%s, writer finished at %lu",
				  s, (long)v, torn ? " (torn)" : "", pub);
	}
	if (id == 0) {
		for (int k = 0; k < NCOUNTERS; k++) {
			uint64_t v = __atomic_load_n(counter_addr(k), __ATOMIC_SEQ_CST);
			uint64_t t = atomic_load(&sh->tally[k]);
			if (v != t)
				violation(&sh->counter_bad, "counter %d = %lu, increments done %lu", k, v, t);
		}
	}
	if (getenv("HK_TORTURE_STATS") && id == 0) {
		char *js = hk_stats_json(n);
		printf("%s\n", js);
		fflush(stdout);
		free(js);
	}
	{
		char *js = hk_stats_json(n);
		const char *e = js ? strstr(js, "\"evictions\":") : NULL;
		if (e)
			atomic_fetch_add(&sh->evictions, strtoull(e + 12, NULL, 10));
		free(js);
	}
	barrier(2);
	hk_node_shutdown(n);
	hk_node_free(n);
	return atomic_load(&sh->violations) ? 2 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: hk-torture [-n nodes] [-t threads] [-o ops-per-thread | -d seconds]\n"
			"                  [-p region-pages] [-k home-chunk-pages] [--seed S]\n"
			"                  [--kill NODE@MS] [--timeout S] [--budget PAGES]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = { { "seed", required_argument, 0, 'S' },
						  { "kill", required_argument, 0, 'K' },
						  { "timeout", required_argument, 0, 'T' },
						  { "budget", required_argument, 0, 'B' },
						  { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "n:t:o:d:p:k:", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': nnodes = atoi(optarg); break;
		case 't': nthreads = atoi(optarg); break;
		case 'o': ops_per_thread = atol(optarg); break;
		case 'd': duration_s = atoi(optarg); break;
		case 'p': npages = atoi(optarg); break;
		case 'k': chunk = atoi(optarg); break;
		case 'S': seed = strtoull(optarg, NULL, 0); break;
		case 'K':
			if (sscanf(optarg, "%d@%d", &kill_node, &kill_after_ms) != 2)
				usage();
			break;
		case 'T': timeout_s = atoi(optarg); break;
		case 'B': budget_pages = atoi(optarg); break;
		default: usage();
		}
	}
	if (nnodes < 1 || nnodes > MAX_NODES || nthreads < 1 || nthreads > MAX_THREADS ||
	    npages < 1 || nnodes * nthreads > npages * 32 || NCOUNTERS > npages * 256 ||
	    budget_pages < 0 || (budget_pages && budget_pages * nnodes < npages))
		usage();
	/* Out-of-band channel: shared between the node processes, invisible
	 * to the library. */
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 10;
	snprintf(sockdir, sizeof(sockdir), "/tmp/hk-torture.XXXXXX");
	if (!mkdtemp(sockdir))
		return 10;
	uint64_t t0 = now_ms();
	pid_t pids[MAX_NODES];
	for (int i = 0; i < nnodes; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(run_node(i));
	}
	int status[MAX_NODES];
	bool exited[MAX_NODES] = { false };
	int left = nnodes;
	uint64_t kill_at = kill_node >= 0 ? t0 + (uint64_t)kill_after_ms : 0, killed_at = 0;
	bool timed_out = false;
	while (left) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			for (int i = 0; i < nnodes; i++)
				if (pids[i] == p) {
					status[i] = st;
					exited[i] = true;
					left--;
				}
			continue;
		}
		uint64_t now = now_ms();
		if (kill_at && now >= kill_at && !killed_at) {
			kill(pids[kill_node], SIGKILL);
			killed_at = now;
		}
		bool late = killed_at ? now > killed_at + 10000 : now > t0 + (uint64_t)timeout_s * 1000;
		if (late && !timed_out) {
			timed_out = true;
			fprintf(stderr, "hk-torture: %s; killing the remaining nodes\n",
				killed_at ? "survivors did not stop within 10 s of the kill"
					  : "timeout");
			for (int i = 0; i < nnodes; i++)
				if (!exited[i])
					kill(pids[i], SIGKILL);
		}
		usleep(2000);
	}
	double secs = (double)(now_ms() - t0) / 1000.0;
	for (int i = 0; i < nnodes; i++) {
		char path[200];
		snprintf(path, sizeof(path), "%s/node%d.sock", sockdir, i);
		unlink(path);
	}
	rmdir(sockdir);
	if (kill_node >= 0) {
		int ok = !timed_out;
		for (int i = 0; i < nnodes; i++) {
			if (i == kill_node)
				continue;
			int code = WIFEXITED(status[i]) ? WEXITSTATUS(status[i]) : 128 + WTERMSIG(status[i]);
			if (code != 3) {
				fprintf(stderr, "hk-torture: node %d exited %d, expected 3 (peer lost)\n", i,
					code);
				ok = 0;
			}
		}
		printf("hk-torture kill: node %d killed after %d ms; survivors stopped %.2f s after the "
		       "kill; %s\n",
		       kill_node, kill_after_ms, killed_at ? (double)(now_ms() - killed_at) / 1000.0 : 0,
		       ok ? "PASS" : "FAIL");
		return ok ? 0 : 1;
	}
	int bad_exit = 0;
	for (int i = 0; i < nnodes; i++) {
		int code = WIFEXITED(status[i]) ? WEXITSTATUS(status[i]) : 128 + WTERMSIG(status[i]);
		if (code != 0 && code != 2) {
			fprintf(stderr, "hk-torture: node %d exited with status %d\n", i, code);
			bad_exit = 1;
		}
	}
	uint64_t v = atomic_load(&sh->violations);
	if (budget_pages)
		printf("hk-torture: budget=%d pages per node, evictions=%lu\n", budget_pages,
		       (unsigned long)atomic_load(&sh->evictions));
	printf("hk-torture: nodes=%d threads=%d pages=%d ops=%lu time=%.2fs ops/s=%.0f violations=%lu "
	       "(torn=%lu stale=%lu backwards=%lu counters=%lu final=%lu)%s\n",
	       nnodes, nthreads, npages, (unsigned long)atomic_load(&sh->ops), secs,
	       (double)atomic_load(&sh->ops) / secs, v, atomic_load(&sh->torn),
	       atomic_load(&sh->stale), atomic_load(&sh->backwards), atomic_load(&sh->counter_bad),
	       atomic_load(&sh->final_bad), timed_out ? " TIMEOUT" : "");
	return (v || bad_exit || timed_out) ? 1 : 0;
}
