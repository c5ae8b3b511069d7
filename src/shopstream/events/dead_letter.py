"""The dead-letter row: what every source writes to ``raw.dead_letter`` for a record it could
not take, with the reason (schema: :data:`shopstream.events.raw.RAW_DEAD_LETTER`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson


def dead_letter_row(
    source: str, reason: str, payload: str | bytes | None, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One ``raw.dead_letter`` row. ``source``: who refused it (collector, cdc, loader);
    ``payload``: the record as received (bytes are decoded, bad UTF-8 replaced);
    ``context``: whatever helps find or replay it, stored as JSON."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    return {
        "dead_letter_id": str(uuid.uuid4()),
        "source": source,
        "reason": reason,
        "payload": payload,
        "context": orjson.dumps(context or {}).decode(),
        "received_at": datetime.now(UTC),
    }
