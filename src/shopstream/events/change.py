"""Change events: one envelope for every source row change, compatible with Debezium.

The JSON form is Debezium's value without schema::

    {"before": {...} | null, "after": {...} | null, "op": "c|u|d|r|t",
     "source": {"connector": "postgresql", "db": "shop", "schema": "public", "table": "orders",
                "txId": 771, "lsn": 23876112, "snapshot": "false", "ts_ms": 1764237600000},
     "ts_ms": 1764237600123}

Column values keep the envelope's encodings: NUMERIC as an exact decimal string, dates and
timestamps as ISO-8601 strings (UTC for timestamptz), bytea as base64, json/jsonb as their JSON
text, and an unchanged TOASTed value as :data:`UNAVAILABLE` (never null). Staging types them.

A plain slotted dataclass rather than a Pydantic model: the CDC path builds hundreds of
thousands of these per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["c", "u", "d", "r", "t"]

#: Debezium's placeholder for an unchanged TOASTed column that the server did not send.
UNAVAILABLE = "__debezium_unavailable_value"


@dataclass(slots=True)
class ChangeSource:
    db: str
    schema: str
    table: str
    tx_id: int | None
    lsn: int | None
    ts_ms: int
    snapshot: str = "false"  # "true", "last", "false" as in Debezium
    connector: str = "postgresql"
    name: str = "shopstream"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": "shopstream",
            "connector": self.connector,
            "name": self.name,
            "ts_ms": self.ts_ms,
            "snapshot": self.snapshot,
            "db": self.db,
            "schema": self.schema,
            "table": self.table,
            "txId": self.tx_id,
            "lsn": self.lsn,
        }


@dataclass(slots=True)
class ChangeEvent:
    """One row change. ``change_id`` is unique per change: commit LSN and position."""

    change_id: str
    op: Op
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    key: dict[str, Any] | None
    source: ChangeSource
    ts_ms: int

    def to_debezium(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "source": self.source.to_json(),
            "op": self.op,
            "ts_ms": self.ts_ms,
        }


def change_id(commit_lsn: int, position: int) -> str:
    """Deterministic id: commit LSN (hex, zero padded so ids sort) and position in the tx.

    >>> change_id(0x16B3748, 2)
    '00000000016B3748-00000002'
    """
    return f"{commit_lsn:016X}-{position:08d}"
