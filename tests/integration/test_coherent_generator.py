"""The coherent generator against a real PostgreSQL and the real collector (in-process, real
group-commit sink into a real DuckDB file): every purchase event names an order the shop
placed, the lost share is what the truth says, and the truth's sessions and funnel are what
the warehouse's own rule, applied in SQL to raw.events, gives.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from shopstream.collector.handlers import IntakeHandlers
from shopstream.config import Settings
from shopstream.devtools.local_postgres import LocalPostgres
from shopstream.generators.clickstream import FUNNEL_STEPS
from shopstream.generators.coherent import CoherentTruth, play_coherent
from shopstream.sinks.warehouse import WarehouseSink
from tests.support.inprocess import CLIENT, RawTables, entry_point
from tests.support.pg_fixtures import drop_database

ZONE = "Asia/Seoul"
LOSS = 0.3  # high, so that a few hundred sessions lose some events
NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = (NOW - timedelta(hours=30), NOW - timedelta(hours=1))
#: The story both runs of one seed tell (only the run id differs).
STORY: dict[str, Any] = {
    "seed": 5,
    "sessions": 1_500,
    "timezone": ZONE,
    "purchase_event_loss": LOSS,
    "window": WINDOW,
    "bad_fraction": 0.01,
}


@dataclass
class Played:
    truth: CoherentTruth
    dsn: str
    raw: RawTables


def play(dsn: str, raw: RawTables, **options: Any) -> CoherentTruth:
    import asyncio

    async def go() -> CoherentTruth:
        sink = WarehouseSink(raw.warehouse, linger_ms=1)
        sink.start()
        try:
            app = entry_point(IntakeHandlers(Settings(), sink), "fast_path")
            transport = httpx.ASGITransport(app=app, client=CLIENT)
            return await play_coherent(dsn, "http://collector", transport=transport, **options)
        finally:
            await asyncio.to_thread(sink.close)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def fresh_database(postgres_server: LocalPostgres) -> Iterator[Any]:
    made: list[str] = []

    def make() -> str:
        name = f"coherent_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return postgres_server.create_database(name)

    yield make
    for name in made:
        drop_database(postgres_server, name)


@pytest.fixture(scope="module")
def played(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Played]:
    dsn = fresh_database()
    raw = RawTables(tmp_path_factory.mktemp("coherent") / "warehouse.duckdb")
    truth = play(dsn, raw, **STORY, run_id="first")
    yield Played(truth, dsn, raw)
    raw.warehouse.close()


def rows(raw: RawTables, sql: str) -> list[dict[str, Any]]:
    return list(raw.warehouse.query(sql).to_pylist())


def orders_in(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        orders = {
            order_id: {
                "user_id": user_id,
                "status": status,
                "total": total,
                "created_at": created_at,
                "lines": [],
            }
            for order_id, user_id, status, total, created_at in conn.execute(
                "SELECT order_id, user_id, status, total_amount, created_at FROM orders"
            )
        }
        for order_id, product_id, quantity, price in conn.execute(
            "SELECT order_id, product_id, quantity, unit_price FROM order_items"
            " ORDER BY order_id, line_no"
        ):
            orders[order_id]["lines"].append((product_id, quantity, price))
    return orders


def test_every_purchase_event_names_an_order_whose_lines_are_its_revenue(played: Played) -> None:
    orders = orders_in(played.dsn)
    purchases = rows(
        played.raw,
        "SELECT event_ts, user_id, properties FROM raw.events WHERE event_type = 'purchase'",
    )
    assert len(purchases) >= 20, "too few purchases to say anything"
    for event in purchases:
        props = orjson.loads(event["properties"])
        order = orders[props["order_id"]]  # the database's order exists
        lines = [(i["product_id"], i["quantity"], Decimal(i["price"])) for i in props["items"]]
        assert lines == order["lines"]
        assert Decimal(props["revenue"]) == sum(p * q for _, q, p in lines) == order["total"]
        assert order["created_at"] == event["event_ts"]  # same instant, so the same day
        assert order["user_id"] == event["user_id"]
    # No order is named twice, and every order came from a checkout (own_orders=False).
    named = Counter(orjson.loads(e["properties"])["order_id"] for e in purchases)
    assert max(named.values()) == 1
    assert played.truth.shop.session_orders == len(orders)
    assert set(played.truth.clicks.session_orders) == set(orders)


def test_the_lost_share_is_what_the_truth_says(played: Played) -> None:
    clicks = played.truth.clicks
    orders = orders_in(played.dsn)
    named = {
        orjson.loads(r["properties"])["order_id"]
        for r in rows(played.raw, "SELECT properties FROM raw.events WHERE event_type='purchase'")
    }
    unnamed = set(orders) - named
    tracking = clicks.tracking
    lost_on_purpose = sum(t.lost_on_purpose for t in tracking.values())
    assert sum(t.orders for t in tracking.values()) == len(orders)
    assert sum(t.matched for t in tracking.values()) == len(named)
    assert sum(t.purchase_events for t in tracking.values()) == len(named)
    assert sum(t.unmatched_orders for t in tracking.values()) == len(unnamed)
    # Spoiled purchase events (bad_fraction) are lost too, but not on purpose.
    assert lost_on_purpose <= len(unnamed) <= lost_on_purpose + clicks.rejected
    # The configured share, within what chance allows for this many orders.
    share = lost_on_purpose / len(orders)
    assert abs(share - LOSS) < 4 * (LOSS * (1 - LOSS) / len(orders)) ** 0.5
    # Per business day: the orders' day and the lost revenue.
    by_day: dict[str, list[Any]] = {}
    for order_id, order in orders.items():
        day = order["created_at"].astimezone(_zone()).date().isoformat()
        entry = by_day.setdefault(day, [0, Decimal(0)])
        entry[0] += 1
        if order_id in unnamed:
            entry[1] += order["total"]
    lost = clicks.lost_revenue()
    assert {d: tracking[d].orders for d in by_day} == {d: v[0] for d, v in by_day.items()}
    assert {d: lost[d] for d in by_day} == {d: v[1] for d, v in by_day.items()}


def _zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(ZONE)


# The warehouse's rule, in SQL over raw.events: visitor = coalesce(anonymous_id, user_id),
# a gap of 30 minutes or more starts a session, a session's day and device are its first
# event's, funnel steps each strictly after the previous one.
SESSIONS_SQL = f"""
WITH e AS (
    SELECT coalesce(anonymous_id, user_id) AS visitor, event_ts, event_type, device_type,
           properties
    FROM raw.events
), marked AS (
    SELECT *, CASE WHEN event_ts - lag(event_ts) OVER w < INTERVAL 30 MINUTE THEN 0 ELSE 1
              END AS starts
    FROM e WINDOW w AS (PARTITION BY visitor ORDER BY event_ts)
), numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY visitor ORDER BY event_ts
                                ROWS UNBOUNDED PRECEDING) AS session_no
    FROM marked
), sessions AS (
    SELECT visitor, session_no,
           strftime(timezone('{ZONE}', min(event_ts)), '%Y-%m-%d') AS day,
           arg_min(device_type, event_ts) AS device_type,
           count(*) AS events,
           count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
           coalesce(sum(CAST(json_extract(properties, '$.revenue') AS DECIMAL(18, 0)))
                    FILTER (WHERE event_type = 'purchase'), 0) AS revenue
    FROM numbered GROUP BY visitor, session_no
)
"""
STEP_SQL = """
, s1 AS (SELECT visitor, session_no, min(event_ts) AS t FROM numbered
         WHERE event_type = 'page_view' GROUP BY ALL)
, s2 AS (SELECT n.visitor, n.session_no, min(n.event_ts) AS t FROM numbered n
         JOIN s1 USING (visitor, session_no)
         WHERE n.event_type = 'product_view' AND n.event_ts > s1.t GROUP BY ALL)
, s3 AS (SELECT n.visitor, n.session_no, min(n.event_ts) AS t FROM numbered n
         JOIN s2 USING (visitor, session_no)
         WHERE n.event_type = 'add_to_cart' AND n.event_ts > s2.t GROUP BY ALL)
, s4 AS (SELECT n.visitor, n.session_no, min(n.event_ts) AS t FROM numbered n
         JOIN s3 USING (visitor, session_no)
         WHERE n.event_type = 'begin_checkout' AND n.event_ts > s3.t GROUP BY ALL)
, s5 AS (SELECT n.visitor, n.session_no, min(n.event_ts) AS t FROM numbered n
         JOIN s4 USING (visitor, session_no)
         WHERE n.event_type = 'purchase' AND n.event_ts > s4.t GROUP BY ALL)
SELECT s.day, s.device_type,
       count(s1.t) AS page_view, count(s2.t) AS product_view, count(s3.t) AS add_to_cart,
       count(s4.t) AS begin_checkout, count(s5.t) AS purchase
FROM sessions s
LEFT JOIN s1 USING (visitor, session_no) LEFT JOIN s2 USING (visitor, session_no)
LEFT JOIN s3 USING (visitor, session_no) LEFT JOIN s4 USING (visitor, session_no)
LEFT JOIN s5 USING (visitor, session_no)
GROUP BY ALL
"""


def test_sessions_and_funnel_truth_are_the_warehouse_rule_over_raw_events(
    played: Played,
) -> None:
    clicks = played.truth.clicks
    sessions = rows(
        played.raw,
        SESSIONS_SQL
        + """SELECT day, device_type, count(*) AS sessions, sum(events) AS events,
                    sum(purchases) AS purchases, sum(revenue) AS revenue
             FROM sessions GROUP BY ALL""",
    )
    expected = {
        (r["day"], r["device_type"]): (
            r["sessions"],
            r["events"],
            r["purchases"],
            Decimal(r["revenue"]),
        )
        for r in sessions
    }
    got = {k: (f.sessions, f.events, f.purchases, f.revenue) for k, f in clicks.sessions.items()}
    assert got == expected
    assert len({day for day, _ in got}) >= 2  # the window spans business days
    funnel = rows(played.raw, SESSIONS_SQL + STEP_SQL)
    expected_funnel = {
        (r["day"], r["device_type"]): [r[s] for s in FUNNEL_STEPS] for r in funnel if r["page_view"]
    }
    assert clicks.funnel == expected_funnel
    assert sum(steps[-1] for steps in clicks.funnel.values()) > 0
    # One generator session is one warehouse session.
    [distinct] = rows(played.raw, "SELECT count(DISTINCT session_id) AS n FROM raw.events")
    assert distinct["n"] == sum(f.sessions for f in clicks.sessions.values())


def test_the_shop_moved_the_checkout_orders_and_its_truth_is_the_database(
    played: Played,
) -> None:
    orders = orders_in(played.dsn)
    shop = played.truth.shop
    statuses = Counter(o["status"] for o in orders.values())
    assert statuses == +shop.orders_by_status
    assert set(statuses) - {"PENDING"}, "the workload moved none of the checkout orders"
    by_day = Counter(
        o["created_at"].astimezone(_zone()).date().isoformat() for o in orders.values()
    )
    assert by_day == shop.orders_by_business_day


def test_the_same_seed_tells_the_same_story(
    played: Played, fresh_database: Any, tmp_path: Path
) -> None:
    raw = RawTables(tmp_path / "again.duckdb")
    try:
        again = play(fresh_database(), raw, **STORY, run_id="second")
    finally:
        raw.warehouse.close()
    first, second = played.truth, again
    assert second.clicks.accepted == first.clicks.accepted
    assert second.clicks.sessions == first.clicks.sessions
    assert second.clicks.funnel == first.clicks.funnel
    assert second.clicks.session_orders == first.clicks.session_orders  # same order ids
    assert second.shop.orders_by_status == first.shop.orders_by_status
