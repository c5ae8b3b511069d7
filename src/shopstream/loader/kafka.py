"""The Kafka source: a consumer group over every topic under ``<prefix>.``.

``shopstream load --from kafka://host:port[,host:port...]``. Offsets are never committed
automatically: :meth:`KafkaSource.commit` commits, synchronously, the offset after each
partition's last message once the loader made the batch durable; a loader killed in between
re-reads from the last commit. ``read_committed`` skips records of aborted producer
transactions. Topics are matched by regex, so a table newly captured by CDC (a new
``<prefix>.<schema>.<table>`` topic) is picked up at the next metadata refresh
(``loader.topic_refresh_ms``). More loaders with the same ``loader.group`` share the
partitions. ``kafka.client_config`` (security, SASL) applies to the consumer and to the
dead-letter producer alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shopstream.events.messages import Topics, encode
from shopstream.loader import SourceBackend
from shopstream.loader.base import Received, SourceError

if TYPE_CHECKING:
    from confluent_kafka import Message

    from shopstream.config import Settings

log = logging.getLogger(__name__)

_CLOSE_FLUSH_SECONDS = 10.0


def bootstrap_servers(url: str) -> str:
    """``kafka://host:port[,host:port...]`` → librdkafka's ``bootstrap.servers``."""
    scheme, sep, rest = url.partition("://")
    servers = rest.strip("/")
    if scheme != "kafka" or not sep or not servers:
        raise ValueError(f"{url!r} is not a Kafka URL: use kafka://host:port[,host:port...]")
    for server in servers.split(","):
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"{server!r} in {url!r} is not host:port")
    return servers


def subscription(topics: Topics) -> str:
    """The regex for every topic under the prefix (librdkafka takes a leading ``^`` as a
    regex). The prefix has letters, digits, ``_`` and ``-`` only: nothing to escape."""
    return f"^{topics.prefix}\\..*"


class KafkaSource:
    def __init__(self, url: str, settings: Settings) -> None:
        self.topics = Topics(settings.transport.topic_prefix)
        self.settings = settings
        common: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers(url),
            **settings.kafka.client_config,
        }
        self._common = common
        loader = settings.loader
        self.consumer = Consumer(
            {
                **common,
                "group.id": loader.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "topic.metadata.refresh.interval.ms": loader.topic_refresh_ms,
                "session.timeout.ms": loader.session_timeout_ms,
                "heartbeat.interval.ms": max(loader.session_timeout_ms // 5, 500),
                "error_cb": self._on_error,
                **({"group.instance.id": loader.instance_id} if loader.instance_id else {}),
            }
        )
        self._producer: Producer | None = None
        self._fatal: str | None = None
        if settings.kafka.create_topics:
            self._create_dead_letter_topic()
        self.consumer.subscribe([subscription(self.topics)])

    # -- reading -------------------------------------------------------------------------

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        if self._fatal is not None:
            raise SourceError(f"the Kafka consumer failed for good: {self._fatal}")
        try:
            messages = self.consumer.consume(num_messages=max_messages, timeout=timeout)
        except KafkaException as exc:
            raise SourceError(f"reading from Kafka failed: {exc}") from exc
        received = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                if error.fatal():
                    raise SourceError(f"the Kafka consumer failed for good: {error}")
                continue
            received.append(_received(message))
        return received

    def commit(self, received: Sequence[Received]) -> None:
        """Commit, per partition, the offset after the last of ``received`` (synchronous)."""
        after: dict[tuple[str, int], int] = {}
        for message in received:
            topic, partition, offset = message.token
            after[(topic, partition)] = max(after.get((topic, partition), 0), offset + 1)
        if not after:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(after.items())]
        try:
            answered = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise SourceError(f"committing offsets failed: {exc}") from exc
        failed = [tp for tp in answered or () if tp.error is not None]
        if failed:
            raise SourceError(
                "committing offsets failed for "
                + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed)
            )

    def lag(self) -> int | None:
        """Messages in the assigned partitions not read yet (from what the last fetches
        reported: no request to the broker)."""
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return None
            total = 0
            for position in self.consumer.position(assigned):
                marks = self.consumer.get_watermark_offsets(position, cached=True)
                if marks is None:
                    return None
                low, high = marks
                if high < 0:
                    return None
                total += max(high - (position.offset if position.offset >= 0 else low), 0)
            return total
        except KafkaException as exc:
            raise SourceError(f"reading the lag failed: {exc}") from exc

    # -- the dead-letter topic -----------------------------------------------------------

    def dead_letter(self, rows: Sequence[dict[str, Any]]) -> None:
        """Produce ``rows`` to ``<prefix>.dead_letter`` and wait for every acknowledgement."""
        producer = self._dead_letter_producer()
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(str(error))

        messages = encode("dead_letter", list(rows), self.topics)
        try:
            for message in messages:
                producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers.items()),
                    on_delivery=delivered,
                )
            waiting = producer.flush(self.settings.kafka.delivery_timeout_ms / 1000 + 5)
        except (KafkaException, BufferError) as exc:
            self._drop_producer()
            raise SourceError(f"producing dead letters failed: {exc}") from exc
        if failures or waiting:
            # An idempotent producer that failed (a broker restart can make it fail for
            # good) is not reused: the next attempt gets a fresh one.
            self._drop_producer()
            reason = failures[0] if failures else f"{waiting} not acknowledged in time"
            raise SourceError(f"{len(messages)} dead letters not delivered: {reason}")

    def _dead_letter_producer(self) -> Producer:
        if self._producer is None:
            kafka = self.settings.kafka
            self._producer = Producer(
                {
                    **self._common,
                    "enable.idempotence": True,
                    "acks": "all",
                    "compression.type": kafka.compression,
                    "linger.ms": kafka.linger_ms,
                    "delivery.timeout.ms": kafka.delivery_timeout_ms,
                }
            )
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def _create_dead_letter_topic(self) -> None:
        kafka = self.settings.kafka
        admin = AdminClient(self._common)
        topic = NewTopic(self.topics.dead_letter, kafka.partitions, kafka.replication_factor)
        try:
            admin.create_topics([topic], request_timeout=15)[self.topics.dead_letter].result(20)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            exists = (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            )
            if not exists:
                raise SourceError(f"cannot create {self.topics.dead_letter}: {exc}") from exc

    # -- the rest ------------------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = str(error)
            log.error("Kafka: %s", error)
        else:  # the client retries (a broker restarting, a rebalance)
            log.warning("Kafka: %s", error)

    def close(self) -> None:
        """Leave the group (its partitions go to the other loaders at once)."""
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("closing the Kafka consumer: %s", exc)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(_CLOSE_FLUSH_SECONDS)


def _received(message: Message) -> Received:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers: dict[str, str | bytes] = {name: value for name, value in pairs if value is not None}
    # A consumed record always has them (only a producer's own message may not).
    topic, partition, offset = str(message.topic()), message.partition(), message.offset()
    assert partition is not None and offset is not None
    return Received(
        topic=topic,
        key=message.key(),
        value=message.value(),
        headers=headers,
        position={"partition": partition, "offset": offset},
        token=(topic, partition, offset),
    )


def _open(url: str, settings: Settings) -> KafkaSource:
    return KafkaSource(url, settings)


BACKEND = SourceBackend("kafka", _open)
