"""Change events: one envelope for every source row change, compatible with Debezium.

The JSON form is Debezium's value without schema::

    {"before": {...} | null, "after": {...} | null, "op": "c|u|d|r|t",
     "source": {"connector": "postgresql", "db": "shop", "schema": "public", "table": "orders",
                "txId": 771, "lsn": 23876112, "snapshot": "false", "ts_ms": 1764237600000},
     "ts_ms": 1764237600123}

Column values keep the envelope's encodings: NUMERIC as an exact decimal string, dates and
timestamps as ISO-8601 strings (UTC for timestamptz), bytea as base64, json/jsonb as their JSON
text, and an unchanged TOASTed value as :data:`UNAVAILABLE` (never null). Staging types them.

The CDC path (:mod:`shopstream.cdc.changes`) writes this envelope flattened into the columns
of ``raw.cdc_<table>``, without an object per change: it builds hundreds of thousands a second.
"""

from __future__ import annotations

#: Debezium's placeholder for an unchanged TOASTed column that the server did not send.
UNAVAILABLE = "__debezium_unavailable_value"


def change_id_prefix(commit_lsn: int, *, snapshot: bool = False) -> str:
    """What every change id of one transaction (or snapshot) starts with; the CDC hot path
    builds it once per transaction and appends the position."""
    return f"{commit_lsn:016X}-" + ("r" if snapshot else "")


def change_id(commit_lsn: int, position: int, *, snapshot: bool = False) -> str:
    """Deterministic id: commit LSN (hex, zero padded so ids sort) and position in the tx.
    Snapshot reads use the slot's consistent LSN and an ``r`` before the position.

    >>> change_id(0x16B3748, 2)
    '00000000016B3748-00000002'
    """
    return f"{change_id_prefix(commit_lsn, snapshot=snapshot)}{position:08d}"
