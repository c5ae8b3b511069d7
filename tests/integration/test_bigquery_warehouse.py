"""The Warehouse protocol on BigQuery, proven against bqemulator with Google's own clients.

One emulator for the module (tests/support/bigquery_emulator.py); each test writes tables or
rows of its own, so the order of tests does not matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from shopstream.config import Settings
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_CDC, RAW_DEAD_LETTER
from shopstream.warehouse import QueryError, WarehouseError, open_warehouse, warehouse_backend
from shopstream.warehouse.base import WarehouseUnavailable
from shopstream.warehouse.bigquery import appends
from shopstream.warehouse.bigquery.database import BigQueryWarehouse
from tests.support.bigquery_emulator import BigQueryEmulator, bigquery_emulator
from tests.support.rows import events_table

__all__ = ["bigquery_emulator"]  # the fixture, used by name


def settings_for(emulator: BigQueryEmulator, append: str = "storage_write") -> Settings:
    return Settings(warehouse_url=emulator.warehouse_url(), bigquery={"append": append})


@pytest.fixture(scope="module")
def warehouse(bigquery_emulator: BigQueryEmulator) -> Iterator[BigQueryWarehouse]:
    opened = open_warehouse(settings_for(bigquery_emulator))
    assert isinstance(opened, BigQueryWarehouse)
    opened.ensure_layers()
    yield opened
    opened.close()


def event_ids(warehouse: BigQueryWarehouse, prefix: str) -> list[str]:
    rows = warehouse.query(
        "SELECT event_id FROM raw.events WHERE STARTS_WITH(event_id, ?) ORDER BY event_id",
        [prefix],
    )
    return [str(value) for value in rows.column("event_id").to_pylist()]


def test_the_registry_names_a_service_without_atomic_multi_table_appends() -> None:
    capabilities = warehouse_backend("bigquery://p?location=EU").capabilities
    assert not capabilities.single_writer_process
    assert not capabilities.atomic_multi_table_append
    assert capabilities.dry_run_cost and not capabilities.checkpoints


def test_layers_are_datasets_and_raw_tables_are_partitioned_and_clustered(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse
) -> None:
    warehouse.ensure_raw_table("cdc_orders")
    client = bigquery_emulator.client()
    datasets = {d.dataset_id for d in client.list_datasets()}
    assert {"raw", "staging", "mart", "monitoring"} <= datasets
    expected = {
        "events": ("event_date", ["event_type"]),
        "dead_letter": ("received_at", ["source"]),
        "source_schemas": ("recorded_at", ["raw_table"]),
        "cdc_orders": ("commit_date", ["op", "change_id"]),
    }
    for name, (partition, clustering) in expected.items():
        table = client.get_table(f"{bigquery_emulator.project}.raw.{name}")
        assert table.time_partitioning is not None, name
        assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", partition)
        assert table.clustering_fields == clustering, name
    events = {f.name: (f.field_type, f.mode) for f in client.get_table(
        f"{bigquery_emulator.project}.raw.events").schema}  # fmt: skip
    assert events["event_id"] == ("STRING", "REQUIRED")
    assert events["event_ts"] == ("TIMESTAMP", "REQUIRED")
    assert events["event_date"] == ("DATE", "REQUIRED")
    # payload is JSON; properties stays text: the events models test it with SAFE.PARSE_JSON.
    assert events["payload"] == ("JSON", "NULLABLE")
    assert events["properties"] == ("STRING", "NULLABLE")
    cdc = {f.name: f.field_type for f in client.get_table(
        f"{bigquery_emulator.project}.raw.cdc_orders").schema}  # fmt: skip
    assert {cdc[c] for c in ("key", "before", "after", "source")} == {"JSON"}


@pytest.mark.parametrize("append", ["storage_write", "streaming_insert"])
def test_both_append_methods_land_the_same_rows(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse, append: str
) -> None:
    writer = open_warehouse(settings_for(bigquery_emulator, append))
    try:
        prefix = f"{append}-"
        ids = [f"{prefix}{n:03}" for n in range(250)]
        batch = events_table(*ids, properties='{"price": 12.5}', payload='{"a": [1, 2]}')
        writer.append({"events": batch})
        assert event_ids(warehouse, prefix) == ids
        landed = warehouse.query(
            "SELECT event_type, event_date, event_ts, JSON_VALUE(payload, '$.a[1]') AS second, "
            "JSON_VALUE(properties, '$.price') AS price FROM raw.events WHERE event_id = ?",
            [ids[7]],
        ).to_pylist()[0]
        sent = batch.slice(7, 1).to_pylist()[0]
        assert landed["event_type"] == "page_view"
        assert landed["event_date"] == sent["event_date"]
        assert landed["event_ts"] == sent["event_ts"]
        assert (landed["second"], landed["price"]) == ("2", "12.5")
    finally:
        writer.close()


@pytest.fixture
def small_requests(monkeypatch: pytest.MonkeyPatch) -> int:
    """AppendRows requests of 64 KiB (BigQuery's limit is 10 MB): several per small batch."""
    monkeypatch.setattr(appends, "REQUEST_BYTES", 64 * 1024)
    return 64 * 1024


def test_a_batch_bigger_than_one_request_lands_whole(
    warehouse: BigQueryWarehouse, small_requests: int
) -> None:
    """Several AppendRows requests on one pending stream, committed once."""
    ids = [f"big-{n:05}" for n in range(300)]
    batch = events_table(*ids, payload='{"pad": "' + "x" * 1_000 + '"}')
    assert batch.nbytes > 4 * small_requests
    warehouse.append({"events": batch})
    assert event_ids(warehouse, "big-") == ids


def test_a_batch_refused_in_its_last_request_lands_not_at_all(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse, small_requests: int
) -> None:
    """The first requests of a pending stream were taken, the last one refused: the stream is
    never committed, so none of the batch is visible (a committed stream would show half)."""
    from google.cloud import bigquery

    bigquery_emulator.client().create_table(
        bigquery.Table(
            f"{bigquery_emulator.project}.monitoring.whole",
            schema=[bigquery.SchemaField("n", "INT64"), bigquery.SchemaField("pad", "STRING")],
        )
    )
    rows = 300
    numbers = [str(i) for i in range(rows - 1)] + ["not a number"]
    batch = pa.table({"n": numbers, "pad": ["x" * 1_000] * rows})
    assert batch.nbytes > 4 * small_requests
    with pytest.raises(WarehouseError, match=r"refused the rows for monitoring\.whole"):
        warehouse.append_monitoring("whole", batch)
    assert warehouse.table_counts()["monitoring.whole"] == 0


def test_a_refused_table_leaves_the_tables_before_it_landed(warehouse: BigQueryWarehouse) -> None:
    """Not atomic across tables (as the capability says): the failure names the table."""
    now = datetime.now(UTC)
    change = {
        "change_id": "c-1", "op": "c", "lsn": 1, "tx_id": 1, "commit_ts": now,
        "commit_date": now.date(), "key": '{"order_id": "o1"}', "before": None,
        "after": '{"order_id": "o1"}', "source": "not json", "ingested_at": now,
    }  # fmt: skip
    with pytest.raises(WarehouseError, match=r"raw\.cdc_orders\.source is JSON but row 0"):
        warehouse.append(
            {
                "events": events_table("partial-1"),
                "cdc_orders": pa.Table.from_pylist([change], schema=RAW_CDC),
            }
        )
    assert event_ids(warehouse, "partial-") == ["partial-1"]


@pytest.mark.parametrize("append", ["storage_write", "streaming_insert"])
def test_a_schema_error_names_table_and_column_and_is_not_retried(
    bigquery_emulator: BigQueryEmulator, append: str
) -> None:
    writer = open_warehouse(settings_for(bigquery_emulator, append))
    try:
        started = time.monotonic()
        missing = events_table("bad-required", event_type=None)
        with pytest.raises(WarehouseError, match=r"raw\.events\.event_type is REQUIRED") as err:
            writer.append({"events": missing})
        assert not isinstance(err.value, WarehouseUnavailable)  # refused: not to be resent
        letter = dead_letter_row("collector", "r", "p")
        letter["context"] = "{broken"
        with pytest.raises(WarehouseError, match=r"raw\.dead_letter\.context is JSON"):
            writer.append({"dead_letter": pa.Table.from_pylist([letter], schema=RAW_DEAD_LETTER)})
        assert time.monotonic() - started < 10
    finally:
        writer.close()


def test_a_value_bigquery_itself_refuses_is_reported_not_retried(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse
) -> None:
    """A table whose column BigQuery types differently than the rows (changed by hand, say):
    the service refuses, the error names the table, and it comes back at once."""
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    client.create_table(
        bigquery.Table(
            f"{bigquery_emulator.project}.monitoring.hand_made",
            schema=[bigquery.SchemaField("n", "INT64")],
        )
    )
    started = time.monotonic()
    with pytest.raises(WarehouseError, match=r"refused the rows for monitoring\.hand_made") as err:
        warehouse.append_monitoring("hand_made", pa.table({"n": ["twelve"]}))
    assert not isinstance(err.value, WarehouseUnavailable)
    assert time.monotonic() - started < 10
    assert warehouse.table_counts()["monitoring.hand_made"] == 0


def test_queries_are_reads_only(warehouse: BigQueryWarehouse) -> None:
    warehouse.append({"events": events_table("read-1")})
    for statement in (
        "DELETE FROM raw.events WHERE true",
        "INSERT INTO raw.events (event_id) VALUES ('x')",
        "DROP TABLE raw.events",
        "CREATE TABLE mart.x AS SELECT 1 AS a",
        "SELECT 1; DELETE FROM raw.events WHERE true",
        "MERGE raw.events t USING raw.events s ON false WHEN NOT MATCHED THEN INSERT ROW",
        "",
    ):
        with pytest.raises(QueryError):
            warehouse.query(statement)
    assert event_ids(warehouse, "read-") == ["read-1"]
    with pytest.raises(QueryError):
        warehouse.query("SELECT no_such_column FROM raw.events")


def test_max_rows_returns_one_more_to_say_there_were_more(warehouse: BigQueryWarehouse) -> None:
    result = warehouse.query("SELECT x FROM UNNEST(GENERATE_ARRAY(1, 50)) AS x", max_rows=10)
    assert result.num_rows == 11


def test_a_time_limit_goes_with_the_job(warehouse: BigQueryWarehouse) -> None:
    """The job carries job_timeout_ms (the emulator runs this in well under the limit; that
    BigQuery stops a longer job is its own promise, not testable here)."""
    result = warehouse.query("SELECT 7 AS n", timeout_seconds=20)
    assert result.to_pylist() == [{"n": 7}]
    job = warehouse._job("SELECT 7 AS n", None, dry_run=False, timeout_seconds=2.5)
    assert job._properties["configuration"]["jobTimeoutMs"] == "2500", job._properties


def test_counts_dry_runs_monitoring_and_marts(warehouse: BigQueryWarehouse) -> None:
    warehouse.append({"events": events_table("count-1", "count-2")})
    at = pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC"))
    report = pa.table({"check": ["freshness"], "details": ['{"late": 3}'], "at": at})
    warehouse.append_monitoring("checks_demo", report, json_columns={"details"})
    warehouse.append_monitoring("checks_demo", report, json_columns={"details"})
    revenue = pa.array([Decimal("12.3400")], pa.decimal128(18, 4))
    minute = pa.table({"event_type": ["purchase"], "revenue": revenue})
    warehouse.append_mart("revenue_demo", minute)
    counts = warehouse.table_counts()
    assert counts["monitoring.checks_demo"] == 2
    assert counts["mart.revenue_demo"] == 1
    assert counts["raw.events"] >= 2
    late = warehouse.query(
        "SELECT JSON_VALUE(details, '$.late') AS late FROM monitoring.checks_demo"
    )
    assert late.column("late").to_pylist() == ["3", "3"]
    landed = warehouse.query("SELECT revenue FROM mart.revenue_demo").column("revenue")
    assert landed.to_pylist() == [Decimal("12.34")]
    # bqemulator answers every dry run with 0 bytes; Google's service with the bytes scanned.
    assert warehouse.dry_run_bytes("SELECT event_id FROM raw.events") >= 0
    with pytest.raises(QueryError):
        warehouse.dry_run_bytes("DELETE FROM raw.events WHERE true")
    assert warehouse.health().state == "ok"


def test_health_says_recovering_when_bigquery_is_unreachable(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    url = f"bigquery://{bigquery_emulator.project}?endpoint=http://127.0.0.1:9"  # nothing there
    unreachable = open_warehouse(Settings(warehouse_url=url))
    try:
        assert unreachable.health().state == "recovering"
    finally:
        unreachable.close()


def shopstream_sql(
    emulator: BigQueryEmulator, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update(SHOPSTREAM_WAREHOUSE_URL=emulator.warehouse_url(), SHOPSTREAM_DATA_DIR=str(cwd))
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "sql", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_shopstream_sql_asks_bigquery_directly(
    bigquery_emulator: BigQueryEmulator, warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    """No running platform, no query socket: a service answers every process itself."""
    warehouse.append({"events": events_table("sql-1", "sql-2", "sql-3")})
    query = "SELECT event_id FROM raw.events WHERE STARTS_WITH(event_id, 'sql-') ORDER BY 1"
    done = shopstream_sql(bigquery_emulator, tmp_path, query, "--json", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"event_id": "sql-1"}, {"event_id": "sql-2"}]
    assert "truncated at 2 rows" in done.stderr + done.stdout
    refused = shopstream_sql(bigquery_emulator, tmp_path, "DELETE FROM raw.events WHERE true")
    assert refused.returncode != 0
    assert "only a read query" in refused.stderr + refused.stdout
    assert event_ids(warehouse, "sql-") == ["sql-1", "sql-2", "sql-3"]


def test_an_unreachable_storage_api_is_unavailable_after_bounded_retries(
    bigquery_emulator: BigQueryEmulator,
    warehouse: BigQueryWarehouse,  # the layers exist: only the Storage API is missing
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listens on the gRPC address: the append gives up after its retry budget (here
    3 s; 60 s in production) as unavailable, so the caller answers 503 and nothing is
    dead-lettered. The libraries' own retries would go on for 10 to 20 minutes."""
    monkeypatch.setattr(appends, "CALL_TIMEOUT", 3.0)
    url = bigquery_emulator.warehouse_url().replace(bigquery_emulator.grpc_target, "127.0.0.1:9")
    cut_off = open_warehouse(Settings(warehouse_url=url))
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseUnavailable):
            cut_off.append({"events": events_table("cut-off-1")})
        assert time.monotonic() - started < 30
    finally:
        cut_off.close()
