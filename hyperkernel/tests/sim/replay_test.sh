#!/bin/sh
# A recorded guest's faults, replayed under every policy (hk-sim --trace):
# tests/sim/traces/pingpong-2n4v.trace is 50 ms of pingpong between vCPU 0
# (node 0, which never moves) and vCPU 2 (node 1), recorded under "page".
#   - every policy replays it with no violation, no hang and no chase;
#   - "page" moves no vCPU; without migratory reads (HK_MIGRATORY=0) it stalls
#     on at least 90% of the accesses, as the recording did (the replay keeps
#     each page's order between vCPUs); with them, on a sixth fewer at least
#     (a read of a page read-then-written in turn brings it writable, and
#     the write does not stall again);
#   - "vcpu", "cost" and "learned" bring vCPU 2 to node 0 (a swap, since the
#     node's 2 CPUs are taken), and then stall on at most a tenth as many.
# And it must be able to fail: the same trace with invalidations skipped
# (HK_DEBUG_SKIP_INVALIDATE=1) must end in violations, and "learned" told
# that a vCPU's move costs a second (HK_VCPU_COST_US) must not gather.
sim="$1" dir=$(dirname "$0")
trace="$dir/traces/pingpong-2n4v.trace"
fail() { echo "replay: FAIL: $*"; echo "$out"; exit 1; }
field() { echo "$out" | grep "policy=$1 " | sed -n "s/.* $2=\([0-9.,]*\).*/\1/p"; }

out=$("$sim" --trace "$trace" 2>&1) || fail "exit $? replaying $trace"
echo "$out"
acc=$(field page accesses)
[ "$(field page vcpu_moves)" = 0 ] || fail "page moved a vCPU"
with=$(field page stalls)
all=$(out=$(HK_MIGRATORY=0 "$sim" --trace "$trace" --policy page 2>&1) && field page stalls) ||
	fail "exit $? replaying under page without migratory reads"
echo "page without migratory reads: stalls=$all"
[ "$all" -ge $((acc * 9 / 10)) ] || fail "page without migratory reads stalled on fewer than 90% of $acc accesses"
[ "$with" -le $((all * 5 / 6)) ] || fail "migratory reads saved under a sixth of page's $all stalls ($with)"
for p in vcpu cost learned; do
	place=$(field $p placement)
	[ "$(echo "$place" | cut -d, -f1,3)" = "0,0" ] || fail "$p left vCPUs 0 and 2 apart ($place)"
	[ "$(field $p stalls)" -le $(($(field page stalls) / 10)) ] || fail "$p stalled as much as page"
done

out=$(HK_DEBUG_SKIP_INVALIDATE=1 "$sim" --trace "$trace" --policy page 2>&1) &&
	fail "skipped invalidations went unseen"
echo "$out" | grep -q violation || fail "skipped invalidations: no violation reported"
out=$(HK_VCPU_COST_US=1000000 "$sim" --trace "$trace" --policy learned 2>&1) ||
	fail "exit $? replaying under a learned that finds moves too dear"
[ "$(field learned placement)" = "0,0,1,1" ] || fail "learned gathered though a move costs a second"
echo "replay: PASS (a recorded trace under every policy; a broken protocol and a costing that forbids moves caught)"
