#!/usr/bin/env bash
# Build a real Kubernetes control plane (apiserver, controller-manager,
# scheduler, kubectl), etcd and helm from Go modules into a cache outside the
# repository, keyed by their versions. A warm cache returns without touching go.
#
#   tests/k8s/build.sh          # prints the bin dir on the last line
#   KUBELEDGER_CACHE=/some/dir tests/k8s/build.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

all_built() {
  local b
  for b in "${K8S_BINARIES[@]}"; do
    [[ -x "$K8S_BIN/$b" ]] || return 1
  done
}

# Fast path first: no go, no network, no lock.
if all_built; then
  echo "k8s: cached ($K8S_KEY)"
  echo "$K8S_BIN"
  exit 0
fi

die() { echo "k8s: ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }

command -v go >/dev/null || die "go not found on PATH"
# A dependency's toolchain line must not make go try to download a toolchain.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

mkdir -p "$K8S_KEY_DIR" "$K8S_BIN"
# Stay out of any enclosing module (e.g. the repository) for every go call.
cd "$K8S_KEY_DIR"
# Two concurrent builds of the same key would race on go.mod and the binaries.
exec 9>"$K8S_KEY_DIR/.lock"
flock 9
if all_built; then
  echo "k8s: cached ($K8S_KEY, built by a concurrent run)"
  echo "$K8S_BIN"
  exit 0
fi

T_TOTAL=$(now_ms)

# Prints "PATH<TAB>ok|missing<TAB>VERSION" for each MODULE@VERSION given.
# One go call for all of them: far fewer proxy round trips than a loop.
probe_modules() {
  local out
  out="$(go mod download -json "$@" 2>&1 || true)"
  local m
  for m in "$@"; do
    if awk -F'"' -v want="${m%@*}" '
        /^\t"Path":/ { p = $4 }
        /^\t"Error":/ { if (p == want) bad = 1 }
        /^\t"(Zip|GoMod)":/ { if (p == want) good = 1 }
        END { exit !(good && !bad) }' <<<"$out"; then
      printf '%s\tok\t%s\n' "${m%@*}" "${m#*@}"
    else
      printf '%s\tmissing\t%s\n' "${m%@*}" "${m#*@}"
    fi
  done
}

# Absolute path of a module version's go.mod in the module cache.
gomod_file() {
  go mod download -json "$1" | awk -F'"' '/^\t"GoMod":/ { print $4 }'
}

# ---------------------------------------------------------------- modules
T=$(now_ms)
while IFS=$'\t' read -r mod st ver; do
  [[ $st == ok ]] || die "module not served by the Go proxy: $mod@$ver"
done < <(probe_modules "k8s.io/kubernetes@$K8S_VERSION" \
                       "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
                       "helm.sh/helm/v3@$HELM_VERSION")

K8S_GOMOD="$(gomod_file "k8s.io/kubernetes@$K8S_VERSION")"
[[ -f $K8S_GOMOD ]] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION"

# The release's go.mod points its staging modules at ./staging/src/...; outside
# the monorepo each must be replaced by its published tag or nothing resolves.
mapfile -t STAGING < <(awk '
  { sub(/^replace[ \t]+/, "") }
  $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$K8S_GOMOD")
[[ ${#STAGING[@]} -gt 0 ]] || die "found no staging replaces in $K8S_GOMOD"
# Modules the release actually requires (as v0.0.0 placeholders).
mapfile -t REQUIRED < <(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$K8S_GOMOD")

REPLACES=()
while IFS=$'\t' read -r mod st _; do
  if [[ $st == ok ]]; then
    REPLACES+=("$mod")
  elif printf '%s\n' "${REQUIRED[@]}" | grep -qxF "$mod"; then
    die "module not served by the Go proxy: $mod@$K8S_STAGING_VERSION (required by k8s.io/kubernetes@$K8S_VERSION)"
  else
    # Monorepo-only samples: replaced there, but nothing in the build needs them.
    echo "k8s: note: $mod@$K8S_STAGING_VERSION not served; not required by k8s.io/kubernetes, replace omitted" >&2
  fi
done < <(probe_modules "${STAGING[@]/%/@$K8S_STAGING_VERSION}")

# Build modules live in the cache, never in the repository.
K8S_SRC="$K8S_KEY_DIR/src/k8s"
ETCD_SRC="$K8S_KEY_DIR/src/etcd"
mkdir -p "$K8S_SRC" "$ETCD_SRC"
GO_LINE="$(awk '$1 == "go" { print "go " $2; exit }' "$K8S_GOMOD")"

# helm shares the kubernetes module so client-go & co. compile once; its
# k8s.io libraries move from the same minor's .0 to this patch release.
{
  echo "module kubeledger.test/k8s-tools"
  echo
  echo "$GO_LINE"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	helm.sh/helm/v3 $HELM_VERSION"
  echo ")"
  echo
  echo "replace ("
  for mod in "${REPLACES[@]}"; do echo "	$mod => $mod $K8S_STAGING_VERSION"; done
  echo ")"
} >"$K8S_SRC/go.mod"
rm -f "$K8S_SRC/go.sum"
cat >"$K8S_SRC/tools.go" <<'EOF'
//go:build tools

// Pins the commands so `go mod tidy` records everything they import.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF

# etcd gets its own module: kubernetes requires a newer etcd server, which
# would otherwise win version selection over the one asked for here.
{
  echo "module kubeledger.test/etcd-tools"
  echo
  echo "$GO_LINE"
  echo
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
} >"$ETCD_SRC/go.mod"
rm -f "$ETCD_SRC/go.sum"
cat >"$ETCD_SRC/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF

tidy() {
  local dir=$1 log=$1/tidy.log
  if ! (cd "$dir" && go mod tidy) >"$log" 2>&1; then
    echo "k8s: go mod tidy failed in $dir:" >&2
    tail -n 30 "$log" >&2
    grep -E 'not available|not found|403|404|410' "$log" \
      | sed 's/^/k8s: module not served: /' >&2 || true
    exit 1
  fi
}
tidy "$K8S_SRC"
tidy "$ETCD_SRC"

# Version selection may not silently move the tools off the versions asked for.
check_selected() {
  local dir=$1 mod=$2 want=$3 got
  got="$(cd "$dir" && go list -m -f '{{.Version}}' "$mod")"
  [[ $got == "$want" ]] || die "$mod resolved to $got, wanted $want"
}
check_selected "$K8S_SRC" k8s.io/kubernetes "$K8S_VERSION"
check_selected "$K8S_SRC" helm.sh/helm/v3 "$HELM_VERSION"
check_selected "$ETCD_SRC" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
echo "k8s: resolved modules in $(elapsed "$T") s (${#REPLACES[@]} staging replaces)"

# ---------------------------------------------------------------- ldflags
# Without these the apiserver reports v0.0.0-master, which clients and the
# compatibility-version logic mistake for an ancient server.
k8s_release_time() {
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | awk -F'"' '/^\t"Info":/ { print $4 }' \
    | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p'
}
BUILD_DATE="$(k8s_release_time)"
BUILD_DATE="${BUILD_DATE%%.*}"; BUILD_DATE="${BUILD_DATE%Z}Z"
K8S_MAJOR="${K8S_VERSION#v}"; K8S_MAJOR="${K8S_MAJOR%%.*}"
K8S_MINOR="${K8S_VERSION#v*.}"; K8S_MINOR="${K8S_MINOR%%.*}"
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR"
  K8S_LDFLAGS+=" -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done
# helm's lint and capabilities default to the Kubernetes version it was built against.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=$K8S_MAJOR -X $pkg.k8sVersionMinor=$K8S_MINOR"
done

# ---------------------------------------------------------------- binaries
# One at a time so each gets its own timing; the shared Go build cache means
# later ones only compile what earlier ones did not. A binary is moved into
# place only once complete, so an interrupted build is resumed, not trusted.
build_one() {
  local name=$1 dir=$2 pkg=$3 ldflags=$4 t
  if [[ -x "$K8S_BIN/$name" ]]; then
    echo "k8s: $name already built"
    return
  fi
  t=$(now_ms)
  (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$K8S_BIN/.$name.tmp" "$pkg") \
    || die "go build of $pkg failed"
  mv -f "$K8S_BIN/.$name.tmp" "$K8S_BIN/$name"
  echo "k8s: built $name in $(elapsed "$t") s"
}
build_one kube-apiserver          "$K8S_SRC"  k8s.io/kubernetes/cmd/kube-apiserver          "$K8S_LDFLAGS"
build_one kube-controller-manager "$K8S_SRC"  k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_LDFLAGS"
build_one kube-scheduler          "$K8S_SRC"  k8s.io/kubernetes/cmd/kube-scheduler          "$K8S_LDFLAGS"
build_one kubectl                 "$K8S_SRC"  k8s.io/kubernetes/cmd/kubectl                 "$K8S_LDFLAGS"
build_one helm                    "$K8S_SRC"  helm.sh/helm/v3/cmd/helm                      "$HELM_LDFLAGS"
build_one etcd                    "$ETCD_SRC" go.etcd.io/etcd/server/v3                     "-s -w"

all_built || die "not every binary was produced in $K8S_BIN"
echo "k8s: all built in $(elapsed "$T_TOTAL") s -> $K8S_BIN"
echo "$K8S_BIN"
