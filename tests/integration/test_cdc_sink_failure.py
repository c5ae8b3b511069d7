"""The CDC reader and the sink's error type: a batch the sink could not make durable is not
the reader's end. It starts again from the last confirmed LSN and loses nothing."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg

from shopstream.cdc.reader import ChangeReader
from shopstream.config import CdcSettings
from shopstream.observability.metrics import REGISTRY
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
from tests.support.cdc import wait_for


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _reconnects() -> float:
    return REGISTRY.get_sample_value("shopstream_cdc_reconnects_total") or 0.0


def test_a_batch_the_sink_could_not_store_is_read_again(postgres: Any, tmp_path: Path) -> None:
    _execute(postgres.dsn, "CREATE TABLE orders (order_id bigint PRIMARY KEY, status text)")
    warehouse = WarehouseProcess(tmp_path / "shopstream.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse, linger_ms=1)
    sink.start()
    settings = CdcSettings(heartbeat_seconds=1.0, snapshot_mode="never", batch_max_ms=50)
    reader = ChangeReader(postgres.dsn, settings, sink, state_dir=tmp_path)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            reader.run(stop)
        except BaseException as exc:
            failures.append(exc)

    def stored() -> int:
        try:
            table = warehouse.query("SELECT count(DISTINCT key) AS n FROM raw.cdc_orders")
        except Exception:
            return 0  # the table appears with its first change
        return int(table.column("n")[0].as_py())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: reader.stats.state == "streaming" or bool(failures), "streaming")
        _execute(postgres.dsn, "INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 50) g")
        wait_for(lambda: stored() == 50, "the first 50 orders")
        reconnects = _reconnects()
        # The writer dies: until it is back (0.5 s at least), the sink fails the next batch
        # with its own error type, which the reader must take as "read it again".
        pid = warehouse.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: warehouse.health().state != "ok", "the writer's death noticed")
        _execute(postgres.dsn, "INSERT INTO orders SELECT g, 'new' FROM generate_series(51, 100) g")
        wait_for(lambda: _reconnects() > reconnects or bool(failures), "a retry")
        wait_for(lambda: stored() == 100 or bool(failures), "every order", timeout=90)
        assert not failures, failures
    finally:
        stop.set()
        thread.join(60)
        sink.close()
        warehouse.close()
