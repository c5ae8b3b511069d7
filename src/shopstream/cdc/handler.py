"""The change handler: pgoutput messages (and snapshot rows) → raw CDC columns, dead letters.

No database: the key columns of the captured tables come from an injected function (the
reader asks the catalogue), as do the base types of domains (``base_types``, optional). What
it gathers is taken as a :class:`Batch`, with the LSN that is safe once the batch is durable:
the end of the last transaction it completes (or of a heartbeat of ours).

Each Relation (and each table a snapshot reads) is described (``describe``, the reader asks
the catalogue) and, when its shape is not the last recorded one, a row of
``raw.source_schemas`` joins the batch before the changes under it, in the same
batch or an earlier one, so it is durable no later than they are (the LSN is confirmed only
after them). The row is made at the first change after the Relation (pgoutput sends a
Relation with no LSN of its own): that change's LSN is the version's ``first_lsn``.

A change that cannot be converted goes to ``raw.dead_letter`` with its reason and keeps its
place (its position in the transaction, so its neighbours' change ids do not move); the
transaction goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shopstream.cdc.changes import ChangeColumns, Transaction
from shopstream.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Decoder,
    Delete,
    Insert,
    LogicalMessage,
    ProtocolError,
    Relation,
    Truncate,
    Update,
    UserType,
)
from shopstream.cdc.schemas import SchemaVersion, SchemaVersions, TableSchema
from shopstream.cdc.stats import ReaderStats
from shopstream.cdc.values import RowDecoder, RowDecoders, RowValues
from shopstream.events.change import UNAVAILABLE
from shopstream.events.codes import ReasonCode
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import SOURCE_SCHEMAS
from shopstream.observability import metrics, tracing

__all__ = ["HEARTBEAT_PREFIX", "Batch", "ChangeHandler", "KeyLookup"]

#: Links one ``cdc.durable`` span keeps to its transactions' spans (the SDK's default limit).
_MAX_LINKS = 128
#: The prefix of the logical messages the reader writes as heartbeats.
HEARTBEAT_PREFIX = "shopstream.heartbeat"

#: Returns the key columns per (schema, table) of the captured tables (see
#: :func:`shopstream.cdc.catalog.primary_keys`).
KeyLookup = Callable[[], Mapping[tuple[str, str], Sequence[str]]]
#: Describes a relation for its schema record (:func:`shopstream.cdc.catalog.describe_relation`).
Describe = Callable[[Relation], TableSchema]


@dataclass(frozen=True)
class Batch:
    """What was gathered since the last take: rows per raw table (and ``dead_letter``), how
    many, and the LSN that is safe once they are durable (None: none is yet).
    ``schemas``: the versions its ``raw.source_schemas`` rows record (durable with it)."""

    rows: dict[str, Any]
    count: int
    safe_lsn: int | None
    schemas: dict[str, SchemaVersion] | None = None
    #: The ``cdc.transaction`` spans of the transactions committed in it (tracing on).
    transactions: tuple[trace.SpanContext, ...] = ()


class ChangeHandler:
    """One session's decoding state: the decoder, the open transaction, the current batch."""

    def __init__(
        self,
        db: str,
        primary_keys: KeyLookup,
        *,
        base_types: Callable[[Collection[int]], Mapping[int, int]] | None = None,
        describe: Describe | None = None,
        recorded: Mapping[str, SchemaVersion] | None = None,
        stats: ReaderStats | None = None,
    ) -> None:
        """``describe``: how to describe a relation for ``raw.source_schemas`` (None: no
        schema records); ``recorded``: the last durable version per raw table."""
        self.stats = stats if stats is not None else ReaderStats()
        self.decoder = Decoder()
        self.keys: dict[tuple[str, str], Sequence[str]] = {}
        self.row_decoders = RowDecoders(self.decoder.types, self.keys, base_types)
        self.columns = ChangeColumns(db)
        self.dead_letters: list[dict[str, Any]] = []
        #: The transaction whose changes are arriving (between Begin and Commit).
        self.tx: Transaction | None = None
        self.safe_lsn: int | None = None
        #: When the current batch started (the last take): batches wait at most batch_max_ms.
        self.started = time.monotonic()
        self._primary_keys = primary_keys
        self._describe = describe
        self.versions = SchemaVersions(recorded)
        #: Rows of raw.source_schemas gathered for the current batch, and their versions.
        self.schema_rows: list[dict[str, Any]] = []
        self._schema_versions: dict[str, SchemaVersion] = {}
        #: Relations received whose schema is still to be recorded, at their next change.
        self._unrecorded: dict[int, Relation] = {}
        #: Tracing on: when the open transaction's Begin arrived (ns), and the spans of the
        #: transactions committed in the current batch (as many as a span may link to).
        self._tx_began = 0
        self._tx_spans: list[trace.SpanContext] = []

    def refresh_keys(self) -> None:
        self.keys.update(self._primary_keys())

    @property
    def pending(self) -> int:
        """Changes, dead letters and schema records gathered and not yet taken."""
        return self.columns.count + len(self.dead_letters) + len(self.schema_rows)

    # -- the stream ---------------------------------------------------------------------------

    def handle(self, payload: bytes, lsn: int) -> None:
        """One XLogData payload, sent at ``lsn`` (its record's LSN)."""
        try:
            message = self.decoder.decode(payload)
        except ProtocolError as exc:
            self.dead_letter(f"undecodable pgoutput message: {exc}", payload.hex(), None)
            return
        tx = self.tx
        # Row changes first: they are nearly every message.
        if isinstance(message, Insert | Update | Delete):
            if tx is None:
                raise ProtocolError(f"{type(message).__name__} outside a transaction")
            self._row_change(message, tx, lsn, payload)
        elif isinstance(message, Begin):
            self.tx = Transaction.from_pg(message.final_lsn, message.commit_ts, message.xid)
            if tracing.enabled:
                self._tx_began = time.time_ns()
        elif isinstance(message, Commit):
            if tx is not None:
                self.stats.transactions += 1
                self.stats.last_commit_us = tx.commit_us
                if tracing.enabled:
                    self._trace_transaction(tx, message.end_lsn)
            self.tx = None
            self.safe_lsn = message.end_lsn
            self.stats.last_change_at = time.monotonic()
        elif isinstance(message, Relation):
            self.columns.forget(message)
            if (message.namespace, message.name) not in self.keys:
                self.refresh_keys()  # a table added to the publication meanwhile
            if self._describe is not None:
                # Recorded at the change it precedes, whose LSN is the version's first_lsn.
                self._unrecorded[message.id] = message
        elif isinstance(message, Truncate):
            if tx is None:
                raise ProtocolError("Truncate outside a transaction")
            for relation in message.relations:
                if self._unrecorded:
                    self._record_first(relation, lsn)
                self.columns.add(relation, None, tx, "t", lsn, None, None)
        elif isinstance(message, LogicalMessage) and message.prefix == HEARTBEAT_PREFIX and not tx:
            # Our own heartbeat: nothing before it is pending, so its LSN is safe.
            self.safe_lsn = max(self.safe_lsn or 0, lsn)
        # Origin and Type need nothing here: the decoder keeps Type metadata itself.

    def _trace_transaction(self, tx: Transaction, end_lsn: int) -> None:
        """A ``cdc.transaction`` span, from its Begin to its Commit arriving here."""
        span = tracing.TRACER.start_span(
            "cdc.transaction",
            start_time=self._tx_began or None,
            attributes={
                "cdc.xid": tx.xid if tx.xid is not None else -1,
                "cdc.commit_lsn": f"{tx.commit_lsn >> 32:X}/{tx.commit_lsn & 0xFFFFFFFF:X}",
                "cdc.end_lsn": f"{end_lsn >> 32:X}/{end_lsn & 0xFFFFFFFF:X}",
                "cdc.changes": tx.position,
            },
        )
        span.end()
        self._tx_began = 0
        if len(self._tx_spans) < _MAX_LINKS:
            self._tx_spans.append(span.get_span_context())

    def _row_change(
        self, message: Insert | Update | Delete, tx: Transaction, lsn: int, payload: bytes
    ) -> None:
        relation = message.relation
        if self._unrecorded:
            self._record_first(relation, lsn)
        decoder = self.row_decoders.get(relation)
        before: dict[str, Any] | None
        after: dict[str, Any] | None
        try:
            if isinstance(message, Insert):
                op, before, after = "c", None, decoder.row(message.new)
            elif isinstance(message, Update):
                op = "u"
                before = decoder.row(message.old) if message.old is not None else None
                after = decoder.row(message.new)
                if before is not None:
                    if message.old_kind == "O" and UNCHANGED_TOAST in message.new:
                        _fill_unchanged(after, before)
                    if decoder.key_columns and decoder.key(before) != decoder.key(after):
                        # A key change is, as in Debezium, a delete of the old key and a
                        # create of the new one, at the same LSN.
                        self.columns.add(relation, decoder, tx, "d", lsn, before, None)
                        op, before = "c", None
            else:
                op, before, after = "d", decoder.row(message.old), None
        except ValueError as exc:
            tx.position += 1  # the change keeps its place; its id is never reused
            self.dead_letter(str(exc), payload.hex(), relation, lsn=lsn, tx=tx)
            return
        self.columns.add(relation, decoder, tx, op, lsn, before, after)

    # -- the snapshot -------------------------------------------------------------------------

    def snapshot_table(
        self, relation: Relation, types: Mapping[int, UserType], lsn: int | None = None
    ) -> RowDecoder:
        """Get ready for a table's snapshot rows (its Relation and Type, read from the
        catalogue as pgoutput would send them): the decoder for them. Its schema is recorded
        as of ``lsn`` (the snapshot's), even when the table has no rows."""
        self.decoder.types.update(types)
        self.record_schema(relation, lsn)
        return self.row_decoders.get(relation)

    def _record_first(self, relation: Relation, lsn: int) -> None:
        """The first change after ``relation``'s Relation message: record its schema now."""
        if self._unrecorded.pop(relation.id, None) is not None:
            self.record_schema(relation, lsn)

    def record_schema(self, relation: Relation, lsn: int | None) -> None:
        """A row of raw.source_schemas when ``relation``'s shape is new (see the module)."""
        if self._describe is None:
            return
        schema = self._describe(relation)
        row = self.versions.observe(schema, lsn, datetime.now(UTC))
        if row is not None:
            self.schema_rows.append(row)
            self._schema_versions[schema.raw_table] = self.versions.last[schema.raw_table]

    def snapshot_row(
        self, relation: Relation, decoder: RowDecoder, values: RowValues, tx: Transaction
    ) -> None:
        """One row read in the snapshot: a change "r" at the snapshot's LSN."""
        try:
            after = decoder.row(values)
        except ValueError as exc:
            self.dead_letter(str(exc), repr(values), relation)
            return
        self.columns.add(relation, decoder, tx, "r", tx.commit_lsn, None, after)
        self.stats.snapshot_rows += 1

    # -- batches ------------------------------------------------------------------------------

    def dead_letter(
        self,
        reason: str,
        payload: str,
        relation: Relation | None,
        *,
        lsn: int | None = None,
        tx: Transaction | None = None,
    ) -> None:
        context: dict[str, Any] = {"lsn": lsn, "tx_id": tx.xid if tx else None}
        if relation is not None:
            context["table"] = f"{relation.namespace}.{relation.name}"
        self.dead_letters.append(dead_letter_row("cdc", reason, payload, context))
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.labels("cdc", ReasonCode.UNDECODABLE).inc()

    def take(self) -> Batch | None:
        """Hand over what was gathered (None when there is nothing, not even a safe LSN) and
        start a new batch."""
        count = self.pending
        safe_lsn = self.safe_lsn
        if not count and safe_lsn is None:
            return None
        self._publish_counts()
        now = datetime.now(UTC)
        rows: dict[str, Any] = {
            table: batch.to_arrow(now) for table, batch in self.columns.take().items()
        }
        if self.dead_letters:
            rows["dead_letter"] = self.dead_letters
            self.dead_letters = []
        schemas = None
        if self.schema_rows:
            rows[SOURCE_SCHEMAS] = self.schema_rows
            schemas = self._schema_versions
            self.schema_rows, self._schema_versions = [], {}
        self.safe_lsn = None
        self.started = time.monotonic()
        spans: tuple[trace.SpanContext, ...] = ()
        if self._tx_spans:
            spans, self._tx_spans = tuple(self._tx_spans), []
        return Batch(rows, count, safe_lsn, schemas, spans)

    def _publish_counts(self) -> None:
        """Count a batch's changes per table and op once, here: per change, even a dict
        update costs ~9% of the reader and a labelled Prometheus counter ~20%."""
        for table, batch in self.columns.tables.items():
            for op, n in Counter(batch.op).items():
                metrics.CDC_CHANGES.labels(table, op).inc(n)
                if op != "r":  # snapshot reads are counted as they are read
                    self.stats.changes += n


def _fill_unchanged(after: dict[str, Any], before: dict[str, Any]) -> None:
    """With REPLICA IDENTITY FULL the old row carries TOASTed values the new one left out."""
    for column, value in after.items():
        if value == UNAVAILABLE:
            old = before.get(column)
            if old is not None and old != UNAVAILABLE:
                after[column] = old
