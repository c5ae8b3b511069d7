"""How other processes find and talk to a running platform.

The platform owns the warehouse; when the backend allows one writer process only (DuckDB's
file), it answers ``shopstream sql`` for other processes on a Unix socket of its own
(:mod:`shopstream.warehouse.duckdb.query_endpoint`), never on the collector's port. The
collector's URL, the socket's path and a per-run token are written to
``<data_dir>/runtime.json`` (mode 0600) while it runs. The platform itself is built in
:mod:`shopstream.platform`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from fastapi import FastAPI

if TYPE_CHECKING:
    from collections.abc import Callable

    from shopstream.config import Settings
    from shopstream.quality.runner import QualityProgress
    from shopstream.quality.runs import QualityRequest, QualityRun
    from shopstream.transform.runner import Progress, TransformRequest, TransformResult
    from shopstream.warehouse.base import Warehouse

RUNTIME_FILE = "runtime.json"

T = TypeVar("T")


class QuietServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the platform decides how to shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Served:
    """One uvicorn server, run as a task: started, told to stop, awaited."""

    def __init__(self, config: uvicorn.Config, what: str) -> None:
        self.server = QuietServer(config)
        self.what = what
        self._serving: asyncio.Task[None] | None = None

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Wait until it listens; raise its start-up error (a bind error, say)."""
        self._serving = asyncio.create_task(self._serve(sockets))
        while not self.server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError(f"the {self.what} stopped while starting")
            await asyncio.sleep(0.01)

    async def _serve(self, sockets: list[socket.socket] | None) -> None:
        try:
            await self.server.serve(sockets=sockets)
        except SystemExit as exc:
            # uvicorn logs why it could not start (address in use, say), then exits the
            # process from inside the task: make that an error the caller can name.
            raise OSError(f"the {self.what} could not start (see above)") from exc

    @property
    def done(self) -> bool:
        return self._serving is not None and self._serving.done()

    def begin_stop(self) -> None:
        self.server.should_exit = True

    async def stop(self) -> None:
        """Stop it and wait for requests in flight; nothing to do if it never listened."""
        if self._serving is None or (self._serving.done() and not self.server.started):
            return  # start() raised why
        self.server.should_exit = True
        await self._serving


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    """The running platform's address, token and pid, if one left them in ``data_dir``."""
    try:
        data: dict[str, Any] = json.loads((data_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def write_runtime(
    data_dir: Path, *, url: str | None, socket: Path | None = None, token: str | None = None
) -> None:
    """Leave this process's address (its collector's URL, None for a loader; its query
    socket and token) for others, mode 0600."""
    path = data_dir / RUNTIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    runtime: dict[str, Any] = {"url": url, "pid": os.getpid()}
    if socket is not None:
        runtime.update(socket=str(socket), token=token)
    with os.fdopen(fd, "w") as handle:
        json.dump(runtime, handle)


def remove_runtime(data_dir: Path) -> None:
    """Remove ``runtime.json`` if this process wrote it (not a later platform's)."""
    data = read_runtime(data_dir)
    if data and data.get("pid") == os.getpid():
        (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


def http_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 literal in brackets (``http://[::1]:8080``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class QueryService:
    """The local query endpoint, on a 0600 Unix socket in the data directory."""

    def __init__(self, app: FastAPI, data_dir: Path) -> None:
        self.app = app
        self.data_dir = data_dir
        self.socket: Path | None = None
        self._served: Served | None = None

    async def start(self) -> None:
        from shopstream.warehouse.duckdb.query_endpoint import bind_socket

        sock, self.socket = bind_socket(self.data_dir)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._served = Served(config, "query endpoint")
        await self._served.start(sockets=[sock])

    def begin_stop(self) -> None:
        if self._served is not None:
            self._served.begin_stop()

    async def stop(self) -> None:
        from shopstream.warehouse.duckdb.query_endpoint import remove_socket

        if self._served is None:
            return
        await self._served.stop()
        self.app.state.workers.shutdown(wait=False, cancel_futures=True)
        optimizing = getattr(self.app.state, "optimizing", None)
        if optimizing is not None:
            optimizing.shutdown(wait=False, cancel_futures=True)
        if self.socket is not None:
            remove_socket(self.socket, self.data_dir)


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
    from shopstream.warehouse.duckdb.query_endpoint import ROUTE

    request: dict[str, Any] = {"sql": sql}
    if limit is not None:
        request["limit"] = limit
    status, data = _post_running(data_dir, ROUTE, request, timeout)
    if status != 200:
        raise RuntimeError(data["error"])
    return QueryAnswer(data["columns"], data["rows"], data["truncated"], data["limit"])


def optimize_running(
    data_dir: Path, sql: str, dialect: str, *, timeout: float = 600
) -> dict[str, Any]:
    """Ask the platform running on ``data_dir`` to optimize a query where it holds the
    warehouse (``shopstream optimize-sql``), over its local socket; the report as JSON.

    Raises LookupError when none left its address, SqlSyntaxError when the platform found the
    query invalid, RuntimeError with the platform's answer when it failed otherwise, and
    httpx's errors when it does not answer. ``timeout``: rewrites are verified on the
    warehouse and may be asked of an LLM first.
    """
    from shopstream.genai.optimizer.query import SqlSyntaxError
    from shopstream.warehouse.duckdb.query_endpoint import OPTIMIZE_ROUTE

    body = {"sql": sql, "dialect": dialect}
    status, data = _post_running(data_dir, OPTIMIZE_ROUTE, body, timeout)
    if status == 404:
        raise RuntimeError(
            "the running platform has no optimizer route (an older shopstream): restart it"
        )
    if status != 200:
        if data.get("invalid_sql"):
            raise SqlSyntaxError(data["error"])
        raise RuntimeError(data["error"])
    return data


def _post_running(
    data_dir: Path, route: str, body: dict[str, Any], timeout: float
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``route`` of the platform running on ``data_dir`` (its local socket,
    its token): the status and the JSON answer (one with an ``error`` when it was not JSON).

    Raises LookupError when no platform left its address, httpx's errors when it does not
    answer.
    """
    import httpx

    runtime = read_runtime(data_dir)
    if runtime is None or "socket" not in runtime:
        raise LookupError(f"no running shopstream left its address in {data_dir}")
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    with httpx.Client(transport=transport, timeout=timeout) as client:
        response = client.post(
            f"http://shopstream{route}",
            json=body,
            headers={"Authorization": f"Bearer {runtime['token']}"},
        )
    try:
        data: dict[str, Any] = response.json()
    except ValueError:
        data = {"error": f"HTTP {response.status_code}: {response.text[:500]}"}
    if response.status_code != 200 and not isinstance(data.get("error"), str):
        data = {**data, "error": f"HTTP {response.status_code}: {response.text[:500]}"}
    return response.status_code, data


def read_here_or_running(
    settings: Settings, here: Callable[[Warehouse], T], running: Callable[[], T]
) -> T:
    """A read of the warehouse ``settings`` name: ``here`` on it opened read-only in this
    process; when a running platform holds it and the backend allows one writer process only
    (DuckDB's file), ``running`` asks that platform over its socket instead.

    Raises WarehouseError naming what went wrong (``running``'s LookupError, RuntimeError and
    httpx errors become one); other errors of ``here`` and ``running`` pass through.
    """
    import httpx

    from shopstream.warehouse import (
        WarehouseError,
        WarehouseInUse,
        open_warehouse,
        warehouse_backend,
    )

    single_writer = warehouse_backend(settings.warehouse).capabilities.single_writer_process
    try:
        warehouse = open_warehouse(settings, read_only=True)
    except WarehouseInUse:
        if not single_writer:
            raise
        # Only one process may open it, and one has: the running platform answers for us.
        try:
            return running()
        except LookupError as exc:
            raise WarehouseError(
                f"{settings.warehouse} is held by another process, but no running shopstream "
                f"left its address in {settings.data_dir}/{RUNTIME_FILE}. "
                "Stop that process and retry."
            ) from exc
        except httpx.HTTPError as exc:
            raise WarehouseError(f"the running platform did not answer: {exc}") from exc
        except RuntimeError as exc:
            raise WarehouseError(str(exc)) from exc
    try:
        return here(warehouse)
    finally:
        warehouse.close()


def query_warehouse(settings: Settings, sql: str, *, limit: int) -> QueryAnswer:
    """Run a read query (``shopstream sql``) on the warehouse ``settings`` name.

    The warehouse is opened read-only; when a running platform holds it and the backend allows
    one writer process only (DuckDB's file), that platform answers over its socket instead.
    Raises WarehouseError naming what went wrong.
    """
    from shopstream.warehouse.duckdb.query_endpoint import answer_of

    def here(warehouse: Warehouse) -> QueryAnswer:
        # The same allow-list and locks as the running platform's endpoint.
        answer = answer_of(warehouse.query(sql, max_rows=limit), limit)
        return QueryAnswer(answer["columns"], answer["rows"], answer["truncated"], answer["limit"])

    return read_here_or_running(
        settings, here, lambda: query_running(settings.data_dir, sql, limit=limit)
    )


def _stream_job(
    data_dir: Path, route: str, body: dict[str, Any], what: str
) -> Iterator[dict[str, Any]]:
    """Ask the platform running on ``data_dir`` to run a job (``route``) where it holds the
    warehouse; yields its lines (``{"progress": ...}``, then ``{"result": ...}``) as they come.

    Raises LookupError when none left its address, WarehouseError with the platform's answer
    when it refuses or stops without a result, and httpx's errors when it does not answer.
    """
    import httpx
    import orjson

    from shopstream.warehouse import WarehouseError

    runtime = read_runtime(data_dir)
    if runtime is None or "socket" not in runtime:
        raise LookupError(f"no running shopstream left its address in {data_dir}")
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    answered = False
    # No read timeout: a job takes as long as it takes, and progress lines keep coming.
    with (
        httpx.Client(transport=transport, timeout=httpx.Timeout(30.0, read=None)) as client,
        client.stream(
            "POST",
            f"http://shopstream{route}",
            json=body,
            headers={"Authorization": f"Bearer {runtime['token']}"},
        ) as response,
    ):
        if response.status_code != 200:
            response.read()
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = f"HTTP {response.status_code}: {response.text[:500]}"
            raise WarehouseError(f"the running platform refused the {what}: {reason}")
        for line in response.iter_lines():
            if not line.strip():
                continue
            data = orjson.loads(line)
            if "error" in data:
                raise WarehouseError(f"the running platform's {what} failed: {data['error']}")
            answered = answered or "result" in data
            yield data
    if not answered:
        raise WarehouseError(
            f"the running platform ended the {what} without a result (did it stop?)"
        )


def transform_running(
    data_dir: Path,
    request: TransformRequest,
    on_progress: Callable[[Progress], None] | None = None,
) -> TransformResult:
    """Ask the platform running on ``data_dir`` to run a transform where it holds the
    warehouse, over its local socket; its progress arrives as it happens.

    Raises LookupError when none left its address, WarehouseError with the platform's answer
    when it refuses or stops without a result, and httpx's errors when it does not answer.
    """
    from shopstream.transform.runner import Progress, TransformResult
    from shopstream.warehouse.duckdb.query_endpoint import TRANSFORM_ROUTE

    body = {"full_refresh": request.full_refresh, "select": list(request.select)}
    result: TransformResult | None = None
    for data in _stream_job(data_dir, TRANSFORM_ROUTE, body, "transform"):
        if "progress" in data:
            if on_progress is not None:
                on_progress(Progress(**data["progress"]))
        elif "result" in data:
            result = TransformResult.from_dict(data["result"])
    assert result is not None  # _stream_job raised otherwise
    return result


def quality_running(
    data_dir: Path,
    request: QualityRequest,
    on_progress: Callable[[QualityProgress], None] | None = None,
) -> QualityRun:
    """Ask the platform running on ``data_dir`` to run the quality checks where it holds the
    warehouse (it stores the results and writes the report), over its local socket.

    Raises as :func:`transform_running` does.
    """
    from shopstream.quality.runner import QualityProgress
    from shopstream.quality.runs import QualityRun
    from shopstream.warehouse.duckdb.query_endpoint import QUALITY_ROUTE

    body: dict[str, Any] = {"select": list(request.select)}
    if request.now is not None:
        body["now"] = request.now.isoformat()
    run: QualityRun | None = None
    for data in _stream_job(data_dir, QUALITY_ROUTE, body, "quality run"):
        if "progress" in data:
            if on_progress is not None:
                on_progress(QualityProgress(**data["progress"]))
        elif "result" in data:
            run = QualityRun.from_dict(data["result"])
    assert run is not None  # _stream_job raised otherwise
    return run
