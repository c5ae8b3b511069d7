"""The Kafka sink: raw rows as messages on a Kafka cluster (``kafka://host:port[,host:port]``).

Rows become messages with :func:`shopstream.events.messages.encode` (changes on Debezium's
topics with Debezium's key and envelope, events keyed by session, dead letters on their own
topic), produced by one idempotent producer (``acks=all``, so a record counts only once every
in-sync replica has it, and retries never duplicate or reorder a partition's records).

A submission's future resolves only when every one of its records got a successful delivery
report; the first failed report fails it with :class:`SinkError` carrying the broker's reason.
The collector answers 2xx, and the CDC reader confirms an LSN, only after that.

A record Kafka can never take (too large for ``message.max.bytes``, or invalid for the
topic) is not such a failure: failing the submission would have its sender send it again for
ever (PostgreSQL resends the change, the slot never moves, WAL grows) and its neighbours land
again each time. It becomes a dead letter instead (the row's payload cut to what fits, its
size in the reason), produced to the dead-letter topic as one more record of the submission,
and the submission's :class:`Outcome` lists it, like the warehouse sink's refused rows.

Topics are created on the sink's own thread, never in ``submit`` (the collector's event
loop): until a submission's topics exist, ``submit`` raises :class:`SinkUnavailable`.

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
from shopstream.sinks.base import (
    LANDED,
    DeadLettered,
    Outcome,
    Rows,
    SinkError,
    SinkUnavailable,
    settle,
)
from shopstream.sinks.refused import dead_letter_message

if TYPE_CHECKING:
    from concurrent.futures import Future as AdminFuture

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
#: Refusals that say this one record can never be taken (as opposed to the broker being
#: unavailable): MSG_SIZE_TOO_LARGE (the producer's or the broker's limit), INVALID_RECORD
#: (the broker's validation, e.g. no key on a compacted topic).
_RECORD_REFUSED = frozenset({10, 87})


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


def messages_for(
    rows: Rows,
    topics: Topics,
    *,
    tombstones: bool,
    origins: list[tuple[str, int] | None] | None = None,
) -> list[Message]:
    """The messages for a submission, table by table in order; with ``tombstones``, each
    delete's change is followed by its tombstone (Debezium's default). ``origins``, when
    given, gets each message's row: (table, position among the table's rows)."""
    messages: list[Message] = []
    for table, table_rows in rows.items():
        if len(table_rows) == 0:
            continue
        plain = table_rows if isinstance(table_rows, list | pa.Table) else table_rows.to_arrow()
        for position, message in enumerate(encode(table, plain, topics)):
            messages.append(message)
            if origins is not None:
                origins.append((table, position))
            if tombstones:
                tombstone = tombstone_for(message)
                if tombstone is not None:
                    messages.append(tombstone)
                    if origins is not None:
                        origins.append((table, position))
    return messages


#: A record's state in its submission (``_Submission.acked``).
_WAITING, _ACKED, _REFUSED = 0, 1, 2


class _Submission:
    """One submission's records and which of them the broker acknowledged (or refused for
    good: those were replaced by a dead letter, one more record of the submission)."""

    __slots__ = ("acked", "dead", "deadline", "future", "messages", "origins", "remaining")

    def __init__(
        self, messages: list[Message], origins: list[tuple[str, int] | None], deadline: float
    ) -> None:
        self.messages = messages
        #: Each record's row (table, position); None for the sink's own dead letters.
        self.origins = origins
        self.acked = bytearray(len(messages))
        self.remaining = len(messages)
        self.deadline = deadline
        self.dead: dict[tuple[str, int], DeadLettered] = {}
        self.future: Future[Outcome] = Future()

    def unacknowledged(self) -> list[int]:
        return [index for index, state in enumerate(self.acked) if state == _WAITING]

    def outcome(self) -> Outcome:
        return Outcome(tuple(self.dead.values())) if self.dead else LANDED


class KafkaSink:
    def __init__(self, bootstrap: str, kafka: KafkaSettings, topics: Topics, max_pending: int):
        self.bootstrap = bootstrap
        self.kafka = kafka
        self.topics = topics
        self.max_pending = max_pending
        self.commits = 0
        #: How many times a fatally failed producer was replaced, and the records its
        #: replacements sent again (for tests and the log).
        self.producers_replaced = 0
        self.records_resent = 0
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
        #: Topics submissions need that do not exist yet: the delivery thread creates them.
        self._wanted_topics: set[str] = set()
        self._topic_requests: dict[str, AdminFuture[None]] = {}
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

        metrics.SINK_QUEUE_LIMIT_ROWS.set(self.max_pending)

        self._producer = self._new_producer()
        self._admin = AdminClient(self._client_config())
        self._probe()
        if self.kafka.create_topics:
            # Waited for here (not on a request's thread); a broker that is down now gets
            # them from the delivery thread once it is back.
            self._wanted_topics |= set(self.topics.fixed())
            if self._reachable:
                self._request_topics()
                for future in list(self._topic_requests.values()):
                    with contextlib.suppress(Exception):
                        future.result(timeout=_ADMIN_TIMEOUT_S + 1)
                self._collect_topics()
        else:
            self._existing_topics |= set(self.topics.fixed())
        self._poller = threading.Thread(target=self._poll, name="kafka-sink", daemon=True)
        self._poller.start()

    def submit(self, rows: Rows) -> Future[Outcome]:
        if self._closing or self._poller is None or not self._poller.is_alive():
            raise SinkUnavailable("the Kafka sink is not running")
        if not self._reachable:
            # Refused at once rather than held for the delivery timeout: the collector
            # answers 503 now, and the CDC reader pauses and reads again.
            raise SinkUnavailable(f"Kafka is unreachable ({self.bootstrap}); retry")
        origins: list[tuple[str, int] | None] = []
        try:
            messages = messages_for(
                rows, self.topics, tombstones=self.kafka.tombstones_on_delete, origins=origins
            )
        except Exception as exc:  # rows no raw table has: a caller's bug, not the broker's
            failed: Future[Outcome] = Future()
            failed.set_exception(SinkError(f"rows cannot be written as Kafka messages: {exc}"))
            return failed
        deadline = time.monotonic() + self.kafka.delivery_timeout_ms / 1000
        submission = _Submission(messages, origins, deadline)
        if not messages:
            submission.future.set_result(LANDED)
            return submission.future
        self._need_topics({message.topic for message in messages})
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
            except SinkError as exc:
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
                err = exc.args[0] if exc.args else None
                if err is not None and err.code() in _RECORD_REFUSED and not err.fatal():
                    self._refused(submission, index, f"the Kafka producer refused it: {err.str()}")
                    continue
                # A fatal producer refuses everything: the replacement sends these.
                self._note_failure(exc)
                if self._fatal is None:
                    raise SinkError(
                        f"the Kafka producer refused a record for {message.topic}: {exc}"
                    ) from exc
                return

    def _refused(self, submission: _Submission, index: int, reason: str) -> None:
        """Record ``index`` can never be taken: its dead letter takes its place in the
        submission (the produce lock is held)."""
        message = submission.messages[index]
        origin = submission.origins[index]
        if origin is None:  # the sink's own dead letter refused: nothing is left to try
            raise SinkError(f"Kafka refused a dead letter for {message.topic}: {reason}")
        table, position = origin
        letter = dead_letter_message(
            message, origin, f"Kafka refused the record: {reason}", self.topics
        )
        with self._track_lock:
            if submission.acked[index] != _WAITING:
                return
            submission.acked[index] = _REFUSED
            submission.dead.setdefault(
                origin, DeadLettered(table, position, letter.headers["reason"])
            )
            # One record out, its dead letter in: what is pending stays the same.
            submission.messages.append(letter)
            submission.origins.append(None)
            submission.acked.append(_WAITING)
            letter_index = len(submission.messages) - 1
        log.warning("a record for %s goes to the dead letters: %s", message.topic, reason)
        self._produce(submission, [letter_index])

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
                if submission.acked[index] != _WAITING or id(submission) not in self._in_flight:
                    return  # acknowledged by the old producer and by its replacement
                submission.acked[index] = _ACKED
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
        if err.code() in _RECORD_REFUSED:
            try:
                with self._produce_lock:
                    self._refused(submission, index, err.str())
                return
            except SinkError as exc:
                self._fail(submission, exc)
                return
            except BufferError:
                self._fail(submission, SinkUnavailable("the Kafka producer's queue is full"))
                return
        self._fail(
            submission,
            SinkError(f"Kafka did not take a record for {message.topic}: {err.str()}"),
        )

    def _landed(self, submission: _Submission) -> None:
        with self._track_lock:
            self._in_flight.pop(id(submission), None)
        self.commits += 1
        counts: dict[str, int] = {}
        for message, state in zip(submission.messages, submission.acked, strict=True):
            if message.value is not None and state == _ACKED:
                table = message.headers.get("shopstream.table", "")
                counts[table] = counts.get(table, 0) + 1
        for table, count in counts.items():
            metrics.SINK_ROWS_WRITTEN.labels(table).inc(count)
        metrics.SINK_BATCH_ROWS.observe(len(submission.messages))
        settle(submission.future, submission.outcome())

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
                if self._wanted_topics:
                    self._collect_topics()
                    if self._reachable:
                        self._request_topics()
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
            self.records_resent += resent
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

    def _need_topics(self, wanted: set[str]) -> None:
        """Raises SinkUnavailable while a topic in ``wanted`` does not exist yet, and has the
        delivery thread create it (``kafka.create_topics``): never waited for here."""
        missing = wanted - self._existing_topics
        if not missing:
            return
        if not self.kafka.create_topics:
            self._existing_topics |= missing
            return
        with self._topic_lock:
            self._wanted_topics |= missing
            error = self._topics_error
        raise SinkUnavailable(
            f"Kafka topics {', '.join(sorted(missing))} are being created; retry"
            + (f" (last attempt: {error})" if error else "")
        )

    def _request_topics(self) -> None:
        """Ask the broker for the wanted topics not yet asked for (does not wait)."""
        from confluent_kafka.admin import NewTopic

        with self._topic_lock:
            asking = self._wanted_topics - self._topic_requests.keys()
            if not asking or time.monotonic() < self._topics_retry_at:
                return
            assert self._admin is not None
            requests = [
                NewTopic(topic, self.kafka.partitions, self.kafka.replication_factor)
                for topic in sorted(asking)
            ]
            futures = self._admin.create_topics(requests, request_timeout=_ADMIN_TIMEOUT_S)
            self._topic_requests.update(futures)

    def _collect_topics(self) -> None:
        """Take the answers to topic creations that came (does not wait)."""
        from confluent_kafka import KafkaError, KafkaException

        with self._topic_lock:
            for topic, future in list(self._topic_requests.items()):
                if not future.done():
                    continue
                del self._topic_requests[topic]
                try:
                    future.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        self._topics_failed(topic, exc.args[0].str())
                        continue
                except Exception as exc:
                    self._topics_failed(topic, str(exc))
                    continue
                self._existing_topics.add(topic)
                self._wanted_topics.discard(topic)
                if not self._wanted_topics:
                    self._topics_error = ""
                log.info("Kafka topic %s is there", topic)

    def _topics_failed(self, topic: str, reason: str) -> None:
        """Asked again after a pause (the topic stays wanted)."""
        self._topics_error = f"topic {topic}: {reason}"
        self._topics_retry_at = time.monotonic() + _RETRY_S
        log.warning("the Kafka topic %s could not be created: %s", topic, reason)


def _open(url: str, settings: Settings, warehouse: Warehouse) -> KafkaSink:
    return KafkaSink(
        bootstrap_servers(url),
        settings.kafka,
        Topics(settings.transport.topic_prefix),
        max_pending=settings.sink.max_queue_rows,
    )


BACKEND = SinkBackend("kafka", _open)
