"""The raw layer's tables: append-only, partitioned by day, never updated.

One Arrow schema per table is the single definition; DDL for each warehouse is derived from
it, so a column added here appears everywhere.
"""

from __future__ import annotations

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

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def cdc_table_name(source_table: str) -> str:
    """The raw table for a captured source table: ``orders`` → ``cdc_orders``.

    Source names are lower-cased and anything outside [a-z0-9_] becomes ``_`` so that the
    name is a plain identifier in every warehouse.
    """
    name = "cdc_" + re.sub(r"[^a-z0-9_]", "_", source_table.lower())
    if not _TABLE_NAME.match(name):
        raise ValueError(f"cannot derive a raw table name from source table {source_table!r}")
    return name


def schema_for(table: str) -> pa.Schema:
    if table == "events":
        return RAW_EVENTS
    if table == "dead_letter":
        return RAW_DEAD_LETTER
    if table.startswith("cdc_"):
        return RAW_CDC
    raise KeyError(f"no raw table named {table!r}")


def json_columns(table: str) -> frozenset[str]:
    if table.startswith("cdc_"):
        return CDC_JSON_COLUMNS
    return JSON_COLUMNS.get(table, frozenset())
