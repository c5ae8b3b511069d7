"""Where the pipeline reads: Pub/Sub subscriptions, one per topic, with their attributes.

The pipeline's subscription on a topic is ``<topic>.<beam.subscription>`` (its own, beside the
loader's ``<topic>.<pubsub.subscription>``: each gets every message). The message's ordering
key is its key (the Pub/Sub sink sets it so), its attributes the wire format's headers.

Kafka is not offered: Beam's Python Kafka IO is a cross-language transform that starts a Java
expansion service, which cannot run here, so it could not be tested; shops on Kafka run the
loader (``shopstream load --from kafka://...``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from shopstream.beam.options import subscription_path
from shopstream.beam.pipeline import received
from shopstream.events.messages import key_from_pubsub
from shopstream.loader.base import Received


def ensure_subscriptions(project: str, topics: Sequence[str], name: str) -> None:
    """Create the topics and the pipeline's subscriptions that are missing (local runs and
    the emulator; in production Terraform creates them and ``pubsub.create`` is off)."""
    import google.cloud.pubsub_v1 as pubsub_v1  # as in shopstream.sinks.pubsub, for mypy
    from google.api_core.exceptions import AlreadyExists

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        for topic in topics:
            topic_path = publisher.topic_path(project, topic)
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=topic_path)
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    name=subscription_path(project, topic, name), topic=topic_path
                )
    finally:
        subscriber.close()


def _from_pubsub(message: Any, topic: str) -> Received:
    key = key_from_pubsub(message.ordering_key, message.attributes)
    return received(topic, key, message.data, message.attributes, message.message_id)


class ReadMessages(beam.PTransform):
    """Every topic's subscription, as one PCollection of Received."""

    def __init__(self, project: str, topics: Sequence[str], subscription: str) -> None:
        super().__init__()
        self._project = project
        self._topics = list(topics)
        self._subscription = subscription

    def expand(self, pipeline: Any) -> Any:
        reads = [
            pipeline
            | f"Read {topic}"
            >> beam.io.ReadFromPubSub(
                subscription=subscription_path(self._project, topic, self._subscription),
                with_attributes=True,
            )
            | f"From {topic}" >> beam.Map(_from_pubsub, topic)
            for topic in self._topics
        ]
        return tuple(reads) | "All topics" >> beam.Flatten()
