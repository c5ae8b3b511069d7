"""The direct sink of the embedded shape: group commit into the warehouse's raw tables.

Concurrent submissions are gathered into one transaction (flush on ``flush_rows`` or after
``linger_ms``), because a DuckDB commit costs ~1 ms whatever its size: 100-row commits reach
~35k rows/s, 10,000-row commits several hundred thousand. Every submission's future resolves
only after the commit that holds its rows.

If a group fails to load, each submission is retried alone so one bad record cannot fail its
neighbours; within a submission that still fails, halves are tried until the rows the
warehouse refuses are found, one by one. Those go to ``raw.dead_letter`` with the reason, and
the submission's future says which they were (the collector answers them as rejected). If the
warehouse is unavailable (its writer process restarting), nothing is dead-lettered: the
futures fail and the callers retry.

A warehouse that cannot append several tables in one commit (BigQuery:
``capabilities.atomic_multi_table_append`` false) is written one table at a time, each table's
rows landing whole. A submission counts as landed only when every one of its tables has; when a
table fails, the tables already written stay, and the submissions that still miss a table are
retried alone on those tables only (so no table is written twice by the sink). If that fails
too, their futures fail and the callers send the whole submission again: the tables that had
landed then hold a second copy of those rows, which staging removes (it keeps the first copy of
each event_id / change_id, and raw keeps every copy, as it does for any resend).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Collection
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry import trace

from shopstream.events.codes import ReasonCode
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import schema_for
from shopstream.observability import metrics, tracing
from shopstream.sinks import SinkBackend
from shopstream.sinks.base import (
    LANDED,
    Columns,
    DeadLettered,
    Outcome,
    Rows,
    SinkError,
    SinkUnavailable,
)
from shopstream.sinks.base import settle as _resolve
from shopstream.warehouse.base import Warehouse, WarehouseError, WarehouseUnavailable

if TYPE_CHECKING:
    from shopstream.config import Settings

log = logging.getLogger(__name__)

_IDLE_CHECKPOINT_SECONDS = 2.0


#: The column whose newest value says how fresh a raw table is (data freshness), by table;
#: CDC tables (``cdc_*``) use ``commit_ts``.
_FRESHNESS_COLUMN = {"events": "received_at", "dead_letter": "received_at"}


class _Submission:
    __slots__ = ("future", "row_count", "rows", "span")

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.row_count = sum(len(r) for r in rows.values())
        self.future: Future[Outcome] = Future()
        #: The submitter's span (a collector request, a CDC batch), for the commit's link.
        self.span: trace.SpanContext | None = None


class WarehouseSink:
    def __init__(
        self,
        warehouse: Warehouse,
        *,
        flush_rows: int = 20_000,
        linger_ms: float = 2.0,
        max_queue_rows: int = 500_000,
    ) -> None:
        self.warehouse = warehouse
        #: Several tables land in one commit (else: one table at a time, see the docstring).
        self.atomic = warehouse.capabilities.atomic_multi_table_append
        self.flush_rows = flush_rows
        self.linger = linger_ms / 1000
        self.max_queue_rows = max_queue_rows
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._healthy = True
        self.commits = 0
        #: Newest freshness timestamp made durable so far, by raw table (Unix time).
        self._newest: dict[str, float] = {}

    def start(self) -> None:
        metrics.SINK_QUEUE_LIMIT_ROWS.set(self.max_queue_rows)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="warehouse-sink", daemon=True)
            self._thread.start()

    def submit(self, rows: Rows) -> Future[Outcome]:
        submission = _Submission(rows)
        if tracing.enabled:
            submission.span = trace.get_current_span().get_span_context()
        # Checked and queued under the lock: close() cannot slip in between.
        with self._count_lock:
            if self._closing or self._thread is None or not self._thread.is_alive():
                raise SinkUnavailable("the warehouse sink is not running")
            if self._queued_rows + submission.row_count > self.max_queue_rows:
                raise SinkUnavailable(
                    f"the warehouse sink is behind ({self._queued_rows} rows queued); retry"
                )
            self._queued_rows += submission.row_count
            self._queue.put(submission)
        metrics.SINK_QUEUE_ROWS.set(self._queued_rows)
        return submission.future

    def ready(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._healthy
            and not self._closing
            and self.warehouse.health().state == "ok"
        )

    def broken(self) -> str | None:
        if self._closing:
            return None  # shutting down on purpose
        if self._thread is not None and not self._thread.is_alive():
            return "the warehouse sink's commit thread has stopped"
        health = self.warehouse.health()
        return health.reason if health.state == "failed" else None

    def pending_rows(self) -> int:
        return self._queued_rows

    def close(self, timeout: float = 60.0) -> None:
        if self._thread is None:
            return
        with self._count_lock:
            self._closing = True
            self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            # Whatever went wrong, nobody may wait forever: fail everything still queued.
            log.exception("the warehouse sink stopped")
            self._healthy = False
            self._fail_queued(SinkError(f"the warehouse sink stopped: {exc}"))
            raise
        finally:
            self._fail_queued(SinkUnavailable("the warehouse sink has stopped"))

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _resolve(item.future, error=error)

    def _loop(self) -> None:
        dirty = False
        while True:
            try:
                first = self._queue.get(timeout=_IDLE_CHECKPOINT_SECONDS)
            except queue.Empty:
                if dirty:
                    self._checkpoint()
                    dirty = False
                continue
            if first is None:
                self._checkpoint()
                return
            group = [first]
            rows = first.row_count
            stop = self._gather(group, rows)
            self._commit(group)
            dirty = True
            if stop:
                self._checkpoint()
                return

    def _gather(self, group: list[_Submission], rows: int) -> bool:
        """Take whatever else is queued, waiting up to ``linger`` for more. True at close."""
        deadline = time.monotonic() + self.linger
        while rows < self.flush_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return True
            group.append(item)
            rows += item.row_count
        return False

    def _commit(self, group: list[_Submission]) -> None:
        if not tracing.enabled:
            self._commit_group(group)
            return
        # One commit serves many submitters: it links to each one's span (a request, a CDC
        # batch) rather than belonging to one of their traces.
        links = [trace.Link(s.span) for s in group if s.span is not None and s.span.is_valid]
        with tracing.TRACER.start_as_current_span(
            "sink.commit",
            links=links,
            attributes={
                "sink.rows": sum(s.row_count for s in group),
                "sink.submissions": len(group),
            },
        ):
            self._commit_group(group)

    def _commit_group(self, group: list[_Submission]) -> None:
        started = time.perf_counter()
        total = sum(s.row_count for s in group)
        batches: dict[str, pa.Table] = {}
        try:
            batches = _to_arrow([s.rows for s in group])
            _append(self.warehouse, batches, self.atomic)
        except _PartlyAppended as partial:
            # Tables before the failing one landed: whoever had rows only there is done.
            log.warning("group commit of %d rows failed on %s", total, partial.__cause__)
            metrics.SINK_FAILURES.inc()
            self._record_newest({t: b for t, b in batches.items() if t in partial.landed})
            unavailable = isinstance(partial.__cause__, WarehouseUnavailable)
            for submission in group:
                if set(submission.rows) <= partial.landed:
                    _resolve(submission.future, LANDED)
                    self._count_written([submission])
                elif unavailable:
                    _resolve(submission.future, error=_sink_error(partial.cause))
                else:
                    self._commit_alone(submission, skip=partial.landed)
        except WarehouseUnavailable as exc:
            # Not the rows' fault: no dead letters; the callers are told and send them again.
            log.warning("group commit of %d rows failed: %s", total, exc)
            for submission in group:
                _resolve(submission.future, error=_sink_error(exc))
        except Exception as exc:
            log.warning("group commit of %d rows failed (%s); retrying one by one", total, exc)
            metrics.SINK_FAILURES.inc()
            for submission in group:
                self._commit_alone(submission)
        else:
            self._healthy = True
            for submission in group:
                _resolve(submission.future, LANDED)
            self._count_written(group)
            self._record_newest(batches)
        finally:
            with self._count_lock:
                self._queued_rows -= total
            metrics.SINK_QUEUE_ROWS.set(self._queued_rows)
            metrics.SINK_BATCH_ROWS.observe(total)
            metrics.SINK_FLUSH_SECONDS.observe(time.perf_counter() - started)
            self.commits += 1

    def _commit_alone(self, submission: _Submission, skip: Collection[str] = ()) -> None:
        """Load one submission on its own; ``skip``: its tables that have landed already."""
        rows = {table: r for table, r in submission.rows.items() if table not in skip}
        try:
            outcome = _Isolation(self.warehouse, self.atomic).load(rows)
        except _DeadLettersFailed as exc:
            # Neither the rows nor their dead letters can be written: the warehouse itself
            # is failing. The caller gets the error and must not acknowledge.
            self._healthy = False
            _resolve(
                submission.future,
                error=_sink_error(exc, f"warehouse cannot be written: {exc}"),
            )
            return
        except WarehouseError as exc:  # unavailable (restarting), or rows it cannot convert
            _resolve(submission.future, error=_sink_error(exc))
            return
        if outcome.dead_lettered:
            metrics.DEAD_LETTERS.labels("loader", ReasonCode.LOAD_ERROR).inc(
                len(outcome.dead_lettered)
            )
        _resolve(submission.future, outcome)
        self._count_written([submission], outcome)

    def _record_newest(self, batches: dict[str, pa.Table]) -> None:
        """Data freshness: the newest event time made durable per raw table (once per
        commit, one vectorised max per table)."""
        for table, batch in batches.items():
            column = _FRESHNESS_COLUMN.get(table)
            if column is None:
                if not table.startswith("cdc_"):
                    continue
                column = "commit_ts"
            if column not in batch.column_names or not batch.num_rows:
                continue
            newest = pc.max(batch.column(column)).as_py()
            if newest is None:
                continue
            stamp = newest.timestamp()  # the raw schema's timestamps are UTC-aware
            if stamp > self._newest.get(table, 0.0):
                self._newest[table] = stamp
                metrics.RAW_NEWEST_RECORD.labels(table).set(stamp)

    def _count_written(self, group: list[_Submission], outcome: Outcome = LANDED) -> None:
        refused = Counter(dead.table for dead in outcome.dead_lettered)
        for submission in group:
            for table, rows in submission.rows.items():
                written = len(rows) - refused[table]
                metrics.SINK_ROWS_WRITTEN.labels(table).inc(written)

    def _checkpoint(self) -> None:
        if not self.warehouse.capabilities.checkpoints:
            return
        try:
            self.warehouse.checkpoint()
        except Exception as exc:  # a failed checkpoint loses nothing: the WAL still holds it
            log.warning("idle checkpoint failed: %s", exc)


class _DeadLettersFailed(WarehouseError):
    """A refused row's dead letter could not be written either."""


class _Isolation:
    """Loads one submission that failed as a whole: halves are tried until the rows the
    warehouse refuses are found; those go to raw.dead_letter, with the warehouse's reason.

    With k bad rows among n this costs about 2·k·log2(n) appends, not n. The first refused
    row's dead letter is written at once: if even that fails, the warehouse is broken (disk
    full, say) and nothing more is tried; the others' are written together at the end.
    """

    def __init__(self, warehouse: Warehouse, atomic: bool = True) -> None:
        self.warehouse = warehouse
        self.atomic = atomic
        self.dead: list[DeadLettered] = []
        self.letters: list[dict[str, Any]] = []
        self.probed = False

    def load(self, rows: Rows) -> Outcome:
        failure: Exception | None = None
        if self.atomic:
            try:
                self.warehouse.append(_to_arrow([rows]))
                return LANDED  # it was a neighbour's fault
            except WarehouseUnavailable:
                raise
            except Exception as exc:
                failure = exc if len(rows) == 1 else None
        # Table by table (the first try of each is the whole table): without atomic appends,
        # a table that landed is never sent again.
        for table, table_rows in rows.items():
            try:
                arrow = _to_arrow([{table: table_rows}]).get(table)
            except Exception as exc:  # not the warehouse's refusal: nothing to isolate
                raise WarehouseError(f"rows for raw.{table} cannot be converted: {exc}") from exc
            if arrow is not None:
                self._split(table, arrow, 0, failure)
        if self.letters:
            self._write_letters()
        return Outcome(tuple(self.dead))

    def _split(self, table: str, rows: pa.Table, offset: int, failure: Exception | None) -> None:
        if failure is None:
            try:
                self.warehouse.append({table: rows})
                return
            except WarehouseUnavailable:
                raise
            except Exception as exc:
                failure = exc
        if rows.num_rows > 1:
            half = rows.num_rows // 2
            self._split(table, rows.slice(0, half), offset, None)
            self._split(table, rows.slice(half), offset + half, None)
            return
        reason = f"could not load into raw.{table}: {failure}"
        row = rows.to_pylist()[0]
        self.dead.append(DeadLettered(table, offset, reason))
        self.letters.append(
            dead_letter_row(
                "loader",
                reason,
                orjson.dumps(row, default=str).decode(),
                {"table": table, "position": offset},
            )
        )
        if not self.probed:
            self.probed = True
            self._write_letters()

    def _write_letters(self) -> None:
        try:
            self.warehouse.append(_to_arrow([{"dead_letter": self.letters}]))
        except WarehouseUnavailable:
            raise
        except Exception as exc:
            raise _DeadLettersFailed(str(exc)) from exc
        self.letters = []


class _PartlyAppended(WarehouseError):
    """A table-by-table append failed on one table after ``landed`` had landed."""

    def __init__(self, landed: set[str], cause: Exception) -> None:
        super().__init__(str(cause))
        self.landed = landed
        self.cause = cause
        self.__cause__ = cause


def _append(warehouse: Warehouse, batches: dict[str, pa.Table], atomic: bool) -> None:
    """All of ``batches`` in one commit, or (``atomic`` false) one table at a time, raising
    :class:`_PartlyAppended` when a table fails after others landed."""
    if atomic:
        _traced_append(warehouse, batches)
        return
    landed: set[str] = set()
    for table, batch in batches.items():
        try:
            _traced_append(warehouse, {table: batch})
        except Exception as exc:
            if not landed:
                raise
            raise _PartlyAppended(landed, exc) from exc
        landed.add(table)


def _traced_append(warehouse: Warehouse, batches: dict[str, pa.Table]) -> None:
    """``warehouse.append``, under a ``warehouse.append`` span when tracing is on."""
    if not tracing.enabled:
        warehouse.append(batches)
        return
    with tracing.TRACER.start_as_current_span(
        "warehouse.append",
        attributes={
            "warehouse.table": ",".join(batches),
            "warehouse.rows": sum(b.num_rows for b in batches.values()),
        },
    ):
        warehouse.append(batches)


def _sink_error(exc: Exception, message: str | None = None) -> SinkError:
    """The warehouse's failure as the sink's error type (callers catch that, whatever the
    destination), with the warehouse's error as its cause."""
    error = SinkError(message or str(exc))
    error.__cause__ = exc
    return error


def _to_arrow(groups: list[Rows]) -> dict[str, pa.Table]:
    """One Arrow table per raw table: dict rows converted, Arrow batches concatenated."""
    pieces: dict[str, list[pa.Table]] = {}
    dict_rows: dict[str, list[dict[str, Any]]] = {}
    columns: dict[str, Columns] = {}
    for rows in groups:
        for table, table_rows in rows.items():
            if isinstance(table_rows, pa.Table):
                if table_rows.num_rows:
                    pieces.setdefault(table, []).append(table_rows)
            elif isinstance(table_rows, list):
                dict_rows.setdefault(table, []).extend(table_rows)
            elif len(table_rows):
                merged = columns.get(table)
                if merged is None:
                    # A fresh holder: the submissions' own objects stay as they were, so a
                    # retry of one submission alone still has exactly its rows.
                    merged = columns[table] = type(table_rows)()
                merged.extend(table_rows)
    for table, merged in columns.items():
        pieces.setdefault(table, []).append(merged.to_arrow())
    for table, plain in dict_rows.items():
        pieces.setdefault(table, []).append(pa.Table.from_pylist(plain, schema=schema_for(table)))
    return {
        table: parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        for table, parts in pieces.items()
    }


def _open(url: str, settings: Settings, warehouse: Warehouse) -> WarehouseSink:
    return WarehouseSink(
        warehouse,
        flush_rows=settings.sink.flush_rows,
        linger_ms=settings.sink.linger_ms,
        max_queue_rows=settings.sink.max_queue_rows,
    )


BACKEND = SinkBackend("warehouse", _open, needs_warehouse=True)
