/*
 * join.c - a node joins the cluster while the guest runs.
 *
 * A cluster has node_count slots; nodes 0..initial_nodes-1 start it, and
 * the slots above are for nodes that join later (as -smp N,maxcpus=M
 * reserves CPUs).  The mesh's rule holds: a node dials lower ids and
 * accepts higher ones, so a joiner takes a slot above every node that is
 * or was in the cluster, and dials all of them.
 *
 *   joiner J                                     every node P in the cluster
 *   dial, handshake (HMAC over the secret)  --->  acceptor thread
 *                                           <---  MEMBERS(present, gone, initial)
 *                                                 or REFUSE(slot | busy)
 *   node 0 first: its MEMBERS names the others, which J dials next
 *   CONFIG(definition, RAM, vCPUs, budget, CPUs) ---> event thread: compared;
 *                                                 a different machine: BYE
 *                                           <---  VCPU_AT for each vCPU that
 *                                                 moved, HOME_MAP (node 0 only),
 *                                                 then P's own CONFIG
 *
 * J's hk_cluster_agree() returns once every present node's CONFIG came, so
 * J then knows where every vCPU runs and who is home for every page; it
 * compares the definitions itself too.  J starts as a node holding no page,
 * running no vCPU and home for nothing: vCPUs come to it by migration,
 * pages by faults and pushes.  P's embedder hears on_peer_joined and sends
 * what only it keeps (APIC addressing).
 *
 * Then J takes its share of homes: each node in turn, lowest id first,
 * hands every (members)-th chunk it is home for to J (hk_rehome: the
 * directory steps of an evacuation), so J ends home for about 1/members of
 * the pages, as if it had been there from the start.
 *
 * One change of membership at a time: P refuses a joiner (BUSY) while it
 * evacuates or knows of an evacuation or rehome, while another joins or
 * still takes its homes, or before the cluster agreed.  A joiner that dies before its CONFIG arrived is dropped
 * quietly (hk_join_abandoned): it never held anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hk.h"

bool hk_node_present(struct hk_node *n, int node)
{
	return node == n->self ||
	       (node >= 0 && node < n->count &&
		(__atomic_load_n(&n->present, __ATOMIC_ACQUIRE) & hk_bit(node)));
}

/* present, and its machine definition compared: vCPUs may go there */
bool hk_node_member(struct hk_node *n, int node)
{
	return hk_node_present(n, node) &&
	       !(__atomic_load_n(&n->joining, __ATOMIC_ACQUIRE) & hk_bit(node));
}

static void give_if_my_turn(struct hk_node *n);

static uint64_t below(int node)
{
	return node >= 64 ? ~0ull : (1ull << node) - 1;
}

/* ---------------- the joiner ---------------- */

/* Dial node k, authenticate, read its MEMBERS (or refusal). */
static int dial(struct hk_node *n, const struct hk_handshake_cfg *hc, int k, struct hk_msg *mem)
{
	char why[320];
	int fd = hk_addr_connect(n->peers[k], n->cfg.connect_timeout_ms);
	if (fd < 0) {
		hk_warn("join: cannot reach node %d at %s: %s", k, n->peers[k], strerror(-fd));
		return fd;
	}
	int r = hk_handshake_connect(fd, hc, k, why, sizeof(why));
	if (r < 0) {
		hk_warn("join: %s", why);
		close(fd);
		return r;
	}
	uint8_t buf[HK_MSG_HDR_LEN + 64];
	r = hk_fd_read_msg(fd, buf, sizeof(buf), mem, hc->timeout_ms);
	if (r >= 0 && mem->type == HK_MSG_REFUSE) {
		hk_warn("join: node %d refused node %d: %s", k, n->self, hk_refuse_text(mem->reason));
		r = mem->reason == HK_REFUSE_BUSY ? -EBUSY : -ECONNREFUSED;
	} else if (r >= 0 && mem->type != HK_MSG_MEMBERS) {
		hk_warn("join: node %d sent %s instead of members", k, hk_msg_type_name(mem->type));
		r = -EBADMSG;
	} else if (r < 0) {
		hk_warn("join: node %d: %s after the handshake", k, strerror(-r));
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int hk_join_connect(struct hk_node *n, const struct hk_handshake_cfg *hc,
		    const struct hk_shaper *shape)
{
	uint64_t present = hk_bit(0), gone = 0;
	for (int k = 0; k < n->self; k++) {
		if (!(present & hk_bit(k)))
			continue;
		struct hk_msg mem;
		int fd = dial(n, hc, k, &mem);
		if (fd < 0)
			return fd;
		if (k == 0) {
			present = mem.a;
			gone = mem.b;
			if ((int)mem.count != n->initial) {
				hk_warn("join: the cluster started with %u nodes, this node was told %d",
					mem.count, n->initial);
				close(fd);
				return -EINVAL;
			}
			if (present & ~below(n->self)) {
				hk_warn("join: node %d is in the cluster already: a joining node takes a "
					"slot above every node there",
					63 - __builtin_clzll(present & ~below(n->self)));
				close(fd);
				return -EADDRINUSE;
			}
		}
		int r = hk_link_init(&n->links[k], fd, k, shape, &n->stats);
		if (r < 0)
			return r;
	}
	__atomic_store_n(&n->evac.gone, gone, __ATOMIC_RELEASE);
	__atomic_store_n(&n->present, present | hk_bit(n->self), __ATOMIC_RELEASE);
	return 0;
}

/* ---------------- a node in the cluster ---------------- */

/* 0, or why peer may not join now. */
static uint16_t refusal(struct hk_node *n, int peer)
{
	uint64_t present = __atomic_load_n(&n->present, __ATOMIC_ACQUIRE);
	uint64_t gone = __atomic_load_n(&n->evac.gone, __ATOMIC_ACQUIRE);
	if (peer <= n->self || peer < n->initial || ((present | gone) & ~below(peer)))
		return HK_REFUSE_SLOT;
	pthread_mutex_lock(&n->cluster.lock);
	bool agreed = n->cluster.vcpus != 0;
	pthread_mutex_unlock(&n->cluster.lock);
	if (!agreed || __atomic_load_n(&n->joining, __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&n->homes_chain, __ATOMIC_ACQUIRE) >= 0 ||
	    __atomic_load_n(&n->evac.node, __ATOMIC_ACQUIRE) >= 0 || atomic_load(&n->failed) ||
	    hk_shutting_down(n))
		return HK_REFUSE_BUSY;
	return 0;
}

static void *acceptor_main(void *arg)
{
	struct hk_node *n = arg;
	struct hk_handshake_cfg hc = hk_handshake_cfg_of(n);
	struct timeval tv = { 0, 200000 };
	setsockopt(n->listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!atomic_load(&n->stop)) {
		int fd = hk_accept_link(n->listen_fd);
		if (fd < 0)
			continue;
		char why[256];
		int peer = hk_handshake_accept(fd, &hc, why, sizeof(why));
		if (peer < 0) {
			hk_warn("refused a node that tried to join: %s", why);
			atomic_fetch_add(&n->stats.malformed, 1);
			close(fd);
			continue;
		}
		uint16_t no = refusal(n, peer);
		if (no) {
			hk_warn("refused node %d, which tried to join: %s", peer, hk_refuse_text(no));
			hk_handshake_refuse(fd, &hc, no);
			close(fd);
			continue;
		}
		/* joining before MEMBERS goes: a second joiner is refused from now */
		__atomic_fetch_or(&n->joining, hk_bit(peer), __ATOMIC_ACQ_REL);
		struct hk_msg m = { .type = HK_MSG_MEMBERS, .count = (uint32_t)n->initial,
				    .b = __atomic_load_n(&n->evac.gone, __ATOMIC_ACQUIRE) };
		m.a = __atomic_load_n(&n->present, __ATOMIC_ACQUIRE) & ~m.b;
		if (hk_fd_send_msg(fd, &m) < 0) {
			__atomic_fetch_and(&n->joining, ~hk_bit(peer), __ATOMIC_ACQ_REL);
			close(fd);
			continue;
		}
		pthread_mutex_lock(&n->join_lock);
		n->join_pending[n->njoin_pending++] = (struct hk_join_pending){ fd, peer };
		pthread_mutex_unlock(&n->join_lock);
		uint64_t one = 1;
		if (write(n->evfd, &one, sizeof(one)) < 0)
			hk_warn("wake event thread: %s", strerror(errno));
	}
	return NULL;
}

int hk_join_acceptor_start(struct hk_node *n)
{
	if (n->listen_fd < 0 || n->self >= n->count - 1)
		return 0; /* no slot above us: nobody can join through us */
	if (pthread_create(&n->acceptor, NULL, acceptor_main, n) != 0)
		return -EAGAIN;
	n->acceptor_started = true;
	return 0;
}

void hk_join_acceptor_stop(struct hk_node *n)
{
	if (!n->acceptor_started)
		return;
	pthread_join(n->acceptor, NULL); /* it sees n->stop within 200 ms */
	n->acceptor_started = false;
	pthread_mutex_lock(&n->join_lock);
	for (int i = 0; i < n->njoin_pending; i++)
		close(n->join_pending[i].fd);
	n->njoin_pending = 0;
	pthread_mutex_unlock(&n->join_lock);
}

/* Event thread: the links the acceptor authenticated join the loop. */
void hk_join_adopt(struct hk_node *n)
{
	struct hk_join_pending got[HK_MAX_NODES];
	pthread_mutex_lock(&n->join_lock);
	int k = n->njoin_pending;
	memcpy(got, n->join_pending, sizeof(got[0]) * (size_t)k);
	n->njoin_pending = 0;
	pthread_mutex_unlock(&n->join_lock);
	struct hk_shaper shape;
	hk_shaper_init(&shape, n->cfg.link_latency_us, n->cfg.link_bandwidth);
	for (int i = 0; i < k; i++) {
		int peer = got[i].peer;
		struct hk_link *l = &n->links[peer];
		if (l->sender_started || l->fd >= 0) {
			/* the slot's last joiner was refused or went away */
			__atomic_store_n(&l->up, false, __ATOMIC_RELEASE);
			if (l->fd >= 0)
				epoll_ctl(n->epfd, EPOLL_CTL_DEL, l->fd, NULL);
			hk_link_stop(l);
			if (l->fd >= 0)
				close(l->fd);
			l->fd = -1;
		}
		if (hk_link_init(l, got[i].fd, peer, &shape, &n->stats) < 0) {
			close(got[i].fd);
			__atomic_fetch_and(&n->joining, ~hk_bit(peer), __ATOMIC_ACQ_REL);
			continue;
		}
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)peer };
		epoll_ctl(n->epfd, EPOLL_CTL_ADD, got[i].fd, &ev);
		__atomic_fetch_or(&n->present, hk_bit(peer), __ATOMIC_ACQ_REL);
		hk_info("node %d is joining", peer);
	}
}

static void send_home_map(struct hk_node *n, int to)
{
	for (uint64_t c = 0; c < n->nchunks; c += HK_HOME_MAP_PER_MSG) {
		struct hk_msg m = { .type = HK_MSG_HOME_MAP, .page = c };
		m.count = (uint32_t)(n->nchunks - c < HK_HOME_MAP_PER_MSG ? n->nchunks - c
									  : HK_HOME_MAP_PER_MSG);
		for (uint32_t i = 0; i < m.count; i++)
			m.mac[i] = (uint8_t)n->home_map[c + i];
		hk_node_send(n, to, &m);
	}
}

/* A CONFIG from a node that joins (event thread).  false: not a joiner's,
 * the ordinary start-up path takes it. */
bool hk_join_on_config(struct hk_node *n, int from, const struct hk_msg *m)
{
	if (!(__atomic_load_n(&n->joining, __ATOMIC_ACQUIRE) & hk_bit(from)))
		return false;
	struct hk_cluster *c = &n->cluster;
	pthread_mutex_lock(&c->lock);
	const struct hk_peer_config *me = &c->peer[n->self];
	bool same = m->page == me->ram && m->count == me->vcpus && m->a == 0 &&
		    !memcmp(m->mac, me->hash, HK_SHA256_LEN);
	if (same) {
		c->peer[from] = (struct hk_peer_config){ .vcpus = m->count, .budget = m->b,
							 .ram = m->page };
		memcpy(c->peer[from].hash, m->mac, HK_SHA256_LEN);
		c->config_seen[from] = true;
		c->capacity[from] = m->arg[0] > 0 ? (uint32_t)m->arg[0] : 0;
	}
	struct hk_msg mine = { .type = HK_MSG_CONFIG, .count = me->vcpus, .a = me->vcpu_mask,
			       .b = me->budget, .page = me->ram,
			       .arg = { (int32_t)c->capacity[n->self] } };
	memcpy(mine.mac, me->hash, HK_SHA256_LEN);
	struct hk_msg at[HK_MAX_VCPUS];
	int nat = 0;
	for (uint32_t v = 0; v < c->vcpus && same; v++)
		if (c->seq[v] > 0 && c->location[v] >= 0)
			at[nat++] = (struct hk_msg){ .type = HK_MSG_VCPU_AT, .vcpu = v,
						     .node = (uint32_t)c->location[v], .a = c->seq[v],
						     .arg = { c->home[v] >= 0 ? c->home[v]
									      : c->location[v] } };
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	__atomic_fetch_and(&n->joining, ~hk_bit(from), __ATOMIC_ACQ_REL);
	if (!same) {
		hk_warn("node %d tried to join with a different machine definition (%s): refused",
			from, m->a ? "it places vCPUs" : "RAM, vCPUs, kernel or command line differ");
		hk_node_send(n, from, &mine); /* it compares too, and says what differs */
		struct hk_msg bye = { .type = HK_MSG_BYE };
		hk_node_send(n, from, &bye);
		n->links[from].bye = true;
		__atomic_fetch_and(&n->present, ~hk_bit(from), __ATOMIC_ACQ_REL);
		return true;
	}
	/* What it cannot know: where vCPUs went since the start, the homes
	 * evacuations moved.  Our CONFIG last: when it arrives, so did these. */
	for (int i = 0; i < nat; i++)
		hk_node_send(n, from, &at[i]);
	int first = 0;
	while (first < n->count && !hk_node_present(n, first))
		first++;
	if (first == n->self)
		send_home_map(n, from);
	hk_node_send(n, from, &mine);
	hk_info("node %d joined", from);
	if (n->cfg.cb.on_peer_joined)
		n->cfg.cb.on_peer_joined(n->cfg.cb.opaque, from);
	/* its share of homes: the first node gives first */
	__atomic_store_n(&n->homes_chain, from, __ATOMIC_RELEASE);
	if (n->chain_to != from) {
		n->chain_to = from;
		n->chain_given = 0;
	}
	give_if_my_turn(n);
	return true;
}

/* Event thread: if a node that joined is still owed homes and the first
 * node that has not given yet (lowest id first) is this one, give.  The
 * turns are counted from what was given (chain_given), not from who spoke
 * last: a rehome may finish before this node even heard of the joiner. */
static void give_if_my_turn(struct hk_node *n)
{
	int to = __atomic_load_n(&n->homes_chain, __ATOMIC_ACQUIRE);
	if (to < 0 || n->chain_to != to)
		return;
	int next = -1;
	for (int k = 0; k < n->count && next < 0; k++)
		if (k != to && hk_node_member(n, k) && !hk_node_leaving(n, k) &&
		    !(n->chain_given & hk_bit(k)))
			next = k;
	if (next < 0) {
		__atomic_store_n(&n->homes_chain, -1, __ATOMIC_RELEASE);
		return;
	}
	uint32_t share = (uint32_t)__builtin_popcountll(
		__atomic_load_n(&n->present, __ATOMIC_ACQUIRE) &
		~__atomic_load_n(&n->evac.gone, __ATOMIC_ACQUIRE));
	if (next == n->self && hk_rehome(n, to, share < 2 ? 2 : share) < 0)
		hk_warn("cannot hand homes to node %d now", to);
}

void hk_join_rehomed(struct hk_node *n, int giver, int to)
{
	if (n->chain_to != to) {
		n->chain_to = to;
		n->chain_given = 0;
	}
	n->chain_given |= hk_bit(giver);
	if (to == n->self)
		hk_info("node %d gave this node a share of its homes", giver);
	give_if_my_turn(n);
}

/* The joiner: the homes as they are now (evacuations changed them). */
void hk_join_on_home_map(struct hk_node *n, int from, const struct hk_msg *m)
{
	pthread_mutex_lock(&n->cluster.lock);
	bool agreed = n->cluster.vcpus != 0;
	pthread_mutex_unlock(&n->cluster.lock);
	if (!n->cfg.join || agreed || m->page >= n->nchunks || m->count > n->nchunks - m->page) {
		hk_warn("home_map from node %d: not expected here", from);
		atomic_fetch_add(&n->stats.malformed, 1);
		return;
	}
	for (uint32_t i = 0; i < m->count; i++)
		n->home_map[m->page + i] = (int8_t)m->mac[i];
}

/* A joiner that went away before it joined held nothing: not a failure. */
bool hk_join_abandoned(struct hk_node *n, int peer)
{
	if (!(__atomic_load_n(&n->joining, __ATOMIC_ACQUIRE) & hk_bit(peer)))
		return false;
	hk_warn("node %d went away while it joined: it held nothing, the guest runs on", peer);
	__atomic_fetch_and(&n->joining, ~hk_bit(peer), __ATOMIC_ACQ_REL);
	__atomic_fetch_and(&n->present, ~hk_bit(peer), __ATOMIC_ACQ_REL);
	n->links[peer].bye = true;
	return true;
}
