/* budget.c - keep this node within its memory budget, as a hard cap: every
 * mapped page counts, shared copies included, and a page is only asked for
 * (or accepted when pushed) if a slot is free for it.  Without one, the node
 * makes room and the request waits: the coldest exclusive pages (oldest
 * arrival: faults are the only accesses we see) are pushed to the peer with
 * the most room through the page's home, and shared copies are dropped
 * through the home (DROP_REQ), which keeps the directory exact.  A full peer
 * refuses a push; the giver keeps the page and avoids that peer for a while.
 * Without a budget only the statistics are kept. */
#include <stdlib.h>

#include "hk.h"

#define HK_EVICT_BATCH 64

/* Wear levelling: room on a node counts in proportion to its health score,
 * so pushed pages go to the healthiest nodes first, and a node past a
 * threshold (score 0) takes none. */
int hk_budget_pick_target(struct hk_node *n)
{
	int best = -1;
	uint64_t best_room = 0, now = hk_now_ns();
	for (int k = 0; k < n->count; k++) {
		struct hk_link *l = &n->links[k];
		if (k == n->self || !l->up || l->bye || n->refused_until[k] > now ||
		    hk_node_leaving(n, k))
			continue;
		uint64_t room = l->budget == 0 ? UINT64_MAX / 256
					       : (l->budget > l->resident ? l->budget - l->resident : 0);
		room = room / 100 * l->health + room % 100 * l->health / 100;
		if (room > best_room) {
			best_room = room;
			best = k;
		}
	}
	return best;
}

/* For a request waiting for room: a peer with room, or else any live peer
 * (round robin): its refusal makes it drop a duplicate copy, which is how a
 * cluster whose nodes are all full finds a free slot. */
int hk_budget_pick_room_target(struct hk_node *n)
{
	int t = hk_budget_pick_target(n);
	uint64_t now = hk_now_ns();
	for (int i = 0; t < 0 && i < n->count; i++) {
		int k = (int)(n->evict_rr++ % (uint64_t)n->count);
		struct hk_link *l = &n->links[k];
		if (k != n->self && l->up && !l->bye && n->refused_until[k] <= now &&
		    !hk_node_leaving(n, k))
			t = k;
	}
	return t;
}

/*
 * Fast path for a node that fills faster than the heartbeat tick can evict
 * (a guest sweeping its memory): a clock hand over the pages evicts
 * exclusive pages from the older half of the arrivals, a bounded batch per
 * call and a bounded scan, so a fault-driven call stays cheap.
 */
#define HK_EVICT_FAST_BATCH 512
#define HK_EVICT_SCAN 32768

static uint64_t evict_sweep(struct hk_node *n, uint64_t want, int target, bool any_age)
{
	uint64_t done = 0, scanned = 0;
	uint64_t horizon = n->clock > n->budget_pages / 2 ? n->clock - n->budget_pages / 2 : 0;
	if (any_age)
		horizon = UINT64_MAX;
	while (done < want && scanned < HK_EVICT_SCAN && scanned < n->mem.npages) {
		uint64_t pg = n->evict_hand++ % n->mem.npages;
		struct hk_page *p = &n->pages[pg];
		scanned++;
		if (p->state != HK_PS_EXCL || p->req_pending || p->waiters || p->zmap || p->await_room ||
		    (p->evicting && (uint32_t)n->clock_ticks - p->evicting < 10) ||
		    (uint64_t)p->last_use > (horizon & 0xffffffffu))
			continue;
		p->evicting = (uint32_t)n->clock_ticks | 1;
		n->stats.node.evictions++;
		struct hk_msg m = { .type = HK_MSG_EVICT, .page = pg, .node = (uint32_t)target };
		hk_node_send(n, hk_home_of(n, pg), &m);
		done++;
	}
	return done;
}

void hk_budget_pressure(struct hk_node *n)
{
	if (!n->budget_pages || n->resident <= n->budget_pages + HK_EVICT_BATCH ||
	    atomic_load(&n->failed))
		return;
	uint64_t now = hk_now_ns();
	if (now - n->evict_last_ns < 2000000ull)
		return;
	n->evict_last_ns = now;
	int target = hk_budget_pick_target(n);
	if (target < 0)
		return;
	uint64_t excess = n->resident - n->budget_pages;
	evict_sweep(n, excess < HK_EVICT_FAST_BATCH ? excess : HK_EVICT_FAST_BATCH, target, false);
}

/* Pages premapped as zero at the home become resident when the home writes
 * them, without a fault we could see: find those (pagemap) and count them.
 * A bounded slice per tick, from a rotating cursor, so the event thread never
 * stalls on a scan of a large guest. */
#define HK_PREMAP_SCAN_PER_TICK (64u * 512u)

static void count_written_premapped(struct hk_node *n)
{
	uint8_t real[512];
	uint64_t scanned = 0;
	while (scanned < HK_PREMAP_SCAN_PER_TICK && scanned < n->mem.npages) {
		uint64_t pg = n->premap_hand;
		uint64_t cnt = n->mem.npages - pg < 512 ? n->mem.npages - pg : 512;
		n->premap_hand = pg + cnt >= n->mem.npages ? 0 : pg + cnt;
		scanned += cnt;
		bool any = false;
		for (uint64_t k = 0; k < cnt && !any; k++)
			any = n->pages[pg + k].zmap;
		if (!any || hk_memory_scan_real(&n->mem, pg, cnt, real) < 0)
			continue;
		for (uint64_t k = 0; k < cnt; k++) {
			struct hk_page *p = &n->pages[pg + k];
			if (p->zmap && real[k]) {
				p->zmap = false;
				n->resident++;
				p->last_use = (uint32_t)++n->clock;
			}
		}
	}
}

void hk_budget_tick(struct hk_node *n)
{
	/* Every tick under a budget; otherwise every 5th, for the statistics
	 * and the heartbeat's resident count. */
	if (!atomic_load(&n->failed) && (n->budget_pages || n->clock_ticks % 5 == 0))
		count_written_premapped(n);
	if (!n->budget_pages || atomic_load(&n->failed))
		return;
	/* Requests waiting for a slot: make room now (an earlier attempt may
	 * have found nothing movable) and let them try again.  A node merely at
	 * its cap evicts nothing: the receiver of its page would be at its cap
	 * in turn, and the pages would chase each other round the nodes. */
	if (n->nroom_wait) {
		hk_budget_make_room(n);
		n->room_freed = true;
	}
}

/* ---------------- the hard cap ---------------- */

bool hk_budget_full(const struct hk_node *n)
{
	return n->budget_pages && n->resident + n->reserved >= n->budget_pages;
}

static void wait_for_room(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (p->await_room)
		return;
	if (n->nroom_wait == n->cap_room_wait) {
		size_t cap = n->cap_room_wait ? 2 * n->cap_room_wait : 64;
		uint64_t *w = realloc(n->room_wait, cap * sizeof(*w));
		if (!w)
			hk_die("out of memory for the requests waiting for room");
		n->room_wait = w;
		n->cap_room_wait = cap;
	}
	n->room_wait[n->nroom_wait++] = page;
	p->await_room = true;
}

bool hk_budget_reserve(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!n->budget_pages || p->reserved)
		return true;
	if (hk_budget_full(n)) {
		wait_for_room(n, page);
		hk_budget_make_room(n);
		return false;
	}
	p->reserved = true;
	n->reserved++;
	return true;
}

/* Our copy of a page we asked to upgrade was invalidated: its data will
 * come, into the slot the copy just freed. */
void hk_budget_keep_slot(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!n->budget_pages || p->reserved)
		return;
	p->reserved = true;
	n->reserved++;
}

void hk_budget_release(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!p->reserved)
		return;
	p->reserved = false;
	n->reserved--;
	n->room_freed = true;
}

/* Shared copies go through the home, which keeps the directory exact (and
 * hands ownership to another sharer when we supplied the data). */
uint64_t hk_budget_drop_shared(struct hk_node *n, uint64_t want)
{
	uint64_t done = 0, scanned = 0;
	while (done < want && scanned < HK_EVICT_SCAN && scanned < n->mem.npages) {
		uint64_t pg = n->evict_hand++ % n->mem.npages;
		struct hk_page *p = &n->pages[pg];
		scanned++;
		if (p->state != HK_PS_SHARED || p->dropping || p->req_pending || p->waiters ||
		    p->await_room || p->ack_type ||
		    (p->evicting && (uint32_t)n->clock_ticks - p->evicting < 10))
			continue;
		p->dropping = true;
		p->evicting = (uint32_t)n->clock_ticks | 1;
		n->stats.node.shared_drops++;
		hk_send_page(n, hk_home_of(n, pg), HK_MSG_DROP_REQ, pg, n->self, 0, 0, NULL);
		done++;
	}
	return done;
}

void hk_budget_make_room(struct hk_node *n)
{
	if (!n->budget_pages || atomic_load(&n->failed))
		return;
	uint64_t need = n->resident + n->reserved + n->nroom_wait;
	need = need > n->budget_pages ? need - n->budget_pages : 1;
	if (need > HK_EVICT_BATCH)
		need = HK_EVICT_BATCH;
	uint64_t started = hk_budget_drop_shared(n, need);
	int target = hk_budget_pick_room_target(n);
	if (started < need && target >= 0 &&
	    evict_sweep(n, need - started, target, false) + started < need)
		evict_sweep(n, need - started, target, true);
}

void hk_budget_retry_waiting(struct hk_node *n)
{
	size_t kept = 0, count = n->nroom_wait;
	uint64_t *w = n->room_wait;
	for (size_t i = 0; i < count; i++) {
		uint64_t pg = w[i];
		struct hk_page *p = &n->pages[pg];
		if (!p->await_room)
			continue;
		if (hk_budget_full(n)) {
			w[kept++] = pg;
			continue;
		}
		p->await_room = false;
		hk_requester_evaluate(n, pg);
		w = n->room_wait; /* evaluate() may have grown the array */
	}
	/* evaluate() may have queued more at the end: keep those too */
	for (size_t i = count; i < n->nroom_wait; i++)
		w[kept++] = w[i];
	n->nroom_wait = kept;
	if (kept)
		hk_budget_make_room(n);
}
