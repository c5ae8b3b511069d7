"""The Pub/Sub source: the loader's subscriptions on every topic under ``<prefix>.``.

``shopstream load --from pubsub://<project>``. Each topic is read through its subscription
``<topic>.<pubsub.subscription>`` (:mod:`shopstream.sinks.pubsub_admin`); loaders sharing
the subscriptions share the messages. Topics of tables captured later are found by listing
the project's topics every ``pubsub.discover_seconds``; with ``pubsub.create`` missing
subscriptions are created (with the dead-letter policy), otherwise a topic without one is
skipped with a warning until it has one.

:meth:`PubSubSource.poll` pulls synchronously from the subscriptions in turn, with
``return_immediately`` (a pull cancelled by a client-side timeout may still have delivered
messages, which would then count as failed deliveries), pausing briefly between empty rounds.
Messages are acknowledged only by :meth:`PubSubSource.commit`, after the loader made them
durable; until then a thread extends their ack deadlines, so a slow load (a warehouse down
for a while) does not make Pub/Sub deliver them again and count that against the
dead-letter policy. :meth:`PubSubSource.close` hands back what was not committed at once
(deadline 0) instead of letting it expire.

A message the subscription's dead-letter policy moved (delivered ``max_delivery_attempts``
times without an ack: a loader that keeps crashing on it) arrives on the dead-letter topic
with its original attributes; it is read as a ``raw.dead_letter`` row (source ``pubsub``)
saying so, never as the row it held.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

# Not `from google.cloud import pubsub_v1`: mypy then misses it beside typed google.cloud
# packages (bigquery).
import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as google_errors

from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.messages import Topics, dead_letter_id, encode, key_from_pubsub
from shopstream.loader import SourceBackend
from shopstream.loader.base import Received, SourceError
from shopstream.sinks.base import SinkError
from shopstream.sinks.pubsub import PubSubSink
from shopstream.sinks.pubsub_admin import (
    create_for_loader,
    project_of,
    subscription_name,
    within,
)

if TYPE_CHECKING:
    from shopstream.config import Settings

log = logging.getLogger(__name__)

#: Pause between rounds of pulls that found nothing.
_IDLE_PAUSE_S = 0.05
#: Pub/Sub takes up to 2,500 ack ids per request; fewer keeps requests small.
_ACK_CHUNK = 1000
#: Attributes Pub/Sub adds to a message its dead-letter policy moved.
_MOVED_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
_MOVED_FROM = "CloudPubSubDeadLetterSourceSubscription"


class PubSubSource:
    def __init__(self, url: str, settings: Settings) -> None:
        self.project = project_of(url)
        self.settings = settings
        self.pubsub = settings.pubsub
        self.topics = Topics(settings.transport.topic_prefix)
        #: Every call's time, retries included.
        self._within = within(self.pubsub.publish_timeout_seconds)
        self._publisher = pubsub_v1.PublisherClient()
        self._subscriber = pubsub_v1.SubscriberClient()
        #: topic -> its subscription's path, in discovery order.
        self._subscriptions: dict[str, str] = {}
        self._next_discovery = 0.0
        self._turn = 0
        #: Pulled, not yet returned by poll() (a pull brought more than was asked for).
        self._buffer: deque[Received] = deque()
        #: Leased, not yet committed: (subscription, ack id) -> when its deadline was set.
        self._held: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._extender = threading.Thread(
            target=self._extend_leases, name="pubsub-leases", daemon=True
        )
        self._extender.start()
        self._dead_letters: PubSubSink | None = None

    # -- topics ------------------------------------------------------------------------

    def _discover(self) -> None:
        """Subscribe to topics under the prefix that are new since the last look."""
        now = time.monotonic()
        if now < self._next_discovery:
            return
        try:
            names = [
                topic.name.rsplit("/", 1)[1]
                for topic in self._publisher.list_topics(
                    project=f"projects/{self.project}", **self._within
                )
            ]
        except google_errors.GoogleAPIError as exc:
            raise SourceError(f"cannot list the Pub/Sub topics of {self.project}: {exc}") from exc
        if self.pubsub.create:
            names += [name for name in self.topics.fixed() if name not in names]
        new = [n for n in names if n not in self._subscriptions and self.topics.table_for(n)]
        if new and self.pubsub.create:
            try:
                paths = create_for_loader(
                    self._publisher, self._subscriber, self.project, self.topics, new, self.pubsub
                )
            except google_errors.GoogleAPIError as exc:
                raise SourceError(f"cannot create the loader's subscriptions: {exc}") from exc
            self._subscriptions.update(zip(new, paths, strict=True))
        else:
            for topic in new:
                path = self._subscriber.subscription_path(
                    self.project, subscription_name(topic, self.pubsub)
                )
                try:
                    self._subscriber.get_subscription(subscription=path, **self._within)
                except google_errors.NotFound:
                    log.warning("topic %s has no subscription %s: skipped for now", topic, path)
                    continue
                except google_errors.GoogleAPIError as exc:
                    raise SourceError(f"cannot read subscription {path}: {exc}") from exc
                self._subscriptions[topic] = path
        if new:
            log.info("reading Pub/Sub topics %s", ", ".join(sorted(self._subscriptions)))
        self._next_discovery = now + self.pubsub.discover_seconds

    def subscriptions(self) -> dict[str, str]:
        """Topic -> the subscription read from it (those found so far)."""
        return dict(self._subscriptions)

    # -- reading -----------------------------------------------------------------------

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        self._discover()
        deadline = time.monotonic() + timeout
        while True:
            if not self._buffer:
                self._pull_round(max_messages)
            if self._buffer or time.monotonic() >= deadline:
                break
            time.sleep(min(_IDLE_PAUSE_S, max(0.0, deadline - time.monotonic())))
        got: list[Received] = []
        while self._buffer and len(got) < max_messages:
            got.append(self._buffer.popleft())
        return got

    def _pull_round(self, max_messages: int) -> None:
        """One pull from each subscription, starting with a different one each round so that
        a busy topic does not starve the others."""
        paths = list(self._subscriptions.items())
        if not paths:
            return
        self._turn = (self._turn + 1) % len(paths)
        wanted = max_messages
        for topic, path in paths[self._turn :] + paths[: self._turn]:
            if wanted <= 0:
                break
            try:
                with warnings.catch_warnings():
                    # Deprecated for its cost to the service; still the only pull that
                    # cannot lose messages to a client-side timeout (see above).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = self._subscriber.pull(
                        request={
                            "subscription": path,
                            "max_messages": min(wanted, 1000),
                            "return_immediately": True,
                        },
                        **self._within,
                    )
            except google_errors.NotFound as exc:
                # Deleted (or an emulator restarted): found or created again at the next look.
                self._subscriptions.pop(topic, None)
                self._next_discovery = 0.0
                raise SourceError(f"subscription {path} is gone: {exc}") from exc
            except google_errors.GoogleAPIError as exc:
                raise SourceError(f"pulling from {path} failed: {exc}") from exc
            now = time.monotonic()
            with self._lock:
                for item in response.received_messages:
                    self._held[(path, item.ack_id)] = now
            for item in response.received_messages:
                self._buffer.append(self._received(topic, path, item))
            wanted -= len(response.received_messages)

    def _received(self, topic: str, path: str, item: Any) -> Received:
        message = item.message
        position = {
            "subscription": path.rsplit("/", 1)[1],
            "message_id": message.message_id,
            "publish_time": message.publish_time.isoformat(),
            "delivery_attempt": item.delivery_attempt,
        }
        headers: Mapping[str, str] = dict(message.attributes)
        key = key_from_pubsub(message.ordering_key, message.attributes)
        value: bytes = message.data
        if topic == self.topics.dead_letter and _MOVED_COUNT in headers:
            topic, key, value, headers = self._moved(topic, key, value, headers, position)
        return Received(topic, key, value, headers, position, token=(path, item.ack_id))

    def _moved(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, str],
        position: dict[str, Any],
    ) -> tuple[str, bytes | None, bytes, dict[str, str]]:
        """A message the dead-letter policy moved, as the dead letter that says so."""
        moved_from = headers.get(_MOVED_FROM, "?")
        reason = (
            f"Pub/Sub's dead-letter policy moved it after {headers[_MOVED_COUNT]} deliveries "
            f"on subscription {moved_from} without an acknowledgement (the loader failed "
            "on it each time, or never finished: see its log)"
        )
        context = {
            **position,
            "moved_from": moved_from,
            "key": None if key is None else key.decode("utf-8", "replace"),
            "attributes": dict(headers),
        }
        row = dead_letter_row("pubsub", reason, value, context)
        # Its id from the moved message's own id (the same on every redelivery from the
        # dead-letter subscription), so that a repeat is removable in staging.
        row["dead_letter_id"] = dead_letter_id(topic, position["message_id"], "moved")
        [message] = encode("dead_letter", [row], self.topics)
        assert message.value is not None
        return message.topic, message.key, message.value, message.headers

    # -- acknowledging -----------------------------------------------------------------

    def commit(self, received: Sequence[Received]) -> None:
        by_path: dict[str, list[str]] = {}
        for message in received:
            path, ack_id = message.token
            by_path.setdefault(path, []).append(ack_id)
        try:
            for path, ack_ids in by_path.items():
                for start in range(0, len(ack_ids), _ACK_CHUNK):
                    chunk = ack_ids[start : start + _ACK_CHUNK]
                    self._subscriber.acknowledge(
                        subscription=path,
                        ack_ids=chunk,
                        **self._within,
                    )
                    with self._lock:
                        for ack_id in chunk:
                            self._held.pop((path, ack_id), None)
        except google_errors.GoogleAPIError as exc:
            raise SourceError(f"acknowledging failed (they will come again): {exc}") from exc

    def _modify(self, leases: list[tuple[str, str]], seconds: int) -> None:
        by_path: dict[str, list[str]] = {}
        for path, ack_id in leases:
            by_path.setdefault(path, []).append(ack_id)
        for path, ack_ids in by_path.items():
            for start in range(0, len(ack_ids), _ACK_CHUNK):
                self._subscriber.modify_ack_deadline(
                    subscription=path,
                    ack_ids=ack_ids[start : start + _ACK_CHUNK],
                    ack_deadline_seconds=seconds,
                    **self._within,
                )

    def _extend_leases(self) -> None:
        """Keep the ack deadlines of messages being loaded ahead of the clock."""
        deadline = self.pubsub.ack_deadline_seconds
        every = max(1.0, deadline / 3)
        while not self._closing.wait(every):
            now = time.monotonic()
            with self._lock:
                due = [lease for lease, since in self._held.items() if now - since >= every]
            if not due:
                continue
            try:
                self._modify(due, deadline)
            except google_errors.GoogleAPIError as exc:
                # They may be delivered again (counted as attempts); staging removes repeats.
                log.warning("extending %d ack deadlines failed: %s", len(due), exc)
                continue
            with self._lock:
                for lease in due:
                    if lease in self._held:
                        self._held[lease] = now

    # -- dead letters ------------------------------------------------------------------

    def dead_letter(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._dead_letters is None:
            self._dead_letters = PubSubSink(self.project, self.settings)
            self._dead_letters.start()
        try:
            self._dead_letters.submit({"dead_letter": list(rows)}).result(
                self.pubsub.publish_timeout_seconds + 5
            )
        except (SinkError, FutureTimeout) as exc:
            raise SourceError(f"publishing {len(rows)} dead letters failed: {exc}") from exc

    def close(self) -> None:
        self._closing.set()
        self._extender.join(5)
        with self._lock:
            unfinished = list(self._held)
            self._held.clear()
        if unfinished:
            # Handed back now (to this subscription's other loaders, or the next start)
            # rather than when their deadlines pass.
            try:
                self._modify(unfinished, 0)
            except google_errors.GoogleAPIError as exc:
                log.warning("handing back %d messages failed: %s", len(unfinished), exc)
        if self._dead_letters is not None:
            self._dead_letters.close()
        self._subscriber.close()
        self._publisher.stop()


BACKEND = SourceBackend("pubsub", PubSubSource)
