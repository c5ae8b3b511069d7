"""The CDC reader: PostgreSQL logical replication (pgoutput) → the sink → ``raw.cdc_<table>``.

Delivery is at-least-once with deterministic change ids: an LSN is confirmed to PostgreSQL
only after every change up to it is durable in the sink, so a crash anywhere makes the
server send again from the last confirmed transaction, and staging drops the repeats by
``change_id`` (commit LSN + position in the transaction).

Protocol version 1 is used on purpose: the server then decodes a transaction only once it
has committed, spilling large ones to its own disk, and sends it whole, in commit order, with
its commit LSN up front in Begin. That gives change ids at once and keeps our memory flat
however large the transaction (we flush mid-transaction; the LSN is confirmed only after its
Commit). Streaming (v2) would make us hold or spill in-progress transactions ourselves.

The stream runs on libpq directly (:mod:`shopstream.cdc.stream`), so that no library reports
an LSN on our behalf: every status update carries the LSN this reader made durable, and the
server's own position (a keepalive's WAL end) only when nothing is pending here.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions

from shopstream.cdc import catalog
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
)
from shopstream.cdc.stream import ReplicationStream
from shopstream.cdc.values import RowDecoders
from shopstream.config import CdcSettings
from shopstream.events.change import UNAVAILABLE
from shopstream.observability import metrics
from shopstream.sinks.base import Sink, SinkUnavailable
from shopstream.sinks.warehouse import dead_letter_row
from shopstream.warehouse.base import WarehouseError

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "shopstream.heartbeat"
_MAX_IN_FLIGHT = 2  # batches written but not yet durable; bounds memory
_WAIT_STEP = 0.1  # seconds between status checks while waiting on the sink
#: SQLSTATE classes no retry can fix: privileges/undefined objects, authentication, no such
#: database. Anything else (restart, network, a slot still held by a dying reader) is retried.
_PERMANENT_ERROR_CLASSES = ("42", "28", "3D")


@dataclass
class ReaderStats:
    """Running figures for the live status line and the summary."""

    changes: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    snapshot_rows: int = 0
    dead_letters: int = 0
    confirmed_lsn: int = 0
    last_commit_us: int | None = None
    lag_bytes: int | None = None
    retained_bytes: int | None = None
    reconnects: int = 0
    state: str = "starting"
    last_change_at: float = field(default_factory=time.monotonic)

    @property
    def lag_seconds(self) -> float | None:
        if self.last_commit_us is None:
            return None
        return max(0.0, time.time() - self.last_commit_us / 1_000_000)


class _Batch:
    """Changes gathered since the last flush, and the LSN that is safe once they are durable."""

    __slots__ = ("columns", "dead_letters", "safe_lsn", "started")

    def __init__(self, columns: ChangeColumns) -> None:
        self.columns = columns
        self.dead_letters: list[dict[str, Any]] = []
        self.safe_lsn: int | None = None
        self.started = time.monotonic()

    @property
    def count(self) -> int:
        return self.columns.count + len(self.dead_letters)

    def rows(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        rows: dict[str, Any] = {
            table: batch.to_arrow(now) for table, batch in self.columns.take().items()
        }
        if self.dead_letters:
            rows["dead_letter"] = self.dead_letters
            self.dead_letters = []
        return rows


class ChangeReader:
    def __init__(
        self,
        dsn: str,
        settings: CdcSettings,
        sink: Sink,
        *,
        state_dir: Path,
        idle_exit: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings
        self.sink = sink
        self.state_path = state_dir / f"cdc-{settings.slot_name}.json"
        self.idle_exit = idle_exit
        self.stats = ReaderStats()
        self._in_flight: deque[tuple[Future[Any], int | None, int]] = deque()
        self._columns = ChangeColumns("")
        self._batch = _Batch(self._columns)
        self._tx: Transaction | None = None
        self._keys: dict[tuple[str, str], list[str]] = {}
        #: The replication stream once it streams: waits keep it answered (see _keep_alive).
        self._repl: ReplicationStream | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Read until ``stop`` is set (or idle-exit); reconnect with backoff on failures."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self._session(stop)
                return
            except (psycopg2.Error, psycopg.Error, WarehouseError, SinkUnavailable) as exc:
                # A lost connection, or a sink that could not make a batch durable: either
                # way nothing past the last confirmed LSN counts, and the server sends it
                # again on the next session.
                if _permanent(exc):
                    detail = str(getattr(exc, "pgerror", None) or exc).strip()
                    raise catalog.CdcSetupError(
                        f"PostgreSQL refused the CDC reader: {detail}. Check the DSN, the "
                        "database and the user's REPLICATION right."
                    ) from exc
                self.stats.reconnects += 1
                self.stats.state = "reconnecting"
                metrics.CDC_RECONNECTS.inc()
                text = str(exc).strip()
                log.warning(
                    "%s (%s); starting again from the last confirmed LSN in %.1f s",
                    "sink failed"
                    if isinstance(exc, WarehouseError | SinkUnavailable)
                    else "PostgreSQL connection lost",
                    text.splitlines()[0] if text else type(exc).__name__,
                    backoff,
                )
                self._drop_unconfirmed()
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 0.5

    def _drop_unconfirmed(self) -> None:
        """After a lost connection the server resends from the last confirmed LSN."""
        self._columns.take()
        self._batch = _Batch(self._columns)
        self._tx = None
        # Batches already handed to the sink still land; the server resends them too, and
        # staging drops the repeats by change_id.
        self._in_flight.clear()

    def _session(self, stop: threading.Event) -> None:
        cfg = self.settings
        admin = catalog.connect(self.dsn)
        admin.autocommit = False
        try:
            catalog.check_server(admin)
            catalog.ensure_publication(admin, cfg.publication_name, cfg.schema_name, cfg.tables)
            self._db = admin.get_dsn_parameters().get("dbname", "")
            self._columns = ChangeColumns(self._db)
            self._batch = _Batch(self._columns)
            self._decoder = Decoder()
            # The catalogue resolves domains and arrays of them, for the stream and snapshot.
            self._row_decoders = RowDecoders(
                self._decoder.types, self._keys, functools.partial(catalog.base_types, admin)
            )
            self._refresh_keys(admin)
            replication = ReplicationStream(
                self.dsn,
                options=catalog.SESSION_OPTIONS,
                status_interval=_status_interval(admin, cfg.status_interval_seconds),
            )
            try:
                self._prepare_slot(admin, replication, stop)
                if stop.is_set():
                    return
                self._stream(admin, replication, stop)
            finally:
                self._repl = None
                replication.close()
        finally:
            admin.close()

    # -- slot and snapshot -------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _save_state(self, **values: Any) -> None:
        state = self._load_state()
        state.update(values)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    def _prepare_slot(
        self,
        admin: psycopg2.extensions.connection,
        replication: ReplicationStream,
        stop: threading.Event,
    ) -> None:
        cfg = self.settings
        info = catalog.slot_info(admin, cfg.slot_name)
        state = self._load_state()
        if info.exists and info.wal_status == "lost":
            log.warning("slot %s lost its WAL; dropping and recreating it", cfg.slot_name)
            catalog.drop_slot(admin, cfg.slot_name)
            info = catalog.SlotInfo(exists=False)
        snapshot_done = bool(state.get("snapshot_done")) and state.get("slot") == cfg.slot_name
        needs_snapshot = {
            "never": False,
            "initial": not info.exists or (state.get("snapshot_started") and not snapshot_done),
            "when_needed": not info.exists or not snapshot_done,
        }[cfg.snapshot_mode]
        if info.exists and needs_snapshot:
            # An interrupted snapshot, or (when_needed) a slot we know nothing of: its
            # exported snapshot is gone, so start over with a new one.
            catalog.drop_slot(admin, cfg.slot_name)
        elif info.exists:
            return
        if needs_snapshot:
            # The exported snapshot lives until the replication connection's next command
            # (START_REPLICATION), so the snapshot is read before streaming starts.
            consistent, snapshot_name = replication.create_slot(cfg.slot_name, export_snapshot=True)
            assert snapshot_name is not None
            at = catalog.format_lsn(consistent)
            log.info("created slot %s at %s with a snapshot", cfg.slot_name, at)
            self._save_state(slot=cfg.slot_name, snapshot_started=True, snapshot_done=False)
            self._snapshot(admin, snapshot_name, consistent, stop)
            if not stop.is_set():
                self._save_state(snapshot_done=True)
        else:
            replication.create_slot(cfg.slot_name, export_snapshot=False)
            self._save_state(slot=cfg.slot_name, snapshot_started=False, snapshot_done=True)
            log.info("created slot %s (no snapshot)", cfg.slot_name)

    def _snapshot(
        self,
        admin: psycopg2.extensions.connection,
        snapshot_name: str,
        consistent_lsn: int,
        stop: threading.Event,
    ) -> None:
        """Read every captured table as of the slot's exported snapshot, in chunks."""
        self.stats.state = "snapshot"
        tables = catalog.publication_tables(admin, self.settings.publication_name)
        reader = catalog.connect(self.dsn)
        try:
            reader.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with reader.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
            now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
            tx = Transaction(consistent_lsn, now_us, None, snapshot="true")
            for schema, table in tables:
                # Catalogue reads on the admin connection: the reader keeps one transaction, the
                # exported snapshot, for every table.
                relation, types = catalog.table_relation(admin, schema, table)
                self._decoder.types.update(types)
                decoder = self._row_decoders.get(relation)
                # Each value as its type's output function prints it, as pgoutput sends it.
                chunk_rows = self.settings.snapshot_chunk_rows
                with catalog.snapshot_rows(reader, relation, chunk_rows) as cur:
                    for values in cur:
                        try:
                            after = decoder.row(values)
                        except ValueError as exc:
                            self._dead_letter(str(exc), repr(values), relation)
                            continue
                        self._columns.add(relation, decoder, tx, "r", consistent_lsn, None, after)
                        self.stats.snapshot_rows += 1
                        if self._batch.count >= self.settings.batch_max_changes:
                            self._flush(wait=False)
                            self._settle(block=len(self._in_flight) >= _MAX_IN_FLIGHT)
                        if stop.is_set():
                            return
            reader.rollback()
        finally:
            reader.close()
        self._flush(wait=True)
        log.info("snapshot done: %d rows from %d tables", self.stats.snapshot_rows, len(tables))

    # -- streaming --------------------------------------------------------------------------

    def _refresh_keys(self, admin: psycopg2.extensions.connection) -> None:
        tables = catalog.publication_tables(admin, self.settings.publication_name)
        self._keys.update(catalog.primary_keys(admin, tables))

    def _stream(
        self,
        admin: psycopg2.extensions.connection,
        replication: ReplicationStream,
        stop: threading.Event,
    ) -> None:
        cfg = self.settings
        options = {"proto_version": "1", "publication_names": cfg.publication_name}
        if catalog.server_version(admin) >= 140000:
            options["messages"] = "true"  # heartbeats arrive as logical messages
        replication.start(cfg.slot_name, options)
        # The server resends from the slot's confirmed LSN, so that much is durable; status
        # updates start from it (a lower flush LSN could move the slot backwards).
        info = catalog.slot_info(admin, cfg.slot_name)
        self.stats.confirmed_lsn = max(self.stats.confirmed_lsn, info.confirmed_flush_lsn or 0)
        replication.durable_lsn = self.stats.confirmed_lsn
        self._repl = replication
        self.stats.state = "streaming"
        log.info("streaming changes from slot %s", cfg.slot_name)
        last_heartbeat = last_slot_check = time.monotonic()
        started = time.monotonic()
        self.stats.last_change_at = started
        read = replication.read
        handle = self._handle
        while not stop.is_set():
            message = read()
            if message is not None:
                handle(message[1], message[0], admin)
                if self._columns.count >= cfg.batch_max_changes:
                    self._flush(wait=False)
                    self._settle(block=len(self._in_flight) >= _MAX_IN_FLIGHT)
                continue
            # Nothing to read right now: housekeeping, then wait for the socket.
            now = time.monotonic()
            if self._batch.count and now - self._batch.started >= cfg.batch_max_ms / 1000:
                self._flush(wait=False)
            self._settle(block=False)
            if self._tx is None and not self._in_flight and not self._batch.count:
                self._confirm_idle(replication)
            replication.keep_alive()
            if now - last_heartbeat >= cfg.heartbeat_seconds:
                last_heartbeat = now
                if now - self.stats.last_change_at >= cfg.heartbeat_seconds:
                    self._heartbeat(admin)
            if now - last_slot_check >= 5:
                last_slot_check = now
                self._check_slot(admin)
            if (
                self.idle_exit is not None
                and self._tx is None
                and not self._in_flight
                and not self._batch.count
                and now - self.stats.last_change_at >= self.idle_exit
            ):
                log.info("no changes for %.1f s: stopping (--idle-exit)", self.idle_exit)
                break
            replication.wait(0.05)
        # Stop: make what we have durable and confirm it, within the grace period.
        self.stats.state = "stopping"
        self._flush(wait=False)
        self._settle(block=True, drain=True)
        replication.send_status()
        self.stats.state = "stopped"

    def _handle(self, payload: bytes, lsn: int, admin: psycopg2.extensions.connection) -> None:
        try:
            message = self._decoder.decode(payload)
        except ProtocolError as exc:
            self._dead_letter(f"undecodable pgoutput message: {exc}", payload.hex(), None)
            return
        tx = self._tx
        # Row changes first: they are nearly every message.
        if isinstance(message, Insert | Update | Delete):
            if tx is None:
                raise ProtocolError(f"{type(message).__name__} outside a transaction")
            relation = message.relation
            decoder = self._row_decoders.get(relation)
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
                            self._columns.add(relation, decoder, tx, "d", lsn, before, None)
                            op, before = "c", None
                else:
                    op, before, after = "d", decoder.row(message.old), None
            except ValueError as exc:
                tx.position += 1  # the change keeps its place; its id is never reused
                self._dead_letter(str(exc), payload.hex(), relation, lsn=lsn, tx=tx)
                return
            self._columns.add(relation, decoder, tx, op, lsn, before, after)
        elif isinstance(message, Begin):
            self._tx = Transaction.from_pg(message.final_lsn, message.commit_ts, message.xid)
        elif isinstance(message, Commit):
            if tx is not None:
                self.stats.transactions += 1
                self.stats.last_commit_us = tx.commit_us
            self._tx = None
            self._batch.safe_lsn = message.end_lsn
            self.stats.last_change_at = time.monotonic()
        elif isinstance(message, Relation):
            self._columns.forget(message)
            if (message.namespace, message.name) not in self._keys:
                self._refresh_keys(admin)
        elif isinstance(message, Truncate):
            if tx is None:
                raise ProtocolError("Truncate outside a transaction")
            for relation in message.relations:
                self._columns.add(relation, None, tx, "t", lsn, None, None)
        elif isinstance(message, LogicalMessage) and message.prefix == HEARTBEAT_PREFIX and not tx:
            # Our own heartbeat: nothing before it is pending, so its LSN is safe.
            self._batch.safe_lsn = max(self._batch.safe_lsn or 0, lsn)
        # Origin and Type need nothing here: the decoder keeps Type metadata itself.

    def _publish_counts(self) -> None:
        """Count a batch's changes per table and op once, at flush: per change, even a dict
        update costs ~9% of the reader and a labelled Prometheus counter ~20%."""
        by_table = self.stats.by_table
        for table, batch in self._columns.tables.items():
            for op, n in Counter(batch.op).items():
                metrics.CDC_CHANGES.labels(table, op).inc(n)
                if op != "r":  # snapshot reads are counted as they are read
                    self.stats.changes += n
                    by_table[table] = by_table.get(table, 0) + n

    def _flush(self, *, wait: bool) -> None:
        batch = self._batch
        count = batch.count
        if not count and batch.safe_lsn is None:
            return
        self._publish_counts()
        rows = batch.rows() if count else {}
        self._keep_alive()  # converting a large batch takes a while
        self._batch = _Batch(self._columns)
        if count:
            metrics.CDC_BATCH_CHANGES.observe(count)
            future = self._submit(rows)
        else:
            future = Future()
            future.set_result(None)
        self._in_flight.append((future, batch.safe_lsn, count))
        if wait:
            self._settle(block=True, drain=True)

    def _submit(self, rows: dict[str, Any]) -> Future[Any]:
        """Hand a batch to the sink, waiting while it is full (back-pressure on reading).

        While it waits nothing is read, so the server's keepalives sit unread: it still gets
        status updates (with the durable LSN), or it would drop the connection.
        """
        delay = 0.05
        while True:
            try:
                return self.sink.submit(rows)
            except SinkUnavailable:
                if not self.sink.ready():
                    raise  # not full but down: run() starts over after a pause
                self._keep_alive()
                time.sleep(delay)
                delay = min(delay * 2, _WAIT_STEP)

    def _settle(self, *, block: bool, drain: bool = False) -> None:
        """Confirm LSNs of batches that are durable, oldest first."""
        confirmed = None
        while self._in_flight:
            future, safe_lsn, _count = self._in_flight[0]
            if not future.done():
                if not block:
                    break
                started = time.perf_counter()
                self._wait_durable(future)
                metrics.CDC_FLUSH_SECONDS.observe(time.perf_counter() - started)
            else:
                future.result()
            self._in_flight.popleft()
            if safe_lsn is not None:
                confirmed = safe_lsn
            if block and not drain:
                block = len(self._in_flight) >= _MAX_IN_FLIGHT
        if confirmed is not None and confirmed > self.stats.confirmed_lsn:
            self.stats.confirmed_lsn = confirmed
            if self._repl is not None:
                self._repl.confirm(confirmed)

    def _wait_durable(self, future: Future[Any]) -> None:
        """Wait for a batch; raises if the sink failed (nothing past it is confirmed).

        While waiting, the server hears from us at the status interval, always with the LSN
        already durable: its keepalives cannot be read now (they queue behind data).
        """
        while True:
            try:
                future.result(timeout=_WAIT_STEP)
                return
            except FutureTimeout:
                self._keep_alive()

    def _keep_alive(self) -> None:
        if self._repl is not None:
            self._repl.keep_alive()

    def _confirm_idle(self, replication: ReplicationStream) -> None:
        """Nothing pending (no open transaction, nothing buffered or in flight): everything
        the server sent before its last keepalive is durable, so that keepalive's WAL end is
        safe to confirm. Keeps the slot from holding WAL when our tables are quiet."""
        wal_end = replication.server_wal_end
        if wal_end > self.stats.confirmed_lsn:
            self.stats.confirmed_lsn = wal_end
            replication.confirm(wal_end)

    def _heartbeat(self, admin: psycopg2.extensions.connection) -> None:
        """Write a little WAL in this database so a filtered/quiet one still moves the slot."""
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT pg_logical_emit_message(false, %s, '')", (HEARTBEAT_PREFIX,))
            admin.commit()
        except psycopg2.Error as exc:
            admin.rollback()
            log.warning("heartbeat failed: %s", exc)

    def _check_slot(self, admin: psycopg2.extensions.connection) -> None:
        try:
            info = catalog.slot_info(admin, self.settings.slot_name)
        except psycopg2.Error as exc:
            admin.rollback()
            log.warning("cannot read slot state: %s", exc)
            return
        self.stats.retained_bytes = info.retained_bytes
        self.stats.lag_bytes = info.lag_bytes
        if info.retained_bytes is not None:
            metrics.CDC_RETAINED_WAL.set(info.retained_bytes)
        if info.lag_bytes is not None:
            metrics.CDC_LAG_BYTES.set(info.lag_bytes)
        lag = self.stats.lag_seconds
        if lag is not None:
            metrics.CDC_LAG_SECONDS.set(lag)

    def _dead_letter(
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
        self._batch.dead_letters.append(dead_letter_row("cdc", reason, payload, context))
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.labels("cdc", "undecodable").inc()


#: Connection refusals no retry can fix (psycopg2 gives them no SQLSTATE).
_PERMANENT_REFUSAL = re.compile(
    r"FATAL:.*(does not exist|authentication failed|no pg_hba\.conf entry|permission denied"
    r"|must be superuser or replication)",
    re.DOTALL,
)


def _permanent(exc: Exception) -> bool:
    pgcode = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if pgcode:
        return bool(pgcode[:2] in _PERMANENT_ERROR_CLASSES)
    return isinstance(exc, psycopg2.OperationalError | psycopg.OperationalError) and bool(
        _PERMANENT_REFUSAL.search(str(exc))
    )


def _status_interval(admin: psycopg2.extensions.connection, configured: float) -> float:
    """How often the server hears from us while we cannot read: the configured interval, but
    at most a quarter of the server's wal_sender_timeout, which drops a silent client."""
    with admin.cursor() as cur:
        cur.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'")
        row = cur.fetchone()
    admin.commit()
    timeout_ms = int(row[0]) if row else 0
    if timeout_ms <= 0:
        return configured
    return min(configured, timeout_ms / 4000)


def _fill_unchanged(after: dict[str, Any], before: dict[str, Any]) -> None:
    """With REPLICA IDENTITY FULL the old row carries TOASTed values the new one left out."""
    for column, value in after.items():
        if value == UNAVAILABLE:
            old = before.get(column)
            if old is not None and old != UNAVAILABLE:
                after[column] = old


__all__ = ["ChangeReader", "ReaderStats"]
