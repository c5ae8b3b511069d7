"""From a request body to raw rows: decode, split into events, validate each one.

Pure functions, no HTTP: the routes in :mod:`shopstream.collector.handlers` call them. Every
rejection carries a reason a tracker developer can act on, and one bad event never rejects
its neighbours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import reprlib
import sys
import uuid
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from shopstream.collector.segment import SegmentError, to_native
from shopstream.config import CollectorSettings
from shopstream.events.behaviour import EVENT_TYPES, EventBase, event_adapter
from shopstream.events.codes import ReasonCode
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_EVENTS

log = logging.getLogger(__name__)

_dumps = orjson.dumps

#: The deepest event (objects and arrays inside each other, the event itself included) that
#: can be stored: orjson writes no more levels than this (it reads up to 1024).
MAX_NESTING = 254
#: The integers orjson keeps exact; outside them it silently returns a float.
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1
#: Only a run of 19 digits or more can be a number orjson rounded. Found by mapping every
#: digit to "0" and searching for the run: a quarter of a regular expression's cost.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
#: More gzip members than any client writes into one body; past it, a body of tiny members
#: would cost the event loop more than its size suggests.
MAX_GZIP_MEMBERS = 1000
_EXACT_DEPTH = 1100  # levels the exact parser may read: orjson's 1024 and some
_NOT_ZERO = re.compile(rb"[^\x00]")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c3c1e-9a53-4b0e-8d3f-6d1f4c0a7e21")


class BodyError(Exception):
    """The whole request is refused; ``status`` and ``code`` say how to answer."""

    def __init__(self, status: int, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class Rejection:
    index: int
    reason: str
    code: ReasonCode
    event_type: str
    event_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "reason": self.reason}
        if self.event_id:
            out["event_id"] = self.event_id
        return out


@dataclass(slots=True)
class RequestInfo:
    ip: str | None
    user_agent: str | None
    route: str
    received_at: datetime


@dataclass(slots=True)
class Intake:
    """The outcome of one request: rows to make durable and what was rejected."""

    info: RequestInfo
    events: EventColumns = field(default_factory=lambda: EventColumns())
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    window: ClockWindow | None = None

    def rows(self) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        if len(self.events):
            rows["events"] = self.events
        if self.dead_letters:
            rows["dead_letter"] = self.dead_letters
        return rows

    def accepted_types(self) -> list[str]:
        return self.events.event_type


def gunzip(body: bytes, limit: int) -> bytes:
    """Undo gzip, every member of it, without letting a bomb expand past ``limit`` bytes.

    Concatenated gzip streams are one valid gzip file (RFC 1952 2.2); as gzip(1) does, zero
    padding after a member is skipped and anything else after it is refused, not ignored.
    """
    view = memoryview(body)
    out: list[bytes] = []
    size = pos = members = 0
    while True:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BodyError(
                400,
                ReasonCode.BAD_GZIP,
                f"the gzip body has more than {MAX_GZIP_MEMBERS} members; send one gzip stream",
            )
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        # Fed in growing slices: a member's unused tail is copied once per member, so a body
        # of many tiny members costs no more than one of a single big member.
        step = 256
        while not inflater.eof:
            if pos >= len(body):
                where = f" (member {members})" if members > 1 else ""
                raise BodyError(400, ReasonCode.BAD_GZIP, f"gzip body is truncated{where}")
            chunk = view[pos : pos + step]
            try:
                piece = inflater.decompress(chunk, limit - size + 1)
            except zlib.error as exc:
                if members == 1:
                    message = f"Content-Encoding is gzip but the body is not: {exc}"
                else:
                    message = (
                        f"the {len(body) - pos} bytes after gzip member {members - 1} are not "
                        f"gzip ({exc}); send one gzip stream or whole gzip members"
                    )
                raise BodyError(400, ReasonCode.BAD_GZIP, message) from exc
            size += len(piece)
            if size > limit:
                raise BodyError(
                    413,
                    ReasonCode.BODY_TOO_LARGE,
                    f"body is larger than {limit} bytes once decompressed",
                )
            out.append(piece)
            # Below the limit the inflater took all of the slice but what follows its member.
            pos += len(chunk) - len(inflater.unused_data)
            step = min(step * 2, 1 << 20)
        padding_end = _NOT_ZERO.search(body, pos)
        if padding_end is None:
            return b"".join(out)
        pos = padding_end.start()


def parse_json(body: bytes) -> Any:
    """The body as Python values, every number as sent or marked as not storable.

    orjson turns integers outside 64 bits into floats without a word, and refuses a whole
    body for one number past a double (``1e400``). Only then (a cheap scan finds a run of 19 or
    more digits) is the body read again by the standard parser, keeping such numbers as
    :class:`BigNumber` so that their event alone is rejected, naming the field.
    """
    if not body.strip():
        raise BodyError(
            400, ReasonCode.INVALID_JSON, "the body is empty; send a JSON event or array"
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "number is infinity" not in str(exc):
            raise BodyError(
                400, ReasonCode.INVALID_JSON, f"the body is not valid JSON: {exc}"
            ) from exc
        exact, _ = _parse_exact(body, checked=False)
        return exact
    if body.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) < 0:
        return document
    exact, big_numbers = _parse_exact(body, checked=True)
    # Without numbers orjson could not hold, its reading is exact (and plain dicts).
    return exact if big_numbers else document


class BigNumber:
    """A JSON number no 64-bit integer or double holds, kept as its literal text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class ExactObject(dict[str, Any]):
    """A JSON object read by the exact parser: its event is checked for a :class:`BigNumber`."""

    __slots__ = ()


def _parse_exact(body: bytes, *, checked: bool) -> tuple[Any, int]:
    """Read ``body`` with the standard parser; ``checked`` if orjson already accepted it."""
    found: list[BigNumber] = []

    def integer(text: str) -> Any:
        if len(text) < 19:
            return int(text)
        if len(text) <= 21:  # a sign and 20 digits: past that, surely outside 64 bits
            value = int(text)
            if _MIN_INT <= value <= _MAX_INT:
                return value
        found.append(BigNumber(text))
        return found[-1]

    def number(text: str) -> Any:
        value = float(text)
        if math.isinf(value):
            found.append(BigNumber(text))
            return found[-1]
        return value

    def constant(text: str) -> Any:
        raise ValueError(f"{text} is not JSON")

    decoder = json.JSONDecoder(
        object_pairs_hook=ExactObject,
        parse_int=integer,
        parse_float=number,
        parse_constant=constant,
    )
    # orjson reads 1024 levels; the standard parser recurses once per level and would stop
    # near the interpreter's limit (1000 frames, shared with the caller's), so it gets
    # headroom for the one call. Its frames are small C frames, far from the stack's size.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _EXACT_DEPTH)
    try:
        document = decoder.decode(body.decode("utf-8"))
        if not checked:
            _check_text(document)
    except RecursionError:
        raise BodyError(
            400,
            ReasonCode.INVALID_JSON,
            "the body nests too deeply to be read with its numbers exact; nest less, or send "
            "numbers beyond 64 bits as strings",
        ) from None
    except ValueError as exc:  # also UnicodeDecodeError, json.JSONDecodeError
        raise BodyError(400, ReasonCode.INVALID_JSON, f"the body is not valid JSON: {exc}") from exc
    finally:
        sys.setrecursionlimit(limit)
    return document, len(found)


def _check_text(document: Any) -> None:
    """What orjson would have refused besides the number: text that is not UTF-8."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            value.encode()  # a lone surrogate (``"\\ud800"``) raises UnicodeEncodeError
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def big_number_in(value: Any) -> tuple[str, str] | None:
    """The path and literal of the first number in ``value`` that 64 bits cannot hold."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, BigNumber):
            return path or "event", item.text
        if isinstance(item, dict):
            for key in reversed(list(item)):
                stack.append((item[key], f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{path}[{index}]"))
    return None


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels (a cyclic
    Python value counts as infinitely deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


class _Text(str):
    """Punctuation pushed on :func:`exact_json`'s stack."""

    __slots__ = ()


class _Leave(int):
    """Marks where :func:`exact_json` leaves a container (for its cycle check)."""

    __slots__ = ()


def exact_json(value: Any) -> str:
    """JSON text for what orjson cannot write: any depth, :class:`BigNumber` literals as sent,
    anything else as a string. Iterative, so no depth makes it fail."""
    out: list[str] = []
    stack: list[Any] = [value]
    open_ids: set[int] = set()
    while stack:
        item = stack.pop()
        if type(item) is _Text:
            out.append(item)
        elif type(item) is _Leave:
            open_ids.discard(int(item))
        elif isinstance(item, BigNumber):
            out.append(item.text)
        elif item is None or isinstance(item, bool):
            out.append("null" if item is None else "true" if item else "false")
        elif isinstance(item, str):
            out.append(json.dumps(item, ensure_ascii=False))
        elif isinstance(item, int | float):
            out.append(json.dumps(item))
        elif isinstance(item, dict | list):
            if id(item) in open_ids:
                out.append('"(cycle)"')
                continue
            open_ids.add(id(item))
            stack.append(_Leave(id(item)))
            if isinstance(item, dict):
                out.append("{")
                stack.append(_Text("}"))
                entries = list(item.items())
                for index in range(len(entries) - 1, -1, -1):
                    key, child = entries[index]
                    stack.append(child)
                    key_text = json.dumps(key if isinstance(key, str) else str(key))
                    stack.append(_Text(("," if index else "") + key_text + ":"))
            else:
                out.append("[")
                stack.append(_Text("]"))
                for index in range(len(item) - 1, -1, -1):
                    stack.append(item[index])
                    if index:
                        stack.append(_Text(","))
        else:
            out.append(json.dumps(_short.repr(item)))
    return "".join(out)


def payload_text(item: Any) -> str:
    """The event as sent, as text for raw.dead_letter; never fails."""
    try:
        return orjson.dumps(item).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass  # too deep, a number beyond 64 bits, or not JSON at all (a Python caller's value)
    try:
        text = exact_json(item)
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    except Exception as exc:
        return f"(the event could not be written as text: {type(exc).__name__})"


def split_native(document: Any, max_events: int) -> list[Any]:
    """One event, a JSON array, or ``{"events": [...]}``."""
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict) and isinstance(document.get("events"), list):
        items = document["events"]
    elif isinstance(document, dict):
        items = [document]
    else:
        raise BodyError(
            400,
            ReasonCode.INVALID_BODY,
            'expected a JSON object (one event), an array of events, or {"events": [...]}',
        )
    if len(items) > max_events:
        raise BodyError(
            413,
            ReasonCode.TOO_MANY_EVENTS,
            f"{len(items)} events in one request; the limit is {max_events} "
            "(collector.max_events_per_request)",
        )
    return items


def describe_errors(exc: ValidationError, item: Any) -> tuple[str, ReasonCode]:
    """A one-line reason and a reason code from Pydantic's errors."""
    parts = []
    code = ReasonCode.INVALID_EVENT
    for error in exc.errors(include_url=False):
        kind = error["type"]
        if kind == "union_tag_invalid":
            got = item.get("event_type") if isinstance(item, dict) else None
            return (  # a short repr: event_type may be anything, 1000 levels deep or 4 MB long
                f"unknown event_type {_short.repr(got)}; expected one of: {', '.join(EVENT_TYPES)}",
                ReasonCode.UNKNOWN_EVENT_TYPE,
            )
        if kind == "union_tag_not_found":
            return "event_type is missing", ReasonCode.MISSING_EVENT_TYPE
        # The first location element is the union tag; the reader wants the field path.
        loc = [str(p) for p in error["loc"][1:]] if error["loc"] else []
        where = ".".join(loc) or "event"
        parts.append(f"{where}: {error['msg']}")
        if kind == "missing":
            code = ReasonCode.MISSING_FIELD
    return "; ".join(parts), code


def event_id_for(item: Any) -> str:
    """A deterministic id for events sent without one, so that re-sends deduplicate."""
    data = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, hashlib.sha256(data).hexdigest()))


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held at the ends of the calendar instead of overflowing."""
    try:
        return moment + delta
    except OverflowError:
        return (datetime.max if delta > timedelta(0) else datetime.min).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ClockWindow:
    """The event_ts a request's events may have, taken once per request from its receive time.

    :meth:`check` says which side an event is off by comparing, so the reason code never
    depends on the wording of the message.
    """

    now: datetime
    earliest: datetime
    latest: datetime
    future_tolerance_seconds: int
    max_event_age_days: int

    @classmethod
    def at(cls, now: datetime, settings: CollectorSettings) -> ClockWindow:
        return cls(
            now,
            _shifted(now, -timedelta(days=settings.max_event_age_days)),
            _shifted(now, timedelta(seconds=settings.future_tolerance_seconds)),
            settings.future_tolerance_seconds,
            settings.max_event_age_days,
        )

    def check(self, event_ts: datetime) -> tuple[ReasonCode, str] | None:
        """None inside the window (bounds included), else the code and reason."""
        if event_ts > self.latest:
            return ReasonCode.FUTURE_TIMESTAMP, (
                f"event_ts {event_ts.isoformat()} is more than "
                f"{self.future_tolerance_seconds} s ahead of the server clock "
                f"({self.now.isoformat()}); check the device clock"
            )
        if event_ts < self.earliest:
            return ReasonCode.OLD_TIMESTAMP, (
                f"event_ts {event_ts.isoformat()} is older than "
                f"{self.max_event_age_days} days (collector.max_event_age_days)"
            )
        return None


@dataclass(slots=True, eq=False)
class EventColumns:
    """``raw.events`` rows, built column by column (the collector's hot path: no dict per
    row). Requests' columns are merged in the sink and become one Arrow table per group
    commit, so a one-event request costs a few appends, not an Arrow conversion.

    One list per column of :data:`~shopstream.events.raw.RAW_EVENTS`, in its order, but
    ``event_date`` (derived from ``event_ts`` in :meth:`to_arrow`); a unit test holds the two
    together.
    """

    event_id: list[str] = field(default_factory=list)
    event_type: list[str] = field(default_factory=list)
    event_name: list[str | None] = field(default_factory=list)
    event_ts: list[datetime] = field(default_factory=list)
    received_at: list[datetime] = field(default_factory=list)
    user_id: list[str | None] = field(default_factory=list)
    anonymous_id: list[str | None] = field(default_factory=list)
    session_id: list[str | None] = field(default_factory=list)
    device_type: list[str | None] = field(default_factory=list)
    page_url: list[str | None] = field(default_factory=list)
    referrer: list[str | None] = field(default_factory=list)
    utm_source: list[str | None] = field(default_factory=list)
    utm_medium: list[str | None] = field(default_factory=list)
    utm_campaign: list[str | None] = field(default_factory=list)
    ip: list[str | None] = field(default_factory=list)
    user_agent: list[str | None] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)
    payload: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_id)

    def add(
        self,
        event: EventBase,
        item: dict[str, Any],
        info: RequestInfo,
        *,
        source: str,
        payload: Any,
    ) -> None:
        """``item`` is the event as validated, ``payload`` as the client sent it.

        What can fail (an event too deep to write) is done before the first append, so a
        failure leaves the columns as they were: the caller rejects the event.
        """
        values = event.__dict__  # plain reads: getattr on a missing field is slow in Pydantic
        # str: orjson's bytes would keep a 4 kB allocation alive per event until the commit.
        payload_json = _dumps(payload).decode()
        properties = values["properties"].model_dump_json(exclude_none=True)
        # Without an id, a hash of what the client sent (for Segment, the original message: the
        # mapped one carries the server's receive time and would differ on every retry).
        self.event_id.append(values["event_id"] or event_id_for(payload))
        self.event_type.append(values["event_type"])
        name = values.get("event_name") or item.get("event_name")
        self.event_name.append(name if isinstance(name, str) else None)
        self.event_ts.append(values["event_ts"])
        self.received_at.append(info.received_at)
        self.user_id.append(values["user_id"])
        self.anonymous_id.append(values["anonymous_id"])
        self.session_id.append(values["session_id"])
        self.device_type.append(values["device_type"])
        self.page_url.append(values["page_url"])
        self.referrer.append(values["referrer"])
        self.utm_source.append(values["utm_source"])
        self.utm_medium.append(values["utm_medium"])
        self.utm_campaign.append(values["utm_campaign"])
        self.ip.append(info.ip)
        self.user_agent.append(info.user_agent)
        self.source.append(source)
        self.properties.append(properties)
        self.payload.append(payload_json)

    def extend(self, other: EventColumns) -> None:
        for name in _COLUMNS:
            getattr(self, name).extend(getattr(other, name))

    def without(self, positions: Collection[int]) -> EventColumns:
        """New columns without the rows at ``positions``; these are left as they are."""
        kept = EventColumns()
        for name in _COLUMNS:
            column = getattr(self, name)
            getattr(kept, name).extend(v for p, v in enumerate(column) if p not in positions)
        return kept

    def to_arrow(self) -> pa.Table:
        arrays: list[pa.Array] = []
        for column in RAW_EVENTS:
            if column.name == "event_date":  # from event_ts, in UTC
                arrays.append(pc.cast(arrays[RAW_EVENTS.names.index("event_ts")], pa.date32()))
            else:
                arrays.append(pa.array(getattr(self, column.name), column.type))
        return pa.Table.from_arrays(arrays, schema=RAW_EVENTS)


#: The field names, for the generic steps (merge, drop rows); appends name each one.
_COLUMNS = tuple(f.name for f in fields(EventColumns))


def reject(
    intake: Intake, index: int, item: Any, reason: str, code: ReasonCode, *, source: str
) -> None:
    """Answer ``item`` with ``reason`` and keep it in raw.dead_letter; never fails."""
    event_type = item.get("event_type") if isinstance(item, dict) else None
    label = event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else "unknown"
    event_id = item.get("event_id") if isinstance(item, dict) else None
    intake.rejected.append(
        Rejection(index, reason, code, label, event_id if isinstance(event_id, str) else None)
    )
    intake.dead_letters.append(
        dead_letter_row(
            "collector",
            reason,
            payload_text(item),
            {
                "index": index,
                "route": intake.info.route,
                "code": code,
                "source": source,
                "ip": intake.info.ip,
            },
        )
    )


def take_native(items: list[Any], info: RequestInfo, settings: CollectorSettings) -> Intake:
    """Validate native events one by one."""
    intake = Intake(info)
    for index, item in enumerate(items):
        take_one(intake, index, item, settings, source="native")
    return intake


def take_segment(
    messages: list[Any],
    info: RequestInfo,
    settings: CollectorSettings,
    *,
    kind: str | None = None,
    sent_at: Any = None,
) -> Intake:
    """Map Segment messages to native events and validate them one by one.

    ``kind`` is the message type implied by a single-message route; ``sent_at`` the batch's
    ``sentAt`` (a message's own wins).
    """
    intake = Intake(info)
    for index, message in enumerate(messages):
        take_one(intake, index, message, settings, source="segment", kind=kind, sent_at=sent_at)
    return intake


def take_one(
    intake: Intake,
    index: int,
    sent: Any,
    settings: CollectorSettings,
    *,
    source: str,
    kind: str | None = None,
    sent_at: Any = None,
) -> None:
    """One event or Segment message, as the client sent it, becomes a row or a rejection.

    Total: whatever ``sent`` holds and whatever fails while taking it, it ends as this
    event's rejection with a reason and a dead-letter row, never as an exception that would
    fail its neighbours.
    """
    try:
        if type(sent) is ExactObject:  # read by the exact parser: a number may not fit
            found = big_number_in(sent)
            if found is not None:
                path, literal = found
                if len(literal) > 60:
                    literal = f"{literal[:40]}… ({len(literal)} characters)"
                reason = (
                    f"{path}: the number {literal} is outside what 64 bits hold (integers "
                    "-2^63 to 2^64-1, floats to about 1.8e308); send it as a string"
                )
                reject(intake, index, sent, reason, ReasonCode.NUMBER_OUT_OF_RANGE, source=source)
                return
        if source != "segment":
            accept_one(intake, index, sent, settings, source=source)
            return
        if not isinstance(sent, dict):
            reason = "a message must be a JSON object"
            reject(intake, index, sent, reason, ReasonCode.INVALID_EVENT, source=source)
            return
        try:
            native = to_native(
                sent, kind=kind, batch_sent_at=sent_at, received_at=intake.info.received_at
            )
        except SegmentError as exc:
            reject(intake, index, sent, str(exc), ReasonCode.INVALID_EVENT, source=source)
            return
        accept_one(intake, index, native, settings, source=source, original=sent)
    except Exception as exc:
        if nested_deeper_than(sent, MAX_NESTING):
            reason = (
                f"the event is nested more than {MAX_NESTING} levels deep (objects and arrays "
                "inside each other), more than can be stored; flatten it"
            )
            reject(intake, index, sent, reason, ReasonCode.TOO_DEEP, source=source)
            return
        log.exception("event %d of a request to %s could not be taken", index, intake.info.route)
        reason = (
            f"this event could not be taken ({type(exc).__name__}); it is kept as sent in "
            "raw.dead_letter"
        )
        reject(intake, index, sent, reason, ReasonCode.UNREADABLE_EVENT, source=source)


def accept_one(
    intake: Intake,
    index: int,
    item: Any,
    settings: CollectorSettings,
    *,
    source: str,
    original: Any = None,
) -> None:
    """Validate one event (native shape) and add it, or its rejection, to ``intake``.

    ``original`` is what the client sent when ``item`` was mapped from another shape
    (Segment); rejections and the payload column keep the original. Timestamps are judged
    against the request's receive time.
    """
    sent = item if original is None else original
    if not isinstance(item, dict):
        reject(
            intake,
            index,
            sent,
            "an event must be a JSON object",
            ReasonCode.INVALID_EVENT,
            source=source,
        )
        return
    try:
        event = event_adapter.validate_python(item)
    except ValidationError as exc:
        reason, code = describe_errors(exc, item)
        reject(intake, index, sent, reason, code, source=source)
        return
    window = intake.window
    if window is None:
        window = intake.window = ClockWindow.at(intake.info.received_at, settings)
    off_clock = window.check(event.event_ts)
    if off_clock is not None:
        code, reason = off_clock
        reject(intake, index, sent, reason, code, source=source)
        return
    intake.events.add(event, item, intake.info, source=source, payload=sent)
