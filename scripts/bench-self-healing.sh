#!/usr/bin/env bash
# The self-healing figure of the README: four `kubeledger node` processes on
# loopback with default health settings and 1,000 tx/s of load. One replica's
# consensus loop is frozen through the test fault hook
# (KUBELEDGER_TEST_FREEZE_CONSENSUS). The script waits for the node's watchdog
# to end it, restarts it as a supervisor (kubelet, `kubeledger up`) would, and
# times freeze -> exit -> caught up with its peers -> /readyz ready.
# Usage: scripts/bench-self-healing.sh
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kubeledger-node --bin kubeledger
bin=${CARGO_TARGET_DIR:-target}/release/kubeledger
dir=$(mktemp -d /tmp/kl-freeze.XXXX); port=$((20000 + RANDOM % 12000))
timeout 20 "$bin" up --dir "$dir" --nodes 4 --same-host --base-port "$port" --block-interval 200ms >/dev/null 2>&1 &
upid=$!; sleep 3; kill -INT $upid; wait $upid 2>/dev/null
pids=()
for i in 0 1 2 3; do
  if [ $i = 3 ]; then
    KUBELEDGER_TEST_FREEZE_CONSENSUS=$dir/freeze "$bin" node --config "$dir/node-$i/node.toml" >>"$dir/node-$i/node.log" 2>&1 &
  else
    "$bin" node --config "$dir/node-$i/node.toml" >>"$dir/node-$i/node.log" 2>&1 &
  fi
  pids+=($!)
done
ep() { echo "http://127.0.0.1:$((port + 10 * $1))"; }
h() { "$bin" status --endpoint "$(ep $1)" -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])' 2>/dev/null || echo -1; }
sleep 3
"$bin" bench --endpoint "$(ep 0)" --endpoints "$(ep 1),$(ep 2)" --txs 200000 --value-size 100 --rate 1000 --timeout 300s >/dev/null 2>&1 &
bpid=$!
sleep 5
touch "$dir/freeze"; t0=$(date +%s%N); echo "froze node-3 at height $(h 3)"
wait ${pids[3]}; rc=$?; t1=$(date +%s%N)
echo "node-3 exited with status $rc after $(((t1 - t0) / 1000000)) ms"
rm -f "$dir/freeze"
"$bin" node --config "$dir/node-3/node.toml" >>"$dir/node-3/node.log" 2>&1 &
pids[3]=$!
while :; do
  a=$(h 3); b=$(h 0)
  if [ "$a" -ge 0 ] && [ "$a" -ge "$((b - 1))" ] && [ "$b" -gt 0 ]; then break; fi
  sleep 0.2
done
t2=$(date +%s%N)
ready=$(python3 -c 'import sys, urllib.request as u
try: print(u.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception as e: print(e)' "http://127.0.0.1:$((port + 32))/readyz")
echo "node-3 caught up (height $a, others $b) $(((t2 - t1) / 1000000)) ms after restart; freeze -> healthy $(((t2 - t0) / 1000000)) ms; readyz: $ready"
kill $bpid 2>/dev/null; kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"
