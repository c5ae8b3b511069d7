"""raw.source_schemas: the CDC reader's record of each captured table's schema, per version.

Real PostgreSQL (throwaway cluster, wal_level=logical), the real reader and sink, a real
DuckDB file.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from shopstream.cdc.reader import ChangeReader
from shopstream.config import CdcSettings
from shopstream.events.raw import cdc_table_name
from shopstream.observability.metrics import REGISTRY
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
from tests.support.cdc import ReaderThread, assert_matches_history, wait_for


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def records(reader: ReaderThread, raw_table: str | None = None) -> list[dict[str, Any]]:
    where = f"WHERE raw_table = '{raw_table}'" if raw_table else ""
    rows = reader.query(f"SELECT * FROM raw.source_schemas {where} ORDER BY raw_table, version")
    for row in rows:
        row["columns"] = orjson.loads(row["columns"])
        row["primary_key"] = orjson.loads(row["primary_key"])
    return rows


def shape(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["name"], c["type"]) for c in record["columns"]]


def test_the_record_of_a_real_table(postgres: Any, tmp_path: Path) -> None:
    """Every field, on a table with a domain, an enum, arrays, a two-column key declared in
    another order than the columns, and a table that only ever has snapshot rows."""
    execute(
        postgres.dsn,
        "CREATE DOMAIN money_won AS numeric(14,2) CHECK (VALUE >= 0)",
        "CREATE DOMAIN qty AS int",
        "CREATE TYPE status AS ENUM ('PENDING', 'PAID')",
        "CREATE TABLE order_lines (order_id bigint NOT NULL, line_no int NOT NULL, "
        "total_amount numeric(14,2) NOT NULL, price money_won, status status NOT NULL, "
        "quantities qty[], tags varchar(20)[], placed_at timestamptz, "
        "PRIMARY KEY (line_no, order_id))",
        "CREATE TABLE empty_table (id int PRIMARY KEY, note text)",
        "INSERT INTO order_lines VALUES (1, 1, 10.50, 10.50, 'PAID', '{1,2}', '{a}', now())",
    )
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="initial").start()
    try:
        reader.wait_until(lambda: reader.count("cdc_order_lines") == 1, "the snapshot row")
        reader.wait_until(lambda: reader.count("source_schemas") == 2, "two schema records")
        got = {r["raw_table"]: r for r in records(reader)}
        snapshot_lsn = reader.query("SELECT lsn FROM raw.cdc_order_lines")[0]["lsn"]
    finally:
        reader.stop()
    lines = got["cdc_order_lines"]
    assert (lines["source_schema"], lines["source_table"], lines["version"]) == (
        "public",
        "order_lines",
        1,
    )
    assert lines["primary_key"] == ["line_no", "order_id"]  # the key's order, not the columns'
    assert lines["replica_identity"] == "default"
    assert lines["first_lsn"] == snapshot_lsn  # the snapshot's consistent LSN
    assert len(lines["fingerprint"]) == 64
    by_name = {c["name"]: c for c in lines["columns"]}
    assert [c["name"] for c in lines["columns"]] == [
        "order_id",
        "line_no",
        "total_amount",
        "price",
        "status",
        "quantities",
        "tags",
        "placed_at",
    ]
    assert by_name["total_amount"] == {
        "name": "total_amount",
        "type": "numeric(14,2)",
        "base_type": "numeric(14,2)",
        "type_oid": 1700,
        "type_modifier": 917510,
        "key": False,
        "nullable": False,
    }
    assert (by_name["order_id"]["type"], by_name["order_id"]["key"]) == ("bigint", True)
    assert by_name["line_no"]["key"] and not by_name["line_no"]["nullable"]
    assert (by_name["price"]["type"], by_name["price"]["base_type"]) == (
        "money_won",
        "numeric(14,2)",
    )
    assert (by_name["status"]["type"], by_name["status"]["base_type"]) == ("status", "text")
    assert (by_name["quantities"]["type"], by_name["quantities"]["base_type"]) == (
        "qty[]",
        "integer[]",
    )
    assert by_name["tags"]["type"] == by_name["tags"]["base_type"] == "character varying(20)[]"
    assert by_name["placed_at"]["type"] == "timestamp with time zone"
    assert by_name["placed_at"]["nullable"] and by_name["price"]["nullable"]
    # A table with no rows at all still has its record, from the snapshot.
    empty = got["cdc_empty_table"]
    assert shape(empty) == [("id", "integer"), ("note", "text")]
    assert (empty["version"], empty["first_lsn"]) == (1, snapshot_lsn)


def test_schema_drift_makes_versions_from_the_first_change_under_them(
    postgres: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = postgres.dsn
    execute(dsn, "CREATE TABLE products (product_id int PRIMARY KEY, price numeric(10,2))")
    caplog.set_level(logging.INFO, logger="shopstream.cdc.schemas")
    reader = ReaderThread(dsn, tmp_path, snapshot_mode="never").start()
    steps = [
        "ALTER TABLE products ADD COLUMN storage_type text DEFAULT 'ROOM'",
        "ALTER TABLE products ALTER COLUMN price TYPE numeric(12,2)",
        "ALTER TABLE products DROP COLUMN storage_type",
        "ALTER TABLE products ADD COLUMN sku text NOT NULL DEFAULT 'x', "
        "DROP CONSTRAINT products_pkey, ADD PRIMARY KEY (product_id, sku)",
    ]
    try:
        execute(dsn, "INSERT INTO products VALUES (1, 1)", "UPDATE products SET price = 2")
        for n, step in enumerate(steps, start=2):
            # Two changes under each version: only the first one's LSN is its first_lsn.
            execute(
                dsn,
                step,
                f"INSERT INTO products (product_id, price) VALUES ({n}, {n})",
                f"UPDATE products SET price = price + 1 WHERE product_id = {n}",
            )
        reader.wait_until(lambda: reader.count("cdc_products") == 10, "ten changes")
        reader.wait_until(lambda: reader.count("source_schemas") == 5, "five versions")
        versions = records(reader, "cdc_products")
        lsns = [r["lsn"] for r in reader.query("SELECT lsn FROM raw.cdc_products ORDER BY lsn")]
    finally:
        reader.stop()
    assert [r["version"] for r in versions] == [1, 2, 3, 4, 5]
    assert len({r["fingerprint"] for r in versions}) == 5
    # Each version's first_lsn is the LSN of the first change made under it.
    assert [r["first_lsn"] for r in versions] == lsns[::2]
    assert shape(versions[0]) == [("product_id", "integer"), ("price", "numeric(10,2)")]
    assert shape(versions[1])[-1] == ("storage_type", "text")
    assert ("price", "numeric(12,2)") in shape(versions[2])
    assert [c for c, _ in shape(versions[3])] == ["product_id", "price"]
    assert versions[3]["primary_key"] == ["product_id"]
    assert versions[4]["primary_key"] == ["product_id", "sku"]
    logged = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert len(logged) == 4, logged
    assert "added storage_type text" in logged[0]
    assert "retyped price numeric(10,2) -> numeric(12,2)" in logged[1]
    assert "removed storage_type" in logged[2]
    assert (
        "added sku text" in logged[3]
        and "primary key (product_id) -> (product_id, sku)" in (logged[3])
    )


def _walsender_pids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT active_pid FROM pg_replication_slots "
                "WHERE slot_name = 'shopstream' AND active_pid IS NOT NULL"
            ).fetchall()
        ]


def has_order(reader: ReaderThread, order_id: int) -> bool:
    """Whether the change that inserted ``order_id`` is in raw: by its key, not by counting
    rows, since a dropped connection may deliver an unconfirmed change twice."""
    return reader.count("cdc_orders", f"json_extract_string(key, '$.order_id') = '{order_id}'") > 0


def test_relations_resent_after_reconnects_and_restarts_make_no_versions(
    postgres: Any, tmp_path: Path
) -> None:
    """PostgreSQL sends every table's Relation again in each session: after a dropped
    connection and after the reader is restarted on the same data directory, an unchanged
    table keeps its one version, and a change after that continues the numbering."""
    dsn = postgres.dsn
    execute(dsn, "CREATE TABLE orders (order_id int PRIMARY KEY, status text)")
    first = ReaderThread(dsn, tmp_path, snapshot_mode="initial").start()
    try:
        execute(dsn, "INSERT INTO orders VALUES (1, 'new')")
        first.wait_until(lambda: has_order(first, 1), "the first change")
        # The connection drops: the next session is sent the table's Relation again.
        (pid,) = _walsender_pids(dsn)
        execute(dsn, f"SELECT pg_terminate_backend({pid})")
        wait_for(lambda: _walsender_pids(dsn) not in ([], [pid]), "the reader back")
        execute(dsn, "INSERT INTO orders VALUES (2, 'new')")
        first.wait_until(lambda: has_order(first, 2), "the change after reconnect")
        first.wait_until(lambda: first.reader.stats.state == "streaming", "streaming again")
        wait_for(lambda: first.reader._acks.in_flight == 0, "the batch settled")
        assert len(records(first, "cdc_orders")) == 1
    finally:
        first.stop()
    # A new reader process on the same data directory (and warehouse file).
    second = ReaderThread(dsn, tmp_path, snapshot_mode="initial").start()
    try:
        execute(dsn, "INSERT INTO orders VALUES (3, 'new')")
        second.wait_until(lambda: has_order(second, 3), "the change after restart")
        execute(dsn, "ALTER TABLE orders ADD COLUMN note text", "INSERT INTO orders VALUES (4)")
        second.wait_until(lambda: has_order(second, 4), "the change after DDL")
        second.wait_until(lambda: second.count("source_schemas") >= 2, "the new version")
        versions = records(second, "cdc_orders")
    finally:
        second.stop()
    assert [r["version"] for r in versions] == [1, 2], versions
    assert shape(versions[1])[-1] == ("note", "text")


def _reconnects() -> float:
    return REGISTRY.get_sample_value("shopstream_cdc_reconnects_total") or 0.0


def test_a_schema_record_the_sink_lost_is_written_again(postgres: Any, tmp_path: Path) -> None:
    """The writer dies while a table's first change (and so its new schema record) waits on
    it: the batch fails, nothing is confirmed, the server resends it, and the record is
    written then, with the change's LSN: no change is durable without its schema record."""
    dsn = postgres.dsn
    execute(dsn, "CREATE TABLE orders (order_id bigint PRIMARY KEY, status text)")
    warehouse = WarehouseProcess(tmp_path / "shopstream.duckdb")
    warehouse.ensure_layers()
    sink = WarehouseSink(warehouse, linger_ms=1)
    sink.start()
    settings = CdcSettings(heartbeat_seconds=1.0, snapshot_mode="never", batch_max_ms=50)
    reader = ChangeReader(dsn, settings, sink, state_dir=tmp_path)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            reader.run(stop)
        except BaseException as exc:
            failures.append(exc)

    def query(sql: str) -> list[dict[str, Any]]:
        try:
            return list(warehouse.query(sql).to_pylist())
        except Exception:
            return []  # the writer is down, or the table not there yet

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: reader.stats.state == "streaming" or bool(failures), "streaming")
        reconnects = _reconnects()
        pid = warehouse.pid
        assert pid is not None
        # The writer stops, the change (and its record) is handed over and waits on it, and
        # the writer dies: that batch fails whatever the timing.
        os.kill(pid, signal.SIGSTOP)
        execute(dsn, "INSERT INTO orders VALUES (1, 'new')")
        wait_for(lambda: sink.pending_rows() >= 2, "the change and its record handed over")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _reconnects() > reconnects or bool(failures), "a retry")
        wait_for(
            lambda: bool(query("SELECT 1 FROM raw.cdc_orders")) or bool(failures),
            "the change",
            timeout=90,
        )
        assert not failures, failures
        change = query("SELECT lsn FROM raw.cdc_orders")
        wait_for(lambda: bool(query("SELECT 1 FROM raw.source_schemas")), "the record")
        # Remembered once the batch settles (after it is durable), not before.
        wait_for(lambda: "cdc_orders" in reader.schema_store.load(), "the version saved")
        saved = reader.schema_store.load()
        got = query("SELECT raw_table, version, first_lsn FROM raw.source_schemas")
    finally:
        stop.set()
        thread.join(60)
        sink.close()
        warehouse.close()
    assert {(r["raw_table"], r["version"], r["first_lsn"]) for r in got} == {
        ("cdc_orders", 1, change[0]["lsn"])
    }
    assert saved["cdc_orders"].version == 1


def test_same_named_tables_in_two_schemas_have_their_own_records(
    postgres: Any, tmp_path: Path
) -> None:
    dsn = postgres.dsn
    execute(
        dsn,
        "CREATE SCHEMA sales",
        "CREATE TABLE public.orders (id int PRIMARY KEY, note text)",
        "CREATE TABLE sales.orders (id bigint PRIMARY KEY, region text NOT NULL, total numeric)",
        "INSERT INTO sales.orders VALUES (1, 'eu', 1)",
    )
    reader = ReaderThread(
        dsn, tmp_path, snapshot_mode="initial", tables=["public.orders", "sales.orders"]
    ).start()
    # The server's own account of the changes, to hold raw against (schema and table).
    execute(dsn, "SELECT pg_create_logical_replication_slot('truth', 'test_decoding')")
    try:
        execute(
            dsn,
            "INSERT INTO public.orders VALUES (1, 'a')",
            "INSERT INTO sales.orders VALUES (2, 'us', 2)",
            "ALTER TABLE sales.orders ADD COLUMN paid boolean",
            "INSERT INTO sales.orders VALUES (3, 'us', 3, true)",
        )
        reader.wait_until(lambda: reader.count("cdc_orders") == 1, "public.orders")
        reader.wait_until(lambda: reader.count("cdc_sales__orders") == 3, "sales.orders")
        reader.wait_until(lambda: reader.count("source_schemas") == 3, "three records")
        got = records(reader)
        sources = {
            (r["source_schema"], r["source_table"])
            for r in reader.query("SELECT source FROM raw.cdc_sales__orders")
            for r in [orjson.loads(r["source"])]
            for r in [{"source_schema": r["schema"], "source_table": r["table"]}]
        }
    finally:
        reader.stop()
    assert_matches_history(dsn, tmp_path, "truth", at_least=3)
    assert cdc_table_name("orders", "sales") == "cdc_sales__orders"
    assert sources == {("sales", "orders")}
    summary = [
        (r["raw_table"], r["source_schema"], r["source_table"], r["version"], shape(r)) for r in got
    ]
    assert summary == [
        ("cdc_orders", "public", "orders", 1, [("id", "integer"), ("note", "text")]),
        (
            "cdc_sales__orders",
            "sales",
            "orders",
            1,
            [("id", "bigint"), ("region", "text"), ("total", "numeric")],
        ),
        (
            "cdc_sales__orders",
            "sales",
            "orders",
            2,
            [("id", "bigint"), ("region", "text"), ("total", "numeric"), ("paid", "boolean")],
        ),
    ]
    assert not got[1]["columns"][1]["nullable"]  # region NOT NULL, read in sales' table
