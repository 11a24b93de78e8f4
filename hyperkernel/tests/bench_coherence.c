/* bench_coherence.c (make bench-coherence) - latency of the coherence paths
 * against the floor of this machine: the raw 4 KiB request/response round
 * trip over a Unix socket between two processes, measured in the same run.
 * Four node processes, home(page) = page % 4.  Timings are taken by the
 * faulting application thread around one access.  Last line: one JSON object.
 * The targets are checked here and only here (never in tests).
 *
 * CPU placement (printed, and in the JSON): HK_BENCH_PLACEMENT=split (the
 * default with >= 2 usable CPUs) puts the raw-RTT pair on two different CPUs
 * and node 0 and node 1 (requester and home/owner under test) the same way,
 * nodes 2 and 3 beside them, like separate machines; "one" runs everything on
 * the first usable CPU (the default under taskset -c N); "none" lets the
 * scheduler place everything. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hyperkernel.h"

#define NODES 4
#define M 2000         /* samples per latency figure */
#define STREAM 4096    /* pages in the streaming test */
#define SETS 6
#define REGION_PAGES (NODES * (SETS * M + STREAM))

struct shared {
	_Atomic int bar[32];
	double lat[8][M];
	double stream_secs;
};
static struct shared *sh;
static uint8_t *region;
static int placement_cpu[2] = { -1, -1 }; /* split: CPU of "side A", "side B" */

static void pin_to(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		perror("sched_setaffinity");
}

static uint64_t ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void barrier(int i)
{
	atomic_fetch_add(&sh->bar[i], 1);
	while (atomic_load(&sh->bar[i]) < NODES)
		usleep(200);
}

/* Page i of the set `set` whose home is `home`. */
static volatile uint64_t *pg(int set, int i, int home)
{
	return (volatile uint64_t *)(region + (size_t)(NODES * (set * M + i) + home) * 4096);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void pct(double *v, int n, double *p50, double *p99)
{
	qsort(v, (size_t)n, sizeof(double), cmp);
	*p50 = v[n / 2];
	*p99 = v[(n * 99) / 100];
}

/* Read exactly len bytes; poll: busy-poll with MSG_DONTWAIT and
 * sched_yield() (as the library's event thread does) instead of sleeping. */
static int read_full(int fd, char *buf, size_t len, bool poll)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = recv(fd, buf + got, len - got, poll ? MSG_DONTWAIT : 0);
		if (r < 0 && poll && errno == EAGAIN) {
			sched_yield();
			continue;
		}
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static void raw_rtt(double *p50, double *p99, bool poll)
{
	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	static char buf[4096];
	pid_t pid = fork();
	if (pid == 0) {
		pin_to(placement_cpu[1]);
		close(sv[0]);
		for (int i = 0; i < 2 * M + 100; i++) {
			if (read_full(sv[1], buf, sizeof(buf), poll) < 0)
				_exit(0);
			if (write(sv[1], buf, sizeof(buf)) != (ssize_t)sizeof(buf))
				_exit(1);
		}
		_exit(0);
	}
	close(sv[1]);
	pin_to(placement_cpu[0]);
	static double v[2 * M];
	for (int i = 0; i < 2 * M + 100; i++) {
		uint64_t t0 = ns();
		if (write(sv[0], buf, sizeof(buf)) != (ssize_t)sizeof(buf) ||
		    read_full(sv[0], buf, sizeof(buf), poll) < 0)
			exit(1);
		if (i >= 100)
			v[i - 100] = (double)(ns() - t0) / 1000.0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	pct(v, 2 * M, p50, p99);
}

struct streamer { int first, step; };

static void *stream_main(void *arg)
{
	struct streamer *s = arg;
	uint64_t sum = 0;
	for (int i = s->first; i < STREAM; i += s->step)
		sum += *(volatile uint64_t *)(region + (size_t)(NODES * (SETS * M + i) + 1) * 4096);
	return (void *)(uintptr_t)sum;
}

static void run_node(int id, const char **peers)
{
	pin_to(placement_cpu[id % 2]);
	region = mmap(NULL, (size_t)REGION_PAGES * 4096, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct hk_config c;
	hk_config_init(&c);
	c.node_id = id;
	c.node_count = NODES;
	c.peers = peers;
	c.secret = "bench";
	c.home_chunk_pages = 1;
	struct hk_node *n;
	if (hk_node_new(&c, &n) < 0 || hk_region_register(n, region, (size_t)REGION_PAGES * 4096) < 0 ||
	    hk_node_start(n) < 0)
		_exit(2);
	barrier(0);
	/* 0: remote read stall, owner == home == node 1 */
	if (id == 1)
		for (int i = 0; i < M; i++)
			*pg(0, i, 1) = (uint64_t)i;
	barrier(1);
	if (id == 0)
		for (int i = 0; i < M; i++) {
			uint64_t t0 = ns();
			uint64_t v = *pg(0, i, 1);
			sh->lat[0][i] = (double)(ns() - t0) / 1000.0;
			if (v != (uint64_t)i)
				_exit(4);
		}
	barrier(2);
	/* 1, 2: write stall at the home, invalidating 1 then 3 sharers */
	if (id == 0)
		for (int i = 0; i < M; i++) {
			*pg(1, i, 0) = 1;
			*pg(2, i, 0) = 1;
		}
	barrier(3);
	for (int i = 0; i < M; i++) {
		if (id == 1)
			(void)*pg(1, i, 0);
		if (id != 0)
			(void)*pg(2, i, 0);
	}
	barrier(4);
	if (id == 0)
		for (int s = 1; s <= 2; s++)
			for (int i = 0; i < M; i++) {
				uint64_t t0 = ns();
				*pg(s, i, 0) = 2;
				sh->lat[s][i] = (double)(ns() - t0) / 1000.0;
			}
	barrier(5);
	/* 3: first touch at the home (local); 4: first touch elsewhere */
	if (id == 0)
		for (int i = 0; i < M; i++) {
			uint64_t t0 = ns();
			*pg(3, i, 0) = 1;
			uint64_t t1 = ns();
			*pg(4, i, 1) = 1;
			uint64_t t2 = ns();
			sh->lat[3][i] = (double)(t1 - t0) / 1000.0;
			sh->lat[4][i] = (double)(t2 - t1) / 1000.0;
		}
	barrier(6);
	/* 5: write stall on a page another node writes, home a third: the
	 * owner gives it away for writing (node 1 owns, node 2 is home) */
	if (id == 1)
		for (int i = 0; i < M; i++)
			*pg(5, i, 2) = (uint64_t)i;
	barrier(9);
	if (id == 0)
		for (int i = 0; i < M; i++) {
			uint64_t t0 = ns();
			/* a store, no load first: a load would take a copy
			 * and the store then an upgrade */
			pg(5, i, 2)[1] = 1;
			sh->lat[5][i] = (double)(ns() - t0) / 1000.0;
			if (*pg(5, i, 2) != (uint64_t)i) /* node 1's word came with it */
				_exit(4);
		}
	barrier(10);
	/* streaming: node 1 owns STREAM pages, node 0 pulls them with 2 threads */
	if (id == 1)
		for (int i = 0; i < STREAM; i++)
			*(volatile uint64_t *)(region + (size_t)(NODES * (SETS * M + i) + 1) * 4096) = 1;
	barrier(7);
	if (id == 0) {
		pthread_t th[2];
		struct streamer s[2] = { { 0, 2 }, { 1, 2 } };
		uint64_t t0 = ns();
		for (int t = 0; t < 2; t++)
			pthread_create(&th[t], NULL, stream_main, &s[t]);
		for (int t = 0; t < 2; t++)
			pthread_join(th[t], NULL);
		sh->stream_secs = (double)(ns() - t0) / 1e9;
	}
	barrier(8);
	hk_node_shutdown(n);
	hk_node_free(n);
	_exit(0);
}

int main(void)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cpu_set_t allowed;
	CPU_ZERO(&allowed);
	sched_getaffinity(0, sizeof(allowed), &allowed);
	int cpus[2] = { -1, -1 }, ncpus = 0;
	for (int c = 0; c < CPU_SETSIZE && ncpus < 2; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[ncpus++] = c;
	const char *placement = getenv("HK_BENCH_PLACEMENT");
	if (!placement || !*placement)
		placement = ncpus >= 2 ? "split" : "one";
	char where[160];
	if (!strcmp(placement, "split") && ncpus >= 2) {
		placement_cpu[0] = cpus[0];
		placement_cpu[1] = cpus[1];
		snprintf(where, sizeof(where),
			 "split: raw pair on CPU %d / %d; nodes 0,2 on CPU %d, nodes 1,3 on CPU %d",
			 cpus[0], cpus[1], cpus[0], cpus[1]);
	} else if (!strcmp(placement, "one") || (!strcmp(placement, "split") && ncpus < 2)) {
		placement = "one";
		placement_cpu[0] = placement_cpu[1] = cpus[0];
		snprintf(where, sizeof(where), "one: everything on CPU %d", cpus[0]);
	} else {
		placement = "none";
		snprintf(where, sizeof(where), "none: unpinned, %d CPU(s) allowed", CPU_COUNT(&allowed));
	}
	printf("placement %s; %d samples per figure\n", where, M);
	double raw50, raw99, poll50, poll99;
	raw_rtt(&raw50, &raw99, false);
	raw_rtt(&poll50, &poll99, true);
	printf("raw 4 KiB unix-socket round trip: p50 %.1f us  p99 %.1f us (the floor; ratios below)\n",
	       raw50, raw99);
	printf("  the same, both ends busy-polling: p50 %.1f us  p99 %.1f us (%.2fx raw; the library "
	       "busy-polls only while it waits)\n", poll50, poll99, poll50 / raw50);
	sched_setaffinity(0, sizeof(allowed), &allowed);
	char dir[] = "/tmp/hk-bench.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	static char addr[NODES][128];
	const char *peers[NODES];
	for (int k = 0; k < NODES; k++) {
		snprintf(addr[k], sizeof(addr[k]), "unix:%s/n%d", dir, k);
		peers[k] = addr[k];
	}
	pid_t pids[NODES];
	for (int k = 0; k < NODES; k++)
		if ((pids[k] = fork()) == 0)
			run_node(k, peers);
	int bad = 0;
	for (int k = 0; k < NODES; k++) {
		int st;
		waitpid(pids[k], &st, 0);
		bad |= !WIFEXITED(st) || WEXITSTATUS(st);
	}
	for (int k = 0; k < NODES; k++) {
		char p[200];
		snprintf(p, sizeof(p), "%s/n%d", dir, k);
		unlink(p);
	}
	rmdir(dir);
	if (bad) {
		fprintf(stderr, "bench-coherence: a node failed\n");
		return 1;
	}
	static const char *names[] = { "remote_read", "write_inv1", "write_inv3", "first_touch_home",
				       "first_touch_remote", "remote_write" };
	static const char *what[] = { "remote read stall (home = owner)",
				      "write stall, home writer, invalidates 1 sharer",
				      "write stall, home writer, invalidates 3 sharers",
				      "first touch at the home (local zero page)",
				      "first touch, remote home (zero grant)",
				      "write stall, owner node 1, home node 2 (a transfer)" };
	double p50[6], p99[6];
	for (int s = 0; s < 6; s++) {
		pct(sh->lat[s], M, &p50[s], &p99[s]);
		printf("%-50s p50 %7.1f us (%.2fx raw)  p99 %7.1f us (%.2fx raw)\n", what[s], p50[s],
		       p50[s] / raw50, p99[s], p99[s] / raw50);
	}
	double pages_s = STREAM / sh->stream_secs, mb_s = pages_s * 4096 / 1e6;
	double per_page_us = 1e6 / pages_s;
	printf("page streaming (2 threads pulling %d pages): %.0f pages/s, %.1f MB/s, %.1f us/page "
	       "(%.2fx raw)\n",
	       STREAM, pages_s, mb_s, per_page_us, per_page_us / raw50);
	bool t_read = p50[0] <= 1.5 * raw50, t_w1 = p50[1] <= 2.0 * raw50, t_ft = p50[3] <= 10.0;
	printf("targets: remote read p50 <= 1.5x raw: %s; write (1 sharer) p50 <= 2x raw: %s; "
	       "first touch p50 <= 10 us: %s\n",
	       t_read ? "PASS" : "MISS", t_w1 ? "PASS" : "MISS", t_ft ? "PASS" : "MISS");
	printf("{\"placement\":\"%s\",\"samples\":%d,\"raw_rtt_us\":{\"p50\":%.2f,\"p99\":%.2f}",
	       placement, M, raw50, raw99);
	printf(",\"raw_rtt_poll_us\":{\"p50\":%.2f,\"p99\":%.2f}", poll50, poll99);
	for (int s = 0; s < 6; s++)
		printf(",\"%s_us\":{\"p50\":%.2f,\"p99\":%.2f,\"p50_ratio\":%.3f,\"p99_ratio\":%.3f}",
		       names[s], p50[s], p99[s], p50[s] / raw50, p99[s] / raw50);
	printf(",\"streaming\":{\"pages_per_s\":%.0f,\"mb_per_s\":%.1f,\"us_per_page\":%.2f,"
	       "\"ratio\":%.3f}",
	       pages_s, mb_s, per_page_us, per_page_us / raw50);
	printf(",\"targets\":{\"remote_read_p50_le_1.5x\":%s,\"write_inv1_p50_le_2x\":%s,"
	       "\"first_touch_p50_le_10us\":%s}}\n",
	       t_read ? "true" : "false", t_w1 ? "true" : "false", t_ft ? "true" : "false");
	return 0;
}
