/*
 * health.c - the node's hardware telemetry, TidalGuard-style: warnings that
 * come before a crash (corrected memory errors, heat, interconnect errors)
 * turn into an evacuation while the node still works.
 *
 * Real sources, read every 5 s where the host offers them: EDAC's corrected
 * error counts (/sys/devices/system/edac/mc/mc*\/ce_count), the hottest hwmon
 * sensor (/sys/class/hwmon/hwmon*\/temp*_input), and our own links' malformed
 * frames (a corrupting interconnect shows up there first).  The testbed adds
 * injected values (hk_health_inject, QMP hyperkernel-inject-health), which
 * is how it exercises the path on machines that never fail.
 *
 * The score (100 healthy .. 0 past a threshold) is the worst of the three
 * as a fraction of its threshold; it travels in the heartbeat so that peers
 * place pushed pages and evacuated vCPUs on the healthiest nodes first.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk.h"

#define HEALTH_READ_TICKS 25
#define TEMP_FLOOR_C 40 /* below this, heat counts for nothing */

int hk_health_init(struct hk_node *n)
{
	struct hk_health_state *h = &n->health;
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	h->injected.temp_c = INT32_MIN;
	h->real.temp_c = INT32_MIN;
	h->score = 100;
	return 0;
}

void hk_health_destroy(struct hk_node *n)
{
	pthread_mutex_destroy(&n->health.lock);
}

static bool read_u64(const char *path, uint64_t *v)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	unsigned long long x;
	bool ok = fscanf(f, "%llu", &x) == 1;
	fclose(f);
	*v = x;
	return ok;
}

/* Sum (or max) of a numeric file found under each matching directory. */
static bool scan(const char *dir, const char *prefix, const char *file_prefix, bool want_max,
		 uint64_t *out)
{
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool any = false;
	uint64_t acc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)))
			continue;
		char sub[512];
		snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
		DIR *s = opendir(sub);
		if (!s)
			continue;
		struct dirent *f;
		while ((f = readdir(s))) {
			size_t fl = strlen(file_prefix);
			if (strncmp(f->d_name, file_prefix, fl))
				continue;
			/* hwmon: temp<N>_input; EDAC: ce_count exactly */
			if (want_max && !strstr(f->d_name, "_input"))
				continue;
			if (!want_max && strcmp(f->d_name, file_prefix))
				continue;
			char path[1024];
			uint64_t v;
			snprintf(path, sizeof(path), "%s/%s", sub, f->d_name);
			if (!read_u64(path, &v))
				continue;
			any = true;
			acc = want_max ? (v > acc ? v : acc) : acc + v;
		}
		closedir(s);
	}
	closedir(d);
	*out = acc;
	return any;
}

static void read_real(struct hk_node *n, struct hk_health *r)
{
	uint64_t v;
	r->corrected_errors = scan("/sys/devices/system/edac/mc", "mc", "ce_count", false, &v) ? v : 0;
	r->temp_c = scan("/sys/class/hwmon", "hwmon", "temp", true, &v) ? (int32_t)(v / 1000) : INT32_MIN;
	r->link_errors = atomic_load(&n->stats.malformed);
}

static uint32_t fraction_pct(uint64_t v, uint64_t max)
{
	return max ? (uint32_t)(v >= max ? 100 : 100 * v / max) : 0;
}

/* The values that count: real plus injected (the hotter temperature). */
static void effective(const struct hk_health_state *h, struct hk_health *e)
{
	e->corrected_errors = h->real.corrected_errors + h->injected.corrected_errors;
	e->link_errors = h->real.link_errors + h->injected.link_errors;
	e->temp_c = h->real.temp_c > h->injected.temp_c ? h->real.temp_c : h->injected.temp_c;
}

void hk_health_tick(struct hk_node *n)
{
	struct hk_health_state *h = &n->health;
	struct hk_health real = h->real;
	if (h->ticks++ % HEALTH_READ_TICKS == 0)
		read_real(n, &real);
	else
		real.link_errors = atomic_load(&n->stats.malformed);
	const struct hk_tuning *t = &n->tuning;
	pthread_mutex_lock(&h->lock);
	h->real = real;
	struct hk_health e;
	effective(h, &e);
	uint32_t worst = fraction_pct(e.corrected_errors, t->health_max_ce);
	uint32_t l = fraction_pct(e.link_errors, t->health_max_link_errors);
	worst = l > worst ? l : worst;
	if (e.temp_c != INT32_MIN && e.temp_c > TEMP_FLOOR_C) {
		uint32_t tc = fraction_pct((uint64_t)(e.temp_c - TEMP_FLOOR_C),
					   (uint64_t)(t->health_max_temp_c - TEMP_FLOOR_C));
		worst = tc > worst ? tc : worst;
	}
	h->score = 100 - worst;
	bool trip = !h->tripped && worst >= 100;
	if (trip)
		h->tripped = true;
	pthread_mutex_unlock(&h->lock);
	if (!trip)
		return;
	char reason[96], why[160];
	if (e.corrected_errors >= t->health_max_ce)
		snprintf(reason, sizeof(reason), "health: %lu corrected memory errors (limit %lu)",
			 e.corrected_errors, t->health_max_ce);
	else if (e.link_errors >= t->health_max_link_errors)
		snprintf(reason, sizeof(reason), "health: %lu link errors (limit %lu)", e.link_errors,
			 t->health_max_link_errors);
	else
		snprintf(reason, sizeof(reason), "health: %d C (limit %d C)", e.temp_c,
			 t->health_max_temp_c);
	hk_warn("%s: evacuating this node", reason);
	int r = hk_evacuate(n, reason, why, sizeof(why));
	if (r)
		hk_warn("%s, but the evacuation was refused: %s", reason, why);
}

uint32_t hk_health_score(struct hk_node *n)
{
	pthread_mutex_lock(&n->health.lock);
	uint32_t s = n->health.score;
	pthread_mutex_unlock(&n->health.lock);
	return s;
}

int hk_health_inject(struct hk_node *n, const struct hk_health *v, char *why, size_t whylen)
{
	if (!n || !v)
		return -EINVAL;
	if (v->corrected_errors > 1000000000000ull || v->link_errors > 1000000000000ull) {
		snprintf(why, whylen, "error counts must be 0 to 10^12");
		return -EINVAL;
	}
	if (v->temp_c != INT32_MIN && (v->temp_c < -60 || v->temp_c > 200)) {
		snprintf(why, whylen, "temperature %d C is out of range: use -60 to 200", v->temp_c);
		return -EINVAL;
	}
	pthread_mutex_lock(&n->health.lock);
	n->health.injected = *v;
	pthread_mutex_unlock(&n->health.lock);
	return 0;
}

void hk_health_get(struct hk_node *n, struct hk_health *e, uint32_t *score)
{
	pthread_mutex_lock(&n->health.lock);
	effective(&n->health, e);
	*score = n->health.score;
	pthread_mutex_unlock(&n->health.lock);
}
