"""Fixtures shared by every Python suite: the repository root and the operator
binary (built with cargo when needed)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def operator_bin() -> pathlib.Path:
    """The `kubeledger-operator` binary: $KUBELEDGER_OPERATOR_BIN, or built with
    cargo (which honours CARGO_TARGET_DIR and is quick when `cargo test` ran first)."""
    explicit = os.environ.get("KUBELEDGER_OPERATOR_BIN")
    if explicit:
        return pathlib.Path(explicit)
    build = subprocess.run(
        ["cargo", "build", "--locked", "-p", "kubeledger-operator", "--bin", "kubeledger-operator",
         "--message-format=json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    )
    for line in build.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "kubeledger-operator":
            return pathlib.Path(msg["executable"])
    raise RuntimeError("cargo build did not report the kubeledger-operator executable")


@pytest.fixture(scope="session")
def run_operator(operator_bin):
    def run(*args: str) -> str:
        return subprocess.run(
            [str(operator_bin), *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
        ).stdout
    return run
