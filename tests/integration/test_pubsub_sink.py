"""The Pub/Sub sink against Google's Pub/Sub emulator: through a real collector over HTTP
(``SHOPSTREAM_SINK_URL=pubsub://<project>``) and, for the CDC reader's side, directly."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pytest
from google.cloud import pubsub_v1

from shopstream.config import Settings
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_CDC
from shopstream.sinks import open_sink
from shopstream.sinks.base import Outcome, SinkError, SinkUnavailable
from tests.support.collector import CollectorProcess
from tests.support.pubsub_emulator import PubSubEmulator, pull, subscribe

PROJECT = "shop-sink"
PREFIX = "shopstream"
#: Short, so that a publish to a stopped emulator fails within a test's patience.
PUBLISH_TIMEOUT_S = 2.0


def event(session: str, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "event_ts": datetime.now(UTC).isoformat(),
        "anonymous_id": f"anon-{session}",
        "session_id": session,
        "device_type": "web_desktop",
    }
    body.update(fields)
    return body


@pytest.fixture(scope="module")
def collector(
    pubsub_emulator: PubSubEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    process = CollectorProcess(
        tmp_path_factory.mktemp("pubsub-collector"),
        env={
            "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
            "SHOPSTREAM_SINK_URL": f"pubsub://{PROJECT}",
            "SHOPSTREAM_PUBSUB__PUBLISH_TIMEOUT_SECONDS": str(PUBLISH_TIMEOUT_S),
            "SHOPSTREAM_PUBSUB__ORDER_EVENTS": "true",  # sessions in order (off by default)
        },
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def post(collector: CollectorProcess, body: object) -> httpx.Response:
    return httpx.post(f"{collector.url}/v1/events", json=body, timeout=30)


def test_every_accepted_event_is_on_the_events_topic_with_its_key_and_attributes(
    collector: CollectorProcess, pubsub_host: str
) -> None:
    events_sub = subscribe(PROJECT, f"{PREFIX}.events", "check-events")
    letters_sub = subscribe(PROJECT, f"{PREFIX}.dead_letter", "check-letters")
    sent: list[dict[str, object]] = []
    for request in range(6):
        batch = [event(f"s-{request % 2}", event_name=f"n{request}-{i}") for i in range(5)]
        response = post(collector, [*batch, event("s-0", event_type="teleport")])
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 5
        sent += batch

    messages = pull(events_sub, len(sent))
    by_id = {m.attributes["event_id"]: m for m in messages}
    assert len(messages) == len(sent)
    assert set(by_id) == {e["event_id"] for e in sent}
    for sent_event in sent:
        message = by_id[str(sent_event["event_id"])]
        assert message.ordering_key == sent_event["session_id"]
        assert message.attributes["event_type"] == "page_view"
        assert message.attributes["shopstream.table"] == "events"
        body = orjson.loads(message.data)
        assert body["event_name"] == sent_event["event_name"]
        assert body["session_id"] == sent_event["session_id"]
    # A session's events arrive in the order they were accepted (ordering keys).
    for session in ("s-0", "s-1"):
        got = [orjson.loads(m.data)["event_name"] for m in messages if m.ordering_key == session]
        assert got == [e["event_name"] for e in sent if e["session_id"] == session]

    # The refused event went to the dead-letter topic, with its reason as an attribute.
    letters = pull(letters_sub, 6)
    assert len(letters) == 6
    assert all("teleport" in m.attributes["reason"] for m in letters)
    assert {m.attributes["shopstream.table"] for m in letters} == {"dead_letter"}


def test_a_publish_the_emulator_did_not_take_is_a_503_never_a_2xx_and_it_recovers(
    collector: CollectorProcess, pubsub_emulator: PubSubEmulator, pubsub_host: str
) -> None:
    pubsub_emulator.stop()
    try:
        for _ in range(2):
            response = post(collector, [event("s-down")])
            assert response.status_code == 503, response.text
            assert "Pub/Sub" in response.json()["message"]
    finally:
        pubsub_emulator.start()
    # The restarted emulator forgot every topic: the sink creates its topics again; the
    # test subscribes first so that it sees what is published from now on.
    events_sub = subscribe(PROJECT, f"{PREFIX}.events", "check-after-restart")
    accepted: list[str] = []
    deadline = time.monotonic() + 30
    while len(accepted) < 5 and time.monotonic() < deadline:
        body = event("s-back")
        response = post(collector, [body])
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            accepted.append(str(body["event_id"]))
        else:
            time.sleep(0.3)
    assert len(accepted) == 5, f"the collector did not recover:\n{collector.log()[-3000:]}"
    ids = {m.attributes["event_id"] for m in pull(events_sub, len(accepted))}
    assert set(accepted) <= ids


def test_a_frozen_emulator_fails_the_request_within_the_publish_timeout(
    collector: CollectorProcess, pubsub_emulator: PubSubEmulator, pubsub_host: str
) -> None:
    """A broker that stops answering (no error, no acknowledgement) is no acknowledgement."""
    pubsub_emulator.pause()
    try:
        started = time.monotonic()
        response = post(collector, [event("s-frozen")])
        took = time.monotonic() - started
    finally:
        pubsub_emulator.resume()
    assert response.status_code == 503, response.text
    assert took < PUBLISH_TIMEOUT_S + 5


# -- the sink alone: what the CDC reader hands it --------------------------------------------


def change(change_id: str, op: str, order_id: int, total: str) -> dict[str, object]:
    when = datetime.now(UTC)
    after = None if op == "d" else orjson.dumps({"id": order_id, "total": total}).decode()
    return {
        "change_id": change_id,
        "op": op,
        "lsn": 1000 + int(change_id[-2:]),
        "tx_id": 7,
        "commit_ts": when,
        "commit_date": when.date(),
        "key": orjson.dumps({"id": order_id}).decode(),
        "before": orjson.dumps({"id": order_id}).decode() if op != "c" else None,
        "after": after,
        "source": orjson.dumps({"schema": "sales", "table": "orders", "lsn": 1}).decode(),
        "ingested_at": when,
    }


@pytest.fixture
def settings(pubsub_host: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        sink_url=f"pubsub://{PROJECT}",
        pubsub={"publish_timeout_seconds": PUBLISH_TIMEOUT_S},  # type: ignore[arg-type]
    )


def test_changes_go_to_a_topic_created_for_their_table_keyed_by_primary_key(
    settings: Settings,
) -> None:
    sink = open_sink(settings, None)  # type: ignore[arg-type]  # no warehouse needed
    sink.start()
    try:
        topic = f"{PREFIX}.sales.orders"  # a table captured later: no topic yet
        first = [change("0/00", "c", 9, "1.00")]
        # The CDC reader submits from its own thread: the sink may create the topic there.
        assert sink.submit({"cdc_orders": pa.Table.from_pylist(first, RAW_CDC)}).result(30)
        publisher = pubsub_v1.PublisherClient()
        assert publisher.get_topic(topic=publisher.topic_path(PROJECT, topic))
        subscription = subscribe(PROJECT, topic, "check-orders")
        rows = [change("0/01", "c", 1, "9.90"), change("0/02", "u", 1, "12.00")]
        rows += [change("0/03", "c", 2, "1.00"), change("0/04", "d", 1, "0")]
        assert sink.submit({"cdc_orders": pa.Table.from_pylist(rows, RAW_CDC)}).result(30)
        messages = pull(subscription, 4)
    finally:
        sink.close()
    # Ordered per primary key (the ordering key), as Debezium's partitioning by key orders.
    by_key: dict[str, list[str]] = {}
    for message in messages:
        by_key.setdefault(message.ordering_key, []).append(message.attributes["change_id"])
    assert by_key == {'{"id":1}': ["0/01", "0/02", "0/04"], '{"id":2}': ["0/03"]}
    [delete] = [m for m in messages if m.attributes["change_id"] == "0/04"]
    assert orjson.loads(delete.data)["op"] == "d"  # and no tombstone: 4 messages in all
    assert all(m.data for m in messages)


def test_events_carry_no_ordering_key_unless_asked_changes_always_do(settings: Settings) -> None:
    """Per-key batching in Google's publisher makes every session its own publish call, so
    events are published unordered by default (pubsub.order_events); changes keep theirs."""
    from shopstream.events.raw import RAW_EVENTS

    when = datetime.now(UTC)
    row = {name: None for name in RAW_EVENTS.names}
    row.update(event_id="e-unordered", event_type="page_view", event_ts=when, received_at=when)
    row.update(event_date=when.date(), anonymous_id="a", session_id="s-9", source="native")
    row.update(properties="{}", payload="{}")
    events_sub = subscribe(PROJECT, f"{PREFIX}.events", "check-unordered")
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    try:
        changes_sub = subscribe(PROJECT, f"{PREFIX}.sales.orders", "check-ordered")
        rows = {"events": [row], "cdc_orders": [change("0/09", "c", 7, "1.00")]}
        assert sink.submit(rows).result(30)  # type: ignore[arg-type]
        [event_message] = [
            m for m in pull(events_sub, 1) if m.attributes["event_id"] == "e-unordered"
        ]
        [change_message] = pull(changes_sub, 1)
    finally:
        sink.close()
    assert event_message.ordering_key == ""
    assert change_message.ordering_key == '{"id":7}'


def test_past_flow_control_submit_says_unavailable_instead_of_blocking(
    settings: Settings, pubsub_emulator: PubSubEmulator
) -> None:
    settings.pubsub.flow_max_messages = 3
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    pubsub_emulator.pause()  # nothing is acknowledged while it is frozen
    first: Future[Outcome] | None = None
    try:
        first = sink.submit({"dead_letter": [letter(i) for i in range(3)]})
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match="flow_max"):
            sink.submit({"dead_letter": [letter(9)]})
        assert time.monotonic() - started < 0.5
        assert sink.pending_rows() == 3
    finally:
        pubsub_emulator.resume()
    assert first.result(30)  # the emulator answered in time after all
    assert sink.pending_rows() == 0
    assert sink.submit({"dead_letter": [letter(10)]}).result(30)
    sink.close()


def test_a_submission_not_acknowledged_in_time_fails_whole(
    settings: Settings, pubsub_emulator: PubSubEmulator
) -> None:
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    pubsub_emulator.pause()
    try:
        future = sink.submit({"dead_letter": [letter(i) for i in range(4)]})
        failed = threading.Event()
        future.add_done_callback(lambda _: failed.set())
        assert failed.wait(PUBLISH_TIMEOUT_S + 10)
    finally:
        pubsub_emulator.resume()
    with pytest.raises(SinkError, match="publish_timeout_seconds"):
        future.result()
    assert not sink.ready()  # /readyz turns traffic away for a moment
    # The same ordering keys publish again at once (the client resumed them).
    assert sink.submit({"dead_letter": [letter(i) for i in range(4)]}).result(30)
    assert sink.ready()
    sink.close()


def letter(number: int) -> dict[str, object]:

    row = dead_letter_row("collector", f"test reason {number}", b"{}", {"n": number})
    row["dead_letter_id"] = f"letter-{number}"  # the ordering key: the same on a resend
    return row


def test_a_rejected_publish_fails_the_submission_and_its_ordering_key_goes_on(
    settings: Settings,
) -> None:
    """A publish Pub/Sub refuses (here: no such topic, and pubsub.create off) is not retried;
    the client pauses its ordering key, and the sink resumes it for the resend."""
    settings.pubsub.create = False
    settings.transport.topic_prefix = "no-topics-yet"
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    try:
        with pytest.raises(SinkError, match=r"no-topics-yet\.dead_letter.*set pubsub.create"):
            sink.submit({"dead_letter": [letter(1), letter(2)]}).result(30)
        subscription = subscribe(PROJECT, "no-topics-yet.dead_letter", "check-resumed")
        assert sink.submit({"dead_letter": [letter(1), letter(2)]}).result(30)
        assert sorted(m.ordering_key for m in pull(subscription, 2)) == ["letter-1", "letter-2"]
    finally:
        sink.close()


def test_a_sink_started_while_pubsub_is_down_creates_its_topics_once_it_is_back(
    settings: Settings, pubsub_emulator: PubSubEmulator
) -> None:
    settings.transport.topic_prefix = "late-start"
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    pubsub_emulator.stop()
    try:
        sink.start()  # does not fail: the collector starts and answers 503 meanwhile
        with pytest.raises(SinkUnavailable, match="create Pub/Sub topics"):
            sink.submit({"dead_letter": [letter(1)]})
    finally:
        pubsub_emulator.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                future = sink.submit({"dead_letter": [letter(1)]})
                break
            except SinkUnavailable:
                assert time.monotonic() < deadline, "the topics were never created"
                time.sleep(0.2)
        assert future.result(30)
    finally:
        sink.close()


def test_a_message_too_large_for_pubsub_is_dead_lettered_and_its_neighbours_land(
    settings: Settings,
) -> None:
    """Pub/Sub takes at most 10 MB a request: a bigger row could never be published, and
    failing its submission would have it sent again for ever (and its neighbours each time).
    It goes to the dead letters instead, its payload cut, its size in the reason."""
    import base64
    import os

    from tests.support.rows import events_table

    settings.transport.topic_prefix = f"too-large-{uuid.uuid4().hex[:8]}"
    prefix = settings.transport.topic_prefix
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    try:
        events = subscribe(PROJECT, f"{prefix}.events", f"{prefix}-events")
        letters = subscribe(PROJECT, f"{prefix}.dead_letter", f"{prefix}-letters")
        huge = base64.b64encode(os.urandom(8_000_000)).decode()  # ~10.7 MB
        rows = events_table("small", "too-big", "after", session_id="s")
        rows = rows.set_column(
            rows.schema.get_field_index("payload"),
            "payload",
            [["{}", orjson.dumps(huge).decode(), "{}"]],
        )
        outcome = sink.submit({"events": rows}).result(30)
        assert [(d.table, d.position) for d in outcome.dead_lettered] == [("events", 1)]
        reason = outcome.dead_lettered[0].reason
        assert "too large" in reason and "cut to" in reason, reason
        assert sink.ready()
        assert sink.pending_rows() == 0
    finally:
        sink.close()
    landed = pull(events, 2)
    assert sorted(m.attributes["event_id"] for m in landed) == ["after", "small"]
    (letter,) = pull(letters, 1)
    body = orjson.loads(letter.data)
    assert body["source"] == "collector"
    assert body["reason"] == reason
    assert 0 < len(body["payload"].encode()) <= 65_536
    context = (
        body["context"] if isinstance(body["context"], dict) else orjson.loads(body["context"])
    )
    assert context["bytes"] > 10_000_000


def test_the_sink_metrics_count_what_pubsub_acknowledged_and_what_it_refused(
    settings: Settings,
) -> None:
    """The transport dashboard and the error-rate runbook read these in production, where the
    Pub/Sub sink is the collector's and the CDC reader's sink."""
    from shopstream.observability.metrics import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    written = sample("shopstream_sink_rows_written_total", table="dead_letter")
    failures = sample("shopstream_sink_failures_total")
    sink = open_sink(settings, None)  # type: ignore[arg-type]
    sink.start()
    try:
        assert sink.submit({"dead_letter": [letter(1), letter(2), letter(3)]}).result(30)
    finally:
        sink.close()
    assert sample("shopstream_sink_rows_written_total", table="dead_letter") == written + 3
    assert sample("shopstream_sink_failures_total") == failures

    settings.pubsub.create = False
    settings.transport.topic_prefix = "never-made"
    refusing = open_sink(settings, None)  # type: ignore[arg-type]
    refusing.start()
    try:
        with pytest.raises(SinkError):
            refusing.submit({"dead_letter": [letter(4)]}).result(30)
    finally:
        refusing.close()
    assert sample("shopstream_sink_failures_total") == failures + 1
    assert sample("shopstream_sink_rows_written_total", table="dead_letter") == written + 3
