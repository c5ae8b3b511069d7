"""The embedded shape: collector, sink and (optionally) generated traffic in one process.

``shopstream run`` and ``shopstream collector`` both come here. The process owns the DuckDB
file (DuckDB allows one writer process), so it also answers ``shopstream sql`` for other
processes, on a Unix socket of its own (:mod:`shopstream.warehouse.duckdb.query_endpoint`), never on
the collector's port. The collector's URL, the socket's path and a per-run token are written
to ``<data_dir>/runtime.json`` (mode 0600) while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from shopstream.collector.app import IntakeFastPath, create_app
from shopstream.collector.connection import bounded_http
from shopstream.collector.handlers import IntakeHandlers
from shopstream.config import Settings
from shopstream.sinks import open_sink
from shopstream.warehouse import WarehouseError, open_warehouse

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: the platform decides how to shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Summary:
    seconds: float
    table_counts: dict[str, int]
    accepted: int
    rejected: int
    extra: dict[str, Any] = field(default_factory=dict)


#: A companion task run beside the collector (generator, CDC reader): gets the collector's
#: URL and a stop event; returns facts for the summary.
Companion = Callable[[str, asyncio.Event], Coroutine[Any, Any, dict[str, Any]]]


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    """The running platform's address, token and pid, if one left them in ``data_dir``."""
    try:
        data: dict[str, Any] = json.loads((data_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def http_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 literal in brackets (``http://[::1]:8080``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass
class QueryAnswer:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    limit: int


def query_running(
    data_dir: Path, sql: str, *, limit: int | None = None, timeout: float = 120
) -> QueryAnswer:
    """Ask the platform running on ``data_dir`` (it owns a single-writer warehouse, such as
    DuckDB's file) to run a read query,
    over its local socket. ``limit``: rows at most (default: the platform's query.max_rows).

    Raises LookupError when none left its address, RuntimeError with the platform's answer
    when the query fails, and httpx's errors when it does not answer.
    """
    import httpx

    from shopstream.warehouse.duckdb.query_endpoint import ROUTE

    runtime = read_runtime(data_dir)
    if runtime is None or "socket" not in runtime:
        raise LookupError(f"no running shopstream left its address in {data_dir}")
    request: dict[str, Any] = {"sql": sql}
    if limit is not None:
        request["limit"] = limit
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    with httpx.Client(transport=transport, timeout=timeout) as client:
        response = client.post(
            f"http://shopstream{ROUTE}",
            json=request,
            headers={"Authorization": f"Bearer {runtime['token']}"},
        )
    try:
        data = response.json()
    except ValueError:
        data = {"error": f"HTTP {response.status_code}: {response.text[:500]}"}
    if response.status_code != 200:
        raise RuntimeError(data.get("error", response.text))
    return QueryAnswer(data["columns"], data["rows"], data["truncated"], data["limit"])


class Platform:
    def __init__(self, settings: Settings, *, host: str | None = None, port: int | None = None):
        self.settings = settings
        self.host = host or settings.collector.host
        self.port = settings.collector.port if port is None else port
        self.warehouse = open_warehouse(settings)
        self.warehouse.ensure_layers()
        self.sink = open_sink(settings, self.warehouse)
        self.query_token = secrets.token_urlsafe(32)
        self.intake = IntakeHandlers(settings, self.sink)
        self.app = create_app(self.intake)
        self.query_app: FastAPI | None = None
        if self.warehouse.capabilities.single_writer_process:
            # No other process can open the warehouse while this one runs: answer their
            # queries (`shopstream sql`) here.
            from shopstream.warehouse.duckdb.query_endpoint import create_query_app

            self.query_app = create_query_app(self.warehouse, self.query_token, settings.query)
        self.url = ""
        self.query_socket: Path | None = None
        self.started_at = time.monotonic()

    @property
    def stats(self) -> Any:
        return self.intake.stats

    def _write_runtime(self) -> None:
        path = self.settings.data_dir / RUNTIME_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        runtime: dict[str, Any] = {"url": self.url, "pid": os.getpid()}
        if self.query_socket is not None:
            runtime.update(socket=str(self.query_socket), token=self.query_token)
        with os.fdopen(fd, "w") as handle:
            json.dump(runtime, handle)

    def _remove_runtime(self) -> None:
        data = read_runtime(self.settings.data_dir)
        if data and data.get("pid") == os.getpid():
            (self.settings.data_dir / RUNTIME_FILE).unlink(missing_ok=True)

    async def run(
        self,
        *,
        duration: float | None = None,
        companions: list[Companion] | None = None,
        on_tick: Callable[[Platform], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> Summary:
        """Serve until ``duration`` passes, ``stop`` is set, SIGTERM/SIGINT, or the
        companions are all done (when there are any and a duration was not given)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        self.sink.start()
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
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # raises the bind error, say
                raise RuntimeError("the collector stopped while starting")
            await asyncio.sleep(0.01)
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
        sockname = server.servers[0].sockets[0].getsockname()
        self.url = http_url(sockname[0], sockname[1])
        queries: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        if self.query_app is not None:
            try:
                queries = await self._serve_queries(self.query_app)
            except BaseException:
                server.should_exit = True
                await serving
                raise
        self._write_runtime()
        self.started_at = time.monotonic()
        log.info("collector listening on %s", self.url)

        tasks = [asyncio.create_task(c(self.url, stop)) for c in (companions or [])]
        extra: dict[str, Any] = {}
        try:
            deadline = None if duration is None else self.started_at + duration
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if tasks and duration is None and all(t.done() for t in tasks):
                    break
                if any(t.done() and not t.cancelled() and t.exception() for t in tasks):
                    # A companion failed for good (the reader retries what can be retried):
                    # stop rather than run on without it.
                    break
                if serving.done():
                    break
                if on_tick:
                    on_tick(self)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            stop.set()
            for task in tasks:
                try:
                    extra.update(await asyncio.wait_for(task, timeout=60))
                except Exception as exc:
                    log.error("companion task failed: %s", exc)
                    extra.setdefault("errors", []).append(str(exc))
            # Requests in flight finish (each waits for its commit) before the sink closes.
            server.should_exit = True
            if queries is not None:
                queries[0].should_exit = True
            await serving
            if queries is not None:
                await self._stop_queries(*queries)
            await asyncio.to_thread(self.sink.close)
            self._remove_runtime()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
        try:
            counts = self.warehouse.table_counts()
        except WarehouseError as exc:  # the writer died for good: say so, without a traceback
            log.error("row counts unavailable: %s", exc)
            extra.setdefault("errors", []).append(str(exc))
            counts = {}
        seconds = time.monotonic() - self.started_at
        return Summary(seconds, counts, self.stats.accepted, self.stats.rejected, extra)

    async def _serve_queries(self, app: FastAPI) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        """The local query endpoint, on a 0600 Unix socket in the data directory."""
        from shopstream.warehouse.duckdb.query_endpoint import bind_socket

        sock, self.query_socket = bind_socket(self.settings.data_dir)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the query endpoint stopped while starting")
            await asyncio.sleep(0.01)
        return server, serving

    async def _stop_queries(self, server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
        from shopstream.warehouse.duckdb.query_endpoint import remove_socket

        server.should_exit = True
        await serving
        if self.query_app is not None:
            self.query_app.state.workers.shutdown(wait=False, cancel_futures=True)
        if self.query_socket is not None:
            remove_socket(self.query_socket, self.settings.data_dir)

    def close(self) -> None:
        self.warehouse.close()


# -- companions: CDC reader, order workload, a local shop database ---------------------------


def cdc_companion(platform: Platform, dsn: str, holder: dict[str, Any]) -> Companion:
    """Run the CDC reader in a thread, writing through the platform's sink."""
    from shopstream.cdc.reader import ChangeReader

    async def cdc(_url: str, stop: asyncio.Event) -> dict[str, Any]:
        halt = threading.Event()
        reader = ChangeReader(
            dsn, platform.settings.cdc, platform.sink, state_dir=platform.settings.data_dir
        )
        holder["reader"] = reader
        worker = asyncio.create_task(asyncio.to_thread(reader.run, halt))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        halt.set()
        stopper.cancel()
        await worker  # re-raises a reader failure
        return {"cdc": reader.stats}

    return cdc


def order_workload_companion(
    dsn: str, *, tps: float, duration: float | None, holder: dict[str, Any], seed: int = 1
) -> Companion:
    from shopstream.generators.shop import run_order_workload

    async def orders(_url: str, stop: asyncio.Event) -> dict[str, Any]:
        def progress(stats: Any) -> None:
            holder["orders"] = stats

        truth = await run_order_workload(
            dsn,
            tps=tps,
            duration=duration if duration is not None else float("inf"),
            seed=seed,
            on_progress=progress,
            stop=stop,
        )
        return {"orders": truth}

    return orders
