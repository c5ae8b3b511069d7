"""The direct sink of the embedded shape: group commit into the warehouse's raw tables.

Concurrent submissions are gathered into one transaction (flush on ``flush_rows`` or after
``linger_ms``), because a DuckDB commit costs ~1 ms whatever its size: 100-row commits reach
~35k rows/s, 10,000-row commits several hundred thousand. Every submission's future resolves
only after the commit that holds its rows.

If a group fails to load, each submission is retried alone so one bad record cannot fail its
neighbours; rows that still cannot be loaded go to ``raw.dead_letter`` with the reason.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from shopstream.observability import metrics
from shopstream.sinks.base import Columns, Rows, SinkUnavailable
from shopstream.warehouse.base import Warehouse, WarehouseError
from shopstream.warehouse.raw import schema_for

log = logging.getLogger(__name__)

_IDLE_CHECKPOINT_SECONDS = 2.0


class _Submission:
    __slots__ = ("future", "row_count", "rows")

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.row_count = sum(len(r) for r in rows.values())
        self.future: Future[None] = Future()


def dead_letter_row(
    source: str, reason: str, payload: str | bytes | None, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    return {
        "dead_letter_id": str(uuid.uuid4()),
        "source": source,
        "reason": reason,
        "payload": payload,
        "context": orjson.dumps(context or {}).decode(),
        "received_at": datetime.now(UTC),
    }


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
        self.flush_rows = flush_rows
        self.linger = linger_ms / 1000
        self.max_queue_rows = max_queue_rows
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._healthy = True
        self.rows_written = 0
        self.commits = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="warehouse-sink", daemon=True)
            self._thread.start()

    def submit(self, rows: Rows) -> Future[None]:
        submission = _Submission(rows)
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
        )

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
            self._fail_queued(WarehouseError(f"the warehouse sink stopped: {exc}"))
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
                _resolve(item.future, error)

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
        started = time.perf_counter()
        total = sum(s.row_count for s in group)
        try:
            self.warehouse.append(_to_arrow([s.rows for s in group]))
        except Exception as exc:
            log.warning("group commit of %d rows failed (%s); retrying one by one", total, exc)
            metrics.SINK_FAILURES.inc()
            for submission in group:
                self._commit_alone(submission)
        else:
            self._healthy = True
            for submission in group:
                _resolve(submission.future)
            self._count_written(group)
        finally:
            with self._count_lock:
                self._queued_rows -= total
            metrics.SINK_QUEUE_ROWS.set(self._queued_rows)
            metrics.SINK_BATCH_ROWS.observe(total)
            metrics.SINK_FLUSH_SECONDS.observe(time.perf_counter() - started)
            self.commits += 1

    def _commit_alone(self, submission: _Submission) -> None:
        try:
            self.warehouse.append(_to_arrow([submission.rows]))
        except Exception as exc:
            try:
                reason = f"could not load into raw: {exc}"
                letters = [
                    dead_letter_row(
                        "loader",
                        reason,
                        orjson.dumps(row, default=str).decode(),
                        {"table": table},
                    )
                    for table, rows in submission.rows.items()
                    for row in _as_dicts(rows)
                ]
                self.warehouse.append(_to_arrow([{"dead_letter": letters}]))
            except Exception as dead_exc:
                # Neither the rows nor their dead letters can be written: the warehouse itself
                # is failing. The caller gets the error and must not acknowledge.
                self._healthy = False
                _resolve(
                    submission.future, WarehouseError(f"warehouse cannot be written: {dead_exc}")
                )
                return
            metrics.DEAD_LETTERS.labels("loader", "load_error").inc(len(letters))
            _resolve(submission.future)
            return
        _resolve(submission.future)
        self._count_written([submission])

    def _count_written(self, group: list[_Submission]) -> None:
        for submission in group:
            for table, rows in submission.rows.items():
                metrics.SINK_ROWS_WRITTEN.labels(table).inc(len(rows))
                self.rows_written += len(rows)

    def _checkpoint(self) -> None:
        try:
            self.warehouse.checkpoint()
        except Exception as exc:  # a failed checkpoint loses nothing: the WAL still holds it
            log.warning("idle checkpoint failed: %s", exc)


def _resolve(future: Future[None], error: Exception | None = None) -> None:
    """Settle a caller's future; one the caller already gave up on (cancelled) is skipped."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass  # cancelled between the check and the set: the caller has gone


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


def _as_dicts(rows: list[dict[str, Any]] | pa.Table | Columns) -> list[dict[str, Any]]:
    if isinstance(rows, list):
        return rows
    table = rows if isinstance(rows, pa.Table) else rows.to_arrow()
    return table.to_pylist()
