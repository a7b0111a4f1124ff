"""The Grafana dashboard shipped with the chart: valid JSON with the panels
platform teams expect, every query naming only metrics listed in
tests/contract/metrics.yaml, that list matching what the node exports, and the
chart shipping the dashboard for the Grafana sidecar."""

from __future__ import annotations

import json
import re

import pytest
import yaml

import helm_render
from kube_schemas import validate_object

DASHBOARD = "charts/kubeledger/dashboards/kubeledger.json"
CONTRACT = "tests/contract/metrics.yaml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# PromQL words that look like our metric names but are not (none today; labels
# such as `namespace` never start with `kubeledger_`).
METRIC = re.compile(r"\bkubeledger_[a-z0-9_]+\b")

EXPECTED_PANELS = {
    "Latest block", "Throughput", "Block time", "Active nodes", "Transactions",
    "Commit latency", "View changes", "Height per node", "Restarts",
}


@pytest.fixture(scope="module")
def dashboard(repo_root) -> dict:
    return json.loads((repo_root / DASHBOARD).read_text())


@pytest.fixture(scope="module")
def contract(repo_root) -> dict[str, dict[str, str]]:
    return yaml.safe_load((repo_root / CONTRACT).read_text())


def exposed_names(section: dict[str, str]) -> set[str]:
    """Series names a scrape shows for these metrics."""
    out = set()
    for name, kind in section.items():
        if kind == "histogram":
            out |= {name + s for s in HISTOGRAM_SUFFIXES}
        else:
            out.add(name)
    return out


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and template variable."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def test_dashboard_is_valid_grafana_json(dashboard):
    assert dashboard["uid"] and dashboard["title"] == "kubeledger"
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in {"stat", "timeseries"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "consortium"} <= variables


def test_dashboard_has_the_expected_panels(dashboard):
    titles = {p["title"] for p in dashboard["panels"]}
    assert EXPECTED_PANELS <= titles, EXPECTED_PANELS - titles


def test_every_query_uses_only_listed_metrics(dashboard, contract):
    known = set()
    for section in contract.values():
        known |= exposed_names(section)
    used = set()
    for where, expr in queries(dashboard):
        names = set(METRIC.findall(expr))
        assert names, f"{where} names no kubeledger metric: {expr}"
        unknown = names - known
        assert not unknown, f"{where} uses {sorted(unknown)}, not in {CONTRACT}"
        used |= names
    # The consensus panels platform teams look at first.
    consensus = {"kubeledger_view_changes_total", "kubeledger_peers_connected", "kubeledger_checkpoints_total"}
    assert consensus <= used


def test_every_variable_is_used(dashboard):
    text = json.dumps(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["name"] != "datasource":
            assert f"${var['name']}" in text, f"${var['name']} is never used"


def node_exported_metrics(source: str) -> dict[str, str]:
    """Names and types the node registers, read from node/src/metrics.rs."""
    fields = dict(re.findall(r"pub (\w+): (?:Family<\w+, )?(Gauge|Counter|Histogram)", source))
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', source).group(1)
    out = {}
    registrations = [
        (name, "", var)
        for name, var in re.findall(r'register\(\s*"(\w+)",\s*"[^"]*",\s*(\w+)\.clone\(\)', source)
    ] + re.findall(
        r'register_with_unit\(\s*"(\w+)",\s*"[^"]*",\s*(?:\w+::)*Unit::(\w+),\s*(\w+)\.clone\(\)', source
    )
    for name, unit, var in registrations:
        kind = fields[var].lower()
        full = f"{prefix}_{name}" + (f"_{unit.lower()}" if unit else "")
        full += "_total" if kind == "counter" else ""
        out[full] = kind
    return out


def test_node_section_is_what_the_node_exports(repo_root, contract):
    exported = node_exported_metrics((repo_root / "node/src/metrics.rs").read_text())
    assert exported, "no metrics found in node/src/metrics.rs"
    assert contract["node"] == exported


def test_chart_ships_the_dashboard_for_the_sidecar(repo_root):
    chart = repo_root / "charts/kubeledger"
    _, objects = helm_render.install(chart)
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(maps) == 1
    cm = maps[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == helm_render.NAMESPACE
    assert json.loads(cm["data"]["kubeledger.json"]) == json.loads((repo_root / DASHBOARD).read_text())
    validate_object(cm)

    _, objects = helm_render.install(chart, values={"grafana": {"dashboard": {
        "label": "dashboards", "labelValue": "kubeledger", "namespace": "monitoring",
        "annotations": {"grafana_folder": "Ledger"}}}})
    cm = next(o for o in objects if o["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["dashboards"] == "kubeledger"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Ledger"

    _, objects = helm_render.install(chart, values={"grafana": {"dashboard": {"enabled": False}}})
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
