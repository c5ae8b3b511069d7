"""When and where quality runs happen, and what becomes of their results.

- The checks run where the warehouse is held, through its ``run_in_owner`` (in the DuckDB
  writer process when there is one, in a thread beside the appends), like transforms:
  :func:`shopstream.quality.runner.run_job`.
- Then, in the caller's process (:func:`run_on`): the results are appended to
  ``monitoring.data_quality_checks``, the Prometheus gauges are set, and when a check warned,
  failed or errored the analyst writes a report from the evidence
  (:mod:`shopstream.quality.evidence`, :func:`shopstream.genai.data_quality_agent.write_report`),
  kept in ``monitoring.data_quality_reports``.
- A running platform runs them one at a time (:class:`Quality`): on its schedule
  (``quality.schedule_minutes``), when ``shopstream quality run`` asks over the local query
  socket, and once at the end of ``shopstream run``. A failure is logged and shown in the
  status line; ingest goes on.
- With nothing running, :func:`quality_warehouse` (``shopstream quality run``) opens the
  warehouse itself. A service (BigQuery) has no owner: the checks run in the caller's process,
  their DuckDB SQL translated (:mod:`shopstream.quality.dialect`).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shopstream.platform_runs import PlatformRuns, RunStatus, here_or_running_platform
from shopstream.quality.results import STATUSES, CheckResult
from shopstream.quality.runner import CheckOutcome, CheckRun, QualityJob, QualityProgress

if TYPE_CHECKING:
    from shopstream.config import Settings
    from shopstream.genai.data_quality_agent import QualityReport

log = logging.getLogger(__name__)

JOB = "shopstream.quality.runner:run_job"

ProgressCallback = Callable[[QualityProgress], None]
PipelineFacts = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True)
class QualityRequest:
    """Which checks (``select``: names starting with one of these; empty: all) and the run's
    "now" (None: the clock; a pinned one for tests and what-if runs)."""

    select: tuple[str, ...] = ()
    now: datetime | None = None


@dataclass(frozen=True)
class QualityRun:
    """One quality run as its caller sees it: the checks, the report, what went wrong."""

    run_id: str
    #: The run's "now" (windows end at it); ``checked_at`` of its rows.
    checked_at: datetime
    checks: tuple[CheckOutcome, ...] = ()
    absent: tuple[str, ...] = ()
    #: The analyst's report (None when nothing warned, failed or errored).
    report: QualityReport | None = None
    seconds: float = 0.0
    #: The run could not run, or its results could not be stored: what and what to do.
    error: str | None = None
    #: ``error`` is the checks file's (a usage error: exit 2).
    config_error: bool = False
    #: The report could not be written or stored (the results were).
    report_error: str | None = None

    @property
    def results(self) -> list[CheckResult]:
        return [r for outcome in self.checks for r in outcome.results]

    def counts(self) -> dict[str, int]:
        """Results per status (every status named, zeros included)."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def failed(self) -> bool:
        """A check failed or could not run, or the run itself failed: what exits 1 (warn and
        learning do not)."""
        return self.error is not None or any(r.status in ("fail", "error") for r in self.results)

    def summary(self) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        counts = self.counts()
        line = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no checks"
        return f"{line} in {self.seconds:,.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "checked_at": self.checked_at.isoformat(),
            "checks": [
                {
                    "name": c.name,
                    "table": c.table,
                    "kind": c.kind,
                    "status": c.status,
                    "results": [r.to_dict() for r in c.results],
                }
                for c in self.checks
            ],
            "absent": list(self.absent),
            "report": None if self.report is None else self.report.model_dump(mode="json"),
            "seconds": self.seconds,
            "error": self.error,
            "config_error": self.config_error,
            "report_error": self.report_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityRun:
        report = None
        if data.get("report") is not None:
            from shopstream.genai.data_quality_agent import QualityReport

            report = QualityReport.model_validate(data["report"])
        return cls(
            run_id=str(data["run_id"]),
            checked_at=datetime.fromisoformat(data["checked_at"]),
            checks=tuple(
                CheckOutcome(
                    c["name"],
                    c["table"],
                    c["kind"],
                    tuple(CheckResult.from_dict(r) for r in c["results"]),
                )
                for c in data.get("checks", ())
            ),
            absent=tuple(data.get("absent", ())),
            report=report,
            seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"),
            config_error=bool(data.get("config_error")),
            report_error=data.get("report_error"),
        )


def new_run_id(now: datetime) -> str:
    """Readable and unique: ``20261202T0530Z-1a2b3c``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def make_job(
    settings: Settings,
    request: QualityRequest,
    now: datetime,
    pipeline: Mapping[str, Any],
    source_dsn: str | None = None,
) -> QualityJob:
    return QualityJob(
        checks_file=settings.quality.checks_file,
        now=now,
        timezone=settings.timezone,
        select=request.select,
        evidence_rows=settings.quality.evidence_rows,
        source_dsn=source_dsn,
        slot_name=settings.cdc.slot_name,
        pipeline=dict(pipeline),
    )


def run_on(
    warehouse: object,
    settings: Settings,
    request: QualityRequest,
    on_progress: ProgressCallback | None = None,
    *,
    pipeline: Mapping[str, Any] | None = None,
    source_dsn: str | None = None,
) -> QualityRun:
    """Run the checks where ``warehouse`` is held, then store the results, set the metrics and
    write the report here. Every failure comes back in the run, never as an exception.

    ``source_dsn``: the shop database the CDC reader captures, for the replication checks
    (None: none to watch; a platform with a local PostgreSQL has its own DSN)."""
    from shopstream.warehouse import WarehouseError

    started = time.monotonic()
    emit = on_progress or (lambda _: None)
    now = (request.now or datetime.now(UTC)).astimezone(UTC)
    run_id = new_run_id(now)
    facts = dict(pipeline or {})

    def failed(reason: str, *, config: bool = False) -> QualityRun:
        _count_run("failed")
        return QualityRun(
            run_id, now, seconds=time.monotonic() - started, error=reason, config_error=config
        )

    run_in_owner = getattr(warehouse, "run_in_owner", None)
    append_monitoring = getattr(warehouse, "append_monitoring", None)
    if append_monitoring is None or (run_in_owner is None and not _shared(warehouse)):
        return failed(f"{settings.warehouse}: this warehouse cannot run quality checks here")
    try:
        job = make_job(settings, request, now, facts, source_dsn)
        if run_in_owner is not None:
            checked = run_in_owner(JOB, job, emit)
        else:  # a service (BigQuery): whoever opened it reads it, here
            from shopstream.quality.runner import run_job

            checked = run_job(warehouse, job, emit)  # type: ignore[arg-type]
    except (WarehouseError, OSError, ValueError) as exc:
        return failed(f"quality run failed: {exc}")
    if not isinstance(checked, CheckRun):  # pragma: no cover - a wrong job answer
        return failed(f"the quality job answered {type(checked).__name__}, not a run")
    if checked.config_error is not None:
        return failed(checked.config_error, config=True)

    from shopstream.quality.store import store_results

    results = checked.results
    try:
        store_results(warehouse, results, run_id, now)  # type: ignore[arg-type]
    except WarehouseError as exc:
        return QualityRun(
            run_id,
            now,
            checked.checks,
            checked.absent,
            seconds=time.monotonic() - started,
            error=f"results not stored in monitoring.data_quality_checks: {exc}",
        )
    set_metrics(checked.checks, complete=not request.select)
    report, report_error = None, None
    if any(r.alarming for r in results):
        emit(QualityProgress("report"))
        report, report_error = _report(warehouse, settings, results, run_id, now, facts)
    outcome = "alarm" if any(r.status in ("fail", "error") for r in results) else "ok"
    _count_run(outcome)
    return QualityRun(
        run_id,
        now,
        checked.checks,
        checked.absent,
        report,
        time.monotonic() - started,
        report_error=report_error,
    )


def _report(
    warehouse: Any,
    settings: Settings,
    results: list[CheckResult],
    run_id: str,
    now: datetime,
    facts: Mapping[str, Any],
) -> tuple[QualityReport | None, str | None]:
    """The analyst's report, stored; or why there is none (the results are kept anyway)."""
    from shopstream.quality.store import store_report

    try:
        from shopstream.genai.data_quality_agent import write_report
        from shopstream.quality.dialect import DUCKDB, reader_of
        from shopstream.quality.evidence import gather_evidence

        reader = reader_of(warehouse)
        if reader.dialect == DUCKDB:  # DuckDB's SQL goes to DuckDB as it is
            evidence = gather_evidence(
                warehouse.query, results, run_id=run_id, checked_at=now, pipeline=facts
            )
        else:
            evidence = gather_evidence(
                reader.query,
                results,
                run_id=run_id,
                checked_at=now,
                pipeline=facts,
                exists=lambda schema, table: reader.exists(f"{schema}.{table}"),
            )
        report = write_report(evidence, settings)
    except Exception as exc:  # the agent falls back by itself; this is anything else
        log.exception("quality report for run %s could not be written", run_id)
        return None, f"the report could not be written: {type(exc).__name__}: {exc}"
    try:
        store_report(warehouse, report, datetime.now(UTC))
    except Exception as exc:
        log.error("quality report for run %s not stored: %s", run_id, exc)
        return report, f"the report was not stored in monitoring.data_quality_reports: {exc}"
    return report, None


def _shared(warehouse: object) -> bool:
    """Many processes may open it at once (a service such as BigQuery): whoever opened it
    can run the checks (as the transform does, :mod:`shopstream.transform.runs`)."""
    capabilities = getattr(warehouse, "capabilities", None)
    return capabilities is not None and not capabilities.single_writer_process


def set_metrics(checks: tuple[CheckOutcome, ...], *, complete: bool = True) -> None:
    """Each check's status (one-hot) and observed value, labelled from the configuration.

    ``complete``: ``checks`` is every check the configuration has (a run without ``select``);
    then the labels of checks it no longer has (disabled, removed) are dropped, or a failing
    check once disabled would keep its alert firing until the process restarts."""
    from shopstream.observability import metrics

    if complete:
        current = {(c.name, c.table, c.kind) for c in checks}
        for labels in _labelled(metrics.QUALITY_CHECK_OBSERVED) - current:
            metrics.QUALITY_CHECK_OBSERVED.remove(*labels)
            for each in STATUSES:
                metrics.QUALITY_CHECK_STATUS.remove(*labels, each)
    for outcome in checks:
        status = outcome.status
        for each in STATUSES:
            metrics.QUALITY_CHECK_STATUS.labels(
                outcome.name, outcome.table, outcome.kind, each
            ).set(1.0 if each == status else 0.0)
        observed = outcome.observed
        metrics.QUALITY_CHECK_OBSERVED.labels(outcome.name, outcome.table, outcome.kind).set(
            math.nan if observed is None else observed
        )


def _labelled(gauge: Any) -> set[tuple[str, str, str]]:
    """The (check, table, kind) label sets ``gauge`` has a value for."""
    return {
        (sample.labels["check"], sample.labels["table"], sample.labels["kind"])
        for family in gauge.collect()
        for sample in family.samples
    }


def _count_run(outcome: str) -> None:
    from shopstream.observability import metrics

    metrics.QUALITY_RUNS.labels(outcome).inc()
    metrics.QUALITY_LAST_RUN.set(time.time())


#: What the status line shows about quality runs (``last_ok``: no failed or errored check,
#: and it ran).
QualityStatus = RunStatus


class Quality(PlatformRuns[QualityRun]):
    """The quality runs of one running platform: one at a time, the last outcome kept.

    ``pipeline`` gives the platform's facts for the checks and the analyst (transform status,
    CDC reader state, collector counts) at the start of each run; ``source_dsn`` is the shop
    database the platform captures (replication checks).
    """

    name = "quality run"

    def __init__(
        self,
        settings: Settings,
        warehouse: object,
        pipeline: PipelineFacts = lambda: {},
        source_dsn: str | None = None,
    ) -> None:
        super().__init__(settings.quality.schedule_minutes)
        self.settings = settings
        self.warehouse = warehouse
        self.pipeline = pipeline
        self.source_dsn = source_dsn

    def ok(self, outcome: QualityRun) -> bool:
        return not outcome.failed

    def summary(self, outcome: QualityRun) -> str:
        return outcome.summary()

    def run_scheduled(self) -> object:
        return self.run(reason="schedule", wait=False)

    def run(
        self,
        request: QualityRequest | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        reason: str = "request",
        wait: bool = True,
        replication: bool = True,
    ) -> QualityRun | None:
        """Run the checks now (after the run in progress, if any; with ``wait=False``, none
        then: None). ``replication=False``: leave the replication slot alone (the reader was
        stopped on purpose, so its slot is idle by design)."""
        asked = request or QualityRequest()

        def work() -> QualityRun:
            try:
                facts = dict(self.pipeline())
            except Exception:  # facts are a help to the analyst, never a reason to stop
                log.exception("pipeline facts for the quality run unavailable")
                facts = {}
            return run_on(
                self.warehouse,
                self.settings,
                asked,
                on_progress,
                pipeline=facts,
                source_dsn=self.source_dsn if replication else None,
            )

        run = self.one_at_a_time(
            work,
            reason=reason,
            wait=wait,
            on_waiting=None
            if on_progress is None
            else lambda: on_progress(QualityProgress("waiting")),
        )
        if run is None:
            return None
        if run.error is not None:
            log.error("quality run (%s) failed: %s", reason, run.error)
        elif run.failed:
            log.warning("quality run %s (%s): %s", run.run_id, reason, run.summary())
        else:
            log.info("quality run %s (%s): %s", run.run_id, reason, run.summary())
        if run.report_error is not None:
            log.error("quality run %s: %s", run.run_id, run.report_error)
        return run


def quality_warehouse(
    settings: Settings,
    request: QualityRequest,
    on_progress: ProgressCallback | None = None,
) -> QualityRun:
    """``shopstream quality run``: run it here when the warehouse can be opened; when a running
    platform holds a single-writer warehouse (DuckDB's file), ask that platform over its local
    socket. Raises WarehouseError when neither works."""
    from shopstream.runtime import quality_running
    from shopstream.warehouse.base import ROLE_LAYERS

    return here_or_running_platform(
        settings,
        lambda warehouse: run_on(
            warehouse,
            settings,
            request,
            on_progress,
            pipeline={"platform": "not running"},
            source_dsn=settings.postgres_dsn,
        ),
        lambda: quality_running(settings.data_dir, request, on_progress),
        layers=ROLE_LAYERS["quality"],
    )


__all__ = [
    "JOB",
    "Quality",
    "QualityRequest",
    "QualityRun",
    "QualityStatus",
    "make_job",
    "new_run_id",
    "quality_warehouse",
    "run_on",
    "set_metrics",
]
