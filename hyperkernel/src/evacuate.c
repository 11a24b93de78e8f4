/*
 * evacuate.c - a node leaves the cluster on purpose while the guest runs:
 * TidalGuard's evacuation of a node whose hardware warns, or an operator's
 * planned removal.  The leaver (E) drives it in steps, each finished before
 * the next starts:
 *
 *   START   E tells everyone it leaves and which nodes take over (targets):
 *           from now on no push, vCPU move or policy picks E.  E asks the
 *           embedder to move each vCPU it runs to the target with the most
 *           spare CPUs (on_migrate_request), and waits until none runs here.
 *   PAGES   E gives up every page it holds, through the pages' homes as an
 *           eviction does: an Exclusive page is pushed to a node with room
 *           (EVICT), a Shared copy is dropped (DROP_REQ; the only copy is
 *           pushed), a pristine zero page it is home for is taken back.  At
 *           most HK_EVAC_WINDOW at a time; a page that did not leave is
 *           asked again.  E refuses pushes meanwhile.
 *   FREEZE  E's directory moves next.  Everyone stops sending requests
 *           (REQ, EVICT, DROP_REQ) for pages E is home for and holds them;
 *           replies still flow, so the transactions E runs can finish.  Each
 *           node acknowledges; a request sent before the acknowledgement
 *           reached E before it (one FIFO link per pair).
 *   DRAIN   E finishes every transaction queued at its entries.
 *   MOVED   E sends each entry with an owner to its new home (HOME_ENTRY),
 *           then tells everyone (MOVED, after the entries on each link).
 *           Every node applies the same change to its home map: chunk c of
 *           E's goes to the (c mod |targets|)-th target.  Held requests go
 *           to the new homes.  E says BYE and the embedder exits.
 *
 * A new home may hear a request before the entry reaches it (the requester
 * heard MOVED first, over another link): it holds the request until MOVED
 * from E, which follows the entries.  And a node may hear from a new home
 * (a FWD, an INV) before it heard MOVED: while frozen, the next home speaks
 * for the page too (hk_is_from_home).  Replies to a home (DONE) go to the
 * home that ran the transaction (hk_txn_home), never to a map lookup.
 *
 * A rehome is the directory part alone: a node hands every share-th chunk
 * it is home for to one other node and stays (REHOME, then FREEZE, DRAIN,
 * MOVED as above, no BYE).  A node that joins gets its share of homes so,
 * from each node in turn (join.c).  The giver freezes its own requests for
 * those pages too: it may fault on them, and after MOVED they go to the new
 * home.
 *
 * One evacuation or rehome at a time.  A node that dies meanwhile stops the
 * guest as any loss does (failure.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hk.h"

static void release_held(struct hk_node *n);
static void replay_later(struct hk_node *n);
static void hand_over(struct hk_node *n);

#define VCPU_ASK_AGAIN_NS 1000000000ull /* a vCPU asked to go and still here */
#define PAGE_ASK_AGAIN_NS 1000000000ull /* a page asked to go, unchanged and still here */

void hk_evac_init(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	memset(ev, 0, sizeof(*ev));
	pthread_mutex_init(&ev->lock, NULL);
	ev->node = -1;
	ev->st.node = -1;
	ev->rehome_to = -1;
	ev->held_tail = &ev->held;
	ev->later_tail = &ev->later;
}

void hk_evac_destroy(struct hk_node *n)
{
	struct hk_held_msg *h;
	while ((h = n->evac.held)) {
		n->evac.held = h->next;
		free(h);
	}
	while ((h = n->evac.later)) {
		n->evac.later = h->next;
		free(h);
	}
	free(n->evac.moving);
	n->evac.moving = NULL;
	pthread_mutex_destroy(&n->evac.lock);
}

bool hk_node_leaving(struct hk_node *n, int node)
{
	int leaving = __atomic_load_n(&n->evac.node, __ATOMIC_RELAXED);
	bool stays = __atomic_load_n(&n->evac.rehome, __ATOMIC_RELAXED);
	return (node == leaving && !stays) || (node >= 0 && (__atomic_load_n(&n->evac.gone, __ATOMIC_RELAXED) &
						  hk_bit(node)));
}

/* The i-th node of targets, counting round: every node computes the same. */
static int nth_target(uint64_t targets, uint64_t i)
{
	int count = __builtin_popcountll(targets);
	if (!count)
		return -1;
	i %= (uint64_t)count;
	for (int k = 0; k < HK_MAX_NODES; k++)
		if ((targets & hk_bit(k)) && i-- == 0)
			return k;
	return -1;
}

static uint64_t chunk_of(struct hk_node *n, uint64_t page)
{
	return page / (n->cfg.home_chunk_pages ? n->cfg.home_chunk_pages : 1);
}

static int new_home_of_chunk(struct hk_node *n, uint64_t c)
{
	if (n->evac.rehome)
		return __builtin_ctzll(n->evac.targets);
	return nth_target(n->evac.targets, c);
}

static int new_home(struct hk_node *n, uint64_t page)
{
	return new_home_of_chunk(n, chunk_of(n, page));
}

/* Its entry moves in the evacuation or rehome under way. */
static bool moving(struct hk_node *n, uint64_t page)
{
	uint64_t c = chunk_of(n, page);
	return n->evac.node >= 0 && n->evac.moving && c < n->nchunks && n->evac.moving[c];
}

/* Which of giver's chunks move: all of them (an evacuation, share 0), or
 * every share-th; every node computes the same from the same map. */
static void mark_moving(struct hk_node *n, int giver, uint32_t share)
{
	struct hk_evac *ev = &n->evac;
	if (!ev->moving)
		ev->moving = calloc(n->nchunks ? n->nchunks : 1, 1);
	if (!ev->moving)
		hk_die("out of memory for the chunks that move");
	uint32_t i = 0;
	for (uint64_t c = 0; c < n->nchunks; c++) {
		ev->moving[c] = 0;
		if (n->home_map[c] == giver)
			ev->moving[c] = !share || i++ % share == share - 1;
	}
}

bool hk_is_from_home(struct hk_node *n, uint64_t page, int from)
{
	int h = hk_home_of(n, page);
	if (from == h)
		return true;
	return n->evac.frozen && h == n->evac.node && moving(n, page) && from == new_home(n, page);
}

bool hk_evac_rehoming(struct hk_node *n)
{
	return __atomic_load_n(&n->evac.node, __ATOMIC_RELAXED) >= 0 &&
	       __atomic_load_n(&n->evac.rehome, __ATOMIC_RELAXED);
}

/* ---------------- status ---------------- */

static void publish(struct hk_node *n, enum hk_evac_phase phase)
{
	struct hk_evac *ev = &n->evac;
	pthread_mutex_lock(&ev->lock);
	ev->st.phase = phase;
	ev->st.phase_ns[phase] = hk_now_ns();
	if (ev->st.node == n->self)
		ev->st.pages_left = n->resident;
	if (phase == HK_EVAC_DONE || phase == HK_EVAC_REFUSED)
		ev->st.finished_ns = hk_now_ns();
	struct hk_evac_status copy = ev->st;
	pthread_mutex_unlock(&ev->lock);
	hk_info("evacuation of node %d: %s (vcpus %u, pushed %lu, dropped %lu, zero %lu, homes %lu)",
		copy.node,
		phase == HK_EVAC_VCPUS	 ? "moving vCPUs" :
		phase == HK_EVAC_PAGES	 ? "moving pages" :
		phase == HK_EVAC_FREEZE	 ? "freezing its directory" :
		phase == HK_EVAC_DRAIN	 ? "draining its directory" :
		phase == HK_EVAC_DONE	 ? "done" :
		phase == HK_EVAC_REFUSED ? copy.reason :
					   "?",
		copy.vcpus_moved, copy.pages_pushed, copy.copies_dropped, copy.zero_pages,
		copy.homes_moved);
	/* a rehome is not the embedder's business: it must not exit at DONE */
	if (copy.node == n->self && !ev->rehome && n->cfg.cb.on_evacuation)
		n->cfg.cb.on_evacuation(n->cfg.cb.opaque, &copy);
}

void hk_evac_status_get(struct hk_node *n, struct hk_evac_status *st)
{
	pthread_mutex_lock(&n->evac.lock);
	*st = n->evac.st;
	if (st->node == n->self && st->phase != HK_EVAC_DONE)
		st->pages_left = n->resident;
	pthread_mutex_unlock(&n->evac.lock);
}

/* ---------------- the request ---------------- */

static int refuse(char *why, size_t len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int refuse(char *why, size_t len, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (why && len)
		vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return err;
}

static uint64_t live_others(struct hk_node *n)
{
	uint64_t m = 0;
	for (int k = 0; k < n->count; k++)
		if (k != n->self && n->links[k].up && !n->links[k].bye && !hk_node_leaving(n, k))
			m |= hk_bit(k);
	return m;
}

int hk_evacuate(struct hk_node *n, const char *reason, char *why, size_t whylen)
{
	if (!n || !n->pages)
		return refuse(why, whylen, -EINVAL, "the node has not started");
	if (atomic_load(&n->failed))
		return refuse(why, whylen, -EIO,
			      "node %d was lost: the guest is stopping, there is nothing to evacuate to",
			      n->dead_node);
	struct hk_evac *ev = &n->evac;
	pthread_mutex_lock(&ev->lock);
	int leaving = ev->node;
	bool busy = ev->requested || (ev->st.node == n->self && ev->st.phase > HK_EVAC_NONE &&
				      ev->st.phase < HK_EVAC_DONE);
	pthread_mutex_unlock(&ev->lock);
	if (busy)
		return refuse(why, whylen, -EBUSY, "node %d is already evacuating", n->self);
	if (leaving >= 0)
		return refuse(why, whylen, -EBUSY,
			      "node %d is evacuating or handing homes to a node that joined: one at a "
			      "time, try again when it is done",
			      leaving);
	uint64_t others = live_others(n);
	if (!others)
		return refuse(why, whylen, -EINVAL,
			      "node %d is the last node: no other node is left to run its vCPUs",
			      n->self);
	struct hk_cluster *c = &n->cluster;
	pthread_mutex_lock(&c->lock);
	int fixed = -1;
	for (int v = 0; v < HK_MAX_VCPUS; v++)
		if ((n->cfg.fixed_vcpus >> v & 1) && c->location[v] == n->self)
			fixed = v;
	/* Room for the guest on the others, if every one of them has a cap,
	 * and a free slot each: a cluster whose every slot is taken cannot
	 * move a page (the receiver must have room before the giver drops). */
	uint64_t room = 0, spare = 0;
	bool capped = true;
	for (int k = 0; k < n->count; k++) {
		if (!(others & hk_bit(k)))
			continue;
		capped &= c->peer[k].budget != 0;
		room += c->peer[k].budget;
		spare += HK_PAGE_SIZE;
	}
	pthread_mutex_unlock(&c->lock);
	if (fixed >= 0)
		return refuse(why, whylen, -EINVAL, "vCPU %d is fixed to node %d and cannot leave it",
			      fixed, n->self);
	uint64_t ram = n->mem.npages * HK_PAGE_SIZE;
	if (capped && room < ram + spare)
		return refuse(why, whylen, -ENOSPC,
			      "the other nodes' budgets add up to %lu KiB, too little for the guest's "
			      "%lu KiB and a free page each",
			      room >> 10, ram >> 10);
	pthread_mutex_lock(&ev->lock);
	memset(&ev->st, 0, sizeof(ev->st));
	ev->st.node = n->self;
	ev->st.started_ns = hk_now_ns();
	snprintf(ev->st.reason, sizeof(ev->st.reason), "%s", reason && *reason ? reason : "operator");
	ev->requested = true;
	pthread_mutex_unlock(&ev->lock);
	uint64_t one = 1;
	if (n->evfd >= 0 && write(n->evfd, &one, sizeof(one)) < 0)
		hk_warn("wake the event thread for the evacuation: %s", strerror(errno));
	return 0;
}

/* ---------------- the leaver's steps ---------------- */

static void broadcast_step(struct hk_node *n, enum hk_evac_step step)
{
	struct hk_msg m = { .type = HK_MSG_EVAC, .node = (uint32_t)n->self, .mode = (uint8_t)step,
			    .a = n->evac.targets, .count = n->evac.share, .vcpu = n->evac.round };
	for (int k = 0; k < n->count; k++)
		if (k != n->self && n->links[k].up && !n->links[k].bye)
			hk_node_send(n, k, &m);
}

int hk_rehome(struct hk_node *n, int to, uint32_t share)
{
	struct hk_evac *ev = &n->evac;
	if (!n->pages || to < 0 || to >= n->count || to == n->self || share < 2 || share > 64)
		return -EINVAL;
	pthread_mutex_lock(&ev->lock);
	bool busy = ev->requested || ev->node >= 0;
	if (!busy) {
		ev->rehome_to = to;
		ev->rehome_share = share;
		ev->requested = true;
	}
	pthread_mutex_unlock(&ev->lock);
	if (busy)
		return -EBUSY;
	uint64_t one = 1;
	if (n->evfd >= 0 && write(n->evfd, &one, sizeof(one)) < 0)
		hk_warn("wake the event thread for a rehome: %s", strerror(errno));
	return 0;
}

/* The directory part of an evacuation, for a share of our homes. */
static void start_rehome(struct hk_node *n, int to, uint32_t share)
{
	struct hk_evac *ev = &n->evac;
	if (ev->node >= 0 || !n->links[to].up || n->links[to].bye || hk_node_leaving(n, to)) {
		hk_warn("no rehome to node %d: %s", to,
			ev->node >= 0 ? "an evacuation or rehome is under way" : "it is not here");
		return;
	}
	__atomic_store_n(&ev->rehome, true, __ATOMIC_RELAXED);
	__atomic_store_n(&ev->node, n->self, __ATOMIC_RELAXED);
	ev->targets = hk_bit(to);
	ev->share = share;
	ev->acks = 0;
	ev->round = ++ev->own_round;
	mark_moving(n, n->self, share);
	pthread_mutex_lock(&ev->lock);
	memset(&ev->st, 0, sizeof(ev->st));
	ev->st.node = n->self;
	ev->st.started_ns = hk_now_ns();
	snprintf(ev->st.reason, sizeof(ev->st.reason), "rehome: 1/%u of node %d's homes to node %d",
		 share, n->self, to);
	pthread_mutex_unlock(&ev->lock);
	broadcast_step(n, HK_EVAC_STEP_REHOME);
	if (n->rehome_skip_freeze) {
		/* Broken on purpose: the entries move while requests are on
		 * their way to us, and while we serve some; the simulation
		 * must notice (expect_broken.sh). */
		hand_over(n);
		return;
	}
	/* our own requests for those pages wait as everyone's do */
	ev->frozen = true;
	publish(n, HK_EVAC_FREEZE);
	broadcast_step(n, HK_EVAC_STEP_FREEZE);
}

static void start(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	pthread_mutex_lock(&ev->lock);
	if (ev->rehome_to >= 0 && ev->node >= 0) {
		pthread_mutex_unlock(&ev->lock);
		return; /* another node's turn first: asked again after it */
	}
	int rehome_to = ev->rehome_to;
	uint32_t share = ev->rehome_share;
	ev->rehome_to = -1;
	if (rehome_to >= 0)
		ev->requested = false;
	pthread_mutex_unlock(&ev->lock);
	if (rehome_to >= 0) {
		start_rehome(n, rehome_to, share);
		return;
	}
	uint64_t targets = live_others(n);
	if (!targets || ev->node >= 0) {
		pthread_mutex_lock(&ev->lock);
		ev->requested = false;
		snprintf(ev->st.reason, sizeof(ev->st.reason),
			 ev->node >= 0 ? "refused: node %d is evacuating" : "refused: no node left", ev->node);
		pthread_mutex_unlock(&ev->lock);
		publish(n, HK_EVAC_REFUSED);
		return;
	}
	__atomic_store_n(&ev->rehome, false, __ATOMIC_RELAXED);
	ev->share = 0;
	__atomic_store_n(&ev->node, n->self, __ATOMIC_RELAXED);
	/* Only now: until ev->node says so, the request is what tells
	 * hk_evacuate that this node is already leaving.  Cleared before (as
	 * it was), a second hk_evacuate in between was taken as a new one
	 * (test_evacuate's "again" was accepted, about 1 run in 300). */
	pthread_mutex_lock(&ev->lock);
	ev->requested = false;
	pthread_mutex_unlock(&ev->lock);
	ev->targets = targets;
	ev->acks = 0;
	ev->round = ++ev->own_round;
	ev->nwindow = 0;
	mark_moving(n, n->self, 0);
	memset(ev->asked_ns, 0, sizeof(ev->asked_ns));
	broadcast_step(n, HK_EVAC_STEP_START);
	hk_warn("evacuating (%s): vCPUs, then pages, then the directory go to nodes %#lx",
		ev->st.reason, targets);
	publish(n, HK_EVAC_VCPUS);
}

/* The target with the most CPUs to spare, then the healthiest. */
static int vcpu_target(struct hk_node *n)
{
	int best = -1;
	int64_t best_room = INT64_MIN;
	uint32_t best_health = 0;
	for (int k = 0; k < n->count; k++) {
		if (!(n->evac.targets & hk_bit(k)) || !n->links[k].up)
			continue;
		int64_t room = (int64_t)hk_cluster_capacity(n, k) - (int64_t)hk_cluster_vcpus_homed(n, k);
		uint32_t health = n->links[k].health;
		if (room > best_room || (room == best_room && health > best_health)) {
			best = k;
			best_room = room;
			best_health = health;
		}
	}
	return best;
}

/* true once no vCPU runs here */
static bool move_vcpus(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	struct hk_cluster *c = &n->cluster;
	uint64_t now = hk_now_ns();
	bool none = true;
	for (int v = 0; v < HK_MAX_VCPUS; v++) {
		pthread_mutex_lock(&c->lock);
		int at = c->location[v];
		pthread_mutex_unlock(&c->lock);
		if (at != n->self)
			continue;
		none = false;
		if (ev->asked_ns[v] && now - ev->asked_ns[v] < VCPU_ASK_AGAIN_NS)
			continue;
		int target = vcpu_target(n);
		if (target < 0 || !n->cfg.cb.on_migrate_request)
			continue;
		if (!ev->asked_ns[v]) {
			pthread_mutex_lock(&ev->lock);
			ev->st.vcpus_moved++;
			pthread_mutex_unlock(&ev->lock);
		}
		ev->asked_ns[v] = now;
		/* counted there from now on, and it does not come back here
		 * after an I/O visit */
		hk_vcpu_set_home(n, v, target);
		n->cfg.cb.on_migrate_request(n->cfg.cb.opaque, n->self, (uint32_t)v, target);
	}
	return none;
}

void hk_evac_page_pushed(struct hk_node *n)
{
	if (n->evac.node != n->self || n->evac.rehome)
		return;
	pthread_mutex_lock(&n->evac.lock);
	n->evac.st.pages_pushed++;
	n->evac.st.bytes += HK_PAGE_SIZE;
	pthread_mutex_unlock(&n->evac.lock);
}

void hk_evac_page_taken(struct hk_node *n, int from)
{
	if (from != n->evac.node || from == n->self || n->evac.rehome)
		return;
	pthread_mutex_lock(&n->evac.lock);
	n->evac.st.pages_taken++;
	n->evac.st.bytes += HK_PAGE_SIZE;
	pthread_mutex_unlock(&n->evac.lock);
}

void hk_evac_page_left(struct hk_node *n, uint64_t page)
{
	struct hk_page *p = &n->pages[page];
	if (!p->evac_asked)
		return;
	p->evac_asked = false;
	struct hk_evac *ev = &n->evac;
	for (int i = 0; i < ev->nwindow; i++)
		if (ev->window[i] == page) {
			ev->window[i] = ev->window[--ev->nwindow];
			ev->window_ns[i] = ev->window_ns[ev->nwindow];
			ev->window_state[i] = ev->window_state[ev->nwindow];
			break;
		}
}

/* Pages asked to leave that are gone, or whose request came to nothing: a
 * push refused (Exclusive here again after giving), an eviction the home
 * ignored because another node's read made the page Shared first.  Those
 * are asked again on the next pass; so is one unchanged for a second (a
 * request lost with nothing to show for it would be a bug, not a wait). */
static void window_expire(struct hk_node *n, uint64_t now)
{
	struct hk_evac *ev = &n->evac;
	for (int i = 0; i < ev->nwindow;) {
		struct hk_page *p = &n->pages[ev->window[i]];
		bool busy = p->state == HK_PS_GIVING || p->dropping || p->ack_type;
		bool changed = p->state != ev->window_state[i] || p->refused;
		if (p->state == HK_PS_INVALID || (!busy && changed) ||
		    now - ev->window_ns[i] > PAGE_ASK_AGAIN_NS) {
			p->evac_asked = false;
			p->refused = false;
			ev->window[i] = ev->window[--ev->nwindow];
			ev->window_ns[i] = ev->window_ns[ev->nwindow];
			ev->window_state[i] = ev->window_state[ev->nwindow];
			continue;
		}
		i++;
	}
}

static void window_add(struct hk_node *n, uint64_t page, uint64_t now)
{
	struct hk_evac *ev = &n->evac;
	n->pages[page].evac_asked = true;
	n->pages[page].refused = false;
	ev->window[ev->nwindow] = page;
	ev->window_state[ev->nwindow] = n->pages[page].state;
	ev->window_ns[ev->nwindow++] = now;
}

/* Ask the next pages to leave, up to the window.  true once a whole pass
 * over memory found nothing held here and nothing is on its way out. */
static bool move_pages(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	uint64_t now = hk_now_ns(), scanned = 0, np = n->mem.npages;
	window_expire(n, now);
	while (ev->nwindow < HK_EVAC_WINDOW && scanned < np && scanned < 65536) {
		uint64_t pg = ev->cursor++ % np;
		struct hk_page *p = &n->pages[pg];
		scanned++;
		if (p->state == HK_PS_INVALID && !p->req_pending && !p->ack_type) {
			ev->clean++;
			continue;
		}
		ev->clean = 0;
		if (p->evac_asked || p->state == HK_PS_GIVING || p->state == HK_PS_RECV_EXCL ||
		    p->req_pending || p->dropping || p->ack_type || p->waiters || p->await_room)
			continue; /* under way: looked at again next pass */
		if (p->zmap && p->state == HK_PS_EXCL) {
			int t = hk_home_take_back(n, pg);
			if (t > 0) {
				pthread_mutex_lock(&ev->lock);
				ev->st.zero_pages++;
				pthread_mutex_unlock(&ev->lock);
			}
			continue; /* 0: written, pushed next pass; -1: busy */
		}
		if (p->state == HK_PS_EXCL) {
			int target = hk_budget_pick_room_target(n);
			if (target < 0)
				break; /* every node refused lately: later */
			p->evicting = (uint32_t)n->clock_ticks | 1;
			struct hk_msg m = { .type = HK_MSG_EVICT, .page = pg, .node = (uint32_t)target };
			window_add(n, pg, now);
			hk_node_send(n, hk_home_of(n, pg), &m); /* counted when it goes */
		} else if (p->state == HK_PS_SHARED) {
			p->dropping = true;
			p->evicting = (uint32_t)n->clock_ticks | 1;
			window_add(n, pg, now);
			hk_send_page(n, hk_home_of(n, pg), HK_MSG_DROP_REQ, pg, n->self, 0, 0, NULL);
			pthread_mutex_lock(&ev->lock);
			ev->st.copies_dropped++;
			pthread_mutex_unlock(&ev->lock);
		}
	}
	return ev->clean >= np && ev->nwindow == 0 && n->resident == 0 && n->reserved == 0;
}

static bool homes_idle(struct hk_node *n)
{
	if (n->lq_head)
		return false; /* a request of our own on its way to us */
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		if (hk_home_of(n, pg) != n->self || !moving(n, pg))
			continue;
		struct hk_dir_entry *e = &n->dir.e[pg];
		if (e->phase != HK_DIR_IDLE || e->qhead)
			return false;
	}
	return true;
}

static void apply_moved(struct hk_node *n, int giver)
{
	struct hk_evac *ev = &n->evac;
	for (uint64_t c = 0; c < n->nchunks; c++)
		if (n->home_map[c] == giver && ev->moving[c])
			n->home_map[c] = (int8_t)new_home_of_chunk(n, c);
	if (!ev->rehome) {
		__atomic_fetch_or(&ev->gone, hk_bit(giver), __ATOMIC_RELAXED);
		__atomic_fetch_and(&n->present, ~hk_bit(giver), __ATOMIC_RELEASE);
	}
	else if (ev->targets == hk_bit(n->self))
		__atomic_fetch_or(&ev->homes_given, hk_bit(giver), __ATOMIC_RELAXED);
	ev->frozen = false;
	__atomic_store_n(&ev->node, -1, __ATOMIC_RELAXED);
}

static void hand_over(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	uint64_t moved = 0;
	for (uint64_t pg = 0; pg < n->mem.npages; pg++) {
		if (hk_home_of(n, pg) != n->self || !moving(n, pg))
			continue;
		struct hk_dir_entry *e = &n->dir.e[pg];
		if (e->owner < 0)
			continue; /* never touched, or given back: the new home grants zero */
		struct hk_msg m = { .type = HK_MSG_HOME_ENTRY, .page = pg, .node = (uint32_t)e->owner,
				    .a = e->copyset };
		hk_node_send(n, new_home(n, pg), &m);
		e->owner = -1;
		e->copyset = 0;
		moved++;
	}
	pthread_mutex_lock(&ev->lock);
	ev->st.homes_moved = moved;
	pthread_mutex_unlock(&ev->lock);
	broadcast_step(n, HK_EVAC_STEP_MOVED);
	bool rehome = ev->rehome;
	int to = __builtin_ctzll(ev->targets);
	apply_moved(n, n->self);
	if (rehome) {
		release_held(n); /* our own requests, to the new home */
		publish(n, HK_EVAC_DONE);
		hk_join_rehomed(n, n->self, to);
		replay_later(n);
		return;
	}
	/* leave: the others take our link's end as an orderly exit */
	struct hk_msg bye = { .type = HK_MSG_BYE };
	for (int k = 0; k < n->count; k++)
		if (k != n->self && n->links[k].up)
			hk_node_send(n, k, &bye);
	publish(n, HK_EVAC_DONE);
}

void hk_evac_progress(struct hk_node *n)
{
	struct hk_evac *ev = &n->evac;
	if (ev->busy || atomic_load(&n->failed))
		return;
	ev->busy = true; /* the steps send local messages, which call back here */
	if (ev->requested && ev->node != n->self)
		start(n);
	if (ev->node == n->self) {
		switch (ev->st.phase) {
		case HK_EVAC_VCPUS:
			if (!move_vcpus(n))
				break;
			ev->cursor = 0;
			ev->clean = 0;
			hk_event_thread_share_cpu(n);
			publish(n, HK_EVAC_PAGES);
			/* fall through */
		case HK_EVAC_PAGES:
			/* a vCPU sent here before its sender heard START
			 * arrives late: it goes on too */
			if (!move_vcpus(n) || !move_pages(n))
				break;
			if (n->evac_skip_freeze) {
				/* Broken on purpose: the entries move while
				 * requests are on their way to us; the simulation
				 * must notice (expect_broken.sh). */
				hand_over(n);
				break;
			}
			ev->acks = 0;
			publish(n, HK_EVAC_FREEZE);
			broadcast_step(n, HK_EVAC_STEP_FREEZE);
			/* fall through */
		case HK_EVAC_FREEZE: {
			uint64_t want = 0;
			for (int k = 0; k < n->count; k++)
				if (k != n->self && n->links[k].up && !n->links[k].bye)
					want |= hk_bit(k);
			if ((ev->acks & want) != want)
				break;
			publish(n, HK_EVAC_DRAIN);
		}
			/* fall through */
		case HK_EVAC_DRAIN:
			if (!ev->rehome && (!move_vcpus(n) || !move_pages(n)))
				break;
			if (!homes_idle(n))
				break;
			hand_over(n);
			break;
		default:
			break;
		}
	}
	ev->busy = false;
}

/* ---------------- everyone else ---------------- */

/* Append a copy of m (no payload: requests and steps have none) to a queue. */
static void enqueue(struct hk_held_msg ***tail, int from, const struct hk_msg *m)
{
	struct hk_held_msg *h = malloc(sizeof(*h));
	if (!h)
		hk_die("out of memory holding a %s from node %d", hk_msg_type_name(m->type), from);
	*h = (struct hk_held_msg){ .from = from, .m = *m };
	h->m.data = NULL;
	h->m.data_len = 0;
	**tail = h;
	*tail = &h->next;
}

static void hold(struct hk_node *n, int from, const struct hk_msg *m)
{
	enqueue(&n->evac.held_tail, from, m);
}

static bool home_bound(unsigned type)
{
	return type == HK_MSG_REQ || type == HK_MSG_EVICT || type == HK_MSG_DROP_REQ;
}

bool hk_evac_hold_outgoing(struct hk_node *n, int to, const struct hk_msg *m)
{
	struct hk_evac *ev = &n->evac;
	if (!ev->frozen || to != ev->node || !home_bound(m->type) ||
	    hk_home_of(n, m->page) != ev->node || !moving(n, m->page))
		return false;
	hold(n, -1, m);
	return true;
}

bool hk_evac_hold_incoming(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_evac *ev = &n->evac;
	if (!ev->frozen || !home_bound(m->type) || hk_home_of(n, m->page) != ev->node ||
	    !moving(n, m->page) || new_home(n, m->page) != n->self)
		return false;
	hold(n, from, m);
	return true;
}

static void release_held(struct hk_node *n)
{
	struct hk_held_msg *h = n->evac.held;
	n->evac.held = NULL;
	n->evac.held_tail = &n->evac.held;
	while (h) {
		struct hk_held_msg *next = h->next;
		if (h->from < 0)
			hk_node_send(n, hk_home_of(n, h->m.page), &h->m);
		else
			hk_dispatch(n, h->from, &h->m);
		free(h);
		h = next;
	}
}

static void bad(struct hk_node *n, int from, const struct hk_msg *m, const char *why)
{
	hk_warn("%s from node %d (step %u, node %u): %s", hk_msg_type_name(m->type), from, m->mode,
		m->node, why);
	atomic_fetch_add(&n->stats.malformed, 1);
}

/* Two nodes started at once (neither had heard of the other): an
 * evacuation goes before a rehome, a lower id before a higher one.  Ours
 * gives way while it is still freezing (nobody acknowledged the other's, so
 * no entry moved): everyone unfreezes, and we ask again after. */
static bool give_way(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_evac *ev = &n->evac;
	bool stronger = m->mode == HK_EVAC_STEP_START || from < n->self;
	if (ev->node != n->self || !ev->rehome || ev->st.phase != HK_EVAC_FREEZE || !stronger)
		return false;
	broadcast_step(n, HK_EVAC_STEP_ABORT);
	int to = __builtin_ctzll(ev->targets);
	ev->frozen = false;
	__atomic_store_n(&ev->node, -1, __ATOMIC_RELAXED);
	__atomic_store_n(&ev->rehome, false, __ATOMIC_RELAXED);
	release_held(n);
	pthread_mutex_lock(&ev->lock);
	ev->rehome_to = to;
	ev->rehome_share = ev->share;
	ev->requested = true;
	pthread_mutex_unlock(&ev->lock);
	hk_info("rehome to node %d gives way to node %d's; again after it", to, from);
	return true;
}

/* An aborted attempt's steps that wait here go with it. */
static void drop_later_from(struct hk_node *n, int from)
{
	struct hk_held_msg **pp = &n->evac.later;
	n->evac.later_tail = &n->evac.later;
	while (*pp) {
		struct hk_held_msg *h = *pp;
		if (h->from == from) {
			*pp = h->next;
			free(h);
			continue;
		}
		n->evac.later_tail = &h->next;
		pp = &h->next;
	}
}

static bool later_from(struct hk_node *n, int from)
{
	for (struct hk_held_msg *h = n->evac.later; h; h = h->next)
		if (h->from == from)
			return true;
	return false;
}

/* The one under way here ended: the next node's steps, in their order. */
static void replay_later(struct hk_node *n)
{
	struct hk_held_msg *h = n->evac.later;
	n->evac.later = NULL;
	n->evac.later_tail = &n->evac.later;
	while (h) {
		struct hk_held_msg *next = h->next;
		hk_evac_deliver(n, h->from, &h->m);
		free(h);
		h = next;
	}
}

void hk_evac_deliver(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_evac *ev = &n->evac;
	switch (m->type) {
	case HK_MSG_EVAC:
		if ((int)m->node != from || from == n->self) {
			bad(n, from, m, "only the leaving node speaks for its evacuation");
			return;
		}
		if (m->mode == HK_EVAC_STEP_ABORT) {
			if (later_from(n, from)) {
				drop_later_from(n, from); /* it never began here */
				return;
			}
			if (ev->node != from || m->vcpu != ev->round) {
				bad(n, from, m, "no such rehome to abort");
				return;
			}
			ev->frozen = false;
			__atomic_store_n(&ev->node, -1, __ATOMIC_RELAXED);
			__atomic_store_n(&ev->rehome, false, __ATOMIC_RELAXED);
			release_held(n);
			publish(n, HK_EVAC_REFUSED);
			replay_later(n);
			return;
		}
		if ((m->mode == HK_EVAC_STEP_START || m->mode == HK_EVAC_STEP_REHOME) &&
		    give_way(n, from, m)) {
			/* ours is off: theirs goes now, then what waited */
			hk_evac_deliver(n, from, m);
			replay_later(n);
			return;
		}
		/* Its turn comes after the one under way here: the node that
		 * started it heard that one end (MOVED) before we did, or both
		 * started at once and this one gives way. */
		if (later_from(n, from) ||
		    ((m->mode == HK_EVAC_STEP_START || m->mode == HK_EVAC_STEP_REHOME) &&
		     ev->node >= 0 && ev->node != from)) {
			enqueue(&ev->later_tail, from, m);
			return;
		}
		if (m->mode == HK_EVAC_STEP_START || m->mode == HK_EVAC_STEP_REHOME) {
			if (ev->node >= 0 && ev->node != from) {
				bad(n, from, m, "another evacuation is under way");
				return;
			}
			bool rehome = m->mode == HK_EVAC_STEP_REHOME;
			__atomic_store_n(&ev->rehome, rehome, __ATOMIC_RELAXED);
			ev->share = rehome ? m->count : 0;
			ev->round = m->vcpu;
			ev->targets = m->a;
			mark_moving(n, from, ev->share);
			__atomic_store_n(&ev->node, from, __ATOMIC_RELAXED);
			pthread_mutex_lock(&ev->lock);
			memset(&ev->st, 0, sizeof(ev->st));
			ev->st.node = from;
			ev->st.started_ns = hk_now_ns();
			if (rehome)
				snprintf(ev->st.reason, sizeof(ev->st.reason),
					 "rehome: 1/%u of node %d's homes to node %d", m->count, from,
					 __builtin_ctzll(m->a));
			else
				snprintf(ev->st.reason, sizeof(ev->st.reason), "node %d leaves", from);
			pthread_mutex_unlock(&ev->lock);
			publish(n, rehome ? HK_EVAC_FREEZE : HK_EVAC_VCPUS);
			return;
		}
		if (ev->node != from || m->a != ev->targets || m->vcpu != ev->round) {
			bad(n, from, m, "no such evacuation");
			return;
		}
		if (m->mode == HK_EVAC_STEP_FREEZE) {
			ev->frozen = true;
			struct hk_msg a = { .type = HK_MSG_EVAC_ACK, .node = m->node,
					    .mode = HK_EVAC_STEP_FREEZE, .vcpu = m->vcpu };
			hk_node_send(n, from, &a);
			publish(n, HK_EVAC_FREEZE);
			return;
		}
		bool rehome = ev->rehome;
		int to = __builtin_ctzll(ev->targets);
		apply_moved(n, from);
		release_held(n);
		publish(n, HK_EVAC_DONE);
		if (rehome)
			hk_join_rehomed(n, from, to);
		replay_later(n);
		return;
	case HK_MSG_EVAC_ACK:
		if ((int)m->node == n->self && m->vcpu <= ev->own_round &&
		    (ev->node != n->self || m->vcpu != ev->round))
			return; /* for an attempt of ours that gave way: stale */
		if (ev->node != n->self || (int)m->node != n->self || m->mode != HK_EVAC_STEP_FREEZE ||
		    ev->st.phase != HK_EVAC_FREEZE) {
			bad(n, from, m, "an acknowledgement nobody asked for");
			return;
		}
		ev->acks |= hk_bit(from);
		return;
	case HK_MSG_HOME_ENTRY:
		if (from != ev->node || !ev->frozen || m->page >= n->mem.npages ||
		    (int)m->node >= n->count || !moving(n, m->page) || new_home(n, m->page) != n->self ||
		    n->dir.e[m->page].phase != HK_DIR_IDLE) {
			bad(n, from, m, "a directory entry this node does not take over");
			return;
		}
		n->dir.e[m->page].owner = (int8_t)m->node;
		n->dir.e[m->page].copyset = m->a;
		pthread_mutex_lock(&ev->lock);
		ev->st.homes_moved++;
		pthread_mutex_unlock(&ev->lock);
		return;
	default:
		return;
	}
}
