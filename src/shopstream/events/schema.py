"""JSON Schema of the contracts, generated from the Pydantic models (never hand-written)."""

from __future__ import annotations

from typing import Any

from shopstream.events.behaviour import event_adapter


def event_json_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The behaviour-event schema: a ``oneOf`` over event types, discriminated by event_type."""
    schema = event_adapter.json_schema(ref_template=ref_template, mode="validation")
    schema.setdefault("title", "Event")
    schema.setdefault(
        "description",
        "A shopstream behaviour event. Unknown keys in properties are kept; "
        "received_at is set by the server.",
    )
    return schema
