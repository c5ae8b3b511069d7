"""The collector: HTTP intake of behaviour events.

Routes: ``POST /v1/events`` (native contract) and Segment's HTTP Tracking API (``/v1/batch``,
``/v1/track``, ``/v1/page``, ``/v1/screen``, ``/v1/identify``). Every answer is given only
after the accepted events — and the dead letters of the rejected ones — are durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from shopstream import __version__
from shopstream.collector.admission import BodyBudget, OriginPolicy, Reservation
from shopstream.collector.auth import key_from_headers, key_is_valid
from shopstream.collector.intake import (
    BodyError,
    Intake,
    Rejection,
    RequestInfo,
    gunzip,
    parse_json,
    split_native,
    take_native,
    take_segment,
)
from shopstream.collector.segment_api import SEGMENT_BODIES, segment_schemas
from shopstream.config import Settings
from shopstream.events.codes import ReasonCode
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.schema import event_json_schema
from shopstream.observability import metrics
from shopstream.sinks.base import Outcome, Sink, SinkError, SinkUnavailable


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


log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """What one intake request holds and has stored: the last-resort answer reports it."""

    reservation: Reservation | None = None
    body_read: bool = False
    stored: bool = False
    accepted: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)


# Per request (each request runs in a task of its own): set by the guard around every intake
# handler, so that the steps deep inside can record what they hold and what became durable.
_ATTEMPT: ContextVar[Attempt] = ContextVar("intake_attempt")


@dataclass
class CollectorStats:
    """Running totals for the live status line (Prometheus has the labelled detail)."""

    accepted: int = 0
    rejected: int = 0


SEGMENT_SINGLE = ("track", "page", "screen", "identify")
#: Bodies refused with these reached the collector whole, only their content is wrong: they
#: are kept in raw.dead_letter before the client hears of it.
_KEPT_BODIES = frozenset({ReasonCode.INVALID_JSON, ReasonCode.INVALID_BODY})
_JSON_TYPES = ("application/json",)
_SEGMENT_TYPES = (
    "application/json",
    "text/plain",
)  # analytics.js posts text/plain to skip CORS preflight

_RESPONSES: dict[int | str, dict[str, Any]] = {
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


IntakeRoute = Callable[[Request], Awaitable[Response]]


def _answer(status: int, body: IngestResponse, headers: dict[str, str] | None = None) -> Response:
    body.code = body.error
    return Response(
        orjson.dumps(body.model_dump(exclude_none=True)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(exc: BodyError) -> Response:
    metrics.REQUESTS_REJECTED.labels(exc.code).inc()
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return _answer(
        exc.status, IngestResponse(success=False, error=exc.code, message=exc.message), headers
    )


def _last_resort(attempt: Attempt, exc: Exception) -> Response:
    """The answer when something unexpected failed: what was stored, and what to do."""
    metrics.REQUESTS_REJECTED.labels(ReasonCode.INTERNAL_ERROR).inc()
    failure = type(exc).__name__
    if attempt.stored:
        message = (
            f"the collector failed ({failure}) after this request was stored: "
            f"{attempt.accepted} events accepted and {len(attempt.rejected)} rejected (see "
            "rejected[].reason). Resending is harmless: stored events are recognised by event_id."
        )
    else:
        message = (
            f"the collector failed ({failure}) before this request was known to be stored; "
            "resend it (events that were stored are recognised by event_id and counted once). "
            "If it fails again, report it with the collector's log."
        )
    body = IngestResponse(
        accepted=attempt.accepted,
        rejected=attempt.rejected,
        success=False,
        error=ReasonCode.INTERNAL_ERROR,
        message=message,
    )
    return _answer(500, body)


def create_app(settings: Settings, sink: Sink, *, stats: CollectorStats | None = None) -> FastAPI:
    """Build the collector app around a sink. Queries are never served here: see
    :mod:`shopstream.warehouse.query_endpoint`.

    ``stats``: the running totals the status line reads (a fresh one by default).
    """
    limits = settings.collector
    app = FastAPI(
        title="shopstream collector",
        version=__version__,
        description="Behaviour-event intake: native contract and Segment's HTTP Tracking API.",
        default_response_class=Response,
    )
    stats = CollectorStats() if stats is None else stats
    app.state.stats = stats
    # One origin policy: CORSMiddleware answers preflights and decorates FastAPI's answers
    # with it, the intake guard refuses other origins and IntakeFastPath decorates its own.
    policy = OriginPolicy(limits.cors_origins)
    app.state.origin_policy = policy
    app.add_middleware(CORSMiddleware, **policy.middleware_options())
    budget = BodyBudget(limits.intake_memory_bytes)

    def authorised(request: Request, body_key: Any = None) -> bool:
        if not settings.write_keys:
            return True
        candidate = key_from_headers(request.headers)
        if candidate is None and isinstance(body_key, str):
            candidate = body_key
        return key_is_valid(candidate, settings.write_keys)

    def check_content_type(request: Request, allowed: tuple[str, ...]) -> None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media in allowed or (media.startswith("application/") and media.endswith("+json")):
            return
        raise BodyError(
            415,
            ReasonCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {media or '(none)'!r} is not accepted; send {' or '.join(allowed)}",
        )

    async def read_body(request: Request, *, keyless: bool = False) -> bytes:
        """The body, once it fits the memory budget, within the read deadline.

        ``keyless``: the request's write key can only be in its body, so nobody known sent
        it yet; such bodies get the smaller share of the budget.
        """
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise BodyError(400, ReasonCode.INVALID_BODY, "Content-Length is not a number")
            if int(length) > limits.max_body_bytes:
                raise BodyError(
                    413,
                    ReasonCode.BODY_TOO_LARGE,
                    f"body of {length} bytes is over the limit of {limits.max_body_bytes} "
                    "(collector.max_body_bytes); send smaller batches",
                )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        gzipped = encoding in ("gzip", "x-gzip")  # x-gzip: the older name (RFC 9110)
        if not gzipped and encoding not in ("identity", ""):
            raise BodyError(
                415,
                ReasonCode.UNSUPPORTED_ENCODING,
                f"Content-Encoding {encoding!r}: send gzip or none",
            )
        # Without a Content-Length (chunked) the body may grow to the limit, and a gzip body
        # inflates up to it whatever its length on the wire: hold that much.
        reservation = budget.reserve(
            limits.max_body_bytes if length is None or gzipped else int(length), keyless=keyless
        )
        if reservation is None:
            raise BodyError(
                503,
                ReasonCode.BUSY,
                f"the collector holds as many request bodies as its budget allows "
                f"(collector.intake_memory_bytes = {limits.intake_memory_bytes}); retry shortly",
            )
        attempt = _ATTEMPT.get()
        attempt.reservation = reservation
        chunks = []
        size = 0
        try:
            async with asyncio.timeout(limits.request_read_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        raise BodyError(
                            413,
                            ReasonCode.BODY_TOO_LARGE,
                            f"body is over the limit of {limits.max_body_bytes} bytes",
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyError(
                408,
                ReasonCode.REQUEST_TIMEOUT,
                f"the body did not arrive within {limits.request_read_timeout_seconds:g} s "
                "(collector.request_read_timeout_seconds); the connection is closed: resend it",
            ) from None
        attempt.body_read = True
        body = b"".join(chunks)
        return gunzip(body, limits.max_body_bytes) if gzipped else body

    def info_for(request: Request, route: str) -> RequestInfo:
        return RequestInfo(
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            route=route,
            received_at=datetime.now(UTC),
        )

    async def durable(intake: Intake) -> Response | None:
        rows = intake.rows()
        if not rows:
            return None
        try:
            outcome = await asyncio.wrap_future(sink.submit(rows))
        except SinkUnavailable as exc:
            metrics.REQUESTS_REJECTED.labels(ReasonCode.SINK_UNAVAILABLE).inc()
            return _answer(
                503,
                IngestResponse(success=False, error=ReasonCode.SINK_UNAVAILABLE, message=str(exc)),
                {"Retry-After": "1"},
            )
        except SinkError as exc:
            metrics.REQUESTS_REJECTED.labels(ReasonCode.SINK_ERROR).inc()
            return _answer(
                503,
                IngestResponse(
                    success=False,
                    error=ReasonCode.SINK_ERROR,
                    message=f"events not stored, retry: {exc}",
                ),
                {"Retry-After": "5"},
            )
        # Durable from here on: a failure after this point must not tell the client otherwise.
        attempt = _ATTEMPT.get()
        attempt.stored = True
        attempt.accepted = len(intake.events) - sum(
            1 for d in outcome.dead_lettered if d.table == "events"
        )
        refused_by_warehouse(intake, outcome)
        return None

    def refused_by_warehouse(intake: Intake, outcome: Outcome) -> None:
        """Events the warehouse refused are in raw.dead_letter, not raw.events: the client
        hears they were rejected, with the warehouse's reason, like any other rejection."""
        refused = {d.position: d.reason for d in outcome.dead_lettered if d.table == "events"}
        if not refused:
            return
        events = intake.events
        # Every index of the request is either an accepted event (in order) or a rejection.
        rejected_at = {r.index for r in intake.rejected}
        indexes = [i for i in range(len(events) + len(intake.rejected)) if i not in rejected_at]
        for position, reason in sorted(refused.items()):
            intake.rejected.append(
                Rejection(
                    indexes[position],
                    reason,
                    ReasonCode.LOAD_ERROR,
                    events.event_type[position],
                    events.event_id[position],
                )
            )
        intake.rejected.sort(key=lambda r: r.index)
        intake.events = events.without(refused.keys())

    async def dead_letter_body(body: bytes, exc: BodyError, info: RequestInfo) -> Response:
        """An unparseable body is kept, with its reason, before the client hears of it."""
        payload = body[: limits.dead_letter_payload_bytes]
        intake = Intake(
            info,
            dead_letters=[
                dead_letter_row(
                    "collector",
                    exc.message,
                    payload,
                    {"route": info.route, "code": exc.code, "bytes": len(body), "ip": info.ip},
                )
            ],
        )
        failed = await durable(intake)
        metrics.DEAD_LETTERS.labels("collector", exc.code).inc()
        return failed or _error(exc)

    def finish(intake: Intake, started: float, route: str) -> Response:
        # Only called once the request's rows are durable: from here on, a failure must say so.
        attempt = _ATTEMPT.get()
        attempt.stored = True
        attempt.accepted = len(intake.events)
        attempt.rejected = [RejectedEvent(**r.to_json()) for r in intake.rejected]
        # Metrics once per type per request, not per event: labelled counters are slow.
        for event_type, n in Counter(intake.accepted_types()).items():
            metrics.EVENTS_RECEIVED.labels(event_type).inc(n)
            metrics.EVENTS_ACCEPTED.labels(event_type).inc(n)
        for rejection in intake.rejected:
            metrics.EVENTS_RECEIVED.labels(rejection.event_type).inc()
            metrics.EVENTS_REJECTED.labels(rejection.event_type, rejection.code).inc()
            if rejection.code != ReasonCode.LOAD_ERROR:  # the sink counted those as the loader's
                metrics.DEAD_LETTERS.labels("collector", rejection.code).inc()
        accepted = len(intake.events)
        stats.accepted += accepted
        stats.rejected += len(intake.rejected)
        metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        if not intake.rejected:  # the common answer, without building a model
            return Response(
                b'{"accepted":%d,"rejected":[],"success":true}' % accepted,
                media_type="application/json",
            )
        body = IngestResponse(accepted=accepted, rejected=attempt.rejected, success=accepted > 0)
        if not body.success:
            body.error = ReasonCode.ALL_REJECTED
            body.message = "no event in the request was valid; see rejected[].reason"
        return _answer(200 if body.success else 400, body)

    async def intake_native(request: Request) -> Response:
        started = time.perf_counter()
        info = info_for(request, "/v1/events")
        body = b""
        try:
            if not authorised(request):
                raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
            check_content_type(request, _JSON_TYPES)
            body = await read_body(request)
            items = split_native(parse_json(body), limits.max_events_per_request)
        except BodyError as exc:
            if exc.code in _KEPT_BODIES:
                return await dead_letter_body(body, exc, info)
            return _error(exc)
        intake = take_native(items, info, limits)
        return await durable(intake) or finish(intake, started, info.route)

    async def intake_segment(request: Request, kind: str | None) -> Response:
        started = time.perf_counter()
        route = f"/v1/{kind or 'batch'}"
        info = info_for(request, route)
        body = b""
        try:
            check_content_type(request, _SEGMENT_TYPES)
            header_key = key_from_headers(request.headers)
            # Segment SDKs may carry the key in the body only; it is checked after parsing,
            # and until then the body is a stranger's: the budget's keyless share bounds it.
            body_key_only = bool(settings.write_keys) and header_key is None
            if body_key_only and not limits.segment_body_write_key:
                raise BodyError(
                    401,
                    ReasonCode.UNAUTHORIZED,
                    "missing write key: send it as the basic-auth user or an X-Write-Key "
                    "header (collector.segment_body_write_key is off)",
                )
            if not body_key_only and not authorised(request):
                raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
            body = await read_body(request, keyless=body_key_only)
            try:
                document = parse_json(body)
            except BodyError:
                if body_key_only:  # nobody we know: keep nothing of it
                    raise BodyError(
                        401, ReasonCode.UNAUTHORIZED, "missing or invalid write key"
                    ) from None
                raise
            if not isinstance(document, dict):
                if body_key_only:
                    raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
                raise BodyError(
                    400, ReasonCode.INVALID_BODY, "a Segment request body is a JSON object"
                )
            if not authorised(request, document.get("writeKey")):
                raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
            if kind is None:
                messages = document.get("batch")
                if not isinstance(messages, list):
                    raise BodyError(
                        400, ReasonCode.INVALID_BODY, "a batch request needs a 'batch' array"
                    )
            else:
                messages = [document]
            if len(messages) > limits.max_events_per_request:
                raise BodyError(
                    413,
                    ReasonCode.TOO_MANY_EVENTS,
                    f"{len(messages)} messages in one request; the limit is "
                    f"{limits.max_events_per_request} (collector.max_events_per_request)",
                )
        except BodyError as exc:
            if exc.code in _KEPT_BODIES:
                return await dead_letter_body(body, exc, info)
            return _error(exc)
        intake = take_segment(messages, info, limits, kind=kind, sent_at=document.get("sentAt"))
        return await durable(intake) or finish(intake, started, route)

    def guarded(handler: IntakeRoute) -> IntakeRoute:
        """Every intake route, in the fast path and FastAPI alike, runs inside this."""

        async def guard(request: Request) -> Response:
            attempt = Attempt()
            token = _ATTEMPT.set(attempt)
            try:
                origin = request.headers.get("origin")
                if policy.allows(origin):
                    response = await handler(request)
                else:
                    response = _error(
                        BodyError(
                            403,
                            ReasonCode.ORIGIN_NOT_ALLOWED,
                            f"origin {origin!r} may not send events: it is not in "
                            "collector.cors_origins",
                        )
                    )
            except ClientDisconnect:  # the client left while sending: nobody to answer
                response = _error(
                    BodyError(400, ReasonCode.CLIENT_DISCONNECTED, "the client went away")
                )
            except Exception as exc:  # the last resort: a clear answer, never a bare 500
                log.exception("intake request on %s failed", request.url.path)
                response = _last_resort(attempt, exc)
            finally:
                if attempt.reservation is not None:
                    attempt.reservation.release()
                _ATTEMPT.reset(token)
            if not attempt.body_read and response.status_code >= 400:
                # Refused before its body was read: do not spend a read on the rest of it.
                response.headers["connection"] = "close"
            return response

        return guard

    routes: dict[str, IntakeRoute] = {
        "/v1/events": guarded(intake_native),
        "/v1/batch": guarded(functools.partial(intake_segment, kind=None)),
        **{f"/v1/{k}": guarded(functools.partial(intake_segment, kind=k)) for k in SEGMENT_SINGLE},
    }

    body_doc = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Event"},
                                }
                            },
                        },
                    ]
                }
            }
        },
    }

    def segment_doc(kind: str) -> dict[str, Any]:
        # Documents the body (see segment_api); FastAPI does not validate it, the intake does.
        schema = {"$ref": f"#/components/schemas/{SEGMENT_BODIES[kind].__name__}"}
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    @app.post(
        "/v1/events",
        summary="Send behaviour events (one, an array, or {events: [...]})",
        responses=_RESPONSES,
        openapi_extra={"requestBody": body_doc},
    )
    async def post_events(request: Request) -> Response:
        return await routes["/v1/events"](request)

    @app.post(
        "/v1/batch",
        summary="Segment batch",
        responses=_RESPONSES,
        openapi_extra={"requestBody": segment_doc("batch")},
    )
    async def segment_batch(request: Request) -> Response:
        return await routes["/v1/batch"](request)

    for kind in SEGMENT_SINGLE:

        async def segment_single(request: Request, kind: str = kind) -> Response:
            return await routes[f"/v1/{kind}"](request)

        app.add_api_route(
            f"/v1/{kind}",
            segment_single,
            methods=["POST"],
            summary=f"Segment {kind}",
            responses=_RESPONSES,
            openapi_extra={"requestBody": segment_doc(kind)},
            name=f"segment_{kind}",
        )

    @app.get(
        "/healthz",
        summary="Alive (fails when only a restart of the process can help)",
        responses={503: {"description": "Broken for good (e.g. the writer keeps dying)"}},
    )
    async def healthz() -> Response:
        broken = sink.broken()
        if broken is None:
            return Response(b'{"status":"ok"}', media_type="application/json")
        return Response(
            orjson.dumps({"status": "failed", "reason": broken}),
            status_code=503,
            media_type="application/json",
        )

    @app.get(
        "/readyz",
        summary="Ready to take events (the sink can write)",
        responses={503: {"description": "Sink cannot write"}},
    )
    async def readyz() -> Response:
        if sink.ready():
            return Response(b'{"status":"ready"}', media_type="application/json")
        return Response(b'{"status":"not ready"}', status_code=503, media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/schema", summary="JSON Schema of the behaviour events")
    async def schema() -> Response:
        return Response(orjson.dumps(event_json_schema()), media_type="application/json")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        events = event_json_schema(ref_template="#/components/schemas/{model}")
        components.update(events.pop("$defs", {}))
        components["Event"] = events
        components.update(segment_schemas())
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.intake_routes = routes
    return app


class IntakeFastPath:
    """ASGI entry point: intake POSTs go straight to their handlers; all else to FastAPI.

    The handlers read the raw request themselves, so FastAPI's request handling and its
    middleware stack add nothing for them but cost ~half of a one-event request's CPU.
    They are still FastAPI routes too (the OpenAPI document describes them).
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.routes: dict[str, IntakeRoute] = app.state.intake_routes
        self.policy: OriginPolicy = app.state.origin_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                request = Request(scope, receive)
                response = await route(request)
                # As CORSMiddleware answers a simple request (the route refused other origins).
                response.headers.update(self.policy.response_headers(request.headers.get("origin")))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
