"""A real Kubernetes control plane for the tests (tests/k8s/control-plane.sh),
and kubectl against it, with the admin's or another identity's credentials."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from typing import Any, Callable

HERE = pathlib.Path(__file__).resolve().parent


class Cluster:
    """A started control plane; `dir` holds its kubeconfig, logs and pki."""

    def __init__(self, dir: pathlib.Path):
        self.dir = dir
        env = dict(
            line.split("=", 1)
            for line in (dir / "cluster.env").read_text().splitlines()
            if "=" in line
        )
        self.kubeconfig = pathlib.Path(env["KUBECONFIG"])
        self.bin = pathlib.Path(env["K8S_BIN"])
        self.server = env["K8S_APISERVER_URL"]

    @classmethod
    def start(cls, dir: pathlib.Path) -> "Cluster":
        subprocess.run([str(HERE / "control-plane.sh"), "start", str(dir)], check=True)
        return cls(dir)

    def stop(self) -> None:
        subprocess.run([str(HERE / "control-plane.sh"), "stop", str(self.dir)], check=False)

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: pathlib.Path | None = None) -> subprocess.CompletedProcess:
        """Runs kubectl; a failure raises with kubectl's own message."""
        result = subprocess.run(
            [self.tool("kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def get(self, *args: str, kubeconfig: pathlib.Path | None = None) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", "--show-managed-fields", *args,
                                       kubeconfig=kubeconfig).stdout)

    def get_opt(self, *args: str) -> Any | None:
        r = self.kubectl("get", "-o", "json", "--show-managed-fields", *args, check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def apply(self, manifest: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.kubectl("apply", "--server-side", "--field-manager=kubeledger-tests",
                            "-f", "-", *args, input=manifest, check=check)

    def token_kubeconfig(self, path: pathlib.Path, namespace: str, service_account: str) -> pathlib.Path:
        """A kubeconfig that authenticates as a ServiceAccount with a real token
        issued by the API server (TokenRequest), so RBAC is that account's."""
        token = self.kubectl("create", "token", service_account, "-n", namespace,
                             "--duration=2h").stdout.strip()
        admin = json.loads(self.kubectl("config", "view", "--raw", "-o", "json").stdout)
        cluster = admin["clusters"][0]
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": service_account, "context": {
                "cluster": cluster["name"], "user": service_account, "namespace": namespace}}],
            "current-context": service_account,
        }))
        path.chmod(0o600)
        return path

    def can_i(self, verb: str, resource: str, *, namespace: str | None = None,
              kubeconfig: pathlib.Path) -> bool:
        args = ["auth", "can-i", verb, resource]
        if namespace:
            args += ["-n", namespace]
        r = self.kubectl(*args, kubeconfig=kubeconfig, check=False)
        answer = r.stdout.strip()
        if answer not in ("yes", "no"):
            raise AssertionError(f"kubectl auth can-i {verb} {resource}: {r.stderr.strip()}")
        return answer == "yes"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Polls until `probe` returns something truthy; the timeout only bounds a
    hung run (no test asserts on how long anything took)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (AssertionError, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
