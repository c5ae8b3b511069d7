"""The DuckDB warehouse in a process of its own, behind the same Warehouse protocol.

Why: in one process, the group-commit writer and the HTTP event loop share one GIL. Every
call into DuckDB and every Arrow conversion had to win the GIL back from the loop, so
commits that take ~5 ms alone took 20-90 ms under load and the collector topped out near
19k events/s. Here the writer process owns the DuckDB file (DuckDB allows one writer
process anyway) and runs on the other core; the platform's process sends it Arrow batches
as IPC streams over a socket pair (the send and the wait for the reply release the GIL) and
gets an answer only after the commit.

If the platform process dies, the writer sees the socket close and exits; a commit it had
made stays made, and nothing was acknowledged that was not committed. If the writer dies, the
platform reaps it and starts another (see WarehouseProcess); a commit in flight at that moment
is answered with an error, so its rows are sent again (at-least-once, deduplicated by id).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa

from shopstream.warehouse.base import (
    LAYERS,
    QueryError,
    QueryTimeout,
    WarehouseError,
    WarehouseHealth,
    WarehouseUnavailable,
)
from shopstream.warehouse.duckdb import CAPABILITIES
from shopstream.warehouse.duckdb.files import private_directory, tighten, warehouse_files

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
    jobs: multiprocessing.connection.Connection,
    path: str,
    read_only: bool,
    checkpoint_wal_mb: int,
    memory_limit_mb: int | None,
) -> None:
    """The writer process: appends on one connection, queries on another (a thread of their
    own with their own DuckDB cursor, so a long query never holds back a commit), and jobs
    that must run where the file is held (a dbt transform) on a third, in a thread too."""
    # The database, its WAL and DuckDB's spill files hold IPs and user ids: everything this
    # process creates is private to its user (0600 files, 0700 directories).
    os.umask(0o077)
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the platform
    # decides when the writer stops (it drains first); the writer also stops when the
    # platform's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from shopstream.warehouse.duckdb.database import DuckDBWarehouse

    try:
        warehouse = DuckDBWarehouse(
            Path(path),
            read_only=read_only,
            checkpoint_wal_mb=checkpoint_wal_mb,
            memory_limit_mb=memory_limit_mb,
            check_modes=False,
        )
    except WarehouseError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    # A job (dbt) holds the GIL for stretches of Python work; the append thread needs it for
    # a few short steps per commit, and at the default 5 ms switch interval waits that long.
    sys.setswitchinterval(0.0005)
    threading.Thread(target=_answer, args=(queries, warehouse), daemon=True).start()
    job_thread = threading.Thread(target=_run_jobs, args=(jobs, warehouse), daemon=True)
    job_thread.start()
    conn.send(("ready", None, None))
    try:
        _answer(conn, warehouse)
    finally:
        # A job still running (the platform died under it) is a daemon thread: it ends with
        # this process, its open transaction dropped as after a crash (tested).
        warehouse.close()


def _run_jobs(conn: multiprocessing.connection.Connection, warehouse: Any) -> None:
    """One job at a time: its progress messages, then its answer."""
    from shopstream.warehouse.duckdb.owner_jobs import owner_job

    sending = threading.Lock()  # a job may emit from several threads (dbt's workers)

    def emit(message: Any) -> None:
        with sending:
            conn.send(("progress", message, None))

    while True:
        try:
            _, target, argument = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any, Any] = (
                "ok",
                owner_job(target)(warehouse, argument, emit),
                None,
            )
        except Exception as exc:
            answer = ("error", type(exc).__name__, str(exc))
        try:
            with sending:
                conn.send(answer)
        except (EOFError, OSError):
            return


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
            elif op == "append_monitoring":
                batch = _from_ipc(conn.recv_bytes())
                warehouse.append_monitoring(request[1], batch, json_columns=request[2])
                conn.send(("ok", None, None))
            elif op == "append_mart":
                warehouse.append_mart(request[1], _from_ipc(conn.recv_bytes()))
                conn.send(("ok", None, None))
            elif op == "query":
                result = warehouse.query(
                    request[1], request[2], max_rows=request[3], timeout_seconds=request[4]
                )
                conn.send(("ok", _to_ipc(result), None))
            elif op == "close":
                conn.send(("ok", None, None))
                return
            else:
                conn.send(("ok", getattr(warehouse, op)(*request[1:]), None))
        except Exception as exc:
            conn.send(("error", type(exc).__name__, str(exc)))


@dataclass
class _Child:
    """One writer process and its two pipes."""

    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    queries: multiprocessing.connection.Connection
    jobs: multiprocessing.connection.Connection
    started: float = field(default_factory=time.monotonic)

    def close_pipes(self) -> None:
        self.conn.close()
        self.queries.close()
        self.jobs.close()


class WarehouseProcess:
    """A Warehouse whose DuckDB lives in a child process (see the module docstring).

    A watcher thread reaps the child if it dies (kill -9, OOM killer) and starts a new one,
    waiting longer after each death; calls made meanwhile fail with WarehouseUnavailable
    (the collector answers 503, the CDC reader retries). After ``max_restarts`` deaths of
    writers that did not live ``STABLE_SECONDS`` it gives up: health() reports ``failed`` and
    the process must be restarted (the collector's /healthz says so to the orchestrator).
    """

    capabilities = CAPABILITIES

    #: A writer that lived this long was fine: its death starts the count of restarts afresh.
    STABLE_SECONDS = 60.0
    #: The first restart waits this long, each further one twice as long as the one before.
    FIRST_BACKOFF_SECONDS = 0.5
    MAX_BACKOFF_SECONDS = 30.0

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        checkpoint_wal_mb: int = 128,
        memory_limit_mb: int | None = None,
        max_restarts: int = 5,
    ):
        self.path = path
        self.read_only = read_only
        self.max_restarts = max_restarts
        self._args = (str(path), read_only, checkpoint_wal_mb, memory_limit_mb)
        if not read_only:
            private_directory(path.parent)
            for existing in warehouse_files(path):
                tighten(existing)
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._job_lock = threading.Lock()
        self._closing = threading.Event()
        self._health = WarehouseHealth()
        self._restarts = 0
        self._child = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="warehouse-watcher", daemon=True)
        self._watcher.start()

    def _spawn(self) -> _Child:
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe(duplex=True)
        queries, child_queries = context.Pipe(duplex=True)
        jobs, child_jobs = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve,
            args=(child_conn, child_queries, child_jobs, *self._args),
            name="shopstream-warehouse",
            daemon=True,
        )
        process.start()
        child_conn.close()
        child_queries.close()
        child_jobs.close()
        child = _Child(process, conn, queries, jobs)
        try:
            if not conn.poll(_START_TIMEOUT):
                raise WarehouseError(
                    f"the warehouse process did not start within {_START_TIMEOUT} s"
                )
            status, kind, message = conn.recv()
        except (EOFError, OSError) as exc:
            kind, message, status = "WarehouseError", f"the warehouse process died: {exc}", ""
        except WarehouseError:
            process.kill()
            process.join(10)
            child.close_pipes()
            raise
        if status != "ready":
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
            child.close_pipes()
            _raise(kind, message, self.path)
        return child

    def _watch(self) -> None:
        """Reap a writer that died and start another, with backoff; give up after
        ``max_restarts`` quick deaths in a row."""
        while not self._closing.is_set():
            child = self._child
            if not multiprocessing.connection.wait([child.process.sentinel], timeout=0.5):
                continue
            if self._closing.is_set():
                return
            child.process.join()  # reaped: no zombie is left behind
            lived = time.monotonic() - child.started
            self._health = WarehouseHealth(
                "recovering",
                f"the warehouse writer process (pid {child.process.pid}) died "
                f"(exit code {child.process.exitcode}); restarting it",
            )
            log.error("%s (it ran %.0f s)", self._health.reason, lived)
            # Callers in flight have seen the pipe break (a job's too: its answer never comes).
            with self._lock, self._query_lock, self._job_lock:
                child.close_pipes()
            if lived >= self.STABLE_SECONDS:
                self._restarts = 0
            if not self._restart():
                return

    def _restart(self) -> bool:
        """Start a new writer; False when given up (or closing)."""
        while not self._closing.is_set():
            if self._restarts >= self.max_restarts:
                self._health = WarehouseHealth(
                    "failed",
                    f"the warehouse writer process died {self._restarts + 1} times in a row "
                    f"(each within {self.STABLE_SECONDS:.0f} s of its start); gave up "
                    f"restarting it (sink.writer_restarts={self.max_restarts}): restart "
                    "shopstream. Committed data is safe in the DuckDB file.",
                )
                log.error("%s", self._health.reason)
                return False
            delay = min(self.FIRST_BACKOFF_SECONDS * 2**self._restarts, self.MAX_BACKOFF_SECONDS)
            if self._closing.wait(delay):
                return False
            self._restarts += 1
            try:
                child = self._spawn()
            except WarehouseError as exc:
                log.error("restarting the warehouse writer process failed: %s", exc)
                continue
            with self._lock, self._query_lock, self._job_lock:
                self._child = child
            self._health = WarehouseHealth()
            log.warning("warehouse writer process restarted (pid %s)", child.process.pid)
            return True
        return False

    @property
    def pid(self) -> int | None:
        return self._child.process.pid

    def health(self) -> WarehouseHealth:
        return self._health

    def _call(self, *request: Any, payload: list[bytes] | None = None, query: bool = False) -> Any:
        health = self._health
        if health.state != "ok":
            raise WarehouseUnavailable(health.reason)
        with self._query_lock if query else self._lock:
            child = self._child
            conn = child.queries if query else child.conn
            try:
                conn.send(request)
                for data in payload or ():
                    conn.send_bytes(data)
                status, value, message = conn.recv()
            except (EOFError, OSError) as exc:
                reason = (
                    f"the warehouse writer process (pid {child.process.pid}) is gone ({exc}); "
                    "it is being restarted: retry. Committed data is safe in the DuckDB file."
                )
                # Not ready from now on, before the watcher has noticed (it swaps children
                # only under both locks, so this child is still the current one).
                if self._health.state == "ok":
                    self._health = WarehouseHealth("recovering", reason)
                if child.process.is_alive():
                    # The pipe broke but the writer lives on: it can no longer be talked to,
                    # and only the watcher puts health back to ok, after a death. End it, so
                    # the watcher restarts it instead of the platform staying "recovering".
                    log.error("the pipe to the warehouse writer process broke; restarting it")
                    child.process.kill()
                raise WarehouseUnavailable(reason) from exc
        if status == "error":
            _raise(value, message, self.path)
        return value

    def ensure_layers(self, layers: Collection[str] = LAYERS) -> None:
        self._call("ensure_layers")  # all four, as the database's (``layers`` is ignored)

    def ensure_raw_table(self, table: str) -> None:
        self._call("ensure_raw_table", table)

    def append(self, batches: Mapping[str, pa.Table]) -> None:
        parts = [(table, batch) for table, batch in batches.items() if batch.num_rows]
        if parts:
            self._call(
                "append", [table for table, _ in parts], payload=[_to_ipc(b) for _, b in parts]
            )

    def append_monitoring(
        self, table: str, batch: pa.Table, *, json_columns: Collection[str] = ()
    ) -> None:
        """Append to ``monitoring.<table>`` in the writer process (on the appends' pipe: it
        is a write)."""
        self._call("append_monitoring", table, sorted(json_columns), payload=[_to_ipc(batch)])

    def append_mart(self, table: str, batch: pa.Table) -> None:
        """Append to ``mart.<table>`` in the writer process (on the appends' pipe)."""
        self._call("append_mart", table, payload=[_to_ipc(batch)])

    def query(
        self,
        sql: str,
        parameters: list[Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_seconds: float | None = None,
    ) -> pa.Table:
        """A read in the writer process, stopped there after ``timeout_seconds``."""
        return _from_ipc(
            self._call("query", sql, parameters, max_rows, timeout_seconds, query=True)
        )

    def dry_run_bytes(self, sql: str, parameters: list[Any] | None = None) -> int:
        """DuckDB has no dry run (``capabilities.dry_run_cost`` is false): callers estimate."""
        raise QueryError("no dry run: ask capabilities.dry_run_cost")

    def table_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._call("table_counts", query=True)
        return counts

    def run_in_owner(self, target: str, argument: Any, on_message: Callable[[Any], None]) -> Any:
        """Run ``target`` (``"module:function"``, see :mod:`.owner_jobs`) in the writer
        process, in a thread beside the appends; ``on_message`` gets its progress here.

        One job at a time (a second caller waits). Appends and queries go on meanwhile, on
        their own pipes. If the writer dies during the job: WarehouseUnavailable.
        """
        health = self._health
        if health.state != "ok":
            raise WarehouseUnavailable(health.reason)
        with self._job_lock:
            child = self._child
            try:
                child.jobs.send(("run", target, argument))
                while True:
                    status, value, message = child.jobs.recv()
                    if status != "progress":
                        break
                    try:
                        on_message(value)
                    except Exception:  # a display's failure must not desynchronise the pipe
                        log.exception("progress callback failed")
            except (EOFError, OSError) as exc:
                raise WarehouseUnavailable(
                    f"the warehouse writer process (pid {child.process.pid}) ended during the "
                    f"job ({exc}); committed data is safe, the job's open work was dropped"
                ) from exc
        if status == "error":
            _raise(value, message, self.path)
        return value

    def checkpoint(self) -> None:
        self._call("checkpoint")

    def close(self) -> None:
        self._closing.set()
        self._watcher.join(_START_TIMEOUT + 10)  # within 0.5 s unless a restart is starting
        child = self._child
        if child.process.is_alive():
            with self._lock, contextlib.suppress(EOFError, OSError):  # it may die meanwhile
                child.conn.send(("close",))
                child.conn.recv()
            child.process.join(30)
        if child.process.is_alive():  # pragma: no cover - a stuck child
            log.warning("warehouse process %s did not stop; terminating it", child.process.pid)
            child.process.terminate()
            child.process.join(10)
        child.process.join(1)  # reap it if it died on its own
        child.close_pipes()
        self._health = WarehouseHealth("failed", "the warehouse is closed")


def _raise(kind: str | None, message: str | None, path: Path) -> NoReturn:
    from shopstream.warehouse.duckdb.database import WarehouseLocked

    if kind == "WarehouseLocked":
        raise WarehouseLocked(path, message=message)
    if kind == "QueryError":
        raise QueryError(message or "the query failed")
    if kind == "QueryTimeout":
        raise QueryTimeout(message or "the query took too long and was stopped")
    raise WarehouseError(message or f"warehouse error ({kind})")
