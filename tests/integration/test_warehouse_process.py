"""DuckDB in its writer process, behind the Warehouse protocol."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from shopstream.config import Settings
from shopstream.warehouse.base import WarehouseError, WarehouseUnavailable
from shopstream.warehouse.duckdb import open_duckdb
from shopstream.warehouse.duckdb.database import DuckDBWarehouse, WarehouseLocked
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
from tests.support.collector import CollectorProcess
from tests.support.rows import events_table


def test_the_protocol_over_the_process_boundary(tmp_path: Path) -> None:
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    try:
        warehouse.ensure_layers()
        warehouse.append({"events": events_table("a", "b")})
        result = warehouse.query(
            "SELECT event_id FROM raw.events WHERE event_id > ? ORDER BY 1", ["a"]
        )
        assert result.column("event_id").to_pylist() == ["b"]
        assert warehouse.table_counts()["raw.events"] == 2
        with pytest.raises(WarehouseError, match="only read queries"):
            warehouse.query("DELETE FROM raw.events")
        with pytest.raises(WarehouseError, match="append to raw failed"):
            warehouse.append(
                {
                    "events": events_table("c").set_column(
                        19, "payload", pa.array(["{not json"], pa.string())
                    )
                }
            )
        assert warehouse.table_counts()["raw.events"] == 2  # the failed append left nothing
        # The file belongs to the writer process: nobody else may open it for writing.
        with pytest.raises(WarehouseLocked):
            DuckDBWarehouse(tmp_path / "w.duckdb")
        pid = warehouse.pid
    finally:
        warehouse.close()
    assert pid is not None
    reopened = DuckDBWarehouse(tmp_path / "w.duckdb", read_only=True)  # the child let go
    assert reopened.table_counts()["raw.events"] == 2
    reopened.close()


def test_a_long_query_does_not_hold_back_commits(tmp_path: Path) -> None:
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    order: list[str] = []

    def long_query() -> None:
        warehouse.query("SELECT count(*) FROM range(300000000) WHERE range % 7 = 3")
        order.append("query")

    try:
        query = threading.Thread(target=long_query)
        query.start()
        warehouse.append({"events": events_table("during-query")})
        order.append("append")
        query.join(120)
    finally:
        warehouse.close()
    assert order == ["append", "query"]


@pytest.mark.parametrize("own_process", [True, False])
def test_the_memory_limit_reaches_duckdb(tmp_path: Path, own_process: bool) -> None:
    """Unset, DuckDB would take up to 80% of the machine's RAM (not the container's)."""
    warehouse = open_duckdb(
        tmp_path / "w.duckdb",
        memory_limit_mb=Settings().sink.memory_limit_mb,
        own_process=own_process,
    )
    try:
        default = warehouse.query("SELECT current_setting('memory_limit') AS m")
        assert default.column("m").to_pylist() == ["488.2 MiB"]  # 512 MB, the default
    finally:
        warehouse.close()
    warehouse = open_duckdb(tmp_path / "w.duckdb", memory_limit_mb=300, own_process=own_process)
    try:
        limit = warehouse.query("SELECT current_setting('memory_limit') AS m")
        assert limit.column("m").to_pylist() == ["286.1 MiB"]  # 300 MB
    finally:
        warehouse.close()


def test_the_memory_limit_setting_reaches_the_collectors_writer(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path, env={"SHOPSTREAM_SINK__MEMORY_LIMIT_MB": "200"})
    collector.start()
    try:
        rows = collector.query("SELECT current_setting('memory_limit') AS m")
    finally:
        assert collector.stop() == 0, collector.log()
    assert rows == [{"m": "190.7 MiB"}]  # 200 MB


def test_a_killed_writer_is_reaped_and_replaced(tmp_path: Path) -> None:
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    try:
        warehouse.ensure_layers()
        warehouse.append({"events": events_table("a")})
        first = warehouse.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(WarehouseUnavailable):
            warehouse.append({"events": events_table("b")})
        deadline = time.monotonic() + 30
        while (warehouse.pid == first or warehouse.health().state != "ok") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert warehouse.health().state == "ok"
        assert warehouse.pid != first
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(first).status()  # reaped, not a zombie
        warehouse.append({"events": events_table("b")})
        assert warehouse.table_counts()["raw.events"] == 2
    finally:
        warehouse.close()


def test_a_broken_pipe_to_a_live_writer_is_recovered_from(tmp_path: Path) -> None:
    """The query pipe breaks while the writer lives on (its query thread ends, its append
    loop goes on; nothing public provokes it, so the test closes the platform's end itself):
    the writer must be replaced, not left "recovering" for ever with /healthz still 200."""
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    try:
        warehouse.ensure_layers()
        first = warehouse.pid
        warehouse._child.queries.close()
        with pytest.raises(WarehouseUnavailable):
            warehouse.table_counts()
        deadline = time.monotonic() + 30
        while (warehouse.pid == first or warehouse.health().state != "ok") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert warehouse.health().state == "ok"
        assert warehouse.pid != first
        warehouse.append({"events": events_table("a")})
        assert warehouse.table_counts()["raw.events"] == 1
    finally:
        warehouse.close()


@pytest.mark.parametrize("own_process", [True, False])
def test_a_query_past_its_time_limit_is_interrupted(tmp_path: Path, own_process: bool) -> None:
    from shopstream.warehouse.base import QueryTimeout

    warehouse = open_duckdb(tmp_path / "w.duckdb", own_process=own_process)
    try:
        warehouse.ensure_layers()
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match=r"took longer than 0\.5 s"):
            warehouse.query(
                "SELECT count(*) FROM range(100000000000) WHERE range % 7 = 3",
                timeout_seconds=0.5,
            )
        assert time.monotonic() - started < 30
        # The connection is fine afterwards, and a quick query within its limit answers.
        answer = warehouse.query("SELECT 42 AS n", timeout_seconds=5)
        assert answer.to_pylist() == [{"n": 42}]
    finally:
        warehouse.close()
