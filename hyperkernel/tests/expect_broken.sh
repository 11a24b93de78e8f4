#!/bin/sh
# The torture checks must be able to fail: with invalidations of remote
# sharers skipped (HK_DEBUG_SKIP_INVALIDATE=1) stale copies survive writes,
# and hk-torture must report violations and exit non-zero.
torture="$1"
out=$(HK_DEBUG_SKIP_INVALIDATE=1 "$torture" -n 4 -t 4 -o 20000 -p 64 --timeout 10 2>&1)
rc=$?
echo "$out" | tail -3
v=$(echo "$out" | sed -n 's/.*violations=\([0-9]*\).*/\1/p' | tail -1)
if [ "$rc" -ne 0 ] && [ -n "$v" ] && [ "$v" -gt 0 ]; then
	echo "torture-broken: PASS (broken protocol caught: exit $rc, violations=$v)"
	exit 0
fi
echo "torture-broken: FAIL (exit $rc, violations=${v:-none}): the checks did not catch a broken protocol"
exit 1
