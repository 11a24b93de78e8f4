/* cluster.c - what the nodes agree on and tell each other about the machine,
 * beyond pages: the machine definition and vCPU placement (checked before
 * the guest starts), the vCPU location directory (where each vCPU runs,
 * ordered by its move count), forwarded interrupts, APIC addressing and EOIs,
 * migration requests that follow a moving vCPU, and the shutdown and
 * stopped barrier.
 *
 * These messages share each link's FIFO with the vCPU blobs: an interrupt
 * or a request sent after a vCPU left reaches the next node after the vCPU
 * itself.  The library knows nothing of x86 beyond plain integers; the
 * embedder turns them into LAPIC state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hk.h"

#define MIGRATE_MAX_HOPS 16

void hk_cluster_init(struct hk_cluster *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	memset(c->location, -1, sizeof(c->location));
	memset(c->home, -1, sizeof(c->home));
}

void hk_cluster_destroy(struct hk_cluster *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
}

static void count(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static void broadcast(struct hk_node *n, struct hk_msg *m)
{
	for (int k = 0; k < n->count; k++)
		if (k != n->self && n->links[k].up && !n->links[k].bye)
			hk_node_send(n, k, m);
}

/* Wait on the cluster's condition until pred() or the deadline; lock held. */
static bool wait_until(struct hk_node *n, bool (*pred)(struct hk_node *), uint64_t deadline_ns)
{
	struct hk_cluster *c = &n->cluster;
	while (!pred(n)) {
		if (atomic_load(&n->failed))
			return false;
		uint64_t now = hk_now_ns();
		if (now >= deadline_ns)
			return false;
		/* wake up now and then: failure is not signalled on cond */
		uint64_t until = deadline_ns - now > 100000000ull ? now + 100000000ull : deadline_ns;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t abs_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + (until - now);
		ts.tv_sec = (time_t)(abs_ns / 1000000000ull);
		ts.tv_nsec = (long)(abs_ns % 1000000000ull);
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	}
	return true;
}

/* ---------------- configuration agreement ---------------- */

/* Where a node's vCPUs start, unless one has moved already; lock held. */
static void place_initial(struct hk_cluster *c, int node, uint64_t mask)
{
	for (int v = 0; v < HK_MAX_VCPUS; v++)
		if ((mask & (1ull << v)) && c->seq[v] == 0)
			c->location[v] = c->home[v] = (int8_t)node;
}

static bool all_configs(struct hk_node *n)
{
	for (int k = 0; k < n->count; k++)
		if (k != n->self && hk_node_present(n, k) && !n->cluster.config_seen[k])
			return false;
	return true;
}

static int refuse(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (why && len)
		vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int hk_cluster_agree(struct hk_node *n, const struct hk_machine *mach, char *why, size_t whylen)
{
	struct hk_cluster *c = &n->cluster;
	uint64_t ram = n->mem.npages * HK_PAGE_SIZE;
	if (!mach || mach->vcpus == 0 || mach->vcpus > HK_MAX_VCPUS)
		return refuse(why, whylen, "the guest must have 1 to %d vCPUs", HK_MAX_VCPUS);
	/* by default the vCPUs fill the nodes that start the cluster */
	uint32_t cpus = n->cfg.cpu_capacity ? n->cfg.cpu_capacity
					     : (mach->vcpus + (uint32_t)n->initial - 1) / (uint32_t)n->initial;
	if (n->cfg.join && mach->vcpu_mask)
		return refuse(why, whylen, "a joining node starts with no vCPU (they move to it)");
	struct hk_msg m = { .type = HK_MSG_CONFIG, .count = mach->vcpus, .a = mach->vcpu_mask,
			    .b = n->cfg.budget_bytes, .page = ram, .arg = { (int32_t)cpus } };
	memcpy(m.mac, mach->hash, HK_SHA256_LEN);

	/* Our vCPUs are ours before any peer can ask about them. */
	pthread_mutex_lock(&c->lock);
	c->peer[n->self] = (struct hk_peer_config){ .vcpus = mach->vcpus, .vcpu_mask = mach->vcpu_mask,
						    .budget = n->cfg.budget_bytes, .ram = ram };
	memcpy(c->peer[n->self].hash, mach->hash, HK_SHA256_LEN);
	c->config_seen[n->self] = true;
	c->capacity[n->self] = cpus;
	place_initial(c, n->self, mach->vcpu_mask);
	pthread_mutex_unlock(&c->lock);
	broadcast(n, &m);

	pthread_mutex_lock(&c->lock);
	bool complete = wait_until(n, all_configs,
				   hk_now_ns() + (uint64_t)n->cfg.connect_timeout_ms * 1000000ull);
	int r = 0;
	if (!complete) {
		for (int k = 0; k < n->count; k++)
			if (hk_node_present(n, k) && !c->config_seen[k]) {
				r = refuse(why, whylen,
					   "node %d did not send its machine definition within %u ms", k,
					   n->cfg.connect_timeout_ms);
				break;
			}
		if (!r)
			r = refuse(why, whylen, "a peer was lost while the nodes compared definitions");
		r = -ETIMEDOUT;
		goto out;
	}
	uint64_t all = 0, budgets = 0;
	bool unlimited = false;
	for (int k = 0; k < n->count && !r; k++) {
		const struct hk_peer_config *p = &c->peer[k];
		if (!hk_node_present(n, k))
			continue;
		if (p->ram != ram)
			r = refuse(why, whylen, "node %d has %lu MiB of guest RAM, node %d has %lu MiB", k,
				   p->ram >> 20, n->self, ram >> 20);
		else if (p->vcpus != mach->vcpus)
			r = refuse(why, whylen, "node %d has %u vCPUs, node %d has %u", k, p->vcpus,
				   n->self, mach->vcpus);
		else if (memcmp(p->hash, mach->hash, HK_SHA256_LEN))
			r = refuse(why, whylen,
				   "node %d has a different machine definition (machine type, RAM size, "
				   "vCPU count, kernel, initrd, command line or node count differ)", k);
		else if (p->vcpu_mask & all)
			r = refuse(why, whylen, "vCPU %d is placed on node %d and on another node",
				   __builtin_ctzll(p->vcpu_mask & all), k);
		else if (mach->vcpus < 64 && (p->vcpu_mask >> mach->vcpus))
			r = refuse(why, whylen, "node %d places vCPU %d, but the guest has only %u vCPUs", k,
				   63 - __builtin_clzll(p->vcpu_mask), mach->vcpus);
		all |= p->vcpu_mask;
		budgets += p->budget;
		unlimited |= p->budget == 0;
	}
	/* (a joiner: the nodes where vCPUs started may have left) */
	for (uint32_t v = 0; v < mach->vcpus && !r && !n->cfg.join; v++)
		if (!(all & (1ull << v)))
			r = refuse(why, whylen,
				   "vCPU %u is placed on no node (the nodes' vCPU lists together must name "
				   "each vCPU exactly once)", v);
	if (!r && !unlimited && budgets < ram)
		r = refuse(why, whylen,
			   "the budgets of all nodes add up to %lu MiB, less than the guest RAM (%lu MiB)",
			   budgets >> 20, ram >> 20);
	if (r)
		goto out;
	c->vcpus = mach->vcpus;
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* ---------------- the vCPU location directory ---------------- */

int hk_vcpu_location(struct hk_node *n, int vcpu)
{
	if (vcpu < 0 || vcpu >= HK_MAX_VCPUS)
		return -1;
	pthread_mutex_lock(&n->cluster.lock);
	int r = n->cluster.location[vcpu];
	pthread_mutex_unlock(&n->cluster.lock);
	return r;
}

uint32_t hk_cluster_capacity(struct hk_node *n, int node)
{
	pthread_mutex_lock(&n->cluster.lock);
	uint32_t cpus = node >= 0 && node < n->count ? n->cluster.capacity[node] : 0;
	pthread_mutex_unlock(&n->cluster.lock);
	return cpus;
}

uint32_t hk_cluster_vcpus_homed(struct hk_node *n, int node)
{
	struct hk_cluster *c = &n->cluster;
	uint32_t k = 0;
	pthread_mutex_lock(&c->lock);
	for (uint32_t v = 0; v < c->vcpus; v++)
		k += (c->home[v] >= 0 ? c->home[v] : c->location[v]) == node;
	pthread_mutex_unlock(&c->lock);
	return k;
}

/* However short the hold-down (HK_HOLD_DOWN_US=0 is allowed), a vCPU that
 * moved less than this ago is not sent on: with no floor, two full nodes
 * answered each arrival with the vCPU that had just come the other way, and
 * the simulation's seeds with a hold-down of 0 never ended. */
#define HK_SETTLE_MIN_NS 1000000ull

int hk_cluster_swap_candidate(struct hk_node *n, int node, int except, uint64_t avoid,
			      uint64_t settled_ns)
{
	struct hk_cluster *c = &n->cluster;
	int best = -1;
	uint64_t best_seq = UINT64_MAX, now = hk_now_ns();
	if (settled_ns < HK_SETTLE_MIN_NS)
		settled_ns = HK_SETTLE_MIN_NS;
	pthread_mutex_lock(&c->lock);
	for (uint32_t v = 0; v < c->vcpus && v < 64; v++) {
		int at = c->home[v] >= 0 ? c->home[v] : c->location[v];
		/* one that just moved there stays (no swap chases another) */
		if (at != node || (int)v == except || (avoid >> v & 1) ||
		    (c->moved_ns[v] && now - c->moved_ns[v] < settled_ns))
			continue;
		/* the fewest moves so far: a vCPU that settled there, not one
		 * that keeps moving (a move count is all every node knows) */
		if (c->seq[v] < best_seq) {
			best_seq = c->seq[v];
			best = (int)v;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return best;
}

/* Overfull, and no vCPU here has settled yet: look again once one has
 * (hk_cluster_capacity_recheck), not only at the next tick. */
static void settle_later(struct hk_node *n)
{
	uint64_t wait = n->tuning.hold_down_ns > 1000000 ? n->tuning.hold_down_ns : 1000000;
	if (!n->capacity_recheck_ns)
		n->capacity_recheck_ns = hk_now_ns() + wait + 1000000;
}

/* Send a vCPU that settled here (not except) to node to, counted there from
 * now on, one that is idle here if there is one (a busy one is doing its
 * work next to its data); with none settled yet, look again later. */
static void send_settled_vcpu(struct hk_node *n, int except, int to, uint64_t *counter)
{
	struct hk_cluster *c = &n->cluster;
	uint64_t busy = __atomic_load_n(&n->busy_vcpus, __ATOMIC_RELAXED);
	int victim = hk_cluster_swap_candidate(n, n->self, except, n->cfg.fixed_vcpus | busy,
					       n->tuning.hold_down_ns);
	if (victim < 0) /* this node must not stay over its CPUs: a busy one, then */
		victim = hk_cluster_swap_candidate(n, n->self, except, n->cfg.fixed_vcpus,
						   n->tuning.hold_down_ns);
	pthread_mutex_lock(&c->lock);
	bool here = victim >= 0 && c->location[victim] == n->self;
	if (here)
		c->home[victim] = (int8_t)to;
	pthread_mutex_unlock(&c->lock);
	if (!here)
		settle_later(n);
	if (!here || !n->cfg.cb.on_migrate_request)
		return;
	count(counter);
	n->cfg.cb.on_migrate_request(n->cfg.cb.opaque, n->self, (uint32_t)victim, to);
}

/* A vCPU arrived (from node from) under a moving policy: if this node is now
 * home to more vCPUs than its CPUs, one of the vCPUs that run here goes to
 * from in exchange.  The target decides, for the vCPUs it runs itself, so
 * two nodes that send each other vCPUs at once cannot both overfill. */
void hk_cluster_rebalance(struct hk_node *n, int arrived, int from)
{
	if (n->policy == HK_POLICY_PAGE || from < 0 || from >= n->count || from == n->self ||
	    hk_node_leaving(n, from))
		return;
	uint32_t cpus = hk_cluster_capacity(n, n->self);
	if (!cpus || hk_cluster_vcpus_homed(n, n->self) <= cpus)
		return;
	/* Only a vCPU settled here for a hold-down goes back.  A vCPU that
	 * arrived by a swap is not: otherwise two nodes whose views of the
	 * homes disagree swap the same vCPUs back and forth without end (4
	 * nodes of one CPU each, vcpu policy: 200,000 swaps in one boot, and
	 * the migration events buried the QMP replies). */
	send_settled_vcpu(n, arrived, from, &n->stats.node.vcpu_swaps);
}

/* Each tick: a node home to more vCPUs than its CPUs sends one that settled
 * here to the node with the most room, as this node sees the homes.  On
 * arrival (above) only a settled vCPU goes back, so when two moves cross the
 * node can stay overfull: node 1 sends vCPU 3 here just as this node sends
 * vCPU 1 there in exchange for vCPU 2, and both that remain here arrived a
 * moment ago.  Without this it stayed so until some other move (the nightly's
 * policy test found 3 vCPUs homed on one node of 2 CPUs about one run in
 * two).  A node that finds no settled vCPU to send (here or on an arrival)
 * looks again once a hold-down has passed, without waiting for the tick.  So
 * a node stays overfull for about a hold-down after moves cross (two nodes'
 * views of the homes agree within a message), and overfull_ticks counts the
 * ticks that found it so. */
static void capacity_check(struct hk_node *n, bool tick)
{
	if (n->policy == HK_POLICY_PAGE || hk_node_leaving(n, n->self))
		return;
	uint32_t cpus = hk_cluster_capacity(n, n->self);
	if (!cpus || hk_cluster_vcpus_homed(n, n->self) <= cpus)
		return;
	if (tick)
		n->stats.node.overfull_ticks++;
	if (n->skip_capacity_tick)
		return;
	int to = -1;
	int64_t most = 0;
	for (int k = 0; k < n->count; k++) {
		if (k == n->self || !hk_node_member(n, k) || hk_node_leaving(n, k) ||
		    !n->links[k].up || n->links[k].bye)
			continue;
		int64_t cap = (int64_t)hk_cluster_capacity(n, k);
		int64_t room = cap - (int64_t)hk_cluster_vcpus_homed(n, k);
		if (cap && room > most) {
			most = room;
			to = k;
		}
	}
	if (to < 0) /* the nodes' CPUs add up to fewer than the vCPUs */
		return;
	send_settled_vcpu(n, -1, to, &n->stats.node.capacity_moves);
}

void hk_cluster_capacity_tick(struct hk_node *n)
{
	capacity_check(n, true);
}

/* The event loop, when capacity_recheck_ns is due. */
void hk_cluster_capacity_recheck(struct hk_node *n)
{
	n->capacity_recheck_ns = 0;
	capacity_check(n, false);
}

int hk_vcpu_home(struct hk_node *n, int vcpu)
{
	if (vcpu < 0 || vcpu >= HK_MAX_VCPUS)
		return -1;
	pthread_mutex_lock(&n->cluster.lock);
	int r = n->cluster.home[vcpu];
	pthread_mutex_unlock(&n->cluster.lock);
	return r;
}

void hk_vcpu_set_home(struct hk_node *n, int vcpu, int node)
{
	if (vcpu < 0 || vcpu >= HK_MAX_VCPUS || node < 0 || node >= n->count)
		return;
	pthread_mutex_lock(&n->cluster.lock);
	n->cluster.home[vcpu] = (int8_t)node;
	pthread_mutex_unlock(&n->cluster.lock);
}

/* hk_vcpu_send: the vCPU leaves for target with a newer move count. */
uint64_t hk_cluster_vcpu_leaving(struct hk_node *n, uint32_t vcpu, int target, int *home)
{
	struct hk_cluster *c = &n->cluster;
	pthread_mutex_lock(&c->lock);
	uint64_t seq = ++c->seq[vcpu];
	c->location[vcpu] = (int8_t)target;
	c->sent_ns[vcpu] = hk_now_ns();
	c->moved_ns[vcpu] = c->sent_ns[vcpu];
	c->sent_seq[vcpu] = seq;
	c->sent_to[vcpu] = (int8_t)target;
	*home = c->home[vcpu] >= 0 ? c->home[vcpu] : target;
	pthread_mutex_unlock(&c->lock);
	return seq;
}

/* The send failed or was refused: it still runs here (the embedder keeps
 * it), and is counted here, not on the target a move made its home. */
void hk_cluster_vcpu_stayed(struct hk_node *n, uint32_t vcpu, int target)
{
	pthread_mutex_lock(&n->cluster.lock);
	n->cluster.location[vcpu] = (int8_t)n->self;
	if (n->cluster.home[vcpu] == target)
		n->cluster.home[vcpu] = (int8_t)n->self;
	pthread_mutex_unlock(&n->cluster.lock);
}

/* A vCPU's state arrived: it runs here now, and everyone is told. */
void hk_cluster_vcpu_arrived(struct hk_node *n, uint32_t vcpu, uint64_t seq, int home)
{
	struct hk_cluster *c = &n->cluster;
	pthread_mutex_lock(&c->lock);
	if (seq > c->seq[vcpu])
		c->seq[vcpu] = seq;
	c->location[vcpu] = (int8_t)n->self;
	c->home[vcpu] = (int8_t)home;
	c->arrived_ns[vcpu] = c->moved_ns[vcpu] = hk_now_ns();
	pthread_mutex_unlock(&c->lock);
	hk_learned_relocated(n, (int)vcpu, n->self);
	/* the home too: every node counts the vCPUs homed on each node (the
	 * policies' capacity check) */
	struct hk_msg m = { .type = HK_MSG_VCPU_AT, .vcpu = vcpu, .node = (uint32_t)n->self, .a = seq,
			    .arg = { home } };
	broadcast(n, &m);
}

static void on_vcpu_at(struct hk_node *n, const struct hk_msg *m)
{
	struct hk_cluster *c = &n->cluster;
	pthread_mutex_lock(&c->lock);
	/* Updates come over different links and may overtake each other: only
	 * a newer move count moves the entry. */
	/* our own send arrived: what a move to that node costs, for "cost" */
	if (c->sent_seq[m->vcpu] == m->a && c->sent_to[m->vcpu] == (int)m->node && c->sent_ns[m->vcpu]) {
		hk_policy_vcpu_cost(n, (int)m->node, hk_now_ns() - c->sent_ns[m->vcpu]);
		c->sent_ns[m->vcpu] = 0;
	}
	if (m->a > c->seq[m->vcpu]) {
		hk_learned_relocated(n, (int)m->vcpu, (int)m->node);
		c->moved_ns[m->vcpu] = hk_now_ns();
		c->seq[m->vcpu] = m->a;
		if (m->arg[0] < n->count)
			c->home[m->vcpu] = (int8_t)m->arg[0];
		c->location[m->vcpu] = (int8_t)m->node;
		count(&n->stats.node.location_updates);
	}
	pthread_mutex_unlock(&c->lock);
}

/* ---------------- interrupts and APIC state ---------------- */

int hk_irq_send(struct hk_node *n, const struct hk_irq *irq)
{
	/* the same ranges the receiver's decoder enforces: refused here, where
	 * the caller can see it, rather than dropped there */
	if (!irq || irq->vcpu >= HK_MAX_VCPUS || irq->delivery_mode < 0 || irq->delivery_mode > 7 ||
	    irq->vector < 0 || irq->vector > 255 || irq->trigger_mode < 0 || irq->trigger_mode > 1)
		return -EINVAL;
	int to = hk_vcpu_location(n, (int)irq->vcpu);
	if (to < 0)
		return -ENOENT;
	if (to == n->self) {
		/* It arrived here meanwhile (its import may still be queued):
		 * hand it to the embedder, which orders it behind the import. */
		if (n->cfg.cb.on_irq)
			n->cfg.cb.on_irq(n->cfg.cb.opaque, n->self, irq);
		return 0;
	}
	struct hk_msg m = { .type = HK_MSG_IRQ, .vcpu = irq->vcpu,
			    .arg = { irq->delivery_mode, irq->vector, irq->trigger_mode } };
	count(&n->stats.node.irqs_forwarded);
	return hk_node_send(n, to, &m);
}

int hk_apic_addr_broadcast(struct hk_node *n, const struct hk_apic_addr *a)
{
	if (!a || a->vcpu >= HK_MAX_VCPUS || a->dest_mode > 15)
		return -EINVAL;
	struct hk_msg m = { .type = HK_MSG_APIC_ADDR, .vcpu = a->vcpu,
			    .arg = { (int32_t)a->apic_id, (int32_t)a->log_dest, (int32_t)a->dest_mode },
			    .a = a->apicbase };
	broadcast(n, &m);
	return 0;
}

int hk_eoi_send(struct hk_node *n, int node, int vector)
{
	if (node < 0 || node >= n->count || node == n->self || vector < 0 || vector > 255)
		return -EINVAL;
	struct hk_msg m = { .type = HK_MSG_EOI, .arg = { vector } };
	return hk_node_send(n, node, &m);
}

/* ---------------- migration requests ---------------- */

int hk_vcpu_migrate_request(struct hk_node *n, int vcpu, int target)
{
	uint32_t nv = n->cluster.vcpus ? n->cluster.vcpus : HK_MAX_VCPUS;
	if (vcpu < 0 || (uint32_t)vcpu >= nv || target < 0 || target >= n->count)
		return -EINVAL;
	if (hk_node_leaving(n, target) || !hk_node_member(n, target))
		return -EHOSTDOWN;
	int at = hk_vcpu_location(n, vcpu);
	if (at < 0)
		return -ENOENT;
	if (at == n->self)
		return 1;
	struct hk_msg m = { .type = HK_MSG_MIGRATE, .vcpu = (uint32_t)vcpu, .node = (uint32_t)target };
	count(&n->stats.node.migrate_requests_forwarded);
	int r = hk_node_send(n, at, &m);
	return r < 0 ? r : 0;
}

static void on_migrate(struct hk_node *n, int from, const struct hk_msg *m)
{
	int at = hk_vcpu_location(n, (int)m->vcpu);
	if (at == n->self) {
		if (n->cfg.cb.on_migrate_request)
			n->cfg.cb.on_migrate_request(n->cfg.cb.opaque, from, m->vcpu, (int)m->node);
		return;
	}
	/* It left before the request arrived: follow it.  Sent after its state
	 * on the same link, so the request reaches the next node after it. */
	if (at < 0 || m->count >= MIGRATE_MAX_HOPS || (int)m->node >= n->count) {
		count(&n->stats.node.migrate_requests_lost);
		hk_warn("migration request for vCPU %u to node %u dropped after %u hops", m->vcpu,
			m->node, m->count);
		return;
	}
	struct hk_msg f = *m;
	f.count++;
	count(&n->stats.node.migrate_requests_forwarded);
	hk_node_send(n, at, &f);
}

/* ---------------- shutdown ---------------- */

int hk_shutdown_broadcast(struct hk_node *n)
{
	pthread_mutex_lock(&n->cluster.lock);
	bool sent = n->cluster.shutdown_sent;
	n->cluster.shutdown_sent = true;
	pthread_mutex_unlock(&n->cluster.lock);
	if (sent)
		return 0;
	struct hk_msg m = { .type = HK_MSG_SHUTDOWN };
	broadcast(n, &m);
	return 0;
}

bool hk_shutting_down(struct hk_node *n)
{
	pthread_mutex_lock(&n->cluster.lock);
	bool r = n->cluster.shutdown_sent || n->cluster.shutdown_seen;
	pthread_mutex_unlock(&n->cluster.lock);
	return r;
}

static bool all_stopped(struct hk_node *n)
{
	for (int k = 0; k < n->count; k++)
		if (k != n->self && n->links[k].up && !n->links[k].bye && !n->cluster.stopped_seen[k])
			return false;
	return true;
}

int hk_stopped_barrier(struct hk_node *n, uint32_t timeout_ms)
{
	pthread_mutex_lock(&n->cluster.lock);
	n->cluster.shutdown_sent = true;
	pthread_mutex_unlock(&n->cluster.lock);
	struct hk_msg m = { .type = HK_MSG_STOPPED };
	broadcast(n, &m);
	pthread_mutex_lock(&n->cluster.lock);
	bool ok = wait_until(n, all_stopped, hk_now_ns() + (uint64_t)timeout_ms * 1000000ull);
	pthread_mutex_unlock(&n->cluster.lock);
	return ok || atomic_load(&n->failed) ? 0 : -ETIMEDOUT;
}

/* ---------------- delivery (event thread) ---------------- */

void hk_cluster_deliver(struct hk_node *n, int from, const struct hk_msg *m)
{
	struct hk_cluster *c = &n->cluster;
	const struct hk_callbacks *cb = &n->cfg.cb;
	switch (m->type) {
	case HK_MSG_CONFIG:
		if (hk_join_on_config(n, from, m))
			break;
		pthread_mutex_lock(&c->lock);
		c->peer[from] = (struct hk_peer_config){ .vcpus = m->count, .vcpu_mask = m->a,
							 .budget = m->b, .ram = m->page };
		memcpy(c->peer[from].hash, m->mac, HK_SHA256_LEN);
		c->config_seen[from] = true;
		c->capacity[from] = m->arg[0] > 0 ? (uint32_t)m->arg[0] : 0;
		place_initial(c, from, m->a);
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		break;
	case HK_MSG_VCPU_AT:
		if ((int)m->node < n->count && (int)m->node != n->self)
			on_vcpu_at(n, m);
		break;
	case HK_MSG_IRQ: {
		struct hk_irq irq = { m->vcpu, m->arg[0], m->arg[1], m->arg[2] };
		count(&n->stats.node.irqs_received);
		if (cb->on_irq)
			cb->on_irq(cb->opaque, from, &irq);
		break;
	}
	case HK_MSG_APIC_ADDR: {
		struct hk_apic_addr a = { m->vcpu, (uint32_t)m->arg[0], (uint32_t)m->arg[1],
					  (uint32_t)m->arg[2], m->a };
		if (cb->on_apic_addr)
			cb->on_apic_addr(cb->opaque, from, &a);
		break;
	}
	case HK_MSG_EOI:
		if (cb->on_eoi)
			cb->on_eoi(cb->opaque, from, m->arg[0]);
		break;
	case HK_MSG_SHUTDOWN:
		pthread_mutex_lock(&c->lock);
		c->shutdown_seen = true;
		pthread_mutex_unlock(&c->lock);
		if (cb->on_shutdown)
			cb->on_shutdown(cb->opaque, from);
		break;
	case HK_MSG_STOPPED:
		pthread_mutex_lock(&c->lock);
		c->stopped_seen[from] = true;
		c->shutdown_seen = true;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		break;
	case HK_MSG_MIGRATE:
		on_migrate(n, from, m);
		break;
	default:
		break;
	}
}
