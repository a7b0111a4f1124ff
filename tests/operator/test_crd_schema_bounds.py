"""The schema bounds of our CRDs (ranges, patterns, required fields), checked
offline with jsonschema; the CEL rules are evaluated in operator/tests/crd.rs."""

from __future__ import annotations

import copy

import pytest

from kube_schemas import load_yaml_documents, validate_object


@pytest.fixture(scope="module")
def example(repo_root) -> dict[str, dict]:
    docs = load_yaml_documents((repo_root / "examples/consortium.yaml").read_text())
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


@pytest.mark.parametrize("what,changes", [
    ("empty blocks", {"maxBlockTxs": 0}),
    ("huge blocks", {"maxBlockTxs": 100_001}),
    ("transactions smaller than the node allows", {"maxTxBytes": 100}),
    ("blocks over 64 MiB", {"maxBlockBytes": 64 * 1024 * 1024 + 1}),
    ("no checkpoints", {"checkpointInterval": 0}),
    ("chain id with capitals", {"chainId": "Escrow"}),
    ("chain id too long", {"chainId": "a" * 64}),
    ("no founders field", {"founders": None}),
    ("founder without namespace", {"founders": [{"name": "bank"}]}),
])
def test_consortium_schema_refuses(example, what, changes):
    with pytest.raises(AssertionError, match="does not match our CRD schema"):
        validate_object(with_spec(example["consortium"], **changes))


@pytest.mark.parametrize("what,changes", [
    ("no nodes", {"replicas": 0}),
    ("too many nodes", {"replicas": 17}),
    ("no organisation", {"organization": None}),
])
def test_member_schema_refuses(example, what, changes):
    with pytest.raises(AssertionError, match="does not match our CRD schema"):
        validate_object(with_spec(example["member"], **changes))


def test_defaults_are_optional(example):
    minimal = copy.deepcopy(example["consortium"])
    minimal["spec"] = {"chainId": "escrow-dev", "founders": [{"name": "bank", "namespace": "bank"}]}
    validate_object(minimal)
