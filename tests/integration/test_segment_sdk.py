"""Segment's own Python SDK (segment-analytics-python, from PyPI) sends to shopstream unchanged.

Both ways applications run it: sync mode (one message a request, errors raised), and its
normal mode, where a consumer thread batches messages, retries what can be retried and
reports the rest through ``on_error``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from segment.analytics.client import Client

from tests.support import metrics
from tests.support.clients import StalledClient
from tests.support.collector import CollectorProcess


@pytest.fixture
def keyed_collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path, env={"SHOPSTREAM_WRITE_KEYS": "segment-test-key"})
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_sdk_events_land_in_raw(keyed_collector: CollectorProcess, gzip: bool) -> None:
    failures: list[Exception] = []
    client = Client(
        write_key="segment-test-key",
        host=keyed_collector.url,
        sync_mode=True,
        gzip=gzip,
        on_error=lambda error, _batch: failures.append(error),
    )
    user = f"U-{uuid.uuid4().hex[:8]}"
    sent = [
        client.track(user, "Product Viewed", {"product_id": "P000007", "price": 19.99}),
        client.track(user, "Product Added", {"product_id": "P000007", "quantity": 2}),
        client.track(
            user,
            "Order Completed",
            {
                "order_id": "O-1",
                "revenue": 39.98,
                "products": [{"product_id": "P000007", "quantity": 2}],
            },
        ),
        client.track(user, "Newsletter Signed Up", {"list": "weekly"}),
        client.page(user, "Shop", "Home", {"url": "https://shop.example/"}),
        client.screen(user, "App", "Cart"),
        client.identify(user, {"email": "someone@example.com", "grade": "GOLD"}),
    ]
    client.flush()
    assert not failures
    assert all(ok for ok, _ in sent)

    rows = keyed_collector.query(
        f"SELECT event_id, event_type, event_name, properties, source, event_ts "
        f"FROM raw.events WHERE user_id = '{user}' ORDER BY event_ts"
    )
    by_id = {row["event_id"]: row for row in rows}
    expected = [
        "product_view",
        "add_to_cart",
        "purchase",
        "custom",
        "page_view",
        "page_view",
        "custom",
    ]
    for (_, message), event_type in zip(sent, expected, strict=True):
        row = by_id[message["messageId"]]
        assert row["event_type"] == event_type
        assert row["source"] == "segment"
    newsletter = by_id[sent[3][1]["messageId"]]
    assert newsletter["event_name"] == "Newsletter Signed Up"
    purchase = orjson.loads(by_id[sent[2][1]["messageId"]]["properties"])  # type: ignore[arg-type]
    assert purchase["revenue"] == "39.98"
    assert purchase["items"][0]["quantity"] == 2
    assert by_id[sent[6][1]["messageId"]]["event_name"] == "identify"


# -- The SDK as applications run it: a consumer thread batching messages, retrying failures ----


def batching_client(
    collector: CollectorProcess, failures: list[Exception], **options: Any
) -> Client:
    return Client(
        write_key=options.pop("write_key", "segment-test-key"),
        host=collector.url,
        on_error=lambda error, _batch: failures.append(error),
        upload_interval=0.5,
        **options,
    )


def staged_counts(collector: CollectorProcess, user: str) -> dict[str, int]:
    collector.stage_events()
    rows = collector.query(
        f"SELECT event_id, count(*) AS n FROM staging.stg_events WHERE user_id = '{user}' "
        "GROUP BY event_id"
    )
    return {str(row["event_id"]): int(row["n"]) for row in rows}  # type: ignore[call-overload]


def send_all(client: Client, user: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        properties = {"product_id": f"P{n:06d}", "price": 1}
        ok, message = client.track(user, "Product Viewed", properties)
        assert ok
        ids.append(message["messageId"])
    return ids


def test_batching_mode_sends_several_messages_per_request(
    keyed_collector: CollectorProcess,
) -> None:
    before = metrics.samples(keyed_collector.url)
    failures: list[Exception] = []
    client = batching_client(keyed_collector, failures, gzip=True, upload_size=10)
    user = f"U-{uuid.uuid4().hex[:8]}"
    ids = send_all(client, user, 35)
    client.shutdown()
    assert not failures
    assert staged_counts(keyed_collector, user) == dict.fromkeys(ids, 1)
    after = metrics.samples(keyed_collector.url)
    key = ("shopstream_collector_request_seconds_count", frozenset({("route", "/v1/batch")}))
    requests = after[key] - before.get(key, 0.0)
    # 35 messages, at most 10 a request: at least 4 requests, and far fewer than 35.
    assert 4 <= requests <= 10, requests


def test_the_sdk_retries_across_a_collector_restart(
    keyed_collector: CollectorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Exception] = []
    client = batching_client(keyed_collector, failures)
    user = f"U-{uuid.uuid4().hex[:8]}"
    keyed_collector.stop()  # the collector is down: connections are refused
    with caplog.at_level(logging.DEBUG, logger="segment"):
        ids = send_all(client, user, 12)
        deadline = time.monotonic() + 30
        while not any("retry" in r.getMessage().lower() for r in caplog.records):
            assert time.monotonic() < deadline, "the SDK never tried while the collector was down"
            time.sleep(0.05)
        keyed_collector.start()  # same port, same data
        client.shutdown()
    assert not failures
    assert staged_counts(keyed_collector, user) == dict.fromkeys(ids, 1)


def test_the_sdk_retries_a_busy_collector(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The smallest budget that holds two largest bodies, and a short read deadline: two slow
    # clients with a key fill the budget, the collector answers 503 + Retry-After until the
    # deadline frees it, and the SDK must wait and retry.
    collector = CollectorProcess(
        tmp_path,
        env={
            "SHOPSTREAM_WRITE_KEYS": "segment-test-key",
            "SHOPSTREAM_COLLECTOR__INTAKE_MEMORY_BYTES": "10000000",
            "SHOPSTREAM_COLLECTOR__REQUEST_READ_TIMEOUT_SECONDS": "3",
        },
    ).start()
    try:
        holders = [
            StalledClient(
                collector.port,
                send=1_000,
                length=4_999_000,
                stall=10,
                headers={"X-Write-Key": "segment-test-key"},
            )
            for _ in range(2)
        ]
        for holder in holders:
            holder.start()
        time.sleep(0.5)  # both admitted: the budget is full until their deadline
        failures: list[Exception] = []
        client = batching_client(collector, failures)
        user = f"U-{uuid.uuid4().hex[:8]}"
        with caplog.at_level(logging.DEBUG, logger="segment"):
            ids = send_all(client, user, 12)
            client.shutdown()
        for holder in holders:
            holder.join()
        assert [h.status for h in holders] == [408, 408]
        assert any("status 503" in r.getMessage() for r in caplog.records), caplog.text
        assert not failures
        assert staged_counts(collector, user) == dict.fromkeys(ids, 1)
        busy = metrics.samples(collector.url)[
            ("shopstream_collector_requests_rejected_total", frozenset({("reason", "busy")}))
        ]
        assert busy >= 1
    finally:
        collector.stop()


def test_a_permanent_refusal_reaches_on_error(keyed_collector: CollectorProcess) -> None:
    failures: list[Exception] = []
    batches: list[list[dict[str, Any]]] = []
    client = Client(
        write_key="not-the-key",
        host=keyed_collector.url,
        upload_interval=0.5,
        on_error=lambda error, batch: (failures.append(error), batches.append(batch)),
    )
    user = f"U-{uuid.uuid4().hex[:8]}"
    ids = send_all(client, user, 3)
    client.shutdown()
    assert [getattr(f, "status", None) for f in failures] == [401]
    assert "write key" in str(failures[0])
    assert [m["messageId"] for m in batches[0]] == ids
    assert staged_counts(keyed_collector, user) == {}
