"""pgoutput messages built byte by byte from the protocol documentation ("Logical Replication
Message Formats"), independently of the decoder's own code: for the decoder's tests and for
feeding the change handler input PostgreSQL would never send."""

from __future__ import annotations

import struct

from shopstream.cdc.pgoutput import UNCHANGED_TOAST, TupleValues

# Encoders for the protocol's primitive types ------------------------------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def string(s: str) -> bytes:
    return s.encode() + b"\0"


def tuple_data(values: TupleValues) -> bytes:
    out = i16(len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + i32(len(v)) + v
        else:
            assert isinstance(v, str)
            data = v.encode()
            out += b"t" + i32(len(data)) + data
    return out


def xid_prefix(xid: int | None) -> bytes:
    return b"" if xid is None else u32(xid)


def relation_msg(
    rel_id: int,
    namespace: str,
    name: str,
    columns: list[tuple[int, str, int, int]],
    identity: bytes = b"d",
    xid: int | None = None,
) -> bytes:
    out = b"R" + xid_prefix(xid) + u32(rel_id) + string(namespace) + string(name) + identity
    out += i16(len(columns))
    for flags, col_name, type_oid, typmod in columns:
        out += i8(flags) + string(col_name) + u32(type_oid) + i32(typmod)
    return out


def insert_msg(rel_id: int, values: TupleValues, xid: int | None = None) -> bytes:
    return b"I" + xid_prefix(xid) + u32(rel_id) + b"N" + tuple_data(values)


def update_msg(
    rel_id: int, new: TupleValues, old: TupleValues | None = None, old_kind: bytes = b"O"
) -> bytes:
    old_part = b"" if old is None else old_kind + tuple_data(old)
    return b"U" + u32(rel_id) + old_part + b"N" + tuple_data(new)


def delete_msg(rel_id: int, old: TupleValues, kind: bytes = b"K") -> bytes:
    return b"D" + u32(rel_id) + kind + tuple_data(old)


def truncate_msg(*rel_ids: int, options: int = 0) -> bytes:
    return b"T" + u32(len(rel_ids)) + i8(options) + b"".join(u32(r) for r in rel_ids)


def begin_msg(final_lsn: int, xid: int, commit_ts: int = 0) -> bytes:
    """``commit_ts``: µs since 2000-01-01 UTC."""
    return b"B" + u64(final_lsn) + i64(commit_ts) + u32(xid)


def commit_msg(commit_lsn: int, end_lsn: int, commit_ts: int = 0) -> bytes:
    return b"C" + i8(0) + u64(commit_lsn) + u64(end_lsn) + i64(commit_ts)


def logical_msg(
    prefix: str, content: bytes = b"", lsn: int = 0, transactional: bool = False
) -> bytes:
    return b"M" + i8(int(transactional)) + u64(lsn) + string(prefix) + i32(len(content)) + content
