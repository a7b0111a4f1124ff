#!/usr/bin/env bash
# The reconfiguration figures of the README: `kubeledger up --nodes 4
# --observers 1 --admission vote` on loopback under `kubeledger bench` load; a
# fifth member, whose node already runs as an observer, is proposed and voted
# in with the CLI, the block interval goes from 200 ms to 1 s and back, and
# the member is removed. Prints committed throughput before,
# during and after each change, the block gaps around each announced height,
# and the load's failed / lost transactions.
# Usage: scripts/bench-reconfiguration.sh [offered tx/s, default 3000]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kubeledger-node --bin kubeledger
exec python3 scripts/bench_reconfiguration.py "${CARGO_TARGET_DIR:-target}/release/kubeledger" "${1:-3000}"
