/*
 * rawstream - the floor for a streaming read: how fast this machine moves
 * pages from one process to another over a Unix stream socket and puts them
 * into memory the receiver has not had before, measured in the same run as
 * the guest's figure (testbed bench stall).
 *
 * A node that streams another node's memory receives every page into a page
 * of guest RAM it did not hold: the host allocates it on the way in, inside
 * UFFDIO_COPY.  On a bare machine that is cheap.  On a machine that is
 * itself a VM whose free memory goes back to its hypervisor (free page
 * reporting), the first write to a newly allocated page faults in the
 * hypervisor, and in a profile of the guest's streaming pass that copy was
 * the reading node's largest cost (hyperkernel/README.md).  So the floor
 * does what the library does with the same system calls, and nothing else:
 *
 *   - the sender (cpu_a) writes `mb` MiB as frames of one 4 KiB page with a
 *     16-byte head (the page's index), as many as the socket takes;
 *   - the receiver (cpu_b) reads them into one buffer, gathers each run of
 *     up to 32 consecutive pages and installs it write-protected (a read
 *     copy) with one UFFDIO_COPY, into anonymous memory registered with
 *     userfaultfd (missing and write-protect) and never touched before;
 *   - then it checks every word of every page it installed.
 *
 * It runs the stream PASSES times installing into fresh memory, and then
 * once receiving only (socket_mb_s), and times the UFFDIO_COPY calls apart
 * (install_us_per_page).  The gap between the two rates is what the
 * machine charges for a page a process has not had.  Each pass installs
 * into a region of its own, and every region stays mapped to the end: a
 * pass into memory an earlier pass had freed would find it warm, which the
 * guest's reading node never does.  One pass of 64 MiB lasts tens of
 * milliseconds, and one descheduling on a shared host halves it, so the
 * fastest pass is the floor (mb_s and its install_us_per_page), and every
 * pass is reported.  The receiver maps PASSES times `mb`.
 *
 * Usage: rawstream [mb [cpu_a cpu_b]]      (mb 1..65536, firstread's bound; default 64)
 *   Prints one JSON object:
 *   {"mb":..,"mb_s":..,"socket_mb_s":..,"install_us_per_page":..,"cpus":[a,b],
 *    "passes_mb_s":[..],"passes_install_us_per_page":[..]}
 *   cpus is [-1,-1] when unpinned.  Exit status 1, with a line on stderr,
 *   if a page arrived wrong or a system call failed; 2 for bad arguments.
 *   RAWSTREAM_CORRUPT=1 makes the sender flip one word, so that the check
 *   can be seen to fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define HEAD 16
#define FRAME (HEAD + PAGE)
#define RUN 32 /* the library's read-ahead window and longest install run */
#define RBUF (64 * FRAME)
#define PASSES 3

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "rawstream: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void pin(int cpu)
{
	if (cpu < 0) /* unpinned: the scheduler's choice */
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity");
}

/* The word at `w` of page `p`: differs from page to page and word to word. */
static uint64_t word(uint64_t p, uint64_t w)
{
	return (p << 20 | w) * 0x9e3779b97f4a7c15ull;
}

static void send_all(int fd, const uint8_t *b, size_t len)
{
	while (len) {
		ssize_t r = write(fd, b, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("write");
		b += r;
		len -= (size_t)r;
	}
}

static void sender(int fd, uint64_t npages, int rounds)
{
	static uint8_t frames[RUN * FRAME];
	int corrupt = getenv("RAWSTREAM_CORRUPT") && atoi(getenv("RAWSTREAM_CORRUPT"));
	for (int round = 0; round < rounds; round++) {
		for (uint64_t p = 0; p < npages; p += RUN) {
			uint64_t n = npages - p < RUN ? npages - p : RUN;
			for (uint64_t i = 0; i < n; i++) {
				uint8_t *f = frames + i * FRAME;
				uint64_t *data = (uint64_t *)(f + HEAD);
				memcpy(f, &(uint64_t){ p + i }, 8);
				for (uint64_t w = 0; w < PAGE / 8; w++)
					data[w] = word(p + i, w);
				if (corrupt && p + i == npages / 2)
					data[7] ^= 1;
			}
			send_all(fd, frames, n * FRAME);
		}
	}
}

static int uffd_region(uint8_t *mem, size_t len)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	struct uffdio_register reg = { .range = { (uintptr_t)mem, len },
				       .mode = UFFDIO_REGISTER_MODE_MISSING |
					       UFFDIO_REGISTER_MODE_WP };
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
	return fd;
}

/* The pages of a run lie one after another in the receive buffer, each
 * behind its head: gather them, as the library's run install does, into
 * one source and copy the run in with one call. */
static void install(int uffd, uint8_t *mem, uint64_t first, const uint8_t *frames, uint64_t n,
		    uint64_t *install_ns)
{
	static uint8_t src[RUN * PAGE];
	for (uint64_t i = 0; i < n; i++)
		memcpy(src + i * PAGE, frames + i * FRAME + HEAD, PAGE);
	uint64_t t0 = now_ns();
	struct uffdio_copy c = { .dst = (uintptr_t)(mem + first * PAGE), .src = (uintptr_t)src,
				 .len = n * PAGE, .mode = UFFDIO_COPY_MODE_WP };
	while (ioctl(uffd, UFFDIO_COPY, &c) < 0) {
		if (errno != EAGAIN)
			die("UFFDIO_COPY");
		c.dst += (uint64_t)c.copy;
		c.src += (uint64_t)c.copy;
		c.len -= (uint64_t)c.copy;
		c.copy = 0;
	}
	*install_ns += now_ns() - t0;
}

/* One stream of npages: returns its seconds; installs into `mem` unless
 * it is NULL.  Reads whole frames in order, as many as have arrived. */
static double receive(int fd, uint64_t npages, int uffd, uint8_t *mem, uint64_t *install_ns)
{
	/* what arrived past one stream's end is the next one's start */
	static uint8_t buf[RBUF];
	static size_t have;
	uint64_t next = 0, t0 = now_ns();
	while (next < npages) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "rawstream: the sender went away at page %llu\n",
				(unsigned long long)next);
			exit(1);
		}
		have += (size_t)r;
		size_t whole = have / FRAME;
		if (whole > npages - next) /* the rest is the next stream's */
			whole = (size_t)(npages - next);
		for (size_t i = 0; i < whole;) {
			uint64_t idx;
			memcpy(&idx, buf + i * FRAME, 8);
			if (idx != next) {
				fprintf(stderr, "rawstream: page %llu arrived as %llu\n",
					(unsigned long long)next, (unsigned long long)idx);
				exit(1);
			}
			uint64_t n = whole - i < RUN ? whole - i : RUN;
			if (mem)
				install(uffd, mem, next, buf + i * FRAME, n, install_ns);
			next += n;
			i += n;
		}
		memmove(buf, buf + whole * FRAME, have - whole * FRAME);
		have -= whole * FRAME;
	}
	return (double)(now_ns() - t0) / 1e9;
}

static void check(const uint8_t *mem, uint64_t npages)
{
	for (uint64_t p = 0; p < npages; p++) {
		const uint64_t *data = (const uint64_t *)(mem + p * PAGE);
		for (uint64_t w = 0; w < PAGE / 8; w++) {
			if (data[w] != word(p, w)) {
				fprintf(stderr, "rawstream: page %llu word %llu arrived wrong\n",
					(unsigned long long)p, (unsigned long long)w);
				exit(1);
			}
		}
	}
}

int main(int argc, char **argv)
{
	long mb = argc > 1 ? atol(argv[1]) : 64;
	if (mb < 1 || mb > 65536 || (argc != 1 && argc != 2 && argc != 4)) {
		fprintf(stderr, "usage: rawstream [mb [cpu_a cpu_b]]  (mb 1..65536)\n");
		return 2;
	}
	int cpu_a = -1, cpu_b = -1;
	if (argc == 4) {
		cpu_a = atoi(argv[2]);
		cpu_b = atoi(argv[3]);
		if (cpu_a < 0 || cpu_b < 0 || cpu_a >= CPU_SETSIZE || cpu_b >= CPU_SETSIZE) {
			fprintf(stderr, "rawstream: cpus must be 0..%d\n", CPU_SETSIZE - 1);
			return 2;
		}
	}
	uint64_t npages = (uint64_t)mb << 20 >> 12;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[1]);
		pin(cpu_a);
		sender(sv[0], npages, PASSES + 1);
		_exit(0);
	}
	close(sv[0]);
	pin(cpu_b);
	size_t len = npages * PAGE;
	double fresh_s[PASSES];
	uint64_t install_ns[PASSES] = { 0 };
	uint8_t *mem[PASSES];
	int best = 0;
	for (int k = 0; k < PASSES; k++) {
		mem[k] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem[k] == MAP_FAILED)
			die("mmap");
		/* 4 KiB pages, as the library's guest RAM (MADV_NOHUGEPAGE there too) */
		if (madvise(mem[k], len, MADV_NOHUGEPAGE) < 0)
			die("madvise");
		int uffd = uffd_region(mem[k], len);
		fresh_s[k] = receive(sv[1], npages, uffd, mem[k], &install_ns[k]);
		close(uffd);
		if (fresh_s[k] < fresh_s[best])
			best = k;
	}
	double socket_s = receive(sv[1], npages, -1, NULL, &(uint64_t){ 0 });
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "rawstream: the sender failed\n");
		return 1;
	}
	for (int k = 0; k < PASSES; k++)
		check(mem[k], npages);
	double bytes = (double)len / 1048576.0;
	printf("{\"mb\":%ld,\"mb_s\":%.1f,\"socket_mb_s\":%.1f,\"install_us_per_page\":%.2f,"
	       "\"cpus\":[%d,%d],\"passes_mb_s\":[",
	       mb, bytes / fresh_s[best], bytes / socket_s,
	       (double)install_ns[best] / 1000.0 / (double)npages, cpu_a, cpu_b);
	for (int k = 0; k < PASSES; k++)
		printf("%s%.1f", k ? "," : "", bytes / fresh_s[k]);
	printf("],\"passes_install_us_per_page\":[");
	for (int k = 0; k < PASSES; k++)
		printf("%s%.2f", k ? "," : "", (double)install_ns[k] / 1000.0 / (double)npages);
	printf("]}\n");
	return 0;
}
