/* holder.c - a node that holds a copy: it gives the page to a requester when
 * the home forwards one and drops a shared copy when the home invalidates it.
 *
 * A copy for reading is sent straight from guest memory, write-protected.
 * A page for writing is dropped first: write-protect, copy, drop, and send
 * once this node's translations of it are gone (HK_DATA_DROPPED), so the
 * receiver may write the moment it arrives and no message has to come back.
 * Before, the receiver installed it read-only, acknowledged (XFER_ACK), and
 * made it writable only on the giver's XFER_DROPPED: a round trip more on
 * every write stall served by another node.  An eviction's push keeps that
 * hand-shake, because the receiver may refuse a push and the page must then
 * still be here. */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

/* Give the page for writing: copy it, drop it, and send the copy once this
 * node's translations of it are gone (at once, or when the embedder says so:
 * hk_page_flush_deferred).  No moment has two readable versions: ours is
 * gone before the receiver's exists. */
static void give_dropped(struct hk_node *n, int home, uint64_t page, int to)
{
	struct hk_page *p = &n->pages[page];
	/* the event thread's scratch page: the link copies what the socket
	 * does not take at once, so only a held copy needs memory of its own */
	memcpy(n->scratch, hk_memory_page_addr(&n->mem, page), HK_PAGE_SIZE);
	hk_must(hk_memory_drop(&n->mem, page), "drop", page);
	p->state = HK_PS_INVALID;
	p->txn_home = (int8_t)home;
	n->stats.node.pages_sent++;
	if (hk_page_left(n, page)) {
		struct hk_local_msg *held = malloc(sizeof(*held));
		if (!held)
			hk_die("out of memory holding page %lu", page);
		memcpy(held->data, n->scratch, HK_PAGE_SIZE);
		held->m = (struct hk_msg){ .type = HK_MSG_DATA, .page = page,
					   .node = (uint32_t)home, .mode = HK_MODE_EXCL,
					   .aux = HK_DATA_DROPPED };
		held->next = n->held_data;
		n->held_data = held;
		hk_page_ack(n, page, true, to, HK_MSG_DATA);
	} else {
		hk_send_page(n, to, HK_MSG_DATA, page, home, HK_MODE_EXCL, HK_DATA_DROPPED,
			     n->scratch);
	}
	if (p->req_pending) /* an upgrade of ours was overtaken: its data comes */
		hk_budget_keep_slot(n, page);
	hk_requester_evaluate(n, page);
}

void hk_holder_on_fwd(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	uint64_t arrived = hk_now_ns();
	int to = (int)m->node;
	if (!hk_is_from_home(n, m->page, from) || to == n->self ||
	    (p->state != HK_PS_SHARED && p->state != HK_PS_EXCL)) {
		hk_warn("page %lu: fwd from %d to %d in state %d, rejected", m->page, from, to,
			p->state);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	/* Write-protect before copying: a write that races us blocks on the
	 * protection and is served later, never lost. */
	if (p->state == HK_PS_EXCL) {
		hk_must(hk_memory_protect(&n->mem, m->page, true), "write-protect", m->page);
		hk_requester_giving(n, m->page);
	}
	if (m->mode == HK_MODE_EXCL && !m->aux) {
		give_dropped(n, from, m->page, to);
		hk_stats_stage(&n->stats, HK_STAGE_GIVE, arrived);
		return;
	}
	/* Sent straight from guest memory: it cannot change while protected,
	 * and the link copies whatever the socket does not take at once. */
	if (m->mode == HK_MODE_SHARED) {
		p->state = HK_PS_SHARED;
	} else {
		p->state = HK_PS_GIVING;
		p->give_to = (int8_t)to;
	}
	n->stats.node.pages_sent++;
	if (m->aux)
		hk_evac_page_pushed(n);
	p->txn_home = (int8_t)from;
	/* node: the home that runs the transaction, where the receiver's DONE
	 * goes (the home can move while a node leaves) */
	hk_send_page(n, to, HK_MSG_DATA, m->page, from, m->mode, m->aux,
		      hk_memory_page_addr(&n->mem, m->page));
	hk_stats_stage(&n->stats, HK_STAGE_GIVE, arrived);
}

void hk_holder_on_xfer_ack(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state != HK_PS_GIVING || p->give_to != from) {
		hk_warn("page %lu: unexpected xfer_ack from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	hk_must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
	p->state = HK_PS_INVALID;
	hk_page_ack(n, m->page, hk_page_left(n, m->page), from, HK_MSG_XFER_DROPPED);
	if (p->req_pending) /* an upgrade of ours was overtaken: its data comes */
		hk_budget_keep_slot(n, m->page);
	hk_requester_evaluate(n, m->page);
}

void hk_holder_on_inv(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (!hk_is_from_home(n, m->page, from)) {
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	n->stats.node.inval_received++;
	bool deferred = false;
	if (p->state == HK_PS_SHARED) {
		hk_must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
		p->state = HK_PS_INVALID;
		hk_requester_lost(n, m->page);
		deferred = hk_page_left(n, m->page);
		if (p->req_pending)
			hk_budget_keep_slot(n, m->page);
	} else if (p->state != HK_PS_INVALID) {
		hk_die("page %lu: invalidation in state %d", m->page, p->state);
	}
	hk_page_ack(n, m->page, deferred, from, HK_MSG_INV_ACK);
}

/* A full receiver refused the page an eviction pushed: it stays here,
 * writable again, and the home takes us back as its owner. */
void hk_holder_on_xfer_refused(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state != HK_PS_GIVING || p->give_to != from) {
		hk_warn("page %lu: unexpected xfer_refused from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	hk_must(hk_memory_protect(&n->mem, m->page, false), "unprotect", m->page);
	p->state = HK_PS_EXCL;
	p->evicting = 0;
	p->refused = true;
	n->refused_until[from] = hk_now_ns() + 20000000ull;
	hk_send_page(n, hk_txn_home(n, m->page), HK_MSG_DONE, m->page, n->self, 0, 1, NULL);
	hk_requester_evaluate(n, m->page);
}
