"""Synthetic shoppers: a behaviour-event stream, and a sender that posts it to the collector.

Shoppers arrive on a device (apps or the web), from a campaign, a search engine or nowhere
in particular, browse, search, fill a cart and sometimes buy. :class:`Clickstream` plays many
sessions at once and yields their events in time order as plain dicts, each one valid against
:mod:`shopstream.events.behaviour` (unless it is one of the deliberately bad ones)::

    >>> from shopstream.events.behaviour import parse_event
    >>> stream = Clickstream(seed=7, run_id="doc", start=datetime(2026, 11, 27, tzinfo=UTC))
    >>> [parse_event(event).event_id == event["event_id"] for event in stream.take(3)]
    [True, True, True]

Two random streams keep things reproducible without making runs collide: the *behaviour*
(who does what, in which order, how fast, which purchase events are lost) depends only on
``seed``; the *identifiers* (event ids, session ids, anonymous ids of guests) depend on
``seed`` and ``run_id``, and ``run_id`` is random unless given. Two runs with one seed
therefore tell the same story with different ids, so the warehouse's de-duplication by
``event_id`` never swallows the second run. Order ids come from the shop database when a
shop places the orders (``checkouts=True``, see :mod:`.coherent`), else they are made up
from ``run_id``. Money is whole won (see :mod:`.products`), sent as JSON integers, so
purchase revenue is exactly the sum of ``price * quantity`` over the items.

:func:`send_events` posts the stream in batches to ``{url}/v1/events`` at a steady rate and
returns a :class:`GroundTruth` of what the collector acknowledged, which later stages of the
pipeline reconcile against.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import httpx
import orjson

from shopstream.generators.products import Catalogue, Product, User, build_catalogue

log = logging.getLogger(__name__)

Event = dict[str, Any]
# One step of a session: seconds since the previous step, event type, page, properties.
_Step = tuple[float, str, str, dict[str, Any]]

# Korean e-commerce traffic is mostly mobile, and apps carry most of the mobile share.
DEVICE_SHARES: dict[str, float] = {
    "ios": 0.30,
    "android": 0.35,
    "web_mobile": 0.25,
    "web_desktop": 0.10,
}
_APPS = frozenset({"ios", "android"})
_WEB = "https://shopstream.example"
_APP = "app://shopstream"
_CURRENCY = "KRW"
# Orders from this amount on ship for free, so their shipping fee is zero.
_FREE_SHIPPING_FROM = 30_000
_SHIPPING_FEE = 3_000

_CAMPAIGNS = ("black_friday_2026", "winter_sale", "new_member_coupon", "weekly_deals")
_BANNERS = (
    ("bn-black-friday-2026", "home_top"),
    ("bn-winter-sale", "home_top"),
    ("bn-new-member", "home_middle"),
    ("bn-free-shipping", "category_top"),
    ("bn-kimjang-season", "home_middle"),
)
_PUSH_CAMPAIGNS = ("push-black-friday", "push-cart-reminder", "push-restock", "push-weekly")
_MISSPELLINGS = ("snaekers", "serumm", "tangerine box", "erbuds", "hoddie", "kimchee")


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a session comes from: the referrer and the UTM tags the landing page carries."""

    weight: float
    referrer: str | None
    utm_source: str | None = None
    utm_medium: str | None = None
    campaigns: tuple[str, ...] = ()
    lands_on_product: float = 0.0  # ads often link straight to a product page
    app_only: bool = False
    push: bool = False


_SOURCES: tuple[_Source, ...] = (
    _Source(0.33, None),  # typed the address, bookmark, opened the app
    _Source(0.14, "https://search.naver.com/", lands_on_product=0.3),
    _Source(0.08, "https://www.google.com/", lands_on_product=0.3),
    _Source(0.10, "https://search.naver.com/", "naver", "cpc", _CAMPAIGNS, 0.6),
    _Source(0.05, "https://www.google.com/", "google", "cpc", _CAMPAIGNS, 0.6),
    _Source(0.08, "https://www.instagram.com/", "instagram", "paid_social", _CAMPAIGNS, 0.7),
    _Source(0.04, "https://www.youtube.com/", "youtube", "video", _CAMPAIGNS, 0.5),
    _Source(0.06, None, "kakao", "message", ("weekly_deals", "black_friday_2026"), 0.4),
    _Source(0.04, None, "newsletter", "email", ("weekly_deals", "winter_sale"), 0.3),
    _Source(0.08, None, "app_push", "push", _PUSH_CAMPAIGNS, 0.3, app_only=True, push=True),
)

# Shares of logged-in sessions: app users stay logged in, web visitors mostly do not.
_LOGGED_IN = {"ios": 0.75, "android": 0.70, "web_mobile": 0.35, "web_desktop": 0.45}

# The funnel's knobs; tuned so that roughly 3-5 % of sessions buy, like a general mall.
_BOUNCE = {"ios": 0.20, "android": 0.20, "web_mobile": 0.40, "web_desktop": 0.35}
_ADD_TO_CART = 0.06  # per product view, anonymous visitor
_ADD_TO_CART_MEMBER = 0.09  # per product view, logged-in member
_WISHLIST = 0.04
_BEGIN_CHECKOUT = 0.50  # of sessions that still have a cart at the end
_PURCHASE = 0.65  # of checkouts
_LOGIN_AT_CHECKOUT = 0.7  # anonymous visitors who log in to pay (the others leave)
_REVIEW = 0.1  # of logged-in members who open their order history
_APP_CLOSE = 0.65  # apps are often swiped away without a clean close

#: Mean seconds between two events of the stream's sessions (time_scale 1), measured on the
#: default catalogue; a real-time sender sizes its pool of concurrent sessions with it.
MEAN_EVENT_GAP = 6.5

BadKind = Literal["unknown_event_type", "missing_property", "wrong_type"]
BAD_KINDS: tuple[BadKind, ...] = ("unknown_event_type", "missing_property", "wrong_type")

#: The steps of the conversion funnel, in order (the funnel truth and mart count these).
FUNNEL_STEPS = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase")
#: Inactivity that ends a visitor's session, unless a stream is given another.
SESSION_TIMEOUT = 30 * 60.0


@dataclass(frozen=True, slots=True)
class Checkout:
    """A shopper pressing "pay": the shop places the order, then the page reports it.

    Handed out by :meth:`Clickstream.next_item` (with ``checkouts=True``) instead of the
    purchase event, which only :meth:`Clickstream.settle` makes, from the order placed.
    """

    ts: float  # event time of the purchase, epoch seconds
    user_id: str  # a buyer is always logged in: orders.user_id is NOT NULL
    lines: tuple[tuple[str, int], ...]  # product_id, quantity, in cart order
    session_id: str

    @property
    def ms(self) -> int:
        """The purchase event's ``event_ts`` in epoch milliseconds (it is cut to the ms)."""
        return _ms_of(self.ts)

    @property
    def at(self) -> datetime:
        """The purchase event's ``event_ts`` to the millisecond: the order's created_at."""
        return _EPOCH + self.ms * _MS


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order the shop committed for a :class:`Checkout`: its id and lines as written."""

    order_id: str
    lines: tuple[tuple[str, int, Decimal], ...]  # product_id, quantity, unit_price

    @property
    def total(self) -> Decimal:
        return sum((price * quantity for _, quantity, price in self.lines), Decimal(0))


def _ms_of(ts: float) -> int:
    """Epoch seconds -> the milliseconds event_ts shows (cut, not rounded, like _format_ts)."""
    second = int(ts)
    return second * 1000 + int((ts - second) * 1000)


class OrderPlacer(Protocol):
    """Who turns a checkout into an order (the shop database); None when it cannot."""

    async def place(self, checkout: Checkout) -> PlacedOrder | None: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _uuid_from(bits: int) -> str:
    """The version-4 UUID string of 128 random bits; ``str(uuid.UUID(...))`` is slower."""
    bits = (bits & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_DEVICE_NAMESPACE = uuid.UUID("5d1f3c52-8a3e-4d0a-9a57-2f2b1c0e7d11")


class _Session:
    __slots__ = (
        "base",
        "cart",
        "device",
        "page",
        "referrer",
        "returning",
        "root",
        "script",
        "user",
        "visitor",
    )

    def __init__(self, base: Event, device: str, user: User | None, referrer: str | None) -> None:
        self.base = base  # the fields every event of the session carries
        self.device = device
        self.user = user
        self.visitor = base["anonymous_id"]  # whom the warehouse sessionizes by
        self.returning = user is not None  # a member's device id, used again later
        self.root = _APP if device in _APPS else _WEB
        self.page: str | None = None  # the page being looked at
        self.referrer = referrer  # the page before it (external on landing)
        self.cart: dict[str, list[Any]] = {}  # product_id -> [product, quantity]
        self.script: Iterator[_Step] = iter(())


# A heap entry: (time, tie-breaker, step, session); step and session are None for a shopper
# who is yet to arrive (arrivals mode).
_Entry = tuple[float, int, _Step | None, _Session | None]


class Clickstream:
    """Many shopping sessions at once, played in time order as behaviour-event dicts.

    ``sessions`` is how many shoppers are on the site at any moment; together with the
    think times between their clicks it sets how many events a second of event time holds
    (about ``sessions / (MEAN_EVENT_GAP * time_scale)``). ``start`` is when the stream's clock
    begins (now when omitted). ``bad_fraction`` of the events are deliberately broken in one of
    :data:`BAD_KINDS` ways, for demos and tests of the rejection paths.

    ``arrivals=(first, last)`` plays ``sessions`` shoppers in all instead, arriving at random
    times between those two instants (epoch seconds), and the stream ends when the last one
    leaves (:meth:`next_item` then answers None): a finite story over a chosen window.

    Sessions agree with the warehouse's rule (a visitor's session ends after
    ``session_timeout`` seconds without events; the visitor is the ``anonymous_id``, which
    every event carries): no think time inside a session reaches a third of the timeout, and
    a member's device (one ``anonymous_id``) starts a new session only once its previous one
    has been over for at least the timeout. So each ``session_id`` is one warehouse session,
    also when one or two of its events go missing.

    With ``checkouts=True`` a purchase is not made up: :meth:`next_item` hands out a
    :class:`Checkout`, the caller has the shop place the order and passes the result to
    :meth:`settle`, which makes the purchase event from the order (or none when the order
    failed). ``purchase_event_loss`` of the purchase events of placed orders are then lost,
    as ad blockers and closed tabs lose them. Without it the stream invents order ids.
    """

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        seed: int = 1,
        run_id: str | None = None,
        start: datetime | None = None,
        sessions: int = 1_000,
        time_scale: float = 1.0,
        bad_fraction: float = 0.0,
        arrivals: tuple[float, float] | None = None,
        session_timeout: float = SESSION_TIMEOUT,
        checkouts: bool = False,
        purchase_event_loss: float = 0.0,
    ) -> None:
        if sessions < 1:
            raise ValueError("sessions must be at least 1")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        if not 0.0 <= purchase_event_loss <= 1.0:
            raise ValueError("purchase_event_loss must be between 0 and 1")
        if session_timeout <= 0:
            raise ValueError("session_timeout must be positive")
        if arrivals is not None and not arrivals[0] <= arrivals[1]:
            raise ValueError("arrivals must be (first, last) with first <= last")
        self.catalogue = catalogue or build_catalogue(seed)
        self.run_id = run_id or os.urandom(4).hex()
        self.time_scale = time_scale
        self._paced_scale = time_scale  # what keep_pace corrects around
        self.bad_fraction = bad_fraction
        self.session_timeout = session_timeout
        self.checkouts = checkouts
        self.purchase_event_loss = purchase_event_loss
        # Simulation, not secrets: seeded generators are what make a run reproducible.
        self._rng = random.Random(f"clickstream/{seed}")  # noqa: S311
        self._ids = random.Random(f"clickstream-ids/{seed}/{self.run_id}")  # noqa: S311
        self._bad = random.Random(f"clickstream-bad/{seed}")  # noqa: S311
        self._loss = random.Random(f"clickstream-loss/{seed}")  # noqa: S311
        self._devices = tuple(DEVICE_SHARES)
        self._device_cum = tuple(_cumulative(DEVICE_SHARES.values()))
        self._source_cum = tuple(_cumulative(s.weight for s in _SOURCES))
        self._search_index = _search_index(self.catalogue)
        self._max_gap = session_timeout / 3
        self._busy: set[str] = set()  # visitors (anonymous ids) in a session now
        self._free_at: dict[str, float] = {}  # member device -> when it may start again
        self._finite = arrivals is not None
        self._orders = 0
        self._seq = 0
        self._ts_second = -1
        self._ts_prefix = ""
        self._pending: tuple[float, _Step, _Session, Checkout] | None = None
        begin = arrivals[0] if arrivals is not None else (start or datetime.now(UTC)).timestamp()
        self.clock = begin  # event time of the latest event handed out
        self._heap: list[_Entry] = []
        if arrivals is not None:
            first, last = arrivals
            for _ in range(sessions):
                self._seq += 1
                when = first + self._rng.random() * (last - first)
                self._heap.append((when, self._seq, None, None))
            heapq.heapify(self._heap)
        else:
            # Spread the first events over one think time so the stream starts at its
            # steady rate.
            for _ in range(sessions):
                self._start_session(begin + self._rng.random() * MEAN_EVENT_GAP * time_scale)

    # -- the public surface -------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        while (event := self._next_resolved()) is not None:
            yield event

    def take(self, count: int) -> list[Event]:
        """The next ``count`` events (fewer when a finite stream ends)."""
        events: list[Event] = []
        append, resolved = events.append, self._next_resolved
        for _ in range(count):
            event = resolved()
            if event is None:
                break
            append(event)
        return events

    def next_event(self) -> Event:
        event = self._next_resolved()
        if event is None:
            raise EOFError("the stream has ended: every shopper has left")
        return event

    def next_item(self) -> Event | Checkout | None:
        """The next event, or a :class:`Checkout` to :meth:`settle` first (``checkouts=True``),
        or None when a finite stream has ended."""
        if self._pending is not None:
            raise RuntimeError("settle the pending checkout before taking the next event")
        while self._heap:
            ts, _, step, session = heapq.heappop(self._heap)
            if session is None or step is None:
                self._start_session(ts)  # a shopper arrives
                continue
            if step[1] == "purchase":
                user = session.user
                assert user is not None, "only logged-in shoppers reach the purchase"
                lines = tuple((pid, int(q)) for pid, (_, q) in step[3]["cart"].items())
                checkout = Checkout(ts, user.user_id, lines, session.base["session_id"])
                self._pending = (ts, step, session, checkout)
                return checkout
            return self._emit(ts, step, session)
        return None

    def settle(self, placed: PlacedOrder | None) -> tuple[Event | None, bool]:
        """Finish the pending checkout with the order the shop placed (None: it failed).

        Returns the purchase event and whether it is lost: a failed order makes no event (the
        session goes on without a purchase); a lost event was made (the shopper saw the
        page, the clock moved) but must not be sent.
        """
        if self._pending is None:
            raise RuntimeError("no checkout is pending")
        ts, step, session, _ = self._pending
        self._pending = None
        if placed is None:
            self._advance(ts, session)
            return None, False
        items = [
            {
                "product_id": product_id,
                "quantity": quantity,
                "price": int(price),
                "category": self.catalogue.product(product_id).category,
            }
            for product_id, quantity, price in placed.lines
        ]
        value = int(placed.total)
        purchase = {
            "order_id": placed.order_id,
            "revenue": value,
            "currency": _CURRENCY,
            "items": items,
            "shipping": 0 if value >= _FREE_SHIPPING_FROM else _SHIPPING_FEE,
        }
        url = f"{session.root}/orders/{placed.order_id}/complete"
        event = self._emit(ts, (step[0], "purchase", url, purchase), session)
        lost = bool(self.purchase_event_loss) and self._loss.random() < self.purchase_event_loss
        return event, lost

    def keep_pace(self, now: float) -> None:
        """Bend think times so event time tracks the wall clock ``now`` (epoch seconds).

        A real-time sender calls this before each batch: when the stream's clock runs ahead,
        shoppers think longer, when it lags, shorter. The correction is proportional to the
        lead and bounded, so the clock settles a few seconds from ``now`` without swinging.
        """
        lead = self.clock - now
        self.time_scale = self._paced_scale * min(2.0, max(0.5, 1.0 - lead / 30.0))

    # -- the stream's machinery ---------------------------------------------------------

    def _next_resolved(self) -> Event | None:
        """The next event, inventing the order of a checkout when no shop takes part."""
        item = self.next_item()
        while isinstance(item, Checkout):
            self._orders += 1
            # Not an order of a shop database: order ids of their own, catalogue prices.
            order_id = f"o-{self.run_id}-{self._orders:07d}"
            lines = tuple(
                (pid, quantity, self.catalogue.product(pid).price) for pid, quantity in item.lines
            )
            event, lost = self.settle(PlacedOrder(order_id, lines))
            if event is not None and not lost:
                return event
            item = self.next_item()
        return item

    def _emit(self, ts: float, step: _Step, session: _Session) -> Event:
        _, event_type, page, properties = step
        if page != session.page:
            session.referrer, session.page = session.page or session.referrer, page
        event = {
            "event_id": _uuid_from(self._ids.getrandbits(128)),
            "event_type": event_type,
            "event_ts": self._format_ts(ts),
            **session.base,
            "page_url": page,
            "referrer": session.referrer,
            "properties": properties,
        }
        self.clock = ts
        self._advance(ts, session)
        if self.bad_fraction and self._bad.random() < self.bad_fraction:
            return self._spoil(event)
        return event

    def _advance(self, ts: float, session: _Session) -> None:
        """Schedule the session's next step, or let the shopper go."""
        following = next(session.script, None)
        if following is None:
            visitor = session.visitor
            self._busy.discard(visitor)
            if session.returning:
                self._free_at[visitor] = ts + self.session_timeout
            if not self._finite:
                # Someone else arrives as this shopper leaves, so the crowd keeps its size.
                gap = self._rng.expovariate(1 / MEAN_EVENT_GAP) * self.time_scale
                self._start_session(ts + gap)
            return
        self._seq += 1
        # Capped well below the session timeout: a session never falls apart in two.
        when = ts + min(following[0] * self.time_scale, self._max_gap)
        heapq.heappush(self._heap, (when, self._seq, following, session))

    # -- sessions -----------------------------------------------------------------------

    def _member(self, device: str, ts: float) -> tuple[User, str] | None:
        """A logged-in member whose device is free at ``ts``, and that device's id.

        A member keeps one device id per device; a session of theirs that started on it
        before the previous one was over by the timeout would be one warehouse session.
        """
        for _ in range(3):
            user = self.catalogue.active_user(self._rng)
            # The app (or browser) of a member keeps one device id across sessions and runs.
            visitor = str(uuid.uuid5(_DEVICE_NAMESPACE, f"{user.user_id}/{device}"))
            if visitor not in self._busy and self._free_at.get(visitor, -math.inf) <= ts:
                return user, visitor
        return None  # all busy: this one browses as a guest

    def _start_session(self, ts: float) -> None:
        rng = self._rng
        device = self._devices[_pick(self._device_cum, rng.random())]
        source = _SOURCES[_pick(self._source_cum, rng.random())]
        if source.app_only and device not in _APPS:
            source = _SOURCES[0]
        member = self._member(device, ts) if rng.random() < _LOGGED_IN[device] else None
        ids = self._ids
        if member is not None:
            user: User | None = member[0]
            anonymous_id = member[1]
        else:
            user = None
            anonymous_id = _uuid_from(ids.getrandbits(128))
        base: Event = {
            "user_id": user.user_id if user else None,
            "anonymous_id": anonymous_id,
            "session_id": _uuid_from(ids.getrandbits(128)),
            "device_type": device,
        }
        if source.utm_source:
            base["utm_source"] = source.utm_source
            base["utm_medium"] = source.utm_medium
            base["utm_campaign"] = rng.choice(source.campaigns)
        referrer = source.referrer if device not in _APPS else None
        session = _Session(base, device, user, referrer)
        self._busy.add(anonymous_id)
        session.script = self._script(session, source)
        first = next(session.script)
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, first, session))

    def _script(self, s: _Session, source: _Source) -> Iterator[_Step]:
        """What one shopper does, step by step; think times are in seconds."""
        rng = self._rng
        root = _APP if s.device in _APPS else _WEB
        if source.push:
            push_id = f"push-{self._ids.getrandbits(40):010x}"
            campaign = s.base.get("utm_campaign")
            yield 0.0, "push_click", root + "/", {"campaign_id": campaign, "push_id": push_id}
        if s.device in _APPS:
            yield 0.5, "app_open", root + "/", {}

        # The landing page: ads and search results often lead straight to a product.
        if rng.random() < source.lands_on_product:
            product = self.catalogue.popular_product(rng)
            url = f"{root}/products/{product.product_id}"
            yield 1.0, "page_view", url, {"page_type": "product", "page_title": product.name}
            yield from self._view_product(s, root, product, quick=True)
        else:
            yield 1.0, "page_view", root + "/", {"page_type": "home", "page_title": "shopstream"}
        if rng.random() < _BOUNCE[s.device]:
            # Bounced: left after the landing page (apps still close, or are swiped away).
            if s.device in _APPS and rng.random() < _APP_CLOSE:
                yield _gap(rng, 8), "app_close", s.page or root + "/", {}
            return

        for _ in range(1 + int(rng.expovariate(1 / 3.5))):
            roll = rng.random()
            if roll < 0.28:
                yield from self._search(s, root)
            elif roll < 0.60:
                yield from self._browse_category(s, root)
            elif roll < 0.68:
                yield from self._banner(s, root)
            elif roll < 0.80:
                yield from self._recommendation(s, root)
            elif roll < 0.88 and s.cart:
                yield from self._look_at_cart(s, root)
            elif roll < 0.92 and s.user is not None:
                yield from self._my_orders(s, root)
            else:
                yield _gap(rng, 5), "page_view", root + "/", {"page_type": "home"}

        if s.cart and rng.random() < _BEGIN_CHECKOUT:
            yield from self._checkout(s, root)
        if s.device in _APPS and rng.random() < _APP_CLOSE:
            yield _gap(rng, 3), "app_close", s.page or root + "/", {}

    def _view_product(
        self, s: _Session, root: str, product: Product, *, quick: bool = False
    ) -> Iterator[_Step]:
        rng = self._rng
        url = f"{root}/products/{product.product_id}"
        props = _product_props(product)
        yield (0.8 if quick else _gap(rng, 3)), "product_view", url, props
        if rng.random() < (_ADD_TO_CART if s.user is None else _ADD_TO_CART_MEMBER):
            quantity = 1 if rng.random() < 0.8 else rng.choice((2, 2, 3, 4))
            line = s.cart.setdefault(product.product_id, [product, 0])
            line[1] += quantity
            cart_props = {**props, "quantity": quantity, "cart_id": _cart_id(s)}
            yield _gap(rng, 20), "add_to_cart", url, cart_props
        elif rng.random() < _WISHLIST:
            yield _gap(rng, 15), "wishlist_add", url, dict(props)

    def _search(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        results: tuple[Product, ...] = ()
        if rng.random() < 0.05:
            query = rng.choice(_MISSPELLINGS)
        else:
            # People search for what is popular: the words of a popular product's name.
            query = _query_for(self.catalogue.popular_product(rng), rng)
            results = self._search_index.get(query, ())
        url = f"{root}/search?q={query.replace(' ', '+')}"
        props = {"query": query, "results_count": len(results)}
        yield _gap(rng, 6), "search", url, props
        if results and rng.random() < 0.65:
            position = min(len(results) - 1, int(rng.expovariate(0.5)))
            product = results[position]
            click = {"query": query, "product_id": product.product_id, "position": position}
            yield _gap(rng, 4), "search_click", url, click
            yield from self._view_product(s, root, product, quick=True)

    def _browse_category(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        product = self.catalogue.popular_product(rng)
        category = product.category
        url = f"{root}/category/{category}"
        yield _gap(rng, 5), "page_view", url, {"page_type": "category", "page_title": category}
        if rng.random() < 0.75:
            listing = self.catalogue.products_in(category)
            position = rng.randrange(min(20, len(listing)))
            props = {**_product_props(product), "list_name": category, "position": position}
            yield _gap(rng, 6), "product_click", url, props
            yield from self._view_product(s, root, product, quick=True)

    def _banner(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        banner_id, placement = rng.choice(_BANNERS)
        here = s.page or root + "/"
        yield _gap(rng, 4), "banner_click", here, {"banner_id": banner_id, "placement": placement}
        url = f"{root}/events/{banner_id}"
        yield 1.0, "page_view", url, {"page_type": "promotion", "page_title": banner_id}
        if rng.random() < 0.6:
            product = self.catalogue.popular_product(rng)
            props = {**_product_props(product), "list_name": banner_id, "position": 0}
            yield _gap(rng, 8), "product_click", url, props
            yield from self._view_product(s, root, product, quick=True)

    def _recommendation(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        product = self.catalogue.popular_product(rng)
        props = {
            **_product_props(product),
            "list_name": "recommended_for_you",
            "position": rng.randrange(10),
        }
        yield _gap(rng, 6), "product_click", s.page or root + "/", props
        yield from self._view_product(s, root, product, quick=True)

    def _look_at_cart(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        url = root + "/cart"
        yield _gap(rng, 5), "page_view", url, {"page_type": "cart", "page_title": "Cart"}
        if rng.random() < 0.5:
            product_id = rng.choice(sorted(s.cart))
            product, quantity = s.cart.pop(product_id)
            props = {**_product_props(product), "quantity": quantity, "cart_id": _cart_id(s)}
            yield _gap(rng, 8), "remove_from_cart", url, props

    def _my_orders(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        url = root + "/my/orders"
        yield _gap(rng, 5), "page_view", url, {"page_type": "my_orders", "page_title": "My orders"}
        if rng.random() >= _REVIEW:
            return
        product = self.catalogue.popular_product(rng)
        rating = rng.choices((1, 2, 3, 4, 5), weights=(2, 3, 10, 25, 60))[0]
        review_id = f"rv-{self._ids.getrandbits(48):012x}"
        props = {"product_id": product.product_id, "rating": rating, "review_id": review_id}
        yield _gap(rng, 60), "review_write", url, props

    def _checkout(self, s: _Session, root: str) -> Iterator[_Step]:
        rng = self._rng
        yield _gap(rng, 5), "page_view", root + "/cart", {"page_type": "cart", "page_title": "Cart"}
        if s.user is None and rng.random() < _LOGIN_AT_CHECKOUT:
            # Logging in to check out: from here on the member's id travels with the events.
            s.user = self.catalogue.active_user(rng)
            s.base = {**s.base, "user_id": s.user.user_id}
        lines = [(p, q) for p, q in s.cart.values()]
        value = sum(int(p.price) * q for p, q in lines)
        checkout = {
            "cart_id": _cart_id(s),
            "cart_value": value,
            "items_count": sum(q for _, q in lines),
            "currency": _CURRENCY,
        }
        yield _gap(rng, 10), "begin_checkout", root + "/checkout", checkout
        # Paying needs an account (orders.user_id is NOT NULL): guests stop at the login wall.
        if s.user is not None and rng.random() < _PURCHASE:
            # The stream turns this step into the purchase event once the order exists
            # (see next_item and settle): what is in the cart is what is ordered.
            cart = {p.product_id: [p, q] for p, q in lines}
            s.cart.clear()
            yield _gap(rng, 45), "purchase", root + "/checkout", {"cart": cart}

    # -- output details -----------------------------------------------------------------

    def _format_ts(self, ts: float) -> str:
        # Events come out in time order, so the formatted second is reused many times.
        second = int(ts)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._ts_prefix}.{int((ts - second) * 1000):03d}Z"

    def _spoil(self, event: Event) -> Event:
        """Break a copy of ``event`` the way real trackers break events."""
        rng = self._bad
        kind = rng.choice(BAD_KINDS)
        bad = {**event, "properties": dict(event["properties"])}
        props = bad["properties"]
        if kind == "unknown_event_type":
            bad["event_type"] = rng.choice(("add_to_bag", "pageview", "Purchase", "checkout_step"))
        elif kind == "missing_property":
            required = _REQUIRED_PROPERTY.get(event["event_type"])
            if required:
                props.pop(required)
            else:
                # Types without required properties lose whom the event is about instead.
                bad["user_id"] = None
                bad["anonymous_id"] = None
        else:
            wrong = _WRONG_VALUE.get(event["event_type"])
            if wrong and rng.random() < 0.5:
                props[wrong[0]] = wrong[1]
            else:
                name, value = rng.choice(_WRONG_COMMON)
                bad[name] = value
        return bad


_REQUIRED_PROPERTY = {
    "product_view": "product_id",
    "product_click": "product_id",
    "search": "query",
    "search_click": "product_id",
    "add_to_cart": "product_id",
    "remove_from_cart": "product_id",
    "purchase": "order_id",
    "wishlist_add": "product_id",
    "review_write": "rating",
    "banner_click": "banner_id",
}
# Values no reading of the contract accepts (an integer event_ts would pass as epoch seconds).
_WRONG_COMMON: tuple[tuple[str, object], ...] = (
    ("event_ts", "yesterday"),
    ("event_ts", "27/11/2026 10:00"),
    ("device_type", "smart_fridge"),
    ("device_type", 3),
)
_WRONG_VALUE: dict[str, tuple[str, object]] = {
    "add_to_cart": ("quantity", "two"),
    "remove_from_cart": ("quantity", -1),
    "product_view": ("price", "free"),
    "purchase": ("revenue", "lots"),
    "review_write": ("rating", 11),
    "search": ("results_count", "many"),
    "begin_checkout": ("items_count", "several"),
}


def _cumulative(weights: Any) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _pick(cumulative: tuple[float, ...], roll: float) -> int:
    """Index of the weighted choice for a uniform ``roll`` in [0, 1)."""
    target = roll * cumulative[-1]
    for index, bound in enumerate(cumulative):
        if target < bound:
            return index
    return len(cumulative) - 1


def _gap(rng: random.Random, median: float) -> float:
    """A think time: log-normal like real reading times, with the given median in seconds."""
    return rng.lognormvariate(math.log(median), 0.8)


def _product_props(product: Product) -> dict[str, Any]:
    return {
        "product_id": product.product_id,
        "name": product.name,
        "category": product.category,
        "price": int(product.price),
    }


def _cart_id(s: _Session) -> str:
    return "cart-" + s.base["session_id"][:8]


def _search_index(catalogue: Catalogue) -> dict[str, tuple[Product, ...]]:
    """Query -> matching products, for the words shoppers type: nouns, full names, categories."""
    index: dict[str, list[Product]] = {}
    for product in catalogue.products:
        noun = product.name.split(" ", 1)[1].lower()
        for term in {noun, product.name.lower(), product.category}:
            index.setdefault(term, []).append(product)
    ranked = {p.product_id: -p.popularity for p in catalogue.products}
    return {
        term: tuple(sorted(found, key=lambda p: ranked[p.product_id]))
        for term, found in index.items()
    }


def _query_for(product: Product, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return product.name.split(" ", 1)[1].lower()
    if roll < 0.85:
        return product.name.lower()
    return product.category


# -- ground truth and the sender -----------------------------------------------------------


@dataclass
class SessionFigures:
    """One business day x device type of the warehouse's sessions (accepted events only)."""

    sessions: int = 0
    events: int = 0
    purchases: int = 0  # purchase events
    revenue: Decimal = Decimal(0)  # their properties.revenue (whole won)


@dataclass
class TrackingDay:
    """One business day of orders placed from sessions against their purchase events."""

    orders: int = 0  # orders the shop placed for checkouts (the order's day)
    order_revenue: Decimal = Decimal(0)  # their lines total
    purchase_events: int = 0  # purchase events the collector accepted (the event's day)
    matched: int = 0  # of those, naming an order placed for a checkout
    lost_on_purpose: int = 0  # events of placed orders dropped (purchase_event_loss)
    failed_checkouts: int = 0  # checkouts whose order failed (out of stock): no event

    @property
    def unmatched_orders(self) -> int:
        return self.orders - self.matched

    def as_dict(self, lost_revenue: Decimal) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "order_revenue": str(self.order_revenue),
            "purchase_events": self.purchase_events,
            "matched": self.matched,
            "unmatched_orders": self.unmatched_orders,
            "lost_revenue": str(lost_revenue),
            "lost_on_purpose": self.lost_on_purpose,
            "failed_checkouts": self.failed_checkouts,
        }


class _BusinessDays:
    """Epoch milliseconds -> the date in a time zone, cached per quarter hour (zone offsets
    and their changes fall on quarter hours)."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)
        self._cache: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        quarter = ms // 900_000
        day = self._cache.get(quarter)
        if day is None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            day = datetime.fromtimestamp(quarter * 900, self.zone).date().isoformat()
            self._cache[quarter] = day
        return day


def _epoch_ms(event_ts: object) -> int | None:
    """``2026-11-27T09:00:00.123Z`` (or any ISO 8601 with an offset) -> epoch ms."""
    if not isinstance(event_ts, str):
        return None
    try:
        ts = datetime.fromisoformat(event_ts)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return (ts - _EPOCH) // _MS


@dataclass
class GroundTruth:
    """What the collector acknowledged: the figures the warehouse must reconcile with.

    Counts are of events the collector answered for, each counted once however many times
    its batch was re-sent. ``failed`` events were given up after retries: the collector may
    or may not hold them (a lost answer can hide a stored batch), so they are in no count
    here, and raw may hold events this truth does not.

    Sessions, funnel and tracking are by business day: the date in ``timezone``. They apply
    the warehouse's own rule to the accepted events, in the order the stream made them
    (batches are recorded in that order): a visitor is ``coalesce(anonymous_id, user_id)``;
    a visitor's session ends after ``session_timeout`` seconds without events; a session
    belongs to the day and device of its first event. ``funnel`` counts, per session day x
    device, the sessions reaching each of :data:`FUNNEL_STEPS`, a step counting only when it
    comes strictly after (later ``event_ts``) the previous step reached in the same session.
    """

    sent: int = 0  # events the collector answered for: accepted + rejected
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    by_event_type: Counter[str] = field(default_factory=Counter)
    by_event_date: Counter[str] = field(default_factory=Counter)  # UTC date of event_ts
    purchases: int = 0
    purchase_revenue: Decimal = Decimal(0)
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    # Equal to accepted by construction (every event has its own id and is counted on the one
    # answer that acknowledged it); stated separately because staging's dedup is held to it.
    distinct_event_ids: int = 0
    event_ids: set[str] | None = None  # kept only when asked for: it grows with the run
    timezone: str = "UTC"
    session_timeout: float = SESSION_TIMEOUT  # seconds
    sessions: dict[tuple[str, str], SessionFigures] = field(default_factory=dict)
    funnel: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    tracking: dict[str, TrackingDay] = field(default_factory=dict)
    # order_id -> (business day, lines total) of orders placed for checkouts, and the ids of
    # those whose purchase event was accepted: what the lost revenue is worked out from.
    session_orders: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    matched_order_ids: set[str] = field(default_factory=set)
    # Accepted events whose event_ts could not be read: in no session (should stay 0).
    unsessioned: int = 0

    def __post_init__(self) -> None:
        self._day = _BusinessDays(self.timezone)
        # visitor -> [last event ms, (day, device), funnel steps reached, last step ms]
        self._open: dict[str, list[Any]] = {}
        self._newest = 0
        self._since_prune = 0
        self._seconds: dict[str, int | None] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch ms

    def record(self, batch: list[Event], rejected_indexes: dict[int, str]) -> None:
        """Count one acknowledged batch (batches must come in the order they were made)."""
        self.sent += len(batch)
        self.rejected += len(rejected_indexes)
        for reason in rejected_indexes.values():
            # Cut short, so that one long message cannot bloat the summary.
            self.rejected_reasons[reason[:120]] += 1
        for index, event in enumerate(batch):
            if index in rejected_indexes:
                continue
            self.accepted += 1
            self.distinct_event_ids += 1
            event_type = str(event.get("event_type"))
            self.by_event_type[event_type] += 1
            self.by_event_date[str(event.get("event_ts"))[:10]] += 1
            revenue: Decimal | None = None
            if event_type == "purchase":
                self.purchases += 1
                value = event["properties"].get("revenue")
                if isinstance(value, int | str):
                    revenue = Decimal(value)
                    self.purchase_revenue += revenue
            if self.event_ids is not None:
                self.event_ids.add(event["event_id"])
            self._sessionize(event, event_type, revenue)

    def _sessionize(self, event: Event, event_type: str, revenue: Decimal | None) -> None:
        ts = event.get("event_ts")
        if isinstance(ts, str) and len(ts) == 24 and ts[19] == "." and ts[23] == "Z":
            # The stream's own format: the second is parsed once for all its events.
            second = self._seconds.get(ts[:19])
            if second is None:
                if len(self._seconds) > 10_000:
                    self._seconds.clear()
                second = _epoch_ms(ts[:19] + "Z")
                self._seconds[ts[:19]] = second
            ms = None if second is None or not ts[20:23].isdigit() else second + int(ts[20:23])
        else:
            ms = _epoch_ms(ts)
        visitor = event.get("anonymous_id") or event.get("user_id")
        if ms is None or not visitor:
            self.unsessioned += 1
            return
        state = self._open.get(visitor)
        if state is None or ms - state[0] >= self.session_timeout * 1000:
            key = (self._day(ms), str(event.get("device_type")))
            state = [ms, key, 0, None]
            self._open[visitor] = state
            self.sessions.setdefault(key, SessionFigures()).sessions += 1
        state[0] = ms
        key = state[1]
        figures = self.sessions[key]
        figures.events += 1
        reached = state[2]
        if (
            reached < len(FUNNEL_STEPS)
            and event_type == FUNNEL_STEPS[reached]
            and (state[3] is None or ms > state[3])
        ):
            state[2] = reached + 1
            state[3] = ms
            self.funnel.setdefault(key, [0] * len(FUNNEL_STEPS))[reached] += 1
        if event_type == "purchase":
            figures.purchases += 1
            if revenue is not None:
                figures.revenue += revenue
            day = self._day(ms)
            tracking = self.tracking.setdefault(day, TrackingDay())
            tracking.purchase_events += 1
            order_id = event["properties"].get("order_id")
            if order_id in self.session_orders and order_id not in self.matched_order_ids:
                self.matched_order_ids.add(order_id)
                tracking.matched += 1
        self._newest = max(self._newest, ms)
        self._since_prune += 1
        if self._since_prune >= 50_000:
            # Visitors quiet for longer than the timeout start a new session anyway.
            self._since_prune = 0
            horizon = self._newest - self.session_timeout * 1000
            self._open = {v: s for v, s in self._open.items() if s[0] > horizon}

    def order_placed(self, checkout: Checkout, placed: PlacedOrder | None, *, lost: bool) -> None:
        """Note what the shop did with a checkout (before its event can be acknowledged)."""
        day = self._day(checkout.ms)
        tracking = self.tracking.setdefault(day, TrackingDay())
        if placed is None:
            tracking.failed_checkouts += 1
            return
        total = placed.total
        self.session_orders[placed.order_id] = (day, total)
        tracking.orders += 1
        tracking.order_revenue += total
        tracking.lost_on_purpose += int(lost)

    def lost_revenue(self) -> dict[str, Decimal]:
        """Per business day: the lines total of orders placed for checkouts whose purchase
        event the collector never accepted (lost on purpose, spoiled, or undelivered)."""
        lost: dict[str, Decimal] = {day: Decimal(0) for day in self.tracking}
        for order_id, (day, total) in self.session_orders.items():
            if order_id not in self.matched_order_ids:
                lost[day] += total
        return lost

    def as_dict(self) -> dict[str, Any]:
        lost = self.lost_revenue()
        data: dict[str, Any] = {
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "failed": self.failed,
            "distinct_event_ids": self.distinct_event_ids,
            "purchases": self.purchases,
            "purchase_revenue": str(self.purchase_revenue),
            "by_event_type": dict(sorted(self.by_event_type.items())),
            "by_event_date": dict(sorted(self.by_event_date.items())),
            "rejected_reasons": dict(self.rejected_reasons.most_common()),
            "timezone": self.timezone,
            "session_timeout": self.session_timeout,
            "unsessioned": self.unsessioned,
            "sessions": [
                {
                    "day": day,
                    "device_type": device,
                    "sessions": f.sessions,
                    "events": f.events,
                    "purchases": f.purchases,
                    "revenue": str(f.revenue),
                }
                for (day, device), f in sorted(self.sessions.items())
            ],
            "funnel": [
                {"day": day, "device_type": device, **dict(zip(FUNNEL_STEPS, steps, strict=True))}
                for (day, device), steps in sorted(self.funnel.items())
            ],
            "tracking": {day: t.as_dict(lost[day]) for day, t in sorted(self.tracking.items())},
            "session_orders": {
                order_id: [day, str(total)]
                for order_id, (day, total) in self.session_orders.items()
            },
            "matched_order_ids": sorted(self.matched_order_ids),
        }
        if self.event_ids is not None:
            data["event_ids"] = sorted(self.event_ids)
        return data

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: Path | str) -> GroundTruth:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        ids = data.get("event_ids")
        truth = cls(
            sent=data["sent"],
            accepted=data["accepted"],
            rejected=data["rejected"],
            failed=data["failed"],
            by_event_type=Counter(data["by_event_type"]),
            by_event_date=Counter(data["by_event_date"]),
            purchases=data["purchases"],
            purchase_revenue=Decimal(data["purchase_revenue"]),
            rejected_reasons=Counter(data["rejected_reasons"]),
            distinct_event_ids=data["distinct_event_ids"],
            event_ids=set(ids) if ids is not None else None,
            timezone=data.get("timezone", "UTC"),
            session_timeout=data.get("session_timeout", SESSION_TIMEOUT),
            unsessioned=data.get("unsessioned", 0),
        )
        for row in data.get("sessions", []):
            truth.sessions[(row["day"], row["device_type"])] = SessionFigures(
                row["sessions"], row["events"], row["purchases"], Decimal(row["revenue"])
            )
        for row in data.get("funnel", []):
            truth.funnel[(row["day"], row["device_type"])] = [row[s] for s in FUNNEL_STEPS]
        for day, row in data.get("tracking", {}).items():
            truth.tracking[day] = TrackingDay(
                orders=row["orders"],
                order_revenue=Decimal(row["order_revenue"]),
                purchase_events=row["purchase_events"],
                matched=row["matched"],
                lost_on_purpose=row["lost_on_purpose"],
                failed_checkouts=row["failed_checkouts"],
            )
        truth.session_orders = {
            order_id: (day, Decimal(total))
            for order_id, (day, total) in data.get("session_orders", {}).items()
        }
        truth.matched_order_ids = set(data.get("matched_order_ids", []))
        return truth


@dataclass(frozen=True)
class SendStats:
    """Running totals for a progress display."""

    sent: int  # events the collector answered for
    accepted: int
    rejected: int
    errors: int  # failed attempts (5xx, 429, connection errors), each retried or given up
    failed: int  # events given up on
    elapsed: float  # seconds since the start
    last_error: str | None = None


class CollectorRefused(RuntimeError):
    """The collector refused the sender itself (bad write key): no batch can ever succeed."""


_MAX_ATTEMPTS = 8
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
# More concurrent sessions cost generation speed (a bigger heap, colder memory): ~75k
# events/s at 1,000 sessions, ~58k at 5,000, ~47k at 10,000 on one core here.
_MAX_SESSIONS = 5_000


async def send_events(
    url: str,
    *,
    rate: float,
    duration: float,
    batch_size: int = 50,
    write_key: str | None = None,
    seed: int = 1,
    bad_fraction: float = 0.0,
    concurrency: int = 4,
    on_progress: Callable[[SendStats], None] | None = None,
    stop: asyncio.Event | None = None,
    run_id: str | None = None,
    keep_event_ids: bool = False,
    max_attempts: int = _MAX_ATTEMPTS,
    timeout: float = 30.0,
    shop: OrderPlacer | None = None,
    purchase_event_loss: float = 0.0,
    timezone: str = "UTC",
    session_timeout: float = SESSION_TIMEOUT,
    think_scale: float = 1.0,
) -> GroundTruth:
    """POST the clickstream to ``{url}/v1/events`` at ``rate`` events/s for ``duration`` s.

    Events go out in JSON arrays of ``batch_size``, each mixing the sessions that happened
    to be active, over ``concurrency`` connections. The run ends after ``rate * duration``
    events or ``duration`` seconds, whichever comes first (``duration`` may be ``math.inf``),
    or when ``stop`` is set; batches already generated are still delivered. 5xx, 429 and
    connection errors are retried with exponential backoff, re-sending the very same events
    (same ``event_id``), so delivery is at-least-once; after ``max_attempts`` a batch is
    given up and counted as ``failed``.
    ``write_key`` goes as the basic-auth user name with an empty password.

    With a ``shop``, a purchase is an order the shop places first (see
    :class:`Clickstream`'s ``checkouts``); ``purchase_event_loss`` of those orders' events are
    then not sent. The truth's days are in ``timezone``. ``think_scale`` < 1 makes shoppers
    think faster than real ones, and fewer of them make the rate (tests reach purchases in
    seconds).
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be at least 1")
    total = math.inf if math.isinf(duration) else int(rate * duration)
    # Enough shoppers that a second of event time holds about `rate` events; beyond the cap,
    # shoppers think faster instead, so event time still keeps up with the wall clock.
    # Thinking faster, fewer shoppers make the same rate (and reach their purchases sooner).
    wanted = rate * MEAN_EVENT_GAP * think_scale
    sessions = max(1, min(_MAX_SESSIONS, round(wanted)))
    stream = Clickstream(
        seed=seed,
        run_id=run_id,
        sessions=sessions,
        time_scale=sessions / wanted * think_scale,
        bad_fraction=bad_fraction,
        session_timeout=session_timeout,
        checkouts=shop is not None,
        purchase_event_loss=purchase_event_loss,
    )
    truth = GroundTruth(
        event_ids=set() if keep_event_ids else None,
        timezone=timezone,
        session_timeout=session_timeout,
    )
    progress = _Progress(truth, on_progress)
    ordered = _InOrder(truth)
    queue: asyncio.Queue[tuple[int, list[Event]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    auth = httpx.BasicAuth(write_key, "") if write_key is not None else None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), auth=auth, timeout=timeout, limits=limits
    ) as client:
        workers = [
            asyncio.create_task(_deliver(client, queue, ordered, progress, max_attempts))
            for _ in range(concurrency)
        ]
        producer = asyncio.create_task(
            _produce(
                stream, shop, truth, queue, rate, total, duration, batch_size, stop, concurrency
            )
        )
        tasks = [producer, *workers]
        try:
            # Ends when everything is delivered, or as soon as one task fails (a refused
            # write key), so a producer blocked on a full queue cannot hang the run.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if (error := task.exception()) is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    progress.report(force=True)
    return truth


async def take_events(
    stream: Clickstream, count: int, shop: OrderPlacer | None, truth: GroundTruth
) -> list[Event]:
    """The next ``count`` events of ``stream`` (fewer at the end of a finite one); the
    checkouts on the way are placed as orders by ``shop`` first, and noted in ``truth``."""
    batch: list[Event] = []
    while len(batch) < count:
        item = stream.next_item()
        if item is None:
            break
        if isinstance(item, Checkout):
            placed = await shop.place(item) if shop is not None else None
            event, lost = stream.settle(placed)
            truth.order_placed(item, placed, lost=lost)
            if event is None or lost:
                continue
            item = event
        batch.append(item)
    return batch


async def _produce(
    stream: Clickstream,
    shop: OrderPlacer | None,
    truth: GroundTruth,
    queue: asyncio.Queue[tuple[int, list[Event]] | None],
    rate: float,
    total: float,
    duration: float,
    batch_size: int,
    stop: asyncio.Event | None,
    consumers: int,
) -> None:
    """Generate batches on a schedule of ``rate`` events/s; never burst to catch up."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends = started + duration
    produced = 0
    sequence = 0
    while produced < total and loop.time() < ends and not (stop is not None and stop.is_set()):
        size = int(min(batch_size, total - produced))
        delay = started + produced / rate - loop.time()
        if delay > 0:
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
        elif delay < -1.0:
            # More than a second behind (slow collector): move the schedule rather than
            # flooding it with a backlog the moment it recovers.
            started -= delay + 1.0
        stream.keep_pace(time.time())
        batch = await take_events(stream, size, shop, truth)
        if not batch:
            break  # a finite stream has ended
        produced += size
        await queue.put((sequence, batch))
        sequence += 1
    for _ in range(consumers):
        await queue.put(None)  # one end-of-stream mark per worker


class _Progress:
    def __init__(self, truth: GroundTruth, on_progress: Callable[[SendStats], None] | None):
        self.truth = truth
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.last = 0.0
        self.errors = 0
        self.last_error: str | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message

    def report(self, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        # A progress display needs a few updates a second, not one per batch.
        if not force and now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.started
        truth = self.truth
        self.on_progress(
            SendStats(
                sent=truth.sent,
                accepted=truth.accepted,
                rejected=truth.rejected,
                errors=self.errors,
                failed=truth.failed,
                elapsed=elapsed,
                last_error=self.last_error,
            )
        )


class _InOrder:
    """Records answered batches in the order they were made, whichever answer came first:
    the truth sessionizes events in stream order, as the warehouse does by event time."""

    def __init__(self, truth: GroundTruth) -> None:
        self.truth = truth
        self.next = 0
        self.waiting: dict[int, tuple[list[Event], dict[int, str] | None]] = {}

    def answered(self, sequence: int, batch: list[Event], rejected: dict[int, str] | None) -> None:
        self.waiting[sequence] = (batch, rejected)
        while (ready := self.waiting.pop(self.next, None)) is not None:
            self.next += 1
            done, refused = ready
            if refused is None:
                self.truth.failed += len(done)
            else:
                self.truth.record(done, refused)


async def _deliver(
    client: httpx.AsyncClient,
    queue: asyncio.Queue[tuple[int, list[Event]] | None],
    ordered: _InOrder,
    progress: _Progress,
    max_attempts: int,
) -> None:
    while (item := await queue.get()) is not None:
        sequence, batch = item
        body = orjson.dumps(batch)  # once: every attempt re-sends the same bytes
        rejected = await _post(client, body, len(batch), progress, max_attempts)
        ordered.answered(sequence, batch, rejected)
        progress.report()


async def _post(
    client: httpx.AsyncClient,
    body: bytes,
    size: int,
    progress: _Progress,
    max_attempts: int,
) -> dict[int, str] | None:
    """Send one batch until answered; the rejected indexes with reasons, None if given up."""
    headers = {"content-type": "application/json"}
    for attempt in range(max_attempts):
        retry_after: float | None = None
        try:
            response = await client.post("/v1/events", content=body, headers=headers)
        except httpx.TransportError as exc:
            progress.error(f"{type(exc).__name__}: {exc}")
        else:
            status = response.status_code
            text = response.text[:200]
            answer = _parse_answer(response, size) if status in (200, 400) else None
            if answer is not None:
                return answer
            if status == 400:  # refused as a whole, without per-event reasons
                progress.error(f"HTTP 400: {text}")
                return dict.fromkeys(range(size), text)
            if status in (401, 403):
                raise CollectorRefused(f"HTTP {status}: {text}")
            if status == 200:
                # An answer we cannot read proves nothing: back off and send again.
                progress.error(f"HTTP 200 without a usable answer: {text}")
            elif status in _RETRYABLE:
                progress.error(f"HTTP {status}: {text}")
                with contextlib.suppress(ValueError):
                    # Honoured, within reason: a run has a duration to keep.
                    retry_after = min(30.0, float(response.headers.get("retry-after", "")))
            else:
                progress.error(f"HTTP {status}: {text}")
                return None  # 413, 422...: sending the same bytes again cannot help
        if attempt + 1 < max_attempts:
            backoff = min(5.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
            await asyncio.sleep(retry_after if retry_after is not None else backoff)
    return None


def _parse_answer(response: httpx.Response, size: int) -> dict[int, str] | None:
    """``{"accepted": n, "rejected": [{"index": i, "reason": "..."}]}`` -> {index: reason}."""
    try:
        data = response.json()
        rejected = {int(r["index"]): str(r.get("reason", "")) for r in data["rejected"]}
        accepted = int(data["accepted"])
    except (ValueError, KeyError, TypeError):
        return None
    if accepted != size - len(rejected):
        log.warning(
            "collector said %d accepted but rejected %d of %d", accepted, len(rejected), size
        )
    return rejected
