"""Run the dbt project in-process (``dbtRunner``), in the process that owns the warehouse.

:func:`run_job` is what the owner of the DuckDB file runs (the writer process, the platform's
own process, or ``shopstream transform`` when nothing else runs), or any process that opened a
warehouse many processes may use (BigQuery): it prepares the workspace
(:mod:`.workspace`), generates the captured tables' models, writes the profile, runs
``dbt build`` and returns a :class:`TransformResult`. dbt's own console output is switched off
(``--log-level none``); its progress arrives as :class:`Progress` through ``emit``, from dbt's
event callbacks. dbt keeps global state per invocation, so one runs at a time per process.

The e-mail salt is a dbt var: dbt writes vars into ``target/`` (manifest, run results,
compiled SQL), so the workspace keeps those files private, and every message that leaves here
has the salt masked.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopstream.transform import workspace

if TYPE_CHECKING:
    import pyarrow as pa

# Before dbt is imported anywhere in this process: no usage statistics leave the machine.
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"

#: One dbt invocation at a time in this process (dbt's flags, event manager and adapter
#: registry are process-global).
_DBT_LOCK = threading.Lock()
_MASK = "********"


@dataclass(frozen=True)
class TransformRequest:
    """What to build: everything (default) or dbt's ``--select``; ``full_refresh`` rebuilds
    incremental models from scratch."""

    full_refresh: bool = False
    select: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """One step of a run, for a progress display.

    ``kind``: ``waiting`` (another transform runs first), ``started`` / ``finished`` (a model
    or test; ``index`` of ``total`` nodes).
    """

    kind: str
    node: str = ""
    resource_type: str = ""
    status: str = ""
    index: int = 0
    total: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelResult:
    name: str
    #: success, error or skipped.
    status: str
    #: Rows in the model's table after the build (None for views and failures: dbt-duckdb
    #: reports no affected-row count, so they are counted).
    rows: int | None
    seconds: float
    materialized: str = ""
    message: str = ""


@dataclass(frozen=True)
class TestResult:
    name: str
    #: pass, fail, warn, error or skipped.
    status: str
    #: The model the test checks (None when it checks no single model).
    model: str | None
    message: str = ""
    failures: int | None = None


@dataclass(frozen=True)
class TransformResult:
    success: bool
    models: tuple[ModelResult, ...] = ()
    tests: tuple[TestResult, ...] = ()
    seconds: float = 0.0
    #: Why the run as a whole failed (the project does not parse, the warehouse is gone...).
    error: str | None = None

    @property
    def tests_passed(self) -> int:
        return sum(1 for t in self.tests if t.status == "pass")

    @property
    def tests_failed(self) -> int:
        return sum(1 for t in self.tests if t.status in ("fail", "error"))

    @property
    def tests_warned(self) -> int:
        return sum(1 for t in self.tests if t.status == "warn")

    def failures(self) -> list[str]:
        """One line per thing that went wrong, naming the model and the reason."""
        lines = [] if self.error is None else [self.error]
        for model in self.models:
            if model.status == "error":
                lines.append(f"model {model.name}: {model.message}")
        for test in self.tests:
            if test.status in ("fail", "error"):
                on = f" on model {test.model}" if test.model else ""
                lines.append(f"test {test.name}{on} {test.status}ed: {test.message}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformResult:
        return cls(
            success=bool(data["success"]),
            models=tuple(ModelResult(**m) for m in data.get("models", ())),
            tests=tuple(TestResult(**t) for t in data.get("tests", ())),
            seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"),
        )


def failed(reason: str, seconds: float = 0.0) -> TransformResult:
    return TransformResult(success=False, seconds=seconds, error=reason)


@dataclass(frozen=True)
class TransformJob:
    """Everything the owner of the warehouse needs to run a transform (it is sent to a writer
    process, so plain values only)."""

    #: ``<data_dir>/transform``: the working copy, profile, dbt's output.
    root: Path
    #: The dbt project to copy and run.
    source: Path
    warehouse_url: str
    request: TransformRequest
    #: timezone, lookback_days, session_timeout_minutes (see workspace.dbt_vars).
    settings_vars: Mapping[str, Any]
    email_salt: str = field(repr=False)


def run_job(
    warehouse: workspace.QueryableWarehouse,
    job: TransformJob,
    emit: Callable[[Progress], None],
) -> TransformResult:
    """Prepare the workspace and run ``dbt build`` against ``warehouse`` (open in this
    process; DuckDB's held by it). Failures come back as a failed result, not as exceptions."""
    started = time.monotonic()
    with _dbt_workspace(job, emit):
        try:
            project, variables = _prepare(warehouse, job)
            dialect = workspace.dialect(job.warehouse_url)
            result = run_dbt(
                project,
                job.root,
                variables,
                job.request,
                emit=emit,
                secrets=[job.email_salt],
                count_rows=warehouse.query,
                quote=dialect.quote,
            )
        except Exception as exc:  # the project, the warehouse, dbt itself: say what, go on
            result = failed(_masked(f"{type(exc).__name__}: {exc}", [job.email_salt]))
    if result.seconds == 0.0:
        result = TransformResult(
            result.success, result.models, result.tests, time.monotonic() - started, result.error
        )
    return result


@contextmanager
def _dbt_workspace(job: TransformJob, emit: Callable[[Progress], None]) -> Iterator[None]:
    """Hold the dbt lock (one dbt command at a time in this process; say "waiting" when
    another runs) and, whatever happens, leave dbt's target/ and logs/ private after."""
    if not _DBT_LOCK.acquire(blocking=False):
        emit(Progress("waiting"))
        _DBT_LOCK.acquire()
    try:
        yield
    finally:
        _DBT_LOCK.release()
        for directory in ("target", "logs"):
            workspace.make_private(job.root / "project" / directory)


def _prepare(
    warehouse: workspace.QueryableWarehouse, job: TransformJob
) -> tuple[Path, dict[str, Any]]:
    """The workspace made ready for a dbt command: the project copy with the captured tables'
    models, the profile; returns the project and the vars to pass."""
    project = workspace.prepare_project(job.root, job.source)
    dialect = workspace.dialect(job.warehouse_url)
    captured = workspace.generate_captured_models(warehouse, project, dialect.raw_tables_sql)
    workspace.write_profile(job.root, dialect.profile(job.warehouse_url, warehouse))
    variables = {**job.settings_vars, "email_salt": job.email_salt}
    variables["captured_tables"] = captured
    return project, variables


@dataclass(frozen=True)
class DocsArtifacts:
    """What ``dbt docs generate`` left: the manifest (with every model's compiled SQL) and the
    catalog (every table's columns and types, as the warehouse has them)."""

    manifest: Path
    catalog: Path


def generate_docs(
    warehouse: workspace.QueryableWarehouse,
    job: TransformJob,
    emit: Callable[[Progress], None],
) -> DocsArtifacts:
    """``dbt docs generate`` in the workspace, against ``warehouse`` (open in this process, as
    for :func:`run_job`): the manifest and catalog the documentation is built from. Raises
    RuntimeError (the salt masked) when dbt fails."""
    from dbt.cli.main import dbtRunner

    with _dbt_workspace(job, emit):
        project, variables = _prepare(warehouse, job)
        target = project / "target"
        args = ["docs", "generate", *_common_args(project, job.root, variables)]
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            _release_duckdb()
        if not outcome.success:
            reason = outcome.exception or "see the dbt log in the transform workspace"
            raise RuntimeError(_masked(f"dbt docs generate failed: {reason}", [job.email_salt]))
        return DocsArtifacts(target / "manifest.json", target / "catalog.json")


def _common_args(project: Path, profiles_dir: Path, variables: Mapping[str, Any]) -> list[str]:
    """The options every dbt command here takes: where things are, quiet console, the vars."""
    return [
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(profiles_dir),
        "--target-path",
        str(project / "target"),
        "--log-path",
        str(project / "logs"),
        # Nothing on our console; the file keeps dbt's own account (private, like target/).
        "--log-level",
        "none",
        "--log-level-file",
        "info",
        "--no-use-colors",
        "--no-use-colors-file",
        "--vars",
        json.dumps(dict(variables)),
    ]


def run_dbt(
    project: Path,
    profiles_dir: Path,
    variables: Mapping[str, Any],
    request: TransformRequest,
    *,
    emit: Callable[[Progress], None] = lambda _: None,
    secrets: Sequence[str] = (),
    count_rows: Callable[[str], pa.Table] | None = None,
    quote: Callable[[str], str] = workspace.double_quoted,
) -> TransformResult:
    """``dbt build`` of ``project`` with the profile in ``profiles_dir``, in this process.

    The caller holds the dbt lock (:func:`run_job` does). ``count_rows`` runs a read on the
    warehouse (to count the rows of the tables built), naming them with ``quote``.
    """
    from dbt.cli.main import dbtRunner

    started = time.monotonic()
    args = ["build", *_common_args(project, profiles_dir, variables)]
    if request.full_refresh:
        args.append("--full-refresh")
    if request.select:
        # A test runs only when every model it reads is selected: by default dbt also runs a
        # relationships test from a selected model to one it did not build, which then fails.
        args += ["--select", *request.select, "--indirect-selection", "cautious"]
    callback = _ProgressCallback(emit)
    try:
        outcome = dbtRunner(callbacks=[callback]).invoke(args)
    finally:
        _release_duckdb()
    seconds = time.monotonic() - started
    run = outcome.result
    results = getattr(run, "results", None)
    if results is None:
        reason = outcome.exception or "dbt stopped without a result"
        return failed(_masked(f"dbt failed: {reason}", secrets), seconds)
    models: list[ModelResult] = []
    tests: list[TestResult] = []
    for node_result in results:
        node = node_result.node
        status = str(getattr(node_result.status, "value", node_result.status))
        message = _masked(str(node_result.message or ""), secrets)
        if node.resource_type == "test":
            tests.append(
                TestResult(
                    name=node.name,
                    status=status,
                    model=_tested_model(node),
                    message=message,
                    failures=node_result.failures,
                )
            )
            continue
        materialized = str(getattr(node.config, "materialized", ""))
        rows = None
        if (
            count_rows is not None
            and status == "success"
            and materialized in ("table", "incremental", "seed", "snapshot")
        ):
            rows = _count(count_rows, f"{quote(node.schema)}.{quote(node.alias)}")
        models.append(
            ModelResult(
                name=node.name,
                status=status,
                rows=rows,
                seconds=float(node_result.execution_time or 0.0),
                materialized=materialized,
                message=message if status != "success" else "",
            )
        )
    error = None
    if not outcome.success and outcome.exception is not None:
        error = _masked(f"dbt failed: {outcome.exception}", secrets)
    return TransformResult(outcome.success, tuple(models), tuple(tests), seconds, error)


def _release_duckdb() -> None:
    """Close the DuckDB connection dbt-duckdb keeps between invocations: while it is open the
    DuckDB instance stays alive, and with it the lock on the file after the owner closed it."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a base dependency
        return
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if environment is not None:
            environment.close()


def _count(count_rows: Callable[[str], pa.Table], quoted: str) -> int | None:
    try:
        return int(count_rows(f"SELECT count(*) FROM {quoted}").column(0)[0].as_py())
    except Exception:  # a count is for the summary only
        return None


def _tested_model(node: Any) -> str | None:
    attached = getattr(node, "attached_node", None)
    candidates = [attached] if attached else list(getattr(node.depends_on, "nodes", []))
    for unique_id in candidates:
        if unique_id and unique_id.split(".")[0] in ("model", "seed", "snapshot"):
            return str(unique_id.split(".")[2])
    return None


def _masked(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


class _ProgressCallback:
    """dbt's events -> :class:`Progress` (dbt calls it from its worker threads)."""

    def __init__(self, emit: Callable[[Progress], None]) -> None:
        self.emit = emit
        self.totals: dict[str, tuple[int, int]] = {}

    def __call__(self, event: Any) -> None:
        name = event.info.name
        if name not in ("LogStartLine", "NodeFinished"):
            return
        info = event.data.node_info
        resource_type = info.resource_type
        node = info.node_name
        if name == "LogStartLine":
            index, total = int(event.data.index), int(event.data.total)
            self.totals[info.unique_id] = (index, total)
            self.emit(Progress("started", node, resource_type, "started", index, total))
            return
        index, total = self.totals.get(info.unique_id, (0, 0))
        seconds = 0.0
        try:
            began, ended = info.node_started_at, info.node_finished_at
            if began and ended:
                from datetime import datetime

                seconds = (
                    datetime.fromisoformat(ended) - datetime.fromisoformat(began)
                ).total_seconds()
        except ValueError:
            seconds = 0.0
        self.emit(
            Progress("finished", node, resource_type, info.node_status, index, total, seconds)
        )


__all__ = [
    "DocsArtifacts",
    "ModelResult",
    "Progress",
    "TestResult",
    "TransformJob",
    "TransformRequest",
    "TransformResult",
    "failed",
    "generate_docs",
    "run_dbt",
    "run_job",
]
