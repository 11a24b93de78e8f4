/* test_policy.c - each policy is a pure function of its view: "page" always
 * brings, "vcpu" goes to the owner, "cost" compares measured costs with
 * hysteresis and a hold-down; none moves a vCPU to a full node, to itself,
 * or a thread that runs no vCPU. */
#include <stdlib.h>
#include <string.h>

#include "hk.h"
#include "hk_test.h"

static struct hk_stall stall = { .vcpu = 1, .likely_owner = 2, .home_node = 1 };

/* A stall on node 0 for a page node 2 owns; room there; nothing measured. */
static struct hk_policy_view view(void)
{
	return (struct hk_policy_view){
		.stall = &stall, .self = 0, .owner = 2, .target_vcpus = 0, .target_capacity = 1,
		.since_moved_ns = UINT64_MAX, .hold_down_ns = 10000000, .vcpu_prior_ns = 500000,
		.hysteresis_pct = 25, .partner_bounces = 32, .swap_vcpu = -1,
		.vcpu_stalls = 1000, /* stalls all the time */
	};
}

static struct hk_decision decide(const struct hk_policy *p, const struct hk_policy_view *v)
{
	struct hk_decision d = { HK_MOVE_VCPU, 7, 99, 5 };
	p->decide(v, &d);
	return d;
}

static void test_parse(void)
{
	enum hk_policy_kind p;
	CHECK(hk_policy_parse("page", &p) == 0 && p == HK_POLICY_PAGE);
	CHECK(hk_policy_parse("vcpu", &p) == 0 && p == HK_POLICY_VCPU);
	CHECK(hk_policy_parse("cost", &p) == 0 && p == HK_POLICY_COST);
	CHECK(hk_policy_parse("learned", &p) == 0 && p == HK_POLICY_LEARNED);
	CHECK(hk_policy_parse("nonsense", &p) == -EINVAL);
	CHECK(hk_policy_parse(NULL, &p) == 0 && p == HK_POLICY_PAGE);
	for (int k = 0; k < HK_POLICY_COUNT; k++)
		CHECK(strstr(hk_policy_names(), hk_policy_name((enum hk_policy_kind)k)));
	for (unsigned r = 0; r < HK_WHY_COUNT; r++)
		CHECK(strcmp(hk_reason_name(r), "?") != 0);
}

static void test_page_and_vcpu(void)
{
	struct hk_policy_view v = view();
	struct hk_decision d = decide(&hk_policy_page, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_ALWAYS);
	d = decide(&hk_policy_vcpu, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.target_node == 2 && d.reason == HK_WHY_TO_OWNER &&
	      d.swap_vcpu == -1);
}

/* What every moving policy refuses. */
static void test_moves_refused(void)
{
	const struct hk_policy *movers[] = { &hk_policy_vcpu, &hk_policy_cost, &hk_policy_learned };
	for (unsigned i = 0; i < 3; i++) {
		struct hk_policy_view v = view();
		v.vcpu_ns = 1; /* a move would be cheap */
		v.page_ns = 1000000;
		v.target_vcpus = 1; /* node 2's one CPU is taken */
		struct hk_decision d = decide(movers[i], &v);
		CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_FULL && d.swap_vcpu == -1);
		/* full, but one of its vCPUs can come here in exchange */
		v.swap_vcpu = 3;
		d = decide(movers[i], &v);
		CHECK(d.kind == HK_MOVE_VCPU && d.target_node == 2 && d.swap_vcpu == 3 &&
		      d.reason == HK_WHY_SWAP);
		v.swap_vcpu = -1;
		v.target_vcpus = 0;
		v.vcpu_fixed = true; /* e.g. vCPU 0 with the legacy PIC */
		d = decide(movers[i], &v);
		CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_FIXED_VCPU);
		v.vcpu_fixed = false;
		v.owner = 0; /* here */
		d = decide(movers[i], &v);
		CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_OWNER_HERE);
		v.owner = -1;
		d = decide(movers[i], &v);
		CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_OWNER_HERE);
		v.owner = 2;
		struct hk_stall io = stall;
		io.vcpu = -1;
		v.stall = &io;
		d = decide(movers[i], &v);
		CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_NOT_A_VCPU);
	}
}

static void test_cost(void)
{
	struct hk_policy_view v = view();
	/* a page at 60 us against a move at 500 us: bring */
	v.page_ns = 60000;
	v.vcpu_ns = 500000;
	struct hk_decision d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
	/* the same page bouncing between the nodes: it will come again and
	 * again, so the vCPU goes to it */
	v.page_bounces = 15;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.target_node == 2 && d.reason == HK_WHY_VCPU_CHEAPER);
	/* but a vCPU that stalled only twice in 10 ms expects at most three
	 * fetches, however much the page bounces: it runs from its own data */
	v.vcpu_stalls = 2;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_LEARNED_PAGE);
	v.vcpu_stalls = 1000;
	/* a vCPU that brought 2 MiB of its own here lately would fetch them
	 * again after the move: 15 bounces of a 60 us page do not pay for it */
	v.vcpu_ws = 512;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
	v.vcpu_ws = 8; /* a few pages: the move still wins */
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_MOVE_VCPU);
	v.vcpu_ws = 0;
	/* hysteresis: a move that wins by less than 25% does not happen */
	v.page_bounces = 0;
	v.page_ns = 550000;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
	v.page_ns = 700000;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_MOVE_VCPU);
	/* into a full node, a swap: two vCPUs move, so the same page is not
	 * worth it, and one twice as dear is */
	v.target_vcpus = 1;
	v.swap_vcpu = 3;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER && d.swap_vcpu == -1);
	v.page_ns = 1300000;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.reason == HK_WHY_SWAP && d.swap_vcpu == 3);
	v.target_vcpus = 0;
	v.swap_vcpu = -1;
	/* hold-down: a vCPU that just arrived stays, however cheap the move */
	v.since_moved_ns = 1000000;
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_HOLD_DOWN);
	/* nothing measured: the prior for a move, a quarter of it for a page */
	v = view();
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
}

/* No chase: under "cost" and "learned", a vCPU moves at most once per hold-down, whatever
 * the page does.  An adversary hands the page to a random one of 4 nodes
 * every 10 us, and the page looks as hot as it can (bouncing, a move far
 * cheaper than a fetch); vCPU k stalls on it whenever it is elsewhere.  In
 * 100 ms, with a 10 ms hold-down, each vCPU moves at most 100 / 10 + 1
 * times, and without the hold-down it would move thousands of times. */
static void never_chases(const struct hk_policy *policy)
{
	uint64_t now = 0, arrived[2] = { 0, 0 }, rng = 88172645463325252ull;
	int node[2] = { 0, 1 }, moves[2] = { 0, 0 }, owner = 0;
	for (int step = 0; step < 10000; step++, now += 10000) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		owner = (int)(rng % 4);
		int k = step & 1;
		if (node[k] == owner)
			continue;
		struct hk_stall s = { .vcpu = k, .likely_owner = owner };
		struct hk_policy_view v = view();
		v.stall = &s;
		v.self = node[k];
		v.owner = owner;
		v.target_capacity = 2;
		v.target_vcpus = node[!k] == owner;
		v.page_ns = 60000;
		v.vcpu_ns = 20000;
		v.page_bounces = 200;
		v.since_moved_ns = arrived[k] ? now - arrived[k] : UINT64_MAX;
		v.thread_stalls = 32; /* learned: as hot a history as there is */
		v.thread_share_pct = 100;
		v.weight_pct = 400;
		struct hk_decision d = decide(policy, &v);
		if (d.kind == HK_MOVE_VCPU) {
			CHECK(d.target_node == owner);
			node[k] = d.target_node;
			arrived[k] = now;
			moves[k]++;
		}
	}
	for (int k = 0; k < 2; k++)
		CHECK(moves[k] >= 5 && moves[k] <= 100 / 10 + 1);
}

static void test_cost_and_learned_never_chase(void)
{
	never_chases(&hk_policy_cost);
	never_chases(&hk_policy_learned);
}

/* "learned": a thread that stalls often, mostly for one node's data, goes
 * there, where "cost" (one fetch against one move) brings the page; a
 * thread with no such history is left alone; the weight follows outcomes. */
static void test_learned(void)
{
	struct hk_policy_view v = view();
	v.page_ns = 60000;
	v.vcpu_ns = 500000;
	v.weight_pct = 100;
	v.thread_stalls = 20;
	v.thread_share_pct = 90;
	struct hk_decision d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_PAGE_CHEAPER);
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.target_node == 2 && d.reason == HK_WHY_LEARNED_VCPU);
	/* the same thread, but node 2's CPUs are all taken: a swap, which
	 * neither its data's place nor a kernel page that bounces buys; a
	 * page the program and node 2 write in turn does */
	v.target_vcpus = 1;
	v.swap_vcpu = 3;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_LEARNED_PAGE && d.swap_vcpu == -1);
	v.page_bounces = 20;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_LEARNED_PAGE && d.swap_vcpu == -1);
	stall.user = true;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.reason == HK_WHY_SWAP && d.swap_vcpu == 3);
	stall.user = false;
	v.page_bounces = 0;
	v.target_vcpus = 0;
	v.swap_vcpu = -1;
	v.thread_share_pct = 10; /* its data is elsewhere */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_LEARNED_PAGE);
	v.thread_share_pct = 90;
	v.weight_pct = 10; /* its moves kept failing: history counts for little */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_LEARNED_PAGE);
	v.weight_pct = 100;
	v.target_cpus = 1; /* its one host CPU is busy with its own vCPU */
	v.target_busy_pct = 95;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	d = decide(&hk_policy_vcpu, &v); /* the naive policy goes anyway */
	CHECK(d.kind == HK_MOVE_VCPU);
	/* busy with the writer of a page that the program keeps handing back
	 * and forth: learned joins it there, cost does not know why it is
	 * busy; a kernel page that bounces is no such partner */
	v.page_bounces = 32;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	stall.user = true;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.reason == HK_WHY_LEARNED_VCPU);
	v.vcpu_ws = 400; /* what it leaves behind is fetched once; the partner's page every round */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU && d.reason == HK_WHY_LEARNED_VCPU);
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	v.vcpu_ws = 0;
	v.page_bounces = 31;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	v.page_bounces = 64;
	v.weight_pct = 40; /* its moves failed: it takes more bounces to believe it */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_TARGET_BUSY);
	v.weight_pct = 100;
	stall.user = false;
	v.page_bounces = 0;
	v.target_busy_pct = 20; /* mostly idle: room */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU);
	v.target_cpus = 0;
	v.sequential = true; /* a read in read-ahead's run */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_SEQUENTIAL);
	v.sequential = false;
	/* a page two of our vCPUs write, which bounces: the other writer
	 * stays, so cost and learned bring it however dear it is */
	v.many_writers = true;
	v.page_bounces = 200;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_MANY_WRITERS && d.swap_vcpu == -1);
	d = decide(&hk_policy_cost, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_MANY_WRITERS);
	v.many_writers = false;
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_MOVE_VCPU);
	v.page_bounces = 0;
	v.since_moved_ns = 1000; /* hold-down */
	d = decide(&hk_policy_learned, &v);
	CHECK(d.kind == HK_BRING_PAGE && d.reason == HK_WHY_HOLD_DOWN);
}

/* What a node learns: the features come from the thread's own stalls, and a
 * move whose vCPU comes straight back lowers the weight. */
static void test_learned_history(void)
{
	static struct hk_node n; /* only the learned state and the count are used */
	n.count = 3;
	n.learned = hk_learned_new();
	CHECK(n.learned != NULL);
	struct hk_policy_view v = view();
	for (int i = 0; i < 10; i++)
		hk_learned_observe(&n, 77, 1, 2, &v); /* thread 77's data is at node 2 */
	hk_learned_observe(&n, 77, 1, 2, &v);
	CHECK(v.thread_stalls == 10 && v.thread_share_pct == 100 && v.weight_pct == 100);
	hk_learned_observe(&n, 77, 1, 1, &v); /* one stall for node 1's data */
	CHECK(v.thread_stalls == 11 && v.thread_share_pct == 0);
	hk_learned_observe(&n, 77, 1, 2, &v);
	CHECK(v.thread_stalls == 12 && v.thread_share_pct == 91);
	hk_learned_observe(&n, 78, 2, 2, &v); /* another thread: no history yet */
	CHECK(v.thread_stalls == 0 && v.thread_share_pct == 0);
	hk_learned_moved(&n, 1, 2);
	hk_learned_relocated(&n, 1, 2); /* it arrived there: not judged yet */
	hk_learned_observe(&n, 77, 1, 2, &v);
	CHECK(v.weight_pct == 100);
	hk_learned_relocated(&n, 1, 0); /* and moved on at once: a chase */
	hk_learned_observe(&n, 77, 1, 2, &v);
	CHECK(v.weight_pct == 60);
	char *js = hk_learned_json(&n);
	CHECK(js && strstr(js, "\"moves_bad\":1") && strstr(js, "\"threads_seen\":2"));
	free(js);
	hk_learned_free(n.learned);
}

/* The vCPU a full node gives in exchange: never a fixed one or one the caller
 * must avoid (busy there: its heartbeat says it keeps running), never one
 * that just arrived, else the one with the fewest moves. */
static void test_swap_candidate(void)
{
	struct hk_node *n = calloc(1, sizeof(*n));
	CHECK(n != NULL);
	hk_cluster_init(&n->cluster);
	struct hk_cluster *c = &n->cluster;
	c->vcpus = 4;
	for (int v = 0; v < 4; v++)
		c->location[v] = c->home[v] = (int8_t)(v / 2); /* 0,1 on node 0; 2,3 on node 1 */
	c->seq[0] = 5;
	c->seq[1] = 2;
	CHECK(hk_cluster_swap_candidate(n, 0, -1, 0, 0) == 1);      /* fewer moves */
	CHECK(hk_cluster_swap_candidate(n, 0, 1, 0, 0) == 0);       /* 1 is the mover */
	CHECK(hk_cluster_swap_candidate(n, 0, -1, 1u << 1, 0) == 0); /* 1 busy */
	CHECK(hk_cluster_swap_candidate(n, 0, -1, 3, 0) == -1);     /* 0 fixed, 1 busy */
	c->moved_ns[1] = hk_now_ns();                               /* 1 just came */
	CHECK(hk_cluster_swap_candidate(n, 0, -1, 0, 10000000) == 0);
	CHECK(hk_cluster_swap_candidate(n, 1, -1, 0, 0) == 2);
	hk_cluster_destroy(c);
	free(n);
}

/* The bounce count behind "cost" and "learned" (page.c): a page back within
 * 100 ms of leaving bounced, even back within the millisecond it left (its
 * leaving time is rounded up, so it can read 1 ms ahead); one that stayed
 * away longer decays the count.  And a vCPU that wrote it once is forgotten
 * after two windows of arrivals, while one that keeps writing it stays. */
static void test_bounces(void)
{
	static struct hk_node n;
	static struct hk_page pages[1];
	n.count = 2;
	n.self = 0;
	n.pages = pages;
	struct hk_page *p = &pages[0];
	for (int k = 0; k < 10; k++) {
		hk_page_left(&n, 0);
		p->left_ms += 1; /* as if it left in the next millisecond */
		hk_page_arrived(&n, 0, 1);
	}
	CHECK(p->bounces == 10);
	p->left_ms -= 1000; /* away for a second */
	hk_page_arrived(&n, 0, 1);
	CHECK(p->bounces == 5);
	p->writers = 1ull << 3; /* vCPU 3 wrote it once, at the start */
	for (int k = 0; k < 40; k++) {
		hk_page_left(&n, 0);
		hk_page_arrived(&n, 0, 1);
		p->writers |= 1ull << 2; /* vCPU 2 writes it on every round */
	}
	CHECK((p->writers | p->writers_before) == 1ull << 2);
}

int main(void)
{
	RUN(test_parse);
	RUN(test_page_and_vcpu);
	RUN(test_moves_refused);
	RUN(test_cost);
	RUN(test_cost_and_learned_never_chase);
	RUN(test_learned);
	RUN(test_learned_history);
	RUN(test_swap_candidate);
	RUN(test_bounces);
	TEST_DONE();
}
