#!/usr/bin/env bash
# End-to-end test on a real cluster (kind): build both images, install the
# chart, apply the four-member example, wait for Ready, commit a transaction,
# read it back, change the block interval live (200ms -> 1s -> 200ms), admit a
# fifth member whose node follows as an observer, remove it again, delete the
# consortium and check the volumes were kept.
#
# NEEDS a machine with docker, kind, kubectl and helm, and network access for
# the base images. It cannot run on the project's build machines (no container
# runtime, no cluster) and is not part of scripts/test.sh.
#
#   tests/e2e/kind.sh                 # create a cluster, test, delete it
#   KEEP_CLUSTER=1 tests/e2e/kind.sh  # leave the cluster up for inspection
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-kubeledger-e2e}
TAG=${TAG:-e2e}
NS=kubeledger-system
NODE_IMAGE=ghcr.io/kubeledger/node:$TAG
OPERATOR_IMAGE=ghcr.io/kubeledger/operator:$TAG
TIMEOUT=${TIMEOUT:-600s}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH" >&2; exit 2; }
done

step() { printf '\n== %s\n' "$*"; }
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    step "failed; state of the cluster"
    kubectl get consortia,members -A -o wide || true
    kubectl get pods,pvc -A -l app.kubernetes.io/part-of=kubeledger || true
    kubectl -n "$NS" logs deploy/kubeledger --tail=200 || true
  fi
  if [ -z "${KEEP_CLUSTER:-}" ]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit $status
}
trap cleanup EXIT

step "cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER"

step "images"
docker build -f docker/node.Dockerfile -t "$NODE_IMAGE" .
docker build -f docker/operator.Dockerfile -t "$OPERATOR_IMAGE" .
kind load docker-image --name "$CLUSTER" "$NODE_IMAGE" "$OPERATOR_IMAGE"

step "helm install"
helm upgrade --install kubeledger charts/kubeledger \
  --namespace "$NS" --create-namespace \
  --set image.tag="$TAG" --set nodeImage="$NODE_IMAGE" --wait --timeout "$TIMEOUT"
kubectl -n "$NS" rollout status deploy/kubeledger --timeout "$TIMEOUT"

step "apply the example consortium"
kubectl apply -f examples/consortium.yaml
kubectl wait --for=condition=Ready consortium/escrow --timeout "$TIMEOUT"
for m in agency bank developer auditor; do
  kubectl -n "$m" wait --for=condition=Ready "member/$m" --timeout "$TIMEOUT"
done
kubectl get consortia -o wide
kubectl get members -A -o wide

step "submit a transaction through the bank's client Service"
client() {
  # The node image holds the CLI; a throwaway pod in the bank's namespace talks
  # to the member's client Service.
  kubectl -n bank run "e2e-client-$RANDOM" --image "$NODE_IMAGE" --image-pull-policy=IfNotPresent \
    --restart=Never --rm -i --quiet -- \
    --endpoint http://bank-client:7050 --key /tmp/client.key "$@"
}
client put e2e/greeting "hello from kind"
value=$(client -o json get e2e/greeting)
echo "$value"
grep -q "hello from kind" <<<"$value"

height=$(kubectl get consortium escrow -o jsonpath='{.status.height}')
echo "consortium height: $height"
[ "${height:-0}" -ge 1 ]

step "live block interval: 200ms -> 1s -> 200ms, through configuration transactions"
for interval in 1s 200ms; do
  ms=$([ "$interval" = 1s ] && echo 1000 || echo 200)
  kubectl patch consortium escrow --type merge -p "{\"spec\":{\"blockInterval\":\"$interval\"}}"
  kubectl wait --for=jsonpath='{.status.chainConfig.blockIntervalMs}'="$ms" consortium/escrow --timeout "$TIMEOUT"
  kubectl get consortium escrow -o jsonpath='{.status.chainConfig}'; echo
done

step "a fifth member joins the running consortium (Automatic policy: the admin's proposal applies at once)"
kubectl create namespace broker --dry-run=client -o yaml | kubectl apply -f -
cat <<'YAML' | kubectl apply -f -
apiVersion: kubeledger.io/v1alpha1
kind: Member
metadata: {name: broker, namespace: broker}
spec: {consortium: escrow, organization: Escrow Broker, replicas: 1}
YAML
kubectl -n broker wait --for=jsonpath='{.status.phase}'=Admitted member/broker --timeout "$TIMEOUT"
kubectl -n broker get member broker -o jsonpath='{.status.admission}'; echo
# Its node runs as an observer: it follows the chain and serves reads.
kubectl -n broker rollout status statefulset/broker --timeout "$TIMEOUT"
kubectl -n broker run "e2e-observer-$RANDOM" --image "$NODE_IMAGE" --image-pull-policy=IfNotPresent \
  --restart=Never --rm -i --quiet -- --endpoint http://broker-client:7050 -o json status | grep -q '"observer": *true'
kubectl -n broker delete member broker --wait --timeout "$TIMEOUT"

step "delete the consortium: nodes go, volumes stay"
kubectl delete members --all -A --wait --timeout "$TIMEOUT"
kubectl delete consortium escrow --wait --timeout "$TIMEOUT"
for m in agency bank developer auditor; do
  if kubectl -n "$m" get statefulset "$m" >/dev/null 2>&1; then
    echo "statefulset $m/$m survived its Member" >&2; exit 1
  fi
  pvcs=$(kubectl -n "$m" get pvc -l "app.kubernetes.io/instance=$m" -o name | wc -l)
  [ "$pvcs" -ge 1 ] || { echo "the volumes of $m were deleted" >&2; exit 1; }
done

step "uninstall"
helm uninstall kubeledger --namespace "$NS" --wait
kubectl delete namespace agency bank developer auditor broker --wait=false
echo "e2e passed"
