"""What to capture: the publication, the replication slot, and tables' shapes and keys.

Plain SQL on an ordinary connection (psycopg2, like the replication connection, so one
driver serves the whole CDC path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from shopstream.cdc.pgoutput import Column, Relation, UserType

log = logging.getLogger(__name__)

#: Session settings that make PostgreSQL's text output match what the value converters
#: expect, on the replication connection and the snapshot connection alike.
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1"
)

_FIRST_USER_OID = 16384


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


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` → int."""
    if not text:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


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


def ensure_publication(
    conn: psycopg2.extensions.connection, name: str, schema: str, tables: list[str]
) -> None:
    """Create the publication (idempotent); keep its table list as configured.

    With no table list: every table of ``schema``, including ones created later (``FOR
    TABLES IN SCHEMA``, PostgreSQL 15+; older servers get today's tables).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        exists = cur.fetchone() is not None
        targets = [sql.Identifier(schema, t) for t in tables]
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
            wanted = {(schema, t) for t in tables}
            if current != wanted:
                cur.execute(
                    sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                        sql.Identifier(name), sql.SQL(", ").join(targets)
                    )
                )
                log.info("publication %s now covers %s", name, ", ".join(sorted(tables)))
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
    """The shape pgoutput would announce for a table, read from the catalogue (for snapshots)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod,
                   COALESCE(a.attnum = ANY(pk.indkey::int2[]), false),
                   t.typnamespace::regnamespace::text, t.typname
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
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
        for _, _, name, type_oid, typmod, is_key, _, _ in rows
    )
    types = {
        type_oid: UserType(None, type_oid, namespace, type_name)
        for _, _, _, type_oid, _, _, namespace, type_name in rows
        if type_oid >= _FIRST_USER_OID
    }
    relation = Relation(None, int(rows[0][0]), schema, table, rows[0][1], columns)
    return relation, types
