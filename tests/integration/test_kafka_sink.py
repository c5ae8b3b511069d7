"""The Kafka sink against a real Kafka-protocol broker (noida-db), the real collector over HTTP
and the real CDC reader on a throwaway PostgreSQL.

The guarantees under test: a submission's future (so the collector's 2xx, the reader's
confirmed LSN) comes only after the broker acknowledged every record; a broker that is
stopped or killed costs 503s and re-reads, never an acknowledged-but-missing record; a
producer that fails fatally after a broker restart is replaced and what it had not delivered
is sent again. CDC topics carry Debezium's envelope: compared with Debezium itself.
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from shopstream.config import KafkaSettings, Settings, TransportSettings
from shopstream.events.messages import Topics, decode
from shopstream.sinks import SinkError, SinkUnavailable, sink_backend
from shopstream.sinks.base import Outcome
from shopstream.sinks.kafka import KafkaSink
from tests.support.cdc import (
    ReaderThread,
    cdc_process,
    execute_sql,
    first_commit_after,
    probe_slot,
    sample_slot,
    slot_state,
    wait_for,
    wait_streaming,
)
from tests.support.collector import CollectorProcess
from tests.support.debezium import (
    capture_with_debezium,
    debezium_available,
    prepare_debezium_slot,
)
from tests.support.envelope_compare import diff_envelopes
from tests.support.kafka_broker import Consumed, KafkaBroker, KafkaBrokerFactory, consume_all
from tests.support.rows import events_table, tracked_event


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _settings(broker: KafkaBroker, prefix: str, **kafka: Any) -> Settings:
    return Settings(
        sink_url=broker.url,
        transport=TransportSettings(topic_prefix=prefix),
        kafka=KafkaSettings(**kafka),
    )


def _open_sink(settings: Settings) -> KafkaSink:
    """The sink as the platform opens it: through the registry, from the URL."""
    sink = sink_backend(settings.sink_url).open(settings.sink_url, settings, None)  # type: ignore[arg-type]
    assert isinstance(sink, KafkaSink)
    sink.start()
    return sink


def _event(event_type: str = "page_view", **fields: object) -> dict[str, object]:
    """A tracker's event in session s-1 (a field given as None is left out)."""
    defaults = {"event_type": event_type, "session_id": "s-1", "device_type": "web_desktop"}
    event = tracked_event(**{**defaults, **fields})  # type: ignore[arg-type]
    return {name: value for name, value in event.items() if value is not None}


def _event_ids(records: list[Consumed]) -> list[str]:
    return [record.headers["event_id"] for record in records if record.value is not None]


# -- the collector: 2xx means on the topic ----------------------------------------------------


def _collector_on(
    broker: KafkaBroker, data_dir: Path, **kafka: str
) -> tuple[CollectorProcess, Topics]:
    """A started collector process whose sink is ``broker`` (``kafka``: kafka.* settings),
    with topics of its own."""
    topics = Topics(_prefix())
    env = {"SHOPSTREAM_SINK_URL": broker.url, "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": topics.prefix}
    env |= {f"SHOPSTREAM_KAFKA__{name.upper()}": value for name, value in kafka.items()}
    return CollectorProcess(data_dir, env=env).start(), topics


@pytest.fixture(scope="module")
def collector_on_kafka(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CollectorProcess, Topics]]:
    process, topics = _collector_on(kafka_broker, tmp_path_factory.mktemp("collector-kafka"))
    yield process, topics
    assert process.stop() == 0, process.log()


def test_accepted_events_are_on_the_events_topic_and_rejected_ones_in_dead_letters(
    kafka_broker: KafkaBroker, collector_on_kafka: tuple[CollectorProcess, Topics]
) -> None:
    collector, topics = collector_on_kafka
    good = [
        _event(session_id="s-a"),
        _event("add_to_cart", session_id="s-b", properties={"product_id": "P9", "quantity": 2}),
        _event("search", session_id=None, anonymous_id="anon-9", properties={"query": "socks"}),
    ]
    teleport = _event("teleport")
    batch = [*good, teleport, _event("purchase", properties={"revenue": "10"})]
    response = httpx.post(f"{collector.url}/v1/events", json=batch, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3
    malformed = uuid.uuid4().hex
    response = httpx.post(
        f"{collector.url}/v1/events",
        content=f'{{"event_type": "page_view", "x": "{malformed}"',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400

    events = consume_all(kafka_broker.bootstrap, topics.events)
    assert sorted(_event_ids(events)) == sorted(str(e["event_id"]) for e in good)
    by_id = {record.headers["event_id"]: record for record in events}
    # Keyed by session (anonymous id without one): a session's events stay in order.
    assert by_id[str(good[0]["event_id"])].key == b"s-a"
    assert by_id[str(good[1]["event_id"])].key == b"s-b"
    assert by_id[str(good[2]["event_id"])].key == b"anon-9"
    cart = by_id[str(good[1]["event_id"])]
    assert cart.headers["event_type"] == "add_to_cart"
    assert cart.headers["shopstream.table"] == "events"
    decoded = decode(cart.topic, cart.key, cart.value, cart.headers, topics)  # the loader's view
    assert decoded is not None
    table, row = decoded
    assert table == "events"
    assert orjson.loads(row["properties"]) == {"product_id": "P9", "quantity": 2}

    letters = consume_all(kafka_broker.bootstrap, topics.dead_letter)
    reasons = [record.headers["reason"] for record in letters]
    assert len(letters) == 3, reasons
    assert any("unknown event_type 'teleport'" in reason for reason in reasons)
    assert any("properties.order_id" in reason for reason in reasons)
    invalid_json = [r for r in letters if r.value is not None and malformed.encode() in r.value]
    assert len(invalid_json) == 1
    assert "not valid JSON" in invalid_json[0].headers["reason"]
    for record in letters:
        decoded = decode(record.topic, record.key, record.value, record.headers, topics)
        assert decoded is not None
        assert decoded[0] == "dead_letter"
        assert decoded[1]["source"] == "collector"
    assert teleport["event_id"] not in _event_ids(events)


def _status(collector: CollectorProcess, path: str) -> int:
    return httpx.get(f"{collector.url}{path}", timeout=10).status_code


@dataclass
class _Traffic:
    """Events posted one small batch at a time by a few clients, with what each answer was."""

    url: str
    answers: list[tuple[float, float, int, list[str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = 3) -> _Traffic:
        for n in range(clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                batch = [_event(session_id=f"c{n}-{i % 3}") for i in range(5)]
                sent = time.monotonic()
                try:
                    status = client.post(f"{self.url}/v1/events", json=batch).status_code
                except httpx.HTTPError:
                    status = 0
                answered = time.monotonic()
                self.answers.append((sent, answered, status, [str(e["event_id"]) for e in batch]))
                if status != 200:
                    time.sleep(0.05)  # as a tracker backs off on Retry-After

    def ok_after(self, moment: float) -> int:
        return sum(
            1 for sent, _, status, _ in list(self.answers) if status == 200 and sent > moment
        )

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_the_collector_answers_503_while_the_broker_is_down_and_never_2xx_for_lost_events(
    kafka_broker_factory: KafkaBrokerFactory, tmp_path: Path
) -> None:
    broker = kafka_broker_factory()
    # Records wait in the producer long enough to be caught by the stop, and time out while
    # the broker is away: an answer given before the broker's acknowledgement would be a 2xx
    # for events that never arrive.
    collector, topics = _collector_on(
        broker, tmp_path / "collector", linger_ms="300", delivery_timeout_ms="2000"
    )
    traffic = _Traffic(collector.url).start()
    try:
        wait_for(lambda: traffic.ok_after(0) >= 5, "2xx before the stop", timeout=30)
        broker.stop()  # SIGTERM: the broker keeps everything it acknowledged
        stopped = time.monotonic()
        wait_for(lambda: _status(collector, "/readyz") == 503, "not ready", timeout=10)
        assert _status(collector, "/healthz") == 200  # it recovers by itself: no restart
        time.sleep(max(0.0, stopped + 3.0 - time.monotonic()))  # beyond the delivery timeout
        restarting = time.monotonic()
        broker.start()
        wait_for(lambda: traffic.ok_after(restarting) >= 5, "2xx after the restart", timeout=30)
        assert _status(collector, "/readyz") == 200
    finally:
        traffic.finish()
        code = collector.stop()
    assert code == 0, collector.log()

    answers = traffic.answers
    during = [a for a in answers if a[0] > stopped and a[1] < restarting]
    assert during, "no request was answered while the broker was down"
    lies = [a for a in during if a[2] == 200]
    assert not lies, f"{len(lies)} requests answered 2xx while the broker was down"
    assert {status for _, _, status, _ in during} == {503}
    assert all(status in (200, 503) for _, _, status, _ in answers), {a[2] for a in answers}
    answered_ok = {event_id for *_, status, ids in answers if status == 200 for event_id in ids}
    on_topic = set(_event_ids(consume_all(broker.bootstrap, topics.events)))
    missing = answered_ok - on_topic
    assert not missing, f"{len(missing)} of {len(answered_ok)} events answered 2xx are missing"


def test_a_killed_broker_loses_no_event_answered_2xx_and_the_sink_recovers(
    kafka_broker_factory: KafkaBrokerFactory, tmp_path: Path
) -> None:
    broker = kafka_broker_factory()
    collector, topics = _collector_on(broker, tmp_path / "collector", partitions="1")
    traffic = _Traffic(collector.url).start()
    try:
        wait_for(lambda: traffic.ok_after(0) >= 20, "2xx before the kill", timeout=30)
        broker.kill()  # kill -9 mid-stream: the broker loses its unsaved tail
        killed = time.monotonic()
        time.sleep(0.5)
        restarted = time.monotonic()
        broker.start()
        wait_for(lambda: traffic.ok_after(restarted) >= 20, "2xx after the restart", timeout=60)
    finally:
        traffic.finish()
        code = collector.stop()
    assert code == 0, collector.log()
    # When the broker had not saved the acknowledged tail, the producer's sequence numbers
    # no longer match its log: fatal, so it is replaced (the sink-level test checks the
    # resend). When it had, nothing fails and the producer goes on. Either way, the checks
    # below must hold: that is what the clients were promised.
    assert all(status in (200, 503) for _, _, status, _ in traffic.answers)
    on_topic = set(_event_ids(consume_all(broker.bootstrap, topics.events)))
    after = {
        i for s, _, status, ids in traffic.answers if status == 200 and s > restarted for i in ids
    }
    assert after, "nothing was accepted after the restart"
    assert not after - on_topic, "events answered 2xx after the restart are missing"
    # noida-db saves its log every few hundred ms, so a kill -9 loses what it acknowledged
    # just before (a single broker without replicas; Kafka would have a replica). What it had
    # acknowledged well before the kill is there.
    settled = {
        i
        for _, answered, status, ids in traffic.answers
        if status == 200 and answered < killed - 2
        for i in ids
    }
    assert not settled - on_topic, "events acknowledged 2 s before the kill are missing"


# -- the sink's own promises -----------------------------------------------------------------


def test_a_submission_resolves_only_after_the_broker_acknowledged_it(
    kafka_broker_factory: KafkaBrokerFactory,
) -> None:
    broker = kafka_broker_factory()
    # The records wait 1.5 s in the producer: long enough to stop the broker under them.
    sink = _open_sink(
        _settings(broker, _prefix(), linger_ms=1500, delivery_timeout_ms=2500, partitions=1)
    )
    topics = sink.topics
    try:
        assert sink.ready()
        future = sink.submit({"events": events_table("before-stop-1", "before-stop-2")})
        broker.stop()
        time.sleep(1.0)
        assert not future.done(), "resolved while the broker was down: nothing acknowledged it"
        with pytest.raises(SinkError, match="timed out"):
            future.result(timeout=10)
        wait_for(lambda: not sink.ready(), "the sink not ready while the broker is down", 10)
        with pytest.raises(SinkUnavailable):
            sink.submit({"events": events_table("while-down")})

        broker.start()
        wait_for(sink.ready, "the sink ready again", timeout=15)
        after = sink.submit({"events": events_table("after-restart")})
        assert after.result(timeout=10) == Outcome()
        assert sink.pending_rows() == 0
    finally:
        sink.close()
    ids = _event_ids(consume_all(broker.bootstrap, topics.events))
    assert ids == ["after-restart"]  # the timed-out ones never reached the broker


def test_a_fatal_producer_is_replaced_and_what_it_had_not_delivered_is_sent_again(
    kafka_broker_factory: KafkaBrokerFactory,
) -> None:
    broker = kafka_broker_factory()
    sink = _open_sink(_settings(broker, _prefix(), linger_ms=300, partitions=1))
    topics = sink.topics
    try:
        first = sink.submit({"events": events_table("a1", "a2", "a3", session_id="s")})
        assert first.result(timeout=10) == Outcome()
        # Queued, not yet sent; then the broker dies and forgets the tail of its log, so the
        # next batch's sequence numbers are ahead of what it knows: fatal for the producer.
        second = sink.submit({"events": events_table("b1", "b2", session_id="s")})
        broker.kill()
        broker.start()
        assert second.result(timeout=30) == Outcome()
        # Whether the fatal error comes depends on whether the broker had saved a1..a3
        # before the kill (it saves every few hundred ms): if it had, the sequence numbers
        # still match and the producer goes on. Either way the promises below hold; when
        # it did fail, its one replacement sent b1, b2 again (they were not acknowledged).
        assert sink.producers_replaced in (0, 1)
        if sink.producers_replaced:
            assert sink.records_resent >= 2, sink.records_resent
        else:
            assert sink.records_resent == 0
        third = sink.submit({"events": events_table("c1", session_id="s")})
        assert third.result(timeout=10) == Outcome()
    finally:
        sink.close()
    ids = _event_ids(consume_all(broker.bootstrap, topics.events))
    assert {"b1", "b2", "c1"} <= set(ids)
    assert ids.index("b1") < ids.index("b2") < ids.index("c1")  # a session stays in order


@pytest.mark.parametrize(
    ("client_config", "refused_by"),
    [
        # The producer lets 20 MB through; the broker takes ~1 MB: its refusal comes back in
        # the delivery report, after the neighbouring records were acknowledged.
        ({"message.max.bytes": "20000000"}, "Broker: Message size too large"),
        # librdkafka's own limit (~1 MB by default): produce() refuses the record at once.
        ({}, "Message size too large"),
    ],
    ids=["by-the-broker", "by-the-producer"],
)
def test_a_record_too_large_for_kafka_is_dead_lettered_and_its_neighbours_land(
    kafka_broker: KafkaBroker, client_config: dict[str, str], refused_by: str
) -> None:
    # Failing the whole submission would never end: the collector's client or PostgreSQL
    # sends the same record again, for ever, and the neighbours each time.
    sink = _open_sink(_settings(kafka_broker, _prefix(), client_config=client_config))
    topics = sink.topics
    try:
        huge = base64.b64encode(os.urandom(2_000_000)).decode()  # compression cannot shrink it
        rows = {"events": events_table("small", "too-big", "after", session_id="s")}
        rows["events"] = rows["events"].set_column(
            rows["events"].schema.get_field_index("payload"),
            "payload",
            [["{}", orjson.dumps(huge).decode(), "{}"]],
        )
        outcome = sink.submit(rows).result(timeout=20)
        assert [(d.table, d.position) for d in outcome.dead_lettered] == [("events", 1)]
        reason = outcome.dead_lettered[0].reason
        assert refused_by in reason, reason
        assert "bytes" in reason and "cut to" in reason, reason
        assert sink.pending_rows() == 0
        assert sink.ready()
        # The sink goes on: the next submission lands whole.
        assert sink.submit({"events": events_table("next")}).result(timeout=10) == Outcome()
    finally:
        sink.close()
    ids = _event_ids(consume_all(kafka_broker.bootstrap, topics.events))
    assert sorted(ids) == ["after", "next", "small"]
    assert ids.index("small") < ids.index("after")  # one key: in order
    letters = consume_all(kafka_broker.bootstrap, topics.dead_letter)
    assert len(letters) == 1
    decoded = decode(letters[0].topic, letters[0].key, letters[0].value, letters[0].headers, topics)
    assert decoded is not None
    table, letter = decoded
    assert table == "dead_letter"
    assert letter["source"] == "collector"  # where the event came from
    assert letter["reason"] == reason
    assert 0 < len(letter["payload"].encode()) <= 65_536
    assert '"event_id":"too-big"' in letter["payload"]  # its beginning, to find it by
    assert orjson.loads(letter["context"])["bytes"] > 2_000_000
    with pytest.raises(SinkUnavailable, match="not running"):
        sink.submit({"events": events_table("after-close")})


def test_a_submit_never_waits_for_topic_creation(
    kafka_broker_factory: KafkaBrokerFactory,
) -> None:
    # submit() runs on the collector's event loop: creating a topic there would stall every
    # request for the admin timeout. The broker is down at start (no topics created), comes
    # back, then hangs (SIGSTOP: connected but silent, as a slow broker is).
    broker = kafka_broker_factory(start=False)
    sink = _open_sink(_settings(broker, _prefix(), partitions=1))
    try:
        broker.start()
        wait_for(sink.ready, "the sink ready once the broker is up", timeout=20)
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            refusal = ""
            try:
                future: Future[Outcome] | None = sink.submit({"events": events_table("e1")})
            except SinkUnavailable as exc:
                future, refusal = None, str(exc)
            took = time.monotonic() - started
            assert took < 0.5, f"submit took {took:.1f} s: it waited for the broker"
            assert future is not None or "being created" in refusal, refusal
        finally:
            broker.process.send_signal(signal.SIGCONT)

        def accepted() -> bool:
            try:
                return sink.submit({"events": events_table("e2")}).result(10) == Outcome()
            except SinkUnavailable:
                time.sleep(0.1)
                return False

        wait_for(accepted, "a submission taken once the topics exist", timeout=30)
        if future is not None:
            assert future.result(timeout=10) == Outcome()
    finally:
        sink.close()
    ids = _event_ids(consume_all(broker.bootstrap, sink.topics.events))
    assert "e2" in ids


def test_a_full_sink_refuses_more_until_the_broker_caught_up(kafka_broker: KafkaBroker) -> None:
    settings = _settings(kafka_broker, _prefix(), linger_ms=500)
    settings.sink.max_queue_rows = 3
    sink = _open_sink(settings)
    try:
        first = sink.submit({"events": events_table("q1", "q2")})
        assert sink.pending_rows() == 2
        with pytest.raises(SinkUnavailable, match="behind"):
            sink.submit({"events": events_table("q3", "q4")})
        assert first.result(timeout=10) == Outcome()
        assert sink.pending_rows() == 0
        assert sink.submit({"events": events_table("q3", "q4")}).result(timeout=10) == Outcome()
        assert sink.commits == 2
    finally:
        sink.close()
    on_topic = _event_ids(consume_all(kafka_broker.bootstrap, sink.topics.events))
    assert sorted(on_topic) == ["q1", "q2", "q3", "q4"]


# -- CDC → Kafka: Debezium's topics, key and envelope; the LSN waits for the broker -----------

# `customer` is nullable on purpose: for a delete under REPLICA IDENTITY DEFAULT, Debezium 3.6
# fills a NOT NULL column the server did not send with its type's default ('' for text) where
# our envelope writes null, and the oracle does not tolerate that difference (yet).
SCHEMA = """
CREATE TABLE orders (
    order_id bigint PRIMARY KEY,
    customer text,
    total numeric(12, 2),
    placed_at timestamptz,
    details jsonb
);
CREATE TABLE order_lines (
    order_id bigint,
    line_no int,
    sku text,
    qty int,
    PRIMARY KEY (order_id, line_no)
);
"""
CHANGE_SET = [
    [
        "INSERT INTO orders VALUES (1, 'ann', 19.90, '2026-12-01 09:30:00+01', "
        """'{"gift": true}')""",
        "INSERT INTO orders VALUES (2, 'bob', 5.00, '2026-12-01 10:00:00+00', NULL)",
        "INSERT INTO order_lines VALUES (1, 1, 'SKU-1', 2), (1, 2, 'SKU-2', 1)",
    ],
    ["UPDATE orders SET total = 21.50 WHERE order_id = 1"],
    ["UPDATE orders SET order_id = 20 WHERE order_id = 2"],  # d (old key), c (new key)
    ["DELETE FROM order_lines WHERE order_id = 1 AND line_no = 2"],
    ["TRUNCATE order_lines"],
]
EXPECTED_OPS = ["c", "c", "c", "c", "u", "d", "c", "d", "t"]
DBZ_SLOT = "debezium_kafka"


def _changes_on(bootstrap: str, topics: Topics, table: str) -> list[Consumed]:
    return consume_all(bootstrap, topics.changes("public", table))


def _envelopes(records: list[Consumed]) -> list[dict[str, Any]]:
    """What a Debezium consumer sees, in commit order (change_id: commit LSN, position)."""
    changes = sorted(
        (r for r in records if r.value is not None), key=lambda r: r.headers["change_id"]
    )
    return [orjson.loads(record.value or b"") for record in changes]


def test_cdc_topics_carry_debeziums_key_and_envelope(
    kafka_broker: KafkaBroker, postgres: Any, tmp_path: Path
) -> None:
    reason = debezium_available()
    if reason is not None:
        pytest.skip(f"Debezium (the oracle) cannot run here: {reason}")
    execute_sql(postgres.dsn, SCHEMA)
    sink = _open_sink(_settings(kafka_broker, _prefix()))
    topics = sink.topics
    reader = ReaderThread(
        postgres.dsn, tmp_path, sink=sink, snapshot_mode="never", batch_max_ms=50
    ).start()
    try:
        # Both slots exist before the change set: both tools see exactly the same changes.
        prepare_debezium_slot(
            postgres.dsn, ["orders", "order_lines"], slot_name=DBZ_SLOT, publication_name=DBZ_SLOT
        )
        for transaction in CHANGE_SET:
            execute_sql(postgres.dsn, "BEGIN", *transaction, "COMMIT")
        reader.wait_until(
            lambda: len(_changes_on(kafka_broker.bootstrap, topics, "orders")) >= 6,
            "the changes on Kafka",
            timeout=30,
        )
        reader.wait_until(lambda: reader.reader.stats.confirmed_lsn is not None, "a confirmed LSN")
    finally:
        reader.stop()  # closes the sink
    orders = _changes_on(kafka_broker.bootstrap, topics, "orders")
    lines = _changes_on(kafka_broker.bootstrap, topics, "order_lines")
    ours = _envelopes(orders + lines)
    theirs = capture_with_debezium(
        postgres.dsn,
        ["orders", "order_lines"],
        expected=len(EXPECTED_OPS),
        timeout=120,
        work_dir=tmp_path / "debezium",
        slot_name=DBZ_SLOT,
        publication_name=DBZ_SLOT,
    )
    assert sorted(e["op"] for e in theirs) == sorted(EXPECTED_OPS)
    problems = diff_envelopes(ours, theirs)
    assert not problems, "the Kafka messages differ from Debezium's:\n" + "\n".join(problems)

    # Debezium's key: the primary key as a JSON object (schemas disabled), on every change of
    # a row, and a tombstone with that key after each delete.
    for record in orders + lines:
        if record.value is None:
            continue
        change = orjson.loads(record.value)
        row = change["after"] or change["before"]
        if change["op"] == "t":
            assert record.key is None
            continue
        key_columns = ["order_id"] if record.topic.endswith(".orders") else ["order_id", "line_no"]
        assert orjson.loads(record.key or b"") == {name: row[name] for name in key_columns}
        assert decode(record.topic, record.key, record.value, record.headers, topics) is not None
    for records in (orders, lines):
        for position, record in enumerate(records):
            if record.value is not None and orjson.loads(record.value)["op"] == "d":
                tombstone = records[position + 1]  # one partition per key: right behind it
                assert (tombstone.key, tombstone.value) == (record.key, None)
    assert sum(1 for r in orders + lines if r.value is None) == 2


def test_the_slot_is_not_confirmed_past_changes_the_broker_did_not_acknowledge(
    kafka_broker_factory: KafkaBrokerFactory, postgres: Any, tmp_path: Path
) -> None:
    broker = kafka_broker_factory()
    topics = Topics(_prefix())
    execute_sql(postgres.dsn, SCHEMA)
    reader = cdc_process(
        postgres.dsn,
        tmp_path,
        SHOPSTREAM_SINK_URL=broker.url,
        SHOPSTREAM_TRANSPORT__TOPIC_PREFIX=topics.prefix,
        SHOPSTREAM_CDC__SNAPSHOT_MODE="never",
        SHOPSTREAM_CDC__HEARTBEAT_SECONDS="1",
        SHOPSTREAM_KAFKA__LINGER_MS="1000",
        SHOPSTREAM_KAFKA__DELIVERY_TIMEOUT_MS="2000",
    )
    try:
        wait_streaming(postgres.dsn, reader)
        execute_sql(postgres.dsn, "INSERT INTO orders VALUES (1, 'ann', 1.00, now(), NULL)")
        wait_for(lambda: len(_changes_on(broker.bootstrap, topics, "orders")) == 1, "first change")
        with probe_slot(postgres.dsn) as probe:
            before = slot_state(postgres.dsn)[0]
            execute_sql(
                postgres.dsn,
                "INSERT INTO orders SELECT g, 'c' || g, g, now(), NULL "
                "FROM generate_series(2, 50) g",
            )
            execute_sql(postgres.dsn, "UPDATE orders SET total = total + 1 WHERE order_id < 10")
            # The reader has handed the changes to the producer, which holds them (linger):
            # the broker goes away under them, and later batches find it gone.
            time.sleep(0.3)
            broker.stop()
            bound = first_commit_after(postgres.dsn, probe, before)
            assert bound is not None
            samples = sample_slot(postgres.dsn, 4.0)  # the reader retries meanwhile
            confirmed = max(lsn for lsn, _ in samples)
            assert confirmed < bound, (
                f"the slot was confirmed to {confirmed:X}, past a commit ({bound:X}) the "
                "broker never acknowledged: a crash now would lose it"
            )
            broker.start()
            wait_for(lambda: slot_state(postgres.dsn)[0] >= bound, "the slot confirmed", timeout=60)
        changes = _envelopes(_changes_on(broker.bootstrap, topics, "orders"))
        inserted = {c["after"]["order_id"] for c in changes if c["op"] == "c"}
        updated = {c["after"]["order_id"] for c in changes if c["op"] == "u"}
        assert inserted == set(range(1, 51))
        assert updated == set(range(1, 10))
    finally:
        reader.terminate()
        reader.wait(60)
    assert reader.returncode == 0, (tmp_path / "cdc.log").read_text()[-3000:]


def test_a_change_too_large_for_kafka_goes_to_the_dead_letters_and_the_slot_moves_on(
    kafka_broker: KafkaBroker, postgres: Any, tmp_path: Path
) -> None:
    # One row with a large text column (default message.max.bytes ~1 MB): before, the
    # submission failed, the reader reconnected and PostgreSQL sent the change again, for
    # ever; the slot never moved (WAL grew) and the neighbours landed again each round.
    execute_sql(postgres.dsn, "CREATE TABLE notes (note_id int PRIMARY KEY, body text)")
    sink = _open_sink(_settings(kafka_broker, _prefix(), partitions=1))
    topics = sink.topics
    reader = ReaderThread(
        postgres.dsn, tmp_path, sink=sink, snapshot_mode="never", batch_max_ms=50
    ).start()
    huge = base64.b64encode(os.urandom(1_500_000)).decode()  # TOAST cannot shrink it
    try:
        execute_sql(
            postgres.dsn,
            "BEGIN",
            "INSERT INTO notes VALUES (1, 'small')",
            f"INSERT INTO notes VALUES (2, '{huge}')",
            "INSERT INTO notes VALUES (3, 'small too')",
            "COMMIT",
        )
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        assert row is not None
        after_commit = int(row[0])
        reader.wait_until(
            lambda: slot_state(postgres.dsn)[0] >= after_commit, "the slot confirmed past it"
        )
    finally:
        reader.stop()  # closes the sink
    changes = _envelopes(_changes_on(kafka_broker.bootstrap, topics, "notes"))
    assert [c["after"]["note_id"] for c in changes] == [1, 3]  # each once, no resends
    letters = consume_all(kafka_broker.bootstrap, topics.dead_letter)
    assert len(letters) == 1
    decoded = decode(letters[0].topic, letters[0].key, letters[0].value, letters[0].headers, topics)
    assert decoded is not None
    letter = decoded[1]
    assert letter["source"] == "cdc"
    assert "Message size too large" in letter["reason"]
    assert "bytes" in letter["reason"]
    context = orjson.loads(letter["context"])
    assert context["table"] == "cdc_notes" or context["table"].endswith("notes"), context
    assert context["bytes"] > 1_500_000
