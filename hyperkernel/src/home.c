/* home.c - the node that keeps a page's directory entry serialises its
 * transactions: one at a time per page (phase != IDLE), later requests wait
 * in the entry's queue until the requester's DONE, and a request for writing
 * also until the page's hold-down ends (HELD).  Evictions are requests
 * too: the owner asks the home to push its page to a node with room. */
#include <stdlib.h>
#include <string.h>

#include "hk.h"

static void dir_start(struct hk_node *n, uint64_t page, struct hk_dir_req *q);

/* The page hold-down (Mirage's delta): a page just granted to a node for
 * writing stays there for page_hold_ns before another node's request for
 * writing may take it.  A page that two nodes write in turn (a lock word, a
 * counter, the guest's mm lock while threads on both fault) then moves once
 * per hold, after its owner had the time to use it, rather than once per
 * write, with each node stalling on the other's every access.  The cost: the
 * other node's write waits up to the hold on top of the transfer.
 *
 * That cost is plain in "redis" on 2 nodes (testbed trace): a CPU's run
 * queue lock, written by the other node's CPU once every 10 ms or so, is
 * held there while its own CPU waits up to 1 ms for it, over a third of all
 * stall time.  Yet every way found to let such a page go early lost
 * (bench policies, interleaved, 2-3 runs each): ending a node's holds when
 * it sends the owner an interrupt (5.5-5.7x against 4.3-5.0x, half as many
 * bytes again), never holding against the page's home (5.2-5.7x against
 * 4.2x), or holding only a page whose last owner had it for less than four
 * holds (5.9-7.1x against 4.7-5.2x).  Ending a node's holds when all of
 * its vCPUs halt (a RELEASE to every home; the glue sees the halt) moved
 * little: 5.8x against 6.1x over 8 pairs, 3 of them won by the old way, and
 * only a twelfth of the holds ended that way.  Nothing here sees how long
 * the new owner goes on writing a page, and the first write after a long
 * stay is as often the start of a burst (a socket's state) as a single
 * store.
 *
 * A request for a copy waits only on a page whose writer writes in bursts
 * (read_hold_ns, shorter): the guest's seqcount writers (the timekeeper
 * tk_core, jiffies) store several words in a row while readers on every
 * other node spin on the sequence, and each reader's copy write-protected the
 * writer mid-burst, so it took the page back for its next store, once per
 * store and reader.  The home sees that as the owner asking to write again
 * within BURST_WINDOW_NS of a copy leaving; such a page holds copies back for
 * BURST_MEMORY_NS after the last time.  A hand-off (a reader spinning on a
 * word another node wrote once) must see the word at once: it does not look
 * like a burst, and when a race marks its page anyway (pingpong's, 23 times
 * in a run), the next reader that writes clears the mark.
 *
 * A page granted to a read that asks to write (a migratory read,
 * requester.c) holds every other request back for migratory_hold_ns, even a
 * copy's: its reader writes next.  Taken before that write, the page came
 * back for it at once, a write stall, and the content check at the giver
 * (hk_requester_giving) then saw the copy leave unwritten and ended the
 * guess.  pingpong on 2 nodes stalled twice a round at each end (a read and
 * a write), where one stall, the read, carries the hand-off.
 *
 * Evictions and drops (the owner's own) never wait, nor does anything during
 * an evacuation or after a loss.  The entry is HELD meanwhile: a transaction
 * that has not started, so nothing about the page has changed and nothing
 * else may start. */
#define BURST_WINDOW_NS 200000ull
#define BURST_MEMORY_NS 100000000ull

static bool hold(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	const struct hk_dir_req *q = e->qhead;
	if (!q)
		return false;
	/* a read that asks to write (a migratory page, requester.c) waits
	 * only as a copy would: its reader must see a hand-off's word at once */
	bool for_writing = q->mode == HK_MODE_EXCL && !q->migratory;
	const uint64_t *hold_knob = &n->tuning.page_hold_ns;
	if (!for_writing) {
		if (e->t_burst && hk_now_ns() - e->t_burst <= BURST_MEMORY_NS)
			hold_knob = &n->tuning.read_hold_ns;
		else if (e->granted_migratory)
			hold_knob = &n->tuning.migratory_hold_ns;
		else
			return false;
	}
	uint64_t hold_ns = __atomic_load_n(hold_knob, __ATOMIC_RELAXED);
	if (!hold_ns || !e->t_granted || q->drop ||
	    q->evict_target >= 0 || e->owner < 0 || q->node == e->owner || atomic_load(&n->failed) ||
	    __atomic_load_n(&n->evac.node, __ATOMIC_RELAXED) >= 0)
		return false;
	uint64_t until = e->t_granted + hold_ns;
	if (hk_now_ns() >= until)
		return false;
	if (n->nholds == n->holds_cap) {
		uint32_t cap = n->holds_cap ? 2 * n->holds_cap : 64;
		struct hk_page_hold *t = realloc(n->holds, cap * sizeof(*t));
		if (!t)
			return false; /* no room to remember it: no hold */
		n->holds = t;
		n->holds_cap = cap;
	}
	n->holds[n->nholds++] = (struct hk_page_hold){ page, until };
	e->phase = HK_DIR_HELD;
	n->stats.node.page_holds++;
	if (hold_knob == &n->tuning.migratory_hold_ns)
		n->stats.node.migratory_holds++;
	else if (!for_writing)
		n->stats.node.read_holds++;
	return true;
}

static void dir_next(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	struct hk_dir_req *r;
	while (e->phase == HK_DIR_IDLE && e->qhead && !hold(n, page) &&
	       (r = hk_directory_dequeue(e))) {
		dir_start(n, page, r);
		free(r);
	}
}

uint64_t hk_home_hold_deadline(const struct hk_node *n)
{
	uint64_t t = UINT64_MAX;
	for (uint32_t i = 0; i < n->nholds; i++)
		if (n->holds[i].until < t)
			t = n->holds[i].until;
	return t;
}

void hk_home_release_held(struct hk_node *n, uint64_t now)
{
	/* A released page cannot be held again at once (its hold is over),
	 * so the entries this loop appends are for other pages. */
	for (uint32_t i = 0; i < n->nholds;) {
		struct hk_page_hold h = n->holds[i];
		if (h.until > now) {
			i++;
			continue;
		}
		n->holds[i] = n->holds[--n->nholds];
		n->dir.e[h.page].phase = HK_DIR_IDLE;
		dir_next(n, h.page);
	}
}

static void dir_grant_excl(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	int r = e->cur_node;
	e->phase = HK_DIR_WAIT_DONE;
	if (e->cur_have_copy)
		hk_send_page(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_EXCL, 0, NULL);
	else /* aux: an eviction's push, which the receiver did not ask for */
		hk_send_page(n, e->owner, HK_MSG_FWD, page, r, HK_MODE_EXCL, e->cur_push, NULL);
	e->prev_owner = e->owner;
	e->owner = (int8_t)r;
	e->copyset = hk_bit(r);
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
/* 0: written, not taken back; 1: taken back; 2: taken back, and its
 * translations go later (the zero grant waits for them). */
static int take_back_pristine(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	uint8_t *a = hk_memory_page_addr(&n->mem, page);
	if (!page_is_zero(a))
		goto written;
	hk_must(hk_memory_protect(&n->mem, page, true), "write-protect", page);
	if (!page_is_zero(a)) {
		/* Written just now: stays protected, and the FWD to ourselves
		 * that follows (the home is the owner) gives it away. */
		goto written;
	}
	hk_must(hk_memory_drop(&n->mem, page), "drop", page);
	p->state = HK_PS_INVALID;
	return hk_page_left(n, page) ? 2 : 1;
written:
	p->zmap = false; /* a page of our own now: count it */
	n->resident++;
	p->last_use = (uint32_t)++n->clock;
	return 0;
}

/* A node that leaves gives back the pristine zero pages it is home for
 * (evacuate.c): 1 or 2, taken back (the entry says "never touched", so the
 * next home grants a zero page); 0, written since (a page like any other, to
 * be pushed); -1, not now (a transaction is under way). */
int hk_home_take_back(struct hk_node *n, uint64_t page)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	if (hk_home_of(n, page) != n->self || e->phase != HK_DIR_IDLE || e->qhead ||
	    e->owner != n->self || e->copyset != hk_bit(n->self) || !n->pages[page].zmap ||
	    n->pages[page].state != HK_PS_EXCL)
		return -1;
	int taken = take_back_pristine(n, page);
	if (taken) {
		e->owner = -1;
		e->copyset = 0;
	}
	if (taken == 2) {
		/* Until our translations of it are gone, no node may be
		 * granted it: the entry waits for our own DONE, which
		 * hk_page_flush_deferred sends once they are. */
		e->phase = HK_DIR_WAIT_DONE;
		e->cur_node = (int8_t)n->self;
		e->cur_push = false;
		hk_page_ack(n, page, true, n->self, HK_MSG_DONE);
	}
	return taken;
}

/* A sharer may drop its copy (budget): the directory forgets it first and
 * waits for its DONE, so no later transaction counts on that copy.  If it
 * supplied the data (the owner), another sharer does from now on; if it
 * holds the only copy, the answer says to push it instead (an eviction). */
static void home_drop(struct hk_node *n, uint64_t page, int r)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	uint64_t others = e->copyset & ~hk_bit(r);
	if (e->owner < 0 || !(e->copyset & hk_bit(r))) {
		hk_send_page(n, r, HK_MSG_DROP_OK, page, n->self, 0, 0, NULL);
		return;
	}
	if (!others) { /* the only copy: to be pushed, like an exclusive page */
		hk_send_page(n, r, HK_MSG_DROP_OK, page, n->self, 0, 2, NULL);
		return;
	}
	if (e->owner == r)
		e->owner = (int8_t)__builtin_ctzll(others);
	e->copyset = others;
	e->cur_node = (int8_t)r;
	e->cur_mode = HK_MODE_SHARED; /* no grant for writing: no hold-down after it */
	e->cur_push = false;
	e->phase = HK_DIR_WAIT_DONE;
	hk_send_page(n, r, HK_MSG_DROP_OK, page, n->self, 0, 1, NULL);
}

static void dir_start(struct hk_node *n, uint64_t page, struct hk_dir_req *q)
{
	struct hk_dir_entry *e = &n->dir.e[page];
	int r = q->node;
	hk_stats_stage(&n->stats, HK_STAGE_HOME_QUEUE, q->t_arrived);
	if (q->evict_target >= 0) {
		/* Only an exclusive owner may push its page away, and only if
		 * nothing changed since it asked. */
		if (e->owner != r || e->copyset != hk_bit(r) || q->evict_target == r)
			return;
		r = q->evict_target;
		q->mode = HK_MODE_EXCL;
	}
	if (q->drop) {
		home_drop(n, page, r);
		return;
	}
	if (q->mode == HK_MODE_EXCL && r == e->owner && e->t_copied &&
	    hk_now_ns() - e->t_copied < BURST_WINDOW_NS)
		e->t_burst = hk_now_ns(); /* a reader's copy cut its writes short */
	else if (q->mode == HK_MODE_EXCL && r != e->owner && (e->copyset & hk_bit(r)))
		e->t_burst = 0; /* a reader writes next: a hand-off, whose reads must not wait */
	e->cur_node = (int8_t)r;
	e->cur_mode = q->mode;
	e->cur_push = q->evict_target >= 0;
	e->cur_migratory = q->migratory;
	/* The directory, not the request, says whether r holds the page: when
	 * the home is idle it is exact, and r may have gained the page since it
	 * asked (an eviction pushed it there).  Forwarding to r itself would
	 * leave the transaction waiting forever. */
	e->cur_have_copy = (e->copyset & hk_bit(r)) != 0;
	int taken = 0;
	if (e->owner == n->self && r != n->self && e->copyset == hk_bit(n->self) &&
	    n->pages[page].zmap && n->pages[page].state == HK_PS_EXCL &&
	    (taken = take_back_pristine(n, page))) {
		e->owner = -1;
		e->copyset = 0;
	}
	if (e->owner < 0) {
		e->owner = (int8_t)r;
		e->copyset = hk_bit(r);
		e->phase = HK_DIR_WAIT_DONE;
		if (taken == 2) { /* our translations of it first */
			hk_page_ack(n, page, true, r, HK_MSG_GRANT);
			n->pages[page].ack_mode = HK_MODE_EXCL;
			n->pages[page].ack_aux = 1;
			return;
		}
		hk_send_page(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_EXCL, 1, NULL);
		return;
	}
	if (q->mode == HK_MODE_SHARED) {
		e->phase = HK_DIR_WAIT_DONE;
		if (e->cur_have_copy) { /* nothing to do, e.g. a stale request */
			hk_send_page(n, r, HK_MSG_GRANT, page, n->self, HK_MODE_SHARED, 0, NULL);
			return;
		}
		int src = (e->copyset & hk_bit(n->self)) ? n->self : e->owner;
		e->copyset |= hk_bit(r);
		hk_send_page(n, src, HK_MSG_FWD, page, r, HK_MODE_SHARED, 0, NULL);
		return;
	}
	uint64_t inv = e->copyset & ~hk_bit(r);
	if (!e->cur_have_copy)
		inv &= ~hk_bit(e->owner); /* the owner gives the data, then drops */
	if (n->skip_invalidate && (inv & ~hk_bit(n->self))) {
		/* Broken on purpose (HK_DEBUG_SKIP_INVALIDATE): forget the remote
		 * sharers, leaving stale copies; the torture test hk_must notice. */
		n->skipped_invalidations++;
		inv &= hk_bit(n->self);
	}
	e->acks_left = 0;
	for (int k = 0; k < n->count; k++) {
		if (!(inv & hk_bit(k)))
			continue;
		e->acks_left++;
		n->stats.node.inval_sent++;
		hk_send_page(n, k, HK_MSG_INV, page, n->self, 0, 0, NULL);
	}
	if (e->acks_left) {
		e->phase = HK_DIR_INVALIDATING;
		e->t_inv = hk_now_ns();
		return;
	}
	dir_grant_excl(n, page);
}

void hk_home_on_req(struct hk_node *n, int from, const struct hk_msg *m, int evict_target)
{
	if (hk_home_of(n, m->page) != n->self && hk_evac_hold_incoming(n, from, m))
		return; /* its entry is on its way here from a node that leaves */
	if (hk_home_of(n, m->page) != n->self || (evict_target < 0 && (int)m->node != from)) {
		hk_warn("page %lu: request from node %d that is not ours to serve", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	struct hk_dir_req *r = malloc(sizeof(*r));
	if (!r)
		hk_die("out of memory for a request");
	r->node = from;
	r->mode = evict_target >= 0 ? HK_MODE_EXCL : m->mode;
	r->have_copy = m->aux == HK_REQ_HAVE_COPY;
	r->migratory = m->aux == HK_REQ_MIGRATORY;
	r->evict_target = evict_target;
	r->drop = m->type == HK_MSG_DROP_REQ;
	r->t_arrived = hk_now_ns();
	hk_directory_enqueue(&n->dir.e[m->page], r);
	dir_next(n, m->page);
}

void hk_home_on_inv_ack(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_dir_entry *e = &n->dir.e[m->page];
	if (hk_home_of(n, m->page) != n->self || e->phase != HK_DIR_INVALIDATING ||
	    !e->acks_left) {
		hk_warn("page %lu: unexpected inv_ack from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	e->copyset &= ~hk_bit(from);
	if (--e->acks_left == 0) {
		hk_stats_stage(&n->stats, HK_STAGE_INVALIDATE, e->t_inv);
		dir_grant_excl(n, m->page);
	}
}

void hk_home_on_done(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_dir_entry *e = &n->dir.e[m->page];
	bool refused = m->aux && e->cur_push && from == e->prev_owner;
	if (hk_home_of(n, m->page) != n->self || e->phase != HK_DIR_WAIT_DONE ||
	    (e->cur_node != from && !refused)) {
		hk_warn("page %lu: unexpected done from node %d", m->page, from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	if (refused) { /* the push was refused: the giver still owns it */
		e->owner = e->prev_owner;
		e->copyset = hk_bit(e->prev_owner);
	}
	/* the hold-down counts from here: the owner can write it now */
	e->t_granted = !refused && !e->cur_push && e->cur_mode == HK_MODE_EXCL && e->owner == from
			       ? hk_now_ns()
			       : 0;
	e->t_copied = !refused && e->cur_mode == HK_MODE_SHARED && e->owner != from ? hk_now_ns() : 0;
	e->granted_migratory = e->t_granted && e->cur_migratory;
	e->phase = HK_DIR_IDLE;
	e->cur_node = -1;
	hk_coherence_check_invariants(n, m->page);
	dir_next(n, m->page);
}
