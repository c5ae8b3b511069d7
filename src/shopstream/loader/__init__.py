"""The loader: a transport (Kafka, Pub/Sub) → the warehouse's raw tables.

``shopstream load --from kafka://host:port`` (or ``pubsub://project``) reads what the
collectors and the CDC reader published, decodes and validates each message with
:func:`shopstream.events.messages.decode`, and appends the rows through the same group-commit
sink as the embedded shape; offsets are committed (messages acked) only once the rows are
durable. Poison messages go to ``raw.dead_letter`` and the dead-letter topic with their
reason. More loaders in the same group (subscription) share the work.

Sources are picked by URL scheme from :data:`SOURCES`, one module each, whose ``BACKEND`` is
a :class:`SourceBackend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopstream.loader.base import Received, Source
from shopstream.warehouse import registered

if TYPE_CHECKING:
    from shopstream.config import Settings

__all__ = ["SOURCES", "Received", "Source", "SourceBackend", "open_source"]

#: URL scheme -> the module whose ``BACKEND`` implements it. One line per transport.
SOURCES: dict[str, str] = {
    "kafka": "shopstream.loader.kafka",
    "pubsub": "shopstream.loader.pubsub",
}
SOURCE_EXAMPLE = "kafka://127.0.0.1:9092"


@dataclass(frozen=True)
class SourceBackend:
    scheme: str
    #: ``open(url, settings)``: a source subscribed to shopstream's topics, ready to poll.
    open: Callable[[str, Settings], Source]


def open_source(url: str, settings: Settings) -> Source:
    """The source ``url`` names (a ValueError naming the known schemes if none does)."""
    return registered(url, SOURCES, "--from URL", SOURCE_EXAMPLE, SourceBackend).open(url, settings)
