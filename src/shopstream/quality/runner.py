"""Run the configured checks in the process that holds the warehouse.

:func:`run_job` is what the owner of the DuckDB file runs (the writer process, the platform's
own process, or ``shopstream quality run`` when nothing else runs), called through the
warehouse's ``run_in_owner`` like the transform (:mod:`shopstream.transform.runner`). The checks
read through the owner's read-only ``query``: they never write, and appends go on beside them.
Progress arrives per check as :class:`QualityProgress` through ``emit``; the answer is a
:class:`CheckRun` (plain values: it crosses a process boundary). Storing the results, the
report and the metrics are the caller's (:mod:`shopstream.quality.runs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pyarrow as pa

from shopstream.quality.checks import CheckContext
from shopstream.quality.dialect import DUCKDB, reader_of
from shopstream.quality.engine import run_checks
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import PlannedCheck, QualityConfigError, load_config

#: Statuses from the worst to the best: a check with several results shows its worst.
WORST_FIRST = ("fail", "error", "warn", "learning", "pass")


class ReadableWarehouse(Protocol):
    def query(
        self, sql: str, parameters: list[Any] | None = None, *, max_rows: int | None = None
    ) -> pa.Table: ...


@dataclass(frozen=True)
class QualityJob:
    """Everything the owner of the warehouse needs to run the checks (sent to a writer
    process: plain values only)."""

    checks_file: Path | None
    #: The run's "now" (aware UTC): windows end at it.
    now: datetime
    timezone: str
    select: tuple[str, ...] = ()
    evidence_rows: int = 5
    source_dsn: str | None = field(default=None, repr=False)  # may carry a password
    slot_name: str = "shopstream"
    #: Facts the platform knows and the warehouse does not (CDC reader state, ...).
    pipeline: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityProgress:
    """One step of a quality run, for a progress display.

    ``kind``: ``waiting`` (another quality run goes first), ``planned`` (``total`` checks to
    run), ``checked`` (check ``index`` of ``total`` is done: its worst ``status``), ``report``
    (the analyst is writing the report).
    """

    kind: str
    check: str = ""
    status: str = ""
    index: int = 0
    total: int = 0


@dataclass(frozen=True)
class CheckOutcome:
    """One configured check and what it found (several results for a check in parts)."""

    name: str
    table: str
    kind: str
    results: tuple[CheckResult, ...]

    @property
    def status(self) -> str:
        """The worst status of its results (``pass`` when a missing table yielded none)."""
        statuses = {r.status for r in self.results}
        return next((s for s in WORST_FIRST if s in statuses), "pass")

    @property
    def observed(self) -> float | None:
        """The observed value of its worst result."""
        status = self.status
        return next((r.observed for r in self.results if r.status == status), None)


@dataclass(frozen=True)
class CheckRun:
    """The job's answer: every check run, in the configuration's order."""

    checks: tuple[CheckOutcome, ...]
    #: Tables of the configuration that do not exist (not required: skipped).
    absent: tuple[str, ...]
    seconds: float
    #: The checks file is wrong (nothing ran): what and where.
    config_error: str | None = None

    @property
    def results(self) -> list[CheckResult]:
        return [r for outcome in self.checks for r in outcome.results]


def run_job(
    warehouse: ReadableWarehouse, job: QualityJob, emit: Callable[[QualityProgress], None]
) -> CheckRun:
    """Load the checks and run them on ``warehouse`` (held by this process). A check that
    cannot run is an ``error`` result; a broken checks file is the run's ``config_error``."""
    started = time.monotonic()
    try:
        config = load_config(job.checks_file)
    except QualityConfigError as exc:
        return CheckRun((), (), time.monotonic() - started, config_error=str(exc))
    planned = [c for c in config.checks() if _selected(c, job.select)]
    emit(QualityProgress("planned", total=len(planned)))
    reader = reader_of(warehouse)
    native = reader.dialect == DUCKDB  # DuckDB's SQL goes to DuckDB as it is
    ctx = CheckContext(
        query=warehouse.query if native else reader.query,
        now=job.now,
        timezone=ZoneInfo(job.timezone),
        evidence_rows=job.evidence_rows,
        source_dsn=job.source_dsn,
        slot_name=job.slot_name,
        pipeline=dict(job.pipeline),
        describe=None if native else reader.columns,
    )
    outcomes: list[CheckOutcome] = []

    def on_check(check: PlannedCheck, results: list[CheckResult]) -> None:
        plain = tuple(_as_floats(r) for r in results)
        outcome = CheckOutcome(check.name, check.table, check.spec.kind, plain)
        outcomes.append(outcome)
        emit(QualityProgress("checked", check.name, outcome.status, len(outcomes), len(planned)))

    engine = run_checks(config, ctx, select=job.select, on_check=on_check)
    return CheckRun(tuple(outcomes), tuple(engine.absent), time.monotonic() - started)


def _as_floats(result: CheckResult) -> CheckResult:
    """Observed and expected as floats, as the results table stores them: a kind may hand over
    DuckDB's DECIMAL or HUGEINT as they came (a sum, a count)."""
    observed, expected = result.observed, result.expected
    if (observed is None or type(observed) is float) and (
        expected is None or type(expected) is float
    ):
        return result
    return replace(
        result,
        observed=None if observed is None else float(observed),
        expected=None if expected is None else float(expected),
    )


def _selected(check: PlannedCheck, select: Sequence[str]) -> bool:
    # The engine's own rule (shopstream.quality.engine.run_checks), for the planned total.
    return not select or any(check.name.startswith(prefix) for prefix in select)


__all__ = [
    "WORST_FIRST",
    "CheckOutcome",
    "CheckRun",
    "QualityJob",
    "QualityProgress",
    "run_job",
]
