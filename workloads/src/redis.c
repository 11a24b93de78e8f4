/*
 * redis: Debian's redis-server and its redis-benchmark client inside the
 * guest, over loopback. Server and client threads share the network stack's
 * and socket buffers' pages.
 *
 * The driver brings loopback up, starts the server (pinned to the first vCPU
 * of cpus), runs redis-benchmark (pinned to the second) for a bounded number
 * of requests, then writes a known data set over RESP, checks DBSIZE, reads
 * every key back and compares it, and shuts the server down.
 *
 * The staged programs are dynamically linked, so they are started through
 * the loader staged beside them: DIR/lib/ld-linux-x86-64.so.2 --library-path
 * DIR/lib DIR/bin/<program>.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const struct wl_param params[] = {
	WL_INT_PARAM("requests", "2000", 1, 100000000, "redis-benchmark requests per test (SET and GET)"),
	WL_INT_PARAM("clients", "4", 1, 1000, "redis-benchmark parallel connections"),
	WL_INT_PARAM("pipeline", "1", 1, 1000, "redis-benchmark requests per round trip"),
	WL_INT_PARAM("keys", "1000", 1, 10000000, "keys in the verified data set"),
	WL_INT_PARAM("value_size", "64", 1, 1048576, "bytes per value"),
	WL_INT_PARAM("port", "6399", 1024, 65535, "server port on 127.0.0.1"),
	WL_STR_PARAM("redis_dir", "/opt/redis", "staged tree with bin/ and lib/ (loader included)"),
	WL_PARAMS_END,
};

#define BATCH 100

static pid_t server_pid = -1, bench_pid = -1;

static void kill_children(void)
{
	if (bench_pid > 0)
		kill(bench_pid, SIGKILL);
	if (server_pid > 0)
		kill(server_pid, SIGKILL);
}

#define SERVER_LOG "/tmp/wl-redis-server.log"

/* The end of the server's log, on stderr: the result line has no room for it. */
static void dump_server_log(void)
{
	char tail[2048];
	int fd = open(SERVER_LOG, O_RDONLY);

	if (fd < 0)
		return;
	off_t size = lseek(fd, 0, SEEK_END);
	lseek(fd, size > (off_t)sizeof(tail) ? size - (off_t)sizeof(tail) : 0, SEEK_SET);
	ssize_t n = read(fd, tail, sizeof(tail));
	if (n > 0) {
		fprintf(stderr, "redis: end of %s:\n", SERVER_LOG);
		fwrite(tail, 1, (size_t)n, stderr);
	}
	close(fd);
}

static _Noreturn void fail(const char *reason, const char *detail)
{
	fprintf(stderr, "redis: %s%s%s\n", reason, detail ? ": " : "", detail ? detail : "");
	kill_children();
	dump_server_log();
	wl_finish(false, reason);
}

/* Busybox init leaves lo down; redis and its client need 127.0.0.1. */
static void loopback_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		fail("loopback", strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0)
		fail("loopback", strerror(errno));
	if (!(ifr.ifr_flags & IFF_UP)) {
		/* The kernel gives lo 127.0.0.1/8 itself when it comes up. */
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
			fail("loopback", strerror(errno));
	}
	close(fd);
}

/* Starts DIR/bin/<prog> through the staged loader, pinned to cpus slot `slot`. */
static pid_t spawn(const char *dir, const char *prog, char *const args[], int slot, int out_fd)
{
	char loader[4096], libdir[4096], path[4096];
	char *argv[64];
	int n = 0;

	snprintf(loader, sizeof(loader), "%s/lib/ld-linux-x86-64.so.2", dir);
	snprintf(libdir, sizeof(libdir), "%s/lib", dir);
	snprintf(path, sizeof(path), "%s/bin/%s", dir, prog);
	argv[n++] = loader;
	argv[n++] = "--library-path";
	argv[n++] = libdir;
	argv[n++] = path;
	for (int i = 0; args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;

	pid_t pid = fork();
	if (pid < 0)
		fail("fork", strerror(errno));
	if (pid == 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(wl_cpu(slot), &set);
		sched_setaffinity(0, sizeof(set), &set);
		dup2(out_fd, STDOUT_FILENO);
		dup2(out_fd, STDERR_FILENO);
		execv(loader, argv);
		_exit(127);
	}
	return pid;
}

/* A minimal RESP client: buffered reads of lines and bulk strings. */
struct conn {
	int fd;
	char buf[65536];
	size_t len, pos;
};

static bool conn_open(struct conn *c, int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	c->len = c->pos = 0;
	if (c->fd < 0)
		return false;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(c->fd);
		return false;
	}
	return true;
}

static void conn_send(struct conn *c, const char *data, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, data, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("connection_lost", strerror(errno));
		data += w;
		n -= (size_t)w;
	}
}

static int conn_getc(struct conn *c)
{
	if (c->pos == c->len) {
		ssize_t r;

		do
			r = read(c->fd, c->buf, sizeof(c->buf));
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			fail("connection_lost", r < 0 ? strerror(errno) : "eof");
		c->len = (size_t)r;
		c->pos = 0;
	}
	return (unsigned char)c->buf[c->pos++];
}

/* Reads one reply line without its CRLF. */
static void conn_line(struct conn *c, char *out, size_t cap)
{
	size_t n = 0;
	int ch;

	while ((ch = conn_getc(c)) != '\n')
		if (ch != '\r' && n + 1 < cap)
			out[n++] = (char)ch;
	out[n] = '\0';
}

/* Reads a bulk-string reply into out (cap bytes); returns its length, -1 for nil. */
static long conn_bulk(struct conn *c, char *out, size_t cap)
{
	char line[64];

	conn_line(c, line, sizeof(line));
	if (line[0] != '$')
		fail("protocol_error", line);
	long len = strtol(line + 1, NULL, 10);
	if (len < 0)
		return -1;
	for (long i = 0; i < len + 2; i++) {
		int ch = conn_getc(c);

		if (i < len && (size_t)i < cap)
			out[i] = (char)ch;
	}
	return len;
}

static void append_arg(char **p, const char *s, size_t n)
{
	*p += sprintf(*p, "$%zu\r\n", n);
	memcpy(*p, s, n);
	*p += n;
	*p += sprintf(*p, "\r\n");
}

static void command(struct conn *c, int argc, const char **argv, const size_t *lens)
{
	size_t total = 32;

	for (int i = 0; i < argc; i++)
		total += lens[i] + 32;
	char *msg = malloc(total), *p = msg;
	if (!msg)
		fail("nomem", NULL);
	p += sprintf(p, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++)
		append_arg(&p, argv[i], lens[i]);
	conn_send(c, msg, (size_t)(p - msg));
	free(msg);
}

static void simple(struct conn *c, const char *cmd, char *reply, size_t cap)
{
	const char *argv[1] = { cmd };
	size_t lens[1] = { strlen(cmd) };

	command(c, 1, argv, lens);
	conn_line(c, reply, cap);
}

static size_t key_of(long long i, char *out)
{
	return (size_t)sprintf(out, "wl:%lld", i);
}

/* A deterministic value that differs for every key and position. */
static void value_of(long long i, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t h = 0;

	for (size_t j = 0; j < size; j++) {
		if (j % 16 == 0)
			h = wl_mix64((uint64_t)i << 24 ^ j);
		out[j] = hex[h & 15];
		h >>= 4;
	}
}

struct bench_row {
	double rps, p50_ms, p99_ms;
	bool seen;
};

/* redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms" */
static void parse_bench(const char *text, const char *test, struct bench_row *row)
{
	char prefix[32];
	snprintf(prefix, sizeof(prefix), "\"%s\",", test);
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		double f[7];

		if (strncmp(line, prefix, strlen(prefix)) != 0)
			continue;
		if (sscanf(line + strlen(prefix), "\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &f[0], &f[1],
			   &f[2], &f[3], &f[4], &f[5], &f[6]) == 7) {
			row->rps = f[0];
			row->p50_ms = f[3];
			row->p99_ms = f[5];
			row->seen = true;
		}
	}
}

static bool wait_exit(pid_t pid, int seconds, int *status)
{
	for (int i = 0; i < seconds * 100; i++) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return true;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return false;
}

int main(int argc, char **argv)
{
	wl_init("redis", params, argc, argv);
	const char *dir = wl_str("redis_dir");
	int port = (int)wl_int("port");
	long long keys = wl_int("keys");
	size_t vsize = (size_t)wl_int("value_size");
	char portstr[16], reply[256], path[4096];
	struct conn c;

	signal(SIGPIPE, SIG_IGN);
	wl_on_timeout(kill_children);
	snprintf(path, sizeof(path), "%s/bin/redis-server", dir);
	if (access(path, X_OK) != 0)
		fail("redis_missing", path);
	mkdir("/tmp", 01777);
	loopback_up();

	uint64_t start = wl_now_ns();
	snprintf(portstr, sizeof(portstr), "%d", port);
	int log_fd = open(SERVER_LOG, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (log_fd < 0)
		fail("log", strerror(errno));
	char *server_args[] = { "--port", portstr, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
				"--protected-mode", "no", "--daemonize", "no", "--dir", "/tmp", NULL };
	server_pid = spawn(dir, "redis-server", server_args, 0, log_fd);
	close(log_fd);

	/* Wait for the server to answer PING; it may take seconds under TCG. */
	bool up = false;
	for (int i = 0; i < 6000 && !up; i++) {
		int status;

		if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
			server_pid = -1;
			fail("server_died", NULL);
		}
		if (conn_open(&c, port)) {
			simple(&c, "PING", reply, sizeof(reply));
			up = strcmp(reply, "+PONG") == 0;
			if (!up)
				close(c.fd);
		} else {
			struct timespec ts = { 0, 10000000 };
			nanosleep(&ts, NULL);
		}
	}
	if (!up)
		fail("server_not_ready", NULL);
	uint64_t ready = wl_now_ns();

	/* The benchmark, its CSV on a pipe. */
	int pipefd[2];
	if (pipe(pipefd) != 0)
		fail("pipe", strerror(errno));
	char n_s[32], c_s[32], p_s[32], d_s[32];
	snprintf(n_s, sizeof(n_s), "%lld", wl_int("requests"));
	snprintf(c_s, sizeof(c_s), "%lld", wl_int("clients"));
	snprintf(p_s, sizeof(p_s), "%lld", wl_int("pipeline"));
	snprintf(d_s, sizeof(d_s), "%zu", vsize);
	char *bench_args[] = { "-h", "127.0.0.1", "-p", portstr, "-n", n_s, "-c", c_s, "-P", p_s,
			       "-d", d_s, "-t", "set,get", "--csv", NULL };
	bench_pid = spawn(dir, "redis-benchmark", bench_args, 1, pipefd[1]);
	close(pipefd[1]);
	static char csv[65536];
	size_t csv_len = 0;
	ssize_t r;
	while ((r = read(pipefd[0], csv + csv_len, sizeof(csv) - 1 - csv_len)) > 0 || (r < 0 && errno == EINTR))
		if (r > 0)
			csv_len += (size_t)r;
	csv[csv_len] = '\0';
	close(pipefd[0]);
	int status;
	waitpid(bench_pid, &status, 0);
	bench_pid = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("benchmark_failed", csv);
	struct bench_row set = { 0 }, get = { 0 };
	parse_bench(csv, "SET", &set);
	parse_bench(csv, "GET", &get);
	if (!set.seen || !get.seen)
		fail("benchmark_output", csv);
	uint64_t benched = wl_now_ns();

	/* The data set: the benchmark's own keys go first, so DBSIZE counts only ours. */
	simple(&c, "FLUSHALL", reply, sizeof(reply));
	if (strcmp(reply, "+OK") != 0)
		fail("flushall", reply);
	char *value = malloc(vsize + 1), *got = malloc(vsize + 1);
	char key[32];
	if (!value || !got)
		fail("nomem", NULL);
	for (long long i = 0; i < keys; i += BATCH) {
		long long end = i + BATCH < keys ? i + BATCH : keys;

		for (long long k = i; k < end; k++) {
			const char *args[3] = { "SET", key, value };
			size_t lens[3] = { 3, key_of(k, key), vsize };

			value_of(k, value, vsize);
			command(&c, 3, args, lens);
		}
		for (long long k = i; k < end; k++) {
			conn_line(&c, reply, sizeof(reply));
			if (strcmp(reply, "+OK") != 0)
				fail("set_failed", reply);
		}
	}
	if (wl_inject()) {
		/* One key's value changes behind the verifier's back (same length). */
		long long k = keys / 2;
		const char *args[3] = { "SET", key, value };
		size_t lens[3] = { 3, key_of(k, key), vsize };

		value_of(k, value, vsize);
		value[0] = value[0] == 'x' ? 'y' : 'x';
		command(&c, 3, args, lens);
		conn_line(&c, reply, sizeof(reply));
	}
	uint64_t written = wl_now_ns();

	simple(&c, "DBSIZE", reply, sizeof(reply));
	long long dbsize = reply[0] == ':' ? strtoll(reply + 1, NULL, 10) : -1;
	long long mismatches = 0;
	for (long long i = 0; i < keys; i += BATCH) {
		long long end = i + BATCH < keys ? i + BATCH : keys;

		for (long long k = i; k < end; k++) {
			const char *args[2] = { "GET", key };
			size_t lens[2] = { 3, key_of(k, key) };

			command(&c, 2, args, lens);
		}
		for (long long k = i; k < end; k++) {
			long len = conn_bulk(&c, got, vsize);

			value_of(k, value, vsize);
			mismatches += len != (long)vsize || memcmp(got, value, vsize) != 0;
		}
	}
	uint64_t verified = wl_now_ns();

	/* SHUTDOWN NOSAVE closes the connection instead of replying. */
	const char *shutdown_args[2] = { "SHUTDOWN", "NOSAVE" };
	size_t shutdown_lens[2] = { 8, 6 };
	command(&c, 2, shutdown_args, shutdown_lens);
	close(c.fd);
	bool clean_exit = wait_exit(server_pid, 30, &status) && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!clean_exit)
		kill(server_pid, SIGKILL);
	server_pid = -1;

	wl_put_rate(2 * wl_int("requests") + 2 * keys, verified - start);
	wl_put_double("startup_s", (double)(ready - start) / 1e9);
	wl_put_double("set_rps", set.rps);
	wl_put_double("get_rps", get.rps);
	wl_put_double("set_p50_ms", set.p50_ms);
	wl_put_double("set_p99_ms", set.p99_ms);
	wl_put_double("get_p50_ms", get.p50_ms);
	wl_put_double("get_p99_ms", get.p99_ms);
	wl_put_double("bench_s", (double)(benched - ready) / 1e9);
	wl_put_double("load_s", (double)(written - benched) / 1e9);
	wl_put_double("verify_s", (double)(verified - written) / 1e9);
	wl_put_int("bytes", keys * (long long)vsize);
	wl_put_int("dbsize", dbsize);
	wl_put_int("mismatches", mismatches);
	wl_put_int("clean_shutdown", clean_exit);
	bool ok = dbsize == keys && mismatches == 0 && clean_exit;
	wl_finish(ok, ok ? NULL : (mismatches ? "data_mismatch" : dbsize != keys ? "dbsize_mismatch" : "shutdown_failed"));
}
