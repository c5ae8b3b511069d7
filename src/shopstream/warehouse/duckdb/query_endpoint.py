"""The local query endpoint: how ``shopstream sql`` asks a running platform to run a read.

DuckDB lets one process open the warehouse file, so the running platform answers queries for
others. It does so on a Unix socket in the data directory (``query.sock``, mode 0600: only the
user who runs the platform can connect), never on the collector's public port. Every request
also carries the per-run token from ``<data_dir>/runtime.json`` (0600), checked before the
body is read; the body is capped, so a caller who is not the owner costs nothing. Answers
are capped in rows (the answer says when rows were cut off) and encoded on a worker thread of
their own, off the event loop that serves intake.

    POST /v1/sql  {"sql": "SELECT ...", "limit": 100}
    200 {"columns": [...], "rows": [[...]], "row_count": 100, "truncated": true, "limit": 100}

The platform that owns the file also runs transforms (dbt) for others, on the same socket with
the same token (``shopstream transform``); the answer streams as lines of JSON while it runs,
the last one the result:

    POST /v1/transform  {"full_refresh": false, "select": ["stg_orders+"]}
    200 {"progress": {...}}\n ... {"result": {...}}\n   (or a last line {"error": "..."})

And the quality checks (``shopstream quality run``), the same way:

    POST /v1/quality  {"select": ["raw.events."], "now": "2026-12-01T10:00:00Z"}
    200 {"progress": {...}}\n ... {"result": {...}}\n   (or a last line {"error": "..."})

And the SQL cost optimizer (``shopstream optimize-sql``), which verifies its rewrites on the
warehouse it holds:

    POST /v1/optimize  {"sql": "SELECT ...", "dialect": "duckdb"}
    200 {...the OptimizationReport...}   400 {"error": "...", "invalid_sql": true}
    503 (Retry-After) while it optimizes another query: one at a time, none queued
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import pyarrow as pa
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect

from shopstream import __version__
from shopstream.config import QuerySettings
from shopstream.warehouse.base import QueryError, Warehouse, WarehouseError

log = logging.getLogger(__name__)

SOCKET_FILE = "query.sock"
ROUTE = "/v1/sql"
TRANSFORM_ROUTE = "/v1/transform"
QUALITY_ROUTE = "/v1/quality"
OPTIMIZE_ROUTE = "/v1/optimize"
#: The most rows one answer may carry, whatever ``limit`` asks for (memory of the platform).
MAX_LIMIT = 1_000_000
#: sun_path holds 108 bytes, the terminating NUL included.
_UNIX_PATH_MAX = 107


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(
        min_length=1,
        description="One read: SELECT, WITH, EXPLAIN, DESCRIBE, SHOW or SUMMARIZE.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LIMIT,
        description="Rows to answer with at most (default: the query.max_rows setting).",
    )


class TransformBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full_refresh: bool = Field(default=False, description="Rebuild incremental models whole.")
    select: list[str] = Field(
        default_factory=list, max_length=200, description="dbt --select; empty: everything."
    )


class QualityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    select: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="Run only the checks whose names start with one of these; empty: all.",
    )
    now: datetime | None = Field(
        default=None,
        description="The run's now (ISO 8601 with a time zone): windows end at it. "
        "Default: the clock.",
    )

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (2026-12-01T10:00:00Z)")
        return value


class OptimizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, description="One query (SELECT, WITH ... SELECT, UNION).")
    dialect: Literal["duckdb", "bigquery"] | None = Field(
        default=None, description="The query's SQL dialect; default: the warehouse's."
    )


#: Optimizes a query for a request (its body as a dict: OptimizeBody); returns the report as
#: JSON-ready data. Blocks: called on a thread of its own. The route answers SqlSyntaxError
#: (shopstream.genai.optimizer.query: SQL that does not parse, a column its tables lack) and
#: QueryError with 400, WarehouseError with 503 + Retry-After, anything else with 500; a
#: second request while one runs gets 503.
OptimizeCall = Callable[[dict[str, Any]], dict[str, Any]]

#: Runs a job for a request (its body as a dict: TransformBody, QualityBody), calling ``emit``
#: with progress (dicts); returns the result (a dict). Blocks: called on a thread of its own.
JobCall = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], dict[str, Any]]
TransformCall = JobCall


class SqlAnswer(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="True when the result had more rows than `limit`.")
    limit: int


class SqlError(BaseModel):
    error: str = Field(description="What is wrong (for bad SQL: DuckDB's own message).")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": SqlAnswer, "description": "The rows, at most `limit` of them."},
    400: {"model": SqlError, "description": "Bad request, bad SQL, or not a read."},
    401: {"model": SqlError, "description": "Missing or wrong token."},
    413: {"model": SqlError, "description": "Request body over query.max_body_bytes."},
    415: {"model": SqlError, "description": "Content-Type is not application/json."},
    503: {"model": SqlError, "description": "The warehouse cannot answer now; retry."},
}

M = TypeVar("M", bound=BaseModel)

_BODY_DOC = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SqlRequest"}}},
}


#: On a refusal before the body is read: the server hangs up rather than take in (and throw
#: away) the rest of an upload.
_HANG_UP = {"Connection": "close"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def create_query_app(
    warehouse: Warehouse,
    token: str,
    settings: QuerySettings,
    transform: JobCall | None = None,
    quality: JobCall | None = None,
    optimize: OptimizeCall | None = None,
) -> FastAPI:
    """The query endpoint's app: ``POST /v1/sql`` (and its OpenAPI document), and
    ``POST /v1/transform`` / ``POST /v1/quality`` / ``POST /v1/optimize`` when ``transform`` /
    ``quality`` / ``optimize`` is given."""
    app = FastAPI(
        title="shopstream query endpoint",
        version=__version__,
        description="Read-only SQL against the running platform's warehouse (local socket).",
        docs_url=None,
        redoc_url=None,
    )
    expected = token.encode()
    # Queries wait on the warehouse one at a time anyway; two threads keep an encode and a
    # query overlapping without letting a burst of callers pile up threads.
    workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shopstream-query")
    app.state.workers = workers

    def run(sql: str, limit: int) -> bytes:
        return encode_answer(warehouse.query(sql, max_rows=limit), limit)

    async def read_body(request: Request) -> bytes | Response:
        cap = settings.max_body_bytes
        too_large = _error(
            413,
            f"request body is over the limit of {cap} bytes (query.max_body_bytes); "
            "send shorter SQL",
            _HANG_UP,
        )
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, "Content-Length is not a number")
            if int(length) > cap:
                return too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                return too_large
        return bytes(body)

    async def admitted(request: Request, model: type[M]) -> M | Response:
        """The request's body as ``model``, or the refusal: the token first (nothing of a
        stranger's request is read, let alone kept), then the content type and the size."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), expected
        ):
            return _error(
                401,
                "missing or wrong token: send Authorization: Bearer <token> "
                "(the token is in <data_dir>/runtime.json)",
                {"WWW-Authenticate": "Bearer", **_HANG_UP},
            )
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(415, f"Content-Type {media or '(none)'!r}: send application/json")
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return _error(400, f"invalid request: {reasons}")

    async def answer(request: Request) -> Response:
        asked = await admitted(request, SqlRequest)
        if isinstance(asked, Response):
            return asked
        limit = asked.limit or settings.max_rows
        try:
            payload = await asyncio.get_running_loop().run_in_executor(
                workers, run, asked.sql, limit
            )
        except QueryError as exc:
            return _error(400, str(exc))
        except WarehouseError as exc:
            return _error(503, f"the warehouse cannot answer now: {exc}", {"Retry-After": "5"})
        return Response(payload, media_type="application/json")

    @app.post(
        ROUTE,
        summary="Run one read-only query",
        responses=_RESPONSES,
        openapi_extra={"requestBody": _BODY_DOC},
    )
    async def sql(request: Request) -> Response:
        try:
            return await answer(request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except Exception as exc:  # the last resort: a clear answer, never a dropped connection
            log.exception("query endpoint failed")
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    if transform is not None:
        run_transform = transform

        @app.post(
            TRANSFORM_ROUTE,
            summary="Run the transform (dbt build) in the platform that owns the warehouse",
            responses={k: v for k, v in _RESPONSES.items() if k != 200},
        )
        async def transform_route(request: Request) -> Response:
            try:
                asked = await admitted(request, TransformBody)
            except ClientDisconnect:
                return Response(status_code=400)
            if isinstance(asked, Response):
                return asked
            return StreamingResponse(
                _job_lines(run_transform, asked.model_dump(), "transform"),
                media_type="application/x-ndjson",
            )

    if quality is not None:
        run_quality = quality

        @app.post(
            QUALITY_ROUTE,
            summary="Run the quality checks in the platform that owns the warehouse",
            responses={k: v for k, v in _RESPONSES.items() if k != 200},
        )
        async def quality_route(request: Request) -> Response:
            try:
                asked = await admitted(request, QualityBody)
            except ClientDisconnect:
                return Response(status_code=400)
            if isinstance(asked, Response):
                return asked
            return StreamingResponse(
                _job_lines(run_quality, asked.model_dump(mode="json"), "quality run"),
                media_type="application/x-ndjson",
            )

    if optimize is not None:
        run_optimize = optimize
        # A thread of its own: an optimization may wait on an LLM for a while, and must not
        # hold up the `shopstream sql` queries of the two workers meanwhile. One at a time, and
        # none waiting: a caller who finds it busy is told to come back (503), rather than
        # queueing without bound behind a slow one.
        optimizing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopstream-optimize")
        app.state.optimizing = optimizing
        busy = asyncio.Lock()

        @app.post(
            OPTIMIZE_ROUTE,
            summary="Optimize one query: findings, cost, verified rewrites",
            responses={k: v for k, v in _RESPONSES.items() if k != 200},
        )
        async def optimize_route(request: Request) -> Response:
            from shopstream.genai.optimizer.query import SqlSyntaxError

            try:
                asked = await admitted(request, OptimizeBody)
            except ClientDisconnect:
                return Response(status_code=400)
            if isinstance(asked, Response):
                return asked
            if busy.locked():
                return _error(
                    503,
                    "the optimizer is busy with another query: retry in a few seconds",
                    {"Retry-After": "5"},
                )
            try:
                async with busy:
                    report = await asyncio.get_running_loop().run_in_executor(
                        optimizing, run_optimize, asked.model_dump()
                    )
            except SqlSyntaxError as exc:  # the caller's SQL: theirs to fix
                return Response(
                    orjson.dumps({"error": str(exc), "invalid_sql": True}),
                    status_code=400,
                    media_type="application/json",
                )
            except QueryError as exc:
                return _error(400, str(exc))
            except WarehouseError as exc:
                return _error(503, f"the warehouse cannot answer now: {exc}", {"Retry-After": "5"})
            except Exception as exc:  # ours: a clear answer, never a dropped connection
                log.exception("optimize failed")
                return _error(500, f"internal error: {type(exc).__name__}: {exc}")
            return Response(orjson.dumps(report, default=str), media_type="application/json")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["SqlRequest"] = SqlRequest.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _job_lines(run: JobCall, body: dict[str, Any], what: str) -> Any:
    """A job's progress and result as lines of JSON, while it runs on a thread of its own (it
    goes on if the caller hangs up: a build is not left half-way by a closed socket)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the platform stopped
            loop.call_soon_threadsafe(lines.put_nowait, item)

    def work() -> None:
        try:
            result = run(body, lambda progress: put(orjson.dumps({"progress": progress}) + b"\n"))
            put(orjson.dumps({"result": result}, default=str) + b"\n")
        except Exception as exc:
            log.exception("%s failed", what)
            put(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}) + b"\n")
        finally:
            put(None)

    name = "shopstream-" + what.replace(" ", "-")
    threading.Thread(target=work, name=name, daemon=True).start()

    async def stream() -> Any:
        while (line := await lines.get()) is not None:
            yield line

    return stream()


def answer_of(table: pa.Table, limit: int) -> dict[str, Any]:
    """The answer for a result of up to ``limit + 1`` rows (the extra one means: cut off)."""
    truncated = table.num_rows > limit
    table = table.slice(0, limit)
    columns = [_values(column) for column in table.columns]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return {
        "columns": table.column_names,
        "rows": rows,
        "row_count": len(rows),
        "truncated": truncated,
        "limit": limit,
    }


def encode_answer(table: pa.Table, limit: int) -> bytes:
    answer = answer_of(table, limit)
    try:
        return orjson.dumps(answer, default=str)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits (HUGEINT, UHUGEINT): orjson refuses them; as text they stay
        # exact, where a float would not.
        answer["rows"] = _exact(answer["rows"])
        return orjson.dumps(answer, default=str)


def _values(column: pa.ChunkedArray) -> list[Any]:
    try:
        return column.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        # Values Python has no type for (a timestamp in year 294247): DuckDB's text for them.
        return column.cast(pa.string()).to_pylist()


def _exact(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def bind_socket(data_dir: Path) -> tuple[socket.socket, Path]:
    """A listening Unix socket at ``<data_dir>/query.sock`` that only its owner can use.

    It is bound under a temporary name, made 0600 and only then listens and takes its name, so
    there is no moment when anyone else could connect. Where the data directory's path is too
    long for a socket address, it lives in a private temporary directory instead (0700); the
    path is in runtime.json either way.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    directory = data_dir.resolve()
    if len(str(directory / f".{SOCKET_FILE}.12345678")) > _UNIX_PATH_MAX:
        directory = Path(tempfile.mkdtemp(prefix="shopstream-"))
    path = directory / SOCKET_FILE
    temporary = directory / f".{SOCKET_FILE}.{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, 0o600)
        sock.listen(128)
        os.replace(temporary, path)  # also replaces a socket a killed run left behind
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    sock.setblocking(False)
    return sock, path


def remove_socket(path: Path, data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
    if path.parent != data_dir.resolve():  # the private directory of a long data dir path
        with contextlib.suppress(OSError):
            path.parent.rmdir()


__all__ = [
    "MAX_LIMIT",
    "OPTIMIZE_ROUTE",
    "QUALITY_ROUTE",
    "ROUTE",
    "SOCKET_FILE",
    "TRANSFORM_ROUTE",
    "JobCall",
    "OptimizeBody",
    "OptimizeCall",
    "QualityBody",
    "SqlRequest",
    "TransformBody",
    "TransformCall",
    "answer_of",
    "bind_socket",
    "create_query_app",
    "encode_answer",
    "remove_socket",
]
