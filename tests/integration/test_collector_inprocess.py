"""The intake handlers in-process: what the native and Segment routes answer and store.

IntakeHandlers is driven over httpx.ASGITransport through both entry points (the fast path and
the FastAPI app), with the real group-commit sink on a real DuckDB file in tmp_path: what an
answer says was stored is read back from raw.events and raw.dead_letter. What needs a process
of its own (SIGKILL, the writer process, hostile sockets) stays in the subprocess tests.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shopstream.collector.app import create_app
from shopstream.collector.handlers import IntakeHandlers
from shopstream.config import Settings
from shopstream.sinks.warehouse import WarehouseSink
from tests.support.inprocess import ENTRY_POINTS, RawTables, Watched, call, entry_point

JSON = {"content-type": "application/json"}
#: The answer when every event was accepted, as the fast path writes it without a model.
ALL_ACCEPTED = b'{"accepted":%d,"rejected":[],"success":true}'


def event(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "event_ts": "2026-01-01T00:00:00Z",
        "anonymous_id": "a",
        **fields,
    }


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": str(uuid.uuid4()), "anonymousId": "a", **fields}


def post(app: Any, route: str, body: Any, **headers: str) -> Any:
    return call(app, "POST", route, content=orjson.dumps(body), headers={**JSON, **headers})


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_native_batch_keeps_its_good_events_and_names_each_bad_one(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    intake = IntakeHandlers(Settings(), warehouse_sink)
    app = entry_point(intake, entry)
    good = [event(), event()]
    bad = event(event_type="teleport")

    response = post(app, "/v1/events", [good[0], bad, good[1]])

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2 and answer["success"] is True
    [rejected] = answer["rejected"]
    assert rejected["index"] == 1 and rejected["event_id"] == bad["event_id"]
    assert "teleport" in rejected["reason"]
    assert raw_tables.event_ids() == {e["event_id"] for e in good}
    [letter] = raw_tables.dead_letters()
    assert letter["reason"] == rejected["reason"]
    assert bad["event_id"] in letter["payload"]
    assert (intake.stats.accepted, intake.stats.rejected) == (2, 1)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_only_bad_events_are_a_400_and_an_unparseable_body_is_kept(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    app = entry_point(IntakeHandlers(Settings(), warehouse_sink), entry)

    all_bad = post(app, "/v1/events", [event(event_type="teleport"), {"event_type": 1}])
    assert all_bad.status_code == 400
    answer = all_bad.json()
    assert answer["error"] == answer["code"] == "all_rejected"
    assert answer["accepted"] == 0 and [r["index"] for r in answer["rejected"]] == [0, 1]

    garbage = call(app, "POST", "/v1/events", content=b"{not json", headers=JSON)
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "invalid_json"
    assert "not valid JSON" in garbage.json()["message"]
    letters = raw_tables.dead_letters()
    assert len(letters) == 3  # the two bad events and the body
    kept = next(letter for letter in letters if letter["payload"] == "{not json")
    assert kept["reason"] == garbage.json()["message"]
    assert orjson.loads(kept["context"])["route"] == "/v1/events"
    assert raw_tables.event_ids() == set()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_segment_batch_keeps_its_good_messages_next_to_bad_ones(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    app = entry_point(IntakeHandlers(Settings(), warehouse_sink), entry)
    good = track(event="Signed Up")
    batch = {"batch": [good, track(), "not a message"], "sentAt": "2026-01-01T00:00:00Z"}

    response = post(app, "/v1/batch", batch)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
        (1, "a track message needs an 'event' name"),
        (2, "a message must be a JSON object"),
    ]
    assert raw_tables.event_ids() == {good["messageId"]}
    assert len(raw_tables.dead_letters()) == 2


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_missing_or_wrong_write_key_is_a_401(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    app = entry_point(IntakeHandlers(Settings(write_keys="k1"), warehouse_sink), entry)

    watched = Watched(orjson.dumps(event()))
    keyless = call(app, "POST", "/v1/events", content=watched, headers=JSON)
    assert keyless.status_code == 401
    assert keyless.json()["error"] == "unauthorized"
    assert keyless.headers["connection"] == "close"
    assert not watched.read, "a body nobody known sent was read"
    wrong = post(app, "/v1/batch", {"batch": [track(event="x")], "writeKey": "k2"})
    assert wrong.status_code == 401

    keyed = event()
    assert post(app, "/v1/events", keyed, **{"x-write-key": "k1"}).status_code == 200
    assert raw_tables.event_ids() == {keyed["event_id"]}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bodies_and_batches_over_the_limits_are_a_413_naming_the_setting(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    limits = {"max_body_bytes": 2000, "max_events_per_request": 3}
    app = entry_point(IntakeHandlers(Settings(collector=limits), warehouse_sink), entry)

    large = post(app, "/v1/events", [event(padding="x" * 3000)])
    assert large.status_code == 413
    assert large.json()["error"] == "body_too_large"
    assert "collector.max_body_bytes" in large.json()["message"]
    assert large.headers["connection"] == "close"  # refused on its Content-Length, unread

    many = post(app, "/v1/batch", {"batch": [track(event="x") for _ in range(4)]})
    assert many.status_code == 413
    assert many.json()["error"] == "too_many_events"
    assert "collector.max_events_per_request" in many.json()["message"]
    assert raw_tables.event_ids() == set()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_answer_comes_once_the_events_are_durable(raw_tables: RawTables, entry: str) -> None:
    # A long linger: an answer given before the group commit would find raw.events empty.
    sink = WarehouseSink(raw_tables.warehouse, linger_ms=300)
    sink.start()
    try:
        app = entry_point(IntakeHandlers(Settings(), sink), entry)
        sent = [event(), event(), event()]
        response = post(app, "/v1/events", sent)
        assert response.status_code == 200
        assert raw_tables.event_ids() == {e["event_id"] for e in sent}
    finally:
        sink.close()
    refused = post(app, "/v1/events", event())
    assert refused.status_code == 503
    assert refused.json()["error"] == "sink_unavailable"
    assert refused.headers["retry-after"] == "1"


def test_both_entry_points_share_one_intake_and_answer_alike(
    warehouse_sink: WarehouseSink, raw_tables: RawTables
) -> None:
    intake = IntakeHandlers(Settings(), warehouse_sink)
    answers = [
        post(entry_point(intake, entry), "/v1/events", [event(), event()]) for entry in ENTRY_POINTS
    ]
    assert [a.content for a in answers] == [ALL_ACCEPTED % 2] * 2
    assert intake.stats.accepted == 4
    assert len(raw_tables.event_ids()) == 4


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_segment_routes_message_type_is_its_path_whatever_the_query_says(
    warehouse_sink: WarehouseSink, raw_tables: RawTables, entry: str
) -> None:
    """The FastAPI routes once read the message type from a stray ``kind`` query parameter
    (and the OpenAPI document advertised it): ``/v1/track?kind=identify`` stored a track as an
    identify, and ``?kind=nope`` was a bare 500 instead of the collector's JSON answer."""
    intake = IntakeHandlers(Settings(), warehouse_sink)
    document = create_app(intake).openapi()
    for path in intake.routes:
        operation = document["paths"][path]["post"]
        assert "parameters" not in operation, path
        assert "422" not in operation["responses"], path

    app = entry_point(intake, entry)
    for query in ("?kind=nope", "?kind=identify"):
        response = post(app, f"/v1/track{query}", track(event="Signed Up"))
        assert response.status_code == 200, response.text
    names = raw_tables.warehouse.query("SELECT event_name FROM raw.events").to_pylist()
    assert names == [{"event_name": "Signed Up"}] * 2
