"""The Sink protocol: where accepted records go, and when they are durable.

A sink takes rows for raw tables and returns a future that completes only once the rows are
durable in its destination (for the warehouse sink: committed). Callers answer their
clients, or confirm LSNs to PostgreSQL, only after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa


class Columns(Protocol):
    """Rows gathered column by column; the sink merges a group's and converts once."""

    def __len__(self) -> int: ...

    def extend(self, other: Any) -> None: ...

    def to_arrow(self) -> pa.Table: ...


#: Rows for raw tables: table name (``events``, ``dead_letter``, ``cdc_orders``) to rows, as
#: dicts, as an Arrow table in the raw table's schema, or as Columns (the fast paths).
#: JSON columns hold already-serialised JSON text.
Rows = Mapping[str, "list[dict[str, Any]] | pa.Table | Columns"]


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A submitted row the destination refused; it went to ``raw.dead_letter`` instead."""

    table: str
    #: The row's position among the submission's rows for ``table``.
    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a submission once it is durable: every row is in its raw table except
    ``dead_lettered`` ones, which are durable in ``raw.dead_letter`` with their reason."""

    dead_lettered: tuple[DeadLettered, ...] = ()


#: A submission that landed whole.
LANDED = Outcome()


class SinkError(RuntimeError):
    """The sink could not make a submission durable: none of its rows count (no dead letters
    were written for them). Callers must not acknowledge them; sending them again is safe.
    Every failure a sink's future or ``submit`` reports is one of these, whatever the
    destination (a warehouse's, a broker's errors are wrapped)."""


class SinkUnavailable(SinkError):
    """The sink cannot take more now (full queue, closed, destination down): retry later.
    Raised by ``submit`` before anything was queued."""


class Sink(Protocol):
    #: Durable writes made so far (group commits, produced batches), for the status line.
    commits: int

    def start(self) -> None: ...

    def submit(self, rows: Rows) -> Future[Outcome]:
        """Queue rows; the future resolves when they are durable (saying which rows went to
        raw.dead_letter instead, and why), or fails with a :class:`SinkError` saying why none
        are. Raises :class:`SinkUnavailable` when it cannot take them now."""

    def ready(self) -> bool:
        """True when the sink can write now (used by /readyz)."""

    def broken(self) -> str | None:
        """Why the sink cannot recover without a restart of the process (used by /healthz);
        None while it works or is recovering on its own."""

    def pending_rows(self) -> int: ...

    def close(self, timeout: float = 60.0) -> None:
        """Flush everything queued, then stop."""


def settle(
    future: Future[Outcome], outcome: Outcome | None = None, *, error: Exception | None = None
) -> None:
    """Settle a caller's future (with ``outcome``, or failed with ``error``); one the caller
    already gave up on (cancelled) is skipped."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(outcome or LANDED)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass  # cancelled between the check and the set: the caller has gone
