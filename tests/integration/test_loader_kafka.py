"""The loader against a real Kafka-protocol broker (noida-db): `shopstream load --from kafka://`.

Offsets are committed only once the rows are durable; a loader killed with -9 and restarted
loses nothing and repeats only what staging removes (same event_id / change_id, same row);
poison reaches raw.dead_letter and the dead-letter topic with its reason while its
neighbours load; loaders of one group share the partitions.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import orjson

from shopstream.events.messages import TABLE, Message, Topics, encode
from tests.support.collector import free_port
from tests.support.kafka_broker import KafkaBroker, consume_all
from tests.support.loader import (
    LoaderProcess,
    committed,
    create_topics,
    end_offsets,
    loader_process,
    produce,
    wait_until,
)
from tests.support.metrics import value
from tests.support.rows import event_row

#: Columns of raw.cdc_* that are the same however often a change is loaded.
CHANGE_COLUMNS = "change_id, op, lsn, tx_id, commit_ts, commit_date, key, before, after, source"


#: A loader restarted after kill -9 comes back as the same static member of its group and
#: takes its partitions back at once; as a new member it waits for the dead one to leave
#: the group (noida-db did not let it go within 110 s, whatever session.timeout.ms said).
RESTARTABLE = {"SHOPSTREAM_LOADER__INSTANCE_ID": "loader-1"}


def fresh(name: str) -> Topics:
    """A topic prefix of its own per test (the broker is shared by the module)."""
    return Topics(f"{name}-{uuid.uuid4().hex[:6]}")


def events(topics: Topics, n: int, start: int = 0) -> list[Message]:
    rows = [
        event_row(f"e-{i:06d}", anonymous_id=f"a-{i % 13}", session_id=f"s-{i % 13}")
        for i in range(start, start + n)
    ]
    return encode("events", rows, topics)


def changes(topics: Topics, n: int, start: int = 0, table: str = "orders") -> list[Message]:
    """Inserts into public.<table>, as the CDC reader writes them (a transaction per 10)."""
    now = datetime.now(UTC)
    rows = []
    for i in range(start, start + n):
        lsn, tx = 0x1000000 + (i // 10) * 0x100, 1000 + i // 10
        rows.append(
            {
                "change_id": f"{lsn:016X}-{i % 10 + 1:08d}",
                "op": "c",
                "lsn": lsn,
                "tx_id": tx,
                "commit_ts": now,
                "commit_date": now.date(),
                "key": orjson.dumps({"id": i}).decode(),
                "before": None,
                "after": orjson.dumps({"id": i, "total": f"{i}.90"}).decode(),
                "source": orjson.dumps(
                    {"schema": "public", "table": table, "lsn": lsn, "txId": tx}
                ).decode(),
                "ingested_at": now,
            }
        )
    return encode(f"cdc_{table}", rows, topics)


def loader_for(
    tmp_path: Path, broker: KafkaBroker, topics: Topics, *args: str, **env: str
) -> AbstractContextManager[LoaderProcess]:
    return loader_process(tmp_path / "loaded", broker.url, prefix=topics.prefix, args=args, **env)


# -- poison ----------------------------------------------------------------------------------


def test_poison_reaches_the_dead_letters_with_its_reason_and_its_neighbours_load(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("poison")
    good_events, good_changes = events(topics, 5), changes(topics, 5)
    [change] = changes(topics, 1, start=99)
    poison = [
        Message(topics.events, b"k1", b"{this is not json", {}),
        Message(topics.events, b"k2", b"{}", {TABLE: "orders"}),
        Message(  # an event no tracker could send: neither user nor anonymous id
            topics.events,
            b"k3",
            orjson.dumps({**orjson.loads(good_events[0].value or b""), "anonymous_id": None}),
            {TABLE: "events"},
        ),
        Message(change.topic, change.key, change.value, {TABLE: "cdc_orders"}),  # no change_id
        # Inputs that once crashed decode with errors other than poison (the loader with
        # them, blocking the partition for ever):
        Message(topics.events, b"k4", b"{}", {TABLE: b"\xff"}),  # type: ignore[dict-item]
        Message(
            change.topic,
            change.key,
            orjson.dumps({**orjson.loads(change.value or b""), "source": {"ts_ms": 10**18}}),
            {TABLE: "cdc_orders", "change_id": "X-1"},
        ),
        Message(
            change.topic,
            change.key,
            change.value,
            {**change.headers, "commit_ts": "0001-01-01T00:00:00+01:00"},
        ),
    ]
    reasons = [
        "the value is not JSON",
        "no raw table named 'orders'",
        "not a valid page_view event",
        "no change_id header",
        "header shopstream.table is not UTF-8",
        "source.ts_ms is not a time",
        "commit_ts is not an ISO-8601 timestamp",
    ]
    produce(
        kafka_broker.bootstrap,
        [
            *good_events[:2],
            *poison[:2],
            *good_events[2:],
            *good_changes[:3],
            *poison[2:],
            *good_changes[3:],
        ],
    )
    with loader_for(tmp_path, kafka_broker, topics, "--idle-exit", "3") as loader:
        assert loader.wait() == 0, loader.log()
        letters = loader.read(
            "SELECT reason, payload, context FROM raw.dead_letter WHERE source = 'loader'"
        )
        assert sorted(
            len(loader.read(f"SELECT * FROM raw.{t}")) for t in ("events", "cdc_orders")
        ) == [5, 5]
    assert len(letters) == len(poison)
    for reason in reasons:
        [letter] = [row for row in letters if reason in row["reason"]]
        context = orjson.loads(letter["context"])
        assert context["topic"] in (topics.events, change.topic)
        assert isinstance(context["partition"], int) and isinstance(context["offset"], int)
    assert any(letter["payload"] == "{this is not json" for letter in letters)
    published = consume_all(kafka_broker.bootstrap, topics.dead_letter)
    assert len(published) == len(poison)  # once each: read back, they are not loaded again
    for reason in reasons:
        assert any(reason in m.headers["reason"] for m in published), reason


# -- durability ------------------------------------------------------------------------------


def test_offsets_are_committed_only_once_the_rows_are_durable(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("durable")
    group = f"loaders-{topics.prefix}"  # LoaderProcess's
    create_topics(kafka_broker.bootstrap, [topics.events], partitions=3)
    first, second = events(topics, 60), events(topics, 60, start=60)
    produce(kafka_broker.bootstrap, first)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}"
    loader = LoaderProcess(
        tmp_path / "loaded",
        kafka_broker.url,
        prefix=topics.prefix,
        SHOPSTREAM_LOADER__METRICS_PORT=str(port),
        SHOPSTREAM_COLLECTOR__HOST="127.0.0.1",
        **RESTARTABLE,
    ).start()
    try:
        loader.wait_for("SELECT count(*) AS n FROM raw.events", 60)
        ends = end_offsets(kafka_broker.bootstrap, topics.events)
        wait_until(lambda: committed(kafka_broker.bootstrap, group, topics.events) == ends)
        # The warehouse stops taking anything (its writer process frozen): the loader reads
        # the next messages and hands them over, but they never become durable.
        writer = loader.writer()
        writer.send_signal(signal.SIGSTOP)
        produce(kafka_broker.bootstrap, second)
        # The loader has read the second batch (and handed it over): a loader that commits
        # before its rows are durable has done so by now, or within a few batch waits.
        wait_until(lambda: value(metrics_url, "shopstream_loader_read_messages_total") >= 120)
        time.sleep(0.5)
        assert committed(kafka_broker.bootstrap, group, topics.events) == ends
        loader.kill()  # kill -9, the frozen writer too: nothing it was handed is committed
        loader.start()
        loader.wait_for("SELECT count(DISTINCT event_id) AS n FROM raw.events", 120)
        after = end_offsets(kafka_broker.bootstrap, topics.events)
        wait_until(lambda: committed(kafka_broker.bootstrap, group, topics.events) == after)
    finally:
        loader.kill()


def test_a_loader_killed_mid_stream_loses_nothing_and_repeats_only_whole_rows(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("kill")
    create_topics(kafka_broker.bootstrap, [topics.events, topics.changes("public", "orders")])
    rounds, per_round = 20, 150
    sent = threading.Event()
    failure: list[BaseException] = []

    def traffic() -> None:
        try:
            for r in range(rounds):
                produce(
                    kafka_broker.bootstrap,
                    [*events(topics, per_round, r * per_round), *changes(topics, 20, r * 20)],
                )
                time.sleep(0.1)
        except BaseException as exc:
            failure.append(exc)
        finally:
            sent.set()

    loader = LoaderProcess(
        tmp_path / "loaded",
        kafka_broker.url,
        prefix=topics.prefix,
        SHOPSTREAM_LOADER__BATCH_MESSAGES="100",
        **RESTARTABLE,
    ).start()
    producer = threading.Thread(target=traffic, daemon=True)
    try:
        producer.start()
        loader.wait_for("SELECT count(*) AS n FROM raw.events", rounds * per_round // 4)
        loader.kill()  # mid-stream: batches read, loading, committed or not
        killed_at = loader.read("SELECT count(*) AS n FROM raw.events")[0]["n"]
        assert killed_at < rounds * per_round, "killed too late to prove anything"
        loader.start()
        assert sent.wait(120) and not failure, failure
        loader.wait_for("SELECT count(DISTINCT event_id) AS n FROM raw.events", rounds * per_round)
        loader.wait_for("SELECT count(DISTINCT change_id) AS n FROM raw.cdc_orders", rounds * 20)
        loader.stop()
    finally:
        loader.kill()
        producer.join(30)
    expected_events = {f"e-{i:06d}" for i in range(rounds * per_round)}
    assert {
        r["event_id"] for r in loader.read("SELECT event_id FROM raw.events")
    } == expected_events
    # Repeats, if any, are the same row again: what staging's dedup by id removes.
    [events_count] = loader.read(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, "
        "(SELECT count(*) FROM (SELECT DISTINCT * FROM raw.events)) AS distinct_rows "
        "FROM raw.events"
    )
    assert events_count["ids"] == events_count["distinct_rows"] == len(expected_events)
    [changes_count] = loader.read(
        f"SELECT count(*) AS n, count(DISTINCT change_id) AS ids, "
        f"(SELECT count(*) FROM (SELECT DISTINCT {CHANGE_COLUMNS} FROM raw.cdc_orders)) "
        f"AS distinct_rows FROM raw.cdc_orders"
    )
    assert changes_count["ids"] == changes_count["distinct_rows"] == rounds * 20
    print(
        f"killed at {killed_at} events; repeats after restart: "
        f"{events_count['n'] - events_count['ids']} events, "
        f"{changes_count['n'] - changes_count['ids']} changes"
    )


def test_a_batch_the_warehouse_failed_is_loaded_again_never_skipped(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("retry")
    create_topics(kafka_broker.bootstrap, [topics.events])
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}"
    loader = LoaderProcess(
        tmp_path / "loaded",
        kafka_broker.url,
        prefix=topics.prefix,
        SHOPSTREAM_LOADER__METRICS_PORT=str(port),
        SHOPSTREAM_COLLECTOR__HOST="127.0.0.1",
    ).start()
    try:
        produce(kafka_broker.bootstrap, events(topics, 50))
        loader.wait_for("SELECT count(*) AS n FROM raw.events", 50)
        # The warehouse's writer process dies with batches on their way: their futures fail
        # (the warehouse is unavailable until the writer is replaced).
        writer = loader.writer()
        writer.send_signal(signal.SIGSTOP)
        produce(kafka_broker.bootstrap, events(topics, 50, start=50))
        time.sleep(1)  # read and handed over, not durable
        writer.kill()
        produce(kafka_broker.bootstrap, events(topics, 50, start=100))
        loader.wait_for("SELECT count(DISTINCT event_id) AS n FROM raw.events", 150)
        assert "; again" in loader.log()  # the failed batch was submitted again
        assert value(metrics_url, "shopstream_loader_retries_total") >= 1
        assert value(metrics_url, "shopstream_loader_rows_total", table="events") >= 150
        assert value(metrics_url, "shopstream_loader_messages_total") >= 150
    finally:
        loader.kill()
    ids = {r["event_id"] for r in loader.read("SELECT event_id FROM raw.events")}
    assert ids == {f"e-{i:06d}" for i in range(150)}


def test_a_topic_created_while_loading_is_picked_up(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("newtopic")
    produce(kafka_broker.bootstrap, events(topics, 5))
    with loader_for(tmp_path, kafka_broker, topics) as loader:
        loader.wait_for("SELECT count(*) AS n FROM raw.events", 5)
        # A table captured from now on gets a topic of its own: found without a restart.
        [returned] = changes(topics, 1, table="returns")
        assert returned.topic == topics.changes("public", "returns")
        produce(kafka_broker.bootstrap, [returned])
        loader.wait_for("SELECT count(*) AS n FROM raw.cdc_returns", 1, timeout=30)


# -- scale-out -------------------------------------------------------------------------------


def test_loaders_of_one_group_share_the_partitions(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = fresh("group")
    create_topics(kafka_broker.bootstrap, [topics.events], partitions=4)
    loaders = [
        LoaderProcess(tmp_path / f"loaded-{n}", kafka_broker.url, prefix=topics.prefix)
        for n in range(2)
    ]
    try:
        for loader in loaders:
            loader.start()
        # In rounds, so that a loader still joining when the first messages come gets its
        # share after the rebalance.
        for round_ in range(8):
            produce(kafka_broker.bootstrap, events(topics, 50, start=round_ * 50))
            time.sleep(0.5)
        wait_until(
            lambda: (
                sum(
                    loader.count("SELECT count(DISTINCT event_id) AS n FROM raw.events")
                    for loader in loaders
                )
                >= 400
            )
        )
        loaded = [
            {r["event_id"] for r in loader.query("SELECT event_id FROM raw.events")}
            for loader in loaders
        ]
    finally:
        for loader in loaders:
            loader.kill()
    assert loaded[0] | loaded[1] == {f"e-{i:06d}" for i in range(400)}
    # Both loaded: the partitions were shared. (A message may be in both where a rebalance
    # moved its partition before its batch was committed: a repeat, never a loss.)
    assert loaded[0] and loaded[1], "one loader took every partition"
    print(f"loaded {len(loaded[0])} + {len(loaded[1])}, both {len(loaded[0] & loaded[1])}")
