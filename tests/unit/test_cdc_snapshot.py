"""The snapshot plan, decided from the slot as PostgreSQL reports it and the saved state.

The same decisions against a real server (a lost slot, an interrupted snapshot, a restart)
are in tests/integration/test_cdc_reader.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg2 import sql

from shopstream.cdc.catalog import SlotInfo
from shopstream.cdc.pgoutput import Column, Relation
from shopstream.cdc.snapshot import SlotPlan, plan_slot, plan_snapshot, select_rows
from shopstream.cdc.state import SavedState

SLOT = "shopstream"
NO_SLOT = SlotInfo(exists=False)
SLOT_OK = SlotInfo(exists=True, wal_status="reserved", confirmed_flush_lsn=0x100)
SLOT_LOST = SlotInfo(exists=True, wal_status="lost")
NOTHING_SAVED = SavedState()
STARTED = SavedState(SLOT, snapshot_started=True, snapshot_done=False)
DONE = SavedState(SLOT, snapshot_started=True, snapshot_done=True)
NO_SNAPSHOT_NEEDED = SavedState(SLOT, snapshot_started=False, snapshot_done=True)  # "never"

RESUME = (False, False, False)  # (drop, create, snapshot)
CREATE = (False, True, False)
CREATE_AND_READ = (False, True, True)
REMAKE = (True, True, False)
REMAKE_AND_READ = (True, True, True)


@pytest.mark.parametrize(
    ("mode", "info", "saved", "expected"),
    [
        # No slot: make one; read the tables unless told never to.
        ("initial", NO_SLOT, NOTHING_SAVED, CREATE_AND_READ),
        ("when_needed", NO_SLOT, NOTHING_SAVED, CREATE_AND_READ),
        ("never", NO_SLOT, NOTHING_SAVED, CREATE),
        # A slot whose snapshot finished: stream from it, whatever the mode.
        ("initial", SLOT_OK, DONE, RESUME),
        ("when_needed", SLOT_OK, DONE, RESUME),
        ("never", SLOT_OK, DONE, RESUME),
        ("when_needed", SLOT_OK, NO_SNAPSHOT_NEEDED, RESUME),
        # A snapshot that was interrupted: its exported snapshot is gone, so start over.
        ("initial", SLOT_OK, STARTED, REMAKE_AND_READ),
        ("when_needed", SLOT_OK, STARTED, REMAKE_AND_READ),
        ("never", SLOT_OK, STARTED, RESUME),
        # A slot we know nothing of (made by someone else, state file lost): initial trusts
        # it, when_needed reads everything again.
        ("initial", SLOT_OK, NOTHING_SAVED, RESUME),
        ("when_needed", SLOT_OK, NOTHING_SAVED, REMAKE_AND_READ),
        ("never", SLOT_OK, NOTHING_SAVED, RESUME),
        # State saved for another slot name counts as nothing saved for this one.
        ("when_needed", SLOT_OK, SavedState("other", True, True), REMAKE_AND_READ),
        # A slot that lost its WAL streams nothing: made anew, then as if it never existed.
        ("initial", SLOT_LOST, DONE, REMAKE_AND_READ),
        ("initial", SLOT_LOST, NOTHING_SAVED, REMAKE_AND_READ),
        ("when_needed", SLOT_LOST, DONE, REMAKE_AND_READ),
        ("never", SLOT_LOST, DONE, REMAKE),
    ],
)
def test_slot_plan(
    mode: Any, info: SlotInfo, saved: SavedState, expected: tuple[bool, bool, bool]
) -> None:
    plan = plan_slot(mode, SLOT, info, saved)
    assert (plan.drop, plan.create, plan.snapshot) == expected
    assert plan.reason


def test_the_reason_names_what_was_found() -> None:
    assert "lost" in plan_slot("initial", SLOT, SLOT_LOST, DONE).reason
    assert "interrupted" in plan_slot("initial", SLOT, SLOT_OK, STARTED).reason
    assert plan_slot("initial", SLOT, SLOT_OK, DONE) == SlotPlan(
        drop=False, create=False, snapshot=False, reason="the slot exists"
    )


def test_tables_are_read_once_each_in_a_fixed_order() -> None:
    plan = plan_snapshot(
        [("sales", "orders"), ("public", "b"), ("public", "B"), ("public", "a"), ("public", "b")],
        "00000003-00000002-1",
        0x16B3748,
        500,
    )
    # By schema, then name, by code point (as PostgreSQL orders its `name` type).
    assert plan.tables == (("public", "B"), ("public", "a"), ("public", "b"), ("sales", "orders"))
    assert plan.chunk_rows == 500


def test_the_rows_are_read_in_the_exported_snapshot_as_one_transaction() -> None:
    plan = plan_snapshot([("public", "t")], "00000003-00000002-1", 0x16B3748, 500)
    assert plan.set_snapshot() == ("SET TRANSACTION SNAPSHOT %s", ("00000003-00000002-1",))
    tx = plan.transaction(now_us=1_700_000_000_123_456)
    # Every row a change of one pseudo-transaction at the consistent LSN, marked a snapshot.
    assert (tx.commit_lsn, tx.xid, tx.snapshot, tx.ts_ms) == (
        0x16B3748,
        None,
        "true",
        1_700_000_000_123,
    )
    assert tx.id_prefix == "00000000016B3748-r"


def _identifiers(query: sql.Composable) -> list[tuple[str, ...]]:
    if isinstance(query, sql.Identifier):
        return [query.strings]
    if isinstance(query, sql.Composed):
        return [ident for part in query.seq for ident in _identifiers(part)]
    return []


def test_the_query_reads_the_relations_columns_in_order_as_they_are() -> None:
    relation = Relation(
        None,
        16385,
        "Sales",
        'order "items"',
        "d",
        (Column(1, "id", 23, -1), Column(0, "Note", 25, -1), Column(0, "qty", 21, -1)),
    )
    query = select_rows(relation)
    # Quoted as identifiers (never pasted into the text), no casts, the table qualified.
    assert _identifiers(query) == [("id",), ("Note",), ("qty",), ("Sales", 'order "items"')]
    rendered = repr(query)
    assert "::" not in rendered and "WHERE" not in rendered
