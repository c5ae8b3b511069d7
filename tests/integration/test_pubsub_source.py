"""The loader's Pub/Sub source against Google's Pub/Sub emulator, fed by the Pub/Sub sink.

Each test uses a topic prefix of its own, so that the module can share one emulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from shopstream.config import Settings
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.messages import Topics, decode
from shopstream.events.raw import RAW_CDC
from shopstream.loader import Received, Source, open_source
from shopstream.loader.base import SourceError
from shopstream.sinks import open_sink
from tests.support.pubsub_emulator import PubSubEmulator, pull, subscribe
from tests.support.rows import events_table as raw_events

PROJECT = "shop-source"
URL = f"pubsub://{PROJECT}"


@pytest.fixture
def settings(pubsub_host: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        sink_url=URL,
        transport={"topic_prefix": f"t{uuid.uuid4().hex[:8]}"},  # type: ignore[arg-type]
        pubsub={  # type: ignore[arg-type]
            "publish_timeout_seconds": 2.0,
            "ack_deadline_seconds": 10,
            "discover_seconds": 0.3,
        },
    )


def publish(settings: Settings, rows: dict[str, object]) -> None:
    """Through the real sink (which creates the topics and the loader's subscriptions)."""
    sink = open_sink(settings, None)  # type: ignore[arg-type]  # a broker sink: no warehouse
    sink.start()
    try:
        sink.submit(rows).result(30)  # type: ignore[arg-type]
    finally:
        sink.close()


@pytest.fixture
def sources(settings: Settings) -> Iterator[list[Source]]:
    """Sources opened by a test (as separate loaders would be), closed at the end."""
    opened: list[Source] = []
    yield opened
    for source in opened:
        source.close()


def loader(settings: Settings, sources: list[Source]) -> Source:
    source = open_source(URL, settings)
    sources.append(source)
    return source


def poll_for(source: Source, count: int, timeout: float = 15.0) -> list[Received]:
    """What ``source`` delivers until ``count`` messages came (or ``timeout`` passed)."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += source.poll(count - len(got), 0.5)
    return got


def events_table(*event_ids: str) -> pa.Table:
    """Valid events (the loader's decode checks them as the collector would)."""
    return raw_events(*event_ids, anonymous_id="anon-1")


def ids(received: list[Received]) -> list[str]:
    return sorted(str(message.headers["event_id"]) for message in received)


def test_what_was_not_committed_comes_again_and_what_was_does_not(
    settings: Settings, sources: list[Source]
) -> None:
    event_ids = [f"e-{n}" for n in range(6)]
    publish(settings, {"events": events_table(*event_ids)})

    first = loader(settings, sources)
    got = poll_for(first, 6)
    assert ids(got) == event_ids
    assert {m.position["delivery_attempt"] for m in got} == {1}
    assert all(m.position["message_id"] and m.position["publish_time"] for m in got)
    table, row = decode(
        got[0].topic, got[0].key, got[0].value, got[0].headers, first_topics(settings)
    )  # type: ignore[misc]
    assert table == "events" and row["event_id"] == got[0].headers["event_id"]
    committed, uncommitted = got[:3], got[3:]
    first.commit(committed)
    first.close()  # a loader stopping: what it did not commit is handed back at once
    sources.remove(first)

    second = loader(settings, sources)
    again = poll_for(second, 3)
    assert ids(again) == ids(uncommitted)
    assert {m.position["delivery_attempt"] for m in again} == {2}
    second.commit(again)
    assert second.poll(10, 1.5) == []  # the committed three never come again


def first_topics(settings: Settings) -> Topics:
    return Topics(settings.transport.topic_prefix)


def test_a_held_message_stays_leased_and_an_abandoned_one_comes_back(
    settings: Settings, sources: list[Source]
) -> None:
    """The ack deadline is 10 s: a loader still loading keeps its message past it (the lease
    is extended); one that died without a word loses its message to another loader."""
    publish(settings, {"events": events_table("kept", "lost")})
    working, dying = loader(settings, sources), loader(settings, sources)
    [kept] = poll_for(working, 1)
    [lost] = poll_for(dying, 1)
    assert {kept.headers["event_id"], lost.headers["event_id"]} == {"kept", "lost"}
    dying._closing.set()  # type: ignore[attr-defined]  # dies: no more extensions, no hand-back
    dying._held.clear()  # type: ignore[attr-defined]

    other = loader(settings, sources)
    back = poll_for(other, 2, timeout=16)  # past the 10 s deadline
    assert [m.headers["event_id"] for m in back] == [lost.headers["event_id"]]
    assert back[0].position["delivery_attempt"] == 2
    working.commit([kept])
    other.commit(back)


def test_the_dead_letter_policy_moves_a_message_that_keeps_failing(
    settings: Settings, sources: list[Source]
) -> None:
    publish(settings, {"events": events_table("doomed")})
    attempts = []
    for _ in range(settings.pubsub.max_delivery_attempts):
        source = loader(settings, sources)
        [message] = poll_for(source, 1)
        attempts.append(message.position["delivery_attempt"])
        source.close()  # the loader fails on it: never committed
        sources.remove(source)
    assert attempts == [1, 2, 3, 4, 5]

    source = loader(settings, sources)
    [moved] = poll_for(source, 1)
    topics = first_topics(settings)
    assert moved.topic == topics.dead_letter
    decoded = decode(moved.topic, moved.key, moved.value, moved.headers, topics)
    assert decoded is not None
    table, row = decoded
    assert table == "dead_letter"
    assert row["source"] == "pubsub"
    assert "dead-letter policy" in row["reason"] and "after 5 deliveries" in row["reason"]
    assert orjson.loads(row["payload"])["event_id"] == "doomed"
    assert orjson.loads(row["context"])["moved_from"] == f"{topics.events}.shopstream-loader"
    # Delivered again (the loader stopped before committing it): the same dead letter, by
    # id, so that staging removes the repeat.
    source.close()
    sources.remove(source)
    source = loader(settings, sources)
    [again] = poll_for(source, 1)
    decoded_again = decode(again.topic, again.key, again.value, again.headers, topics)
    assert decoded_again is not None
    assert again.position["message_id"] == moved.position["message_id"]
    assert decoded_again[1]["dead_letter_id"] == row["dead_letter_id"]
    moved = again
    source.commit([moved])
    assert source.poll(10, 1.0) == []  # gone from the events subscription too


def test_a_table_captured_later_is_read_from_its_first_change(
    settings: Settings, sources: list[Source]
) -> None:
    source = loader(settings, sources)
    assert source.poll(10, 0.3) == []
    topics = first_topics(settings)
    assert set(source.subscriptions()) == set(topics.fixed())  # type: ignore[attr-defined]
    # The sink creates the new table's topic with the loader's subscription before its
    # first message: the loader finds it later and still reads that first message.
    when = datetime.now(UTC)
    change = {
        "change_id": "0/0A-01",
        "op": "c",
        "lsn": 10,
        "tx_id": 1,
        "commit_ts": when,
        "commit_date": when.date(),
        "key": '{"id":1}',
        "before": None,
        "after": '{"id":1}',
        "source": '{"schema":"public","table":"refunds","lsn":10}',
        "ingested_at": when,
    }
    publish(settings, {"cdc_refunds": pa.Table.from_pylist([change], RAW_CDC)})
    [message] = poll_for(source, 1)
    assert message.topic == topics.changes("public", "refunds")
    assert message.key == b'{"id":1}'
    decoded = decode(message.topic, message.key, message.value, message.headers, topics)
    assert decoded is not None and decoded[0] == "cdc_refunds"
    assert decoded[1]["change_id"] == "0/0A-01"
    source.commit([message])


def test_dead_letters_are_published_and_waited_for(
    settings: Settings, sources: list[Source], pubsub_emulator: PubSubEmulator
) -> None:
    topics = first_topics(settings)
    source = loader(settings, sources)
    source.poll(1, 0.1)  # creates the topics
    check = subscribe(PROJECT, topics.dead_letter, f"{topics.prefix}-check")
    letter = dead_letter_row("loader", "not JSON", b"{oops", {"topic": topics.events})
    source.dead_letter([letter])
    [message] = pull(check, 1)
    assert message.attributes["reason"] == "not JSON"
    assert orjson.loads(message.data)["dead_letter_id"] == letter["dead_letter_id"]

    pubsub_emulator.pause()
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match="dead letters"):
            source.dead_letter([dead_letter_row("loader", "again", b"x")])
        assert time.monotonic() - started < 10
    finally:
        pubsub_emulator.resume()


def test_a_change_with_a_primary_key_over_pubsubs_ordering_key_limit_loads(
    settings: Settings, sources: list[Source]
) -> None:
    """Pub/Sub's ordering key holds 1,024 bytes; a longer primary key still arrives whole,
    and the change loads with it (not dead-lettered as a key that is not JSON)."""
    source = loader(settings, sources)
    when = datetime.now(UTC)
    key = orjson.dumps({"sku": "ж" * 700, "id": 1}).decode()  # 1,400+ bytes, not ASCII
    change = {
        "change_id": "0/0B-01",
        "op": "c",
        "lsn": 11,
        "tx_id": 2,
        "commit_ts": when,
        "commit_date": when.date(),
        "key": key,
        "before": None,
        "after": key,
        "source": '{"schema":"public","table":"skus","lsn":11}',
        "ingested_at": when,
    }
    publish(settings, {"cdc_skus": pa.Table.from_pylist([change], RAW_CDC)})
    [message] = poll_for(source, 1)
    topics = first_topics(settings)
    decoded = decode(message.topic, message.key, message.value, message.headers, topics)
    assert decoded is not None and decoded[0] == "cdc_skus"
    assert decoded[1]["key"] == key
    source.commit([message])
