/* holder.c - a node that holds a copy: it gives the page to a requester when
 * the home forwards one (write-protect, send straight from guest memory,
 * drop once the receiver acknowledged) and drops a shared copy when the home
 * invalidates it. */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

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
	if (p->state == HK_PS_EXCL)
		hk_must(hk_memory_protect(&n->mem, m->page, true), "write-protect", m->page);
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
