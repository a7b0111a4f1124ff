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

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

if [ -f tests/requirements.txt ]; then
  echo "== python tests"
  python3 -m pip install --quiet --disable-pip-version-check --ignore-requires-python -r tests/requirements.txt
  python3 -m pytest -q tests
fi

echo "== disk after: $(du -sh target 2>/dev/null | cut -f1) in target/, $(df -h . | tail -1 | awk '{print $4}') free"
