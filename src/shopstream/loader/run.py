"""The loader's loop: a source's messages → validated rows → the group-commit sink → commit.

One batch at a time is read (``loader.batch_messages`` messages or ``loader.batch_wait_ms``,
whichever comes first), decoded with :func:`shopstream.events.messages.decode` (the same
validation as the embedded path) and submitted to the sink as one submission, so the
warehouse sink's group commit makes it durable in one transaction. While it loads, the next
batch is read and submitted (two in flight at most: memory stays bounded). Each batch is
committed at the source only after its future resolved, and in the order they were read, so
a crash anywhere re-reads what was not durable: duplicates, removed in staging by
``event_id`` / ``change_id``, never a loss.

- A tombstone (no value) holds nothing to load; it is committed with its batch.
- A poison message becomes a ``raw.dead_letter`` row in the same submission (so it is durable
  with its neighbours) and is published to the dead-letter topic before the commit.
- Rows the warehouse refuses come back as the outcome's ``dead_lettered`` (the sink wrote them
  to ``raw.dead_letter``); they are published to the dead-letter topic too.
- The loader's own dead letters read back from the dead-letter topic (``source`` "loader")
  are skipped: they are in ``raw.dead_letter`` already.
- When the sink fails (the warehouse is down, restarting), nothing is committed: the same
  batch is submitted again with backoff until it lands, never skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from shopstream.events.messages import Topics, dead_letter_for, decode_or_reason
from shopstream.loader.base import Received, Source, SourceError
from shopstream.observability import metrics, tracing
from shopstream.sinks.base import LANDED, Outcome, Sink, SinkError, SinkUnavailable

log = logging.getLogger(__name__)

#: Batches submitted but not yet committed: the one loading and the next one.
MAX_IN_FLIGHT = 2
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 10.0
_LAG_EVERY = 2.0  # seconds between lag readings (a source may ask its broker)


@dataclass(frozen=True)
class LoaderStatus:
    """A snapshot of the loader's progress, for the status line and the summary."""

    #: starting, loading, idle, retrying, stopped.
    state: str
    #: Messages committed (rows, dead letters, tombstones, skipped echoes).
    messages: int
    #: Rows made durable, by raw table (poison messages' dead letters under dead_letter).
    rows: dict[str, int]
    poison: int
    #: Decoded rows the warehouse refused (dead-lettered by the sink).
    refused: int
    tombstones: int
    batches: int
    retries: int
    #: Messages on the transport not read yet (None where the source cannot tell).
    lag: int | None
    last_error: str | None


@dataclass
class _Batch:
    received: list[Received]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: For each table's rows, the message each came from (for refused rows' dead letters).
    origins: dict[str, list[Received]] = field(default_factory=dict)
    #: Dead letters still to publish to the dead-letter topic.
    letters: list[dict[str, Any]] = field(default_factory=list)
    poison: int = 0
    tombstones: int = 0
    polled_at: float = field(default_factory=time.monotonic)
    future: Future[Outcome] | None = None
    #: ``loader.batch``, from the poll until committed (tracing on).
    span: trace.Span | None = None

    def add(self, table: str, row: dict[str, Any], origin: Received) -> None:
        self.rows.setdefault(table, []).append(row)
        self.origins.setdefault(table, []).append(origin)


class Loader:
    """Reads ``source`` into ``sink`` (started by the caller) until told to stop."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        topics: Topics,
        *,
        batch_messages: int = 5000,
        batch_wait: float = 0.2,
    ) -> None:
        self.source = source
        self.sink = sink
        self.topics = topics
        self.batch_messages = batch_messages
        self.batch_wait = batch_wait
        self._lock = threading.Lock()
        self._state = "starting"
        self._messages = 0
        self._rows: dict[str, int] = {}
        self._poison = 0
        self._refused = 0
        self._tombstones = 0
        self._batches = 0
        self._retries = 0
        self._lag: int | None = None
        self._lag_read = 0.0
        self._last_error: str | None = None

    # -- status ------------------------------------------------------------------------

    def status(self) -> LoaderStatus:
        with self._lock:
            return LoaderStatus(
                state=self._state,
                messages=self._messages,
                rows=dict(self._rows),
                poison=self._poison,
                refused=self._refused,
                tombstones=self._tombstones,
                batches=self._batches,
                retries=self._retries,
                lag=self._lag,
                last_error=self._last_error,
            )

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    # -- the loop ----------------------------------------------------------------------

    def run(self, halt: threading.Event, idle_exit: float | None = None) -> LoaderStatus:
        """Load until ``halt`` is set (the batches in flight are finished and committed
        first), or until nothing has arrived for ``idle_exit`` seconds."""
        in_flight: deque[_Batch] = deque()
        last_message = time.monotonic()
        try:
            while True:
                stopping = halt.is_set()
                if stopping and not in_flight:
                    break
                read = False
                if not stopping and len(in_flight) < MAX_IN_FLIGHT:
                    received = self._poll(halt)
                    if received:
                        read = True
                        last_message = time.monotonic()
                        batch = self._prepare(received)
                        if not self._submit(batch, halt):
                            break  # stopping while the sink takes nothing: not committed
                        in_flight.append(batch)
                    self._read_lag()
                head = in_flight[0] if in_flight else None
                if head is not None and (
                    len(in_flight) >= MAX_IN_FLIGHT or not read or halt.is_set() or _done(head)
                ):
                    if not self._finish(head, halt):
                        break  # stopping while the warehouse fails: read again next time
                    in_flight.popleft()
                elif head is None:
                    self._set_state("idle")
                    if idle_exit is not None and time.monotonic() - last_message >= idle_exit:
                        break
        finally:
            self._set_state("stopped")
        return self.status()

    def _poll(self, halt: threading.Event) -> list[Received]:
        """A batch: up to ``batch_messages``, gathered for ``batch_wait`` at most."""
        deadline = time.monotonic() + self.batch_wait
        try:
            received = self.source.poll(self.batch_messages, self.batch_wait)
            while received and len(received) < self.batch_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                more = self.source.poll(self.batch_messages - len(received), remaining)
                if not more:
                    break
                received.extend(more)
        except SourceError as exc:
            # Nothing read since the last commit counts: the source reads it again.
            log.warning("reading from the transport failed (%s); retrying", exc)
            self._set_state("retrying", f"source: {exc}")
            halt.wait(_BACKOFF_MAX / 4)
            return []
        return received

    def _prepare(self, received: list[Received]) -> _Batch:
        """Decode every message: rows per raw table, poison messages as dead letters."""
        batch = _Batch(received)
        if tracing.enabled:
            batch.span = tracing.TRACER.start_span(
                "loader.batch", attributes={"loader.messages": len(received)}
            )
        metrics.LOADER_READ.inc(len(received))
        for message in received:
            decoded, reason = decode_or_reason(
                message.topic, message.key, message.value, message.headers, self.topics
            )
            if reason is not None:
                letter = dead_letter_for(
                    message.topic, message.key, message.value, reason, **_where(message)
                )
                batch.add("dead_letter", letter, message)
                batch.letters.append(letter)
                batch.poison += 1
                continue
            if decoded is None:
                batch.tombstones += 1
                continue
            table, row = decoded
            if table == "dead_letter" and row["source"] == "loader":
                continue  # our own dead letter, read back: raw.dead_letter holds it already
            batch.add(table, row, message)
        return batch

    def _submit(self, batch: _Batch, halt: threading.Event) -> bool:
        """Hand the batch to the sink (waiting while it is full); False if told to stop."""
        if not batch.rows:  # tombstones and echoes only: nothing to load
            done: Future[Outcome] = Future()
            done.set_result(LANDED)
            batch.future = done
            return True
        backoff = _BACKOFF_FIRST
        while True:
            try:
                if batch.span is None:
                    batch.future = self.sink.submit(batch.rows)
                else:  # the sink's commit links to the batch
                    with trace.use_span(batch.span, end_on_exit=False):
                        batch.future = self.sink.submit(batch.rows)
                return True
            except SinkUnavailable as exc:
                self._set_state("retrying", f"sink: {exc}")
                if halt.wait(backoff):
                    return False
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _finish(self, batch: _Batch, halt: threading.Event) -> bool:
        """Wait until the batch is durable (submitting it again while the sink fails),
        publish its dead letters, commit it. False if told to stop before it was durable."""
        backoff = _BACKOFF_FIRST
        while True:
            assert batch.future is not None
            try:
                outcome = batch.future.result()
                break
            except SinkError as exc:
                log.warning("loading %d messages failed (%s); again", len(batch.received), exc)
                self._set_state("retrying", f"warehouse: {exc}")
                metrics.LOADER_RETRIES.inc()
                with self._lock:
                    self._retries += 1
                if halt.wait(backoff) or not self._submit(batch, halt):
                    return False
                backoff = min(backoff * 2, _BACKOFF_MAX)
        refused = self._refused_letters(batch, outcome)
        batch.letters.extend(refused)
        if not self._publish(batch, halt):
            return False
        try:
            self.source.commit(batch.received)
        except SourceError as exc:
            # The rows are durable; the messages come again (to us or to another loader of
            # the group after a rebalance) and staging removes the repeats.
            log.warning("commit failed (%s): those messages will be read again", exc)
            self._set_state("retrying", f"commit: {exc}")
        self._count(batch, outcome, len(refused))
        return True

    def _refused_letters(self, batch: _Batch, outcome: Outcome) -> list[dict[str, Any]]:
        """The dead-letter topic's copy of each row the warehouse refused: the message as it
        arrived, with the warehouse's reason."""
        letters = []
        for dead in outcome.dead_lettered:
            message = batch.origins[dead.table][dead.position]
            letters.append(
                dead_letter_for(
                    message.topic,
                    message.key,
                    message.value,
                    dead.reason,
                    **_where(message, table=dead.table),
                )
            )
        return letters

    def _publish(self, batch: _Batch, halt: threading.Event) -> bool:
        backoff = _BACKOFF_FIRST
        while batch.letters:
            try:
                self.source.dead_letter(batch.letters)
                batch.letters = []
            except SourceError as exc:
                log.warning("publishing dead letters failed (%s); again", exc)
                self._set_state("retrying", f"dead-letter topic: {exc}")
                if halt.wait(backoff):
                    return False
                backoff = min(backoff * 2, _BACKOFF_MAX)
        return True

    def _count(self, batch: _Batch, outcome: Outcome, refused: int) -> None:
        refused_by_table: dict[str, int] = {}
        for dead in outcome.dead_lettered:
            refused_by_table[dead.table] = refused_by_table.get(dead.table, 0) + 1
        with self._lock:
            self._state = "loading"
            self._messages += len(batch.received)
            self._poison += batch.poison
            self._refused += refused
            self._tombstones += batch.tombstones
            self._batches += 1
            for table, rows in batch.rows.items():
                landed = len(rows) - refused_by_table.get(table, 0)
                self._rows[table] = self._rows.get(table, 0) + landed
                metrics.LOADER_ROWS.labels(table).inc(landed)
            if refused:
                self._rows["dead_letter"] = self._rows.get("dead_letter", 0) + refused
        metrics.LOADER_MESSAGES.inc(len(batch.received))
        metrics.LOADER_POISON.inc(batch.poison)
        metrics.LOADER_REFUSED.inc(refused)
        metrics.LOADER_BATCH_MESSAGES.observe(len(batch.received))
        metrics.LOADER_BATCH_SECONDS.observe(time.monotonic() - batch.polled_at)
        if batch.span is not None:
            batch.span.set_attributes(
                {
                    "loader.rows": sum(len(rows) for rows in batch.rows.values()) - refused,
                    "loader.poison": batch.poison,
                    "loader.refused": refused,
                }
            )
            batch.span.end()

    def _read_lag(self) -> None:
        lag_of = getattr(self.source, "lag", None)  # optional: sources that can tell cheaply
        now = time.monotonic()
        if lag_of is None or now - self._lag_read < _LAG_EVERY:
            return
        self._lag_read = now
        try:
            lag = lag_of()
        except SourceError:
            return
        with self._lock:
            self._lag = lag
        if lag is not None:
            metrics.LOADER_LAG.set(lag)


def _where(message: Received, **more: Any) -> dict[str, Any]:
    """A dead letter's context: where the source found the message (partition and offset,
    message id...), under names that cannot clash with the letter's own arguments."""
    where = {f"source_{k}" if k in _RESERVED else k: v for k, v in message.position.items()}
    return {**where, **more}


_RESERVED = frozenset({"topic", "key", "value", "reason", "table"})


def _done(batch: _Batch) -> bool:
    return batch.future is not None and batch.future.done()
