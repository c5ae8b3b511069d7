"""The CDC reader confirms to PostgreSQL only what is durable, even while the sink is stalled.

The reproduction of issue 6: transactions L1 and L2 open across a commit C the reader has
confirmed (so their Begin and changes carry LSNs older than C), L2 large; the sink stalls
(the warehouse writer process is stopped); L1 commits, then L2. A replication library that
answers keepalives by itself (psycopg2 since 2.8.4) moved the slot's confirmed_flush_lsn past
L1's commit, and a SIGKILL then lost L1's rows. A short wal_sender_timeout makes the server
ask for replies often, which is when that happened.

Each case runs in a fresh database of the session's server: wal_sender_timeout is set on the
database (ALTER DATABASE ... SET), which the reader's walsender and its own settings query
both take, so no server of its own is needed. Each case stalls the reader in a different
place, and each is the only one here that fails when that place stops answering the server:
waiting for two batches in flight to be durable (as-reported), replying to keepalives while
it reads a large batch (large-batches), and a sink that refuses a batch (back-pressure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cdc import (
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

WAL_SENDER_TIMEOUT_S = 2


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def one_round(dsn: str, data_dir: Path, env: dict[str, str], first_id: int, l2_rows: int) -> None:
    """Start the reader, play the scenario with its sink stalled, SIGKILL it."""
    process = cdc_process(dsn, data_dir, **env)
    try:
        wait_streaming(dsn, process)
        # Made before L1 and L2 begin: a slot is created only once no transaction is open.
        with probe_slot(dsn) as probe, psycopg.connect(dsn) as l1, psycopg.connect(dsn) as l2:
            # L1 and L2 begin (and write) before C: their changes carry older LSNs.
            l1.execute(
                "INSERT INTO items SELECT g, 'L1' FROM generate_series(%s::bigint, %s::bigint) g",
                (first_id, first_id + 9),
            )
            l2.execute(
                "INSERT INTO items SELECT g, 'L2' FROM generate_series(%s::bigint, %s::bigint) g",
                (first_id + 10, first_id + 9 + l2_rows),
            )
            execute(dsn, f"INSERT INTO items VALUES ({first_id + l2_rows + 50}, 'C')")
            after_c = lsn_of(dsn, "pg_current_wal_lsn()")
            # The reader confirms C (after catching up on the last round's rows).
            wait_for(lambda: slot_state(dsn)[0] >= after_c, "C confirmed", 180)
            walsender = wait_streaming(dsn, process)
            with sink_stalled(process):
                stalled_at = lsn_of(dsn, "pg_current_wal_lsn()")
                l1.commit()
                l2.commit()
                # Twice the server's timeout: it asks for replies and must get them, each
                # carrying no more than what is durable (C at most).
                samples = sample_slot(dsn, 2 * WAL_SENDER_TIMEOUT_S + 0.5)
                l1_end = first_commit_after(dsn, probe, stalled_at)
            assert l1_end is not None
            assert_stays_below(samples, l1_end, walsender)
    finally:
        kill_reader(process)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("env", "rounds", "l2_rows"),
    [
        # As reported: default batches of 20,000; two are handed over, then the reader
        # waits for durability. L2 is 2.5 times what is in flight then: the rest waits in
        # the server, behind which its keepalives queue. Two rounds, as reported: the second
        # reader starts with the first round's lost transactions to read again.
        pytest.param({}, 2, 100_000, id="as-reported"),
        # Large batches: the reader reads most of L2 (seconds) before it waits; meanwhile the
        # server asks for replies that sit behind megabytes of data. (One round: a second one
        # repeats it after a restart, which as-reported covers.)
        pytest.param(
            {"SHOPSTREAM_CDC__BATCH_MAX_CHANGES": "100000"}, 1, 300_000, id="large-batches"
        ),
        # A sink queue smaller than two batches: the reader waits in back-pressure, one
        # batch handed over and the next refused. (With an L2 of 30,000 the reader was not held
        # there long enough for a silent wait to be noticed: 100,000 is.)
        pytest.param(
            {
                "SHOPSTREAM_CDC__BATCH_MAX_CHANGES": "2000",
                "SHOPSTREAM_SINK__MAX_QUEUE_ROWS": "3000",
            },
            1,
            100_000,
            id="back-pressure",
        ),
    ],
)
def test_a_commit_is_never_confirmed_before_it_is_durable(
    postgres: Any, tmp_path: Path, env: dict[str, str], rounds: int, l2_rows: int
) -> None:
    dsn = postgres.dsn
    execute(
        dsn,
        f"ALTER DATABASE {postgres.dbname} SET wal_sender_timeout = '{WAL_SENDER_TIMEOUT_S}s'",
        "CREATE TABLE items (id bigint PRIMARY KEY, tx text NOT NULL)",
    )
    data_dir = tmp_path / "cdc"
    data_dir.mkdir()
    env = {
        "SHOPSTREAM_CDC__SNAPSHOT_MODE": "never",
        "SHOPSTREAM_CDC__HEARTBEAT_SECONDS": "1",
        **env,
    }
    # The record of what happened starts first: the reader's slot, made when it first
    # starts, begins no earlier, and nothing is written before it streams.
    execute(dsn, "SELECT pg_create_logical_replication_slot('truth', 'test_decoding')")

    for round_no in range(rounds):
        one_round(dsn, data_dir, env, round_no * (l2_rows + 100), l2_rows)

    final = cdc_process(dsn, data_dir, "--idle-exit", "3", **env)
    assert final.wait(300) == 0, (data_dir / "cdc.log").read_text()[-3000:]
    assert_matches_history(dsn, data_dir, "truth", at_least=rounds * (l2_rows + 11))
