"""The transport's wire format: every raw table's rows as messages and back, and poison.

The rows are the ones the real producers make (the collector's intake for native and Segment
events and their dead letters, the CDC handler for every op and for schema records), so a
round trip here is the round trip the loader performs. That Kafka and Pub/Sub carry these
messages is shown in tests/integration (test_loader_kafka.py, the sinks' tests).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import orjson
import pyarrow as pa
import pytest
from hypothesis import strategies as st

from shopstream.cdc.handler import ChangeHandler
from shopstream.cdc.pgoutput import Decoder, Relation
from shopstream.cdc.schemas import ColumnSchema, TableSchema
from shopstream.cdc.snapshot import plan_snapshot
from shopstream.collector.intake import RequestInfo, take_native, take_segment
from shopstream.config import CollectorSettings
from shopstream.events.messages import (
    TABLE,
    Message,
    PoisonMessage,
    Topics,
    dead_letter_for,
    decode,
    encode,
    tombstone_for,
)
from shopstream.events.raw import cdc_table_name, schema_for
from tests.support.pgoutput import (
    begin_msg,
    commit_msg,
    delete_msg,
    insert_msg,
    relation_msg,
    truncate_msg,
    update_msg,
)

TOPICS = Topics("shop-test")
NOW = datetime.now(UTC).replace(microsecond=123456)
INFO = RequestInfo(ip="10.0.0.1", user_agent="test/1.0", route="/v1/events", received_at=NOW)
INT4, TEXT = 23, 25
NOTES_TABLE = cdc_table_name("Notes", "sales")
STOCK = relation_msg(7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1)])
NOTES = relation_msg(8, "sales", "Notes", [(1, "id", INT4, -1), (0, "body", TEXT, -1)])


def rows_of(value: Any) -> list[dict[str, Any]]:
    """Rows as the producers hand them to a sink (Arrow, columns, or dicts) as dicts."""
    if isinstance(value, list):
        return value
    if not isinstance(value, pa.Table):
        value = value.to_arrow()
    return list(value.to_pylist())


def round_trip(table: str, rows: list[dict[str, Any]], *, as_bytes: bool = False) -> None:
    """Encode, decode (headers as Kafka gives them when ``as_bytes``), compare every column;
    a change's ``ingested_at`` is when the loader read it."""
    assert rows, f"no {table} rows to compare"
    messages = encode(table, rows, TOPICS)
    assert len(messages) == len(rows)
    for message, row in zip(messages, rows, strict=True):
        headers: dict[str, str | bytes] = dict(message.headers)
        if as_bytes:
            headers = {name: value.encode() for name, value in message.headers.items()}
        decoded = decode(message.topic, message.key, message.value, headers, TOPICS)
        assert decoded is not None
        back_table, back = decoded
        assert back_table == table
        assert set(back) == set(schema_for(table).names)
        expected = dict(row)
        if table.startswith("cdc_"):
            assert back.pop("ingested_at") >= row["ingested_at"]
            expected.pop("ingested_at")
        assert {k: v for k, v in back.items()} == expected


# -- events ----------------------------------------------------------------------------------


def native_events() -> list[dict[str, Any]]:
    sent = [
        {
            "event_type": "page_view",
            "event_id": "e-1",
            "anonymous_id": "anon-1",
            "session_id": "s-1",
            "event_ts": (NOW - timedelta(seconds=3)).isoformat(),
            "page_url": "https://shop.example/p/1?q=ü",
            "referrer": "https://search.example/",
            "utm_source": "news",
            "utm_medium": "email",
            "utm_campaign": "winter",
            "device_type": "web_desktop",
            "properties": {"title": "Snow boots — 42", "nested": {"a": [1, 2.5, None, True]}},
        },
        {
            "event_type": "add_to_cart",
            "user_id": "u-7",
            "event_ts": NOW.isoformat(),
            "properties": {"product_id": "P9", "quantity": 3, "price": 19.9},
        },
    ]
    intake = take_native(sent, INFO, CollectorSettings())
    assert not intake.rejected, intake.rejected
    return rows_of(intake.events)


def segment_events() -> list[dict[str, Any]]:
    sent = [
        {
            "type": "track",
            "event": "Product Added",
            "userId": 42,
            "messageId": "m-1",
            "timestamp": NOW.isoformat(),
            "properties": {"sku": "P9", "quantity": 3},
            "context": {"userAgent": "Mozilla/5.0 (iPhone) Mobile", "page": {"url": "https://s/"}},
        },
        {
            "type": "page",
            "anonymousId": "anon-2",
            "messageId": "m-2",
            "timestamp": NOW.isoformat(),
            "properties": {"url": "https://s/cart", "title": "Cart"},
        },
        {"type": "track", "event": "Gift Wrapped", "anonymousId": "a", "messageId": "m-3"},
    ]
    intake = take_segment(sent, INFO, CollectorSettings())
    assert not intake.rejected, intake.rejected
    rows = rows_of(intake.events)
    assert {row["source"] for row in rows} == {"segment"}
    return rows


def test_native_events_round_trip_every_column() -> None:
    rows = native_events()
    round_trip("events", rows)
    round_trip("events", rows, as_bytes=True)


def test_segment_sourced_events_round_trip_every_column() -> None:
    rows = segment_events()
    assert {"custom", "add_to_cart"} <= {row["event_type"] for row in rows}
    round_trip("events", rows)


def test_an_event_message_says_what_it_is_and_keeps_its_session_in_order() -> None:
    first, second = native_events()
    one, two = encode("events", [first, second], TOPICS)
    assert one.topic == two.topic == "shop-test.events"
    assert one.headers == {TABLE: "events", "event_type": "page_view", "event_id": "e-1"}
    assert one.key == b"s-1"  # the session
    assert two.key == b"u-7"  # no session, no anonymous id: the user
    body = orjson.loads(one.value or b"")
    assert body["properties"]["nested"] == {"a": [1, 2.5, None, True]}  # JSON, not a string
    assert body["event_ts"].endswith("Z")


def test_a_message_without_the_table_header_is_routed_by_its_topic() -> None:
    [message] = encode("events", native_events()[:1], TOPICS)
    decoded = decode(message.topic, message.key, message.value, {}, TOPICS)
    assert decoded is not None and decoded[0] == "events"


# -- dead letters and schema records ---------------------------------------------------------


def test_dead_letters_of_every_source_round_trip() -> None:
    bad = {"event_type": "page_view", "event_ts": NOW.isoformat()}  # no user or anonymous id
    intake = take_native([bad], INFO, CollectorSettings())
    collector_letters = intake.dead_letters
    assert collector_letters and collector_letters[0]["source"] == "collector"
    handler = handler_for(STOCK, begin_msg(0x5000, 9), b"\xff not pgoutput")
    batch = handler.take()
    assert batch is not None
    cdc_letters = batch.rows["dead_letter"]
    assert cdc_letters[0]["source"] == "cdc"
    loader_letter = dead_letter_for(
        "shop-test.events", b"k", b"\x00\xffbinary", "the value is not JSON", offset=3, partition=1
    )
    rows = [*collector_letters, *cdc_letters, loader_letter]
    round_trip("dead_letter", rows)
    messages = encode("dead_letter", rows, TOPICS)
    assert {m.topic for m in messages} == {"shop-test.dead_letter"}
    assert messages[0].headers["reason"] == collector_letters[0]["reason"]


def test_source_schema_records_round_trip() -> None:
    handler = handler_for(
        STOCK,
        NOTES,
        begin_msg(0x5000, 9),
        insert_msg(7, ["1", "10"]),
        insert_msg(8, ["1", "hello"]),
        commit_msg(0x5000, 0x5028),
        describe=True,
    )
    batch = handler.take()
    assert batch is not None
    records = rows_of(batch.rows["source_schemas"])
    assert {r["source_table"] for r in records} == {"stock", "Notes"}
    round_trip("source_schemas", records)
    messages = encode("source_schemas", records, TOPICS)
    assert {m.topic for m in messages} == {"shop-test.source_schemas"}


# -- changes ---------------------------------------------------------------------------------


class _Keys:
    def __call__(self) -> dict[tuple[str, str], list[str]]:
        return {("public", "stock"): ["id"], ("sales", "Notes"): ["id"]}


def _describe(relation: Relation) -> TableSchema:
    names = {INT4: "integer", TEXT: "text"}
    key = tuple(c.name for c in relation.columns if c.is_key)
    columns = tuple(
        ColumnSchema(c.name, names[c.type_oid], names[c.type_oid], c.type_oid, -1, c.is_key, True)
        for c in relation.columns
    )
    return TableSchema(
        cdc_table_name(relation.name, relation.namespace),
        relation.namespace,
        relation.name,
        columns,
        key,
        "default",
    )


def handler_for(*messages: bytes, describe: bool = False) -> ChangeHandler:
    handler = ChangeHandler("shop", _Keys(), describe=_describe if describe else None)
    handler.refresh_keys()
    for lsn, payload in enumerate(messages, start=0x4000):
        handler.handle(payload, lsn)
    return handler


def changes() -> dict[str, list[dict[str, Any]]]:
    """Every op: c, u, d, t from the stream, r from a snapshot; two schemas' tables."""
    handler = handler_for(
        STOCK,
        NOTES,
        begin_msg(0x5000, 901, commit_ts=1_000_001),
        insert_msg(7, ["1", "10"]),
        update_msg(7, ["1", "11"]),
        delete_msg(7, ["1", None]),
        insert_msg(8, ["2", 'a "quoted" \\ note, ünïcode, {"op":"d"}']),
        commit_msg(0x5000, 0x5028, commit_ts=1_000_001),
        begin_msg(0x6000, 902, commit_ts=2_000_002),
        truncate_msg(7),
        commit_msg(0x6000, 0x6028, commit_ts=2_000_002),
    )
    relation = Decoder().decode(STOCK)
    assert isinstance(relation, Relation)
    decoder = handler.snapshot_table(relation, {})
    tx = plan_snapshot([("public", "stock")], "snap", 0x16B3748, 100).transaction(0)
    handler.snapshot_row(relation, decoder, ["5", "50"], tx)
    batch = handler.take()
    assert batch is not None
    return {table: rows_of(rows) for table, rows in batch.rows.items()}


def test_changes_of_every_op_round_trip_every_column() -> None:
    tables = changes()
    stock = tables["cdc_stock"]
    assert sorted(row["op"] for row in stock) == ["c", "d", "r", "t", "u"]
    round_trip("cdc_stock", stock)
    round_trip("cdc_stock", stock, as_bytes=True)
    round_trip(NOTES_TABLE, tables[NOTES_TABLE])  # a hashed name, another schema


def test_changes_go_to_debeziums_topics_keyed_by_primary_key() -> None:
    tables = changes()
    by_op = {row["op"]: row for row in tables["cdc_stock"]}
    messages = {
        op: message
        for op, message in zip(
            by_op, encode("cdc_stock", list(by_op.values()), TOPICS), strict=True
        )
    }
    assert {m.topic for m in messages.values()} == {"shop-test.public.stock"}
    assert messages["u"].key == b'{"id":1}'
    assert messages["t"].key is None  # a truncate is about no row
    envelope = orjson.loads(messages["u"].value or b"")
    assert list(envelope) == ["before", "after", "source", "op", "ts_ms"]
    assert envelope["after"] == {"id": 1, "qty": 11} and envelope["op"] == "u"
    assert messages["u"].headers["change_id"] == by_op["u"]["change_id"]
    [note] = encode(NOTES_TABLE, tables[NOTES_TABLE], TOPICS)
    assert note.topic == "shop-test.sales.Notes"  # the source's names, not the raw table's
    # Routed back by topic alone (Debezium's name), the table is the same raw table.
    assert TOPICS.table_for(note.topic) == NOTES_TABLE


def test_a_delete_is_followed_by_a_tombstone_and_nothing_else_is() -> None:
    tables = changes()
    messages = encode("cdc_stock", tables["cdc_stock"], TOPICS)
    tombstones = [t for t in map(tombstone_for, messages) if t is not None]
    [delete] = [m for m in messages if orjson.loads(m.value or b"")["op"] == "d"]
    assert tombstones == [Message(delete.topic, delete.key, None, dict(delete.headers))]
    assert decode(delete.topic, delete.key, None, delete.headers, TOPICS) is None
    # A value that merely contains '"op":"d"' (a text column) is not a delete.
    notes = encode(NOTES_TABLE, tables[NOTES_TABLE], TOPICS)
    assert b'"op":"d"' not in (notes[0].value or b"")  # escaped inside the string...
    crafted = Message(
        notes[0].topic,
        notes[0].key,
        b'{"before":null,"after":{"doc":{"op":"d"}},"source":{},"op":"c","ts_ms":1}',
        {},
    )
    assert tombstone_for(crafted) is None  # ...and a nested object is not the envelope's op


# -- poison ----------------------------------------------------------------------------------


def _event_message(**changes: Any) -> Message:
    [message] = encode("events", native_events()[:1], TOPICS)
    body = orjson.loads(message.value or b"")
    body.update(changes)
    return Message(message.topic, message.key, orjson.dumps(body), message.headers)


def _change_message(**changes: Any) -> Message:
    [message] = encode("cdc_stock", changes_rows()[:1], TOPICS)
    body = orjson.loads(message.value or b"")
    headers = dict(message.headers)
    for name in ("change_id", "commit_ts"):
        if name in changes:
            value = changes.pop(name)
            if value is None:
                headers.pop(name)
            else:
                headers[name] = value
    key = changes.pop("key", message.key)
    for name, value in changes.items():
        if value is ...:
            body.pop(name)
        else:
            body[name] = value
    return Message(message.topic, key, orjson.dumps(body), headers)


def changes_rows() -> list[dict[str, Any]]:
    return changes()["cdc_stock"]


POISON: list[tuple[str, Any, str]] = [
    ("not JSON", lambda: Message("shop-test.events", b"k", b"{not json", {}), "not JSON"),
    ("a JSON array", lambda: Message("shop-test.events", None, b"[1]", {}), "not a JSON object"),
    (
        "an unknown table",
        lambda: Message("shop-test.events", None, b"{}", {TABLE: "orders"}),
        "no raw table named 'orders'",
    ),
    (
        "a topic not ours",
        lambda: Message("other.events", None, b"{}", {}),
        "topic 'other.events' is not one of shopstream's",
    ),
    (
        "an event no tracker could send",
        lambda: _event_message(anonymous_id=None, session_id=None),
        "not a valid page_view event",
    ),
    ("an event without id", lambda: _event_message(event_id=None), "event_id is missing"),
    (
        "an event of an unknown type",
        lambda: _event_message(event_type="teleport"),
        "not a valid teleport event",
    ),
    (
        "an event time that is not a time",
        lambda: _event_message(event_ts="yesterday"),
        "event_ts is not an ISO-8601 timestamp",
    ),
    (
        "an event date that is not the event's",
        lambda: _event_message(event_date="2001-01-01"),
        "event_date is not event_ts's UTC date",
    ),
    (
        "a date that is not a date",
        lambda: _event_message(event_date="01/01/2001"),
        "event_date is not an ISO-8601 date",
    ),
    ("a number for a string", lambda: _event_message(page_url=7), "page_url is not a string"),
    (
        "a change without change_id",
        lambda: _change_message(change_id=None),
        "no change_id header",
    ),
    ("an unknown op", lambda: _change_message(op="x"), "op 'x' is not one of c, u, d, r, t"),
    ("a change without source", lambda: _change_message(source=...), "no source block"),
    ("a row that is not an object", lambda: _change_message(after=[1]), "after is neither"),
    (
        "a change without commit time",
        lambda: _change_message(commit_ts=None, source={"lsn": 1}),
        "no commit time",
    ),
    (
        "a key that is not the primary key",
        lambda: _change_message(key=b"42"),
        "the key is not the primary key as a JSON object",
    ),
    (
        "an LSN that is not an integer",
        lambda: _change_message(source={"lsn": "0/16B3748", "schema": "public"}),
        "source.lsn is not an integer",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(p[1], p[2]) for p in POISON], ids=[p[0] for p in POISON]
)
def test_poison_is_refused_with_its_reason(make: Any, reason: str) -> None:
    message = make()
    with pytest.raises(PoisonMessage) as refused:
        decode(message.topic, message.key, message.value, message.headers, TOPICS)
    assert reason in refused.value.reason


def test_dead_letter_rows_and_schema_records_are_checked_too() -> None:
    with pytest.raises(PoisonMessage, match="reason is missing"):
        decode("shop-test.dead_letter", None, b'{"dead_letter_id":"x","source":"cdc"}', {}, TOPICS)
    records = rows_of(
        handler_for(STOCK, begin_msg(1, 1), insert_msg(7, ["1", "2"]), describe=True)
        .take()
        .rows["source_schemas"]
    )  # type: ignore[union-attr]
    [message] = encode("source_schemas", records, TOPICS)
    body = orjson.loads(message.value or b"")
    body["version"] = "1"
    with pytest.raises(PoisonMessage, match="version is not an integer"):
        decode(message.topic, message.key, orjson.dumps(body), message.headers, TOPICS)


def test_a_poison_message_becomes_a_dead_letter_with_where_it_was_found() -> None:
    letter = dead_letter_for(
        "shop-test.events", b"k", b"{bad", "the value is not JSON", partition=2, offset=41
    )
    assert letter["source"] == "loader" and letter["reason"] == "the value is not JSON"
    assert letter["payload"] == "{bad"
    assert orjson.loads(letter["context"]) == {
        "topic": "shop-test.events",
        "key": "k",
        "partition": 2,
        "offset": 41,
    }
    # Read again after a crash, the same message gets the same id (staging removes the
    # repeat); another offset, another id; no position at all, a fresh id each time.
    again = dead_letter_for(
        "shop-test.events", b"k", b"{bad", "the value is not JSON", partition=2, offset=41
    )
    assert again["dead_letter_id"] == letter["dead_letter_id"]
    other = dead_letter_for(
        "shop-test.events", b"k", b"{bad", "the value is not JSON", partition=2, offset=42
    )
    assert other["dead_letter_id"] != letter["dead_letter_id"]
    pubsub = dead_letter_for("t", None, b"x", "r", message_id="9", delivery_attempt=1)
    assert (
        pubsub["dead_letter_id"]
        == dead_letter_for("t", None, b"x", "r", message_id="9", delivery_attempt=2)[
            "dead_letter_id"
        ]
    )
    loose = [dead_letter_for("t", None, b"x", "r")["dead_letter_id"] for _ in range(2)]
    assert loose[0] != loose[1]
    uuid.UUID(letter["dead_letter_id"])


def test_a_long_reason_fits_a_pubsub_attribute_in_bytes() -> None:
    letter = dead_letter_for("t", None, b"x", "ü" * 2000)
    [message] = encode("dead_letter", [letter], TOPICS)
    assert len(message.headers["reason"].encode()) <= 1024
    assert message.headers["reason"].endswith("…")
    decoded = decode(message.topic, message.key, message.value, message.headers, TOPICS)
    assert decoded is not None and decoded[1]["reason"] == "ü" * 2000  # the row keeps it all


# -- malformed input of every kind is poison, never another error -----------------------------

MALFORMED: list[tuple[str, Any, str]] = [
    (
        "a table header that is not UTF-8",
        lambda: Message("shop-test.events", b"k", b"{}", {TABLE: b"\xff"}),  # type: ignore[dict-item]
        TABLE,
    ),
    (
        "a change_id header that is not UTF-8",
        lambda: _change_message(change_id=b"\xff"),
        "change_id",
    ),
    (
        "source.ts_ms far past any calendar",
        lambda: _change_message(commit_ts=None, source={"ts_ms": 10**18}),
        "source.ts_ms",
    ),
    (
        "a commit_ts header before year 1 in UTC",
        lambda: _change_message(commit_ts="0001-01-01T00:00:00+01:00"),
        "commit_ts",
    ),
    (
        "an event_ts before year 1 in UTC",
        lambda: _event_message(event_ts="0001-01-01T00:00:00+01:00"),
        "event_ts",
    ),
]


@pytest.mark.parametrize(("name", "make", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_poison_naming_the_field(name: str, make: Any, field: str) -> None:
    message = make()
    with pytest.raises(PoisonMessage) as refused:
        decode(message.topic, message.key, message.value, message.headers, TOPICS)
    assert field in refused.value.reason


_ANY_TOPIC = st.sampled_from(
    ["shop-test.events", "shop-test.public.stock", "shop-test.dead_letter", "elsewhere"]
)
_HEADER_NAMES = st.sampled_from([TABLE, "change_id", "commit_ts", "event_type", "x"])
_HEADER_VALUES = st.one_of(st.binary(max_size=12), st.text(max_size=30))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    topic=_ANY_TOPIC,
    key=st.one_of(st.none(), st.binary(max_size=20)),
    value=st.one_of(st.none(), st.binary(max_size=40)),
    headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=4),
)
def test_decode_of_arbitrary_bytes_returns_or_is_poison(
    topic: str, key: bytes | None, value: bytes | None, headers: dict[str, Any]
) -> None:
    with contextlib.suppress(PoisonMessage):  # anything else fails the test
        decode(topic, key, value, headers, TOPICS)


_JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.text(max_size=30),
        st.sampled_from(
            ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "2026-12-01", "x"]
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    which=st.sampled_from(["event", "change"]),
    field=st.sampled_from(
        [
            "event_ts",
            "event_date",
            "received_at",
            "properties",
            "source",
            "op",
            "after",
            "before",
            "commit_ts",
            "change_id",
            "key",
            "event_id",
            "session_id",
        ]
    ),
    replacement=_JSONISH,
)
def test_decode_of_any_json_in_any_field_returns_or_is_poison(
    which: str, field: str, replacement: Any
) -> None:
    if which == "event":
        message = _event_message(**{field: replacement})
    elif field in ("commit_ts", "change_id"):
        message = _change_message(**{field: replacement if isinstance(replacement, str) else None})
    elif field == "key":
        message = _change_message(key=orjson.dumps(replacement))
    else:
        message = _change_message(**{field: replacement})
    with contextlib.suppress(PoisonMessage):  # anything else fails the test
        decode(message.topic, message.key, message.value, message.headers, TOPICS)


class _TopicsWithABug(Topics):
    """Topics whose routing fails as a bug would (not poison): what the backstops are for."""

    def table_for(self, topic: str) -> str | None:
        raise RuntimeError("a bug in routing")


def test_a_bug_in_decode_dead_letters_that_message_and_the_loader_goes_on() -> None:
    from types import SimpleNamespace

    from shopstream.loader.base import Received
    from shopstream.loader.run import Loader

    [good] = encode("events", native_events()[:1], TOPICS)
    bugged = Received("shop-test.events", b"k", b"{}", {}, {"partition": 0, "offset": 7})
    fine = Received(good.topic, good.key, good.value, good.headers, {"partition": 0, "offset": 8})
    loader = SimpleNamespace(topics=_TopicsWithABug("shop-test"))
    batch = Loader._prepare(loader, [bugged, fine])  # type: ignore[arg-type]
    [letter] = batch.letters
    assert letter["reason"] == "RuntimeError: a bug in routing"
    assert batch.poison == 1 and len(batch.rows["events"]) == 1
    again = Loader._prepare(loader, [bugged])  # type: ignore[arg-type]
    assert again.letters[0]["dead_letter_id"] == letter["dead_letter_id"]  # removable repeat


# -- topic names ------------------------------------------------------------------------------

#: What both Kafka (249 characters of [a-zA-Z0-9._-]) and Pub/Sub (3-255, starting with a
#: letter, not "goog") take as a topic name.
_VALID_TOPIC = re.compile(r"(?!goog)[a-zA-Z][a-zA-Z0-9._-]{2,248}")


def test_a_table_name_kafka_cannot_take_becomes_debeziums_sanitised_topic() -> None:
    topics = Topics()
    assert topics.changes("public", "Order Items") == "shopstream.public.Order_Items"
    assert topics.changes("магазин", "заказы") == "shopstream._______.______"
    assert topics.changes("public", "orders") == "shopstream.public.orders"  # as before
    # Routing by topic (no header) stays exact for names that need no cleaning...
    assert topics.table_for(topics.changes("sales", "orders")) == cdc_table_name("orders", "sales")
    # ...and decode takes the table from the header, so a sanitised topic still loads into
    # the captured table's own raw table.
    [message] = encode("cdc_stock", changes_rows()[:1], TOPICS)
    decoded = decode(
        "shop-test.public.Order_Items", message.key, message.value, message.headers, TOPICS
    )
    assert decoded is not None and decoded[0] == "cdc_stock"


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(schema=st.text(min_size=1, max_size=300), table=st.text(min_size=1, max_size=300))
def test_every_captured_tables_topic_is_valid_on_kafka_and_pubsub(schema: str, table: str) -> None:
    topic = Topics().changes(schema, table)
    assert _VALID_TOPIC.fullmatch(topic), topic


def test_an_over_long_table_name_is_cut_and_stays_unique() -> None:
    long_a, long_b = "a" * 300 + "x", "a" * 300 + "y"
    topic_a, topic_b = Topics().changes("public", long_a), Topics().changes("public", long_b)
    assert len(topic_a) == len(topic_b) == 249
    assert topic_a != topic_b
    assert Topics().changes("public", long_a) == topic_a  # the same table, the same topic
