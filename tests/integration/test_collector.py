"""The collector over real HTTP, writing to a real DuckDB file, in its own process."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import metrics
from tests.support.collector import CollectorProcess

NOW = datetime.now(UTC)


def event(event_type: str = "page_view", **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "event_ts": NOW.isoformat(),
        "anonymous_id": "anon-1",
        "session_id": "s-1",
        "device_type": "web_desktop",
    }
    base.update(fields)
    return base


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("collector"))
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def post(collector: CollectorProcess, body: object, path: str = "/v1/events") -> httpx.Response:
    return httpx.post(f"{collector.url}{path}", json=body, timeout=30)


def stored(collector: CollectorProcess, event_id: str) -> list[dict[str, object]]:
    return collector.query(f"SELECT * FROM raw.events WHERE event_id = '{event_id}'")


def test_one_event_array_and_wrapped_batch_are_all_accepted(collector: CollectorProcess) -> None:
    single = event("search", properties={"query": "wool socks", "results_count": 12})
    array = [event(), event("product_view", properties={"product_id": "P1", "price": "12.50"})]
    wrapped = {"events": [event("app_open", device_type="ios")]}

    for body, count in ((single, 1), (array, 2), (wrapped, 1)):
        response = post(collector, body)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == count

    row = stored(collector, single["event_id"])[0]  # type: ignore[arg-type]
    assert row["event_type"] == "search"
    assert orjson.loads(row["properties"])["query"] == "wool socks"  # type: ignore[arg-type]
    assert row["source"] == "native"
    assert row["event_date"] == NOW.date().isoformat()
    assert row["ip"] == "127.0.0.1"
    assert orjson.loads(row["payload"])["session_id"] == "s-1"  # type: ignore[arg-type]
    price = orjson.loads(stored(collector, array[1]["event_id"])[0]["properties"])["price"]  # type: ignore[arg-type,index]
    assert price == "12.50"  # money stays exact


def test_bad_events_are_rejected_with_reasons_and_good_neighbours_kept(
    collector: CollectorProcess,
) -> None:
    good = event("add_to_cart", properties={"product_id": "P9", "quantity": 2})
    batch = [
        good,
        event("teleport"),
        event("purchase", properties={"revenue": "10"}),  # no order_id
        event("add_to_cart", properties={"product_id": "P9", "quantity": "many"}),
        event("page_view", event_ts=(NOW + timedelta(days=3)).isoformat()),
        event("page_view", event_ts="1970-01-01T00:00:00Z"),
        event("page_view", anonymous_id=None),
        "not an object",
    ]
    response = post(collector, batch)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7}
    assert "unknown event_type 'teleport'" in reasons[1]
    assert "properties.order_id" in reasons[2]
    assert "properties.quantity" in reasons[3]
    assert "ahead of the server clock" in reasons[4]
    assert "older than" in reasons[5]
    assert "user_id or anonymous_id" in reasons[6]
    assert stored(collector, good["event_id"])  # type: ignore[arg-type]

    letters = collector.query(
        "SELECT reason, payload FROM raw.dead_letter WHERE source = 'collector' "
        "AND reason LIKE 'unknown event_type ''teleport''%'"
    )
    assert len(letters) == 1
    assert orjson.loads(letters[0]["payload"])["event_type"] == "teleport"  # type: ignore[arg-type]


def test_all_rejected_is_a_400_with_every_reason(collector: CollectorProcess) -> None:
    response = post(collector, [event("nope"), event("search")])
    assert response.status_code == 400
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]


def test_malformed_json_is_400_and_kept_in_dead_letter(collector: CollectorProcess) -> None:
    marker = uuid.uuid4().hex
    response = httpx.post(
        f"{collector.url}/v1/events",
        content=f'{{"event_type": "page_view", "x": "{marker}"',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    rows = collector.query(f"SELECT reason FROM raw.dead_letter WHERE payload LIKE '%{marker}%'")
    assert len(rows) == 1
    assert "not valid JSON" in rows[0]["reason"]  # type: ignore[operator]


def test_limits_name_themselves(collector: CollectorProcess) -> None:
    too_many = [event() for _ in range(2_001)]
    response = post(collector, too_many)
    assert response.status_code == 413
    assert "2000" in response.json()["message"]

    huge = b"[" + b" " * 5_000_001 + b"]"
    response = httpx.post(
        f"{collector.url}/v1/events", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "5000000" in response.json()["message"]


def test_gzip_bodies_are_accepted_and_bad_gzip_is_refused(collector: CollectorProcess) -> None:
    batch = [event(), event()]
    response = httpx.post(
        f"{collector.url}/v1/events",
        content=gzip.compress(orjson.dumps(batch)),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 2

    response = httpx.post(
        f"{collector.url}/v1/events",
        content=b"\x1f\x8b\x08\x00broken",
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_gzip"

    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")
    response = httpx.post(
        f"{collector.url}/v1/events",
        content=bomb,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 413


def test_non_json_content_type_is_415(collector: CollectorProcess) -> None:
    response = httpx.post(
        f"{collector.url}/v1/events",
        content=orjson.dumps(event()),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 415
    assert "text/csv" in response.json()["message"]


def test_resent_events_count_once_after_staging(collector: CollectorProcess) -> None:
    again = event("wishlist_add", properties={"product_id": "P5"})
    for _ in range(3):
        assert post(collector, [again]).status_code == 200
    raw = collector.query(
        f"SELECT count(*) AS n FROM raw.events WHERE event_id = '{again['event_id']}'"
    )
    collector.stage_events()
    staged = collector.query(
        f"SELECT count(*) AS n FROM staging.stg_events WHERE event_id = '{again['event_id']}'"
    )
    assert raw[0]["n"] == 3
    assert staged[0]["n"] == 1


def test_events_without_id_get_a_deterministic_one(collector: CollectorProcess) -> None:
    anonymous = event("page_view", page_url=f"https://shop.example/{uuid.uuid4()}")
    del anonymous["event_id"]
    for _ in range(2):
        assert post(collector, anonymous).status_code == 200
    rows = collector.query(
        f"SELECT DISTINCT event_id FROM raw.events WHERE page_url = '{anonymous['page_url']}'"
    )
    assert len(rows) == 1


def test_health_readiness_metrics_and_schema(collector: CollectorProcess) -> None:
    assert httpx.get(f"{collector.url}/healthz").status_code == 200
    assert httpx.get(f"{collector.url}/readyz").json() == {"status": "ready"}
    # Sample values, not names: Prometheus prints a metric's name even with no sample.
    before = metrics.samples(collector.url)
    assert post(collector, [event(), event(), event("nope")]).status_code == 200
    after = metrics.samples(collector.url)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("shopstream_collector_events_accepted_total", event_type="page_view") == 2
    assert grew("shopstream_collector_events_received_total", event_type="page_view") == 2
    rejected = {"event_type": "unknown", "reason": "unknown_event_type"}
    assert grew("shopstream_collector_events_rejected_total", **rejected) == 1
    letters = {"source": "collector", "reason": "unknown_event_type"}
    assert grew("shopstream_dead_letters_total", **letters) == 1
    assert grew("shopstream_collector_request_seconds_count", route="/v1/events") == 1
    assert grew("shopstream_sink_rows_written_total", table="events") == 2
    assert grew("shopstream_sink_rows_written_total", table="dead_letter") == 1
    # One group commit holds the request's three rows (it was the only one in flight).
    assert grew("shopstream_sink_batch_rows_count") == 1
    assert grew("shopstream_sink_batch_rows_sum") == 3
    assert grew("shopstream_sink_flush_seconds_count") == 1
    assert after[("shopstream_sink_queue_rows", frozenset())] == 0
    schema = httpx.get(f"{collector.url}/v1/schema").json()
    types = {s["$ref"].rsplit("/", 1)[1] for s in schema["oneOf"]}
    assert {"PageView", "Purchase", "BannerClick", "Custom"} <= types
    openapi = httpx.get(f"{collector.url}/openapi.json").json()
    assert {"/v1/events", "/v1/batch", "/v1/track"} <= set(openapi["paths"])


def test_segment_routes_map_the_ecommerce_spec(collector: CollectorProcess) -> None:
    message_id = str(uuid.uuid4())
    response = post(
        collector,
        {
            "userId": "U000001",
            "event": "Order Completed",
            "messageId": message_id,
            "timestamp": NOW.isoformat(),
            "properties": {
                "order_id": "O-77",
                "total": 30.5,
                "currency": "usd",
                "products": [{"product_id": "P1", "quantity": 1, "price": 30.5}],
            },
            "context": {"campaign": {"source": "newsletter", "medium": "email", "name": "bf"}},
        },
        "/v1/track",
    )
    assert response.status_code == 200, response.text
    row = stored(collector, message_id)[0]
    assert row["event_type"] == "purchase"
    assert row["event_name"] == "Order Completed"
    assert row["source"] == "segment"
    assert row["utm_campaign"] == "bf"
    props = orjson.loads(row["properties"])  # type: ignore[arg-type]
    assert props["order_id"] == "O-77"
    assert props["revenue"] == "30.5"
    assert props["currency"] == "USD"

    custom_id = str(uuid.uuid4())
    response = post(
        collector,
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Coupon Applied",
                    "anonymousId": "a",
                    "messageId": custom_id,
                    "properties": {"coupon": "X"},
                }
            ]
        },
        "/v1/batch",
    )
    assert response.status_code == 200
    row = stored(collector, custom_id)[0]
    assert (row["event_type"], row["event_name"]) == ("custom", "Coupon Applied")


def test_shopstream_sql_answers_while_the_collector_runs(collector: CollectorProcess) -> None:
    import subprocess
    import sys

    post(collector, [event()])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopstream",
            "sql",
            "SELECT count(*) AS n FROM raw.events",
            "--json",
        ],
        env=collector.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)[0]["n"] > 0

    refused = subprocess.run(
        [sys.executable, "-m", "shopstream", "sql", "DELETE FROM raw.events"],
        env=collector.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "only read queries" in refused.stderr


def test_write_keys_are_required_when_configured(tmp_path: Path) -> None:
    secret = "wk_" + uuid.uuid4().hex
    process = CollectorProcess(tmp_path, env={"SHOPSTREAM_WRITE_KEYS": f"other,{secret}"})
    process.start()
    try:
        url = f"{process.url}/v1/events"
        assert httpx.post(url, json=event()).status_code == 401
        assert httpx.post(url, json=event(), auth=("wrong", "")).status_code == 401
        assert httpx.post(url, json=event(), auth=(secret, "")).status_code == 200
        assert httpx.post(url, json=event(), headers={"X-Write-Key": secret}).status_code == 200
        segment = {
            "batch": [{"type": "page", "anonymousId": "a", "name": "Home"}],
            "writeKey": secret,
        }
        assert httpx.post(f"{process.url}/v1/batch", json=segment).status_code == 200
        segment["writeKey"] = "nope"
        assert httpx.post(f"{process.url}/v1/batch", json=segment).status_code == 401
        # Without any key, even a broken body is refused, not kept: strangers write nothing.
        broken = httpx.post(
            f"{process.url}/v1/batch",
            content=b"{broken",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 401
        letters = process.query("SELECT count(*) AS n FROM raw.dead_letter")
        assert letters[0]["n"] == 0
    finally:
        process.stop()
    assert secret not in process.log()


def test_browsers_may_send_from_any_origin(collector: CollectorProcess) -> None:
    preflight = httpx.options(
        f"{collector.url}/v1/events",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    response = httpx.post(
        f"{collector.url}/v1/events", json=event(), headers={"Origin": "https://shop.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
