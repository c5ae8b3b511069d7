"""The origin policy and the last-resort answer, on every intake route, in both entry points.

In-process over httpx.ASGITransport (durability across crashes is not what is tested here),
with a real group-commit sink on a real DuckDB file. Every route is driven both through
IntakeFastPath (what `shopstream run` serves) and through the FastAPI app itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shopstream.collector.app import CollectorStats, IntakeFastPath, create_app
from shopstream.config import Settings
from shopstream.sinks.base import Outcome, Rows
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb.database import DuckDBWarehouse

ALLOWED = "https://shop.example"
ROUTES = ("/v1/events", "/v1/batch", "/v1/track", "/v1/page", "/v1/screen", "/v1/identify")
ENTRY_POINTS = ("fast_path", "fastapi")
JSON = {"content-type": "application/json"}


def body_for(route: str) -> dict[str, Any]:
    """One valid event for the route (Segment routes take Segment messages)."""
    if route == "/v1/events":
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": "page_view",
            "event_ts": "2026-01-01T00:00:00Z",
            "anonymous_id": "a",
        }
    message = {
        "messageId": str(uuid.uuid4()),
        "anonymousId": "a",
        "event": "Signed Up",
        "name": "Home",
        "traits": {"plan": "x"},
    }
    if route == "/v1/batch":
        return {"batch": [{**message, "type": "track"}]}
    return message


class Warehouse:
    def __init__(self, path: Path) -> None:
        self.warehouse = DuckDBWarehouse(path)
        self.warehouse.ensure_layers()

    def event_ids(self) -> set[str]:
        table = self.warehouse.query("SELECT event_id FROM raw.events")
        return set(table.column("event_id").to_pylist())


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    store = Warehouse(tmp_path / "guards.duckdb")
    yield store
    store.warehouse.close()


def call(
    app: Any,
    method: str,
    route: str,
    *,
    content: bytes | AsyncIterator[bytes] = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            return await client.request(method, route, content=content, headers=headers)

    return asyncio.run(go())


def serve(settings: Settings, sink: WarehouseSink, entry: str, **kwargs: Any) -> Any:
    app = create_app(settings, sink, **kwargs)
    return IntakeFastPath(app) if entry == "fast_path" else app


@pytest.fixture
def sink(warehouse: Warehouse) -> Iterator[WarehouseSink]:
    running = WarehouseSink(warehouse.warehouse, linger_ms=1)
    running.start()
    yield running
    running.close()


class Watched:
    """A request body that records whether the server read any of it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.data


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("route", ROUTES)
def test_other_origins_are_refused_unread_and_allowed_ones_served(
    sink: WarehouseSink, warehouse: Warehouse, entry: str, route: str
) -> None:
    settings = Settings(collector={"cors_origins": [ALLOWED]})
    app = serve(settings, sink, entry)
    # text/plain: what analytics.js posts so that browsers send it without a preflight.
    plain = {"content-type": "text/plain" if route != "/v1/events" else "application/json"}

    stranger = body_for(route)
    watched = Watched(orjson.dumps(stranger))
    refused = call(
        app, "POST", route, content=watched, headers={**plain, "origin": "https://evil.example"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "origin_not_allowed"
    assert "https://evil.example" in refused.json()["message"]
    assert "cors_origins" in refused.json()["message"]
    assert "access-control-allow-origin" not in refused.headers
    assert not watched.read, "the body of a refused origin was read"

    friend = body_for(route)
    allowed = call(
        app, "POST", route, content=orjson.dumps(friend), headers={**plain, "origin": ALLOWED}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert allowed.headers["vary"] == "Origin"

    server_side = body_for(route)
    no_origin = call(app, "POST", route, content=orjson.dumps(server_side), headers=plain)
    assert no_origin.status_code == 200

    preflight = {"access-control-request-method": "POST"}
    ok = call(app, "OPTIONS", route, headers={**preflight, "origin": ALLOWED})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    other = call(app, "OPTIONS", route, headers={**preflight, "origin": "https://evil.example"})
    assert other.status_code == 400

    stored = warehouse.event_ids()
    ids = [
        (m.get("event_id") or m.get("messageId") or m["batch"][0]["messageId"])
        for m in (stranger, friend, server_side)
    ]
    assert ids[0] not in stored
    assert {ids[1], ids[2]} <= stored


class AckLostSink(WarehouseSink):
    """Stores for real, then fails to say so.

    A broker or writer that wrote the rows but lost the acknowledgement is a failure no code
    path expects (it is neither 'unavailable' nor a warehouse error); nothing else here can
    provoke it on demand, so the sink is subclassed rather than the collector mocked.
    """

    def submit(self, rows: Rows) -> Future[Outcome]:
        stored = super().submit(rows)
        lost: Future[Outcome] = Future()

        def lose(done: Future[Outcome]) -> None:
            done.result()  # really durable first
            lost.set_exception(ConnectionResetError("acknowledgement lost"))

        stored.add_done_callback(lose)
        return lost


class BrokenStatusLine(CollectorStats):
    """The status line's totals fail to update: a failure after the events were stored.

    Injected through create_app's ``stats`` (the object the live status line reads); it is
    the one step after durability that can be made to fail without mocking the collector.
    """

    def __init__(self) -> None:
        super().__init__()
        self.armed = True  # fails from the first update after construction

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "accepted" and getattr(self, "armed", False):
            raise RuntimeError("status line broke")
        super().__setattr__(name, value)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("route", ["/v1/events", "/v1/batch", "/v1/track"])
def test_an_unexpected_failure_before_durability_is_a_clear_json_answer(
    warehouse: Warehouse, entry: str, route: str
) -> None:
    sink = AckLostSink(warehouse.warehouse, linger_ms=1)
    sink.start()
    try:
        app = serve(Settings(), sink, entry)
        sent = body_for(route)
        response = call(app, "POST", route, content=orjson.dumps(sent), headers=JSON)
    finally:
        sink.close()
    assert response.status_code == 500
    answer = response.json()
    assert answer["error"] == answer["code"] == "internal_error"
    assert answer["accepted"] == 0 and answer["success"] is False
    assert "ConnectionResetError" in answer["message"]
    assert "resend" in answer["message"]
    # The rows were in fact stored, which is why the answer says a resend is harmless.
    assert len(warehouse.event_ids()) == 1


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("route", ["/v1/events", "/v1/batch", "/v1/page"])
def test_a_failure_after_durability_still_reports_what_was_stored(
    sink: WarehouseSink, warehouse: Warehouse, entry: str, route: str
) -> None:
    app = serve(Settings(), sink, entry, stats=BrokenStatusLine())
    good = body_for(route)
    if route == "/v1/events":
        sent: Any = [good, {"event_type": "teleport", "anonymous_id": "a"}]
    elif route == "/v1/batch":
        sent = {"batch": [*good["batch"], {"type": "track", "anonymousId": "a"}]}
    else:
        sent = good
    response = call(app, "POST", route, content=orjson.dumps(sent), headers=JSON)
    assert response.status_code == 500
    answer = response.json()
    assert answer["error"] == "internal_error"
    assert answer["accepted"] == 1
    assert "after this request was stored" in answer["message"]
    assert "RuntimeError" in answer["message"]
    if route != "/v1/page":
        assert [r["index"] for r in answer["rejected"]] == [1]
        assert answer["rejected"][0]["reason"]
    assert len(warehouse.event_ids()) == 1


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_body_write_keys_can_be_turned_off(
    sink: WarehouseSink, warehouse: Warehouse, entry: str
) -> None:
    sent = body_for("/v1/batch") | {"writeKey": "k1"}
    accepting = serve(Settings(write_keys="k1"), sink, entry)
    response = call(accepting, "POST", "/v1/batch", content=orjson.dumps(sent), headers=JSON)
    assert response.status_code == 200, response.text

    strict = serve(
        Settings(write_keys="k1", collector={"segment_body_write_key": False}), sink, entry
    )
    watched = Watched(orjson.dumps(body_for("/v1/batch") | {"writeKey": "k1"}))
    refused = call(strict, "POST", "/v1/batch", content=watched, headers=JSON)
    assert refused.status_code == 401
    assert "segment_body_write_key" in refused.json()["message"]
    assert refused.headers["connection"] == "close"
    assert not watched.read
    with_header = call(
        strict,
        "POST",
        "/v1/batch",
        content=orjson.dumps(body_for("/v1/batch")),
        headers={**JSON, "x-write-key": "k1"},
    )
    assert with_header.status_code == 200
    assert len(warehouse.event_ids()) == 2
