"""From a request body to raw rows: decode, split into events, validate each one.

Pure functions, no HTTP: the routes in :mod:`shopstream.collector.app` call them. Every
rejection carries a reason a tracker developer can act on, and one bad event never rejects
its neighbours.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from shopstream.config import CollectorSettings
from shopstream.events.behaviour import EVENT_TYPES, EventBase, event_adapter
from shopstream.sinks.warehouse import dead_letter_row
from shopstream.warehouse.raw import RAW_EVENTS

_dumps = orjson.dumps

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c3c1e-9a53-4b0e-8d3f-6d1f4c0a7e21")


class BodyError(Exception):
    """The whole request is refused; ``status`` and ``code`` say how to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class Rejection:
    index: int
    reason: str
    code: str
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
    window: tuple[datetime, datetime] | None = None

    def rows(self) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        if len(self.events):
            rows["events"] = self.events
        if self.dead_letters:
            rows["dead_letter"] = self.dead_letters
        return rows

    def accepted_types(self) -> list[str]:
        return self.events.event_type  # type: ignore[attr-defined]


def gunzip(body: bytes, limit: int) -> bytes:
    """Undo gzip without letting a small bomb expand past ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError(
            400, "bad_gzip", f"Content-Encoding is gzip but the body is not: {exc}"
        ) from exc
    if len(out) > limit:
        raise BodyError(
            413, "body_too_large", f"body is larger than {limit} bytes once decompressed"
        )
    if not inflater.eof:
        raise BodyError(400, "bad_gzip", "gzip body is truncated")
    return out


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BodyError(400, "invalid_json", "the body is empty; send a JSON event or array")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


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
            "invalid_body",
            'expected a JSON object (one event), an array of events, or {"events": [...]}',
        )
    if len(items) > max_events:
        raise BodyError(
            413,
            "too_many_events",
            f"{len(items)} events in one request; the limit is {max_events} "
            "(collector.max_events_per_request)",
        )
    return items


def describe_errors(exc: ValidationError, item: Any) -> tuple[str, str]:
    """A one-line reason and a reason code from Pydantic's errors."""
    parts = []
    code = "invalid_event"
    for error in exc.errors(include_url=False):
        kind = error["type"]
        if kind == "union_tag_invalid":
            got = item.get("event_type") if isinstance(item, dict) else None
            return (
                f"unknown event_type {got!r}; expected one of: {', '.join(EVENT_TYPES)}",
                "unknown_event_type",
            )
        if kind == "union_tag_not_found":
            return "event_type is missing", "missing_event_type"
        # The first location element is the union tag; the reader wants the field path.
        loc = [str(p) for p in error["loc"][1:]] if error["loc"] else []
        where = ".".join(loc) or "event"
        parts.append(f"{where}: {error['msg']}")
        if kind == "missing":
            code = "missing_field"
    return "; ".join(parts), code


def event_id_for(item: Any) -> str:
    """A deterministic id for events sent without one, so that re-sends deduplicate."""
    data = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, hashlib.sha256(data).hexdigest()))


def clock_window(now: datetime, settings: CollectorSettings) -> tuple[datetime, datetime]:
    """The earliest and latest acceptable event_ts, once per request."""
    return (
        now - timedelta(days=settings.max_event_age_days),
        now + timedelta(seconds=settings.future_tolerance_seconds),
    )


def check_clock(event: EventBase, now: datetime, settings: CollectorSettings) -> str | None:
    if event.event_ts > now + timedelta(seconds=settings.future_tolerance_seconds):
        return (
            f"event_ts {event.event_ts.isoformat()} is more than "
            f"{settings.future_tolerance_seconds} s ahead of the server clock "
            f"({now.isoformat()}); check the device clock"
        )
    if event.event_ts < now - timedelta(days=settings.max_event_age_days):
        return (
            f"event_ts {event.event_ts.isoformat()} is older than "
            f"{settings.max_event_age_days} days (collector.max_event_age_days)"
        )
    return None


class EventColumns:
    """``raw.events`` rows, built column by column (the collector's hot path: no dict per
    row). Requests' columns are merged in the sink and become one Arrow table per group
    commit, so a one-event request costs a few appends, not an Arrow conversion."""

    __slots__ = tuple(column.name for column in RAW_EVENTS if column.name != "event_date")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.event_id)  # type: ignore[attr-defined]

    def add(
        self,
        event: EventBase,
        item: dict[str, Any],
        info: RequestInfo,
        *,
        source: str,
        payload: Any,
    ) -> None:
        """``item`` is the event as validated, ``payload`` as the client sent it."""
        fields = event.__dict__  # plain reads: getattr on a missing field is slow in Pydantic
        # Without an id, a hash of what the client sent (for Segment, the original message: the
        # mapped one carries the server's receive time and would differ on every retry).
        self.event_id.append(fields["event_id"] or event_id_for(payload))  # type: ignore[attr-defined]
        self.event_type.append(fields["event_type"])  # type: ignore[attr-defined]
        name = fields.get("event_name") or item.get("event_name")
        self.event_name.append(name if isinstance(name, str) else None)  # type: ignore[attr-defined]
        self.event_ts.append(fields["event_ts"])  # type: ignore[attr-defined]
        self.received_at.append(info.received_at)  # type: ignore[attr-defined]
        self.user_id.append(fields["user_id"])  # type: ignore[attr-defined]
        self.anonymous_id.append(fields["anonymous_id"])  # type: ignore[attr-defined]
        self.session_id.append(fields["session_id"])  # type: ignore[attr-defined]
        self.device_type.append(fields["device_type"])  # type: ignore[attr-defined]
        self.page_url.append(fields["page_url"])  # type: ignore[attr-defined]
        self.referrer.append(fields["referrer"])  # type: ignore[attr-defined]
        self.utm_source.append(fields["utm_source"])  # type: ignore[attr-defined]
        self.utm_medium.append(fields["utm_medium"])  # type: ignore[attr-defined]
        self.utm_campaign.append(fields["utm_campaign"])  # type: ignore[attr-defined]
        self.ip.append(info.ip)  # type: ignore[attr-defined]
        self.user_agent.append(info.user_agent)  # type: ignore[attr-defined]
        self.source.append(source)  # type: ignore[attr-defined]
        self.properties.append(  # type: ignore[attr-defined]
            fields["properties"].model_dump_json(exclude_none=True)
        )
        # str: orjson's bytes would keep a 4 kB allocation alive per event until the commit.
        self.payload.append(_dumps(payload).decode())  # type: ignore[attr-defined]

    def extend(self, other: EventColumns) -> None:
        for name in self.__slots__:
            getattr(self, name).extend(getattr(other, name))

    def to_arrow(self) -> pa.Table:
        arrays: list[pa.Array] = []
        for column in RAW_EVENTS:
            if column.name == "event_date":
                arrays.append(pc.cast(arrays[3], pa.date32()))  # from event_ts, in UTC
            else:
                arrays.append(pa.array(getattr(self, column.name), column.type))
        return pa.Table.from_arrays(arrays, schema=RAW_EVENTS)


def reject(intake: Intake, index: int, item: Any, reason: str, code: str, *, source: str) -> None:
    event_type = item.get("event_type") if isinstance(item, dict) else None
    label = event_type if event_type in EVENT_TYPES else "unknown"
    event_id = item.get("event_id") if isinstance(item, dict) else None
    intake.rejected.append(
        Rejection(index, reason, code, label, event_id if isinstance(event_id, str) else None)
    )
    intake.dead_letters.append(
        dead_letter_row(
            "collector",
            reason,
            orjson.dumps(item, default=str).decode(),
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
        accept_one(intake, index, item, settings, source="native")
    return intake


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
            intake, index, sent, "an event must be a JSON object", "invalid_event", source=source
        )
        return
    try:
        event = event_adapter.validate_python(item)
    except ValidationError as exc:
        reason, code = describe_errors(exc, item)
        reject(intake, index, sent, reason, code, source=source)
        return
    now = intake.info.received_at
    if intake.window is None:
        intake.window = clock_window(now, settings)
    earliest, latest = intake.window
    event_ts = event.event_ts
    clock_problem = None if earliest <= event_ts <= latest else check_clock(event, now, settings)
    if clock_problem:
        code = "future_timestamp" if "ahead" in clock_problem else "old_timestamp"
        reject(intake, index, sent, clock_problem, code, source=source)
        return
    intake.events.add(event, item, intake.info, source=source, payload=sent)
