"""Edges of the rule-like checks on raw history (no dbt): a dead-letter trickle above the
absolute threshold is this shop's normal and stays quiet while a surge on top of it fails;
at-least-once repeats of a schema record are no drift; change rows with keys no schema has
fail; a rare JSON key is not a new one; bad options and missing tables say what to do."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
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
from shopstream.quality.spec import QualityConfig
from shopstream.quality.windows import last_complete
from shopstream.warehouse.duckdb.database import DuckDBWarehouse

END = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
TIMEZONE = "Asia/Seoul"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Nine days of raw history whose trackers send 3% bad events (above warn_rate's 1%)."""
    directory = tmp_path_factory.mktemp("quality_edges")
    database = directory / "clean.duckdb"
    plan = HistoryPlan(
        days=9,
        end=END,
        events_per_day=3000,
        orders_per_day=100,
        timezone=TIMEZONE,
        dead_letter_rate=0.03,
    )
    with duckdb.connect(str(database)) as con:
        write_history(con, plan)
    yield database
    shutil.rmtree(directory, ignore_errors=True)


def copy_of(database: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(database, copy)
    return copy


def check(database: Path, config: dict[str, Any], now: datetime = END) -> list[CheckResult]:
    warehouse = DuckDBWarehouse(database, read_only=True)
    try:
        ctx = CheckContext(query=warehouse.query, now=now, timezone=ZoneInfo(TIMEZONE))
        return run_checks(QualityConfig.model_validate(config), ctx).results
    finally:
        warehouse.close()


def one(database: Path, table: str, spec: dict[str, Any], **table_spec: Any) -> CheckResult:
    [result] = check(database, {"tables": {table: {**table_spec, "checks": [spec]}}})
    return result


DEAD_LETTERS = {"kind": "dead_letters", "window": "hour", "min_count": 20}


def test_a_steady_trickle_of_dead_letters_is_normal(history: Path) -> None:
    # The last complete hour, and an earlier one judged with no minimum count at all.
    results = [
        one(history, "raw.dead_letter", DEAD_LETTERS),
        *check(
            history,
            {"tables": {"raw.dead_letter": {"checks": [{**DEAD_LETTERS, "min_count": 1}]}}},
            now=END - timedelta(hours=3),
        ),
    ]
    for result in results:
        assert result.status == "pass", result.message
        assert result.observed is not None and result.observed > 0.01  # above warn_rate
        assert result.expected is not None and result.expected > 0.01  # ... and usual here


def test_a_surge_on_top_of_the_trickle_fails(history: Path, tmp_path: Path) -> None:
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        anomalies.inject_dead_letter_surge(con, at=END - timedelta(minutes=30), count=300)
    result = one(database, "raw.dead_letter", DEAD_LETTERS)
    assert result.status == "fail", result.message
    assert result.evidence[0]["reason"] == "missing_field"


def test_a_few_dead_letters_in_a_quiet_shop_never_alarm(history: Path, tmp_path: Path) -> None:
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        anomalies.inject_dead_letter_surge(con, at=END - timedelta(minutes=30), count=15)
    result = one(database, "raw.dead_letter", {**DEAD_LETTERS, "min_count": 100})
    assert result.status == "pass", result.message


def test_repeated_schema_records_are_one_version(history: Path, tmp_path: Path) -> None:
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        # At-least-once: the reader wrote the same version again, recently.
        con.execute(
            "INSERT INTO raw.source_schemas SELECT * REPLACE (? AS recorded_at) "
            "FROM raw.source_schemas",
            [END - timedelta(hours=1)],
        )
    results = check(
        database,
        {"tables": {"raw.source_schemas": {"checks": [{"kind": "schema_drift", "source": "cdc"}]}}},
    )
    assert len(results) == 5
    assert {r.status for r in results} == {"pass"}, [r.message for r in results]


def test_change_rows_with_keys_no_schema_has_fail(history: Path, tmp_path: Path) -> None:
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        con.execute(
            """UPDATE raw.cdc_payments
               SET "after" = json_merge_patch("after", '{"card_number": "4111111111111111"}')
               WHERE commit_ts >= ? AND "after" IS NOT NULL""",
            [END - timedelta(hours=6)],
        )
    results = {
        r.check: r
        for r in check(
            database,
            {
                "tables": {
                    "raw.source_schemas": {
                        "checks": [{"kind": "schema_drift", "source": "cdc", "name": "drift"}]
                    }
                }
            },
        )
    }
    result = results["drift.cdc_payments"]
    assert result.status == "fail", result.message
    assert "card_number" in result.message
    [row] = result.evidence
    assert (row["column"], row["change"]) == ("card_number", "undeclared key")
    assert "4111" not in str(result.evidence)  # the key is named, never a value
    assert results["drift.cdc_orders"].status == "pass"


JSON_DRIFT = {
    "kind": "schema_drift",
    "source": "json",
    "json_column": "properties",
    "by": "event_type",
    "lookback_hours": 1,
}


def add_key(
    con: duckdb.DuckDBPyConnection, key: str, since: datetime, until: datetime, per_mille: int
) -> int:
    row = con.execute(
        f"""UPDATE raw.events SET properties = json_merge_patch(properties, '{{"{key}": true}}')
            WHERE event_type = 'purchase' AND event_ts >= ? AND event_ts < ?
              AND hash(event_id, 'k') % 1000 < ? RETURNING event_id""",
        [since, until, per_mille],
    ).fetchall()
    return len(row)


def test_a_rare_key_is_not_a_new_one(history: Path, tmp_path: Path) -> None:
    """A key a few baseline rows carried (too few for the baseline's sample to be sure to hold
    one) appears in the window: the full baseline is asked before anything is reported."""
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        assert add_key(con, "gift_wrap", END - timedelta(days=5), END - timedelta(days=4), 60)
        assert add_key(con, "gift_wrap", END - timedelta(hours=1), END, 1000)
        assert add_key(con, "express", END - timedelta(hours=1), END, 1000)
    # A baseline sample far smaller than the baseline: it cannot be relied on to hold a key
    # that 1 row in 3,000 carries.
    small_sample = {**JSON_DRIFT, "sample_rows": 100}
    result = one(database, "raw.events", small_sample, time_column="event_ts")
    assert result.status == "warn", result.message
    assert [(r["key"], r["change"]) for r in result.evidence] == [("express", "appeared")]
    assert result.details["baseline_rows_sampled"] == 100
    assert result.details["confirmed_on_all_rows"] >= 2  # gift_wrap and express asked


def test_clean_event_properties_pass(history: Path) -> None:
    result = one(history, "raw.events", JSON_DRIFT, time_column="event_ts")
    assert result.status == "pass", result.message


@pytest.mark.parametrize(
    ("table", "spec", "says"),
    [
        ("raw.events", {"kind": "rule", "sql": "DELETE FROM raw.events"}, "one SELECT"),
        ("raw.events", {"kind": "rule"}, "give the rule as `sql:`"),
        ("raw.events", {"kind": "rule", "sql": "SELECT 1; SELECT 2"}, "one statement"),
        ("raw.events", {"kind": "relationships", "column": "user_id"}, "set `to:`"),
        (
            "raw.events",
            {"kind": "relationships", "column": "user_id", "to": "raw.events", "field": "no_such"},
            "has no column 'no_such'",
        ),
        ("raw.dead_letter", {"kind": "dead_letters", "windw": "hour"}, "windw"),
        (
            "raw.dead_letter",
            {"kind": "relationships", "column": "source", "to": "raw.events", "field": "source"},
            "needs a time column",
        ),
        (
            "raw.events",
            {"kind": "tracking_coverage", "warn_below": 0.5, "fail_below": 0.9},
            "fail_below must not be above warn_below",
        ),
    ],
)
def test_bad_options_are_errors_that_say_what_to_fix(
    history: Path, table: str, spec: dict[str, Any], says: str
) -> None:
    result = one(history, table, spec)
    assert result.status == "error"
    assert says in result.message, result.message


def test_a_missing_referenced_table_means_no_result(history: Path) -> None:
    """No CDC here: events cannot be checked against products, and that is no alarm."""
    results = check(
        history,
        {
            "tables": {
                "raw.events": {
                    "time_column": "event_ts",
                    "checks": [
                        {
                            "kind": "relationships",
                            "expression": "properties->>'product_id'",
                            "to": "staging.stg_products",
                            "field": "product_id",
                        }
                    ],
                }
            }
        },
    )
    assert results == []


def test_relationships_on_a_raw_json_field(history: Path, tmp_path: Path) -> None:
    """Purchase events name orders (properties.order_id) the CDC record has."""
    database = copy_of(history, tmp_path)
    spec = {
        "kind": "relationships",
        "name": "purchases_name_orders",
        "expression": "properties->>'order_id'",
        "where": "event_type = 'purchase'",
        "to": "staging.order_ids",
        "field": "order_id",
        "window": "day",
    }
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS staging")
        con.execute(
            "CREATE TABLE staging.order_ids AS SELECT DISTINCT key->>'order_id' AS order_id "
            "FROM raw.cdc_orders"
        )
    clean = one(database, "raw.events", spec, time_column="event_ts")
    assert clean.status == "pass", clean.message
    assert clean.details["rows_with_key"] > 0
    with duckdb.connect(str(database)) as con:
        con.execute(
            "DELETE FROM staging.order_ids WHERE order_id IN (SELECT properties->>'order_id' "
            "FROM raw.events WHERE event_type = 'purchase' AND event_ts >= ? LIMIT 3)",
            [END - timedelta(hours=12)],
        )
    broken = one(database, "raw.events", spec, time_column="event_ts")
    assert broken.status == "fail", broken.message
    assert broken.details["orphans"] == 3


def test_a_rules_evidence_is_redacted_and_counted_in_full(history: Path) -> None:
    result = one(
        history,
        "raw.events",
        {
            "kind": "rule",
            "name": "members_in_events",
            "warn_rows": 0,
            "fail_rows": 1000,
            "sql": "SELECT user_id, 'kim@shop.example' AS email, ip, "
            "'write to kim@shop.example' AS note FROM raw.events "
            "WHERE event_ts >= {window_start} AND user_id IS NOT NULL",
            "window": "hour",
        },
    )
    assert result.status == "warn"  # some rows, fewer than fail_rows
    assert result.observed is not None and 5 < result.observed <= 1000
    assert len(result.evidence) == 5
    for row in result.evidence:
        assert row["email"] == "<redacted>" and row["note"] == "write to <email>"
        assert row["user_id"].startswith("UH")
        assert row["ip"] in (None, "<redacted>")


@pytest.mark.parametrize(
    ("orders", "matched", "status"),
    [
        (150, 138, "pass"),  # 92%: a quiet day's swing (3% of purchases lost is normal here)
        (10_000, 9_000, "warn"),  # 90% of a busy day: certainly below 95%
        (150, 100, "fail"),  # a third lost: below 80% even for a quiet day
    ],
)
def test_tracking_coverage_judges_what_the_day_s_orders_can_tell(
    tmp_path: Path, orders: int, matched: int, status: str
) -> None:
    """A quiet day swings by a few points on its own: the verdict is on the coverage its orders
    are still consistent with, so noise stays quiet and a real loss does not."""
    database = tmp_path / "marts.duckdb"
    day = (END.astimezone(ZoneInfo(TIMEZONE)) - timedelta(days=1)).date()
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA mart")
        con.execute(
            "CREATE TABLE mart.tracking_coverage (coverage_date DATE, orders_in_db BIGINT, "
            "matched_orders BIGINT, orders_without_event BIGINT)"
        )
        con.execute(
            "INSERT INTO mart.tracking_coverage VALUES (?, ?, ?, ?)",
            [day, orders, matched, orders - matched],
        )
    result = one(database, "mart.tracking_coverage", {"kind": "tracking_coverage"})
    assert result.status == status, result.message
    assert result.observed == pytest.approx(matched / orders)
    assert "at most" in result.message


# What DuckDB hands back for a JSON column (after, before, payload, properties) is text.
CUSTOMER_JSON = (
    '{"user_id":"U1","name":"Kim Minji","phone":"010-1234-5678","email":"kim@shop.example"}'
)


def test_personal_data_inside_json_text_evidence_is_redacted(history: Path) -> None:
    result = one(
        history,
        "raw.events",
        {
            "kind": "rule",
            "name": "customers_in_json",
            "sql": f"SELECT 1 AS change_id, '{CUSTOMER_JSON}'::JSON AS after, "
            "event_name FROM raw.events LIMIT 3",
        },
    )
    assert result.evidence
    for row in result.evidence:
        after = json.loads(row["after"])
        assert after["user_id"] == "U1"  # a key is what a person needs to find the row
        assert after["name"] == after["phone"] == after["email"] == "<redacted>"
        assert "Kim" not in row["after"] and "010" not in row["after"]
        assert row["event_name"] != "<redacted>"  # an event's name is no person's


# A payload cut off in flight: the commonest dead letter, and no JSON parser reads it.
CUT_OFF = '{"user_id":"U1","ip":"1.2.3.4","context":{"name":"Kim"} , "phone":"010-1234'


def test_a_malformed_dead_letter_payload_is_redacted(history: Path, tmp_path: Path) -> None:
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        con.execute(
            """INSERT INTO raw.dead_letter
            SELECT 'cut-' || n, 'collector', 'invalid_json', ?, '{}',
                   ?::TIMESTAMPTZ + INTERVAL 1 SECOND * n FROM range(400) r(n)""",
            [CUT_OFF, END - timedelta(minutes=50)],
        )
    result = one(database, "raw.dead_letter", {**DEAD_LETTERS, "min_count": 1})
    [row] = [r for r in result.evidence if r["reason"] == "invalid_json"]
    sample = row["example_payload"]
    assert '"user_id":"U1"' in sample
    assert "Kim" not in sample and "1.2.3.4" not in sample and "010-1234" not in sample


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 02:30 CET (the second 02:xx): the last complete local hour is 01:00-02:00 CEST
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), 30),
        # 03:30 CET: the last complete local hour is 02:00-03:00, which the clock ran twice
        # (00:00-02:00 UTC): both of its real hours are counted, as its reasons are
        (datetime(2026, 10, 25, 2, 30, tzinfo=UTC), 40 + 50),
    ],
)
def test_dead_letters_count_the_same_local_hour_as_their_reasons_across_the_autumn_change(
    tmp_path: Path, now: datetime, expected: int
) -> None:
    """Europe/Berlin, 25 Oct 2026: 03:00 CEST becomes 02:00 CET at 01:00 UTC. The window judged
    is the last complete local hour every baseline kind judges (windows.last_complete); the
    dead letters counted, their reasons and the window reported are that one hour."""
    berlin = ZoneInfo("Europe/Berlin")
    database = tmp_path / "dst.duckdb"
    with duckdb.connect(str(database)) as con:
        write_history(
            con,
            HistoryPlan(
                days=3,
                end=now,
                events_per_day=3000,
                orders_per_day=20,
                timezone="Europe/Berlin",
                dead_letter_rate=0.0,
            ),
        )
        anomalies.inject_dead_letter_surge(
            con, at=datetime(2026, 10, 24, 23, 30, tzinfo=UTC), count=30
        )
        anomalies.inject_dead_letter_surge(
            con, at=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), count=40, reason_code="invalid_json"
        )
        anomalies.inject_dead_letter_surge(
            con, at=datetime(2026, 10, 25, 1, 30, tzinfo=UTC), count=50, reason_code="bad_gzip"
        )
    warehouse = DuckDBWarehouse(database, read_only=True)
    try:
        ctx = CheckContext(query=warehouse.query, now=now, timezone=berlin)
        config = {"tables": {"raw.dead_letter": {"checks": [{**DEAD_LETTERS, "min_count": 1}]}}}
        [result] = run_checks(QualityConfig.model_validate(config), ctx).results
    finally:
        warehouse.close()
    window = last_complete(now, berlin, "hour")
    assert (result.window_start, result.window_end) == (window.start, window.end)
    assert result.details["dead_letters"] == sum(r["count"] for r in result.evidence) == expected


def test_every_kind_finds_time_and_quotes_names_the_same_way(history: Path, tmp_path: Path) -> None:
    """One time-column rule for all kinds: a table with only a ``landed_column`` counts its
    windows in it (a statistical kind used to refuse what a rule kind accepted); and any column
    name is quoted safely (a statistical kind used to refuse a name a rule kind accepted)."""
    landed_only = {"landed_column": "received_at", "key": ["dead_letter_id"]}
    for spec in (
        {"kind": "duplicates", "window": "day"},
        {"kind": "accepted_values", "column": "source", "values": ["collector"], "window": "day"},
    ):
        result = one(history, "raw.dead_letter", spec, **landed_only)
        assert result.status == "pass", (spec, result.message)
    database = copy_of(history, tmp_path)
    with duckdb.connect(str(database)) as con:
        con.execute('ALTER TABLE raw.dead_letter ADD COLUMN "source ""v2""" VARCHAR')
        con.execute('UPDATE raw.dead_letter SET "source ""v2""" = source')
    for spec in (
        {"kind": "null_rate", "column": 'source "v2"', "max_rate": 0.0, "window": "day"},
        {"kind": "accepted_values", "column": 'source "v2"', "values": ["collector"]},
        {
            "kind": "relationships",
            "column": 'source "v2"',
            "to": "raw.dead_letter",
            "field": "source",
            "window": "all",
        },
    ):
        result = one(database, "raw.dead_letter", spec, **landed_only)
        assert result.status != "error", (spec, result.message)  # learning: too little history
