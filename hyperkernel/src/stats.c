/* stats.c - counters per node and per thread (per vCPU once named), stall
 * histograms in log2 nanosecond buckets, hottest pages, messages and bytes
 * by type; rendered as one JSON object. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk.h"

void hk_hist_add(struct hk_hist *h, uint64_t ns)
{
	int b = 0;
	while (b < HK_HIST_BUCKETS - 1 && (ns >> (b + 1)))
		b++;
	h->b[b]++;
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

/* Upper bound of the bucket holding the p-th sample: within 2x, enough to
 * compare policies, and cheap enough for the fault path. */
uint64_t hk_hist_percentile(const struct hk_hist *h, double p)
{
	if (!h->count)
		return 0;
	uint64_t want = (uint64_t)(p * (double)h->count + 0.999999), seen = 0;
	if (want == 0)
		want = 1;
	for (int b = 0; b < HK_HIST_BUCKETS; b++) {
		seen += h->b[b];
		if (seen >= want) {
			uint64_t hi = (2ull << b) - 1;
			return hi < h->max_ns ? hi : h->max_ns;
		}
	}
	return h->max_ns;
}

int hk_stats_init(struct hk_stats *st, uint64_t npages)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_init(&st->lock, NULL);
	st->npages = npages;
	st->page_stalls = calloc(npages ? npages : 1, sizeof(uint32_t));
	st->page_lines = calloc(npages ? npages : 1, sizeof(*st->page_lines));
	return st->page_stalls && st->page_lines ? 0 : -ENOMEM;
}

void hk_stats_fault_at(struct hk_stats *st, uint64_t page, uint32_t off)
{
	if (page >= st->npages)
		return;
	/* the slot turns with the page's stall count: the last few faults */
	uint32_t slot = __atomic_load_n(&st->page_stalls[page], __ATOMIC_RELAXED) % HK_LINE_SAMPLES;
	__atomic_store_n(&st->page_lines[page][slot], (uint16_t)(off + 1), __ATOMIC_RELAXED);
}

void hk_stats_destroy(struct hk_stats *st)
{
	free(st->page_stalls);
	free(st->page_lines);
	free(st->threads);
	st->page_stalls = NULL;
	st->page_lines = NULL;
	st->threads = NULL;
}

struct hk_thread_stats *hk_stats_thread(struct hk_stats *st, pid_t tid)
{
	for (size_t i = 0; i < st->nthreads; i++)
		if (st->threads[i].tid == tid)
			return &st->threads[i];
	if (st->nthreads == st->cap_threads) {
		size_t cap = st->cap_threads ? 2 * st->cap_threads : 16;
		struct hk_thread_stats *t = realloc(st->threads, cap * sizeof(*t));
		if (!t)
			return NULL;
		st->threads = t;
		st->cap_threads = cap;
	}
	struct hk_thread_stats *t = &st->threads[st->nthreads++];
	memset(t, 0, sizeof(*t));
	t->tid = tid;
	t->vcpu = -1;
	return t;
}

void hk_stats_set_vcpu(struct hk_stats *st, pid_t tid, int vcpu)
{
	pthread_mutex_lock(&st->lock);
	struct hk_thread_stats *t = hk_stats_thread(st, tid);
	if (t)
		t->vcpu = vcpu;
	pthread_mutex_unlock(&st->lock);
}

void hk_stats_stall_done(struct hk_stats *st, pid_t tid, uint64_t page, bool write, uint64_t ns)
{
	pthread_mutex_lock(&st->lock);
	if (write) {
		st->node.write_stalls++;
		hk_hist_add(&st->write_stall, ns);
	} else {
		st->node.read_stalls++;
		hk_hist_add(&st->read_stall, ns);
	}
	if (page < st->npages)
		__atomic_fetch_add(&st->page_stalls[page], 1, __ATOMIC_RELAXED);
	struct hk_thread_stats *t = hk_stats_thread(st, tid);
	if (t) {
		if (write)
			t->c.write_stalls++;
		else
			t->c.read_stalls++;
		hk_hist_add(&t->stall, ns);
	}
	pthread_mutex_unlock(&st->lock);
}

static const char *const stage_names[HK_STAGE_COUNT] = {
	[HK_STAGE_REQUEST_WAIT] = "request_wait", [HK_STAGE_HOME_QUEUE] = "home_queue",
	[HK_STAGE_INVALIDATE] = "invalidate",     [HK_STAGE_GIVE] = "give",
	[HK_STAGE_REMOTE] = "remote",             [HK_STAGE_INSTALL] = "install",
	[HK_STAGE_HANDOVER] = "handover",         [HK_STAGE_TB_HOLD] = "tb_hold",
};

const char *hk_stage_name(unsigned s)
{
	return s < HK_STAGE_COUNT ? stage_names[s] : "?";
}

void hk_stats_stage(struct hk_stats *st, enum hk_stage stage, uint64_t since)
{
	if (!since)
		return;
	uint64_t now = hk_now_ns();
	pthread_mutex_lock(&st->lock);
	hk_hist_add(&st->stage[stage], now > since ? now - since : 0);
	pthread_mutex_unlock(&st->lock);
}

void hk_stats_msg(struct hk_stats *st, bool sent, unsigned type, size_t bytes)
{
	if (type >= HK_MSG_TYPE_COUNT)
		return;
	if (sent) {
		__atomic_fetch_add(&st->msgs_sent[type], 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->bytes_sent[type], bytes, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&st->msgs_recv[type], 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->bytes_recv[type], bytes, __ATOMIC_RELAXED);
	}
}

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *s, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			s->oom = true;
			return;
		}
		if ((size_t)n < s->cap - s->len) {
			s->len += (size_t)n;
			return;
		}
		size_t cap = (s->cap + (size_t)n) * 2;
		char *p = realloc(s->p, cap);
		if (!p) {
			s->oom = true;
			return;
		}
		s->p = p;
		s->cap = cap;
	}
}

static void json_counters(struct sbuf *s, const struct hk_counters *c)
{
	sb_printf(s,
		  "\"read_stalls\":%lu,\"write_stalls\":%lu,\"pages_received\":%lu,"
		  "\"pages_sent\":%lu,\"invalidations_sent\":%lu,\"invalidations_received\":%lu,"
		  "\"zero_fills\":%lu,\"vcpu_blobs_sent\":%lu,\"vcpu_blobs_received\":%lu,"
		  "\"vcpu_move_decisions\":%lu,\"evictions\":%lu,\"irqs_forwarded\":%lu,"
		  "\"irqs_received\":%lu,\"migrate_requests_forwarded\":%lu,"
		  "\"migrate_requests_lost\":%lu,\"location_updates\":%lu,\"deferred_acks\":%lu,"
		  "\"pushes_refused\":%lu,\"shared_drops\":%lu,\"readaheads\":%lu,"
		  "\"vcpu_pulls\":%lu,\"vcpu_swaps\":%lu,\"deferred_wakes\":%lu,"
		  "\"capacity_moves\":%lu,\"overfull_ticks\":%lu,\"page_holds\":%lu,\"read_holds\":%lu,"
		  "\"refetches\":%lu,\"event_rt_switches\":%lu,\"migratory_reads\":%lu,"
		  "\"migratory_holds\":%lu,\"install_runs\":%lu",
		  c->read_stalls, c->write_stalls, c->pages_received, c->pages_sent, c->inval_sent,
		  c->inval_received, c->zero_fills, c->vcpu_blobs_sent, c->vcpu_blobs_received,
		  c->vcpu_move_decisions, c->evictions, c->irqs_forwarded, c->irqs_received,
		  c->migrate_requests_forwarded, c->migrate_requests_lost, c->location_updates, c->deferred_acks, c->pushes_refused, c->shared_drops, c->readaheads,
		  c->vcpu_pulls, c->vcpu_swaps, c->deferred_wakes, c->capacity_moves, c->overfull_ticks, c->page_holds,
		  c->read_holds, c->refetches, c->event_rt_switches, c->migratory_reads,
		  c->migratory_holds, c->install_runs);
}

static void json_hist(struct sbuf *s, const struct hk_hist *h)
{
	sb_printf(s, "{\"count\":%lu,\"p50_ns\":%lu,\"p99_ns\":%lu,\"max_ns\":%lu,\"mean_ns\":%lu,"
		     "\"log2_ns_buckets\":[",
		  h->count, hk_hist_percentile(h, 0.5), hk_hist_percentile(h, 0.99), h->max_ns,
		  h->count ? h->sum_ns / h->count : 0);
	int last = 0;
	for (int b = 0; b < HK_HIST_BUCKETS; b++)
		if (h->b[b])
			last = b;
	for (int b = 0; b <= last; b++)
		sb_printf(s, "%s%lu", b ? "," : "", h->b[b]);
	sb_printf(s, "]}");
}

#define HK_TOP_PAGES 10

/* The kernel's scheduler statistics of one thread (CONFIG_SCHED_INFO):
 * time on a CPU, and time runnable but waiting for one, which is what a
 * stall pays when the event thread or a woken vCPU finds its CPU busy. */
bool hk_schedstat(pid_t tid, uint64_t *run, uint64_t *wait, uint64_t *slices)
{
	char path[64];
	unsigned long long r = 0, w = 0, n = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
	FILE *f = tid > 0 ? fopen(path, "r") : NULL;
	bool ok = f && fscanf(f, "%llu %llu %llu", &r, &w, &n) == 3;
	if (f)
		fclose(f);
	*run = r;
	*wait = w;
	*slices = n;
	return ok;
}

static void json_sched(struct sbuf *s, pid_t tid)
{
	uint64_t run, wait, slices;
	if (!hk_schedstat(tid, &run, &wait, &slices)) {
		sb_printf(s, "null");
		return;
	}
	sb_printf(s, "{\"tid\":%d,\"run_ns\":%lu,\"run_delay_ns\":%lu,\"timeslices\":%lu}",
		  (int)tid, run, wait, slices);
}

char *hk_stats_to_json(struct hk_stats *st, int node_id, uint64_t resident, uint64_t peak,
		       uint64_t budget_pages, const char *policy)
{
	struct sbuf s = { .p = malloc(4096), .cap = 4096 };
	if (!s.p)
		return NULL;
	s.p[0] = 0;
	pthread_mutex_lock(&st->lock);
	sb_printf(&s, "{\"node\":%d,\"policy\":\"%s\",\"resident_pages\":%lu,"
		  "\"peak_resident_pages\":%lu,\"budget_pages\":%lu,",
		  node_id, policy, resident, peak, budget_pages);
	sb_printf(&s, "\"counters\":{");
	json_counters(&s, &st->node);
	sb_printf(&s, "},\"malformed_messages\":%lu,", (unsigned long)atomic_load(&st->malformed));
	sb_printf(&s, "\"read_stall\":");
	json_hist(&s, &st->read_stall);
	sb_printf(&s, ",\"write_stall\":");
	json_hist(&s, &st->write_stall);
	sb_printf(&s, ",\"stages\":{");
	for (unsigned k = 0; k < HK_STAGE_COUNT; k++) {
		sb_printf(&s, "%s\"%s\":", k ? "," : "", stage_names[k]);
		json_hist(&s, &st->stage[k]);
	}
	/* the policy's decisions by reason ("page.*": brought, "vcpu.*": moved) */
	sb_printf(&s, "},\"decisions\":{");
	for (unsigned k = 0; k < HK_WHY_COUNT; k++)
		sb_printf(&s, "%s\"%s\":%lu", k ? "," : "", hk_reason_name(k), st->decisions[k]);
	sb_printf(&s, "},\"sched\":{\"event_thread\":");
	json_sched(&s, st->event_tid);
	sb_printf(&s, "}");
	sb_printf(&s, ",\"messages\":{");
	bool first = true;
	for (unsigned t = 1; t < HK_MSG_TYPE_COUNT; t++) {
		if (!st->msgs_sent[t] && !st->msgs_recv[t])
			continue;
		sb_printf(&s, "%s\"%s\":{\"sent\":%lu,\"sent_bytes\":%lu,\"received\":%lu,"
			      "\"received_bytes\":%lu}",
			  first ? "" : ",", hk_msg_type_name(t), st->msgs_sent[t], st->bytes_sent[t],
			  st->msgs_recv[t], st->bytes_recv[t]);
		first = false;
	}
	sb_printf(&s, "},\"threads\":[");
	for (size_t i = 0; i < st->nthreads; i++) {
		struct hk_thread_stats *t = &st->threads[i];
		sb_printf(&s, "%s{\"tid\":%d,\"vcpu\":%d,", i ? "," : "", (int)t->tid, t->vcpu);
		json_counters(&s, &t->c);
		sb_printf(&s, ",\"stall\":");
		json_hist(&s, &t->stall);
		sb_printf(&s, ",\"sched\":");
		json_sched(&s, t->tid);
		sb_printf(&s, "}");
	}
	pthread_mutex_unlock(&st->lock);
	/* The hottest pages, in one pass without the lock: the event thread
	 * completes stalls under that lock, and a scan of every page (a 4 GiB
	 * guest has a million) must never make it wait.  The counters are read
	 * relaxed; a page counted during the scan may or may not show. */
	sb_printf(&s, "],\"hottest_pages\":[");
	uint64_t top[HK_TOP_PAGES];
	uint32_t topv[HK_TOP_PAGES];
	int ntop = 0;
	for (uint64_t p = 0; p < st->npages; p++) {
		uint32_t v = __atomic_load_n(&st->page_stalls[p], __ATOMIC_RELAXED);
		if (!v || (ntop == HK_TOP_PAGES && v <= topv[ntop - 1]))
			continue;
		int i = ntop < HK_TOP_PAGES ? ntop++ : ntop - 1;
		while (i > 0 && topv[i - 1] < v) {
			top[i] = top[i - 1];
			topv[i] = topv[i - 1];
			i--;
		}
		top[i] = p;
		topv[i] = v;
	}
	for (int k = 0; k < ntop; k++) {
		sb_printf(&s, "%s{\"offset\":%lu,\"stalls\":%u,\"lines\":[", k ? "," : "",
			  top[k] * HK_PAGE_SIZE, topv[k]);
		/* the 64-byte lines the last few faults touched, each once */
		uint32_t seen[HK_LINE_SAMPLES];
		int nseen = 0;
		for (int j = 0; j < HK_LINE_SAMPLES; j++) {
			uint16_t v = __atomic_load_n(&st->page_lines[top[k]][j], __ATOMIC_RELAXED);
			if (!v)
				continue;
			uint32_t line = (uint32_t)(v - 1) & ~63u;
			bool dup = false;
			for (int i = 0; i < nseen; i++)
				dup |= seen[i] == line;
			if (dup)
				continue;
			seen[nseen] = line;
			sb_printf(&s, "%s%u", nseen++ ? "," : "", line);
		}
		sb_printf(&s, "]}");
	}
	sb_printf(&s, "]}");
	if (s.oom) {
		free(s.p);
		return NULL;
	}
	return s.p;
}
