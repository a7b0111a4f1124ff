#!/usr/bin/env bash
# The test command: formatting, lints, every Rust test (unit, simulator,
# real node processes, operator call contracts) and the Python offline
# validation of rendered manifests and the Helm chart.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# A test run builds from scratch; incremental caches would only double the
# target directory. The disk figures make a full disk obvious in the log.
export CARGO_INCREMENTAL=0
df -h . | tail -1 | awk '{print "== disk before: " $4 " free"}'

# Each phase says how long it took, so a slow CI run shows where the time went.
phase_start=$SECONDS
phase() {
  if [ -n "${phase_name:-}" ]; then
    echo "== ${phase_name}: $((SECONDS - phase_start)) s"
  fi
  phase_name=$1
  phase_start=$SECONDS
  [ -n "$phase_name" ] && echo "== $phase_name"
  return 0
}

phase "cargo fmt"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
phase "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
phase "cargo test"
cargo test --workspace --locked

# Every decoder reachable from the network, fuzzed from the kept corpus
# (which replays first, so an old crash fails here). Two targets at a time.
phase "fuzz (${KUBELEDGER_FUZZ_SECONDS:-120} s per target)"
scripts/fuzz.sh --seconds "${KUBELEDGER_FUZZ_SECONDS:-120}"

# The Kubernetes control plane for tests/k8s, built from Go modules into a
# cache outside the repository (seconds when cached).
phase "kubernetes control plane build"
tests/k8s/build.sh

if [ -f tests/requirements.txt ]; then
  phase "python tests (offline manifests, chart, and tests/k8s on the real control plane)"
  python3 -m pip install --quiet --disable-pip-version-check --ignore-requires-python -r tests/requirements.txt
  python3 -m pytest -q tests
fi
phase ""

echo "== disk after: $(du -sh target 2>/dev/null | cut -f1) in target/, $(df -h . | tail -1 | awk '{print $4}') free"
