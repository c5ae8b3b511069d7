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

The rows come from the history generator (``shopstream.generators.history``, one generator for
both): here with the live shop's id prefixes, flat time and a CDC snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from shopstream.generators.history import (
    DAY_US,
    LIVE_IDS,
    US,
    World,
    build,
    cdc_select,
    create_raw,
    events_columns,
    fingerprint,
    flat_weights,
    raw_tables,
    source_schema_rows,
)
from shopstream.generators.shop import SHOP_TABLES

__all__ = ["Generated", "Scale", "Timeline", "append_increment", "fingerprint", "generate"]

#: The snapshot's LSN (the streamed changes follow it).
CONSISTENT_LSN = 0x1_0000_0000


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


def world(scale: Scale, t: Timeline) -> World:
    """The benchmark's world: uniform time from start to now, the live shop's ids."""
    return World(
        start_us=t.start_us,
        end_us=t.now_us,
        events=int(scale.events * (1 + scale.increment)),
        orders=int(scale.orders * (1 + scale.increment)),
        users=scale.users,
        products=scale.products,
        seed=scale.seed,
        hour_weights=flat_weights(t.start_us, t.now_us),
        ids=LIVE_IDS,
        lsn_base=CONSISTENT_LSN,
        snapshot_us=t.snapshot_us,
        users_from_us=t.start_us - 365 * DAY_US,
        users_until_us=t.start_us + (t.end_us - t.start_us) // 2,
        late_after_us=t.end_us,
    )


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
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        # Bounded, so a 10M-event world spills to disk instead of crowding the machine out.
        con.execute("SET memory_limit = '4GB'")
        con.execute(f"ATTACH '{pending_path}' AS pending")
        create_raw(con, "raw")
        create_raw(con, "pending.main")
        build(con, world(scale, t))
        rows = _split(con, t)
        con.executemany(
            "INSERT INTO raw.source_schemas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _source_schemas(t),
        )
        con.execute("DETACH pending")
        con.execute("CHECKPOINT")
        counts = {
            table: int(con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0])  # type: ignore[index]
            for table in [*raw_tables(), "source_schemas"]
        }
    finally:
        con.close()
    return Generated(counts, rows, t, CONSISTENT_LSN)


def _split(con: duckdb.DuckDBPyConnection, t: Timeline) -> dict[str, int]:
    """Rows up to ``end`` into raw, the rest into the pending file; returns pending counts."""
    inc = t.now_us - t.end_us
    pending: dict[str, int] = {}
    for table in SHOP_TABLES:
        for target, where in (("raw", f"<= {t.end_us}"), ("pending.main", f"> {t.end_us}")):
            con.execute(
                f"INSERT INTO {target}.cdc_{table} {cdc_select(table, f'commit_us {where}')}"
            )
        pending[f"cdc_{table}"] = int(
            con.execute(f"SELECT count(*) FROM pending.main.cdc_{table}").fetchone()[0]  # type: ignore[index]
        )
    # Events: in the increment one in twenty is late (see World.late_after_us), and events
    # received in the newest ones before ``end`` are re-sent (at-least-once retries), 1% of
    # the increment.
    columns = events_columns()
    con.execute(
        f"INSERT INTO raw.events SELECT {columns} FROM w_raw_events WHERE received_us <= {t.end_us}"
    )
    con.execute(
        f"INSERT INTO pending.main.events SELECT {columns} FROM w_raw_events "
        f"WHERE received_us > {t.end_us}"
    )
    fresh = int(con.execute("SELECT count(*) FROM pending.main.events").fetchone()[0])  # type: ignore[index]
    con.execute(f"""
        INSERT INTO pending.main.events
        SELECT * REPLACE (received_at + INTERVAL '{inc // 2} microseconds' AS received_at)
        FROM (SELECT {columns} FROM w_raw_events
              WHERE received_us <= {t.end_us} AND received_us > {t.end_us - DAY_US}
              ORDER BY received_at DESC LIMIT {max(3, fresh // 100)})""")
    pending["events"] = int(
        con.execute("SELECT count(*) FROM pending.main.events").fetchone()[0]  # type: ignore[index]
    )
    return pending


def _source_schemas(t: Timeline) -> list[tuple[object, ...]]:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t.snapshot_us - US)
    rows: list[tuple[object, ...]] = list(source_schema_rows(CONSISTENT_LSN, at))
    resent = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t.end_us)
    rows.append((*rows[2][:-1], resent))  # re-sent
    return rows


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
