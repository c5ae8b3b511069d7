"""Hostile and careless bodies over real HTTP: one bad event never fails its neighbours.

Calendar-edge timestamps, JSON nested past what a serializer takes, numbers beyond 64 bits and
multi-member gzip, on the native route and Segment's. Good neighbours land in raw.events; each
bad event is answered with its own reason and kept in raw.dead_letter with that reason.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from tests.support.collector import CollectorProcess

NOW = datetime.now(UTC).isoformat()
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("intake-edges"))
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


def deep(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def native(event_id: str, **fields: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_type": "custom",
        "event_name": "edge",
        "event_ts": NOW,
        "anonymous_id": "anon-edge",
        **fields,
    }


def with_raw(document: dict[str, object], key: str, raw: str) -> str:
    """``document`` as JSON with ``key``'s value replaced by raw JSON text (which orjson would
    refuse to write: too deep, or a number it cannot hold)."""
    text = orjson.dumps({**document, key: "__RAW__"}).decode()
    return text.replace('"__RAW__"', raw, 1)


def send(
    collector: CollectorProcess, path: str, text: str | bytes, **headers: str
) -> httpx.Response:
    content = text.encode() if isinstance(text, str) else text
    return httpx.post(f"{collector.url}{path}", content=content, headers={**JSON, **headers})


def stored_ids(collector: CollectorProcess, ids: list[str]) -> dict[str, dict[str, object]]:
    listed = ", ".join(f"'{i}'" for i in ids)
    rows = collector.query(f"SELECT * FROM raw.events WHERE event_id IN ({listed})")
    return {str(row["event_id"]): row for row in rows}


def letter(collector: CollectorProcess, marker: str) -> dict[str, object]:
    """The one dead letter whose payload holds the string ``marker``."""
    rows = collector.query(
        "SELECT reason, payload, context FROM raw.dead_letter "
        f"WHERE source = 'collector' AND payload LIKE '%\"{marker}\"%'"
    )
    assert len(rows) == 1, (marker, rows)
    return rows[0]


def test_native_batch_keeps_good_events_next_to_every_kind_of_bad_one(
    collector: CollectorProcess,
) -> None:
    run = uuid.uuid4().hex
    ids = {
        name: f"{name}-{run}"
        for name in (
            "good",
            "year1",
            "year9999",
            "deep300",
            "deep1000",
            "big",
            "negative",
            "huge",
            "u64",
        )
    }
    props = "properties"
    items = [
        orjson.dumps(native(ids["good"])).decode(),
        orjson.dumps(native(ids["year1"], event_ts="0001-01-01T00:00:00+14:00")).decode(),
        orjson.dumps(native(ids["year9999"], event_ts="9999-12-31T23:00:00-14:00")).decode(),
        with_raw(native(ids["deep300"]), props, '{"tree": ' + deep(300) + "}"),
        with_raw(native(ids["deep1000"]), props, '{"tree": ' + deep(1000) + "}"),
        with_raw(native(ids["big"]), props, '{"visits": 18446744073709551616}'),
        with_raw(native(ids["negative"]), "session_id", "-9223372036854775809"),
        with_raw(native(ids["huge"]), props, '{"score": 1e400}'),
        with_raw(native(ids["u64"]), props, '{"visits": 18446744073709551615}'),
        deep(600, f'"not-an-event-{run}"'),
    ]
    response = send(collector, "/v1/events", "[" + ",".join(items) + "]")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7, 9}
    assert "event_ts" in reasons[1] and "out of range" in reasons[1]
    assert "event_ts" in reasons[2] and "out of range" in reasons[2]
    assert "nested" in reasons[3] and "nested" in reasons[4]
    assert "properties.visits" in reasons[5] and "18446744073709551616" in reasons[5]
    assert "session_id" in reasons[6] and "-9223372036854775809" in reasons[6]
    assert "properties.score" in reasons[7] and "1e400" in reasons[7]
    assert "JSON object" in reasons[9]

    stored = stored_ids(collector, list(ids.values()))
    assert set(stored) == {ids["good"], ids["u64"]}
    # A 64-bit integer stays exact in both JSON columns: no float on the way.
    assert '"visits":18446744073709551615' in str(stored[ids["u64"]]["properties"]).replace(" ", "")
    assert "18446744073709551615" in str(stored[ids["u64"]]["payload"])

    for name, index in (
        ("year1", 1),
        ("year9999", 2),
        ("deep300", 3),
        ("deep1000", 4),
        ("big", 5),
        ("negative", 6),
        ("huge", 7),
    ):
        row = letter(collector, ids[name])
        assert row["reason"] == reasons[index]
    # Dead letters keep the event as it was sent: exact numbers, every level.
    assert '"visits":18446744073709551616' in str(letter(collector, ids["big"])["payload"])
    assert '"score":1e400' in str(letter(collector, ids["huge"])["payload"])
    assert deep(1000) in str(letter(collector, ids["deep1000"])["payload"])
    assert deep(600, f'"not-an-event-{run}"') == letter(collector, f"not-an-event-{run}")["payload"]


def segment_message(message_id: str, **fields: object) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Edge Checked",
        "anonymousId": "anon-edge",
        "messageId": message_id,
        "timestamp": NOW,
        **fields,
    }


def test_segment_batch_keeps_good_messages_next_to_bad_ones(collector: CollectorProcess) -> None:
    run = uuid.uuid4().hex
    names = ("good", "year1", "year9999", "sent_year1", "deep", "big_user")
    ids = {name: f"{name}-{run}" for name in names}
    messages = [
        orjson.dumps(segment_message(ids["good"])).decode(),
        # Corrected by the batch's sentAt: receivedAt - (sentAt - timestamp) is before year 1.
        orjson.dumps(segment_message(ids["year1"], timestamp="0001-01-01T00:00:00+14:00")).decode(),
        orjson.dumps(
            segment_message(
                ids["year9999"],
                originalTimestamp="9999-12-31T23:00:00-14:00",
                sentAt="0001-01-01T00:00:00Z",
            )
        ).decode(),
        orjson.dumps(
            segment_message(
                ids["sent_year1"],
                originalTimestamp="9999-12-31T00:00:00Z",
                sentAt="0001-01-01T00:00:00+14:00",
            )
        ).decode(),
        with_raw(segment_message(ids["deep"]), "properties", '{"tree": ' + deep(500) + "}"),
        with_raw(segment_message(ids["big_user"]), "userId", "18446744073709551616"),
    ]
    text = '{"sentAt": "' + NOW + '", "batch": [' + ",".join(messages) + "]}"
    response = send(collector, "/v1/batch", text)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5}
    for index in (1, 2, 3):
        assert "sentAt" in reasons[index] and "timestamp" in reasons[index].lower()
        assert "out of range" in reasons[index]
    assert "nested" in reasons[4]
    assert "userId" in reasons[5] and "18446744073709551616" in reasons[5]
    assert set(stored_ids(collector, list(ids.values()))) == {ids["good"]}
    for name, index in (("year1", 1), ("year9999", 2), ("sent_year1", 3), ("deep", 4)):
        assert letter(collector, ids[name])["reason"] == reasons[index]
    big = letter(collector, ids["big_user"])
    assert big["reason"] == reasons[5]
    assert '"userId":18446744073709551616' in str(big["payload"])

    # A batch-level sentAt at the end of the calendar: only messages it corrects fail.
    late = {name: f"late-{name}-{run}" for name in ("own_sent_at", "batch_sent_at")}
    batch = {
        "sentAt": "9999-12-31T23:59:59Z",
        "batch": [
            segment_message(late["own_sent_at"], sentAt=NOW),
            segment_message(late["batch_sent_at"], timestamp="0001-01-01T00:00:00Z"),
        ],
    }
    response = httpx.post(f"{collector.url}/v1/batch", json=batch)
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["rejected"]] == [1]
    assert set(stored_ids(collector, list(late.values()))) == {late["own_sent_at"]}


def test_segment_single_routes_answer_400_with_the_reason(collector: CollectorProcess) -> None:
    run = uuid.uuid4().hex
    edge = segment_message(f"edge-{run}", timestamp="9999-12-31T23:00:00-14:00")
    del edge["type"]
    response = httpx.post(f"{collector.url}/v1/track", json=edge)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "all_rejected"
    reason = response.json()["rejected"][0]["reason"]
    assert "event_ts" in reason and "out of range" in reason
    assert letter(collector, f"edge-{run}")["reason"] == reason

    nested = with_raw(segment_message(f"nested-{run}"), "properties", '{"t": ' + deep(900) + "}")
    response = send(collector, "/v1/track", nested)
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["rejected"][0]["reason"]
    assert deep(900) in str(letter(collector, f"nested-{run}")["payload"])


def test_deeply_nested_bodies_that_are_no_event_list(collector: CollectorProcess) -> None:
    run = uuid.uuid4().hex
    cases = [
        ("/v1/events", '{"marker": "' + run + '-a", "tree": ' + deep(700) + "}"),
        ("/v1/events", deep(1000, '{"marker": "' + run + '-b"}')),
        ("/v1/batch", '{"batch": [' + deep(800, '"' + run + '-c"') + "]}"),
        ("/v1/batch", '{"batch": {"marker": "' + run + '-d", "t": ' + deep(900) + "}}"),
        ("/v1/page", '{"marker": "' + run + '-e", "properties": ' + deep(1000, "{}") + "}"),
    ]
    for path, text in cases:
        response = send(collector, path, text)
        assert response.status_code == 400, (path, response.text)
    for suffix in "abcde":
        assert letter(collector, f"{run}-{suffix}")["reason"]
    # Past what the parser takes: the whole body is refused, and kept, with a clear reason.
    response = send(collector, "/v1/events", deep(1100))
    assert response.status_code == 400
    assert "depth" in response.json()["message"]


def test_gzip_bodies_of_several_members_and_x_gzip(collector: CollectorProcess) -> None:
    run = uuid.uuid4().hex
    first, second = native(f"gz1-{run}"), native(f"gz2-{run}")
    text = orjson.dumps([first, second])
    cut = len(text) // 2
    members = gzip.compress(text[:cut]) + gzip.compress(text[cut:])
    response = send(collector, "/v1/events", members, **{"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2

    third = native(f"gz3-{run}")
    response = send(
        collector,
        "/v1/events",
        gzip.compress(orjson.dumps(third)),
        **{"content-encoding": "x-gzip"},
    )
    assert response.status_code == 200, response.text
    assert set(stored_ids(collector, [f"gz{n}-{run}" for n in (1, 2, 3)])) == {
        f"gz{n}-{run}" for n in (1, 2, 3)
    }

    trailing = gzip.compress(orjson.dumps(native(f"gz4-{run}"))) + b"garbage"
    response = send(collector, "/v1/events", trailing, **{"content-encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_gzip"
    assert "after gzip member 1" in response.json()["message"]

    # Each member is small once inflated, together they are over the limit (5 MB).
    part = gzip.compress(b" " * 2_000_000)
    bomb = gzip.compress(b"[") + part * 3 + gzip.compress(b"]")
    response = send(collector, "/v1/events", bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413
