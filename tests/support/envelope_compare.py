"""Compare our change envelopes with Debezium's, change by change.

Both lists hold Debezium-shaped events (``op``, ``before``, ``after``, ``source``). Events are
matched by **(txId, position in the transaction)**, the position counted in the order each tool
delivered its events (ours: ``change_id`` order). Neither LSN nor (LSN, table) is a unique key:
a primary-key update becomes two Debezium events (delete, create) with the same LSN, and a
multi-insert WAL record (COPY) decodes into several rows with one LSN. Events without a txId
fall back to (lsn, table, position among events with that lsn and table).

Compared: ``op``, ``before``, ``after`` and ``source`` schema, table, txId, lsn and ts_ms (commit
time, within 1 ms: one tool may round where the other truncates). Not compared: the top-level
``ts_ms``/``ts_us``/``ts_ns`` (each tool's own clock), ``source.version``/``name``/
``connector``/``db``/``snapshot`` (identity and configuration), Debezium-only fields
(``sequence``, ``xmin``, ``origin``, ``transaction``).

Column values are compared after :func:`normalise_value`, applied to both sides alike. Each rule
covers an encoding in which the two may legitimately differ while meaning the same value:

1. A column missing on one side and null on the other is equal. Debezium's value struct always
   lists every column, so for a delete (or the delete half of a key change) under REPLICA
   IDENTITY DEFAULT it writes null for the non-key columns the server never sent.
2. Unchanged TOASTed values: Debezium writes ``["__debezium_unavailable_value"]`` for an array
   column and base64 of the placeholder's bytes for a bytea column; both mean "not sent",
   which our envelope writes as the plain placeholder string.
3. ``time.precision.mode=isostring`` appends ``Z`` to zone-less values: dates
   ("2024-02-29Z"), times ("13:14:15.5Z") and timestamps ("2024-02-29T13:14:15.123456Z"). A
   date loses the ``Z``; a time (or timetz, which both write in UTC with ``Z``) becomes
   ``HH:MM:SS.ffffff``; every ISO timestamp (``T`` separator required, as ISO-8601 wants)
   becomes ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, naive ones read as UTC. Fraction digits
   (timestamptz always has six in Debezium, PostgreSQL drops trailing zeros) and ``+00:00``
   versus ``Z`` thus do not count; a non-UTC offset is converted. The envelope's "timestamptz
   in UTC" rule is not checked here: the tests assert it on our side directly.
4. PostgreSQL's ``infinity``/``-infinity``: for timestamp Debezium writes the instants
   ``+294247-01-10T04:00:25.2Z`` / ``-290308-12-21T19:59:27.6Z`` (its clamped extremes), for
   date the overflowed days ``-5877611-06-21Z`` / ``-5877611-06-22Z``; they become
   ``infinity`` / ``-infinity`` as PostgreSQL (and timestamptz in Debezium) spells them.
5. Non-finite numbers: JSON has no NaN or Infinity, so Debezium writes float8 NaN/±Infinity as
   the strings "NaN", "Infinity", "-Infinity" and numeric NaN as "NAN". Both become the float
   spellings "NaN"/"Infinity"/"-Infinity"; a Python float nan/inf becomes the same string. A
   null where the other side has "NaN" is a real difference (e.g. orjson writes NaN as null).
6. Numbers compare as numbers (1 == 1.0). NUMERIC stays a string on both sides and is compared
   exactly, scale included: "1.500" and "1.5" differ, as the envelope promises the exact text.
7. ISO-8601 durations (interval.handling.mode=string): Debezium writes every component
   ("P0Y0M-1DT0H0M-1S"), PostgreSQL's iso_8601 style omits zero ones ("P-1DT-1S"); both become
   the all-component form with the seconds' trailing zeros dropped.

Where Debezium itself loses information the oracle cannot judge, and the tests avoid the case:
multi-dimensional arrays (Debezium 3.6 writes ``[null, null]`` for ``{{1,2},{3,4}}``) and the
time ``24:00:00`` (Debezium writes ``00:00:00``).

Everything else (text, JSON text, uuid, enum, base64 bytea, arrays element by element) must be
equal as is.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

UNAVAILABLE = "__debezium_unavailable_value"
_UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE.encode()).decode()

# Years may be ISO-8601 expanded ("+10000", "-0043" for 44 BC), as both tools write them.
_DATE_Z = re.compile(r"^([+-]?\d{4,}-\d{2}-\d{2})Z$")
_TIME = re.compile(r"^(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z?$")
_TIMESTAMP = re.compile(
    r"^([+-]?\d{4,}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$"
)
_DURATION = re.compile(
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$"
)
_DEBEZIUM_INFINITY = {
    "+294247-01-10T": "infinity",
    "-290308-12-21T": "-infinity",
    "-5877611-06-21Z": "infinity",
    "-5877611-06-22Z": "-infinity",
}
_NON_FINITE = {"NaN": "NaN", "NAN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}

_SOURCE_FIELDS = ("schema", "table", "txId", "lsn", "ts_ms")


def normalise_value(value: Any) -> Any:
    """One column value in the comparable form described in the module docstring."""
    if isinstance(value, list):
        if value == [UNAVAILABLE]:
            return UNAVAILABLE
        return [normalise_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if not isinstance(value, str):
        return value
    if value == _UNAVAILABLE_B64:
        return UNAVAILABLE
    if value in _NON_FINITE:
        return _NON_FINITE[value]
    for prefix, spelled in _DEBEZIUM_INFINITY.items():
        if value.startswith(prefix):
            return spelled
    if match := _DATE_Z.match(value):
        return match.group(1)
    if match := _TIME.match(value):
        clock, fraction = match.groups()
        return f"{clock}.{(fraction or '').ljust(6, '0')[:6]}"
    if match := _TIMESTAMP.match(value):
        return _canonical_timestamp(*match.groups())
    if value != "P" and (match := _DURATION.match(value)):
        return _canonical_duration(*match.groups())
    return value


def _canonical_duration(*parts: str | None) -> str:
    *whole, seconds = (p or "0" for p in parts)
    sec = seconds.rstrip("0").rstrip(".") if "." in seconds else seconds
    return "P{}Y{}M{}DT{}H{}M{}S".format(*(int(w) for w in whole), sec)


def _canonical_timestamp(date: str, time: str, fraction: str | None, zone: str | None) -> str:
    micros = (fraction or "").ljust(6, "0")[:6]
    try:
        parsed = datetime.fromisoformat(f"{date}T{time}.{micros}{_iso_zone(zone)}")
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        # A year datetime cannot hold (expanded years): canonical only when it is UTC.
        utc = zone in (None, "Z", "+00:00", "+0000", "+00")
        return f"{date}T{time}.{micros}{'Z' if utc else zone}"
    return parsed.isoformat(timespec="microseconds") + "Z"  # strftime drops year 1's zeros


def _iso_zone(zone: str | None) -> str:
    if zone is None or zone == "Z":
        return "+00:00" if zone else ""
    return zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"


def _normalise_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {column: normalise_value(v) for column, v in row.items()}


def normalise(event: dict[str, Any]) -> dict[str, Any]:
    """The compared part of one envelope (ours or Debezium's), values normalised."""
    source = event.get("source") or {}
    return {
        "op": event.get("op"),
        "before": _normalise_row(event.get("before")),
        "after": _normalise_row(event.get("after")),
        "source": {field: source.get(field) for field in _SOURCE_FIELDS},
    }


def _keyed(events: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Normalised events by (txId, position in tx), in the order given."""
    seen: dict[tuple[Any, ...], int] = {}
    keyed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for event in events:
        norm = normalise(event)
        src = norm["source"]
        group: tuple[Any, ...] = (
            ("tx", src["txId"])
            if src["txId"] is not None
            else ("lsn", src["lsn"], src["schema"], src["table"])
        )
        position = seen.get(group, 0)
        seen[group] = position + 1
        keyed[(*group, position)] = norm
    return keyed


def _label(key: tuple[Any, ...], event: dict[str, Any]) -> str:
    src = event["source"]
    where = f"tx {key[1]} #{key[-1]}" if key[0] == "tx" else f"lsn {key[1]} #{key[-1]}"
    return f"{where} ({src['schema']}.{src['table']} op={event['op']} lsn={src['lsn']})"


def _diff_rows(part: str, ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[str]:
    if ours is None or theirs is None:
        if ours is theirs:
            return []
        return [f"{part}: ours {_short(ours)} != debezium {_short(theirs)}"]
    problems = []
    for column in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(column), theirs.get(column)  # rule 1: missing equals null
        if a != b:
            problems.append(f"{part}.{column}: ours {_short(a)} != debezium {_short(b)}")
    return problems


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} chars)"


def diff_envelopes(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Every difference between our events and Debezium's, one readable line each.

    Both lists in delivery order (ours sorted by change_id). Empty means equivalent.
    """
    mine, dbz = _keyed(ours), _keyed(theirs)
    problems: list[str] = []
    for key in sorted(dbz.keys() - mine.keys(), key=repr):
        problems.append(f"missing in ours: {_label(key, dbz[key])}")
    for key in sorted(mine.keys() - dbz.keys(), key=repr):
        problems.append(f"not in debezium: {_label(key, mine[key])}")
    for key in [k for k in dbz if k in mine]:
        a, b = mine[key], dbz[key]
        if a["op"] != b["op"]:
            # The rows of different operations differ anyway; one line says what happened.
            problems.append(f"{_label(key, b)}: op: ours {a['op']!r} != debezium {b['op']!r}")
            continue
        found = []
        for field in _SOURCE_FIELDS:
            x, y = a["source"][field], b["source"][field]
            if field == "ts_ms" and isinstance(x, int) and isinstance(y, int):
                if abs(x - y) > 1:
                    found.append(f"source.ts_ms: ours {x} != debezium {y}")
            elif x != y:
                found.append(f"source.{field}: ours {x!r} != debezium {y!r}")
        found += _diff_rows("before", a["before"], b["before"])
        found += _diff_rows("after", a["after"], b["after"])
        problems += [f"{_label(key, b)}: {line}" for line in found]
    # Matching by key ignores order; transactions must also arrive in the same (commit) order.
    tx_order = [k[1] for k in mine if k[0] == "tx" and k[-1] == 0]
    dbz_order = [k[1] for k in dbz if k[0] == "tx" and k[-1] == 0]
    if not problems and tx_order != dbz_order:
        problems.append(f"transaction order: ours {tx_order} != debezium {dbz_order}")
    return problems
