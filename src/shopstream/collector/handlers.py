"""The intake routes as one object: what every POST of events goes through.

Routes: ``POST /v1/events`` (native contract) and Segment's HTTP Tracking API (``/v1/batch``,
``/v1/track``, ``/v1/page``, ``/v1/screen``, ``/v1/identify``). Every answer is given only
after the accepted events — and the dead letters of the rejected ones — are durable.

:class:`IntakeHandlers` holds what the routes share (settings, the sink, the body budget, the
origin policy, the running totals) and answers a Starlette request; it needs no FastAPI. Both
entry points call the same :attr:`IntakeHandlers.routes`: the fast path (what ``shopstream run``
serves) and the FastAPI routes that the OpenAPI document describes (see
:mod:`shopstream.collector.app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from opentelemetry import propagate, trace
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from shopstream.collector.admission import BodyBudget, OriginPolicy, Reservation
from shopstream.collector.answers import IngestResponse, RejectedEvent, answer, refusal
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
from shopstream.config import Settings
from shopstream.events.codes import ReasonCode
from shopstream.events.dead_letter import dead_letter_row
from shopstream.observability import metrics, tracing
from shopstream.sinks.base import Outcome, Sink, SinkError, SinkUnavailable

log = logging.getLogger(__name__)

#: Segment's single-message routes, ``/v1/<kind>``; its batches go to ``/v1/batch``.
SEGMENT_SINGLE = ("track", "page", "screen", "identify")
#: Bodies refused with these reached the collector whole, only their content is wrong: they
#: are kept in raw.dead_letter before the client hears of it.
_KEPT_BODIES = frozenset({ReasonCode.INVALID_JSON, ReasonCode.INVALID_BODY})
_JSON_TYPES = ("application/json",)
_SEGMENT_TYPES = (
    "application/json",
    "text/plain",
)  # analytics.js posts text/plain to skip CORS preflight

#: An intake route as both entry points call it.
IntakeRoute = Callable[[Request], Awaitable[Response]]


class ResponseCounts:
    """``shopstream_collector_responses_total{route,status}``, its children looked up once per
    (route, status class) so that counting an answer is a dict read and an increment."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[str, int], Any] = {}

    def count(self, route: str, status: int) -> None:
        key = (route, status // 100)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metrics.COLLECTOR_RESPONSES.labels(
                route, f"{status // 100}xx"
            )
        child.inc()


#: The collector's one set of response counters (every entry point counts through it).
RESPONSES = ResponseCounts()


@dataclass
class CollectorStats:
    """Running totals for the live status line (Prometheus has the labelled detail)."""

    accepted: int = 0
    rejected: int = 0


@dataclass(slots=True)
class Attempt:
    """What one intake request holds and has stored: the last-resort answer reports it.

    One per request, handed down its steps, so that a failure anywhere can still say what
    was stored and the guard can give back what the request held.
    """

    reservation: Reservation | None = None
    body_read: bool = False
    stored: bool = False
    accepted: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)


#: A handler inside the guard: the request and its attempt in, the answer out.
_Handler = Callable[[Request, Attempt], Awaitable[Response]]


class IntakeHandlers:
    """The intake routes around one sink; :attr:`routes` maps each path to its handler.

    ``stats``: the running totals the status line reads (a fresh one by default).
    """

    __slots__ = ("budget", "limits", "policy", "routes", "settings", "sink", "stats")

    def __init__(self, settings: Settings, sink: Sink, *, stats: CollectorStats | None = None):
        self.settings = settings
        self.limits = settings.collector
        self.sink = sink
        self.stats = CollectorStats() if stats is None else stats
        # The one origin policy: the guard refuses other origins with it, and the entry points
        # decorate their answers (and CORSMiddleware answers preflights) from it.
        self.policy = OriginPolicy(self.limits.cors_origins)
        self.budget = BodyBudget(self.limits.intake_memory_bytes)
        # Bound once here, not per request: every route is its handler inside the guard.
        handlers: dict[str, _Handler] = {
            "/v1/events": self.native,
            "/v1/batch": partial(self.segment, kind=None),
        }
        for kind in SEGMENT_SINGLE:
            handlers[f"/v1/{kind}"] = partial(self.segment, kind=kind)
        self.routes: dict[str, IntakeRoute] = {
            path: partial(self.answered, path, handler) for path, handler in handlers.items()
        }

    # -- the routes ----------------------------------------------------------------------------

    async def answered(self, route: str, handler: _Handler, request: Request) -> Response:
        """Every intake route, in the fast path and FastAPI alike: the answer counted by
        route and status class, inside a ``collector.request`` span when tracing is on."""
        attempt = Attempt()
        if not tracing.enabled:
            response = await self.guarded(handler, request, attempt)
        else:
            with tracing.TRACER.start_as_current_span(
                "collector.request",
                # A client's W3C traceparent: its trace goes on here.
                context=propagate.extract(request.headers),
                kind=trace.SpanKind.SERVER,
                attributes={"http.route": route},
            ) as span:
                response = await self.guarded(handler, request, attempt)
                span.set_attributes(
                    {
                        "collector.events": attempt.accepted + len(attempt.rejected),
                        "collector.accepted": attempt.accepted,
                        "collector.rejected": len(attempt.rejected),
                        "http.response.status_code": response.status_code,
                    }
                )
        RESPONSES.count(route, response.status_code)
        return response

    async def guarded(self, handler: _Handler, request: Request, attempt: Attempt) -> Response:
        """Inside :meth:`answered`: the origin check, a clear answer whatever fails, and the
        budget given back."""
        try:
            origin = request.headers.get("origin")
            if self.policy.allows(origin):
                response = await handler(request, attempt)
            else:
                response = refusal(
                    BodyError(
                        403,
                        ReasonCode.ORIGIN_NOT_ALLOWED,
                        f"origin {origin!r} may not send events: it is not in "
                        "collector.cors_origins",
                    )
                )
        except ClientDisconnect:  # the client left while sending: nobody to answer
            response = refusal(
                BodyError(400, ReasonCode.CLIENT_DISCONNECTED, "the client went away")
            )
        except Exception as exc:  # the last resort: a clear answer, never a bare 500
            log.exception("intake request on %s failed", request.url.path)
            response = last_resort(attempt, exc)
        finally:
            if attempt.reservation is not None:
                attempt.reservation.release()
        if not attempt.body_read and response.status_code >= 400:
            # Refused before its body was read: do not spend a read on the rest of it.
            response.headers["connection"] = "close"
        return response

    async def native(self, request: Request, attempt: Attempt) -> Response:
        """``POST /v1/events``: one event, an array, or ``{"events": [...]}``."""
        started = time.perf_counter()
        info = self.info_for(request, "/v1/events")
        body = b""
        try:
            if not self.authorised(request):
                raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
            self.check_content_type(request, _JSON_TYPES)
            body = await self.read_body(request, attempt)
            items = split_native(parse_json(body), self.limits.max_events_per_request)
        except BodyError as exc:
            if exc.code in _KEPT_BODIES:
                return await self.dead_letter_body(body, exc, info, attempt)
            return refusal(exc)
        intake = take_native(items, info, self.limits)
        return await self.durable(intake, attempt) or self.finish(
            intake, started, info.route, attempt
        )

    async def segment(self, request: Request, attempt: Attempt, kind: str | None) -> Response:
        """Segment's ``/v1/batch`` (``kind`` None) and its single-message ``/v1/<kind>``."""
        started = time.perf_counter()
        route = f"/v1/{kind or 'batch'}"
        info = self.info_for(request, route)
        limits = self.limits
        body = b""
        try:
            self.check_content_type(request, _SEGMENT_TYPES)
            header_key = key_from_headers(request.headers)
            # Segment SDKs may carry the key in the body only; it is checked after parsing,
            # and until then the body is a stranger's: the budget's keyless share bounds it.
            body_key_only = bool(self.settings.write_keys) and header_key is None
            if body_key_only and not limits.segment_body_write_key:
                raise BodyError(
                    401,
                    ReasonCode.UNAUTHORIZED,
                    "missing write key: send it as the basic-auth user or an X-Write-Key "
                    "header (collector.segment_body_write_key is off)",
                )
            if not body_key_only and not self.authorised(request):
                raise BodyError(401, ReasonCode.UNAUTHORIZED, "missing or invalid write key")
            body = await self.read_body(request, attempt, keyless=body_key_only)
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
            if not self.authorised(request, document.get("writeKey")):
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
                return await self.dead_letter_body(body, exc, info, attempt)
            return refusal(exc)
        intake = take_segment(messages, info, limits, kind=kind, sent_at=document.get("sentAt"))
        return await self.durable(intake, attempt) or self.finish(intake, started, route, attempt)

    # -- the steps they share ------------------------------------------------------------------

    def authorised(self, request: Request, body_key: Any = None) -> bool:
        if not self.settings.write_keys:
            return True
        candidate = key_from_headers(request.headers)
        if candidate is None and isinstance(body_key, str):
            candidate = body_key
        return key_is_valid(candidate, self.settings.write_keys)

    @staticmethod
    def check_content_type(request: Request, allowed: tuple[str, ...]) -> None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media in allowed or (media.startswith("application/") and media.endswith("+json")):
            return
        raise BodyError(
            415,
            ReasonCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {media or '(none)'!r} is not accepted; send {' or '.join(allowed)}",
        )

    async def read_body(
        self, request: Request, attempt: Attempt, *, keyless: bool = False
    ) -> bytes:
        """The body, once it fits the memory budget, within the read deadline.

        ``keyless``: the request's write key can only be in its body, so nobody known sent
        it yet; such bodies get the smaller share of the budget.
        """
        limits = self.limits
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
        reservation = self.budget.reserve(
            limits.max_body_bytes if length is None or gzipped else int(length), keyless=keyless
        )
        if reservation is None:
            raise BodyError(
                503,
                ReasonCode.BUSY,
                f"the collector holds as many request bodies as its budget allows "
                f"(collector.intake_memory_bytes = {limits.intake_memory_bytes}); retry shortly",
            )
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

    @staticmethod
    def info_for(request: Request, route: str) -> RequestInfo:
        return RequestInfo(
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            route=route,
            received_at=datetime.now(UTC),
        )

    async def durable(self, intake: Intake, attempt: Attempt) -> Response | None:
        """Make the request's rows durable; an answer only if that failed (retry)."""
        rows = intake.rows()
        if not rows:
            return None
        try:
            outcome = await asyncio.wrap_future(self.sink.submit(rows))
        except SinkUnavailable as exc:
            metrics.REQUESTS_REJECTED.labels(ReasonCode.SINK_UNAVAILABLE).inc()
            return answer(
                503,
                IngestResponse(success=False, error=ReasonCode.SINK_UNAVAILABLE, message=str(exc)),
                {"Retry-After": "1"},
            )
        except SinkError as exc:
            metrics.REQUESTS_REJECTED.labels(ReasonCode.SINK_ERROR).inc()
            return answer(
                503,
                IngestResponse(
                    success=False,
                    error=ReasonCode.SINK_ERROR,
                    message=f"events not stored, retry: {exc}",
                ),
                {"Retry-After": "5"},
            )
        # Durable from here on: a failure after this point must not tell the client otherwise.
        attempt.stored = True
        attempt.accepted = len(intake.events) - sum(
            1 for d in outcome.dead_lettered if d.table == "events"
        )
        refused_by_warehouse(intake, outcome)
        return None

    async def dead_letter_body(
        self, body: bytes, exc: BodyError, info: RequestInfo, attempt: Attempt
    ) -> Response:
        """An unparseable body is kept, with its reason, before the client hears of it."""
        payload = body[: self.limits.dead_letter_payload_bytes]
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
        failed = await self.durable(intake, attempt)
        metrics.DEAD_LETTERS.labels("collector", exc.code).inc()
        return failed or refusal(exc)

    def finish(self, intake: Intake, started: float, route: str, attempt: Attempt) -> Response:
        # Only called once the request's rows are durable: from here on, a failure must say so.
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
        stats = self.stats
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
        return answer(200 if body.success else 400, body)


def refused_by_warehouse(intake: Intake, outcome: Outcome) -> None:
    """Events the sink refused (the warehouse, or a broker that can never take them: too
    large) are in raw.dead_letter, not raw.events: the client hears they were rejected, with
    the sink's reason, like any other rejection."""
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


def last_resort(attempt: Attempt, exc: Exception) -> Response:
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
    return answer(500, body)
