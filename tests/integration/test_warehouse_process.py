"""DuckDB in its writer process, behind the Warehouse protocol."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from shopstream.warehouse.base import WarehouseError
from shopstream.warehouse.duckdb import DuckDBWarehouse, WarehouseLocked
from shopstream.warehouse.writer import WarehouseProcess
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
