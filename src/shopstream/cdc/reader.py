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

Each captured table's schema goes to ``raw.source_schemas`` (a row per version, see
:mod:`shopstream.cdc.schemas`) in the same batches as the changes, ahead of the first change
under it, so the confirmed LSN never passes a change whose schema record is not durable.

The stream runs on libpq directly (:mod:`shopstream.cdc.stream`), so that no library reports
an LSN on our behalf: every status update carries the LSN this reader made durable, and the
server's own position (a keepalive's WAL end) only when nothing is pending here.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from opentelemetry import trace

from shopstream.cdc import catalog
from shopstream.cdc.acks import AckTracker
from shopstream.cdc.handler import HEARTBEAT_PREFIX, Batch, ChangeHandler
from shopstream.cdc.schemas import SchemaVersion
from shopstream.cdc.snapshot import SnapshotPlan, plan_slot, plan_snapshot, select_rows
from shopstream.cdc.state import SavedState, SchemaStore, StateStore
from shopstream.cdc.stats import ReaderStats
from shopstream.cdc.stream import ReplicationStream
from shopstream.config import CdcSettings
from shopstream.observability import metrics, tracing
from shopstream.sinks.base import Sink, SinkError, SinkUnavailable

log = logging.getLogger(__name__)

_MAX_IN_FLIGHT = 2  # batches written but not yet durable; bounds memory
_WAIT_STEP = 0.1  # seconds between status checks while waiting on the sink
#: SQLSTATE classes no retry can fix: privileges/undefined objects, authentication, no such
#: database. Anything else (restart, network, a slot still held by a dying reader) is retried.
_PERMANENT_ERROR_CLASSES = ("42", "28", "3D")


class ChangeReader:
    """Wires the parts together for one slot: a session (catalogue connection, replication
    stream, change handler), reconnecting with backoff; heartbeats and slot checks.

    The parts: :mod:`~shopstream.cdc.stream` (the replication connection),
    :mod:`~shopstream.cdc.snapshot` (what to do with the slot, what to read),
    :mod:`~shopstream.cdc.handler` (messages → rows), :mod:`~shopstream.cdc.acks` (which LSN
    is safe to confirm) and :mod:`~shopstream.cdc.state` (the snapshot's progress on disk).
    """

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
        self.state = StateStore(state_dir, settings.slot_name)
        #: The last schema version per raw table known durable in raw.source_schemas: each
        #: session starts from it, so Relations re-sent after a restart or a reconnect make
        #: no new versions. Kept in the data directory rather than read back from the
        #: warehouse: the reader writes through a Sink, which cannot be read (and need not be
        #: DuckDB); the file is written only after the rows are durable (see _schemas_durable).
        self.schema_store = SchemaStore(state_dir, settings.slot_name)
        self._recorded: dict[str, SchemaVersion] = self.schema_store.load()
        self.idle_exit = idle_exit
        self.stats = ReaderStats()
        self._acks = AckTracker(max_in_flight=_MAX_IN_FLIGHT)
        #: The session's handler; replaced, with what it gathered, when a session starts.
        self._handler = ChangeHandler("", dict, stats=self.stats)
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
            except (psycopg2.Error, psycopg.Error, SinkError) as exc:
                # A lost connection, or a sink that could not make a batch durable: either
                # way nothing past the last confirmed LSN counts, and the server sends it
                # again on the next session.
                if _permanent(exc):
                    detail = str(getattr(exc, "pgerror", None) or exc).strip()
                    raise catalog.CdcSetupError(
                        f"PostgreSQL refused the CDC reader: {detail}. Check the DSN, the "
                        "database and the user's REPLICATION right."
                    ) from exc
                self.stats.state = "reconnecting"
                metrics.CDC_RECONNECTS.inc()
                text = str(exc).strip()
                log.warning(
                    "%s (%s); starting again from the last confirmed LSN in %.1f s",
                    "sink failed" if isinstance(exc, SinkError) else "PostgreSQL connection lost",
                    text.splitlines()[0] if text else type(exc).__name__,
                    backoff,
                )
                # The next session starts with a new handler: what this one gathered and the
                # open transaction are dropped, as the server resends them.
                self._acks.clear()
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 0.5

    def _session(self, stop: threading.Event) -> None:
        cfg = self.settings
        admin = catalog.connect(self.dsn)
        admin.autocommit = False
        try:
            catalog.check_server(admin)
            catalog.ensure_publication(admin, cfg.publication_name, cfg.schema_name, cfg.tables)
            self._handler = ChangeHandler(
                admin.get_dsn_parameters().get("dbname", ""),
                functools.partial(self._primary_keys, admin),
                # The catalogue resolves domains and arrays of them, for stream and snapshot.
                base_types=functools.partial(catalog.base_types, admin),
                describe=functools.partial(catalog.describe_relation, admin),
                recorded=self._recorded,
                stats=self.stats,
            )
            self._handler.refresh_keys()
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

    def _primary_keys(
        self, admin: psycopg2.extensions.connection
    ) -> dict[tuple[str, str], list[str]]:
        tables = catalog.publication_tables(admin, self.settings.publication_name)
        return catalog.primary_keys(admin, tables)

    # -- slot and snapshot -------------------------------------------------------------------

    def _prepare_slot(
        self,
        admin: psycopg2.extensions.connection,
        replication: ReplicationStream,
        stop: threading.Event,
    ) -> None:
        cfg = self.settings
        slot = cfg.slot_name
        plan = plan_slot(cfg.snapshot_mode, slot, catalog.slot_info(admin, slot), self.state.load())
        if not plan.create:
            return
        if plan.drop:
            log.warning("dropping slot %s to make it anew: %s", slot, plan.reason)
            catalog.drop_slot(admin, slot)
        if not plan.snapshot:
            replication.create_slot(slot, export_snapshot=False)
            self.state.save(SavedState(slot, snapshot_started=False, snapshot_done=True))
            log.info("created slot %s (no snapshot)", slot)
            return
        # The exported snapshot lives until the replication connection's next command
        # (START_REPLICATION), so the snapshot is read before streaming starts.
        consistent, snapshot_name = replication.create_slot(slot, export_snapshot=True)
        assert snapshot_name is not None
        log.info(
            "created slot %s at %s with a snapshot (%s)",
            slot,
            catalog.format_lsn(consistent),
            plan.reason,
        )
        self.state.save(SavedState(slot, snapshot_started=True, snapshot_done=False))
        tables = catalog.publication_tables(admin, cfg.publication_name)
        snapshot = plan_snapshot(tables, snapshot_name, consistent, cfg.snapshot_chunk_rows)
        self._snapshot(admin, snapshot, stop)
        if not stop.is_set():
            self.state.save(SavedState(slot, snapshot_started=True, snapshot_done=True))

    def _snapshot(
        self, admin: psycopg2.extensions.connection, plan: SnapshotPlan, stop: threading.Event
    ) -> None:
        """Read every captured table as of the slot's exported snapshot, in chunks."""
        self.stats.state = "snapshot"
        handler = self._handler
        reader = catalog.connect(self.dsn)
        try:
            reader.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with reader.cursor() as cur:
                cur.execute(*plan.set_snapshot())
            tx = plan.transaction(int(datetime.now(UTC).timestamp() * 1_000_000))
            for schema, table in plan.tables:
                # Catalogue reads on the admin connection: the reader keeps one transaction, the
                # exported snapshot, for every table.
                relation, types = catalog.table_relation(admin, schema, table)
                decoder = handler.snapshot_table(relation, types, plan.consistent_lsn)
                # Each value as its type's output function prints it, as pgoutput sends it.
                query, name = select_rows(relation), f"snapshot_{relation.id}"
                with catalog.snapshot_rows(reader, query, name, plan.chunk_rows) as cur:
                    for values in cur:
                        handler.snapshot_row(relation, decoder, values, tx)
                        if handler.pending >= self.settings.batch_max_changes:
                            self._flush(wait=False)
                            self._settle(block=self._acks.full)
                        if stop.is_set():
                            return
            reader.rollback()
        finally:
            reader.close()
        # Every batch durable before the caller records the snapshot as done, not only the
        # last one (there may be none left to flush): after "done" nothing reads them again.
        self._flush(wait=False)
        self._settle(block=True, drain=True)
        log.info(
            "snapshot done: %d rows from %d tables", self.stats.snapshot_rows, len(plan.tables)
        )

    # -- streaming --------------------------------------------------------------------------

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
        self._acks.resume_from(info.confirmed_flush_lsn or 0)
        self.stats.confirmed_lsn = replication.durable_lsn = self._acks.confirmed_lsn
        self._repl = replication
        self.stats.state = "streaming"
        log.info("streaming changes from slot %s", cfg.slot_name)
        last_heartbeat = last_slot_check = time.monotonic()
        started = time.monotonic()
        self.stats.last_change_at = started
        handler = self._handler
        columns = handler.columns
        read = replication.read
        handle = handler.handle
        acks = self._acks
        while not stop.is_set():
            message = read()
            if message is not None:
                handle(message[1], message[0])
                if columns.count >= cfg.batch_max_changes:
                    self._flush(wait=False)
                    self._settle(block=acks.full)
                continue
            # Nothing to read right now: housekeeping, then wait for the socket.
            now = time.monotonic()
            if handler.pending and now - handler.started >= cfg.batch_max_ms / 1000:
                self._flush(wait=False)
            self._settle(block=False)
            idle = handler.tx is None and not handler.pending and not acks.in_flight
            if idle:
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
                and idle
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

    # -- batches and acknowledgements ----------------------------------------------------------

    def _flush(self, *, wait: bool) -> None:
        batch = self._handler.take()
        if batch is None:
            return
        self._keep_alive()  # converting a large batch takes a while
        if batch.count:
            metrics.CDC_BATCH_CHANGES.observe(batch.count)
            future = self._submit_traced(batch) if tracing.enabled else self._submit(batch.rows)
        else:
            future = Future()
            future.set_result(None)
        on_durable = None
        if batch.schemas:
            on_durable = functools.partial(self._schemas_durable, batch.schemas)
        self._acks.submitted(future, batch.safe_lsn, on_durable)
        if wait:
            self._settle(block=True, drain=True)

    def _submit_traced(self, batch: Batch) -> Future[Any]:
        """:meth:`_submit` under a ``cdc.durable`` span, linked to the batch's transactions,
        that ends when the batch is durable (the sink's commit links to it in turn)."""
        links = [trace.Link(context) for context in batch.transactions]
        attributes: dict[str, str | int] = {"cdc.changes": batch.count}
        if batch.safe_lsn is not None:
            attributes["cdc.confirmable_lsn"] = catalog.format_lsn(batch.safe_lsn)
        span = tracing.TRACER.start_span("cdc.durable", links=links, attributes=attributes)
        try:
            with trace.use_span(span, end_on_exit=False):
                future = self._submit(batch.rows)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, str(exc))
            span.end()
            raise

        def durable(done: Future[Any]) -> None:
            error = done.exception() if not done.cancelled() else None
            if error is not None:
                span.set_status(trace.StatusCode.ERROR, str(error))
            span.end()

        future.add_done_callback(durable)
        return future

    def _schemas_durable(self, versions: dict[str, SchemaVersion]) -> None:
        """A batch's raw.source_schemas rows are durable: remember their versions (only now,
        so that a batch the sink lost is recorded again when the server resends it)."""
        self._recorded.update(versions)
        self.schema_store.save(self._recorded)

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
        """Confirm the LSN of the batches that are durable, oldest first."""
        confirmed = self._acks.settle(block=block, drain=drain, wait=self._wait_durable)
        if confirmed is not None:
            self.stats.confirmed_lsn = confirmed
            if self._repl is not None:
                self._repl.confirm(confirmed)

    def _wait_durable(self, future: Future[Any]) -> None:
        """Wait for a batch; raises if the sink failed (nothing past it is confirmed).

        While waiting, the server hears from us at the status interval, always with the LSN
        already durable: its keepalives cannot be read now (they queue behind data).
        """
        started = time.perf_counter()
        while True:
            try:
                future.result(timeout=_WAIT_STEP)
                break
            except FutureTimeout:
                self._keep_alive()
        metrics.CDC_FLUSH_SECONDS.observe(time.perf_counter() - started)

    def _keep_alive(self) -> None:
        if self._repl is not None:
            self._repl.keep_alive()

    def _confirm_idle(self, replication: ReplicationStream) -> None:
        """Nothing pending here: the server's last keepalive's WAL end is safe to confirm.
        Keeps the slot from holding WAL when our tables are quiet."""
        handler = self._handler
        confirmed = self._acks.idle_confirm(
            replication.server_wal_end,
            open_transaction=handler.tx is not None,
            buffered=handler.pending,
        )
        if confirmed is not None:
            self.stats.confirmed_lsn = confirmed
            replication.confirm(confirmed)

    # -- housekeeping -------------------------------------------------------------------------

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


__all__ = ["HEARTBEAT_PREFIX", "ChangeReader", "ReaderStats"]
