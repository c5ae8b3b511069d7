"""Weeks of a shop's past, written straight into raw with SQL.

Sending weeks of traffic through HTTP and CDC would take as long as the weeks did; quality
checks with baselines (hour-of-week volume, day-of-week distributions, dead-letter rates) need
that past at once. So the rows are written as the collector and the CDC reader would have
written them:

- ``raw.events``: the collector's columns (``shopstream.events.raw.RAW_EVENTS``); sessions of
  :data:`SESSION_STEPS` with properties shaped like ``shopstream.generators.clickstream``, and a
  purchase event per order (``properties.order_id`` names the order, revenue = its lines), of
  which 2% are lost as ad blockers lose them. ``source`` is ``native``, as for live events.
- ``raw.dead_letter``: a small normal trickle of refused events (reasons of
  :class:`~shopstream.events.codes.ReasonCode`), so dead-letter checks have a baseline.
- ``raw.cdc_users`` ... ``raw.cdc_payments``: change rows in the reader's Debezium encodings.
  Every order passes every status step of :mod:`shopstream.generators.shop`
  (PENDING -> PAID -> PREPARING -> SHIPPING -> DELIVERED; CANCELLED from PENDING, PAID or
  PREPARING; REFUNDED from DELIVERED); payments are PAID, FAILED (a declined try before the
  good one), CANCELLED or REFUNDED, never above the order's total; an order's total is the sum
  of its lines. Updates carry no ``before`` (replica identity default).
- ``raw.source_schemas``: version 1 of each shop table, read from ``SHOP_DDL``.

Time follows a shop's rhythm in the plan's time zone: a deep night trough and an evening peak,
busier weekends, a few percent of noise per hour and steady growth per week. Events and orders
are placed by inverse CDF of that hourly intensity (cumulative hourly weights + ASOF join), so
generation stays vectorised SQL; everything derives from ``hash(seed, ...)`` of row numbers.

History never collides with the live shop: users ``UH`` + 6 digits, products ``PH`` + 6,
orders ``OH`` + 10, payments ``PAYH`` + 10 (live: U / P / O / PAY), and CDC LSNs and change ids
below ``0x1000000`` (a real cluster's WAL starts at 0/1000000), so every real change sorts after
history.

The benchmark of the transform (``bench/_rawgen.py``) uses the same generator (:class:`World`)
with the live id prefixes, flat time and a CDC snapshot.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import orjson

from shopstream.events.codes import ReasonCode
from shopstream.events.raw import schema_for
from shopstream.generators.products import CATEGORIES, GRADES
from shopstream.generators.shop import PAYMENT_METHODS, SHOP_DDL, SHOP_TABLES
from shopstream.warehouse.duckdb.database import raw_table_ddl

US = 1_000_000
HOUR_US = 3_600 * US
DAY_US = 86_400 * US
WEEK_US = 7 * DAY_US
#: Share of purchase events lost on the way (ad blockers); the generators' default.
PURCHASE_LOSS_PER_MILLE = 20
#: History's CDC positions stay below this (a real cluster's WAL starts at 0/1000000).
HISTORY_LSN_LIMIT = 0x1000000
HISTORY_LSN_BASE = 0x100
#: Events per session of the synthetic clickstream, and what each step is.
SESSION_STEPS = (
    "page_view",
    "product_view",
    "product_click",
    "product_view",
    "search",
    "page_view",
    "product_view",
    "add_to_cart",
    "page_view",
    "product_view",
    "search",
    "search_click",
    "product_view",
    "add_to_cart",
    "page_view",
    "begin_checkout",
    "page_view",
    "product_view",
    "remove_from_cart",
    "page_view",
)
DEVICES = ("ios", "android", "web_mobile", "web_desktop")

#: Relative activity per local hour of day (0-23): a deep night trough (3-5 h), a morning
#: commute bump, lunch, and the evening peak (20-22 h).
HOUR_OF_DAY = (
    0.45, 0.28, 0.16, 0.10, 0.08, 0.10, 0.22, 0.45, 0.70, 0.82, 0.90, 0.98,
    1.10, 1.02, 0.95, 0.95, 1.00, 1.05, 1.15, 1.35, 1.60, 1.70, 1.45, 0.90,
)  # fmt: skip

# The raw.source_schemas contract; used where the warehouse does not define the table itself.
SOURCE_SCHEMAS_DDL = """CREATE TABLE IF NOT EXISTS raw.source_schemas (
    raw_table VARCHAR NOT NULL,
    source_schema VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    fingerprint VARCHAR NOT NULL,
    columns JSON NOT NULL,
    primary_key JSON NOT NULL,
    replica_identity VARCHAR,
    first_lsn BIGINT,
    recorded_at TIMESTAMPTZ NOT NULL
)"""

# PostgreSQL's catalogue facts for the types SHOP_DDL uses: format_type text and type OID.
_PG_TYPES = {
    "text": ("text", 25),
    "integer": ("integer", 23),
    "timestamptz": ("timestamp with time zone", 1184),
    "numeric": ("numeric", 1700),
}

#: Refused events of a normal day: (code, reason as the collector words it, what was wrong).
DEAD_LETTER_KINDS: tuple[tuple[ReasonCode, str, str], ...] = (
    (ReasonCode.MISSING_FIELD, "event_ts: Field required", "no_ts"),
    (ReasonCode.UNKNOWN_EVENT_TYPE, "unknown event_type 'page_veiw'", "typo"),
    (ReasonCode.INVALID_EVENT, "session_id: Input should be a valid string", "bad_session"),
    (ReasonCode.FUTURE_TIMESTAMP, "event_ts is more than 300 s ahead of the server", "future"),
    (ReasonCode.OLD_TIMESTAMP, "event_ts is more than 7 days old", "old"),
)


# -- the plan ------------------------------------------------------------------------------


def _now_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class HistoryPlan:
    """What :func:`write_history` writes: ``[end - days, end)``.

    ``events_per_day`` and ``orders_per_day`` are averages over the period (growth makes late
    days busier than early ones). ``weekend_factor``: weekend days against weekdays (> 1:
    busier). ``noise``: each hour's volume is scaled by a factor in ``[1 - noise, 1 + noise]``.
    ``dead_letter_rate``: refused events per accepted event.
    """

    days: int = 35
    end: datetime = field(default_factory=_now_hour)
    events_per_day: int = 20_000
    orders_per_day: int = 600
    seed: int = 9
    timezone: str = "UTC"
    growth_per_week: float = 0.03
    noise: float = 0.04
    dead_letter_rate: float = 0.002
    weekend_factor: float = 1.35
    users: int | None = None  # default: a quarter of the orders (at least 200)
    products: int | None = None  # default: one per 200 orders (50 to 5,000)

    def validated(self) -> HistoryPlan:
        """The plan, or a ValueError naming the option that is wrong and what it takes."""
        if self.days < 1:
            raise ValueError(f"days must be at least 1 (got {self.days})")
        if self.end.tzinfo is None:
            raise ValueError(f"end must carry a time zone, e.g. 2026-03-01T00:00:00Z ({self.end})")
        if self.events_per_day < 0 or self.orders_per_day < 0:
            raise ValueError("events_per_day and orders_per_day must not be negative")
        if not 0 <= self.noise < 1:
            raise ValueError(f"noise must be in [0, 1) (got {self.noise})")
        if self.weekend_factor <= 0 or self.growth_per_week <= -1:
            raise ValueError("weekend_factor must be > 0 and growth_per_week > -1")
        if not 0 <= self.dead_letter_rate < 1:
            raise ValueError(f"dead_letter_rate must be in [0, 1) (got {self.dead_letter_rate})")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {self.timezone!r}: give an IANA name such as 'Asia/Seoul'"
            ) from None
        return self

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass
class HistorySummary:
    """What :func:`write_history` did: rows per raw table, over ``[start, end)``."""

    rows: dict[str, int]
    start: datetime
    end: datetime
    seconds: float = 0.0
    #: Why nothing was written (raw already holds history), else None.
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": dict(self.rows),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "seconds": self.seconds,
            "skipped": self.skipped,
        }


# -- one world: what the generator builds ----------------------------------------------------


@dataclass(frozen=True)
class Ids:
    """Id prefixes: history's (UH / PH / OH / PAYH) or the live shop's (U / P / O / PAY)."""

    user: str = "UH"
    product: str = "PH"
    order: str = "OH"
    payment: str = "PAYH"


LIVE_IDS = Ids("U", "P", "O", "PAY")


@dataclass(frozen=True)
class World:
    """Everything the generator needs; :func:`world_for_plan` and the benchmark make one.

    ``hour_weights``: relative intensity of each hour from ``start_us`` (the last one may be
    partial); events, orders and dead letters are spread over ``[start_us, end_us)`` by it.
    ``snapshot_us``: changes up to it collapse into a CDC snapshot ('r' rows at ``lsn_base``);
    None: every change is streamed.
    """

    start_us: int
    end_us: int
    events: int
    orders: int
    users: int
    products: int
    seed: int
    hour_weights: tuple[float, ...]
    ids: Ids = Ids()
    lsn_base: int = HISTORY_LSN_BASE
    snapshot_us: int | None = None
    dead_letters: int = 0
    #: Members sign up from this long before ``start_us`` ...
    users_from_us: int = 0
    #: ... up to this instant (default: half-way through the period).
    users_until_us: int = 0
    #: See ``w_raw_events``: late events after this instant (the benchmark's increment).
    late_after_us: int | None = None

    @property
    def user_span(self) -> tuple[int, int]:
        start = self.users_from_us or self.start_us - 365 * DAY_US
        end = self.users_until_us or self.start_us + (self.end_us - self.start_us) // 2
        return start, max(end, start + 1)


def hour_weights(plan: HistoryPlan) -> tuple[float, ...]:
    """Relative intensity of each hour of ``[plan.start, plan.end)``, in the plan's local
    time: hour of day, weekend, growth per week and noise (deterministic for a seed)."""
    tz = ZoneInfo(plan.timezone)
    start = plan.start
    span = (plan.end - start).total_seconds()
    hours = math.ceil(span / 3600)
    rng = random.Random(plan.seed)  # noqa: S311 - reproducible noise, not a secret
    weights = []
    for k in range(hours):
        at = start + timedelta(hours=k)
        length = min(3600.0, span - k * 3600) / 3600
        local = (at + timedelta(seconds=length * 1800)).astimezone(tz)  # mid-hour
        w = HOUR_OF_DAY[local.hour]
        if local.weekday() >= 5:
            w *= plan.weekend_factor
        w *= (1 + plan.growth_per_week) ** (k / (7 * 24))
        w *= 1 + plan.noise * (2 * rng.random() - 1)
        weights.append(w * length)
    return tuple(weights)


def world_for_plan(plan: HistoryPlan) -> World:
    orders = plan.orders_per_day * plan.days
    events = plan.events_per_day * plan.days
    start_us = _us(plan.start)
    return World(
        start_us=start_us,
        end_us=_us(plan.end),
        events=events,
        orders=orders,
        users=plan.users or max(200, orders // 4),
        products=plan.products or max(50, min(5_000, orders // 200)),
        seed=plan.seed,
        hour_weights=hour_weights(plan),
        dead_letters=int(events * plan.dead_letter_rate),
        # members of the history sign up from a month before it to its middle
        users_from_us=start_us - 30 * DAY_US,
    )


def flat_weights(start_us: int, end_us: int) -> tuple[float, ...]:
    """Uniform intensity over ``[start_us, end_us)`` (the last hour may be partial)."""
    span = end_us - start_us
    hours = -(-span // HOUR_US)
    return tuple(min(HOUR_US, span - k * HOUR_US) / HOUR_US for k in range(hours))


def _us(at: datetime) -> int:
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


# -- the shop's schema, as the CDC reader records it --------------------------------------------


def shop_columns() -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """Table -> (columns as raw.source_schemas holds them, primary key), read from SHOP_DDL."""
    tables: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", SHOP_DDL, re.S):
        columns: list[dict[str, Any]] = []
        key: list[str] = []
        for line in body.strip().splitlines():
            line = line.strip().rstrip(",")
            pk = re.fullmatch(r"PRIMARY KEY \(([^)]*)\)", line)
            if pk:
                key = [c.strip() for c in pk.group(1).split(",")]
                continue
            m = re.match(r"(\w+)\s+(text|integer|timestamptz|numeric\((\d+),(\d+)\))(.*)", line)
            if not m:
                raise ValueError(f"SHOP_DDL line not understood: {line!r}")
            column, sql_type, precision, scale, rest = m.groups()
            if precision:
                type_name, oid = f"numeric({precision},{scale})", 1700
                modifier = ((int(precision) << 16) | int(scale)) + 4
            else:
                type_name, oid = _PG_TYPES[sql_type]
                modifier = -1
            if "PRIMARY KEY" in rest:
                key = [column]
            columns.append(
                {
                    "name": column,
                    "type": type_name,
                    "base_type": type_name,
                    "type_oid": oid,
                    "type_modifier": modifier,
                    "key": False,
                    "nullable": "NOT NULL" not in rest and "PRIMARY KEY" not in rest,
                }
            )
        for column_info in columns:
            column_info["key"] = column_info["name"] in key
        tables[name] = (columns, key)
    return tables


def fingerprint(columns: list[dict[str, Any]], primary_key: list[str]) -> str:
    """sha256 of the columns and primary key as canonical JSON (sorted keys, no spaces), the
    CDC reader's definition."""
    canonical = orjson.dumps(
        {"columns": columns, "primary_key": primary_key}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


# -- DDL ---------------------------------------------------------------------------------------


def raw_tables() -> list[str]:
    return ["events", "dead_letter", *(f"cdc_{t}" for t in SHOP_TABLES)]


def create_raw(con: duckdb.DuckDBPyConnection, schema: str = "raw") -> None:
    """The raw tables as the warehouse creates them (its own DDL), in ``schema``."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in raw_tables():
        con.execute(raw_table_ddl(table).replace("raw.", f"{schema}.", 1))
    try:
        schema_for("source_schemas")
        ddl = raw_table_ddl("source_schemas")
    except (KeyError, ValueError):
        ddl = SOURCE_SCHEMAS_DDL
    con.execute(ddl.replace("raw.", f"{schema}.", 1))


# -- generation ------------------------------------------------------------------------------


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _macros(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    """Helpers of the generator's SQL. No SET here: the warehouse locks its configuration."""
    # timestamptz as the reader encodes it: UTC, PostgreSQL's fraction digits, trailing Z.
    con.execute(
        "CREATE OR REPLACE TEMP MACRO pg_ts(us) AS "
        "strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S') || CASE WHEN us % 1000000 = 0 "
        "THEN '' ELSE '.' || rtrim(lpad((us % 1000000)::VARCHAR, 6, '0'), '0') END || 'Z'"
    )
    # An instant whatever the session's TimeZone (epoch + microseconds is exact).
    con.execute("CREATE OR REPLACE TEMP MACRO tstz(us) AS to_timestamp(0) + to_microseconds(us)")
    con.execute(f"CREATE OR REPLACE TEMP MACRO h(tag, n) AS (hash({seed}, tag, n) >> 1)::BIGINT")
    # A uuid-looking id from a hash: deterministic, distinct per (tag, n); version nibble 4,
    # variant a (substrings: far cheaper than a regular expression on millions of rows).
    con.execute(
        "CREATE OR REPLACE TEMP MACRO uuid_of(m) AS substr(m, 1, 8) || '-' || substr(m, 9, 4) "
        "|| '-4' || substr(m, 14, 3) || '-a' || substr(m, 18, 3) || '-' || substr(m, 21, 12)"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO uid(tag, n) AS uuid_of(md5({seed}::VARCHAR || tag "
        "|| n::VARCHAR))"
    )


#: Temp tables and views the generator leaves on its connection (dropped by :func:`cleanup`).
TEMP_TABLES = (
    "w_hours",
    "w_users",
    "w_products",
    "w_orders",
    "w_lines",
    "w_num",
    "w_event_times",
    "w_sessions",
    "w_session_start",
)
TEMP_VIEWS = ("w_raw_events", "w_dead_letters", "w_events", "w_changes", "w_versions")


def cleanup(con: duckdb.DuckDBPyConnection) -> None:
    for view in TEMP_VIEWS:
        con.execute(f"DROP VIEW IF EXISTS {view}")
    for table in TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def build(
    con: duckdb.DuckDBPyConnection, w: World, progress: Callable[[str], None] | None = None
) -> None:
    """Build the world on ``con`` as temp tables: ``w_changes`` (every change row, with
    ``commit_us``), the views ``w_raw_events`` (rows of raw.events, with ``received_us``) and
    ``w_dead_letters``. Nothing is written to raw yet."""
    say = progress or (lambda _: None)
    _macros(con, w.seed)
    _hours(con, w)
    say("shop")
    _world(con, w)
    say("changes")
    _changes(con, w)
    say("events")
    _events(con, w)
    _dead_letters(con, w)


def _hours(con: duckdb.DuckDBPyConnection, w: World) -> None:
    """The hourly intensity as a cumulative distribution, for inverse-CDF placement: an item
    at quantile u lands in the hour whose [lo, lo + share) holds u, in proportion inside it."""
    weights = list(w.hour_weights)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE w_hours AS
        SELECT k, {w.start_us} + k * {HOUR_US} AS start_us,
               least({HOUR_US}, {w.end_us} - ({w.start_us} + k * {HOUR_US})) AS len_us,
               w / sum(w) OVER () AS share,
               (sum(w) OVER (ORDER BY k) - w) / sum(w) OVER () AS lo
        FROM (SELECT unnest(range(len(?::DOUBLE[]))) AS k, unnest(?::DOUBLE[]) AS w)
        ORDER BY lo""",
        [weights, weights],
    )


def _place(tag: str, n: str, count: int) -> str:
    """SQL of the placement of item ``n`` of ``count``: a stratified quantile
    ``(n + jitter) / count``, joined to w_hours by ``ASOF JOIN w_hours hr ON q >= hr.lo``;
    returns the expression of its microsecond (use inside such a join)."""
    return (
        f"(hr.start_us + least(hr.len_us - 1, ((({n} + (h('{tag}', {n}) % 1000000) / 1e6) "
        f"/ {max(1, count)} - hr.lo) / hr.share * hr.len_us)::BIGINT))"
    )


def _quantile(tag: str, n: str, count: int) -> str:
    return f"(({n} + (h('{tag}', {n}) % 1000000) / 1e6) / {max(1, count)})"


def _world(con: duckdb.DuckDBPyConnection, w: World) -> None:
    """Users, products, orders (with the time of each status step) and lines."""
    ids = w.ids
    users, products = w.users, w.products
    u_start, u_end = w.user_span
    u_step = max(1, (u_end - u_start) // users)
    buyers = int(users * 0.9)  # the rest never order: some of them leave (deletes)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_users AS
        SELECT u, printf('{ids.user}%06d', u + 1) AS user_id,
               'member' || (u + 1) || '{"-h" if ids.user == "UH" else ""}@shop.example'
                   AS email,
               'Member ' || (u + 1) AS name,
               {_sql_list(GRADES)}[1 + (h('grade', u) % 4)::INT] AS grade,
               {_sql_list(GRADES)}[least(4, 2 + (h('grade', u) % 4)::INT)] AS grade_later,
               {u_start} + u * {u_step} + (h('uc', u) % 1000000)::BIGINT AS created_us
        FROM range({users}) r(u)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_products AS
        SELECT p, printf('{ids.product}%06d', p + 1) AS product_id, category,
               CASE WHEN category = 'food'
                    THEN ['ROOM', 'COLD', 'FROZEN'][1 + (p // {len(CATEGORIES)}) % 3]
                    ELSE 'ROOM' END AS storage_type,
               (2900 + (h('price', p) % 1500) * 100)::DECIMAL(12, 2) AS price,
               upper(category[1]) || category[2:] || ' item ' || (p + 1) AS name
        FROM (SELECT p, {_sql_list(CATEGORIES)}[1 + p % {len(CATEGORIES)}] AS category
              FROM range({products}) r(p))""")
    # An order's outcome, by per-mille: most are delivered; some cancelled (before payment,
    # after it, or while being prepared) or refunded after delivery. Steps past the world's
    # end simply have not happened yet: the newest orders are still on their way.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_orders AS
        WITH o AS (
            SELECT o, {_quantile("ot", "o", w.orders)} AS q FROM range({w.orders}) r(o)
        ), placed AS (
            SELECT o.o, {_place("ot", "o.o", w.orders)} AS t_us
            FROM o ASOF JOIN w_hours hr ON o.q >= hr.lo
        ), fate AS (
            SELECT o, t_us, h('st', o) % 1000 AS f,
                   -- payment 30 s to 10 min after the order; 3% declined once first
                   t_us + {30 * US} + (h('pay', o) % {570 * US})::BIGINT AS paid_us,
                   (h('fail', o) % 100 < 3) AS declined_first,
                   {HOUR_US} + (h('prep', o) % {11 * HOUR_US})::BIGINT AS prep_after,
                   {6 * HOUR_US} + (h('ship', o) % {30 * HOUR_US})::BIGINT AS ship_after,
                   {12 * HOUR_US} + (h('dlv', o) % {60 * HOUR_US})::BIGINT AS dlv_after,
                   {DAY_US} + (h('rf', o) % {6 * DAY_US})::BIGINT AS refund_after,
                   {600 * US} + (h('cx', o) % {4 * HOUR_US})::BIGINT AS cancel_after
            FROM placed
        )
        SELECT o, printf('{ids.order}%010d', o + 1) AS order_id, t_us,
               1 + (h('lines', o) % 4)::INT AS n_lines,
               CASE WHEN f < 860 THEN 'DELIVERED' WHEN f < 890 THEN 'CANCELLED_PENDING'
                    WHEN f < 920 THEN 'CANCELLED_PAID' WHEN f < 940 THEN 'CANCELLED_PREPARING'
                    ELSE 'REFUNDED' END AS outcome,
               ['ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'COLD', 'COLD',
                'FROZEN'][1 + (h('dt', o) % 10)::INT] AS delivery_type,
               {_sql_list(PAYMENT_METHODS)}[1 + (h('pm', o) % {len(PAYMENT_METHODS)})::INT]
                   AS method,
               declined_first, paid_us,
               paid_us + prep_after AS preparing_us,
               paid_us + prep_after + ship_after AS shipping_us,
               paid_us + prep_after + ship_after + dlv_after AS delivered_us,
               paid_us + prep_after + ship_after + dlv_after + refund_after AS refunded_us,
               CASE WHEN f < 860 OR f >= 940 THEN NULL
                    WHEN f < 890 THEN t_us + cancel_after
                    WHEN f < 920 THEN paid_us + least(cancel_after, prep_after - {US})
                    ELSE paid_us + prep_after + least(cancel_after, ship_after - {US})
               END AS cancelled_us,
               -- members order only once they exist
               printf('{ids.user}%06d', 1 + (h('ou', o) % greatest(1, least({buyers},
                   (t_us - {u_start}) // {u_step})))::BIGINT) AS user_id
        FROM fate""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_lines AS
        SELECT o.o, o.order_id, l.line_no, pr.product_id, pr.category, pr.price AS unit_price,
               (CASE WHEN h('q', o.o * 8 + l.line_no) % 10 < 8 THEN 1
                     ELSE 2 + h('q2', o.o * 8 + l.line_no) % 3 END)::INT AS quantity
        FROM w_orders o
        JOIN range(1, 5) l(line_no) ON l.line_no <= o.n_lines
        JOIN w_products pr ON pr.p = (h('lp', o.o * 8 + l.line_no) % {products})::BIGINT""")
    con.execute("""
        ALTER TABLE w_orders ADD COLUMN total_amount DECIMAL(14, 2);
        UPDATE w_orders SET total_amount = s.total FROM (
            SELECT o, sum(quantity * unit_price)::DECIMAL(14, 2) AS total FROM w_lines GROUP BY o
        ) s WHERE s.o = w_orders.o""")


def _changes(con: duckdb.DuckDBPyConnection, w: World) -> None:
    """Every version of every shop row, then the raw change rows (``w_changes``)."""
    world_end = w.end_us
    buyers = int(w.users * 0.9)
    ids = w.ids
    # tx_kind orders transactions that commit in the same microsecond; tbl_rank and sub the
    # changes inside one transaction (an order before its lines, its payment last).
    order_row = """json_object('order_id', order_id, 'user_id', user_id, 'status', {status},
        'delivery_type', delivery_type, 'total_amount', total_amount::VARCHAR,
        'created_at', pg_ts(t_us), 'updated_at', pg_ts({ts}))"""
    payment_id = f"printf('{ids.payment}%010d', 2 * o + 1)"
    payment_row = f"""json_object('payment_id', {payment_id}, 'order_id', order_id,
        'method', method, 'amount', total_amount::VARCHAR, 'status', {{status}},
        'paid_at', pg_ts(paid_us), 'refunded_at', {{refunded}})"""
    failed_id = f"printf('{ids.payment}%010d', 2 * o + 2)"
    # One status step of an order: (status, the column holding its time, which orders).
    steps = [
        ("PAID", "paid_us", "outcome <> 'CANCELLED_PENDING'", "2"),
        (
            "PREPARING",
            "preparing_us",
            "outcome NOT IN ('CANCELLED_PENDING', 'CANCELLED_PAID')",
            "1",
        ),
        ("SHIPPING", "shipping_us", "outcome IN ('DELIVERED', 'REFUNDED')", "1"),
        ("DELIVERED", "delivered_us", "outcome IN ('DELIVERED', 'REFUNDED')", "1"),
        (
            "CANCELLED",
            "cancelled_us",
            "outcome LIKE 'CANCELLED%'",
            "CASE WHEN outcome = 'CANCELLED_PENDING' THEN 1 ELSE 2 END",  # + the payment
        ),
        ("REFUNDED", "refunded_us", "outcome = 'REFUNDED'", "2"),
    ]
    order_steps = "\n".join(
        f"""UNION ALL
        SELECT 'orders', order_id, {ts}, {2 if status == "PAID" else 3}, o, 1, 0, {size},
               false, false,
               json_object('order_id', order_id), NULL,
               {order_row.format(status=f"'{status}'", ts=ts)}
        FROM w_orders WHERE {where}"""
        for status, ts, where, size in steps
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW w_versions AS
        -- users: sign-up, a grade change for one in ten, and some members without orders leave
        SELECT 'users' AS tbl, user_id AS key_str, created_us AS v_ts, 4 AS tx_kind, u AS tx_ent,
               1 AS tbl_rank, 0 AS sub, 1 AS tx_size, true AS is_first, false AS is_delete,
               json_object('user_id', user_id) AS key, NULL::JSON AS before,
               json_object('user_id', user_id, 'email', email, 'name', name, 'grade', grade,
                   'created_at', pg_ts(created_us), 'updated_at', pg_ts(created_us)) AS after
        FROM w_users
        UNION ALL
        SELECT 'users', user_id, v_ts, 4, u, 1, 1, 1, false, false, json_object('user_id', user_id),
               NULL, json_object('user_id', user_id, 'email', email, 'name', name,
                   'grade', grade_later, 'created_at', pg_ts(created_us), 'updated_at', pg_ts(v_ts))
        FROM (SELECT *, created_us + (({world_end} - created_us) * (h('gu', u) % 600)
                  // 1000)::BIGINT AS v_ts FROM w_users WHERE u % 10 = 3)
        UNION ALL
        SELECT 'users', user_id, created_us + ({world_end} - created_us) * 7 // 10, 4, u, 1, 2, 1,
               false, true, json_object('user_id', user_id),
               -- replica identity default: a delete's before holds the key, the rest null
               json_object('user_id', user_id, 'email', NULL, 'name', NULL, 'grade', NULL,
                   'created_at', NULL, 'updated_at', NULL), NULL
        FROM w_users WHERE u >= {buyers} AND u % 20 = 0
        UNION ALL
        -- products: in the catalogue before the start, then restocked four times
        SELECT 'products', product_id, v_ts, 5, p, 1, k, 1, k = 0, false,
               json_object('product_id', product_id), NULL,
               json_object('product_id', product_id, 'name', name, 'category', category,
                   'storage_type', storage_type, 'price', price::VARCHAR,
                   'stock', (100 + h('stock', p * 8 + k) % 500)::BIGINT, 'updated_at', pg_ts(v_ts))
        FROM (SELECT *, CASE WHEN k = 0 THEN {w.start_us - 30 * DAY_US}
                   ELSE {w.start_us} + (k - 1) * {(world_end - w.start_us) // 4}
                        + (h('restock', p * 8 + k) % {max(1, (world_end - w.start_us) // 4)})
                          ::BIGINT
                   END AS v_ts
              FROM w_products, range(5) r(k))
        UNION ALL
        -- orders: placed (PENDING) with their lines, then each status step
        SELECT 'orders', order_id, t_us, 1, o, 1, 0, 1 + n_lines, true, false,
               json_object('order_id', order_id), NULL,
               {order_row.format(status="'PENDING'", ts="t_us")}
        FROM w_orders
        {order_steps}
        UNION ALL
        SELECT 'order_items', order_id || '/' || line_no, o.t_us, 1, l.o, 2, line_no,
               1 + o.n_lines, true, false,
               json_object('order_id', order_id, 'line_no', line_no), NULL,
               json_object('order_id', order_id, 'line_no', line_no, 'product_id', product_id,
                   'quantity', quantity, 'unit_price', unit_price::VARCHAR)
        FROM w_lines l JOIN w_orders o USING (o, order_id)
        UNION ALL
        -- a declined try (its own transaction, between the order and the good try)
        SELECT 'payments', {failed_id}, t_us + (paid_us - t_us) // 2, 6, o, 1, 0, 1, true, false,
               json_object('payment_id', {failed_id}), NULL,
               json_object('payment_id', {failed_id}, 'order_id', order_id, 'method', method,
                   'amount', total_amount::VARCHAR, 'status', 'FAILED', 'paid_at', NULL,
                   'refunded_at', NULL)
        FROM w_orders WHERE declined_first AND outcome <> 'CANCELLED_PENDING'
        UNION ALL
        -- paid with the order's move to PAID (one transaction)
        SELECT 'payments', {payment_id}, paid_us, 2, o, 3, 0, 2, true, false,
               json_object('payment_id', {payment_id}), NULL,
               {payment_row.format(status="'PAID'", refunded="NULL")}
        FROM w_orders WHERE outcome <> 'CANCELLED_PENDING'
        UNION ALL
        -- settled with the cancellation or the refund (one transaction with the order's move)
        SELECT 'payments', {payment_id}, coalesce(cancelled_us, refunded_us), 3, o, 3, 0, 2, false,
               false, json_object('payment_id', {payment_id}), NULL,
               {
        payment_row.format(
            status="CASE WHEN outcome = 'REFUNDED' THEN 'REFUNDED' ELSE 'CANCELLED' END",
            refunded="pg_ts(coalesce(cancelled_us, refunded_us))",
        )
    }
        FROM w_orders WHERE outcome IN ('CANCELLED_PAID', 'CANCELLED_PREPARING', 'REFUNDED')""")
    # Only what happened before the world's end; the versions the snapshot saw collapse into
    # one 'r' row per live key; later ones become transactions with increasing commit LSNs.
    base = w.lsn_base
    snapshot = w.snapshot_us if w.snapshot_us is not None else w.start_us - 400 * DAY_US
    # Versions are a view (their JSON is built only when written); the numbering sorts only
    # the narrow columns that place a change (time, transaction, position in it), with an
    # ORDER BY, which spills to disk, into a table whose row ids then count the changes (a
    # window over millions of rows would not stay inside the warehouse's memory limit).
    # A change's place in its transaction follows from its table's rank (an order, then its
    # lines, then its payment), so its transaction's first and last change need no window
    # either. A transaction's changes are numbered from 1; its commit LSN is its last one's.
    order = "v_ts, tx_kind, tx_ent, tbl_rank, sub"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_num AS
        SELECT tbl, {order}, tx_size FROM w_versions
        WHERE v_ts > {snapshot} AND v_ts < {world_end}
        ORDER BY {order}""")
    numbered = """
        SELECT *, g - (CASE tbl_rank WHEN 2 THEN 1 + sub WHEN 3 THEN 2 ELSE 1 END) + 1
                   AS first_g
        FROM (SELECT tbl, v_ts, tx_kind, tx_ent, tbl_rank, sub, tx_size AS n_changes,
                     rowid + 1 AS g FROM w_num)"""
    stream = f"""
        SELECT tbl, printf('%016X-%08d', {base} + first_g + n_changes - 1, g - first_g + 1)
                   AS change_id,
               CASE WHEN is_delete THEN 'd' WHEN is_first THEN 'c' ELSE 'u' END AS op,
               {base} + g AS lsn, 700 + first_g AS tx_id, v_ts AS commit_us, key, before,
               after, 'false' AS snapshot
        FROM w_versions JOIN ({numbered}) USING (tbl, {order})"""
    snap = f"""
        SELECT tbl, printf('%016X-r%08d', {base}::BIGINT,
                   row_number() OVER (PARTITION BY tbl ORDER BY key_str)),
               'r', {base}::BIGINT, NULL::BIGINT, {snapshot}::BIGINT, key, NULL::JSON, after,
               'true'
        FROM (SELECT * FROM w_versions WHERE v_ts <= {snapshot}
              QUALIFY row_number() OVER (
                  PARTITION BY tbl, key_str ORDER BY v_ts DESC, is_delete DESC) = 1)
        WHERE NOT is_delete"""
    # History has no snapshot: every change is streamed.
    parts = [stream] if w.snapshot_us is None else [stream, snap]  # names: the first
    con.execute(f"CREATE OR REPLACE TEMP VIEW w_changes AS {' UNION ALL '.join(parts)}")


def _events(con: duckdb.DuckDBPyConnection, w: World) -> None:
    """Clickstream rows: sessions of :data:`SESSION_STEPS`, and a purchase event for each
    order the tracker did not lose (``w_events``; ``w_raw_events`` makes raw rows of them)."""
    ids = w.ids
    purchases = int(
        con.execute(
            f"SELECT count(*) FROM w_orders WHERE h('lost', o) % 1000 >= {PURCHASE_LOSS_PER_MILLE}"
            f" AND t_us + {2 * US} < {w.end_us}"
        ).fetchone()[0]  # type: ignore[index]
    )
    others = max(len(SESSION_STEPS), w.events - purchases)
    users = max(1, int(w.users * 0.9))
    u_start, u_end = w.user_span
    u_step = max(1, (u_end - u_start) // w.users)
    steps = _sql_list(SESSION_STEPS)
    n_steps = len(SESSION_STEPS)
    # Events in time order by row number, so a session's steps stay together in time.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_event_times AS
        WITH e AS (SELECT i, {_quantile("et", "i", others)} AS q FROM range({others}) r(i))
        SELECT e.i, {_place("et", "e.i", others)} AS ts_us
        FROM e ASOF JOIN w_hours hr ON e.q >= hr.lo""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_session_start AS
        SELECT i // {n_steps} AS s, ts_us FROM w_event_times WHERE i % {n_steps} = 0
        ORDER BY ts_us""")
    # Session-level fields, once per session; its member had signed up by its start.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_sessions AS
        SELECT s, ts_us, uid('a', s) AS anonymous_id, uid('s', s) AS session_id,
               {_sql_list(DEVICES)}[1 + (h('dev', s) % 4)::INT] AS device_type,
               CASE WHEN h('login', s) % 3 <> 0
                    THEN printf('{ids.user}%06d', 1 + h('su', s) % greatest(1, least({users},
                        (ts_us - {u_start}) // {u_step}))) -- signed up by then
               END AS user_id,
               CASE WHEN s % 5 = 0 THEN 'naver' END AS utm_source,
               CASE WHEN s % 5 = 0 THEN 'cpc' END AS utm_medium,
               CASE WHEN s % 5 = 0 THEN 'spring_sale' END AS utm_campaign,
               '203.0.' || (s % 200) || '.' || (h('ip', s) % 250) AS ip,
               CASE WHEN h('bot', s) % 100 = 0
                    THEN 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
                    WHEN h('dev', s) % 4 < 2 THEN 'shopstream-app/4.2 (mobile)'
                    ELSE 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
                         || 'Chrome/126.0 Safari/537.36'
               END AS user_agent
        FROM w_session_start""")
    product_props = (
        "json_object('product_id', p.product_id, 'name', p.name, 'category', p.category, "
        "'price', p.price::BIGINT::VARCHAR"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW w_events AS
        WITH e AS (
            SELECT t.i, t.i // {n_steps} AS s, {steps}[1 + t.i % {n_steps}] AS event_type,
                   t.ts_us, (h('ep', t.i) % {w.products})::BIGINT AS p
            FROM w_event_times t
        )
        SELECT 'e' || i AS id_tag, e.event_type, e.ts_us, e.s,
               CASE WHEN e.event_type IN ('product_view', 'product_click', 'add_to_cart',
                                          'remove_from_cart')
                    THEN 'https://shop.example/products/' || p.product_id
                    WHEN e.event_type = 'begin_checkout' THEN 'https://shop.example/checkout'
                    WHEN e.event_type IN ('search', 'search_click')
                    THEN 'https://shop.example/search?q=' || p.category
                    ELSE 'https://shop.example/' END AS page_url,
               CASE e.event_type
                   WHEN 'page_view' THEN '{{"page_title":"shopstream","page_type":"home"}}'::JSON
                   WHEN 'product_view' THEN {product_props})
                   WHEN 'product_click' THEN {product_props},
                       'list_name', p.category, 'position', (h('pos', i) % 20)::BIGINT)
                   WHEN 'add_to_cart' THEN {product_props},
                       'quantity', 1 + (h('q', i) % 3)::BIGINT,
                       'cart_id', 'cart-' || substr(ss.session_id, 1, 8))
                   WHEN 'remove_from_cart' THEN {product_props},
                       'quantity', 1::BIGINT, 'cart_id', 'cart-' || substr(ss.session_id, 1, 8))
                   WHEN 'search' THEN json_object('query', p.category,
                       'results_count', (h('rc', i) % 40)::BIGINT)
                   WHEN 'search_click' THEN json_object('query', p.category,
                       'product_id', p.product_id, 'position', (h('pos', i) % 5)::BIGINT)
                   WHEN 'begin_checkout' THEN json_object('cart_id',
                       'cart-' || substr(ss.session_id, 1, 8),
                       'cart_value', (p.price::BIGINT * 2)::VARCHAR, 'items_count', 2::BIGINT,
                       'currency', 'KRW')
               END AS properties,
               ss.user_id
        FROM e JOIN w_products p USING (p) JOIN w_sessions ss USING (s)
        UNION ALL
        -- the purchase event of an order, fired by the checkout page just after the order,
        -- in the session running at that time
        SELECT 'p' || o.o, 'purchase', o.t_us + 2 * {US}, coalesce(st.s, 0),
               'https://shop.example/orders/' || o.order_id || '/complete',
               json_object('order_id', o.order_id, 'revenue', o.total_amount::BIGINT::VARCHAR,
                   'currency', 'KRW', 'items', items,
                   'shipping', CASE WHEN o.total_amount >= 30000 THEN '0' ELSE '3000' END),
               o.user_id
        FROM (SELECT * FROM w_orders
              WHERE h('lost', o) % 1000 >= {PURCHASE_LOSS_PER_MILLE}
                AND t_us + {2 * US} < {w.end_us}) o
        ASOF LEFT JOIN w_session_start st ON o.t_us + {2 * US} >= st.ts_us
        JOIN (
            SELECT o, list(json_object('product_id', product_id, 'quantity', quantity::BIGINT,
                       'price', unit_price::BIGINT::VARCHAR, 'category', category) ORDER BY line_no)
                       AS items
            FROM w_lines GROUP BY o
        ) l USING (o)""")
    # Received 0.1-3 s after they happened. A view: the rows are built as they are inserted
    # (millions of payloads would not fit in memory twice); filters on received_us reach the
    # timestamps before any JSON is built.
    # The benchmark's increment: one in twenty events received after ``late_after_us`` was
    # sent two days after it happened (still inside the transform's lookback).
    late = (
        "0::BIGINT"
        if w.late_after_us is None
        else f"CASE WHEN received_us > {w.late_after_us} AND h('late', id_tag) % 20 = 0 "
        f"THEN {2 * DAY_US} ELSE 0 END"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW w_raw_events AS
        SELECT uid(w.id_tag, 0) AS event_id, w.event_type, NULL AS event_name,
               tstz(w.ts_us - late_us) AS event_ts, tstz(received_us) AS received_at,
               make_timestamp(w.ts_us - late_us)::DATE AS event_date,
               w.user_id, ss.anonymous_id, ss.session_id, ss.device_type, w.page_url,
               NULL AS referrer, ss.utm_source, ss.utm_medium, ss.utm_campaign, ss.ip,
               ss.user_agent, 'native' AS source, w.properties,
               json_object('event_id', uid(w.id_tag, 0), 'event_type', w.event_type,
                   'event_ts', pg_ts(w.ts_us - late_us), 'user_id', w.user_id,
                   'anonymous_id', ss.anonymous_id, 'session_id', ss.session_id,
                   'device_type', ss.device_type, 'page_url', w.page_url,
                   'utm_source', ss.utm_source, 'utm_medium', ss.utm_medium,
                   'utm_campaign', ss.utm_campaign, 'properties', w.properties) AS payload,
               received_us, w.id_tag
        FROM (SELECT *, {late} AS late_us FROM (
                  SELECT *, ts_us + 100000 + (h('rx', id_tag) % 2900000)::BIGINT AS received_us
                  FROM w_events)) w
        JOIN w_sessions ss USING (s)""")


def _dead_letters(con: duckdb.DuckDBPyConnection, w: World) -> None:
    """A normal trickle of refused events (``w_dead_letters``), spread like the traffic."""
    kinds = DEAD_LETTER_KINDS
    codes = _sql_list(tuple(str(k[0]) for k in kinds))
    reasons = "[" + ", ".join("'" + k[1].replace("'", "''") + "'" for k in kinds) + "]"
    defects = _sql_list(tuple(k[2] for k in kinds))
    n = w.dead_letters
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW w_dead_letters AS
        WITH d AS (
            SELECT n, {_quantile("dl", "n", n)} AS q, 1 + (h('dk', n) % {len(kinds)})::INT AS k
            FROM range({n}) r(n)
        ), placed AS (
            SELECT d.n, d.k, {_place("dl", "d.n", n)} AS received_us
            FROM d ASOF JOIN w_hours hr ON d.q >= hr.lo
        ), sent AS (
            SELECT *, {defects}[k] AS defect, uid('dle', n) AS event_id,
                   received_us - 100000 - (h('dlt', n) % 2000000)::BIGINT AS ts_us,
                   '198.51.' || (n % 200) || '.' || (h('dli', n) % 250) AS ip
            FROM placed
        )
        SELECT uid('dl', n) AS dead_letter_id, 'collector' AS source, {reasons}[k] AS reason,
               json_object(
                   'event_id', event_id,
                   'event_type', CASE defect WHEN 'typo' THEN 'page_veiw' ELSE 'page_view' END,
                   'event_ts', CASE defect WHEN 'no_ts' THEN NULL
                       WHEN 'future' THEN pg_ts(ts_us + {2 * HOUR_US})
                       WHEN 'old' THEN pg_ts(ts_us - {9 * DAY_US}) ELSE pg_ts(ts_us) END,
                   'anonymous_id', uid('dla', n),
                   'session_id', CASE defect WHEN 'bad_session' THEN NULL
                       ELSE uid('dls', n) END,
                   'device_type', 'web_mobile', 'page_url', 'https://shop.example/',
                   'properties', json_object('page_title', 'shopstream'))::VARCHAR AS payload,
               json_object('index', (h('dlx', n) % 20)::BIGINT, 'route', '/v1/events',
                   'code', {codes}[k], 'source', 'native', 'ip', ip) AS context,
               tstz(received_us) AS received_at, received_us
        FROM sent""")


# -- writing into raw ---------------------------------------------------------------------------


def cdc_select(table: str, where: str = "true") -> str:
    """SELECT of ``w_changes`` rows of ``table`` as raw.cdc_<table> rows (the reader's
    ``source`` block and its commit-to-durable delay), where ``where`` (on commit_us)."""
    return f"""
        SELECT change_id, op, lsn, tx_id, tstz(commit_us), make_timestamp(commit_us)::DATE,
               key, before, after,
               '{{"version":"shopstream","connector":"postgresql","name":"shopstream",'
               || '"db":"shop","schema":"public","table":"{table}","ts_ms":'
               || (commit_us // 1000) || ',"snapshot":"' || snapshot || '","txId":'
               || coalesce(tx_id::VARCHAR, 'null') || ',"lsn":' || lsn || '}}',
               tstz(commit_us + 40000 + h('ing', lsn) % 200000)
        FROM w_changes WHERE tbl = '{table}' AND {where}"""


#: Columns of w_raw_events that are raw.events' (the rest help the generator).
def events_columns() -> str:
    return ", ".join(schema_for("events").names)


def source_schema_rows(first_lsn: int, recorded_at: datetime) -> list[tuple[Any, ...]]:
    """Version 1 of each shop table, as the reader records it."""
    return [
        (
            f"cdc_{table}",
            "public",
            table,
            1,
            fingerprint(columns, key),
            orjson.dumps(columns).decode(),
            orjson.dumps(key).decode(),
            "default",
            first_lsn,
            recorded_at,
        )
        for table, (columns, key) in shop_columns().items()
    ]


def history_present(con: duckdb.DuckDBPyConnection) -> int:
    """Rows of earlier history in raw (its users' and orders' change rows), 0 when none."""
    total = 0
    for table, column, prefix in (("cdc_users", "user_id", "UH"), ("cdc_orders", "order_id", "OH")):
        if not _exists(con, table):
            continue
        row = con.execute(
            f"SELECT count(*) FROM raw.{table} WHERE key->>'{column}' LIKE '{prefix}%'"
        ).fetchone()
        total += int(row[0]) if row else 0
    return total


def oldest_raw(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The oldest instant anything in raw happened or landed (None: raw is empty)."""
    parts = []
    if _exists(con, "events"):
        parts.append("SELECT least(min(event_ts), min(received_at)) AS t FROM raw.events")
    if _exists(con, "dead_letter"):
        parts.append("SELECT min(received_at) FROM raw.dead_letter")
    for table in SHOP_TABLES:
        if _exists(con, f"cdc_{table}"):
            parts.append(f"SELECT least(min(commit_ts), min(ingested_at)) FROM raw.cdc_{table}")
    if not parts:
        return None
    row = con.execute(f"SELECT min(t) FROM ({' UNION ALL '.join(parts)}) u(t)").fetchone()
    value = row[0] if row else None
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def _exists(con: duckdb.DuckDBPyConnection, table: str, schema: str = "raw") -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? "
        "AND NOT temporary",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def write_history(
    con: duckdb.DuckDBPyConnection,
    plan: HistoryPlan,
    progress: Callable[[str], None] | None = None,
) -> HistorySummary:
    """Write ``plan``'s history into raw through ``con`` (a connection to the warehouse; the
    raw tables are created with the warehouse's DDL when missing). Writes nothing, and says
    why in ``skipped``, when raw already holds history."""
    import time

    began = time.perf_counter()
    plan = plan.validated()
    say = progress or (lambda _: None)
    create_raw(con)
    if history_present(con):
        return HistorySummary(
            {}, plan.start, plan.end, 0.0, "raw already holds history (UH/OH rows); nothing written"
        )
    world = world_for_plan(plan)
    try:
        build(con, world, say)
        rows = _estimated_changes(con)
        if world.lsn_base + rows >= HISTORY_LSN_LIMIT:
            raise ValueError(
                f"{rows:,} change rows would not fit below LSN 0x1000000; plan fewer orders or days"
            )
        written: dict[str, int] = {}
        con.execute("BEGIN TRANSACTION")
        try:
            for table in SHOP_TABLES:
                say(f"cdc_{table}")
                written[f"cdc_{table}"] = _insert(
                    con, f"raw.cdc_{table}", cdc_select(table, f"commit_us < {world.end_us}")
                )
            say("events")
            written["events"] = _insert(
                con,
                "raw.events",
                f"SELECT {events_columns()} FROM w_raw_events WHERE received_us < {world.end_us}",
            )
            say("dead_letter")
            written["dead_letter"] = _insert(
                con,
                "raw.dead_letter",
                "SELECT dead_letter_id, source, reason, payload, context, received_at "
                f"FROM w_dead_letters WHERE received_us < {world.end_us}",
            )
            recorded = {
                r[0] for r in con.execute("SELECT raw_table FROM raw.source_schemas").fetchall()
            }
            schema_rows = [
                r
                for r in source_schema_rows(world.lsn_base, plan.start - timedelta(days=31))
                if r[0] not in recorded  # the reader's own record stands
            ]
            if schema_rows:
                con.executemany(
                    "INSERT INTO raw.source_schemas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    schema_rows,
                )
            written["source_schemas"] = len(schema_rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        cleanup(con)
    return HistorySummary(written, plan.start, plan.end, time.perf_counter() - began)


# -- the command: in the process that holds the warehouse ---------------------------------------


@dataclass(frozen=True)
class HistoryRequest:
    """What ``shopstream generate-history`` asks for (picklable: it may cross to the owner).
    ``end`` None: now, or the oldest instant in raw when raw holds data."""

    days: int
    end: datetime | None = None
    events_per_day: int = HistoryPlan.events_per_day
    orders_per_day: int = HistoryPlan.orders_per_day
    seed: int = HistoryPlan.seed
    timezone: str = "UTC"


def plan_for(con: duckdb.DuckDBPyConnection, request: HistoryRequest) -> HistoryPlan:
    """The plan of ``request`` on this warehouse: history ends where raw's data begins."""
    end = request.end
    if end is None:
        oldest = oldest_raw(con)
        end = oldest if oldest is not None else _now_hour()
    return HistoryPlan(
        days=request.days,
        end=end,
        events_per_day=request.events_per_day,
        orders_per_day=request.orders_per_day,
        seed=request.seed,
        timezone=request.timezone,
    ).validated()


def history_job(warehouse: Any, request: HistoryRequest, emit: Callable[[Any], None]) -> Any:
    """Owner job (``warehouse.run_in_owner("shopstream.generators.history:history_job", ...)``):
    write history on a connection sharing the warehouse's DuckDB instance."""
    path = getattr(warehouse, "path", None)
    config = getattr(warehouse, "connect_config", None)
    if path is None or config is None:
        raise ValueError("generate-history writes into a DuckDB warehouse only")
    con = duckdb.connect(str(path), config=config)
    try:
        plan = plan_for(con, request)
        emit(f"history {plan.start.isoformat()} -> {plan.end.isoformat()}")
        return write_history(con, plan, emit)
    finally:
        con.close()


def generate_history(
    settings: Any, request: HistoryRequest, on_progress: Callable[[Any], None] | None = None
) -> HistorySummary:
    """``shopstream generate-history``: open the warehouse here (a running platform holding
    it is an error: stop it first), write history, close it. Raises WarehouseError."""
    from shopstream.config import SinkSettings
    from shopstream.warehouse import WarehouseError, WarehouseInUse, open_warehouse

    if not settings.warehouse.startswith("duckdb"):
        raise WarehouseError(
            f"generate-history writes into a DuckDB warehouse only; {settings.warehouse} is not "
            "one (set SHOPSTREAM_WAREHOUSE_URL to a duckdb:/// URL, or leave it unset)"
        )
    # In this process: no writer process of its own for a one-off job.
    here = settings.model_copy(
        update={"sink": SinkSettings(**{**settings.sink.model_dump(), "writer_process": False})}
    )
    try:
        warehouse = open_warehouse(here)
    except WarehouseInUse as exc:
        raise WarehouseError(
            f"{settings.warehouse} is held by a running shopstream (or another process): stop "
            "it first, then generate history (history is written before the data it holds)"
        ) from exc
    try:
        warehouse.ensure_layers()
        run_in_owner = getattr(warehouse, "run_in_owner", None)
        if run_in_owner is None:
            raise WarehouseError(f"{settings.warehouse}: this warehouse cannot run jobs here")
        answer = run_in_owner(
            "shopstream.generators.history:history_job", request, on_progress or (lambda _: None)
        )
    finally:
        warehouse.close()
    if not isinstance(answer, HistorySummary):  # pragma: no cover - a wrong job answer
        raise WarehouseError(f"history job answered {type(answer).__name__}, not a summary")
    return answer


def _estimated_changes(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM w_num").fetchone()
    return int(row[0]) if row else 0


def _insert(con: duckdb.DuckDBPyConnection, table: str, select: str) -> int:
    row = con.execute(f"INSERT INTO {table} {select}").fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "DAY_US",
    "HISTORY_LSN_LIMIT",
    "LIVE_IDS",
    "US",
    "HistoryPlan",
    "HistoryRequest",
    "HistorySummary",
    "Ids",
    "World",
    "build",
    "cdc_select",
    "cleanup",
    "create_raw",
    "events_columns",
    "fingerprint",
    "flat_weights",
    "generate_history",
    "history_job",
    "history_present",
    "hour_weights",
    "oldest_raw",
    "raw_tables",
    "shop_columns",
    "source_schema_rows",
    "write_history",
]
