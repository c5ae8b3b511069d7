"""Generated history (``shopstream generate-history``) on a real warehouse file.

One CLI run writes four weeks into a fresh DuckDB warehouse (Asia/Seoul); the tests read raw
and hold it to what the generator promises: the shop's rhythm (weekends, nights, evenings,
growth, bounded noise) counted in local time, history's id and LSN namespaces, every order
status step, totals that add up, purchases that name orders, a dead-letter trickle; a second
run writes nothing; a held file is refused; and the real transform builds over it with every
dbt test passing.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shopstream.config import Settings
from shopstream.events.codes import ReasonCode
from shopstream.generators.history import (
    HISTORY_LSN_LIMIT,
    HistoryRequest,
    create_raw,
    history_job,
    plan_for,
    write_history,
)
from shopstream.transform.runner import TransformRequest
from shopstream.transform.runs import transform_warehouse

TZ = "Asia/Seoul"
END = datetime(2026, 3, 2, 0, tzinfo=UTC)  # Monday 09:00 in Seoul
DAYS = 28
EVENTS_PER_DAY = 3_000
ORDERS_PER_DAY = 100

#: Order status moves the shop makes (src/shopstream/generators/shop.py).
ALLOWED_MOVES = {
    ("PENDING", "PAID"),
    ("PENDING", "CANCELLED"),
    ("PAID", "PREPARING"),
    ("PAID", "CANCELLED"),
    ("PREPARING", "SHIPPING"),
    ("PREPARING", "CANCELLED"),
    ("SHIPPING", "DELIVERED"),
    ("DELIVERED", "REFUNDED"),
}


@dataclass
class Generated:
    data_dir: Path
    path: Path
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "generate-history", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    data_dir = tmp_path_factory.mktemp("history")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update(SHOPSTREAM_DATA_DIR=str(data_dir), SHOPSTREAM_TIMEZONE=TZ, COLUMNS="200")
    first = cli(
        env,
        *("--days", str(DAYS), "--events-per-day", str(EVENTS_PER_DAY)),
        *("--orders-per-day", str(ORDERS_PER_DAY), "--end", "2026-03-02T00:00:00Z"),
    )
    assert first.returncode == 0, first.stderr
    return Generated(data_dir, data_dir / "shopstream.duckdb", env, first)


@pytest.fixture
def con(generated: Generated) -> Iterator[duckdb.DuckDBPyConnection]:
    # Per test: a file another process writes (the CLI, the transform) must not stay open here.
    connection = duckdb.connect(str(generated.path), read_only=True)
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


def local_counts(con: duckdb.DuckDBPyConnection) -> list[tuple[datetime, int]]:
    """Events per hour, the hour in Seoul's local time (a fixed +9 h: no daylight saving)."""
    return [
        (hour, n)
        for hour, n in con.execute(
            "SELECT date_trunc('hour', event_ts::TIMESTAMP + INTERVAL 9 HOUR) AS h, count(*) "
            "FROM raw.events GROUP BY h ORDER BY h"
        ).fetchall()
    ]


# -- the shop's rhythm ------------------------------------------------------------------------


def test_the_cli_says_what_it_wrote(generated: Generated, con: duckdb.DuckDBPyConnection) -> None:
    output = generated.first.stdout + generated.first.stderr
    events = one(con, "SELECT count(*) FROM raw.events")
    assert f"raw.events │ {events:,}" in output.replace("  ", " ") or f"{events:,}" in output
    assert "2026-02-02T00:00:00+00:00 to 2026-03-02T00:00:00+00:00" in output.replace("\n", " ")
    assert abs(events - DAYS * EVENTS_PER_DAY) <= 1
    first, last = con.execute("SELECT min(event_ts), max(received_at) FROM raw.events").fetchone()  # type: ignore[misc]
    assert END - timedelta(days=DAYS) <= first and last < END


def test_weekends_are_busier_than_weekdays(con: duckdb.DuckDBPyConnection) -> None:
    by_day: dict[Any, int] = {}
    for hour, n in local_counts(con):
        by_day[hour.date()] = by_day.get(hour.date(), 0) + n
    # Whole local days only (the period starts and ends at 09:00 in Seoul).
    days = sorted(by_day)[1:-1]
    weekend = [by_day[d] for d in days if d.weekday() >= 5]
    weekday = [by_day[d] for d in days if d.weekday() < 5]
    ratio = (sum(weekend) / len(weekend)) / (sum(weekday) / len(weekday))
    assert 1.2 < ratio < 1.5, ratio  # weekend_factor 1.35


def test_nights_are_deep_troughs_and_evenings_peak(con: duckdb.DuckDBPyConnection) -> None:
    by_hour = [0] * 24
    for hour, n in local_counts(con):
        by_hour[hour.hour] += n
    night = sum(by_hour[3:6])
    evening = sum(by_hour[20:23])
    assert evening / night > 10, by_hour
    assert max(range(24), key=lambda h: by_hour[h]) in (20, 21, 22)
    assert min(range(24), key=lambda h: by_hour[h]) in (3, 4, 5)


def test_traffic_grows_week_on_week(con: duckdb.DuckDBPyConnection) -> None:
    start = END - timedelta(days=DAYS)
    weeks = [
        one(
            con,
            "SELECT count(*) FROM raw.events WHERE event_ts >= ? AND event_ts < ?",
            [start + timedelta(weeks=k), start + timedelta(weeks=k + 1)],
        )
        for k in range(DAYS // 7)
    ]
    growth = [b / a for a, b in itertools.pairwise(weeks)]
    assert all(1.01 < g < 1.06 for g in growth), (weeks, growth)  # growth_per_week 3%


def test_hourly_noise_is_present_and_bounded(con: duckdb.DuckDBPyConnection) -> None:
    """Same local hour on consecutive days of the same kind (weekday/weekend): equal but for
    a day's growth and each hour's noise of at most +-4%."""
    counts = dict(local_counts(con))
    ratios = []
    for hour, n in counts.items():
        later = hour + timedelta(days=1)
        if later in counts and (hour.weekday() >= 5) == (later.weekday() >= 5) and n >= 150:
            ratios.append(counts[later] / n)
    assert len(ratios) > 100
    assert all(0.88 < r < 1.13 for r in ratios), sorted(ratios)[:3] + sorted(ratios)[-3:]
    spread = max(ratios) - min(ratios)
    assert spread > 0.04, "no noise at all"


def test_orders_follow_the_same_rhythm(con: duckdb.DuckDBPyConnection) -> None:
    by_hour = [0] * 24
    for hour, n in con.execute(
        "SELECT hour(commit_ts::TIMESTAMP + INTERVAL 9 HOUR) AS h, count(*) FROM raw.cdc_orders "
        "WHERE op = 'c' GROUP BY h"
    ).fetchall():
        by_hour[hour] = n
    assert sum(by_hour[20:23]) / max(1, sum(by_hour[3:6])) > 6, by_hour
    orders = one(con, "SELECT count(*) FROM raw.cdc_orders WHERE op = 'c'")
    assert abs(orders - DAYS * ORDERS_PER_DAY) <= 1


# -- ids, positions and the shop's rules --------------------------------------------------------


def test_ids_are_history_s_own_and_lsns_sort_before_any_real_change(
    con: duckdb.DuckDBPyConnection,
) -> None:
    patterns = {
        "users": ("user_id", r"UH\d{6}"),
        "products": ("product_id", r"PH\d{6}"),
        "orders": ("order_id", r"OH\d{10}"),
        "payments": ("payment_id", r"PAYH\d{10}"),
        "order_items": ("order_id", r"OH\d{10}"),
    }
    for table, (column, pattern) in patterns.items():
        keys = {
            r[0] for r in con.execute(f"SELECT key->>'{column}' FROM raw.cdc_{table}").fetchall()
        }
        assert keys and all(re.fullmatch(pattern, k) for k in keys), table
        top_lsn, top_change = con.execute(
            f"SELECT max(lsn), max(change_id) FROM raw.cdc_{table}"
        ).fetchone()  # type: ignore[misc]
        assert top_lsn < HISTORY_LSN_LIMIT and int(top_change[:16], 16) < HISTORY_LSN_LIMIT
        assert one(con, f"SELECT count(*) - count(DISTINCT change_id) FROM raw.cdc_{table}") == 0
    assert (
        one(con, "SELECT count(*) FROM raw.cdc_payments WHERE after->>'order_id' NOT LIKE 'OH%'")
        == 0
    )
    product_ids = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT properties->>'product_id' FROM raw.events "
            "WHERE properties->>'product_id' IS NOT NULL"
        ).fetchall()
    }
    products = {
        r[0] for r in con.execute("SELECT key->>'product_id' FROM raw.cdc_products").fetchall()
    }
    assert product_ids and product_ids <= products
    assert one(con, "SELECT count(*) FROM raw.events WHERE user_id NOT LIKE 'UH%'") == 0
    # A transaction's changes: positions 1..n in LSN order, and its change ids carry its commit
    # LSN, the LSN of its last change.
    all_changes = " UNION ALL ".join(
        f"SELECT tx_id, lsn, change_id FROM raw.cdc_{t}" for t in patterns
    )
    wrong = one(
        con,
        f"""SELECT count(*) FROM (
            SELECT *, max(lsn) OVER t AS last, min(lsn) OVER t AS first FROM ({all_changes})
            WINDOW t AS (PARTITION BY tx_id))
        WHERE ('0x' || change_id[:16])::BIGINT <> last
           OR change_id[18:]::INT <> lsn - first + 1""",
    )
    assert wrong == 0
    assert one(con, f"SELECT count(DISTINCT lsn) - count(*) FROM ({all_changes})") == 0


def invalid_moves(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(order, from, to) of every status change the shop would never make."""
    allowed = " OR ".join(f"(prev = '{a}' AND status = '{b}')" for a, b in sorted(ALLOWED_MOVES))
    return con.execute(f"""
        SELECT order_id, prev, status FROM (
            SELECT key->>'order_id' AS order_id, after->>'status' AS status,
                   lag(after->>'status') OVER (PARTITION BY key->>'order_id' ORDER BY lsn) AS prev
            FROM raw.cdc_orders)
        WHERE prev IS NOT NULL AND NOT ({allowed})
        ORDER BY order_id""").fetchall()


def test_every_order_passes_every_status_step(con: duckdb.DuckDBPyConnection) -> None:
    assert invalid_moves(con) == []
    first = con.execute(
        "SELECT DISTINCT after->>'status' FROM raw.cdc_orders WHERE op = 'c'"
    ).fetchall()
    assert first == [("PENDING",)]
    final = dict(
        con.execute("""
            SELECT status, count(*) FROM (
                SELECT after->>'status' AS status FROM raw.cdc_orders
                QUALIFY row_number() OVER (PARTITION BY key->>'order_id' ORDER BY lsn DESC) = 1)
            GROUP BY status""").fetchall()
    )
    # (orders of the last minutes may still wait for their payment)
    assert set(final) - {"PENDING"} == {
        "PAID",
        "PREPARING",
        "SHIPPING",
        "DELIVERED",
        "CANCELLED",
        "REFUNDED",
    }
    assert final["DELIVERED"] > final["CANCELLED"] > 0 and final["REFUNDED"] > 0


def test_totals_add_up_and_payments_follow_their_orders(con: duckdb.DuckDBPyConnection) -> None:
    latest_orders = """
        SELECT key->>'order_id' AS order_id, after->>'status' AS status,
               (after->>'total_amount')::DECIMAL(14, 2) AS total
        FROM raw.cdc_orders
        QUALIFY row_number() OVER (PARTITION BY key->>'order_id' ORDER BY lsn DESC) = 1"""
    wrong_totals = one(
        con,
        f"""SELECT count(*) FROM ({latest_orders}) o JOIN (
                SELECT after->>'order_id' AS order_id,
                       sum((after->>'quantity')::INT * (after->>'unit_price')::DECIMAL(12, 2)) AS s
                FROM raw.cdc_order_items GROUP BY 1) l USING (order_id)
            WHERE o.total <> l.s""",
    )
    assert wrong_totals == 0
    assert one(con, f"SELECT count(*) FROM ({latest_orders})") == one(
        con, "SELECT count(DISTINCT after->>'order_id') FROM raw.cdc_order_items"
    )
    payments = con.execute(f"""
        SELECT p.status, o.status, p.amount <= o.total, p.paid_at IS NOT NULL,
               p.refunded_at IS NOT NULL, count(*)
        FROM (SELECT after->>'order_id' AS order_id, after->>'status' AS status,
                     (after->>'amount')::DECIMAL(14, 2) AS amount, after->>'paid_at' AS paid_at,
                     after->>'refunded_at' AS refunded_at
              FROM raw.cdc_payments
              QUALIFY row_number() OVER (PARTITION BY key->>'payment_id' ORDER BY lsn DESC) = 1) p
        JOIN ({latest_orders}) o USING (order_id)
        GROUP BY ALL""").fetchall()
    seen = {(p, o) for p, o, *_ in payments}
    for p_status, o_status, within, paid, refunded, _ in payments:
        assert within, (p_status, o_status)
        assert p_status in ("PAID", "FAILED", "CANCELLED", "REFUNDED")
        assert paid == (p_status != "FAILED")
        assert refunded == (p_status in ("CANCELLED", "REFUNDED"))
        if p_status == "CANCELLED":
            assert o_status == "CANCELLED"
        if p_status == "REFUNDED":
            assert o_status == "REFUNDED"
        if p_status == "PAID":
            assert o_status in ("PAID", "PREPARING", "SHIPPING", "DELIVERED")
    assert {("FAILED", "DELIVERED"), ("CANCELLED", "CANCELLED"), ("REFUNDED", "REFUNDED")} <= seen


def test_purchases_name_real_orders_and_two_percent_are_lost(
    con: duckdb.DuckDBPyConnection,
) -> None:
    purchases, matched, revenue_ok = con.execute("""
        SELECT count(*), count(o.order_id), count(*) FILTER (
            WHERE (e.properties->>'revenue')::DECIMAL = o.total)
        FROM raw.events e LEFT JOIN (
            SELECT key->>'order_id' AS order_id, (after->>'total_amount')::DECIMAL AS total
            FROM raw.cdc_orders WHERE op = 'c') o ON o.order_id = e.properties->>'order_id'
        WHERE e.event_type = 'purchase'""").fetchone()  # type: ignore[misc]
    orders = one(con, "SELECT count(*) FROM raw.cdc_orders WHERE op = 'c'")
    assert purchases == matched == revenue_ok
    assert 0.95 * orders < purchases < 0.995 * orders


def test_a_trickle_of_dead_letters_with_known_reasons(con: duckdb.DuckDBPyConnection) -> None:
    events = one(con, "SELECT count(*) FROM raw.events")
    rows = con.execute(
        "SELECT source, context->>'code', count(*), min(received_at), max(received_at) "
        "FROM raw.dead_letter GROUP BY ALL"
    ).fetchall()
    total = sum(r[2] for r in rows)
    assert 0.001 * events < total < 0.004 * events  # dead_letter_rate 0.2%
    assert {r[0] for r in rows} == {"collector"}
    assert {r[1] for r in rows} <= {c.value for c in ReasonCode} and len(rows) >= 4
    assert min(r[3] for r in rows) < END - timedelta(days=DAYS - 2)
    assert max(r[4] for r in rows) > END - timedelta(days=2)


# -- running it again, a held file, where history ends ---------------------------------------


def test_a_second_run_writes_nothing(generated: Generated) -> None:
    check = duckdb.connect(str(generated.path), read_only=True)
    before = one(check, "SELECT count(*) FROM raw.events")
    check.close()
    again = cli(generated.env, "--days", "3")
    assert again.returncode == 0, again.stderr
    assert "already holds history" in again.stdout + again.stderr
    check = duckdb.connect(str(generated.path), read_only=True)
    try:
        assert one(check, "SELECT count(*) FROM raw.events") == before
    finally:
        check.close()


def test_a_held_warehouse_is_refused_with_what_to_do(tmp_path: Path, generated: Generated) -> None:
    holder = duckdb.connect(str(tmp_path / "shopstream.duckdb"))  # as a running platform would
    try:
        env = {**generated.env, "SHOPSTREAM_DATA_DIR": str(tmp_path)}
        refused = cli(env, "--days", "2")
    finally:
        holder.close()
    assert refused.returncode == 1
    message = " ".join((refused.stdout + refused.stderr).split())
    assert "stop it first" in message


def test_bad_options_are_named(generated: Generated) -> None:
    refused = cli(generated.env, "--days", "2", "--end", "2026-03-01T00:00")
    assert refused.returncode == 2 and "no time zone" in refused.stderr
    refused = cli(generated.env, "--days", "0", "--end", "2026-03-01T00:00Z")
    assert refused.returncode == 1 and "days must be at least 1" in refused.stderr


def test_history_ends_where_raw_data_begins(tmp_path: Path) -> None:
    live = datetime(2026, 3, 5, 8, 30, 15, tzinfo=UTC)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_raw(con)
        # What a live platform left: one event, one order change (received a moment later).
        con.execute(
            "INSERT INTO raw.events (event_id, event_type, event_ts, received_at, event_date, "
            "source) VALUES ('live-1', 'page_view', ?, ? + INTERVAL 1 SECOND, ?::DATE, 'native')",
            [live, live, live],
        )
        con.execute(
            "INSERT INTO raw.cdc_orders (change_id, op, lsn, commit_ts, commit_date, key, "
            "source, ingested_at) VALUES ('0000000001A00000-00000001', 'c', 27262976, "
            "? + INTERVAL 1 HOUR, ?::DATE, ?, '{}', ? + INTERVAL 1 HOUR)",
            [live, live, '{"order_id": "O0000000001"}', live],
        )
        planned = plan_for(con, HistoryRequest(days=2, events_per_day=500, orders_per_day=20))
        assert planned.end == live
        summary = write_history(con, planned)
        assert summary.skipped is None and summary.rows["events"] > 0
        for table, column in (("events", "received_at"), ("cdc_orders", "ingested_at")):
            newest = one(con, f"SELECT max({column}) FROM raw.{table} WHERE {column} < ?", [live])
            assert newest is not None and newest > live - timedelta(hours=2)
            assert one(con, f"SELECT count(*) FROM raw.{table} WHERE {column} >= ?", [live]) == 1
        # every live change still sorts after history
        assert one(con, "SELECT max(change_id) FROM raw.cdc_orders") == "0000000001A00000-00000001"
    finally:
        con.close()


# -- the real transform over history ------------------------------------------------------------


def test_the_transform_builds_over_history_and_its_tests_pass(generated: Generated) -> None:
    settings = Settings(data_dir=generated.data_dir, timezone=TZ)
    result = transform_warehouse(settings, TransformRequest())
    assert result.success, result.failures()
    assert result.tests_failed == 0 and result.tests_passed > 50
    con = duckdb.connect(str(generated.path), read_only=True)
    try:
        orders = one(con, "SELECT count(*) FROM staging.stg_orders WHERE order_id LIKE 'OH%'")
        assert orders == DAYS * ORDERS_PER_DAY
        days = one(con, "SELECT count(*) FROM mart.daily_sales")
        assert days >= DAYS
        assert one(con, "SELECT count(*) FROM staging.stg_events") == DAYS * EVENTS_PER_DAY
    finally:
        con.close()


def test_only_a_duckdb_warehouse_takes_history() -> None:
    with pytest.raises(ValueError, match="DuckDB warehouse only"):
        history_job(object(), HistoryRequest(days=1), lambda _: None)
