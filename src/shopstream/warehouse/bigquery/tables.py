"""Raw, monitoring and mart tables as BigQuery sees them, derived from their Arrow schemas.

Raw tables are day-partitioned and clustered, and created through the API (partitioning given
in SQL DDL is one thing bqemulator drops; the API form works on both):

- ``events``: by ``event_date``, clustered by ``event_type`` (models filter and group by it);
- ``cdc_*``: by ``commit_date`` (the staging models' window, see macros/cdc_staging.sql),
  clustered by ``op`` and ``change_id`` (they split by kind and drop copies by change id);
- ``dead_letter``: by ``received_at``'s day, clustered by ``source``;
- ``source_schemas``: by ``recorded_at``'s day, clustered by ``raw_table``.

JSON columns become BigQuery JSON, except ``events.properties``: the events models test it
with ``SAFE.PARSE_JSON`` (a malformed value lands in raw and staging rejects it as
``properties_not_json``), which takes a STRING.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shopstream.events.raw import SOURCE_SCHEMAS, json_columns, schema_for
from shopstream.warehouse.base import WarehouseError

#: Arrow type → BigQuery type, for what the platform's tables hold.
_SCALAR_TYPES: dict[pa.DataType, str] = {
    pa.string(): "STRING",
    pa.large_string(): "STRING",
    pa.int8(): "INT64",
    pa.int16(): "INT64",
    pa.int32(): "INT64",
    pa.int64(): "INT64",
    pa.uint8(): "INT64",
    pa.uint16(): "INT64",
    pa.uint32(): "INT64",
    pa.float32(): "FLOAT64",
    pa.float64(): "FLOAT64",
    pa.bool_(): "BOOL",
    pa.date32(): "DATE",
    pa.binary(): "BYTES",
}

#: Raw columns kept as text although they hold JSON (see the module's docstring).
_JSON_AS_TEXT = {("events", "properties")}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # BigQuery's name for it (STRING, JSON, TIMESTAMP, NUMERIC...)
    required: bool


@dataclass(frozen=True)
class TableLayout:
    """A table's columns, partitioning (a DATE or TIMESTAMP column, by day) and clustering."""

    columns: tuple[Column, ...]
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()


def bigquery_type(field: pa.Field, *, json: bool, where: str) -> str:
    """BigQuery's type for an Arrow field (``where`` names the table for the error)."""
    kind = field.type
    if json:
        return "JSON"
    if pa.types.is_timestamp(kind):
        # Timestamps with a zone are instants (TIMESTAMP); without, wall-clock (DATETIME).
        return "TIMESTAMP" if kind.tz else "DATETIME"
    if pa.types.is_decimal(kind):
        # Money stays exact: NUMERIC holds 38 digits with scale ≤ 9, BIGNUMERIC more.
        fits = kind.precision - kind.scale <= 29 and kind.scale <= 9
        return "NUMERIC" if fits else "BIGNUMERIC"
    sql_type = _SCALAR_TYPES.get(kind)
    if sql_type is None:
        raise WarehouseError(f"{where}.{field.name}: no BigQuery type for Arrow type {kind}")
    return sql_type


def columns_of(schema: pa.Schema, json: Collection[str], where: str) -> tuple[Column, ...]:
    return tuple(
        Column(f.name, bigquery_type(f, json=f.name in json, where=where), not f.nullable)
        for f in schema
    )


def raw_layout(table: str) -> TableLayout:
    """The layout of ``raw.<table>`` (a KeyError for a name raw does not have)."""
    as_json = {name for name in json_columns(table) if (table, name) not in _JSON_AS_TEXT}
    columns = columns_of(schema_for(table), as_json, f"raw.{table}")
    if table == "events":
        return TableLayout(columns, "event_date", ("event_type",))
    if table == "dead_letter":
        return TableLayout(columns, "received_at", ("source",))
    if table == SOURCE_SCHEMAS:
        return TableLayout(columns, "recorded_at", ("raw_table",))
    return TableLayout(columns, "commit_date", ("op", "change_id"))  # cdc_<table>


def check_rows(where: str, batch: pa.Table, columns: tuple[Column, ...]) -> None:
    """Refuse, naming the table, the column and the first bad row, what BigQuery would refuse
    (and what bqemulator lets through or answers with an internal error): a missing value in
    a REQUIRED column, text that is not JSON in a JSON column, a column the table lacks."""
    known = {column.name for column in columns}
    extra = [name for name in batch.column_names if name not in known]
    if extra:
        raise WarehouseError(f"{where} has no column {extra[0]!r} (rows refused)")
    for column in columns:
        if column.name not in batch.column_names:
            if column.required:
                raise WarehouseError(f"{where}.{column.name} is REQUIRED but missing")
            continue
        values = batch.column(column.name)
        if column.required and values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise WarehouseError(
                f"{where}.{column.name} is REQUIRED but row {row} has no value (rows refused)"
            )
        if column.type == "JSON":
            for row, text in enumerate(values.to_pylist()):
                if text is None:
                    continue
                try:
                    orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise WarehouseError(
                        f"{where}.{column.name} is JSON but row {row} holds {text[:80]!r}, "
                        f"which is not JSON ({exc}) (rows refused)"
                    ) from exc
