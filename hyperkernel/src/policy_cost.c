/* policy_cost.c - "cost": bring the page or move the vCPU, whichever the
 * costs measured on the link say is cheaper.
 *
 * A page costs what fetching it from its owner has cost lately (EWMA of
 * request to data on that link), once for this stall and once more for
 * every recent bounce: a page that keeps leaving and coming back (two
 * nodes writing it in turn) will be fetched again, and again.  A vCPU move
 * costs what the last moves to that node cost (send to its VCPU_AT, which
 * includes the state transfer and the load there), or a prior until one
 * was measured.  The vCPU moves only if that wins by hysteresis_pct, and
 * never within hold_down of its last arrival, so a vCPU and a page cannot
 * chase each other: each vCPU moves at most once per hold-down. */
#include "hk.h"

static void cost_decide(const struct hk_policy_view *v, struct hk_decision *d)
{
	if (!hk_policy_may_move(v, d))
		return;
	d->kind = HK_BRING_PAGE;
	d->target_node = -1;
	if (v->since_moved_ns < v->hold_down_ns) {
		d->reason = HK_WHY_HOLD_DOWN;
		d->swap_vcpu = -1;
		return;
	}
	uint64_t fetch = v->page_ns ? v->page_ns : v->vcpu_prior_ns / 4;
	uint64_t page_cost = fetch * (1 + (uint64_t)v->page_bounces);
	uint64_t vcpu_cost = v->vcpu_ns ? v->vcpu_ns : v->vcpu_prior_ns;
	if (vcpu_cost * (100 + (uint64_t)v->hysteresis_pct) / 100 < page_cost) {
		d->kind = HK_MOVE_VCPU;
		d->target_node = v->owner;
		d->reason = d->swap_vcpu >= 0 ? HK_WHY_SWAP : HK_WHY_VCPU_CHEAPER;
		return;
	}
	d->reason = HK_WHY_PAGE_CHEAPER;
	d->swap_vcpu = -1;
}

const struct hk_policy hk_policy_cost = { "cost", cost_decide };
