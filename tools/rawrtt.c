/*
 * rawrtt - the floor every latency figure is compared with: a 4 KiB
 * request/response round trip between two processes over a Unix stream
 * socket, measured on this machine in the same run as the figure.
 *
 * Usage: rawrtt [samples [cpu_a cpu_b]]
 *   Prints one JSON object: {"p50_us":..,"p99_us":..,"samples":..,"cpus":[a,b]}.
 *   With two CPUs, one process runs on each, as two nodes pinned to CPUs of
 *   their own do (the harness's default): left to the scheduler, both may
 *   share one CPU, and a round trip that wakes a process on the same CPU
 *   costs a tenth of one that wakes another CPU (4 against 60 us here), so
 *   the floor would change from run to run.  cpus is [-1,-1] when unpinned.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 4096
#define WARMUP 200

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int xfer(int fd, char *buf, int sending)
{
	size_t done = 0;
	while (done < MSG) {
		ssize_t r = sending ? write(fd, buf + done, MSG - done) : read(fd, buf + done, MSG - done);
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		perror("rawrtt: sched_setaffinity");
		_exit(1);
	}
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	if (n < 10 || n > 10000000) {
		fprintf(stderr, "rawrtt: samples must be 10..10000000\n");
		return 2;
	}
	int cpu_a = -1, cpu_b = -1;
	if (argc == 4) {
		cpu_a = atoi(argv[2]);
		cpu_b = atoi(argv[3]);
		if (cpu_a < 0 || cpu_b < 0 || cpu_a >= CPU_SETSIZE || cpu_b >= CPU_SETSIZE) {
			fprintf(stderr, "rawrtt: cpus must be 0..%d\n", CPU_SETSIZE - 1);
			return 2;
		}
	} else if (argc != 1 && argc != 2) {
		fprintf(stderr, "usage: rawrtt [samples [cpu_a cpu_b]]\n");
		return 2;
	}
	int sv[2];
	static char buf[MSG];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("rawrtt: socketpair");
		return 1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("rawrtt: fork");
		return 1;
	}
	if (pid == 0) {
		if (cpu_b >= 0)
			pin(cpu_b);
		close(sv[0]);
		while (xfer(sv[1], buf, 0) == 0 && xfer(sv[1], buf, 1) == 0)
			;
		_exit(0);
	}
	close(sv[1]);
	if (cpu_a >= 0)
		pin(cpu_a);
	double *v = calloc((size_t)n, sizeof(*v));
	if (!v)
		return 1;
	for (int i = 0; i < n + WARMUP; i++) {
		uint64_t t0 = now_ns();
		if (xfer(sv[0], buf, 1) || xfer(sv[0], buf, 0)) {
			fprintf(stderr, "rawrtt: peer went away\n");
			return 1;
		}
		if (i >= WARMUP)
			v[i - WARMUP] = (double)(now_ns() - t0) / 1000.0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	qsort(v, (size_t)n, sizeof(*v), cmp);
	printf("{\"p50_us\":%.2f,\"p99_us\":%.2f,\"samples\":%d,\"cpus\":[%d,%d]}\n", v[n / 2],
	       v[n * 99 / 100], n, cpu_a, cpu_b);
	return 0;
}
