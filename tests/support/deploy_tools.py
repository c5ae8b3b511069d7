"""Where the deploy checks' tools are: the deploy virtualenv (``.venv-deploy``: checkov,
kubernetes-validate, python-hcl2, hadolint, grafana-foundation-sdk), the Airflow virtualenv
(``.venv-airflow``) and the machine's binaries (kubectl, terraform, promtool). ``make test``
builds and installs them all (``make deploy-tools``); a test run without them skips, saying what
to run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEPLOY_BIN = ROOT / ".venv-deploy" / "bin"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
#: The shopstream command the Airflow tasks call in tests (the worker image carries its own).
SHOPSTREAM_BIN = ROOT / ".venv" / "bin" / "shopstream"


def deploy_tool(name: str) -> Path:
    """A command of the deploy virtualenv (``checkov``, ``kubernetes-validate``, ``hadolint``,
    ``python``), or a skip saying how to get it."""
    path = DEPLOY_BIN / name
    if not path.is_file():
        pytest.skip(f"no {path}: run `make deploy-tools` (make test builds it)")
    return path


def airflow_tool(name: str = "airflow") -> Path:
    """A command of the Airflow virtualenv, or a skip saying how to get it."""
    path = AIRFLOW_BIN / name
    if not path.is_file():
        pytest.skip(f"no {path}: run `make deploy-tools` (make test builds it)")
    return path


def system_tool(name: str) -> str:
    """A binary on PATH (kubectl, terraform, promtool), or a skip saying how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not on PATH: run `make system-tools` (make test does)")
    return found


def run_tool(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a checker and return what it said; the caller asserts on the exit status and shows
    the output when it fails."""
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
