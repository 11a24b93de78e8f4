/* policy_cost.c - "cost": bring the page or move the vCPU, whichever the
 * costs measured on the link say is cheaper.
 *
 * A page costs what fetching it from its owner has cost lately (EWMA of
 * request to data on that link), once for this stall and, for a write,
 * once more for every recent bounce: a page that keeps leaving and coming
 * back (two nodes writing it in turn) will be fetched again, and again.  A
 * vCPU move costs what the last moves to that node cost (send to its
 * VCPU_AT, which includes the state transfer and the load there), or a
 * prior until one was measured; twice that into a full node (a swap).  The
 * vCPU moves only if that wins by hysteresis_pct, and never within
 * hold_down of its last arrival, so a vCPU and a page cannot chase each
 * other: each vCPU moves at most once per hold-down.  A page that several
 * of this node's vCPUs write, and that bounces, is always brought: no single
 * move can stop its bouncing.  The fetches expected are capped by the
 * vCPU's own recent stalls: one that rarely stalls has nothing to gain.  And
 * a move also costs the pages the vCPU took for writing here lately (its
 * working set, pages that do not bounce), a quarter of which it is assumed
 * to fetch again wherever it goes. */
#include "hk.h"

/* Move if the vCPU's cost, plus hysteresis, beats the page's cost times
 * repeats_x16 / 16 (the fetches expected: this one and those to come). */
void hk_policy_compare(const struct hk_policy_view *v, struct hk_decision *d,
		       uint64_t repeats_x16, unsigned move_why, unsigned page_why,
		       bool partner_there)
{
	d->kind = HK_BRING_PAGE;
	d->target_node = -1;
	if (v->since_moved_ns < v->hold_down_ns) {
		d->reason = HK_WHY_HOLD_DOWN;
		d->swap_vcpu = -1;
		return;
	}
	/* The page bounces, and two or more of our vCPUs write it: whichever
	 * one moves, the others keep writing it here, so it bounces on and
	 * the move buys nothing but a vCPU away from its own data.  These are
	 * the guest kernel's globals that every CPU writes (jiffies, the
	 * scheduler's nohz and avenrun, rcu_state): they drew vCPUs of
	 * "private", whose threads share nothing, into swaps. */
	if (v->many_writers) {
		d->reason = HK_WHY_MANY_WRITERS;
		d->swap_vcpu = -1;
		return;
	}
	/* Its host CPUs run its own vCPUs all the time: ours would wait for
	 * one, or take it from one of them, a cost no link figure shows (three
	 * quarters of a CPU must be free).  Unless what keeps it busy is the
	 * partner this vCPU waits for. */
	if (!partner_there && v->target_cpus && v->target_busy_pct + 75 > 100 * v->target_cpus) {
		d->reason = HK_WHY_TARGET_BUSY;
		d->swap_vcpu = -1;
		return;
	}
	/* A thread reading through memory in order: read-ahead has its next
	 * pages on the way, so each costs a fraction of a fetch, and a vCPU
	 * sent to the data would leave that stream behind. */
	if (v->sequential) {
		d->reason = HK_WHY_SEQUENTIAL;
		d->swap_vcpu = -1;
		return;
	}
	/* A move saves at most the stalls the vCPU goes on taking, and a vCPU
	 * that stalls rarely here runs from memory it has here, which a move
	 * would leave behind: the fetches expected are at most one more than
	 * its stalls of the last 10 ms.  (A page that bounces is fetched again
	 * only if this vCPU touches it again; "private"'s threads, which share
	 * nothing, were swapped back and forth for the guest kernel's pages.) */
	if (repeats_x16 > 16ull * (1 + (uint64_t)v->vcpu_stalls))
		repeats_x16 = 16ull * (1 + (uint64_t)v->vcpu_stalls);
	uint64_t fetch = v->page_ns ? v->page_ns : v->vcpu_prior_ns / 4;
	uint64_t page_cost = fetch * repeats_x16 / 16;
	/* The vCPU leaves its working set here behind, and whatever it
	 * touches again comes after it, a fetch a page: count a quarter of
	 * it.  (A thread of "private" that filled its 2 MiB here would fetch
	 * hundreds of its own pages back for one kernel page it stalled on.)
	 * Not so beside a partner: those pages come after it once, and the
	 * page the two write in turn crosses the wire every round for as long
	 * as they stay apart, far beyond the 10 ms the fetches are counted
	 * over. */
	uint64_t vcpu_cost = (v->vcpu_ns ? v->vcpu_ns : v->vcpu_prior_ns) +
			     (partner_there ? 0 : fetch * (uint64_t)v->vcpu_ws / 4);
	/* Into a full node, a swap: two vCPUs move, and the one sent back
	 * loses whatever it had there (a reader next to its writer's data
	 * sent away for an idle vCPU that woke for the timer tick). */
	if (d->swap_vcpu >= 0)
		vcpu_cost *= 2;
	if (vcpu_cost * (100 + (uint64_t)v->hysteresis_pct) / 100 < page_cost) {
		d->kind = HK_MOVE_VCPU;
		d->target_node = v->owner;
		d->reason = d->swap_vcpu >= 0 ? HK_WHY_SWAP : move_why;
		return;
	}
	d->reason = page_why;
	d->swap_vcpu = -1;
}

static void cost_decide(const struct hk_policy_view *v, struct hk_decision *d)
{
	if (!hk_policy_may_move(v, d))
		return;
	hk_policy_compare(v, d, 16 * (1 + (uint64_t)v->page_bounces), HK_WHY_VCPU_CHEAPER,
			  HK_WHY_PAGE_CHEAPER, false);
}

const struct hk_policy hk_policy_cost = { "cost", cost_decide };
