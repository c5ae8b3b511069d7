"""Segment's own Python SDK (segment-analytics-python, from PyPI) sends to shopstream unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from segment.analytics.client import Client

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
