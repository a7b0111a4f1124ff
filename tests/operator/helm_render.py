"""Rendering the chart with the real Helm library (helm-sdkpy), offline.

helm-sdkpy exposes Helm's Lint and Install but no template command, so the chart
is installed into `fake_apiserver`, a minimal in-process Kubernetes API on
loopback that records what Helm creates. What Helm sends is exactly the
rendered chart (CRDs first, then the templates), parsed and ordered by Helm.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import tempfile

import helm_sdkpy

import fake_apiserver

NAMESPACE = "kubeledger-system"


def _kubeconfig(port: int) -> str:
    return f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: fake, user: {{token: offline}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: {NAMESPACE}}}}}]
current-context: fake
"""


def _isolated_helm_home() -> None:
    # Keep Helm's cache and config out of the user's home.
    home = pathlib.Path(tempfile.gettempdir()) / "kubeledger-helm-test"
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                     ("HELM_DATA_HOME", "data")):
        os.environ.setdefault(var, str(home / sub))


def lint(chart: pathlib.Path) -> dict:
    _isolated_helm_home()
    config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=_kubeconfig(1))
    return asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))


def install(chart: pathlib.Path, values: dict | None = None,
            release: str = "kubeledger") -> tuple[dict, list[dict]]:
    """Installs `chart` into a fresh fake API server; returns Helm's release record
    and the objects Helm created, in order."""
    _isolated_helm_home()
    server, store = fake_apiserver.start()
    try:
        config = helm_sdkpy.Configuration(
            namespace=NAMESPACE, kubeconfig=_kubeconfig(server.server_address[1]))
        result = asyncio.run(helm_sdkpy.Install(config).run(
            release, str(chart), values=values, wait=False, timeout=60))
        return result, list(store.created)
    finally:
        server.shutdown()
