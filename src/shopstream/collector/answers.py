"""What the intake routes answer: one JSON body for success and failure alike.

Segment SDKs read ``success`` and ``code``, our own clients ``accepted``, ``rejected`` and
``error``; one model carries all of them, so every answer (and the OpenAPI document, which
describes them from :data:`RESPONSES`) has the same shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

from shopstream.collector.intake import BodyError
from shopstream.events.codes import ReasonCode
from shopstream.observability import metrics


class RejectedEvent(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single one).")
    reason: str
    event_id: str | None = None


class IngestResponse(BaseModel):
    """The answer to every intake request."""

    accepted: int = 0
    rejected: list[RejectedEvent] = Field(default_factory=list)
    success: bool = Field(default=True, description="Segment-compatible: true if any accepted.")
    error: ReasonCode | None = Field(default=None, description="Why the request failed.")
    message: str | None = Field(default=None, description="What went wrong, what to do.")
    code: ReasonCode | None = Field(
        default=None, description="Same as error, where Segment SDKs read it."
    )


#: The answers of every intake route, for the OpenAPI document.
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": IngestResponse, "description": "Accepted events are durable."},
    400: {"model": IngestResponse, "description": "Unparseable body, or every event rejected."},
    401: {"model": IngestResponse, "description": "Missing or wrong write key."},
    403: {"model": IngestResponse, "description": "Browser origin not allowed (cors_origins)."},
    408: {"model": IngestResponse, "description": "The body did not arrive in time."},
    413: {"model": IngestResponse, "description": "Body or event count over the limit."},
    415: {"model": IngestResponse, "description": "Content-Type is not JSON."},
    500: {
        "model": IngestResponse,
        "description": "Unexpected failure; `accepted` says what was stored. Resend.",
    },
    503: {"model": IngestResponse, "description": "Sink unavailable, behind, or busy; retry."},
}


def answer(status: int, body: IngestResponse, headers: dict[str, str] | None = None) -> Response:
    body.code = body.error
    return Response(
        orjson.dumps(body.model_dump(exclude_none=True)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def refusal(exc: BodyError) -> Response:
    """The answer to a request refused as a whole, counted under its reason."""
    metrics.REQUESTS_REJECTED.labels(exc.code).inc()
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return answer(
        exc.status, IngestResponse(success=False, error=exc.code, message=exc.message), headers
    )
