"""The pure parts of the coherent generator: finite streams, checkouts, the purchase loss,
sessions that keep the warehouse's 30-minute rule, and the session / funnel / tracking truth.

The order-placing side here is a shop of plain Python (a price list and a stock count), so the
stream's own logic is what is tested; tests/integration/test_coherent_generator.py runs it
against PostgreSQL and the collector.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shopstream.events.behaviour import parse_event
from shopstream.generators.clickstream import (
    FUNNEL_STEPS,
    Checkout,
    Clickstream,
    GroundTruth,
    PlacedOrder,
    take_events,
)
from shopstream.generators.products import build_catalogue

FIRST = datetime(2026, 11, 27, 0, 0, tzinfo=UTC).timestamp()
LAST = FIRST + 20 * 3600
TIMEOUT = 1800.0


class PriceListShop:
    """Places an order when every line is in stock, at the catalogue price plus a markup
    (so that the event's prices are visibly the order's, not the catalogue's)."""

    def __init__(self, stock: int = 10**6, markup: int = 100) -> None:
        self.catalogue = build_catalogue(1)
        self.stock: dict[str, int] = defaultdict(lambda: stock)
        self.markup = Decimal(markup)
        self.orders: dict[str, tuple[Checkout, PlacedOrder]] = {}
        self.failed: list[Checkout] = []

    async def place(self, checkout: Checkout) -> PlacedOrder | None:
        if any(self.stock[p] < q for p, q in checkout.lines):
            self.failed.append(checkout)
            return None
        for p, q in checkout.lines:
            self.stock[p] -= q
        order_id = f"O{len(self.orders) + 1:010d}"
        lines = tuple(
            (p, q, self.catalogue.product(p).price + self.markup) for p, q in checkout.lines
        )
        placed = PlacedOrder(order_id, lines)
        self.orders[order_id] = (checkout, placed)
        return placed


def finite(sessions: int = 2_000, **options: Any) -> Clickstream:
    return Clickstream(
        **{
            "seed": 3,
            "run_id": "unit",
            "sessions": sessions,
            "arrivals": (FIRST, LAST),
            **options,
        }
    )


def play(stream: Clickstream, shop: PriceListShop, truth: GroundTruth) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while batch := await take_events(stream, 500, shop, truth):
            events.extend(batch)
        return events

    return asyncio.run(go())


def ms(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["event_ts"]).timestamp() * 1000)


@pytest.fixture(scope="module")
def played() -> tuple[list[dict[str, Any]], PriceListShop, GroundTruth]:
    shop = PriceListShop()
    truth = GroundTruth(timezone="Asia/Seoul")
    events = play(finite(checkouts=True, purchase_event_loss=0.25), shop, truth)
    truth.record(events, {})
    return events, shop, truth


def test_a_finite_stream_plays_its_shoppers_in_the_window_and_ends() -> None:
    events = list(finite(sessions=300))
    assert len({e["session_id"] for e in events}) == 300
    times = [ms(e) / 1000 for e in events]
    assert times == sorted(times)
    assert times[0] >= FIRST and times[-1] <= LAST + 3600
    for event in events:
        parse_event(event)
        assert event["anonymous_id"]  # every event says whose it is


def test_the_same_seed_tells_the_same_story_with_the_same_shop() -> None:
    def story() -> list[dict[str, Any]]:
        shop = PriceListShop(stock=3)
        return play(finite(500, checkouts=True, purchase_event_loss=0.3), shop, GroundTruth())

    assert story() == story()


def test_purchases_report_the_order_the_shop_placed(
    played: tuple[list[dict[str, Any]], PriceListShop, GroundTruth],
) -> None:
    events, shop, _ = played
    purchases = [e for e in events if e["event_type"] == "purchase"]
    assert len(purchases) > 30
    for event in purchases:
        checkout, placed = shop.orders[event["properties"]["order_id"]]
        props = event["properties"]
        items = [(i["product_id"], i["quantity"], Decimal(i["price"])) for i in props["items"]]
        assert items == list(placed.lines)  # the order's unit prices, not the catalogue's
        assert props["revenue"] == int(placed.total) == sum(p * q for _, q, p in items)
        assert event["user_id"] == checkout.user_id is not None  # the buyer is logged in
        assert event["event_ts"] == checkout.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert event["session_id"] == checkout.session_id
        assert props["order_id"] in event["page_url"]


def test_a_failed_order_makes_no_purchase_and_the_session_goes_on() -> None:
    shop = PriceListShop(stock=1)  # the second unit of anything is out of stock
    events = play(finite(checkouts=True), shop, GroundTruth())
    assert shop.failed, "no order failed"
    purchased = {e["properties"]["order_id"] for e in events if e["event_type"] == "purchase"}
    assert purchased == set(shop.orders)
    failed_sessions = {c.session_id for c in shop.failed}
    for event in events:
        if event["session_id"] in failed_sessions:
            assert event["event_type"] != "purchase"


def test_the_loss_share_is_the_configured_one_and_the_truth_knows_which(
    played: tuple[list[dict[str, Any]], PriceListShop, GroundTruth],
) -> None:
    events, shop, truth = played
    sent = {e["properties"]["order_id"] for e in events if e["event_type"] == "purchase"}
    lost = set(shop.orders) - sent
    placed = len(shop.orders)
    assert sum(t.lost_on_purpose for t in truth.tracking.values()) == len(lost)
    assert abs(len(lost) / placed - 0.25) < 4 * (0.25 * 0.75 / placed) ** 0.5
    assert sum(t.orders for t in truth.tracking.values()) == placed
    assert sum(t.matched for t in truth.tracking.values()) == len(sent)
    lost_revenue = sum(shop.orders[o][1].total for o in lost)
    assert sum(truth.lost_revenue().values()) == lost_revenue > 0


def sessionize(events: list[dict[str, Any]], timeout: float) -> dict[tuple[str, int], set[str]]:
    """The warehouse's rule: per coalesce(anonymous_id, user_id), a new session after
    ``timeout`` seconds of quiet. -> {(visitor, n): the generator's session ids in it}."""
    by_visitor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_visitor[event["anonymous_id"] or event["user_id"]].append(event)
    sessions: dict[tuple[str, int], set[str]] = {}
    for visitor, own in by_visitor.items():
        own.sort(key=ms)
        number, last = 0, None
        for event in own:
            if last is not None and ms(event) - last >= timeout * 1000:
                number += 1
            last = ms(event)
            sessions.setdefault((visitor, number), set()).add(event["session_id"])
    return sessions


def test_generator_sessions_are_the_warehouse_sessions() -> None:
    # Few members who all come back often: their devices would collide without the rule.
    stream = Clickstream(
        build_catalogue(1, users=40),
        seed=1,
        run_id="rule",
        sessions=3_000,
        arrivals=(FIRST, FIRST + 6 * 3600),
    )
    events = list(stream)
    warehouse = sessionize(events, TIMEOUT)
    assert all(len(ids) == 1 for ids in warehouse.values())  # none merged
    assert len(warehouse) == len({e["session_id"] for e in events})  # none split
    members = [e for e in events if e["user_id"] is not None]
    assert len({e["anonymous_id"] for e in members}) < len({e["session_id"] for e in members})


def test_slow_thinkers_still_keep_a_session_together() -> None:
    # Twenty times slower thinking: without the cap many in-session gaps pass 30 minutes.
    events = list(finite(sessions=400, time_scale=20.0))
    by_session: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_session[event["session_id"]].append(ms(event))
    gaps = [b - a for times in by_session.values() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= TIMEOUT / 3 * 1000 + 1
    assert len(sessionize(events, TIMEOUT)) == len(by_session)


# -- the truth on events made by hand --------------------------------------------------------


def event(visitor: str, at: datetime, event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{visitor}-{at.isoformat()}-{event_type}",
        "event_type": event_type,
        "event_ts": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "anonymous_id": visitor,
        "user_id": None,
        "device_type": fields.pop("device_type", "ios"),
        "properties": fields,
    }


T0 = datetime(2026, 11, 27, 14, 50, tzinfo=UTC)  # 23:50 in Seoul


def test_truth_counts_funnel_steps_only_in_order_and_strictly_later() -> None:
    s = timedelta(seconds=1)
    events = [
        event("a", T0, "product_view"),  # before any page_view: not a step
        event("a", T0 + s, "page_view"),
        event("a", T0 + 2 * s, "add_to_cart"),  # before the product_view: not a step
        event("a", T0 + 3 * s, "product_view"),
        event("a", T0 + 3 * s, "add_to_cart"),  # same instant as the product_view: no
        event("b", T0, "page_view", device_type="web_desktop"),
        event("b", T0 + s, "product_view", device_type="web_desktop"),
        event("b", T0 + 2 * s, "add_to_cart", device_type="web_desktop"),
        event("b", T0 + 3 * s, "begin_checkout", device_type="web_desktop"),
        event("b", T0 + 4 * s, "purchase", order_id="O1", revenue=5000, device_type="web_desktop"),
    ]
    truth = GroundTruth(timezone="Asia/Seoul")
    truth.record(events, {})
    assert truth.funnel == {
        ("2026-11-27", "ios"): [1, 1, 0, 0, 0],
        ("2026-11-27", "web_desktop"): [1, 1, 1, 1, 1],
    }
    ios = truth.sessions[("2026-11-27", "ios")]
    assert (ios.sessions, ios.events, ios.purchases) == (1, 5, 0)
    desktop = truth.sessions[("2026-11-27", "web_desktop")]
    assert (desktop.purchases, desktop.revenue) == (1, Decimal(5000))
    assert len(FUNNEL_STEPS) == 5


def test_truth_splits_a_visitor_after_the_timeout_and_dates_by_the_session_start() -> None:
    minute = timedelta(minutes=1)
    events = [
        event("a", T0, "page_view"),  # 23:50 Seoul, the 27th
        event("a", T0 + 29 * minute, "page_view"),  # 00:19 the 28th, same session
        event("a", T0 + 59 * minute, "product_view"),  # 30 min later: a new session
        event("a", T0 + 60 * minute, "page_view"),
    ]
    truth = GroundTruth(timezone="Asia/Seoul")
    truth.record(events[:2], {})
    truth.record(events[2:], {1: "spoiled"})  # rejected events are in no session
    assert {k: (f.sessions, f.events) for k, f in truth.sessions.items()} == {
        ("2026-11-27", "ios"): (1, 2),
        ("2026-11-28", "ios"): (1, 1),
    }
    assert truth.funnel == {("2026-11-27", "ios"): [1, 0, 0, 0, 0]}
    utc = GroundTruth()
    utc.record(events, {})
    assert set(utc.sessions) == {("2026-11-27", "ios")}  # all on the 27th in UTC


def test_truth_round_trips_through_json(
    played: tuple[list[dict[str, Any]], PriceListShop, GroundTruth], tmp_path: Path
) -> None:
    _, _, truth = played
    path = tmp_path / "truth.json"
    truth.write_json(path)
    again = GroundTruth.read_json(path)
    assert again.as_dict() == truth.as_dict()
    assert again.sessions == truth.sessions and again.funnel == truth.funnel
    assert again.lost_revenue() == truth.lost_revenue()
