"""Validation of Kubernetes objects against the official JSON schemas
(kubernetes-validate) and of kubeledger objects against our own CRD schemas."""

from __future__ import annotations

import pathlib

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# the installed schemas know.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version() + ".0"]

# Kinds of other projects' CRDs that the chart may create; checked by hand.
THIRD_PARTY_GROUPS = {"monitoring.coreos.com"}


def load_yaml_documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every kubeledger CRD in crds/."""
    out = {}
    for crd in load_yaml_documents((ROOT / "crds/kubeledger.io.yaml").read_text()):
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


_CRD_SCHEMAS = crd_schemas()


def validate_object(obj: dict) -> None:
    """Raises if `obj` is not valid for its kind, for every supported version."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    where = f"{kind} {obj.get('metadata', {}).get('namespace', '')}/{obj['metadata']['name']}"
    if (api_version, kind) in _CRD_SCHEMAS:
        try:
            jsonschema.Draft7Validator(_CRD_SCHEMAS[(api_version, kind)]).validate(obj)
        except jsonschema.ValidationError as e:
            raise AssertionError(f"{where} does not match our CRD schema: {e.message}") from e
        return
    if api_version.split("/")[0] in THIRD_PARTY_GROUPS:
        assert obj["metadata"]["name"] and obj.get("spec"), f"{where} has no spec"
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{where} is invalid for Kubernetes {version}: {e.message}") from e
