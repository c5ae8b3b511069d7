"""Where the deploy checks' tools are: the deploy virtualenv (``.venv-deploy``: checkov,
kubernetes-validate, python-hcl2, hadolint, grafana-foundation-sdk), the Airflow virtualenv
(``.venv-airflow``) and the machine's binaries (kubectl, terraform, promtool). ``make test``
builds and installs them all (``make deploy-tools``). A test run without one skips, saying what
to run; with ``SHOPSTREAM_TEST_REQUIRE_DEPLOY_TOOLS=1`` (``make test`` sets it) it fails with the
same message instead, so that a check that could not run is never counted as passed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEPLOY_BIN = ROOT / ".venv-deploy" / "bin"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
#: The shopstream command the Airflow tasks call in tests (the worker image carries its own).
SHOPSTREAM_BIN = ROOT / ".venv" / "bin" / "shopstream"
#: Set to 1 (``make test`` does): a missing tool fails the test instead of skipping it.
REQUIRE_TOOLS = "SHOPSTREAM_TEST_REQUIRE_DEPLOY_TOOLS"


def missing_tool(message: str) -> NoReturn:
    """A skip saying ``message``, or a failure saying it when the tools are required."""
    if os.environ.get(REQUIRE_TOOLS, "").strip() not in ("", "0"):
        pytest.fail(f"{message} ({REQUIRE_TOOLS} is set: the tools are required)")
    pytest.skip(message)


def deploy_tool(name: str) -> Path:
    """A command of the deploy virtualenv (``checkov``, ``kubernetes-validate``, ``hadolint``,
    ``python``), or a skip (a failure when required) saying how to get it."""
    path = DEPLOY_BIN / name
    if not path.is_file():
        missing_tool(f"no {path}: run `make deploy-tools` (make test builds it)")
    return path


def airflow_tool(name: str = "airflow") -> Path:
    """A command of the Airflow virtualenv, or a skip saying how to get it."""
    path = AIRFLOW_BIN / name
    if not path.is_file():
        missing_tool(f"no {path}: run `make deploy-tools` (make test builds it)")
    return path


def system_tool(name: str) -> str:
    """A binary on PATH (kubectl, terraform, promtool), or a skip saying how to get it."""
    found = shutil.which(name)
    if found is None:
        missing_tool(f"{name} is not on PATH: run `make system-tools` (make test does)")
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
