"""When and where transforms run.

- A running platform owns the warehouse: :class:`Transforms` runs them there (one at a time),
  on the schedule (``transform.schedule_minutes``), when ``shopstream transform`` asks through
  the local query socket, and once at the end of ``shopstream run``. A failure is logged and
  shown in the status; ingest goes on.
- With nothing running, :func:`transform_warehouse` (``shopstream transform``) opens the
  warehouse itself and runs the transform in its own process.

The work itself is :func:`shopstream.transform.runner.run_job`, called through the
warehouse's ``run_in_owner``: in the DuckDB writer process when there is one, so dbt shares the
DuckDB instance that holds the file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopstream.transform.runner import (
    Progress,
    TransformJob,
    TransformRequest,
    TransformResult,
    failed,
)
from shopstream.transform.workspace import PACKAGED_PROJECT, email_salt, transform_root

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
    """Run a transform where ``warehouse`` is held; every failure comes back as a result."""
    from shopstream.warehouse import WarehouseError

    started = time.monotonic()
    run_in_owner = getattr(warehouse, "run_in_owner", None)
    if run_in_owner is None:
        return failed(f"{settings.warehouse}: this warehouse cannot run transforms here")
    try:
        job = make_job(settings, request)
        result = run_in_owner(JOB, job, on_progress or (lambda _: None))
    except (WarehouseError, OSError, ValueError) as exc:
        return failed(f"transform failed: {exc}", time.monotonic() - started)
    if not isinstance(result, TransformResult):  # pragma: no cover - a wrong job answer
        return failed(f"transform answered {type(result).__name__}, not a result")
    return result


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


@dataclass(frozen=True)
class TransformStatus:
    """What the status line shows about transforms."""

    running: bool
    #: Who started the one running, or the last one: schedule, request, end of run.
    reason: str | None
    runs: int
    last_ok: bool | None
    #: Wall-clock time the last one ended (time.time()).
    last_finished: float | None
    last_summary: str
    #: Seconds until the schedule starts the next one (None: no schedule).
    next_in_seconds: float | None


class Transforms:
    """The transforms of one running platform: one at a time, the last outcome kept."""

    def __init__(self, settings: Settings, warehouse: object) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._running = False
        self._runs = 0
        self._last: TransformResult | None = None
        self._last_finished: float | None = None
        self._next_at: float | None = None

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
        request = request or TransformRequest()
        if not self._lock.acquire(blocking=False):
            if not wait:
                return None
            if on_progress is not None:
                on_progress(Progress("waiting"))
            self._lock.acquire()
        try:
            self._running, self._reason = True, reason
            log.info("transform started (%s)", reason)
            result = run_on(self.warehouse, self.settings, request, on_progress)
            self._runs += 1
            self._last, self._last_finished = result, time.time()
        finally:
            self._running = False
            self._lock.release()
        if result.success:
            log.info("transform (%s) done: %s", reason, summary_line(result))
        else:
            log.error("transform (%s) failed: %s", reason, summary_line(result))
            for line in result.failures()[1:]:
                log.error("  %s", line)
        return result

    def status(self) -> TransformStatus:
        last = self._last
        next_at = self._next_at
        return TransformStatus(
            running=self._running,
            reason=self._reason,
            runs=self._runs,
            last_ok=None if last is None else last.success,
            last_finished=self._last_finished,
            last_summary="" if last is None else summary_line(last),
            next_in_seconds=None if next_at is None else max(0.0, next_at - time.monotonic()),
        )

    async def schedule(self, stop: asyncio.Event) -> None:
        """Every ``transform.schedule_minutes`` until ``stop`` (0: never). A scheduled run is
        skipped while another transform runs."""
        interval = self.settings.transform.schedule_minutes * 60
        if interval <= 0:
            return
        while not stop.is_set():
            self._next_at = time.monotonic() + interval
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                break
            except TimeoutError:
                pass
            self._next_at = None
            try:
                await asyncio.to_thread(self.run, reason="schedule", wait=False)
            except Exception:  # never let the schedule take the platform down
                log.exception("scheduled transform failed")
        self._next_at = None


def transform_warehouse(
    settings: Settings,
    request: TransformRequest,
    on_progress: ProgressCallback | None = None,
) -> TransformResult:
    """``shopstream transform``: run it here when the warehouse can be opened; when a running
    platform holds a single-writer warehouse (DuckDB's file), ask that platform over its
    local socket. Raises WarehouseError when neither works."""
    import httpx

    from shopstream.config import SinkSettings
    from shopstream.runtime import RUNTIME_FILE, transform_running
    from shopstream.warehouse import WarehouseError, WarehouseInUse, open_warehouse

    # In this process: no writer process of its own for a one-off run.
    here = settings.model_copy(
        update={"sink": SinkSettings(**{**settings.sink.model_dump(), "writer_process": False})}
    )
    try:
        warehouse = open_warehouse(here)
    except WarehouseInUse:
        try:
            return transform_running(settings.data_dir, request, on_progress)
        except LookupError as exc:
            raise WarehouseError(
                f"{settings.warehouse} is held by another process, but no running shopstream "
                f"with a query socket left its address in {settings.data_dir}/{RUNTIME_FILE}. "
                "Stop that process and retry."
            ) from exc
        except httpx.HTTPError as exc:
            raise WarehouseError(f"the running platform did not answer: {exc}") from exc
    try:
        warehouse.ensure_layers()
        return run_on(warehouse, settings, request, on_progress)
    finally:
        warehouse.close()


__all__ = [
    "JOB",
    "TransformStatus",
    "Transforms",
    "make_job",
    "run_on",
    "summary_line",
    "transform_warehouse",
]
