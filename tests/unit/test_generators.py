"""The synthetic data generators: catalogue, clickstream and the clickstream sender.

The sender is tested against a small but real HTTP server (uvicorn, started here) that
answers like the collector: ``{"accepted": n, "rejected": [{"index": i, "reason": ...}]}``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from pydantic import ValidationError

from shopstream.events.behaviour import EVENT_TYPES, parse_event
from shopstream.generators.clickstream import (
    DEVICE_SHARES,
    Clickstream,
    CollectorRefused,
    GroundTruth,
    SendStats,
    _uuid_from,
    send_events,
)
from shopstream.generators.products import (
    CATALOGUE_AS_OF,
    CATEGORIES,
    GRADES,
    STORAGE_TYPES,
    build_catalogue,
)

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
FUNNEL = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase")


def stream(**options: Any) -> Clickstream:
    return Clickstream(**{"seed": 1, "run_id": "test", "start": START, **options})


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return stream(sessions=500).take(60_000)


def by_session(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        sessions[event["session_id"]].append(event)
    return sessions


# -- catalogue --------------------------------------------------------------------------


def test_catalogue_is_determined_by_its_seed() -> None:
    fresh = build_catalogue.__wrapped__(1, products=500, users=5_000)
    assert fresh == build_catalogue(1)
    assert fresh.products == build_catalogue.__wrapped__(1).products
    assert build_catalogue.__wrapped__(2).products != fresh.products


def test_catalogue_rows_look_like_a_shop() -> None:
    shop = build_catalogue(1)
    assert [p.product_id for p in shop.products[:2]] == ["P000001", "P000002"]
    assert shop.users[41].user_id == "U000042"
    for product in shop.products:
        assert product.category in CATEGORIES
        assert product.storage_type in STORAGE_TYPES
        assert product.price == product.price.to_integral_value() >= 900  # whole won
        assert product.price % 100 == 0
        assert product.stock >= 0
    assert {p.category for p in shop.products} == set(CATEGORIES)
    # Cold-chain delivery belongs to food (and a little to beauty, kids, pets).
    assert {p.storage_type for p in shop.products if p.category == "food"} == set(STORAGE_TYPES)
    assert {p.storage_type for p in shop.products if p.category == "electronics"} == {"ROOM"}
    assert len({u.email for u in shop.users}) == len(shop.users)
    grades = Counter(u.grade for u in shop.users)
    assert set(grades) == set(GRADES)
    assert grades["BRONZE"] > grades["SILVER"] > grades["GOLD"] > grades["VIP"]
    assert all(u.created_at < CATALOGUE_AS_OF for u in shop.users)


# -- clickstream --------------------------------------------------------------------------


def test_same_seed_and_run_give_the_same_stream() -> None:
    assert stream().take(3_000) == stream().take(3_000)


def test_another_run_tells_the_same_story_with_new_ids() -> None:
    first, second = stream().take(3_000), stream(run_id="other").take(3_000)

    def story(e: dict[str, Any]) -> tuple[Any, ...]:
        return e["event_type"], e["event_ts"], e["user_id"], e["device_type"]

    assert [story(e) for e in first] == [story(e) for e in second]
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}
    assert not {e["session_id"] for e in first} & {e["session_id"] for e in second}
    assert Clickstream(seed=1).run_id != Clickstream(seed=1).run_id  # random when not given


def test_another_seed_gives_another_stream() -> None:
    a, b = stream().take(500), stream(seed=2).take(500)
    assert [e["event_type"] for e in a] != [e["event_type"] for e in b]


def test_every_event_is_valid_and_unique(events: list[dict[str, Any]]) -> None:
    for event in events:
        parsed = parse_event(event)
        assert parsed.event_type == event["event_type"]  # type: ignore[attr-defined]
        assert parsed.event_id == event["event_id"]
    assert len({e["event_id"] for e in events}) == len(events)
    # Every one of the contract's shop event types shows up (custom is the trackers' own).
    assert {e["event_type"] for e in events} == set(EVENT_TYPES) - {"custom"}


def test_event_ids_are_version_4_uuids() -> None:
    rng = random.Random(5)
    for _ in range(1_000):
        bits = rng.getrandbits(128)
        assert _uuid_from(bits) == str(uuid.UUID(int=bits, version=4))


def test_events_are_json_ready(events: list[dict[str, Any]]) -> None:
    assert orjson.loads(orjson.dumps(events[:1_000])) == events[:1_000]


def test_time_advances_within_sessions(events: list[dict[str, Any]]) -> None:
    stamps = [datetime.fromisoformat(e["event_ts"]) for e in events]
    assert stamps == sorted(stamps)
    assert stamps[0] >= START
    for session in by_session(events).values():
        times = [e["event_ts"] for e in session]
        assert times == sorted(times)
        assert len({(e["device_type"], e["anonymous_id"]) for e in session}) == 1


def test_sessions_start_like_sessions(events: list[dict[str, Any]]) -> None:
    # Sessions still running when the sample ends may be cut short: compare prefixes.
    for session in by_session(events).values():
        kinds = [e["event_type"] for e in session]
        app = session[0]["device_type"] in ("ios", "android")
        if kinds[0] == "push_click":
            assert app
            kinds = kinds[1:]
        if app:
            assert kinds[:2] == ["app_open", "page_view"][: len(kinds)]
        else:
            assert kinds[0] == "page_view"
            assert "app_open" not in kinds and "app_close" not in kinds


def test_devices_and_logins_have_plausible_shares(events: list[dict[str, Any]]) -> None:
    firsts = [s[0] for s in by_session(events).values()]
    devices = Counter(e["device_type"] for e in firsts)
    for device, share in DEVICE_SHARES.items():
        assert devices[device] / len(firsts) == pytest.approx(share, abs=0.03)
    logged_in = sum(e["user_id"] is not None for e in firsts) / len(firsts)
    assert 0.4 < logged_in < 0.75
    assert 0.2 < sum("utm_source" in e for e in firsts) / len(firsts) < 0.6


def test_funnel_step_rates_are_plausible(events: list[dict[str, Any]]) -> None:
    reached = Counter[str]()
    sessions = by_session(events)
    for session in sessions.values():
        reached.update({e["event_type"] for e in session} & set(FUNNEL))
    rate = {step: reached[step] / len(sessions) for step in FUNNEL}
    assert rate["page_view"] > 0.99
    assert 0.55 < rate["product_view"] < 0.85
    assert 0.10 < reached["add_to_cart"] / reached["product_view"] < 0.35
    assert 0.30 < reached["begin_checkout"] / reached["add_to_cart"] < 0.70
    assert 0.45 < reached["purchase"] / reached["begin_checkout"] < 0.85
    assert 0.015 < rate["purchase"] < 0.06  # a general mall converts a few percent


def test_purchase_revenue_is_the_sum_of_its_lines(events: list[dict[str, Any]]) -> None:
    purchases = [e for e in events if e["event_type"] == "purchase"]
    assert len(purchases) > 100
    catalogue = build_catalogue(1)
    for event in purchases:
        props = event["properties"]
        lines = props["items"]
        assert lines
        assert props["revenue"] == sum(line["price"] * line["quantity"] for line in lines)
        for line in lines:
            assert Decimal(line["price"]) == catalogue.product(line["product_id"]).price
        assert props["shipping"] == (0 if props["revenue"] >= 30_000 else 3_000)
        parsed = parse_event(event)
        assert parsed.properties.revenue == Decimal(props["revenue"])  # type: ignore[attr-defined]
    assert len({e["properties"]["order_id"] for e in purchases}) == len(purchases)


def test_a_purchase_buys_what_the_cart_held(events: list[dict[str, Any]]) -> None:
    checked = 0
    for session in by_session(events).values():
        cart: Counter[str] = Counter()
        for event in session:
            props = event["properties"]
            if event["event_type"] == "add_to_cart":
                cart[props["product_id"]] += props["quantity"]
            elif event["event_type"] == "remove_from_cart":
                assert cart.pop(props["product_id"]) == props["quantity"]
            elif event["event_type"] == "begin_checkout":
                assert props["items_count"] == sum(cart.values())
            elif event["event_type"] == "purchase":
                bought = {line["product_id"]: line["quantity"] for line in props["items"]}
                assert bought == dict(cart)
                cart.clear()
                checked += 1
    assert checked > 100


def test_bad_fraction_spoils_that_share_in_several_ways() -> None:
    sample = stream(bad_fraction=0.2).take(10_000)
    reasons: Counter[str] = Counter()
    for event in sample:
        try:
            parse_event(event)
        except ValidationError as exc:
            reasons[exc.errors()[0]["type"]] += 1
    bad = sum(reasons.values())
    assert bad / len(sample) == pytest.approx(0.2, abs=0.02)
    # Unknown event type, missing property, wrong types (several pydantic error kinds).
    assert reasons["union_tag_invalid"] > 0
    assert reasons["missing"] > 0
    assert len(reasons) >= 4
    assert all(parse_event(e) for e in stream().take(2_000))


def test_keep_pace_holds_event_time_to_the_clock() -> None:
    clicks = stream(sessions=50)
    now = START.timestamp()
    for _ in range(600):  # ten minutes at 10 events/s, one call per second
        now += 1.0
        clicks.keep_pace(now)
        clicks.take(10)
        assert abs(clicks.clock - now) < 30
    assert abs(clicks.clock - now) < 10


# -- ground truth -------------------------------------------------------------------------


def test_ground_truth_counts_acknowledged_events_and_round_trips(tmp_path: Path) -> None:
    batch = stream(sessions=100).take(3_000)
    purchase_index = next(i for i, e in enumerate(batch) if e["event_type"] == "purchase")
    rejected = {0: "bad", purchase_index: "bad"}
    truth = GroundTruth(event_ids=set())
    truth.record(batch, rejected)
    truth.record(stream(run_id="again").take(10), {})
    assert truth.sent == 3_010 and truth.rejected == 2 and truth.accepted == 3_008
    assert sum(truth.by_event_type.values()) == truth.accepted == sum(truth.by_event_date.values())
    accepted_purchases = [
        e for i, e in enumerate(batch) if e["event_type"] == "purchase" and i not in rejected
    ]
    assert truth.purchases == len(accepted_purchases)
    assert truth.purchase_revenue == sum(
        Decimal(e["properties"]["revenue"]) for e in accepted_purchases
    )
    path = tmp_path / "truth.json"
    truth.write_json(path)
    assert orjson.loads(path.read_bytes())["purchase_revenue"] == str(truth.purchase_revenue)
    assert GroundTruth.read_json(path) == truth


# -- the sender, against a real HTTP server --------------------------------------------------


class FakeCollector:
    """A tiny ASGI collector: validates with the contract and answers like the real one.

    ``fail_after_storing`` requests are stored and then answered 503, as when a collector
    commits a batch and dies before replying: the sender must send those events again.
    """

    def __init__(
        self,
        *,
        fail_after_storing: int = 0,
        status_override: int | None = None,
        busy_first: int = 0,
    ):
        self.fail_after_storing = fail_after_storing
        self.status_override = status_override
        self.busy_first = busy_first  # answer this many requests 429 with Retry-After
        self.batches: list[list[dict[str, Any]]] = []
        self.stored_ids: list[str] = []
        self.accepted_ids: set[str] = set()
        self.authorizations: set[str | None] = set()
        self.arrivals: list[float] = []

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        self.authorizations.add(headers.get(b"authorization", b"").decode() or None)
        if scope["path"] != "/v1/events" or scope["method"] != "POST":
            return await self._answer(send, 404, {"detail": "not found"})
        if self.status_override is not None:
            return await self._answer(send, self.status_override, {"detail": "no"})
        if self.busy_first > 0:
            self.busy_first -= 1
            self.arrivals.append(time.monotonic())
            return await self._answer(send, 429, {"detail": "slow down"}, retry_after="0.3")
        batch = orjson.loads(body)
        self.arrivals.append(time.monotonic())
        self.batches.append(batch)
        rejected = []
        for index, event in enumerate(batch):
            try:
                parse_event(event)
            except ValidationError as exc:
                rejected.append({"index": index, "reason": exc.errors()[0]["msg"]})
            else:
                self.stored_ids.append(event["event_id"])
        if self.fail_after_storing > 0:
            self.fail_after_storing -= 1
            return await self._answer(send, 503, {"detail": "stored, then lost the answer"})
        bad = {r["index"] for r in rejected}
        self.accepted_ids.update(e["event_id"] for i, e in enumerate(batch) if i not in bad)
        answer = {"accepted": len(batch) - len(rejected), "rejected": rejected}
        await self._answer(send, 400 if rejected and len(rejected) == len(batch) else 200, answer)

    @staticmethod
    async def _answer(
        send: Callable[[dict[str, Any]], Awaitable[None]],
        status: int,
        body: object,
        retry_after: str | None = None,
    ) -> None:
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json")]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(app: FakeCollector, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    server.task = asyncio.create_task(server.serve())  # type: ignore[attr-defined]
    while not server.started:
        await asyncio.sleep(0.01)
    return server


async def shut(server: uvicorn.Server) -> None:
    server.should_exit = True
    await server.task  # type: ignore[attr-defined]


def run_against(
    app: FakeCollector, *, server_delay: float = 0.0, **options: Any
) -> tuple[GroundTruth, list[SendStats], float]:
    """Send to ``app`` served on a free port; the server may come up only after a delay."""
    port = free_port()
    progress: list[SendStats] = []

    async def main() -> tuple[GroundTruth, float]:
        async def late_server() -> uvicorn.Server:
            await asyncio.sleep(server_delay)
            return await serve(app, port)

        starting = asyncio.create_task(late_server())
        if not server_delay:
            await starting
        began = time.monotonic()
        try:
            truth = await send_events(
                f"http://127.0.0.1:{port}", on_progress=progress.append, **options
            )
        finally:
            await shut(await starting)
        return truth, time.monotonic() - began

    truth, elapsed = asyncio.run(main())
    return truth, progress, elapsed


def test_sender_paces_batches_and_counts_what_was_acknowledged() -> None:
    app = FakeCollector()
    wall_start = time.time()
    truth, progress, elapsed = run_against(
        app, rate=400, duration=1.5, batch_size=50, write_key="wk_test", keep_event_ids=True
    )
    wall_end = time.time()
    assert truth.sent == truth.accepted == 600 and truth.rejected == truth.failed == 0
    assert truth.event_ids == app.accepted_ids and truth.distinct_event_ids == 600
    assert [len(b) for b in app.batches] == [50] * 12
    # Paced, not dumped: the last batch is due 1.375 s after the first.
    assert elapsed >= 1.3 and app.arrivals[-1] - app.arrivals[0] >= 1.3
    # Real trackers' batches: several sessions share one batch.
    assert all(len({e["session_id"] for e in b}) > 1 for b in app.batches)
    assert app.authorizations == {"Basic " + base64.b64encode(b"wk_test:").decode()}
    received = [e for b in app.batches for e in b]
    assert truth.by_event_type == Counter(e["event_type"] for e in received)
    purchases = [e for e in received if e["event_type"] == "purchase"]
    assert truth.purchases == len(purchases)
    assert truth.purchase_revenue == sum(Decimal(e["properties"]["revenue"]) for e in purchases)
    # Event time is now-ish: the stream's clock follows the wall clock.
    stamps = [datetime.fromisoformat(e["event_ts"]).timestamp() for e in received]
    assert wall_start - 1 <= min(stamps) and max(stamps) <= wall_end + 15
    assert truth.by_event_date == Counter(e["event_ts"][:10] for e in received)
    assert progress[-1].sent == 600 and progress[-1].errors == 0


def test_sender_resends_the_same_events_when_the_answer_is_lost() -> None:
    app = FakeCollector(fail_after_storing=3)
    truth, progress, _ = run_against(
        app, rate=1_000, duration=0.5, batch_size=100, concurrency=2, keep_event_ids=True
    )
    stored = Counter(app.stored_ids)
    # Three answers were lost, so three batches came again, with the very same ids.
    assert len(stored) == 500 and len(app.stored_ids) == 500 + 300
    assert sum(n - 1 for n in stored.values()) == 300
    assert truth.accepted == truth.distinct_event_ids == 500 == len(stored)
    assert truth.event_ids == set(stored)
    assert progress[-1].errors == 3 and progress[-1].failed == 0


def test_sender_counts_rejections_per_event() -> None:
    app = FakeCollector()
    truth, _, _ = run_against(app, rate=2_000, duration=1.0, batch_size=100, bad_fraction=0.3)
    received = [e for b in app.batches for e in b]
    assert truth.sent == len(received) == 2_000
    assert truth.accepted == len(app.accepted_ids)
    assert truth.rejected == 2_000 - truth.accepted
    assert truth.rejected / truth.sent == pytest.approx(0.3, abs=0.05)
    assert sum(truth.rejected_reasons.values()) == truth.rejected
    assert sum(truth.by_event_type.values()) == truth.accepted


def test_sender_answers_400_nothing_accepted_is_counted_as_rejected() -> None:
    app = FakeCollector()
    truth, _, _ = run_against(app, rate=500, duration=0.2, batch_size=20, bad_fraction=1.0)
    assert truth.sent == truth.rejected == 100 and truth.accepted == 0
    assert not truth.by_event_type and truth.purchase_revenue == 0


def test_sender_waits_for_a_collector_that_is_not_up_yet() -> None:
    app = FakeCollector()
    truth, progress, _ = run_against(app, server_delay=0.6, rate=200, duration=0.5)
    assert truth.accepted == 100 and truth.failed == 0
    assert progress[-1].errors > 0  # connection refused, retried


def test_sender_stops_when_asked() -> None:
    app = FakeCollector()
    port = free_port()

    async def main() -> tuple[GroundTruth, float]:
        server = await serve(app, port)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        began = time.monotonic()
        truth = await send_events(
            f"http://127.0.0.1:{port}", rate=500, duration=math.inf, stop=stop
        )
        elapsed = time.monotonic() - began
        await shut(server)
        return truth, elapsed

    truth, elapsed = asyncio.run(main())
    assert elapsed < 5
    assert 0 < truth.accepted <= 500


def test_sender_gives_up_on_a_refused_write_key() -> None:
    with pytest.raises(CollectorRefused):
        run_against(FakeCollector(status_override=401), rate=100, duration=5, write_key="nope")


def test_sender_gives_up_on_a_batch_after_its_attempts() -> None:
    truth, progress, _ = run_against(
        FakeCollector(status_override=503), rate=100, duration=0.1, max_attempts=2
    )
    assert truth.failed == 10 and truth.sent == truth.accepted == 0
    assert progress[-1].errors == 2


def test_sender_honours_retry_after() -> None:
    app = FakeCollector(busy_first=1)
    truth, progress, _ = run_against(app, rate=100, duration=0.1, concurrency=1)
    assert truth.accepted == 10 and progress[-1].errors == 1
    assert app.arrivals[1] - app.arrivals[0] >= 0.29  # waited as told, not the 0.1 s backoff


def test_sender_does_not_retry_what_cannot_succeed() -> None:
    truth, progress, _ = run_against(
        FakeCollector(status_override=413), rate=200, duration=0.25, batch_size=10
    )
    assert truth.failed == 50 and truth.sent == 0
    assert progress[-1].errors == 5  # one attempt per batch
