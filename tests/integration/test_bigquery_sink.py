"""Collector → warehouse sink → BigQuery (bqemulator), and the sink on a warehouse that cannot
append several tables in one commit.

The collector runs as a user runs it (``SHOPSTREAM_WAREHOUSE_URL=bigquery://...``). The refusal
is BigQuery's own: raw.events is made by hand beforehand with ``anonymous_id`` typed INT64 (as
an operator might change a column), so an event the collector finds valid but whose anonymous
id is not a number fails to load. The sink isolates it, writes it to raw.dead_letter with
BigQuery's reason, and its neighbours land. (bqemulator refuses per value; Google's service
would refuse the string column as a whole, and every row of the batch would be dead-lettered:
the refusal path is the same.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from shopstream.config import Settings
from shopstream.sinks.base import SinkError
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse import open_warehouse
from shopstream.warehouse.bigquery.database import BigQueryWarehouse
from shopstream.warehouse.bigquery.tables import raw_layout
from tests.support.bigquery_emulator import BigQueryEmulator, bigquery_emulator
from tests.support.collector import CollectorProcess
from tests.support.rows import event_row
from tests.support.rows import tracked_event as event

__all__ = ["bigquery_emulator"]  # the fixture, used by name


@pytest.fixture(scope="module")
def warehouse(bigquery_emulator: BigQueryEmulator) -> Iterator[BigQueryWarehouse]:
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    client.create_dataset("raw")
    fields = [
        bigquery.SchemaField(c.name, "INT64" if c.name == "anonymous_id" else c.type,
                             mode="REQUIRED" if c.required else "NULLABLE")
        for c in raw_layout("events").columns
    ]  # fmt: skip
    client.create_table(bigquery.Table(f"{bigquery_emulator.project}.raw.events", schema=fields))
    opened = open_warehouse(Settings(warehouse_url=bigquery_emulator.warehouse_url()))
    assert isinstance(opened, BigQueryWarehouse)
    opened.ensure_layers()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def collector(
    bigquery_emulator: BigQueryEmulator,
    warehouse: BigQueryWarehouse,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CollectorProcess]:
    env = {"SHOPSTREAM_WAREHOUSE_URL": bigquery_emulator.warehouse_url()}
    process = CollectorProcess(tmp_path_factory.mktemp("bq-collector"), env).start()
    yield process
    assert process.stop() == 0, process.log()


def stored(warehouse: BigQueryWarehouse, ids: list[str]) -> list[str]:
    listed = ", ".join(f"'{i}'" for i in ids)  # uuids: nothing to quote
    rows = warehouse.query(f"SELECT event_id FROM raw.events WHERE event_id IN ({listed})")
    rows = rows.to_pylist()
    return sorted(str(r["event_id"]) for r in rows)


def test_events_land_and_a_refused_one_is_dead_lettered_with_bigquerys_reason(
    collector: CollectorProcess, warehouse: BigQueryWarehouse
) -> None:
    batch = [event("1001"), event("not-a-number"), event("1002"), event("1003")]
    response = httpx.post(f"{collector.url}/v1/events", json=batch, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert [r["index"] for r in body["rejected"]] == [1]
    reason = body["rejected"][0]["reason"]
    assert "BigQuery refused the rows for raw.events" in reason, reason
    ids = [str(e["event_id"]) for e in batch]
    assert stored(warehouse, ids) == sorted(ids[i] for i in (0, 2, 3))
    letters = warehouse.query(
        "SELECT reason, payload FROM raw.dead_letter WHERE source = 'loader'"
    ).to_pylist()
    refused = [r for r in letters if orjson.loads(r["payload"])["event_id"] == ids[1]]
    assert len(refused) == 1 and "raw.events" in refused[0]["reason"], letters


def change_row(change_id: str, after: str = '{"order_id": "o-1"}') -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "change_id": change_id, "op": "c", "lsn": 1, "tx_id": 1, "commit_ts": now,
        "commit_date": now.date(), "key": '{"order_id": "o-1"}', "before": None,
        "after": after, "source": '{"table": "orders"}', "ingested_at": now,
    }  # fmt: skip


def count(warehouse: BigQueryWarehouse, event_id: str) -> int:
    rows = warehouse.query("SELECT count(*) AS n FROM raw.events WHERE event_id = ?", [event_id])
    return int(rows.column("n")[0].as_py())


@pytest.fixture
def sink(warehouse: BigQueryWarehouse) -> Iterator[WarehouseSink]:
    opened = WarehouseSink(warehouse, linger_ms=0)
    opened.start()
    yield opened
    opened.close()


def test_a_submission_counts_only_when_all_its_tables_landed(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse, sink: WarehouseSink
) -> None:
    """Two tables, appended one after the other: the second one's table was dropped by hand
    after the sink had made it. The events landed, but the submission did not: its future
    fails, and the caller's resend lands it, with a second copy of the event that staging
    removes (it keeps the first copy of each event_id)."""
    first = event_row(f"ok-{uuid.uuid4()}", anonymous_id="7")
    outcome = sink.submit({"events": [first], "cdc_orders": [change_row("c-1")]}).result(60)
    assert not outcome.dead_lettered
    bigquery_emulator.client().delete_table(f"{bigquery_emulator.project}.raw.cdc_orders")

    half = event_row(f"half-{uuid.uuid4()}", anonymous_id="8")
    submission = {"events": [half], "cdc_orders": [change_row("c-2")]}
    with pytest.raises(SinkError, match="cdc_orders"):
        sink.submit(submission).result(60)
    assert count(warehouse, str(half["event_id"])) == 1  # landed, but not acknowledged

    assert not sink.submit(submission).result(60).dead_lettered  # the caller sends again
    assert count(warehouse, str(half["event_id"])) == 2
    changes = warehouse.query("SELECT change_id FROM raw.cdc_orders").column("change_id")
    assert changes.to_pylist() == ["c-2"]


def test_a_refused_row_in_the_second_table_never_writes_the_first_twice(
    warehouse: BigQueryWarehouse, sink: WarehouseSink
) -> None:
    lone = event_row(f"lone-{uuid.uuid4()}", anonymous_id="9")
    submission = {
        "events": [lone],
        "cdc_orders": [change_row("c-3"), change_row("c-bad", after="{oops"), change_row("c-4")],
    }
    outcome = sink.submit(submission).result(60)
    assert [(d.table, d.position) for d in outcome.dead_lettered] == [("cdc_orders", 1)]
    assert "raw.cdc_orders.after is JSON" in outcome.dead_lettered[0].reason
    assert count(warehouse, str(lone["event_id"])) == 1
    changes = warehouse.query(
        "SELECT change_id FROM raw.cdc_orders WHERE change_id IN ('c-3', 'c-4', 'c-bad')"
    )
    assert sorted(changes.column("change_id").to_pylist()) == ["c-3", "c-4"]
