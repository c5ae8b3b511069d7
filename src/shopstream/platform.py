"""The composition root: builds the parts a command needs from settings, and runs them.

``shopstream run``, ``shopstream collector``, ``shopstream cdc`` and ``shopstream load`` are
one build with different :class:`Parts` switched on: the sink always; the warehouse where
something needs it (the warehouse sink, the loader, scheduled transforms or quality checks:
a collector or CDC reader publishing to a broker never opens it, so a loader beside them can
hold DuckDB's file); the collector; the local query socket wherever a warehouse that allows
one writer process only is held (see :mod:`shopstream.runtime`); the CDC reader; the loader
(a transport into the warehouse); generated clickstream and order traffic; a metrics
endpoint. This is the only module that wires components together.

Every component has ``start`` / ``stop`` / ``status()``; ``status()`` returns a frozen
snapshot the CLI renders. Process-wide tuning is :func:`tune_process`, called once by the
CLI for serving commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import uvicorn

from shopstream.cdc.stats import ReaderStatus
from shopstream.collector.app import IntakeFastPath, create_app
from shopstream.collector.connection import bounded_http
from shopstream.collector.handlers import IntakeHandlers
from shopstream.config import Settings
from shopstream.generators.clickstream import GroundTruth, SendStats
from shopstream.generators.shop import Shop, ShopTruth, WorkloadStats
from shopstream.loader.run import LoaderStatus
from shopstream.quality.runner import QualityProgress
from shopstream.quality.runs import Quality, QualityRequest, QualityRun, QualityStatus
from shopstream.runtime import (
    QueryService,
    Served,
    http_url,
    read_runtime,
    remove_runtime,
    write_runtime,
)
from shopstream.sinks import Sink, open_sink, sink_backend
from shopstream.transform.runner import Progress, TransformRequest, TransformResult
from shopstream.transform.runs import Transforms, TransformStatus
from shopstream.warehouse import Warehouse, WarehouseError, open_warehouse
from shopstream.warehouse.base import LAYERS, ROLE_LAYERS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from shopstream.devtools.local_postgres import LocalPostgres
    from shopstream.loader.base import Source

log = logging.getLogger(__name__)

__all__ = [
    "LocalDatabaseError",
    "Parts",
    "Platform",
    "PlatformStatus",
    "Summary",
    "sink_needs_warehouse",
    "tune_process",
]


def tune_process() -> None:
    """Process-wide tuning for a serving process; call once, after the imports."""
    # Everything loaded so far lives for the whole run: keep the collector from scanning
    # it again and again, and collect young objects less often (GC took 6-16% of a core
    # under load).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # The sink thread is on the commit's critical path but needs the GIL for a few short
    # steps per commit; at the default 5 ms switch interval each step can wait that long
    # behind the busy event loop.
    sys.setswitchinterval(0.0005)


# -- what to build ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """Generated clickstream sent to the collector."""

    rate: float
    bad_fraction: float
    truth: Path | None = None
    #: Shoppers think this much faster (< 1) or slower; tests use it to reach purchases in
    #: seconds rather than minutes.
    think_scale: float = 1.0


@dataclass(frozen=True)
class Parts:
    """Which parts a command switches on (the sink is always there; the warehouse when a
    part needs it, see :meth:`Platform.needs_warehouse`)."""

    collector: bool = True
    host: str | None = None
    port: int | None = None
    #: The shop database to capture changes from (None: no CDC reader).
    cdc_dsn: str | None = None
    #: Without ``cdc_dsn``: start a local PostgreSQL for the shop database and capture it.
    local_postgres: bool = False
    #: The reader stops once no change has arrived for this many seconds (0: after setup).
    cdc_idle_exit: float | None = None
    traffic: Traffic | None = None
    #: Order-workload transactions/s against ``cdc_dsn`` (0: none).
    orders_tps: float = 0.0
    #: Serve Prometheus metrics on their own port (for processes without the collector).
    metrics_port: int | None = None
    #: How long generators run (None: until stopped).
    duration: float | None = None
    #: Run the transform every ``transform.schedule_minutes`` while serving.
    schedule_transforms: bool = False
    #: Run the quality checks every ``quality.schedule_minutes`` while serving.
    schedule_quality: bool = False
    #: Load from this transport into the warehouse (``kafka://...``, ``pubsub://...``);
    #: the loader's rows go through the warehouse sink whatever ``sink_url`` says.
    loader_url: str | None = None
    #: The loader stops once nothing has arrived for this many seconds.
    loader_idle_exit: float | None = None


# -- status snapshots ------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectorStatus:
    url: str
    up_seconds: float
    accepted: int
    rejected: int
    sink_pending_rows: int
    sink_commits: int


@dataclass(frozen=True)
class PlatformStatus:
    """What each running part reports; None for parts that are switched off."""

    collector: CollectorStatus | None
    generator: SendStats | None
    cdc: ReaderStatus | None
    orders: WorkloadStats | None
    transform: TransformStatus | None = None
    quality: QualityStatus | None = None
    loader: LoaderStatus | None = None


@dataclass(frozen=True)
class Summary:
    seconds: float
    table_counts: dict[str, int]
    accepted: int
    rejected: int
    generator: GroundTruth | None = None
    cdc: ReaderStatus | None = None
    orders: ShopTruth | None = None
    loader: LoaderStatus | None = None
    #: What failed (a part, the row counts), in order; the command exits non-zero.
    failures: tuple[Exception, ...] = ()


def _iso(timestamp: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


# -- components ------------------------------------------------------------------------------

S = TypeVar("S")
R = TypeVar("R")


class Part(Protocol):
    """A part that runs beside the collector: started, told to stop, asked for status."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> object: ...

    @property
    def done(self) -> bool: ...

    @property
    def failed(self) -> bool: ...


class _Task(Generic[S, R]):
    """A part that runs as one task until it is done or told to stop; its result goes
    into the summary. Subclasses implement ``_run`` and ``status``."""

    name = "task"

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[R] | None = None
        self.result: R | None = None

    async def _run(self, stop: asyncio.Event) -> R:
        raise NotImplementedError

    def status(self) -> S:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(self._stop))

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def failed(self) -> bool:
        task = self._task
        return task is not None and task.done() and not task.cancelled() and bool(task.exception())

    async def stop(self) -> None:
        """Tell it to stop and wait (a minute at most); raises what it failed with."""
        self._stop.set()
        if self._task is not None:
            self.result = await asyncio.wait_for(self._task, timeout=60)


class Collector:
    """The HTTP collector: events in, through the sink, into the warehouse."""

    name = "collector"

    def __init__(self, settings: Settings, sink: Sink, host: str | None, port: int | None):
        self.settings = settings
        self.sink = sink
        self.host = host or settings.collector.host
        self.port = settings.collector.port if port is None else port
        self.intake = IntakeHandlers(settings, sink)
        # With collector.metrics_port, /metrics lives there, off the public intake port.
        self.app = create_app(self.intake, serve_metrics=settings.collector.metrics_port is None)
        self.url = ""
        self.started_at = time.monotonic()
        self._served: Served | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            IntakeFastPath(self.intake, self.app),
            http=bounded_http(
                self.settings.collector.max_header_bytes,
                self.settings.collector.request_read_timeout_seconds,
            ),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=30,
            backlog=4096,
        )
        self._served = Served(config, "collector")
        await self._served.start()
        sockname = self._served.server.servers[0].sockets[0].getsockname()
        self.url = http_url(sockname[0], sockname[1])
        self.started_at = time.monotonic()
        log.info("collector listening on %s", self.url)

    @property
    def done(self) -> bool:
        return self._served is not None and self._served.done

    def begin_stop(self) -> None:
        if self._served is not None:
            self._served.begin_stop()

    async def stop(self) -> None:
        """Requests in flight finish (each waits for its commit); the sink stays open."""
        if self._served is not None:
            await self._served.stop()

    def status(self) -> CollectorStatus:
        stats = self.intake.stats
        return CollectorStatus(
            url=self.url,
            up_seconds=time.monotonic() - self.started_at,
            accepted=stats.accepted,
            rejected=stats.rejected,
            sink_pending_rows=self.sink.pending_rows(),
            sink_commits=self.sink.commits,
        )


class ChangeCapture(_Task[ReaderStatus, ReaderStatus]):
    """The CDC reader, in a thread, writing through the platform's sink."""

    name = "cdc"

    def __init__(
        self, dsn: str, settings: Settings, sink: Sink, *, idle_exit: float | None
    ) -> None:
        from shopstream.cdc.reader import ChangeReader

        super().__init__()
        self.reader = ChangeReader(
            dsn, settings.cdc, sink, state_dir=settings.data_dir, idle_exit=idle_exit
        )

    async def _run(self, stop: asyncio.Event) -> ReaderStatus:
        halt = threading.Event()
        worker = asyncio.create_task(asyncio.to_thread(self.reader.run, halt))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        halt.set()
        stopper.cancel()
        await worker  # re-raises a reader failure
        return self.reader.stats.snapshot()

    def status(self) -> ReaderStatus:
        return self.reader.stats.snapshot()


class ClickstreamTraffic(_Task[SendStats, GroundTruth]):
    """Generated shop clickstream, sent to the collector over HTTP.

    With the shop database (``shop``), a purchase is an order placed there first, and
    ``generate.purchase_event_loss`` of those purchase events are lost; without it, the
    purchases' order ids are made up.
    """

    name = "generator"

    def __init__(
        self,
        settings: Settings,
        collector: Collector,
        traffic: Traffic,
        duration: float | None,
        shop: Shop | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.collector = collector
        self.traffic = traffic
        self.duration = duration
        self.shop = shop
        self._progress = SendStats(0, 0, 0, 0, 0, 0.0)

    def _on_progress(self, stats: SendStats) -> None:
        self._progress = stats

    async def _run(self, stop: asyncio.Event) -> GroundTruth:
        from shopstream.generators.clickstream import send_events

        settings = self.settings
        keys = settings.write_keys
        if self.shop is not None:
            await self.shop.open()
        try:
            truth = await send_events(
                self.collector.url,
                rate=self.traffic.rate,
                duration=self.duration if self.duration is not None else float("inf"),
                write_key=keys[0].get_secret_value() if keys else None,
                bad_fraction=self.traffic.bad_fraction,
                on_progress=self._on_progress,
                stop=stop,
                think_scale=self.traffic.think_scale,
                shop=self.shop,
                purchase_event_loss=settings.generate.purchase_event_loss,
                timezone=settings.timezone,
                session_timeout=settings.transform.session_timeout_minutes * 60,
            )
        finally:
            if self.shop is not None:
                await self.shop.close()
        if self.traffic.truth is not None:
            truth.write_json(self.traffic.truth)
        return truth

    def status(self) -> SendStats:
        return self._progress


class OrderWorkload(_Task[WorkloadStats, ShopTruth]):
    """The shop's order workload against its PostgreSQL (what the CDC reader captures)."""

    name = "orders"

    def __init__(
        self,
        dsn: str,
        *,
        tps: float,
        duration: float | None,
        seed: int = 1,
        shop: Shop | None = None,
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.tps = tps
        self.duration = duration
        self.seed = seed
        self.shop = shop  # shared with the clickstream's checkouts
        self._progress = WorkloadStats(0, 0, 0, 0.0, 0.0)

    def _on_progress(self, stats: WorkloadStats) -> None:
        self._progress = stats

    async def _run(self, stop: asyncio.Event) -> ShopTruth:
        from shopstream.generators.shop import run_order_workload

        return await run_order_workload(
            self.dsn,
            tps=self.tps,
            duration=self.duration if self.duration is not None else float("inf"),
            seed=self.seed,
            on_progress=self._on_progress,
            stop=stop,
            shop=self.shop,
        )

    def status(self) -> WorkloadStats:
        return self._progress


class Loading(_Task[LoaderStatus, LoaderStatus]):
    """The loader, in a thread: the transport's messages into the warehouse, through the
    platform's (warehouse) sink."""

    name = "loader"

    def __init__(
        self, source: Source, settings: Settings, sink: Sink, *, idle_exit: float | None
    ) -> None:
        from shopstream.events.messages import Topics
        from shopstream.loader.run import Loader

        super().__init__()
        self.source = source
        self.idle_exit = idle_exit
        self._source_closed = False
        self.loader = Loader(
            source,
            sink,
            Topics(settings.transport.topic_prefix),
            batch_messages=settings.loader.batch_messages,
            batch_wait=settings.loader.batch_wait_ms / 1000,
        )

    async def _run(self, stop: asyncio.Event) -> LoaderStatus:
        halt = threading.Event()
        worker = asyncio.create_task(asyncio.to_thread(self.loader.run, halt, self.idle_exit))
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            halt.set()
            stopper.cancel()
            return await worker  # re-raises a loader failure
        finally:
            await asyncio.to_thread(self.close_source)

    def close_source(self) -> None:
        """Leave the consumer group (subscription) at once: the partitions go to the other
        loaders without waiting for a session timeout. Once only."""
        if not self._source_closed:
            self._source_closed = True
            self.source.close()

    def status(self) -> LoaderStatus:
        return self.loader.status()


def sink_needs_warehouse(settings: Settings) -> bool:
    """Whether the configured sink writes into the warehouse (the embedded shape) rather than
    to a broker (a ValueError naming the known schemes for an unknown sink URL)."""
    return sink_backend(settings.sink_url).needs_warehouse


def _held_elsewhere(data_dir: Path) -> bool:
    """Another live process holding the warehouse left its query socket's address here."""
    import os

    runtime = read_runtime(data_dir)
    if runtime is None or "socket" not in runtime or runtime.get("pid") == os.getpid():
        return False
    try:
        os.kill(int(runtime["pid"]), 0)
    except (OSError, ValueError, TypeError):
        return False  # left behind by a process that died
    return True


# -- the platform ----------------------------------------------------------------------------


class LocalDatabaseError(Exception):
    """The local shop database (``Parts.local_postgres``) did not start; says what to do."""


class Platform:
    """The parts a command switched on, over one warehouse and one sink.

    ``announce`` receives the steps a user waits for (a local database starting).
    """

    def __init__(
        self,
        settings: Settings,
        parts: Parts,
        *,
        announce: Callable[[str], None] = log.info,
    ) -> None:
        self.settings = settings
        self.shop_server: LocalPostgres | None = None
        if parts.cdc_dsn is None and parts.local_postgres:
            parts = replace(parts, cdc_dsn=self._start_local_database(announce))
        self.parts = parts
        self.warehouse: Warehouse | None = None
        self.source: Source | None = None
        try:
            if self.needs_warehouse(settings, parts):
                self.warehouse = open_warehouse(settings)
        except BaseException:
            self._stop_local_database()
            raise
        try:
            if self.warehouse is not None:
                self.warehouse.ensure_layers(self.layers_written(settings, parts))
            # The loader writes into the warehouse, whatever the collectors' sink is.
            self.sink = open_sink(
                settings, self.warehouse, "warehouse" if parts.loader_url else None
            )
            # Transforms and quality checks run where the warehouse is held: see
            # shopstream.transform.runs and shopstream.quality.runs.
            self.transforms = Transforms(settings, self.warehouse)
            self.quality = Quality(
                settings, self.warehouse, self.pipeline_facts, source_dsn=parts.cdc_dsn
            )
            self.collector: Collector | None = None
            self.queries: QueryService | None = None
            self.query_token = secrets.token_urlsafe(32)
            if parts.collector:
                self.collector = Collector(settings, self.sink, parts.host, parts.port)
            serving = parts.collector or parts.loader_url is not None
            if (
                serving
                and self.warehouse is not None
                and self.warehouse.capabilities.single_writer_process
            ):
                # No other process can open the warehouse while this one runs: answer
                # their queries (`shopstream sql`) here.
                from shopstream.warehouse.duckdb.query_endpoint import create_query_app

                query_app = create_query_app(
                    self.warehouse,
                    self.query_token,
                    settings.query,
                    transform=self._transform_for_socket,
                    quality=self._quality_for_socket,
                    optimize=self._optimize_for_socket,
                )
                self.queries = QueryService(query_app, settings.data_dir)
            self.loader: Loading | None = None
            if parts.loader_url is not None:
                from shopstream.loader import open_source

                self.source = open_source(parts.loader_url, settings)
                self.loader = Loading(
                    self.source, settings, self.sink, idle_exit=parts.loader_idle_exit
                )
            self.cdc: ChangeCapture | None = None
            self.orders: OrderWorkload | None = None
            self.generator: ClickstreamTraffic | None = None
            # One shop for the order workload and the clickstream's checkouts, so that the
            # orders behind purchase events are moved (paid, shipped, ...) like the others.
            self.shop: Shop | None = None
            if parts.cdc_dsn is not None:
                self.cdc = ChangeCapture(
                    parts.cdc_dsn, settings, self.sink, idle_exit=parts.cdc_idle_exit
                )
                if parts.orders_tps > 0 or parts.traffic is not None:
                    # With shoppers on the site every order comes from a checkout, as in a
                    # real shop (tracking coverage then measures only what trackers lose);
                    # the workload moves the orders on.
                    self.shop = Shop(
                        parts.cdc_dsn,
                        timezone=settings.timezone,
                        own_orders=parts.traffic is None,
                    )
                if parts.orders_tps > 0:
                    self.orders = OrderWorkload(
                        parts.cdc_dsn,
                        tps=parts.orders_tps,
                        duration=parts.duration,
                        shop=self.shop,
                    )
            if parts.traffic is not None:
                if self.collector is None:
                    raise ValueError("generated traffic needs the collector switched on")
                self.generator = ClickstreamTraffic(
                    settings, self.collector, parts.traffic, parts.duration, shop=self.shop
                )
            self.metrics_url: str | None = None
            self._metrics_server: WSGIServer | None = None
            self._running = False
            self._stopping = False
            if parts.metrics_port is not None:
                self._serve_metrics(parts.metrics_port)
        except BaseException:
            self.close()
            raise
        self.started_at = time.monotonic()

    @staticmethod
    def needs_warehouse(settings: Settings, parts: Parts) -> bool:
        """Whether a process with these parts opens the warehouse: its sink writes there, it
        loads a transport into it, or it runs transforms or quality checks on schedule."""
        return (
            parts.loader_url is not None
            or parts.schedule_transforms
            or parts.schedule_quality
            or sink_needs_warehouse(settings)
        )

    @staticmethod
    def layers_written(settings: Settings, parts: Parts) -> tuple[str, ...]:
        """The warehouse layers a process with these parts makes sure of at start: only those
        its role writes (``ROLE_LAYERS``), as a least-privilege account may see no others."""
        layers: set[str] = set()
        if parts.loader_url is not None or sink_needs_warehouse(settings):
            layers.update(ROLE_LAYERS["loader"])
        if parts.schedule_quality:
            layers.update(ROLE_LAYERS["quality"])
        if parts.schedule_transforms:
            layers.update(ROLE_LAYERS["transform"])
        return tuple(layer for layer in LAYERS if layer in layers)

    def _start_local_database(self, announce: Callable[[str], None]) -> str:
        from shopstream.devtools.shop_database import local_shop_database

        announce("starting a local PostgreSQL (wal_level=logical) for the shop database...")
        try:
            self.shop_server, dsn = local_shop_database(self.settings)
        except Exception as exc:
            raise LocalDatabaseError(
                f"could not start a local PostgreSQL: {exc}. Set SHOPSTREAM_POSTGRES_DSN to "
                "your shop database instead, or run without --local-postgres."
            ) from exc
        announce(f"shop database ready: {dsn}")
        return dsn

    def _stop_local_database(self) -> None:
        if self.shop_server is not None:
            self.shop_server.stop()
            self.shop_server = None

    @property
    def tasks(self) -> list[Part]:
        """The parts that run beside the collector, in the order they start."""
        parts: list[Part | None] = [self.cdc, self.orders, self.generator, self.loader]
        return [p for p in parts if p is not None]

    def _serve_metrics(self, port: int) -> None:
        from shopstream.observability.metrics_server import serve_metrics

        host = self.settings.collector.host
        self._metrics_server = serve_metrics(host, port, self.health)
        self.metrics_url = f"{http_url(host, self._metrics_server.server_port)}/metrics"

    def health(self) -> str | None:
        """Why this process is not alive (the metrics port's /healthz, the liveness probe), or
        None while its loop runs (or is starting) and its sink is not broken for good. Parts
        that retry on their own (the CDC reader reconnecting, the loader's backoff) are alive."""
        if self._stopping:
            return "the process is stopping"
        for task in self.tasks:
            if task.failed:
                return f"the {task.name} failed"
            if self._running and task.done:
                return f"the {task.name} has stopped"
        return self.sink.broken()

    def status(self) -> PlatformStatus:
        transforms = self.transforms.status()
        quality = self.quality.status()
        return PlatformStatus(
            collector=self.collector.status() if self.collector else None,
            generator=self.generator.status() if self.generator else None,
            cdc=self.cdc.status() if self.cdc else None,
            orders=self.orders.status() if self.orders else None,
            transform=transforms
            if transforms.runs or transforms.running or transforms.next_in_seconds is not None
            else None,
            quality=quality
            if quality.runs or quality.running or quality.next_in_seconds is not None
            else None,
            loader=self.loader.status() if self.loader else None,
        )

    def pipeline_facts(self) -> dict[str, object]:
        """What the platform knows that the warehouse does not, for the quality checks and
        the analyst: the transform's last run, the CDC reader's state, the collector's
        counts (plain JSON values)."""
        facts: dict[str, object] = {}
        transform = self.transforms.status()
        facts["transform"] = {
            "running": transform.running,
            "runs": transform.runs,
            "last_ok": transform.last_ok,
            "last_finished": _iso(transform.last_finished),
            "last_summary": transform.last_summary,
        }
        if self.cdc is not None:
            cdc = self.cdc.status()
            facts["cdc"] = {
                "state": cdc.state,
                "changes": cdc.changes,
                "transactions": cdc.transactions,
                "snapshot_rows": cdc.snapshot_rows,
                "dead_letters": cdc.dead_letters,
                "lag_bytes": cdc.lag_bytes,
                "lag_seconds": None if cdc.lag_seconds is None else round(cdc.lag_seconds, 1),
                "retained_bytes": cdc.retained_bytes,
            }
        else:
            facts["cdc"] = {"state": "not configured"}
        if self.loader is not None:
            loader = self.loader.status()
            facts["loader"] = {
                "state": loader.state,
                "messages": loader.messages,
                "rows": loader.rows,
                "poison": loader.poison,
                "refused": loader.refused,
                "lag_messages": loader.lag,
                "last_error": loader.last_error,
            }
        if self.collector is not None:
            collector = self.collector.status()
            facts["collector"] = {
                "accepted": collector.accepted,
                "rejected": collector.rejected,
                "sink_pending_rows": collector.sink_pending_rows,
                "sink_commits": collector.sink_commits,
                "up_seconds": round(collector.up_seconds, 1),
            }
        return facts

    def check_quality(
        self,
        request: QualityRequest | None = None,
        on_progress: Callable[[QualityProgress], None] | None = None,
        *,
        reason: str = "request",
        replication: bool = True,
    ) -> QualityRun:
        """Run the quality checks now, where the warehouse is held (after a run in progress).
        A failure is in the run (logged), never an exception: ingest goes on.
        ``replication=False``: skip the replication slot's checks (after the reader stopped)."""
        run = self.quality.run(request, on_progress, reason=reason, replication=replication)
        assert run is not None  # it waited its turn
        return run

    def _quality_for_socket(
        self, body: dict[str, object], emit: Callable[[dict[str, object]], None]
    ) -> dict[str, object]:
        """``shopstream quality run`` asking over the query socket (plain dicts there)."""
        from datetime import datetime

        select = body.get("select") or []
        now = body.get("now")
        request = QualityRequest(
            select=tuple(str(s) for s in select) if isinstance(select, list) else (),
            now=datetime.fromisoformat(now) if isinstance(now, str) else None,
        )
        return self.check_quality(request, lambda p: emit(asdict(p))).to_dict()

    def _optimize_for_socket(self, body: dict[str, object]) -> dict[str, object]:
        """``shopstream optimize-sql`` asking over the query socket: the report as JSON data."""
        from shopstream.genai.optimizer.query import warehouse_dialect
        from shopstream.genai.sql_optimizer import optimize

        dialect = body.get("dialect") or warehouse_dialect(self.settings.warehouse)
        report = optimize(
            str(body["sql"]),
            dialect=dialect,  # type: ignore[arg-type]  # OptimizeBody allows the two only
            warehouse=self.warehouse,
            settings=self.settings,
        )
        return report.model_dump(mode="json")

    def transform(
        self,
        request: TransformRequest | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        reason: str = "request",
    ) -> TransformResult:
        """Run the transform now, where the warehouse is held (after one already running).
        A failure is a failed result (logged), never an exception: ingest goes on."""
        result = self.transforms.run(request, on_progress, reason=reason)
        assert result is not None  # it waited its turn
        return result

    def _transform_for_socket(
        self, body: dict[str, object], emit: Callable[[dict[str, object]], None]
    ) -> dict[str, object]:
        """``shopstream transform`` asking over the query socket (plain dicts there)."""
        select = body.get("select") or []
        request = TransformRequest(
            full_refresh=bool(body.get("full_refresh")),
            select=tuple(str(s) for s in select) if isinstance(select, list) else (),
        )
        return self.transform(request, lambda p: emit(asdict(p)), reason="request").to_dict()

    async def run(
        self,
        *,
        duration: float | None = None,
        on_tick: Callable[[Platform], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> Summary:
        """Serve until ``duration`` passes, ``stop`` is set, SIGTERM/SIGINT, or the
        parts beside the collector are all done (when there are any and a duration was
        not given)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        self.sink.start()
        self._running = True
        failures: list[Exception] = []
        tasks = self.tasks
        schedule: asyncio.Task[None] | None = None
        quality_schedule: asyncio.Task[None] | None = None
        try:
            await self._start_serving()
            self.started_at = time.monotonic()
            for task in tasks:
                await task.start()
            if self.parts.schedule_transforms:
                schedule = asyncio.create_task(self.transforms.schedule(stop))
            if self.parts.schedule_quality:
                quality_schedule = asyncio.create_task(self.quality.schedule(stop))
            deadline = None if duration is None else self.started_at + duration
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if tasks and duration is None and all(t.done for t in tasks):
                    break
                if any(t.failed for t in tasks):
                    # A part failed for good (the reader retries what can be retried):
                    # stop rather than run on without it.
                    break
                if self.collector is not None and self.collector.done:
                    break
                if on_tick:
                    on_tick(self)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            stop.set()
            self._stopping = True
            if schedule is not None:
                # A scheduled transform in progress is not waited for: it ends with the
                # warehouse (its open work dropped, as after a crash; the next run completes).
                schedule.cancel()
            if quality_schedule is not None:
                quality_schedule.cancel()  # likewise: checks only read until they store
            for task in tasks:
                try:
                    await task.stop()
                except Exception as exc:
                    log.error("%s failed: %s", task.name, exc)
                    failures.append(exc)
            await self._stop_serving()
            await asyncio.to_thread(self.sink.close)
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
        counts: dict[str, int] = {}
        try:
            if self.warehouse is not None:
                counts = self.warehouse.table_counts()
        except WarehouseError as exc:  # the writer died for good: say so, without a traceback
            log.error("row counts unavailable: %s", exc)
            failures.append(exc)
        intake = self.collector.intake.stats if self.collector else None
        return Summary(
            seconds=time.monotonic() - self.started_at,
            table_counts=counts,
            accepted=intake.accepted if intake else 0,
            rejected=intake.rejected if intake else 0,
            generator=self.generator.result if self.generator else None,
            cdc=self.cdc.result if self.cdc else None,
            orders=self.orders.result if self.orders else None,
            loader=self.loader.result if self.loader else None,
            failures=tuple(failures),
        )

    async def _start_serving(self) -> None:
        """The collector, then the query socket, then runtime.json that names them. The
        file is the warehouse holder's (``shopstream sql`` finds its socket there): a
        collector that does not hold the warehouse writes it only while no live holder
        has."""
        if self.collector is None and self.queries is None:
            return
        if self.collector is not None:
            await self.collector.start()
        if self.queries is not None:
            await self.queries.start()  # on failure, run's cleanup stops the collector
        if self.queries is None and _held_elsewhere(self.settings.data_dir):
            return
        write_runtime(
            self.settings.data_dir,
            url=self.collector.url if self.collector else None,
            socket=self.queries.socket if self.queries else None,
            token=self.query_token,
        )

    async def _stop_serving(self) -> None:
        if self.collector is None and self.queries is None:
            return
        # Requests in flight finish (each waits for its commit) before the sink closes.
        if self.collector is not None:
            self.collector.begin_stop()
        if self.queries is not None:
            self.queries.begin_stop()
        if self.collector is not None:
            await self.collector.stop()
        if self.queries is not None:
            await self.queries.stop()
        remove_runtime(self.settings.data_dir)

    def close(self) -> None:
        try:
            server = getattr(self, "_metrics_server", None)
            if server is not None:
                self._metrics_server = None
                server.shutdown()
                server.server_close()
            loader = getattr(self, "loader", None)  # absent when __init__ failed before it
            if loader is not None:
                loader.close_source()
            elif self.source is not None:
                self.source.close()
            if self.warehouse is not None:
                self.warehouse.close()
        finally:
            self._stop_local_database()
