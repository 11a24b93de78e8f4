#!/bin/sh
# SIGKILL one node mid-run: every survivor must stop within seconds with
# status 3 and a message naming the dead node and the pages lost, and no
# node process may remain.
torture="$1"
out=$("$torture" -n 4 -t 2 -d 30 -p 64 --kill 2@1500 2>&1)
rc=$?
echo "$out" | grep -E "died|kill" | head -8
fail=0
[ "$rc" -eq 0 ] || { echo "kill-test: hk-torture reported failure ($rc)"; fail=1; }
n=$(echo "$out" | grep -c "^hk-torture node [0-9]*: node 2 died; lost [0-9]* pages")
[ "$n" -ge 3 ] || { echo "kill-test: expected 3 survivors to name node 2 and its lost pages, saw $n"; fail=1; }
sleep 0.2
if pgrep -f "$torture -n 4 -t 2 -d 30" >/dev/null; then
	echo "kill-test: node processes remain"; fail=1
fi
[ $fail -eq 0 ] && echo "kill-test: PASS"
exit $fail
