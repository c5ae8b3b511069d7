"""pgoutput decoder against messages built byte by byte from the protocol documentation
("Logical Replication Message Formats"), independently of the decoder's own code."""

from __future__ import annotations

import pickle
from typing import Literal, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopstream.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Decoder,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    ProtocolError,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleValues,
    UnchangedToast,
    Update,
    UserType,
)
from tests.support.pgoutput import (
    i8,
    i16,
    i32,
    i64,
    insert_msg,
    relation_msg,
    string,
    tuple_data,
    u32,
    u64,
    xid_prefix,
)

ORDERS_COLUMNS = [(1, "id", 20, -1), (0, "status", 25, -1), (0, "total", 1700, 655366)]


@pytest.fixture
def decoder() -> Decoder:
    d = Decoder()
    d.decode(relation_msg(16385, "public", "orders", ORDERS_COLUMNS))
    return d


# Transaction control -----------------------------------------------------------------------------


def test_begin() -> None:
    msg = Decoder().decode(b"B" + u64(0x16B3748) + i64(786_000_000_123_456) + u32(771))
    assert msg == Begin(final_lsn=0x16B3748, commit_ts=786_000_000_123_456, xid=771)
    assert isinstance(msg, Begin)


def test_commit() -> None:
    msg = Decoder().decode(b"C" + i8(0) + u64(100) + u64(148) + i64(5_000_000))
    assert msg == Commit(flags=0, commit_lsn=100, end_lsn=148, commit_ts=5_000_000)
    assert isinstance(msg, Commit)


def test_lsn_and_xid_use_the_full_unsigned_range() -> None:
    msg = Decoder().decode(b"B" + u64(2**64 - 1) + i64(-1) + u32(2**32 - 1))
    assert msg == Begin(final_lsn=2**64 - 1, commit_ts=-1, xid=2**32 - 1)


def test_origin() -> None:
    msg = Decoder().decode(b"O" + u64(0xABCDEF) + string("upstream"))
    assert msg == Origin(commit_lsn=0xABCDEF, name="upstream")


# Metadata ----------------------------------------------------------------------------------------


def test_relation_is_decoded_and_remembered() -> None:
    d = Decoder()
    msg = d.decode(relation_msg(16385, "public", "orders", ORDERS_COLUMNS, identity=b"f"))
    assert msg == Relation(
        xid=None,
        id=16385,
        namespace="public",
        name="orders",
        replica_identity="f",
        columns=(
            Column(1, "id", 20, -1),
            Column(0, "status", 25, -1),
            Column(0, "total", 1700, 655366),
        ),
    )
    assert d.relations[16385] is msg
    assert [c.is_key for c in msg.columns] == [True, False, False]


def test_a_new_relation_message_replaces_the_old_one() -> None:
    d = Decoder()
    first = d.decode(relation_msg(1, "public", "t", [(1, "a", 23, -1)]))
    second = d.decode(relation_msg(1, "public", "t", [(1, "a", 23, -1), (0, "b", 25, -1)]))
    assert d.relations[1] is second is not first
    insert = d.decode(insert_msg(1, ["1", "x"]))
    assert isinstance(insert, Insert)
    assert insert.relation is second


def test_relation_with_non_ascii_names_and_no_columns() -> None:
    d = Decoder()
    msg = d.decode(relation_msg(7, "schéma", "commandes_été", []))
    assert isinstance(msg, Relation)
    assert (msg.namespace, msg.name, msg.columns) == ("schéma", "commandes_été", ())


def test_unknown_replica_identity_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="replica identity"):
        Decoder().decode(relation_msg(1, "public", "t", [], identity=b"x"))


def test_type_message() -> None:
    d = Decoder()
    msg = d.decode(b"Y" + u32(16400) + string("public") + string("mood"))
    assert msg == UserType(xid=None, oid=16400, namespace="public", name="mood")
    assert d.types[16400] is msg


# Data --------------------------------------------------------------------------------------------


def test_insert_reads_every_tuple_kind(decoder: Decoder) -> None:
    msg = decoder.decode(insert_msg(16385, ["42", None, UNCHANGED_TOAST, b"\x00\x01\xff", ""]))
    assert isinstance(msg, Insert)
    assert msg.xid is None
    assert msg.relation is decoder.relations[16385]
    assert msg.new == ["42", None, UNCHANGED_TOAST, b"\x00\x01\xff", ""]
    assert msg.new[2] is UNCHANGED_TOAST


@pytest.mark.parametrize("ncols", [1, 8, 100, 101, 300])
def test_ascii_tuples_of_any_width(ncols: int) -> None:
    # Up to 100 columns a small ASCII message takes the generated reader, beyond it the loop.
    d = Decoder()
    d.decode(relation_msg(9, "public", "wide", [(0, f"c{i}", 25, -1) for i in range(ncols)]))
    kinds: list[str | bytes | UnchangedToast | None] = ["1", None, UNCHANGED_TOAST, b"raw", ""]
    row = [kinds[i % len(kinds)] for i in range(ncols)]
    msg = d.decode(insert_msg(9, row))
    assert isinstance(msg, Insert)
    assert msg.new == row


def test_unchanged_toast_is_not_null_and_survives_pickling() -> None:
    assert UNCHANGED_TOAST is not None
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST


@pytest.mark.parametrize(
    "text",
    [
        "Müller – 東京 🚚",  # multi-byte UTF-8: the slow path's per-value decode
        "x" * 200,  # a length byte >= 0x80 makes the message non-ASCII
        "y" * 70_000,  # a message over 64 KiB: lengths need all four bytes
        "line\nbreak\ttab\\",
    ],
)
def test_insert_text_values_on_every_path(decoder: Decoder, text: str) -> None:
    msg = decoder.decode(insert_msg(16385, ["1", text, "2.50"]))
    assert isinstance(msg, Insert)
    assert msg.new == ["1", text, "2.50"]


def test_insert_accepts_memoryview_and_bytearray(decoder: Decoder) -> None:
    raw = insert_msg(16385, ["1", "a", "2"])
    for buf in (memoryview(raw), bytearray(raw), memoryview(b"pad" + raw)[3:]):
        msg = decoder.decode(buf)
        assert isinstance(msg, Insert)
        assert msg.new == ["1", "a", "2"]


def test_update_without_old_tuple(decoder: Decoder) -> None:
    msg = decoder.decode(b"U" + u32(16385) + b"N" + tuple_data(["1", "paid", UNCHANGED_TOAST]))
    assert msg == Update(
        xid=None,
        relation=decoder.relations[16385],
        old_kind=None,
        old=None,
        new=["1", "paid", UNCHANGED_TOAST],
    )


@pytest.mark.parametrize("kind", ["K", "O"])
def test_update_with_old_tuple(decoder: Decoder, kind: str) -> None:
    old: TupleValues = ["1", None, None] if kind == "K" else ["1", "new", "9.99"]
    body = u32(16385) + kind.encode() + tuple_data(old) + b"N" + tuple_data(["2", "paid", "9"])
    msg = decoder.decode(b"U" + body)
    assert isinstance(msg, Update)
    assert (msg.old_kind, msg.old, msg.new) == (kind, old, ["2", "paid", "9"])


def test_update_with_old_tuple_in_a_non_ascii_message(decoder: Decoder) -> None:
    old: TupleValues = ["1", "één", "1"]
    body = u32(16385) + b"O" + tuple_data(old) + b"N" + tuple_data(["1", "twee", "2"])
    msg = decoder.decode(b"U" + body)
    assert isinstance(msg, Update)
    assert (msg.old, msg.new) == (old, ["1", "twee", "2"])


@pytest.mark.parametrize("kind", ["K", "O"])
def test_delete(decoder: Decoder, kind: Literal["K", "O"]) -> None:
    msg = decoder.decode(b"D" + u32(16385) + kind.encode() + tuple_data(["7", None, None]))
    assert msg == Delete(
        xid=None, relation=decoder.relations[16385], old_kind=kind, old=["7", None, None]
    )


def test_delete_needs_an_old_tuple(decoder: Decoder) -> None:
    with pytest.raises(ProtocolError, match="'K' or 'O'"):
        decoder.decode(b"D" + u32(16385) + b"N" + tuple_data(["7", None, None]))


@pytest.mark.parametrize(
    ("options", "cascade", "restart_identity"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate(options: int, cascade: bool, restart_identity: bool) -> None:
    d = Decoder()
    a = d.decode(relation_msg(1, "public", "a", [(1, "id", 23, -1)]))
    b = d.decode(relation_msg(2, "public", "b", [(1, "id", 23, -1)]))
    msg = d.decode(b"T" + u32(2) + i8(options) + u32(2) + u32(1))
    assert isinstance(msg, Truncate)
    assert msg.relations == (b, a)
    assert msg.relations[0] is b
    assert (msg.cascade, msg.restart_identity) == (cascade, restart_identity)


@pytest.mark.parametrize("transactional", [True, False])
def test_logical_message(transactional: bool) -> None:
    content = b"\x00binary\xffcontent"
    body = i8(int(transactional)) + u64(0x1234) + string("shopstream") + i32(len(content))
    msg = Decoder().decode(b"M" + body + content)
    assert msg == LogicalMessage(
        xid=None, transactional=transactional, lsn=0x1234, prefix="shopstream", content=content
    )


# Streaming (protocol 2) --------------------------------------------------------------------------


def test_streamed_transaction_carries_xid_in_every_data_message() -> None:
    d = Decoder()
    xid = 4242
    start = d.decode(b"S" + u32(xid) + i8(1))
    assert start == StreamStart(xid=xid, first_segment=True)
    assert d.in_stream
    assert d.stream_xid == xid

    rel = d.decode(relation_msg(16385, "public", "orders", ORDERS_COLUMNS, xid=xid))
    typ = d.decode(b"Y" + u32(xid) + u32(16400) + string("public") + string("mood"))
    ins = d.decode(insert_msg(16385, ["1", "new", "1.00"], xid=xid))
    upd = d.decode(
        b"U" + u32(xid) + u32(16385) + b"K" + tuple_data(["1", None, None])
        + b"N" + tuple_data(["2", "new", "1.00"])
    )  # fmt: skip
    dele = d.decode(b"D" + u32(xid) + u32(16385) + b"K" + tuple_data(["2", None, None]))
    trunc = d.decode(b"T" + u32(xid) + u32(1) + i8(0) + u32(16385))
    msg = d.decode(b"M" + u32(xid) + i8(1) + u64(9) + string("p") + i32(1) + b"x")
    assert isinstance(rel, Relation)
    assert isinstance(typ, UserType)
    assert isinstance(ins, Insert)
    assert isinstance(upd, Update)
    assert isinstance(dele, Delete)
    assert isinstance(trunc, Truncate)
    assert isinstance(msg, LogicalMessage)
    assert [m.xid for m in (rel, typ, ins, upd, dele, trunc, msg)] == [xid] * 7
    assert rel.id == 16385
    assert typ.oid == 16400
    assert ins.new == ["1", "new", "1.00"]
    assert (upd.old, upd.new) == (["1", None, None], ["2", "new", "1.00"])
    assert dele.old == ["2", None, None]
    assert trunc.relations == (rel,)
    assert msg.content == b"x"

    assert d.decode(b"E") == StreamStop()
    assert not d.in_stream
    assert d.stream_xid is None
    # Outside the block the same bytes would be read without an xid: the state matters.
    ins_outside = d.decode(insert_msg(16385, ["3", "x", "0"]))
    assert isinstance(ins_outside, Insert)
    assert ins_outside.xid is None

    assert d.decode(b"S" + u32(xid) + i8(0)) == StreamStart(xid=xid, first_segment=False)
    d.decode(b"E")
    commit = d.decode(b"c" + u32(xid) + i8(0) + u64(500) + u64(548) + i64(1_000))
    assert commit == StreamCommit(xid=xid, flags=0, commit_lsn=500, end_lsn=548, commit_ts=1_000)
    assert isinstance(commit, StreamCommit)


def test_stream_abort_both_layouts() -> None:
    d = Decoder()
    assert d.decode(b"A" + u32(10) + u32(11)) == StreamAbort(xid=10, subxid=11)
    # Protocol 4 with streaming = parallel adds the abort LSN and timestamp.
    parallel = d.decode(b"A" + u32(10) + u32(10) + u64(777) + i64(123))
    assert parallel == StreamAbort(xid=10, subxid=10, abort_lsn=777, abort_ts=123)


def test_stream_blocks_cannot_nest_or_stop_twice() -> None:
    d = Decoder()
    with pytest.raises(ProtocolError, match="Stream Stop outside"):
        d.decode(b"E")
    d.decode(b"S" + u32(1) + i8(1))
    with pytest.raises(ProtocolError, match="Stream Start inside"):
        d.decode(b"S" + u32(2) + i8(1))


# Errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buf", "match"),
    [
        (b"", "empty"),
        (b"Z", "unknown or unsupported message type 'Z'"),
        (b"B" + u64(1), "9 bytes, expected 21"),  # truncated
        (b"B" + u64(1) + i64(2) + u32(3) + b"!", "expected 21"),  # trailing byte
        (b"C" + i8(0) + u64(1) + u64(2), "18 bytes, expected 26"),
        (b"O" + u64(1) + b"no terminator", "malformed 'O'"),
        (b"Y" + u32(1) + b"\xff\xfe\0name\0", "malformed 'Y'"),  # not UTF-8
        (b"I" + u32(99) + b"N" + tuple_data(["1"]), "relation id 99 was not announced"),
    ],
    ids=["empty", "unknown", "short", "long", "short-commit", "no-nul", "utf8", "relation"],
)
def test_malformed_messages_raise_protocol_error(buf: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        Decoder().decode(buf)


def test_bad_tuple_data(decoder: Decoder) -> None:
    with pytest.raises(ProtocolError, match="TupleData kind"):
        decoder.decode(b"I" + u32(16385) + b"N" + i16(1) + b"x")
    with pytest.raises(ProtocolError, match="expected 'N'"):
        decoder.decode(b"I" + u32(16385) + b"K" + tuple_data(["1"]))
    # A text value claiming more bytes than the message holds.
    with pytest.raises(ProtocolError):
        decoder.decode(b"I" + u32(16385) + b"N" + i16(1) + b"t" + i32(50) + b"short")
    # Fewer columns announced than present: trailing bytes.
    with pytest.raises(ProtocolError, match="expected"):
        decoder.decode(b"I" + u32(16385) + b"N" + i16(1) + b"t" + i32(1) + b"1" + b"n")


# Properties --------------------------------------------------------------------------------------

tuple_values = st.lists(
    st.one_of(
        st.none(),
        st.just(UNCHANGED_TOAST),
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])),
        st.binary(max_size=300),
    ),
    max_size=40,
)


@given(
    old=st.one_of(st.none(), tuple_values),
    new=tuple_values,
    xid=st.none() | st.integers(0, 2**32 - 1),
)
def test_update_round_trip(old: TupleValues | None, new: TupleValues, xid: int | None) -> None:
    d = Decoder()
    d.decode(relation_msg(5, "s", "t", []))
    if xid is not None:
        d.decode(b"S" + u32(xid) + i8(1))
    old_part = b"" if old is None else b"O" + tuple_data(old)
    msg = d.decode(b"U" + xid_prefix(xid) + u32(5) + old_part + b"N" + tuple_data(new))
    assert isinstance(msg, Update)
    assert (msg.xid, msg.old, msg.new) == (xid, old, new)
    assert msg.old_kind == (None if old is None else "O")


@given(values=tuple_values, cut=st.integers(min_value=1))
def test_truncated_messages_never_decode_silently(values: TupleValues, cut: int) -> None:
    d = Decoder()
    d.decode(relation_msg(5, "s", "t", []))
    full = insert_msg(5, values)
    cut = cut % len(full)
    with pytest.raises(ProtocolError):
        d.decode(full[:cut])


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_protocol_error(buf: bytes) -> None:
    d = Decoder()
    d.decode(relation_msg(1, "s", "t", []))
    try:
        msg = d.decode(buf)
    except ProtocolError:
        return  # any other exception fails the test
    assert isinstance(msg, get_args(Message))
