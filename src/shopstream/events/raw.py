"""The raw layer's tables: append-only, partitioned by day, never updated.

One Arrow schema per table is the single definition; DDL for each warehouse is derived from
it, so a column added here appears everywhere.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
#: Arrow has no JSON type: JSON columns travel as strings and the warehouse types them.
JSON = pa.string()
JSON_COLUMNS: dict[str, frozenset[str]] = {}

RAW_EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_name", pa.string()),
        pa.field("event_ts", TS, nullable=False),
        pa.field("received_at", TS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("device_type", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("utm_source", pa.string()),
        pa.field("utm_medium", pa.string()),
        pa.field("utm_campaign", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("properties", JSON),
        pa.field("payload", JSON),
    ]
)
JSON_COLUMNS["events"] = frozenset({"properties", "payload"})

RAW_DEAD_LETTER = pa.schema(
    [
        pa.field("dead_letter_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("context", JSON),
        pa.field("received_at", TS, nullable=False),
    ]
)
JSON_COLUMNS["dead_letter"] = frozenset({"context"})

RAW_CDC = pa.schema(
    [
        pa.field("change_id", pa.string(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("lsn", pa.int64()),
        pa.field("tx_id", pa.int64()),
        pa.field("commit_ts", TS),
        pa.field("commit_date", pa.date32()),
        pa.field("key", JSON),
        pa.field("before", JSON),
        pa.field("after", JSON),
        pa.field("source", JSON, nullable=False),
        pa.field("ingested_at", TS, nullable=False),
    ]
)
CDC_JSON_COLUMNS = frozenset({"key", "before", "after", "source"})

#: One row per version of a captured table's schema (written by the CDC reader, see
#: shopstream.cdc.schemas): columns, their PostgreSQL and base types, the key. No ``cdc_``
#: prefix on purpose: that prefix names change tables.
SOURCE_SCHEMAS = "source_schemas"
RAW_SOURCE_SCHEMAS = pa.schema(
    [
        pa.field("raw_table", pa.string(), nullable=False),
        pa.field("source_schema", pa.string(), nullable=False),
        pa.field("source_table", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("columns", JSON, nullable=False),
        pa.field("primary_key", JSON, nullable=False),
        pa.field("replica_identity", pa.string()),
        pa.field("first_lsn", pa.int64()),
        pa.field("recorded_at", TS, nullable=False),
    ]
)
JSON_COLUMNS[SOURCE_SCHEMAS] = frozenset({"columns", "primary_key"})

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Lower-case words joined by single underscores: kept as they are in a raw table's name.
_PLAIN = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_NOT_PLAIN = re.compile(r"[^a-z0-9]+")
#: The schema whose tables keep the short ``cdc_<table>`` names.
DEFAULT_CDC_SCHEMA = "public"
_DIGEST_CHARS = 10  # 40 bits of SHA-256


def cdc_table_name(table: str, schema: str = DEFAULT_CDC_SCHEMA) -> str:
    """The raw table for a captured source table, one per source table, whatever its schema:

    - ``public.orders`` → ``cdc_orders`` (the default schema keeps short names);
    - ``sales.orders`` → ``cdc_sales__orders`` (schema and table joined by ``__``);
    - anything else gets a readable part and a hash of the exact names after ``___``:
      ``public."Orders"`` → ``cdc_orders___<10 hex>``, ``public.sales__orders`` →
      ``cdc_sales_orders___<10 hex>``. That is: a name with upper case, characters outside
      [a-z0-9_], a leading, trailing or double underscore, or one that would pass 63 characters.

    Why this is one-to-one: a plain public name has no ``__`` after ``cdc_``, a plain other
    schema's name exactly one ``__`` (where it splits back into schema and table), neither
    has ``___``, and every hashed name has it. Two hashed names are equal only if the SHA-256
    of their exact (schema, table) agree in 40 bits. Every name is a plain identifier of at
    most 63 characters, valid in every warehouse.
    """
    if _PLAIN.fullmatch(table) and (schema == DEFAULT_CDC_SCHEMA or _PLAIN.fullmatch(schema)):
        name = f"cdc_{table}" if schema == DEFAULT_CDC_SCHEMA else f"cdc_{schema}__{table}"
        if len(name) <= 63:
            return name
    digest = hashlib.sha256(f"{schema}\0{table}".encode()).hexdigest()[:_DIGEST_CHARS]
    parts = [table] if schema == DEFAULT_CDC_SCHEMA else [schema, table]
    readable = "__".join(_NOT_PLAIN.sub("_", part.lower()).strip("_") for part in parts)
    name = f"cdc_{readable[: 63 - len('cdc____') - _DIGEST_CHARS]}___{digest}"
    if not _TABLE_NAME.match(name):  # cannot happen; a guard for the warehouses' sake
        raise ValueError(f"cannot derive a raw table name from {schema}.{table}")
    return name


def schema_for(table: str) -> pa.Schema:
    if table == "events":
        return RAW_EVENTS
    if table == "dead_letter":
        return RAW_DEAD_LETTER
    if table == SOURCE_SCHEMAS:
        return RAW_SOURCE_SCHEMAS
    if table.startswith("cdc_"):
        return RAW_CDC
    raise KeyError(f"no raw table named {table!r}")


def json_columns(table: str) -> frozenset[str]:
    if table.startswith("cdc_"):
        return CDC_JSON_COLUMNS
    return JSON_COLUMNS.get(table, frozenset())
