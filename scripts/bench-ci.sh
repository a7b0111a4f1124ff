#!/usr/bin/env bash
# How long the test command takes from a clean clone with empty caches, phase
# by phase, as on a fresh CI machine: a clone of HEAD in a temporary
# directory, with its own empty cargo registry, Go module and build caches and
# control-plane cache (so nothing built before is reused), then `.ci/run`.
# Afterwards the same control plane again: warm build (cache hit) and start.
#
#   scripts/bench-ci.sh            # cold: empty caches (about 45-60 min on 2 cores)
#   scripts/bench-ci.sh --keep     # keep the temporary directory for a look
#
# Packages installed system-wide by scripts/setup.sh (apt, pip) stay installed:
# they take seconds, the builds take the time.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

work=$(mktemp -d /tmp/kubeledger-bench-ci.XXXXXX)
$keep || trap 'rm -rf "$work"' EXIT
git clone -q . "$work/repo"
export CARGO_HOME="$work/cargo-home" GOMODCACHE="$work/go-mod" GOCACHE="$work/go-build"
export KUBELEDGER_CACHE="$work/cache" CI=true
mkdir -p "$CARGO_HOME"
# rustup's proxies live in the default cargo home; keep them on PATH.
export PATH="$HOME/.cargo/bin:$PATH"

echo "bench-ci: clean clone of $(git rev-parse --short HEAD) in $work, empty caches"
start=$SECONDS
status=0
(cd "$work/repo" && bash .ci/run) >"$work/ci.log" 2>&1 || status=$?
total=$((SECONDS - start))
grep -E '^== .*: [0-9]+ s$' "$work/ci.log" || true
grep -E '^k8s: (built|resolved|all built)' "$work/ci.log" || true
grep -E '^control plane: ready' "$work/ci.log" | head -1 || true
grep -E '^[0-9]+ passed' "$work/ci.log" | tail -1 || true
echo "bench-ci: .ci/run exited $status after $total s ($((total / 60)) min $((total % 60)) s; CI allows 5400 s)"

t=$SECONDS
(cd "$work/repo" && tests/k8s/build.sh >/dev/null)
echo "bench-ci: warm control-plane build (cache hit): $((SECONDS - t)) s"
(cd "$work/repo" && tests/k8s/control-plane.sh start "$work/cp" | tail -1)
(cd "$work/repo" && tests/k8s/control-plane.sh stop "$work/cp" | tail -1)
if [ "$status" -ne 0 ]; then
  echo "bench-ci: the run failed; the last lines of its log:" >&2
  tail -40 "$work/ci.log" >&2
fi
exit "$status"
