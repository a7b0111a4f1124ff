#!/usr/bin/env bash
# Smoke test of the loopback control plane: the API answers with the right
# version, controllers reconcile (deployment -> replicaset -> pods, GC,
# statefulset, serviceaccounts, root CA), the scheduler runs, RBAC and
# ServiceAccount tokens work, and helm can install into it.
#
#   tests/k8s/smoke.sh [DIR]   # DIR defaults to a temp dir, removed afterwards
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

if [[ $# -ge 1 ]]; then
  DIR=$1; KEEP=1
else
  DIR="$(mktemp -d "${TMPDIR:-/tmp}/kubeledger-k8s-smoke.XXXXXX")"; KEEP=0
fi

PASSED=0 FAILED=0
cleanup() {
  "$HERE/control-plane.sh" stop "$DIR" >/dev/null 2>&1 || true
  (( KEEP )) || rm -rf "$DIR"
}
trap cleanup EXIT

"$HERE/control-plane.sh" start "$DIR"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
export KUBECONFIG
k() { "$K8S_BIN/kubectl" "$@"; }

ok()   { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
# check DESC CMD... : one assertion; the command's output is shown only on failure.
check() {
  local desc=$1 out; shift
  if out="$("$@" 2>&1)"; then ok "$desc"; else fail "$desc"; sed 's/^/       /' <<<"$out"; fi
}
# eventually SECONDS CMD... : controllers are asynchronous, so poll.
eventually() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { "$@"; return 1; }
    sleep 0.3
  done
}

version_is_release() { k get --raw /version | grep -q "\"gitVersion\": \"$K8S_VERSION\""; }
check "GET /version reports $K8S_VERSION" version_is_release

check "create namespace smoke" k create namespace smoke
check "root-ca-cert-publisher fills kube-root-ca.crt" \
  eventually 30 k -n smoke get configmap kube-root-ca.crt
check "serviceaccount controller creates smoke/default" \
  eventually 30 k -n smoke get serviceaccount default

# The image never has to exist: there is no kubelet to pull it.
check "create deployment" \
  k -n smoke create deployment web --image=registry.invalid/kubeledger/smoke:1 --replicas=2

rs_owned_by_deployment() {
  [[ "$(k -n smoke get replicasets -l app=web -o jsonpath='{.items[0].metadata.ownerReferences[0].name}')" == web ]]
}
check "deployment controller creates a ReplicaSet" eventually 30 rs_owned_by_deployment

two_pods() {
  [[ "$(k -n smoke get pods -l app=web -o name | wc -l)" -eq 2 ]]
}
check "replicaset controller creates 2 Pods" eventually 30 two_pods

# With no nodes the scheduler must say so, which proves it is running.
unschedulable() {
  k -n smoke get pods -l app=web \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="PodScheduled")].reason}{"\n"}{end}' \
    | grep -q Unschedulable
}
check "scheduler marks pods Unschedulable (no nodes)" eventually 30 unschedulable

pods_have_sa_token_volume() {
  k -n smoke get pods -l app=web -o jsonpath='{.items[0].spec.volumes[*].projected.sources[*].serviceAccountToken.path}' \
    | grep -q token
}
check "ServiceAccount admission injects a projected token" pods_have_sa_token_volume

statefulset_pod() { k -n smoke get pod db-0; }
apply_statefulset() {
  k apply -f - <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: smoke}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: registry.invalid/kubeledger/db:1}]
EOF
}
check "apply statefulset" apply_statefulset
check "statefulset controller creates db-0" eventually 30 statefulset_pod

# RBAC: admin is system:masters, a fresh ServiceAccount may do nothing until bound.
check "auth can-i: admin may do anything" k auth can-i '*' '*' --all-namespaces
sa_denied() { [[ "$(k auth can-i list pods -n smoke --as=system:serviceaccount:smoke:default 2>/dev/null)" == no ]]; }
check "auth can-i: unbound ServiceAccount is denied (RBAC on)" sa_denied
check "create role + rolebinding" bash -c '
  "$0" -n smoke create role pod-reader --verb=get,list,watch --resource=pods &&
  "$0" -n smoke create rolebinding pod-reader --role=pod-reader --serviceaccount=smoke:default' \
  "$K8S_BIN/kubectl"
sa_allowed() { [[ "$(k auth can-i list pods -n smoke --as=system:serviceaccount:smoke:default)" == yes ]]; }
check "auth can-i: bound ServiceAccount is allowed" eventually 10 sa_allowed

# A real bearer token, not impersonation: signs with the SA key, verifies with its pair.
token_works() {
  local token
  token="$(k -n smoke create token default --duration=10m)"
  "$K8S_BIN/kubectl" --kubeconfig=/dev/null --server="$K8S_APISERVER_URL" \
    --certificate-authority="$K8S_CA_FILE" --token="$token" -n smoke get pods -o name | grep -q pod/
}
check "ServiceAccount token authenticates and is authorized" token_works

check "delete deployment" k -n smoke delete deployment web --wait=false
gc_done() {
  [[ -z "$(k -n smoke get replicasets,pods -l app=web -o name)" ]]
}
check "garbage collector removes ReplicaSet and Pods" eventually 60 gc_done

helm_version() { "$K8S_BIN/helm" version --short | grep -q "^$HELM_VERSION"; }
check "helm version is $HELM_VERSION" helm_version
helm_install() {
  local chart="$DIR/helm-smoke"
  rm -rf "$chart"
  "$K8S_BIN/helm" create "$chart" >/dev/null
  "$K8S_BIN/helm" --kubeconfig "$KUBECONFIG" -n smoke install smoke "$chart" >/dev/null
  "$K8S_BIN/helm" --kubeconfig "$KUBECONFIG" -n smoke status smoke | grep -q 'STATUS: deployed'
  k -n smoke get deployment smoke-helm-smoke
}
check "helm installs a chart into the cluster" helm_install

echo "smoke: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
