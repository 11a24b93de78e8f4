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
	exit 0
fi
echo "sim-broken: FAIL (exit $rc, ${last:-no output}): the simulation did not catch a broken protocol"
exit 1
