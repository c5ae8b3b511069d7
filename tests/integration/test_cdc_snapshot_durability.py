"""A snapshot is recorded as finished only once every row it read is durable.

The state file's "snapshot done" is what makes the next start stream on instead of reading
the tables again; written while the snapshot's last batch was still on its way to the sink,
a crash then lost those rows for good (the slot's stream starts after the snapshot). The last
batch was not waited for when the snapshot's last row exactly filled a batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from tests.support.cdc import cdc_process, kill_reader, sink_stalled, wait_for, writer_child
from tests.support.collector import free_port
from tests.support.metrics import value

ROWS = 2_000  # exactly one batch


def snapshot_done(data_dir: Path) -> bool:
    try:
        return bool(json.loads((data_dir / "cdc-shopstream.json").read_text())["snapshot_done"])
    except (OSError, ValueError, KeyError):
        return False


def test_the_snapshot_is_done_only_once_its_rows_are_durable(postgres: Any, tmp_path: Path) -> None:
    dsn = postgres.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v text)")
        conn.execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1, %s) g", (ROWS,))
    data_dir = tmp_path / "cdc"
    data_dir.mkdir()
    port = free_port()
    env = {"SHOPSTREAM_CDC__SNAPSHOT_MODE": "initial"}
    # A transaction holding an xid: the slot (and its snapshot) waits for it to end, which
    # gives the test the moment to stall the sink before any snapshot row is handed over.
    holder = psycopg.connect(dsn)
    try:
        holder.execute("SELECT txid_current()")
        process = cdc_process(
            dsn,
            data_dir,
            SHOPSTREAM_CDC__BATCH_MAX_CHANGES=str(ROWS),
            SHOPSTREAM_CDC__METRICS_PORT=str(port),
            **env,
        )
        try:
            writer_child(process)
            wait_for(lambda: _creating_slot(dsn), "the reader creating its slot", 120)
            with sink_stalled(process):
                holder.commit()  # the slot is made; the snapshot reads every row
                url = f"http://127.0.0.1:{port}"
                wait_for(
                    lambda: (
                        value(url, "shopstream_cdc_changes_total", op="r", table="cdc_items")
                        == ROWS
                    ),
                    "the snapshot's rows handed to the sink",
                    120,
                )
                # Nothing of it is durable (the writer is stopped): it must not be done.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    assert not snapshot_done(data_dir), (
                        "the snapshot was recorded as done before its rows were durable: "
                        "a crash now loses them"
                    )
                    time.sleep(0.05)
        finally:
            kill_reader(process)
    finally:
        holder.close()

    # After the crash nothing is lost: the interrupted snapshot is read again.
    final = cdc_process(dsn, data_dir, "--idle-exit", "2", **env)
    assert final.wait(180) == 0, (data_dir / "cdc.log").read_text()[-3000:]
    con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    try:
        stored = con.execute(
            "SELECT count(DISTINCT after->>'id') FROM raw.cdc_items WHERE op = 'r'"
        ).fetchone()
    finally:
        con.close()
    assert stored == (ROWS,)


def _creating_slot(dsn: str) -> bool:
    """The reader's walsender is waiting (for the open transaction) to create the slot."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
            "AND query LIKE 'CREATE_REPLICATION_SLOT%%'"
        ).fetchone()
    return bool(row and row[0])
