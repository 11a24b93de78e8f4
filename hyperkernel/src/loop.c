/* loop.c - the node's event thread and the dispatch of messages to the
 * roles of the protocol (requester.c, holder.c, home.c, failure.c).
 *
 * One epoll loop per node serves userfaultfd faults and peer messages, so a
 * reply is installed by the thread that read it, without a hand-off.  Only
 * this thread touches page states and the directory: no locks on the hot
 * path.  Messages a node sends to itself go through a local queue. */
#include <linux/userfaultfd.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "hk.h"

enum { TAG_UFFD = 1000, TAG_EVENT, TAG_TIMER, TAG_HOLD };

void hk_dispatch(struct hk_node *n, int from, const struct hk_msg *m)
{
	if (m->type >= HK_MSG_REQ && m->type <= HK_MSG_PEER_LOST &&
	    (m->page >= n->mem.npages || (int)m->node >= n->count)) {
		hk_warn("message %s from node %d: page %lu / node %u out of range",
			hk_msg_type_name(m->type), from, m->page, m->node);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	/* After a loss the guest stops: no page moves any more (the failure
	 * path dropped and poisoned what threads wait for, so an install or
	 * unprotect could meet a page that is no longer what its state says). */
	if (hk_msg_is_protocol(m->type) && atomic_load(&n->failed))
		return;
	/* staged read copies go in before anything else is handled
	 * (arrivals.c); a DATA frame may join them */
	if (m->type != HK_MSG_DATA)
		hk_arrivals_flush(n);
	switch (m->type) {
	case HK_MSG_REQ: hk_home_on_req(n, from, m, -1); break;
	case HK_MSG_EVICT:
		if ((int)m->node == from) {
			atomic_fetch_add(&n->stats.malformed, 1);
			break;
		}
		hk_home_on_req(n, from, m, (int)m->node);
		break;
	case HK_MSG_FWD: hk_holder_on_fwd(n, from, m); break;
	case HK_MSG_DATA: hk_requester_on_data(n, from, m); break;
	case HK_MSG_GRANT: hk_requester_on_grant(n, from, m); break;
	case HK_MSG_INV: hk_holder_on_inv(n, from, m); break;
	case HK_MSG_INV_ACK: hk_home_on_inv_ack(n, from, m); break;
	case HK_MSG_XFER_ACK: hk_holder_on_xfer_ack(n, from, m); break;
	case HK_MSG_XFER_DROPPED: hk_requester_on_xfer_dropped(n, from, m); break;
	case HK_MSG_DONE: hk_home_on_done(n, from, m); break;
	case HK_MSG_XFER_REFUSED: hk_holder_on_xfer_refused(n, from, m); break;
	case HK_MSG_DROP_REQ: hk_home_on_req(n, from, m, -1); break;
	case HK_MSG_DROP_OK: hk_requester_on_drop_ok(n, from, m); break;
	case HK_MSG_HEARTBEAT:
		n->links[from].resident = m->a;
		n->links[from].budget = m->b;
		n->links[from].busy_pct = (uint32_t)m->arg[0];
		n->links[from].cpus = (uint32_t)m->arg[1];
		n->links[from].health = (uint32_t)m->arg[2];
		__atomic_store_n(&n->links[from].busy_vcpus, m->page, __ATOMIC_RELAXED);
		break;
	case HK_MSG_BYE:
		n->links[from].bye = true;
		break;
	case HK_MSG_VCPU: hk_vcpu_deliver(n, from, m); break;
	case HK_MSG_CONFIG:
	case HK_MSG_VCPU_AT:
	case HK_MSG_IRQ:
	case HK_MSG_APIC_ADDR:
	case HK_MSG_EOI:
	case HK_MSG_SHUTDOWN:
	case HK_MSG_STOPPED:
	case HK_MSG_MIGRATE:
		hk_cluster_deliver(n, from, m);
		break;
	case HK_MSG_HOME_MAP: hk_join_on_home_map(n, from, m); break;
	case HK_MSG_EVAC:
	case HK_MSG_EVAC_ACK:
	case HK_MSG_HOME_ENTRY:
		hk_evac_deliver(n, from, m);
		break;
	case HK_MSG_PEER_LOST:
		if ((int)m->node != n->self && (int)m->node < n->count)
			hk_failure_peer_reported(n, (int)m->node, from);
		break;
	default:
		hk_warn("unexpected %s from node %d after the handshake", hk_msg_type_name(m->type),
			from);
		atomic_fetch_add(&n->stats.malformed, 1);
		break;
	}
}

static void drain_queue(struct hk_node *n)
{
	struct hk_local_msg *lm;
	while ((lm = n->lq_head)) {
		n->lq_head = lm->next;
		if (!n->lq_head)
			n->lq_tail = NULL;
		hk_dispatch(n, n->self, &lm->m);
		free(lm);
	}
}

void hk_drain_local(struct hk_node *n)
{
	drain_queue(n);
	if (n->evac.requested || n->evac.node == n->self || n->room_freed)
		hk_arrivals_flush(n);
	if (n->evac.requested || n->evac.node == n->self) {
		hk_evac_progress(n); /* may queue local messages */
		drain_queue(n);
	}
	/* Pages left or slots were released: requests waiting for room go on
	 * (which may queue more local messages). */
	while (n->room_freed) {
		n->room_freed = false;
		hk_budget_retry_waiting(n);
		drain_queue(n);
	}
}

/* One decoded frame from a peer: what the event loop and the simulation do
 * with it. */
void hk_handle_message(struct hk_node *n, int from, const struct hk_msg *m, size_t len)
{
	hk_stats_msg(&n->stats, false, m->type, len);
	if (hk_msg_is_protocol(m->type))
		n->last_peer_ns = hk_now_ns();
	hk_dispatch(n, from, m);
	hk_drain_local(n);
	/* one frame at a time (the simulation's single deliveries): nothing
	 * more comes to join a staged run */
	if (!n->arrivals.batching)
		hk_arrivals_flush(n);
}

/* One userfault: record the stall, act on it, and evict if the fault took
 * us over budget. */
void hk_handle_fault(struct hk_node *n, uint64_t page, bool write, pid_t tid)
{
	hk_arrivals_flush(n);
	hk_requester_fault(n, page, write, tid);
	hk_drain_local(n);
	hk_budget_pressure(n);
	hk_drain_local(n);
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
				hk_failure_peer_lost(n, peer);
			}
			return;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				hk_failure_peer_lost(n, peer);
			return;
		}
		l->rlen += (size_t)r;
		l->last_rx_ns = hk_now_ns();
		size_t off = 0;
		/* the read copies among these frames go in as runs (arrivals.c),
		 * at the latest when the frames are done */
		n->arrivals.batching = true;
		for (;;) {
			struct hk_msg m;
			int c = hk_msg_decode(l->rbuf + off, l->rlen - off, &m);
			if (c == 0)
				break;
			if (c < 0) {
				long fl = hk_msg_frame_len(l->rbuf + off, l->rlen - off);
				atomic_fetch_add(&n->stats.malformed, 1);
				if (fl > 0) {
					/* A sound header around a bad frame (another
					 * version, an unknown type, a wrong length or a
					 * field out of range): refuse that frame only. */
					if ((size_t)fl > l->rlen - off)
						break; /* skip it once it is all here */
					if (atomic_load(&n->stats.malformed) <= 20)
						hk_warn("refused a malformed frame from node %d (%s)", peer,
							strerror(-c));
					off += (size_t)fl;
					continue;
				}
				/* No frame boundary to resynchronise on: drop the
				 * link, which makes the peer lost. */
				hk_warn("malformed stream from node %d (%s): dropping the link", peer,
					strerror(-c));
				n->arrivals.batching = false;
				hk_arrivals_flush(n); /* the frames before were sound */
				hk_failure_peer_lost(n, peer);
				return;
			}
			hk_handle_message(n, peer, &m, (size_t)c);
			off += (size_t)c;
			if (!l->up)
				break;
		}
		n->arrivals.batching = false;
		hk_arrivals_flush(n);
		if (!l->up)
			return;
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
			uint64_t addr = msgs[i].arg.pagefault.address;
			int64_t page = hk_memory_addr_page(&n->mem, addr);
			if (page < 0)
				continue;
			if (n->mem.features & UFFD_FEATURE_EXACT_ADDRESS)
				hk_stats_fault_at(&n->stats, (uint64_t)page, addr & (HK_PAGE_SIZE - 1));
			bool write = msgs[i].arg.pagefault.flags &
				     (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
			hk_handle_fault(n, (uint64_t)page, write,
					(pid_t)msgs[i].arg.pagefault.feat.ptid);
		}
		if ((size_t)r < sizeof(msgs))
			return; /* drained; epoll reports newer faults */
	}
}

void hk_tick(struct hk_node *n)
{
	uint64_t now = hk_now_ns();
	hk_learned_tick(n);
	hk_load_sample(n);
	hk_health_tick(n);
	for (int k = 0; k < n->count; k++) {
		struct hk_link *l = &n->links[k];
		if (k == n->self || !l->up)
			continue;
		if (!l->bye && now - l->last_rx_ns > (uint64_t)n->cfg.peer_timeout_ms * 1000000ull) {
			hk_warn("node %d silent for %u ms", k, n->cfg.peer_timeout_ms);
			hk_failure_peer_lost(n, k);
			continue;
		}
		/* used = resident + slots held or wanted: a push target needs room */
		struct hk_msg m = { .type = HK_MSG_HEARTBEAT,
				    .page = __atomic_load_n(&n->busy_vcpus, __ATOMIC_RELAXED),
				    .a = n->resident + n->reserved + n->nroom_wait,
				    .b = n->budget_pages,
				    .arg = { (int32_t)n->busy_pct, (int32_t)n->host_cpus,
					     (int32_t)hk_health_score(n) } };
		hk_node_send(n, k, &m);
	}
	n->clock_ticks++;
	hk_requester_check_moves(n);
	hk_cluster_capacity_tick(n);
	hk_budget_tick(n);
	hk_drain_local(n);
}

static void on_timer(struct hk_node *n)
{
	uint64_t ticks;
	if (read(n->timerfd, &ticks, sizeof(ticks)) < 0)
		return;
	hk_tick(n);
}

/* Every stall waits for this thread, and on a node whose CPUs are busy with
 * vCPU threads spinning in guest code, a thread of the normal class waits for
 * its turn for milliseconds (the kernel's schedstat showed the event threads
 * runnable but off-CPU for 46 s of a 20 s pingpong run).  SCHED_FIFO lets it
 * preempt a vCPU thread the moment a fault or a message arrives.  It then
 * busy-polls only for the reply to a request of its own, whose vCPU thread
 * is blocked in the fault anyway: after serving a peer or a fault, a
 * real-time thread that spun would hold its CPU against the very threads it
 * serves (sched_yield yields only to its own class; measured, a spin after
 * serving cost the guest's pingpong 2x and the library benchmark's remote
 * read 2x).  Refused (no CAP_SYS_NICE, a container's limits): it runs as
 * before, said once.
 *
 * But SCHED_FIFO has its own cost: every message preempts the vCPU thread
 * that shares the CPU, at once, even when that vCPU is doing useful work and
 * the message could wait for its turn.  With 2 vCPUs on 2 nodes, "lmat" ran
 * 172-221 k ops/s under SCHED_FIFO and 371-414 k in the normal class, while
 * "pingpong" ran 5.4-6.6 k and 115-182.  HK_EVENT_SCHED=auto takes each
 * where it wins: the normal class, and SCHED_FIFO from the moment a vCPU of
 * this node spins in guest code (a PAUSE loop: it waits for something,
 * likely a page, and holds its CPU while it does) until RT_LINGER_NS after
 * its last spin (hk_vcpu_spinning).  It is not the QEMU default: "private"
 * (4 threads on 2 vCPUs) ran 1.5-1.8x slower under it, its busy vCPUs delaying
 * the event thread's answers to the other node's stalls on kernel pages. */
#define RT_LINGER_NS 50000000ull

static int set_class(pthread_t t, bool rt)
{
	struct sched_param sp = { .sched_priority = rt ? 1 : 0 };
	return pthread_setschedparam(t, rt ? SCHED_FIFO : SCHED_OTHER, &sp);
}

static void run_realtime(struct hk_node *n)
{
	if (n->tuning.event_sched == HK_SCHED_AUTO) {
		atomic_store(&n->rt_auto, true);
		return;
	}
	if (n->tuning.event_sched != HK_SCHED_FIFO)
		return;
	int r = set_class(pthread_self(), true);
	if (r) {
		hk_warn("event thread: SCHED_FIFO refused (%s); it stays in the normal class, "
			"and stalls wait for the scheduler (HK_EVENT_SCHED=normal silences this)",
			strerror(r));
		return;
	}
	atomic_store(&n->event_rt, true);
}

void hk_vcpu_spinning(struct hk_node *n)
{
	if (!n || !atomic_load_explicit(&n->rt_auto, memory_order_relaxed))
		return;
	atomic_store_explicit(&n->rt_until_ns, hk_now_ns() + RT_LINGER_NS, memory_order_relaxed);
	if (atomic_load_explicit(&n->event_rt, memory_order_relaxed) ||
	    atomic_exchange(&n->rt_switching, true))
		return;
	int r = set_class(n->thread, true);
	if (r) {
		atomic_store(&n->rt_auto, false);
		hk_warn("event thread: SCHED_FIFO refused (%s); it stays in the normal class "
			"(HK_EVENT_SCHED=normal silences this)", strerror(r));
	} else {
		atomic_store(&n->event_rt, true);
		__atomic_fetch_add(&n->stats.node.event_rt_switches, 1, __ATOMIC_RELAXED);
	}
	atomic_store(&n->rt_switching, false);
}

/* The event thread, under HK_EVENT_SCHED=auto: back to the normal class
 * once no vCPU here has spun for RT_LINGER_NS. */
static void auto_class(struct hk_node *n, uint64_t now)
{
	if (!atomic_load_explicit(&n->event_rt, memory_order_relaxed) ||
	    !atomic_load_explicit(&n->rt_auto, memory_order_relaxed) ||
	    now < atomic_load_explicit(&n->rt_until_ns, memory_order_relaxed) ||
	    atomic_exchange(&n->rt_switching, true))
		return;
	if (set_class(pthread_self(), false) == 0)
		atomic_store(&n->event_rt, false);
	atomic_store(&n->rt_switching, false);
}

/* A node that leaves pushes all its pages in one long burst: under
 * SCHED_FIFO that starves the main thread that shares its CPU, and the
 * embedder's monitor went unanswered for the whole pages phase (0.94 s in CI,
 * with the phase's own progress events queued behind it).  Its vCPUs have
 * gone, so no stall waits for this thread's latency any more. */
void hk_event_thread_share_cpu(struct hk_node *n)
{
	atomic_store(&n->rt_auto, false);
	while (atomic_exchange(&n->rt_switching, true)) /* a spinning vCPU's switch */
		sched_yield();
	if (atomic_load(&n->event_rt)) {
		int r = set_class(pthread_self(), false);
		if (r)
			hk_warn("event thread: back to the normal class refused (%s)", strerror(r));
		else
			atomic_store(&n->event_rt, false);
	}
	atomic_store(&n->rt_switching, false);
}

/* The page hold-down (home.c) ends at times finer than epoll's
 * milliseconds: a timerfd, armed at the earliest one. */
static void arm_hold_timer(struct hk_node *n)
{
	uint64_t t = n->nholds ? hk_home_hold_deadline(n) : 0;
	if (t == n->hold_armed_ns)
		return;
	n->hold_armed_ns = t;
	struct itimerspec its = { .it_value = { (time_t)(t / 1000000000ull),
						 (long)(t % 1000000000ull) } };
	timerfd_settime(n->holdfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_hold_timer(struct hk_node *n)
{
	uint64_t ticks;
	if (read(n->holdfd, &ticks, sizeof(ticks)) < 0)
		return;
	n->hold_armed_ns = 0;
	hk_home_release_held(n, hk_now_ns());
}

void *hk_coherence_thread(void *arg)
{
	struct hk_node *n = arg;
	struct epoll_event evs[16];
	n->stats.event_tid = (pid_t)syscall(SYS_gettid);
	run_realtime(n);
	while (!atomic_load(&n->stop)) {
		int timeout = -1;
		uint64_t now = hk_now_ns();
		/* an overfull node whose vCPUs will have settled by then */
		if (n->capacity_recheck_ns && now >= n->capacity_recheck_ns)
			hk_cluster_capacity_recheck(n);
		if (n->capacity_recheck_ns)
			timeout = n->capacity_recheck_ns > now
					  ? (int)((n->capacity_recheck_ns - now) / 1000000) + 1
					  : 0;
		arm_hold_timer(n);
		auto_class(n, now);
		uint64_t spin_until = n->cfg.spin_us ? now + n->cfg.spin_us * 1000ull : 0;
		/* no spin after serving while real-time (see run_realtime),
		 * unless asked for */
		bool serve_spin = !atomic_load_explicit(&n->event_rt, memory_order_relaxed) ||
				  n->tuning.serve_spin_set;
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
			if (n->outstanding > n->ahead_outstanding) {
				uint64_t b = 2 * n->ewma_reply_ns;
				if (b > n->spin_cap_ns)
					b = n->spin_cap_ns;
				if (now + b > spin_until)
					spin_until = now + b;
			}
			if (serve_spin && n->last_serve_ns + n->fault_spin_ns > spin_until)
				spin_until = n->last_serve_ns + n->fault_spin_ns;
			if (serve_spin && n->last_peer_ns + n->peer_spin_ns > spin_until)
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
		/* what this batch sends goes out together, after it
		 * (hk_link_cork; nothing below waits for a reply) */
		bool cork = n->tuning.cork && k > 0;
		for (int j = 0; cork && j < n->count; j++)
			if (j != n->self && n->links[j].up)
				hk_link_cork(&n->links[j]);
		for (int i = 0; i < k; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == TAG_UFFD)
				read_faults(n);
			else if (tag == TAG_TIMER)
				on_timer(n);
			else if (tag == TAG_HOLD)
				on_hold_timer(n);
			else if (tag == TAG_EVENT) {
				uint64_t v;
				if (read(n->evfd, &v, sizeof(v)) < 0)
					continue;
				hk_page_flush_deferred(n);
				hk_join_adopt(n);
			} else if (tag < HK_MAX_NODES && n->links[tag].up)
				read_link(n, (int)tag);
			hk_drain_local(n);
		}
		for (int j = 0; cork && j < n->count; j++)
			if (j != n->self && n->links[j].sender_started)
				hk_link_uncork(&n->links[j]);
	}
	/* this thread is about to end: no class switch may name it now */
	atomic_store(&n->rt_auto, false);
	while (atomic_exchange(&n->rt_switching, true))
		sched_yield();
	return NULL;
}

static void premap_one(struct hk_node *n, uint64_t page)
{
	n->pages[page].state = HK_PS_EXCL;
	n->pages[page].zmap = true;
	n->dir.e[page].owner = (int8_t)n->self;
	n->dir.e[page].copyset = hk_bit(n->self);
}

/* Untouched pages belong to their home: map them all there as the zero page
 * up front, so a first touch at the home never waits for the event thread
 * (a read costs nothing, a write is an in-kernel copy-on-write).  A remote
 * first touch takes them back (take_back_pristine).  HK_NO_PREMAP=1 keeps
 * the lazy zero grant everywhere. */
static void premap_home_pages(struct hk_node *n)
{
	const char *e = getenv("HK_NO_PREMAP");
	if ((e && atoi(e) > 0) || n->budget_pages)
		return; /* under a budget every mapped page is counted when mapped */
	for (int i = 0; i < n->mem.nregions; i++) {
		uint64_t first = n->mem.regions[i].first_page;
		uint64_t end = first + n->mem.regions[i].len / HK_PAGE_SIZE;
		for (uint64_t pg = first; pg < end;) {
			if (hk_home_of(n, pg) != n->self) {
				pg++;
				continue;
			}
			uint64_t run = 1;
			while (pg + run < end && hk_home_of(n, pg + run) == n->self)
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
		n->pages[i].hint = n->pages[i].txn_home = -1;
	int r = hk_directory_init(&n->dir, np);
	if (r)
		return r;
	uint32_t chunk = n->cfg.home_chunk_pages ? n->cfg.home_chunk_pages : 1;
	n->nchunks = (np + chunk - 1) / chunk;
	n->home_map = malloc(n->nchunks ? n->nchunks : 1);
	if (!n->home_map)
		return -ENOMEM;
	for (uint64_t c = 0; c < n->nchunks; c++) {
		uint64_t first = c * chunk;
		n->home_map[c] = (int8_t)hk_directory_home(first, chunk, n->initial);
		for (int i = 0; i < n->nhome_ranges; i++)
			if (first - n->home_ranges[i].first_page < n->home_ranges[i].npages)
				n->home_map[c] = (int8_t)n->home_ranges[i].home;
	}
	premap_home_pages(n);
	/* the busy-poll's knobs (tuning.c); see hk_coherence_thread */
	n->spin_cap_ns = n->tuning.spin_cap_ns;
	n->fault_spin_ns = n->tuning.fault_spin_ns;
	n->peer_spin_ns = n->tuning.peer_spin_ns;
	n->ewma_reply_ns = 50000;
	if (posix_memalign((void **)&n->scratch, HK_PAGE_SIZE, HK_PAGE_SIZE))
		return -ENOMEM;
	if (hk_arrivals_init(n))
		return -ENOMEM;
	n->epfd = epoll_create1(EPOLL_CLOEXEC);
	n->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	n->holdfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (n->epfd < 0 || n->evfd < 0 || n->timerfd < 0 || n->holdfd < 0)
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
	ev.data.u64 = TAG_HOLD;
	epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->holdfd, &ev);
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
	while ((lm = n->held_data)) {
		n->held_data = lm->next;
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
	free(n->home_map);
	n->home_map = NULL;
	free(n->room_wait);
	n->room_wait = NULL;
	hk_directory_destroy(&n->dir);
	hk_stats_destroy(&n->stats);
	free(n->scratch);
	n->scratch = NULL;
	hk_arrivals_destroy(n);
	if (n->epfd >= 0)
		close(n->epfd);
	if (n->evfd >= 0)
		close(n->evfd);
	if (n->timerfd >= 0)
		close(n->timerfd);
	if (n->holdfd >= 0)
		close(n->holdfd);
	n->epfd = n->evfd = n->timerfd = n->holdfd = -1;
	free(n->holds);
	n->holds = NULL;
	n->nholds = n->holds_cap = 0;
}
