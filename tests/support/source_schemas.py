"""STAND-IN for the CDC reader's schema record (raw.source_schemas), until the reader writes it.

The brief's contract (issue 8) has the CDC reader append one row per version of a captured
table's schema to ``raw.source_schemas``. That part lands in parallel; until it does, tests of
the CDC staging write the rows they need with :func:`record_source_schemas`, read from the
PostgreSQL catalog exactly as the contract describes the columns. The lead replaces calls to it
with the reader's own record.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import duckdb
import psycopg

from shopstream.events.raw import cdc_table_name

SOURCE_SCHEMAS_DDL = """
CREATE TABLE IF NOT EXISTS raw.source_schemas (
    raw_table VARCHAR NOT NULL,
    source_schema VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    fingerprint VARCHAR NOT NULL,
    columns JSON NOT NULL,
    primary_key JSON NOT NULL,
    replica_identity VARCHAR,
    first_lsn BIGINT,
    recorded_at TIMESTAMPTZ NOT NULL
)"""

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int, a.atttypmod,
       a.attnotnull, t.typtype, t.typbasetype::int, t.typtypmod, t.typelem::int
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_index AS i
JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)"""
_IDENTITY = {"d": "default", "f": "full", "i": "index", "n": "nothing"}


def _base_type(cur: psycopg.Cursor[Any], type_oid: int, typmod: int) -> str:
    """What staging types by: a domain's base type (through domains of domains), 'text' for an
    enum, arrays of those as their base with '[]'; else format_type itself."""
    row = cur.execute(
        "SELECT typtype, typbasetype::int, typtypmod, typelem::int, typcategory "
        "FROM pg_type WHERE oid = %s",
        (type_oid,),
    ).fetchone()
    assert row is not None
    typtype, basetype, basemod, elem, category = row
    if typtype == "d":
        return _base_type(cur, basetype, basemod)
    if typtype == "e":
        return "text"
    if category == "A" and elem:
        return _base_type(cur, elem, typmod) + "[]"
    formatted = cur.execute("SELECT format_type(%s, %s)", (type_oid, typmod)).fetchone()
    assert formatted is not None
    return str(formatted[0])


def schema_rows(dsn: str, tables: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One raw.source_schemas row (version 1) per (schema, table), from the catalog."""
    rows = []
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for schema, table in tables:
            qualified = f'"{schema}"."{table}"'
            key = [r[0] for r in cur.execute(_PRIMARY_KEY, (qualified,)).fetchall()]
            columns = []
            for name, type_, oid, typmod, notnull, *_ in cur.execute(
                _COLUMNS, (qualified,)
            ).fetchall():
                columns.append(
                    {
                        "name": name,
                        "type": type_,
                        "base_type": None,
                        "type_oid": oid,
                        "type_modifier": typmod,
                        "key": name in key,
                        "nullable": not notnull,
                    }
                )
            for column in columns:
                column["base_type"] = _base_type(cur, column["type_oid"], column["type_modifier"])
            identity = cur.execute(
                "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (qualified,)
            ).fetchone()
            assert identity is not None
            canonical = json.dumps({"columns": columns, "primary_key": key}, sort_keys=True)
            rows.append(
                {
                    "raw_table": cdc_table_name(table, schema),
                    "source_schema": schema,
                    "source_table": table,
                    "version": 1,
                    "fingerprint": hashlib.sha256(canonical.encode()).hexdigest(),
                    "columns": json.dumps(columns),
                    "primary_key": json.dumps(key),
                    "replica_identity": _IDENTITY[identity[0]],
                    "first_lsn": None,
                    "recorded_at": datetime.now(UTC),
                }
            )
    return rows


def record_source_schemas(
    dsn: str, database: duckdb.DuckDBPyConnection, tables: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Append the schema rows of ``tables`` to raw.source_schemas (created if missing)."""
    rows = schema_rows(dsn, tables)
    database.execute(SOURCE_SCHEMAS_DDL)
    for row in rows:
        database.execute(
            "INSERT INTO raw.source_schemas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            list(row.values()),
        )
    return rows
