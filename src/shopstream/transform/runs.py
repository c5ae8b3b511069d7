"""When and where transforms run.

- A running platform owns the warehouse: :class:`Transforms` runs them there (one at a time),
  on the schedule (``transform.schedule_minutes``), when ``shopstream transform`` asks through
  the local query socket, and once at the end of ``shopstream run``. A failure is logged and
  shown in the status; ingest goes on.
- With nothing running, :func:`transform_warehouse` (``shopstream transform``) opens the
  warehouse itself and runs the transform in its own process.

The work itself is :func:`shopstream.transform.runner.run_job`, called through the
warehouse's ``run_in_owner``: in the DuckDB writer process when there is one, so dbt shares the
DuckDB instance that holds the file. A warehouse many processes may open (no
``capabilities.single_writer_process``: BigQuery) runs it in the process that opened it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from shopstream.platform_runs import PlatformRuns, RunStatus, here_or_running_platform
from shopstream.transform.runner import (
    Progress,
    TransformJob,
    TransformRequest,
    TransformResult,
    failed,
    run_job,
)
from shopstream.transform.workspace import (
    PACKAGED_PROJECT,
    QueryableWarehouse,
    email_salt,
    transform_root,
)

if TYPE_CHECKING:
    from shopstream.config import Settings

log = logging.getLogger(__name__)

JOB = "shopstream.transform.runner:run_job"

ProgressCallback = Callable[[Progress], None]


def make_job(settings: Settings, request: TransformRequest) -> TransformJob:
    return TransformJob(
        root=transform_root(settings.data_dir).resolve(),
        source=(settings.transform.project_dir or PACKAGED_PROJECT).resolve(),
        warehouse_url=settings.warehouse,
        request=request,
        settings_vars={
            "timezone": settings.timezone,
            "lookback_days": settings.transform.lookback_days,
            "session_timeout_minutes": settings.transform.session_timeout_minutes,
        },
        email_salt=email_salt(settings),
    )


def run_on(
    warehouse: object,
    settings: Settings,
    request: TransformRequest,
    on_progress: ProgressCallback | None = None,
) -> TransformResult:
    """Run a transform where ``warehouse`` is held (its owner process, or here for a warehouse
    many processes may open); every failure comes back as a result."""
    from shopstream.warehouse import WarehouseError

    started = time.monotonic()
    run_in_owner = getattr(warehouse, "run_in_owner", None)
    if run_in_owner is None and not _shared(warehouse):
        return failed(f"{settings.warehouse}: this warehouse cannot run transforms here")
    try:
        job = make_job(settings, request)
        emit = on_progress or (lambda _: None)
        if run_in_owner is not None:
            result = run_in_owner(JOB, job, emit)
        else:  # nothing to share a file with: dbt connects on its own, from this process
            result = run_job(cast(QueryableWarehouse, warehouse), job, emit)
    except (WarehouseError, OSError, ValueError) as exc:
        return failed(f"transform failed: {exc}", time.monotonic() - started)
    if not isinstance(result, TransformResult):  # pragma: no cover - a wrong job answer
        return failed(f"transform answered {type(result).__name__}, not a result")
    return result


def _shared(warehouse: object) -> bool:
    """Many processes may open it at once (a service such as BigQuery): whoever opened it
    can run the transform."""
    capabilities = getattr(warehouse, "capabilities", None)
    return capabilities is not None and not capabilities.single_writer_process


def summary_line(result: TransformResult) -> str:
    built = sum(1 for m in result.models if m.status == "success")
    line = (
        f"{built}/{len(result.models)} models built, tests {result.tests_passed} passed, "
        f"{result.tests_failed} failed, {result.tests_warned} warned in {result.seconds:,.1f} s"
    )
    failures = result.failures()
    if failures:
        line += f"; {failures[0]}" + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")
    return line


#: What the status line shows about transforms.
TransformStatus = RunStatus


class Transforms(PlatformRuns[TransformResult]):
    """The transforms of one running platform: one at a time, the last outcome kept."""

    name = "transform"

    def __init__(self, settings: Settings, warehouse: object) -> None:
        super().__init__(settings.transform.schedule_minutes)
        self.settings = settings
        self.warehouse = warehouse

    def ok(self, outcome: TransformResult) -> bool:
        return outcome.success

    def summary(self, outcome: TransformResult) -> str:
        return summary_line(outcome)

    def run_scheduled(self) -> object:
        return self.run(reason="schedule", wait=False)

    def run(
        self,
        request: TransformRequest | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        reason: str = "request",
        wait: bool = True,
    ) -> TransformResult | None:
        """Run one transform now (after the one running, if any; with ``wait=False``, none
        then: None)."""
        asked = request or TransformRequest()
        result = self.one_at_a_time(
            lambda: run_on(self.warehouse, self.settings, asked, on_progress),
            reason=reason,
            wait=wait,
            on_waiting=None if on_progress is None else lambda: on_progress(Progress("waiting")),
        )
        if result is None:
            return None
        if result.success:
            log.info("transform (%s) done: %s", reason, summary_line(result))
        else:
            log.error("transform (%s) failed: %s", reason, summary_line(result))
            for line in result.failures()[1:]:
                log.error("  %s", line)
        return result


def transform_warehouse(
    settings: Settings,
    request: TransformRequest,
    on_progress: ProgressCallback | None = None,
) -> TransformResult:
    """``shopstream transform``: run it here when the warehouse can be opened; when a running
    platform holds a single-writer warehouse (DuckDB's file), ask that platform over its
    local socket. Raises WarehouseError when neither works."""
    from shopstream.runtime import transform_running
    from shopstream.warehouse.base import ROLE_LAYERS

    return here_or_running_platform(
        settings,
        lambda warehouse: run_on(warehouse, settings, request, on_progress),
        lambda: transform_running(settings.data_dir, request, on_progress),
        layers=ROLE_LAYERS["transform"],
    )


__all__ = [
    "JOB",
    "TransformStatus",
    "Transforms",
    "make_job",
    "run_on",
    "summary_line",
    "transform_warehouse",
]
