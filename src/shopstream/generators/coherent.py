"""The clickstream and the shop as one story, played to completion at full speed.

In a real shop the checkout writes the order to the database and then the page reports the
purchase with that order's id. :func:`play_coherent` does the same without real-time pacing,
for reconciliation tests: ``sessions`` shoppers arrive at random times over a window of the
last days (old enough that nothing is in the future, young enough for the collector's
``max_event_age_days``), every purchase is an order :class:`~.shop.Shop` placed first (at the
purchase's time, with the shelf prices the event then reports), a share of those purchase
events is lost, and the order workload moves the orders on (paid, shipped, cancelled,
refunded) between batches. Everything is sent to a real collector, one batch at a time.

The same seed on a fresh shop database tells the same story: same sessions, same carts, same
orders in the same order (so the same order ids from the database's sequences), same losses
and the same workload decisions. What differs between runs is the run id (event, session and
anonymous ids, unless ``run_id`` is given), the times of the workload's own moves
(``updated_at``, ``paid_at``: the wall clock) and, by default, the window, which ends a little
before the moment the run starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from shopstream.generators.clickstream import (
    SESSION_TIMEOUT,
    Clickstream,
    CollectorRefused,
    GroundTruth,
    _parse_answer,
    take_events,
)
from shopstream.generators.shop import Shop, ShopTruth, setup_shop_schema

#: The default window: shoppers arrive between this long ago ...
WINDOW_START = timedelta(hours=40)
#: ... and this long ago (a session lasts minutes; its events must not be in the future).
WINDOW_END = timedelta(hours=1)


@dataclass(frozen=True)
class CoherentTruth:
    """What one coherent run did: the collector's side and the shop's side."""

    clicks: GroundTruth
    shop: ShopTruth


async def play_coherent(
    dsn: str,
    url: str,
    *,
    seed: int = 1,
    sessions: int = 2_000,
    timezone: str = "UTC",
    purchase_event_loss: float = 0.02,
    session_timeout_minutes: float = SESSION_TIMEOUT / 60,
    window: tuple[datetime, datetime] | None = None,
    run_id: str | None = None,
    write_key: str | None = None,
    bad_fraction: float = 0.0,
    batch_size: int = 200,
    shop_steps_per_batch: int = 4,
    settle_steps: int = 200,
    own_orders: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    keep_event_ids: bool = False,
) -> CoherentTruth:
    """Play ``sessions`` shoppers against the shop database ``dsn`` (schema and catalogue
    set up here if missing) and the collector at ``url``; return both truths.

    ``window`` is (first arrival, last arrival), UTC-aware; by default from 40 h to 1 h
    before now. Between batches the order workload runs ``shop_steps_per_batch``
    transactions, and ``settle_steps`` more at the end. ``own_orders=False`` (the default)
    keeps the workload from placing orders of its own, so that every order of the run comes
    from a checkout (what a tracking-coverage check wants); the shop database should then
    hold no other orders of the window's days. ``transport`` sends in-process (an
    ``httpx.ASGITransport``) instead of over the network. A batch the collector does not
    answer after retries raises: a test must not go on with a truth it cannot trust.
    """
    if sessions < 1:
        raise ValueError("sessions must be at least 1")
    now = datetime.now(UTC)
    first, last = window or (now - WINDOW_START, now - WINDOW_END)
    if first.tzinfo is None or last.tzinfo is None:
        raise ValueError("the window's instants must be timezone-aware")
    timeout = session_timeout_minutes * 60
    await asyncio.to_thread(setup_shop_schema, dsn, seed=seed)
    stream = Clickstream(
        seed=seed,
        run_id=run_id,
        sessions=sessions,
        arrivals=(first.timestamp(), last.timestamp()),
        session_timeout=timeout,
        bad_fraction=bad_fraction,
        checkouts=True,
        purchase_event_loss=purchase_event_loss,
    )
    clicks = GroundTruth(
        event_ids=set() if keep_event_ids else None, timezone=timezone, session_timeout=timeout
    )
    shop = Shop(dsn, seed=seed, own_orders=own_orders, timezone=timezone)
    auth = httpx.BasicAuth(write_key, "") if write_key is not None else None
    await shop.open()
    try:
        async with httpx.AsyncClient(
            base_url=url.rstrip("/"), auth=auth, transport=transport, timeout=30.0
        ) as client:
            while batch := await take_events(stream, batch_size, shop, clicks):
                clicks.record(batch, await _send(client, batch))
                for _ in range(shop_steps_per_batch):
                    await shop.step()
            for _ in range(settle_steps):
                await shop.step()
    finally:
        truth = await shop.close()
    return CoherentTruth(clicks=clicks, shop=truth)


def run_coherent(dsn: str, url: str, **options: Any) -> CoherentTruth:
    """:func:`play_coherent` from synchronous code (a test, a script)."""
    return asyncio.run(play_coherent(dsn, url, **options))


async def _send(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> dict[int, str]:
    """POST one batch; the rejected indexes with their reasons. Retries what may succeed."""
    body = orjson.dumps(batch)
    last = ""
    for attempt in range(6):
        try:
            response = await client.post(
                "/v1/events", content=body, headers={"content-type": "application/json"}
            )
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code in (401, 403):
                raise CollectorRefused(f"HTTP {response.status_code}: {response.text[:200]}")
            status = response.status_code
            answer = _parse_answer(response, len(batch)) if status in (200, 400) else None
            if answer is not None:
                return answer
            if status == 400:  # refused as a whole, without per-event reasons
                return dict.fromkeys(range(len(batch)), response.text[:200])
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
    raise RuntimeError(f"the collector did not take a batch of {len(batch)} events: {last}")


__all__ = ["CoherentTruth", "play_coherent", "run_coherent"]
