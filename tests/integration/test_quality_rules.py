"""The structural, business-rule and pipeline checks of default_checks.yml on generated history:
silent on clean data, and each injected anomaly caught by the right check, with evidence that
names what was injected.

One module fixture: two weeks of history (shopstream.generators.history) in a real DuckDB file,
staging and the tracking-coverage mart built by a real dbt run, the checks run; then the
anomalies are injected into raw (shopstream.generators.anomalies, plus a double charge and lost
purchase events written here), staging is rebuilt and the checks run again. Checks read the
file through the warehouse's own read-only query path.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from shopstream.generators import anomalies
from shopstream.generators.history import HistoryPlan, write_history
from shopstream.quality.checks import CheckContext
from shopstream.quality.engine import run_checks
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import QualityConfig, load_config
from shopstream.transform.cdc_models import LATEST_SCHEMAS_SQL, captured_tables
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.dbt_project import (
    captured_vars,
    duckdb_output,
    make_workspace,
    run_dbt,
    write_profile,
)

TIMEZONE = "Asia/Seoul"
END = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # history's end: noon in Seoul
#: The quality run's "now": the last complete hour is history's last, [02:00, 03:00) UTC,
#: and the JSON keys' window (the last hour) is that hour too.
NOW = END
AT = END - timedelta(minutes=40)  # injections: inside the last complete hour
#: The kinds of this part of the agent (the statistical kinds are tested with their own).
KINDS = {
    "schema_drift",
    "relationships",
    "rule",
    "replication",
    "dead_letters",
    "tracking_coverage",
}
#: Only what the checks read: staging of the shop and events, the coverage mart.
MODELS = [
    "+tracking_coverage",
    "+stg_orders_history",
    "+stg_payments",
    "+stg_event_items",
    "+stg_users",
    "+stg_products",
]


def our_checks() -> QualityConfig:
    """default_checks.yml with only this part's kinds."""
    config = load_config()
    tables = {
        name: table.model_copy(update={"checks": [c for c in table.checks if c.kind in KINDS]})
        for name, table in config.tables.items()
    }
    return QualityConfig(
        tables={name: table for name, table in tables.items() if table.checks},
        pipeline=[c for c in config.pipeline if c.kind in KINDS],
    )


def run_quality(database: Path, config: QualityConfig | None = None) -> dict[str, CheckResult]:
    warehouse = DuckDBWarehouse(database, read_only=True)
    try:
        ctx = CheckContext(query=warehouse.query, now=NOW, timezone=ZoneInfo(TIMEZONE))
        results = run_checks(config or our_checks(), ctx).results
    finally:
        warehouse.close()
    return {r.check: r for r in results}


@dataclass
class Shop:
    clean: dict[str, CheckResult]
    #: The whole of default_checks.yml, every kind, on the clean history.
    every_default: dict[str, CheckResult]
    broken: dict[str, CheckResult]
    injected: dict[str, Any]


def build(workspace: Path, models: list[str], *extra: str) -> None:
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    try:
        run_dbt(
            workspace,
            "run",
            "--select",
            *MODELS,
            *extra,
            variables={**captured_vars(models), "timezone": TIMEZONE},
        )
    finally:
        # dbt-duckdb keeps its DuckDB instance open after the run: release the file, as a
        # separate `shopstream transform` process would.
        DuckDBConnectionManager.close_all_connections()


def double_charges(con: duckdb.DuckDBPyConnection, count: int) -> list[str]:
    """A second PAID payment on ``count`` paid orders (a double charge), as the reader would
    have captured it: new payment ids (PAYX), change ids and LSNs after everything in raw."""
    top = con.execute("SELECT max(lsn) FROM raw.cdc_payments").fetchone()
    base = max(int(top[0] or 0) if top else 0, 0x1000000) + 0x100000
    at_us = int(AT.timestamp() * 1_000_000)
    rows = con.execute(
        f"""INSERT INTO raw.cdc_payments
            WITH paid AS (
                SELECT after, row_number() OVER (ORDER BY after->>'order_id') AS n
                FROM raw.cdc_payments
                WHERE op = 'c' AND after->>'status' = 'PAID' AND commit_ts < ?
                ORDER BY after->>'order_id' LIMIT ?)
            SELECT printf('%016X-%08d', {base} + n * 16, 1), 'c', {base} + n * 16, 800000000 + n,
                   make_timestamptz({at_us} + n * 1000000), make_timestamptz({at_us})::DATE,
                   json_object('payment_id', printf('PAYX%010d', n)), NULL::JSON,
                   json_merge_patch(after, json_object('payment_id', printf('PAYX%010d', n))),
                   '{{"connector":"postgresql","db":"shop","schema":"public","table":"payments"}}',
                   make_timestamptz({at_us} + n * 1000000 + 80000)
            FROM paid
            RETURNING after->>'order_id'""",
        [AT, count],
    ).fetchall()
    return [r[0] for r in rows]


def lose_purchase_events(con: duckdb.DuckDBPyConnection, share_per_mille: int) -> list[str]:
    """Delete the purchase events of about ``share_per_mille``/1000 of the orders placed on the
    last complete business day (a tracking release that broke the purchase call)."""
    zone = ZoneInfo(TIMEZONE)
    day = NOW.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    rows = con.execute(
        """DELETE FROM raw.events
           WHERE event_type = 'purchase'
             AND event_ts >= ? AND event_ts < ?
             AND hash(properties->>'order_id', 'lost') % 1000 < ?
           RETURNING properties->>'order_id'""",
        [start, start + timedelta(days=1), share_per_mille],
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    directory = tmp_path_factory.mktemp("quality_rules")
    database = directory / "shopstream.duckdb"
    plan = HistoryPlan(days=15, end=END, events_per_day=4000, orders_per_day=200, timezone=TIMEZONE)
    with duckdb.connect(str(database)) as con:
        write_history(con, plan)
        cursor = con.execute(LATEST_SCHEMAS_SQL)
        names = [d[0] for d in cursor.description or []]
        tables = captured_tables([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
    workspace = directory / "transform"
    models = make_workspace(workspace, tables)
    write_profile(workspace, {"duckdb": duckdb_output(database)}, "duckdb")
    build(workspace, models)
    clean = run_quality(database)
    every_default = run_quality(database, load_config())

    injected: dict[str, Any] = {}
    with duckdb.connect(str(database)) as con:
        # Each injector changes the latest version before its `at`: staggered, so that one
        # does not undo another on an order both pick.
        injected["schema_drift"] = anomalies.inject_schema_drift(con, at=AT - timedelta(minutes=20))
        injected["transitions"] = anomalies.inject_invalid_status_transition(
            con, at=AT - timedelta(minutes=10), count=10
        )
        injected["totals"] = anomalies.inject_broken_order_totals(con, at=AT, count=20)
        injected["orphans"] = anomalies.inject_orphan_order_items(con, at=AT, count=20)
        injected["dead_letters"] = anomalies.inject_dead_letter_surge(con, at=AT, count=500)
        injected["double_charges"] = double_charges(con, 3)
        injected["lost_purchases"] = lose_purchase_events(con, 300)
    build(workspace, models, "--full-refresh")
    broken = run_quality(database)
    yield Shop(clean, every_default, broken, injected)
    shutil.rmtree(directory, ignore_errors=True)


# -- clean history: no alarm --------------------------------------------------------------------


EXPECTED_CHECKS = {
    "raw.events.properties_drift",
    "raw.dead_letter.dead_letters",
    "raw.source_schemas.schema_drift.cdc_orders",
    "raw.source_schemas.schema_drift.cdc_order_items",
    "staging.stg_events.relationships.product_id",
    "staging.stg_event_items.relationships.product_id",
    "staging.stg_orders.relationships.user_id",
    "staging.stg_orders.total_matches_items",
    "staging.stg_orders.payments_within_total",
    "staging.stg_orders.no_negative_amounts",
    "staging.stg_orders_history.valid_status_transitions",
    "staging.stg_order_items.relationships.order_id",
    "staging.stg_order_items.relationships.product_id",
    "staging.stg_payments.relationships.order_id",
    "mart.tracking_coverage.tracking_coverage",
}


def test_clean_history_raises_no_alarm(shop: Shop) -> None:
    assert set(shop.clean) >= EXPECTED_CHECKS, EXPECTED_CHECKS - set(shop.clean)
    alarms = {name: r.message for name, r in shop.clean.items() if r.status != "pass"}
    assert not alarms


def test_every_default_check_runs_on_shopstreams_tables(shop: Shop) -> None:
    """Each default check's options, columns and SQL fit the tables the pipeline builds: no
    check of default_checks.yml errs on them (the statistical kinds say "learning" over two
    weeks of history instead of judging), and none alarms on clean data."""
    config = load_config()
    errors = {n: r.message for n, r in shop.every_default.items() if r.status == "error"}
    assert not errors
    alarms = {n: r.message for n, r in shop.every_default.items() if r.alarming}
    assert not alarms
    ran = {r.check.split(".")[0] + "." + r.check.split(".")[1] for r in shop.every_default.values()}
    assert {c.table for c in config.checks() if c.table != "pipeline"} <= ran


def test_clean_history_is_really_judged(shop: Shop) -> None:
    """Passing because something was looked at, not because nothing was."""
    clean = shop.clean
    assert clean["staging.stg_order_items.relationships.order_id"].details["rows_with_key"] > 50
    assert clean["staging.stg_orders.relationships.user_id"].details["rows_with_key"] > 1000
    coverage = clean["mart.tracking_coverage.tracking_coverage"]
    assert coverage.observed is not None and 0.95 <= coverage.observed < 1  # ad blockers
    letters = clean["raw.dead_letter.dead_letters"]
    assert letters.details["accepted_events"] > 0 and letters.expected is not None
    drift = clean["raw.events.properties_drift"]
    assert drift.details["baseline_rows_sampled"] > 1000


# -- each anomaly, the right check ------------------------------------------------------------


def test_orphaned_order_items_fail_naming_the_orphans(shop: Shop) -> None:
    result = shop.broken["staging.stg_order_items.relationships.order_id"]
    assert result.status == "fail", result.message
    assert result.details["orphans"] == 20
    orphans = {row["orphan_key"] for row in result.evidence}
    assert orphans and orphans <= set(shop.injected["orphans"].keys)


def test_broken_order_totals_fail_naming_the_orders(shop: Shop) -> None:
    result = shop.broken["staging.stg_orders.total_matches_items"]
    assert result.status == "fail", result.message
    assert result.observed == 20
    for row in result.evidence:
        assert row["order_id"] in shop.injected["totals"].keys
        assert float(row["total_amount"]) - float(row["items_total"]) == pytest.approx(1000)


def test_invalid_status_transitions_fail_naming_the_moves(shop: Shop) -> None:
    result = shop.broken["staging.stg_orders_history.valid_status_transitions"]
    assert result.status == "fail", result.message
    assert result.observed == 10
    for row in result.evidence:
        assert row["order_id"] in shop.injected["transitions"].keys
        assert (row["previous_status"], row["status"]) == ("DELIVERED", "PENDING")


def test_double_charges_fail_the_payments_rule(shop: Shop) -> None:
    result = shop.broken["staging.stg_orders.payments_within_total"]
    assert result.status == "fail", result.message
    assert {row["order_id"] for row in result.evidence} == set(shop.injected["double_charges"])


def test_dead_letter_surge_fails_with_its_reason(shop: Shop) -> None:
    result = shop.broken["raw.dead_letter.dead_letters"]
    assert result.status == "fail", result.message
    top = result.evidence[0]
    assert (top["reason"], top["source"]) == ("missing_field", "collector")
    assert top["count"] >= 500
    # The sample is redacted: the surge's payloads carry no personal field, its context an IP
    # that is not shown at all.
    assert "198.51.100." not in str(result.evidence)


def test_lost_purchase_events_lower_tracking_coverage(shop: Shop) -> None:
    result = shop.broken["mart.tracking_coverage.tracking_coverage"]
    assert result.status == "fail", result.message
    assert result.observed is not None and result.observed < 0.8
    lost = set(shop.injected["lost_purchases"])
    assert result.evidence and {row["order_id"] for row in result.evidence} <= lost


def test_schema_drift_of_a_captured_table_fails_naming_columns_and_types(shop: Shop) -> None:
    result = shop.broken["raw.source_schemas.schema_drift.cdc_orders"]
    assert result.status == "fail", result.message
    changes = {(row["column"], row["change"]): row for row in result.evidence}
    retyped = changes[("total_amount", "type changed")]
    assert (retyped["old_type"], retyped["new_type"]) == ("numeric(14,2)", "double precision")
    assert changes[("coupon_code", "added")]["new_type"] == "text"
    assert shop.broken["raw.source_schemas.schema_drift.cdc_payments"].status == "pass"


def test_schema_drift_of_event_properties_fails_naming_keys(shop: Shop) -> None:
    result = shop.broken["raw.events.properties_drift"]
    assert result.status == "fail", result.message
    found = {(row["event_type"], row["key"], row["change"]) for row in result.evidence}
    assert ("product_view", "coupon", "appeared") in found
    assert ("product_view", "price", "disappeared") in found
    assert all(row["event_type"] == "product_view" for row in result.evidence)


def test_anomalies_do_not_spill_into_unrelated_checks(shop: Shop) -> None:
    for name in (
        "staging.stg_orders.relationships.user_id",
        "staging.stg_orders.no_negative_amounts",
        "staging.stg_payments.relationships.order_id",
        "staging.stg_event_items.relationships.product_id",
    ):
        assert shop.broken[name].status == "pass", shop.broken[name].message
