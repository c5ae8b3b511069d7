"""Column values: PostgreSQL's text output → the change envelope's JSON encodings.

pgoutput sends every value as the text its type's output function prints. A :class:`RowDecoder`,
compiled once per :class:`~shopstream.cdc.pgoutput.Relation`, turns one tuple of such text into a
``{column: value}`` dict with Debezium-compatible encodings::

    >>> from shopstream.cdc.pgoutput import Column, Relation
    >>> orders = Relation(None, 16385, "public", "orders", "d", (
    ...     Column(1, "id", INT8, -1), Column(0, "total", NUMERIC, 655366),
    ...     Column(0, "created_at", TIMESTAMPTZ, -1)))
    >>> decoder = RowDecoder(orders)
    >>> row = decoder.row(["42", "1234.50", "2024-06-01 14:00:00.5+02"])
    >>> row
    {'id': 42, 'total': '1234.50', 'created_at': '2024-06-01T12:00:00.5Z'}
    >>> decoder.key(row)
    {'id': 42}

Encodings by type:

=========================================  ===============================================
int2, int4, int8, oid                      int
numeric                                    the exact decimal string as sent ("NaN" too)
money                                      a plain decimal string, "-1234.50" (as Debezium's
                                           string mode), read from lc_monetary=C's
                                           "-$1,234.50" (catalog.SESSION_OPTIONS sets it)
float4, float8                             float; "NaN", "Infinity", "-Infinity" as strings
bool                                       true / false
text, varchar, bpchar, name, citext,       str as sent
uuid, json, jsonb, enums, other types
date                                       "YYYY-MM-DD"
time                                       "HH:MM:SS[.f]" as sent
timetz                                     "HH:MM:SS[.f]Z", shifted to UTC (as Debezium)
timestamp                                  "YYYY-MM-DDTHH:MM:SS[.f]Z" (wall clock read as UTC)
timestamptz                                "YYYY-MM-DDTHH:MM:SS[.f]Z" in UTC, whatever the
                                           session TimeZone was (the offset is parsed)
bytea                                      base64
interval                                   ISO-8601 duration exactly as PostgreSQL's
                                           ``IntervalStyle = iso_8601`` prints it, e.g.
                                           "P1Y2M-3DT4H5M6.5S" (Debezium's string mode)
arrays of the above                        JSON lists (nested for several dimensions; the
                                           lower bounds of ``[0:2]={…}`` are dropped)
domains, arrays of domains                 as their base type, arrays of it
unchanged TOASTed value                    :data:`shopstream.events.change.UNAVAILABLE`
=========================================  ===============================================

Converters are chosen by type OID alone: no encoding depends on the type modifier (a numeric's
scale, a char(n)'s padding and a time's precision are all in the text already). A type that is
not built in converts as the built-in type the catalogue resolves it to (``base_types``, see
:func:`shopstream.cdc.catalog.base_types`), else by the name pgoutput's Type message gives it.

Fractional seconds keep PostgreSQL's digits (it drops trailing zeros). Years outside 1 to 9999 use
ISO-8601 expanded years ("+10000-01-01", 44 BC → "-0043-03-15"); ``infinity`` and
``-infinity`` stay strings.

The replication connection must use PostgreSQL's default output styles: ``DateStyle = ISO``,
``bytea_output`` hex or escape and ``extra_float_digits`` ≥ 1 (the default) so floats round-trip,
and ``lc_monetary = C``.
``IntervalStyle`` may be ``postgres`` (the default) or ``iso_8601``; a value in another style,
or any date/time text that does not parse, is passed on as sent rather than guessed at.
Values must be in text form (pgoutput's ``binary`` option off).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeAlias

from shopstream.cdc.pgoutput import UNCHANGED_TOAST, Relation, UnchangedToast, UserType
from shopstream.events.change import UNAVAILABLE

__all__ = [
    "Converter",
    "RowDecoder",
    "RowDecoders",
    "ValueConversionError",
    "converter_for",
    "parse_array",
]

Converter: TypeAlias = Callable[[str], Any]
#: One tuple's values: pgoutput's TupleValues (a list), or a snapshot row (a tuple).
RowValues: TypeAlias = Sequence[str | bytes | UnchangedToast | None]


class ValueConversionError(ValueError):
    """A column's text could not be converted; says which column and what it held."""


# Type OIDs (fixed in PostgreSQL's catalog, pg_type.dat) ---------------------------------------

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB, INET, CIDR, MACADDR = 1700, 2950, 3802, 869, 650, 829

#: Built-in types by name, for the :class:`UserType` of a domain: pgoutput announces a domain
#: with its base type's name ("" namespace = pg_catalog), so a domain over int4 converts as int4.
BUILTIN_TYPES: Final[Mapping[str, int]] = {
    "bool": BOOL, "bytea": BYTEA, "char": CHAR, "name": NAME, "int8": INT8, "int2": INT2,
    "int4": INT4, "text": TEXT, "oid": OID, "json": JSON, "xml": XML, "float4": FLOAT4,
    "float8": FLOAT8, "money": MONEY, "bpchar": BPCHAR, "varchar": VARCHAR, "date": DATE,
    "time": TIME, "timestamp": TIMESTAMP, "timestamptz": TIMESTAMPTZ, "interval": INTERVAL,
    "timetz": TIMETZ, "numeric": NUMERIC, "uuid": UUID, "jsonb": JSONB, "inet": INET,
    "cidr": CIDR, "macaddr": MACADDR,
}  # fmt: skip

#: Array type OID → element type OID (pg_type.typarray), for the elements we convert.
#: Arrays of other built-in types (box uses ';' as delimiter) stay text as sent.
ARRAY_ELEMENTS: Final[Mapping[int, int]] = {
    1000: BOOL, 1001: BYTEA, 1002: CHAR, 1003: NAME, 1016: INT8, 1005: INT2, 1007: INT4,
    1009: TEXT, 1028: OID, 199: JSON, 143: XML, 1021: FLOAT4, 1022: FLOAT8, 791: MONEY,
    1014: BPCHAR, 1015: VARCHAR, 1182: DATE, 1183: TIME, 1115: TIMESTAMP, 1185: TIMESTAMPTZ,
    1187: INTERVAL, 1270: TIMETZ, 1231: NUMERIC, 2951: UUID, 3807: JSONB, 1041: INET,
    651: CIDR, 1040: MACADDR,
}  # fmt: skip

#: Types below this OID are PostgreSQL's own (FirstGenbkiObjectId); others may be domains.
FIRST_NON_BUILTIN_OID: Final = 10000

#: Fixed-length types: never TOASTed, so their columns skip the unchanged-TOAST test.
FIXED_LENGTH_TYPES: Final = frozenset(
    {BOOL, CHAR, NAME, INT8, INT2, INT4, OID, FLOAT4, FLOAT8, MONEY, DATE, TIME, TIMESTAMP}
    | {TIMESTAMPTZ, INTERVAL, TIMETZ, UUID, MACADDR}
)

# Scalar converters -----------------------------------------------------------------------------

_NON_FINITE: Final = frozenset({"NaN", "Infinity", "-Infinity"})


def float_value(text: str) -> float | str:
    """float4/float8: a float, but NaN and ±Infinity as strings (JSON cannot hold them)."""
    return text if text in _NON_FINITE else float(text)


def bool_value(text: str) -> bool:
    return text == "t"


# money as lc_monetary=C prints it: "$1,234.56", "-$1,234.56" (two decimals, always).
_MONEY_RE: Final = re.compile(r"(-?)\$(\d{1,3}(?:,\d{3})*)(\.\d+)?")


def money_value(text: str) -> str:
    """money → a plain decimal string, "-1234.56": the locale's symbols and grouping dropped.

    Only the C locale's format is read: another lc_monetary's text (e.g. "1.234,56 €") is
    ambiguous, and raises rather than being guessed at.
    """
    m = _MONEY_RE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"money {text!r} is not in lc_monetary=C's format (the session must set it)"
        )
    return f"{m[1]}{m[2].replace(',', '')}{m[3] or ''}"


def bytea_value(text: str) -> str:
    r"""bytea → base64. Reads the hex format (``\x0102``) and the older escape format."""
    if text[:2] == "\\x":
        return base64.b64encode(bytes.fromhex(text[2:])).decode("ascii")
    return base64.b64encode(_unescape_bytea(text)).decode("ascii")


def _unescape_bytea(text: str) -> bytes:
    # Escape format: printable ASCII as is, "\\" for a backslash, "\ooo" octal for the rest.
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("latin-1")
            i += 1
        elif text[i + 1] == "\\":
            out.append(92)
            i += 2
        else:
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
    return bytes(out)


# ISO timestamps as PostgreSQL prints them; the offset may carry minutes and seconds
# (historical local mean time, e.g. "+00:19:32") and BC comes last.
_TIMESTAMP_RE: Final = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+)?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?"
)
_DATE_RE: Final = re.compile(r"(\d{4,})-(\d\d)-(\d\d)( BC)?")


def timestamptz_value(text: str) -> str:
    """timestamptz → ISO-8601 in UTC with ``Z``, whatever offset the server printed."""
    # Fast path: session TimeZone UTC, 4-digit year AD (BC would end in " BC").
    if text[-3:] == "+00" and text[10] == " ":
        return text[:10] + "T" + text[11:-3] + "Z"
    return _timestamp_slow(text)


def timestamp_value(text: str) -> str:
    """timestamp (without time zone) → ISO-8601 with ``Z``: the wall clock is read as UTC."""
    if len(text) >= 19 and text[10] == " " and text[-1] != "C":
        return text[:10] + "T" + text[11:] + "Z"
    return _timestamp_slow(text)


def _timestamp_slow(text: str) -> str:
    m = _TIMESTAMP_RE.fullmatch(text)
    if m is None:
        return text  # infinity, -infinity, or a DateStyle we do not read: pass on as sent
    year_s, month, day, hour, minute, second, fraction, sign, oh, om, osec, bc = m.groups()
    year = 1 - int(year_s) if bc else int(year_s)  # astronomical year: 1 BC is year 0
    offset = int(oh) * 3600 + int(om or 0) * 60 + int(osec or 0) if sign else 0
    if offset == 0:
        clock = f"{hour}:{minute}:{second}"
        return f"{_iso_year(year)}-{month}-{day}T{clock}{fraction or ''}Z"
    seconds = int(hour) * 3600 + int(minute) * 60 + int(second)
    seconds -= offset if sign == "+" else -offset
    days, seconds = divmod(seconds, 86400)
    year, mon, mday = _civil_from_days(_days_from_civil(year, int(month), int(day)) + days)
    hh, rest = divmod(seconds, 3600)
    clock = f"{hh:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{_iso_year(year)}-{mon:02d}-{mday:02d}T{clock}{fraction or ''}Z"


def date_value(text: str) -> str:
    """date → "YYYY-MM-DD"; BC and 5-digit years as ISO expanded years, infinity as sent."""
    if len(text) == 10:
        return text
    m = _DATE_RE.fullmatch(text)
    if m is None:
        return text
    year = 1 - int(m[1]) if m[4] else int(m[1])
    return f"{_iso_year(year)}-{m[2]}-{m[3]}"


def _iso_year(year: int) -> str:
    if 0 <= year <= 9999:
        return f"{year:04d}"
    return f"+{year}" if year > 0 else f"-{-year:04d}"


# Proleptic Gregorian day counting for any year (datetime stops at 1..9999); H. Hinnant's
# public-domain algorithms, days relative to 1970-01-01.
def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


_TIMETZ_RE: Final = re.compile(r"(\d\d):(\d\d):(\d\d)(\.\d+)?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?")


def timetz_value(text: str) -> str:
    """timetz → "HH:MM:SS[.f]Z" shifted to UTC, as Debezium's ZonedTime."""
    if text[-3:] == "+00" and len(text) >= 11:
        return text[:-3] + "Z"
    m = _TIMETZ_RE.fullmatch(text)
    if m is None:
        return text
    hour, minute, second, fraction, sign, oh, om, osec = m.groups()
    offset = int(oh) * 3600 + int(om or 0) * 60 + int(osec or 0)
    seconds = int(hour) * 3600 + int(minute) * 60 + int(second)
    seconds = (seconds - (offset if sign == "+" else -offset)) % 86400
    hh, rest = divmod(seconds, 3600)
    return f"{hh:02d}:{rest // 60:02d}:{rest % 60:02d}{fraction or ''}Z"


# IntervalStyle postgres: "1 year 2 mons -3 days +04:05:06.5" (any part may be missing).
_INTERVAL_RE: Final = re.compile(
    r"(?:([+-]?\d+) years? ?)?(?:([+-]?\d+) mons? ?)?(?:([+-]?\d+) days? ?)?"
    r"(?:([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d+))?)?"
)


def interval_value(text: str) -> str:
    """interval → ISO-8601 duration, character for character PostgreSQL's iso_8601 style."""
    if text[:1] == "P":
        return text  # the server already prints iso_8601
    m = _INTERVAL_RE.fullmatch(text)
    if m is None or not text:
        return text  # sql_standard or postgres_verbose style, or infinity: as sent
    years, months, days, time_sign, hours, minutes, seconds, fraction = m.groups()
    neg = "-" if time_sign == "-" else ""
    parts = ["P"]
    for value, unit in ((years, "Y"), (months, "M"), (days, "D")):
        if value is not None and int(value) != 0:
            parts.append(f"{int(value)}{unit}")
    h = int(hours or 0)
    mi = int(minutes or 0)
    s = int(seconds or 0)
    if h or mi or s or fraction:
        parts.append("T")
        if h:
            parts.append(f"{neg}{h}H")
        if mi:
            parts.append(f"{neg}{mi}M")
        if s or fraction:
            parts.append(f"{neg}{s}.{fraction}S" if fraction else f"{neg}{s}S")
    return "".join(parts) if len(parts) > 1 else "PT0S"


# Arrays ----------------------------------------------------------------------------------------

_ARRAY_TOKEN_RE: Final = re.compile(
    r'"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<brace>[{}])|(?P<bare>[^,{}"]+)|,', re.DOTALL
)
_BACKSLASH_RE: Final = re.compile(r"\\(.)", re.DOTALL)


def parse_array(text: str, element: Converter | None = None) -> list[Any]:
    """Parse PostgreSQL's array text into (nested) lists, converting each non-NULL element.

    >>> parse_array('{{1,NULL},{3,4}}', int)
    [[1, None], [3, 4]]
    >>> parse_array('[0:1]={"a b","NULL"}')
    ['a b', 'NULL']
    """
    if text[:1] == "[":  # "[lb:ub]=" decoration when a lower bound is not 1
        text = text[text.index("=") + 1 :]
    if text[:1] != "{" or text[-1] != "}":
        raise ValueError(f"not an array literal: {text!r}")
    body = text[1:-1]
    if '"' not in body and "{" not in body and "}" not in body:
        # One dimension, nothing quoted: the common case, without a tokenizer.
        if not body:
            return []
        items = body.split(",")
        if element is None:
            return [None if item == "NULL" else item for item in items]
        return [None if item == "NULL" else element(item) for item in items]
    return _parse_nested(text, element)


def _parse_nested(text: str, element: Converter | None) -> list[Any]:
    stack: list[list[Any]] = []
    result: list[Any] | None = None
    for match in _ARRAY_TOKEN_RE.finditer(text):
        kind = match.lastgroup
        if kind is None:  # the delimiter
            continue
        if result is not None:
            raise ValueError(f"text after the end of the array: {text!r}")
        value = match[kind]
        if kind == "brace":
            if value == "{":
                nested: list[Any] = []
                if stack:
                    stack[-1].append(nested)
                stack.append(nested)
            else:
                done = stack.pop()
                if not stack:
                    result = done
            continue
        if not stack:
            raise ValueError(f"element outside braces: {text!r}")
        if kind == "bare":
            if value == "NULL":  # only the unquoted word is NULL; "NULL" is a string
                stack[-1].append(None)
                continue
        elif "\\" in value:
            value = _BACKSLASH_RE.sub(r"\1", value)
        stack[-1].append(value if element is None else element(value))
    if result is None:
        raise ValueError(f"unterminated array literal: {text!r}")
    return result


def _array_of(element: Converter | None) -> Converter:
    def array_value(text: str) -> list[Any]:
        return parse_array(text, element)

    return array_value


# Choosing a converter --------------------------------------------------------------------------

_SCALARS: Final[Mapping[int, Converter]] = {
    INT2: int, INT4: int, INT8: int, OID: int,
    FLOAT4: float_value, FLOAT8: float_value, BOOL: bool_value, BYTEA: bytea_value,
    MONEY: money_value,
    DATE: date_value, TIMETZ: timetz_value, TIMESTAMP: timestamp_value,
    TIMESTAMPTZ: timestamptz_value, INTERVAL: interval_value,
}  # fmt: skip


_ARRAY_OF: Final[Mapping[int, int]] = {element: array for array, element in ARRAY_ELEMENTS.items()}


def _resolve(type_oid: int, types: Mapping[int, UserType]) -> tuple[int, bool]:
    """The built-in type a column converts as, and whether it is an array of unknown elements.

    pgoutput announces a domain with its base type's name, so a domain resolves by name. A
    user type named "_x" is taken for the array of x (PostgreSQL names array types so); its
    elements are kept as text.
    """
    user_type = types.get(type_oid)
    if user_type is None:
        return type_oid, False
    name = user_type.name
    if user_type.namespace in ("", "pg_catalog"):
        base = BUILTIN_TYPES.get(name)
        if base is not None:
            return base, False
        element = BUILTIN_TYPES.get(name[1:]) if name.startswith("_") else None
        if element is not None and element in _ARRAY_OF:
            return _ARRAY_OF[element], False
    return type_oid, name.startswith("_")


def converter_for(
    type_oid: int,
    types: Mapping[int, UserType] | None = None,
    base_types: Mapping[int, int] | None = None,
) -> Converter | None:
    """The converter for a column type, or None where the text is already the value.

    ``base_types``: the built-in type a type that is not built in converts as (a domain as
    its base type, an array of domains as the array of the base type), from the catalogue.
    """
    resolved = base_types.get(type_oid) if base_types else None
    if resolved is not None:
        oid, user_array = resolved, False
    else:
        oid, user_array = _resolve(type_oid, types or {})
    if user_array:
        return _array_of(None)
    element = ARRAY_ELEMENTS.get(oid)
    if element is not None:
        return _array_of(_SCALARS.get(element))
    return _SCALARS.get(oid)


# Rows ------------------------------------------------------------------------------------------


class RowDecoder:
    """Converts one relation's tuples to envelope dicts; compile once per Relation message.

    ``row(values)`` turns a tuple's values, as the decoder returns them, into
    ``{column: value}`` (raising :class:`ValueConversionError` naming the column that failed);
    ``key(row)`` picks the replica identity (or given key) columns of a converted row, or gives
    None where there are none.

    Both are generated Python functions, stored on the instance so that a row costs one call:
    text columns are taken as they are (no identity call), the NULL and unchanged-TOAST tests
    appear only where the column type needs them, and the dict is built in one display.
    Column names never enter the generated source; they are bound as globals K0, K1, ...
    """

    __slots__ = ("converters", "key", "key_columns", "names", "relation", "row")

    def __init__(
        self,
        relation: Relation,
        types: Mapping[int, UserType] | None = None,
        key_columns: Sequence[str] | None = None,
        base_types: Mapping[int, int] | None = None,
    ) -> None:
        """``key_columns`` overrides the key flags (e.g. with the primary key of a table whose
        REPLICA IDENTITY is FULL, where every column is flagged); ``base_types`` as in
        :func:`converter_for`."""
        self.relation = relation
        self.names: tuple[str, ...] = tuple(c.name for c in relation.columns)
        self.converters: tuple[Converter | None, ...] = tuple(
            converter_for(c.type_oid, types, base_types) for c in relation.columns
        )
        if key_columns is None:
            key_columns = [c.name for c in relation.columns if c.is_key]
        unknown = set(key_columns) - set(self.names)
        if unknown:
            raise ValueError(f"key columns {sorted(unknown)} not in {relation.name}")
        self.key_columns: tuple[str, ...] = tuple(key_columns)
        fixed = [c.type_oid in FIXED_LENGTH_TYPES for c in relation.columns]
        self.row: Callable[[RowValues], dict[str, Any]] = _compile_row(
            self.names, self.converters, fixed, self._explain
        )
        self.key: Callable[[Mapping[str, Any]], dict[str, Any] | None] = _compile_key(
            self.key_columns
        )

    def _explain(self, values: RowValues) -> ValueConversionError:
        relation = f"{self.relation.namespace}.{self.relation.name}"
        if len(values) != len(self.names):
            return ValueConversionError(
                f"{relation}: tuple has {len(values)} values, relation has {len(self.names)}"
            )
        for column, convert, value in zip(
            self.relation.columns, self.converters, values, strict=True
        ):
            if convert is None or value is None or value is UNCHANGED_TOAST:
                continue
            try:
                convert(value)  # type: ignore[arg-type]
            except Exception as exc:
                return ValueConversionError(
                    f"{relation}.{column.name} (type oid {column.type_oid}):"
                    f" cannot convert {value!r} ({exc})"
                )
        return ValueConversionError(f"{relation}: cannot convert {values!r}")


def _compile_row(
    names: Sequence[str],
    converters: Sequence[Converter | None],
    fixed: Sequence[bool],
    explain: Callable[[RowValues], Exception],
) -> Callable[[RowValues], dict[str, Any]]:
    scope: dict[str, Any] = {"U": UNCHANGED_TOAST, "UNAV": UNAVAILABLE, "EXPLAIN": explain}
    items = []
    for i, (convert, is_fixed) in enumerate(zip(converters, fixed, strict=True)):
        scope[f"K{i}"] = names[i]
        v = f"v{i}"
        if convert is None:
            expr = v if is_fixed else f"(UNAV if {v} is U else {v})"
        else:
            scope[f"C{i}"] = convert
            toast = "" if is_fixed else f"UNAV if {v} is U else "
            expr = f"(None if {v} is None else {toast}C{i}({v}))"
        items.append(f"K{i}: {expr}")
    unpack = (
        f"{', '.join(f'v{i}' for i in range(len(names)))}, = values" if names else "() = values"
    )
    source = (
        "def row(values):\n"
        "    try:\n"
        f"        {unpack}\n"
        f"        return {{{', '.join(items)}}}\n"
        "    except Exception as exc:\n"  # free in 3.11 until something raises
        "        raise EXPLAIN(values) from exc\n"
    )
    exec(source, scope)  # noqa: S102 - source built only from indexes, see RowDecoder
    row: Callable[[RowValues], dict[str, Any]] = scope["row"]
    return row


def _compile_key(
    key_columns: Sequence[str],
) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
    if not key_columns:
        return lambda row: None
    scope: dict[str, Any] = {f"K{i}": name for i, name in enumerate(key_columns)}
    items = ", ".join(f"K{i}: row[K{i}]" for i in range(len(key_columns)))
    exec(f"def key(row):\n    return {{{items}}}\n", scope)  # noqa: S102
    key: Callable[[Mapping[str, Any]], dict[str, Any] | None] = scope["key"]
    return key


class RowDecoders:
    """RowDecoder per relation, recompiled when a new Relation message replaces the old one.

    ``types`` and ``key_columns`` are read live, when a relation is first compiled: pass the
    decoder's own ``types`` dict (pgoutput sends Type before Relation), and a ``key_columns``
    mapping of (schema, table) to the key to use instead of the key flags, which the caller
    may keep filling (e.g. with primary keys read from the catalogue).

    ``resolve`` (e.g. :func:`shopstream.cdc.catalog.base_types` on a connection) is asked, at
    each compile, for the built-in types the relation's other column types convert as: the
    only way to know an array of domains' elements, which pgoutput does not describe. It is
    asked again for each new Relation message, so a type re-created after DDL is seen anew.
    """

    __slots__ = ("_by_id", "key_columns", "resolve", "types")

    def __init__(
        self,
        types: Mapping[int, UserType] | None = None,
        key_columns: Mapping[tuple[str, str], Sequence[str]] | None = None,
        resolve: Callable[[Collection[int]], Mapping[int, int]] | None = None,
    ) -> None:
        self.types: Mapping[int, UserType] = types if types is not None else {}
        self.key_columns: Mapping[tuple[str, str], Sequence[str]] = (
            key_columns if key_columns is not None else {}
        )
        self.resolve = resolve
        self._by_id: dict[int, RowDecoder] = {}

    def get(self, relation: Relation) -> RowDecoder:
        decoder = self._by_id.get(relation.id)
        if decoder is None or decoder.relation is not relation:
            key = self.key_columns.get((relation.namespace, relation.name))
            base_types: Mapping[int, int] | None = None
            if self.resolve is not None:
                own = {c.type_oid for c in relation.columns if c.type_oid >= FIRST_NON_BUILTIN_OID}
                base_types = self.resolve(own) if own else None
            decoder = RowDecoder(relation, self.types, key, base_types)
            self._by_id[relation.id] = decoder
        return decoder
