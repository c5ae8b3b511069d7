"""Pure intake logic: body decoding, event splitting, validation reasons, Segment mapping."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from shopstream.collector.auth import key_from_headers, key_is_valid
from shopstream.collector.intake import (
    BodyError,
    RequestInfo,
    event_id_for,
    gunzip,
    parse_json,
    split_native,
    take_native,
)
from shopstream.collector.segment import to_native
from shopstream.config import CollectorSettings, Settings

NOW = datetime.now(UTC)
INFO = RequestInfo(ip="10.0.0.1", user_agent="test", route="/v1/events", received_at=NOW)


def test_gunzip_refuses_bombs_and_garbage() -> None:
    assert gunzip(gzip.compress(b"[1]"), 100) == b"[1]"
    with pytest.raises(BodyError) as too_big:
        gunzip(gzip.compress(b"x" * 1000), 100)
    assert too_big.value.status == 413
    with pytest.raises(BodyError) as broken:
        gunzip(b"not gzip", 100)
    assert broken.value.code == "bad_gzip"
    with pytest.raises(BodyError) as truncated:
        gunzip(gzip.compress(b"[1, 2, 3]")[:-8], 100)
    assert truncated.value.code == "bad_gzip"


@pytest.mark.parametrize(
    ("document", "count"),
    [({"event_type": "x"}, 1), ([{}, {}], 2), ({"events": [{}, {}, {}]}, 3)],
)
def test_split_native_shapes(document: object, count: int) -> None:
    assert len(split_native(document, 10)) == count


def test_split_native_refuses_scalars_and_names_the_limit() -> None:
    with pytest.raises(BodyError, match="expected a JSON object"):
        split_native(42, 10)
    with pytest.raises(BodyError, match="the limit is 2") as exc:
        split_native([{}, {}, {}], 2)
    assert exc.value.status == 413


def test_parse_json_reports_position() -> None:
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_json(b'{"a": ')
    with pytest.raises(BodyError, match="empty"):
        parse_json(b"  ")


def test_take_native_keeps_good_neighbours_and_explains_the_bad() -> None:
    items = [
        {"event_type": "page_view", "anonymous_id": "a", "event_ts": NOW.isoformat()},
        {
            "event_type": "purchase",
            "anonymous_id": "a",
            "event_ts": NOW.isoformat(),
            "properties": {"order_id": "O1", "revenue": "-5"},
        },
        {"anonymous_id": "a", "event_ts": NOW.isoformat()},
        {"event_type": "page_view", "anonymous_id": "a", "event_ts": "yesterday"},
    ]
    intake = take_native(items, INFO, CollectorSettings())
    assert len(intake.events) == 1
    reasons = {r.index: (r.code, r.reason) for r in intake.rejected}
    assert reasons[1][1].startswith("properties.revenue: Input should be greater than or equal")
    assert reasons[2] == ("missing_event_type", "event_type is missing")
    assert reasons[3][1].startswith("event_ts:")
    assert len(intake.dead_letters) == 3
    row = intake.events.to_arrow().to_pylist()[0]
    assert row["ip"] == "10.0.0.1" and row["event_date"] == NOW.date()
    assert row["received_at"] == NOW


def test_clock_limits_come_from_settings() -> None:
    now = datetime.now(UTC)  # not the module's NOW: the suite may have run for minutes
    settings = CollectorSettings(future_tolerance_seconds=60, max_event_age_days=1)
    ahead = {
        "event_type": "app_open",
        "user_id": "u",
        "event_ts": (now + timedelta(minutes=5)).isoformat(),
    }
    old = {
        "event_type": "app_open",
        "user_id": "u",
        "event_ts": (now - timedelta(days=2)).isoformat(),
    }
    info = RequestInfo(ip=None, user_agent=None, route="/v1/events", received_at=now)
    intake = take_native([ahead, old], info, settings)
    assert [r.code for r in intake.rejected] == ["future_timestamp", "old_timestamp"]
    assert "60 s ahead" in intake.rejected[0].reason


def test_missing_event_id_is_deterministic() -> None:
    item = {"event_type": "app_open", "user_id": "u", "event_ts": NOW.isoformat()}
    assert event_id_for(item) == event_id_for(dict(reversed(list(item.items()))))
    assert event_id_for(item) != event_id_for({**item, "user_id": "v"})


def test_naive_timestamps_are_utc() -> None:
    naive = NOW.replace(tzinfo=None).isoformat()
    intake = take_native(
        [{"event_type": "app_close", "user_id": "u", "event_ts": naive}], INFO, CollectorSettings()
    )
    assert intake.events.to_arrow().to_pylist()[0]["event_ts"] == NOW


def test_segment_track_mapping_and_clock_correction() -> None:
    sent_at = NOW - timedelta(seconds=100)  # device clock 100 s behind the server
    original = sent_at - timedelta(seconds=5)
    native = to_native(
        {
            "type": "track",
            "event": "product_added",
            "userId": 42,
            "messageId": "m-1",
            "originalTimestamp": original.isoformat(),
            "sentAt": sent_at.isoformat(),
            "properties": {"sku": "P9", "quantity": 3},
            "context": {"userAgent": "Mozilla/5.0 (iPhone) Mobile", "page": {"url": "https://s/"}},
        },
        received_at=NOW,
    )
    assert native["event_type"] == "add_to_cart"
    assert native["properties"]["product_id"] == "P9"
    assert native["user_id"] == "42"
    assert native["device_type"] == "web_mobile"
    assert native["page_url"] == "https://s/"
    assert datetime.fromisoformat(native["event_ts"]) == NOW - timedelta(seconds=5)


def test_segment_unknown_track_names_become_custom() -> None:
    native = to_native({"event": "Gift Wrapped", "anonymousId": "a"}, kind="track")
    assert (native["event_type"], native["event_name"]) == ("custom", "Gift Wrapped")


def test_write_keys_from_every_place_and_constant_time_match() -> None:
    basic = "Basic " + base64.b64encode(b"k1:").decode()
    assert key_from_headers({"authorization": basic}) == "k1"
    assert key_from_headers({"authorization": "Bearer k2"}) == "k2"
    assert key_from_headers({"x-write-key": "k3"}) == "k3"
    assert key_from_headers({"authorization": "Basic !!!"}) is None
    keys = [SecretStr("k1"), SecretStr("k2")]
    assert key_is_valid("k2", keys)
    assert not key_is_valid("k", keys)
    assert not key_is_valid(None, keys)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSTREAM_WRITE_KEYS", "wk-secret-1, wk-secret-2")
    monkeypatch.setenv("SHOPSTREAM_COLLECTOR__PORT", "9001")
    monkeypatch.setenv("SHOPSTREAM_CDC__TABLES", '["orders"]')
    settings = Settings()
    assert [k.get_secret_value() for k in settings.write_keys] == ["wk-secret-1", "wk-secret-2"]
    assert "wk-secret" not in repr(settings)  # secrets stay out of logs
    assert settings.collector.port == 9001
    assert settings.cdc.tables == ["orders"]


def test_settings_from_yaml(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "shop.yaml"
    config.write_text("data_dir: /srv/shop\ncollector:\n  max_events_per_request: 10\n")
    monkeypatch.setenv("SHOPSTREAM_CONFIG", str(config))
    settings = Settings()
    assert str(settings.warehouse_path) == "/srv/shop/shopstream.duckdb"
    assert settings.collector.max_events_per_request == 10
    monkeypatch.setenv("SHOPSTREAM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_unsupported_warehouse_url_says_what_works() -> None:
    with pytest.raises(ValueError, match="duckdb:///"):
        _ = Settings(warehouse_url="bigquery://project").warehouse_path


def test_segment_messages_without_id_keep_one_id_across_retries() -> None:
    from shopstream.collector.intake import Intake, accept_one

    message = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a",
        "timestamp": NOW.isoformat(),
        "properties": {"product_id": "P1"},
    }
    ids = []
    for _ in range(2):  # a retry arrives later: the mapped event has another receive time
        received = datetime.now(UTC)
        intake = Intake(
            RequestInfo(ip=None, user_agent=None, route="/v1/track", received_at=received)
        )
        native = to_native(message, received_at=received)
        accept_one(intake, 0, native, CollectorSettings(), source="segment", original=message)
        ids.append(intake.events.to_arrow().column("event_id")[0].as_py())
    assert ids[0] == ids[1]
