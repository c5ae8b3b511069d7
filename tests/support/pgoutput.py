"""pgoutput messages built byte by byte from the protocol documentation ("Logical Replication
Message Formats"), independently of the decoder's own code: the input of the decoder's tests."""

from __future__ import annotations

import struct

from shopstream.cdc.pgoutput import UNCHANGED_TOAST, TupleValues

# Encoders for the protocol's primitive types ----------------------------------------------------


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
