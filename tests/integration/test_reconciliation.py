"""The whole pipeline against the truth: generated shoppers (fixed seed) buy through the shop
database and report it to the collector; the platform captures the database's changes and
transforms raw into staging and marts; every figure must then equal the shop database or the
generator's ground truth. Equal, not approximately.

One pipeline run per module: a real PostgreSQL with logical replication, the platform in this
process with its DuckDB writer process (the shape `shopstream run` uses), the collector over
real HTTP, the CDC reader, and the transform run by the platform where it holds the file.
Tests that change raw data (duplicates) come last and transform again, with nothing running.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from shopstream.config import Settings
from shopstream.generators.clickstream import FUNNEL_STEPS
from shopstream.generators.coherent import CoherentTruth, play_coherent
from shopstream.generators.shop import SHOP_TABLES, setup_shop_schema
from shopstream.platform import Parts, Platform
from shopstream.transform.runner import TransformRequest, TransformResult
from shopstream.transform.runs import transform_warehouse
from tests.support.pg_fixtures import drop_database
from tests.support.shop_figures import (
    DAILY_SALES_COLUMNS,
    customer_rfm,
    daily_sales,
    normalise,
    pg_rows,
)

ZONE = "Asia/Seoul"  # business days differ from UTC days
LOSS = 0.1  # high enough that a few hundred sessions lose some purchase events
SEED = 20261202
MARKER = "reconciliation_marker"  # the last change; when it is in raw, every change is


@dataclass
class Pipeline:
    dsn: str
    settings: Settings
    truth: CoherentTruth
    transform: TransformResult

    @property
    def database(self) -> Path:
        return self.settings.data_dir / "shopstream.duckdb"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.database), read_only=True) as con:
            return con.execute(sql).fetchall()

    def transform_again(self) -> TransformResult:
        return transform_warehouse(self.settings, TransformRequest())


async def _run(dsn: str, settings: Settings) -> tuple[CoherentTruth, TransformResult]:
    platform = Platform(settings, Parts(host="127.0.0.1", port=0, cdc_dsn=dsn))
    stop = asyncio.Event()
    running = asyncio.create_task(platform.run(stop=stop))
    try:
        while (status := platform.status()).collector is None or not status.collector.url:
            await asyncio.sleep(0.1)
        now = datetime.now(UTC)
        truth = await play_coherent(
            dsn,
            status.collector.url,
            seed=SEED,
            sessions=800,
            timezone=ZONE,
            purchase_event_loss=LOSS,
            window=(now - timedelta(hours=30), now - timedelta(hours=1)),
            bad_fraction=0.005,
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {MARKER} VALUES (1)")
        for _ in range(600):
            found = platform.warehouse.query(
                "SELECT count(*) AS n FROM information_schema.tables "
                f"WHERE table_schema = 'raw' AND table_name = 'cdc_{MARKER}'"
            ).to_pylist()[0]["n"]
            if found:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the CDC reader did not catch up within a minute")
        # Where `shopstream run` runs it: in the writer process that holds the file.
        result = await asyncio.to_thread(platform.transform)
    finally:
        stop.set()
        summary = await running
        platform.close()
    assert summary.failures == (), summary.failures
    return truth, result


@pytest.fixture(scope="module")
def pipeline(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    dbname = f"reconcile_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.create_database(dbname)
    try:
        setup_shop_schema(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {MARKER} (id integer PRIMARY KEY)")
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("reconcile"),
            timezone=ZONE,
            cdc={"slot_name": f"reconcile_{uuid.uuid4().hex[:8]}"},
            transform={"schedule_minutes": 0},
        )
        truth, result = asyncio.run(_run(dsn, settings))
        yield Pipeline(dsn, settings, truth, result)
    finally:
        drop_database(postgres_server, dbname)


def snapshot(pipeline: Pipeline) -> dict[str, str]:
    """A digest of every staging, mart and monitoring table's rows (views over time excepted)."""
    tables = pipeline.query(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('staging', 'mart') AND table_type = 'BASE TABLE' ORDER BY 1, 2"
    )
    digests = {}
    for schema, table in tables:
        rows = pipeline.query(f"SELECT * FROM {schema}.{table}")
        text = "\n".join(sorted(repr(row) for row in rows))
        digests[f"{schema}.{table}"] = hashlib.sha256(text.encode()).hexdigest()
    return digests


# -- the run itself ---------------------------------------------------------------------------


def test_the_transform_builds_every_model_and_passes_every_dbt_test(pipeline: Pipeline) -> None:
    result = pipeline.transform
    assert result.success, result.failures()
    built = {m.name for m in result.models}
    expected = {f"stg_{t}" for t in SHOP_TABLES} | {
        "stg_events",
        "stg_identities",
        "daily_sales",
        "daily_funnel",
        "sessions",
        "product_performance",
        "customer_rfm",
        "cohort_retention",
        "cart_abandonment",
        "tracking_coverage",
        "pipeline_freshness",
    }
    assert expected <= built, expected - built
    assert result.tests_failed == 0 and result.tests_passed > 50


# -- staging equals the shop database ------------------------------------------------------------


@pytest.mark.parametrize("table", SHOP_TABLES)
def test_every_staging_table_equals_the_shop_database(pipeline: Pipeline, table: str) -> None:
    with psycopg.connect(pipeline.dsn) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            )
        ]
    listed = ", ".join(columns)
    expected = pg_rows(pipeline.dsn, f"SELECT {listed} FROM {table} ORDER BY {listed}")
    actual = [
        tuple(normalise(v) for v in row)
        for row in pipeline.query(f"SELECT {listed} FROM staging.stg_{table} ORDER BY {listed}")
    ]
    assert expected, f"the shop database's {table} is empty: nothing was checked"
    assert actual == expected


def test_stg_events_holds_every_accepted_event_once(pipeline: Pipeline) -> None:
    clicks = pipeline.truth.clicks
    [(staged, distinct)] = pipeline.query(
        "SELECT count(*), count(DISTINCT event_id) FROM staging.stg_events"
    )
    [(rejected,)] = pipeline.query("SELECT count(*) FROM staging.stg_events_rejected")
    assert staged == distinct
    assert staged + rejected == clicks.accepted
    by_type = dict(pipeline.query("SELECT event_type, count(*) FROM staging.stg_events GROUP BY 1"))
    assert by_type == dict(clicks.by_event_type)


# -- marts equal the shop database ----------------------------------------------------------------


def test_daily_sales_equals_the_shop_database(pipeline: Pipeline) -> None:
    expected = daily_sales(pipeline.dsn, ZONE)
    actual = [
        tuple(normalise(v) for v in row)
        for row in pipeline.query(
            f"SELECT {DAILY_SALES_COLUMNS} FROM mart.daily_sales ORDER BY 1, 2, 3"
        )
    ]
    assert len({row[0] for row in expected}) >= 2, "orders on one day only: days not checked"
    assert any(row[7] for row in expected), "no cancellation: cancellations not checked"
    assert any(row[9] for row in expected), "no refund: refunds not checked"
    assert actual == expected


def test_rfm_of_sampled_customers_equals_the_shop_database(pipeline: Pipeline) -> None:
    expected = customer_rfm(pipeline.dsn, ZONE)
    sample = expected[:: max(1, len(expected) // 25)]
    listed = ", ".join(f"'{row[0]}'" for row in sample)
    actual = [
        tuple(normalise(v) for v in row)
        for row in pipeline.query(
            "SELECT user_id, frequency, monetary, last_order_date FROM mart.customer_rfm "
            f"WHERE user_id IN ({listed}) ORDER BY user_id"
        )
    ]
    assert len(sample) >= 10
    assert actual == sample


# -- marts equal what the trackers sent -------------------------------------------------------


def test_funnel_sessions_per_step_equal_the_truth(pipeline: Pipeline) -> None:
    steps = ", ".join(f"{step}_sessions" for step in FUNNEL_STEPS)
    actual = {
        (str(day), device): list(counts)
        for day, device, *counts in pipeline.query(
            f"SELECT session_date, device_type, {steps} FROM mart.daily_funnel"
        )
    }
    expected = {key: list(counts) for key, counts in pipeline.truth.clicks.funnel.items()}
    # The truth lists a day x device once a session reached its first step.
    actual = {key: counts for key, counts in actual.items() if any(counts)}
    assert sum(counts[-1] for counts in expected.values()) > 10, "too few purchases to check"
    assert actual == expected


def test_sessions_equal_the_truth(pipeline: Pipeline) -> None:
    actual = {
        (str(day), device): (sessions, events, purchases, normalise(revenue))
        for day, device, sessions, events, purchases, revenue in pipeline.query(
            "SELECT session_date, device_type, count(*), sum(events), sum(purchases), "
            "sum(revenue) FROM mart.sessions GROUP BY 1, 2"
        )
    }
    expected = {
        key: (f.sessions, f.events, f.purchases, normalise(f.revenue))
        for key, f in pipeline.truth.clicks.sessions.items()
    }
    assert actual == expected


def test_tracking_coverage_equals_the_configured_loss(pipeline: Pipeline) -> None:
    clicks = pipeline.truth.clicks
    lost = clicks.lost_revenue()
    expected = {
        day: (t.orders, t.matched, t.unmatched_orders, normalise(-lost[day]))
        for day, t in clicks.tracking.items()
        if t.orders or t.purchase_events
    }
    actual = {
        str(day): (orders, matched, without_event, normalise(difference))
        for day, orders, matched, without_event, difference in pipeline.query(
            "SELECT coverage_date, orders_in_db, matched_orders, orders_without_event, "
            "revenue_difference FROM mart.tracking_coverage"
        )
    }
    assert actual == expected
    lost_orders = sum(t.unmatched_orders for t in clicks.tracking.values())
    assert lost_orders == sum(t.lost_on_purpose for t in clicks.tracking.values()) > 0


# -- exactly once -------------------------------------------------------------------------------


def test_every_column_of_every_model_is_documented(pipeline: Pipeline) -> None:
    manifest = json.loads(
        (
            pipeline.settings.data_dir / "transform" / "project" / "target" / "manifest.json"
        ).read_text()
    )
    documented = {
        (node["schema"], node["name"]): {
            name for name, column in node["columns"].items() if column.get("description")
        }
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node.get("description")
    }
    missing = []
    for schema, table, column in pipeline.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE table_schema IN ('staging', 'mart', 'monitoring') ORDER BY 1, 2, ordinal_position"
    ):
        if table.endswith("__dbt_tmp") or table.endswith("__dbt_backup"):
            continue
        if (schema, table) not in documented or column not in documented[(schema, table)]:
            missing.append(f"{schema}.{table}.{column}")
    assert missing == []


def test_transforming_again_without_new_data_changes_nothing(pipeline: Pipeline) -> None:
    before = snapshot(pipeline)
    result = pipeline.transform_again()
    assert result.success, result.failures()
    assert snapshot(pipeline) == before


def test_replayed_raw_rows_change_nothing(pipeline: Pipeline) -> None:
    before = snapshot(pipeline)
    with duckdb.connect(str(pipeline.database)) as con:
        # What at-least-once delivery may do: every row of raw, once more, later.
        con.execute("INSERT INTO raw.events SELECT * FROM raw.events USING SAMPLE 20 PERCENT")
        for table in SHOP_TABLES:
            con.execute(
                f"INSERT INTO raw.cdc_{table} SELECT * FROM raw.cdc_{table} USING SAMPLE 20 PERCENT"
            )
    result = pipeline.transform_again()
    assert result.success, result.failures()
    assert snapshot(pipeline) == before
    [(revenue,)] = pipeline.query("SELECT sum(gross_revenue) FROM mart.daily_sales")
    assert Decimal(revenue) > 0
