"""The Pub/Sub sink: raw rows published to Google Cloud Pub/Sub (``pubsub://<project>``).

Rows become messages with :func:`shopstream.events.messages.encode` (the same topics, keys
and headers as on Kafka): the message data is the value, the ordering key the key (a
row's changes keep their order; events only with ``pubsub.order_events``, see
:meth:`PubSubSink._ordered`), the attributes the headers (table, event type and
id, change id, commit time). Google's client batches (``pubsub.batch_*``); the emulator is
used when ``PUBSUB_EMULATOR_HOST`` is set, as with every Google client.

A submission's future resolves only once every one of its publish futures has: the collector
answers 2xx, and the CDC reader confirms an LSN, only for messages Pub/Sub acknowledged. Any
failed publish fails the submission with :class:`SinkError` (the client resends; staging
removes the duplicates a partly published submission leaves), and so does one not
acknowledged within ``pubsub.publish_timeout_seconds`` (Google's client, with ordering on,
retries transient errors forever: the caller must not wait that long). A failed publish
pauses its ordering key in the client: it is resumed at once, since the caller resends the
whole submission anyway.

Flow control is the sink's own (``pubsub.flow_*``): past the limit ``submit`` raises
:class:`SinkUnavailable` instead of blocking, because it is called on the collector's event
loop. With ``pubsub.create`` missing topics are created (the fixed ones at start, a newly
captured table's before its first message), each with the loader's subscription
(:mod:`shopstream.sinks.pubsub_admin` says why). Deletes get no tombstone: Pub/Sub has no
compaction, and a message must have data.

A message Pub/Sub can never take (over its 10 MB request limit: the client refuses it at
once) does not fail its submission, which would be sent again for ever: its dead letter
takes its place (:mod:`shopstream.sinks.refused`) and the Outcome lists it. A refusal by the
service itself (InvalidArgument) still fails the submission: it answers for a whole batch,
so it does not say which message it was.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

# Not `from google.cloud import pubsub_v1`: mypy then misses it beside typed google.cloud
# packages (bigquery).
import google.cloud.pubsub_v1 as pubsub_v1
import pyarrow as pa
from google.api_core import exceptions as google_errors
from google.cloud.pubsub_v1.publisher.exceptions import (
    MessageTooLargeError,
    PublishToPausedOrderingKeyException,
)

from shopstream.events.messages import TABLE, Message, Topics, encode, pubsub_key
from shopstream.observability import metrics
from shopstream.sinks import SinkBackend
from shopstream.sinks.base import (
    LANDED,
    DeadLettered,
    Outcome,
    Rows,
    SinkError,
    SinkUnavailable,
    settle,
)
from shopstream.sinks.pubsub_admin import create_for_loader, project_of, retry_within
from shopstream.sinks.refused import dead_letter_message

if TYPE_CHECKING:
    from shopstream.config import PubSubSettings, Settings
    from shopstream.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Pub/Sub's limit on an attribute value, in bytes.
_MAX_ATTRIBUTE = 1024
#: After a failed publish the sink is not ready for this long (unless a publish succeeds):
#: /readyz turns traffic away briefly, then lets it probe again.
_NOT_READY_AFTER_FAILURE_S = 2.0


def ordering_key(key: bytes | None) -> str:
    """The message key as an ordering key (a key over Pub/Sub's limit by its digest: the same
    key still maps to the same ordering key; :func:`~shopstream.events.messages.pubsub_key`
    says how the long key itself travels)."""
    return pubsub_key(key)[0]


def attributes(headers: dict[str, str]) -> dict[str, str]:
    """Headers as attributes, each value cut to Pub/Sub's 1,024 bytes (on a character
    boundary)."""
    fitted = {}
    for name, value in headers.items():
        raw = value.encode()
        if len(raw) > _MAX_ATTRIBUTE:
            value = raw[: _MAX_ATTRIBUTE - 3].decode("utf-8", "ignore") + "…"
        fitted[name] = value
    return fitted


def publisher_client(settings: PubSubSettings) -> pubsub_v1.PublisherClient:
    """Google's publisher with the batch settings and ordering on. With ordering, the client
    retries transient errors forever whatever retry deadline it is given (a later message of
    a key must not overtake an earlier one): the retry here says which errors are transient;
    the sink's own deadline bounds how long its callers wait. Flow control is the sink's own
    too, so that the client never blocks."""
    timeout = settings.publish_timeout_seconds
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(
            max_bytes=settings.batch_max_bytes,
            max_latency=settings.batch_max_latency_ms / 1000,
            max_messages=settings.batch_max_messages,
        ),
        publisher_options=pubsub_v1.types.PublisherOptions(
            enable_message_ordering=True,
            retry=retry_within(timeout),
            timeout=timeout,
        ),
    )


class _Submission:
    """One submit()'s publishes; its future resolves when the last of them has."""

    __slots__ = ("dead", "deadline", "future", "lock", "remaining")

    def __init__(self, count: int, deadline: float) -> None:
        self.future: Future[Outcome] = Future()
        self.remaining = count
        self.lock = threading.Lock()
        self.deadline = deadline
        #: Rows replaced by their dead letter (the message could never be published).
        self.dead: dict[tuple[str, int], DeadLettered] = {}

    def outcome(self) -> Outcome:
        return Outcome(tuple(self.dead.values())) if self.dead else LANDED


class _Deadlines:
    """Fails submissions not acknowledged by their deadline.

    With ordering keys on, Google's client retries a publish forever (it may not let a later
    message of the key overtake it). The caller cannot wait that long: its future fails at
    the deadline while the client goes on trying; if the message lands after all, the
    caller's resend is a duplicate that staging removes. One thread for all submissions:
    their deadlines come in the order they were submitted.
    """

    def __init__(self, on_expired: Callable[[_Submission], None]) -> None:
        self._on_expired = on_expired
        self._waiting: deque[_Submission] = deque()
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pubsub-deadlines", daemon=True)
        self._thread.start()

    def watch(self, submission: _Submission) -> None:
        with self._changed:
            self._waiting.append(submission)
            if len(self._waiting) == 1:
                self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._waiting or self._stopped)
                if self._stopped:
                    return
                first = self._waiting[0]
                if first.future.done():
                    self._waiting.popleft()
                    continue
                delay = first.deadline - time.monotonic()
                if delay > 0:
                    self._changed.wait(delay)
                    continue
                self._waiting.popleft()
            self._on_expired(first)


class PubSubSink:
    def __init__(self, project: str, settings: Settings) -> None:
        self.project = project
        self.settings = settings.pubsub
        self.topics = Topics(settings.transport.topic_prefix)
        self.commits = 0
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._in_flight_messages = 0
        self._in_flight_bytes = 0
        self._closing = False
        self._failed_at: float | None = None
        #: Topics known to exist; others are created first (``pubsub.create``).
        self._existing: set[str] = set()
        self._creating: dict[str, Future[None]] = {}
        #: Topic creation runs here, never on the caller's thread (the collector's event loop).
        self._admin = ThreadPoolExecutor(1, thread_name_prefix="pubsub-topics")
        self._deadlines: _Deadlines | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None

    def start(self) -> None:
        if self._publisher is not None:
            return
        # Messages are its rows (one row, one message): past this many, submit refuses.
        metrics.SINK_QUEUE_LIMIT_ROWS.set(self.settings.flow_max_messages)
        self._publisher = publisher_client(self.settings)
        self._deadlines = _Deadlines(self._expired)
        if self.settings.create:
            self._subscriber = pubsub_v1.SubscriberClient()
            try:
                self._create_now(*self.topics.fixed())
            except google_errors.GoogleAPIError as exc:
                # Pub/Sub unreachable at start: the collector still starts and answers 503
                # (the first submissions create the topics) rather than not starting.
                log.warning("cannot create the Pub/Sub topics yet, will retry: %s", exc)

    # -- submit --------------------------------------------------------------------------

    def submit(self, rows: Rows) -> Future[Outcome]:
        publisher = self._publisher
        if publisher is None or self._closing:
            raise SinkUnavailable("the Pub/Sub sink is not running")
        messages, origins = self._messages(rows)
        if not messages:
            done: Future[Outcome] = Future()
            done.set_result(LANDED)
            return done
        self._wait_for_topics({message.topic for message in messages})
        size = sum(len(message.value or b"") for message in messages)
        with self._lock:
            # One submission alone is always taken, however large: it could never go else.
            if self._in_flight_messages and (
                self._in_flight_messages + len(messages) > self.settings.flow_max_messages
                or self._in_flight_bytes + size > self.settings.flow_max_bytes
            ):
                raise SinkUnavailable(
                    f"the Pub/Sub sink is behind ({self._in_flight_messages} messages, "
                    f"{self._in_flight_bytes} bytes unacknowledged; pubsub.flow_max_*): retry"
                )
            self._in_flight_messages += len(messages)
            self._in_flight_bytes += size
        metrics.SINK_QUEUE_ROWS.set(self._in_flight_messages)
        submission = _Submission(
            len(messages), time.monotonic() + self.settings.publish_timeout_seconds
        )
        for message, origin in zip(messages, origins, strict=True):
            self._publish(publisher, submission, message, origin)
        if self._deadlines is not None:
            self._deadlines.watch(submission)
        return submission.future

    def _messages(self, rows: Rows) -> tuple[list[Message], list[tuple[str, int]]]:
        """The messages, and each one's row: (table, position among the table's rows)."""
        messages: list[Message] = []
        origins: list[tuple[str, int]] = []
        for table, table_rows in rows.items():
            if not len(table_rows):
                continue
            batch = table_rows if isinstance(table_rows, list | pa.Table) else table_rows.to_arrow()
            for position, message in enumerate(encode(table, batch, self.topics)):
                if message.value is not None:
                    messages.append(message)
                    origins.append((table, position))
        return messages, origins

    def _wait_for_topics(self, topics: set[str]) -> None:
        """Make sure ``topics`` exist (creating them when ``pubsub.create``). On an event loop
        (the collector) this never waits: a topic still being created turns the submission
        away for now; the CDC reader's thread waits for it."""
        missing = topics - self._existing
        if not missing or not self.settings.create:
            return
        pending = [self._create(topic) for topic in sorted(missing)]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                for future in pending:
                    future.result(self.settings.publish_timeout_seconds)
            except Exception as exc:
                raise SinkUnavailable(
                    f"cannot create Pub/Sub topics {sorted(missing)}: {exc}"
                ) from exc
            return
        raise SinkUnavailable(f"creating Pub/Sub topics {sorted(missing)}: retry")

    def _create(self, topic: str) -> Future[None]:
        with self._lock:
            future = self._creating.get(topic)
            if future is None or future.done():
                future = self._creating[topic] = self._admin.submit(self._create_now, topic)
            return future

    def _create_now(self, *topics: str) -> None:
        """Create ``topics``, each with the loader's subscription, so that the loader gets
        every message published from now on (see :mod:`shopstream.sinks.pubsub_admin`)."""
        assert self._publisher is not None and self._subscriber is not None
        create_for_loader(
            self._publisher, self._subscriber, self.project, self.topics, topics, self.settings
        )
        self._existing.update(topics)

    def _ordered(self, message: Message) -> bool:
        """Whether the message keeps its key's order: events only with
        ``pubsub.order_events`` (per-key batching costs throughput where every session is a
        key, and staging orders events by their own time); everything else always (a row's
        changes, a table's schema versions; dead letters are few)."""
        if message.headers.get(TABLE) == "events":
            return self.settings.order_events
        return True

    def _publish(
        self,
        publisher: pubsub_v1.PublisherClient,
        submission: _Submission,
        message: Message,
        origin: tuple[str, int] | None,
    ) -> None:
        """Publish one message of ``submission``; ``origin``: its row, None for a dead
        letter the sink made (which, if refused too, fails the submission)."""
        key, carried = pubsub_key(message.key) if self._ordered(message) else ("", {})
        topic_path = publisher.topic_path(self.project, message.topic)
        data = message.value or b""
        fields = {**attributes(message.headers), **carried}
        try:
            try:
                future = publisher.publish(topic_path, data, ordering_key=key, **fields)
            except PublishToPausedOrderingKeyException:
                # A failure of an earlier submission paused the key; this one starts afresh.
                publisher.resume_publish(topic_path, key)
                future = publisher.publish(topic_path, data, ordering_key=key, **fields)
        except MessageTooLargeError as exc:
            if origin is None:
                self._settle(submission, len(data), message.topic, key, exc)
            else:
                self._refused(publisher, submission, message, origin, f"too large: {exc}")
            return
        except Exception as exc:
            self._settle(submission, len(data), message.topic, key, exc)
            return
        table = message.headers.get(TABLE, "") if origin is not None else ""

        def published(done: Future[str]) -> None:
            error = done.exception()
            if error is None and table:
                metrics.SINK_ROWS_WRITTEN.labels(table).inc()
            self._settle(submission, len(data), message.topic, key, error)

        future.add_done_callback(published)

    def _refused(
        self,
        publisher: pubsub_v1.PublisherClient,
        submission: _Submission,
        message: Message,
        origin: tuple[str, int],
        reason: str,
    ) -> None:
        """``message`` can never be published: its dead letter takes its place."""
        letter = dead_letter_message(
            message, origin, f"Pub/Sub refused the message: {reason}", self.topics
        )
        table, position = origin
        log.warning("a message for %s goes to the dead letters: %s", message.topic, reason)
        with submission.lock:
            submission.remaining += 1  # the letter, before the refused one counts as done
            submission.dead.setdefault(
                origin, DeadLettered(table, position, letter.headers["reason"])
            )
        with self._lock:
            self._in_flight_messages += 1
            self._in_flight_bytes += len(letter.value or b"")
        self._publish(publisher, submission, letter, None)
        self._settle(submission, len(message.value or b""), message.topic, "", None)

    def _settle(
        self,
        submission: _Submission,
        size: int,
        topic: str,
        key: str,
        error: BaseException | None,
    ) -> None:
        """One publish finished (publisher thread): count it, fail or complete the future."""
        with self._lock:
            self._in_flight_messages -= 1
            self._in_flight_bytes -= size
            if not self._in_flight_messages:
                self._drained.notify_all()
            metrics.SINK_QUEUE_ROWS.set(self._in_flight_messages)
            if error is None:
                self._failed_at = None
            else:
                self._failed_at = time.monotonic()
        if error is not None:
            self._failed(topic, key, error)
            settle(submission.future, error=_sink_error(topic, error))
        with submission.lock:
            submission.remaining -= 1
            last = submission.remaining == 0
        if last and not submission.future.done():
            with self._lock:
                self.commits += 1
            settle(submission.future, submission.outcome())

    def _failed(self, topic: str, key: str, error: BaseException) -> None:
        metrics.SINK_FAILURES.inc()
        publisher = self._publisher
        if publisher is None:
            return
        if key:
            # The client pauses a key after a failure so nothing overtakes the lost message;
            # the caller resends the whole submission, so publishing may go on.
            publisher.resume_publish(publisher.topic_path(self.project, topic), key)
        if isinstance(error, google_errors.NotFound):
            # The topic is gone (an emulator restarted, say): create it again first.
            self._existing.discard(topic)

    def _expired(self, submission: _Submission) -> None:
        with self._lock:
            self._failed_at = time.monotonic()
        timeout = self.settings.publish_timeout_seconds
        settle(
            submission.future,
            error=SinkError(
                f"Pub/Sub did not acknowledge the messages within {timeout:g} s "
                "(pubsub.publish_timeout_seconds): retry"
            ),
        )

    # -- state ---------------------------------------------------------------------------

    def ready(self) -> bool:
        if self._publisher is None or self._closing:
            return False
        failed_at = self._failed_at
        return failed_at is None or time.monotonic() - failed_at > _NOT_READY_AFTER_FAILURE_S

    def broken(self) -> str | None:
        return None  # every failure is the service's, and passes when it returns

    def pending_rows(self) -> int:
        return self._in_flight_messages

    def close(self, timeout: float = 60.0) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        with self._lock:
            self._closing = True
            # The client publishes what it batched on its own; wait for the answers.
            self._drained.wait_for(lambda: not self._in_flight_messages, timeout)
        publisher.stop()
        if self._subscriber is not None:
            self._subscriber.close()
        if self._deadlines is not None:
            self._deadlines.stop()
        self._admin.shutdown(wait=False, cancel_futures=True)
        self._publisher = None


def _sink_error(topic: str, error: BaseException) -> SinkError:
    hint = ""
    if isinstance(error, google_errors.NotFound):
        hint = " (create it, or set pubsub.create)"
    sink_error = SinkError(f"publishing to Pub/Sub topic {topic} failed{hint}: {error}")
    sink_error.__cause__ = error
    return sink_error


def _open(url: str, settings: Settings, warehouse: Warehouse | None) -> PubSubSink:
    return PubSubSink(project_of(url), settings)


BACKEND = SinkBackend("pubsub", _open)
