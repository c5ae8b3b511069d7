"""dbt on a working copy of the shipped project, against a real DuckDB file.

What ``shopstream transform`` will do, reduced to what tests need: copy
``src/shopstream/transform/project`` into a directory of the test's own, write a profile of
type duckdb whose path is the warehouse file, and call dbt in-process (dbtRunner). The file
must not be held by another process (release the collector's warehouse first).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

import shopstream.transform as transform_package

PROJECT = Path(transform_package.__file__).parent / "project"


@dataclass
class BuildResult:
    success: bool
    failures: list[str]  # "<node>: <message>" for every node that did not pass


class DbtProject:
    """A copy of the project that builds into ``warehouse``."""

    def __init__(self, directory: Path, warehouse: Path, variables: dict[str, Any]) -> None:
        self.directory = directory
        self.warehouse = warehouse
        self.variables = variables
        shutil.copytree(PROJECT, directory, ignore=shutil.ignore_patterns("target", "logs"))
        profile = {
            "shopstream": {
                "target": "duckdb",
                "outputs": {
                    "duckdb": {
                        "type": "duckdb",
                        "path": str(warehouse),
                        "schema": "main",
                        "threads": 1,
                    }
                },
            }
        }
        # JSON is YAML: no YAML writer needed.
        (directory / "profiles.yml").write_text(json.dumps(profile), encoding="utf-8")

    def add_model(self, relative: str, sql: str) -> None:
        """A model of the test's own (e.g. what the CDC generator would write)."""
        path = self.directory / "models" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql, encoding="utf-8")

    def invoke(self, *args: str, variables: dict[str, Any] | None = None) -> BuildResult:
        """``variables`` are laid over the project's for this run only."""
        from dbt.cli.main import dbtRunner

        argv = [
            *args,
            "--project-dir",
            str(self.directory),
            "--profiles-dir",
            str(self.directory),
            "--vars",
            json.dumps({**self.variables, **(variables or {})}),
            "--log-path",
            str(self.directory / "logs"),
            "--quiet",
        ]
        try:
            outcome = dbtRunner().invoke(argv)
        finally:
            # dbt-duckdb keeps its DuckDB instance open in the process after the run; release
            # the file, as a separate `shopstream transform` process would.
            from dbt.adapters.duckdb.connections import DuckDBConnectionManager

            DuckDBConnectionManager.close_all_connections()
        failures: list[str] = []
        if outcome.exception is not None:
            failures.append(f"dbt: {outcome.exception}")
        results = getattr(outcome.result, "results", None) or []
        for result in results:
            status = str(result.status).lower()
            if status not in ("success", "pass"):
                failures.append(f"{result.node.unique_id}: {status}: {result.message}")
        return BuildResult(success=bool(outcome.success) and not failures, failures=failures)

    def build(self, *extra: str) -> BuildResult:
        return self.invoke("build", *extra)
