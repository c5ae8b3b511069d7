"""Text → envelope value conversion. Expected values for PostgreSQL's output are copied from a
real PostgreSQL 15 (psql); tests/integration/test_cdc_types.py checks them end to end."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopstream.cdc import values
from shopstream.cdc.pgoutput import UNCHANGED_TOAST, Column, Relation, TupleValues, UserType
from shopstream.cdc.values import (
    RowDecoder,
    RowDecoders,
    ValueConversionError,
    converter_for,
    parse_array,
)
from shopstream.events.change import UNAVAILABLE


def convert(type_oid: int, text: str, types: dict[int, UserType] | None = None) -> Any:
    conv = converter_for(type_oid, types)
    return text if conv is None else conv(text)


# Scalars -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (values.INT2, "-32768", -32768),
        (values.INT4, "2147483647", 2147483647),
        (values.INT8, "-9223372036854775808", -9223372036854775808),
        (values.OID, "4294967295", 4294967295),
        (
            values.NUMERIC,
            "100000000000000000000.000000000001",
            "100000000000000000000.000000000001",
        ),
        (values.NUMERIC, "0.00000000000000000001", "0.00000000000000000001"),
        (values.NUMERIC, "NaN", "NaN"),
        (values.NUMERIC, "-Infinity", "-Infinity"),
        (values.FLOAT8, "1.5", 1.5),
        (values.FLOAT8, "-1e-300", -1e-300),
        (values.FLOAT8, "1.7976931348623157e+308", 1.7976931348623157e308),
        (values.FLOAT4, "1.1", 1.1),
        (values.FLOAT8, "NaN", "NaN"),
        (values.FLOAT8, "Infinity", "Infinity"),
        (values.FLOAT4, "-Infinity", "-Infinity"),
        (values.BOOL, "t", True),
        (values.BOOL, "f", False),
        (values.TEXT, 'it\'s "quoted"\n', 'it\'s "quoted"\n'),
        (values.VARCHAR, "Müller", "Müller"),
        (values.BPCHAR, "EUR  ", "EUR  "),  # char(n) keeps its padding, as Debezium does
        (values.NAME, "orders", "orders"),
        (
            values.UUID,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        (values.JSON, '{"b": 1,  "a": [1, 2]}', '{"b": 1,  "a": [1, 2]}'),  # JSON as sent
        (values.JSONB, '{"a": [1, 2], "b": 1}', '{"a": [1, 2], "b": 1}'),
        (values.BYTEA, "\\x", ""),
        (values.BYTEA, "\\x00ff10", base64.b64encode(b"\x00\xff\x10").decode()),
        (values.INET, "192.168.0.1/24", "192.168.0.1/24"),
        (99999, "anything (user type)", "anything (user type)"),
    ],
)
def test_scalar(type_oid: int, text: str, expected: Any) -> None:
    result = convert(type_oid, text)
    assert result == expected
    assert type(result) is type(expected)


def test_text_like_types_need_no_converter() -> None:
    for oid in (values.TEXT, values.VARCHAR, values.BPCHAR, values.NAME, values.NUMERIC):
        assert converter_for(oid) is None
    for oid in (values.UUID, values.JSON, values.JSONB, values.TIME, 99999):
        assert converter_for(oid) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", b"abc"),
        ("\\\\", b"\\"),
        ("a\\000b\\377", b"a\x00b\xff"),
        ("\\001\\\\\\002", b"\x01\\\x02"),
    ],
)
def test_bytea_escape_format(text: str, expected: bytes) -> None:
    assert base64.b64decode(convert(values.BYTEA, text)) == expected


@given(st.binary(max_size=200))
def test_bytea_hex_round_trip(data: bytes) -> None:
    assert base64.b64decode(convert(values.BYTEA, "\\x" + data.hex())) == data


# Dates and times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01", "2024-06-01"),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
        ("0044-03-15 BC", "-0043-03-15"),
        ("0001-01-01 BC", "0000-01-01"),
        ("10000-01-01", "+10000-01-01"),
    ],
)
def test_date(text: str, expected: str) -> None:
    assert convert(values.DATE, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01 12:34:56", "2024-06-01T12:34:56Z"),
        ("2024-06-01 12:34:56.123456", "2024-06-01T12:34:56.123456Z"),
        ("2024-06-01 00:00:00.5", "2024-06-01T00:00:00.5Z"),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
        ("0044-03-15 12:00:00 BC", "-0043-03-15T12:00:00Z"),
        ("294276-12-31 23:59:59.999999", "+294276-12-31T23:59:59.999999Z"),
    ],
)
def test_timestamp(text: str, expected: str) -> None:
    assert convert(values.TIMESTAMP, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01 12:34:56.123456+00", "2024-06-01T12:34:56.123456Z"),
        ("2024-06-01 14:00:00.5+02", "2024-06-01T12:00:00.5Z"),
        ("2024-01-01 00:30:00+05:30", "2023-12-31T19:00:00Z"),  # crosses midnight and a year
        ("2024-02-28 22:00:00-03", "2024-02-29T01:00:00Z"),  # into a leap day
        ("2023-02-28 22:00:00-03", "2023-03-01T01:00:00Z"),
        ("2024-11-03 01:30:00-02:30", "2024-11-03T04:00:00Z"),
        ("1890-01-01 00:19:32+00:19:32", "1890-01-01T00:00:00Z"),  # Amsterdam local mean time
        ("2024-06-01 12:00:00+00:00", "2024-06-01T12:00:00Z"),
        ("0044-03-15 12:00:00+00:19:32 BC", "-0043-03-15T11:40:28Z"),
        ("0001-01-01 00:00:00+01", "0000-12-31T23:00:00Z"),  # into 1 BC
        ("10000-01-01 00:00:00+00", "+10000-01-01T00:00:00Z"),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
        ("01/06/2024 12:00:00 CEST", "01/06/2024 12:00:00 CEST"),  # another DateStyle: as sent
    ],
)
def test_timestamptz(text: str, expected: str) -> None:
    assert convert(values.TIMESTAMPTZ, text) == expected


def _pg_offset(offset: timedelta) -> str:
    """Format a UTC offset as PostgreSQL prints it: +HH, +HH:MM or +HH:MM:SS."""
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}"
    if minutes or seconds:
        text += f":{minutes:02d}"
    if seconds:
        text += f":{seconds:02d}"
    return text


@given(
    moment=st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    offset_s=st.integers(min_value=-15 * 3600 + 1, max_value=15 * 3600 - 1),
)
def test_timestamptz_matches_python_for_any_offset(moment: datetime, offset_s: int) -> None:
    tz = timezone(timedelta(seconds=offset_s))
    local = moment.replace(tzinfo=tz)
    fraction = f".{local.microsecond:06d}".rstrip("0").rstrip(".")
    # strftime's %Y does not pad years below 1000 on every platform, so format by hand.
    text = (
        f"{local:%Y}".zfill(4)
        + f"{local:-%m-%d %H:%M:%S}{fraction}{_pg_offset(tz.utcoffset(None))}"
    )
    utc = local.astimezone(UTC)
    expected = f"{utc:%Y}".zfill(4) + f"{utc:-%m-%dT%H:%M:%S}{fraction}Z"
    assert convert(values.TIMESTAMPTZ, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("04:05:06+00", "04:05:06Z"),
        ("04:05:06.5+05:30", "22:35:06.5Z"),
        ("23:00:00-08", "07:00:00Z"),
        ("00:00:00+00:19:32", "23:40:28Z"),
        ("24:00:00+00", "24:00:00Z"),
    ],
)
def test_timetz_is_shifted_to_utc(text: str, expected: str) -> None:
    assert convert(values.TIMETZ, text) == expected


def test_time_is_kept() -> None:
    assert convert(values.TIME, "04:05:06.789") == "04:05:06.789"


# PostgreSQL 15, the same intervals under IntervalStyle postgres and iso_8601.
INTERVALS = [
    ("1 year 2 mons -3 days +04:05:06.5", "P1Y2M-3DT4H5M6.5S"),
    ("-1 days -00:00:01", "P-1DT-1S"),
    ("100:00:00", "PT100H"),
    ("00:00:00", "PT0S"),
    ("-2 mons", "P-2M"),
    ("1 mon -00:00:01", "P1MT-1S"),
    ("1 day", "P1D"),
    ("-00:00:00.000001", "PT-0.000001S"),
    ("-1 years -11 mons", "P-1Y-11M"),
    ("00:01:00", "PT1M"),
    ("2 days 00:00:01.25", "P2DT1.25S"),
]


@pytest.mark.parametrize(("postgres_style", "iso"), INTERVALS)
def test_interval_postgres_style_becomes_iso(postgres_style: str, iso: str) -> None:
    assert convert(values.INTERVAL, postgres_style) == iso


@pytest.mark.parametrize(("postgres_style", "iso"), INTERVALS)
def test_interval_iso_style_is_kept(postgres_style: str, iso: str) -> None:
    assert convert(values.INTERVAL, iso) == iso


@pytest.mark.parametrize("text", ["1-2 3 4:05:06", "@ 1 year 2 mons", "infinity", ""])
def test_interval_in_other_styles_is_passed_on(text: str) -> None:
    assert convert(values.INTERVAL, text) == text


# Arrays ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (1007, "{}", []),
        (1007, "{1,2,3}", [1, 2, 3]),
        (1007, "{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
        (1007, "[0:1]={1,2}", [1, 2]),
        (1007, "[0:1][1:1]={{1},{2}}", [[1], [2]]),
        (1007, "{{{1}},{{2}}}", [[[1]], [[2]]]),
        (
            1009,
            '{"a b","c\\"d",NULL,"NULL","","x\\\\y"," lead","{",ok}',
            ["a b", 'c"d', None, "NULL", "", "x\\y", " lead", "{", "ok"],
        ),
        (1009, '{"a,b","}"}', ["a,b", "}"]),
        (1009, '{"line\nbreak"}', ["line\nbreak"]),
        (1001, '{"\\\\x0102",NULL}', [base64.b64encode(b"\x01\x02").decode(), None]),
        (3807, '{"{\\"a\\": 1}","[1, 2]"}', ['{"a": 1}', "[1, 2]"]),
        (1022, "{1.5,NaN,Infinity,-Infinity}", [1.5, "NaN", "Infinity", "-Infinity"]),
        (1231, "{1.50,NaN,-0.001}", ["1.50", "NaN", "-0.001"]),
        (1185, '{"2024-01-01 00:30:00+05:30",NULL}', ["2023-12-31T19:00:00Z", None]),
        (1000, "{t,f,NULL}", [True, False, None]),
        (2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        (1182, "{2024-06-01,infinity}", ["2024-06-01", "infinity"]),
        (1187, '{"1 day",-00:00:01}', ["P1D", "PT-1S"]),
    ],
)
def test_array(type_oid: int, text: str, expected: list[Any]) -> None:
    assert convert(type_oid, text) == expected


@pytest.mark.parametrize("text", ["1,2", "{1,2", "{{1},{2}", "{1}}", "{1}x{2}", "{}{}"])
def test_malformed_array_raises(text: str) -> None:
    with pytest.raises(ValueError, match="array"):
        parse_array(text)


_NEEDS_QUOTES = re.compile(r'[{},"\\\s]')


def _pg_array_literal(value: list[Any]) -> str:
    """Render a (nested) list of str/None as PostgreSQL's array_out does."""
    parts = []
    for item in value:
        if isinstance(item, list):
            parts.append(_pg_array_literal(item))
        elif item is None:
            parts.append("NULL")
        elif item == "" or item.upper() == "NULL" or _NEEDS_QUOTES.search(item):
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(item)
    return "{" + ",".join(parts) + "}"


_elements = st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]), max_size=8))


@st.composite
def _rectangular_arrays(draw: st.DrawFn) -> list[Any]:
    # PostgreSQL arrays are rectangular: every sub-array of a dimension has the same length.
    dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))

    def build(level: int) -> list[Any]:
        if level == len(dims) - 1:
            return [draw(_elements) for _ in range(dims[level])]
        return [build(level + 1) for _ in range(dims[level])]

    return build(0)


@given(_rectangular_arrays())
def test_array_literal_round_trip(value: list[Any]) -> None:
    assert parse_array(_pg_array_literal(value)) == value


# Rows --------------------------------------------------------------------------------------------

ORDERS = Relation(
    xid=None,
    id=16385,
    namespace="public",
    name="orders",
    replica_identity="d",
    columns=(
        Column(1, "id", values.INT8, -1),
        Column(0, "status", values.TEXT, -1),
        Column(0, "total", values.NUMERIC, 655366),
        Column(0, "paid", values.BOOL, -1),
        Column(0, "created_at", values.TIMESTAMPTZ, -1),
        Column(0, "note", values.TEXT, -1),
        Column(0, "attachment", values.BYTEA, -1),
        Column(0, "tags", 1009, -1),
    ),
)


def test_row() -> None:
    decoder = RowDecoder(ORDERS)
    row = decoder.row(
        ["42", "paid", "1234.50", "t", "2024-06-01 14:00:00+02", None, "\\x01", '{a,"b c"}']
    )
    assert row == {
        "id": 42,
        "status": "paid",
        "total": "1234.50",
        "paid": True,
        "created_at": "2024-06-01T12:00:00Z",
        "note": None,
        "attachment": "AQ==",
        "tags": ["a", "b c"],
    }
    assert list(row) == [c.name for c in ORDERS.columns]  # column order is kept
    assert decoder.key(row) == {"id": 42}


def test_all_nulls() -> None:
    row = RowDecoder(ORDERS).row([None] * 8)
    assert row == dict.fromkeys((c.name for c in ORDERS.columns), None)


def test_unchanged_toast_becomes_unavailable_for_text_and_converted_columns() -> None:
    t: TupleValues = ["1", UNCHANGED_TOAST, "1", "f", None, UNCHANGED_TOAST]
    row = RowDecoder(ORDERS).row([*t, UNCHANGED_TOAST, UNCHANGED_TOAST])
    assert row["status"] == UNAVAILABLE
    assert row["note"] == UNAVAILABLE
    assert row["attachment"] == UNAVAILABLE
    assert row["tags"] == UNAVAILABLE
    assert row["created_at"] is None


def test_key_from_key_flags_override_and_none() -> None:
    full = Relation(
        None, 1, "public", "t", "f", (Column(1, "a", values.INT4, -1), Column(1, "b", 25, -1))
    )
    row = {"a": 1, "b": "x"}
    assert RowDecoder(full).key(row) == {"a": 1, "b": "x"}  # REPLICA IDENTITY FULL
    assert RowDecoder(full, key_columns=["a"]).key(row) == {"a": 1}
    nothing = Relation(None, 2, "public", "t", "n", (Column(0, "a", values.INT4, -1),))
    assert RowDecoder(nothing).key({"a": 1}) is None
    with pytest.raises(ValueError, match="not in"):
        RowDecoder(full, key_columns=["missing"])


def test_column_names_are_data_not_code() -> None:
    evil = 'x"}; import os; os._exit(1); {"'
    rel = Relation(
        None, 3, "public", "t", "d", (Column(1, evil, values.INT4, -1), Column(0, "", 25, -1))
    )
    decoder = RowDecoder(rel)
    row = decoder.row(["5", "v"])
    assert row == {evil: 5, "": "v"}
    assert decoder.key(row) == {evil: 5}


def test_relation_without_columns() -> None:
    rel = Relation(None, 4, "public", "empty", "n", ())
    assert RowDecoder(rel).row([]) == {}


def test_wide_relation() -> None:
    columns = tuple(Column(0, f"c{i}", values.INT4, -1) for i in range(1600))
    row = RowDecoder(Relation(None, 5, "public", "wide", "n", columns)).row(
        [str(i) for i in range(1600)]
    )
    assert row == {f"c{i}": i for i in range(1600)}


def test_conversion_errors_name_the_column() -> None:
    decoder = RowDecoder(ORDERS)
    bad: TupleValues = ["not-a-number", "s", "1", "t", None, None, None, None]
    with pytest.raises(ValueConversionError, match=r"public\.orders\.id .*'not-a-number'"):
        decoder.row(bad)
    with pytest.raises(ValueConversionError, match="tuple has 2 values, relation has 8"):
        decoder.row(["1", "s"])


def test_domain_resolves_to_its_base_type() -> None:
    # pgoutput announces a domain with its own oid but its base type's name and namespace.
    types = {
        16500: UserType(None, 16500, "", "int4"),
        16501: UserType(None, 16501, "", "_timestamptz"),
        16502: UserType(None, 16502, "public", "mood"),
        16503: UserType(None, 16503, "public", "_mood"),
        16504: UserType(None, 16504, "public", "citext"),
    }
    assert convert(16500, "7", types) == 7
    assert convert(16501, '{"2024-06-01 14:00:00+02"}', types) == ["2024-06-01T12:00:00Z"]
    assert convert(16502, "happy", types) == "happy"
    assert convert(16503, '{happy,"very sad",NULL}', types) == ["happy", "very sad", None]
    assert convert(16504, "MiXeD", types) == "MiXeD"


def test_row_decoders_recompile_when_the_relation_changes() -> None:
    types: dict[int, UserType] = {}
    decoders = RowDecoders(types, key_columns={("public", "orders"): ["id", "status"]})
    first = decoders.get(ORDERS)
    assert decoders.get(ORDERS) is first
    assert first.key_columns == ("id", "status")

    types[16600] = UserType(None, 16600, "", "int8")  # the column became a domain over int8
    altered = Relation(
        None,
        ORDERS.id,
        "public",
        "orders",
        "d",
        (Column(1, "id", 16600, -1), Column(0, "status", 25, -1)),
    )
    second = decoders.get(altered)
    assert second is not first
    assert second.row(["9", "new"]) == {"id": 9, "status": "new"}
    with pytest.raises(ValueError, match="not in orders"):
        RowDecoders(key_columns={("public", "orders"): ["nope"]}).get(ORDERS)


def test_row_decoders_read_key_columns_live() -> None:
    keys: dict[tuple[str, str], list[str]] = {}
    decoders = RowDecoders({}, keys)
    keys[("public", "orders")] = ["status"]  # learnt after the decoders were made
    assert decoders.get(ORDERS).key_columns == ("status",)


# money -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$0.00", "0.00"),
        ("$5.00", "5.00"),
        ("$1,234,567.89", "1234567.89"),
        ("-$1,234,567.89", "-1234567.89"),
        ("-$0.01", "-0.01"),
        ("$92,233,720,368,547,758.07", "92233720368547758.07"),  # the largest money
        ("-$92,233,720,368,547,758.08", "-92233720368547758.08"),  # exact: no float on the way
    ],
)
def test_money_is_a_plain_decimal(text: str, expected: str) -> None:
    # lc_monetary=C's output (the reader's session sets it), as copied from PostgreSQL 15.
    assert convert(values.MONEY, text) == expected


@pytest.mark.parametrize("text", ["1.234.567,89 €", "-1,00 €", "€1,00", "$1,23,4.00", "12.5", ""])
def test_money_in_another_locale_is_refused_not_guessed(text: str) -> None:
    with pytest.raises(ValueError, match="lc_monetary=C"):
        convert(values.MONEY, text)


def test_money_array_and_a_bad_money_names_its_column() -> None:
    assert convert(791, '{"$1,234.50","-$2.00",NULL}') == ["1234.50", "-2.00", None]
    relation = Relation(None, 1, "public", "ledger", "d", (Column(0, "amount", values.MONEY, -1),))
    with pytest.raises(
        ValueConversionError, match=r"public\.ledger\.amount .*'1,00 €' \(money .*lc_monetary=C"
    ):
        RowDecoder(relation).row(["1,00 €"])


# Types the catalogue resolves --------------------------------------------------------------------


def test_base_types_from_the_catalogue_win_over_type_names() -> None:
    # pgoutput names an array of a domain "_posint" in "public": nothing says its elements are
    # int4; the catalogue does (catalog.base_types: posint[] -> int4[]).
    types = {16700: UserType(None, 16700, "public", "_posint")}
    assert convert(16700, "{7,8}", types) == ["7", "8"]
    base_types = {16700: 1007, 16701: values.TIMESTAMPTZ, 16702: values.MONEY}
    conv = converter_for(16700, types, base_types)
    assert conv is not None
    assert conv("{7,NULL}") == [7, None]
    assert converter_for(16701, {}, base_types)("2024-06-01 12:00:00+02") == (  # type: ignore[misc]
        "2024-06-01T10:00:00Z"
    )
    assert converter_for(16702, {}, base_types)("-$1.50") == "-1.50"  # type: ignore[misc]
    # Not resolved (an enum): the Type message's name still decides.
    assert (
        converter_for(16703, {16703: UserType(None, 16703, "public", "mood")}, base_types) is None
    )


def test_row_decoders_ask_the_catalogue_at_each_compile() -> None:
    asked: list[set[int]] = []

    def resolve(oids: Any) -> dict[int, int]:
        asked.append(set(oids))
        return {16800: values.INT4}

    relation = Relation(
        None, 5, "public", "t", "d", (Column(1, "id", values.INT8, -1), Column(0, "p", 16800, -1))
    )
    decoders = RowDecoders({}, None, resolve)
    assert decoders.get(relation).row(["1", "7"]) == {"id": 1, "p": 7}
    assert decoders.get(relation).row(["2", "8"]) == {"id": 2, "p": 8}
    assert asked == [{16800}]  # once per Relation, only for types that are not built in
    replaced = Relation(None, 5, "public", "t", "d", relation.columns)  # a new Relation message
    decoders.get(replaced)
    assert asked == [{16800}, {16800}]
    builtin_only = Relation(None, 6, "public", "u", "d", (Column(1, "id", values.INT8, -1),))
    decoders.get(builtin_only)
    assert len(asked) == 2
