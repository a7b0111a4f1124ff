#!/usr/bin/env bash
# Catch-up from a distance: a replica of a 4-node consortium on loopback is
# killed, the other three commit BLOCKS blocks (one transaction each, block
# interval 10 ms), and the replica is started again. Prints how fast it
# catches up against how fast the consortium made the same blocks, and its
# peak memory against that of a replica that was up all along.
# Then a snapshot of replica 0 seeds replica 3's emptied data directory:
# snapshot size, create and restore (with its full verification) times, and
# the time to the tip from there, against the catch-up from height 20.
# Usage: scripts/bench-catch-up.sh [--quick]   (BLOCKS=50000 by default; --quick 5000)
# KUBELEDGER_BIN=path runs that binary instead of building this checkout's;
# CATCH_UP_TIMEOUT=seconds (1800) gives up waiting for the replica.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
use_kubeledger_bin
blocks=${BLOCKS:-50000}
if [ "${1:-}" = "--quick" ]; then blocks=5000; fi

node3_pid=""
cleanup() {
  if [ -n "$node3_pid" ]; then kill "$node3_pid" 2>/dev/null || true; fi
  stop_consortium
}
trap cleanup EXIT

height() { { "$bin" status --endpoint "$1" -o json 2>/dev/null || echo '{"height": 0}'; } | field height; }
peak_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

MAX_BLOCK_TXS=1 BLOCK_INTERVAL=10ms start_consortium 4 --no-restart
victim=${endpoints[3]}
live=$(IFS=,; echo "${endpoints[*]:1:2}")
"$bin" bench --endpoint "$first" --endpoints "$live" --txs 20 --value-size 100 >/dev/null
pid3=$(pgrep -f -- "node --config $dir/node-3/node.toml" | head -n1)
kill -9 "$pid3"
down_at=$(height "$first")
echo "== replica 3 killed at height $down_at; the others commit $blocks blocks of one transaction"
t0=$(now_ms)
"$bin" bench --endpoint "$first" --endpoints "$live" --txs "$blocks" --value-size 100 --timeout 1800s \
  | grep -E "^(transactions|throughput)"
t1=$(now_ms)
target=$(height "$first")
made=$((target - down_at))
echo "consortium: $made blocks in $(((t1 - t0) / 1000)) s = $((made * 1000 / (t1 - t0 + 1))) blocks/s (ordering and executing them)"

echo "== replica 3 restarted at height $down_at, $made blocks behind"
"$bin" node --config "$dir/node-3/node.toml" --log warn 2>>"$dir/node-3/catch-up.log" &
node3_pid=$!
t2=$(now_ms)
while [ "$(height "$victim")" -lt "$target" ]; do
  if [ $((($(now_ms) - t2) / 1000)) -gt "${CATCH_UP_TIMEOUT:-1800}" ]; then
    echo "catch-up: NOT caught up within ${CATCH_UP_TIMEOUT:-1800} s: at height $(height "$victim") of $target"
    exit 1
  fi
  sleep 0.2
done
t3=$(now_ms)
echo "catch-up: $made blocks in $(((t3 - t2) / 1000)).$((((t3 - t2) % 1000) / 100)) s = $((made * 1000 / (t3 - t2 + 1))) blocks/s"
pid0=$(pgrep -f -- "node --config $dir/node-0/node.toml" | head -n1)
echo "peak memory (VmHWM): catching-up replica $(($(peak_kib "$node3_pid") / 1024)) MiB; replica 0, up all along, $(($(peak_kib "$pid0") / 1024)) MiB"
h0=$("$bin" block "$target" --endpoint "$first" -o json | field hash)
h3=$("$bin" block "$target" --endpoint "$victim" -o json | field hash)
if [ "$h0" = "$h3" ]; then echo "block $target: same hash on both ($h0)"; else echo "block $target DIFFERS: $h0 vs $h3"; exit 1; fi

echo "== snapshot of replica 0 at height $(height "$first"), restored into replica 3's emptied data directory"
snap=$("$bin" snapshot create --endpoint "$first" -o json)
snap_path=$(echo "$snap" | field path)
echo "snapshot: $(echo "$snap" | field bytes) bytes at height $(echo "$snap" | field height), checkpoint certificate of block $(echo "$snap" | field checkpoint_seq), created in $(echo "$snap" | field took_ms) ms"
kill "$node3_pid"; wait "$node3_pid" 2>/dev/null || true; node3_pid=""
rm -rf "$dir/node-3/data/ledger"
restored=$("$bin" snapshot restore --from "$snap_path" --config "$dir/node-3/node.toml" -o json)
echo "restore: $(echo "$restored" | field blocks_verified) blocks and $(echo "$restored" | field state_keys) keys verified, in $(echo "$restored" | field took_ms) ms"
tip=$(height "$first")
"$bin" node --config "$dir/node-3/node.toml" --log warn 2>>"$dir/node-3/catch-up.log" &
node3_pid=$!
t4=$(now_ms)
while [ "$(height "$victim")" -lt "$tip" ]; do sleep 0.1; done
t5=$(now_ms)
echo "restored replica at the tip ($tip) $(((t5 - t4) / 1000)).$((((t5 - t4) % 1000) / 100)) s after starting (from height 20 by catch-up: $(((t3 - t2) / 1000)).$((((t3 - t2) % 1000) / 100)) s)"
