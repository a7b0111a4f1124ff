"""The operator on a real API server, installed the way a platform team
installs it: `helm install` of charts/kubeledger, then the operator as a real
process holding a token of the chart's ServiceAccount (so the RBAC under test
is the chart's), reconciling examples/consortium.yaml.

Without a kubelet the node pods never run: this suite is about the operator's
conversation with the API server (objects, ownership, field management,
finalizers, status, Events, RBAC, leader election, teardown); the nodes'
own behaviour is tested with real node processes elsewhere."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from cluster import Cluster, wait_for
from operator_process import OperatorProcess

RELEASE = "kubeledger"
NAMESPACE = "kubeledger-system"
# The chart names everything after the release (release == chart name).
SERVICE_ACCOUNT = "kubeledger"
LEASE = "kubeledger"
FIELD_MANAGER = "kubeledger-operator"
FINALIZER = "kubeledger.io/teardown"
MEMBERS = {"agency": "agency", "bank": "bank", "developer": "developer", "auditor": "auditor"}
CHILD_KINDS = ["statefulset", "service", "configmap", "secret", "poddisruptionbudget", "serviceaccount"]


def member_children(cluster: Cluster, ns: str, member: str) -> list[dict]:
    """Every object the operator made for a Member, found by its labels."""
    listed = cluster.get(",".join(CHILD_KINDS), "-n", ns, "-l", f"kubeledger.io/member={member}")
    return listed["items"]


@pytest.fixture(scope="module")
def helm_release(cluster: Cluster, repo_root, tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    # Helm's and client-go's caches stay in a temporary home, not the repository.
    env = {"HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [cluster.tool("helm"), "install", RELEASE, str(repo_root / "charts/kubeledger"),
         "--namespace", NAMESPACE, "--create-namespace", "--wait=false", "-o", "json"],
        env=env, text=True, capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Cluster, helm_release, tmp_path_factory):
    return cluster.token_kubeconfig(tmp_path_factory.mktemp("operator") / "kubeconfig",
                                    NAMESPACE, SERVICE_ACCOUNT)


class Operators:
    """The operator replicas this suite started; all are stopped at the end."""

    def __init__(self, binary, kubeconfig, log_dir):
        self.binary, self.kubeconfig, self.log_dir = binary, kubeconfig, log_dir
        self.started: list[OperatorProcess] = []

    def start(self, identity: str) -> OperatorProcess:
        p = OperatorProcess(self.binary, self.kubeconfig, self.log_dir, identity, NAMESPACE, LEASE)
        self.started.append(p)
        return p

    def stop_all(self):
        for p in self.started:
            p.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def operators(operator_bin, operator_kubeconfig, tmp_path_factory):
    ops = Operators(operator_bin, operator_kubeconfig, tmp_path_factory.mktemp("operator-logs"))
    yield ops
    ops.stop_all()


def leader_of(cluster: Cluster) -> str | None:
    lease = cluster.get_opt("lease", LEASE, "-n", NAMESPACE)
    return lease and lease["spec"].get("holderIdentity")


@pytest.fixture(scope="module")
def consortium(cluster: Cluster, crds, operators: Operators, repo_root):
    """examples/consortium.yaml applied and reconciled by operator replica `a`."""
    a = operators.start("operator-a")
    wait_for("operator-a to lead", lambda: a.is_leader() or not a.alive())
    assert a.alive(), a.log_tail()
    cluster.apply((repo_root / "examples/consortium.yaml").read_text())

    def every_member_has_its_statefulset():
        assert a.alive(), a.log_tail()
        return all(any(o["kind"] == "StatefulSet" for o in member_children(cluster, ns, m))
                   for m, ns in MEMBERS.items())

    try:
        wait_for("every Member's StatefulSet", every_member_has_its_statefulset, timeout=120)
    except AssertionError:
        print(a.log_tail(120))
        raise
    return a


def test_helm_installs_the_chart(cluster: Cluster, helm_release):
    assert helm_release["info"]["status"] == "deployed"
    assert cluster.get("serviceaccount", SERVICE_ACCOUNT, "-n", NAMESPACE)
    deployment = cluster.get("deployment", "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=" + RELEASE)
    assert [d["spec"]["template"]["spec"]["serviceAccountName"] for d in deployment["items"]] \
        == [SERVICE_ACCOUNT]
    # The controller manager turns the Deployment into a ReplicaSet and a Pod
    # (which, with no kubelet, stays Pending).
    wait_for("the operator Deployment's pod", lambda: cluster.get(
        "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=" + RELEASE)["items"])


def test_every_child_is_owned_and_applied_by_the_operator(cluster: Cluster, consortium):
    for member, ns in MEMBERS.items():
        m = cluster.get("member", member, "-n", ns)
        children = member_children(cluster, ns, member)
        kinds = sorted({o["kind"] for o in children})
        assert kinds == ["ConfigMap", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount",
                         "StatefulSet"], (member, kinds)
        for o in children:
            what = f"{o['kind']} {ns}/{o['metadata']['name']}"
            managers = {(f["manager"], f["operation"]) for f in o["metadata"].get("managedFields", [])}
            assert (FIELD_MANAGER, "Apply") in managers, (what, managers)
            if o["kind"] == "Secret":
                # Key Secrets are kept on teardown: no owner, so no garbage collection.
                continue
            owners = o["metadata"].get("ownerReferences", [])
            assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in owners] \
                == [("Member", member, m["metadata"]["uid"], True)], (what, owners)


def test_finalizers_and_status_through_the_subresource(cluster: Cluster, consortium):
    def status_written(obj):
        return any(f["manager"] == FIELD_MANAGER and f.get("subresource") == "status"
                   for f in obj["metadata"].get("managedFields", []))

    c = wait_for("the Consortium's status", lambda: (
        lambda o: o if status_written(o) and o.get("status", {}).get("genesis") else None)(
        cluster.get("consortium", "escrow")))
    assert FINALIZER in c["metadata"]["finalizers"]
    genesis = json.loads(c["status"]["genesis"])
    assert sorted(v["member"] for v in genesis["validators"]) == sorted(MEMBERS)
    conditions = {x["type"]: x for x in c["status"]["conditions"]}
    assert "Ready" in conditions, conditions
    for member, ns in MEMBERS.items():
        m = wait_for(f"{member}'s status", lambda: (
            lambda o: o if status_written(o) else None)(cluster.get("member", member, "-n", ns)))
        assert FINALIZER in m["metadata"]["finalizers"], member
        assert m["status"]["observedGeneration"] == m["metadata"]["generation"]
        # Status only ever through /status: no main-resource write of the
        # operator's owns a status field.
        for f in m["metadata"]["managedFields"]:
            if f["manager"] == FIELD_MANAGER and not f.get("subresource"):
                assert "f:status" not in f.get("fieldsV1", {}), f


def test_events_are_recorded(cluster: Cluster, consortium):
    def operator_events(ns):
        events = cluster.get("events.events.k8s.io", "-n", ns)["items"]
        return [e for e in events if e.get("reportingController") == FIELD_MANAGER]

    for member, ns in MEMBERS.items():
        events = wait_for(f"Events in {ns}", lambda: operator_events(ns))
        reasons = {e["reason"] for e in events}
        assert "KeysGenerated" in reasons, reasons
        assert all(e["regarding"]["kind"] == "Member" for e in events)


def test_printer_columns_show_real_values(cluster: Cluster, consortium):
    out = cluster.kubectl("get", "consortia,members", "-A").stdout
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("NAME") and "CHAIN" in line)
    for column in ("CHAIN", "HEIGHT", "NODES", "MEMBERS", "PHASE"):
        assert column in header, header
    row = next(line for line in lines if "consortium.kubeledger.io/escrow" in line)
    assert "escrow-dev" in row, row
    member_header = next(line for line in lines if "CONSORTIUM" in line)
    assert "NAMESPACE" in member_header and "READY" in member_header, member_header
    for member, ns in MEMBERS.items():
        row = next(line for line in lines if f"member.kubeledger.io/{member} " in line)
        assert row.startswith(ns) and " escrow " in row, row


def test_the_chart_grants_what_the_operator_needs_and_no_more(cluster: Cluster, consortium,
                                                              operator_kubeconfig):
    kc = operator_kubeconfig
    # What it does, in a member namespace and cluster-wide.
    for verb, resource, ns in [
        ("patch", "statefulsets.apps", "bank"),
        ("create", "services", "bank"),
        ("delete", "persistentvolumeclaims", "bank"),
        ("list", "members.kubeledger.io", None),
        ("patch", "consortia.kubeledger.io/status", None),
        ("create", "events.events.k8s.io", "bank"),
        ("update", "leases.coordination.k8s.io", NAMESPACE),
    ]:
        assert cluster.can_i(verb, resource, namespace=ns, kubeconfig=kc), (verb, resource, ns)
    # What it must not do.
    for verb, resource, ns in [
        ("list", "secrets", "kube-system"),
        ("watch", "secrets", None),
        ("delete", "namespaces", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
        ("create", "pods/exec", "bank"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("delete", "consortia.kubeledger.io", None),
        ("update", "leases.coordination.k8s.io", "kube-system"),
        ("*", "*", None),
    ]:
        assert not cluster.can_i(verb, resource, namespace=ns, kubeconfig=kc), (verb, resource, ns)
    # And the API server says so when it is tried.
    r = cluster.kubectl("get", "secrets", "-n", "kube-system", kubeconfig=kc, check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr


def snapshot(cluster: Cluster) -> dict[str, dict]:
    """Every object of the consortium by kind and name."""
    out = {}
    for member, ns in MEMBERS.items():
        for o in member_children(cluster, ns, member):
            out[f"{o['kind']} {ns}/{o['metadata']['name']}"] = o
        out[f"Member {ns}/{member}"] = cluster.get("member", member, "-n", ns)
    out["Consortium escrow"] = cluster.get("consortium", "escrow")
    return out


def resource_versions(cluster: Cluster) -> dict[str, str]:
    return {k: o["metadata"]["resourceVersion"] for k, o in snapshot(cluster).items()}


def changes(before: dict, after: dict, path: str = "") -> list[str]:
    """Where two objects differ, as paths (for a failure message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            if k in ("resourceVersion", "managedFields"):
                continue
            out += changes(before.get(k), after.get(k), f"{path}.{k}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [c for i, (b, a) in enumerate(zip(before, after)) for c in changes(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: {json.dumps(before)[:200]} -> {json.dumps(after)[:200]}"]


def test_a_second_pass_changes_nothing(cluster: Cluster, consortium, operators: Operators):
    # Let the first passes settle (status converges after genesis, and the
    # health monitor classifies each node after its first probes: the pods
    # never run here, so they become Unreachable), then restart the
    # operator: a fresh process reconciles every object again.
    def classified():
        members = [cluster.get("member", m, "-n", ns) for m, ns in MEMBERS.items()]
        nodes = [n for m in members for n in m.get("status", {}).get("nodes", [])]
        return nodes and all(n.get("health") for n in nodes)
    wait_for("the health monitor to classify every node", classified, timeout=180)

    def settled():
        before = resource_versions(cluster)
        time.sleep(3)
        return before == resource_versions(cluster) and before
    wait_for("the objects to settle", settled, timeout=120)
    before = snapshot(cluster)
    consortium.kill(signal.SIGTERM)
    b = operators.start("operator-b")
    wait_for("operator-b to lead", lambda: b.is_leader() or not b.alive(), timeout=60)
    assert b.alive(), b.log_tail()
    # Every Member and the Consortium reconciled at least once by the new process.
    wait_for("a full pass of the new operator",
             lambda: b.metric_sum("kubeledger_operator_reconciliations_total") >= len(MEMBERS) + 1)
    after = snapshot(cluster)
    changed = {k: changes(before[k], after.get(k, {})) for k in before
               if before[k]["metadata"]["resourceVersion"] != after.get(k, {}).get("metadata", {}).get("resourceVersion")}
    assert not changed, changed
    assert set(after) == set(before)


def test_a_standby_takes_over_when_the_leader_is_killed(cluster: Cluster, consortium,
                                                        operators: Operators):
    leader = next(p for p in operators.started if p.alive() and p.is_leader())
    standby = operators.start("operator-c")
    wait_for("the standby to serve metrics", lambda: standby.metrics() if standby.alive() else True)
    assert standby.alive(), standby.log_tail()
    assert leader_of(cluster) == leader.identity
    assert not standby.is_leader()
    leader.kill(signal.SIGKILL)
    wait_for("the standby to take the Lease", lambda: leader_of(cluster) == standby.identity,
             timeout=90)
    wait_for("the standby to lead", standby.is_leader)
    # It reconciles: a child deleted behind the operator's back comes back.
    cluster.kubectl("delete", "configmap", "-n", "bank", "-l",
                    "kubeledger.io/member=bank", "--wait=true")
    wait_for("bank's ConfigMap to be re-created",
             lambda: any(o["kind"] == "ConfigMap" for o in member_children(cluster, "bank", "bank")),
             timeout=120)


def test_turning_backups_on_replaces_the_statefulset_and_keeps_pods_and_volumes(
        cluster: Cluster, consortium, operators: Operators):
    """A StatefulSet's volume claims can't change in place: the operator
    deletes it leaving its pods and volumes (orphan), applies it again with
    the backup claim and the seed's restore init container, and says so in
    an Event."""
    ns = member = "auditor"
    before = cluster.get("statefulset", member, "-n", ns)
    wait_for("the auditor's data volume", lambda: cluster.get_opt("pvc", f"data-{member}-0", "-n", ns))
    data_before = cluster.get("pvc", f"data-{member}-0", "-n", ns)["metadata"]["uid"]
    pods_before = {p["metadata"]["uid"] for p in cluster.get(
        "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={member}")["items"]}
    cluster.kubectl("patch", "member", member, "-n", ns, "--type=merge", "-p", json.dumps(
        {"spec": {"backup": {"interval": "1h", "keep": 2, "size": "2Gi"},
                  "seedFrom": {"claimName": "auditor-seed", "path": "backups"}}}))

    def replaced():
        sts = cluster.get_opt("statefulset", member, "-n", ns)
        return sts if sts and sts["metadata"]["uid"] != before["metadata"]["uid"] else None
    try:
        after = wait_for("the StatefulSet to be replaced", replaced, timeout=120)
    except AssertionError:
        print(next(p for p in operators.started if p.alive() and p.is_leader()).log_tail(80))
        raise
    claims = [(c["metadata"]["name"], c["spec"]["resources"]["requests"]["storage"])
              for c in after["spec"]["volumeClaimTemplates"]]
    assert claims == [("data", "5Gi"), ("backups", "2Gi")], claims
    pod = after["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["restore"]
    assert pod["initContainers"][0]["command"][:4] == ["kubeledger", "snapshot", "restore", "--if-empty"]
    assert any(v["name"] == "seed" and v["persistentVolumeClaim"]["readOnly"] for v in pod["volumes"])
    # Its volume stayed; so did its pods, adopted by the new StatefulSet
    # (which rolls them onto the new template as they become ready).
    assert cluster.get("pvc", f"data-{member}-0", "-n", ns)["metadata"]["uid"] == data_before
    pods_now = cluster.get("pods", "-n", ns, "-l", f"app.kubernetes.io/instance={member}")["items"]
    assert pods_before <= {p["metadata"]["uid"] for p in pods_now} or not pods_before
    events = cluster.get("events.events.k8s.io", "-n", ns)["items"]
    changed = [e for e in events if e.get("reason") == "VolumesChanged"]
    assert changed and "backups:2Gi" in changed[0]["note"], [e.get("reason") for e in events]
    # The node configuration names the schedule.
    config = cluster.get("configmap", f"{member}-config", "-n", ns)["data"][f"{member}-0.toml"]
    assert "[backup]" in config and "interval_s = 3600" in config and "keep = 2" in config, config
    # A second pass leaves it be.
    uid = after["metadata"]["uid"]
    time.sleep(5)
    assert cluster.get("statefulset", member, "-n", ns)["metadata"]["uid"] == uid


def test_teardown_keeps_what_the_design_retains(cluster: Cluster, consortium, operators: Operators):
    secrets = {ns: f"{m}-keys" for m, ns in MEMBERS.items()}
    # The StatefulSet controller made each node's volume claim.
    wait_for("the node volume claims", lambda: all(
        cluster.get("pvc", "-n", ns)["items"] for ns in MEMBERS.values()))

    # The Consortium goes first: it waits for its Members.
    cluster.kubectl("delete", "consortium", "escrow", "--wait=false")
    c = wait_for("the Consortium to wait for its Members", lambda: (
        lambda o: o if o and o["metadata"].get("deletionTimestamp") else None)(
        cluster.get_opt("consortium", "escrow")))
    assert FINALIZER in c["metadata"]["finalizers"]

    # One Member: its nodes go, its keys and volumes stay.
    cluster.kubectl("delete", "member", "auditor", "-n", "auditor", "--wait=false")
    wait_for("the auditor Member to go", lambda: cluster.get_opt("member", "auditor", "-n", "auditor") is None,
             timeout=120)
    wait_for("the auditor's nodes to go", lambda: [
        o["kind"] for o in member_children(cluster, "auditor", "auditor")] == ["Secret"], timeout=120)
    assert cluster.get_opt("consortium", "escrow") is not None, "the Consortium went before its Members"

    # Then the rest, and the Consortium follows.
    for member, ns in MEMBERS.items():
        cluster.kubectl("delete", "member", member, "-n", ns, "--wait=false", check=False)
    wait_for("every Member and the Consortium to go", lambda: cluster.get_opt("consortium", "escrow") is None
             and all(cluster.get_opt("member", m, "-n", ns) is None for m, ns in MEMBERS.items()),
             timeout=180)
    for member, ns in MEMBERS.items():
        kinds = [o["kind"] for o in member_children(cluster, ns, member)]
        assert kinds == ["Secret"], (member, kinds)
        assert cluster.get("secret", secrets[ns], "-n", ns)
        assert cluster.get("pvc", "-n", ns)["items"], f"{ns} lost its volumes"
