#!/usr/bin/env bash
# Contracts, in one run:
# 1. the engine alone (node/contract/examples/bench.rs): compile cold and
#    from the cache, the fixed cost of a call, asset-transfer calls against
#    the same transfer in Rust, the escrow figures, ed25519 verification;
# 2. a 4-node consortium on loopback: TXS plain puts, then TXS asset-transfer
#    invocations of the deployed example (contracts/asset_transfer.wat), each
#    with the ed25519 bound `kubeledger bench` measures in the same run.
# Usage: scripts/bench-contracts.sh [--quick]   (TXS=50000 by default; --quick 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/consortium.sh
. scripts/consortium.sh
use_kubeledger_bin
txs=${TXS:-50000}
calls=20000
if [ "${1:-}" = "--quick" ]; then txs=5000; calls=2000; fi
trap stop_consortium EXIT

echo "== the engine alone"
cargo run --release --locked -q -p kubeledger-contract --example bench -- "$calls"

echo "== 4 replicas: $txs puts, then $txs asset-transfer invocations"
start_consortium 4
admin="$dir/org1/admin.key"
"$bin" --endpoint "$first" --key "$admin" contract install --code contracts/asset_transfer.wat >/dev/null
init=$(python3 -c 'import struct; print((b"\x01A" + struct.pack("<q", 10**12) + b"\x01B" + struct.pack("<q", 10**12)).hex())')
"$bin" --endpoint "$first" --key "$admin" contract deploy --name bank --code contracts/asset_transfer.wat --init-hex "$init" >/dev/null
run() {
  "$bin" bench --endpoint "$first" --endpoints "$rest" --txs "$txs" --timeout 1800s "$@" |
    grep -E "^(throughput|latency|ed25519 bound)"
}
echo "-- puts"
run
echo "-- asset-transfer invocations"
run --call bank
balance() { "$bin" --endpoint "$first" contract query bank balance --input-hex "01$(printf %s "$1" | xxd -p)" -o json |
  python3 -c 'import json,sys; print(int.from_bytes(bytes.fromhex(json.load(sys.stdin)["outcome"]["output"]), "little", signed=True))'; }
a=$(balance A); b=$(balance B)
echo "balances after the run: A $a, B $b (each started at 1000000000000; every call moves 1 from A to B)"
if [ $((b - a)) -ne $((2 * txs)) ]; then echo "NOT every invocation succeeded: B - A = $((b - a)), expected $((2 * txs))"; exit 1; fi
echo "all $txs invocations succeeded"
