#!/usr/bin/env bash
# The consensus benchmark of the README: fresh PBFT consortia on loopback,
# signed 100-byte puts spread over every replica, block interval 200 ms.
#   1. 4 replicas, saturation: sustained throughput and commit latency
#   2. 4 replicas, commit latency at moderate offered loads (--rate)
#   3. 4 replicas, kill -9 of the primary under load: time to the first block
#      of the new view, and the load's outcome (the primary stays down)
#   4. 7 replicas, saturation
# Usage: scripts/bench-consensus.sh [--quick]   (--quick: smaller runs)
# KUBELEDGER_BIN=path runs that binary instead of building this checkout's,
# so two builds can be compared side by side in one session.
# Blocks hold at most 2,000 transactions here (MAX_BLOCK_TXS to change it).
# Four replicas run the default 10,000 without view changes, at about the
# same throughput; but seven replicas sharing two cores take longer than the
# 2 s view-change timeout to move a block of 10,000 from proposal to
# commit, and then spend the run in view changes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
use_kubeledger_bin

txs=200000; rates="5000 8000"; rate_secs=10
if [ "${1:-}" = "--quick" ]; then txs=30000; rates="3000"; rate_secs=5; fi

trap stop_consortium EXIT

start_consortium 4
echo "== 1. 4 replicas, saturation: $txs signed 100-byte puts over all replicas"
"$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$txs" --value-size 100
echo
for rate in $rates; do
  echo "== 2. 4 replicas, commit latency at an offered load of $rate tx/s (${rate_secs} s)"
  "$bin" bench --endpoint "$first" --endpoints "$rest" --txs $((rate * rate_secs)) --value-size 100 --rate "$rate"
  echo
done
view_change_summary 4
echo
echo "== 3. 4 replicas, kill -9 of the primary under load (view-change timeout 2 s; the primary stays down)"
start_consortium 4 --no-restart
primary=$("$bin" status --endpoint "$first" -o json | field primary_index)
survivor=${endpoints[$(((primary + 1) % 4))]}
"$bin" bench --endpoint "$survivor" --txs 30000 --value-size 100 --rate 2000 --timeout 60s >"$dir/kill-load.log" 2>&1 &
load_pid=$!
sleep 3
view0=$("$bin" status --endpoint "$survivor" -o json | field view)
pid=$(pgrep -f -- "node --config $dir/node-$primary/node.toml" | head -n1)
at_kill=$("$bin" status --endpoint "$survivor" -o json | field height)
t0=$(date +%s%N)
kill -9 "$pid"
# The next block committed in a later view, i.e. ordered by the new primary.
while :; do
  s=$("$bin" status --endpoint "$survivor" -o json 2>/dev/null || echo '{"height":0,"view":0}')
  h=$(echo "$s" | field height); v=$(echo "$s" | field view)
  if [ "$v" -gt "$view0" ] && [ "$h" -gt "$at_kill" ]; then break; fi
  if [ $((($(date +%s%N) - t0) / 1000000)) -gt 60000 ]; then echo "no block in a new view within 60 s"; break; fi
  sleep 0.05
done
t1=$(date +%s%N)
echo "killed primary replica $primary at height $at_kill; first block of view $v (height $h) after $(((t1 - t0) / 1000000)) ms"
wait "$load_pid" || true
grep -E "^(transactions|throughput|commit latency)" "$dir/kill-load.log"
view_change_summary 4
echo
start_consortium 7
echo "== 4. 7 replicas, saturation: $txs signed 100-byte puts over all replicas"
"$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$txs" --value-size 100
view_change_summary 7
"$bin" status --endpoint "$first"
