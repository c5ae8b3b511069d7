"""Reason codes are one typed set whose values are the wire format: the ``code``/``error`` of
JSON answers, the ``reason`` label of Prometheus counters and ``code`` in raw.dead_letter."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from shopstream.collector.intake import (
    BodyError,
    ClockWindow,
    RequestInfo,
    accept_one,
    gunzip,
    parse_json,
    split_native,
    take_native,
    take_segment,
)
from shopstream.config import CollectorSettings
from shopstream.events.codes import ReasonCode

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
INFO = RequestInfo(ip=None, user_agent=None, route="/v1/events", received_at=NOW)

#: The published values. Clients, dashboards and dead-letter queries match these strings: a
#: member may be added, never renamed.
WIRE = {
    "INVALID_JSON": "invalid_json",
    "INVALID_BODY": "invalid_body",
    "BAD_GZIP": "bad_gzip",
    "BODY_TOO_LARGE": "body_too_large",
    "TOO_MANY_EVENTS": "too_many_events",
    "UNSUPPORTED_MEDIA_TYPE": "unsupported_media_type",
    "UNSUPPORTED_ENCODING": "unsupported_encoding",
    "UNAUTHORIZED": "unauthorized",
    "ORIGIN_NOT_ALLOWED": "origin_not_allowed",
    "BUSY": "busy",
    "REQUEST_TIMEOUT": "request_timeout",
    "HEADERS_TOO_LARGE": "headers_too_large",
    "CLIENT_DISCONNECTED": "client_disconnected",
    "SINK_UNAVAILABLE": "sink_unavailable",
    "SINK_ERROR": "sink_error",
    "INTERNAL_ERROR": "internal_error",
    "ALL_REJECTED": "all_rejected",
    "INVALID_EVENT": "invalid_event",
    "UNKNOWN_EVENT_TYPE": "unknown_event_type",
    "MISSING_EVENT_TYPE": "missing_event_type",
    "MISSING_FIELD": "missing_field",
    "FUTURE_TIMESTAMP": "future_timestamp",
    "OLD_TIMESTAMP": "old_timestamp",
    "NUMBER_OUT_OF_RANGE": "number_out_of_range",
    "TOO_DEEP": "too_deep",
    "UNREADABLE_EVENT": "unreadable_event",
    "LOAD_ERROR": "load_error",
    "UNDECODABLE": "undecodable",
}


def test_the_codes_are_the_published_strings() -> None:
    assert {code.name: code.value for code in ReasonCode} == WIRE


@pytest.mark.parametrize("code", list(ReasonCode))
def test_a_code_is_written_as_its_string_everywhere(code: ReasonCode) -> None:
    assert code == code.value and str(code) == f"{code}" == code.value
    assert orjson.dumps({"code": code}) == orjson.dumps({"code": code.value})
    registry = CollectorRegistry()
    counter = Counter("refused", "by reason", ["reason"], registry=registry)
    counter.labels(code).inc()
    assert f'refused_total{{reason="{code.value}"}} 1.0' in generate_latest(registry).decode()


def _event(name: str, **fields: object) -> dict[str, object]:
    return {"event_type": "custom", "event_name": name, "user_id": "u", **fields}


def test_every_rejection_and_refusal_carries_a_typed_code() -> None:
    settings = CollectorSettings(future_tolerance_seconds=60, max_event_age_days=1)
    items = [
        _event("ok", event_ts=NOW.isoformat()),
        _event("ahead", event_ts=(NOW + timedelta(hours=1)).isoformat()),
        _event("old", event_ts=(NOW - timedelta(days=2)).isoformat()),
        {"event_type": "nope", "event_ts": NOW.isoformat()},
        {"event_ts": NOW.isoformat()},
        [],
    ]
    intake = take_native(items, INFO, settings)
    codes = [r.code for r in intake.rejected]
    assert codes == [
        ReasonCode.FUTURE_TIMESTAMP,
        ReasonCode.OLD_TIMESTAMP,
        ReasonCode.UNKNOWN_EVENT_TYPE,
        ReasonCode.MISSING_EVENT_TYPE,
        ReasonCode.INVALID_EVENT,
    ]
    assert all(type(code) is ReasonCode for code in codes)
    contexts = [orjson.loads(d["context"])["code"] for d in intake.dead_letters]
    assert contexts == [code.value for code in codes]
    segment = take_segment([{"type": "nonsense"}], INFO, settings)
    assert type(segment.rejected[0].code) is ReasonCode

    refusals = [
        lambda: parse_json(b"{"),
        lambda: split_native(3, 10),
        lambda: split_native([{}, {}], 1),
        lambda: gunzip(b"not gzip", 100),
        lambda: gunzip(gzip.compress(b"x" * 100), 10),
    ]
    for refuse in refusals:
        with pytest.raises(BodyError) as refused:
            refuse()
        assert type(refused.value.code) is ReasonCode


def test_the_clock_window_names_the_side_an_event_is_off() -> None:
    """The code comes from the comparison, not from the wording of the message."""
    settings = CollectorSettings(future_tolerance_seconds=60, max_event_age_days=1)
    window = ClockWindow.at(NOW, settings)
    assert window.earliest == NOW - timedelta(days=1)
    assert window.latest == NOW + timedelta(seconds=60)
    assert window.check(NOW) is None
    assert window.check(window.latest) is None and window.check(window.earliest) is None
    ahead = window.check(NOW + timedelta(seconds=61))
    assert ahead is not None and ahead[0] is ReasonCode.FUTURE_TIMESTAMP
    assert "60 s ahead of the server clock" in ahead[1]
    old = window.check(NOW - timedelta(days=1, seconds=1))
    assert old is not None and old[0] is ReasonCode.OLD_TIMESTAMP
    assert "older than 1 days (collector.max_event_age_days)" in old[1]


def test_the_clock_window_is_taken_once_per_request() -> None:
    """Every event of a request is judged against the same window (its receive time)."""
    settings = CollectorSettings(future_tolerance_seconds=60, max_event_age_days=1)
    intake = take_native([_event("a", event_ts=NOW.isoformat())], INFO, settings)
    window = intake.window
    assert window == ClockWindow.at(NOW, settings)
    accept_one(intake, 1, _event("b", event_ts=NOW.isoformat()), settings, source="native")
    assert intake.window is window
