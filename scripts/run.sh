#!/usr/bin/env bash
# The main job: build kubeledger and start a local consortium on loopback.
# Extra arguments go to `kubeledger up` (e.g. --block-interval 1s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kubeledger-node --bin kubeledger
exec target/release/kubeledger up "$@"
