"""pgoutput decoding and value conversion against a real PostgreSQL.

Every column type the envelope cares about goes through a real logical replication stream
(psycopg2's LogicalReplicationConnection, pgoutput protocol 1 and 2), is decoded by
:class:`~shopstream.cdc.pgoutput.Decoder` and converted by :mod:`shopstream.cdc.values`, and must
come out exactly as the envelope contract says. The walsender's own session settings
(TimeZone, IntervalStyle) are varied, since they decide the text the server sends.
"""

from __future__ import annotations

import base64
import select
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg2
import pytest
from psycopg2.extras import LogicalReplicationConnection

from shopstream.cdc import catalog, values
from shopstream.cdc.pgoutput import (
    PG_EPOCH_OFFSET_US,
    Begin,
    Commit,
    Decoder,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Update,
)
from shopstream.cdc.values import RowDecoders
from shopstream.events.change import UNAVAILABLE
from tests.support.cdc import ReaderThread


class _Database(Protocol):
    dsn: str


END_PREFIX = "shopstream-test-end"

SCHEMA = """
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('happy', 'very sad');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN small_posint AS posint CHECK (VALUE < 1000);  -- a domain over a domain
CREATE DOMAIN moment AS timestamptz;
CREATE DOMAIN price AS numeric(12, 2);
CREATE DOMAIN int_list AS int4[];  -- a domain over an array
CREATE DOMAIN posint_list AS posint[];  -- a domain over an array of a domain
CREATE TABLE everything (
    id bigint PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, o oid,
    n numeric, n_big numeric(40, 12), n_nan numeric,
    f4 float4, f8 float8, f8_nan float8, f8_inf float8,
    b bool, t text, vc varchar(20), bp char(5), nm name, ci citext,
    u uuid, j json, jb jsonb,
    d date, d_bc date, tm time, ttz timetz,
    ts timestamp, tstz timestamptz, tstz_old timestamptz, tstz_inf timestamptz,
    by bytea, iv interval,
    a_int int4[], a_text text[], a_2d int4[], a_num numeric[], a_tstz timestamptz[],
    a_bytea bytea[], a_jsonb jsonb[], a_float float8[], a_bool bool[], a_date date[],
    m mood, a_mood mood[], p posint,
    big text, big_bytes bytea,
    bp10 char(10), a_bp char(3)[], p2 small_posint, dm moment, dp price, dl int_list,
    a_p posint[], dpl posint_list, mn money, mn_neg money, a_mn money[]
);
-- Stored out of line without compression: over ~2 kB they are TOASTed for sure.
ALTER TABLE everything ALTER COLUMN big SET STORAGE EXTERNAL,
                       ALTER COLUMN big_bytes SET STORAGE EXTERNAL;
CREATE TABLE audit (id int PRIMARY KEY, note text);
ALTER TABLE audit REPLICA IDENTITY FULL;
CREATE TABLE bulk (id int PRIMARY KEY, payload text);
CREATE PUBLICATION p FOR ALL TABLES;
"""

BIG_TEXT = "".join(uuid.UUID(int=i * 7919).hex for i in range(400))  # 12,800 chars
BIG_BYTES = bytes(range(256)) * 20

ROW_1 = """
INSERT INTO everything VALUES (
    1, -32768, 123, -9223372036854775808, 4294967295,
    '-123.4500', 100000000000000000000.000000000001, 'NaN',
    1.1, -1.5e-300, 'NaN', '-Infinity',
    true, E'it''s "quoted"\\n\u00fcn\u00efc\u00f6d\u00e9 \U0001f69a', 'Müller', 'EUR', 'orders',
    'MiXeD',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1,  "a": [1, 2]}', '{"b": 1, "a": [1, 2]}',
    '2024-02-29', '0044-03-15 BC', '04:05:06.789', '04:05:06.5+05:30',
    '2024-06-01 12:34:56.123456', '2024-06-01 12:34:56.5+00', '1890-01-01 00:00:00+00',
    'infinity',
    '\\x00ff10', '1 year 2 months -3 days 04:05:06.5',
    '{1,NULL,3}', ARRAY['a b', 'c"d', NULL, 'NULL', '', 'x\\y', ' lead', '{', 'ok'],
    '{{1,2},{3,4}}', '{1.50,NaN,-0.001}',
    ARRAY['2024-01-01 00:30:00+05:30'::timestamptz, NULL], ARRAY['\\x0102'::bytea, NULL],
    ARRAY['{"a": 1}'::jsonb], '{1.5,NaN,Infinity}', '{t,f}', '[0:1]={2024-06-01,infinity}',
    'very sad', '{happy,"very sad"}', 7,
    %(big)s, %(big_bytes)s,
    'EUR', '{ab,NULL}', 12, '2024-06-01 12:00:00+02', 1234.5, '{1,NULL,3}',
    '{7,8}', '{9}', 1234567.89, -1234567.89, ARRAY[1.5, -2]::money[]
)
"""

EXPECTED_1: dict[str, Any] = {
    "id": 1,
    "i2": -32768,
    "i4": 123,
    "i8": -9223372036854775808,
    "o": 4294967295,
    "n": "-123.4500",
    "n_big": "100000000000000000000.000000000001",
    "n_nan": "NaN",
    "f4": 1.1,
    "f8": -1.5e-300,
    "f8_nan": "NaN",
    "f8_inf": "-Infinity",
    "b": True,
    "t": 'it\'s "quoted"\nünïcödé 🚚',
    "vc": "Müller",
    "bp": "EUR  ",
    "nm": "orders",
    "ci": "MiXeD",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "j": '{"b": 1,  "a": [1, 2]}',
    "jb": '{"a": [1, 2], "b": 1}',
    "d": "2024-02-29",
    "d_bc": "-0043-03-15",
    "tm": "04:05:06.789",
    "ttz": "22:35:06.5Z",
    "ts": "2024-06-01T12:34:56.123456Z",
    "tstz": "2024-06-01T12:34:56.5Z",
    "tstz_old": "1890-01-01T00:00:00Z",
    "tstz_inf": "infinity",
    "by": "AP8Q",
    "iv": "P1Y2M-3DT4H5M6.5S",
    "a_int": [1, None, 3],
    "a_text": ["a b", 'c"d', None, "NULL", "", "x\\y", " lead", "{", "ok"],
    "a_2d": [[1, 2], [3, 4]],
    "a_num": ["1.50", "NaN", "-0.001"],
    "a_tstz": ["2023-12-31T19:00:00Z", None],
    "a_bytea": ["AQI=", None],
    "a_jsonb": ['{"a": 1}'],
    "a_float": [1.5, "NaN", "Infinity"],
    "a_bool": [True, False],
    "a_date": ["2024-06-01", "infinity"],
    "m": "very sad",
    "a_mood": ["happy", "very sad"],
    "p": 7,
    "big": BIG_TEXT,
    "big_bytes": base64.b64encode(BIG_BYTES).decode(),
    "bp10": "EUR       ",  # char(n) keeps its padding
    "a_bp": ["ab ", None],
    "p2": 12,  # domains convert as their base type, through any number of domains
    "dm": "2024-06-01T10:00:00Z",
    "dp": "1234.50",
    "dl": [1, None, 3],
    "a_p": [7, 8],  # arrays of domains as arrays of the base type
    "dpl": [9],
    "mn": "1234567.89",  # money as a plain decimal, whatever lc_monetary says
    "mn_neg": "-1234567.89",
    "a_mn": ["1.50", "-2.00"],
}


# Replication plumbing ----------------------------------------------------------------------------

Change = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]  # op, table, before, after
ReadStream = Callable[..., tuple[Decoder, list[Message]]]


def _sql(dsn: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement, params)
    finally:
        conn.close()


def _create_slot(dsn: str) -> None:
    _sql(dsn, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")


def _end_marker(dsn: str) -> None:
    # Non-transactional, so it is sent at once, after every transaction committed before it.
    _sql(dsn, f"SELECT pg_logical_emit_message(false, '{END_PREFIX}', 'end')")


@pytest.fixture
def replication() -> Iterator[ReadStream]:
    """Read slot "s" through pgoutput and decode every message up to the end marker."""
    connections: list[Any] = []

    def read(
        dsn: str, options: dict[str, str], session: str = "", timeout_s: float = 60
    ) -> tuple[Decoder, list[Message]]:
        conn = psycopg2.connect(
            dsn, connection_factory=LogicalReplicationConnection, options=session
        )
        connections.append(conn)
        cur = conn.cursor()
        cur.start_replication(
            slot_name="s",
            decode=False,
            options={**options, "publication_names": "p", "messages": "true"},
        )
        decoder = Decoder()
        received: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while True:
            raw = cur.read_message()
            if raw is None:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no end marker after {timeout_s} s: {received[-5:]}"
                select.select([conn], [], [], min(remaining, 1.0))
                continue
            message = decoder.decode(raw.payload)
            received.append(message)
            if isinstance(message, LogicalMessage) and message.prefix == END_PREFIX:
                return decoder, received

    yield read
    for conn in connections:
        conn.close()


def _change(decoders: RowDecoders, m: Message) -> Change | None:
    if isinstance(m, Insert):
        return ("c", m.relation.name, None, decoders.get(m.relation).row(m.new))
    if isinstance(m, Update):
        rd = decoders.get(m.relation)
        return ("u", m.relation.name, None if m.old is None else rd.row(m.old), rd.row(m.new))
    if isinstance(m, Delete):
        return ("d", m.relation.name, decoders.get(m.relation).row(m.old), None)
    return None


def _changes(decoder: Decoder, messages: list[Message], dsn: str | None = None) -> list[Change]:
    """Every committed row change, in commit order, as a consumer must assemble them.

    A streamed transaction's changes wait for its Stream Commit; Stream Abort drops the whole
    transaction or one subtransaction (data messages carry the subtransaction's xid). With a
    ``dsn``, types are resolved through its catalogue, as the reader does.
    """
    if dsn is not None:
        conn = catalog.connect(dsn)
        try:
            return _assemble(
                RowDecoders(decoder.types, None, partial(catalog.base_types, conn)), messages
            )
        finally:
            conn.close()
    return _assemble(RowDecoders(decoder.types), messages)


def _assemble(decoders: RowDecoders, messages: list[Message]) -> list[Change]:
    out: list[Change] = []
    pending: dict[int, list[tuple[int | None, Change]]] = {}
    stream_xid: int | None = None
    for m in messages:
        if isinstance(m, StreamStart):
            stream_xid = m.xid
        elif isinstance(m, StreamStop):
            stream_xid = None
        elif isinstance(m, StreamCommit):
            out.extend(change for _, change in pending.pop(m.xid, []))
        elif isinstance(m, StreamAbort):
            held = pending.pop(m.xid, [])
            if m.subxid != m.xid:
                pending[m.xid] = [(xid, c) for xid, c in held if xid != m.subxid]
        elif (change := _change(decoders, m)) is not None:
            if stream_xid is None:
                out.append(change)
            else:
                pending.setdefault(stream_xid, []).append((getattr(m, "xid", None), change))
    return out


# Tests -------------------------------------------------------------------------------------------

SESSIONS = [
    pytest.param(
        {"proto_version": "1"},
        "-c TimeZone=UTC",
        {"tstz": "+00", "tstz_old": "+00", "iv": "1 year 2 mons -3 days +04:05:06.5"},
        id="v1-utc",
    ),
    pytest.param(
        {"proto_version": "1"},
        "-c TimeZone=Europe/Amsterdam -c IntervalStyle=iso_8601",
        # 1890 in Amsterdam was local mean time, an offset with seconds.
        {"tstz": "+02", "tstz_old": "+00:19:32", "iv": "P1Y2M-3DT4H5M6.5S"},
        id="v1-amsterdam-iso-intervals",
    ),
    pytest.param(
        {"proto_version": "2", "streaming": "on"},
        "-c TimeZone=Asia/Kolkata",
        {"tstz": "+05:30", "tstz_old": "+05:21:10"},
        id="v2-streaming-kolkata",
    ),
]


@pytest.mark.parametrize(("options", "session", "raw_seen"), SESSIONS)
def test_every_type_round_trips(
    postgres: _Database,
    replication: ReadStream,
    options: dict[str, str],
    session: str,
    raw_seen: dict[str, str],
) -> None:
    dsn = postgres.dsn
    _sql(dsn, SCHEMA)
    _create_slot(dsn)
    _sql(
        dsn,
        ROW_1,
        "INSERT INTO everything (id) VALUES (2)",
        "UPDATE everything SET i4 = i4 + 1 WHERE id = 1",  # big, big_bytes: unchanged TOAST
        "DELETE FROM everything WHERE id = 2",
        "INSERT INTO audit VALUES (1, 'first')",
        "UPDATE audit SET note = 'second' WHERE id = 1",  # REPLICA IDENTITY FULL: old row
        "UPDATE everything SET id = 10 WHERE id = 1",  # key changed: old key sent
        "TRUNCATE audit, bulk RESTART IDENTITY",
        params={"big": BIG_TEXT, "big_bytes": psycopg2.Binary(BIG_BYTES)},
    )
    _end_marker(dsn)
    decoder, messages = replication(dsn, options, session)

    # The walsender printed the values in its session's TimeZone and IntervalStyle, so the
    # offset parsing and both interval styles are exercised, not only the UTC fast path.
    first = next(m for m in messages if isinstance(m, Insert))
    raw = dict(zip((c.name for c in first.relation.columns), first.new, strict=True))
    for column, text in raw_seen.items():
        value = raw[column]
        assert isinstance(value, str)
        assert value.endswith(text) if column.startswith("tstz") else value == text

    changes = _changes(decoder, messages, dsn)
    assert [(op, table) for op, table, _, _ in changes] == [
        ("c", "everything"),
        ("c", "everything"),
        ("u", "everything"),
        ("d", "everything"),
        ("c", "audit"),
        ("u", "audit"),
        ("u", "everything"),
    ]
    only_id_2 = {name: (2 if name == "id" else None) for name in EXPECTED_1}
    assert changes[0][3] == EXPECTED_1
    assert changes[1][3] == only_id_2

    before, updated = changes[2][2:]
    assert before is None  # the key did not change: no old tuple
    assert updated is not None
    assert updated["i4"] == 124
    assert updated["big"] == UNAVAILABLE
    assert updated["big_bytes"] == UNAVAILABLE
    untouched = EXPECTED_1.keys() - {"i4", "big", "big_bytes"}
    assert {k: updated[k] for k in untouched} == {k: EXPECTED_1[k] for k in untouched}

    # DELETE under the default replica identity: the key, every other column null.
    assert changes[3][2] == only_id_2
    assert changes[4][3] == {"id": 1, "note": "first"}
    assert changes[5][2:] == ({"id": 1, "note": "first"}, {"id": 1, "note": "second"})
    key_change = changes[6]
    assert key_change[2] is not None
    assert key_change[3] is not None
    assert (key_change[2]["id"], key_change[3]["id"]) == (1, 10)
    assert any(isinstance(m, Update) and m.old_kind == "K" for m in messages)

    truncate = next(m for m in messages if isinstance(m, Truncate))
    assert sorted(r.name for r in truncate.relations) == ["audit", "bulk"]
    assert truncate.restart_identity
    assert not truncate.cascade

    # Metadata: key flags, replica identities, and the domain announced under its base
    # type's name (what values.py relies on to convert it as int4).
    relation = decoder.relations[first.relation.id]
    assert [c.name for c in relation.columns if c.is_key] == ["id"]
    assert (relation.namespace, relation.replica_identity) == ("public", "d")
    audit = next(m for m in messages if isinstance(m, Relation) and m.name == "audit")
    assert audit.replica_identity == "f"
    assert all(c.is_key for c in audit.columns)
    type_names = {(t.namespace, t.name) for t in decoder.types.values()}
    assert {("", "int4"), ("public", "mood"), ("public", "_mood"), ("public", "citext")} <= (
        type_names
    )

    # Transactions are well formed: each Begin's LSN and timestamp agree with its Commit.
    begins = [m for m in messages if isinstance(m, Begin)]
    commits = [m for m in messages if isinstance(m, Commit)]
    assert len(begins) == len(commits) == 8
    for begin, commit in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn
        assert commit.end_lsn > commit.commit_lsn
        assert begin.commit_ts == commit.commit_ts
        assert abs((commit.commit_ts + PG_EPOCH_OFFSET_US) / 1e6 - time.time()) < 600


def test_large_transactions_are_streamed_with_protocol_2(
    postgres: _Database, replication: ReadStream
) -> None:
    dsn = postgres.dsn
    _sql(dsn, SCHEMA)
    _create_slot(dsn)
    payload = "x" * 150 + "ü"
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            # A: committed. B: rolled back after being streamed. C: commits, but one of its
            # subtransactions rolls back.
            cur.execute(
                f"INSERT INTO bulk SELECT i, '{payload}' || i FROM generate_series(1, 5000) i"
            )
            conn.commit()
            cur.execute(
                f"INSERT INTO bulk SELECT i, '{payload}' FROM generate_series(10001, 14000) i"
            )
            conn.rollback()
            cur.execute(
                f"INSERT INTO bulk SELECT i, '{payload}' FROM generate_series(20001, 23000) i"
            )
            cur.execute("SAVEPOINT inner_block")
            cur.execute(
                f"INSERT INTO bulk SELECT i, '{payload}' FROM generate_series(30001, 33000) i"
            )
            cur.execute("ROLLBACK TO SAVEPOINT inner_block")
            cur.execute("INSERT INTO bulk VALUES (40000, 'last')")
            conn.commit()
    finally:
        conn.close()
    _end_marker(dsn)
    decoder, messages = replication(
        dsn, {"proto_version": "2", "streaming": "on"}, "-c logical_decoding_work_mem=64kB"
    )

    starts = [m for m in messages if isinstance(m, StreamStart)]
    stream_commits = [m for m in messages if isinstance(m, StreamCommit)]
    aborts = [m for m in messages if isinstance(m, StreamAbort)]
    assert len(stream_commits) == 2, "5,000 rows over 64 kB of work_mem must be streamed"
    assert sum(isinstance(m, StreamStop) for m in messages) == len(starts)
    a_xid, c_xid = (c.xid for c in stream_commits)
    a_segments = [s.first_segment for s in starts if s.xid == a_xid]
    assert len(a_segments) > 3
    assert a_segments == [True] + [False] * (len(a_segments) - 1)
    b_abort = next(a for a in aborts if a.xid == a.subxid)  # B, aborted as a whole
    assert b_abort.xid not in (a_xid, c_xid)
    assert not any(isinstance(m, (Begin, Commit)) for m in messages[: messages.index(b_abort)])

    # Inside stream blocks every data message carries an xid: the streamed transaction's, or
    # a subtransaction's (C's savepoint), never None; outside, none.
    current: int | None = None
    sub_xids = set()
    for m in messages:
        if isinstance(m, StreamStart):
            current = m.xid
        elif isinstance(m, StreamStop):
            current = None
        elif isinstance(m, (Insert, Relation)):
            if current is None:
                assert m.xid is None
            else:
                assert m.xid is not None
                if m.xid != current:
                    sub_xids.add(m.xid)
    assert sub_xids, "C's subtransaction was streamed under its own xid"

    changes = _changes(decoder, messages)
    ids = [after["id"] for op, table, _, after in changes if after is not None]
    assert ids == [*range(1, 5001), *range(20001, 23001), 40000]
    assert all(op == "c" and table == "bulk" for op, table, _, _ in changes)
    assert changes[0][3] == {"id": 1, "payload": payload + "1"}
    assert changes[4999][3] == {"id": 5000, "payload": payload + "5000"}
    assert changes[-1][3] == {"id": 40000, "payload": "last"}


def test_origin_message(postgres: _Database, replication: ReadStream) -> None:
    dsn = postgres.dsn
    _sql(dsn, SCHEMA)
    _create_slot(dsn)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_replication_origin_create('upstream-shop')")
            cur.execute("SELECT pg_replication_origin_session_setup('upstream-shop')")
            conn.commit()
            cur.execute("SELECT pg_replication_origin_xact_setup('0/ABCDEF', now())")
            cur.execute("INSERT INTO audit VALUES (1, 'replicated')")
            conn.commit()
    finally:
        conn.close()
    _end_marker(dsn)
    _, messages = replication(dsn, {"proto_version": "1"})
    kinds = [type(m).__name__ for m in messages]
    assert kinds[:5] == ["Begin", "Origin", "Relation", "Insert", "Commit"]
    assert messages[1] == Origin(commit_lsn=0xABCDEF, name="upstream-shop")


def test_type_tables_match_the_catalog(postgres: _Database) -> None:
    conn = psycopg2.connect(postgres.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT typname, oid::int, typarray::int, typlen, typdelim FROM pg_type"
                " WHERE typnamespace = 'pg_catalog'::regnamespace"
            )
            catalog = {name: (oid, array, length, delim) for name, oid, array, length, delim in cur}
    finally:
        conn.close()
    for name, oid in values.BUILTIN_TYPES.items():
        catalog_oid, array_oid, _, delimiter = catalog[name]
        assert catalog_oid == oid, name
        assert values.ARRAY_ELEMENTS[array_oid] == oid, name
        assert delimiter == ",", name  # parse_array splits on commas
    assert len(values.ARRAY_ELEMENTS) == len(values.BUILTIN_TYPES)
    fixed = {oid for oid, _, length, _ in catalog.values() if length > 0}
    assert fixed >= values.FIXED_LENGTH_TYPES  # only fixed-length types skip the TOAST test


# Snapshot rows equal streamed rows ---------------------------------------------------------------

# Key columns other than a primary key: REPLICA IDENTITY USING INDEX (keyed by the index) and
# no identity at all; the snapshot must name the same key the stream's key flags name.
KEYS_SCHEMA = """
CREATE TABLE by_index (code text NOT NULL, note text);
CREATE UNIQUE INDEX by_index_code ON by_index (code);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
CREATE TABLE keyless (note text);
"""
ROWS = [
    ROW_1,
    "INSERT INTO everything (id) VALUES (2)",
    "INSERT INTO audit VALUES (1, 'first')",
    "INSERT INTO by_index VALUES ('A-1', 'x')",
    "INSERT INTO keyless VALUES ('y')",
]
ROW_COUNTS = {"cdc_everything": 2, "cdc_audit": 1, "cdc_by_index": 1, "cdc_keyless": 1}

#: Server defaults that change the text of nearly every type; the reader's session must
#: override each of them, on the snapshot connection and the replication connection alike.
HOSTILE_DEFAULTS = {
    "lc_monetary": "de_DE.UTF-8",  # money as "1.234.567,89 €"
    "TimeZone": "Asia/Kolkata",
    "DateStyle": "SQL, DMY",
    "IntervalStyle": "sql_standard",
    "bytea_output": "escape",
    "extra_float_digits": "0",
}


def _compiled_locale(directory: Path, name: str) -> bool:
    """Compile ``name`` (e.g. de_DE.UTF-8) into ``directory`` for LOCPATH; False if we cannot."""
    language, _, charmap = name.partition(".")
    try:
        done = subprocess.run(
            ["localedef", "-i", language, "-f", charmap, str(directory / name)],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode in (0, 1) and (directory / name / "LC_MONETARY").exists()


@pytest.fixture
def hostile_server_dsn(
    postgres_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A dedicated server whose database defaults are HOSTILE_DEFAULTS.

    The machine may have no locale but C: then de_DE.UTF-8 is compiled with localedef into a
    directory of our own that the server finds through LOCPATH (nothing is installed).
    """
    locale = HOSTILE_DEFAULTS["lc_monetary"]
    installed = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    locale_dir: Path | None = None
    if locale.lower().replace("-", "") not in installed.stdout.lower().replace("-", ""):
        locale_dir = Path(tempfile.mkdtemp(prefix="shopstream-locale-"))
        locale_dir.chmod(0o755)  # the server runs as another user
        if not _compiled_locale(locale_dir, locale):
            shutil.rmtree(locale_dir, ignore_errors=True)
            pytest.skip(f"no {locale} locale here and localedef cannot compile one")
        monkeypatch.setenv("LOCPATH", str(locale_dir))  # inherited by the server we start
    try:
        server = postgres_factory()
        dsn = server.create_database("shop")
        settings = ", ".join(f"{name} = '{value}'" for name, value in HOSTILE_DEFAULTS.items())
        for name, value in HOSTILE_DEFAULTS.items():
            _sql(dsn, f"ALTER DATABASE shop SET {name} = '{value}'")
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1234567.89::money, (-1.0)::money")
                shown = cur.fetchone()
        finally:
            conn.close()
        assert shown == ("1.234.567,89 €", "-1,00 €"), f"{settings} not in effect: {shown}"
        yield dsn
    finally:
        if locale_dir is not None:
            shutil.rmtree(locale_dir, ignore_errors=True)


@pytest.fixture(params=["server-defaults", "hostile-server-defaults"])
def shop_dsn(request: pytest.FixtureRequest) -> str:
    if request.param == "server-defaults":
        dsn: str = request.getfixturevalue("postgres").dsn
        return dsn
    hostile: str = request.getfixturevalue("hostile_server_dsn")
    return hostile


def _read_changes(reader: ReaderThread, op: str) -> dict[str, dict[str, tuple[Any, Any]]]:
    """{raw table: {row id: (after, key)}} of every change with ``op``."""
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for table in ROW_COUNTS:
        for row in reader.query(f"SELECT key, after FROM raw.{table} WHERE op = '{op}'"):
            after = orjson.loads(row["after"])
            key = None if row["key"] is None else orjson.loads(row["key"])
            row_id = str(after.get("id", after.get("code", after.get("note"))))
            out.setdefault(table, {})[row_id] = (after, key)
    return out


def test_snapshot_rows_equal_streamed_rows(shop_dsn: str, tmp_path: Path) -> None:
    """The same data read by the snapshot and received as changes gives the same after-image
    and key, for every type above, under any server defaults."""
    params = {"big": BIG_TEXT, "big_bytes": psycopg2.Binary(BIG_BYTES)}
    _sql(shop_dsn, SCHEMA, KEYS_SCHEMA, *ROWS, params=params)
    reader = ReaderThread(shop_dsn, tmp_path, snapshot_mode="initial").start()
    try:
        for table, n in ROW_COUNTS.items():
            reader.wait_until(
                lambda t=table, n=n: (
                    reader.count(t, "op = 'r'") == n or reader.count("dead_letter") > 0
                ),
                table,
            )
        # The same rows once more, now as changes.
        _sql(shop_dsn, "TRUNCATE " + ", ".join(t.removeprefix("cdc_") for t in ROW_COUNTS))
        _sql(shop_dsn, *ROWS, params=params)
        for table, n in ROW_COUNTS.items():
            reader.wait_until(
                lambda t=table, n=n: (
                    reader.count(t, "op = 'c'") == n or reader.count("dead_letter") > 0
                ),  # a row that failed: no use waiting
                table,
            )
        snapshot, streamed = _read_changes(reader, "r"), _read_changes(reader, "c")
        dead = reader.count("dead_letter")
    finally:
        reader.stop()

    assert dead == 0, "a row could not be converted (see raw.dead_letter)"
    for table in ROW_COUNTS:
        for row_id, (after, key) in snapshot[table].items():
            streamed_after, streamed_key = streamed[table][row_id]
            differing = {
                column: (value, streamed_after[column])
                for column, value in after.items()
                if value != streamed_after[column]
            }
            assert not differing, f"{table} row {row_id}: snapshot vs stream {differing}"
            assert after == streamed_after
            assert key == streamed_key, f"{table} row {row_id}"
    # Equal, and right: the envelope's encodings, not two agreeing mistakes.
    assert snapshot["cdc_everything"]["1"] == (EXPECTED_1, {"id": 1})
    assert snapshot["cdc_by_index"]["A-1"][1] == {"code": "A-1"}
    assert snapshot["cdc_keyless"]["y"][1] is None
