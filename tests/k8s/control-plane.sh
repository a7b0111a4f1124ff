#!/usr/bin/env bash
# A real, throwaway Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler. No kubelet, so pods are created but
# never run.
#
#   tests/k8s/control-plane.sh start DIR   # fresh cluster; writes DIR/kubeconfig, DIR/cluster.env
#   tests/k8s/control-plane.sh stop DIR    # stops only what start recorded in DIR/pids
#
# Binaries come from build.sh (a no-op when cached); K8S_BIN_OVERRIDE=dir skips it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
START_TIMEOUT="${K8S_START_TIMEOUT:-120}"

die() { echo "control plane: ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }

# True if PID is alive and still the binary we started (pids get reused).
ours() {
  local pid=$1 name=$2 exe
  kill -0 "$pid" 2>/dev/null || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ ${exe##*/} == "$name" ]]
}

# True while PID exists and has not finished exiting (zombies count as gone).
running() {
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n $st && ${st:0:1} != Z && ${st:0:1} != X ]]
}

# stop_tier DIR NAME... : SIGTERM these, wait up to the grace period, then SIGKILL.
stop_tier() {
  local dir=$1 name pid i alive deadline; shift
  local pids=() names=()
  for name in "$@"; do
    [[ -f $dir/pids/$name.pid ]] || continue
    pid="$(<"$dir/pids/$name.pid")"
    if ours "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name")
    fi
    rm -f "$dir/pids/$name.pid"
  done
  deadline=$(( $(date +%s%3N) + ${K8S_STOP_GRACE:-5} * 1000 ))
  while :; do
    alive=0
    for i in "${!pids[@]}"; do running "${pids[i]}" && alive=1; done
    (( alive )) || break
    if (( $(date +%s%3N) >= deadline )); then
      for i in "${!pids[@]}"; do
        if running "${pids[i]}"; then
          echo "control plane: ${names[i]} ignored SIGTERM, sending SIGKILL" >&2
          kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
      done
      deadline=$(( deadline + 5000 ))
    fi
    sleep 0.1
  done
  STOPPED=$(( STOPPED + ${#pids[@]} ))
}

# Top down: etcd blocks its shutdown on the apiserver's open watches, and the
# apiserver's on its clients, so stopping all at once is slower than in order.
stop_all() {
  local dir=$1
  STOPPED=0
  [[ -d $dir/pids ]] || { echo "control plane: not running in $dir"; return 0; }
  stop_tier "$dir" kube-scheduler kube-controller-manager
  stop_tier "$dir" kube-apiserver
  stop_tier "$dir" etcd
  rm -rf "$dir/pids"
  echo "control plane: stopped ($STOPPED processes) in $dir"
}

# ---------------------------------------------------------------- ports
# Random ports below the kernel's ephemeral range, so an outgoing connection
# cannot grab one between picking and binding; checked against every socket.
PICKED=" "
pick_port() {
  local lo=20000 hi=32000 eph p
  eph="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  (( hi < eph )) || hi=$eph
  for _ in $(seq 200); do
    p=$(( lo + RANDOM % (hi - lo) ))
    [[ $PICKED == *" $p "* ]] && continue
    if ! ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then
      PICKED+="$p "
      echo "$p"
      return
    fi
  done
  die "no free port found in $lo-$hi"
}

# ---------------------------------------------------------------- certs
gen_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    # mkca NAME CN
    mkca() {
      openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 \
        -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    }
    # sign NAME SUBJECT EXTENSIONS [CA]
    sign() {
      local ca=${4:-ca}
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
        -out "$1.crt" -days 3650 -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    mkca ca kubeledger-test-ca
    # Separate CA for the aggregation layer; without it every component that
    # delegates authentication logs a missing requestheader CA forever.
    mkca front-proxy-ca kubeledger-test-front-proxy-ca
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    # 10.96.0.1 is the first service IP: the in-cluster "kubernetes" Service.
    sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # system:masters bypasses RBAC; the component users match RBAC's bootstrap bindings.
    sign admin "/O=system:masters/CN=kubeledger-admin" "$client"
    sign controller-manager "/CN=system:kube-controller-manager" "$client"
    sign scheduler "/CN=system:kube-scheduler" "$client"
    sign front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.srl
  )
}

# write_kubeconfig FILE USER SERVER PKI  (USER is the cert basename in PKI)
write_kubeconfig() {
  local file=$1 user=$2 server=$3 pki=$4
  (umask 077; : >"$file")
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeledger-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$user.crt")
    client-key-data: $(base64 -w0 "$pki/$user.key")
contexts:
- name: kubeledger-test
  context:
    cluster: kubeledger-test
    user: $user
current-context: kubeledger-test
EOF
}

# ---------------------------------------------------------------- start
DIR=""
launch() {
  local name=$1; shift
  "$K8S_BIN/$name" "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name.pid"
}

# A component that died makes start fail with its log, and takes the rest down.
check_alive() {
  local name pid
  for name in "${COMPONENTS[@]}"; do
    [[ -f $DIR/pids/$name.pid ]] || continue
    pid="$(<"$DIR/pids/$name.pid")"
    if ! ours "$pid" "$name"; then
      echo "control plane: $name (pid $pid) exited during start; last lines of $DIR/$name.log:" >&2
      if [[ -s $DIR/$name.log ]]; then
        tail -n 40 "$DIR/$name.log" | sed 's/^/  | /' >&2
      else
        echo "  | (log is empty)" >&2
      fi
      stop_all "$DIR" >&2 || true
      exit 1
    fi
  done
}

# wait_for WHAT CMD... : retries CMD until it succeeds, a component dies, or timeout.
wait_for() {
  local what=$1; shift
  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    check_alive
    if (( $(date +%s) >= deadline )); then
      echo "control plane: timed out after ${START_TIMEOUT}s waiting for $what" >&2
      for name in "${COMPONENTS[@]}"; do
        [[ -f $DIR/$name.log ]] && { echo "--- $name.log" >&2; tail -n 15 "$DIR/$name.log" >&2; }
      done
      stop_all "$DIR" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

start_all() {
  DIR=$1
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local name
  for name in "${COMPONENTS[@]}"; do
    if [[ -f $DIR/pids/$name.pid ]] && ours "$(<"$DIR/pids/$name.pid")" "$name"; then
      die "$name already running in $DIR; run '$0 stop $DIR' first"
    fi
  done

  if [[ -z ${K8S_BIN_OVERRIDE:-} ]]; then
    "$HERE/build.sh" >&2
  else
    K8S_BIN=$K8S_BIN_OVERRIDE
  fi
  for name in "${COMPONENTS[@]}" kubectl; do
    [[ -x $K8S_BIN/$name ]] || die "missing $K8S_BIN/$name"
  done
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"

  local t0; t0=$(now_ms)
  # Always a fresh cluster: stale etcd data signed by an old CA/SA key only confuses tests.
  rm -rf "$DIR/pids" "$DIR/etcd" "$DIR/pki" "$DIR"/*.log "$DIR"/*.kubeconfig "$DIR/kubeconfig" "$DIR/cluster.env"
  mkdir -p "$DIR/pids"
  local pki=$DIR/pki
  gen_pki "$pki"

  local etcd_port etcd_peer api_port kcm_port sched_port
  etcd_port=$(pick_port); etcd_peer=$(pick_port); api_port=$(pick_port)
  kcm_port=$(pick_port); sched_port=$(pick_port)
  local etcd_url=http://127.0.0.1:$etcd_port api_url=https://127.0.0.1:$api_port

  write_kubeconfig "$DIR/kubeconfig" admin "$api_url" "$pki"
  write_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager "$api_url" "$pki"
  write_kubeconfig "$DIR/scheduler.kubeconfig" scheduler "$api_url" "$pki"

  # fsync off: the data is thrown away and fsync dominates on slow disks.
  launch etcd \
    --name=default --data-dir="$DIR/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="default=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd health" curl -fsS "$etcd_url/health"

  # The endpoint reconciler refuses a loopback address; with no pods, nothing
  # needs the in-cluster "kubernetes" endpoints anyway.
  launch kube-apiserver \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction \
    --profiling=false
  local curl_admin=(curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
  wait_for "kube-apiserver /readyz" "${curl_admin[@]}" "$api_url/readyz"

  # Default controller set ('*') covers GC, statefulset, endpoints/endpointslice,
  # serviceaccount and token, namespace, replicaset/deployment, root-ca publisher.
  launch kube-controller-manager \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$DIR/pki/kcm-serving" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --cluster-name=kubeledger-test \
    --profiling=false
  launch kube-scheduler \
    --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$DIR/pki/sched-serving" \
    --leader-elect=false \
    --profiling=false
  # /healthz is always allowed anonymously on component ports; -k because they self-sign.
  wait_for "kube-controller-manager /healthz" curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  wait_for "kube-scheduler /healthz" curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  # Proves the serviceaccount controller runs; pods cannot be created before this exists.
  wait_for "ServiceAccount default/default" \
    "$K8S_BIN/kubectl" --kubeconfig="$DIR/kubeconfig" -n default get serviceaccount default
  check_alive

  cat >"$DIR/cluster.env" <<EOF
KUBECONFIG=$DIR/kubeconfig
K8S_BIN=$K8S_BIN
K8S_APISERVER_URL=$api_url
K8S_ETCD_URL=$etcd_url
K8S_CA_FILE=$pki/ca.crt
EOF
  echo "control plane: ready in $(elapsed "$t0") s (apiserver $api_url, kubeconfig $DIR/kubeconfig)"
}

[[ $# -eq 2 ]] || usage
case $1 in
  start) start_all "$2" ;;
  stop)
    [[ -d $2 ]] || { echo "control plane: not running in $2"; exit 0; }
    stop_all "$(cd "$2" && pwd)"
    ;;
  *) usage ;;
esac
