"""Pure intake logic: body decoding, event splitting, validation reasons, Segment mapping."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import SecretStr

from shopstream.collector.auth import key_from_headers, key_is_valid
from shopstream.collector.intake import (
    MAX_GZIP_MEMBERS,
    MAX_NESTING,
    BodyError,
    ClockWindow,
    Intake,
    RequestInfo,
    big_number_in,
    event_id_for,
    gunzip,
    parse_json,
    split_native,
    take_native,
    take_segment,
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
    assert settings.warehouse == "duckdb:////srv/shop/shopstream.duckdb"
    assert settings.collector.max_events_per_request == 10
    monkeypatch.setenv("SHOPSTREAM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_unsupported_warehouse_url_says_what_works() -> None:
    with pytest.raises(ValueError, match="duckdb:///"):
        Settings(warehouse_url="redshift://cluster/database")


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


# --- One bad event never fails its neighbours (issue 6) -----------------------------------


def _custom(event_id: str, **fields: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_type": "custom",
        "event_name": "edge",
        "event_ts": NOW.isoformat(),
        "anonymous_id": "a",
        **fields,
    }


def _deep(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def _letters(intake: Intake) -> dict[int, dict[str, object]]:
    return {orjson.loads(row["context"])["index"]: row for row in intake.dead_letters}


@pytest.mark.parametrize(
    "event_ts",
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T13:59:59+14:00",
        "9999-12-31T23:00:00-14:00",
        "9999-12-31T23:59:59.999999-00:01",
    ],
)
def test_timestamps_past_the_calendar_in_utc_are_one_events_rejection(event_ts: str) -> None:
    intake = take_native(
        [_custom("good"), _custom("edge", event_ts=event_ts)], INFO, CollectorSettings()
    )
    assert len(intake.events) == 1
    [rejection] = intake.rejected
    assert rejection.index == 1 and rejection.code == "invalid_event"
    assert rejection.reason.startswith("event_ts: ") and "out of range" in rejection.reason
    assert _letters(intake)[1]["reason"] == rejection.reason


def test_the_clock_window_saturates_instead_of_overflowing() -> None:
    settings = CollectorSettings(max_event_age_days=10**8, future_tolerance_seconds=10**12)
    window = ClockWindow.at(NOW, settings)
    assert window.earliest == datetime.min.replace(tzinfo=UTC)
    assert window.latest == datetime.max.replace(tzinfo=UTC)
    intake = take_native(
        [_custom("old", event_ts="0001-01-01T00:00:00Z"), _custom("now")], INFO, settings
    )
    assert len(intake.events) == 2 and not intake.rejected
    dates = intake.events.to_arrow().column("event_date").to_pylist()
    assert [d.year for d in dates] == [1, NOW.year]


@pytest.mark.parametrize(
    ("fields", "batch_sent_at", "named"),
    [
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, NOW.isoformat(), "timestamp"),
        (
            {"originalTimestamp": "0001-01-01T00:00:00Z"},
            "9999-12-31T23:59:59Z",
            "originalTimestamp",
        ),
        (
            {"originalTimestamp": "9999-12-31T23:00:00-14:00", "sentAt": "0001-01-01T00:00:00Z"},
            None,
            "originalTimestamp",
        ),
        (
            {"timestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-01T00:00:00+14:00"},
            None,
            "timestamp",
        ),
        ({"timestamp": "9999-12-31T23:00:00-14:00"}, None, "event_ts"),
    ],
)
def test_segment_clock_correction_past_the_calendar_rejects_only_that_message(
    fields: dict[str, str], batch_sent_at: str | None, named: str
) -> None:
    good = {"type": "page", "anonymousId": "a", "sentAt": NOW.isoformat()}
    good["timestamp"] = NOW.isoformat()
    bad = {"type": "track", "event": "Edge", "anonymousId": "a", **fields}
    info = RequestInfo(ip=None, user_agent=None, route="/v1/batch", received_at=NOW)
    intake = take_segment([good, bad], info, CollectorSettings(), sent_at=batch_sent_at)
    assert len(intake.events) == 1
    [rejection] = intake.rejected
    assert rejection.index == 1
    assert named in rejection.reason and "out of range" in rejection.reason
    if named != "event_ts":
        assert "sentAt" in rejection.reason
    assert orjson.loads(_letters(intake)[1]["payload"]) == bad  # type: ignore[arg-type]


@pytest.mark.parametrize("levels", [MAX_NESTING - 2, MAX_NESTING - 1, 300, 1000])
def test_events_nested_past_what_can_be_stored_are_rejected_and_kept(levels: int) -> None:
    # The event itself is one level, properties another: levels + 2 in all.
    text = "[" + orjson.dumps(_custom("good")).decode() + ","
    text += '{"event_type": "custom", "event_name": "deep", "anonymous_id": "a", '
    text += f'"event_ts": "{NOW.isoformat()}", "properties": {{"t": {_deep(levels)}}}}}]'
    intake = take_native(parse_json(text.encode()), INFO, CollectorSettings())
    if levels + 2 <= MAX_NESTING:
        assert len(intake.events) == 2 and not intake.rejected
        return
    assert len(intake.events) == 1
    [rejection] = intake.rejected
    assert "nested" in rejection.reason and str(MAX_NESTING) in rejection.reason
    assert _deep(levels) in str(_letters(intake)[1]["payload"])


def test_deep_non_events_are_rejected_with_their_text_kept() -> None:
    text = _deep(1000, '"x"').encode()  # an array holding one 999-level array
    intake = take_native(split_native(parse_json(text), 10), INFO, CollectorSettings())
    [rejection] = intake.rejected
    assert rejection.reason == "an event must be a JSON object"
    assert intake.dead_letters[0]["payload"] == _deep(999, '"x"')
    deep_type = orjson.loads(b'{"event_type": ' + _deep(900).encode() + b', "user_id": "u"}')
    intake = take_native([deep_type], INFO, CollectorSettings())
    assert intake.rejected[0].code == "unknown_event_type"
    assert len(intake.rejected[0].reason) < 300  # not 900 levels of brackets
    assert _deep(900) in str(intake.dead_letters[0]["payload"])


def test_any_failure_while_taking_one_event_is_that_events_rejection() -> None:
    class Unwritable:
        """No JSON writer knows it."""

    # Python values no JSON body can hold: the per-event path must still not raise.
    items = [
        _custom("good"),
        _custom("odd", properties={"thing": Unwritable()}),
        _custom("cyclic", properties={"self": []}),
        {"event_type": Unwritable(), "user_id": "u"},
    ]
    items[2]["properties"]["self"].append(items[2]["properties"])  # type: ignore[index]
    intake = take_native(items, INFO, CollectorSettings())
    assert len(intake.events) == 1
    assert [r.index for r in intake.rejected] == [1, 2, 3]
    assert all(r.reason for r in intake.rejected)
    assert len(intake.dead_letters) == 3
    assert all(isinstance(row["payload"], str) for row in intake.dead_letters)
    segment = take_segment(
        [
            {"type": "track", "event": Unwritable(), "anonymousId": "a"},
            {"type": "page", "userId": "u"},
        ],
        RequestInfo(ip=None, user_agent=None, route="/v1/batch", received_at=NOW),
        CollectorSettings(),
    )
    assert len(segment.events) == 1 and [r.index for r in segment.rejected] == [0]


@pytest.mark.parametrize(
    ("raw", "path", "literal"),
    [
        ('"properties": {"n": 18446744073709551616}', "properties.n", "18446744073709551616"),
        (
            '"properties": {"n": [1, -9223372036854775809]}',
            "properties.n[1]",
            "-9223372036854775809",
        ),
        ('"properties": {"n": 1e400}', "properties.n", "1e400"),
        ('"properties": {"n": -1' + "0" * 500 + "}", "properties.n", "-1" + "0" * 500),
        ('"properties": {"n": 1' + "0" * 5000 + "}", "properties.n", "1" + "0" * 5000),
        ('"user_id": 123456789012345678901234567890', "user_id", "123456789012345678901234567890"),
    ],
)
def test_numbers_beyond_64_bits_are_rejected_naming_the_field(
    raw: str, path: str, literal: str
) -> None:
    good = orjson.dumps(_custom("good", properties={"ok": 18446744073709551615})).decode()
    bad = orjson.dumps(_custom("bad")).decode()[:-1] + ", " + raw + "}"
    intake = take_native(parse_json(f"[{good}, {bad}]".encode()), INFO, CollectorSettings())
    assert len(intake.events) == 1
    [rejection] = intake.rejected
    assert rejection.code == "number_out_of_range"
    assert rejection.reason.startswith(f"{path}: ") and literal[:40] in rejection.reason
    assert len(rejection.reason) < 300
    payload = str(intake.dead_letters[0]["payload"])
    assert literal in payload  # kept exactly as sent
    row = intake.events.to_arrow().to_pylist()[0]
    assert '"ok":18446744073709551615' in row["properties"]
    assert '"ok":18446744073709551615' in row["payload"]


def test_numbers_are_read_exactly_at_every_depth_the_parser_takes() -> None:
    deep_event = '{"event_type": "custom", "properties": {"t": ' + _deep(1000) + "}}"
    text = f'[{deep_event}, {{"n": 18446744073709551616}}]'.encode()
    document = parse_json(text)
    assert big_number_in(document[1]) == ("n", "18446744073709551616")
    assert big_number_in(document[0]) is None


def test_long_digit_runs_inside_strings_change_nothing() -> None:
    digits = "12345678901234567890123"
    item = _custom("s", properties={"order_no": digits, "pi": 3.25, "n": [1, 2]})
    intake = take_native(parse_json(orjson.dumps([item])), INFO, CollectorSettings())
    row = intake.events.to_arrow().to_pylist()[0]
    assert orjson.loads(row["payload"]) == item
    assert orjson.loads(row["properties"]) == item["properties"]


def test_segment_numeric_ids_beyond_64_bits_are_not_rounded() -> None:
    text = b'{"batch": [{"type": "track", "event": "E", "userId": 18446744073709551616}]}'
    document = parse_json(text)
    intake = take_segment(
        document["batch"],
        RequestInfo(ip=None, user_agent=None, route="/v1/batch", received_at=NOW),
        CollectorSettings(),
    )
    assert not len(intake.events)
    assert intake.rejected[0].reason.startswith("userId: ")
    assert "18446744073709551616" in str(intake.dead_letters[0]["payload"])


def test_bodies_only_the_exact_parser_reads_are_still_checked() -> None:
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_json(b'[{"n": 1e400}, {"s": "\\ud800"}]')  # a lone surrogate cannot be stored
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_json(b'[{"n": 1e400}, NaN]')
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_json(b'[{"n": 1e400}, {"s": "\xff"}]')


def test_gunzip_reads_every_member_within_one_limit() -> None:
    members = gzip.compress(b'[{"a": 1},') + gzip.compress(b'{"b": 2}]')
    assert gunzip(members, 100) == b'[{"a": 1},{"b": 2}]'
    assert gunzip(gzip.compress(b"[1]") + b"\x00" * 8, 100) == b"[1]"  # zero padding, as gzip(1)
    assert gunzip(gzip.compress(b"[") + gzip.compress(b"") + gzip.compress(b"]"), 100) == b"[]"
    with pytest.raises(BodyError, match="after gzip member 2") as trailing:
        gunzip(gzip.compress(b"[") + gzip.compress(b"]") + b"junk", 100)
    assert trailing.value.status == 400 and trailing.value.code == "bad_gzip"
    with pytest.raises(BodyError) as too_big:
        gunzip(gzip.compress(b"x" * 60) + gzip.compress(b"x" * 60), 100)
    assert too_big.value.status == 413
    with pytest.raises(BodyError, match="truncated"):
        gunzip(gzip.compress(b"[1]") + gzip.compress(b"[2]")[:-4], 100)
    many = gzip.compress(b"") * MAX_GZIP_MEMBERS
    assert gunzip(many, 100) == b""
    with pytest.raises(BodyError, match=f"more than {MAX_GZIP_MEMBERS} members"):
        gunzip(many + gzip.compress(b""), 100)
