"""Rows of the raw tables for tests that write to the warehouse directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa

from shopstream.events.raw import RAW_EVENTS


def event_row(event_id: str, **overrides: object) -> dict[str, object]:
    """A valid ``raw.events`` row; ``overrides`` replace columns (to make it invalid, say)."""
    now = datetime.now(UTC)
    row: dict[str, object] = {field.name: None for field in RAW_EVENTS}
    row.update(
        event_id=event_id,
        event_type="page_view",
        event_ts=now,
        received_at=now,
        event_date=now.date(),
        source="native",
        properties="{}",
        payload="{}",
    )
    row.update(overrides)
    return row


def events_table(*event_ids: str, **overrides: object) -> pa.Table:
    return pa.Table.from_pylist(
        [event_row(event_id, **overrides) for event_id in event_ids], schema=RAW_EVENTS
    )


def tracked_event(anonymous_id: str = "anon-1", **fields: object) -> dict[str, object]:
    """A valid event as a tracker sends it to the collector (``fields`` override)."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "event_ts": datetime.now(UTC).isoformat(),
        "anonymous_id": anonymous_id,
        **fields,
    }
