"""Each anomaly injector changes raw as it says, and nothing else nearby.

Two weeks of generated history in a real DuckDB file; every test injects inside a transaction
that is rolled back afterwards, so all start from the same clean history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from shopstream.generators import anomalies
from shopstream.generators.history import HistoryPlan, write_history

END = datetime(2026, 3, 2, tzinfo=UTC)
AT = datetime(2026, 2, 25, 19, 20, tzinfo=UTC)  # an evening hour inside the history
HOUR = (datetime(2026, 2, 25, 19, tzinfo=UTC), datetime(2026, 2, 25, 20, tzinfo=UTC))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("anomalies") / "w.duckdb"
    con = duckdb.connect(str(path))
    try:
        plan = HistoryPlan(days=14, end=END, events_per_day=4_000, orders_per_day=150)
        write_history(con, plan)
    finally:
        con.close()
    return path


@pytest.fixture
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(warehouse))
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("BEGIN TRANSACTION")
    yield connection
    connection.execute("ROLLBACK")
    connection.close()


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


def hour_events(con: duckdb.DuckDBPyConnection, start: datetime, where: str = "true") -> int:
    return int(
        one(
            con,
            f"SELECT count(*) FROM raw.events WHERE event_ts >= ? AND event_ts < ? AND {where}",
            [start, start + timedelta(hours=1)],
        )
    )


def test_volume_drop_removes_most_of_one_hour(con: duckdb.DuckDBPyConnection) -> None:
    before, neighbour = hour_events(con, HOUR[0]), hour_events(con, HOUR[1])
    injected = anomalies.inject_volume_drop(con, at=AT, keep=0.1)
    after = hour_events(con, HOUR[0])
    assert (injected.window_start, injected.window_end) == HOUR
    assert injected.rows == before - after and 0.05 * before < after < 0.15 * before
    assert hour_events(con, HOUR[1]) == neighbour
    gone = one(con, "SELECT count(*) FROM raw.events WHERE event_id IN ?", [injected.keys])
    assert injected.keys and gone == 0


def test_volume_spike_multiplies_one_hour_with_new_ids(con: duckdb.DuckDBPyConnection) -> None:
    before, neighbour = hour_events(con, HOUR[0]), hour_events(con, HOUR[1])
    injected = anomalies.inject_volume_spike(con, at=AT, factor=5)
    assert hour_events(con, HOUR[0]) == 5 * before == before + injected.rows
    assert hour_events(con, HOUR[1]) == neighbour
    assert one(con, "SELECT count(*) - count(DISTINCT event_id) FROM raw.events") == 0
    assert hour_events(con, HOUR[0], "payload->>'event_id' <> event_id") == 0


def test_null_spike_nulls_a_column_for_most_of_one_hour(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT count(*) FROM raw.events WHERE session_id IS NULL") == 0
    injected = anomalies.inject_null_spike(con, at=AT, column="session_id", share=0.6)
    nulls = hour_events(con, HOUR[0], "session_id IS NULL")
    assert nulls == injected.rows
    assert 0.5 < nulls / hour_events(con, HOUR[0]) < 0.7
    assert one(con, "SELECT count(*) FROM raw.events WHERE session_id IS NULL") == nulls
    assert (
        hour_events(con, HOUR[0], "payload->>'session_id' IS NOT NULL AND session_id IS NULL") == 0
    )
    with pytest.raises(ValueError, match="column must be one of"):
        anomalies.inject_null_spike(con, at=AT, column="event_id")


def test_duplicate_burst_re_appends_events_with_their_ids(con: duckdb.DuckDBPyConnection) -> None:
    total = hour_events(con, HOUR[0])
    injected = anomalies.inject_duplicate_burst(con, at=AT, share=0.5)
    duplicates = one(con, "SELECT count(*) - count(DISTINCT event_id) FROM raw.events")
    assert duplicates == injected.rows and 0.4 * total < duplicates < 0.6 * total
    twice = one(
        con,
        "SELECT count(*) FROM (SELECT event_id FROM raw.events WHERE event_id IN ? "
        "GROUP BY 1 HAVING count(*) = 2)",
        [injected.keys],
    )
    assert twice == len(injected.keys) > 0


def test_freshness_stall_removes_everything_after_the_cut(con: duckdb.DuckDBPyConnection) -> None:
    injected = anomalies.inject_freshness_stall(con, at=AT)
    latest = [
        one(con, f"SELECT max({column}) FROM raw.{table}")
        for table, column in (
            ("events", "received_at"),
            ("dead_letter", "received_at"),
            ("cdc_orders", "ingested_at"),
            ("cdc_payments", "ingested_at"),
        )
    ]
    assert all(t < AT for t in latest) and max(latest) > AT - timedelta(hours=1)
    assert injected.rows == sum(injected.details["removed"].values()) > 0


def test_schema_drift_adds_a_version_and_changes_that_carry_it(
    con: duckdb.DuckDBPyConnection,
) -> None:
    top_lsn = one(con, "SELECT max(lsn) FROM raw.cdc_orders")
    injected = anomalies.inject_schema_drift(con, at=AT, orders=20, share=0.5)
    versions = con.execute(
        "SELECT version, fingerprint, columns FROM raw.source_schemas "
        "WHERE raw_table = 'cdc_orders' ORDER BY version"
    ).fetchall()
    assert [v[0] for v in versions] == [1, 2] and versions[0][1] != versions[1][1]
    columns = {c["name"]: c["type"] for c in orjson.loads(versions[1][2])}
    old = {c["name"]: c["type"] for c in orjson.loads(versions[0][2])}
    assert set(columns) - set(old) == {"coupon_code"}
    assert (old["total_amount"], columns["total_amount"]) == ("numeric(14,2)", "double precision")
    carrying = con.execute(
        "SELECT key->>'order_id', lsn, json_type(after->'total_amount') FROM raw.cdc_orders "
        "WHERE after->>'coupon_code' IS NOT NULL"
    ).fetchall()
    assert len(carrying) == injected.rows == 20
    assert {r[0] for r in carrying} == set(injected.keys)
    assert all(r[1] > top_lsn and r[2] == "DOUBLE" for r in carrying)
    drifted = hour_events(con, HOUR[0], "properties->>'coupon' IS NOT NULL")
    assert drifted == injected.details["events_changed"] > 0
    assert (
        hour_events(
            con, HOUR[0], "properties->>'coupon' IS NOT NULL AND properties->>'price' IS NOT NULL"
        )
        == 0
    )
    assert (
        one(con, "SELECT count(*) FROM raw.events WHERE properties->>'coupon' IS NOT NULL")
        == drifted
    )


def device_share(con: duckdb.DuckDBPyConnection, day: datetime) -> float:
    return float(
        one(
            con,
            "SELECT avg((device_type = 'web_desktop')::INT) FROM raw.events "
            "WHERE event_ts >= ? AND event_ts < ?",
            [day, day + timedelta(days=1)],
        )
    )


def test_distribution_shift_changes_one_day_s_device_mix(con: duckdb.DuckDBPyConnection) -> None:
    day = datetime(2026, 2, 25, tzinfo=UTC)
    before, previous = device_share(con, day), device_share(con, day - timedelta(days=1))
    assert 0.15 < before < 0.35 and 0.15 < previous < 0.35
    injected = anomalies.inject_distribution_shift(con, at=AT, value="web_desktop", share=0.8)
    assert (injected.window_start, injected.window_end) == (day, day + timedelta(days=1))
    assert device_share(con, day) > 0.8
    assert device_share(con, day - timedelta(days=1)) == previous
    prices = anomalies.inject_distribution_shift(con, at=AT, column="price", value="3")
    assert prices.rows > 0


def test_orphan_order_items_name_orders_that_do_not_exist(con: duckdb.DuckDBPyConnection) -> None:
    injected = anomalies.inject_orphan_order_items(con, at=AT, count=20)
    orphans = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT key->>'order_id' FROM raw.cdc_order_items WHERE key->>'order_id' "
            "NOT IN (SELECT key->>'order_id' FROM raw.cdc_orders)"
        ).fetchall()
    }
    assert orphans == set(injected.keys) and injected.rows == 20


LATEST_TOTALS = """
    SELECT o.order_id FROM (
        SELECT key->>'order_id' AS order_id, (after->>'total_amount')::DECIMAL(14, 2) AS total
        FROM raw.cdc_orders
        QUALIFY row_number() OVER (PARTITION BY key->>'order_id' ORDER BY lsn DESC) = 1) o
    JOIN (SELECT after->>'order_id' AS order_id,
                 sum((after->>'quantity')::INT * (after->>'unit_price')::DECIMAL(12, 2)) AS s
          FROM raw.cdc_order_items GROUP BY 1) l USING (order_id)
    WHERE o.total <> l.s"""


def test_broken_order_totals_differ_from_their_lines(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute(LATEST_TOTALS).fetchall() == []
    injected = anomalies.inject_broken_order_totals(con, at=AT, count=20)
    broken = {r[0] for r in con.execute(LATEST_TOTALS).fetchall()}
    assert broken == set(injected.keys) and len(broken) == injected.rows == 20


INVALID_MOVES = """
    SELECT DISTINCT order_id FROM (
        SELECT key->>'order_id' AS order_id, after->>'status' AS status,
               lag(after->>'status') OVER (PARTITION BY key->>'order_id' ORDER BY lsn) AS prev
        FROM raw.cdc_orders)
    WHERE prev = 'DELIVERED' AND status = 'PENDING'"""


def test_invalid_status_transitions_move_delivered_orders_back(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert con.execute(INVALID_MOVES).fetchall() == []
    injected = anomalies.inject_invalid_status_transition(con, at=AT, count=10)
    moved = {r[0] for r in con.execute(INVALID_MOVES).fetchall()}
    assert moved == set(injected.keys) and len(moved) == injected.rows == 10


def test_dead_letter_surge_fills_one_hour(con: duckdb.DuckDBPyConnection) -> None:
    def in_hour(start: datetime) -> int:
        return int(
            one(
                con,
                "SELECT count(*) FROM raw.dead_letter WHERE received_at >= ? AND received_at < ?",
                [start, start + timedelta(hours=1)],
            )
        )

    usual = in_hour(HOUR[0])
    assert usual < 20
    injected = anomalies.inject_dead_letter_surge(con, at=AT, count=500)
    assert in_hour(HOUR[0]) == usual + 500 == usual + injected.rows
    codes = one(
        con,
        "SELECT count(*) FROM raw.dead_letter WHERE context->>'code' = 'missing_field' "
        "AND received_at >= ? AND received_at < ?",
        list(HOUR),
    )
    assert codes >= 500
    with pytest.raises(ValueError):
        anomalies.inject_dead_letter_surge(con, at=AT, reason_code="no_such_code")
