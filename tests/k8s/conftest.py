"""One real control plane per test session (tests/k8s/control-plane.sh): the
first use builds it from Go modules (cached outside the repository), every
later run only starts it."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from cluster import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    c = Cluster.start(tmp_path_factory.mktemp("control-plane"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def crds(cluster: Cluster, repo_root: pathlib.Path) -> None:
    """The checked-in CRDs installed and Established."""
    cluster.apply((repo_root / "crds/kubeledger.io.yaml").read_text())
    for name in ("consortia.kubeledger.io", "members.kubeledger.io"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
