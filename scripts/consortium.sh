# Sourced by the benchmark scripts: a fresh consortium of `kubeledger up`
# on 127.0.0.1, and its teardown. Needs $bin (the kubeledger binary).
#   use_kubeledger_bin             sets bin: $KUBELEDGER_BIN, or this checkout's release build
#   start_consortium N [up flags]  sets dir, port, endpoints, first, rest
#   stop_consortium                stops it and removes its directory
#   field NAME                     a field of the JSON object on stdin
up_pid=""
dir=""

use_kubeledger_bin() {
  if [ -n "${KUBELEDGER_BIN:-}" ]; then
    bin=$KUBELEDGER_BIN
    echo "== binary: $bin"
  else
    cargo build --release --locked -p kubeledger-node --bin kubeledger
    bin=${CARGO_TARGET_DIR:-target}/release/kubeledger
  fi
}

stop_consortium() {
  if [ -n "$up_pid" ]; then kill -INT "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
  up_pid=""
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
  dir=""
}

start_consortium() {
  stop_consortium
  dir=$(mktemp -d /tmp/kubeledger-consensus.XXXXXX)
  port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
  "$bin" up --dir "$dir" --nodes "$1" --same-host --base-port "$port" --block-interval "${BLOCK_INTERVAL:-200ms}" \
    --max-block-txs "${MAX_BLOCK_TXS:-2000}" "${@:2}" >"$dir/up.log" 2>&1 &
  up_pid=$!
  endpoints=()
  for i in $(seq 0 $(($1 - 1))); do endpoints+=("http://127.0.0.1:$((port + 10 * i))"); done
  for e in "${endpoints[@]}"; do
    for _ in $(seq 1 150); do "$bin" status --endpoint "$e" >/dev/null 2>&1 && break; sleep 0.2; done
  done
  first=${endpoints[0]}
  rest=$(IFS=,; echo "${endpoints[*]:1}")
}

field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# view_change_summary N: each replica's view changes and censorship
# suspicions so far, from its /metrics (a dead replica shows "-").
view_change_summary() {
  local vc=() cs=() m i
  for i in $(seq 0 $(($1 - 1))); do
    m=$(curl -s --max-time 2 "http://127.0.0.1:$((port + 10 * i + 2))/metrics" || true)
    vc+=("$(awk '/^kubeledger_view_changes_total /{v=$2} END {print (v == "" ? "-" : v)}' <<<"$m")")
    cs+=("$(awk '/^kubeledger_censorship_suspected_total /{v=$2} END {print (v == "" ? "-" : v)}' <<<"$m")")
  done
  echo "view changes per replica: ${vc[*]}; censorship suspected per replica: ${cs[*]}"
}
