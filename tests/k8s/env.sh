# Shared by build.sh, control-plane.sh and smoke.sh (sourced, not executed).
# Changing a version changes the cache key, so old and new builds never mix.

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

# Staging modules are published as v0.<minor>.<patch> for a v1.<minor>.<patch> release.
K8S_STAGING_VERSION="v0.${K8S_VERSION#v1.}"

K8S_CACHE_ROOT="${KUBELEDGER_CACHE:-$HOME/.cache/kubeledger}/k8s"
K8S_KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"
K8S_KEY_DIR="$K8S_CACHE_ROOT/$K8S_KEY"
K8S_BIN="$K8S_KEY_DIR/bin"

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)
