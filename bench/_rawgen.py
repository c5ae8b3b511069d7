"""Raw data for the transform benchmark, generated straight into DuckDB with SQL.

Millions of rows through HTTP and CDC would take hours; the transform benchmark measures the
transform, so its data is written as the collector and the CDC reader would have written it:

- ``raw.events``: the collector's columns (``shopstream.events.raw.RAW_EVENTS``), properties
  shaped like ``shopstream.generators.clickstream`` (product_view / add_to_cart /
  begin_checkout / purchase with product_id, price, quantity, order_id, revenue, items);
  purchase events name real orders (``properties.order_id`` = ``orders.order_id``, revenue =
  sum of price * quantity of the items), and 2% of purchases are lost as ad blockers lose them.
- ``raw.cdc_users``, ``cdc_products``, ``cdc_orders``, ``cdc_order_items``, ``cdc_payments``:
  change rows in the reader's Debezium encodings: a snapshot (``op`` 'r', change ids
  ``<LSN>-r<position>``, ``source.snapshot`` "true") of the state at the snapshot time, then
  transactions of 'c' / 'u' / 'd' rows (orders placed with their lines, paid, moved to their
  final status; payments cancelled and refunded; stock changes; grade changes; members without
  orders leaving), keyed by commit LSN and position. Updates and deletes carry no full
  ``before`` (replica identity default: a delete's ``before`` has only the key).
- ``raw.source_schemas``: one version per table, read from the shop's DDL
  (``shopstream.generators.shop.SHOP_DDL``), plus one re-sent duplicate (at-least-once).

One world is generated over ``[start, now]``; what happened up to ``end`` goes into raw at once,
the rest (the last ~1%: new orders, their changes, status changes of older orders, new events,
a few late events and re-sent duplicates) waits in a side file until :func:`append_increment`.
Everything is derived from ``hash(seed, ...)`` of row numbers, so a scale is reproducible.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from shopstream.events.raw import schema_for
from shopstream.generators.products import CATEGORIES, GRADES
from shopstream.generators.shop import PAYMENT_METHODS, SHOP_DDL, SHOP_TABLES
from shopstream.warehouse.duckdb.database import raw_table_ddl

US = 1_000_000
DAY_US = 86_400 * US
#: Share of purchase events lost on the way (ad blockers); the generators' default.
PURCHASE_LOSS_PER_MILLE = 20
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

# The raw.source_schemas contract (DESIGN / brief of issue 8); used where the warehouse does
# not define the table itself yet.
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


@dataclass(frozen=True)
class Scale:
    """How much to generate; the default is the benchmark's 10M events / 1M orders."""

    events: int = 10_000_000
    orders: int = 1_000_000
    days: int = 90
    #: New data appended before the incremental run, as a share of the full load.
    increment: float = 0.01
    seed: int = 8

    @property
    def users(self) -> int:
        return max(200, self.orders // 4)

    @property
    def products(self) -> int:
        return max(50, min(5_000, self.orders // 200))


@dataclass(frozen=True)
class Timeline:
    start_us: int  # first order / event
    snapshot_us: int  # the CDC snapshot: older history collapses into 'r' rows
    end_us: int  # what the full load holds (commit_ts / received_at <= end)
    now_us: int  # the increment's end

    @classmethod
    def for_scale(cls, scale: Scale, now: datetime) -> Timeline:
        now_us = int(now.timestamp()) * US
        span = scale.days * DAY_US
        world = int(span * (1 + scale.increment))
        start = now_us - world
        return cls(start, start + span // 5, start + span, now_us)


@dataclass
class Generated:
    rows: dict[str, int]  # raw table -> rows loaded now
    pending: dict[str, int]  # raw table -> rows waiting for the increment
    timeline: Timeline
    consistent_lsn: int


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


def _macros(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    # Bounded, so a 10M-event world spills to disk instead of crowding the machine out.
    con.execute("SET memory_limit = '4GB'")
    # timestamptz as the reader encodes it: UTC, PostgreSQL's fraction digits, trailing Z.
    con.execute(
        "CREATE OR REPLACE TEMP MACRO pg_ts(us) AS "
        "strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S') || CASE WHEN us % 1000000 = 0 "
        "THEN '' ELSE '.' || rtrim(lpad((us % 1000000)::VARCHAR, 6, '0'), '0') END || 'Z'"
    )
    con.execute(f"CREATE OR REPLACE TEMP MACRO h(tag, n) AS (hash({seed}, tag, n) >> 1)::BIGINT")
    # A uuid-looking id from a hash: deterministic, distinct per (tag, n).
    con.execute(
        "CREATE OR REPLACE TEMP MACRO uid(tag, n) AS regexp_replace("
        f"md5({seed}::VARCHAR || tag || n::VARCHAR), "
        r"'^(.{8})(.{4}).(.{3}).(.{3})(.{12})$', '\1-\2-4\3-a\4-\5')"
    )


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def generate(
    path: Path, pending_path: Path, scale: Scale, now: datetime | None = None
) -> Generated:
    """Write a fresh warehouse at ``path`` (raw tables filled up to ``end``) and the increment
    into ``pending_path``."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    t = Timeline.for_scale(scale, now)
    for p in (path, pending_path):
        for f in (p, p.with_name(p.name + ".wal")):
            f.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{pending_path}' AS pending")
        create_raw(con, "raw")
        create_raw(con, "pending.main")
        _macros(con, scale.seed)
        _world(con, scale, t)
        consistent_lsn = _changes(con, scale, t)
        _events(con, scale, t)
        _source_schemas(con, t, consistent_lsn)
        rows = _split(con, t)
        con.execute("DETACH pending")
        con.execute("CHECKPOINT")
        counts = {
            table: int(con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0])  # type: ignore[index]
            for table in [*raw_tables(), "source_schemas"]
        }
    finally:
        con.close()
    return Generated(counts, rows, t, consistent_lsn)


def _world(con: duckdb.DuckDBPyConnection, s: Scale, t: Timeline) -> None:
    """Users, products, orders and lines of the whole world (up to ``now``)."""
    world_orders = int(s.orders * (1 + s.increment))
    step = (t.now_us - t.start_us) // world_orders
    users, products = s.users, s.products
    u_start = t.start_us - 365 * DAY_US
    u_end = t.start_us + (t.end_us - t.start_us) // 2
    buyers = int(users * 0.9)  # the rest never order: some of them leave (deletes)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_users AS
        SELECT u, printf('U%06d', u + 1) AS user_id,
               'member' || (u + 1) || '@shop.example' AS email,
               'Member ' || (u + 1) AS name,
               {_sql_list(GRADES)}[1 + (h('grade', u) % 4)::INT] AS grade,
               {_sql_list(GRADES)}[least(4, 2 + (h('grade', u) % 4)::INT)] AS grade_later,
               {u_start} + u * {(u_end - u_start) // users} + (h('uc', u) % 1000000)::BIGINT
                   AS created_us
        FROM range({users}) r(u)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_products AS
        SELECT p, printf('P%06d', p + 1) AS product_id,
               {_sql_list(CATEGORIES)}[1 + p % {len(CATEGORIES)}] AS category,
               CASE WHEN {_sql_list(CATEGORIES)}[1 + p % {len(CATEGORIES)}] = 'food'
                    THEN ['ROOM', 'COLD', 'FROZEN'][1 + (p // {len(CATEGORIES)}) % 3]
                    ELSE 'ROOM' END AS storage_type,
               (2900 + (h('price', p) % 1500) * 100)::DECIMAL(12, 2) AS price
        FROM range({products}) r(p)""")
    con.execute("""
        ALTER TABLE w_products ADD COLUMN name VARCHAR;
        UPDATE w_products SET name = upper(category[1]) || category[2:] || ' item ' || (p + 1)""")
    # An order's final status, by per-mille: most are delivered; some cancelled or refunded;
    # the newest are still on their way.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_orders AS
        SELECT o, printf('O%010d', o + 1) AS order_id,
               {t.start_us} + o * {step} + (h('ot', o) % {step})::BIGINT AS t_us,
               1 + (h('lines', o) % 4)::INT AS n_lines,
               CASE WHEN h('st', o) % 1000 < 840 THEN 'DELIVERED'
                    WHEN h('st', o) % 1000 < 920 THEN 'CANCELLED'
                    WHEN h('st', o) % 1000 < 960 THEN 'REFUNDED'
                    WHEN h('st', o) % 1000 < 980 THEN 'SHIPPING'
                    WHEN h('st', o) % 1000 < 990 THEN 'PREPARING'
                    WHEN h('st', o) % 1000 < 995 THEN 'PAID'
                    ELSE 'PENDING' END AS final_status,
               ['ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'ROOM', 'COLD', 'COLD',
                'FROZEN'][1 + (h('dt', o) % 10)::INT] AS delivery_type,
               {_sql_list(PAYMENT_METHODS)}[1 + (h('pm', o) % {len(PAYMENT_METHODS)})::INT]
                   AS method,
               {3600 * US}::BIGINT + (h('fin', o) % {7 * DAY_US})::BIGINT AS final_after_us
        FROM range({world_orders}) r(o)""")
    # Members order only once they exist.
    con.execute(f"""
        ALTER TABLE w_orders ADD COLUMN user_id VARCHAR;
        UPDATE w_orders SET user_id = printf('U%06d', 1 + (h('ou', o) % greatest(1, least(
            {buyers}, (t_us - {u_start}) // {(u_end - u_start) // users})))::BIGINT)""")
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


def _changes(con: duckdb.DuckDBPyConnection, s: Scale, t: Timeline) -> int:
    """Every version of every shop row, then the raw change rows; returns the snapshot LSN."""
    paid_after = 30 * US
    world_end = t.now_us
    buyers = int(s.users * 0.9)
    # tx_kind orders transactions that commit in the same microsecond; tbl_rank and sub the
    # changes inside one transaction (an order before its lines, its payment last).
    order_row = """json_object('order_id', order_id, 'user_id', user_id, 'status', {status},
        'delivery_type', delivery_type, 'total_amount', total_amount::VARCHAR,
        'created_at', pg_ts(t_us), 'updated_at', pg_ts({ts}))"""
    payment_row = """json_object('payment_id', printf('PAY%010d', o + 1), 'order_id', order_id,
        'method', method, 'amount', total_amount::VARCHAR, 'status', {status},
        'paid_at', pg_ts(t_us + {paid}), 'refunded_at', {refunded})"""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_versions AS
        -- users: sign-up, a grade change for one in ten, and some members without orders leave
        SELECT 'users' AS tbl, user_id AS key_str, created_us AS v_ts, 4 AS tx_kind, u AS tx_ent,
               1 AS tbl_rank, 0 AS sub, true AS is_first, false AS is_delete,
               json_object('user_id', user_id) AS key, NULL::JSON AS before,
               json_object('user_id', user_id, 'email', email, 'name', name, 'grade', grade,
                   'created_at', pg_ts(created_us), 'updated_at', pg_ts(created_us)) AS after
        FROM w_users
        UNION ALL
        SELECT 'users', user_id, v_ts, 4, u, 1, 0, false, false, json_object('user_id', user_id),
               NULL, json_object('user_id', user_id, 'email', email, 'name', name,
                   'grade', grade_later, 'created_at', pg_ts(created_us), 'updated_at', pg_ts(v_ts))
        FROM (SELECT *, created_us + (({world_end} - created_us) * (h('gu', u) % 600)
                  // 1000)::BIGINT AS v_ts FROM w_users WHERE u % 10 = 3)
        UNION ALL
        SELECT 'users', user_id, created_us + ({world_end} - created_us) * 7 // 10, 4, u, 1, 0,
               false, true, json_object('user_id', user_id),
               -- replica identity default: a delete's before holds the key, the rest null
               json_object('user_id', user_id, 'email', NULL, 'name', NULL, 'grade', NULL,
                   'created_at', NULL, 'updated_at', NULL), NULL
        FROM w_users WHERE u >= {buyers} AND u % 20 = 0
        UNION ALL
        -- products: in the catalogue before the start, then restocked four times
        SELECT 'products', product_id, v_ts, 5, p, 1, 0, k = 0, false,
               json_object('product_id', product_id), NULL,
               json_object('product_id', product_id, 'name', name, 'category', category,
                   'storage_type', storage_type, 'price', price::VARCHAR,
                   'stock', (100 + h('stock', p * 8 + k) % 500)::BIGINT, 'updated_at', pg_ts(v_ts))
        FROM (SELECT *, CASE WHEN k = 0 THEN {t.start_us - 30 * DAY_US}
                   ELSE {t.start_us} + (k - 1) * {(world_end - t.start_us) // 4}
                        + (h('restock', p * 8 + k) % {(world_end - t.start_us) // 4})::BIGINT
                   END AS v_ts
              FROM w_products, range(5) r(k))
        UNION ALL
        -- orders: placed (PENDING), paid, then their final status
        SELECT 'orders', order_id, t_us, 1, o, 1, 0, true, false,
               json_object('order_id', order_id), NULL,
               {order_row.format(status="'PENDING'", ts="t_us")}
        FROM w_orders
        UNION ALL
        SELECT 'orders', order_id, t_us + {paid_after}, 2, o, 1, 0, false, false,
               json_object('order_id', order_id), NULL,
               {order_row.format(status="'PAID'", ts=f"t_us + {paid_after}")}
        FROM w_orders WHERE final_status <> 'PENDING'
        UNION ALL
        SELECT 'orders', order_id, t_us + final_after_us, 3, o, 1, 0, false, false,
               json_object('order_id', order_id), NULL,
               {order_row.format(status="final_status", ts="t_us + final_after_us")}
        FROM w_orders WHERE final_status NOT IN ('PENDING', 'PAID')
        UNION ALL
        SELECT 'order_items', order_id || '/' || line_no, o.t_us, 1, l.o, 2, line_no, true, false,
               json_object('order_id', order_id, 'line_no', line_no), NULL,
               json_object('order_id', order_id, 'line_no', line_no, 'product_id', product_id,
                   'quantity', quantity, 'unit_price', unit_price::VARCHAR)
        FROM w_lines l JOIN w_orders o USING (o, order_id)
        UNION ALL
        SELECT 'payments', printf('PAY%010d', o + 1), t_us + {paid_after}, 2, o, 3, 0, true,
               false, json_object('payment_id', printf('PAY%010d', o + 1)), NULL,
               {payment_row.format(status="'PAID'", paid=paid_after, refunded="NULL")}
        FROM w_orders WHERE final_status <> 'PENDING'
        UNION ALL
        SELECT 'payments', printf('PAY%010d', o + 1), t_us + final_after_us, 3, o, 3, 0, false,
               false, json_object('payment_id', printf('PAY%010d', o + 1)), NULL,
               {
        payment_row.format(
            status="final_status",
            paid=paid_after,
            refunded="CASE WHEN final_status = 'REFUNDED' THEN pg_ts(t_us + final_after_us) END",
        )
    }
        FROM w_orders WHERE final_status IN ('CANCELLED', 'REFUNDED')""")
    # The versions the snapshot saw collapse into one 'r' row per live key; later ones become
    # transactions with increasing commit LSNs.
    consistent_lsn = 0x1_0000_0000
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_changes AS
        WITH snap AS (
            SELECT * FROM w_versions WHERE v_ts <= {t.snapshot_us}
            QUALIFY row_number() OVER (
                PARTITION BY tbl, key_str ORDER BY v_ts DESC, is_delete DESC) = 1
        ), stream AS (
            SELECT *, dense_rank() OVER (ORDER BY v_ts, tx_kind, tx_ent) AS txn,
                   row_number() OVER (PARTITION BY v_ts, tx_kind, tx_ent ORDER BY tbl_rank, sub)
                       AS pos
            FROM w_versions WHERE v_ts > {t.snapshot_us}
        )
        SELECT tbl, printf('%016X-r%08d', {consistent_lsn}::BIGINT,
                   row_number() OVER (PARTITION BY tbl ORDER BY key_str)) AS change_id,
               'r' AS op, {consistent_lsn}::BIGINT AS lsn, NULL::BIGINT AS tx_id,
               {t.snapshot_us}::BIGINT AS commit_us, key, NULL::JSON AS before, after,
               'true' AS snapshot
        FROM snap WHERE NOT is_delete
        UNION ALL
        SELECT tbl, printf('%016X-%08d', {consistent_lsn} + txn * 4096, pos),
               CASE WHEN is_delete THEN 'd' WHEN is_first THEN 'c' ELSE 'u' END,
               {consistent_lsn} + txn * 4096 - 2048 + pos * 8, 1000 + txn, v_ts, key,
               before, after, 'false'
        FROM stream""")
    con.execute("DROP TABLE w_versions")
    return consistent_lsn


def _events(con: duckdb.DuckDBPyConnection, s: Scale, t: Timeline) -> None:
    """Clickstream rows of the whole world: sessions of :data:`SESSION_STEPS`, and a purchase
    event for each order that the tracker did not lose."""
    world_events = int(s.events * (1 + s.increment))
    purchases = int(
        con.execute(
            f"SELECT count(*) FROM w_orders WHERE h('lost', o) % 1000 >= {PURCHASE_LOSS_PER_MILLE}"
        ).fetchone()[0]  # type: ignore[index]
    )
    others = max(len(SESSION_STEPS), world_events - purchases)
    span = t.now_us - t.start_us
    step = max(1, span // others)
    users = int(s.users * 0.9)
    steps = _sql_list(SESSION_STEPS)
    # Session-level fields, computed once per session.
    sessions = others // len(SESSION_STEPS) + 2
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_sessions AS
        SELECT s, uid('a', s) AS anonymous_id, uid('s', s) AS session_id,
               {_sql_list(DEVICES)}[1 + (h('dev', s) % 4)::INT] AS device_type,
               CASE WHEN h('login', s) % 3 <> 0
                    THEN printf('U%06d', 1 + h('su', s) % {users}) END AS user_id,
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
        FROM range({sessions}) r(s)""")
    products = s.products
    product_props = (
        "json_object('product_id', p.product_id, 'name', p.name, 'category', p.category, "
        "'price', p.price::BIGINT::VARCHAR"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE w_events AS
        WITH e AS (
            SELECT i, i // {len(SESSION_STEPS)} AS s, {steps}[1 + i % {len(SESSION_STEPS)}]
                       AS event_type,
                   {t.start_us} + i * {step} + (h('et', i) % {step})::BIGINT AS ts_us,
                   (h('ep', i) % {products})::BIGINT AS p
            FROM range({others}) r(i)
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
        -- the purchase event of an order, fired by the checkout page just after the order
        SELECT 'p' || o.o, 'purchase', o.t_us + 2 * {US},
               least({sessions - 1}, (o.t_us + 2 * {US} - {t.start_us}) // {step}
                   // {len(SESSION_STEPS)}),
               'https://shop.example/orders/' || o.order_id || '/complete',
               json_object('order_id', o.order_id, 'revenue', o.total_amount::BIGINT::VARCHAR,
                   'currency', 'KRW', 'items', items,
                   'shipping', CASE WHEN o.total_amount >= 30000 THEN '0' ELSE '3000' END),
               o.user_id
        FROM w_orders o JOIN (
            SELECT o, list(json_object('product_id', product_id, 'quantity', quantity::BIGINT,
                       'price', unit_price::BIGINT::VARCHAR, 'category', category) ORDER BY line_no)
                       AS items
            FROM w_lines GROUP BY o
        ) l USING (o)
        WHERE h('lost', o.o) % 1000 >= {PURCHASE_LOSS_PER_MILLE}""")


def _split(con: duckdb.DuckDBPyConnection, t: Timeline) -> dict[str, int]:
    """Rows up to ``end`` into raw, the rest into the pending file; returns pending counts."""
    inc = t.now_us - t.end_us
    pending: dict[str, int] = {}
    for table in SHOP_TABLES:
        for target, where in (("raw", f"<= {t.end_us}"), ("pending.main", f"> {t.end_us}")):
            con.execute(f"""
                INSERT INTO {target}.cdc_{table}
                SELECT change_id, op, lsn, tx_id, make_timestamp(commit_us)::TIMESTAMPTZ,
                       make_timestamp(commit_us)::DATE, key, before, after,
                       '{{"version":"shopstream","connector":"postgresql","name":"shopstream",'
                       || '"db":"shop","schema":"public","table":"{table}","ts_ms":'
                       || (commit_us // 1000) || ',"snapshot":"' || snapshot || '","txId":'
                       || coalesce(tx_id::VARCHAR, 'null') || ',"lsn":' || lsn || '}}',
                       -- the reader's commit-to-durable delay
                       make_timestamp(commit_us + 40000 + h('ing', lsn) % 200000)::TIMESTAMPTZ
                FROM w_changes WHERE tbl = '{table}' AND commit_us {where}
                ORDER BY change_id""")
        pending[f"cdc_{table}"] = int(
            con.execute(f"SELECT count(*) FROM pending.main.cdc_{table}").fetchone()[0]  # type: ignore[index]
        )
    # Events: received 0.1-3 s after they happened. In the increment one in twenty is late
    # (sent two days after it happened, still inside the lookback), and events received in
    # the newest ones before ``end`` are re-sent (at-least-once retries), 1% of the increment.
    received = "w.ts_us + 100000 + (h('rx', w.id_tag) % 2900000)::BIGINT"
    late = (
        f"CASE WHEN {received} > {t.end_us} AND h('late', w.id_tag) % 20 = 0 "
        f"THEN {2 * DAY_US} ELSE 0 END"
    )
    select = f"""
        SELECT uid(w.id_tag, 0) AS event_id, w.event_type, NULL AS event_name,
               make_timestamp(w.ts_us - {late})::TIMESTAMPTZ AS event_ts,
               make_timestamp({received})::TIMESTAMPTZ AS received_at,
               make_timestamp(w.ts_us - {late})::DATE AS event_date,
               w.user_id, ss.anonymous_id, ss.session_id, ss.device_type, w.page_url,
               NULL AS referrer, ss.utm_source, ss.utm_medium, ss.utm_campaign, ss.ip,
               ss.user_agent, 'native' AS source, w.properties,
               json_object('event_id', uid(w.id_tag, 0), 'event_type', w.event_type,
                   'event_ts', pg_ts(w.ts_us - {late}), 'user_id', w.user_id,
                   'anonymous_id', ss.anonymous_id, 'session_id', ss.session_id,
                   'device_type', ss.device_type, 'page_url', w.page_url,
                   'utm_source', ss.utm_source, 'utm_medium', ss.utm_medium,
                   'utm_campaign', ss.utm_campaign, 'properties', w.properties) AS payload
        FROM w_events w JOIN w_sessions ss USING (s)"""
    # A view: the rows are built as they are inserted (10M payloads would not fit in memory
    # twice); filters on received_at reach the timestamps before any JSON is built.
    con.execute(f"CREATE OR REPLACE TEMP VIEW w_raw_events AS {select}")
    con.execute(
        f"INSERT INTO raw.events SELECT * FROM w_raw_events WHERE received_at <= "
        f"make_timestamp({t.end_us})::TIMESTAMPTZ"
    )
    con.execute(f"""
        INSERT INTO pending.main.events
        SELECT * FROM w_raw_events
        WHERE received_at > make_timestamp({t.end_us})::TIMESTAMPTZ""")
    fresh = int(con.execute("SELECT count(*) FROM pending.main.events").fetchone()[0])  # type: ignore[index]
    con.execute(f"""
        INSERT INTO pending.main.events
        SELECT * REPLACE (received_at + INTERVAL '{inc // 2} microseconds' AS received_at)
        FROM (SELECT * FROM w_raw_events
              WHERE received_at <= make_timestamp({t.end_us})::TIMESTAMPTZ
                AND received_at > make_timestamp({t.end_us - DAY_US})::TIMESTAMPTZ
              ORDER BY received_at DESC LIMIT {max(3, fresh // 100)})""")
    pending["events"] = int(
        con.execute("SELECT count(*) FROM pending.main.events").fetchone()[0]  # type: ignore[index]
    )
    con.execute("DROP VIEW w_raw_events")
    return pending


def _source_schemas(con: duckdb.DuckDBPyConnection, t: Timeline, consistent_lsn: int) -> None:
    rows = []
    for table, (columns, key) in shop_columns().items():
        rows.append(
            (
                f"cdc_{table}",
                "public",
                table,
                1,
                fingerprint(columns, key),
                orjson.dumps(columns).decode(),
                orjson.dumps(key).decode(),
                "default",
                consistent_lsn,
                datetime.fromtimestamp(t.snapshot_us / US - 1, UTC),
            )
        )
    rows.append((*rows[2][:-1], datetime.fromtimestamp(t.end_us / US, UTC)))  # re-sent
    con.executemany("INSERT INTO raw.source_schemas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def append_increment(path: Path, pending_path: Path) -> dict[str, int]:
    """Move the pending rows into raw (as the collector and the reader would have appended
    them); returns rows appended per raw table."""
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{pending_path}' AS pending (READ_ONLY)")
        appended = {}
        for table in ["events", *(f"cdc_{t}" for t in SHOP_TABLES)]:
            con.execute(f"INSERT INTO raw.{table} SELECT * FROM pending.main.{table}")
            appended[table] = int(
                con.execute(f"SELECT count(*) FROM pending.main.{table}").fetchone()[0]  # type: ignore[index]
            )
        con.execute("DETACH pending")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return appended
