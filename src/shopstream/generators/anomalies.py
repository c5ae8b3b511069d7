"""Anomalies injected into raw, for the quality checks to catch.

Each ``inject_<kind>(con, ..., at=...)`` changes raw through ``con`` (a connection to the
warehouse) around the instant ``at`` and returns an :class:`Injected`: what it changed (rows,
a sample of keys, the window), so a test can assert that the check names the same thing.
Windows are whole hours (``at`` floored) unless said otherwise; event hours are judged by
``event_ts`` (the collector receives an event within seconds, so ``received_at`` falls in the
same hour but for the first seconds).

CDC rows an injector appends sort after everything in raw (LSN above the largest one there)
and are encoded like the reader's (``source`` block, ``ingested_at`` just after the commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import orjson

from shopstream.generators.history import fingerprint, shop_columns
from shopstream.generators.shop import SHOP_TABLES

#: Keys kept in :attr:`Injected.keys` (a sample, for messages and assertions).
KEY_SAMPLE = 50


@dataclass
class Injected:
    """What an injector changed."""

    kind: str
    table: str  # raw.<table> mostly changed
    rows: int  # rows added, changed or removed
    window_start: datetime
    window_end: datetime
    keys: list[str] = field(default_factory=list)  # a sample of the keys touched
    details: dict[str, Any] = field(default_factory=dict)


def _hour(at: datetime) -> tuple[datetime, datetime]:
    if at.tzinfo is None:
        raise ValueError(f"at must carry a time zone ({at})")
    start = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start, start + timedelta(hours=1)


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    row = con.execute(sql, params or []).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _keys(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[str]:
    return [str(r[0]) for r in con.execute(sql, params or []).fetchmany(KEY_SAMPLE)]


# A uuid-looking id from text (deterministic: an injection is reproducible).
_UID = (
    "regexp_replace(md5({text}), '^(.{{8}})(.{{4}}).(.{{3}}).(.{{3}})(.{{12}})$', "
    r"'\1-\2-4\3-b\4-\5')"
)


def _lit(value: object) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _uid(text: str) -> str:
    return _UID.format(text=text)


# -- events --------------------------------------------------------------------------------------


def inject_volume_drop(
    con: duckdb.DuckDBPyConnection, *, at: datetime, keep: float = 0.1
) -> Injected:
    """Remove most events of one hour (all but ``keep`` of them), as if a tracker broke."""
    start, end = _hour(at)
    where = "event_ts >= ? AND event_ts < ?"
    before = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", [start, end])
    keys = _keys(
        con,
        f"SELECT event_id FROM raw.events WHERE {where} AND hash(event_id) % 1000 >= ?",
        [start, end, int(keep * 1000)],
    )
    con.execute(
        f"DELETE FROM raw.events WHERE {where} AND hash(event_id) % 1000 >= ?",
        [start, end, int(keep * 1000)],
    )
    after = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", [start, end])
    return Injected(
        "volume_drop",
        "events",
        before - after,
        start,
        end,
        keys,
        {"before": before, "after": after},
    )


def inject_volume_spike(
    con: duckdb.DuckDBPyConnection, *, at: datetime, factor: float = 5.0
) -> Injected:
    """Multiply one hour's events by ``factor`` (copies with new event ids, as a bot flood
    or a replaying client would send)."""
    if factor <= 1:
        raise ValueError(f"factor must be above 1 (got {factor})")
    start, end = _hour(at)
    where = "event_ts >= ? AND event_ts < ?"
    before = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", [start, end])
    copies = int(factor) - 1
    extra = factor - int(factor)  # the fraction of one more copy
    new_id = _uid("event_id || '/spike' || k")
    con.execute(
        f"""INSERT INTO raw.events
        SELECT e.* REPLACE ({new_id} AS event_id,
                          json_merge_patch(payload, json_object('event_id', {new_id})) AS payload)
        FROM raw.events e, range(?) r(k)
        WHERE {where} AND (k < ? OR hash(event_id, 'spike') % 1000 < ?)""",
        [copies + (1 if extra else 0), start, end, copies, int(extra * 1000)],
    )
    after = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", [start, end])
    return Injected(
        "volume_spike",
        "events",
        after - before,
        start,
        end,
        [],
        {"before": before, "after": after, "factor": factor},
    )


def inject_null_spike(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime,
    column: str = "session_id",
    share: float = 0.6,
) -> Injected:
    """Null ``column`` for ``share`` of one hour's events (a tracker release that lost it)."""
    allowed = {"session_id", "device_type", "user_id", "anonymous_id", "page_url", "referrer"}
    if column not in allowed:
        raise ValueError(f"column must be one of {sorted(allowed)} (got {column!r})")
    start, end = _hour(at)
    where = f"event_ts >= ? AND event_ts < ? AND {column} IS NOT NULL AND hash(event_id) % 1000 < ?"
    params = [start, end, int(share * 1000)]
    keys = _keys(con, f"SELECT event_id FROM raw.events WHERE {where}", params)
    rows = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", params)
    con.execute(
        f"UPDATE raw.events SET {column} = NULL, "
        f"payload = json_merge_patch(payload, json_object('{column}', NULL)) WHERE {where}",
        params,
    )
    total = _count(
        con, "SELECT count(*) FROM raw.events WHERE event_ts >= ? AND event_ts < ?", [start, end]
    )
    return Injected(
        "null_spike", "events", rows, start, end, keys, {"column": column, "hour_events": total}
    )


def inject_duplicate_burst(
    con: duckdb.DuckDBPyConnection, *, at: datetime, share: float = 0.5
) -> Injected:
    """Re-append ``share`` of one hour's events with the same event_id (a client retrying
    batches the collector had taken), received a few minutes later."""
    start, end = _hour(at)
    where = "event_ts >= ? AND event_ts < ? AND hash(event_id, 'dup') % 1000 < ?"
    params = [start, end, int(share * 1000)]
    keys = _keys(con, f"SELECT event_id FROM raw.events WHERE {where}", params)
    rows = _count(
        con,
        f"""INSERT INTO raw.events
        SELECT * REPLACE (received_at + INTERVAL 5 MINUTE AS received_at)
        FROM raw.events WHERE {where}""",
        params,
    )
    return Injected("duplicate_burst", "events", rows, start, end, keys, {"share": share})


def inject_distribution_shift(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime,
    column: str = "device_type",
    value: str = "web_desktop",
    share: float = 0.8,
    timezone: str = "UTC",
) -> Injected:
    """For one day (``at``'s local day in ``timezone``), set ``column`` of ``share`` of the
    events to ``value`` (device_type: an app release that reports itself as desktop web),
    or, with ``column="price"``, multiply product prices in events' properties by ``value``
    (a float as text, e.g. "3")."""
    if at.tzinfo is None:
        raise ValueError(f"at must carry a time zone ({at})")
    tz = ZoneInfo(timezone)
    local = at.astimezone(tz)
    day = datetime(local.year, local.month, local.day, tzinfo=tz)
    start, end = day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC)
    where = "event_ts >= ? AND event_ts < ? AND hash(event_id, 'shift') % 1000 < ?"
    params: list[Any] = [start, end, int(share * 1000)]
    if column == "device_type":
        rows = _count(
            con,
            f"SELECT count(*) FROM raw.events WHERE {where} AND {column} <> ?",
            [*params, value],
        )
        con.execute(
            f"UPDATE raw.events SET device_type = ?, payload = json_merge_patch(payload, "
            f"json_object('device_type', ?)) WHERE {where} AND device_type <> ?",
            [value, value, *params, value],
        )
    elif column == "price":
        factor = float(value)
        cond = f"{where} AND properties->>'price' IS NOT NULL"
        rows = _count(con, f"SELECT count(*) FROM raw.events WHERE {cond}", params)
        patch = (
            "json_merge_patch(properties, json_object('price', "
            "round((properties->>'price')::DOUBLE * ?)::BIGINT::VARCHAR))"
        )
        con.execute(
            f"UPDATE raw.events SET properties = {patch}, payload = json_merge_patch(payload, "
            f"json_object('properties', {patch})) WHERE {cond}",
            [factor, factor, *params],
        )
    else:
        raise ValueError(f"column must be 'device_type' or 'price' (got {column!r})")
    return Injected(
        "distribution_shift",
        "events",
        rows,
        start,
        end,
        [],
        {"column": column, "value": value, "share": share},
    )


def inject_dead_letter_surge(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime,
    count: int = 500,
    reason_code: str = "missing_field",
) -> Injected:
    """``count`` dead letters in one hour: a client release that stopped sending a field."""
    from shopstream.events.codes import ReasonCode

    code = ReasonCode(reason_code)  # a ValueError naming a code that does not exist
    start, end = _hour(at)
    base = int(start.timestamp() * 1_000_000)
    rows = _count(
        con,
        f"""INSERT INTO raw.dead_letter
        SELECT {_uid("'surge' || n || ?")}, 'collector', ?,
               json_object('event_id', {_uid("'surge-event' || n || ?")},
                   'event_type', 'add_to_cart', 'session_id', {_uid("'surge-s' || n // 7")},
                   'device_type', 'ios', 'properties', json_object('quantity', 1))::VARCHAR,
               json_object('index', n % 20, 'route', '/v1/events', 'code', ?,
                   'source', 'native', 'ip', '198.51.100.' || (n % 250)),
               to_timestamp(0) + to_microseconds(? + (hash(n, 'surge') % 3600000000)::BIGINT)
        FROM range(?) r(n)""",
        [base, "event_ts: Field required", base, str(code), base, count],
    )
    return Injected(
        "dead_letter_surge", "dead_letter", rows, start, end, [], {"reason_code": str(code)}
    )


# -- everything ------------------------------------------------------------------------------


def inject_freshness_stall(con: duckdb.DuckDBPyConnection, *, at: datetime) -> Injected:
    """Delete everything that landed at or after ``at``, as if ingest stopped then."""
    if at.tzinfo is None:
        raise ValueError(f"at must carry a time zone ({at})")
    removed: dict[str, int] = {}
    for table, column in (
        ("events", "received_at"),
        ("dead_letter", "received_at"),
        *((f"cdc_{t}", "ingested_at") for t in SHOP_TABLES),
    ):
        removed[table] = _count(con, f"DELETE FROM raw.{table} WHERE {column} >= ?", [at])
    latest = con.execute("SELECT max(received_at) FROM raw.events").fetchone()
    return Injected(
        "freshness_stall",
        "events",
        sum(removed.values()),
        at,
        datetime.now(UTC) if at < datetime.now(UTC) else at,
        [],
        {"removed": removed, "latest_event": latest[0] if latest else None},
    )


# -- CDC ---------------------------------------------------------------------------------------


def _latest_orders(con: duckdb.DuckDBPyConnection, at: datetime, where: str, limit: int) -> str:
    """SQL of the latest version (JSON ``after``) of up to ``limit`` orders whose latest
    version of all was committed before ``at`` and satisfies ``where`` (on ``after``): an
    injected change is then the order's newest by commit time as well as by LSN."""
    return f"""
        SELECT order_id, after FROM (
            SELECT key->>'order_id' AS order_id, after, op, commit_ts FROM raw.cdc_orders
            QUALIFY row_number() OVER (PARTITION BY key->>'order_id'
                                       ORDER BY lsn DESC, change_id DESC) = 1)
        WHERE commit_ts < '{at.isoformat()}'::TIMESTAMPTZ AND op <> 'd' AND ({where})
        ORDER BY hash(order_id), order_id LIMIT {int(limit)}"""


def _append_changes(
    con: duckdb.DuckDBPyConnection, table: str, rows_sql: str, at: datetime, op: str = "u"
) -> int:
    """Append change rows to raw.cdc_<table>: ``rows_sql`` gives (key JSON, after JSON), one
    transaction per row, committed a second apart from ``at``, LSNs above any in raw."""
    top = max(
        _count(con, f"SELECT max(lsn) FROM raw.cdc_{t}")
        for t in SHOP_TABLES
        if _count(
            con,
            f"SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' "
            f"AND table_name = 'cdc_{t}'",
        )
    )
    base = max(top, 0x1000000) + 0x10000
    at_us = int(at.timestamp() * 1_000_000)
    return _count(
        con,
        f"""INSERT INTO raw.cdc_{table}
        WITH r AS (SELECT key, after, row_number() OVER () AS n FROM ({rows_sql}))
        SELECT printf('%016X-%08d', {base} + n * 16, 1), '{op}', {base} + n * 16,
               900000000 + n, to_timestamp(0) + to_microseconds({at_us} + n * 1000000),
               make_timestamp({at_us} + n * 1000000)::DATE, key, NULL::JSON,
               {"NULL::JSON" if op == "d" else "after"},
               '{{"version":"shopstream","connector":"postgresql","name":"shopstream",'
               || '"db":"shop","schema":"public","table":"{table}","ts_ms":'
               || (({at_us} + n * 1000000) // 1000) || ',"snapshot":"false","txId":'
               || (900000000 + n) || ',"lsn":' || ({base} + n * 16) || '}}',
               to_timestamp(0) + to_microseconds({at_us} + n * 1000000 + 80000)
        FROM r""",
    )


def inject_invalid_status_transition(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime,
    count: int = 10,
    from_status: str = "DELIVERED",
    to_status: str = "PENDING",
) -> Injected:
    """Move ``count`` orders whose status is ``from_status`` to ``to_status`` (DELIVERED ->
    PENDING: a back-office script that reset them), as change rows from ``at``."""
    latest = _latest_orders(con, at, f"after->>'status' = '{from_status}'", count)
    keys = [r[0] for r in con.execute(f"SELECT order_id FROM ({latest})").fetchall()]
    ts = f"strftime(TIMESTAMPTZ '{at.astimezone(UTC).isoformat()}', '%Y-%m-%dT%H:%M:%SZ')"
    rows = _append_changes(
        con,
        "orders",
        f"""SELECT json_object('order_id', order_id) AS key,
               json_merge_patch(after, json_object('status', '{to_status}',
                   'updated_at', {ts})) AS after FROM ({latest})""",
        at,
    )
    start, end = _hour(at)
    return Injected(
        "invalid_status_transition",
        "cdc_orders",
        rows,
        start,
        end,
        keys,
        {"from": from_status, "to": to_status},
    )


def inject_broken_order_totals(
    con: duckdb.DuckDBPyConnection, *, at: datetime, count: int = 20, delta: int = 1000
) -> Injected:
    """Change ``count`` orders' total_amount by ``delta`` won without touching their lines
    (a discount applied to the order only)."""
    latest = _latest_orders(con, at, "true", count)
    keys = [r[0] for r in con.execute(f"SELECT order_id FROM ({latest})").fetchall()]
    rows = _append_changes(
        con,
        "orders",
        f"""SELECT json_object('order_id', order_id) AS key,
               json_merge_patch(after, json_object('total_amount',
                   ((after->>'total_amount')::DECIMAL(14, 2) + {int(delta)})::VARCHAR)) AS after
        FROM ({latest})""",
        at,
    )
    start, end = _hour(at)
    return Injected("broken_order_totals", "cdc_orders", rows, start, end, keys, {"delta": delta})


def inject_orphan_order_items(
    con: duckdb.DuckDBPyConnection, *, at: datetime, count: int = 20
) -> Injected:
    """``count`` order lines whose order does not exist (``OX`` ids: neither live nor
    history), of real products."""
    product = con.execute(
        "SELECT key->>'product_id', after->>'price' FROM raw.cdc_products "
        "WHERE after IS NOT NULL LIMIT 1"
    ).fetchone()
    product_id, price = product if product else ("P000001", "1000.00")
    keys = [f"OX{n:010d}" for n in range(1, count + 1)]
    rows = _append_changes(
        con,
        "order_items",
        f"""SELECT json_object('order_id', order_id, 'line_no', 1) AS key,
               json_object('order_id', order_id, 'line_no', 1, 'product_id', {_lit(product_id)},
                   'quantity', 1, 'unit_price', {_lit(price)}) AS after
        FROM (SELECT printf('OX%010d', n) AS order_id FROM range(1, {count + 1}) r(n))""",
        at,
        op="c",
    )
    start, end = _hour(at)
    return Injected("orphan_order_items", "cdc_order_items", rows, start, end, keys, {})


def inject_schema_drift(
    con: duckdb.DuckDBPyConnection,
    *,
    at: datetime,
    orders: int = 20,
    events: bool = True,
    share: float = 0.5,
) -> Injected:
    """The shop's orders table changes: a new raw.source_schemas version for cdc_orders
    with a column added (``coupon_code`` text) and one type changed (``total_amount``
    numeric(14,2) -> double precision), plus ``orders`` change rows carrying the new column
    (and total_amount as a JSON number). With ``events``, ``share`` of the hour's
    product_view events gain a ``coupon`` key and lose ``price`` in their properties."""
    columns, key = shop_columns()["orders"]
    columns = [dict(c) for c in columns]
    for c in columns:
        if c["name"] == "total_amount":
            c.update(
                type="double precision",
                base_type="double precision",
                type_oid=701,
                type_modifier=-1,
            )
    columns.append(
        {
            "name": "coupon_code",
            "type": "text",
            "base_type": "text",
            "type_oid": 25,
            "type_modifier": -1,
            "key": False,
            "nullable": True,
        }
    )
    version = (
        _count(
            con,
            "SELECT coalesce(max(version), 0) FROM raw.source_schemas "
            "WHERE raw_table = 'cdc_orders'",
        )
        + 1
    )
    top = _count(con, "SELECT max(lsn) FROM raw.cdc_orders")
    con.execute(
        "INSERT INTO raw.source_schemas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            "cdc_orders",
            "public",
            "orders",
            version,
            fingerprint(columns, key),
            orjson.dumps(columns).decode(),
            orjson.dumps(key).decode(),
            "default",
            max(top, 0x1000000) + 0x8000,
            at,
        ],
    )
    latest = _latest_orders(con, at, "true", orders)
    keys = [r[0] for r in con.execute(f"SELECT order_id FROM ({latest})").fetchall()]
    rows = _append_changes(
        con,
        "orders",
        f"""SELECT json_object('order_id', order_id) AS key,
               json_merge_patch(after, json_object(
                   'total_amount', (after->>'total_amount')::DOUBLE,
                   'coupon_code', 'WELCOME10')) AS after
        FROM ({latest})""",
        at,
    )
    changed_events = 0
    start, end = _hour(at)
    if events:
        where = (
            "event_ts >= ? AND event_ts < ? AND event_type = 'product_view' "
            "AND hash(event_id, 'drift') % 1000 < ?"
        )
        params = [start, end, int(share * 1000)]
        new_props = 'json_merge_patch(properties, \'{"price": null, "coupon": "WELCOME10"}\')'
        changed_events = _count(con, f"SELECT count(*) FROM raw.events WHERE {where}", params)
        con.execute(
            f"UPDATE raw.events SET properties = {new_props}, payload = json_merge_patch("
            f"payload, json_object('properties', {new_props})) WHERE {where}",
            params,
        )
    return Injected(
        "schema_drift",
        "cdc_orders",
        rows,
        start,
        end,
        keys,
        {
            "version": version,
            "added": ["coupon_code"],
            "type_changed": {"total_amount": ["numeric(14,2)", "double precision"]},
            "events_changed": changed_events,
            "events_added_key": "coupon",
            "events_removed_key": "price",
        },
    )


__all__ = [
    "Injected",
    "inject_broken_order_totals",
    "inject_dead_letter_surge",
    "inject_distribution_shift",
    "inject_duplicate_burst",
    "inject_freshness_stall",
    "inject_invalid_status_transition",
    "inject_null_spike",
    "inject_orphan_order_items",
    "inject_schema_drift",
    "inject_volume_drop",
    "inject_volume_spike",
]
