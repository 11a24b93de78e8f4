#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_PARAMS 32
#define LINE_MAX_BYTES 4096

/* Every workload accepts these after its own parameters. */
static const struct wl_param common_params[] = {
	{ "cpus", WL_CPULIST, "", 0, 0, NULL,
	  "vCPUs to pin threads to, round-robin (e.g. 0,1 or 0-3); default all usable" },
	WL_INT_PARAM("inject", "0", 0, 1, "1 corrupts one value on purpose: the check must report ok=0"),
	WL_INT_PARAM("timeout_s", "300", 1, 86400, "watchdog: report ok=0 reason=timeout after this long"),
	WL_PARAMS_END,
};

static const char *workload_name;
static const struct wl_param *table[MAX_PARAMS];
static char *values[MAX_PARAMS];
static int nparams;

static int cpus[CPU_SETSIZE];
static int ncpus;

/* Read once, at wl_init: the workloads ask in their hot loops, and the
 * value's text lies in argv, at the top of the main thread's stack.  On two
 * nodes, a thread reading it there shared a page with the main thread's
 * calls: pingpong's pong stalled on it twice a round (more than on the token
 * itself). */
static bool inject_on;

/* "key=value key=value": parameters are echoed once, figures appended later. */
static char params_text[LINE_MAX_BYTES];
static char figures_text[LINE_MAX_BYTES];
static atomic_flag finished = ATOMIC_FLAG_INIT;
static void (*timeout_hook)(void);

static void append(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void append(char *buf, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used >= LINE_MAX_BYTES - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, LINE_MAX_BYTES - used, fmt, ap);
	va_end(ap);
}

static const char *type_name(enum wl_type t)
{
	switch (t) {
	case WL_INT: return "int";
	case WL_ENUM: return "enum";
	case WL_STR: return "str";
	case WL_CPULIST: return "cpulist";
	}
	return "?";
}

static void print_table(FILE *f)
{
	for (int i = 0; i < nparams; i++) {
		const struct wl_param *p = table[i];

		fprintf(f, "%s\t%s\t%s\t", p->name, type_name(p->type), p->def[0] ? p->def : "-");
		if (p->type == WL_INT)
			fprintf(f, "%lld\t%lld\t", p->min, p->max);
		else
			fprintf(f, "-\t-\t");
		fprintf(f, "%s\t%s\n", p->choices ? p->choices : "-", p->help);
	}
}

static _Noreturn void bad_args(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void bad_args(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", workload_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nvalid parameters (name, type, default, min, max, choices, help):\n");
	print_table(stderr);
	exit(2);
}

static int find_param(const char *name, size_t len)
{
	for (int i = 0; i < nparams; i++)
		if (strlen(table[i]->name) == len && strncmp(table[i]->name, name, len) == 0)
			return i;
	return -1;
}

static bool parse_ll(const char *s, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

static bool enum_has(const char *choices, const char *v)
{
	size_t len = strlen(v);

	for (const char *c = choices; *c;) {
		const char *comma = strchr(c, ',');
		size_t n = comma ? (size_t)(comma - c) : strlen(c);

		if (n == len && strncmp(c, v, n) == 0)
			return true;
		c += n + (comma ? 1 : 0);
	}
	return false;
}

/*
 * A cpulist names CPUs this process may run on: a CPU that is offline or
 * outside our affinity mask would make pinning fail later, mid-run.
 */
static void parse_cpus(const char *text, const cpu_set_t *usable)
{
	ncpus = 0;
	if (text[0] == '\0') {
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, usable))
				cpus[ncpus++] = c;
		return;
	}
	for (const char *s = text; *s;) {
		char *end;
		long lo = strtol(s, &end, 10), hi = lo;

		if (end == s || lo < 0)
			bad_args("cpus=%s: expected a list like 0,1 or 0-3", text);
		if (*end == '-') {
			s = end + 1;
			hi = strtol(s, &end, 10);
			if (end == s || hi < lo)
				bad_args("cpus=%s: expected a list like 0,1 or 0-3", text);
		}
		for (long c = lo; c <= hi; c++) {
			if (c >= CPU_SETSIZE || !CPU_ISSET(c, usable))
				bad_args("cpus=%s: cpu %ld is not usable (only %d CPUs online in this affinity mask)",
					 text, c, CPU_COUNT(usable));
			if (ncpus == CPU_SETSIZE)
				bad_args("cpus=%s: too many entries", text);
			cpus[ncpus++] = (int)c;
		}
		if (*end == ',')
			end++;
		else if (*end != '\0')
			bad_args("cpus=%s: expected a list like 0,1 or 0-3", text);
		s = end;
	}
	if (ncpus == 0)
		bad_args("cpus is empty");
}

static void *watchdog(void *arg)
{
	struct timespec ts = { .tv_sec = (time_t)(intptr_t)arg, .tv_nsec = 0 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	if (atomic_flag_test_and_set(&finished))
		return NULL; /* the workload is already printing its own line */
	if (timeout_hook)
		timeout_hook();
	char line[LINE_MAX_BYTES * 2];
	int n = snprintf(line, sizeof(line), "workload=%s ok=0%s reason=timeout\n", workload_name, params_text);
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		_exit(1);
	_exit(1);
}

void wl_init(const char *workload, const struct wl_param *params, int argc, char **argv)
{
	cpu_set_t usable;

	workload_name = workload;
	nparams = 0;
	for (const struct wl_param *p = params; p->name; p++)
		table[nparams++] = p;
	for (const struct wl_param *p = common_params; p->name; p++)
		table[nparams++] = p;
	for (int i = 0; i < nparams; i++)
		values[i] = (char *)table[i]->def;

	for (int a = 1; a < argc; a++) {
		const char *arg = argv[a];
		const char *eq = strchr(arg, '=');

		if (strcmp(arg, "--params") == 0) {
			print_table(stdout);
			exit(0);
		}
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			printf("usage: %s [key=value ...] | --params\n"
			       "parameters (name, type, default, min, max, choices, help):\n", workload);
			print_table(stdout);
			exit(0);
		}
		if (!eq)
			bad_args("argument '%s' is not key=value", arg);
		int i = find_param(arg, (size_t)(eq - arg));
		if (i < 0)
			bad_args("unknown parameter '%.*s'", (int)(eq - arg), arg);
		values[i] = (char *)(eq + 1);
	}

	if (sched_getaffinity(0, sizeof(usable), &usable) != 0)
		bad_args("sched_getaffinity: %s", strerror(errno));
	for (int i = 0; i < nparams; i++) {
		const struct wl_param *p = table[i];
		const char *v = values[i];
		long long n;

		switch (p->type) {
		case WL_INT:
			if (!parse_ll(v, &n))
				bad_args("%s=%s is not an integer", p->name, v);
			if (n < p->min || n > p->max)
				bad_args("%s=%lld is out of range [%lld, %lld]", p->name, n, p->min, p->max);
			append(params_text, " %s=%lld", p->name, n);
			break;
		case WL_ENUM:
			if (!enum_has(p->choices, v))
				bad_args("%s=%s is not one of %s", p->name, v, p->choices);
			append(params_text, " %s=%s", p->name, v);
			break;
		case WL_STR:
			if (v[0] == '\0' || strpbrk(v, " \t\n="))
				bad_args("%s='%s' must be non-empty without spaces or '='", p->name, v);
			append(params_text, " %s=%s", p->name, v);
			break;
		case WL_CPULIST:
			parse_cpus(v, &usable);
			append(params_text, " %s=", p->name);
			for (int c = 0; c < ncpus; c++)
				append(params_text, "%s%d", c ? "," : "", cpus[c]);
			break;
		}
	}

	inject_on = wl_int("inject") != 0;

	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, watchdog, (void *)(intptr_t)wl_int("timeout_s")) != 0) {
		fprintf(stderr, "%s: cannot start watchdog\n", workload);
		exit(2);
	}
	pthread_attr_destroy(&attr);
}

static int lookup(const char *name)
{
	int i = find_param(name, strlen(name));

	if (i < 0) {
		/* A programming error, not bad input: the table and the code disagree. */
		fprintf(stderr, "%s: internal error: no parameter '%s'\n", workload_name, name);
		abort();
	}
	return i;
}

long long wl_int(const char *name)
{
	return strtoll(values[lookup(name)], NULL, 10);
}

const char *wl_str(const char *name)
{
	return values[lookup(name)];
}

bool wl_inject(void)
{
	return inject_on;
}

int wl_ncpus(void)
{
	return ncpus;
}

int wl_cpu(int i)
{
	return cpus[i % ncpus];
}

static void cpu_mask(int i, cpu_set_t *set)
{
	CPU_ZERO(set);
	CPU_SET(wl_cpu(i), set);
}

void wl_pin_self(int i)
{
	cpu_set_t set;

	cpu_mask(i, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		fprintf(stderr, "%s: pin to cpu %d: %s\n", workload_name, wl_cpu(i), strerror(errno));
		wl_finish(false, "pin_failed");
	}
}

void wl_thread_create(pthread_t *t, int i, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	cpu_set_t set;

	cpu_mask(i, &set);
	pthread_attr_init(&attr);
	pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	int err = pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	if (err != 0) {
		fprintf(stderr, "%s: pthread_create: %s\n", workload_name, strerror(err));
		wl_finish(false, "thread_create_failed");
	}
}

void wl_thread_join(pthread_t t)
{
	pthread_join(t, NULL);
}

uint64_t wl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void wl_relax(unsigned *spins)
{
	if (++*spins < 200) {
		__builtin_ia32_pause();
	} else {
		*spins = 0;
		sched_yield();
	}
}

uint64_t wl_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint64_t wl_rand(struct wl_rng *rng)
{
	rng->state += 0x9e3779b97f4a7c15ull;
	return wl_mix64(rng->state);
}

uint64_t wl_rand_below(struct wl_rng *rng, uint64_t bound)
{
	/* Multiply-shift: bias is negligible for the bounds used here. */
	return (uint64_t)(((unsigned __int128)wl_rand(rng) * bound) >> 64);
}

void *wl_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map %zu bytes: %s\n", workload_name, bytes, strerror(errno));
		wl_finish(false, "nomem");
	}
	return p;
}

void wl_free(void *p, size_t bytes)
{
	munmap(p, bytes);
}

void wl_put_int(const char *key, long long v)
{
	append(figures_text, " %s=%lld", key, v);
}

void wl_put_double(const char *key, double v)
{
	append(figures_text, " %s=%.6g", key, v);
}

void wl_put_str(const char *key, const char *v)
{
	append(figures_text, " %s=%s", key, v);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

void wl_put_latency(const char *prefix, uint64_t *samples, size_t n)
{
	char key[64];

	if (n == 0)
		return;
	qsort(samples, n, sizeof(*samples), cmp_u64);
	snprintf(key, sizeof(key), "%s_p50", prefix);
	wl_put_int(key, (long long)samples[n / 2]);
	snprintf(key, sizeof(key), "%s_p99", prefix);
	wl_put_int(key, (long long)samples[(n * 99) / 100]);
	snprintf(key, sizeof(key), "%s_max", prefix);
	wl_put_int(key, (long long)samples[n - 1]);
}

void wl_put_rate(long long ops, uint64_t elapsed_ns)
{
	double s = (double)elapsed_ns / 1e9;

	wl_put_int("ops", ops);
	wl_put_double("elapsed_s", s);
	wl_put_double("ops_per_s", s > 0 ? (double)ops / s : 0.0);
}

void wl_on_timeout(void (*fn)(void))
{
	timeout_hook = fn;
}

_Noreturn void wl_finish(bool ok, const char *reason)
{
	char line[LINE_MAX_BYTES * 3];
	int n;

	if (atomic_flag_test_and_set(&finished))
		for (;;)
			pause(); /* the watchdog is printing and will exit */
	n = snprintf(line, sizeof(line), "workload=%s ok=%d%s%s%s%s\n", workload_name, ok ? 1 : 0,
		     params_text, figures_text, reason ? " reason=" : "", reason ? reason : "");
	if (n < 0 || (size_t)n >= sizeof(line))
		n = (int)strlen(line);
	/* One write, so the line is never interleaved with a thread's diagnostics. */
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		_exit(1);
	_exit(ok ? 0 : 1);
}
