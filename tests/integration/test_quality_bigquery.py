"""`shopstream quality run` on the BigQuery warehouse (the production shape), against bqemulator.

The checks speak DuckDB's SQL; on BigQuery each statement is translated
(shopstream.quality.dialect). A small raw dataset (events, dead letters, order changes, the CDC
schema record) is loaded into one emulator for the module, with one injected anomaly (re-sent
event ids in the last hour), and the run goes through the same entry point as the command
(``quality_warehouse``) with a ``bigquery://`` URL.

Staging and marts cannot be built on the emulator (it lacks functions the marts use), so the
checks on them are covered twice over without it: a required missing table is an error that
names it, and every statement those checks send, translated, is read by sqlglot's BigQuery
grammar with nothing of DuckDB's own left in it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
import sqlglot

from shopstream.config import Settings
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_CDC, RAW_DEAD_LETTER, RAW_EVENTS, RAW_SOURCE_SCHEMAS
from shopstream.quality.checks import CheckContext
from shopstream.quality.dialect import BIGQUERY, WarehouseReader
from shopstream.quality.engine import run_checks
from shopstream.quality.runs import QualityRequest, QualityRun, quality_warehouse
from shopstream.quality.spec import load_config
from shopstream.warehouse import open_warehouse
from tests.support.bigquery_emulator import BigQueryEmulator, bigquery_emulator
from tests.support.rows import event_row

__all__ = ["bigquery_emulator"]  # the fixture, used by name

#: The run's "now" (pinned: windows end at it).
NOW = datetime(2026, 11, 25, 10, 20, tzinfo=UTC)
#: Re-sent events in the last hour: raw.events.duplicates must fail on them.
RESENT = 4
JUDGED = {"pass", "warn", "fail", "learning"}
DEVICES = ["ios", "android", "web_mobile", "web_desktop"]
TYPES = ["page_view", "product_view", "add_to_cart"]


def settings_for(emulator: BigQueryEmulator, data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        warehouse_url=emulator.warehouse_url(), timezone="UTC", data_dir=data_dir, **extra
    )


def _events() -> pa.Table:
    """Three days of events, one every 10 minutes, each type with its own properties; the
    last hour's first events re-sent."""
    rows = []
    start = NOW - timedelta(days=3)
    for i in range(int((NOW - start) / timedelta(minutes=10))):
        at = start + timedelta(minutes=10 * i, seconds=7)
        event_type = TYPES[i % len(TYPES)]
        properties = {"product_id": f"p{i % 9}"} if event_type != "page_view" else {}
        if event_type == "add_to_cart":
            properties["quantity"] = 1 + i % 3
        rows.append(
            event_row(
                f"e-{i:05d}",
                event_type=event_type,
                event_ts=at,
                received_at=at + timedelta(seconds=1),
                event_date=at.date(),
                anonymous_id=f"anon-{i % 40}",
                session_id=f"s-{i // 6}",
                device_type=DEVICES[i % len(DEVICES)],
                properties=json.dumps(properties),
            )
        )
    last_hour = [r for r in rows if r["received_at"] >= NOW - timedelta(hours=1)]
    rows += [dict(r) for r in last_hour[:RESENT]]
    return pa.Table.from_pylist(rows, schema=RAW_EVENTS)


def _changes() -> pa.Table:
    """Order changes every 30 minutes; the newest carries a key the schema record lacks."""
    rows = []
    for i in range(60):
        at = NOW - timedelta(minutes=5 + 30 * i)
        order = {"order_id": f"o{i}", "status": "PAID" if i % 2 else "PENDING"}
        if i == 0:
            order["coupon"] = "WELCOME"  # a column added upstream without a schema record
        rows.append(
            {
                "change_id": f"{1000 - i:016x}/0",
                "op": "c" if i % 2 == 0 else "u",
                "lsn": 1000 - i,
                "tx_id": 500 - i,
                "commit_ts": at,
                "commit_date": at.date(),
                "key": json.dumps({"order_id": f"o{i}"}),
                "before": None,
                "after": json.dumps(order),
                "source": json.dumps({"connector": "shopstream", "table": "orders"}),
                "ingested_at": at + timedelta(seconds=2),
            }
        )
    return pa.Table.from_pylist(rows, schema=RAW_CDC)


def _schemas() -> pa.Table:
    columns = [{"name": "order_id", "type": "text"}, {"name": "status", "type": "text"}]
    row = {
        "raw_table": "cdc_orders",
        "source_schema": "public",
        "source_table": "orders",
        "version": 1,
        "fingerprint": "f1",
        "columns": json.dumps(columns),
        "primary_key": json.dumps(["order_id"]),
        "replica_identity": "default",
        "first_lsn": 1,
        "recorded_at": NOW - timedelta(days=3),
    }
    return pa.Table.from_pylist([row], schema=RAW_SOURCE_SCHEMAS)


def _dead_letters() -> pa.Table:
    rows = []
    for i in range(6):
        row = dead_letter_row(
            "collector", "invalid event", '{"email": "a@b.c"}', {"code": "bad_type"}
        )
        row["received_at"] = NOW - timedelta(minutes=20 + 90 * i)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RAW_DEAD_LETTER)


@pytest.fixture(scope="module")
def loaded(
    bigquery_emulator: BigQueryEmulator, tmp_path_factory: pytest.TempPathFactory
) -> BigQueryEmulator:
    settings = settings_for(bigquery_emulator, tmp_path_factory.mktemp("data"))
    warehouse = open_warehouse(settings)
    try:
        warehouse.ensure_layers()
        warehouse.append(
            {
                "events": _events(),
                "cdc_orders": _changes(),
                "source_schemas": _schemas(),
                "dead_letter": _dead_letters(),
            }
        )
    finally:
        warehouse.close()
    return bigquery_emulator


@pytest.fixture(scope="module")
def default_run(loaded: BigQueryEmulator, tmp_path_factory: pytest.TempPathFactory) -> QualityRun:
    """The shipped checks, as `shopstream quality run` runs them."""
    settings = settings_for(loaded, tmp_path_factory.mktemp("run"))
    return quality_warehouse(settings, QualityRequest(now=NOW))


def test_every_check_of_the_raw_tables_reaches_a_verdict_on_bigquery(
    default_run: QualityRun,
) -> None:
    assert default_run.error is None, default_run.error
    raw = [c for c in default_run.checks if c.table.startswith("raw.")]
    tables = {c.table for c in raw}
    assert {"raw.events", "raw.dead_letter", "raw.source_schemas", "raw.cdc_orders"} <= tables
    kinds = {c.kind for c in raw}
    assert kinds >= {
        "freshness", "volume", "null_rate", "duplicates", "accepted_values", "distribution",
        "schema_drift", "dead_letters",
    }  # fmt: skip
    unjudged = {r.check: r.message for c in raw for r in c.results if r.status not in JUDGED}
    assert not unjudged, unjudged
    # Judged on the rows loaded, not on nothing.
    by_name = {c.name: c for c in default_run.checks}
    assert by_name["raw.events.freshness"].status == "pass"
    assert by_name["raw.cdc_orders.freshness"].status == "pass"
    assert by_name["raw.events.accepted_values.event_type"].status == "pass"
    assert by_name["raw.events.volume_hourly"].status == "learning"  # three days of history
    (drift,) = by_name["raw.events.properties_drift"].results
    assert drift.status == "pass", drift.message
    assert drift.details["window_rows_sampled"] > 0 and drift.details["baseline_rows_sampled"] > 0


def test_a_key_missing_from_the_schema_record_fails_schema_drift(default_run: QualityRun) -> None:
    outcome = next(c for c in default_run.checks if c.name == "raw.source_schemas.schema_drift")
    (result,) = outcome.results
    assert result.check == "raw.source_schemas.schema_drift.cdc_orders"
    assert result.status == "fail", result.message
    assert [row["column"] for row in result.evidence] == ["coupon"]


def test_the_injected_duplicates_fail_and_name_the_resent_ids(default_run: QualityRun) -> None:
    outcome = next(c for c in default_run.checks if c.name == "raw.events.duplicates")
    assert outcome.status == "fail", outcome.results[0].message
    (result,) = outcome.results
    assert result.details["duplicate_keys"] == RESENT
    assert all(row["copies"] == 2 for row in result.evidence)
    assert {row["event_id"] for row in result.evidence} <= {f"e-{i:05d}" for i in range(500)}


def test_staging_and_marts_are_absent_not_errors_by_default(default_run: QualityRun) -> None:
    assert "staging.stg_orders" in default_run.absent
    assert "mart.tracking_coverage" in default_run.absent
    assert not [
        c for c in default_run.checks if c.table.startswith(("staging.", "mart.")) and c.results
    ]


def test_results_and_the_report_land_in_monitoring(
    loaded: BigQueryEmulator, default_run: QualityRun, tmp_path: Path
) -> None:
    assert default_run.report_error is None, default_run.report_error
    warehouse = open_warehouse(settings_for(loaded, tmp_path))
    try:
        rows = warehouse.query(
            "SELECT check_name, status FROM monitoring.data_quality_checks WHERE run_id = ?",
            [default_run.run_id],
        ).to_pylist()
        reports = warehouse.query(
            "SELECT analyst FROM monitoring.data_quality_reports WHERE run_id = ?",
            [default_run.run_id],
        ).to_pylist()
    finally:
        warehouse.close()
    assert len(rows) == len(default_run.results)
    assert {"check_name": "raw.events.duplicates", "status": "fail"} in rows
    assert len(reports) == 1


def test_a_required_table_that_is_not_built_is_an_error_naming_it(
    loaded: BigQueryEmulator, tmp_path: Path
) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(
        "tables:\n"
        "  mart.tracking_coverage:\n"
        "    required: true\n"
        "    checks:\n"
        "      - kind: tracking_coverage\n"
    )
    settings = settings_for(loaded, tmp_path, quality={"checks_file": str(checks)})
    run = quality_warehouse(settings, QualityRequest(select=("mart.",), now=NOW))
    (outcome,) = run.checks
    assert outcome.status == "error"
    assert "mart.tracking_coverage does not exist" in outcome.results[0].message


# -- what the checks on staging and marts would send to BigQuery ------------------------------

#: Tables of the shipped checks that only a transform builds, with the columns they read.
BUILT: dict[str, str] = {
    "staging.stg_events": "event_id VARCHAR, event_type VARCHAR, event_ts TIMESTAMP, "
    "received_at TIMESTAMP, product_id VARCHAR, order_id VARCHAR, price DECIMAL(12,2), "
    "is_bot BOOLEAN",
    "staging.stg_event_items": "event_id VARCHAR, line_no INTEGER, product_id VARCHAR, "
    "event_ts TIMESTAMP, received_at TIMESTAMP",
    "staging.stg_users": "user_id VARCHAR, email VARCHAR, grade VARCHAR, "
    "updated_at TIMESTAMP, _cdc_changed_at TIMESTAMP",
    "staging.stg_products": "product_id VARCHAR, price DECIMAL(12,2), storage_type VARCHAR, "
    "updated_at TIMESTAMP, _cdc_changed_at TIMESTAMP",
    "staging.stg_orders": "order_id VARCHAR, user_id VARCHAR, total_amount DECIMAL(12,2), "
    "status VARCHAR, delivery_type VARCHAR, created_at TIMESTAMP, _cdc_changed_at TIMESTAMP",
    "staging.stg_orders_history": "order_id VARCHAR, status VARCHAR, _cdc_op VARCHAR, "
    "valid_from TIMESTAMP, valid_to TIMESTAMP, _cdc_change_id VARCHAR",
    "staging.stg_order_items": "order_id VARCHAR, line_no INTEGER, product_id VARCHAR, "
    "quantity INTEGER, unit_price DECIMAL(12,2), _cdc_changed_at TIMESTAMP",
    "staging.stg_payments": "payment_id VARCHAR, order_id VARCHAR, amount DECIMAL(12,2), "
    "status VARCHAR, method VARCHAR, _cdc_changed_at TIMESTAMP",
    "mart.tracking_coverage": "coverage_date DATE, orders_in_db BIGINT, "
    "matched_orders BIGINT, orders_without_event BIGINT",
}
#: Rows that make the checks alarm, so that their evidence queries are sent too.
ROWS = [
    "INSERT INTO staging.stg_orders VALUES ('o1', NULL, -5, 'LOST', 'ROOM', "
    "TIMESTAMP '2026-11-25 09:00', TIMESTAMP '2026-11-25 09:00'), "
    "('o1', 'u1', 10, 'PAID', 'ROOM', TIMESTAMP '2026-11-25 09:10', TIMESTAMP '2026-11-25 09:10')",
    "INSERT INTO staging.stg_order_items VALUES ('o2', 1, NULL, 0, -1, "
    "TIMESTAMP '2026-11-25 09:00')",
    "INSERT INTO staging.stg_payments VALUES ('pay1', 'o1', 99, 'PAID', 'CASH', "
    "TIMESTAMP '2026-11-25 09:00')",
    "INSERT INTO staging.stg_events VALUES ('e1', 'add_to_cart', TIMESTAMP '2026-11-25 09:30', "
    "TIMESTAMP '2026-11-25 09:30', 'p404', NULL, 3.5, false)",
    "INSERT INTO staging.stg_orders_history VALUES ('o1', 'SHIPPING', 'c', "
    "TIMESTAMP '2026-11-25 09:00', NULL, 'c1')",
    "INSERT INTO mart.tracking_coverage VALUES (DATE '2026-11-24', 100, 50, 50)",
]
#: BigQuery functions sqlglot has no node for (it reads them as plain calls).
BIGQUERY_FUNCTIONS = {"UNIX_MICROS", "JSON_QUERY", "JSON_KEYS", "APPROX_QUANTILES", "OFFSET"}
#: DuckDB's own words: none may be left in a statement sent to BigQuery.
DUCKDB_ONLY = re.compile(
    r"\b(epoch_us|epoch|list_contains|approx_quantile|json_extract_string|arg_min|arg_max|"
    r"json_exists|TIME_TO_UNIX|USING\s+SAMPLE|RESERVOIR|SEED|REPEATABLE|MATERIALIZED)\b|"
    r'FILTER\s*\(\s*WHERE|"',
    re.IGNORECASE,
)


#: The raw rows loaded into the emulator, by table.
RAW = {
    "raw.events": _events,
    "raw.cdc_orders": _changes,
    "raw.source_schemas": _schemas,
    "raw.dead_letter": _dead_letters,
}


@pytest.fixture(scope="module")
def sent_to_bigquery() -> list[tuple[str, str]]:
    """Every statement the shipped checks send (run on DuckDB, where staging and marts can be
    made, over the same raw rows as the emulator's), as (check, the statement translated for
    BigQuery): the emulator runs on DuckDB too, so it forgives DuckDB's words that BigQuery
    would refuse, and it never sees the staging and mart checks."""
    con = duckdb.connect()
    for layer in ("raw", "staging", "mart"):
        con.execute(f"CREATE SCHEMA {layer}")
    for table, rows in RAW.items():
        batch = rows()  # noqa: F841 - read by DuckDB's replacement scan
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM batch")
    for table, columns in BUILT.items():
        con.execute(f"CREATE TABLE {table} ({columns})")
    for statement in ROWS:
        con.execute(statement)
    sent: list[tuple[str, str]] = []
    current = [""]

    def duckdb_query(sql: str, parameters: list[Any] | None = None, **_: Any) -> pa.Table:
        return con.sql(sql, params=parameters).to_arrow_table()

    # The reader a BigQuery warehouse gets, for its translation (its queries go to DuckDB).
    reader = WarehouseReader(duckdb_query, BIGQUERY, "shop-prod")

    def query(sql: str, parameters: list[Any] | None = None, **_: Any) -> pa.Table:
        if "information_schema" not in sql:  # the catalogue: asked natively on BigQuery
            sent.append((current[0], reader.translate(sql)))
        return duckdb_query(sql, parameters)

    config = load_config()
    ctx = CheckContext(query=query, now=NOW, timezone=ZoneInfo("UTC"))
    planned = [c for c in config.checks() if c.table in BUILT or c.table in RAW]
    for check in planned:
        current[0] = check.name
        run = run_checks(config, ctx, select=(check.name,))
        errors = [r.message for r in run.results if r.status == "error"]
        assert not errors, errors  # on DuckDB they all run
    assert len({name for name, _ in sent}) == len(planned)
    return sent


def test_every_check_sends_bigquery_sql(sent_to_bigquery: list[tuple[str, str]]) -> None:
    checks = {check for check, _ in sent_to_bigquery}
    assert any(c.startswith("staging.") for c in checks)
    assert "mart.tracking_coverage.tracking_coverage" in checks
    for check, sql in sent_to_bigquery:
        words = re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql)  # string literals left out
        assert not DUCKDB_ONLY.search(words), f"{check}: {sql}"
        tree = sqlglot.parse_one(sql, read="bigquery")  # raises when BigQuery's grammar refuses
        # Functions sqlglot does not know in BigQuery's dialect: only BigQuery's own.
        unknown = {f.name.upper() for f in tree.find_all(sqlglot.exp.Anonymous)}
        assert unknown <= BIGQUERY_FUNCTIONS, f"{check}: {unknown - BIGQUERY_FUNCTIONS}: {sql}"
        assert re.search(r"`shop-prod`\.`?(raw|staging|mart)`?\.", sql), sql
