"""The CDC reader against a real PostgreSQL (wal_level=logical) and a real DuckDB file."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from shopstream.generators.shop import run_order_workload, setup_shop_schema
from tests.support.cdc import (
    ReaderThread,
    assert_matches_history,
    assert_stays_below,
    cdc_process,
    first_commit_after,
    kill_reader,
    lsn_of,
    probe_slot,
    sample_slot,
    sink_stalled,
    slot_state,
    wait_for,
    wait_streaming,
)
from tests.support.collector import free_port


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def rows(reader: ReaderThread, table: str, where: str = "true") -> list[dict[str, Any]]:
    result = reader.query(f"SELECT * FROM raw.{table} WHERE {where} ORDER BY change_id")
    for row in result:
        for column in ("key", "before", "after", "source"):
            if row[column] is not None:
                row[column] = orjson.loads(row[column])
    return result


def test_snapshot_then_every_kind_of_change(postgres: Any, tmp_path: Path) -> None:
    execute(
        postgres.dsn,
        "CREATE TABLE orders (order_id bigint PRIMARY KEY, status text NOT NULL, "
        "total numeric(14,2), placed_at timestamptz DEFAULT now())",
        "CREATE TABLE audit (id int, note text)",  # no key: REPLICA IDENTITY FULL below
        "ALTER TABLE audit REPLICA IDENTITY FULL",
        "INSERT INTO orders (order_id, status, total) VALUES (1, 'PENDING', 10.50), "
        "(2, 'PENDING', 99999999999.99)",
    )
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="initial").start()
    try:
        reader.wait_until(lambda: reader.count("cdc_orders") == 2, "snapshot rows")
        execute(
            postgres.dsn,
            "INSERT INTO orders (order_id, status, total) VALUES (3, 'PENDING', 0.01)",
            "UPDATE orders SET status = 'PAID' WHERE order_id = 1",
            "UPDATE orders SET order_id = 20 WHERE order_id = 2",  # key change
            "DELETE FROM orders WHERE order_id = 3",
            "INSERT INTO audit VALUES (1, 'a')",
            "UPDATE audit SET note = 'b'",
            "TRUNCATE orders",
        )
        reader.wait_until(lambda: reader.count("cdc_orders", "op = 't'") == 1, "the truncate")
        reader.wait_until(lambda: reader.count("cdc_audit") == 2, "audit changes")
        orders = rows(reader, "cdc_orders")
        audit = rows(reader, "cdc_audit")
    finally:
        reader.stop()

    snapshot = [r for r in orders if r["op"] == "r"]
    assert sorted(r["after"]["total"] for r in snapshot) == ["10.50", "99999999999.99"]
    assert all(r["source"]["snapshot"] == "true" and r["before"] is None for r in snapshot)

    stream = [r for r in orders if r["op"] != "r"]
    assert [r["op"] for r in stream] == ["c", "u", "d", "c", "d", "t"]
    insert, paid, moved_from, moved_to, delete, truncate = stream
    assert insert["after"]["order_id"] == 3 and insert["key"] == {"order_id": 3}
    assert paid["after"]["status"] == "PAID" and paid["before"] is None  # default identity
    # A key change is a delete of the old key and a create of the new one (as Debezium).
    assert moved_from["before"] == {"order_id": 2, "status": None, "total": None, "placed_at": None}
    assert moved_from["key"] == {"order_id": 2} and moved_from["after"] is None
    assert moved_to["after"]["order_id"] == 20 and moved_to["key"] == {"order_id": 20}
    assert moved_from["lsn"] == moved_to["lsn"]
    assert delete["before"]["order_id"] == 3 and delete["after"] is None
    assert truncate["before"] is None and truncate["after"] is None
    for row in stream:
        source = row["source"]
        assert (source["db"], source["schema"], source["table"]) == (
            postgres.dbname,
            "public",
            "orders",
        )
        assert source["txId"] == row["tx_id"] and source["lsn"] == row["lsn"]
    # One transaction per statement; ids unique and ordered by commit and position.
    ids = [r["change_id"] for r in stream]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [i[-8:] for i in ids] == [
        "00000001",
        "00000001",
        "00000001",
        "00000002",
        "00000001",
        "00000001",
    ]

    # REPLICA IDENTITY FULL: the whole old row travels; with no primary key there is no key,
    # and an update stays an update.
    assert audit[1]["op"] == "u"
    assert audit[1]["before"] == {"id": 1, "note": "a"}
    assert audit[1]["after"] == {"id": 1, "note": "b"}
    assert audit[1]["key"] is None


def test_columns_added_and_dropped_mid_stream(postgres: Any, tmp_path: Path) -> None:
    execute(postgres.dsn, "CREATE TABLE products (product_id text PRIMARY KEY, price numeric)")
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="never").start()
    try:
        execute(
            postgres.dsn,
            "INSERT INTO products VALUES ('P1', 10)",
            "ALTER TABLE products ADD COLUMN storage_type text DEFAULT 'ROOM'",
            "INSERT INTO products VALUES ('P2', 20, 'FROZEN')",
            "ALTER TABLE products DROP COLUMN price",
            "UPDATE products SET storage_type = 'COLD' WHERE product_id = 'P1'",
        )
        reader.wait_until(lambda: reader.count("cdc_products") == 3, "three changes")
        after = [r["after"] for r in rows(reader, "cdc_products")]
    finally:
        reader.stop()
    assert after == [
        {"product_id": "P1", "price": "10"},
        {"product_id": "P2", "price": "20", "storage_type": "FROZEN"},
        {"product_id": "P1", "storage_type": "COLD"},
    ]


def test_table_added_to_the_publication_while_running(postgres: Any, tmp_path: Path) -> None:
    execute(
        postgres.dsn,
        "CREATE TABLE orders (order_id int PRIMARY KEY)",
        "CREATE TABLE payments (payment_id int PRIMARY KEY, amount numeric(14,2))",
    )
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="never", tables=["orders"]).start()
    try:
        execute(postgres.dsn, "INSERT INTO payments VALUES (1, 5)", "INSERT INTO orders VALUES (1)")
        reader.wait_until(lambda: reader.count("cdc_orders") == 1, "the order")
        assert reader.count("cdc_payments") == 0  # not published yet
        execute(
            postgres.dsn,
            "ALTER PUBLICATION shopstream ADD TABLE payments",
            "INSERT INTO payments VALUES (2, 7.25)",
        )
        reader.wait_until(lambda: reader.count("cdc_payments") == 1, "the new table's change")
        payment = rows(reader, "cdc_payments")[0]
    finally:
        reader.stop()
    assert payment["after"] == {"payment_id": 2, "amount": "7.25"}


def test_postgres_restart_mid_stream_loses_nothing(postgres_factory: Any, tmp_path: Path) -> None:
    """PostgreSQL restarts while changes stream and the sink is stalled: the slot is never
    confirmed past what is durable, and after a SIGKILL and a restart raw holds every change
    the server made (a wait for durability removed from the reader fails this test)."""
    server = postgres_factory()
    dsn = server.create_database("shop")
    execute(dsn, "CREATE TABLE orders (order_id int PRIMARY KEY, status text)")
    data_dir = tmp_path / "cdc"
    data_dir.mkdir()
    env = {"SHOPSTREAM_CDC__SNAPSHOT_MODE": "never", "SHOPSTREAM_CDC__HEARTBEAT_SECONDS": "1"}
    setup = cdc_process(dsn, data_dir, "--setup-only", **env)
    assert setup.wait(120) == 0, (data_dir / "cdc.log").read_text()
    execute(dsn, "SELECT pg_create_logical_replication_slot('truth', 'test_decoding')")
    process = cdc_process(dsn, data_dir, **env)
    try:
        wait_streaming(dsn, process)
        execute(dsn, "INSERT INTO orders SELECT g, 'PENDING' FROM generate_series(1, 500) g")
        first_half = lsn_of(dsn, "pg_current_wal_lsn()")
        wait_for(lambda: slot_state(dsn)[0] >= first_half, "the first half confirmed")
        with probe_slot(dsn) as probe, sink_stalled(process):
            stalled_at = lsn_of(dsn, "pg_current_wal_lsn()")
            for start in range(501, 1001, 100):  # five transactions stream in, none durable
                execute(
                    dsn,
                    f"INSERT INTO orders SELECT g, 'PENDING' FROM generate_series({start}, "
                    f"{start + 99}) g",
                )
            samples = sample_slot(dsn, 1.5)
            server.restart()
            # The reader reconnects and is sent the second half again; still nothing durable.
            wait_streaming(dsn, process)
            samples += sample_slot(dsn, 1.5)
            bound = first_commit_after(dsn, probe, stalled_at)
        assert bound is not None
        assert_stays_below(samples, bound)
    finally:
        kill_reader(process)
    assert "PostgreSQL connection lost" in (data_dir / "cdc.log").read_text()
    final = cdc_process(dsn, data_dir, "--idle-exit", "3", **env)
    assert final.wait(300) == 0, (data_dir / "cdc.log").read_text()[-3000:]
    assert_matches_history(dsn, data_dir, "truth", at_least=1000)


def test_a_transaction_of_many_batches(postgres: Any, tmp_path: Path) -> None:
    """One transaction of 250,000 rows: 13 batches of the default 20,000 (it was a million, 50
    batches, which go through the same code: the reader flushes mid-transaction and confirms
    only the commit); ids stay unique and ordered by position."""
    size = 250_000
    execute(
        postgres.dsn,
        "CREATE TABLE order_items (order_id int, line_no int, PRIMARY KEY (order_id, line_no))",
    )
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="never").start()
    try:
        execute(
            postgres.dsn,
            f"INSERT INTO order_items SELECT g, 1 FROM generate_series(1, {size}) g",
        )
        reader.wait_until(
            lambda: reader.count("cdc_order_items") == size, f"{size} changes", timeout=300
        )
        summary = reader.query(
            "SELECT count(DISTINCT change_id) AS ids, count(DISTINCT tx_id) AS txs, "
            "min(change_id) AS first, max(change_id) AS last FROM raw.cdc_order_items"
        )[0]
    finally:
        reader.stop()
    assert summary["ids"] == size and summary["txs"] == 1
    assert summary["first"].endswith("-00000001") and summary["last"].endswith(f"-{size:08d}")


def test_retained_wal_stays_bounded_when_captured_tables_are_quiet(
    postgres: Any, tmp_path: Path
) -> None:
    execute(
        postgres.dsn,
        "CREATE TABLE orders (order_id int PRIMARY KEY)",
        "CREATE TABLE page_cache (id bigserial PRIMARY KEY, body text)",
    )
    reader = ReaderThread(
        postgres.dsn, tmp_path, snapshot_mode="never", tables=["orders"], heartbeat_seconds=0.5
    ).start()
    try:
        generated = 0
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            for _ in range(8):  # ~100 MB of WAL in a table nobody captures
                conn.execute(
                    "INSERT INTO page_cache (body) SELECT repeat('x', 1000) "
                    "FROM generate_series(1, 12000)"
                )
            generated = conn.execute(
                "SELECT pg_current_wal_lsn() - %s::pg_lsn", (start,)
            ).fetchone()[0]  # type: ignore[index]
            # Heartbeats and idle confirmation move the slot; a checkpoint logs running
            # transactions, so restart_lsn can advance. Asked until it is bounded, for as
            # long as the fixed waits here used to give it and more (they were 5 s).
            deadline = time.monotonic() + 30
            while True:
                conn.execute("CHECKPOINT")
                retained = conn.execute(
                    "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                    "WHERE slot_name = 'shopstream'"
                ).fetchone()[0]  # type: ignore[index]
                if retained < 16 * 1024 * 1024 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        reader.stop()
    assert generated > 80 * 1024 * 1024
    assert retained < 16 * 1024 * 1024, f"slot retains {retained} bytes of {generated}"


@pytest.mark.timeout(900)
def test_sigkill_repeatedly_while_the_shop_runs(postgres: Any, tmp_path: Path) -> None:
    """Every change the server made is in raw after a final restart; duplicates only share ids.

    Four kills, two of them with the sink stalled, then the shop stops: the loop counts kills
    instead of running the shop for a fixed time (which gave as many kills, or fewer, on a
    busy machine, in more time)."""
    dsn = postgres.dsn
    setup_shop_schema(dsn)
    data_dir = tmp_path / "cdc"
    data_dir.mkdir()
    env = {"SHOPSTREAM_CDC__SNAPSHOT_MODE": "never"}
    setup = cdc_process(dsn, data_dir, "--setup-only", **env)
    assert setup.wait(120) == 0, (data_dir / "cdc.log").read_text()
    execute(dsn, "SELECT pg_create_logical_replication_slot('truth', 'test_decoding')")

    shop = ShopInThread(dsn)
    kills = stalls = 0
    try:
        while (kills < 4 or stalls < 2) and kills < 12:
            assert shop.is_alive(), "the shop stopped before the kills were done"
            process = cdc_process(dsn, data_dir, **env)
            try:
                wait_streaming(dsn, process)
                time.sleep(0.5 + kills % 3)
                if kills % 2:
                    # The sink stalls while the shop's changes stream in: the slot must not
                    # be confirmed past what is durable, whatever the reader reads meanwhile.
                    with probe_slot(dsn) as probe, sink_stalled(process):
                        stalled_at = lsn_of(dsn, "pg_current_wal_lsn()")
                        samples = sample_slot(dsn, 1.5)
                        bound = first_commit_after(dsn, probe, stalled_at)
                    assert_stays_below(samples, bound)
                    stalls += bound is not None
            finally:
                kill_reader(process)
            kills += 1
    finally:
        shop.stop()
    assert kills >= 4 and stalls >= 2
    final = cdc_process(dsn, data_dir, "--idle-exit", "3", **env)
    assert final.wait(300) == 0, (data_dir / "cdc.log").read_text()[-3000:]
    assert_matches_history(dsn, data_dir, "truth", at_least=1000)


class ShopInThread:
    """The shop's order workload (150 transactions/s) in a thread, until stop()."""

    def __init__(self, dsn: str) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(dsn)))
        self._thread.start()
        assert self._ready.wait(60), "the shop did not start"

    async def _run(self, dsn: str) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await run_order_workload(dsn, tps=150, duration=600, seed=7, stop=self._stop)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()


def test_sigterm_flushes_and_confirms_before_exit(postgres: Any, tmp_path: Path) -> None:
    execute(postgres.dsn, "CREATE TABLE payments (payment_id int PRIMARY KEY, amount numeric)")
    data_dir = tmp_path / "cdc"
    data_dir.mkdir()
    metrics_port = free_port()
    process = cdc_process(
        postgres.dsn,
        data_dir,
        SHOPSTREAM_CDC__SNAPSHOT_MODE="never",
        SHOPSTREAM_CDC__METRICS_PORT=str(metrics_port),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the slot the reader creates
            with psycopg.connect(postgres.dsn) as conn:
                if conn.execute("SELECT active FROM pg_replication_slots").fetchone():
                    break
            time.sleep(0.2)
        execute(postgres.dsn, "INSERT INTO payments SELECT g, g FROM generate_series(1, 20000) g")
        with psycopg.connect(postgres.dsn) as conn:
            written = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 60
        exposed = ""
        while time.monotonic() < deadline and "20000.0" not in exposed:
            time.sleep(0.5)
            exposed = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'shopstream_cdc_changes_total{op="c",table="cdc_payments"} 20000.0' in exposed
        assert "shopstream_cdc_slot_retained_wal_bytes" in exposed
        assert "shopstream_cdc_replication_lag_seconds" in exposed
        process.send_signal(signal.SIGTERM)
        # Done within the Kubernetes grace period (wait raises after 60 s).
        assert process.wait(60) == 0, (data_dir / "cdc.log").read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    # The reader's last status update is read by its walsender after the reader is gone:
    # once the slot is inactive, the walsender has read everything it was sent.
    wait_for(lambda: slot_state(postgres.dsn)[1] is None, "the walsender to release the slot")
    with psycopg.connect(postgres.dsn) as conn:
        behind = conn.execute(
            "SELECT %s::pg_lsn - confirmed_flush_lsn FROM pg_replication_slots "
            "WHERE slot_name = 'shopstream'",
            (written,),
        ).fetchone()[0]  # type: ignore[index]
    assert behind <= 0, "the slot was not confirmed up to the changes made durable"
    import duckdb

    con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    try:
        stored = con.execute("SELECT count(DISTINCT change_id) FROM raw.cdc_payments").fetchone()
    finally:
        con.close()
    assert stored == (20000,)


def test_when_needed_snapshots_again_after_the_slot_is_lost(postgres: Any, tmp_path: Path) -> None:
    execute(
        postgres.dsn,
        "CREATE TABLE users (user_id text PRIMARY KEY, grade text)",
        "INSERT INTO users VALUES ('U1', 'GOLD'), ('U2', 'VIP')",
    )
    first = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="when_needed").start()
    first.wait_until(lambda: first.count("cdc_users", "op = 'r'") == 2, "first snapshot")
    first.stop()
    # The slot is gone (dropped by an operator, or invalidated): whatever happened meanwhile
    # cannot be streamed, so the reader must read the tables again.
    execute(
        postgres.dsn,
        "SELECT pg_drop_replication_slot('shopstream')",
        "UPDATE users SET grade = 'SILVER' WHERE user_id = 'U1'",
    )
    second = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="when_needed").start()
    try:
        second.wait_until(lambda: second.count("cdc_users", "op = 'r'") == 4, "second snapshot")
        grades = second.query(
            "SELECT after->>'grade' AS grade FROM raw.cdc_users WHERE op = 'r' "
            "AND after->>'user_id' = 'U1' ORDER BY change_id"
        )
    finally:
        second.stop()
    assert [g["grade"] for g in grades] == ["GOLD", "SILVER"]


def test_the_snapshot_is_one_consistent_cut(
    postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed while the snapshot runs is not in it: it arrives as a change."""
    from shopstream.cdc import catalog

    execute(
        postgres.dsn,
        "CREATE TABLE a_orders (order_id int PRIMARY KEY, status text)",
        "CREATE TABLE b_payments (payment_id int PRIMARY KEY, status text)",
        "INSERT INTO a_orders VALUES (1, 'PENDING')",
        "INSERT INTO b_payments VALUES (1, 'WAITING')",
    )
    original = catalog.table_relation

    def meanwhile(conn: Any, schema: str, table: str) -> Any:
        if table == "b_payments":  # after a_orders was read, before b_payments is
            execute(postgres.dsn, "UPDATE b_payments SET status = 'PAID'")
        return original(conn, schema, table)

    monkeypatch.setattr(catalog, "table_relation", meanwhile)
    reader = ReaderThread(postgres.dsn, tmp_path, snapshot_mode="initial").start()
    try:
        reader.wait_until(lambda: reader.count("cdc_b_payments") == 2, "snapshot and change")
        payments = rows(reader, "cdc_b_payments")
    finally:
        reader.stop()
    assert [(r["op"], r["after"]["status"]) for r in payments] == [("r", "WAITING"), ("u", "PAID")]


def test_a_database_that_cannot_be_captured_is_a_clear_error(postgres: Any, tmp_path: Path) -> None:

    missing = postgres.server.dsn_for("no_such_shop")
    process = cdc_process(missing, tmp_path, "--idle-exit", "1")
    assert process.wait(120) == 1
    log = (tmp_path / "cdc.log").read_text()
    assert "no_such_shop" in log and "does not exist" in log
    assert "Traceback" not in log
