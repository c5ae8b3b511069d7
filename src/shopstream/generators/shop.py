"""The shop's own database (OLTP, PostgreSQL) and a workload that keeps it busy.

:func:`setup_shop_schema` creates the shop's tables and fills them with the catalogue's users
and products (see :mod:`.products`), so the ids match the clickstream's.
:func:`run_order_workload` then runs the shop: customers place orders, pay, orders move
through ``PENDING → PAID → PREPARING → SHIPPING → DELIVERED``, some are cancelled before they
ship (stock goes back on the shelf, the payment is cancelled) and some delivered ones are
refunded; merchandisers change prices and restock, members move up a grade, new members
sign up and the odd member without orders leaves. Each of those is one short transaction.

What the workload committed is counted in a :class:`ShopTruth`, the figures that change data
capture and the warehouse must later reconcile with. Money is whole won kept as ``Decimal``.

A run only moves the orders it placed itself: orders of earlier runs keep their status, so
a truth describes its own orders completely. Everything else (stock, prices, grades,
members) continues from whatever the database holds when the run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from faker import Faker

from shopstream.generators.clickstream import Checkout, PlacedOrder
from shopstream.generators.products import (
    CATALOGUE_AS_OF,
    GRADES,
    Catalogue,
    build_catalogue,
    shelf_price,
)

OrderStatus = Literal[
    "PENDING", "PAID", "PREPARING", "SHIPPING", "DELIVERED", "CANCELLED", "REFUNDED"
]
ORDER_STATUSES: tuple[OrderStatus, ...] = (
    "PENDING",
    "PAID",
    "PREPARING",
    "SHIPPING",
    "DELIVERED",
    "CANCELLED",
    "REFUNDED",
)
PAYMENT_STATUSES = ("PAID", "FAILED", "CANCELLED", "REFUNDED")
PAYMENT_METHODS = ("CARD", "KAKAO_PAY", "NAVER_PAY", "TOSS_PAY", "BANK_TRANSFER")
SHOP_TABLES = ("users", "products", "orders", "order_items", "payments")
# Orders that no longer count as sales.
UNSOLD_STATUSES = frozenset({"CANCELLED", "REFUNDED"})

_ADVANCE: dict[str, OrderStatus] = {
    "PAID": "PREPARING",
    "PREPARING": "SHIPPING",
    "SHIPPING": "DELIVERED",
}


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SHOP_DDL = f"""
CREATE TABLE IF NOT EXISTS users (
    user_id     text PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    grade       text NOT NULL CHECK (grade IN ({_sql_list(GRADES)})),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    product_id    text PRIMARY KEY,
    name          text NOT NULL,
    category      text NOT NULL,
    storage_type  text NOT NULL CHECK (storage_type IN ('ROOM', 'COLD', 'FROZEN')),
    price         numeric(12,2) NOT NULL CHECK (price >= 0),
    stock         integer NOT NULL CHECK (stock >= 0),
    updated_at    timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id       text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (user_id),
    status         text NOT NULL CHECK (status IN ({_sql_list(ORDER_STATUSES)})),
    delivery_type  text NOT NULL CHECK (delivery_type IN ('ROOM', 'COLD', 'FROZEN')),
    total_amount   numeric(14,2) NOT NULL CHECK (total_amount >= 0),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id);
CREATE TABLE IF NOT EXISTS order_items (
    order_id    text NOT NULL REFERENCES orders (order_id),
    line_no     integer NOT NULL CHECK (line_no >= 1),
    product_id  text NOT NULL REFERENCES products (product_id),
    quantity    integer NOT NULL CHECK (quantity >= 1),
    unit_price  numeric(12,2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX IF NOT EXISTS order_items_product_id_idx ON order_items (product_id);
CREATE TABLE IF NOT EXISTS payments (
    payment_id   text PRIMARY KEY,
    order_id     text NOT NULL REFERENCES orders (order_id),
    method       text NOT NULL CHECK (method IN ({_sql_list(PAYMENT_METHODS)})),
    amount       numeric(14,2) NOT NULL CHECK (amount >= 0),
    status       text NOT NULL CHECK (status IN ({_sql_list(PAYMENT_STATUSES)})),
    paid_at      timestamptz,
    refunded_at  timestamptz
);
CREATE INDEX IF NOT EXISTS payments_order_id_idx ON payments (order_id);
-- Ids come from sequences so that runs, and workloads running side by side, never collide.
CREATE SEQUENCE IF NOT EXISTS order_id_seq;
CREATE SEQUENCE IF NOT EXISTS payment_id_seq;
CREATE SEQUENCE IF NOT EXISTS user_id_seq;
"""

_ORDER_ID = "'O' || lpad(nextval('order_id_seq')::text, 10, '0')"
_PAYMENT_ID = "'PAY' || lpad(nextval('payment_id_seq')::text, 10, '0')"


@dataclass(frozen=True)
class SeededRows:
    """Rows :func:`setup_shop_schema` inserted (0 for rows that were already there)."""

    users: int
    products: int


def setup_shop_schema(dsn: str, *, seed: int = 1, catalogue: Catalogue | None = None) -> SeededRows:
    """Create the shop's tables in schema ``public`` and seed the catalogue. Idempotent.

    Seeding never overwrites: rows already present (perhaps changed by a workload) stay as
    they are, and catalogue members a workload deleted come back. The counts say what was
    inserted this time.
    """
    catalogue = catalogue or build_catalogue(seed)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(SHOP_DDL)
        cur.executemany(
            """INSERT INTO users (user_id, email, name, grade, created_at, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING""",
            [
                (u.user_id, u.email, u.name, u.grade, u.created_at, u.created_at)
                for u in catalogue.users
            ],
        )
        users = cur.rowcount
        # Products were last touched when the catalogue was drawn up.
        cur.executemany(
            """INSERT INTO products
                   (product_id, name, category, storage_type, price, stock, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (product_id) DO NOTHING""",
            [
                (
                    p.product_id,
                    p.name,
                    p.category,
                    p.storage_type,
                    p.price,
                    p.stock,
                    CATALOGUE_AS_OF,
                )
                for p in catalogue.products
            ],
        )
        products = cur.rowcount
        # New members continue after the highest member number in use.
        cur.execute(
            """SELECT setval('user_id_seq', greatest(1, (
                   SELECT coalesce(max(substr(user_id, 2)::bigint), 0) FROM users
                   WHERE user_id ~ '^U[0-9]+$')))"""
        )
    return SeededRows(users=users, products=products)


# -- the truth ------------------------------------------------------------------------------


@dataclass
class ShopTruth:
    """What one workload run committed.

    ``changes`` counts row changes per table as change data capture will see them (one
    per row inserted, updated or deleted). The order figures cover the orders this run
    placed, by their status when it ended: ``revenue`` sums ``total_amount`` of those that
    are neither cancelled nor refunded; ``*_by_date`` use the UTC date of ``created_at``.
    Stock moves: ``units_ordered`` left the shelves when orders were placed,
    ``units_returned`` came back when orders were cancelled, ``units_restocked`` arrived.

    Orders placed for the clickstream's checkouts (:meth:`Shop.place`) are orders of the run
    like the others, and also counted in ``session_orders``; ``session_orders_failed``
    checkouts found a product out of stock (or their member gone) and placed nothing.
    ``orders_by_business_day`` / ``gross_by_business_day`` count every order of the run, any
    status, by the date of ``created_at`` in ``timezone`` (gross: the lines total).
    """

    transactions: int = 0
    rolled_back: int = 0
    orders_by_status: Counter[str] = field(default_factory=Counter)
    revenue_by_status: dict[str, Decimal] = field(default_factory=dict)
    revenue: Decimal = Decimal(0)
    orders_by_date: Counter[str] = field(default_factory=Counter)
    revenue_by_date: dict[str, Decimal] = field(default_factory=dict)
    changes: dict[str, Counter[str]] = field(
        default_factory=lambda: {table: Counter() for table in SHOP_TABLES}
    )
    units_ordered: int = 0
    units_returned: int = 0
    units_restocked: int = 0
    price_changes: int = 0
    grade_upgrades: int = 0
    payments_failed: int = 0
    timezone: str = "UTC"
    session_orders: int = 0
    session_orders_failed: int = 0
    orders_by_business_day: Counter[str] = field(default_factory=Counter)
    gross_by_business_day: dict[str, Decimal] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "rolled_back": self.rolled_back,
            "orders": sum(self.orders_by_status.values()),
            "orders_by_status": {s: self.orders_by_status[s] for s in ORDER_STATUSES},
            "revenue": str(self.revenue),
            "revenue_by_status": {
                s: str(self.revenue_by_status.get(s, Decimal(0))) for s in ORDER_STATUSES
            },
            "orders_by_date": dict(sorted(self.orders_by_date.items())),
            "revenue_by_date": {d: str(v) for d, v in sorted(self.revenue_by_date.items())},
            "changes": {
                table: {op: self.changes[table][op] for op in ("insert", "update", "delete")}
                for table in SHOP_TABLES
            },
            "units_ordered": self.units_ordered,
            "units_returned": self.units_returned,
            "units_restocked": self.units_restocked,
            "price_changes": self.price_changes,
            "grade_upgrades": self.grade_upgrades,
            "payments_failed": self.payments_failed,
            "timezone": self.timezone,
            "session_orders": self.session_orders,
            "session_orders_failed": self.session_orders_failed,
            "orders_by_business_day": dict(sorted(self.orders_by_business_day.items())),
            "gross_by_business_day": {
                d: str(v) for d, v in sorted(self.gross_by_business_day.items())
            },
        }

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: Path | str) -> ShopTruth:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            transactions=data["transactions"],
            rolled_back=data["rolled_back"],
            orders_by_status=Counter(data["orders_by_status"]),
            revenue_by_status={s: Decimal(v) for s, v in data["revenue_by_status"].items()},
            revenue=Decimal(data["revenue"]),
            orders_by_date=Counter(data["orders_by_date"]),
            revenue_by_date={d: Decimal(v) for d, v in data["revenue_by_date"].items()},
            changes={t: Counter(ops) for t, ops in data["changes"].items()},
            units_ordered=data["units_ordered"],
            units_returned=data["units_returned"],
            units_restocked=data["units_restocked"],
            price_changes=data["price_changes"],
            grade_upgrades=data["grade_upgrades"],
            payments_failed=data["payments_failed"],
            timezone=data.get("timezone", "UTC"),
            session_orders=data.get("session_orders", 0),
            session_orders_failed=data.get("session_orders_failed", 0),
            orders_by_business_day=Counter(data.get("orders_by_business_day", {})),
            gross_by_business_day={
                d: Decimal(v) for d, v in data.get("gross_by_business_day", {}).items()
            },
        )


@dataclass(frozen=True)
class WorkloadStats:
    """Running totals for a progress display."""

    transactions: int
    rolled_back: int
    orders: int
    elapsed: float
    transactions_per_second: float


# -- the workload ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Order:
    order_id: str
    lines: list[tuple[str, int]]  # product_id, quantity
    total: Decimal
    day: str  # UTC date of created_at
    business_day: str  # date of created_at in the shop's time zone
    status: OrderStatus = "PENDING"
    payment_id: str | None = None  # the successful payment
    prices: list[Decimal] = field(default_factory=list)  # unit prices, per line


@dataclass(slots=True)
class _Shelf:
    price: Decimal
    stock: int
    storage_type: str


# Storage types from the least to the most demanding shipment.
_STORAGE_ORDER = ("ROOM", "COLD", "FROZEN")


class _Conflict(Exception):
    """The database disagreed with what the workload believed; the transaction rolls back."""


# Relative frequencies of the shop's transactions. An order needs one placement, one
# payment and three moves to be delivered, so payments slightly outpace placements and
# moves outpace both: the pipeline of open orders stays short instead of piling up.
_ACTIONS: tuple[tuple[str, float], ...] = (
    ("place_order", 20.0),
    ("pay_order", 24.0),
    ("advance_order", 62.0),
    ("cancel_order", 2.0),
    ("refund_order", 1.0),
    ("change_price", 2.0),
    ("restock", 0.5),
    ("upgrade_grade", 1.0),
    ("sign_up", 1.5),
    ("leave", 0.4),
)
_PAYMENT_FAILURE = 0.04
_PAYMENT_WEIGHTS = (0.45, 0.20, 0.15, 0.10, 0.10)


class _Shop:
    """The workload's picture of the shop, kept in step with what it commits."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        catalogue: Catalogue,
        seed: int,
        *,
        own_orders: bool = True,
        timezone: str = "UTC",
    ):
        self.conn = conn
        self.catalogue = catalogue
        self.rng = random.Random(f"shop/{seed}")  # noqa: S311 - reproducible, not secret
        self.fake = Faker("ko_KR")
        self.fake.seed_instance(seed)
        self.truth = ShopTruth(timezone=timezone)
        self.zone = ZoneInfo(timezone)
        # Without orders of its own, only the clickstream's checkouts place orders.
        self.own_orders = own_orders
        # One connection, so one transaction at a time: the workload's steps and the
        # clickstream's checkouts take turns.
        self.lock = asyncio.Lock()
        self.shelves: dict[str, _Shelf] = {}
        self.by_storage: dict[str, list[str]] = {}
        self.grades: dict[str, str] = {}
        self.member_ids: list[str] = []
        self.with_orders: set[str] = set()
        self.orders: dict[str, _Order] = {}  # placed by this run
        # Open orders per status, oldest first (dicts keep insertion order).
        self.open: dict[str, dict[str, _Order]] = {s: {} for s in ORDER_STATUSES[:5]}
        self.action_names = tuple(name for name, _ in _ACTIONS)
        self.action_weights = tuple(weight for _, weight in _ACTIONS)

    async def load(self) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute("SELECT product_id, price, stock, storage_type FROM products")
            for product_id, price, stock, storage_type in await cur.fetchall():
                self.shelves[product_id] = _Shelf(price, stock, storage_type)
                self.by_storage.setdefault(storage_type, []).append(product_id)
            await cur.execute("SELECT user_id, grade FROM users ORDER BY user_id")
            self.grades = dict(await cur.fetchall())
            self.member_ids = list(self.grades)
            await cur.execute("SELECT DISTINCT user_id FROM orders")
            self.with_orders = {row[0] for row in await cur.fetchall()}
        if not self.shelves or not self.member_ids:
            raise RuntimeError("the shop has no products or no users: run setup_shop_schema")

    async def step(self) -> None:
        """Run one transaction of a randomly chosen kind."""
        name = self.rng.choices(self.action_names, self.action_weights)[0]
        if name == "place_order" and not self.own_orders:
            name = "pay_order"  # orders come from the clickstream's checkouts only
        action = getattr(self, name)
        async with self.lock:
            try:
                done = await action()
                if not done and self.own_orders:
                    await self.place_order()  # nothing to do for that kind: customers buy
            except _Conflict:
                self.truth.rolled_back += 1
                await self.load_shelves()

    async def place_checkout(self, checkout: Checkout) -> PlacedOrder | None:
        """Place the order of a clickstream checkout, at the shelf prices, created at the
        purchase's time; None (and nothing written) when it cannot be placed."""
        async with self.lock:
            lines = list(checkout.lines)
            if checkout.user_id not in self.grades or any(p not in self.shelves for p, _ in lines):
                self.truth.session_orders_failed += 1  # a member who left, an unknown product
                return None
            try:
                order = await self._place(checkout.user_id, lines, checkout.at)
            except _Conflict:  # out of stock: the database said so
                self.truth.rolled_back += 1
                self.truth.session_orders_failed += 1
                await self.load_shelves()
                return None
            self.truth.session_orders += 1
            return PlacedOrder(
                order.order_id,
                tuple((p, q, price) for (p, q), price in zip(lines, order.prices, strict=True)),
            )

    async def load_shelves(self) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute("SELECT product_id, price, stock FROM products")
            for product_id, price, stock in await cur.fetchall():
                shelf = self.shelves.get(product_id)
                if shelf is not None:
                    shelf.price, shelf.stock = price, stock

    async def _alone(self, sql: str, params: tuple[Any, ...], expect: str) -> list[Any]:
        """Run one statement as its own transaction; it must change exactly one row.

        Most of the shop's transactions are one statement, so they need no BEGIN/COMMIT
        round trips: in autocommit the statement is the transaction.
        """
        async with self.conn.cursor() as cur:
            await cur.execute(sql, params)
            if cur.rowcount != 1:
                raise _Conflict(expect)
            return list(await cur.fetchone() or ()) if cur.description else []

    def _committed(self, **changes: int) -> None:
        """Count a committed transaction; keys are ``<table>_<op>``."""
        self.truth.transactions += 1
        for key, count in changes.items():
            table, op = key.rsplit("_", 1)
            self.truth.changes[table][op] += count

    def _set_status(self, order: _Order, status: OrderStatus) -> None:
        self.open.get(order.status, {}).pop(order.order_id, None)
        order.status = status
        if status in self.open:
            self.open[status][order.order_id] = order

    # -- the shop's transactions ---------------------------------------------------------

    def _customer(self) -> str:
        # Regulars order more: draw catalogue members by activity while they are still here.
        if self.rng.random() < 0.8:
            member = self.catalogue.active_user(self.rng).user_id
            if member in self.grades:
                return member
        return self.rng.choice(self.member_ids)

    def _basket(self) -> list[tuple[str, int]]:
        """Lines of one order: products that ship together (one storage type), in stock."""
        rng = self.rng
        first = self.catalogue.popular_product(rng).product_id
        if first not in self.shelves:
            first = rng.choice(list(self.shelves))
        same_shipment = self.by_storage[self.shelves[first].storage_type]
        wanted = [first] + [
            rng.choice(same_shipment) for _ in range(rng.choices((0, 1, 2, 3), (50, 25, 15, 10))[0])
        ]
        lines: list[tuple[str, int]] = []
        for product_id in dict.fromkeys(wanted):  # each product once per order
            quantity = rng.choices((1, 2, 3), (75, 18, 7))[0]
            if self.shelves[product_id].stock >= quantity:
                lines.append((product_id, quantity))
        return lines

    async def place_order(self) -> bool:
        lines = self._basket()
        if not lines:
            return await self.restock()  # sold out: the merchandiser reorders instead
        await self._place(self._customer(), lines, datetime.now(UTC))
        return True

    async def _place(self, user_id: str, lines: list[tuple[str, int]], now: datetime) -> _Order:
        """Write one order (PENDING) with its lines at the shelf prices and take the stock,
        in one transaction; raises _Conflict (nothing written) when stock is short."""
        prices = [self.shelves[p].price for p, _ in lines]
        total = sum((price * q for price, (_, q) in zip(prices, lines, strict=True)), Decimal(0))
        # The coldest line decides how the order ships.
        storage_type = max(
            (self.shelves[p].storage_type for p, _ in lines), key=_STORAGE_ORDER.index
        )
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.execute(
                f"""WITH placed AS (
                        INSERT INTO orders (order_id, user_id, status, delivery_type,
                                            total_amount, created_at, updated_at)
                        VALUES ({_ORDER_ID}, %s, 'PENDING', %s, %s, %s, %s)
                        RETURNING order_id)
                    INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
                    SELECT placed.order_id, line.no, line.product_id, line.quantity, line.price
                    FROM placed, unnest(%s::int[], %s::text[], %s::int[], %s::numeric[])
                         AS line(no, product_id, quantity, price)
                    RETURNING order_id""",
                (
                    user_id,
                    storage_type,
                    total,
                    now,
                    now,
                    list(range(1, len(lines) + 1)),
                    [p for p, _ in lines],
                    [q for _, q in lines],
                    prices,
                ),
            )
            rows = await cur.fetchall()
            if len(rows) != len(lines):
                raise _Conflict("order lines were not all written")
            order_id = rows[0][0]
            await self._take_stock(cur, lines, now)
        order = _Order(
            order_id,
            lines,
            total,
            now.astimezone(UTC).date().isoformat(),
            now.astimezone(self.zone).date().isoformat(),
            prices=prices,
        )
        self.orders[order_id] = order
        self.open["PENDING"][order_id] = order
        self.with_orders.add(user_id)
        for product_id, quantity in lines:
            self.shelves[product_id].stock -= quantity
        self.truth.units_ordered += sum(q for _, q in lines)
        self._committed(orders_insert=1, order_items_insert=len(lines), products_update=len(lines))
        return order

    async def _take_stock(
        self, cur: psycopg.AsyncCursor[Any], lines: list[tuple[str, int]], now: datetime
    ) -> None:
        # The stock >= quantity guard makes the database, not our picture of it, the judge.
        await cur.execute(
            """UPDATE products SET stock = products.stock - line.quantity, updated_at = %s
               FROM unnest(%s::text[], %s::int[]) AS line(product_id, quantity)
               WHERE products.product_id = line.product_id
                 AND products.stock >= line.quantity""",
            (now, [p for p, _ in lines], [q for _, q in lines]),
        )
        if cur.rowcount != len(lines):
            raise _Conflict("not enough stock")

    async def pay_order(self) -> bool:
        pending = self.open["PENDING"]
        if not pending:
            return False
        order = next(iter(pending.values()))  # the oldest order waiting for its payment
        rng = self.rng
        method = rng.choices(PAYMENT_METHODS, _PAYMENT_WEIGHTS)[0]
        now = datetime.now(UTC)
        if rng.random() < _PAYMENT_FAILURE:
            # Declined: the order waits for another try (or is cancelled later).
            await self._alone(
                f"""INSERT INTO payments (payment_id, order_id, method, amount, status)
                    VALUES ({_PAYMENT_ID}, %s, %s, %s, 'FAILED')""",
                (order.order_id, method, order.total),
                "declined payment not written",
            )
            del pending[order.order_id]
            pending[order.order_id] = order  # to the back of the queue
            self.truth.payments_failed += 1
            self._committed(payments_insert=1)
            return True
        # One statement, so one transaction: the payment exists only if the order moved.
        (payment_id,) = await self._alone(
            f"""WITH paid AS (
                    UPDATE orders SET status = 'PAID', updated_at = %s
                    WHERE order_id = %s AND status = 'PENDING' RETURNING order_id)
                INSERT INTO payments (payment_id, order_id, method, amount, status, paid_at)
                SELECT {_PAYMENT_ID}, paid.order_id, %s, %s, 'PAID', %s FROM paid
                RETURNING payment_id""",
            (now, order.order_id, method, order.total, now),
            f"order {order.order_id} is no longer PENDING",
        )
        order.payment_id = payment_id
        self._set_status(order, "PAID")
        self._committed(payments_insert=1, orders_update=1)
        return True

    async def _move(
        self, cur: psycopg.AsyncCursor[Any], order: _Order, status: OrderStatus, now: datetime
    ) -> None:
        await cur.execute(
            "UPDATE orders SET status = %s, updated_at = %s WHERE order_id = %s AND status = %s",
            (status, now, order.order_id, order.status),
        )
        if cur.rowcount != 1:
            raise _Conflict(f"order {order.order_id} is no longer {order.status}")

    async def advance_order(self) -> bool:
        queues = [(s, self.open[s]) for s in _ADVANCE if self.open[s]]
        if not queues:
            return False
        # Busier stages move more often, oldest order first.
        status, queue = self.rng.choices(queues, [len(q) for _, q in queues])[0]
        order = next(iter(queue.values()))
        await self._alone(
            "UPDATE orders SET status = %s, updated_at = %s WHERE order_id = %s AND status = %s",
            (_ADVANCE[status], datetime.now(UTC), order.order_id, status),
            f"order {order.order_id} is no longer {status}",
        )
        self._set_status(order, _ADVANCE[status])
        self._committed(orders_update=1)
        return True

    async def cancel_order(self) -> bool:
        # Customers cancel soon after ordering: the newest order not yet shipped.
        candidates = [q for q in (self.open[s] for s in ("PENDING", "PAID", "PREPARING")) if q]
        if not candidates:
            return False
        queue = self.rng.choice(candidates)
        order = queue[next(reversed(queue))]
        now = datetime.now(UTC)
        paid = order.payment_id is not None
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await self._move(cur, order, "CANCELLED", now)
            await cur.execute(
                """UPDATE products SET stock = products.stock + line.quantity, updated_at = %s
                   FROM unnest(%s::text[], %s::int[]) AS line(product_id, quantity)
                   WHERE products.product_id = line.product_id""",
                (now, [p for p, _ in order.lines], [q for _, q in order.lines]),
            )
            if cur.rowcount != len(order.lines):
                raise _Conflict("a product of the order is gone")
            if paid:
                await self._settle_payment(cur, order, "CANCELLED", now)
        self._set_status(order, "CANCELLED")
        for product_id, quantity in order.lines:
            self.shelves[product_id].stock += quantity
        self.truth.units_returned += sum(q for _, q in order.lines)
        self._committed(
            orders_update=1, products_update=len(order.lines), payments_update=int(paid)
        )
        return True

    async def _settle_payment(
        self, cur: psycopg.AsyncCursor[Any], order: _Order, status: str, now: datetime
    ) -> None:
        await cur.execute(
            """UPDATE payments SET status = %s, refunded_at = %s
               WHERE payment_id = %s AND status = 'PAID'""",
            (status, now, order.payment_id),
        )
        if cur.rowcount != 1:
            raise _Conflict(f"payment {order.payment_id} is no longer PAID")

    async def refund_order(self) -> bool:
        delivered = self.open["DELIVERED"]
        if not delivered:
            return False
        # Returns come within days of delivery: one of the recent deliveries.
        recent = list(delivered)[-200:]
        order = delivered[self.rng.choice(recent)]
        now = datetime.now(UTC)
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await self._move(cur, order, "REFUNDED", now)
            await self._settle_payment(cur, order, "REFUNDED", now)
        self._set_status(order, "REFUNDED")
        self._committed(orders_update=1, payments_update=1)
        return True

    async def change_price(self) -> bool:
        rng = self.rng
        product_id = self.catalogue.popular_product(rng).product_id
        shelf = self.shelves.get(product_id)
        if shelf is None:
            return False
        # A sale or a price rise of up to a fifth, landing on a shelf price again.
        factor = rng.uniform(0.8, 1.2)
        low = max(900, int(shelf.price * Decimal(factor) * Decimal("0.97")))
        price = shelf_price(rng, low, max(low + 1, int(low * 1.06)))
        await self._alone(
            "UPDATE products SET price = %s, updated_at = %s WHERE product_id = %s",
            (price, datetime.now(UTC), product_id),
            f"product {product_id} is gone",
        )
        shelf.price = price
        self.truth.price_changes += 1
        self._committed(products_update=1)
        return True

    async def restock(self) -> bool:
        rng = self.rng
        # The emptiest of a handful of shelves the merchandiser walks past.
        product_id = min(
            rng.sample(list(self.shelves), min(12, len(self.shelves))),
            key=lambda p: self.shelves[p].stock,
        )
        units = rng.randint(50, 300)
        await self._alone(
            "UPDATE products SET stock = stock + %s, updated_at = %s WHERE product_id = %s",
            (units, datetime.now(UTC), product_id),
            f"product {product_id} is gone",
        )
        self.shelves[product_id].stock += units
        self.truth.units_restocked += units
        self._committed(products_update=1)
        return True

    async def upgrade_grade(self) -> bool:
        member = self._customer()
        grade = self.grades[member]
        if grade == GRADES[-1]:
            return False
        upgraded = GRADES[GRADES.index(grade) + 1]
        await self._alone(
            "UPDATE users SET grade = %s, updated_at = %s WHERE user_id = %s AND grade = %s",
            (upgraded, datetime.now(UTC), member, grade),
            f"member {member} changed meanwhile",
        )
        self.grades[member] = upgraded
        self.truth.grade_upgrades += 1
        self._committed(users_update=1)
        return True

    async def sign_up(self) -> bool:
        fake = self.fake
        now = datetime.now(UTC)
        # The member number goes into the e-mail too, which keeps it unique across runs.
        (member,) = await self._alone(
            """WITH number AS (SELECT nextval('user_id_seq') AS n)
               INSERT INTO users (user_id, email, name, grade, created_at, updated_at)
               SELECT 'U' || lpad(n::text, 6, '0'), %s || n || '@' || %s, %s, 'BRONZE', %s, %s
               FROM number RETURNING user_id""",
            (fake.user_name(), fake.free_email_domain(), fake.name(), now, now),
            "new member not written",
        )
        self.grades[member] = "BRONZE"
        self.member_ids.append(member)
        self._committed(users_insert=1)
        return True

    async def leave(self) -> bool:
        # Only members who never ordered can go: orders keep their customer.
        rng = self.rng
        for _ in range(20):
            member = rng.choice(self.member_ids)
            if member not in self.with_orders:
                break
        else:
            return False
        await self._alone(
            """DELETE FROM users WHERE user_id = %s
               AND NOT EXISTS (SELECT 1 FROM orders WHERE orders.user_id = users.user_id)""",
            (member,),
            f"member {member} has orders or is gone",
        )
        del self.grades[member]
        self.member_ids.remove(member)
        self._committed(users_delete=1)
        return True

    def close_books(self) -> ShopTruth:
        """Fill the order figures from the final state of this run's orders."""
        truth = self.truth
        truth.orders_by_status = Counter()
        truth.revenue_by_status = {}
        truth.orders_by_date = Counter()
        truth.revenue_by_date = {}
        truth.revenue = Decimal(0)
        truth.orders_by_business_day = Counter()
        truth.gross_by_business_day = {}
        for order in self.orders.values():
            truth.orders_by_business_day[order.business_day] += 1
            truth.gross_by_business_day[order.business_day] = (
                truth.gross_by_business_day.get(order.business_day, Decimal(0)) + order.total
            )
            truth.orders_by_status[order.status] += 1
            truth.revenue_by_status[order.status] = (
                truth.revenue_by_status.get(order.status, Decimal(0)) + order.total
            )
            if order.status not in UNSOLD_STATUSES:
                truth.revenue += order.total
                truth.orders_by_date[order.day] += 1
                truth.revenue_by_date[order.day] = (
                    truth.revenue_by_date.get(order.day, Decimal(0)) + order.total
                )
        return truth


class Shop:
    """The shop as the generators share it: one connection, one picture of the shop, one
    truth, used by the order workload (:meth:`step`) and by the clickstream's checkouts
    (:meth:`place`, an :class:`~shopstream.generators.clickstream.OrderPlacer`), so orders
    placed for checkouts are paid, moved, cancelled and refunded like the workload's own.

    Users :meth:`open` it and :meth:`close` it; the last to close ends the connection and
    closes the books (``truth`` is then final: the same object throughout). With
    ``own_orders=False`` the workload places no orders itself, only moves them.
    """

    def __init__(
        self,
        dsn: str,
        *,
        seed: int = 1,
        own_orders: bool = True,
        timezone: str = "UTC",
        catalogue: Catalogue | None = None,
    ) -> None:
        self.dsn = dsn
        self.seed = seed
        self.own_orders = own_orders
        self.timezone = timezone
        self.catalogue = catalogue
        self.truth = ShopTruth(timezone=timezone)
        self._shop: _Shop | None = None
        self._users = 0
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            self._users += 1
            if self._shop is not None:
                return
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            shop = _Shop(
                conn,
                self.catalogue or build_catalogue(self.seed),
                self.seed,
                own_orders=self.own_orders,
                timezone=self.timezone,
            )
            shop.truth = self.truth
            try:
                await shop.load()
            except BaseException:
                self._users -= 1
                await conn.close()
                raise
            self._shop = shop

    async def close(self) -> ShopTruth:
        async with self._opening:
            self._users -= 1
            shop = self._shop
            if self._users <= 0 and shop is not None:
                self._shop = None
                await shop.conn.close()
            if shop is not None:
                shop.close_books()
        return self.truth

    def _open(self) -> _Shop:
        if self._shop is None:
            raise RuntimeError("the shop is not open")
        return self._shop

    @property
    def orders_placed(self) -> int:
        return len(self._shop.orders) if self._shop is not None else 0

    async def step(self) -> None:
        """One transaction of the order workload."""
        await self._open().step()

    async def place(self, checkout: Checkout) -> PlacedOrder | None:
        """The order of a checkout, placed and committed, or None when it failed."""
        return await self._open().place_checkout(checkout)


async def run_order_workload(
    dsn: str,
    *,
    tps: float,
    duration: float,
    seed: int = 1,
    truth_path: Path | None = None,
    on_progress: Callable[[WorkloadStats], None] | None = None,
    stop: asyncio.Event | None = None,
    shop: Shop | None = None,
) -> ShopTruth:
    """Run the shop at ``tps`` transactions/s for ``duration`` s (or until ``stop`` is set).

    The run ends after ``tps * duration`` transactions or ``duration`` seconds, whichever
    comes first (a database slower than ``tps`` gets fewer); ``duration`` may be ``math.inf``.

    Needs the schema and catalogue of :func:`setup_shop_schema`. Returns (and writes to
    ``truth_path`` when given, also if the run fails part-way) what was committed. A
    transaction the database refuses (stock or state changed behind the workload's back)
    rolls back, is counted in ``rolled_back`` and in nothing else. ``orders_by_date`` and
    ``revenue_by_date`` count the sold orders (neither cancelled nor refunded).

    With ``shop`` the workload runs on that shared :class:`Shop` (whose checkouts it then
    moves too); the truth returned is the shop's, final once its last user closed it.
    """
    if tps <= 0:
        raise ValueError("tps must be positive")
    total = math.inf if math.isinf(duration) else int(tps * duration)
    loop = asyncio.get_running_loop()
    shop = shop or Shop(dsn, seed=seed)
    await shop.open()
    try:
        began = started = last_report = loop.time()
        done = 0
        ends = began + duration
        while done < total and loop.time() < ends and not (stop is not None and stop.is_set()):
            delay = started + done / tps - loop.time()
            if delay > 0:
                await _pause(delay, stop)
                continue
            if delay < -1.0:
                started -= delay + 1.0  # a slow database: fall behind, never burst
            await shop.step()
            done += 1
            now = loop.time()
            if on_progress is not None and now - last_report >= 0.1:
                last_report = now
                on_progress(_stats(shop.truth, shop.orders_placed, now - began))
        if on_progress is not None:
            on_progress(_stats(shop.truth, shop.orders_placed, loop.time() - began))
    finally:
        truth = await shop.close()
        if truth_path is not None:
            truth.write_json(truth_path)
    return truth


async def _pause(delay: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def _stats(truth: ShopTruth, orders: int, elapsed: float) -> WorkloadStats:
    return WorkloadStats(
        transactions=truth.transactions,
        rolled_back=truth.rolled_back,
        orders=orders,
        elapsed=elapsed,
        transactions_per_second=truth.transactions / elapsed if elapsed > 0 else 0.0,
    )
