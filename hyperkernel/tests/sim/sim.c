/*
 * sim.c - deterministic simulation of the page protocol (FoundationDB's
 * lesson: one seed drives every choice, so a failing seed replays exactly).
 *
 * A seed builds a world: 2 to 4 nodes of the real library, a few guest
 * threads per node doing reads and writes of a small set of pages, often
 * memory budgets small enough to make eviction constant, sometimes a node
 * killed mid-run.  The driver then picks, step by step, which enabled event
 * happens next: a guest thread's access, the event thread reading a queued
 * userfault, a frame delivered on a link (links keep order, links interleave
 * freely and delay up to 200 us), a node's timer tick.
 *
 * After every step it checks one writer or many readers for every page; every
 * read checks it sees the last value written (and no torn copy).  A run that
 * stops making progress with threads still blocked is a hang; at the end the
 * home directories must agree with what every node maps.  Each seed runs in a
 * child process, so a library assertion (HK_DEBUG) or a crash is reported
 * against its seed too.
 *
 *   hk-sim [--seeds N] [--first S] [--seed S] [-v]
 *
 * Last line: "seeds=N violations=V hangs=H"; exit status 1 if either is
 * non-zero.  A failing seed prints the command that replays it.
 *
 *   hk-sim --trace FILE [--trace FILE...] [--policy P] [--after NS] [--before NS]
 *
 * replays a guest's recorded fault trace (HK_FAULT_TRACE; sim_trace.c)
 * instead: the trace's nodes and vCPUs, no budget, no failures, the library's
 * own hold-downs, and every move a policy asks for made.  Once per policy
 * (all four unless --policy), with the same checks, it prints a line each:
 * stalls, pages moved, vCPU moves and where each vCPU ended, and the replay's
 * virtual time.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sim.h"

struct sim sim;

enum thread_state { T_READY, T_BLOCKED, T_DONE };

struct sim_thread {
	int node;
	pid_t tid;
	enum thread_state state;
	uint64_t page;       /* current access */
	bool write;
	int ops_left;
	bool streams;        /* reads through the pages in order (read-ahead) */
	uint64_t last;
	uint64_t moved_ns;   /* the policy last moved it (0: never) */
	int next;            /* a trace's: the next of its vCPU's accesses, */
	int done;            /* how many it has made, */
	uint64_t *done_at;   /* and when each ended (virtual ns) */
	int evac_to;         /* asked to leave an evacuating node for this one (-1: no) */
};

struct sim_fault {
	struct sim_fault *next;
	uint64_t page;
	bool write;
	pid_t tid;
};

static struct sim_thread threads[SIM_MAX_THREADS];
static int nthreads;
static struct sim_fault *faults[SIM_MAX_NODES], **faults_tail[SIM_MAX_NODES];
static uint64_t next_tick[SIM_MAX_NODES];
static uint64_t *expected;      /* last value written to each page */
static uint64_t version;
static uint64_t violations;
static uint64_t steps;
static int kill_at_step = -1;   /* -1: no node dies in this seed */
static int killed = -1;
static int sim_hot_pages;       /* accesses favour the first few pages */
uint64_t sim_moves;             /* threads the policy moved to another node */
static uint64_t move_seq;       /* their move counts, for the location directory */
static const char *policy_name; /* this seed's policy */
static struct sim_trace *trace; /* the workload, if a recorded trace (--trace) */
#define SIM_GLUE_MOVE_GAP_NS 20000000ull /* qemu-glue moves.c: HK_POLICY_MOVE_GAP_NS */
static const char *trace_policy;
/* Each node's CPUs: as many as the most threads any node starts with.  An
 * arrival at a node is answered (hk_cluster_rebalance) at the next step, as
 * a real node answers after on_vcpu_receive returns. */
static uint32_t sim_cpus;
struct sim_arrival {
	int node, vcpu, from;
};
static struct sim_arrival arrivals[SIM_MAX_THREADS * 4];
static int narrivals;
/* A node leaves on purpose (evacuate.c) at evac_at_step; evac_phase is the
 * last phase its embedder heard of. */
static int evac_at_step = -1, evac_node = -1;
/* A node hands a share of its homes to another at rehome_at_step (what a
 * joining node's share is taken with, join.c) */
static int rehome_at_step = -1, rehome_giver = -1, rehome_to = -1, rehome_share;
/* and a second node gives too, asking from the next step on until its node
 * is free: it starts as soon as it heard the first end, as the next giver
 * to a joining node does, while others may not have heard yet */
static int rehome2_giver = -1;
static bool rehome2_pending;
static enum hk_evac_phase evac_phase;
/* TCG's translations: a node that ran a page's code may keep running it
 * until the embedder's invalidation is done; the embedder defers some, and
 * some wakes of threads whose store waited (on_write_wake). */
static uint8_t *translated[SIM_MAX_NODES];
/* The pages whose mapping or translations a step may have changed: a trace's
 * replay checks only those after each step (its tens of thousands of pages
 * would make a full scan per step the whole cost); a seed checks them all. */
static uint64_t *touched;
static uint8_t *touched_mark;
static uint64_t ntouched;
struct sim_deferral {
	int node;
	uint64_t page;
	bool wake; /* a deferred wake, not an acknowledgement */
};
static struct sim_deferral deferrals[4096];
static int ndeferrals;

#define TICK_NS 1000000ull

uint64_t sim_rand(void)
{
	/* xorshift64*: small, fast, and the same on every machine */
	uint64_t x = sim.rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	sim.rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
	violations++;
	if (violations > 5)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stdout, "sim seed %lu step %lu: violation: ", sim.seed, steps);
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

void sim_touch(uint64_t page)
{
	if (!touched || touched_mark[page])
		return;
	touched_mark[page] = 1;
	touched[ntouched++] = page;
}

void sim_wake(int k, uint64_t page)
{
	for (int i = 0; i < nthreads; i++)
		if (threads[i].node == k && threads[i].state == T_BLOCKED && threads[i].page == page)
			threads[i].state = T_READY;
}

static int on_page_left(void *opaque, uint64_t offset)
{
	int k = (int)(intptr_t)opaque;
	uint64_t page = offset / HK_PAGE_SIZE;
	if (sim_below(3) == 0 && ndeferrals < (int)(sizeof(deferrals) / sizeof(deferrals[0]))) {
		deferrals[ndeferrals++] = (struct sim_deferral){ k, page, false };
		return HK_DEFER;
	}
	translated[k][page] = 0;
	return 0;
}

static int on_write_wake(void *opaque, uint64_t offset)
{
	int k = (int)(intptr_t)opaque;
	if (sim_below(3) == 0 && ndeferrals < (int)(sizeof(deferrals) / sizeof(deferrals[0]))) {
		deferrals[ndeferrals++] = (struct sim_deferral){ k, offset / HK_PAGE_SIZE, true };
		return HK_DEFER;
	}
	return 0;
}

static void queue_arrival(int node, int vcpu, int from)
{
	if (narrivals < (int)(sizeof(arrivals) / sizeof(arrivals[0])))
		arrivals[narrivals++] = (struct sim_arrival){ node, vcpu, from };
}

/* Those queued so far: the vCPUs their answers send arrive at the next step
 * (a swap chain takes simulated time, as it does between real nodes). */
static void answer_arrivals(void)
{
	/* and what the event loop does when an overfull node's vCPUs have settled */
	for (int k = 0; k < sim.nodes; k++) {
		struct hk_node *n = sim.node[k].hk;
		if (sim.node[k].alive && n->capacity_recheck_ns && sim.now_ns >= n->capacity_recheck_ns)
			hk_cluster_capacity_recheck(n);
	}
	for (int todo = narrivals; todo > 0; todo--) {
		struct sim_arrival a = arrivals[0];
		memmove(arrivals, arrivals + 1, (size_t)--narrivals * sizeof(arrivals[0]));
		if (sim.node[a.node].alive)
			hk_cluster_rebalance(sim.node[a.node].hk, a.vcpu, a.from);
	}
}

/* A node runs more threads than its CPUs while another node has room: the
 * capacity tick (hk_cluster_capacity_tick) must move one, so the run goes
 * on until it has; a node that stays overfull ends it as a hang. */
static bool overfull(void)
{
	/* (after a death, where its vCPUs were is unknowable: a VCPU_AT may
	 * have died with it, and so did the guest) */
	if (!strcmp(policy_name, "page") || killed >= 0)
		return false;
	uint32_t on[SIM_MAX_NODES] = { 0 };
	for (int i = 0; i < nthreads; i++)
		on[threads[i].node]++;
	bool over = false, room = false;
	for (int k = 0; k < sim.nodes; k++) {
		if (!sim.node[k].alive || (k == evac_node && evac_phase != HK_EVAC_NONE))
			continue;
		over |= on[k] > sim_cpus;
		room |= on[k] < sim_cpus;
	}
	return over && room;
}

/* The policy's move: pull the thread out of its fault and run it on the
 * target node (a vCPU's move), or bring the page after all, or leave the
 * thread in its fault (an embedder that cannot pull it out). */
static void on_stall(void *opaque, const struct hk_stall *s, struct hk_decision *d)
{
	int k = (int)(intptr_t)opaque;
	if (d->kind != HK_MOVE_VCPU)
		return;
	if (d->target_node == k || d->target_node < 0 || d->target_node >= sim.nodes ||
	    !sim.node[d->target_node].alive)
		violation("node %d: a move to node %d", k, d->target_node);
	/* A trace's replay embeds the library as the QEMU glue does: a move
	 * is made unless the vCPU moved less than 20 ms ago. */
	uint64_t r = !trace ? sim_below(4) : 2;
	for (int i = 0; trace && i < nthreads; i++)
		if (threads[i].tid == s->tid && threads[i].moved_ns &&
		    sim.now_ns - threads[i].moved_ns < SIM_GLUE_MOVE_GAP_NS)
			r = 0;
	if (r == 0) {
		d->kind = HK_BRING_PAGE;
		return;
	}
	if (r == 1 || !sim.node[d->target_node].alive)
		return;
	for (int i = 0; i < nthreads; i++) {
		struct sim_thread *th = &threads[i];
		if (th->tid != s->tid || th->node != k || th->state != T_BLOCKED)
			continue;
		/* The bound on chases: "cost" and "learned" move a vCPU at most
		 * once per hold-down (10 ms), whatever its pages do. */
		if (strcmp(policy_name, "cost") == 0 || strcmp(policy_name, "learned") == 0) {
			if (th->moved_ns && sim.now_ns - th->moved_ns < 10000000ull)
				violation("thread %d moved again %lu ns after its last move (%s)",
					  th->tid, sim.now_ns - th->moved_ns, policy_name);
		}
		th->moved_ns = sim.now_ns;
		th->node = d->target_node;
		th->state = T_READY; /* retries its access there */
		sim.node[th->node].hk->vcpu_tid[s->vcpu] = th->tid;
		/* as hk_vcpu_deliver does: the target knows when it arrived */
		hk_cluster_vcpu_arrived(sim.node[th->node].hk, (uint32_t)s->vcpu, ++move_seq,
					th->node);
		queue_arrival(th->node, s->vcpu, k);
		hk_stall_left(sim.node[k].hk, s->offset, s->id);
		sim_moves++;
	}
}

/* A trace's: the guest thread of the access the vCPU is making, as recorded. */
static uint64_t guest_thread(void *opaque, int vcpu, bool *user)
{
	(void)opaque;
	const struct sim_thread *th = &threads[vcpu];
	const struct sim_op *op = &trace->ops[vcpu][th->next ? th->next - 1 : 0];
	*user = op->user;
	return op->guest_thread;
}

/* The leaver asks its embedder to move a vCPU: a thread between two accesses
 * goes now, one inside an access (blocked, or woken to retry) when it ends,
 * as a vCPU thread only leaves its fault with the page or by a pull-out. */
static void move_evacuee(struct sim_thread *th)
{
	int from = th->node, to = th->evac_to, v = (int)(th - threads);
	struct hk_cluster *c = &sim.node[from].hk->cluster;
	th->evac_to = -1;
	if (hk_node_leaving(sim.node[from].hk, to) || !sim.node[to].alive) {
		/* asked before the target left or died: its send is refused
		 * or fails (hk_vcpu_send) and it stays */
		hk_cluster_vcpu_stayed(sim.node[from].hk, (uint32_t)v, to);
		return;
	}
	uint64_t seq = ++move_seq;
	pthread_mutex_lock(&c->lock);
	c->location[v] = (int8_t)to;
	c->home[v] = (int8_t)to; /* as the glue's request work does before it sends */
	if (seq > c->seq[v])
		c->seq[v] = seq;
	pthread_mutex_unlock(&c->lock);
	sim.node[from].hk->vcpu_tid[v] = 0;
	th->node = to;
	sim.node[to].hk->vcpu_tid[v] = th->tid;
	hk_cluster_vcpu_arrived(sim.node[to].hk, (uint32_t)v, seq, to);
	queue_arrival(to, v, from);
	sim_moves++;
}

static void on_migrate_request(void *opaque, int from, uint32_t vcpu, int target)
{
	int k = (int)(intptr_t)opaque;
	(void)from;
	if ((int)vcpu >= nthreads || threads[vcpu].node != k)
		return;
	/* (to a node that leaves, only before this node heard it leaves) */
	if (target == k || target < 0 || target >= sim.nodes || hk_node_leaving(sim.node[k].hk, target))
		violation("node %d: vCPU %u asked to move to node %d", k, vcpu, target);
	struct sim_thread *th = &threads[vcpu];
	th->evac_to = target;
	if (th->state == T_DONE || (th->state == T_READY && th->page == UINT64_MAX))
		move_evacuee(th);
}

static void on_evacuation(void *opaque, const struct hk_evac_status *st)
{
	int k = (int)(intptr_t)opaque;
	evac_phase = st->phase;
	if (st->phase != HK_EVAC_DONE)
		return;
	/* it leaves holding nothing and running nothing */
	for (uint64_t p = 0; p < sim.pages; p++)
		if (sim.node[k].map[p] != SIM_NONE)
			violation("node %d left the cluster still mapping page %lu", k, p);
	for (int i = 0; i < nthreads; i++)
		if (threads[i].node == k)
			violation("node %d left the cluster with thread %d still on it", k,
				  threads[i].tid);
	struct hk_node *n = sim.node[k].hk;
	for (uint64_t p = 0; p < sim.pages; p++)
		if (hk_home_of(n, p) == k)
			violation("node %d left still home for page %lu", k, p);
}

static void on_peer_lost(void *opaque, int node, const struct hk_page_range *ranges,
			 size_t nranges, uint64_t lost_pages)
{
	(void)opaque;
	(void)node;
	(void)ranges;
	(void)nranges;
	(void)lost_pages;
	/* The library poisons what it cannot serve; the driver checks that
	 * no survivor thread is left blocked. */
}

/* ---------------- the world ---------------- */

static void build_world(uint64_t seed)
{
	bool verbose = sim.verbose;
	memset(&sim, 0, sizeof(sim));
	sim.verbose = verbose;
	sim.seed = seed;
	sim.rng = seed * 0x9e3779b97f4a7c15ull + 1;
	sim.nodes = trace ? trace->nodes : 2 + (int)sim_below(3);
	static const uint64_t page_choices[] = { 3, 8, 24, 64 };
	sim.pages = trace ? trace->pages : page_choices[sim_below(4)];
	sim_hot_pages = 1 + (int)sim_below(sim.pages);
	bool tight = !trace && sim_below(3) != 0; /* most seeds evict all the time */
	uint64_t budget = 0;
	if (tight) {
		/* just enough room in total, so evictions chase each other */
		budget = sim.pages / (uint64_t)sim.nodes + 1 + sim_below(2);
	}
	uint32_t chunk = 1 + (uint32_t)sim_below(4);
	/* "vcpu", "cost" and "learned" ask for moves: this embedder makes some (the
	 * thread moves to the target node and retries there), turns some
	 * into fetches and ignores the rest, so every stall must still end
	 * (the library brings the page after its bound) */
	static const char *const policies[] = { "page", "page", "vcpu", "cost", "learned" };
	const char *policy = policies[sim_below(5)];
	if (trace)
		policy = trace_policy;
	policy_name = policy;
	if (sim_below(8) == 0 && !trace)
		kill_at_step = 200 + (int)sim_below(3000);
	/* from the seed, not the random stream: seeds without one replay as before */
	if (kill_at_step < 0 && !trace && (seed * 0xd1342543de82ef95ull >> 7) % 4 == 0) {
		evac_at_step = 100 + (int)((seed * 0x9e3779b97f4a7c15ull >> 20) % 1500);
		evac_node = 1 + (int)((seed >> 3) % (uint64_t)(sim.nodes - 1));
	}
	if (kill_at_step < 0 && evac_at_step < 0 && !trace &&
	    (seed * 0xbf58476d1ce4e5b9ull >> 11) % 3 == 0) {
		rehome_at_step = 50 + (int)((seed * 0x94d049bb133111ebull >> 20) % 1500);
		rehome_giver = (int)((seed >> 5) % (uint64_t)sim.nodes);
		rehome_to = (rehome_giver + 1 + (int)((seed >> 9) % (uint64_t)(sim.nodes - 1))) % sim.nodes;
		rehome_share = 2 + (int)((seed >> 13) % 3);
		if (sim.nodes > 2 && (seed * 0x2545f4914f6cdd1dull >> 33) % 2) {
			for (int k = 0; k < sim.nodes && rehome2_giver < 0; k++)
				if (k != rehome_giver && k != rehome_to)
					rehome2_giver = k;
			rehome2_pending = true;
		}
	}

	static char *peers[SIM_MAX_NODES];
	for (int k = 0; k < sim.nodes; k++) {
		if (!peers[k] && asprintf(&peers[k], "sim:%d", k) < 0)
			abort();
	}
	for (int k = 0; k < sim.nodes; k++) {
		struct sim_node *sn = &sim.node[k];
		struct hk_config cfg;
		hk_config_init(&cfg);
		cfg.node_id = k;
		cfg.node_count = sim.nodes;
		cfg.peers = (const char *const *)peers;
		cfg.secret = "sim";
		cfg.budget_bytes = budget * HK_PAGE_SIZE;
		cfg.home_chunk_pages = chunk;
		cfg.policy = policy;
		/* vCPU 0 stays on node 0, as in QEMU, where it alone gets the
		 * legacy PIC's interrupts */
		cfg.fixed_vcpus = trace ? 1 : 0;
		cfg.heartbeat_ms = 1;
		cfg.peer_timeout_ms = 1000000; /* death comes from the driver, not silence */
		cfg.cb.on_peer_lost = on_peer_lost;
		cfg.cb.on_page_left = on_page_left;
		cfg.cb.on_write_wake = on_write_wake;
		cfg.cb.on_stall = on_stall;
		cfg.cb.on_migrate_request = on_migrate_request;
		cfg.cb.on_evacuation = on_evacuation;
		if (trace)
			cfg.cb.guest_thread = guest_thread;
		cfg.cb.opaque = (void *)(intptr_t)k;
		sn->alive = true;
		/* registered before the node exists, so the memory can be found */
		sim.node[k].memfd = -2;
		if (hk_node_new(&cfg, &sn->hk) < 0)
			hk_die("sim: hk_node_new");
		/* the page hold-down: off for a third of the seeds, else 20 to
		 * 300 us (from the seed, not its random stream) */
		/* (a trace's replay keeps the library's own) */
		if (!trace)
			sn->hk->tuning.page_hold_ns = seed % 3 ? 20000 + (seed / 3) % 8 * 40000 : 0;
		/* and copies of a page written in bursts: off for a fifth, else
		 * 10 to 70 us */
		if (!trace)
			sn->hk->tuning.read_hold_ns = seed % 5 ? 10000 + (seed / 5) % 4 * 20000 : 0;
		sn->memfd = sn->hk->mem.uffd;
		sn->ram = aligned_alloc(HK_PAGE_SIZE, sim.pages * HK_PAGE_SIZE);
		sn->map = calloc(sim.pages, 1);
		translated[k] = calloc(sim.pages, 1);
		if (!sn->ram || !sn->map)
			abort();
		memset(sn->ram, 0xa5, sim.pages * HK_PAGE_SIZE);
		if (hk_region_register(sn->hk, sn->ram, sim.pages * HK_PAGE_SIZE) != 0)
			hk_die("sim: register");
		for (int h = 0; trace && h < sim.nodes; h++) /* each home's pages where it was */
			if (trace->home_count[h] &&
			    hk_region_set_home(sn->hk, (int64_t)(trace->home_first[h] * HK_PAGE_SIZE),
					       trace->home_count[h] * HK_PAGE_SIZE, h) != 0)
				hk_die("sim: a trace's homes");
		next_tick[k] = TICK_NS + sim_below(TICK_NS);
		faults[k] = NULL;
		faults_tail[k] = &faults[k];
	}
	/* what hk_node_start does, minus sockets and threads */
	for (int k = 0; k < sim.nodes; k++) {
		struct hk_node *n = sim.node[k].hk;
		if (hk_stats_init(&n->stats, n->mem.npages) < 0)
			hk_die("sim: stats");
		for (int j = 0; j < sim.nodes; j++)
			if (j != k)
				hk_link_init(&n->links[j], -1, j, NULL, &n->stats);
	}
	for (int k = 0; k < sim.nodes; k++)
		if (hk_coherence_init(sim.node[k].hk) < 0)
			hk_die("sim: coherence init");
	expected = calloc(sim.pages, sizeof(*expected));
	if (trace) {
		touched = calloc(sim.pages, sizeof(*touched));
		touched_mark = calloc(sim.pages, 1);
		if (!touched || !touched_mark)
			abort();
	}
	nthreads = 0;
	ndeferrals = 0;
	for (int v = 0; trace && v < trace->vcpus; v++) { /* vCPU v is thread v */
		struct sim_thread *th = &threads[nthreads++];
		int k = trace->start_node[v];
		*th = (struct sim_thread){ .node = k, .tid = 1000 * (k + 1) + v, .state = T_READY,
					   .ops_left = trace->nops[v], .page = UINT64_MAX, .evac_to = -1,
					   .done_at = calloc((size_t)trace->nops[v] + 1, sizeof(uint64_t)) };
		if (!th->done_at)
			abort();
		sim.node[k].hk->vcpu_tid[v] = th->tid;
	}
	for (int k = 0; k < sim.nodes && !trace; k++) {
		int t = 1 + (int)sim_below(3);
		for (int i = 0; i < t && nthreads < SIM_MAX_THREADS; i++) {
			struct sim_thread *th = &threads[nthreads++];
			th->node = k;
			th->tid = 1000 * (k + 1) + i;
			th->state = T_READY;
			th->ops_left = 80 + (int)sim_below(320);
			th->page = UINT64_MAX;
			/* from the seed and the thread, not from the random stream,
			 * so that seeds without a streaming thread replay as before */
			th->streams = ((seed * 0x9e3779b97f4a7c15ull) ^ (uint64_t)th->tid * 0xbf58476d1ce4e5b9ull)
					      % 5 == 0;
			th->last = (uint64_t)th->tid % sim.pages;
			sim.node[k].hk->vcpu_tid[nthreads - 1] = th->tid; /* thread i runs vCPU i */
			th->evac_to = -1;
		}
	}
	/* what hk_cluster_agree leaves behind: where each vCPU runs, each
	 * node's budget */
	uint32_t started[SIM_MAX_NODES] = { 0 };
	sim_cpus = 0;
	narrivals = 0;
	for (int i = 0; i < nthreads; i++)
		if (++started[threads[i].node] > sim_cpus)
			sim_cpus = started[threads[i].node];
	/* a trace's nodes: as many CPUs each as the testbed gives them */
	if (trace && (uint32_t)((nthreads + sim.nodes - 1) / sim.nodes) > sim_cpus)
		sim_cpus = (uint32_t)((nthreads + sim.nodes - 1) / sim.nodes);
	for (int k = 0; k < sim.nodes; k++) {
		struct hk_cluster *c = &sim.node[k].hk->cluster;
		c->vcpus = (uint32_t)nthreads;
		for (int i = 0; i < nthreads; i++)
			c->location[i] = c->home[i] = (int8_t)threads[i].node;
		for (int j = 0; j < sim.nodes; j++)
			c->capacity[j] = sim_cpus;
		for (int j = 0; j < sim.nodes; j++)
			c->peer[j].budget = budget * HK_PAGE_SIZE;
	}
	if (sim.verbose)
		fprintf(stdout, "sim seed %lu: nodes=%d pages=%lu budget=%lu chunk=%u policy=%s threads=%d "
			"kill_at=%d evacuate=%d at %d\n", seed, sim.nodes, sim.pages, budget, chunk,
			policy, nthreads, kill_at_step, evac_node, evac_at_step);
}

/* ---------------- guest threads ---------------- */

static bool readable(uint8_t m)
{
	return m == SIM_RO || m == SIM_RW || m == SIM_ZERO || m == SIM_ZERO_WP;
}

static bool writable(uint8_t m)
{
	return m == SIM_RW || m == SIM_ZERO;
}

static void queue_fault(int k, uint64_t page, bool write, pid_t tid)
{
	struct sim_fault *f = malloc(sizeof(*f));
	if (!f)
		abort();
	*f = (struct sim_fault){ .page = page, .write = write, .tid = tid };
	*faults_tail[k] = f;
	faults_tail[k] = &f->next;
}

static void thread_step(struct sim_thread *th)
{
	struct sim_node *sn = &sim.node[th->node];
	if (th->page == UINT64_MAX && th->evac_to >= 0) { /* between accesses: it may go */
		move_evacuee(th);
		return;
	}
	if (th->page == UINT64_MAX) { /* choose the next access */
		if (th->ops_left-- <= 0 || killed >= 0) {
			th->state = T_DONE;
			return;
		}
		th->page = sim_below(3) ? sim_below((uint64_t)sim_hot_pages) : sim_below(sim.pages);
		th->write = sim_below(100) < 40;
		if (trace) {
			const struct sim_op *op = &trace->ops[th - threads][th->next++];
			th->page = op->page;
			th->write = op->write;
		}
		if (th->streams && !th->write) { /* its reads go in order */
			th->page = (th->last + 1) % sim.pages;
			th->last = th->page;
		}
	}
	uint8_t *m = &sn->map[th->page];
	uint8_t *data = sn->ram + th->page * HK_PAGE_SIZE;
	if (*m == SIM_POISON) { /* SIGBUS: only after a node died */
		if (killed < 0)
			violation("node %d thread %d: SIGBUS on page %lu with no node lost", th->node,
				  th->tid, th->page);
		th->state = T_DONE;
		th->page = UINT64_MAX;
		if (th->evac_to >= 0) /* asked to move while it waited */
			move_evacuee(th);
		return;
	}
	if (th->write ? writable(*m) : readable(*m)) {
		translated[th->node][th->page] = 1; /* it may be code, too */
		sim_touch(th->page);
		uint64_t a, b;
		memcpy(&a, data, 8);
		memcpy(&b, data + HK_PAGE_SIZE - 8, 8);
		if (a != b)
			violation("node %d: page %lu torn (%lx / %lx)", th->node, th->page, a, b);
		else if (a != expected[th->page] && killed < 0)
			violation("node %d thread %d: page %lu reads %lu, last written %lu", th->node,
				  th->tid, th->page, a, expected[th->page]);
		if (th->write) {
			if (*m == SIM_ZERO)
				*m = SIM_RW; /* copy-on-write of the zero page: no fault */
			uint64_t v = ++version;
			memcpy(data, &v, 8);
			memcpy(data + HK_PAGE_SIZE - 8, &v, 8);
			expected[th->page] = v;
		}
		th->page = UINT64_MAX;
		if (trace)
			th->done_at[th->done++] = sim.now_ns;
		return;
	}
	/* a userfault: the thread sleeps until the page is installed, made
	 * writable or woken; the event thread reads the message later */
	th->state = T_BLOCKED;
	queue_fault(th->node, th->page, th->write, th->tid);
}

/* ---------------- checks ---------------- */

/* Under a budget: every mapped page is counted, and never more than the
 * budget are mapped (shared copies included). */
static void check_budgets(void)
{
	for (int k = 0; k < sim.nodes; k++) {
		struct hk_node *n = sim.node[k].hk;
		if (!sim.node[k].alive || !n->budget_pages || killed >= 0)
			continue;
		uint64_t mapped = 0;
		for (uint64_t p = 0; p < sim.pages; p++)
			mapped += readable(sim.node[k].map[p]);
		if (mapped != n->resident) {
			violation("node %d maps %lu pages but counts %lu", k, mapped, n->resident);
			return;
		}
		if (mapped > n->budget_pages) {
			violation("node %d maps %lu pages, over its budget of %lu", k, mapped,
				  n->budget_pages);
			return;
		}
	}
}

/* One writer or many readers, and no node runs translations of a page
 * another writes; false after reporting a violation. */
static bool check_page(uint64_t p)
{
	int writers = 0, readers = 0;
	for (int k = 0; k < sim.nodes; k++) {
		if (!sim.node[k].alive)
			continue;
		uint8_t m = sim.node[k].map[p];
		writers += writable(m);
		readers += readable(m);
	}
	if (writers > 1 || (writers == 1 && readers > 1)) {
		violation("page %lu: %d writable and %d readable copies", p, writers, readers);
		return false;
	}
	for (int w = 0; writers && w < sim.nodes; w++) {
		if (!sim.node[w].alive || !writable(sim.node[w].map[p]))
			continue;
		for (int k = 0; k < sim.nodes; k++)
			if (k != w && sim.node[k].alive && translated[k][p]) {
				violation("page %lu: node %d writes it while node %d can still run "
					  "translations of it", p, w, k);
				return false;
			}
	}
	return true;
}

static void check_pages(void)
{
	if (!touched) {
		for (uint64_t p = 0; p < sim.pages; p++)
			if (!check_page(p))
				return;
		return;
	}
	bool ok = true;
	for (uint64_t i = 0; i < ntouched; i++) {
		touched_mark[touched[i]] = 0;
		ok = ok && check_page(touched[i]);
	}
	ntouched = 0;
}

static void check_final(void)
{
	/* every node that is still there has the same homes */
	for (int k = 1; k < sim.nodes; k++)
		if (k != evac_node &&
		    memcmp(sim.node[k].hk->home_map, sim.node[0].hk->home_map, sim.node[0].hk->nchunks))
			violation("node %d's home map differs from node 0's", k);
	if (rehome_giver >= 0) {
		struct hk_node *g = sim.node[rehome_giver].hk;
		if (sim.verbose)
			fprintf(stdout, "sim seed %lu: rehome %d -> %d: %s, %lu entries moved\n", sim.seed,
				rehome_giver, rehome_to, g->evac.st.reason, g->evac.st.homes_moved);
		if (g->evac.node >= 0 || g->evac.requested)
			violation("the rehome of node %d to node %d did not finish", rehome_giver, rehome_to);
		if (rehome2_giver >= 0 && (rehome2_pending || sim.node[rehome2_giver].hk->evac.node >= 0 ||
					   sim.node[rehome2_giver].hk->evac.requested))
			violation("the second rehome, of node %d to node %d, did not finish", rehome2_giver,
				  rehome_to);
		for (int k = 0; k < sim.nodes; k++)
			if (sim.node[k].hk->evac.later)
				violation("node %d still holds a rehome's steps at the end", k);
	}
	for (uint64_t p = 0; p < sim.pages; p++) {
		int h = hk_home_of(sim.node[0].hk, p);
		struct hk_dir_entry *e = &sim.node[h].hk->dir.e[p];
		if (e->phase != HK_DIR_IDLE || e->qhead) {
			violation("page %lu: home %d still busy at the end (phase %d)", p, h, e->phase);
			continue;
		}
		for (int k = 0; k < sim.nodes; k++) {
			bool present = readable(sim.node[k].map[p]);
			bool listed = e->copyset & hk_bit(k);
			if (present != listed)
				violation("page %lu: node %d %s a copy, the directory says it %s", p, k,
					  present ? "maps" : "has no", listed ? "does" : "does not");
			if (present) {
				uint64_t a;
				memcpy(&a, sim.node[k].ram + p * HK_PAGE_SIZE, 8);
				if (a != expected[p])
					violation("page %lu: node %d ends with %lu, last written %lu", p,
						  k, a, expected[p]);
			}
		}
	}
}

/* ---------------- the driver ---------------- */

enum action_kind { A_THREAD, A_FAULT, A_FRAME, A_TICK, A_INVALIDATED };
struct action {
	enum action_kind kind;
	int a, b;
};

/* When a ready thread may step: at once, but for a trace's between two
 * accesses, which waits for the access its next one depends on, then runs
 * its think time (sim_trace.c); UINT64_MAX while that access is not made. */
static uint64_t ready_at(const struct sim_thread *th)
{
	if (!trace || th->page != UINT64_MAX || th->ops_left <= 0)
		return 0;
	const struct sim_op *op = &trace->ops[th - threads][th->next];
	uint64_t from = th->done ? th->done_at[th->done - 1] : 0;
	if (op->dep_vcpu >= 0) {
		const struct sim_thread *d = &threads[op->dep_vcpu];
		if (d->done <= op->dep_op)
			return UINT64_MAX;
		if (d->done_at[op->dep_op] > from)
			from = d->done_at[op->dep_op];
	}
	return from + op->think_ns;
}

static int enabled_actions(struct action *acts, bool with_ticks)
{
	int n = 0;
	for (int i = 0; i < nthreads; i++)
		if (threads[i].state == T_READY && sim.node[threads[i].node].alive &&
		    ready_at(&threads[i]) <= sim.now_ns)
			acts[n++] = (struct action){ A_THREAD, i, 0 };
	for (int k = 0; k < sim.nodes; k++) {
		if (!sim.node[k].alive)
			continue;
		if (faults[k])
			acts[n++] = (struct action){ A_FAULT, k, 0 };
		for (int d = 0; d < ndeferrals; d++)
			if (deferrals[d].node == k) {
				acts[n++] = (struct action){ A_INVALIDATED, k, d };
				break;
			}
		for (int j = 0; j < sim.nodes; j++) {
			struct sim_frame *f = sim.node[k].out[j].head;
			if (f && f->deliver_at <= sim.now_ns)
				acts[n++] = (struct action){ A_FRAME, k, j };
		}
		if (with_ticks && next_tick[k] <= sim.now_ns)
			acts[n++] = (struct action){ A_TICK, k, 0 };
	}
	return n;
}

/* Earliest time something will be enabled without another action. */
static uint64_t next_event_ns(void)
{
	uint64_t t = UINT64_MAX;
	for (int i = 0; i < nthreads; i++) {
		uint64_t r = threads[i].state == T_READY ? ready_at(&threads[i]) : UINT64_MAX;
		if (r > sim.now_ns && r < t)
			t = r;
	}
	for (int k = 0; k < sim.nodes; k++) {
		if (!sim.node[k].alive)
			continue;
		if (next_tick[k] < t)
			t = next_tick[k];
		if (hk_home_hold_deadline(sim.node[k].hk) < t)
			t = hk_home_hold_deadline(sim.node[k].hk);
		for (int j = 0; j < sim.nodes; j++) {
			struct sim_frame *f = sim.node[k].out[j].head;
			if (f && f->deliver_at < t)
				t = f->deliver_at;
		}
	}
	return t;
}

static bool frames_in_flight(void)
{
	/* a request held for a page's hold-down is a frame not yet sent */
	for (int k = 0; k < sim.nodes; k++)
		if (sim.node[k].alive && sim.node[k].hk->nholds)
			return true;
	for (int d = 0; d < ndeferrals; d++)
		if (sim.node[deferrals[d].node].alive)
			return true;
	for (int k = 0; k < sim.nodes; k++)
		for (int j = 0; j < sim.nodes; j++)
			if (sim.node[k].alive && sim.node[j].alive && sim.node[k].out[j].head)
				return true;
	return false;
}

static void kill_node(int d)
{
	killed = d;
	sim.node[d].alive = false;
	for (int k = 0; k < sim.nodes; k++) {
		if (k == d || !sim.node[k].alive)
			continue;
		/* what the event loop does on EOF */
		hk_failure_peer_lost(sim.node[k].hk, d);
		hk_drain_local(sim.node[k].hk);
	}
	for (int i = 0; i < nthreads; i++)
		if (threads[i].node == d)
			threads[i].state = T_DONE;
}

static void do_action(const struct action *a)
{
	switch (a->kind) {
	case A_THREAD:
		thread_step(&threads[a->a]);
		break;
	case A_FAULT: {
		struct sim_fault *f = faults[a->a];
		faults[a->a] = f->next;
		if (!faults[a->a])
			faults_tail[a->a] = &faults[a->a];
		hk_handle_fault(sim.node[a->a].hk, f->page, f->write, f->tid);
		free(f);
		break;
	}
	case A_FRAME:
		/* one frame, or (a third of the time) every frame due, as a recv
		 * that found them waiting */
		if (sim_rand() % 3 == 0)
			sim_deliver_burst(a->a, a->b, 64);
		else
			sim_deliver(a->a, a->b);
		break;
	case A_TICK:
		next_tick[a->a] = sim.now_ns + TICK_NS;
		hk_page_flush_deferred(sim.node[a->a].hk); /* e.g. threads moved away */
		hk_tick(sim.node[a->a].hk);
		break;
	case A_INVALIDATED: {
		/* the embedder's deferred invalidation finished */
		struct sim_deferral d = deferrals[a->b];
		deferrals[a->b] = deferrals[--ndeferrals];
		struct hk_node *n = sim.node[d.node].hk;
		if (d.wake) {
			hk_page_wake(n, d.page * HK_PAGE_SIZE);
			break;
		}
		translated[d.node][d.page] = 0;
		hk_page_left_done(n, d.page * HK_PAGE_SIZE);
		hk_page_flush_deferred(n);
		break;
	}
	}
}

static void start_evacuation(void)
{
	struct hk_node *n = sim.node[evac_node].hk;
	char why[160] = "";
	/* the others must hold the guest: otherwise it is refused, and nothing
	 * changes */
	uint64_t budget = n->budget_pages;
	bool fits = !budget || budget * (uint64_t)(sim.nodes - 1) >= sim.pages + (uint64_t)(sim.nodes - 1);
	int r = hk_evacuate(n, "sim", why, sizeof(why));
	if (sim.verbose)
		fprintf(stdout, "sim seed %lu step %lu: evacuate node %d: %d %s\n", sim.seed, steps,
			evac_node, r, why);
	if (fits && r)
		violation("evacuation of node %d refused: %s", evac_node, why);
	if (!fits && r != -ENOSPC)
		violation("evacuation of node %d with too little room elsewhere: %d", evac_node, r);
	if (r) {
		evac_node = -1;
		return;
	}
	evac_phase = HK_EVAC_VCPUS;
	hk_drain_local(n);
}

/* What a trace's replay under one policy cost, on one line. */
static void print_replay(void)
{
	uint64_t stalls = 0, moved = 0, swaps = 0;
	for (int k = 0; k < sim.nodes; k++) {
		const struct hk_counters *c = &sim.node[k].hk->stats.node;
		stalls += c->read_stalls + c->write_stalls;
		moved += c->pages_received;
		swaps += c->vcpu_swaps;
	}
	fprintf(stdout, "trace policy=%s nodes=%d vcpus=%d pages=%lu accesses=%lu stalls=%lu "
		"pages_moved=%lu vcpu_moves=%lu swaps=%lu virtual_ms=%.1f placement=", policy_name,
		sim.nodes, nthreads, sim.pages, trace->records, stalls, moved, sim_moves, swaps,
		(double)sim.now_ns / 1e6);
	for (int i = 0; i < nthreads; i++)
		fprintf(stdout, "%s%d", i ? "," : "", threads[i].node);
	fprintf(stdout, " violations=%lu\n", violations);
}

/* 0: clean, 1: violations, 2: hang */
static int run_seed(uint64_t seed)
{
	build_world(seed);
	struct action acts[SIM_MAX_THREADS + SIM_MAX_NODES * (SIM_MAX_NODES + 3)];
	uint64_t max_steps = getenv("SIM_MAX_STEPS") ? strtoull(getenv("SIM_MAX_STEPS"), NULL, 0) : 400000;
	if (trace && !getenv("SIM_MAX_STEPS"))
		max_steps = 400000 + 400 * trace->records;
	uint64_t quiet_since = 0;
	for (steps = 0; steps < max_steps; steps++) {
		if ((int)steps == kill_at_step && killed < 0)
			kill_node(1 + (int)sim_below((uint64_t)sim.nodes - 1));
		if ((int)steps == evac_at_step)
			start_evacuation();
		if ((int)steps == rehome_at_step) {
			struct hk_node *g = sim.node[rehome_giver].hk;
			if (hk_rehome(g, rehome_to, (uint32_t)rehome_share))
				violation("rehome of node %d to node %d refused", rehome_giver, rehome_to);
			hk_drain_local(g);
		}
		if (rehome2_pending && rehome_at_step >= 0 && (int)steps > rehome_at_step &&
		    hk_rehome(sim.node[rehome2_giver].hk, rehome_to, (uint32_t)rehome_share) == 0) {
			rehome2_pending = false;
			hk_drain_local(sim.node[rehome2_giver].hk);
		}
		/* what the event loop does when a page's hold-down ends (its timerfd) */
		for (int k = 0; k < sim.nodes; k++) {
			struct hk_node *h = sim.node[k].hk;
			if (sim.node[k].alive && h->nholds && hk_home_hold_deadline(h) <= sim.now_ns) {
				hk_home_release_held(h, sim.now_ns);
				hk_drain_local(h);
			}
		}
		int n = enabled_actions(acts, true);
		bool threads_busy = false, threads_blocked = false;
		for (int i = 0; i < nthreads; i++) {
			threads_busy |= threads[i].state != T_DONE;
			threads_blocked |= threads[i].state == T_BLOCKED;
		}
		/* an evacuation under way keeps the run going until it ends */
		threads_busy |= evac_node >= 0 && evac_phase > HK_EVAC_NONE && evac_phase < HK_EVAC_DONE;
		for (int k = 0; k < sim.nodes && rehome_giver >= 0; k++)
			threads_busy |= hk_evac_rehoming(sim.node[k].hk) || sim.node[k].hk->evac.requested ||
					sim.node[k].hk->evac.later;
		threads_busy |= rehome2_pending || narrivals > 0 || overfull();
		if (n == 0 && narrivals > 0) {
			answer_arrivals();
			continue;
		}
		if (n == 0) {
			if (!threads_busy && !frames_in_flight())
				break; /* everything done and delivered */
			/* Nothing to do now: let time pass to the next event.  If
			 * threads stay blocked while only ticks happen, they wait
			 * for something that will never come. */
			uint64_t t = next_event_ns();
			if (t == UINT64_MAX)
				break;
			sim.now_ns = t;
			continue;
		}
		bool only_ticks = true;
		for (int i = 0; i < n; i++)
			only_ticks &= acts[i].kind == A_TICK;
		if (only_ticks && threads_blocked && !frames_in_flight()) {
			/* 2 s of virtual time with nothing but timers: nothing
			 * that any back-off waits for is that long */
			if (!quiet_since)
				quiet_since = sim.now_ns;
			if (sim.now_ns - quiet_since > 2000000000ull) {
				for (int i = 0; i < nthreads; i++)
					if (threads[i].state == T_BLOCKED)
						fprintf(stdout,
							"sim seed %lu: hang: node %d thread %d blocked on page %lu (%s)\n",
							seed, threads[i].node, threads[i].tid, threads[i].page,
							threads[i].write ? "write" : "read");
				return 2;
			}
		} else if (!only_ticks) {
			quiet_since = 0;
		}
		do_action(&acts[sim_below((uint64_t)n)]);
		answer_arrivals();
		sim.now_ns += 1000 + sim_below(20000);
		check_pages();
		check_budgets();
	}
	if (steps >= max_steps) {
		fprintf(stdout, "sim seed %lu: hang: no end after %lu steps (livelock?)\n", seed, steps);
		if (overfull()) {
			fprintf(stdout, "  a node runs more threads than its %u CPUs while another has room:", sim_cpus);
			for (int i = 0; i < nthreads; i++)
				fprintf(stdout, " t%d@%d", i, threads[i].node);
			fputc('\n', stdout);
			for (int k = 0; k < sim.nodes; k++) {
				struct hk_cluster *c = &sim.node[k].hk->cluster;
				fprintf(stdout, "    node %d sees (home/location/seq):", k);
				for (int i = 0; i < nthreads; i++)
					fprintf(stdout, " %d/%d/%lu", c->home[i], c->location[i], c->seq[i]);
				fputc('\n', stdout);
			}
		}
		if (rehome_giver >= 0)
			fprintf(stdout, "  rehome %d->%d/%d at %d; second by node %d %s\n", rehome_giver,
				rehome_to, rehome_share, rehome_at_step, rehome2_giver,
				rehome2_pending ? "still asking" : "asked");
		for (int k = 0; k < sim.nodes; k++)
			fprintf(stdout, "  node %d: evac.node=%d rehome=%d requested=%d phase=%d later=%s\n",
				k, sim.node[k].hk->evac.node, sim.node[k].hk->evac.rehome,
				sim.node[k].hk->evac.requested, sim.node[k].hk->evac.st.phase,
				sim.node[k].hk->evac.later ? "yes" : "no");
		for (int k = 0; k < sim.nodes; k++) {
			struct hk_node *n = sim.node[k].hk;
			fprintf(stdout, "  node %d%s: resident=%lu budget=%lu evictions=%lu sent:", k,
				sim.node[k].alive ? "" : " (dead)", n->resident, n->budget_pages,
				n->stats.node.evictions);
			for (int t = 1; t < HK_MSG_TYPE_COUNT; t++)
				if (n->stats.msgs_sent[t])
					fprintf(stdout, " %s=%lu", hk_msg_type_name((unsigned)t),
						n->stats.msgs_sent[t]);
			fputc('\n', stdout);
			fprintf(stdout, "    maps:");
			for (uint64_t p = 0; p < sim.pages; p++)
				if (readable(sim.node[k].map[p]))
					fprintf(stdout, " %lu%s", p, writable(sim.node[k].map[p]) ? "w" : "r");
			fputc('\n', stdout);
		}
		for (uint64_t p = 0; p < sim.pages && sim.verbose; p++) {
			int h = hk_home_of(sim.node[0].hk, p);
			struct hk_dir_entry *e = &sim.node[h].hk->dir.e[p];
			fprintf(stdout, "    page %lu: home %d owner %d copyset %lx phase %d cur %d push %d |", p,
				h, e->owner, e->copyset, e->phase, e->cur_node, e->cur_push);
			for (int k = 0; k < sim.nodes; k++) {
				struct hk_page *pg = &sim.node[k].hk->pages[p];
				fprintf(stdout, " n%d:st%d%s%s%s%s%s", k, pg->state, pg->req_pending ? " req" : "",
					pg->await_room ? " room" : "", pg->dropping ? " drop" : "",
					pg->ack_type ? " ack" : "", pg->waiters ? " W" : "");
			}
			fputc('\n', stdout);
		}
		for (int i = 0; i < nthreads; i++)
			if (threads[i].state != T_DONE)
			{
				fprintf(stdout, "  thread %d on node %d: %s page %lu", threads[i].tid,
					threads[i].node, threads[i].state == T_BLOCKED ? "blocked on" : "ready,",
					threads[i].page);
				if (threads[i].page < sim.pages) {
					struct hk_page *p = &sim.node[threads[i].node].hk->pages[threads[i].page];
					int nw = 0;
					for (struct hk_waiter *w = p->waiters; w; w = w->next)
						nw++;
					fprintf(stdout, " (state %d, %d waiters, req %d, move asked %d, "
						"awaits room %d, dropping %d)", p->state, nw, p->req_pending,
						p->move_asked, p->await_room, p->dropping);
				}
				fputc('\n', stdout);
			}
		return 2;
	}
	for (int i = 0; i < nthreads; i++) {
		if (threads[i].state == T_BLOCKED) {
			fprintf(stdout, "sim seed %lu: hang: node %d thread %d blocked on page %lu\n", seed,
				threads[i].node, threads[i].tid, threads[i].page);
			return 2;
		}
	}
	if (evac_node >= 0 && evac_phase != HK_EVAC_NONE && evac_phase != HK_EVAC_DONE)
		violation("the evacuation of node %d stopped in phase %d", evac_node, evac_phase);
	if (killed < 0)
		check_final();
	if (sim.verbose) {
		uint64_t ra = 0, ev = 0, dw = 0, ph = 0, rh = 0, ir = 0;
		for (int k = 0; k < sim.nodes; k++) {
			ir += sim.node[k].hk->stats.node.install_runs;
			ph += sim.node[k].hk->stats.node.page_holds;
			rh += sim.node[k].hk->stats.node.read_holds;
			ra += sim.node[k].hk->stats.node.readaheads;
			ev += sim.node[k].hk->stats.node.evictions;
			dw += sim.node[k].hk->stats.node.deferred_wakes;
		}
		fprintf(stdout, "sim seed %lu: steps=%lu frames=%lu writes=%lu readaheads=%lu install_runs=%lu "
			"evictions=%lu deferred_wakes=%lu page_holds=%lu read_holds=%lu vcpu_moves=%lu evacuation=%d "
			"rehome=%d->%d/%d violations=%lu\n",
			seed, steps, sim.frames_delivered, version, ra, ir, ev, dw, ph, rh, sim_moves,
			evac_node >= 0 ? (int)evac_phase : -1, rehome_giver, rehome_to, rehome_share,
			violations);
	}
	if (trace)
		print_replay();
	return violations ? 1 : 0;
}

/* Seeds run in forked children, up to --jobs at once (the nightly form runs a
 * quarter of a million: one core alone would take half an hour). stdout is fully
 * buffered (main sets it before any output) and flushed before each fork, so a
 * child's verdicts go out in one write at its exit and parallel seeds' lines do not
 * mix. */

static pid_t start_child(uint64_t seed)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(3);
	}
	if (pid == 0) {
		/* the library's own warnings only with -v; verdicts go to stdout */
		if (!sim.verbose) {
			int fd = open("/dev/null", O_WRONLY);
			if (fd >= 0)
				dup2(fd, STDERR_FILENO);
		}
		int r = run_seed(seed);
		fflush(stdout);
		_exit(r);
	}
	return pid;
}

static int verdict(uint64_t seed, int st)
{
	if (WIFEXITED(st) && WEXITSTATUS(st) <= 2)
		return WEXITSTATUS(st);
	fprintf(stdout, "sim seed %lu: the library died (%s %d): an invariant assertion or a crash\n",
		seed, WIFSIGNALED(st) ? "signal" : "status",
		WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	return 1;
}

struct running {
	pid_t pid;
	uint64_t seed;
};

/* Wait for any child; returns its verdict and which seed it ran. */
static int reap(struct running *run, int *n, uint64_t *seed)
{
	int st;
	pid_t pid = waitpid(-1, &st, 0);
	if (pid < 0) {
		perror("waitpid");
		exit(3);
	}
	for (int i = 0; i < *n; i++) {
		if (run[i].pid == pid) {
			*seed = run[i].seed;
			run[i] = run[--*n];
			return verdict(*seed, st);
		}
	}
	fprintf(stderr, "hk-sim: reaped an unknown child %d\n", (int)pid);
	exit(3);
}

/* --trace: the trace replayed under each policy in turn, each in a child. */
static int replay(char *const *files, int nfiles, const char *only, uint64_t seed,
		  uint64_t after, uint64_t before)
{
	static struct sim_trace t;
	char why[512];
	if (sim_trace_load(&t, files, nfiles, after, before, why, sizeof(why))) {
		fprintf(stderr, "hk-sim: %s\n", why);
		return 2;
	}
	trace = &t;
	static const char *const all[] = { "page", "vcpu", "cost", "learned" };
	uint64_t bad = 0, hangs = 0;
	for (int i = 0; i < 4; i++) {
		if (only && strcmp(only, all[i]))
			continue;
		trace_policy = all[i];
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 3;
		}
		if (pid == 0) {
			int r = run_seed(seed);
			fflush(stdout);
			_exit(r);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0) {
			perror("waitpid");
			return 3;
		}
		int r = verdict(seed, st);
		bad += r == 1;
		hangs += r == 2;
	}
	printf("policies=%d violations=%lu hangs=%lu\n", only ? 1 : 4, bad, hangs);
	return bad || hangs ? 1 : 0;
}

int main(int argc, char **argv)
{
	uint64_t first = 1, count = 2000, after = 0, before = UINT64_MAX;
	long jobs = 1;
	bool one = false;
	char *files[SIM_MAX_NODES * 4];
	int nfiles = 0;
	const char *only = NULL;
	static const struct option opts[] = {
		{ "seeds", required_argument, 0, 'n' },
		{ "first", required_argument, 0, 'f' },
		{ "seed", required_argument, 0, 's' },
		{ "verbose", no_argument, 0, 'v' },
		{ "jobs", required_argument, 0, 'j' },
		{ "trace", required_argument, 0, 't' },
		{ "policy", required_argument, 0, 'p' },
		{ "after", required_argument, 0, 'a' },
		{ "before", required_argument, 0, 'b' },
		{ 0, 0, 0, 0 },
	};
	int c;
	enum hk_policy_kind kind;
	while ((c = getopt_long(argc, argv, "n:f:s:vj:t:p:a:b:", opts, NULL)) != -1) {
		switch (c) {
		case 'n': count = strtoull(optarg, NULL, 0); break;
		case 'f': first = strtoull(optarg, NULL, 0); break;
		case 's': first = strtoull(optarg, NULL, 0); count = 1; one = true; break;
		case 'v': sim.verbose = true; break;
		case 'j': jobs = strtol(optarg, NULL, 0); break;
		case 't':
			if (nfiles == (int)(sizeof(files) / sizeof(files[0]))) {
				fprintf(stderr, "hk-sim: at most %d --trace files\n", nfiles);
				return 2;
			}
			files[nfiles++] = optarg;
			break;
		case 'p':
			if (hk_policy_parse(optarg, &kind)) {
				fprintf(stderr, "hk-sim: --policy %s is not a policy: use page, vcpu, "
					"cost or learned\n", optarg);
				return 2;
			}
			only = optarg;
			break;
		case 'a': after = strtoull(optarg, NULL, 0); break;
		case 'b': before = strtoull(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [--seeds N] [--first S] [--jobs J] [--seed S] [-v]\n"
				"       %s --trace FILE [--trace FILE...] [--policy P] [--seed S] "
				"[--after NS] [--before NS] [-v]\n", argv[0], argv[0]);
			return 2;
		}
	}
	if (nfiles) {
		hk_log_set_prefix("hk sim");
		return replay(files, nfiles, only, first, after, before);
	}
	if (only) {
		fprintf(stderr, "hk-sim: --policy is for --trace (a seed picks its own)\n");
		return 2;
	}
	if (jobs < 1 || jobs > 256) {
		fprintf(stderr, "hk-sim: --jobs %ld is out of range: use 1..256\n", jobs);
		return 2;
	}
	if (!one)
		setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	hk_log_set_prefix("hk sim");
	uint64_t bad = 0, hangs = 0;
	struct running run[256];
	int running = 0;
	for (uint64_t s = first; s < first + count || running > 0;) {
		int r;
		uint64_t seed = s;
		if (one) {
			r = run_seed(s++);
		} else if (s < first + count && running < jobs) {
			run[running].seed = s;
			run[running++].pid = start_child(s++);
			continue;
		} else {
			r = reap(run, &running, &seed);
		}
		if (r == 1)
			bad++;
		if (r == 2)
			hangs++;
		if (r && bad + hangs <= 5)
			fprintf(stdout, "  replay: make -C hyperkernel sim SEED=%lu   (or %s --seed %lu -v)\n",
				seed, argv[0], seed);
	}
	printf("seeds=%lu violations=%lu hangs=%lu\n", count, bad, hangs);
	return bad || hangs ? 1 : 0;
}
