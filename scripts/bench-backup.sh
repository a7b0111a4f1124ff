#!/usr/bin/env bash
# Scheduled backups under load, in one run: a 4-node consortium on loopback
# commits KEYS new keys; replica 0 is then restarted with a backup
# every INTERVAL seconds into a directory on another filesystem (tmpfs at
# /dev/shm, as a backup volume is another volume), and the consortium
# commits KEYS more keys. Prints the throughput without and with backups,
# and per backup how long commits waited (the checkpoint beside the
# database) against how long the backup took (with its copy to the other
# filesystem), and the size of each backup.
# Usage: scripts/bench-backup.sh [--quick]   (KEYS=300000 by default; --quick 50000)
# INTERVAL=seconds between backups (2); KUBELEDGER_BIN=path runs that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
use_kubeledger_bin
keys=${KEYS:-300000}
if [ "${1:-}" = "--quick" ]; then keys=50000; fi
interval=${INTERVAL:-2}

backups=""
node0_pid=""
cleanup() {
  if [ -n "$node0_pid" ]; then kill "$node0_pid" 2>/dev/null || true; fi
  stop_consortium
  if [ -n "$backups" ]; then rm -rf "$backups"; fi
}
trap cleanup EXIT
metrics() { curl -s --max-time 5 "http://127.0.0.1:$((port + 2))/metrics"; }
metric() { metrics | awk -v m="$1" '$1 == m {print $2}'; }

start_consortium 4 --no-restart
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  backups=$(mktemp -d /dev/shm/kubeledger-backups.XXXXXX)
else
  backups=$(mktemp -d /tmp/kubeledger-backups.XXXXXX)
fi
echo "== data on $(df --output=fstype "$dir" | tail -1 | tr -d ' '), backups on $(df --output=fstype "$backups" | tail -1 | tr -d ' ')"

load() {
  "$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$keys" \
    --value-size 100 --timeout 1800s | grep -E "^throughput" | head -1
}

echo "== $keys keys, no backups"
without=$(load)
echo "$without"

echo "== replica 0 restarted with a backup every $interval s into $backups"
pkill -f -- "node --config $dir/node-0/node.toml" || true
sleep 1
sed -i '/^\[backup\]/,$d' "$dir/node-0/node.toml"
printf '[backup]\ndir = "%s"\ninterval_s = %s\nkeep = 2\n' "$backups" "$interval" >>"$dir/node-0/node.toml"
"$bin" node --config "$dir/node-0/node.toml" --log info 2>>"$dir/node-0/backup.log" &
node0_pid=$!
for _ in $(seq 1 150); do "$bin" status --endpoint "$first" >/dev/null 2>&1 && break; sleep 0.2; done

echo "== $keys more keys, backups on"
with=$(load)
echo "$with"
# One more backup after the load, of the whole state.
before=$(metric 'kubeledger_backups_total{outcome="ok"}'); before=${before:-0}
for _ in $(seq 1 $((interval * 20))); do
  now=$(metric 'kubeledger_backups_total{outcome="ok"}'); now=${now:-0}
  [ "${now%.*}" -gt "${before%.*}" ] && break
  sleep 0.5
done

plain() { sed -E 's/\x1b\[[0-9;]*m//g' "$@"; }
lines=$(plain "$dir/node-0/backup.log" | grep -a "snapshot created" || true)
count=$(grep -c . <<<"$lines" || true)
if [ "$count" -eq 0 ]; then echo "no backup was taken"; tail -5 "$dir/node-0/backup.log"; exit 1; fi
stats=$(sed -E 's/.* bytes=([0-9]+).*commits_paused_us=([0-9]+).*took_ms=([0-9]+).*/\1 \2 \3/' <<<"$lines" |
  awk '{n++; b=$1; p+=$2; if ($2>pm) pm=$2; t+=$3; if ($3>tm) tm=$3}
       END {printf "%d %.1f %.1f %.0f %d %d", n, p/n/1000, pm/1000, t/n, tm, b/1000000}')
read -r n pause_mean pause_max took_mean took_max last_mb <<<"$stats"
failed=$(metric 'kubeledger_backups_total{outcome="failed"}')
echo "backups: $n taken (${failed:-0} failed), the last $last_mb MB at height $(metric kubeledger_last_backup_height)"
echo "commits paused per backup: mean $pause_mean ms, max $pause_max ms; backup took: mean $took_mean ms, max $took_max ms"
echo "throughput without backups: ${without#throughput: }"
echo "throughput with backups:    ${with#throughput: }"
echo "kept in $backups: $(find "$backups" -maxdepth 1 -name 'snapshot-*' | wc -l) (keep = 2)"
