"""The CRDs on a real API server: they install cleanly, the examples are
accepted, and every CEL rule and schema bound refuses what it promises to,
with the promised message, as `kubectl apply` shows it to a platform team."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from cluster import Cluster


@pytest.fixture(scope="module")
def example(repo_root) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((repo_root / "examples/consortium.yaml").read_text()) if d]
    return {
        "consortium": next(d for d in docs if d["kind"] == "Consortium"),
        "member": next(d for d in docs if d["kind"] == "Member"),
    }


def with_spec(obj: dict, **changes) -> dict:
    out = copy.deepcopy(obj)
    for key, value in changes.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out


def dry_run_create(cluster: Cluster, obj: dict):
    return cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                           input=json.dumps(obj), check=False)


def test_crds_install_without_warnings(cluster: Cluster, repo_root):
    # A second server-side apply of the same CRDs: the API server re-validates
    # them (structural schema, CEL cost budget) and must have nothing to say.
    r = cluster.apply((repo_root / "crds/kubeledger.io.yaml").read_text())
    assert "Warning" not in r.stderr, r.stderr
    for name in ("consortia.kubeledger.io", "members.kubeledger.io"):
        crd = cluster.get(f"crd/{name}")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert "NonStructuralSchema" not in conditions, conditions


def test_every_example_document_is_accepted(cluster: Cluster, crds, repo_root):
    for doc in yaml.safe_load_all((repo_root / "examples/consortium.yaml").read_text()):
        if not doc or doc["kind"] == "Namespace":
            continue
        if doc["kind"] == "Member":
            # Dry-run creation in a namespace needs the namespace to exist.
            cluster.kubectl("create", "namespace", doc["metadata"]["namespace"], check=False)
        r = dry_run_create(cluster, doc)
        assert r.returncode == 0, f"{doc['kind']} {doc['metadata']['name']}: {r.stderr}"
        assert "Warning" not in r.stderr, r.stderr


def test_defaults_are_filled_in_by_the_server(cluster: Cluster, crds, example):
    minimal = copy.deepcopy(example["consortium"])
    minimal["spec"] = {"chainId": "escrow-dev", "founders": [{"name": "bank", "namespace": "bank"}]}
    r = dry_run_create(cluster, minimal)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)["spec"]
    assert spec["blockInterval"] == "200ms"
    assert spec["admission"]["mode"] == "Automatic"
    assert spec["healing"]["enabled"] is True
    assert spec["healing"]["stuckAfter"] == "2m"


# (what, spec changes, the field the API server names, the message it gives)
CONSORTIUM_REFUSALS = [
    ("no founders", {"founders": []}, "spec.founders",
     "at least one founding member is required"),
    ("unparsable block interval", {"blockInterval": "fast"}, "spec.blockInterval",
     "blockInterval must be a duration between 10ms and 1m"),
    ("block interval out of range", {"blockInterval": "5m"}, "spec.blockInterval",
     "blockInterval must be a duration between 10ms and 1m"),
    ("transactions larger than blocks", {"maxTxBytes": 8_000_000}, "spec",
     "maxTxBytes must not exceed maxBlockBytes"),
    ("view change no longer than a block", {"viewChangeTimeout": "100ms"}, "spec",
     "viewChangeTimeout must be longer than blockInterval"),
    ("view change timeout that does not parse", {"viewChangeTimeout": "2x"}, "spec.viewChangeTimeout",
     "viewChangeTimeout must be a duration between 100ms and 10m"),
    ("view change timeout over 10m", {"viewChangeTimeout": "11m"}, "spec.viewChangeTimeout",
     "viewChangeTimeout must be a duration between 100ms and 10m"),
    ("vote without its settings", {"admission": {"mode": "Vote"}}, "spec.admission",
     "mode Vote requires the vote settings"),
    ("negative vote expiry", {"admission": {"mode": "Vote", "vote": {"expiry": "-1h"}}},
     "spec.admission.vote.expiry", "expiry must be a positive duration"),
    ("stuckAfter below the poll", {"healing": {"stuckAfter": "10s"}}, "spec.healing.stuckAfter",
     "stuckAfter must be a duration between 30s and 24h"),
    ("stuckAfter that does not parse", {"healing": {"stuckAfter": "soon"}}, "spec.healing.stuckAfter",
     "stuckAfter must be a duration between 30s and 24h"),
    ("lagFor above a day", {"healing": {"lagFor": "48h"}}, "spec.healing.lagFor",
     "lagFor must be a duration between 30s and 24h"),
    ("restartBackoff below 10s", {"healing": {"restartBackoff": "1s"}}, "spec.healing.restartBackoff",
     "restartBackoff must be a duration between 10s and 1h"),
    ("rebuild without healing", {"healing": {"enabled": False, "rebuildCorruptReplicas": True}},
     "spec.healing", "rebuildCorruptReplicas needs enabled"),
    ("a view change larger than a consensus message", {"maxBlockBytes": 64 * 1024 * 1024},
     "spec", "a view change carries every block of two checkpointIntervals"),
    ("a long interval of large blocks", {"checkpointInterval": 100_000}, "spec",
     "a view change carries every block of two checkpointIntervals"),
    # Plain schema bounds, enforced by the same server.
    ("empty blocks", {"maxBlockTxs": 0}, "spec.maxBlockTxs", "should be greater than or equal to 1"),
    ("huge blocks", {"maxBlockTxs": 100_001}, "spec.maxBlockTxs", "should be less than or equal to"),
    ("blocks over 64 MiB", {"maxBlockBytes": 64 * 1024 * 1024 + 1}, "spec.maxBlockBytes",
     "should be less than or equal to"),
    ("no checkpoints", {"checkpointInterval": 0}, "spec.checkpointInterval",
     "should be greater than or equal to 1"),
    ("chain id with capitals", {"chainId": "Escrow"}, "spec.chainId", "should match"),
    ("chain id too long", {"chainId": "a" * 64}, "spec.chainId", "may not be more than 63"),
    ("no founders field", {"founders": None}, "spec.founders", "Required value"),
    ("founder without namespace", {"founders": [{"name": "bank"}]}, "spec.founders[0].namespace",
     "Required value"),
]


@pytest.mark.parametrize("what,changes,field,message", CONSORTIUM_REFUSALS,
                         ids=[c[0] for c in CONSORTIUM_REFUSALS])
def test_consortium_refusals(cluster: Cluster, crds, example, what, changes, field, message):
    r = dry_run_create(cluster, with_spec(example["consortium"], **changes))
    assert r.returncode != 0, f"{what} was accepted"
    assert f"{field}:" in r.stderr and message in r.stderr, r.stderr


MEMBER_REFUSALS = [
    ("no nodes", {"replicas": 0}, "spec.replicas", "should be greater than or equal to 1"),
    ("too many nodes", {"replicas": 17}, "spec.replicas", "should be less than or equal to 16"),
    ("no organisation", {"organization": None}, "spec.organization", "Required value"),
    ("approved and rejected at once", {"approvals": [1, 2], "rejections": [3, 2]}, "spec",
     "a proposal cannot be both approved and rejected"),
    ("backups every few seconds", {"backup": {"interval": "30s"}}, "spec.backup.interval",
     "backup.interval must be at least 1m"),
    ("a backup interval that does not parse", {"backup": {"interval": "daily"}},
     "spec.backup.interval", "should match"),
    ("no backups kept", {"backup": {"keep": 0}}, "spec.backup.keep",
     "should be greater than or equal to 1"),
    ("a seed without a claim", {"seedFrom": {"path": "backups"}}, "spec.seedFrom.claimName",
     "Required value"),
    ("a seed path out of the claim", {"seedFrom": {"claimName": "seed", "path": "a/../../etc"}},
     "spec.seedFrom.path", "seedFrom.path must stay inside the claim"),
]


@pytest.mark.parametrize("what,changes,field,message", MEMBER_REFUSALS,
                         ids=[c[0] for c in MEMBER_REFUSALS])
def test_member_refusals(cluster: Cluster, crds, example, what, changes, field, message):
    cluster.kubectl("create", "namespace", example["member"]["metadata"]["namespace"], check=False)
    r = dry_run_create(cluster, with_spec(example["member"], **changes))
    assert r.returncode != 0, f"{what} was accepted"
    assert f"{field}:" in r.stderr and message in r.stderr, r.stderr


def test_distinct_votes_are_accepted(cluster: Cluster, crds, example):
    cluster.kubectl("create", "namespace", example["member"]["metadata"]["namespace"], check=False)
    r = dry_run_create(cluster, with_spec(example["member"], approvals=[1, 2], rejections=[3]))
    assert r.returncode == 0, r.stderr


def test_immutable_fields_refuse_updates(cluster: Cluster, crds, example):
    # Transition rules (self == oldSelf) only run on updates of stored objects.
    consortium = with_spec(example["consortium"])
    consortium["metadata"] = {"name": "immutability-check"}
    cluster.kubectl("create", "-f", "-", input=json.dumps(consortium))
    try:
        r = cluster.kubectl("patch", "consortium", "immutability-check", "--type=merge",
                            "-p", json.dumps({"spec": {"chainId": "other-chain"}}), check=False)
        assert r.returncode != 0, "chainId changed"
        assert "spec.chainId:" in r.stderr and "chainId is immutable" in r.stderr, r.stderr
        # A mutable field still changes.
        cluster.kubectl("patch", "consortium", "immutability-check", "--type=merge",
                        "-p", json.dumps({"spec": {"blockInterval": "300ms"}}))
    finally:
        cluster.kubectl("delete", "consortium", "immutability-check", "--wait=false")
        cluster.kubectl("patch", "consortium", "immutability-check", "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)

    ns = "immutability-check"
    cluster.kubectl("create", "namespace", ns, check=False)
    member = copy.deepcopy(example["member"])
    member["metadata"] = {"name": "bank", "namespace": ns}
    cluster.kubectl("create", "-f", "-", input=json.dumps(member))
    r = cluster.kubectl("patch", "member", "bank", "-n", ns, "--type=merge",
                        "-p", json.dumps({"spec": {"consortium": "other"}}), check=False)
    assert r.returncode != 0, "a Member moved to another consortium"
    assert "spec.consortium:" in r.stderr and "consortium is immutable" in r.stderr, r.stderr
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.parametrize("healing", [
    {"enabled": True, "stuckAfter": "90s", "maxLag": 500, "lagFor": "10m",
     "maxRestartsPerHour": 5, "restartBackoff": "30s", "rebuildCorruptReplicas": True},
    {"enabled": False},
], ids=["every healing setting", "healing off"])
def test_healing_settings_are_accepted(cluster: Cluster, crds, example, healing):
    r = dry_run_create(cluster, with_spec(example["consortium"], healing=healing))
    assert r.returncode == 0, r.stderr
