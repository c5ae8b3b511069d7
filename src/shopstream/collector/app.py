"""The collector's HTTP wiring: the FastAPI app, its OpenAPI document, and the fast path.

The intake routes themselves live in :class:`~shopstream.collector.handlers.IntakeHandlers`;
this module only puts them behind two entry points that share them (and their one origin
policy): :func:`create_app` (FastAPI: the intake routes as documented operations, health,
readiness, metrics and the event schema) and :class:`IntakeFastPath` (what ``shopstream run``
serves: intake POSTs straight to the handlers, everything else to the FastAPI app). Queries
are never served here: see :mod:`shopstream.warehouse.duckdb.query_endpoint`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Message, Receive, Scope, Send

from shopstream import __version__
from shopstream.collector.answers import RESPONSES
from shopstream.collector.handlers import RESPONSES as RESPONSE_COUNTS
from shopstream.collector.handlers import SEGMENT_SINGLE, IntakeHandlers, IntakeRoute
from shopstream.collector.segment_api import SEGMENT_BODIES, segment_schemas
from shopstream.events.schema import event_json_schema
from shopstream.observability import metrics

#: The native route's body, for the OpenAPI document: one event, an array, or {events: [...]}.
_NATIVE_BODY: dict[str, Any] = {
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


def _segment_body(kind: str) -> dict[str, Any]:
    # Documents the body (see segment_api); FastAPI does not validate it, the intake does.
    schema = {"$ref": f"#/components/schemas/{SEGMENT_BODIES[kind].__name__}"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _endpoint(route: IntakeRoute) -> Callable[[Request], Awaitable[Response]]:
    """A FastAPI endpoint for an intake route: the request is all it takes (no parameters
    for FastAPI to parse or document), the handler reads the body itself."""

    async def endpoint(request: Request) -> Response:
        return await route(request)

    return endpoint


#: The route label of the answers to everything but the intake routes (health, schema, 404s).
OTHER_ROUTES = "other"
#: FastAPI's own OpenTelemetry spans (FastAPI >= 0.16x traces every request through the global
#: provider) are off for the collector: its intake spans are shopstream's collector.request,
#: and a span per liveness/readiness probe would be a trace every few seconds per pod.
_NO_FASTAPI_SPANS: dict[str, Any] = (
    {"telemetry": {"tracing": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def create_app(intake: IntakeHandlers, *, serve_metrics: bool = True) -> FastAPI:
    """The FastAPI app around the intake handlers (and the sink they write to).

    ``serve_metrics`` false: no /metrics here (``collector.metrics_port`` serves them on a port
    of their own, off the public intake port)."""
    app = FastAPI(
        title="shopstream collector",
        version=__version__,
        description="Behaviour-event intake: native contract and Segment's HTTP Tracking API.",
        default_response_class=Response,
        **_NO_FASTAPI_SPANS,
    )
    # CORSMiddleware answers preflights and decorates FastAPI's answers from the intake's
    # origin policy (the guard refuses other origins, IntakeFastPath decorates its own).
    app.add_middleware(CORSMiddleware, **intake.policy.middleware_options())

    intake_routes = [
        ("/v1/events", "post_events", "Send behaviour events (one, an array, or {events: [...]})"),
        ("/v1/batch", "segment_batch", "Segment batch"),
        *((f"/v1/{kind}", f"segment_{kind}", f"Segment {kind}") for kind in SEGMENT_SINGLE),
    ]
    for path, name, summary in intake_routes:
        body = _NATIVE_BODY if path == "/v1/events" else _segment_body(path.removeprefix("/v1/"))
        app.add_api_route(
            path,
            _endpoint(intake.routes[path]),
            methods=["POST"],
            summary=summary,
            responses=RESPONSES,
            openapi_extra={"requestBody": body},
            name=name,
        )

    sink = intake.sink

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

    if serve_metrics:

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
    return app


class IntakeFastPath:
    """ASGI entry point: intake POSTs go straight to their handlers; all else to ``app``.

    The handlers read the raw request themselves, so FastAPI's request handling and its
    middleware stack add nothing for them but cost ~half of a one-event request's CPU.
    They are still FastAPI routes too (the OpenAPI document describes them).
    """

    def __init__(self, intake: IntakeHandlers, app: FastAPI) -> None:
        self.app = app
        self.routes = intake.routes
        self.policy = intake.policy

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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                RESPONSE_COUNTS.count(OTHER_ROUTES, message["status"])
            await send(message)

        await self.app(scope, receive, counted)
