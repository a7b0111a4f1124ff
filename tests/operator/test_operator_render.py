"""`kubeledger-operator render` and `crd` on the examples, validated offline against
the official Kubernetes JSON schemas and our own CRD schemas."""

from __future__ import annotations

import collections
import hashlib
import subprocess

import pytest
import yaml

from kube_schemas import load_yaml_documents, validate_object

EXAMPLE = "examples/consortium.yaml"


@pytest.fixture(scope="module")
def rendered(run_operator) -> list[dict]:
    return load_yaml_documents(run_operator("render", "-f", EXAMPLE))


def test_example_documents_are_valid(repo_root):
    docs = load_yaml_documents((repo_root / EXAMPLE).read_text())
    kinds = collections.Counter(d["kind"] for d in docs)
    assert kinds == {"Namespace": 4, "Consortium": 1, "Member": 4}
    for doc in docs:
        validate_object(doc)


def test_every_rendered_object_is_valid_kubernetes(rendered):
    kinds = collections.Counter(o["kind"] for o in rendered)
    # Per member: ServiceAccount, key Secret, node ConfigMap, two Services, PDB,
    # StatefulSet; plus the genesis ConfigMap in each member namespace.
    assert kinds == {
        "ServiceAccount": 4, "Secret": 4, "ConfigMap": 8, "Service": 8,
        "PodDisruptionBudget": 4, "StatefulSet": 4,
    }
    for obj in rendered:
        validate_object(obj)


def test_objects_live_in_their_member_namespace(rendered):
    for obj in rendered:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubeledger-operator"
        assert meta["labels"]["kubeledger.io/consortium"] == "escrow"
        if meta["name"] != "escrow-genesis":
            assert meta["labels"]["kubeledger.io/member"] == meta["namespace"]
        # Owners have no uid before they exist: no ownerReferences in a preview.
        assert "ownerReferences" not in meta


def test_objects_are_owned_when_the_resources_exist(operator_bin, repo_root, tmp_path):
    """Rendering resources read back from a cluster (with uids) adds owner references."""
    docs = load_yaml_documents((repo_root / EXAMPLE).read_text())
    for i, doc in enumerate(docs):
        doc["metadata"]["uid"] = f"00000000-0000-0000-0000-{i:012d}"
    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run([str(operator_bin), "render", "-f", str(live)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    uids = {(d["kind"], d["metadata"]["name"]): d["metadata"]["uid"] for d in docs}
    for obj in load_yaml_documents(out):
        if obj["kind"] == "Secret":
            # Node keys follow the volumes, not the Member (deleteOnTeardown).
            assert "ownerReferences" not in obj["metadata"]
            continue
        owner = obj["metadata"]["ownerReferences"][0]
        assert owner["controller"] is True
        expected = ("Consortium", "escrow") if obj["metadata"]["name"] == "escrow-genesis" \
            else ("Member", obj["metadata"]["namespace"])
        assert (owner["kind"], owner["name"]) == expected
        assert owner["uid"] == uids[expected]
        validate_object(obj)


def test_genesis_is_the_same_everywhere_and_hashed(rendered):
    copies = [o for o in rendered if o["metadata"]["name"] == "escrow-genesis"]
    assert sorted(o["metadata"]["namespace"] for o in copies) == \
        ["agency", "auditor", "bank", "developer"]
    texts = {o["data"]["genesis.json"] for o in copies}
    assert len(texts) == 1
    text = texts.pop()
    for o in copies:
        assert o["immutable"] is True
        assert o["metadata"]["annotations"]["kubeledger.io/genesis-sha256"] == \
            hashlib.sha256(text.encode()).hexdigest()


def test_node_pods_are_hardened(rendered):
    for sts in (o for o in rendered if o["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 7050
        assert container["command"] == \
            ["kubeledger", "node", "--config", "/etc/kubeledger/node.toml"]
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"] in {"1Gi", "5Gi"}
        for init in pod.get("initContainers", []):
            assert init["securityContext"]["readOnlyRootFilesystem"] is True
            assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_a_member_with_backups_gets_a_backup_volume_per_node(rendered):
    agency = next(o for o in rendered if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "agency")
    claims = {c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"]
              for c in agency["spec"]["volumeClaimTemplates"]}
    assert claims == {"data": "1Gi", "backups": "5Gi"}
    mounts = agency["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "backups", "mountPath": "/var/lib/kubeledger-backups"} in mounts
    config = next(o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "agency-config")
    toml = config["data"]["agency-0.toml"]
    assert "[backup]" in toml and "interval_s = 21600" in toml and "keep = 4" in toml, toml


def test_crd_command_prints_the_checked_in_crds(run_operator, repo_root):
    printed = run_operator("crd")
    assert printed == (repo_root / "crds/kubeledger.io.yaml").read_text()
    assert printed == (repo_root / "charts/kubeledger/crds/kubeledger.io.yaml").read_text()
    for crd in load_yaml_documents(printed):
        validate_object(crd)


def test_render_refuses_a_spec_the_node_would_refuse(operator_bin, tmp_path, repo_root):
    text = (repo_root / EXAMPLE).read_text().replace("maxTxBytes: 65536", "maxTxBytes: 8388608")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = subprocess.run([str(operator_bin), "render", "-f", str(bad)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode != 0
    assert "maxBlockBytes must be at least maxTxBytes" in result.stderr
