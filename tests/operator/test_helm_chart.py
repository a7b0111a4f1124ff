"""The Helm chart, linted and rendered by the real Helm library (helm-sdkpy) and
validated offline against the official Kubernetes JSON schemas."""

from __future__ import annotations

import collections

import pytest
import yaml

import helm_render
from kube_schemas import validate_object

# Severities of Helm's lint messages.
WARNING = 2


@pytest.fixture(scope="module")
def chart(repo_root):
    return repo_root / "charts/kubeledger"


@pytest.fixture(scope="module")
def defaults(chart):
    return helm_render.install(chart)


def by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    out = collections.defaultdict(list)
    for obj in objects:
        out[obj["kind"]].append(obj)
    return out


def test_chart_lints_clean(chart):
    result = helm_render.lint(chart)
    assert result["TotalChartsLinted"] == 1
    assert not result["Errors"]
    serious = [m for m in result["Messages"] if m["Severity"] >= WARNING]
    assert not serious, serious


def test_default_install_is_valid_kubernetes(defaults):
    release, objects = defaults
    assert release["info"]["status"] == "deployed"
    kinds = collections.Counter(o["kind"] for o in objects)
    assert kinds == {
        "CustomResourceDefinition": 2, "ServiceAccount": 1, "ClusterRole": 1,
        "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1, "Service": 1, "Deployment": 1,
        "ConfigMap": 1,  # the Grafana dashboard
    }
    # CRDs are installed before anything that could use them.
    assert [o["kind"] for o in objects[:2]] == ["CustomResourceDefinition"] * 2
    for obj in objects:
        validate_object(obj)


def test_chart_crds_are_the_generated_ones(defaults, repo_root):
    _, objects = defaults
    generated = [d for d in yaml.safe_load_all((repo_root / "crds/kubeledger.io.yaml").read_text())]
    installed = {o["metadata"]["name"]: o for o in objects if o["kind"] == "CustomResourceDefinition"}
    for crd in generated:
        got = dict(installed[crd["metadata"]["name"]])
        got.pop("status", None)
        got["metadata"] = {k: v for k, v in got["metadata"].items()
                           if k not in ("uid", "resourceVersion", "labels", "annotations")}
        assert got["spec"] == crd["spec"]


def test_operator_runs_hardened_with_probes(defaults):
    _, objects = defaults
    deployment = by_kind(objects)["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["args"][0] == "run"
    assert "--leader-elect" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBELEDGER_NODE_IMAGE"] == "ghcr.io/kubeledger/node:0.1.0"
    assert pod["serviceAccountName"] == by_kind(objects)["ServiceAccount"][0]["metadata"]["name"]


# What the operator calls (operator/src/controller, leader.rs), resource by resource.
EXPECTED_CLUSTER_RULES = {
    ("kubeledger.io", "consortia"): {"get", "list", "watch", "patch"},
    ("kubeledger.io", "members"): {"get", "list", "watch", "patch"},
    ("kubeledger.io", "consortia/status"): {"patch"},
    ("kubeledger.io", "members/status"): {"patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"create", "patch", "delete"},
    ("", "configmaps"): {"create", "patch", "delete"},
    ("", "serviceaccounts"): {"create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"create", "patch", "delete"},
    ("", "secrets"): {"get", "create", "patch", "delete"},
    ("", "pods"): {"list", "delete"},
    ("", "persistentvolumeclaims"): {"delete", "deletecollection"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def rule_table(role: dict) -> dict[tuple[str, str], set[str]]:
    table = collections.defaultdict(set)
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] \
            and "*" not in rule["apiGroups"], f"wildcard rule {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table[(group, resource)] |= set(rule["verbs"])
    return dict(table)


def test_rbac_is_least_privilege(defaults):
    _, objects = defaults
    kinds = by_kind(objects)
    assert rule_table(kinds["ClusterRole"][0]) == EXPECTED_CLUSTER_RULES
    # The leader Lease only in the release namespace.
    role = kinds["Role"][0]
    assert role["metadata"]["namespace"] == helm_render.NAMESPACE
    assert rule_table(role) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    binding = kinds["ClusterRoleBinding"][0]
    assert binding["subjects"][0]["name"] == kinds["ServiceAccount"][0]["metadata"]["name"]


def test_service_monitor_and_replicas_are_optional(chart):
    _, objects = helm_render.install(chart, values={
        "replicaCount": 2,
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "leaderElection": {"enabled": True},
    })
    kinds = by_kind(objects)
    monitor = kinds["ServiceMonitor"][0]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = kinds["Service"][0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert kinds["Deployment"][0]["spec"]["replicas"] == 2
    for obj in objects:
        validate_object(obj)


def test_without_leader_election_there_is_no_lease_role(chart):
    _, objects = helm_render.install(chart, values={"leaderElection": {"enabled": False}})
    kinds = by_kind(objects)
    assert "Role" not in kinds and "RoleBinding" not in kinds
    args = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["run"]


def test_metrics_service_selects_the_operator_pods(defaults):
    _, objects = defaults
    kinds = by_kind(objects)
    selector = kinds["Service"][0]["spec"]["selector"]
    labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    port = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert kinds["Service"][0]["spec"]["ports"][0]["targetPort"] == port["name"]


def test_node_pod_monitor_selects_the_node_pods_the_operator_makes(chart, run_operator):
    _, objects = helm_render.install(chart, values={
        "metrics": {"nodePodMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    })
    monitors = by_kind(objects)["PodMonitor"]
    assert len(monitors) == 1
    monitor = monitors[0]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # What the operator renders for the example: every node pod is selected,
    # on the port its container names for /metrics.
    rendered = yaml.safe_load_all(run_operator("render", "-f", "examples/consortium.yaml"))
    statefulsets = [o for o in rendered if o and o["kind"] == "StatefulSet"]
    assert statefulsets
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    for sts in statefulsets:
        template = sts["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), sts["metadata"]["name"]
        ports = {p["name"]: p for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports, ports
    assert endpoint["path"] == "/metrics"


def test_node_pod_monitor_can_be_limited_to_member_namespaces(chart):
    _, objects = helm_render.install(chart, values={
        "metrics": {"nodePodMonitor": {"enabled": True, "namespaces": ["bank", "agency"]}},
    })
    monitor = by_kind(objects)["PodMonitor"][0]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["bank", "agency"]}


def test_node_pod_monitor_is_off_by_default(defaults):
    _, objects = defaults
    assert "PodMonitor" not in by_kind(objects)
