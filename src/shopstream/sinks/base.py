"""The Sink protocol: where accepted records go, and when they are durable.

A sink takes rows for raw tables and returns a future that completes only once the rows are
durable (committed in the warehouse, or acknowledged by the broker). Callers answer their
clients, or confirm LSNs to PostgreSQL, only after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
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


class SinkUnavailable(RuntimeError):
    """The sink cannot take more now (full queue, closed, destination down): retry later."""


class Sink(Protocol):
    def start(self) -> None: ...

    def submit(self, rows: Rows) -> Future[None]:
        """Queue rows; the future resolves when they are durable, or fails with the reason."""

    def ready(self) -> bool:
        """True when the sink can write now (used by /readyz)."""

    def pending_rows(self) -> int: ...

    def close(self, timeout: float = 60.0) -> None:
        """Flush everything queued, then stop."""
