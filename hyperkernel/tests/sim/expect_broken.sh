#!/bin/sh
# The simulation must be able to fail: with invalidations of remote sharers
# skipped (HK_DEBUG_SKIP_INVALIDATE=1) stale copies survive writes, and
# hk-sim must report violations and exit non-zero.
sim="$1"
out=$(HK_DEBUG_SKIP_INVALIDATE=1 "$sim" --seeds 200 2>&1)
rc=$?
last=$(echo "$out" | tail -1)
v=$(echo "$last" | sed -n 's/^seeds=[0-9]* violations=\([0-9]*\) hangs=.*/\1/p')
if [ "$rc" -ne 0 ] && [ -n "$v" ] && [ "$v" -gt 0 ]; then
	echo "$out" | grep -m1 violation
	echo "sim-broken: PASS (broken protocol caught: exit $rc, $last)"
else
	echo "sim-broken: FAIL (exit $rc, ${last:-no output}): the simulation did not catch a broken protocol"
	exit 1
fi
# And the chase bound: without a hold-down (HK_HOLD_DOWN_US=0), "cost" and
# "learned" move a vCPU again within 10 ms of its last move.
out=$(HK_HOLD_DOWN_US=0 "$sim" --seeds 200 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && echo "$out" | grep -q "moved again"; then
	echo "$out" | grep -m1 "moved again"
	echo "sim-broken: PASS (chase caught without the hold-down: exit $rc, $(echo "$out" | tail -1))"
else
	echo "sim-broken: FAIL (exit $rc): the simulation did not catch vCPUs chasing pages"
	exit 1
fi
# A protocol step left out on purpose ($1=1 in the environment) must end in
# violations or hangs (a non-zero exit).
expect_caught() {
	knob="$1" what="$2"
	out=$(env "$knob=1" "$sim" --seeds 400 2>&1)
	rc=$?
	last=$(echo "$out" | tail -1)
	if [ "$rc" -ne 0 ]; then
		echo "$out" | grep -m1 -E "violation|hang"
		echo "sim-broken: PASS ($what caught: exit $rc, $last)"
	else
		echo "sim-broken: FAIL (exit $rc, $last): the simulation did not catch $what"
		exit 1
	fi
}
# And evacuation: a leaver that hands its directory over without freezing
# the others' requests first loses requests or serves them from a stale entry.
expect_caught HK_DEBUG_EVAC_SKIP_FREEZE "evacuation without the freeze"
# And a rehome (a joining node's share of homes) that does the same.
expect_caught HK_DEBUG_REHOME_SKIP_FREEZE "rehome without the freeze"
# And capacity: a node left overfull when two moves cross (no correction on
# the tick) ends a seed still overfull while another node has room.
expect_caught HK_DEBUG_SKIP_CAPACITY_TICK "a node left with more vCPUs than its CPUs"
