"""The transport's records: raw rows as broker messages (Kafka, Pub/Sub), and back again.

Every sink that writes to a broker encodes with :func:`encode`; the loader and the Beam
pipeline decode with :func:`decode`, which validates with the same functions as the embedded
path (the behaviour-event model for events, the raw tables' schemas for everything) and
raises :class:`PoisonMessage` with a reason for anything it cannot load.

Topics, under one prefix (Debezium's ``topic.prefix``, ``transport.topic_prefix``):

- ``<prefix>.<schema>.<table>``: a captured table's changes, as Debezium names and writes
  them: the key is the primary key as a JSON object, the value Debezium's envelope without
  schema (``before``, ``after``, ``source``, ``op``, ``ts_ms``), so Debezium consumers and Kafka
  Connect sinks read them unchanged. A delete may be followed by a tombstone (no value).
- ``<prefix>.events``: behaviour events, one ``raw.events`` row per message as a JSON object
  (``properties`` and ``payload`` as JSON, timestamps ISO-8601 UTC), keyed by session (or
  anonymous id, user id, event id: the first there is), so that a session stays in order.
- ``<prefix>.dead_letter``: ``raw.dead_letter`` rows (anything refused on the way).
- ``<prefix>.source_schemas``: the CDC reader's schema records (``raw.source_schemas``).

Headers (Kafka) or attributes (Pub/Sub) say what each message is, so consumers can route or
filter without parsing: ``shopstream.table`` (the raw table), ``event_type`` and ``event_id``
for events, ``change_id`` and ``commit_ts`` for changes, ``reason`` for dead letters.

    >>> import pyarrow as pa
    >>> from shopstream.events.raw import RAW_CDC
    >>> from datetime import UTC, datetime
    >>> when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    >>> row = {"change_id": "00000000016B3748-00000001", "op": "c", "lsn": 23803720,
    ...        "tx_id": 771, "commit_ts": when, "commit_date": when.date(),
    ...        "key": '{"id":7}', "before": None, "after": '{"id":7,"total":"9.90"}',
    ...        "source": '{"schema":"public","table":"orders","txId":771,"lsn":23803720}',
    ...        "ingested_at": when}
    >>> [message] = encode("cdc_orders", pa.Table.from_pylist([row], RAW_CDC), Topics())
    >>> message.topic, message.key, message.headers["change_id"]
    ('shopstream.public.orders', b'{"id":7}', '00000000016B3748-00000001')
    >>> message.value[:45]
    b'{"before":null,"after":{"id":7,"total":"9.90"'
    >>> table, back = decode(message.topic, message.key, message.value, message.headers, Topics())
    >>> table, {k: v for k, v in back.items() if v != row[k]}.keys()  # loaded now
    ('cdc_orders', dict_keys(['ingested_at']))

A change's ``ingested_at`` is when the loader read it; every other column comes back as it
was written.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pyarrow as pa
from pydantic import ValidationError

from shopstream.events.behaviour import event_adapter
from shopstream.events.raw import (
    SOURCE_SCHEMAS,
    cdc_table_name,
    json_columns,
    schema_for,
)

__all__ = [
    "Message",
    "PoisonMessage",
    "Topics",
    "dead_letter_for",
    "dead_letter_id",
    "decode",
    "decode_or_reason",
    "encode",
    "fit_name",
    "key_from_pubsub",
    "pubsub_key",
    "tombstone_for",
]

log = logging.getLogger(__name__)

#: What Kafka takes in a topic name, and how long it may be.
_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")
_MAX_TOPIC = 249

#: Header / attribute names.
TABLE = "shopstream.table"
_OPS = frozenset("cudrt")
#: Pub/Sub allows 1,024 bytes per attribute value; a reason longer than that is cut (the
#: row keeps all of it).
_MAX_HEADER_BYTES = 1024
_ELLIPSIS = "…"
#: The end of the envelope :func:`encode` writes for a delete: the envelope's own op is the
#: last key but one, so a row's value holding ``"op":"d"`` (a JSON column) cannot match.
_DELETE_TAIL = re.compile(rb',"op":"d","ts_ms":-?\d+\}\Z')


@dataclass(frozen=True, slots=True)
class Message:
    """One broker record. ``value`` None is a tombstone (Kafka only)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under ``prefix`` (see the module's docstring)."""

    prefix: str = "shopstream"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead_letter"

    @property
    def source_schemas(self) -> str:
        return f"{self.prefix}.{SOURCE_SCHEMAS}"

    def changes(self, schema: str, table: str) -> str:
        """Debezium's name for a captured table's topic, made valid as Debezium does: every
        character Kafka does not take in a topic name (outside ``[a-zA-Z0-9._-]``: a space,
        anything not ASCII) becomes ``_``. A name over Kafka's 249 characters is cut, ending
        in a digest of the whole name so that two long names stay two topics. The result is
        a valid Pub/Sub name as well (it starts with the prefix's letter).

        Two tables may share a sanitised topic (``"Order Items"`` and ``Order_Items``), as
        with Debezium: their messages still load into their own raw tables, which decode
        takes from the ``shopstream.table`` header. Only :meth:`table_for` (routing by topic,
        for a message without the header) cannot tell such names back: it gives the raw
        table of the sanitised name."""
        name = f"{self.prefix}.{_TOPIC_UNSAFE.sub('_', schema)}.{_TOPIC_UNSAFE.sub('_', table)}"
        return fit_name(name, _MAX_TOPIC, f"{schema}.{table}")

    def fixed(self) -> tuple[str, ...]:
        """The topics that exist whatever is captured."""
        return (self.events, self.dead_letter, self.source_schemas)

    def table_for(self, topic: str) -> str | None:
        """The raw table a topic's messages belong in (when a message has no table header),
        or None for a topic that is not under the prefix. Exact for a table whose name
        :meth:`changes` keeps as it is; for a sanitised or cut name it is the raw table of
        the topic's name, not the captured table's (every message shopstream writes carries
        the header, which decode prefers)."""
        if not topic.startswith(self.prefix + "."):
            return None
        rest = topic[len(self.prefix) + 1 :]
        if rest in ("events", "dead_letter", SOURCE_SCHEMAS):
            return rest
        schema, dot, table = rest.partition(".")
        return cdc_table_name(table, schema) if dot and table and "." not in table else None


def fit_name(name: str, limit: int, whole: str | None = None) -> str:
    """``name`` cut to ``limit`` characters if longer, ending in a digest of ``whole`` (the
    uncut name by default) so that two long names stay two (Kafka topics: 249; Pub/Sub
    topics and subscriptions: 255)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256((name if whole is None else whole).encode()).hexdigest()[:16]
    return f"{name[: limit - len(digest) - 1]}_{digest}"


class PoisonMessage(ValueError):
    """A message that cannot be loaded; ``reason`` says why (it goes to the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- encoding --------------------------------------------------------------------------------


def _json_value(text: str | None) -> Any:
    """A JSON column's text, embedded as it is (no parse, no re-serialisation)."""
    return None if text is None else orjson.Fragment(text)


def _iso(moment: datetime | date | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return moment.isoformat()


def _short(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= _MAX_HEADER_BYTES:
        return text
    room = _MAX_HEADER_BYTES - len(_ELLIPSIS.encode())
    # Cut in bytes; a character split in two is dropped whole.
    return encoded[:room].decode("utf-8", "ignore") + _ELLIPSIS


def encode(table: str, rows: pa.Table | list[dict[str, Any]], topics: Topics) -> list[Message]:
    """The messages for ``rows`` of ``raw.<table>``, in order (JSON columns hold JSON text,
    as everywhere in the raw layer). A delete's change is followed by no tombstone here: a
    sink that wants Debezium's tombstones adds them (see :func:`tombstone_for`)."""
    records = rows.to_pylist() if isinstance(rows, pa.Table) else rows
    if table.startswith("cdc_"):
        return [_change(table, row, topics) for row in records]
    as_json = json_columns(table)
    schema_for(table)  # a KeyError for a table the raw layer does not have
    topic = {
        "events": topics.events,
        "dead_letter": topics.dead_letter,
        SOURCE_SCHEMAS: topics.source_schemas,
    }[table]
    messages = []
    for row in records:
        body = {
            name: _json_value(value)
            if name in as_json
            else _iso(value)
            if isinstance(value, date)
            else value
            for name, value in row.items()
        }
        headers = {TABLE: table}
        key: str | None
        if table == "events":
            headers["event_type"] = row["event_type"]
            headers["event_id"] = row["event_id"]
            key = (
                row.get("session_id")
                or row.get("anonymous_id")
                or row.get("user_id")
                or row["event_id"]
            )
        elif table == "dead_letter":
            headers["reason"] = _short(row["reason"])
            key = row["dead_letter_id"]
        else:
            key = row["raw_table"]
        messages.append(Message(topic, key.encode(), orjson.dumps(body), headers))
    return messages


def _change(table: str, row: dict[str, Any], topics: Topics) -> Message:
    source = orjson.loads(row["source"])
    ingested_at: datetime = row["ingested_at"]
    value = {
        "before": _json_value(row["before"]),
        "after": _json_value(row["after"]),
        "source": orjson.Fragment(row["source"]),
        "op": row["op"],
        "ts_ms": int(ingested_at.timestamp() * 1000),
    }
    headers = {
        TABLE: table,
        "change_id": row["change_id"],
        "commit_ts": _iso(row["commit_ts"]) or "",
    }
    key = row["key"].encode() if row["key"] is not None else None
    topic = topics.changes(source.get("schema") or "public", source.get("table") or table[4:])
    return Message(topic, key, orjson.dumps(value), headers)


def tombstone_for(message: Message) -> Message | None:
    """Debezium's tombstone after a delete (same topic and key, no value), so that a compacted
    topic forgets the row; None for anything but a keyed delete."""
    if message.key is None or message.value is None or not _DELETE_TAIL.search(message.value):
        return None
    return Message(message.topic, message.key, None, dict(message.headers))


# -- decoding --------------------------------------------------------------------------------


def decode(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, str | bytes],
    topics: Topics,
) -> tuple[str, dict[str, Any]] | None:
    """The raw table and row a message holds, validated; None for a tombstone (nothing to
    load). Raises :class:`PoisonMessage` saying what is wrong."""
    if value is None:
        return None
    table = _header(headers, TABLE) or topics.table_for(topic)
    if table is None:
        raise PoisonMessage(f"topic {topic!r} is not one of shopstream's ({topics.prefix}.*)")
    try:
        schema_for(table)
    except KeyError:
        raise PoisonMessage(f"no raw table named {table!r} (header {TABLE})") from None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"the value is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PoisonMessage("the value is not a JSON object")
    if table.startswith("cdc_"):
        return table, _change_row(body, key, headers)
    row = _row(table, body)
    if table == "events":
        _validate_event(row, body)
    return table, row


def decode_or_reason(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, str | bytes],
    topics: Topics,
) -> tuple[tuple[str, dict[str, Any]] | None, str | None]:
    """:func:`decode` that never raises: ``(decoded, None)`` or ``(None, reason)``.

    The loader and the Beam pipeline decode through this: any error, even one that is a bug
    of :func:`decode`'s and not :class:`PoisonMessage`, refuses that one message (a dead
    letter) rather than crash the consumer, which would block its neighbours for ever (Kafka:
    the partition; Pub/Sub: redelivered until the dead-letter policy moves good ones too)."""
    try:
        return decode(topic, key, value, headers, topics), None
    except PoisonMessage as exc:
        return None, exc.reason
    except Exception as exc:
        log.exception("decoding a message on %s failed unexpectedly (dead-lettered)", topic)
        return None, f"{type(exc).__name__}: {exc}"


def _header(headers: Mapping[str, str | bytes], name: str) -> str | None:
    """A header's text; a value that is not UTF-8 text is poison (a producer's bug), named."""
    value = headers.get(name)
    if value is None or isinstance(value, str):
        return value
    try:
        return bytes(value).decode()
    except (UnicodeDecodeError, TypeError):
        raise PoisonMessage(f"header {name} is not UTF-8 text: {repr(value)[:60]}") from None


def _change_row(
    body: dict[str, Any], key: bytes | None, headers: Mapping[str, str | bytes]
) -> dict[str, Any]:
    change_id = _header(headers, "change_id")
    if not change_id:
        raise PoisonMessage(
            "no change_id header: only changes written by shopstream's CDC reader can be "
            "loaded (the id makes redeliveries removable in staging)"
        )
    op = body.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise PoisonMessage(f"op {op!r} is not one of c, u, d, r, t")
    source = body.get("source")
    if not isinstance(source, dict):
        raise PoisonMessage("the envelope has no source block")
    for side in ("before", "after"):
        if body.get(side) is not None and not isinstance(body[side], dict):
            raise PoisonMessage(f"{side} is neither an object nor null")
    commit_text = _header(headers, "commit_ts")
    if commit_text:
        commit_ts = _timestamp("commit_ts", commit_text)
    elif isinstance(source.get("ts_ms"), int) and not isinstance(source["ts_ms"], bool):
        try:
            commit_ts = datetime.fromtimestamp(source["ts_ms"] / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            raise PoisonMessage(
                f"source.ts_ms is not a time a calendar holds: {source['ts_ms']!r}"
            ) from None
    else:
        raise PoisonMessage("no commit time: neither a commit_ts header nor source.ts_ms")
    return {
        "change_id": change_id,
        "op": op,
        "lsn": _integer("source.lsn", source.get("lsn")),
        "tx_id": _integer("source.txId", source.get("txId")),
        "commit_ts": commit_ts,
        "commit_date": commit_ts.date(),
        "key": _key_text(key),
        "before": _dumps_or_none(body.get("before")),
        "after": _dumps_or_none(body.get("after")),
        "source": orjson.dumps(source).decode(),
        "ingested_at": datetime.now(UTC),
    }


def _key_text(key: bytes | None) -> str | None:
    """The message key is the row's primary key as a JSON object (Debezium's key)."""
    if not key:
        return None
    try:
        parsed = orjson.loads(key)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise PoisonMessage(f"the key is not the primary key as a JSON object: {key[:80]!r}")
    return orjson.dumps(parsed).decode()


def _dumps_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _integer(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoisonMessage(f"{name} is not an integer: {value!r}")
    return value


def _timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise PoisonMessage(f"{name} is not an ISO-8601 timestamp: {value!r}")
    try:
        moment = datetime.fromisoformat(value)
        # In UTC a moment near year 1 or 9999 can fall off the calendar (OverflowError).
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PoisonMessage(f"{name} is not an ISO-8601 timestamp: {value!r}") from None


@functools.cache
def _columns(table: str) -> tuple[tuple[str, str, bool], ...]:
    """``raw.<table>``'s columns as (name, kind, nullable), read from its Arrow schema once:
    asking pyarrow per value cost more than the rest of decoding."""
    as_json = json_columns(table)
    columns = []
    for field in schema_for(table):
        if field.name in as_json:
            kind = "json"
        elif pa.types.is_timestamp(field.type):
            kind = "timestamp"
        elif pa.types.is_date(field.type):
            kind = "date"
        elif pa.types.is_integer(field.type):
            kind = "integer"
        else:
            kind = "string"
        columns.append((field.name, kind, field.nullable))
    return tuple(columns)


def _row(table: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as a row of ``raw.<table>``, each value checked against the column's type."""
    row: dict[str, Any] = {}
    for name, kind, nullable in _columns(table):
        value = body.get(name)
        if value is None:
            if not nullable:
                raise PoisonMessage(f"{name} is missing (raw.{table} requires it)")
            row[name] = None
        elif kind == "string":
            if not isinstance(value, str):
                raise PoisonMessage(f"{name} is not a string: {value!r}")
            row[name] = value
        elif kind == "json":
            row[name] = orjson.dumps(value).decode()
        elif kind == "timestamp":
            row[name] = _timestamp(name, value)
        elif kind == "date":
            row[name] = _date(name, value)
        else:
            row[name] = _integer(name, value)
    return row


def _date(name: str, value: Any) -> date:
    try:
        if isinstance(value, str):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise PoisonMessage(f"{name} is not an ISO-8601 date: {value!r}")


def _validate_event(row: dict[str, Any], body: dict[str, Any]) -> None:
    """The event checked by the collector's own model (what a client may send), so that a
    message no tracker could have sent through the collector is not loaded either."""
    native = {
        name: body.get(name)
        for name in (
            "event_id",
            "event_type",
            "event_name",
            "user_id",
            "anonymous_id",
            "session_id",
            "device_type",
            "page_url",
            "referrer",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "properties",
        )
        if body.get(name) is not None
    }
    native["event_ts"] = row["event_ts"]
    try:
        event_adapter.validate_python(native)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PoisonMessage(
            f"not a valid {row['event_type']} event: {where}: {first['msg']}"
        ) from None
    if row["event_date"] != row["event_ts"].date():
        raise PoisonMessage("event_date is not event_ts's UTC date")


def dead_letter_for(
    topic: str, key: bytes | None, value: bytes | None, reason: str, **context: Any
) -> dict[str, Any]:
    """The ``raw.dead_letter`` row for a poison message (source ``loader``), with where it was
    found (topic, key, and what the caller adds: partition, offset, message id).

    Where the context says where the message sits (``partition`` and ``offset``, or
    ``message_id``), the row's id is derived from that: a message read again after a crash
    gets the same ``dead_letter_id``, so its repeats are removable like events' and changes'.
    """
    from shopstream.events.dead_letter import dead_letter_row

    where = {"topic": topic, "key": None if key is None else key.decode("utf-8", "replace")}
    row = dead_letter_row("loader", reason, value, {**where, **context})
    place = [context[name] for name in _PLACE if name in context]
    if place:
        row["dead_letter_id"] = dead_letter_id(topic, *place, context.get("table"), reason)
    return row


def dead_letter_id(topic: str, *where: Any) -> str:
    """A dead letter's id derived from where its message sits on ``topic`` (partition and
    offset, message id...) and why: read again after a crash or a redelivery, the same
    message makes the same id, and staging removes the repeat."""
    identity = orjson.dumps([topic, *where], default=str).decode()
    return str(uuid.uuid5(_DEAD_LETTER_IDS, identity))


#: The context fields that say where a message sits on its transport (Kafka, Pub/Sub); a
#: delivery attempt is not one of them (it changes on every redelivery).
_PLACE = ("partition", "offset", "message_id")
_DEAD_LETTER_IDS = uuid.UUID("5b0c3d1e-6a52-4f0e-9d43-1c8f6f0a4d21")


# -- keys on Pub/Sub -------------------------------------------------------------------------

#: Pub/Sub carries a message's key as its ordering key, which holds 1,024 bytes. A longer key
#: (a primary key over 1 KB) is ordered by its digest (``sha256:<hex>``: the same key keeps the
#: same order) and carried whole in the attributes ``shopstream.key.0``, ``.1``... (each
#: attribute holds 1,024 bytes too), so that the change loads with its key: staging finds a
#: row's versions by the key's values, so a change without it would be a row lost there.
KEY_PART = "shopstream.key."
_MAX_ORDERING_KEY = 1024
_HASHED = "sha256:"
#: Pub/Sub allows 100 attributes; a key needing more parts than this (over ~64 KB, beyond
#: what a PostgreSQL index holds) is not carried and its change is dead-lettered, whole.
_MAX_KEY_PARTS = 64


def pubsub_key(key: bytes | None) -> tuple[str, dict[str, str]]:
    """The ordering key for ``key`` and the attributes that carry it when it is too long."""
    if not key:
        return "", {}
    if len(key) <= _MAX_ORDERING_KEY:
        return key.decode("utf-8", "replace"), {}
    hashed = _HASHED + hashlib.sha256(key).hexdigest()
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return hashed, {}  # not text: not carried (decode refuses such a key anyway)
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:  # cut on character boundaries: each part is valid UTF-8
        width = len(char.encode())
        if size + width > _MAX_ORDERING_KEY:
            parts.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    parts.append("".join(current))
    if len(parts) > _MAX_KEY_PARTS:
        return hashed, {}
    return hashed, {f"{KEY_PART}{i}": part for i, part in enumerate(parts)}


def key_from_pubsub(ordering_key: str, attributes: Mapping[str, str]) -> bytes | None:
    """The message key back from what :func:`pubsub_key` made of it. A digest whose parts are
    missing or do not match stays as it is: decode refuses it, and the dead letter keeps the
    whole message (rather than a change loaded without its key)."""
    if not ordering_key:
        return None
    if not ordering_key.startswith(_HASHED):
        return ordering_key.encode()
    parts = []
    for i in range(_MAX_KEY_PARTS):
        part = attributes.get(f"{KEY_PART}{i}")
        if part is None:
            break
        parts.append(part)
    key = "".join(parts).encode()
    if parts and _HASHED + hashlib.sha256(key).hexdigest() == ordering_key:
        return key
    return ordering_key.encode()
