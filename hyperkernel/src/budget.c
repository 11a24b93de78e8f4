/* budget.c - keep this node within its memory budget.  Past it, the coldest
 * exclusive pages (oldest arrival: faults are the only accesses we see) are
 * pushed to the peer with the most room, through the page's home like any
 * other transfer, so the region can exceed any one node's budget.  Shared
 * copies are not evicted: dropping one silently would leave the directory
 * believing we still hold it. */
#include "hk.h"

#define HK_EVICT_BATCH 64

int hk_budget_pick_target(struct hk_node *n)
{
	int best = -1;
	uint64_t best_room = 0;
	for (int k = 0; k < n->count; k++) {
		struct hk_link *l = &n->links[k];
		if (k == n->self || !l->up || l->bye)
			continue;
		uint64_t room = l->budget == 0 ? UINT64_MAX / 2
					       : (l->budget > l->resident ? l->budget - l->resident : 0);
		if (room > best_room) {
			best_room = room;
			best = k;
		}
	}
	return best;
}

/*
 * Fast path for a node that fills faster than the heartbeat tick can evict
 * (a guest sweeping its memory): a clock hand over the pages evicts
 * exclusive pages from the older half of the arrivals, a bounded batch per
 * call and a bounded scan, so a fault-driven call stays cheap.
 */
#define HK_EVICT_FAST_BATCH 512
#define HK_EVICT_SCAN 32768

static uint64_t evict_sweep(struct hk_node *n, uint64_t want, int target)
{
	uint64_t done = 0, scanned = 0;
	uint64_t horizon = n->clock > n->budget_pages / 2 ? n->clock - n->budget_pages / 2 : 0;
	while (done < want && scanned < HK_EVICT_SCAN && scanned < n->mem.npages) {
		uint64_t pg = n->evict_hand++ % n->mem.npages;
		struct hk_page *p = &n->pages[pg];
		scanned++;
		if (p->state != HK_PS_EXCL || p->req_pending || p->waiters || p->zmap ||
		    (p->evicting && (uint32_t)n->clock_ticks - p->evicting < 10) ||
		    (uint64_t)p->last_use > (horizon & 0xffffffffu))
			continue;
		p->evicting = (uint32_t)n->clock_ticks | 1;
		n->stats.node.evictions++;
		struct hk_msg m = { .type = HK_MSG_EVICT, .page = pg, .node = (uint32_t)target };
		hk_node_send(n, hk_directory_home(pg, n->cfg.home_chunk_pages, n->count), &m);
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
	evict_sweep(n, excess < HK_EVICT_FAST_BATCH ? excess : HK_EVICT_FAST_BATCH, target);
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
	if (!n->budget_pages || n->resident <= n->budget_pages || atomic_load(&n->failed))
		return;
	uint64_t excess = n->resident - n->budget_pages;
	if (excess > HK_EVICT_BATCH)
		excess = HK_EVICT_BATCH;
	int target = hk_budget_pick_target(n);
	if (target < 0)
		return;
	/* The same bounded clock hand as the fault path: the oldest half of
	 * the arrivals first, never a scan of every page per eviction. */
	evict_sweep(n, excess, target);
}
