#!/usr/bin/env bash
# State sync against replaying from genesis, in one run: a 4-node
# consortium on loopback commits KEYS distinct keys (one transaction each,
# 100-byte values); then one new observer joins by state sync, and another
# new observer, with state sync off, replays the chain from genesis. Each
# runs alone, to the same stable checkpoint. Prints time, bytes received,
# peak memory and data directory size of each, and checks both end on the
# validators' block and state.
# Usage: scripts/bench-state-sync.sh [--quick]   (KEYS=1000000 by default; --quick 100000)
# WRITES=n (default KEYS) commits n transactions over the KEYS keys: a chain
# whose history is longer than its state.
# KUBELEDGER_BIN=path runs that binary instead of building this checkout's;
# SYNC_TIMEOUT=seconds (1800) gives up waiting for an observer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
use_kubeledger_bin
keys=${KEYS:-1000000}
if [ "${1:-}" = "--quick" ]; then keys=100000; fi
writes=${WRITES:-$keys}

observer_pid=""
cleanup() {
  if [ -n "$observer_pid" ]; then kill "$observer_pid" 2>/dev/null || true; fi
  stop_consortium
}
trap cleanup EXIT

status_field() { { "$bin" status --endpoint "$1" -o json 2>/dev/null || echo "{\"$2\": 0}"; } | field "$2"; }
peak_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
metric() { curl -s --max-time 5 "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
secs() { echo "$(($1 / 1000)).$((($1 % 1000) / 100))"; }

start_consortium 4 --no-restart --observers 2
# The observers `up` started are stopped and emptied: they join later.
for i in 4 5; do
  pkill -f -- "node --config $dir/node-$i/node.toml" || true
done
sleep 1
rm -rf "$dir/node-4/data" "$dir/node-5/data"
sed -i 's/^min_distance = .*/min_distance = 1/' "$dir/node-4/node.toml"
sed -i '/^\[state_sync\]/,/^\[/ s/^enabled = .*/enabled = false/' "$dir/node-5/node.toml"

echo "== the consortium commits $writes transactions over $keys distinct keys"
"$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$writes" --key-space "$keys" --value-size 100 --timeout 1800s \
  | grep -E "^(transactions|throughput)"
tip=$(status_field "$first" height)
# Observers follow stable checkpoints: both are timed to the last one.
cp=$(status_field "$first" stable_checkpoint)
echo "chain at height $tip, stable checkpoint $cp"

# join NODE: starts node-NODE, waits for it to reach the checkpoint; sets
# took_ms, peak_mib, disk_mb and its endpoint.
join() {
  local i=$1
  endpoint="http://127.0.0.1:$((port + 10 * i))"
  metrics="http://127.0.0.1:$((port + 10 * i + 2))"
  local t0 t1
  t0=$(now_ms)
  "$bin" node --config "$dir/node-$i/node.toml" --log info 2>>"$dir/node-$i/join.log" &
  observer_pid=$!
  while [ "$(status_field "$endpoint" height)" -lt "$cp" ]; do
    if [ $((($(now_ms) - t0) / 1000)) -gt "${SYNC_TIMEOUT:-1800}" ]; then
      echo "node-$i did NOT reach $cp within ${SYNC_TIMEOUT:-1800} s"; tail -5 "$dir/node-$i/join.log"; exit 1
    fi
    sleep 0.2
  done
  t1=$(now_ms)
  took_ms=$((t1 - t0))
  peak_mib=$(($(peak_kib "$observer_pid") / 1024))
  disk_mb=$(du -sm "$dir/node-$i/data" | cut -f1)
}

echo "== node-4 joins by state sync"
join 4
sync_ms=$took_ms; sync_peak=$peak_mib; sync_disk=$disk_mb; sync_endpoint=$endpoint
line=$(grep -a "state sync complete" "$dir/node-4/join.log" | tail -1)
sync_bytes=$(sed -E 's/.*bytes: ([0-9]+).*/\1/' <<<"$line")
synced_keys=$(sed -E 's/.*entries: ([0-9]+).*/\1/' <<<"$line")
synced_at=$(sed -E 's/.*height: ([0-9]+).*/\1/' <<<"$line")
sync_blocks_bytes=$(metric "$metrics" kubeledger_state_transfer_received_bytes_total)
sync_bytes=$((sync_bytes + ${sync_blocks_bytes%.*}))
kill "$observer_pid"; wait "$observer_pid" 2>/dev/null || true; observer_pid=""
# Where the time went: the serving validators' manifest builds and the
# joining node's phases, as their logs say.
plain() { sed -E 's/\x1b\[[0-9;]*m//g' "$@"; }
plain "$dir"/node-[0-3]/node.log | grep -a "state-sync manifest built" | cut -c1-160 || true
plain "$dir/node-4/join.log" | grep -aE "state sync|state-sync|state chunks|headers" | cut -c1-200 || true

echo "== node-5 replays the chain from genesis (state sync off)"
join 5
replay_ms=$took_ms; replay_peak=$peak_mib; replay_disk=$disk_mb; replay_endpoint=$endpoint
replay_bytes=$(metric "$metrics" kubeledger_state_transfer_received_bytes_total)
replay_bytes=${replay_bytes%.*}

# Both end on the validators' chain and state.
h=$(status_field "$first" height)
want=$("$bin" block "$cp" --endpoint "$first" -o json | field hash)
got_replay=$("$bin" block "$cp" --endpoint "$replay_endpoint" -o json | field hash)
kill "$observer_pid"; wait "$observer_pid" 2>/dev/null || true; observer_pid=""
"$bin" node --config "$dir/node-4/node.toml" --log warn 2>>"$dir/node-4/join.log" &
observer_pid=$!
for _ in $(seq 1 300); do [ "$(status_field "$sync_endpoint" height)" -ge "$cp" ] && break; sleep 0.2; done
got_sync=$(status_field "$sync_endpoint" last_block_hash)
sync_height=$(status_field "$sync_endpoint" height)
want_sync=$("$bin" block "$sync_height" --endpoint "$first" -o json | field hash)
if [ "$got_replay" != "$want" ] || [ "$got_sync" != "$want_sync" ]; then
  echo "DIFFERENT chains: replayed $got_replay vs $want at $cp; synced $got_sync vs $want_sync at $sync_height"; exit 1
fi
echo "both observers end on the validators' block at $cp (chain at $h); the synced one at its tip $sync_height"

echo "state sync:   at checkpoint $synced_at, $synced_keys keys, to height $cp in $(secs "$sync_ms") s; received $((sync_bytes / 1000000)) MB; peak $sync_peak MiB; data dir $sync_disk MB"
echo "replay:       blocks 1-$cp from genesis in $(secs "$replay_ms") s; received $((replay_bytes / 1000000)) MB; peak $replay_peak MiB; data dir $replay_disk MB"
echo "state sync / replay: time $((sync_ms * 100 / (replay_ms + 1)))%, bytes $((sync_bytes * 100 / (replay_bytes + 1)))%"
