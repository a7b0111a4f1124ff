"""`kubeledger-operator run` as a real process against the test control plane."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """One operator replica with its own identity, metrics port and log."""

    def __init__(self, binary: pathlib.Path, kubeconfig: pathlib.Path, log_dir: pathlib.Path,
                 identity: str, lease_namespace: str, lease_name: str):
        self.identity = identity
        self.port = free_port()
        self.log = log_dir / f"{identity}.log"
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(kubeconfig),
            "POD_NAME": identity,
            "RUST_LOG": "info,kube=warn",
        })
        # No in-cluster service-account files here: the kubeconfig is the only
        # source of credentials, so what the operator may do is that token's.
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [str(binary), "run", "--leader-elect", f"--metrics-addr=127.0.0.1:{self.port}",
             f"--lease-namespace={lease_namespace}", f"--lease-name={lease_name}"],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric_sum(self, name: str) -> float:
        """Sum of every sample of `name` (all label sets); 0 when absent."""
        try:
            text = self.metrics()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def is_leader(self) -> bool:
        return self.metric_sum("kubeledger_operator_is_leader") == 1.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
