/* policy.c - what to do on a stall: bring the page here, or send the vCPU to
 * the page.  Every policy implements struct hk_policy and sees the same view
 * (struct hk_policy_view): the stall, the directory's view of the page, the
 * costs measured on each link, recent history, and the capacity of the node
 * a vCPU would go to.  No policy moves a vCPU to a node whose CPUs are all
 * taken (the testbed's nodes share a host, so collapsing onto one node would
 * look free here and idle CPUs on real machines).
 *
 *   page: always bring the page (IVY-style DSM).
 *   vcpu: send the vCPU to where the page is.
 *   cost: policy_cost.c.
 *   learned: learned.c. */
#include <string.h>

#include "hk.h"

static const char *const reason_names[HK_WHY_COUNT] = {
	[HK_WHY_PAGE_ALWAYS] = "page.policy",     [HK_WHY_NOT_A_VCPU] = "page.not_a_vcpu",
	[HK_WHY_OWNER_HERE] = "page.owner_here",  [HK_WHY_TARGET_FULL] = "page.target_full",
	[HK_WHY_HOLD_DOWN] = "page.hold_down",    [HK_WHY_PAGE_CHEAPER] = "page.cheaper",
	[HK_WHY_TO_OWNER] = "vcpu.to_owner",      [HK_WHY_VCPU_CHEAPER] = "vcpu.cheaper",
	[HK_WHY_EMBEDDER] = "page.embedder",      [HK_WHY_MOVE_TIMEOUT] = "page.move_timeout",
	[HK_WHY_FIXED_VCPU] = "page.fixed_vcpu",  [HK_WHY_SWAP] = "vcpu.swap",
	[HK_WHY_LEARNED_PAGE] = "page.learned",   [HK_WHY_LEARNED_VCPU] = "vcpu.learned",
	[HK_WHY_TARGET_BUSY] = "page.target_busy", [HK_WHY_SEQUENTIAL] = "page.sequential",
	[HK_WHY_TARGET_LEAVING] = "page.target_leaving", [HK_WHY_MANY_WRITERS] = "page.many_writers",
};

const char *hk_reason_name(unsigned r)
{
	return r < HK_WHY_COUNT ? reason_names[r] : "?";
}

static void bring(struct hk_decision *d, unsigned why)
{
	d->kind = HK_BRING_PAGE;
	d->target_node = -1;
	d->reason = why;
	d->swap_vcpu = -1;
}

static void page_decide(const struct hk_policy_view *v, struct hk_decision *d)
{
	(void)v;
	bring(d, HK_WHY_PAGE_ALWAYS);
}

/* The checks every moving policy makes first; true if it may move. */
bool hk_policy_may_move(const struct hk_policy_view *v, struct hk_decision *d)
{
	if (v->stall->vcpu < 0) {
		bring(d, HK_WHY_NOT_A_VCPU);
		return false;
	}
	if (v->vcpu_fixed) {
		bring(d, HK_WHY_FIXED_VCPU);
		return false;
	}
	if (v->owner < 0 || v->owner == v->self) {
		bring(d, HK_WHY_OWNER_HERE);
		return false;
	}
	if (v->target_leaving) {
		bring(d, HK_WHY_TARGET_LEAVING);
		return false;
	}
	d->swap_vcpu = -1;
	if (v->target_capacity && v->target_vcpus >= v->target_capacity) {
		/* full: one of its vCPUs comes here in exchange, or the page
		 * comes (as TidalScale keeps every vCPU on a physical CPU) */
		if (v->swap_vcpu < 0) {
			bring(d, HK_WHY_TARGET_FULL);
			return false;
		}
		d->swap_vcpu = v->swap_vcpu;
	}
	return true;
}

static void vcpu_decide(const struct hk_policy_view *v, struct hk_decision *d)
{
	if (!hk_policy_may_move(v, d))
		return;
	d->kind = HK_MOVE_VCPU;
	d->target_node = v->owner;
	d->reason = d->swap_vcpu >= 0 ? HK_WHY_SWAP : HK_WHY_TO_OWNER;
}

const struct hk_policy hk_policy_page = { "page", page_decide };
const struct hk_policy hk_policy_vcpu = { "vcpu", vcpu_decide };

static const struct hk_policy *const policies[HK_POLICY_COUNT] = {
	[HK_POLICY_PAGE] = &hk_policy_page,
	[HK_POLICY_VCPU] = &hk_policy_vcpu,
	[HK_POLICY_COST] = &hk_policy_cost,
	[HK_POLICY_LEARNED] = &hk_policy_learned,
};

const char *hk_policy_names(void)
{
	return "page,vcpu,cost,learned";
}

bool hk_policy_known(const char *name)
{
	enum hk_policy_kind k;
	return name && hk_policy_parse(name, &k) == 0;
}

int hk_policy_parse(const char *name, enum hk_policy_kind *out)
{
	if (!name) {
		*out = HK_POLICY_PAGE;
		return 0;
	}
	for (int k = 0; k < HK_POLICY_COUNT; k++)
		if (!strcmp(name, policies[k]->name)) {
			*out = (enum hk_policy_kind)k;
			return 0;
		}
	return -EINVAL;
}

const struct hk_policy *hk_policy_of(enum hk_policy_kind p)
{
	return policies[(unsigned)p < HK_POLICY_COUNT ? p : HK_POLICY_PAGE];
}

const char *hk_policy_name(enum hk_policy_kind p)
{
	return hk_policy_of(p)->name;
}

void hk_policy_count(struct hk_node *n, unsigned reason)
{
	if (reason < HK_WHY_COUNT)
		__atomic_fetch_add(&n->stats.decisions[reason], 1, __ATOMIC_RELAXED);
}

static uint64_t ewma(uint64_t old, uint64_t sample)
{
	return old ? old - old / 8 + sample / 8 : sample;
}

void hk_policy_page_cost(struct hk_node *n, int from, uint64_t ns)
{
	if (from >= 0 && from < n->count && from != n->self)
		n->page_cost_ns[from] = ewma(n->page_cost_ns[from], ns);
}

/* cluster lock held (the send and its VCPU_AT are on different threads) */
void hk_policy_vcpu_cost(struct hk_node *n, int to, uint64_t ns)
{
	if (to >= 0 && to < n->count)
		n->cluster.vcpu_cost_ns[to] = ewma(n->cluster.vcpu_cost_ns[to], ns);
}

/* A stall the policies count as a write: a store, or a read that asks for
 * the page to write because a store follows it (a migratory read,
 * requester.c).  Counted as reads, the stalls of two threads writing a word
 * in turn (pingpong's) showed the policies no bounces once migratory reads
 * took the place of their write stalls, and nothing drew them together. */
static bool stall_writes(const struct hk_stall *s)
{
	return s->is_write || s->migratory;
}

static void build_view(struct hk_node *n, const struct hk_stall *s, struct hk_policy_view *v)
{
	uint64_t page = s->offset / HK_PAGE_SIZE;
	memset(v, 0, sizeof(*v));
	v->stall = s;
	v->self = n->self;
	v->owner = s->likely_owner;
	if (s->home_node == n->self) {
		const struct hk_dir_entry *e = &n->dir.e[page];
		v->owner_exact = true;
		v->owner = e->owner >= 0 ? e->owner : n->self; /* untouched: the home's zero page */
		v->copyset = e->copyset;
	}
	if (v->owner >= 0 && v->owner < n->count) {
		v->page_ns = n->page_cost_ns[v->owner];
		pthread_mutex_lock(&n->cluster.lock);
		v->vcpu_ns = n->cluster.vcpu_cost_ns[v->owner];
		pthread_mutex_unlock(&n->cluster.lock);
		v->target_vcpus = hk_cluster_vcpus_homed(n, v->owner);
		v->target_capacity = hk_cluster_capacity(n, v->owner);
		v->target_busy_pct = n->links[v->owner].busy_pct;
		v->target_cpus = n->links[v->owner].cpus;
	}
	/* A full target takes a vCPU only in exchange for one of its own that
	 * idles there (its heartbeat says which keep running): sending a busy
	 * one away would trade its locality for ours. */
	v->swap_vcpu = -1;
	if (v->target_capacity && v->target_vcpus >= v->target_capacity)
		v->swap_vcpu = hk_cluster_swap_candidate(
			n, v->owner, s->vcpu,
			n->cfg.fixed_vcpus | __atomic_load_n(&n->links[v->owner].busy_vcpus, __ATOMIC_RELAXED),
			n->tuning.hold_down_ns);
	v->vcpu_fixed = s->vcpu >= 0 && s->vcpu < 64 && (n->cfg.fixed_vcpus >> s->vcpu & 1);
	v->since_moved_ns = UINT64_MAX;
	if (s->vcpu >= 0 && s->vcpu < HK_MAX_VCPUS) {
		pthread_mutex_lock(&n->cluster.lock);
		uint64_t at = n->cluster.arrived_ns[s->vcpu];
		pthread_mutex_unlock(&n->cluster.lock);
		if (at)
			v->since_moved_ns = hk_now_ns() - at;
	}
	/* Bounces say the page is written from several nodes in turn: they
	 * draw a vCPU that writes it (its writes would fetch it again and
	 * again), not one that only reads it.  Every vCPU reads the timer
	 * tick's pages (jiffies, tk_core), which bounce whenever the tick's
	 * duty moves: counted for reads, they drew idle vCPUs woken by the tick
	 * to the timekeeper's node, swapping out whoever worked there. */
	v->page_bounces = stall_writes(s) ? n->pages[page].bounces : 0;
	v->many_writers = n->pages[page].bounces &&
			  __builtin_popcountll(n->pages[page].writers | n->pages[page].writers_before) >= 2;
	v->target_leaving = v->owner >= 0 && hk_node_leaving(n, v->owner);
	v->sequential = !stall_writes(s) && n->tuning.readahead && hk_readahead_dir(n, page);
	v->hold_down_ns = n->tuning.hold_down_ns;
	v->vcpu_prior_ns = n->tuning.vcpu_prior_ns;
	v->hysteresis_pct = n->tuning.hysteresis_pct;
	v->partner_bounces = n->tuning.partner_bounces;
}

uint32_t hk_stall_window_count(struct hk_stall_window *w, uint64_t now)
{
	if (now - w->start >= 10000000ull) {
		w->prev = now - w->start < 20000000ull ? w->count : 0;
		w->count = 0;
		w->start = now;
	}
	uint32_t recent = w->count > w->prev ? w->count : w->prev;
	w->count++;
	return recent;
}

/* The vCPU's history as the view shows it, before this stall; then this
 * stall is counted.  Its stalls of the last 10 ms window (or the one before,
 * if more).  Its working set here: the pages it stalled writing, which it
 * then owns here, and which do not bounce (a bouncing page is shared, not
 * its own), halved every 200 ms.  Read copies do not count: their owner
 * keeps the data, so a move to it loses nothing. */
#define WS_HALF_LIFE_NS 200000000ull

static void count_vcpu_stall(struct hk_node *n, const struct hk_stall *s, struct hk_policy_view *v)
{
	if (s->vcpu < 0 || s->vcpu >= HK_MAX_VCPUS)
		return;
	uint64_t now = hk_now_ns();
	struct hk_vcpu_history *h = &n->vcpu_hist[s->vcpu];
	if (now - h->ws_ns >= WS_HALF_LIFE_NS) {
		uint64_t halvings = (now - h->ws_ns) / WS_HALF_LIFE_NS;
		h->ws = halvings >= 32 ? 0 : h->ws >> halvings;
		h->ws_ns = now;
	}
	v->vcpu_stalls = hk_stall_window_count(&h->recent, now);
	v->vcpu_ws = h->ws;
	if (stall_writes(s) && !n->pages[s->offset / HK_PAGE_SIZE].bounces && h->ws < UINT32_MAX)
		h->ws++;
}

void hk_policy_decide(struct hk_node *n, const struct hk_stall *s, struct hk_decision *d)
{
	struct hk_policy_view v;
	if (n->policy == HK_POLICY_PAGE) { /* nothing to look at: no locks, no scans */
		bring(d, HK_WHY_PAGE_ALWAYS);
		return;
	}
	/* which of our vCPUs write the page (page.c forgets one that has not
	 * for two windows of arrivals, and all once it stops bouncing) */
	if (stall_writes(s) && s->vcpu >= 0 && s->vcpu < 64)
		n->pages[s->offset / HK_PAGE_SIZE].writers |= 1ull << s->vcpu;
	build_view(n, s, &v);
	count_vcpu_stall(n, s, &v);
	if (n->policy == HK_POLICY_LEARNED)
		hk_learned_observe(n, s->guest_thread, s->vcpu, v.owner, &v);
	d->swap_vcpu = -1;
	hk_policy_of(n->policy)->decide(&v, d);
}
