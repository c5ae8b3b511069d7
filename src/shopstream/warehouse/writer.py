"""The DuckDB warehouse in a process of its own, behind the same Warehouse protocol.

Why: in one process, the group-commit writer and the HTTP event loop share one GIL. Every
call into DuckDB and every Arrow conversion had to win the GIL back from the loop, so
commits that take ~5 ms alone took 20-90 ms under load and the collector topped out near
19k events/s. Here the writer process owns the DuckDB file (DuckDB allows one writer
process anyway) and runs on the other core; the platform's process sends it Arrow batches
as IPC streams over a socket pair (the send and the wait for the reply release the GIL) and
gets an answer only after the commit.

If the platform process dies, the writer sees the socket close and exits; a commit it had
made stays made, and nothing was acknowledged that was not committed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from shopstream.warehouse.base import QueryError, WarehouseError

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _serve(
    conn: multiprocessing.connection.Connection,
    queries: multiprocessing.connection.Connection,
    path: str,
    read_only: bool,
    checkpoint_wal_mb: int,
) -> None:
    """The writer process: appends on one connection, queries on another (a thread of their
    own with their own DuckDB cursor, so a long query never holds back a commit)."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the platform
    # decides when the writer stops (it drains first); the writer also stops when the
    # platform's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from shopstream.warehouse.duckdb import DuckDBWarehouse

    try:
        warehouse = DuckDBWarehouse(
            Path(path), read_only=read_only, checkpoint_wal_mb=checkpoint_wal_mb
        )
    except WarehouseError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    threading.Thread(target=_answer, args=(queries, warehouse), daemon=True).start()
    conn.send(("ready", None, None))
    try:
        _answer(conn, warehouse)
    finally:
        warehouse.close()


def _answer(conn: multiprocessing.connection.Connection, warehouse: Any) -> None:
    """One request at a time, each answered after it is done."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the platform is gone
        op = request[0]
        try:
            if op == "append":
                tables = {name: _from_ipc(conn.recv_bytes()) for name in request[1]}
                warehouse.append(tables)
                conn.send(("ok", None, None))
            elif op == "query":
                result = warehouse.query(request[1], request[2], max_rows=request[3])
                conn.send(("ok", _to_ipc(result), None))
            elif op == "close":
                conn.send(("ok", None, None))
                return
            else:
                conn.send(("ok", getattr(warehouse, op)(*request[1:]), None))
        except Exception as exc:
            conn.send(("error", type(exc).__name__, str(exc)))


class WarehouseProcess:
    """A Warehouse whose DuckDB lives in a child process (see the module docstring)."""

    def __init__(self, path: Path, *, read_only: bool = False, checkpoint_wal_mb: int = 128):
        self.path = path
        self.read_only = read_only
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe(duplex=True)
        self._queries, child_queries = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_serve,
            args=(child, child_queries, str(path), read_only, checkpoint_wal_mb),
            name="shopstream-warehouse",
            daemon=True,
        )
        self._process.start()
        child.close()
        child_queries.close()
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        if not self._conn.poll(_START_TIMEOUT):
            self._process.kill()
            raise WarehouseError(f"the warehouse process did not start within {_START_TIMEOUT} s")
        status, kind, message = self._conn.recv()
        if status != "ready":
            self._process.join(5)
            _raise(kind, message, path)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _call(self, *request: Any, payload: list[bytes] | None = None, query: bool = False) -> Any:
        conn, lock = (self._queries, self._query_lock) if query else (self._conn, self._lock)
        with lock:
            try:
                conn.send(request)
                for data in payload or ():
                    conn.send_bytes(data)
                status, value, message = conn.recv()
            except (EOFError, OSError) as exc:
                raise WarehouseError(
                    f"the warehouse process (pid {self._process.pid}) is gone: {exc}. "
                    "Restart shopstream; committed data is safe in the DuckDB file."
                ) from exc
        if status == "error":
            _raise(value, message, self.path)
        return value

    def ensure_layers(self) -> None:
        self._call("ensure_layers")

    def ensure_raw_table(self, table: str) -> None:
        self._call("ensure_raw_table", table)

    def append(self, batches: Mapping[str, pa.Table]) -> None:
        parts = [(table, batch) for table, batch in batches.items() if batch.num_rows]
        if parts:
            self._call(
                "append", [table for table, _ in parts], payload=[_to_ipc(b) for _, b in parts]
            )

    def query(
        self, sql: str, parameters: list[Any] | None = None, *, max_rows: int | None = None
    ) -> pa.Table:
        return _from_ipc(self._call("query", sql, parameters, max_rows, query=True))

    def table_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._call("table_counts", query=True)
        return counts

    def checkpoint(self) -> None:
        self._call("checkpoint")

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(WarehouseError):  # already gone
                self._call("close")
            self._process.join(30)
        if self._process.is_alive():  # pragma: no cover - a stuck child
            log.warning("warehouse process %s did not stop; terminating it", self._process.pid)
            self._process.terminate()
            self._process.join(10)
        self._conn.close()
        self._queries.close()


def _raise(kind: str | None, message: str | None, path: Path) -> None:
    from shopstream.warehouse.duckdb import WarehouseLocked

    if kind == "WarehouseLocked":
        raise WarehouseLocked(path, message=message)
    if kind == "QueryError":
        raise QueryError(message or "the query failed")
    raise WarehouseError(message or f"warehouse error ({kind})")
