"""The Kafka sink's pure parts: its URL and the messages a submission becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from shopstream.events.messages import Topics
from shopstream.events.raw import RAW_CDC
from shopstream.sinks import sink_backend
from shopstream.sinks.kafka import BACKEND, bootstrap_servers, messages_for
from tests.support.rows import event_row, events_table

WHEN = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _change(change_id: str, op: str, key: int) -> dict[str, object]:
    row = f'{{"id":{key},"total":"9.90"}}'
    return {
        "change_id": change_id,
        "op": op,
        "lsn": 100,
        "tx_id": 7,
        "commit_ts": WHEN,
        "commit_date": WHEN.date(),
        "key": f'{{"id":{key}}}',
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": '{"schema":"sales","table":"orders","txId":7,"lsn":100}',
        "ingested_at": WHEN,
    }


def test_the_url_names_the_bootstrap_servers() -> None:
    assert sink_backend("kafka://b1:9092") is BACKEND
    assert bootstrap_servers("kafka://b1:9092,b2:9093/") == "b1:9092,b2:9093"
    assert bootstrap_servers("kafka://[::1]:9092") == "[::1]:9092"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("kafka://b1", "'b1' is not host:port"),
        ("kafka://b1:9092,", "'' is not host:port"),
        ("kafka://b1:0", "'b1:0' is not host:port"),
        ("kafka://b1:9092/events", "only kafka://host:port"),
        ("kafka://b1:9092?acks=1", "only kafka://host:port"),
        ("kafka://user:secret@b1:9092", "no credentials in the URL"),
        ("pubsub://project", "the scheme must be kafka://"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        bootstrap_servers(url)


def test_a_delete_is_followed_by_its_tombstone_when_asked() -> None:
    changes = pa.Table.from_pylist(
        [_change("A-1", "c", 1), _change("A-2", "d", 1), _change("A-3", "c", 2)], RAW_CDC
    )
    with_tombstones = messages_for({"cdc_sales__orders": changes}, Topics("shop"), tombstones=True)
    assert [(m.topic, m.key, m.value is None) for m in with_tombstones] == [
        ("shop.sales.orders", b'{"id":1}', False),
        ("shop.sales.orders", b'{"id":1}', False),
        ("shop.sales.orders", b'{"id":1}', True),  # right behind the delete, same key
        ("shop.sales.orders", b'{"id":2}', False),
    ]
    assert with_tombstones[2].headers["change_id"] == "A-2"
    plain = messages_for({"cdc_sales__orders": changes}, Topics("shop"), tombstones=False)
    assert [m.value is None for m in plain] == [False, False, False]


def test_every_shape_of_rows_becomes_the_same_messages() -> None:
    table = events_table("e1", "e2", session_id="s")
    as_dicts = [event_row("e1", session_id="s"), event_row("e2", session_id="s")]

    class Columns:  # the collector's column-wise rows: converted with to_arrow()
        def __len__(self) -> int:
            return table.num_rows

        def to_arrow(self) -> pa.Table:
            return table

    topics = Topics()
    from_arrow = messages_for({"events": table, "dead_letter": []}, topics, tombstones=True)
    from_columns = messages_for({"events": Columns()}, topics, tombstones=True)  # type: ignore[dict-item]
    from_dicts = messages_for({"events": as_dicts}, topics, tombstones=True)
    assert [m.headers["event_id"] for m in from_arrow] == ["e1", "e2"]
    assert [m.key for m in from_arrow] == [b"s", b"s"]
    assert from_columns == from_arrow
    assert [m.headers for m in from_dicts] == [m.headers for m in from_arrow]


def test_rows_for_a_table_the_raw_layer_does_not_have_are_refused() -> None:
    with pytest.raises(KeyError):
        messages_for({"nonsense": [{"a": 1}]}, Topics(), tombstones=False)


def test_delivery_reports_count_each_record_once_and_only_the_current_producers_failures() -> None:
    from confluent_kafka import KafkaError

    from shopstream.config import KafkaSettings
    from shopstream.sinks.base import LANDED, SinkError
    from shopstream.sinks.kafka import KafkaSink, _Submission

    sink = KafkaSink("127.0.0.1:9", KafkaSettings(), Topics(), max_pending=10)  # never started
    messages = messages_for({"events": events_table("e1", "e2")}, Topics(), tombstones=False)

    def tracked() -> _Submission:
        submission = _Submission(messages, [("events", 0), ("events", 1)], deadline=0.0)
        sink._in_flight[id(submission)] = submission
        sink._pending += len(messages)
        return submission

    first = tracked()
    sink._delivered(first, 0, 0, None, None)
    sink._delivered(first, 0, 0, None, None)  # the same record, acknowledged again after a resend
    assert not first.future.done()
    assert sink.pending_rows() == 1
    sink._generation = 1  # the producer was replaced and record 1 sent again
    sink._delivered(first, 1, 0, KafkaError(KafkaError._PURGE_QUEUE, "purged"), None)
    assert not first.future.done(), "the replaced producer's failure must not count"
    sink._delivered(first, 1, 1, None, None)
    assert first.future.result(timeout=0) == LANDED
    assert (sink.pending_rows(), sink.commits) == (0, 1)

    second = tracked()
    sink._delivered(second, 0, 1, KafkaError(KafkaError._FATAL, "fatal"), None)
    assert sink._fatal is not None and not second.future.done()  # replaced, then sent again
    sink._fatal = None
    sink._delivered(second, 1, 1, KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
    with pytest.raises(SinkError, match="timed out"):
        second.future.result(timeout=0)
    sink._delivered(second, 0, 1, None, None)  # a late acknowledgement changes nothing
    assert sink.pending_rows() == 0
