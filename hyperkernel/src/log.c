/* log.c - the one set of warning/fatal helpers, and the clock. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hk.h"

static char hk_log_prefix[64] = "hk";

void hk_log_set_prefix(const char *prefix)
{
	snprintf(hk_log_prefix, sizeof(hk_log_prefix), "%s", prefix);
}

/* One write() per line so lines from several processes do not interleave. */
static void hk_log_emit(const char *level, const char *fmt, va_list ap)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "[%s] %s", hk_log_prefix, level);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t r = write(STDERR_FILENO, line, n);
	(void)r;
}

void hk_info(const char *fmt, ...)
{
	if (!getenv("HK_VERBOSE"))
		return;
	va_list ap;
	va_start(ap, fmt);
	hk_log_emit("", fmt, ap);
	va_end(ap);
}

void hk_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	hk_log_emit("warning: ", fmt, ap);
	va_end(ap);
}

void hk_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	hk_log_emit("fatal: ", fmt, ap);
	va_end(ap);
	abort();
}

