#!/usr/bin/env bash
# Fuzzes every decoder reachable from the network (and the replica's stored
# state) with cargo-fuzz / libFuzzer, starting from the corpus kept in
# fuzz/corpus. New inputs go to a scratch corpus under fuzz/target, so the
# repository's corpus changes only when someone copies a finding into it.
#
#   scripts/fuzz.sh                      # 120 s per target (what .ci/run does)
#   scripts/fuzz.sh --seconds 600        # longer
#   scripts/fuzz.sh --runs 10000000      # a fixed number of executions per target
#   scripts/fuzz.sh --seconds 30 peer_frame state_transfer
#
# Two targets run at a time. A crash fails the run and prints the input
# and the command that replays it; the summary prints executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=(-max_total_time=120)
targets=()
while (($#)); do
  case $1 in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(peer_frame transaction submit_batch state_transfer replica_state)
((${#targets[@]})) || targets=("${all[@]}")

# cargo-fuzz needs nightly compiler flags: the nightly toolchain when there
# is one, else the stable compiler with its unstable features unlocked.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly)
else
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz --version 0.13.2
fi

# Safe Rust: no sanitizer, but debug assertions and overflow checks on.
flags=(-s none -a --release)
echo "== fuzz: building the targets"
(cd fuzz && "${cargo[@]}" fuzz build "${flags[@]}")

# Scratch corpus and logs (KUBELEDGER_FUZZ_WORK moves them, so two runs
# can go side by side).
scratch=${KUBELEDGER_FUZZ_WORK:-$PWD/fuzz/target}
work=$scratch/corpus
logs=$scratch/logs
mkdir -p "$logs"
run_one() {
  local t=$1
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  # libFuzzer adds what it finds to the first directory only.
  (cd fuzz && "${cargo[@]}" fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
      "${limit[@]}" -max_len=65536 -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
      >"$logs/$t.log" 2>&1)
}

failed=()
running=0
finish_one() {
  local pid
  if wait -n -p pid; then :; else failed+=("${names[$pid]}"); fi
  running=$((running - 1))
}
declare -A names
for t in "${targets[@]}"; do
  echo "== fuzz: $t (${limit[*]})"
  run_one "$t" &
  names[$!]=$t
  running=$((running + 1))
  if ((running >= 2)); then finish_one; fi
done
while ((running > 0)); do finish_one; done

printf '%-16s %14s %8s %10s %s\n' target executions seconds "exec/s" result
for t in "${targets[@]}"; do
  log=$logs/$t.log
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | awk '{print $5}')
  result=ok
  if printf '%s\n' "${failed[@]}" | grep -qx "$t"; then result=CRASH; fi
  printf '%-16s %14s %8s %10s %s\n' "$t" "${execs:-?}" "${secs:-?}" \
    "$(( ${execs:-0} / ( ${secs:-1} > 0 ? ${secs:-1} : 1 ) ))" "$result"
done
if ((${#failed[@]})); then
  for t in "${failed[@]}"; do
    echo "fuzz: $t failed; its log: $logs/$t.log" >&2
    grep -E 'panicked at|Test unit written to' "$logs/$t.log" | head -5 >&2 || true
    echo "replay: (cd fuzz && ${cargo[*]} fuzz run ${flags[*]} $t artifacts/$t/<crash-file>)" >&2
  done
  exit 1
fi
