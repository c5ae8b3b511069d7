"""A working copy of the package's dbt project with generated CDC models, and dbt runs on it.

Tests use it until the runner (transform/workspace.py, transform/runner.py) lands: it does what
the workspace does for the CDC part (copy the project, write the models of the captured
tables, pass ``captured_tables``) and calls dbt in-process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from shopstream.transform.cdc_models import CapturedTable, write_models

os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

GENERATED_DIR = Path("models") / "cdc"


def make_workspace(directory: Path, tables: Sequence[CapturedTable]) -> list[str]:
    """Copy the project into ``directory`` and generate the CDC models; the models' names."""
    project = resources.files("shopstream.transform") / "project"
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(str(project), directory, ignore=shutil.ignore_patterns("target", "logs"))
    return write_models(tables, directory / GENERATED_DIR)


def write_profile(directory: Path, outputs: dict[str, dict[str, Any]], target: str) -> None:
    profile = {"shopstream": {"target": target, "outputs": outputs}}
    (directory / "profiles.yml").write_text(yaml.safe_dump(profile), encoding="utf-8")


def duckdb_output(path: Path) -> dict[str, Any]:
    return {"type": "duckdb", "path": str(path), "schema": "staging", "threads": 1}


def run_dbt(directory: Path, *args: str, variables: dict[str, Any] | None = None) -> Any:
    """``dbt <args>`` in-process on the working copy; raises with dbt's failures named."""
    from dbt.cli.main import dbtRunner

    argv = [
        *args,
        "--project-dir",
        str(directory),
        "--profiles-dir",
        str(directory),
        "--log-path",
        str(directory / "logs"),
        "--target-path",
        str(directory / "target"),
    ]
    if variables is not None:
        argv += ["--vars", yaml.safe_dump(variables, default_flow_style=True).strip()]
    result = dbtRunner().invoke(argv)
    if not result.success:
        failures = []
        for node in getattr(result.result, "results", None) or []:
            if str(node.status) not in ("success", "pass"):
                failures.append(f"{node.node.unique_id}: {node.status}: {node.message}")
        raise AssertionError(
            f"dbt {' '.join(args)} failed: {result.exception or ''}\n" + "\n".join(failures)
        )
    return result.result


def model_names(results: Any) -> list[str]:
    return [r.node.name for r in results.results]


def captured_vars(names: Sequence[str]) -> dict[str, Any]:
    return {"captured_tables": [n for n in names if n.startswith("stg_")]}
