"""The snapshot plan: what to do with the slot, and what to read in its exported snapshot.

Pure decisions, no database: the reader gathers the facts (the slot as PostgreSQL reports it,
the saved state, the publication's tables and their shapes) and carries the plan out.

Snapshot modes, as Debezium's: ``initial`` reads every table once, when the slot is created,
and again only if that read was interrupted; ``when_needed`` also reads again when nothing
says a read finished for this slot (a slot made by someone else, a lost state file);
``never`` streams from wherever the slot is. A slot whose WAL the server removed
(``wal_status = 'lost'``) can stream nothing: it is dropped and made anew, and the mode then
decides, as for a slot that never existed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from psycopg2 import sql

from shopstream.cdc.catalog import SlotInfo
from shopstream.cdc.changes import Transaction
from shopstream.cdc.pgoutput import Relation
from shopstream.cdc.state import SavedState

__all__ = ["SlotPlan", "SnapshotMode", "SnapshotPlan", "plan_slot", "plan_snapshot", "select_rows"]

SnapshotMode = Literal["initial", "never", "when_needed"]


@dataclass(frozen=True)
class SlotPlan:
    """What to do with the slot before streaming; ``reason`` says why, for the log."""

    drop: bool  # drop the slot that exists first
    create: bool  # create the slot (False: stream from the existing one)
    snapshot: bool  # create it exporting a snapshot, and read every table in that snapshot
    reason: str


def plan_slot(mode: SnapshotMode, slot: str, info: SlotInfo, saved: SavedState) -> SlotPlan:
    """Decide from the slot as the server reports it and the state saved for it."""
    lost = info.exists and info.wal_status == "lost"
    exists = info.exists and not lost
    # The state file is per slot, but an empty one names none: it records no snapshot.
    done = saved.snapshot_done and saved.slot == slot
    if mode == "never":
        needs = False
    elif mode == "initial":
        needs = not exists or (saved.snapshot_started and not done)
    else:  # when_needed
        needs = not exists or not done
    if lost:
        reason = "the slot lost its WAL"
    elif not exists:
        reason = "there was no slot yet"
    elif needs and saved.snapshot_started:
        reason = "the snapshot was interrupted"  # its exported snapshot is gone: start over
    elif needs:
        reason = "no snapshot is known to have finished for this slot"
    else:
        return SlotPlan(drop=False, create=False, snapshot=False, reason="the slot exists")
    return SlotPlan(drop=info.exists, create=True, snapshot=needs, reason=reason)


@dataclass(frozen=True)
class SnapshotPlan:
    """One read of every captured table, in one transaction on the slot's exported snapshot.

    Every row is a change of one pseudo-transaction at the slot's consistent LSN (the stream
    starts right after it), numbered in table order: the tables are read in a fixed order.
    """

    snapshot_name: str
    consistent_lsn: int
    tables: tuple[tuple[str, str], ...]
    chunk_rows: int

    def set_snapshot(self) -> tuple[str, tuple[str]]:
        """The statement (and its parameters) that puts a REPEATABLE READ transaction on the
        exported snapshot: the one consistent cut the stream continues from."""
        return "SET TRANSACTION SNAPSHOT %s", (self.snapshot_name,)

    def transaction(self, now_us: int) -> Transaction:
        """What the snapshot's rows share (``source.snapshot`` "true", change ids ``…-r``)."""
        return Transaction(self.consistent_lsn, now_us, None, snapshot="true")


def plan_snapshot(
    tables: Iterable[tuple[str, str]], snapshot_name: str, consistent_lsn: int, chunk_rows: int
) -> SnapshotPlan:
    """Tables by schema, then name (as PostgreSQL orders ``name`` values: by code point), once
    each."""
    return SnapshotPlan(snapshot_name, consistent_lsn, tuple(sorted(set(tables))), chunk_rows)


def select_rows(relation: Relation) -> sql.Composed:
    """The query reading a table's rows as pgoutput sends them: the relation's columns (no
    generated ones), in its order, each as it is (no cast: ``::text`` is not every type's
    output function: it strips a char(n)'s padding, prints a bool as "true")."""
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in relation.columns)
    return sql.SQL("SELECT {} FROM {}").format(
        columns, sql.Identifier(relation.namespace, relation.name)
    )
