"""The Segment HTTP Tracking API's request bodies, as published in the collector's OpenAPI.

These models document (and let schema-driven clients and fuzzers generate) what the Segment
routes take. They are not used to validate: the routes accept whatever Segment SDKs send,
extra fields included, and the intake itself judges each message (one bad message is
rejected with its reason, its neighbours kept).

>>> sorted(segment_schemas())[:3]
['SegmentBatch', 'SegmentBatchMessage', 'SegmentIdentify']
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

# Segment's rule, which the intake follows too: a message names its user, its device or both.
_WHO: JsonDict = {"anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}]}
_OPEN = ConfigDict(extra="allow", json_schema_extra=_WHO)


class _Message(BaseModel):
    model_config = _OPEN

    messageId: str | None = Field(
        default=None, description="Becomes event_id: a resent message counts once."
    )
    userId: str | None = Field(default=None, description="The shop's user id, if known.")
    anonymousId: str | None = Field(default=None, description="The device's or browser's id.")
    timestamp: datetime | None = Field(
        default=None, description="When it happened, by the client's clock (ISO 8601)."
    )
    originalTimestamp: datetime | None = Field(
        default=None, description="As timestamp; with sentAt, corrects the client's clock."
    )
    sentAt: datetime | None = Field(
        default=None, description="When the client sent it, by its clock (ISO 8601)."
    )
    context: dict[str, Any] | None = Field(
        default=None,
        description="Segment's context: page {url, referrer}, campaign {source, medium, "
        "name}, device, os, userAgent, sessionId...",
    )
    properties: dict[str, Any] | None = None


class _SingleMessage(_Message):
    writeKey: str | None = Field(
        default=None, description="The write key, for SDKs that send it in the body."
    )


class SegmentTrack(_SingleMessage):
    """``POST /v1/track``: an action; Segment e-commerce spec names map to event types."""

    type: Literal["track"] | None = None
    event: str = Field(description="The action's name, e.g. 'Product Viewed'.", min_length=1)


class SegmentPage(_SingleMessage):
    """``POST /v1/page``: a page view."""

    type: Literal["page"] | None = None
    name: str | None = None
    category: str | None = None


class SegmentScreen(_SingleMessage):
    """``POST /v1/screen``: an app screen view (kept as a page view)."""

    type: Literal["screen"] | None = None
    name: str | None = None
    category: str | None = None


class SegmentIdentify(_SingleMessage):
    """``POST /v1/identify``: who the user is (kept as a custom event named 'identify')."""

    type: Literal["identify"] | None = None
    traits: dict[str, Any] | None = None


class SegmentBatchMessage(_Message):
    """One message of a batch; its ``type`` says which call it is."""

    type: Literal["track", "page", "screen", "identify", "group", "alias"]
    event: str | None = Field(default=None, description="Required for type 'track'.")
    name: str | None = None
    category: str | None = None
    traits: dict[str, Any] | None = None


class SegmentBatch(BaseModel):
    """``POST /v1/batch``: many messages in one request."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentBatchMessage]
    sentAt: datetime | None = Field(
        default=None, description="When the batch was sent, for messages without their own."
    )
    context: dict[str, Any] | None = None
    writeKey: str | None = Field(
        default=None, description="The write key, for SDKs that send it in the body."
    )


#: The model of each Segment route's body, by the route's last segment (``batch`` included).
SEGMENT_BODIES: dict[str, type[BaseModel]] = {
    "batch": SegmentBatch,
    "track": SegmentTrack,
    "page": SegmentPage,
    "screen": SegmentScreen,
    "identify": SegmentIdentify,
}


def segment_schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """JSON Schemas of every Segment body model (and what they refer to), by name."""
    schemas: dict[str, Any] = {}
    for model in SEGMENT_BODIES.values():
        schema = model.model_json_schema(ref_template=ref_template)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
