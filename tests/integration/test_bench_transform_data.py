"""The transform benchmark's generated raw data keeps to the contracts it stands in for.

``bench/_rawgen.py`` writes raw rows with SQL instead of through the collector and the CDC
reader; these tests hold it to what those write, on a real DuckDB file at a small scale, so the
benchmark's data cannot drift from the contract: events rebuilt through the collector's own
row building, CDC rows in the reader's encodings and change-id order, ``raw.source_schemas``
against a real PostgreSQL catalogue of the shop's DDL.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from shopstream.collector.intake import EventColumns, RequestInfo
from shopstream.events.behaviour import parse_event
from shopstream.events.raw import RAW_CDC, RAW_EVENTS
from shopstream.generators.shop import SHOP_DDL, SHOP_TABLES
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.pg_fixtures import PostgresDatabase

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import _rawgen

SCALE = _rawgen.Scale(events=6_000, orders=600, days=10, increment=0.05)
CHANGE_ID = re.compile(r"^[0-9A-F]{16}-r?[0-9]{8}$")
TIMESTAMPTZ = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    work = tmp_path_factory.mktemp("rawgen")
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    result = _rawgen.generate(work / "w.duckdb", work / "pending.duckdb", SCALE, now)
    return work, result


@pytest.fixture(scope="module")
def con(generated: tuple[Path, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(generated[0] / "w.duckdb"), read_only=True)
    connection.execute("SET TimeZone = 'UTC'")
    yield connection
    connection.close()


def describe(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r[:3]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_raw_tables_are_the_warehouse_s_own(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    """Column names, order, types and nullability equal what the real warehouse creates."""
    warehouse = DuckDBWarehouse(tmp_path / "ref.duckdb")
    warehouse.ensure_layers()
    for table in ("events", "dead_letter", *(f"cdc_{t}" for t in SHOP_TABLES)):
        warehouse.ensure_raw_table(table)
    warehouse.close()
    ref = duckdb.connect(str(tmp_path / "ref.duckdb"), read_only=True)
    tables = ["events", "dead_letter", *(f"cdc_{t}" for t in SHOP_TABLES)]
    try:
        ref.execute("SELECT * FROM raw.source_schemas LIMIT 0")
        tables.append("source_schemas")  # once the warehouse creates it itself
    except duckdb.CatalogException:
        pass
    for table in tables:
        assert describe(con, f"raw.{table}") == describe(ref, f"raw.{table}"), table
    ref.close()
    assert [c[0] for c in describe(con, "raw.events")] == RAW_EVENTS.names
    assert [c[0] for c in describe(con, "raw.cdc_orders")] == RAW_CDC.names


def test_events_are_rows_the_collector_would_write(con: duckdb.DuckDBPyConnection) -> None:
    """Every event type, plus a sample: the payload is a valid native event, and the collector's
    own row building (EventColumns) from it gives the stored row."""
    rows = con.execute(
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY event_type ORDER BY event_id) "
        "AS n FROM raw.events) WHERE n <= 40"
    ).fetchall()
    names = RAW_EVENTS.names
    assert {r[names.index("event_type")] for r in rows} >= {
        "page_view",
        "product_view",
        "add_to_cart",
        "begin_checkout",
        "purchase",
    }
    for row in rows:
        stored = dict(zip(names, row[:-1], strict=True))
        payload = orjson.loads(stored["payload"])
        event = parse_event(payload)
        columns = EventColumns()
        info = RequestInfo(stored["ip"], stored["user_agent"], "/v1/events", stored["received_at"])
        columns.add(event, payload, info, source="native", payload=payload)
        rebuilt = columns.to_arrow().to_pylist()[0]
        for name in names:
            if name == "payload":  # same JSON; the collector re-serialises what it received
                assert orjson.loads(rebuilt[name]) == payload
            else:
                assert rebuilt[name] == stored[name], (name, stored["event_id"])


def test_purchases_name_real_orders(con: duckdb.DuckDBPyConnection) -> None:
    purchases = con.execute(
        "SELECT properties FROM raw.events WHERE event_type = 'purchase'"
    ).fetchall()
    orders = {
        after["order_id"]: after
        for (text,) in con.execute(
            "SELECT after FROM raw.cdc_orders WHERE op IN ('r', 'c')"
        ).fetchall()
        for after in [orjson.loads(text)]
    }
    assert purchases
    for (text,) in purchases:
        properties = orjson.loads(text)
        items = properties["items"]
        revenue = sum(Decimal(i["price"]) * i["quantity"] for i in items)
        assert Decimal(properties["revenue"]) == revenue
        assert Decimal(orders[properties["order_id"]]["total_amount"]) == revenue
    # 2% of purchases lost, as the generators' default
    assert 0.9 * len(orders) < len(purchases) < len(orders)


def test_cdc_rows_keep_the_reader_s_encodings(con: duckdb.DuckDBPyConnection) -> None:
    columns = {
        row[0]: orjson.loads(row[1])
        for row in con.execute(
            "SELECT DISTINCT source_table, columns::VARCHAR FROM raw.source_schemas"
        ).fetchall()
    }
    for table in SHOP_TABLES:
        rows = con.execute(
            f"SELECT change_id, op, lsn, tx_id, commit_ts, commit_date, key, before, after, "
            f"source, ingested_at FROM raw.cdc_{table} ORDER BY change_id"
        ).fetchall()
        assert {r[1] for r in rows} <= {"r", "c", "u", "d"}
        assert len({r[0] for r in rows}) == len(rows), "change_id unique"
        names = [c["name"] for c in columns[table]]
        key_names = [c["name"] for c in columns[table] if c["key"]]
        last_commit = None
        for (
            change_id,
            op,
            lsn,
            tx_id,
            commit_ts,
            commit_date,
            key,
            before,
            after,
            source,
            ingested,
        ) in rows:
            assert CHANGE_ID.match(change_id)
            snapshot = op == "r"
            assert ("-r" in change_id) == snapshot
            assert int(change_id[:16], 16) == (lsn if snapshot else int(change_id[:16], 16))
            assert commit_date == commit_ts.date() and ingested > commit_ts
            src = orjson.loads(source)
            assert (src["table"], src["schema"], src["lsn"], src["txId"]) == (
                table,
                "public",
                lsn,
                tx_id,
            )
            assert src["snapshot"] == ("true" if snapshot else "false")
            assert src["ts_ms"] == int(commit_ts.timestamp() * 1000)
            assert list(orjson.loads(key)) == key_names
            row = orjson.loads(after if op != "d" else before)
            assert list(row) == names
            if op == "d":
                assert after is None
                assert all(row[n] is None for n in names if n not in key_names)
            else:
                assert before is None  # replica identity default
                check_values(row, columns[table])
            if not snapshot:
                # change ids sort in commit order
                assert last_commit is None or commit_ts >= last_commit
                last_commit = commit_ts


def check_values(row: dict[str, Any], columns: list[dict[str, Any]]) -> None:
    for column in columns:
        value = row[column["name"]]
        if value is None:
            assert column["nullable"], column["name"]
        elif column["type"].startswith("numeric"):
            scale = int(column["type"].rstrip(")").split(",")[1])
            assert isinstance(value, str) and re.fullmatch(rf"\d+\.\d{{{scale}}}", value)
        elif column["type"] == "timestamp with time zone":
            assert isinstance(value, str) and TIMESTAMPTZ.match(value), value
        elif column["type"] == "integer":
            assert isinstance(value, int) and not isinstance(value, bool)
        else:
            assert isinstance(value, str)


def shop_catalogue(dsn: str) -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """What PostgreSQL itself says about the shop's tables (as the CDC reader records it)."""
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(SHOP_DDL)
        tables = {}
        for table in SHOP_TABLES:
            key = [
                r[0]
                for r in pg.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                    "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass "
                    "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                    (table,),
                ).fetchall()
            ]
            columns = [
                {
                    "name": name,
                    "type": type_name,
                    "base_type": type_name,
                    "type_oid": oid,
                    "type_modifier": modifier,
                    "key": name in key,
                    "nullable": not not_null,
                }
                for name, type_name, oid, modifier, not_null in pg.execute(
                    "SELECT attname, format_type(atttypid, atttypmod), atttypid::int, "
                    "atttypmod, attnotnull FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (table,),
                ).fetchall()
            ]
            tables[table] = (columns, key)
    return tables


def test_source_schemas_match_postgresql(
    con: duckdb.DuckDBPyConnection, postgres: PostgresDatabase
) -> None:
    catalogue = shop_catalogue(postgres.dsn)
    rows = con.execute(
        "SELECT raw_table, source_schema, source_table, version, fingerprint, columns::VARCHAR, "
        "primary_key::VARCHAR, replica_identity FROM raw.source_schemas"
    ).fetchall()
    assert {r[2] for r in rows} == set(SHOP_TABLES)
    assert len(rows) == len(SHOP_TABLES) + 1  # one re-sent duplicate, as at-least-once allows
    for raw_table, schema, table, version, fingerprint, columns, key, identity in rows:
        assert (raw_table, schema, version, identity) == (f"cdc_{table}", "public", 1, "default")
        assert orjson.loads(columns) == catalogue[table][0]
        assert orjson.loads(key) == catalogue[table][1]
        assert fingerprint == _rawgen.fingerprint(*catalogue[table])
    try:
        from shopstream.cdc.schemas import ColumnSchema, TableSchema
    except ImportError:
        return  # the reader's schema record is not on this branch yet
    for table, (columns, key) in catalogue.items():
        shape = TableSchema(
            f"cdc_{table}",
            "public",
            table,
            tuple(ColumnSchema(**c) for c in columns),
            tuple(key),
            "default",
        )
        assert shape.fingerprint == _rawgen.fingerprint(columns, key)


def test_increment_is_new_late_and_duplicate_data(generated: tuple[Path, Any]) -> None:
    work, result = generated
    path = work / "copy.duckdb"
    path.write_bytes((work / "w.duckdb").read_bytes())
    before = duckdb.connect(str(path))
    ids = {r[0] for r in before.execute("SELECT event_id FROM raw.events").fetchall()}
    last = {
        t: before.execute(f"SELECT max(change_id) FROM raw.cdc_{t} WHERE op <> 'r'").fetchone()[0]  # type: ignore[index]
        for t in SHOP_TABLES
    }
    before.close()
    appended = _rawgen.append_increment(path, work / "pending.duckdb")
    assert appended == result.pending
    assert appended["events"] > 0 and appended["cdc_orders"] > 0
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    end = datetime.fromtimestamp(result.timeline.end_us / 1e6, UTC)
    new = con.execute(
        "SELECT event_id, event_ts, received_at FROM raw.events WHERE received_at > ?", [end]
    ).fetchall()
    assert len(new) == appended["events"]
    late = [r for r in new if (r[2] - r[1]).days >= 1]
    assert late and all((r[2] - r[1]).days < 3 for r in late), "late, inside the lookback"
    assert any(r[0] in ids for r in new), "re-sent duplicates"
    for table in SHOP_TABLES:
        first_new = con.execute(
            f"SELECT min(change_id) FROM raw.cdc_{table} WHERE commit_ts > ?", [end]
        ).fetchone()[0]  # type: ignore[index]
        if first_new is not None and last[table] is not None:
            assert first_new > last[table], "the increment's changes sort after the load's"
    con.close()
