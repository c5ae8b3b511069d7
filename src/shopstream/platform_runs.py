"""What transforms and quality runs share on a running platform: one run at a time, the last
outcome kept for the status line, a schedule; and, for the commands, "run it here, or ask the
platform that holds the warehouse".

:class:`~shopstream.transform.runs.Transforms` and :class:`~shopstream.quality.runs.Quality`
are the two kinds; each says how it runs, whether its outcome was ok and how to summarise it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from shopstream.config import Settings

log = logging.getLogger(__name__)

Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class RunStatus:
    """What the status line shows about one kind of run (transforms, quality runs)."""

    running: bool
    #: Who started the one running, or the last one: schedule, request, end of run.
    reason: str | None
    runs: int
    #: The last one's outcome (None: none yet).
    last_ok: bool | None
    #: Wall-clock time the last one ended (time.time()).
    last_finished: float | None
    last_summary: str
    #: Seconds until the schedule starts the next one (None: no schedule).
    next_in_seconds: float | None


#: The pipeline name (``shopstream_pipeline_*{pipeline}``) of each kind of run, by its name.
PIPELINES = {"transform": "transform", "quality run": "quality"}


def record_pipeline_run(pipeline: str, ok: bool, pushgateway_url: str | None) -> str | None:
    """Count a run's outcome (``shopstream_pipeline_*``) and push it when a Pushgateway is set.
    Returns why the push failed (None: pushed, or nothing to push to); never raises for it:
    the run's own outcome stands."""
    from shopstream.observability.pipeline_runs import PushError, record_run

    try:
        record_run(pipeline, "success" if ok else "failed", pushgateway_url=pushgateway_url)
    except PushError as exc:
        log.warning("the %s run's outcome was not pushed: %s", pipeline, exc)
        return str(exc)
    return None


class PlatformRuns(Generic[Outcome]):
    """Runs of one kind on a running platform: one at a time, the last outcome kept, and
    recorded for the PipelineExecutionFailed alert (``shopstream_pipeline_*``; pushed too when
    ``observability.pushgateway_url`` is set).

    ``name`` is how the log calls one run ("transform", "quality run")."""

    name = "run"

    def __init__(self, schedule_minutes: float) -> None:
        self.schedule_minutes = schedule_minutes
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._running = False
        self._runs = 0
        self._last: Outcome | None = None
        self._last_finished: float | None = None
        self._next_at: float | None = None

    def ok(self, outcome: Outcome) -> bool:
        raise NotImplementedError

    def summary(self, outcome: Outcome) -> str:
        raise NotImplementedError

    def run_scheduled(self) -> object:
        """One run the schedule starts (none while another runs)."""
        raise NotImplementedError

    def one_at_a_time(
        self,
        work: Callable[[], Outcome],
        *,
        reason: str,
        wait: bool,
        on_waiting: Callable[[], None] | None = None,
    ) -> Outcome | None:
        """``work`` after the run in progress, if any (with ``wait=False``, not then: None);
        its outcome is kept for the status."""
        if not self._lock.acquire(blocking=False):
            if not wait:
                return None
            if on_waiting is not None:
                on_waiting()
            self._lock.acquire()
        try:
            self._running, self._reason = True, reason
            log.info("%s started (%s)", self.name, reason)
            try:
                outcome = work()
            except Exception:
                self._record(None)
                raise
            self._runs += 1
            self._last, self._last_finished = outcome, time.time()
        finally:
            self._running = False
            self._lock.release()
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome | None) -> None:
        """``outcome`` None: the run raised."""
        pipeline = PIPELINES.get(self.name)
        if pipeline is None:
            return
        # The kinds keep their settings (Transforms, Quality): the Pushgateway is there.
        settings: Settings | None = getattr(self, "settings", None)
        url = settings.observability.pushgateway_url if settings is not None else None
        try:
            ok = outcome is not None and self.ok(outcome)
        except Exception:  # an outcome it cannot judge is not a success
            ok = False
        record_pipeline_run(pipeline, ok, url)

    def status(self) -> RunStatus:
        last = self._last
        next_at = self._next_at
        return RunStatus(
            running=self._running,
            reason=self._reason,
            runs=self._runs,
            last_ok=None if last is None else self.ok(last),
            last_finished=self._last_finished,
            last_summary="" if last is None else self.summary(last),
            next_in_seconds=None if next_at is None else max(0.0, next_at - time.monotonic()),
        )

    async def schedule(self, stop: asyncio.Event) -> None:
        """Every ``schedule_minutes`` until ``stop`` (0: never). A scheduled run is skipped
        while another runs."""
        interval = self.schedule_minutes * 60
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
                await asyncio.to_thread(self.run_scheduled)
            except Exception:  # never let the schedule take the platform down
                log.exception("scheduled %s failed", self.name)
        self._next_at = None


def here_or_running_platform(
    settings: Settings,
    here: Callable[[object], Outcome],
    running: Callable[[], Outcome],
    *,
    layers: Collection[str],
) -> Outcome:
    """A command's run (``shopstream transform``, ``shopstream quality run``): ``here`` on the
    warehouse opened in this process when it can be; when a running platform holds a
    single-writer warehouse (DuckDB's file), ``running`` asks that platform over its local
    socket. ``layers`` are those the run writes (:data:`~shopstream.warehouse.base.ROLE_LAYERS`):
    in production its account may see no others. Raises WarehouseError when neither works."""
    import httpx

    from shopstream.config import SinkSettings
    from shopstream.runtime import RUNTIME_FILE
    from shopstream.warehouse import WarehouseError, WarehouseInUse, open_warehouse

    # In this process: no writer process of its own for a one-off run.
    local = settings.model_copy(
        update={"sink": SinkSettings(**{**settings.sink.model_dump(), "writer_process": False})}
    )
    try:
        warehouse = open_warehouse(local)
    except WarehouseInUse:
        try:
            return running()
        except LookupError as exc:
            raise WarehouseError(
                f"{settings.warehouse} is held by another process, but no running shopstream "
                f"with a query socket left its address in {settings.data_dir}/{RUNTIME_FILE}. "
                "Stop that process and retry."
            ) from exc
        except httpx.HTTPError as exc:
            raise WarehouseError(f"the running platform did not answer: {exc}") from exc
    try:
        warehouse.ensure_layers(layers)
        return here(warehouse)
    finally:
        warehouse.close()
