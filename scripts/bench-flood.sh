#!/usr/bin/env bash
# Honest throughput while an outsider floods the primary's peer port with
# forged consensus votes, as a fraction of the same consortium's throughput
# without the flood (measured before and after it, in the same run).
# Usage: scripts/bench-flood.sh [--quick]
# Everything shares the machine's cores: the four replicas, the load
# generator and the flooder (one thread), so part of any drop is the
# flooder's own CPU, not the node's defences.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kubeledger-node --bin kubeledger --example peer_flood
target=${CARGO_TARGET_DIR:-target}/release
bin=$target/kubeledger
flooder=$target/examples/peer_flood

txs=100000
if [ "${1:-}" = "--quick" ]; then txs=20000; fi

# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
flood_pid=""
cleanup() {
  if [ -n "$flood_pid" ]; then kill "$flood_pid" 2>/dev/null || true; fi
  stop_consortium
}
trap cleanup EXIT

start_consortium 4
primary=$("$bin" status --endpoint "$first" -o json | field primary_index)
peer_port=$((port + 10 * primary + 1))
metrics_port=$((port + 10 * primary + 2))

run() { # run NAME: one saturation bench, its tx/s on stdout's last line
  "$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$txs" --value-size 100 -o json >"$dir/$1.json"
  python3 - "$dir/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: {r['tx_per_sec']:.0f} tx/s, {r['committed']} committed, {r['failed']} failed, p99 {r['latency_ms']['p99']:.0f} ms")
PY
}
tps() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tx_per_sec"])' "$dir/$1.json"; }
refused() {
  curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk -F' ' '/^kubeledger_consensus_messages_total\{direction="unauthenticated"\}/ {print $2} END {}' | tail -n1
}

echo "== 4 replicas, $txs signed 100-byte puts at saturation; flood target: primary replica $primary (peer port $peer_port)"
run before
"$flooder" "127.0.0.1:$peer_port" 100000 4 >"$dir/flood.log" 2>&1 &
flood_pid=$!
sleep 1
refused_at_start=$(refused)
run flooded
refused_at_end=$(refused)
kill "$flood_pid" 2>/dev/null || true; wait "$flood_pid" 2>/dev/null || true; flood_pid=""
run after
python3 - "$(tps before)" "$(tps flooded)" "$(tps after)" "${refused_at_start:-0}" "${refused_at_end:-0}" <<'PY'
import sys
before, flooded, after, r0, r1 = map(float, sys.argv[1:])
base = (before + after) / 2
print(f"forged votes refused at the edge during the flooded run: {r1 - r0:.0f}")
print(f"honest throughput under the flood: {flooded:.0f} tx/s = {100 * flooded / base:.1f}% of the same run's {base:.0f} tx/s without it")
PY
view_change_summary 4
"$bin" status --endpoint "$first" | head -n 5
