"""Pub/Sub names and what ``pubsub.create`` creates, for the sink and the loader alike.

Topics are :class:`shopstream.events.messages.Topics`' names. The loader reads each topic
through one subscription, ``<topic>.<pubsub.subscription>``, with a dead-letter policy to
``<prefix>.dead_letter`` after ``pubsub.max_delivery_attempts`` deliveries (the dead-letter
topic's own subscription has none: it would loop).

Pub/Sub keeps a message only for the subscriptions that exist when it is published, so a
topic created by the sink (a table captured since the loader last looked) gets the loader's
subscription at once: otherwise its first changes would be lost to the loader. (Seeking a new
subscription back in time would need topic retention, which the emulator does not have.)

Loader subscriptions are not ordered: raw tables are append-only and staging orders changes
by LSN and events by time, so delivery order does not matter to the loader, and ordered
delivery holds back a key's later messages until its earlier ones are acknowledged. (The
emulator also fails to dead-letter from an ordered subscription.) Other consumers that need
order create ordered subscriptions of their own: the sink publishes with ordering keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

# Not `from google.cloud import pubsub_v1`: mypy then misses it beside typed google.cloud
# packages (bigquery).
import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as google_errors
from google.api_core.retry import Retry, if_exception_type

from shopstream.events.messages import fit_name

if TYPE_CHECKING:
    from shopstream.config import PubSubSettings
    from shopstream.events.messages import Topics

log = logging.getLogger(__name__)

#: Errors worth retrying within a call's time (the service restarting, a lost channel).
TRANSIENT = (
    google_errors.ServiceUnavailable,
    google_errors.DeadlineExceeded,
    google_errors.InternalServerError,
    google_errors.Aborted,
    google_errors.ResourceExhausted,
    google_errors.Unknown,
)


def retry_within(seconds: float) -> Retry:
    """Transient errors retried, for ``seconds`` in all (the clients' defaults go on for a
    minute or more: a caller waiting on the answer cannot)."""
    return Retry(
        predicate=if_exception_type(*TRANSIENT),
        initial=0.1,
        maximum=min(5.0, seconds),
        multiplier=2.0,
        timeout=seconds,
    )


def within(seconds: float) -> dict[str, object]:
    """Keyword arguments bounding one call (its retries included) to ``seconds``."""
    return {"retry": retry_within(seconds), "timeout": seconds}


def project_of(url: str) -> str:
    """The Google Cloud project a ``pubsub://<project>`` URL names."""
    parts = urlsplit(url)
    if parts.scheme != "pubsub" or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"a Pub/Sub URL is pubsub://<project>, not {url!r}")
    return parts.netloc


def subscription_name(topic: str, settings: PubSubSettings) -> str:
    """The loader's subscription on ``topic`` (cut to Pub/Sub's 255 characters: a long
    table's topic may take up to 249 of them)."""
    return fit_name(f"{topic}.{settings.subscription}", 255)


def ensure_topics(
    publisher: pubsub_v1.PublisherClient, project: str, topics: Iterable[str], timeout: float
) -> None:
    """Create those of ``topics`` that do not exist yet."""
    for topic in topics:
        try:
            publisher.create_topic(name=publisher.topic_path(project, topic), **within(timeout))
            log.info("created Pub/Sub topic %s", topic)
        except google_errors.AlreadyExists:
            pass


def ensure_subscription(
    subscriber: pubsub_v1.SubscriberClient,
    project: str,
    topic: str,
    topics: Topics,
    settings: PubSubSettings,
    timeout: float,
) -> str:
    """The loader's subscription on ``topic`` (created if missing; the topic and the
    dead-letter topic must exist). Returns its path."""
    path = subscriber.subscription_path(project, subscription_name(topic, settings))
    request: dict[str, object] = {
        "name": path,
        "topic": subscriber.topic_path(project, topic),
        "ack_deadline_seconds": settings.ack_deadline_seconds,
    }
    if topic != topics.dead_letter:
        request["dead_letter_policy"] = {
            "dead_letter_topic": subscriber.topic_path(project, topics.dead_letter),
            "max_delivery_attempts": settings.max_delivery_attempts,
        }
    try:
        subscriber.create_subscription(request=request, **within(timeout))
        log.info("created Pub/Sub subscription %s", path)
    except google_errors.AlreadyExists:
        pass
    return path


def create_for_loader(
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    project: str,
    topics: Topics,
    names: Iterable[str],
    settings: PubSubSettings,
) -> list[str]:
    """Topics ``names`` (the dead-letter topic first, which the others' policies name), each
    with the loader's subscription, created where missing. Returns the subscriptions' paths,
    in the order of ``names``."""
    timeout = settings.publish_timeout_seconds
    wanted = list(dict.fromkeys([topics.dead_letter, *names]))
    ensure_topics(publisher, project, wanted, timeout)
    paths = {
        topic: ensure_subscription(subscriber, project, topic, topics, settings, timeout)
        for topic in wanted
    }
    return [paths[name] for name in names]
