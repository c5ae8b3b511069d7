"""What to capture: the publication, the replication slot, and tables' shapes and keys.

Plain SQL on an ordinary connection (psycopg2). The replication stream itself runs on libpq
through psycopg 3 (:mod:`shopstream.cdc.stream`), so that no driver confirms LSNs for us.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, overload

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from shopstream.cdc.pgoutput import Column, Relation, UserType
from shopstream.cdc.schemas import REPLICA_IDENTITY, ColumnSchema, TableSchema
from shopstream.cdc.values import FIRST_NON_BUILTIN_OID, RowValues
from shopstream.events.raw import cdc_table_name

log = logging.getLogger(__name__)

#: Session settings that make PostgreSQL's text output match what the value converters
#: expect, on the replication connection and the snapshot connection alike: every setting
#: an output function reads. The walsender prints pgoutput's values with its own session's
#: settings, so the replication connection must be opened with these too. lc_monetary=C
#: prints money as "-$1,234.56" whatever the server's locale (values.money_value reads that).
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1 -c lc_monetary=C"
)


@dataclass(frozen=True)
class SlotInfo:
    exists: bool
    active: bool = False
    confirmed_flush_lsn: int | None = None
    retained_bytes: int | None = None
    lag_bytes: int | None = None
    wal_status: str | None = None


def connect(dsn: str, **kwargs: Any) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, options=SESSION_OPTIONS, **kwargs)
    return conn


def server_version(conn: psycopg2.extensions.connection) -> int:
    return int(conn.server_version)


@overload
def parse_lsn(text: str) -> int: ...
@overload
def parse_lsn(text: None) -> None: ...
@overload
def parse_lsn(text: str | None) -> int | None: ...
def parse_lsn(text: str | None) -> int | None:
    """An LSN as PostgreSQL prints it, as an int; None (SQL NULL) stays None.

    >>> parse_lsn("16/B374D848")
    97500059720
    >>> format_lsn(97500059720)
    '16/B374D848'
    """
    if text is None:
        return None
    high, slash, low = text.partition("/")
    if slash and high and low:
        try:
            return (int(high, 16) << 32) + int(low, 16)
        except ValueError:
            pass
    raise ValueError(f"not an LSN: {text!r} (PostgreSQL prints one as e.g. '16/B374D848')")


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def check_server(conn: psycopg2.extensions.connection) -> None:
    """Fail early, saying what to change, when the server cannot do logical replication."""
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        row = cur.fetchone()
        if not row or row[0] != "logical":
            raise CdcSetupError(
                f"PostgreSQL has wal_level={row[0] if row else '?'}; CDC needs 'logical'. "
                "Run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL."
            )


class CdcSetupError(RuntimeError):
    """The database is not ready for CDC; the message says what to do."""


def qualified_tables(schema: str, tables: list[str]) -> list[tuple[str, str]]:
    """``cdc.tables`` entries as (schema, table): ``"orders"`` is in ``schema``,
    ``"sales.orders"`` names its own schema (split at the first dot, so a table whose name
    holds a dot is written qualified: ``"public.my.table"``)."""
    pairs = []
    for entry in tables:
        table_schema, dot, table = entry.partition(".")
        pairs.append((table_schema, table) if dot else (schema, entry))
    if any(not part for pair in pairs for part in pair):
        raise CdcSetupError(f"cdc.tables has an empty schema or table name: {tables!r}")
    return pairs


def ensure_publication(
    conn: psycopg2.extensions.connection, name: str, schema: str, tables: list[str]
) -> None:
    """Create the publication (idempotent); keep its table list as configured.

    With no table list: every table of ``schema``, including ones created later (``FOR
    TABLES IN SCHEMA``, PostgreSQL 15+; older servers get today's tables). A table list may
    span schemas (``"sales.orders"``, see :func:`qualified_tables`). A publication that
    exists and no table list is configured is used as it is (e.g. one made by the DBA for
    several schemas, or ``FOR ALL TABLES``).
    """
    wanted = qualified_tables(schema, tables)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        exists = cur.fetchone() is not None
        targets = [sql.Identifier(s, t) for s, t in wanted]
        if not exists:
            if tables:
                cur.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(name), sql.SQL(", ").join(targets)
                    )
                )
            elif server_version(conn) >= 150000:
                cur.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}").format(
                        sql.Identifier(name), sql.Identifier(schema)
                    )
                )
            else:
                all_tables = list_tables(conn, schema)
                if not all_tables:
                    raise CdcSetupError(f"schema {schema!r} has no tables to capture")
                cur.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(name),
                        sql.SQL(", ").join(sql.Identifier(schema, t) for t in all_tables),
                    )
                )
            log.info("created publication %s", name)
        elif tables:
            current = set(publication_tables(conn, name))
            if current != set(wanted):
                cur.execute(
                    sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                        sql.Identifier(name), sql.SQL(", ").join(targets)
                    )
                )
                log.info(
                    "publication %s now covers %s",
                    name,
                    ", ".join(f"{s}.{t}" for s, t in sorted(wanted)),
                )
    conn.commit()


def list_tables(conn: psycopg2.extensions.connection, schema: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        )
        return [r[0] for r in cur.fetchall()]


def publication_tables(conn: psycopg2.extensions.connection, name: str) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
            "ORDER BY 1, 2",
            (name,),
        )
        return [(r[0], r[1]) for r in cur.fetchall()]


def slot_info(conn: psycopg2.extensions.connection, slot: str) -> SlotInfo:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT active, confirmed_flush_lsn::text, "
            "pg_current_wal_lsn() - restart_lsn, pg_current_wal_lsn() - confirmed_flush_lsn, "
            "wal_status FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return SlotInfo(exists=False)
    return SlotInfo(
        exists=True,
        active=bool(row[0]),
        confirmed_flush_lsn=parse_lsn(row[1]),
        retained_bytes=int(row[2]) if row[2] is not None else None,
        lag_bytes=int(row[3]) if row[3] is not None else None,
        wal_status=row[4],
    )


def drop_slot(conn: psycopg2.extensions.connection, slot: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )
    conn.commit()


def primary_keys(
    conn: psycopg2.extensions.connection, tables: list[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """The ``key`` columns per table: its primary key; none (``[]``) for a table with
    REPLICA IDENTITY FULL and no primary key, whose key flags would name every column.
    Tables left out use pgoutput's key flags (e.g. REPLICA IDENTITY USING INDEX)."""
    if not tables:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT n.nspname, c.relname, a.attname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE i.indisprimary AND (n.nspname, c.relname) IN %s
            ORDER BY n.nspname, c.relname, k.ord
            """,
            (tuple(tables),),
        )
        keys: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in cur.fetchall():
            keys.setdefault((schema, table), []).append(column)
        cur.execute(
            """
            SELECT n.nspname, c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relreplident = 'f' AND (n.nspname, c.relname) IN %s
            """,
            (tuple(tables),),
        )
        for schema, table in cur.fetchall():
            keys.setdefault((schema, table), [])
    conn.commit()
    return keys


def table_relation(
    conn: psycopg2.extensions.connection, schema: str, table: str
) -> tuple[Relation, dict[int, UserType]]:
    """The Relation and Type messages pgoutput would send for a table, read from the catalogue
    (for snapshots), so that a snapshot row is decoded exactly as a streamed one.

    As pgoutput: the key flags mark the replica identity (the primary key, the index of
    REPLICA IDENTITY USING INDEX, every column for FULL, none for NOTHING); generated columns
    are left out; a column type that is not built in is announced under its base type's
    namespace ("" for pg_catalog) and name, so a domain over int4 reads as int4.
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod,
                   c.relreplident = 'f' OR COALESCE(a.attnum = ANY(ri.indkey::int2[]), false)
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND CASE c.relreplident
                WHEN 'd' THEN ri.indisprimary WHEN 'i' THEN ri.indisreplident ELSE false END
            WHERE n.nspname = %s AND c.relname = %s AND a.attgenerated = ''
            ORDER BY a.attnum
            """,
            (schema, table),
        )
        rows = cur.fetchall()
    conn.commit()
    if not rows:
        raise CdcSetupError(f"table {schema}.{table} not found")
    columns = tuple(
        Column(1 if is_key else 0, name, type_oid, typmod)
        for _, _, name, type_oid, typmod, is_key in rows
    )
    own = {type_oid for _, _, _, type_oid, _, _ in rows if type_oid >= FIRST_NON_BUILTIN_OID}
    found = _pg_types(conn, own)
    types = {}
    for type_oid in own:
        base = found.get(_base_type(found, type_oid))
        if base is not None:
            namespace = "" if base.namespace == "pg_catalog" else base.namespace
            types[type_oid] = UserType(None, type_oid, namespace, base.name)
    relation = Relation(None, int(rows[0][0]), schema, table, rows[0][1], columns)
    return relation, types


@dataclass(frozen=True)
class _PgType:
    namespace: str
    name: str
    kind: str  # pg_type.typtype: "d" for a domain
    base: int  # a domain's typbasetype
    element: int  # an array type's element type, else 0
    array: int  # the type's array type, else 0


def _pg_types(conn: psycopg2.extensions.connection, oids: Collection[int]) -> dict[int, _PgType]:
    """pg_type rows of ``oids`` and of every type their domains and arrays lead to."""
    found: dict[int, _PgType] = {}
    pending = set(oids)
    with conn.cursor() as cur:
        while pending:
            cur.execute(
                """
                SELECT t.oid, n.nspname, t.typname, t.typtype, t.typbasetype,
                       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END, t.typarray
                FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE t.oid = ANY(%s::oid[])
                """,
                (sorted(pending),),
            )
            rows = cur.fetchall()
            for oid, namespace, name, kind, base, element, array in rows:
                found[int(oid)] = _PgType(
                    namespace, name, kind, int(base), int(element), int(array)
                )
            # Domain chains and arrays are a few steps deep; a type gone meanwhile ends one.
            pending = {
                ref
                for oid, *_ in rows
                for ref in (found[int(oid)].base, found[int(oid)].element)
                if ref and ref not in found
            }
    conn.commit()
    return found


def _base_type(found: dict[int, _PgType], oid: int) -> int:
    """Through every domain to the type under it (PostgreSQL's getBaseType)."""
    for _ in range(len(found) + 1):  # a cycle cannot exist; this only bounds the loop
        info = found.get(oid)
        if info is None or info.kind != "d":
            return oid
        oid = info.base
    return oid


def base_types(conn: psycopg2.extensions.connection, oids: Collection[int]) -> dict[int, int]:
    """The built-in type each of ``oids`` converts as: a domain (over a domain, ...) as its
    base type, an array of a domain (or a domain over one) as the array of the element's base
    type (``posint[]`` → ``int4[]``). Types with no built-in base (enums, citext, arrays of
    those) are left out: they keep the decoder's rules for pgoutput's Type messages.

    pgoutput names a domain's base type but says nothing of an array's elements, so both the
    stream and the snapshot ask the catalogue (values.RowDecoders ``resolve``).
    """
    own = {oid for oid in oids if oid >= FIRST_NON_BUILTIN_OID}
    if not own:
        return {}
    found = _pg_types(conn, own)
    resolved: dict[int, int] = {}
    for oid in own:
        base = _base_type(found, oid)
        if base < FIRST_NON_BUILTIN_OID:
            resolved[oid] = base
            continue
        info = found.get(base)
        if info is None or not info.element:
            continue
        element_oid = _base_type(found, info.element)
        element = found.get(element_oid)
        if element is not None and element_oid < FIRST_NON_BUILTIN_OID and element.array:
            resolved[oid] = element.array
    return resolved


def _as_sent(value: str | None, _cursor: Any) -> str | None:
    return value


@contextlib.contextmanager
def snapshot_rows(
    conn: psycopg2.extensions.connection, query: sql.Composed, name: str, chunk_rows: int
) -> Iterator[Iterator[RowValues]]:
    """The rows ``query`` (:func:`shopstream.cdc.snapshot.select_rows`) reads in the
    connection's transaction, through a server-side cursor ``name``, ``chunk_rows`` at a
    time: each value exactly the text its type's output function prints (what pgoutput
    sends), or None.

    Values come in text form, as the server sends them, through a typecaster that keeps the
    text for every column type of the result (the server reports a domain column under its
    base type, so the types are read from a probe).
    """
    with conn.cursor() as probe:
        probe.execute(query + sql.SQL(" LIMIT 0"))
        oids = tuple(sorted({int(d.type_code) for d in probe.description or ()}))
    with conn.cursor(name=name) as cur:
        if oids:
            as_sent = psycopg2.extensions.new_type(oids, "SHOPSTREAM_AS_SENT", _as_sent)
            psycopg2.extensions.register_type(as_sent, cur)
        cur.itersize = chunk_rows
        cur.execute(query)
        yield iter(cur)


def describe_relation(conn: psycopg2.extensions.connection, relation: Relation) -> TableSchema:
    """The schema record of a table as a Relation message (or :func:`table_relation`)
    describes it: its columns and their types as sent, named by ``format_type`` and resolved
    to base types here; nullability and the primary key from the catalogue.

    Called once per Relation message (after DDL, and once per table per session), never per
    change. The Relation is the truth for columns and types (it is the shape the changes
    after it have); the catalogue is read now and may be ahead of a stream that lags behind
    later DDL: a column it no longer has (or has with another type) is recorded nullable, and
    under the default replica identity the key comes from the Relation's own key flags.
    """
    pairs = [(c.type_oid, c.type_modifier) for c in relation.columns]
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT a.attname, a.atttypid, a.attnotnull FROM pg_attribute a
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
            """,
            (relation.id,),
        )
        now = {name: (int(oid), bool(not_null)) for name, oid, not_null in cur.fetchall()}
        cur.execute(
            """
            SELECT a.attname FROM pg_index i
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord
            """,
            (relation.id,),
        )
        catalog_key = tuple(r[0] for r in cur.fetchall())
    names = type_names(conn, pairs)
    conn.commit()
    column_names = [c.name for c in relation.columns]
    flagged = tuple(c.name for c in relation.columns if c.is_key)
    if relation.replica_identity == "d" and set(flagged) != set(catalog_key):
        key = flagged  # the catalogue is ahead of the stream: the Relation's flags are the key
    else:
        key = tuple(name for name in catalog_key if name in column_names)
    columns = []
    for column in relation.columns:
        type_name, base = names[(column.type_oid, column.type_modifier)]
        found = now.get(column.name)
        not_null = found is not None and found[0] == column.type_oid and found[1]
        columns.append(
            ColumnSchema(
                name=column.name,
                type=type_name,
                base_type=base,
                type_oid=column.type_oid,
                type_modifier=column.type_modifier,
                key=column.name in key,
                nullable=not not_null,
            )
        )
    return TableSchema(
        # Named exactly as the change table (shopstream.cdc.changes): schema included.
        raw_table=cdc_table_name(relation.name, relation.namespace),
        source_schema=relation.namespace or "pg_catalog",
        source_table=relation.name,
        columns=tuple(columns),
        primary_key=key,
        replica_identity=REPLICA_IDENTITY.get(relation.replica_identity),
    )


def type_names(
    conn: psycopg2.extensions.connection, pairs: Collection[tuple[int, int]]
) -> dict[tuple[int, int], tuple[str, str]]:
    """Per (type oid, typmod): ``format_type`` of it, and of what staging types it by: through
    domains to their base type (with the domain's typmod, as PostgreSQL's
    getBaseTypeAndTypmod), an enum as ``text``, an array as its element's base + ``[]``."""
    if not pairs:
        return {}
    with conn.cursor() as cur:
        # Every type the pairs lead to: domains to their base, arrays to their element.
        cur.execute(
            """
            WITH RECURSIVE t(oid) AS (
                SELECT unnest(%s::oid[])
                UNION
                SELECT x FROM pg_type p JOIN t ON p.oid = t.oid,
                LATERAL unnest(ARRAY[p.typbasetype,
                    CASE WHEN p.typcategory = 'A' THEN p.typelem ELSE 0 END]) AS x
                WHERE x <> 0
            )
            SELECT p.oid, p.typtype, p.typbasetype, p.typtypmod,
                   CASE WHEN p.typcategory = 'A' THEN p.typelem ELSE 0 END
            FROM pg_type p JOIN t ON p.oid = t.oid
            """,
            (sorted({oid for oid, _ in pairs}),),
        )
        info = {int(r[0]): (r[1], int(r[2]), int(r[3]), int(r[4])) for r in cur.fetchall()}

        def base(oid: int, typmod: int) -> tuple[int, int, bool]:
            """(oid, typmod) under every domain; True when it is an enum (staged as text)."""
            for _ in range(len(info) + 1):
                kind = info.get(oid)
                if kind is None or kind[0] != "d":
                    return oid, typmod, kind is not None and kind[0] == "e"
                oid, typmod = kind[1], kind[2]
            return oid, typmod, False

        wanted: dict[tuple[int, int], tuple[int, int, bool, bool]] = {}
        for oid, typmod in pairs:
            b_oid, b_mod, enum = base(oid, typmod)
            element = info.get(b_oid, ("", 0, 0, 0))[3]
            if element:  # an array: its element's base, typed with the array's typmod
                e_oid, e_mod, e_enum = base(element, b_mod)
                wanted[(oid, typmod)] = (e_oid, e_mod, e_enum, True)
            else:
                wanted[(oid, typmod)] = (b_oid, b_mod, enum, False)
        asked = sorted(
            {(oid, mod) for oid, mod in pairs} | {(o, m) for o, m, _, _ in wanted.values()}
        )
        cur.execute(
            "SELECT o, m, format_type(o, m) FROM unnest(%s::oid[], %s::int[]) AS x(o, m)",
            ([o for o, _ in asked], [m for _, m in asked]),
        )
        formatted = {(int(o), int(m)): str(name) for o, m, name in cur.fetchall()}
    result = {}
    for pair, (b_oid, b_mod, enum, array) in wanted.items():
        base_name = "text" if enum else formatted[(b_oid, b_mod)]
        result[pair] = (formatted[pair], base_name + "[]" if array else base_name)
    return result
