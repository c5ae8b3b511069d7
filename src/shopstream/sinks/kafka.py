"""The Kafka sink: raw rows as messages on a Kafka cluster (``kafka://host:port[,host:port]``).

Rows become messages with :func:`shopstream.events.messages.encode` (changes on Debezium's
topics with Debezium's key and envelope, events keyed by session, dead letters on their own
topic), produced by one idempotent producer (``acks=all``, so a record counts only once every
in-sync replica has it, and retries never duplicate or reorder a partition's records).

A submission's future resolves only when every one of its records got a successful delivery
report; the first failed report fails it with :class:`SinkError` carrying the broker's reason.
The collector answers 2xx, and the CDC reader confirms an LSN, only after that.

An idempotent producer fails *fatally* when its sequence numbers no longer match the broker's
(seen after a broker restart that lost the tail of its log: OUT_OF_ORDER_SEQUENCE_NUMBER). The
sink then builds a new producer and sends again every record not yet acknowledged, so the
submissions still complete; a record the old producer had already written may land twice,
which the deterministic ids (event_id, change_id) let staging remove. Delivery reports of the
old producer count only when they are acknowledgements.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from shopstream.events.messages import Message, Topics, encode, tombstone_for
from shopstream.observability import metrics
from shopstream.sinks import SinkBackend
from shopstream.sinks.base import LANDED, Outcome, Rows, SinkError, SinkUnavailable, settle

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    from shopstream.config import KafkaSettings, Settings
    from shopstream.warehouse import Warehouse

log = logging.getLogger(__name__)

#: How long a topic creation or a reachability probe may take.
_ADMIN_TIMEOUT_S = 5.0
#: While the broker is unreachable: probe this often, and refuse topic creation for this long
#: after a failed attempt (so that every request does not wait for the admin timeout).
_RETRY_S = 1.0
#: librdkafka's "all brokers are down" (an error event, not fatal: it keeps reconnecting).
_ALL_BROKERS_DOWN = -187
#: librdkafka's code for records failed because their producer failed fatally.
_FATAL = -150


def bootstrap_servers(url: str) -> str:
    """``kafka://host:port[,host:port...]`` as librdkafka's ``bootstrap.servers``.

    >>> bootstrap_servers("kafka://broker-1:9092,broker-2:9092")
    'broker-1:9092,broker-2:9092'
    >>> bootstrap_servers("kafka://broker-1")
    Traceback (most recent call last):
    ...
    ValueError: Kafka URL 'kafka://broker-1': 'broker-1' is not host:port
    """
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ValueError(f"Kafka URL {url!r}: the scheme must be kafka://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"Kafka URL {url!r}: only kafka://host:port[,host:port...] (settings go in kafka.*)"
        )
    if "@" in parts.netloc:
        raise ValueError(
            f"Kafka URL {url!r}: no credentials in the URL: give them through "
            "SHOPSTREAM_KAFKA__CLIENT_CONFIG (sasl.username, sasl.password)"
        )
    servers = [server.strip() for server in parts.netloc.split(",")]
    for server in servers:
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Kafka URL {url!r}: {server!r} is not host:port")
    return ",".join(servers)


def messages_for(rows: Rows, topics: Topics, *, tombstones: bool) -> list[Message]:
    """The messages for a submission, table by table in order; with ``tombstones``, each
    delete's change is followed by its tombstone (Debezium's default)."""
    messages: list[Message] = []
    for table, table_rows in rows.items():
        if len(table_rows) == 0:
            continue
        plain = table_rows if isinstance(table_rows, list | pa.Table) else table_rows.to_arrow()
        for message in encode(table, plain, topics):
            messages.append(message)
            if tombstones:
                tombstone = tombstone_for(message)
                if tombstone is not None:
                    messages.append(tombstone)
    return messages


class _Submission:
    """One submission's records and which of them the broker acknowledged."""

    __slots__ = ("acked", "deadline", "future", "messages", "remaining")

    def __init__(self, messages: list[Message], deadline: float) -> None:
        self.messages = messages
        self.acked = bytearray(len(messages))
        self.remaining = len(messages)
        self.deadline = deadline
        self.future: Future[Outcome] = Future()

    def unacknowledged(self) -> list[int]:
        return [index for index, done in enumerate(self.acked) if not done]


class KafkaSink:
    def __init__(self, bootstrap: str, kafka: KafkaSettings, topics: Topics, max_pending: int):
        self.bootstrap = bootstrap
        self.kafka = kafka
        self.topics = topics
        self.max_pending = max_pending
        self.commits = 0
        #: How many times a fatally failed producer was replaced (for tests and the log).
        self.producers_replaced = 0
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._generation = 0
        # Held while producing or replacing the producer: a submission's records all go to
        # one producer, and none to one being replaced.
        self._produce_lock = threading.Lock()
        # Guards the in-flight set and the pending count (submitters vs delivery reports).
        self._track_lock = threading.Lock()
        self._topic_lock = threading.Lock()
        self._in_flight: dict[int, _Submission] = {}
        self._pending = 0
        self._existing_topics: set[str] = set()
        self._topics_retry_at = 0.0
        self._topics_error = ""
        self._fatal: KafkaError | None = None
        self._broken: str | None = None
        self._reachable = False
        self._closing = False
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- the Sink protocol -------------------------------------------------------------------

    def start(self) -> None:
        if self._poller is not None:
            return
        from confluent_kafka.admin import AdminClient

        self._producer = self._new_producer()
        self._admin = AdminClient(self._client_config())
        self._probe()
        if self._reachable and self.kafka.create_topics:
            # Best effort: a broker that is down now gets them on first use instead.
            with contextlib.suppress(SinkUnavailable):
                self._ensure_topics(set(self.topics.fixed()))
        self._poller = threading.Thread(target=self._poll, name="kafka-sink", daemon=True)
        self._poller.start()

    def submit(self, rows: Rows) -> Future[Outcome]:
        if self._closing or self._poller is None or not self._poller.is_alive():
            raise SinkUnavailable("the Kafka sink is not running")
        if not self._reachable:
            # Refused at once rather than held for the delivery timeout: the collector
            # answers 503 now, and the CDC reader pauses and reads again.
            raise SinkUnavailable(f"Kafka is unreachable ({self.bootstrap}); retry")
        try:
            messages = messages_for(rows, self.topics, tombstones=self.kafka.tombstones_on_delete)
        except Exception as exc:  # rows no raw table has: a caller's bug, not the broker's
            failed: Future[Outcome] = Future()
            failed.set_exception(SinkError(f"rows cannot be written as Kafka messages: {exc}"))
            return failed
        submission = _Submission(messages, time.monotonic() + self.kafka.delivery_timeout_ms / 1000)
        if not messages:
            submission.future.set_result(LANDED)
            return submission.future
        self._ensure_topics({message.topic for message in messages})
        with self._produce_lock:
            if self._closing:  # checked again under the lock close() takes to set it
                raise SinkUnavailable("the Kafka sink is closing")
            with self._track_lock:
                if self._pending + len(messages) > self.max_pending:
                    raise SinkUnavailable(
                        f"the Kafka sink is behind ({self._pending} records not yet "
                        "acknowledged by the broker); retry"
                    )
                self._in_flight[id(submission)] = submission
                self._pending += len(messages)
            try:
                self._produce(submission, range(len(messages)))
            except BufferError:
                # Records already queued may still land: harmless duplicates once the caller
                # sends the submission again.
                self._forget(submission)
                raise SinkUnavailable(
                    "the Kafka producer's queue is full (the broker is slow or down); retry"
                ) from None
            except SinkError as exc:  # a record the producer refuses (too large, say)
                self._fail(submission, exc)
        metrics.SINK_QUEUE_ROWS.set(self._pending)
        return submission.future

    def ready(self) -> bool:
        return (
            self._poller is not None
            and self._poller.is_alive()
            and not self._closing
            and self._broken is None
            and self._fatal is None
            and self._reachable
        )

    def broken(self) -> str | None:
        if self._closing:
            return None
        if self._broken is not None:
            return self._broken
        if self._poller is not None and not self._poller.is_alive():
            return "the Kafka sink's delivery thread has stopped"
        return None

    def pending_rows(self) -> int:
        return self._pending

    def close(self, timeout: float = 60.0) -> None:
        if self._poller is None:
            return
        with self._produce_lock:  # no submission is half-queued from here on
            self._closing = True
        self._stop.set()
        self._poller.join(timeout)
        self._poller = None
        # Delivery reports are served here from now on: what is queued gets its chance.
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline and self._producer is not None:
            try:
                self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            except Exception as exc:
                self._note_failure(exc)
            if self._fatal is not None:
                self._replace_producer()
        for submission in list(self._in_flight.values()):
            self._fail(
                submission,
                SinkError(
                    f"the Kafka sink closed before the broker acknowledged within {timeout:g} s"
                ),
            )
        self._producer = None

    # -- producing ---------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.kafka.client_config}

    def _new_producer(self) -> Producer:
        from confluent_kafka import Producer

        return Producer(
            {
                **self._client_config(),
                "client.id": "shopstream-sink",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": self.kafka.compression,
                "linger.ms": self.kafka.linger_ms,
                "delivery.timeout.ms": self.kafka.delivery_timeout_ms,
                # Java's partitioner: a key lands where Java producers (Debezium) put it.
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": min(self.max_pending, 2_147_483_647),
                "error_cb": self._on_error,
            }
        )

    def _produce(self, submission: _Submission, indexes: Any) -> None:
        """Queue ``submission``'s records at ``indexes`` (the produce lock is held)."""
        from confluent_kafka import KafkaException

        producer = self._producer
        assert producer is not None
        generation = self._generation
        for index in indexes:
            message = submission.messages[index]
            try:
                producer.produce(
                    message.topic,
                    message.value,
                    message.key,
                    headers=message.headers,
                    on_delivery=functools.partial(self._delivered, submission, index, generation),
                )
            except KafkaException as exc:
                # A fatal producer refuses everything: the replacement sends these.
                self._note_failure(exc)
                if self._fatal is None:
                    raise SinkError(
                        f"the Kafka producer refused a record for {message.topic}: {exc}"
                    ) from exc
                return

    def _delivered(
        self, submission: _Submission, index: int, generation: int, err: KafkaError | None, _: Any
    ) -> None:
        """A delivery report (on the thread that polls the producer)."""
        if submission.future.done():
            self._forget(submission)  # failed already, or given up by the caller
            return
        if err is None:
            self._reachable = True
            with self._track_lock:
                if submission.acked[index] or id(submission) not in self._in_flight:
                    return  # acknowledged by the old producer and by its replacement
                submission.acked[index] = 1
                submission.remaining -= 1
                self._pending -= 1
                finished = submission.remaining == 0
            if finished:
                self._landed(submission)
            return
        if generation != self._generation:
            return  # the replaced producer's failure: the new one has sent the record again
        if err.fatal() or err.code() == _FATAL:
            self._fatal = err  # the poller replaces the producer and sends again
            return
        message = submission.messages[index]
        self._fail(
            submission,
            SinkError(f"Kafka did not take a record for {message.topic}: {err.str()}"),
        )

    def _landed(self, submission: _Submission) -> None:
        with self._track_lock:
            self._in_flight.pop(id(submission), None)
        self.commits += 1
        counts: dict[str, int] = {}
        for message in submission.messages:
            if message.value is not None:
                table = message.headers.get("shopstream.table", "")
                counts[table] = counts.get(table, 0) + 1
        for table, count in counts.items():
            metrics.SINK_ROWS_WRITTEN.labels(table).inc(count)
        metrics.SINK_BATCH_ROWS.observe(len(submission.messages))
        settle(submission.future, LANDED)

    def _fail(self, submission: _Submission, error: SinkError) -> None:
        if self._forget(submission):
            metrics.SINK_FAILURES.inc()
        settle(submission.future, error=error)

    def _forget(self, submission: _Submission) -> bool:
        """Stop tracking ``submission`` (its records no longer count as pending)."""
        with self._track_lock:
            if self._in_flight.pop(id(submission), None) is None:
                return False
            self._pending -= submission.remaining
            return True

    # -- the delivery thread -----------------------------------------------------------------

    def _poll(self) -> None:
        next_probe = 0.0
        try:
            while not self._stop.is_set():
                producer = self._producer
                assert producer is not None
                try:
                    producer.poll(0.05)
                except Exception as exc:
                    self._note_failure(exc)
                if self._fatal is not None:
                    self._replace_producer()
                metrics.SINK_QUEUE_ROWS.set(self._pending)
                if not self._reachable and time.monotonic() >= next_probe:
                    # librdkafka connects only when it has something to send: without
                    # traffic it would never notice the broker came back (and /readyz,
                    # which keeps traffic away, would stay 503 for ever).
                    self._probe()
                    next_probe = time.monotonic() + _RETRY_S
        except BaseException as exc:
            log.exception("the Kafka sink's delivery thread stopped")
            self._broken = f"the Kafka sink's delivery thread stopped: {exc}"
            for submission in list(self._in_flight.values()):
                self._fail(submission, SinkError(self._broken))
            raise

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error events: most are transient (it reconnects by itself)."""
        if err.fatal():
            self._fatal = err
        elif err.code() == _ALL_BROKERS_DOWN:
            self._reachable = False
            log.warning("Kafka is unreachable: %s", err.str())

    def _note_failure(self, exc: Exception) -> None:
        from confluent_kafka import KafkaError

        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.fatal():
            self._fatal = err
        else:
            log.warning("Kafka producer: %s", exc)

    def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            producer.list_topics(timeout=2.0 if self._poller is None else 0.5)
        except Exception:
            self._reachable = False
        else:
            self._reachable = True

    def _replace_producer(self) -> None:
        """After a fatal error: a new producer, and every record not yet acknowledged sent
        again through it (or its submission failed once its delivery timeout passed)."""
        reason = self._fatal.str() if self._fatal is not None else "fatal error"
        with self._produce_lock:
            old = self._producer
            self._generation += 1
            self._fatal = None
            try:
                self._producer = self._new_producer()
            except Exception as exc:
                self._broken = f"the Kafka producer cannot be recreated: {exc}"
                self._producer = old
                for submission in list(self._in_flight.values()):
                    self._fail(submission, SinkError(self._broken))
                return
            self.producers_replaced += 1
            now = time.monotonic()
            resent = 0
            for submission in list(self._in_flight.values()):
                if now > submission.deadline:
                    self._fail(
                        submission,
                        SinkError(f"not acknowledged before the producer failed: {reason}"),
                    )
                    continue
                indexes = submission.unacknowledged()
                try:
                    self._produce(submission, indexes)
                except SinkError as exc:
                    self._fail(submission, exc)
                except BufferError:
                    self._fail(submission, SinkUnavailable("the Kafka producer's queue is full"))
                else:
                    resent += len(indexes)
        log.warning(
            "the Kafka producer failed (%s); a new one sends the %d records not acknowledged",
            reason,
            resent,
        )
        if old is not None:
            # Its acknowledgements still count; its failures are ignored (sent again above).
            with contextlib.suppress(Exception):
                old.purge()
            with contextlib.suppress(Exception):
                old.poll(0)

    # -- topics ------------------------------------------------------------------------------

    def _ensure_topics(self, wanted: set[str]) -> None:
        """Create the topics in ``wanted`` this sink has not seen yet (``kafka.create_topics``);
        raises SinkUnavailable when the broker cannot be asked now."""
        missing = wanted - self._existing_topics
        if not missing:
            return
        if not self.kafka.create_topics:
            self._existing_topics |= missing
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        with self._topic_lock:
            missing -= self._existing_topics
            if not missing:
                return
            if time.monotonic() < self._topics_retry_at:
                raise SinkUnavailable(f"Kafka topics cannot be created now: {self._topics_error}")
            assert self._admin is not None
            requests = [
                NewTopic(topic, self.kafka.partitions, self.kafka.replication_factor)
                for topic in sorted(missing)
            ]
            futures = self._admin.create_topics(requests, request_timeout=_ADMIN_TIMEOUT_S)
            for topic, future in futures.items():
                try:
                    future.result(timeout=_ADMIN_TIMEOUT_S + 1)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        self._topics_failed(topic, exc.args[0].str())
                except Exception as exc:
                    self._topics_failed(topic, str(exc))
                self._existing_topics.add(topic)
                log.info("Kafka topic %s is there", topic)

    def _topics_failed(self, topic: str, reason: str) -> None:
        self._topics_error = f"topic {topic}: {reason}"
        self._topics_retry_at = time.monotonic() + _RETRY_S
        raise SinkUnavailable(f"the Kafka topic {topic} could not be created: {reason}")


def _open(url: str, settings: Settings, warehouse: Warehouse) -> KafkaSink:
    return KafkaSink(
        bootstrap_servers(url),
        settings.kafka,
        Topics(settings.transport.topic_prefix),
        max_pending=settings.sink.max_queue_rows,
    )


BACKEND = SinkBackend("kafka", _open)
