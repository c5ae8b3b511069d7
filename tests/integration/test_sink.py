"""The group-commit sink on a real DuckDB file: neighbours survive a bad submission."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from shopstream.sinks.base import SinkUnavailable
from shopstream.sinks.warehouse import WarehouseSink, dead_letter_row
from shopstream.warehouse.duckdb import DuckDBWarehouse
from shopstream.warehouse.raw import RAW_EVENTS
from tests.support.rows import event_row


def test_bad_rows_go_to_dead_letter_and_neighbours_commit(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse, linger_ms=50)  # long linger: all three share one group
    sink.start()
    good = sink.submit({"events": [event_row("good-1")]})
    bad = sink.submit({"events": [event_row("bad-1", properties="{not json")]})
    arrow = sink.submit(
        {
            "events": pa.Table.from_pylist([event_row("good-2")], schema=RAW_EVENTS),
            "dead_letter": [dead_letter_row("collector", "test reason", "x")],
        }
    )
    for future in (good, bad, arrow):
        assert future.result(timeout=30) is None  # all durable: two loaded, one dead-lettered
    sink.close()
    ids = warehouse.query("SELECT event_id FROM raw.events ORDER BY 1").column("event_id")
    assert ids.to_pylist() == ["good-1", "good-2"]
    letters = warehouse.query(
        "SELECT source, reason, payload, context FROM raw.dead_letter ORDER BY source"
    ).to_pylist()
    assert [letter["source"] for letter in letters] == ["collector", "loader"]
    loader = letters[1]
    assert "could not load into raw" in loader["reason"]
    assert orjson.loads(loader["payload"])["event_id"] == "bad-1"
    assert orjson.loads(loader["context"]) == {"table": "events"}
    warehouse.close()


def test_a_closed_sink_refuses_and_a_full_one_pushes_back(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse, max_queue_rows=1)
    sink.start()
    with pytest.raises(SinkUnavailable, match="behind"):
        sink.submit({"events": [event_row("a"), event_row("b")]})
    sink.close()
    assert not sink.ready()
    with pytest.raises(SinkUnavailable, match="not running"):
        sink.submit({"events": [event_row("c")]})
    warehouse.close()


def test_a_caller_that_gave_up_does_not_stop_the_sink(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse, linger_ms=300)
    sink.start()
    abandoned = sink.submit({"events": [event_row("abandoned")]})
    assert abandoned.cancel()  # e.g. an HTTP request cancelled at shutdown
    kept = sink.submit({"events": [event_row("kept")]})
    assert kept.result(timeout=30) is None
    later = sink.submit({"events": [event_row("later")]})
    assert later.result(timeout=30) is None
    assert sink.ready()
    sink.close()
    ids = warehouse.query("SELECT event_id FROM raw.events ORDER BY 1").column("event_id")
    assert "kept" in ids.to_pylist() and "later" in ids.to_pylist()
    warehouse.close()
