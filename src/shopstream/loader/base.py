"""The Source protocol: where the loader reads messages, and how it says they are loaded.

A source may also have ``lag() -> int | None``: messages on the transport it has not read
yet, answered without a round trip where it can (the Kafka source reads its fetch state).
The loader shows it in its status and ``shopstream_loader_lag_messages`` when present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Received:
    """One message as read from the transport."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str | bytes]
    #: Where it was found, for a dead letter's context: partition and offset (Kafka), message
    #: id and delivery attempt (Pub/Sub).
    position: dict[str, Any] = field(default_factory=dict)
    #: What :meth:`Source.commit` needs (offsets, an ack id); opaque to the loader.
    token: Any = None


class SourceError(RuntimeError):
    """The transport failed (broker unreachable, subscription gone); the message says what to
    do. Nothing read since the last commit counts: it is read again after a restart."""


class Source(Protocol):
    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds for the first."""

    def commit(self, received: Sequence[Received]) -> None:
        """These messages are durable in the warehouse (or its dead letters): never deliver
        them again to this group. Called in the order they were polled."""

    def dead_letter(self, rows: Sequence[dict[str, Any]]) -> None:
        """Publish ``raw.dead_letter`` rows to the dead-letter topic (waits for the broker's
        acknowledgement; raises :class:`SourceError` when it does not come)."""

    def close(self) -> None: ...
