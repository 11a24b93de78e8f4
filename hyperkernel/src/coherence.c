/* coherence.c - the page protocol and the node's event thread.
 *
 * One epoll loop per node serves userfaultfd faults and peer messages, so a
 * reply is installed by the thread that read it, without a hand-off.  Only
 * this thread touches page states and the directory: no locks on the hot path.
 * Messages a node sends to itself (it is home, owner and requester in any
 * mix) go through a local queue, so every role runs the same code.
 *
 * Per page, per node: Invalid, Shared (present, write-protected), Exclusive
 * (present, writable), plus two transient states of an exclusive transfer.
 * The home serialises each page: one transaction at a time (phase != IDLE),
 * later requests wait in the page's queue until the requester's DONE.
 *
 *   read:  R -REQ-> H; H -FWD(S)-> holder (H itself when it has a copy);
 *          holder write-protects, -DATA(S)-> R; R installs read-only, -DONE-> H
 *   write: R -REQ-> H; H -INV-> every other holder, each drops, -INV_ACK-> H;
 *          then H -GRANT(E)-> R if R kept a valid copy (R unprotects), else
 *          H -FWD(E)-> owner O; O write-protects, copies, -DATA(E)-> R;
 *          R installs read-only, -XFER_ACK-> O; O drops, -XFER_DROPPED-> R;
 *          R unprotects (only now can anyone write), -DONE-> H
 *   first touch: H finds no owner and grants E with "zero": R installs a
 *          zero page; at the home itself no message leaves the node.
 */
#include <linux/userfaultfd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "hk.h"

enum { TAG_UFFD = 1000, TAG_EVENT, TAG_TIMER };

static inline uint64_t bit(int node)
{
	return 1ull << node;
}

static int home_of(struct hk_node *n, uint64_t page)
{
	return hk_directory_home(page, n->cfg.home_chunk_pages, n->count);
}


int hk_node_send(struct hk_node *n, int to, struct hk_msg *m)
{
	m->version = HK_PROTOCOL_VERSION;
	if (to == n->self) {
		struct hk_local_msg *lm = malloc(sizeof(*lm));
		if (!lm)
			hk_die("out of memory queueing a local message");
		lm->m = *m;
		lm->next = NULL;
		if (m->data) {
			memcpy(lm->data, m->data, HK_PAGE_SIZE);
			lm->m.data = lm->data;
		}
		if (n->lq_tail)
			n->lq_tail->next = lm;
		else
			n->lq_head = lm;
		n->lq_tail = lm;
		return 0;
	}
	struct hk_link *l = &n->links[to];
	if (!l->up)
		return -ENOTCONN;
	return hk_link_send(l, m);
}

static void send_page_msg(struct hk_node *n, int to, unsigned type, uint64_t page, int node,
			  uint8_t mode, uint8_t aux, const void *data)
{
	struct hk_msg m = { .type = (uint8_t)type, .page = page, .node = (uint32_t)node,
			    .mode = mode, .aux = aux, .data = data,
			    .data_len = data ? HK_PAGE_SIZE : 0 };
	int r = hk_node_send(n, to, &m);
	if (r < 0 && !atomic_load(&n->failed))
		hk_warn("send %s for page %lu to node %d: %s", hk_msg_type_name(type), page, to,
			strerror(-r));
}

static void page_arrived(struct hk_node *n, uint64_t page, int from)
{
	n->resident++;
	n->pages[page].last_use = (uint32_t)++n->clock;
	n->pages[page].hint = (int8_t)from;
	if (n->cfg.cb.on_page_arrived)
		n->cfg.cb.on_page_arrived(n->cfg.cb.opaque, page * HK_PAGE_SIZE);
}

static void page_left(struct hk_node *n, uint64_t page)
{
	if (n->pages[page].zmap)
		n->pages[page].zmap = false; /* premapped, never counted */
	else
		n->resident--;
	if (n->cfg.cb.on_page_left)
		n->cfg.cb.on_page_left(n->cfg.cb.opaque, page * HK_PAGE_SIZE);
}

static void must(int r, const char *what, uint64_t page)
{
	/* A failed install/protect/drop means our page states no longer
	 * describe the mapping: continuing could corrupt guest memory. */
	if (r < 0)
		hk_die("%s page %lu: %s", what, page, strerror(-r));
}

/* ---------------- invariants (debug builds) ---------------- */

void hk_coherence_check_invariants(struct hk_node *n, uint64_t page)
{
#ifdef HK_DEBUG
	struct hk_page *p = &n->pages[page];
	HK_ASSERT(p->state <= HK_PS_GIVING);
	if (home_of(n, page) == n->self) {
		struct hk_dir_entry *e = &n->dir.e[page];
		if (e->phase == HK_DIR_IDLE) {
			/* one writer or many readers, and the directory agrees
			 * with this node's own state */
			if (e->owner < 0) {
				HK_ASSERT(e->copyset == 0);
			} else {
				HK_ASSERT(e->copyset & bit(e->owner));
			}
			if (e->copyset & bit(n->self))
				HK_ASSERT(p->state == HK_PS_SHARED || p->state == HK_PS_EXCL);
			else
				HK_ASSERT(p->state == HK_PS_INVALID);
			if (p->state == HK_PS_EXCL)
				HK_ASSERT(e->copyset == bit(n->self) && e->owner == n->self);
		}
	}
#else
	(void)n;
	(void)page;
#endif
}

/* ---------------- requester side ---------------- */

static void complete_waiters(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	struct hk_waiter **pw = &p->waiters;
	bool woke = false;
	uint64_t now = hk_now_ns();
	while (*pw) {
		struct hk_waiter *w = *pw;
		bool ok = w->write ? p->state == HK_PS_EXCL
				   : (p->state == HK_PS_SHARED || p->state == HK_PS_EXCL);
		if (!ok) {
			pw = &w->next;
			continue;
		}
		hk_stats_stall_done(&n->stats, w->tid, page, w->write, now - w->t0);
		*pw = w->next;
		free(w);
		woke = true;
	}
	/* Installs and unprotects already woke the range; this covers faults
	 * that were satisfied before we read them. */
	if (woke) {
		hk_memory_wake(&n->mem, page);
		n->last_serve_ns = now;
	}
}

/* Re-examine a page whose state may now satisfy, or need, its waiters. */
static void evaluate_page(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!p->waiters || p->req_pending || p->state == HK_PS_GIVING ||
	    p->state == HK_PS_RECV_EXCL)
		return;
	complete_waiters(n, page);
	if (!p->waiters)
		return;
	bool write = false;
	for (struct hk_waiter *w = p->waiters; w; w = w->next)
		write |= w->write;
	struct hk_stall st = {
		.tid = p->waiters->tid,
		.vcpu = -1,
		.offset = page * HK_PAGE_SIZE,
		.is_write = write,
		.home_node = home_of(n, page),
		.likely_owner = p->hint >= 0 ? p->hint : home_of(n, page),
	};
	struct hk_decision d;
	hk_policy_decide(n->policy, &st, &d);
	if (n->cfg.cb.on_stall)
		n->cfg.cb.on_stall(n->cfg.cb.opaque, &st, &d);
	if (d.kind == HK_MOVE_VCPU) {
		/* The embedder pulls the threads out of the fault; if they
		 * fault again they are asked about again. */
		n->stats.node.vcpu_move_decisions++;
		while (p->waiters) {
			struct hk_waiter *w = p->waiters;
			p->waiters = w->next;
			free(w);
		}
		return;
	}
	p->req_pending = true;
	n->outstanding++;
	n->req_sent_ns = hk_now_ns();
	p->req_mode = write ? HK_MODE_EXCL : HK_MODE_SHARED;
	send_page_msg(n, home_of(n, page), HK_MSG_REQ, page, n->self, p->req_mode,
		      p->state == HK_PS_SHARED, NULL);
}

static void on_fault(struct hk_node *n, uint64_t page, bool write, pid_t tid)
{
	struct hk_page *p = &n->pages[page];
	if (atomic_load(&n->failed)) {
		if (hk_memory_poison(&n->mem, page) < 0)
			hk_memory_wake(&n->mem, page);
		return;
	}
	for (struct hk_waiter *w = p->waiters; w; w = w->next) {
		if (w->tid == tid) { /* woken, still unsatisfied, faulted again */
			w->write |= write;
			evaluate_page(n, page);
			return;
		}
	}
	struct hk_waiter *w = malloc(sizeof(*w));
	if (!w)
		hk_die("out of memory for a stall record");
	w->tid = tid;
	w->write = write;
	w->t0 = hk_now_ns();
	w->next = p->waiters;
	p->waiters = w;
	evaluate_page(n, page);
}

static void finish_request(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	p->req_pending = false;
	if (n->outstanding) {
		n->outstanding--;
		/* how long a request takes, for the event thread's busy-poll */
		uint64_t dt = hk_now_ns() - n->req_sent_ns;
		n->ewma_reply_ns = n->ewma_reply_ns - n->ewma_reply_ns / 8 + dt / 8;
	}
	send_page_msg(n, home_of(n, page), HK_MSG_DONE, page, n->self, 0, 0, NULL);
	evaluate_page(n, page);
}

static void on_data(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state == HK_PS_SHARED && p->req_pending && p->req_mode == HK_MODE_EXCL &&
	    m->mode == HK_MODE_EXCL) {
		/* Never in a correct run: the directory lost track of our copy
		 * (e.g. HK_DEBUG_SKIP_INVALIDATE).  Counted; the fresh data
		 * replaces ours rather than leaving the faulting thread hung. */
		hk_warn("page %lu: exclusive data from node %d while we hold a copy", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
		p->state = HK_PS_INVALID;
		page_left(n, m->page);
	}
	if (p->state != HK_PS_INVALID) {
		hk_warn("page %lu: data from node %d while in state %d, rejected", m->page, from,
			p->state);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	/* Read-only first either way: an exclusive copy becomes writable only
	 * once the giver has dropped its own. */
	must(hk_memory_install(&n->mem, m->page, m->data, true), "install", m->page);
	n->stats.node.pages_received++;
	page_arrived(n, m->page, from);
	if (m->mode == HK_MODE_SHARED) {
		p->state = HK_PS_SHARED;
		finish_request(n, m->page);
	} else {
		p->state = HK_PS_RECV_EXCL;
		send_page_msg(n, from, HK_MSG_XFER_ACK, m->page, n->self, 0, 0, NULL);
	}
}

static void on_xfer_dropped(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state != HK_PS_RECV_EXCL) {
		hk_warn("page %lu: unexpected xfer_dropped from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	must(hk_memory_protect(&n->mem, m->page, false), "unprotect", m->page);
	p->state = HK_PS_EXCL;
	finish_request(n, m->page);
}

static void on_grant(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (from != home_of(n, m->page)) {
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	if (m->aux) { /* first touch: a zero page, no data on the wire */
		if (p->state != HK_PS_INVALID) {
			hk_warn("page %lu: zero grant in state %d", m->page, p->state);
			atomic_fetch_add(&n->stats.malformed, 1);
			return;
		}
		must(hk_memory_install_zero(&n->mem, m->page, false), "install zero", m->page);
		n->stats.node.zero_fills++;
		page_arrived(n, m->page, n->self);
		p->state = HK_PS_EXCL;
	} else if (m->mode == HK_MODE_EXCL) {
		if (p->state != HK_PS_SHARED)
			hk_die("page %lu: upgrade grant but state %d", m->page, p->state);
		must(hk_memory_protect(&n->mem, m->page, false), "unprotect", m->page);
		p->state = HK_PS_EXCL;
	}
	finish_request(n, m->page);
}

/* ---------------- holder side ---------------- */

static void on_fwd(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	int to = (int)m->node;
	if (from != home_of(n, m->page) || to == n->self ||
	    (p->state != HK_PS_SHARED && p->state != HK_PS_EXCL)) {
		hk_warn("page %lu: fwd from %d to %d in state %d, rejected", m->page, from, to,
			p->state);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	/* Write-protect before copying: a write that races us blocks on the
	 * protection and is served later, never lost. */
	if (p->state == HK_PS_EXCL)
		must(hk_memory_protect(&n->mem, m->page, true), "write-protect", m->page);
	/* Sent straight from guest memory: it cannot change while protected,
	 * and the link copies whatever the socket does not take at once. */
	if (m->mode == HK_MODE_SHARED) {
		p->state = HK_PS_SHARED;
	} else {
		p->state = HK_PS_GIVING;
		p->give_to = (int8_t)to;
	}
	n->stats.node.pages_sent++;
	send_page_msg(n, to, HK_MSG_DATA, m->page, n->self, m->mode, 0,
		      hk_memory_page_addr(&n->mem, m->page));
}

static void on_xfer_ack(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state != HK_PS_GIVING || p->give_to != from) {
		hk_warn("page %lu: unexpected xfer_ack from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
	p->state = HK_PS_INVALID;
	page_left(n, m->page);
	send_page_msg(n, from, HK_MSG_XFER_DROPPED, m->page, n->self, 0, 0, NULL);
	evaluate_page(n, m->page);
}

static void on_inv(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (from != home_of(n, m->page)) {
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	n->stats.node.inval_received++;
	if (p->state == HK_PS_SHARED) {
		must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
		p->state = HK_PS_INVALID;
		page_left(n, m->page);
	} else if (p->state != HK_PS_INVALID) {
		hk_die("page %lu: invalidation in state %d", m->page, p->state);
	}
	send_page_msg(n, from, HK_MSG_INV_ACK, m->page, n->self, 0, 0, NULL);
}

/* ---------------- home side ---------------- */

static void dir_start(struct hk_node *n, uint64_t page, struct hk_dir_req *r);

static void dir_next(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	struct hk_dir_req *r;
	while (e->phase == HK_DIR_IDLE && (r = hk_directory_dequeue(e))) {
		dir_start(n, page, r);
		free(r);
	}
}

static void dir_grant_excl(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	int r = e->cur_node;
	e->phase = HK_DIR_WAIT_DONE;
	if (e->cur_have_copy)
		send_page_msg(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_EXCL, 0, NULL);
	else
		send_page_msg(n, e->owner, HK_MSG_FWD, page, r, HK_MODE_EXCL, 0, NULL);
	e->owner = (int8_t)r;
	e->copyset = bit(r);
}

static bool page_is_zero(const uint8_t *a)
{
	const uint64_t *w = (const uint64_t *)a;
	uint64_t acc = 0;
	for (size_t i = 0; i < HK_PAGE_SIZE / 8; i++)
		acc |= w[i];
	return acc == 0;
}

/* A page premapped as zero at its home and still all zero is as good as
 * never touched: rather than moving 4 KiB of zeros (protect, copy, send,
 * ack, drop), the home takes it back and grants a zero page.  Protect first
 * so that no write of ours can slip in between the check and the drop. */
static bool take_back_pristine(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	uint8_t *a = hk_memory_page_addr(&n->mem, page);
	if (!page_is_zero(a))
		goto written;
	must(hk_memory_protect(&n->mem, page, true), "write-protect", page);
	if (!page_is_zero(a)) {
		/* Written just now: stays protected, and the FWD to ourselves
		 * that follows (the home is the owner) gives it away. */
		goto written;
	}
	must(hk_memory_drop(&n->mem, page), "drop", page);
	p->state = HK_PS_INVALID;
	page_left(n, page);
	return true;
written:
	p->zmap = false; /* a page of our own now: count it */
	n->resident++;
	p->last_use = (uint32_t)++n->clock;
	return false;
}

static void dir_start(struct hk_node *n, uint64_t page, struct hk_dir_req *q)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	int r = q->node;
	if (q->evict_target >= 0) {
		/* Only an exclusive owner may push its page away, and only if
		 * nothing changed since it asked. */
		if (e->owner != r || e->copyset != bit(r) || q->evict_target == r)
			return;
		r = q->evict_target;
		q->mode = HK_MODE_EXCL;
		q->have_copy = false;
	}
	e->cur_node = (int8_t)r;
	e->cur_mode = q->mode;
	e->cur_have_copy = q->have_copy && (e->copyset & bit(r));
	if (e->owner == n->self && r != n->self && e->copyset == bit(n->self) &&
	    n->pages[page].zmap && n->pages[page].state == HK_PS_EXCL &&
	    take_back_pristine(n, page)) {
		e->owner = -1;
		e->copyset = 0;
	}
	if (e->owner < 0) {
		e->owner = (int8_t)r;
		e->copyset = bit(r);
		e->phase = HK_DIR_WAIT_DONE;
		send_page_msg(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_EXCL, 1, NULL);
		return;
	}
	if (q->mode == HK_MODE_SHARED) {
		e->phase = HK_DIR_WAIT_DONE;
		if (e->cur_have_copy) { /* nothing to do, e.g. a stale request */
			send_page_msg(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_SHARED, 0, NULL);
			return;
		}
		int src = (e->copyset & bit(n->self)) ? n->self : e->owner;
		e->copyset |= bit(r);
		send_page_msg(n, src, HK_MSG_FWD, page, r, HK_MODE_SHARED, 0, NULL);
		return;
	}
	uint64_t inv = e->copyset & ~bit(r);
	if (!e->cur_have_copy)
		inv &= ~bit(e->owner); /* the owner gives the data, then drops */
	if (n->skip_invalidate && (inv & ~bit(n->self))) {
		/* Broken on purpose (HK_DEBUG_SKIP_INVALIDATE): forget the remote
		 * sharers, leaving stale copies; the torture test must notice. */
		n->skipped_invalidations++;
		inv &= bit(n->self);
	}
	e->acks_left = 0;
	for (int k = 0; k < n->count; k++) {
		if (!(inv & bit(k)))
			continue;
		e->acks_left++;
		n->stats.node.inval_sent++;
		send_page_msg(n, k, HK_MSG_INV, page, n->self, 0, 0, NULL);
	}
	if (e->acks_left) {
		e->phase = HK_DIR_INVALIDATING;
		return;
	}
	dir_grant_excl(n, page);
}

static void on_req(struct hk_node *n, int from, const struct hk_msg *m, int evict_target)
{
	if (home_of(n, m->page) != n->self || (evict_target < 0 && (int)m->node != from)) {
		hk_warn("page %lu: request from node %d that is not ours to serve", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	struct hk_dir_req *r = malloc(sizeof(*r));
	if (!r)
		hk_die("out of memory for a request");
	r->node = from;
	r->mode = evict_target >= 0 ? HK_MODE_EXCL : m->mode;
	r->have_copy = m->aux;
	r->evict_target = evict_target;
	hk_directory_enqueue(&n->dir.e[m->page], r);
	dir_next(n, m->page);
}

static void on_inv_ack(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_dir_entry *e = &n->dir.e[m->page];
	if (home_of(n, m->page) != n->self || e->phase != HK_DIR_INVALIDATING ||
	    !e->acks_left) {
		hk_warn("page %lu: unexpected inv_ack from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	e->copyset &= ~bit(from);
	if (--e->acks_left == 0)
		dir_grant_excl(n, m->page);
}

static void on_done(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_dir_entry *e = &n->dir.e[m->page];
	if (home_of(n, m->page) != n->self || e->phase != HK_DIR_WAIT_DONE || e->cur_node != from) {
		hk_warn("page %lu: unexpected done from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	e->phase = HK_DIR_IDLE;
	e->cur_node = -1;
	hk_coherence_check_invariants(n, m->page);
	dir_next(n, m->page);
}

/* ---------------- failure ---------------- */

static void peer_lost(struct hk_node *n, int dead)
{
	struct hk_link *l = &n->links[dead];
	if (!l->up)
		return;
	l->up = false;
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
	if (atomic_exchange(&n->failed, true))
		return; /* report the first loss only */
	n->dead_node = dead;
	/* Survivors may stop (and close their links) before the others saw
	 * the EOF; tell them who actually died so every report names it. */
	for (int k = 0; k < n->count; k++) {
		if (k != n->self && k != dead && n->links[k].up) {
			struct hk_msg m = { .type = HK_MSG_PEER_LOST, .node = (uint32_t)dead };
			hk_node_send(n, k, &m);
		}
	}
	/* Lost: pages whose directory lived there, and pages whose directory
	 * is here and whose owner (the only up-to-date copy) was there. */
	size_t cap = 16, nr = 0;
	struct hk_page_range *rg = malloc(cap * sizeof(*rg));
	uint64_t lost = 0;
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		int h = home_of(n, pg);
		bool gone = h == dead ||
			    (h == n->self && n->dir.e[pg].owner == dead &&
			     !(n->dir.e[pg].copyset & ~bit(dead)));
		if (!gone)
			continue;
		lost++;
		if (nr && rg[nr - 1].offset + rg[nr - 1].pages * HK_PAGE_SIZE == pg * HK_PAGE_SIZE) {
			rg[nr - 1].pages++;
			continue;
		}
		if (nr == cap) {
			cap *= 2;
			struct hk_page_range *t = realloc(rg, cap * sizeof(*rg));
			if (!t)
				break;
			rg = t;
		}
		rg[nr++] = (struct hk_page_range){ pg * HK_PAGE_SIZE, 1 };
	}
	char text[512];
	int off = snprintf(text, sizeof(text), "node %d died; lost %lu pages", dead, lost);
	for (size_t i = 0; i < nr && off < (int)sizeof(text) - 64; i++)
		off += snprintf(text + off, sizeof(text) - off, "%s0x%lx+%lu", i ? "," : " (",
				rg[i].offset, rg[i].pages);
	if (nr && off < (int)sizeof(text) - 8)
		snprintf(text + off, sizeof(text) - off, "%s)", off >= (int)sizeof(text) - 64 ? ",..." : "");
	hk_warn("%s", text);
	if (!n->cfg.cb.on_peer_lost) {
		hk_warn("no on_peer_lost handler: stopping the process");
		_exit(3);
	}
	n->cfg.cb.on_peer_lost(n->cfg.cb.opaque, dead, rg, nr, lost);
	free(rg);
	/* The embedder chose to continue: no thread may stay blocked. */
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		struct hk_page *p = &n->pages[pg];
		if (!p->waiters)
			continue;
		while (p->waiters) {
			struct hk_waiter *w = p->waiters;
			p->waiters = w->next;
			free(w);
		}
		if (hk_memory_poison(&n->mem, pg) < 0)
			hk_memory_wake(&n->mem, pg);
	}
}

/* ---------------- dispatch ---------------- */

static void dispatch(struct hk_node *n, int from, const struct hk_msg *m)
{
	if (m->type >= HK_MSG_REQ && m->type <= HK_MSG_PEER_LOST &&
	    (m->page >= n->mem.npages || (int)m->node >= n->count)) {
		hk_warn("message %s from node %d: page %lu / node %u out of range",
			hk_msg_type_name(m->type), from, m->page, m->node);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	switch (m->type) {
	case HK_MSG_REQ: on_req(n, from, m, -1); break;
	case HK_MSG_EVICT:
		if ((int)m->node == from) {
			atomic_fetch_add(&n->stats.malformed, 1);
			break;
		}
		on_req(n, from, m, (int)m->node);
		break;
	case HK_MSG_FWD: on_fwd(n, from, m); break;
	case HK_MSG_DATA: on_data(n, from, m); break;
	case HK_MSG_GRANT: on_grant(n, from, m); break;
	case HK_MSG_INV: on_inv(n, from, m); break;
	case HK_MSG_INV_ACK: on_inv_ack(n, from, m); break;
	case HK_MSG_XFER_ACK: on_xfer_ack(n, from, m); break;
	case HK_MSG_XFER_DROPPED: on_xfer_dropped(n, from, m); break;
	case HK_MSG_DONE: on_done(n, from, m); break;
	case HK_MSG_HEARTBEAT:
		n->links[from].resident = m->a;
		n->links[from].budget = m->b;
		break;
	case HK_MSG_BYE:
		n->links[from].bye = true;
		break;
	case HK_MSG_VCPU: hk_vcpu_deliver(n, from, m); break;
	case HK_MSG_PEER_LOST:
		if ((int)m->node != n->self)
			peer_lost(n, (int)m->node);
		break;
	default:
		hk_warn("unexpected %s from node %d after the handshake", hk_msg_type_name(m->type),
			from);
		atomic_fetch_add(&n->stats.malformed, 1);
		break;
	}
}

static void drain_local(struct hk_node *n)
{
	struct hk_local_msg *lm;
	while ((lm = n->lq_head)) {
		n->lq_head = lm->next;
		if (!n->lq_head)
			n->lq_tail = NULL;
		dispatch(n, n->self, &lm->m);
		free(lm);
	}
}

static void read_link(struct hk_node *n, int peer)
{
	struct hk_link *l = &n->links[peer];
	for (;;) {
		size_t want = l->rcap - l->rlen;
		ssize_t r = recv(l->fd, l->rbuf + l->rlen, want, MSG_DONTWAIT);
		/* A peer that said BYE and closed with our last messages still
		 * unread makes recv fail with ECONNRESET: still an orderly exit. */
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR && l->bye)) {
			if (l->bye) {
				l->up = false;
				epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
			} else {
				peer_lost(n, peer);
			}
			return;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				peer_lost(n, peer);
			return;
		}
		l->rlen += (size_t)r;
		l->last_rx_ns = hk_now_ns();
		size_t off = 0;
		for (;;) {
			struct hk_msg m;
			int c = hk_msg_decode(l->rbuf + off, l->rlen - off, &m);
			if (c == 0)
				break;
			if (c < 0) {
				/* The stream cannot be resynchronised: drop the
				 * link, which makes the peer lost. */
				atomic_fetch_add(&n->stats.malformed, 1);
				hk_warn("malformed frame from node %d (%s): dropping the link", peer,
					strerror(-c));
				peer_lost(n, peer);
				return;
			}
			hk_stats_msg(&n->stats, false, m.type, (size_t)c);
			if (m.type >= HK_MSG_REQ && m.type <= HK_MSG_EVICT)
				n->last_peer_ns = l->last_rx_ns;
			dispatch(n, peer, &m);
			drain_local(n);
			off += (size_t)c;
			if (!l->up)
				return;
		}
		memmove(l->rbuf, l->rbuf + off, l->rlen - off);
		l->rlen -= off;
		/* A short read drained the socket: epoll (level-triggered)
		 * reports anything newer; spare the recv that says EAGAIN. */
		if ((size_t)r < want)
			return;
	}
}

static void read_faults(struct hk_node *n)
{
	struct uffd_msg msgs[16];
	for (;;) {
		ssize_t r = read(n->mem.uffd, msgs, sizeof(msgs));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return; /* EAGAIN */
		}
		for (size_t i = 0; i < (size_t)r / sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			int64_t page = hk_memory_addr_page(&n->mem, msgs[i].arg.pagefault.address);
			if (page < 0)
				continue;
			bool write = msgs[i].arg.pagefault.flags &
				     (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
			on_fault(n, (uint64_t)page, write, (pid_t)msgs[i].arg.pagefault.feat.ptid);
			drain_local(n);
			hk_budget_pressure(n);
			drain_local(n);
		}
		if ((size_t)r < sizeof(msgs))
			return; /* drained; epoll reports newer faults */
	}
}

static void on_timer(struct hk_node *n)
{
	uint64_t ticks;
	if (read(n->timerfd, &ticks, sizeof(ticks)) < 0)
		return;
	uint64_t now = hk_now_ns();
	for (int k = 0; k < n->count; k++) {
		struct hk_link *l = &n->links[k];
		if (k == n->self || !l->up)
			continue;
		if (!l->bye && now - l->last_rx_ns > (uint64_t)n->cfg.peer_timeout_ms * 1000000ull) {
			hk_warn("node %d silent for %u ms", k, n->cfg.peer_timeout_ms);
			peer_lost(n, k);
			continue;
		}
		struct hk_msg m = { .type = HK_MSG_HEARTBEAT, .a = n->resident, .b = n->budget_pages };
		hk_node_send(n, k, &m);
	}
	n->clock_ticks++;
	hk_budget_tick(n);
	drain_local(n);
}

void *hk_coherence_thread(void *arg)
{
	struct hk_node *n = arg;
	struct epoll_event evs[16];
	while (!atomic_load(&n->stop)) {
		int timeout = -1;
		uint64_t now = hk_now_ns();
		uint64_t spin_until = n->cfg.spin_us ? now + n->cfg.spin_us * 1000ull : 0;
		int k;
		/* Adaptive busy-poll, only while a thread of ours is stalled on a
		 * request (up to twice the recent reply time, capped): the reply
		 * is then read without a wake-up (on this VM a cross-CPU wake-up
		 * is an IPI, i.e. a VM exit).  Likewise briefly after serving a
		 * fault, to catch a streaming thread's next fault, and after
		 * serving a peer's request, to catch its DONE and its next
		 * request.  Idle nodes never spin.  sched_yield() between polls gives the CPU to
		 * whoever is runnable here (e.g. the peer we wait for when both
		 * share one CPU), so spinning never delays the reply it awaits. */
		if (n->spin_cap_ns && !atomic_load(&n->failed)) {
			if (n->outstanding) {
				uint64_t b = 2 * n->ewma_reply_ns;
				if (b > n->spin_cap_ns)
					b = n->spin_cap_ns;
				if (now + b > spin_until)
					spin_until = now + b;
			}
			if (n->last_serve_ns + n->fault_spin_ns > spin_until)
				spin_until = n->last_serve_ns + n->fault_spin_ns;
			if (n->last_peer_ns + n->peer_spin_ns > spin_until)
				spin_until = n->last_peer_ns + n->peer_spin_ns;
			if (spin_until <= now)
				spin_until = 0;
		}
		do {
			k = epoll_wait(n->epfd, evs, 16, spin_until ? 0 : timeout);
			if (k == 0 && spin_until && n->spin_cap_ns)
				sched_yield();
		} while (k == 0 && spin_until && hk_now_ns() < spin_until);
		if (k == 0 && spin_until)
			k = epoll_wait(n->epfd, evs, 16, timeout);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			hk_die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < k; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == TAG_UFFD)
				read_faults(n);
			else if (tag == TAG_TIMER)
				on_timer(n);
			else if (tag == TAG_EVENT) {
				uint64_t v;
				if (read(n->evfd, &v, sizeof(v)) < 0)
					continue;
			} else if (tag < HK_MAX_NODES && n->links[tag].up)
				read_link(n, (int)tag);
			drain_local(n);
		}
	}
	return NULL;
}

static void premap_one(struct hk_node *n, uint64_t page)
{
	n->pages[page].state = HK_PS_EXCL;
	n->pages[page].zmap = true;
	n->dir.e[page].owner = (int8_t)n->self;
	n->dir.e[page].copyset = bit(n->self);
}

/* Untouched pages belong to their home: map them all there as the zero page
 * up front, so a first touch at the home never waits for the event thread
 * (a read costs nothing, a write is an in-kernel copy-on-write).  A remote
 * first touch takes them back (take_back_pristine).  HK_NO_PREMAP=1 keeps
 * the lazy zero grant everywhere. */
static void premap_home_pages(struct hk_node *n)
{
	const char *e = getenv("HK_NO_PREMAP");
	if (e && atoi(e) > 0)
		return;
	for (int i = 0; i < n->mem.nregions; i++) {
		uint64_t first = n->mem.regions[i].first_page;
		uint64_t end = first + n->mem.regions[i].len / HK_PAGE_SIZE;
		for (uint64_t pg = first; pg < end;) {
			if (home_of(n, pg) != n->self) {
				pg++;
				continue;
			}
			uint64_t run = 1;
			while (pg + run < end && home_of(n, pg + run) == n->self)
				run++;
			int64_t done = hk_memory_premap_zero(&n->mem, pg, run);
			if (done == (int64_t)run) {
				for (uint64_t k = 0; k < run; k++)
					premap_one(n, pg + k);
			} else { /* something is mapped already: page by page */
				for (uint64_t k = 0; k < run; k++)
					if (hk_memory_premap_zero(&n->mem, pg + k, 1) == 1)
						premap_one(n, pg + k);
			}
			pg += run;
		}
	}
}

int hk_coherence_init(struct hk_node *n)
{
	uint64_t np = n->mem.npages;
	n->pages = calloc(np ? np : 1, sizeof(*n->pages));
	if (!n->pages)
		return -ENOMEM;
	for (uint64_t i = 0; i < np; i++)
		n->pages[i].hint = -1;
	int r = hk_directory_init(&n->dir, np);
	if (r)
		return r;
	premap_home_pages(n);
	/* HK_ADAPTIVE_SPIN=<cap us> (default 200, 0 = off), HK_FAULT_SPIN_US
	 * (default 20), HK_PEER_SPIN_US (default 50): see hk_coherence_thread. */
	const char *env = getenv("HK_ADAPTIVE_SPIN");
	n->spin_cap_ns = (env ? strtoull(env, NULL, 0) : 200) * 1000ull;
	env = getenv("HK_FAULT_SPIN_US");
	n->fault_spin_ns = n->spin_cap_ns ? (env ? strtoull(env, NULL, 0) : 20) * 1000ull : 0;
	env = getenv("HK_PEER_SPIN_US");
	n->peer_spin_ns = n->spin_cap_ns ? (env ? strtoull(env, NULL, 0) : 50) * 1000ull : 0;
	n->ewma_reply_ns = 50000;
	if (posix_memalign((void **)&n->scratch, HK_PAGE_SIZE, HK_PAGE_SIZE))
		return -ENOMEM;
	n->epfd = epoll_create1(EPOLL_CLOEXEC);
	n->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (n->epfd < 0 || n->evfd < 0 || n->timerfd < 0)
		return -errno;
	uint64_t hb = n->cfg.heartbeat_ms;
	struct itimerspec its = { { (time_t)(hb / 1000), (long)(hb % 1000) * 1000000 },
				  { (time_t)(hb / 1000), (long)(hb % 1000) * 1000000 } };
	timerfd_settime(n->timerfd, 0, &its, NULL);
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.u64 = TAG_UFFD;
	epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->mem.uffd, &ev);
	ev.data.u64 = TAG_EVENT;
	epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->evfd, &ev);
	ev.data.u64 = TAG_TIMER;
	epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->timerfd, &ev);
	for (int k = 0; k < n->count; k++) {
		if (k == n->self || !n->links[k].up)
			continue;
		ev.data.u64 = (uint64_t)k;
		if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->links[k].fd, &ev) < 0)
			return -errno;
	}
	return 0;
}

void hk_coherence_destroy(struct hk_node *n)
{
	struct hk_local_msg *lm;
	while ((lm = n->lq_head)) {
		n->lq_head = lm->next;
		free(lm);
	}
	if (n->pages) {
		for (uint64_t i = 0; i < n->mem.npages; i++) {
			while (n->pages[i].waiters) {
				struct hk_waiter *w = n->pages[i].waiters;
				n->pages[i].waiters = w->next;
				free(w);
			}
		}
	}
	free(n->pages);
	n->pages = NULL;
	hk_directory_destroy(&n->dir);
	hk_stats_destroy(&n->stats);
	free(n->scratch);
	n->scratch = NULL;
	if (n->epfd >= 0)
		close(n->epfd);
	if (n->evfd >= 0)
		close(n->evfd);
	if (n->timerfd >= 0)
		close(n->timerfd);
	n->epfd = n->evfd = n->timerfd = -1;
}
