/* learned.c - "learned": "cost", plus what this node learns while the guest
 * runs.
 *
 * Guest threads.  The embedder names the guest thread a stalled vCPU runs
 * (the QEMU glue: its page-table root and FS base, i.e. process and thread;
 * without a name, the host thread stands for it).  For each guest thread
 * that stalls here the node keeps a working-set summary: its stalls of the
 * last 10 ms, and, decayed, where the data of its recent stalls was (one
 * count per node).  A thread that stalls often and mostly for one node's data
 * will stall there again and again: its next stalls cost a fetch each, which
 * is what the vCPU's move saves.  So a stall's page cost is the fetch times
 *   1 + weight * (page bounces + share of the thread's stalls for the
 *       owner's data * its stalls in the last 10 ms, at most 32),
 * against the measured cost of the move, with cost's hysteresis and
 * hold-down.  Pages written from several nodes in turn (bounces: the
 * frequently-updated-page table is every page with a bounce count) draw a
 * vCPU that writes them (policy.c counts bounces for write stalls only); threads that share pages drift to the same node, capacity allowing
 * (a full node swaps one of its vCPUs back).  Into a full node only the
 * bounces of a page the guest program writes count: where a thread's data
 * lies, and the kernel's pages, move it only to a free CPU; and such a page
 * written in turn with another node makes that node's writer a partner.
 *
 * Outcomes.  Each move is judged: if the vCPU moves on again within 50 ms
 * (back here, or anywhere else), the move was wrong (a chase) and the weight
 * drops by two fifths; if it stays where it went, the weight grows by a
 * tenth.  The weight scales everything learned, bounces included, so a node
 * whose moves keep failing ends up bringing pages like "cost" with no
 * history (weight 0); it creeps back by 5% per quiet second to try again.
 *
 * All of it is the event thread's, but for the JSON (QMP thread): a lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk.h"

#define LEARN_THREADS 256 /* open addressing; the oldest entry is replaced */
#define LEARN_NODES 16    /* affinity kept for the first 16 nodes */
#define JUDGE_NS 50000000ull

struct learned_thread {
	uint64_t id; /* 0: free */
	uint64_t last_ns;
	struct hk_stall_window recent; /* its stalls here */
	uint32_t aff[LEARN_NODES]; /* stalls for data at each node, halved every 64 */
	uint32_t since_halving;
	uint64_t stalls;
	int vcpu;
};

struct hk_learned {
	pthread_mutex_t lock;
	struct learned_thread t[LEARN_THREADS];
	uint32_t weight_pct;
	uint64_t judge_until[HK_MAX_VCPUS]; /* a move of this vCPU awaits judgement */
	int8_t judge_target[HK_MAX_VCPUS];  /* where that move sent it */
	uint64_t moves_good, moves_bad, threads_seen, last_judged_ns;
};

struct hk_learned *hk_learned_new(void)
{
	struct hk_learned *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	pthread_mutex_init(&l->lock, NULL);
	l->weight_pct = 100;
	return l;
}

void hk_learned_free(struct hk_learned *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static struct learned_thread *thread_of(struct hk_learned *l, uint64_t id, uint64_t now)
{
	uint64_t h = id * 0x9e3779b97f4a7c15ull;
	unsigned base = (unsigned)((h >> 32) % LEARN_THREADS);
	struct learned_thread *victim = NULL;
	for (unsigned i = 0; i < 8; i++) { /* probe 8 slots, else replace the oldest */
		struct learned_thread *t = &l->t[(base + i) % LEARN_THREADS];
		if (t->id == id)
			return t;
		if (!t->id) {
			victim = t;
			break;
		}
		if (!victim || t->last_ns < victim->last_ns)
			victim = t;
	}
	memset(victim, 0, sizeof(*victim));
	victim->id = id;
	victim->recent.start = now;
	l->threads_seen++;
	return victim;
}

void hk_learned_observe(struct hk_node *n, uint64_t id, int vcpu, int owner,
			struct hk_policy_view *v)
{
	struct hk_learned *l = n->learned;
	if (!l || !id)
		return;
	uint64_t now = hk_now_ns();
	pthread_mutex_lock(&l->lock);
	struct learned_thread *t = thread_of(l, id, now);
	/* what the policy sees: the history before this stall */
	uint32_t total = 0;
	for (int k = 0; k < LEARN_NODES; k++)
		total += t->aff[k];
	v->thread_share_pct = owner >= 0 && owner < LEARN_NODES && total ?
				      (uint32_t)(100ull * t->aff[owner] / total) : 0;
	v->thread_stalls = hk_stall_window_count(&t->recent, now);
	v->weight_pct = l->weight_pct;
	/* and this stall into it */
	t->stalls++;
	t->last_ns = now;
	t->vcpu = vcpu;
	if (owner >= 0 && owner < LEARN_NODES)
		t->aff[owner] += 16;
	if (++t->since_halving >= 64) {
		t->since_halving = 0;
		for (int k = 0; k < LEARN_NODES; k++)
			t->aff[k] /= 2;
	}
	pthread_mutex_unlock(&l->lock);
}

static void judge(struct hk_learned *l, int vcpu, bool good)
{
	l->judge_until[vcpu] = 0;
	l->last_judged_ns = hk_now_ns();
	if (good) {
		l->moves_good++;
		l->weight_pct = l->weight_pct * 11 / 10 + 5 > 400 ? 400 : l->weight_pct * 11 / 10 + 5;
	} else {
		l->moves_bad++;
		l->weight_pct = l->weight_pct * 3 / 5 < 5 ? 0 : l->weight_pct * 3 / 5;
	}
}

void hk_learned_moved(struct hk_node *n, int vcpu, int target)
{
	struct hk_learned *l = n->learned;
	if (!l || vcpu < 0 || vcpu >= HK_MAX_VCPUS)
		return;
	pthread_mutex_lock(&l->lock);
	l->judge_until[vcpu] = hk_now_ns() + JUDGE_NS;
	l->judge_target[vcpu] = (int8_t)target;
	pthread_mutex_unlock(&l->lock);
}

void hk_learned_relocated(struct hk_node *n, int vcpu, int node)
{
	struct hk_learned *l = n->learned;
	if (!l || vcpu < 0 || vcpu >= HK_MAX_VCPUS)
		return;
	pthread_mutex_lock(&l->lock);
	/* the target saying it arrived is the move itself; anything else
	 * within the window is the vCPU moving on: a chase */
	if (l->judge_until[vcpu] && node != l->judge_target[vcpu])
		judge(l, vcpu, hk_now_ns() > l->judge_until[vcpu]);
	pthread_mutex_unlock(&l->lock);
}

void hk_learned_tick(struct hk_node *n)
{
	struct hk_learned *l = n->learned;
	if (!l)
		return;
	uint64_t now = hk_now_ns();
	pthread_mutex_lock(&l->lock);
	for (int v = 0; v < HK_MAX_VCPUS; v++)
		if (l->judge_until[v] && now > l->judge_until[v])
			judge(l, v, true);
	if (l->weight_pct < 100 && now - l->last_judged_ns > 1000000000ull) {
		l->weight_pct += 5; /* quiet for a second: try moving again */
		l->last_judged_ns = now;
	}
	pthread_mutex_unlock(&l->lock);
}

static void policy_decide(const struct hk_policy_view *v, struct hk_decision *d)
{
	if (!hk_policy_may_move(v, d))
		return;
	uint64_t recent = v->thread_stalls < 32 ? v->thread_stalls : 32;
	/* Where the thread's data lies, and the kernel's pages that bounce,
	 * draw it only to a node with a free CPU.  Into a full node the move
	 * is a swap, which also sends one of that node's vCPUs here, away
	 * from whatever its next thread's data is; the thread's data is still
	 * fetched at a read-ahead's cost, and every CPU writes the kernel's
	 * per-CPU areas, run queues and RCU state now and then, wherever it
	 * runs.  Only a page the program itself writes in turn with another
	 * node is worth a swap.  (On 2 nodes with 4 vCPUs every node is full,
	 * so every move is a swap: "sweep", "lock" and "pingpong" ran 3x, 12x
	 * and 34x slower in boots where data affinity swapped 5-7 times than
	 * in one where it did not, and counting the kernel's bounces made it
	 * swap 5-60 times a workload.) */
	uint64_t history_x16 = 0;
	if (d->swap_vcpu < 0)
		history_x16 = 16ull * v->page_bounces + 16ull * v->thread_share_pct * recent / 100;
	else if (v->stall->user)
		history_x16 = 16ull * v->page_bounces;
	/* A page the guest program (user code, not the kernel) writes here,
	 * and that came back again and again within 100 ms each time
	 * (HK_PARTNER_BOUNCES in a row, default 32, scaled by the weight, page.c): a thread
	 * at the other node writes it just as often, and its vCPU spinning
	 * there waiting for it is what keeps that node's CPUs busy.  Next to
	 * it the two hand the page over through memory, and a vCPU spinning
	 * in a PAUSE loop yields its host CPU to the other (pause.c in the
	 * glue): about 3 us a hand-off on one host CPU, against 85 us across
	 * the wire.  Not for the kernel's pages (above).  32, not 8: at 8,
	 * a program's ordinary shared pages (prodcons' queue, sweep's and
	 * clock's shared words) swapped vCPUs away from their data 1-12 times
	 * a workload, and in one bench policies run learned was up to 1.55x
	 * behind page and moved as many bytes; at 32 (the next run) 1.18x and
	 * half the bytes, while pingpong pinned to two nodes still gathers
	 * (105 k rounds/s, against page's 6.6 k). */
	bool partner_there = v->stall->user &&
			     (uint64_t)v->page_bounces * v->weight_pct / 100 >= v->partner_bounces;
	hk_policy_compare(v, d, 16 + history_x16 * v->weight_pct / 100, HK_WHY_LEARNED_VCPU,
			  HK_WHY_LEARNED_PAGE, partner_there);
}

const struct hk_policy hk_policy_learned = { "learned", policy_decide };

/* What it learned: the weight, the judged moves, and the threads that stall
 * most here with where their data was. */
char *hk_learned_json(struct hk_node *n)
{
	struct hk_learned *l = n->learned;
	size_t cap = 8192, len = 0;
	char *s = malloc(cap);
	if (!s || !l) {
		free(s);
		return NULL;
	}
	pthread_mutex_lock(&l->lock);
	len += (size_t)snprintf(s + len, cap - len,
				"{\"weight_pct\":%u,\"moves_good\":%lu,\"moves_bad\":%lu,"
				"\"threads_seen\":%lu,\"threads\":[",
				l->weight_pct, l->moves_good, l->moves_bad, l->threads_seen);
	/* the 8 threads with the most stalls */
	bool used[LEARN_THREADS] = { false };
	for (int k = 0; k < 8; k++) {
		int best = -1;
		for (int i = 0; i < LEARN_THREADS; i++)
			if (l->t[i].id && !used[i] && (best < 0 || l->t[i].stalls > l->t[best].stalls))
				best = i;
		if (best < 0)
			break;
		used[best] = true;
		const struct learned_thread *t = &l->t[best];
		len += (size_t)snprintf(s + len, cap - len,
					"%s{\"thread\":\"%016lx\",\"vcpu\":%d,\"stalls\":%lu,"
					"\"data_at\":[",
					k ? "," : "", t->id, t->vcpu, t->stalls);
		for (int j = 0; j < LEARN_NODES && j < n->count; j++)
			len += (size_t)snprintf(s + len, cap - len, "%s%u", j ? "," : "", t->aff[j]);
		len += (size_t)snprintf(s + len, cap - len, "]}");
	}
	snprintf(s + len, cap - len, "]}");
	pthread_mutex_unlock(&l->lock);
	return s;
}
