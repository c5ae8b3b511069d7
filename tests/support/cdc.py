"""Run the CDC reader for tests: in-process (a thread) or as the `shopstream cdc` process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from shopstream.cdc.reader import ChangeReader
from shopstream.config import CdcSettings
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb import DuckDBWarehouse


class ReaderThread:
    """The real reader and sink writing to a real DuckDB file, in a thread of the test."""

    def __init__(self, dsn: str, data_dir: Path, **cdc: Any) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.warehouse = DuckDBWarehouse(data_dir / "shopstream.duckdb")
        self.warehouse.ensure_layers()
        self.sink = WarehouseSink(self.warehouse, linger_ms=1)
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
    record of what happened, as (xid, position in transaction, table, op)."""
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
            changes.append((int(xid), position, match["table"], _OPS[match["op"]]))
    return changes
