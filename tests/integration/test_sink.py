"""The group-commit sink on a real DuckDB file: neighbours survive a bad submission."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_EVENTS
from shopstream.sinks.base import LANDED, SinkError, SinkUnavailable
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.base import WarehouseUnavailable
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
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
    assert good.result(timeout=30) == LANDED
    assert arrow.result(timeout=30) == LANDED
    (refused,) = bad.result(timeout=30).dead_lettered  # durable, in raw.dead_letter
    assert (refused.table, refused.position) == ("events", 0)
    assert "Malformed JSON" in refused.reason
    sink.close()
    ids = warehouse.query("SELECT event_id FROM raw.events ORDER BY 1").column("event_id")
    assert ids.to_pylist() == ["good-1", "good-2"]
    letters = warehouse.query(
        "SELECT source, reason, payload, context FROM raw.dead_letter ORDER BY source"
    ).to_pylist()
    assert [letter["source"] for letter in letters] == ["collector", "loader"]
    loader = letters[1]
    assert loader["reason"] == refused.reason
    assert orjson.loads(loader["payload"])["event_id"] == "bad-1"
    assert orjson.loads(loader["context"]) == {"table": "events", "position": 0}
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
    assert kept.result(timeout=30) == LANDED
    later = sink.submit({"events": [event_row("later")]})
    assert later.result(timeout=30) == LANDED
    assert sink.ready()
    sink.close()
    ids = warehouse.query("SELECT event_id FROM raw.events ORDER BY 1").column("event_id")
    assert "kept" in ids.to_pylist() and "later" in ids.to_pylist()
    warehouse.close()


def test_refused_rows_are_found_within_a_submission_and_reported(tmp_path: Path) -> None:
    """A request's bad rows, not the whole request, go to raw.dead_letter; the future says
    which (by position) and why, so the collector can answer them as rejected."""
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse)
    sink.start()
    rows = [event_row(f"e{i}", properties="{not json" if i in (3, 10) else "{}") for i in range(13)]
    outcome = sink.submit({"events": rows}).result(timeout=30)
    sink.close()
    assert [(d.table, d.position) for d in outcome.dead_lettered] == [("events", 3), ("events", 10)]
    assert all("Malformed JSON" in d.reason for d in outcome.dead_lettered)
    stored = warehouse.query("SELECT event_id FROM raw.events").column("event_id").to_pylist()
    assert sorted(stored) == sorted(f"e{i}" for i in range(13) if i not in (3, 10))
    letters = warehouse.query("SELECT payload FROM raw.dead_letter").column("payload")
    assert sorted(orjson.loads(p)["event_id"] for p in letters.to_pylist()) == ["e10", "e3"]
    warehouse.close()


def test_a_dead_writer_fails_submissions_without_dead_letters_then_recovers(
    tmp_path: Path,
) -> None:
    """Rows are not to blame when the writer process dies: they are not dead-lettered, the
    caller is told to retry, and once the writer is back the same rows load."""
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse)
    sink.start()
    try:
        assert sink.submit({"events": [event_row("before")]}).result(timeout=30) == LANDED
        old_pid = warehouse.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        # The sink's own error type (what the collector and the CDC reader catch), caused by
        # the warehouse's.
        with pytest.raises(SinkError) as failed:
            sink.submit({"events": [event_row("during")]}).result(timeout=30)
        assert isinstance(failed.value.__cause__, WarehouseUnavailable)
        assert not sink.ready()
        assert sink.broken() is None  # recovering on its own: not a reason to restart us
        deadline = time.monotonic() + 30
        while (warehouse.pid == old_pid or warehouse.health().state != "ok") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert warehouse.pid != old_pid
        assert sink.ready()
        assert sink.submit({"events": [event_row("during")]}).result(timeout=30) == LANDED
        counts = warehouse.table_counts()
        assert counts["raw.events"] == 2
        assert counts["raw.dead_letter"] == 0
    finally:
        sink.close()
        warehouse.close()
