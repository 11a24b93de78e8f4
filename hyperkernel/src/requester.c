/* requester.c - the node that faulted: it records the waiting thread, asks
 * the page's home, installs what arrives (read-only first for an exclusive
 * copy, writable once the giver has dropped its own) and tells the home the
 * transaction is done.
 *
 *   read:  R -REQ-> H; H -FWD(S)-> holder (H itself when it has a copy);
 *          holder write-protects, -DATA(S)-> R; R installs read-only, -DONE-> H
 *   write: R -REQ-> H; H -INV-> every other holder, each drops, -INV_ACK-> H;
 *          then H -GRANT(E)-> R if R kept a valid copy (R unprotects), else
 *          H -FWD(E)-> owner O; O write-protects, copies, drops, and once
 *          its translations are gone -DATA(E, dropped)-> R; R installs it
 *          writable, -DONE-> H
 *   push:  (an eviction) O write-protects, -DATA(E, push)-> R; R installs
 *          read-only, -XFER_ACK-> O (or refuses: XFER_REFUSED); O drops,
 *          -XFER_DROPPED-> R; R unprotects (only now can anyone write)
 *   first touch: H finds no owner and grants E with "zero": R installs a
 *          zero page; at the home itself no message leaves the node. */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

/* Migratory pages.  Much of what the guest's kernel shares between CPUs is
 * read and then written by one CPU at a time: a run queue, a wake list, a
 * socket's state.  In "redis" on 2 nodes, 28-44% of each node's write
 * stalls came within 2 ms (median 40-51 us) of its own read stall on the
 * same page.  Each such pair costs two stalls: the read brings a copy, and
 * the write then upgrades it, which takes the giver's copy anyway.  So a
 * read stall on a page whose reads here have been followed by an upgrade
 * asks for the page to write: one transaction brings it writable.  That is
 * an ordinary exclusive request, so coherence is unchanged; only the
 * choice of mode is a guess.  The evidence is spent as it is used: each
 * read asked that way costs one unit, and once none is left a read asks for
 * a copy again and looks whether the write still follows.  A copy lost
 * without a write takes a unit away (after Cox and Fowler's adaptive
 * protocol for migratory data, at page grain and per node). */
#define MIGRATORY_WINDOW_NS 2000000ull
#define MIGRATORY_MAX 7
#define MIGRATORY_GAIN 4

/* A page a migratory read brought may leave before anyone here wrote it:
 * a reader spinning on a word another node is about to write (pingpong's
 * hand-off) took the page from its writer.  Its write stall then takes the
 * page back, the spinner's next read takes it again, and so on.  Nothing
 * here sees a store to a writable page, so the content tells: hashed when
 * it came, hashed again when it leaves; the same bytes end the guess
 * (a store that put back the bytes it found looks unwritten too, and
 * costs a read for a copy and its upgrade before the guess resumes). */
static uint64_t page_hash(const void *data)
{
	/* a frame's payload: not 8-byte aligned in the receive buffer */
	const uint8_t *b = data;
	uint64_t h = 0x9e3779b97f4a7c15ull;
	for (unsigned i = 0; i < HK_PAGE_SIZE / 8; i++) {
		uint64_t w;
		memcpy(&w, b + 8 * i, sizeof(w));
		h = (h ^ w) * 0xff51afd7ed558ccdull;
	}
	return h ^ (h >> 29);
}

void hk_requester_giving(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!p->mig_check)
		return;
	p->mig_check = false;
	if (page_hash(hk_memory_page_addr(&n->mem, page)) == p->mig_hash)
		p->migratory = 0;
}

static void migratory_stall(struct hk_page *p, bool write, uint64_t now)
{
	if (p->read_ns && !p->read_asked_excl) {
		if (!write && p->migratory)
			p->migratory--; /* the copy it read went, never written */
		else if (write && p->state == HK_PS_SHARED && now - p->read_ns < MIGRATORY_WINDOW_NS)
			p->migratory = p->migratory + MIGRATORY_GAIN > MIGRATORY_MAX
					       ? MIGRATORY_MAX : p->migratory + MIGRATORY_GAIN;
	}
	p->read_ns = 0;
}

static void complete_waiters(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	struct hk_waiter **pw = &p->waiters;
	bool woke = false, wrote = false;
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
		hk_trace_stall(n, w, page, now);
		wrote |= w->write;
		*pw = w->next;
		free(w);
		woke = true;
	}
	if (woke)
		p->read_ns = wrote ? 0 : now; /* for migratory_stall */
	/* Installs already woke the range; unprotects do not (a store must not
	 * land before the embedder is ready for it), nor were faults satisfied
	 * before we read them. */
	if (!woke)
		return;
	n->last_serve_ns = now;
	if (wrote && n->cfg.cb.on_write_wake &&
	    n->cfg.cb.on_write_wake(n->cfg.cb.opaque, page * HK_PAGE_SIZE) == HK_DEFER) {
		n->stats.node.deferred_wakes++;
		return;
	}
	hk_memory_wake(&n->mem, page);
}

int hk_page_wake(struct hk_node *n, uint64_t offset)
{
	if (!n || offset / HK_PAGE_SIZE >= n->mem.npages)
		return -EINVAL;
	return hk_memory_wake(&n->mem, offset / HK_PAGE_SIZE);
}

/* A read-ahead request that a thread now waits for (or that ended) counts
 * as an ordinary one: the event thread busy-polls only for replies that a
 * stalled thread waits for, since under SCHED_FIFO its polling keeps the
 * node's vCPU threads off the CPU. */
static void not_ahead(struct hk_node *n, struct hk_page *p)
{
	if (p->ahead) {
		p->ahead = false;
		n->ahead_outstanding--;
	}
}

/* Re-examine a page whose state may now satisfy, or need, its waiters. */
/* The vCPU a thread runs (hk_thread_set_vcpu), or -1. */
static int vcpu_of(struct hk_node *n, pid_t tid)
{
	for (int v = 0; v < HK_MAX_VCPUS; v++)
		if (__atomic_load_n(&n->vcpu_tid[v], __ATOMIC_RELAXED) == tid && tid)
			return v;
	return -1;
}

void hk_requester_evaluate(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!p->waiters || p->req_pending || p->dropping || p->state == HK_PS_GIVING ||
	    p->state == HK_PS_RECV_EXCL)
		return;
	complete_waiters(n, page);
	if (!p->waiters || p->await_room)
		return;
	bool write = false;
	uint64_t oldest = UINT64_MAX;
	/* the stall describes a writer if there is one: the embedder learns
	 * which thread's store waits (TCG keeps the page's code uncached) */
	struct hk_waiter *first = p->waiters;
	for (struct hk_waiter *w = p->waiters; w; w = w->next) {
		if (w->write && !write)
			first = w;
		write |= w->write;
		if (w->t0 < oldest)
			oldest = w->t0;
	}
	bool migratory = !write && p->state == HK_PS_INVALID && p->migratory && n->tuning.migratory;
	struct hk_stall st = {
		.tid = first->tid,
		.vcpu = vcpu_of(n, first->tid),
		.offset = page * HK_PAGE_SIZE,
		.is_write = write,
		.migratory = migratory,
		.home_node = hk_home_of(n, page),
		.likely_owner = p->hint >= 0 ? p->hint : hk_home_of(n, page),
		.wake_generation = hk_wake_generation(n),
		.id = first->id,
	};
	if (n->policy == HK_POLICY_LEARNED && st.vcpu >= 0)
		st.guest_thread = n->cfg.cb.guest_thread ?
					  n->cfg.cb.guest_thread(n->cfg.cb.opaque, st.vcpu, &st.user) :
					  (uint64_t)st.tid;
	struct hk_decision d;
	if (p->move_asked) {
		/* A move is asked for once per stall: if the embedder has not
		 * pulled the thread out by the time it is asked again (a
		 * re-fault, or the tick's check), the page comes after all, so
		 * no thread waits for a move that does not happen. */
		d = (struct hk_decision){ HK_BRING_PAGE, -1, HK_WHY_MOVE_TIMEOUT, -1 };
	} else {
		hk_policy_decide(n, &st, &d);
		bool move = d.kind == HK_MOVE_VCPU;
		if (n->cfg.cb.on_stall)
			n->cfg.cb.on_stall(n->cfg.cb.opaque, &st, &d);
		if (move && d.kind != HK_MOVE_VCPU)
			d.reason = HK_WHY_EMBEDDER;
	}
	hk_policy_count(n, d.reason);
	if (d.kind == HK_MOVE_VCPU) {
		hk_info("move vCPU %d to node %d (swap %d, %s) for a %s stall on page %#lx",
			st.vcpu, d.target_node, d.swap_vcpu, hk_reason_name(d.reason),
			write ? "write" : "read", page * HK_PAGE_SIZE);
		n->stats.node.vcpu_move_decisions++;
		first->pulling = true; /* the stall st describes */
		hk_learned_moved(n, st.vcpu, d.target_node);
		/* a full target sends one of its vCPUs back when this one
		 * arrives (hk_cluster_rebalance) */
		p->move_asked = true;
		p->move_ns = hk_now_ns();
		if (n->nmoving < HK_MOVING_MAX)
			n->moving[n->nmoving++] = page;
		return;
	}
	/* Under a budget a page comes only into a free slot.  An upgrade needs
	 * none: if another writer invalidates our copy first, the slot that
	 * frees is kept for the data that then comes (hk_budget_keep_slot).
	 * (A stall waiting for a slot is not asked about a move again.) */
	if (p->state == HK_PS_INVALID && !hk_budget_reserve(n, page))
		return;
	p->move_asked = false;
	p->req_pending = true;
	n->outstanding++;
	n->req_sent_ns = hk_now_ns();
	p->t_req = n->req_sent_ns;
	hk_stats_stage(&n->stats, HK_STAGE_REQUEST_WAIT, oldest);
	bool excl = write;
	if (migratory) {
		p->migratory--;
		excl = true;
		n->stats.node.migratory_reads++;
	}
	p->read_asked_excl = excl && !write;
	p->req_mode = excl ? HK_MODE_EXCL : HK_MODE_SHARED;
	hk_send_page(n, hk_home_of(n, page), HK_MSG_REQ, page, n->self, p->req_mode,
		      p->state == HK_PS_SHARED ? HK_REQ_HAVE_COPY
		      : p->read_asked_excl     ? HK_REQ_MIGRATORY
					       : HK_REQ_PLAIN,
		      NULL);
}

/* A read request nobody waits for yet (read-ahead, refetch): an ordinary
 * read transaction (the home serialises it, a writer invalidates it), so
 * coherence is unchanged.  False if the page is here or on its way. */
static bool ask_ahead(struct hk_node *n, uint64_t q)
{
	struct hk_page *p = &n->pages[q];
	if (p->state != HK_PS_INVALID || p->req_pending || p->waiters || p->dropping ||
	    p->await_room)
		return false;
	hk_budget_reserve(n, q); /* the caller checked for room: never waits */
	p->req_pending = true;
	p->req_mode = HK_MODE_SHARED;
	p->move_asked = false;
	p->ahead = true;
	p->read_asked_excl = false;
	n->outstanding++;
	n->ahead_outstanding++;
	hk_send_page(n, hk_home_of(n, q), HK_MSG_REQ, q, n->self, HK_MODE_SHARED, 0, NULL);
	return true;
}

/* Under a memory budget a page nobody asked for takes a slot only while the
 * budget has ample room: it must not take the slot a fault needs. */
static bool room_ahead(const struct hk_node *n, uint32_t depth)
{
	return !n->budget_pages || n->resident + n->reserved + 2 * depth <= n->budget_pages;
}

/* Read-ahead.  A read fault on the page after the last one read here (or
 * inside the window already asked for) asks for the next pages too, so that
 * a thread streaming through remote memory finds its next pages arriving, up
 * to HK_READAHEAD requests in flight instead of one.
 *
 * In order, either way: the guest's allocator hands out physical pages in
 * descending order as often as ascending, so a thread reading its virtual
 * memory in order faults on guest-physical pages that often go down.  Once
 * read-ahead runs, the next fault comes up to depth + 1 pages further on
 * (the pages in between arrived without a fault), or past the chain's end.
 *
 * The chain.  A reader that finds its window arrived does not fault again
 * until it reads past it, so the next window was asked for only then, and
 * the reader waited a whole window's round trip every HK_READAHEAD pages
 * (measured in the fault trace of bench stall: it read 33 pages in 100 us,
 * then waited 172 us, 70% of the stream stalled).  So the arrival of the
 * middle page of the newest window asks for the window after it, while the
 * reader is still reading: up to HK_READAHEAD_WINDOWS windows (default 4)
 * beyond its last fault; 1 is the window alone, as before the chain.  Past
 * that the chain waits for the reader's next fault, so a reader that
 * stopped costs at most that many pages it never reads. */

static bool past(uint64_t a, uint64_t b, int dir)
{
	return dir > 0 ? a > b : a < b;
}

int hk_readahead_dir(const struct hk_node *n, uint64_t page)
{
	uint64_t depth = n->tuning.readahead, last = n->ra_last;
	if (page == last + 1 || (n->ra_dir > 0 && page > last &&
				 (page <= last + depth + 1 || page <= n->ra_end + 1)))
		return 1;
	if (page + 1 == last || (n->ra_dir < 0 && page < last &&
				 (page + depth + 1 >= last || page + 1 >= n->ra_end)))
		return -1;
	return 0;
}

/* Ask for the depth pages after `from`, direction dir, that are neither
 * here nor on their way; how many pages that covered (fewer at the end of
 * memory). */
static uint64_t ask_after(struct hk_node *n, uint64_t from, int dir)
{
	uint64_t depth = n->tuning.readahead, i;
	for (i = 1; i <= depth; i++) {
		uint64_t q = dir > 0 ? from + i : from - i;
		if (q >= n->mem.npages) /* past either end (from - i wraps) */
			break;
		if (ask_ahead(n, q))
			n->stats.node.readaheads++;
	}
	return i - 1;
}

/* The window after `end`: the chain's end and mark move with it. */
static void ask_window(struct hk_node *n, uint64_t end, int dir)
{
	uint64_t depth = n->tuning.readahead, got = ask_after(n, end, dir);
	n->ra_end = dir > 0 ? end + got : end - got;
	/* a window cut short by the end of memory has no next one */
	n->ra_mark = got == depth ? (dir > 0 ? end + (depth + 1) / 2 : end - (depth + 1) / 2)
				  : UINT64_MAX;
	n->ra_held = false;
}

/* The window after the chain's end, if the reader's last fault is close
 * enough behind it. */
static void chain_on(struct hk_node *n)
{
	uint64_t depth = n->tuning.readahead;
	int dir = n->ra_dir;
	uint64_t ahead = dir > 0 ? n->ra_end - n->ra_last : n->ra_last - n->ra_end;
	uint64_t most = n->tuning.readahead_windows * depth;
	if (ahead + depth > most || !room_ahead(n, (uint32_t)most)) {
		n->ra_held = true;
		return;
	}
	ask_window(n, n->ra_end, dir);
}

static void read_ahead(struct hk_node *n, uint64_t page)
{
	uint64_t depth = n->tuning.readahead;
	int dir = hk_readahead_dir(n, page);
	bool same_run = dir && dir == n->ra_dir && past(n->ra_end, page, dir);
	n->ra_last = page;
	n->ra_dir = (int8_t)dir;
	if (!same_run) { /* a new run, or one past its chain: none yet */
		n->ra_end = page;
		n->ra_mark = UINT64_MAX;
		n->ra_held = false;
	}
	if (!depth || !dir || !room_ahead(n, (uint32_t)depth))
		return;
	if (!same_run || !past(n->ra_end, dir > 0 ? page + depth : page - depth, dir)) {
		ask_window(n, page, dir);
		return;
	}
	/* inside the chain: fill what it has not asked for, if anything,
	 * and let a held chain go on */
	ask_after(n, page, dir);
	if (n->ra_held)
		chain_on(n);
}

/* A read copy arrived: the chain's mark asks for its next window. */
static void read_ahead_arrived(struct hk_node *n, uint64_t page)
{
	int dir = n->ra_dir;
	if (!dir || !n->tuning.readahead || n->ra_mark == UINT64_MAX ||
	    past(n->ra_mark, page, dir) || past(page, n->ra_end, dir))
		return;
	chain_on(n);
}

/* Refetch.  Writers take our copies in bursts: a compactor rewriting the
 * table our readers look up ("lmat": 4,096 pages every 100 ms), CPU 0's
 * tick rewriting jiffies_64, tk_core and last_jiffies_update one after the
 * other.  A thread that reads one of those pages again will read the others
 * again too, one stall each, in any order.  So a read of a page whose copy
 * was taken lately asks again, without a stall, for up to HK_REFETCH copies
 * taken within REFETCH_WINDOW of it, nearest first: the burst's.  Not those
 * taken in the last REFETCH_SETTLE, which their writer may still be
 * writing (a copy would take its page back from it at once). */
#define REFETCH_WINDOW_NS 20000000ull
#define REFETCH_SETTLE_NS 200000ull
#define REFETCH_HOT_MS 50

void hk_requester_lost(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	uint64_t now = hk_now_ns();
	uint32_t seq = n->lost_next++, now_ms = (uint32_t)(now / 1000000) | 1;
	/* a writer took it from us lately already: a page its writers keep
	 * writing (a queue's head, a lock's word), which a copy would take from
	 * the next of them, a stall for the copy that saved one */
	bool hot = p->lost_ms && (int32_t)(now_ms - p->lost_ms) < REFETCH_HOT_MS;
	n->lost[seq % HK_LOST_RING] = (struct hk_lost){ page, now, hot };
	p->lost_seq = seq + 1;
	p->lost_ms = now_ms;
}

/* A lost copy's ring entry still describes it: not overwritten, not used. */
static struct hk_lost *lost_entry(struct hk_node *n, uint64_t page)
{
	uint32_t seq = n->pages[page].lost_seq;
	if (!seq || n->lost_next - (seq - 1) > HK_LOST_RING)
		return NULL;
	struct hk_lost *l = &n->lost[(seq - 1) % HK_LOST_RING];
	return l->page == page && l->ns ? l : NULL;
}

/* The guest's program read it, not its kernel: the kernel's pages that
 * writers take in bursts (the tick's, the run queues', the timers') are
 * written again within milliseconds, by every CPU (in the 4-node boot,
 * refetching them took 17 s instead of 10).  Without the embedder's word,
 * any thread. */
static bool program_read(struct hk_node *n, pid_t tid)
{
	if (!n->cfg.cb.guest_thread)
		return true;
	int vcpu = vcpu_of(n, tid);
	bool user = false;
	if (vcpu < 0)
		return false;
	n->cfg.cb.guest_thread(n->cfg.cb.opaque, vcpu, &user);
	return user;
}

static void refetch(struct hk_node *n, uint64_t page, pid_t tid)
{
	uint32_t depth = n->tuning.refetch;
	struct hk_lost *mine = lost_entry(n, page);
	if (!mine)
		return;
	uint64_t at = mine->ns, now = hk_now_ns();
	uint32_t seq = n->pages[page].lost_seq - 1, asked = 0;
	mine->ns = 0;
	if (!depth || mine->hot || !room_ahead(n, depth) || !program_read(n, tid))
		return;
	/* outwards from it, both ways in time (side 0: lost before it, 1:
	 * after), while either side is still in the window */
	bool open[2] = { true, true };
	for (uint32_t d = 1; d < HK_LOST_RING && asked < depth && (open[0] || open[1]); d++) {
		for (int side = 0; side < 2 && asked < depth; side++) {
			if (!open[side])
				continue;
			uint32_t s = side ? seq + d : seq - d;
			if (side ? (int32_t)(n->lost_next - s) <= 0 : n->lost_next - s > HK_LOST_RING) {
				open[side] = false; /* not yet, or overwritten */
				continue;
			}
			struct hk_lost *l = &n->lost[s % HK_LOST_RING];
			if (!l->ns || lost_entry(n, l->page) != l)
				continue; /* used, or lost again later (that entry counts) */
			if ((side ? l->ns - at : at - l->ns) > REFETCH_WINDOW_NS) {
				open[side] = false;
				continue;
			}
			if (now - l->ns < REFETCH_SETTLE_NS || l->hot)
				continue;
			l->ns = 0;
			if (ask_ahead(n, l->page))
				asked++;
		}
	}
	n->stats.node.refetches += asked;
}

void hk_requester_fault(struct hk_node *n, uint64_t page, bool write, pid_t tid)
{
	struct hk_page *p = &n->pages[page];
	if (atomic_load(&n->failed)) {
		hk_failure_poison(n, page);
		return;
	}
	for (struct hk_waiter *w = p->waiters; w; w = w->next) {
		if (w->tid == tid) { /* woken, still unsatisfied, faulted again */
			w->write |= write;
			w->pulling = false; /* it is in this fault, whatever was asked */
			hk_requester_evaluate(n, page);
			return;
		}
	}
	struct hk_waiter *w = malloc(sizeof(*w));
	if (!w)
		hk_die("out of memory for a stall record");
	w->tid = tid;
	w->write = write;
	w->pulling = false;
	w->id = ++n->stall_ids;
	w->t0 = hk_now_ns();
	if (n->trace)
		hk_trace_fault(n, w, vcpu_of(n, tid));
	w->next = p->waiters;
	p->waiters = w;
	migratory_stall(p, write, w->t0);
	not_ahead(n, p);
	hk_requester_evaluate(n, page);
	if (!write) {
		read_ahead(n, page);
		refetch(n, page, tid);
	}
}

static void finish_request(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	p->req_pending = false;
	p->t_req = 0;
	not_ahead(n, p);
	hk_budget_release(n, page); /* not used: the page was here already */
	if (n->outstanding) {
		n->outstanding--;
		/* how long a request takes, for the event thread's busy-poll */
		uint64_t dt = hk_now_ns() - n->req_sent_ns;
		n->ewma_reply_ns = n->ewma_reply_ns - n->ewma_reply_ns / 8 + dt / 8;
	}
	hk_send_page(n, hk_txn_home(n, page), HK_MSG_DONE, page, n->self, 0, 0, NULL);
	hk_requester_evaluate(n, page);
}

void hk_requester_on_data(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	uint64_t arrived = hk_now_ns();
	/* Staged read copies first (arrivals.c), unless this one may join
	 * them: the checks below then see every earlier frame's effect. */
	if (m->aux || m->mode != HK_MODE_SHARED || hk_arrivals_holds(n, m->page))
		hk_arrivals_flush(n);
	if (p->state == HK_PS_SHARED && p->req_pending && p->req_mode == HK_MODE_EXCL &&
	    m->mode == HK_MODE_EXCL) {
		/* Never in a correct run: the directory lost track of our copy
		 * (e.g. HK_DEBUG_SKIP_INVALIDATE).  Counted; the fresh data
		 * replaces ours rather than leaving the faulting thread hung. */
		hk_warn("page %lu: exclusive data from node %d while we hold a copy", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		hk_must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
		p->state = HK_PS_INVALID;
		hk_page_left(n, m->page);
	}
	if (p->state != HK_PS_INVALID) {
		hk_warn("page %lu: data from node %d while in state %d, rejected", m->page, from,
			p->state);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	/* A push needs a free slot of its own: the slot of a request of ours
	 * stays with that request (the page may leave again before the home
	 * serves it, and then the request brings it once more), and requests
	 * waiting for room come first (else pushes and evictions chase each
	 * other round the nodes while the waiters starve). */
	bool push = m->aux == HK_DATA_PUSH;
	if (push && (hk_budget_full(n) || n->nroom_wait || n->evac.node == n->self)) {
		/* A pushed page (an eviction) we have no slot for: refused,
		 * the giver keeps it and tries another node. */
		n->stats.node.pushes_refused++;
		hk_send_page(n, from, HK_MSG_XFER_REFUSED, m->page, n->self, 0, 0, NULL);
		/* someone needs room: give up a duplicate copy if we hold one */
		hk_budget_drop_shared(n, 1);
		return;
	}
	/* An exclusive copy becomes writable only once the giver has dropped
	 * its own: now if it did before sending, else on its XFER_DROPPED. */
	bool dropped = m->aux == HK_DATA_DROPPED;
	if (!push) {
		hk_stats_stage(&n->stats, HK_STAGE_REMOTE, p->t_req);
		if (p->t_req && !p->ahead)
			hk_policy_page_cost(n, from, arrived - p->t_req);
	}
	p->txn_home = (int8_t)m->node; /* the home that forwarded it (holder.c) */
	/* a plain read copy may wait to be installed with the ones that came
	 * with it (arrivals.c) */
	if (!push && !dropped && m->mode == HK_MODE_SHARED && hk_arrivals_take(n, from, m, arrived))
		return;
	if (dropped)
		hk_must(hk_memory_install_quiet(&n->mem, m->page, m->data), "install", m->page);
	else
		hk_must(hk_memory_install(&n->mem, m->page, m->data, true), "install", m->page);
	hk_requester_installed(n, from, m, arrived);
}

/* The page of DATA message m is in place: what follows its install. */
void hk_requester_installed(struct hk_node *n, int from, const struct hk_msg *m, uint64_t arrived)
{
	struct hk_page *p = &n->pages[m->page];
	bool push = m->aux == HK_DATA_PUSH, dropped = m->aux == HK_DATA_DROPPED;
	hk_stats_stage(&n->stats, HK_STAGE_INSTALL, arrived);
	p->mig_check = dropped && !push && p->read_asked_excl;
	if (p->mig_check)
		p->mig_hash = page_hash(m->data);
	p->t_data = hk_now_ns();
	n->stats.node.pages_received++;
	hk_page_arrived(n, m->page, from);
	if (!push)
		hk_budget_release(n, m->page); /* our request's slot now holds it */
	else
		hk_evac_page_taken(n, from);
	if (m->mode == HK_MODE_SHARED) {
		p->state = HK_PS_SHARED;
		finish_request(n, m->page);
		if (!push)
			read_ahead_arrived(n, m->page);
	} else if (dropped) {
		p->state = HK_PS_EXCL;
		finish_request(n, m->page);
	} else {
		p->state = HK_PS_RECV_EXCL;
		p->pushed = push;
		hk_send_page(n, from, HK_MSG_XFER_ACK, m->page, n->self, 0, 0, NULL);
	}
}

void hk_requester_on_xfer_dropped(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (p->state != HK_PS_RECV_EXCL) {
		hk_warn("page %lu: unexpected xfer_dropped from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	hk_must(hk_memory_protect(&n->mem, m->page, false), "unprotect", m->page);
	p->state = HK_PS_EXCL;
	hk_stats_stage(&n->stats, HK_STAGE_HANDOVER, p->t_data);
	p->t_data = 0;
	if (p->pushed) {
		/* An eviction's transaction ends here; a request of ours, if
		 * any, is still queued at the home and will be granted. */
		p->pushed = false;
		hk_send_page(n, hk_txn_home(n, m->page), HK_MSG_DONE, m->page, n->self, 0, 0, NULL);
		hk_requester_evaluate(n, m->page);
		return;
	}
	finish_request(n, m->page);
}

void hk_requester_on_grant(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (!hk_is_from_home(n, m->page, from)) {
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	p->txn_home = (int8_t)from;
	hk_stats_stage(&n->stats, HK_STAGE_REMOTE, p->t_req);
	if (m->aux) { /* first touch: a zero page, no data on the wire */
		if (p->state != HK_PS_INVALID) {
			hk_warn("page %lu: zero grant in state %d", m->page, p->state);
			atomic_fetch_add(&n->stats.malformed, 1);
			return;
		}
		hk_must(hk_memory_install_zero(&n->mem, m->page, false), "install zero", m->page);
		n->stats.node.zero_fills++;
		hk_page_arrived(n, m->page, n->self);
		hk_budget_release(n, m->page);
		p->state = HK_PS_EXCL;
	} else if (m->mode == HK_MODE_EXCL && p->state != HK_PS_EXCL) {
		/* (already Exclusive: an eviction pushed the page here after we
		 * asked; nothing to change) */
		if (p->state != HK_PS_SHARED)
			hk_die("page %lu: upgrade grant but state %d", m->page, p->state);
		hk_must(hk_memory_protect(&n->mem, m->page, false), "unprotect", m->page);
		p->state = HK_PS_EXCL;
	}
	finish_request(n, m->page);
}

/* A thread the policy wanted to move, still in its fault after 20 ms (the
 * embedder could not pull it out, e.g. the fault was outside translated
 * code): bring its page. */
void hk_requester_check_moves(struct hk_node *n)
{
	uint64_t now = hk_now_ns();
	int kept = 0;
	for (int i = 0; i < n->nmoving; i++) {
		uint64_t pg = n->moving[i];
		struct hk_page *p = &n->pages[pg];
		if (!p->move_asked || !p->waiters) {
			p->move_asked = false;
			continue;
		}
		if (now - p->move_ns < 20000000ull) {
			n->moving[kept++] = pg;
			continue;
		}
		hk_requester_evaluate(n, pg);
	}
	n->nmoving = kept;
}

void hk_requester_thread_left(struct hk_node *n, uint64_t page, uint64_t stall_id)
{
	struct hk_page *p = &n->pages[page];
	for (struct hk_waiter **pw = &p->waiters; *pw; pw = &(*pw)->next) {
		struct hk_waiter *w = *pw;
		/* the same stall, and no re-fault since the move was asked */
		if (w->id != stall_id || !w->pulling)
			continue;
		*pw = w->next;
		free(w);
		n->stats.node.vcpu_pulls++;
		/* the others, if any, get a decision of their own */
		p->move_asked = false;
		hk_requester_evaluate(n, page);
		return;
	}
}

/* The home's answer to our DROP_REQ: 1, drop the shared copy now (its
 * translations first, like any departure) and end the transaction; 2, we
 * hold the only copy: push it like an exclusive page; 0, nothing to drop. */
void hk_requester_on_drop_ok(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_page *p = &n->pages[m->page];
	if (!hk_is_from_home(n, m->page, from) || !p->dropping) {
		hk_warn("page %lu: unexpected drop_ok from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	p->dropping = false;
	if (m->aux == 2) {
		/* we hold the only copy: push it to a node with room */
		int target = hk_budget_pick_room_target(n);
		/* only for a request of ours: a node that merely helps (after
		 * refusing a push) never pushes in turn */
		if (target >= 0 && p->state == HK_PS_SHARED &&
		    (n->nroom_wait || n->evac.node == n->self)) {
			p->evicting = (uint32_t)n->clock_ticks | 1;
			n->stats.node.evictions++;
			struct hk_msg ev = { .type = HK_MSG_EVICT, .page = m->page,
					     .node = (uint32_t)target };
			hk_node_send(n, from, &ev);
		}
	} else if (m->aux) {
		bool deferred = false;
		if (p->state == HK_PS_SHARED) {
			hk_must(hk_memory_drop(&n->mem, m->page), "drop", m->page);
			p->state = HK_PS_INVALID;
			deferred = hk_page_left(n, m->page);
		}
		hk_page_ack(n, m->page, deferred, from, HK_MSG_DONE);
	}
	hk_requester_evaluate(n, m->page);
}
