"""Run the CDC reader for tests: in-process (a thread) or as the `shopstream cdc` process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from shopstream.cdc.reader import ChangeReader
from shopstream.config import CdcSettings
from shopstream.events.raw import cdc_table_name
from shopstream.sinks.base import Sink
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb.database import DuckDBWarehouse


class ReaderThread:
    """The real reader and sink writing to a real DuckDB file, in a thread of the test (or to
    ``sink``, another sink the test opened: then there is no warehouse to query)."""

    def __init__(self, dsn: str, data_dir: Path, *, sink: Sink | None = None, **cdc: Any) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.warehouse: DuckDBWarehouse | None = None
        if sink is None:
            self.warehouse = DuckDBWarehouse(data_dir / "shopstream.duckdb")
            self.warehouse.ensure_layers()
            sink = WarehouseSink(self.warehouse, linger_ms=1)
        self.sink = sink
        self.settings = CdcSettings(**{"heartbeat_seconds": 1.0, **cdc})
        self.reader = ChangeReader(dsn, self.settings, self.sink, state_dir=data_dir)
        self.stop_event = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.reader.run(self.stop_event)
        except BaseException as exc:
            self.failure = exc

    def start(self) -> ReaderThread:
        self.sink.start()
        self.thread.start()
        self.wait_until(lambda: self.reader.stats.state == "streaming", "reader streaming")
        return self

    def query(self, sql: str) -> list[dict[str, Any]]:
        assert self.warehouse is not None, "this reader writes to another sink"
        return self.warehouse.query(sql).to_pylist()

    def count(self, table: str, where: str = "true") -> int:
        try:
            rows = self.query(f"SELECT count(*) AS n FROM raw.{table} WHERE {where}")
        except Exception:
            return 0  # the table appears with its first change
        return int(rows[0]["n"])

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.failure is not None:
                raise AssertionError(f"reader failed while waiting for {what}") from self.failure
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; reader stats {self.reader.stats}")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        self.sink.close()
        if self.warehouse is not None:
            self.warehouse.close()
        if self.failure is not None:
            raise self.failure


def cdc_process(dsn: str, data_dir: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`python -m shopstream cdc` as its own process, as an operator would run it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    environment.update({"SHOPSTREAM_DATA_DIR": str(data_dir), **env})
    log = (data_dir / "cdc.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "shopstream", "cdc", "--dsn", dsn, *args],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


_CHANGE = re.compile(r"^table (?P<schema>[^.]+)\.(?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE):")
_OPS = {"INSERT": "c", "UPDATE": "u", "DELETE": "d"}


def server_history(dsn: str, slot: str) -> list[tuple[int, int, str, str]]:
    """Every row change the server decoded for ``slot`` (test_decoding): the independent
    record of what happened, as (xid, position in transaction, raw table, op); the raw table
    is named from the schema and the table (public.orders and sales.orders are two)."""
    changes = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT xid::text::bigint, data FROM pg_logical_slot_get_changes(%s, NULL, NULL)",
            (slot,),
        ).fetchall()
    position = 0
    for xid, data in rows:
        if data.startswith("BEGIN"):
            position = 0
            continue
        match = _CHANGE.match(data)
        if match:
            position += 1
            raw = cdc_table_name(_unquote(match["table"]), _unquote(match["schema"]))
            changes.append((int(xid), position, raw, _OPS[match["op"]]))
    return changes


def _unquote(name: str) -> str:
    """An identifier as test_decoding prints it (quoted when it must be), as it is named."""
    if len(name) > 1 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


# -- durability checks: a stalled sink, the slot's confirmed LSN, the server's history ------


def lsn_of(dsn: str, expression: str) -> int:
    """An LSN-valued SQL expression as an int (``pg_current_wal_lsn()``, ...)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT ({expression}) - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def slot_state(dsn: str, slot: str = "shopstream") -> tuple[int, int | None]:
    """The slot's confirmed_flush_lsn (as an int) and the pid of the walsender streaming it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn, active_pid FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    assert row is not None, f"no slot {slot}"
    return int(row[0]), row[1]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_streaming(dsn: str, process: subprocess.Popen[bytes], slot: str = "shopstream") -> int:
    """Wait until ``process`` streams from the slot; returns its walsender's pid."""
    pids: list[int] = []

    def streaming() -> bool:
        assert process.poll() is None, "the reader exited"
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
        if row and row[0]:
            pids.append(row[0])
        return bool(pids)

    wait_for(streaming, "the reader streaming")
    return pids[0]


def writer_child(process: subprocess.Popen[bytes]) -> psutil.Process:
    """The DuckDB writer process the `shopstream cdc` process started (a multiprocessing
    spawn child; the other child is multiprocessing's resource tracker)."""
    children: list[psutil.Process] = []

    def started() -> bool:
        children[:] = [
            child
            for child in psutil.Process(process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]
        return bool(children)

    wait_for(started, "the warehouse writer process")
    assert len(children) == 1, children
    return children[0]


@contextlib.contextmanager
def sink_stalled(process: subprocess.Popen[bytes]) -> Iterator[psutil.Process]:
    """Stop the reader's warehouse writer (SIGSTOP): nothing the reader hands over becomes
    durable until it continues. Left stopped: the caller SIGKILLs both (kill_reader), so
    nothing handed over meanwhile is ever committed."""
    writer = writer_child(process)
    writer.send_signal(signal.SIGSTOP)
    try:
        yield writer
    except BaseException:
        kill_reader(process)
        raise


def kill_reader(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the reader process and its writer (a stopped writer too: it must not commit)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGKILL)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGKILL)
    process.wait()


def sample_slot(dsn: str, seconds: float, slot: str = "shopstream") -> list[tuple[int, int | None]]:
    """The slot's (confirmed_flush_lsn, walsender pid), sampled for ``seconds``."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(slot_state(dsn, slot))
        time.sleep(0.05)
    return samples


@contextlib.contextmanager
def probe_slot(dsn: str, name: str = "probe") -> Iterator[str]:
    """A test_decoding slot for the transactions from now on (dropped afterwards)."""
    execute_sql(dsn, f"SELECT pg_create_logical_replication_slot('{name}', 'test_decoding')")
    try:
        yield name
    finally:
        execute_sql(dsn, f"SELECT pg_drop_replication_slot('{name}')")


def execute_sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def first_commit_after(dsn: str, slot: str, lsn: int) -> int | None:
    """The end LSN of the first transaction with row changes whose commit ends past ``lsn``,
    from a test_decoding slot (peeked: the slot keeps its history); None if there is none.

    Confirming that LSN, or anything beyond, would make the server skip that transaction on
    the next start: while it cannot be durable, the slot must stay below it.
    """
    wanted = 1
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT lsn - '0/0'::pg_lsn, xid::text::bigint, data "
                "FROM pg_logical_slot_peek_changes(%s, NULL, %s)",
                (slot, wanted),
            ).fetchall()
        with_changes = {xid for _, xid, data in rows if _CHANGE.match(data)}
        for end, xid, data in rows:
            if data.startswith("COMMIT") and xid in with_changes and int(end) > lsn:
                return int(end)
        if len(rows) < wanted:
            return None  # the server has decoded everything committed so far
        wanted = 2 * len(rows)  # one transaction more at least; peek decodes no further


def assert_stays_below(
    samples: list[tuple[int, int | None]], bound: int | None, walsender: int | None = None
) -> None:
    """Every sampled confirmed_flush_lsn is below ``bound`` (the end of the first commit that
    cannot be durable); with ``walsender``, the same stream stayed connected throughout (the
    server did not drop the reader for want of status updates)."""
    if bound is not None:
        confirmed = max(lsn for lsn, _ in samples)
        assert confirmed < bound, (
            f"the slot was confirmed to {confirmed:X}, at or past the end of a commit "
            f"({bound:X}) that could not be durable (the sink was stalled): a crash loses it"
        )
    if walsender is not None:
        pids = {pid for _, pid in samples}
        assert pids == {walsender}, (
            f"the stream was dropped while the sink was stalled (walsender {walsender}, then "
            f"{pids - {walsender}}): the reader did not answer the server"
        )


def captured_changes(data_dir: Path) -> dict[tuple[int, int, str, str], set[str]]:
    """Every change in the warehouse's raw.cdc_* tables, keyed as :func:`server_history`,
    with the change ids stored for it."""
    import duckdb

    con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    try:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'raw' AND table_name LIKE 'cdc\\_%' ESCAPE '\\'"
            ).fetchall()
        ]
        captured: dict[tuple[int, int, str, str], set[str]] = {}
        for table in tables:
            for change_id, tx_id, op in con.execute(
                f"SELECT change_id, tx_id, op FROM raw.{table} WHERE op <> 'r'"
            ).fetchall():
                position = int(change_id.rsplit("-", 1)[1])
                key = (tx_id, position, table, op)
                captured.setdefault(key, set()).add(change_id)
    finally:
        con.close()
    return captured


def assert_matches_history(dsn: str, data_dir: Path, truth_slot: str, at_least: int) -> None:
    """raw holds every change the server decoded for ``truth_slot`` (test_decoding), none it
    did not, each under one change id."""
    captured = captured_changes(data_dir)
    history = server_history(dsn, truth_slot)
    assert len(history) >= at_least
    missing = set(history) - set(captured)
    invented = set(captured) - set(history)
    assert not missing, f"{len(missing)} changes lost, e.g. {sorted(missing)[:5]}"
    assert not invented, f"{len(invented)} changes invented, e.g. {sorted(invented)[:5]}"
    assert all(len(ids) == 1 for ids in captured.values()), "a change was stored under two ids"
