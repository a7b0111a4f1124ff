#!/usr/bin/env bash
# The single-node benchmark of the README: a fresh one-node consortium on
# loopback, signed 100-byte puts, block interval 200 ms.
#   1. saturation: sustained throughput and commit latency at full load
#   2. latency at a moderate offered load (--rate), where queueing is small
#   3. 1,000,000 distinct keys written, then the node's resident memory
# Usage: scripts/bench.sh [--quick]   (--quick: smaller runs, for a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kubeledger-node --bin kubeledger
bin=target/release/kubeledger

txs=300000; rate=15000; rate_txs=150000; million=1000000
if [ "${1:-}" = "--quick" ]; then txs=30000; rate=5000; rate_txs=20000; million=50000; fi

dir=$(mktemp -d /tmp/kubeledger-bench.XXXXXX)
port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
"$bin" up --dir "$dir" --nodes 1 --same-host --base-port "$port" --block-interval 200ms >"$dir/up.log" 2>&1 &
up_pid=$!
trap 'kill -INT $up_pid 2>/dev/null || true; wait $up_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  "$bin" status --endpoint "$endpoint" >/dev/null 2>&1 && break
  sleep 0.2
done

echo "== 1. saturation: $txs signed 100-byte puts, as fast as the node takes them"
"$bin" bench --endpoint "$endpoint" --txs "$txs" --value-size 100
echo
echo "== 2. latency at an offered load of $rate tx/s ($rate_txs txs)"
"$bin" bench --endpoint "$endpoint" --txs "$rate_txs" --value-size 100 --rate "$rate"
echo
echo "== 3. $million distinct keys, then resident memory of the node"
"$bin" bench --endpoint "$endpoint" --txs "$million" --value-size 100 --output json > "$dir/million.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("wrote %d keys at %.0f tx/s" % (r["committed"], r["tx_per_sec"]))' "$dir/million.json"
node_pid=$(pgrep -f -- "node --config $dir/node-0/node.toml" | head -n1)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
echo "node RSS after the run: $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB); data dir $(du -sh "$dir/node-0/data" | cut -f1)"
"$bin" status --endpoint "$endpoint"
