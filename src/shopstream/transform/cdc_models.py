"""Typed staging for every captured table, generated from the CDC reader's schema record.

The reader appends one row per version of a captured table's schema to ``raw.source_schemas``
(columns, PostgreSQL types, primary key). :data:`LATEST_SCHEMAS_SQL` reads the newest version
of each, :func:`captured_tables` turns those rows into :class:`CapturedTable` values and
:func:`write_models` writes, for each, two thin dbt models that call the project's macros
(``macros/cdc_staging.sql``, ``macros/cdc_types.sql``) with the columns spelled out, so a
table's staging compiles without asking the warehouse anything::

    >>> orders = CapturedTable("cdc_orders", "public", "orders", 1, (
    ...     SourceColumn("order_id", "text", "text", True, False),
    ...     SourceColumn("total", "numeric(14,2)", "numeric(14,2)", False, True)), ("order_id",))
    >>> orders.model_name, orders.history_model_name
    ('stg_orders', 'stg_orders_history')

- ``stg_<x>``: the current state per primary key (see the macro ``cdc_current``), ``<x>``
  being the raw table's name without ``cdc_``, unless that name is taken (see
  :func:`assign_model_names`: another captured table's model, e.g. ``orders`` and
  ``orders_history``, or a hand-written model such as ``stg_events``), then ``<x>_cdc``
  (``_cdc2``, ``_cdc3``, ... if that is taken too);
- ``stg_<x>_history``: one row per version with ``valid_from`` / ``valid_to``;
- a table without a primary key gets only its history: without a key, PostgreSQL sends no
  way to tell two equal rows apart, so a "current state" would be a guess (see
  :func:`write_models`);
- ``cdc_staging.yml``: the ``cdc`` source (schema ``raw``) and every model's documentation and
  tests; the shop's five tables get hand-written ones (``shop_tables.yml``);
- ``pipeline_freshness`` (schema ``monitoring``): per raw table the newest event and ingest
  times, the lag and the rows of the last hour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LATEST_SCHEMAS_SQL",
    "CapturedTable",
    "SchemaRecordError",
    "SourceColumn",
    "assign_model_names",
    "captured_tables",
    "hand_written_models",
    "write_models",
]

#: The newest version of every captured table's schema. Portable (DuckDB, BigQuery): no QUALIFY,
#: no casts of JSON. The record is at-least-once, so a version may come twice; callers dedupe.
LATEST_SCHEMAS_SQL = """\
SELECT s.raw_table, s.source_schema, s.source_table, s.version, s.fingerprint,
       s.columns, s.primary_key
FROM raw.source_schemas AS s
JOIN (SELECT raw_table, max(version) AS version FROM raw.source_schemas GROUP BY raw_table)
     AS latest
  ON latest.raw_table = s.raw_table AND latest.version = s.version
ORDER BY s.raw_table"""

#: Where the generated models keep their tables (the layers' names, see generate_schema_name).
STAGING_SCHEMA = "staging"
MONITORING_SCHEMA = "monitoring"
SOURCE_NAME = "cdc"
YAML_FILE = "cdc_staging.yml"
FRESHNESS_MODEL = "pipeline_freshness"
_RAW_TABLE = re.compile(r"^cdc_[a-z0-9_]{1,59}$")
#: The hand-written models of the packaged project (generated ones go to models/cdc in the
#: working copy, never here).
_PROJECT_MODELS = Path(__file__).parent / "project" / "models"
#: The suffix a generated model's stem takes when its own name is taken, then _cdc2, ...
_RENAME_SUFFIX = "_cdc"
_MAX_RENAMES = 9


class SchemaRecordError(ValueError):
    """A row of ``raw.source_schemas`` that cannot be used; says which and why."""


@dataclass(frozen=True)
class SourceColumn:
    """One column of a captured table, as the schema record describes it."""

    name: str
    type: str  # format_type(oid, typmod), e.g. "numeric(14,2)", "my_domain"
    base_type: str  # what staging types by: a domain's base type, "text" for enums
    key: bool
    nullable: bool | None


@dataclass(frozen=True)
class CapturedTable:
    """A captured source table at the newest version of its schema."""

    raw_table: str
    source_schema: str
    source_table: str
    version: int
    columns: tuple[SourceColumn, ...]
    primary_key: tuple[str, ...]
    #: What follows stg_ in the model names; "" = the raw name without cdc_ (see
    #: assign_model_names, which sets it when that name is taken).
    stem: str = ""

    @property
    def default_stem(self) -> str:
        return self.raw_table.removeprefix("cdc_")

    @property
    def model_name(self) -> str:
        return "stg_" + (self.stem or self.default_stem)

    @property
    def history_model_name(self) -> str:
        return self.model_name + "_history"

    @property
    def has_current_state(self) -> bool:
        """Only a table with a primary key has a current state per key."""
        return bool(self.primary_key)


def _json_value(value: Any, what: str) -> Any:
    # DuckDB hands JSON columns over as text, BigQuery's client as parsed values.
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise SchemaRecordError(f"{what} is not JSON: {exc}") from exc
    return value


def _column(raw: Any, where: str) -> SourceColumn:
    if not isinstance(raw, Mapping):
        raise SchemaRecordError(f"{where}: a column must be an object, got {raw!r}")
    try:
        name, type_, base_type = raw["name"], raw["type"], raw.get("base_type") or raw["type"]
    except KeyError as exc:
        raise SchemaRecordError(f"{where}: column {raw!r} has no {exc.args[0]!r}") from exc
    if not all(isinstance(v, str) and v for v in (name, type_, base_type)):
        raise SchemaRecordError(f"{where}: column {raw!r}: name and types must be text")
    nullable = raw.get("nullable")
    return SourceColumn(name, type_, base_type, bool(raw.get("key", False)), nullable)


def _table(row: Mapping[str, Any]) -> CapturedTable:
    raw_table = row.get("raw_table")
    if not isinstance(raw_table, str) or not _RAW_TABLE.match(raw_table):
        raise SchemaRecordError(f"raw.source_schemas: raw_table {raw_table!r} is not a cdc_ table")
    where = f"raw.source_schemas {raw_table} version {row.get('version')}"
    columns_raw = _json_value(row.get("columns"), f"{where}: columns")
    key_raw = _json_value(row.get("primary_key"), f"{where}: primary_key")
    if not isinstance(columns_raw, list) or not columns_raw:
        raise SchemaRecordError(f"{where}: columns must be a non-empty list")
    if not isinstance(key_raw, list) or not all(isinstance(k, str) for k in key_raw):
        raise SchemaRecordError(f"{where}: primary_key must be a list of column names")
    columns = tuple(_column(c, where) for c in columns_raw)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise SchemaRecordError(f"{where}: a column name appears twice in {names}")
    missing = [k for k in key_raw if k not in names]
    if missing:
        raise SchemaRecordError(f"{where}: primary key columns {missing} are not columns")
    try:
        version = int(row["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaRecordError(f"{where}: version must be an integer") from exc
    return CapturedTable(
        raw_table=raw_table,
        source_schema=str(row.get("source_schema")),
        source_table=str(row.get("source_table")),
        version=version,
        columns=columns,
        primary_key=tuple(key_raw),
    )


def captured_tables(rows: Iterable[Mapping[str, Any]]) -> list[CapturedTable]:
    """The newest schema of each captured table, sorted by raw table.

    ``rows`` are rows of ``raw.source_schemas`` (e.g. :data:`LATEST_SCHEMAS_SQL`'s; older
    versions may be among them and are passed over). A version re-sent by the reader (same
    raw table and version) counts once; two different schemas under one version are an error.
    """
    newest: dict[str, CapturedTable] = {}
    for row in rows:
        table = _table(row)
        seen = newest.get(table.raw_table)
        if seen is None or table.version > seen.version:
            newest[table.raw_table] = table
        elif table.version == seen.version and table != seen:
            raise SchemaRecordError(
                f"raw.source_schemas: {table.raw_table} version {table.version} is recorded "
                "twice with different columns or key"
            )
    return assign_model_names([newest[name] for name in sorted(newest)])


def hand_written_models(models: Path = _PROJECT_MODELS) -> frozenset[str]:
    """Names of the project's own models (its .sql and .py files under ``models``) and of
    the generated monitoring model: no generated staging model may take one."""
    names = {p.stem for p in models.rglob("*") if p.suffix in (".sql", ".py")}
    return frozenset(names | {FRESHNESS_MODEL})


def assign_model_names(
    tables: Sequence[CapturedTable], reserved: frozenset[str] | None = None
) -> list[CapturedTable]:
    """``tables`` (same order) with model names that clash neither with each other nor with
    ``reserved`` (default: :func:`hand_written_models`).

    Each table wants ``stg_<x>`` and ``stg_<x>_history`` (<x> = raw name without cdc_).
    Tables choose in order of (length of <x>, raw name), so the result depends only on the
    set of tables, not on the order they were captured: ``orders`` keeps its names and
    ``orders_history`` (whose ``stg_orders_history`` is ``orders``' history) becomes
    ``stg_orders_history_cdc``. A taken name moves <x> to ``<x>_cdc``, then ``<x>_cdc2``, ...,
    skipping names other tables want for themselves; after that a SchemaRecordError names
    both tables.
    """
    reserved = hand_written_models() if reserved is None else reserved
    wants: dict[str, str] = {}  # a model name -> the raw table whose own name it is
    for table in tables:
        for name in _names_of(table.default_stem):
            wants.setdefault(name, table.raw_table)
    owner: dict[str, str] = dict.fromkeys(reserved, "a hand-written model")
    stems: dict[str, str] = {}
    for table in sorted(tables, key=lambda t: (len(t.default_stem), t.raw_table)):
        base = table.default_stem
        candidates = [base] + [
            f"{base}{_RENAME_SUFFIX}{n if n > 1 else ''}" for n in range(1, _MAX_RENAMES + 1)
        ]
        for stem in candidates:
            names = _names_of(stem)
            free = all(name not in owner for name in names)
            if stem != base:  # a new name must not take another table's own name
                free = free and all(
                    wants.get(name, table.raw_table) == table.raw_table for name in names
                )
            if free:
                break
        else:
            clash = next(owner[n] for n in _names_of(base) if n in owner)
            raise SchemaRecordError(
                f"raw.source_schemas: no free model name for {table.raw_table}: "
                f"stg_{base} is {clash}'s and so are {', '.join(candidates[1:])}"
            )
        for name in names:
            owner[name] = table.raw_table
        stems[table.raw_table] = stem
    return [
        t if stems[t.raw_table] == t.default_stem else replace(t, stem=stems[t.raw_table])
        for t in tables
    ]


def _names_of(stem: str) -> tuple[str, str]:
    # Both names are taken even for a table without a key (history only): a key added later
    # must not rename its history.
    return f"stg_{stem}", f"stg_{stem}_history"


# -- writing the models -------------------------------------------------------------------------


def _jinja_literal(value: Any) -> str:
    # JSON is valid Jinja for strings, lists, dicts, numbers; booleans and null are spelled as
    # Jinja spells them.
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_jinja_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}: {_jinja_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(value)


def _columns_literal(table: CapturedTable) -> str:
    lines = [
        "    "
        + _jinja_literal({"name": c.name, "type": c.type, "base_type": c.base_type, "key": c.key})
        for c in table.columns
    ]
    return "[\n" + ",\n".join(lines) + ",\n  ]"


_HEADER = (
    "-- Generated by shopstream.transform.cdc_models from raw.source_schemas "
    "({raw_table} version {version}); do not edit.\n"
)


def _model_sql(table: CapturedTable, macro: str) -> str:
    # The columns are written out so that compiling needs no warehouse; the macro does the work.
    return (
        _HEADER.format(raw_table=table.raw_table, version=table.version)
        + "{{ config(**cdc_model_config("
        + f"{macro!r}, {_jinja_literal(list(table.primary_key))}, {_columns_literal(table)}, "
        + f"{table.raw_table!r}))"
        + " }}\n\n"
        + "{{ "
        + f"{macro}(source({SOURCE_NAME!r}, {table.raw_table!r}), "
        + f"columns={_columns_literal(table)}, "
        + f"primary_key={_jinja_literal(list(table.primary_key))}"
        + ") }}\n"
    )


def _freshness_sql(tables: Sequence[CapturedTable]) -> str:
    raw = [
        ("raw", "events", "event_ts", "received_at"),
        ("raw", "dead_letter", "received_at", "received_at"),
    ]
    raw += [(SOURCE_NAME, t.raw_table, "commit_ts", "ingested_at") for t in tables]
    parts = [
        "{{ "
        + f"pipeline_freshness_of(source({src!r}, {name!r}), {name!r}, {event!r}, {ingest!r})"
        + " }}"
        for src, name, event, ingest in raw
    ]
    return (
        "-- Generated by shopstream.transform.cdc_models; do not edit.\n"
        "{{ config(materialized='view', schema='monitoring') }}\n\n"
        + "\nunion all\n".join(parts)
        + "\n"
    )


@cache
def shop_documentation() -> dict[str, Any]:
    """The hand-written documentation and tests of the shop's tables (``shop_tables.yml``)."""
    text = resources.files("shopstream.transform").joinpath("shop_tables.yml").read_text("utf-8")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def _shop_docs(table: CapturedTable) -> dict[str, Any] | None:
    docs = shop_documentation()
    if table.source_schema != docs["schema"]:
        return None
    found = docs["tables"].get(table.source_table)
    return found if isinstance(found, dict) else None


def _column_description(column: SourceColumn) -> str:
    return f"Source column {column.name} ({column.type})." + (
        " Part of the primary key." if column.key else ""
    )


def _keep_tests(tests: list[Any], model_names: set[str]) -> list[Any]:
    """Tests whose relationships point at models that exist in this project."""
    kept = []
    for test in tests:
        if isinstance(test, dict) and "relationships" in test:
            to = test["relationships"]["arguments"]["to"]
            target = to.removeprefix("ref('").removesuffix("')")
            if target not in model_names:
                continue
        kept.append(test)
    return kept


def _model_yaml(
    table: CapturedTable, history: bool, model_names: set[str], all_columns: dict[str, set[str]]
) -> dict[str, Any]:
    docs = _shop_docs(table)
    source = f"{table.source_schema}.{table.source_table}"
    columns: list[dict[str, Any]] = []
    for column in table.columns:
        entry: dict[str, Any] = {"name": column.name}
        shop_column = (docs or {}).get("columns", {}).get(column.name)
        entry["description"] = (
            shop_column["description"] if shop_column else _column_description(column)
        )
        tests: list[Any] = []
        if not history:
            if shop_column:
                tests = _keep_tests(list(shop_column.get("data_tests", [])), model_names)
                tests = [t for t in tests if _relationship_column_exists(t, all_columns)]
            elif column.key and len(table.primary_key) == 1:
                tests = ["unique", "not_null"]
            elif column.key:
                tests = ["not_null"]
        if tests:
            entry["data_tests"] = tests
        columns.append(entry)
    if history:
        columns += [
            {
                "name": "valid_from",
                "description": "When this version was committed (UTC).",
                "data_tests": ["not_null"],
            },
            {
                "name": "valid_to",
                "description": "When the next version, the delete or a truncate "
                "of the table was committed (UTC); null while this version is current.",
            },
            {
                "name": "_cdc_change_id",
                "description": "The change that made this version "
                "(commit LSN + position; orders changes).",
                "data_tests": ["unique", "not_null"],
            },
            {
                "name": "_cdc_op",
                "description": "What made this version: c (insert), u (update) "
                "or r (snapshot read).",
                "data_tests": [{"accepted_values": {"arguments": {"values": ["c", "u", "r"]}}}],
            },
        ]
    else:
        columns += [
            {
                "name": "_cdc_change_id",
                "description": "The change that made the current version (commit LSN + position).",
                "data_tests": ["unique", "not_null"],
            },
            {
                "name": "_cdc_changed_at",
                "description": "When that change was committed (UTC).",
                "data_tests": ["not_null"],
            },
        ]
    columns.append(
        {
            "name": "_cdc_untyped_columns",
            "description": "Columns whose raw value the warehouse "
            "type cannot hold exactly (numeric NaN or out of range, infinite or out-of-range "
            "dates, an unchanged TOAST value with no earlier version), comma-separated; those "
            "columns are null in this row. Null when every value was typed.",
        }
    )
    if history:
        description = (
            f"Every version of {source} (captured as raw.{table.raw_table}, schema version "
            f"{table.version}): one row per insert, update or snapshot read, typed, with the "
            "interval it was current."
        )
    else:
        description = (
            (docs or {}).get("description")
            or f"Current state of {source} per primary key ({', '.join(table.primary_key)})."
        ) + (
            f" Rebuilt from raw.{table.raw_table} (schema version {table.version}): latest "
            "change per key, deletes and truncates applied, at-least-once duplicates counted once."
        )
    model: dict[str, Any] = {
        "name": table.history_model_name if history else table.model_name,
        "description": description,
        "columns": columns,
    }
    if not history and len(table.primary_key) > 1:
        model["data_tests"] = [
            {"cdc_unique_key": {"arguments": {"columns": list(table.primary_key)}}}
        ]
    return model


def _relationship_column_exists(test: Any, all_columns: dict[str, set[str]]) -> bool:
    if not (isinstance(test, dict) and "relationships" in test):
        return True
    arguments = test["relationships"]["arguments"]
    target = arguments["to"].removeprefix("ref('").removesuffix("')")
    return arguments["field"] in all_columns.get(target, set())


def _freshness_yaml(tables: Sequence[CapturedTable]) -> dict[str, Any]:
    return {
        "name": FRESHNESS_MODEL,
        "description": "Per raw table: how fresh it is. One row per raw table (events, "
        "dead_letter and every cdc_ table), computed when queried.",
        "columns": [
            {
                "name": "raw_table",
                "description": "The raw table.",
                "data_tests": ["unique", "not_null"],
            },
            {
                "name": "newest_event_at",
                "description": "Newest event time in it (events: "
                "event_ts, the client's clock; dead_letter: received_at; cdc_: commit_ts). UTC.",
            },
            {
                "name": "newest_ingested_at",
                "description": "Newest ingest time (events and "
                "dead_letter: received_at; cdc_: ingested_at). UTC.",
            },
            {
                "name": "lag_minutes",
                "description": "Whole minutes from the newest event time to "
                "now: how far behind the source the table is (null when empty).",
            },
            {
                "name": "rows_last_hour",
                "description": "Rows ingested in the last hour.",
                "data_tests": ["not_null"],
            },
        ],
    }


def _yaml_document(tables: Sequence[CapturedTable]) -> dict[str, Any]:
    model_names = {t.model_name for t in tables if t.has_current_state}
    all_columns = {t.model_name: {c.name for c in t.columns} for t in tables if t.has_current_state}
    models: list[dict[str, Any]] = []
    for table in tables:
        if table.has_current_state:
            models.append(_model_yaml(table, False, model_names, all_columns))
        models.append(_model_yaml(table, True, model_names, all_columns))
    models.append(_freshness_yaml(tables))
    return {
        "version": 2,
        "sources": [
            {
                "name": SOURCE_NAME,
                "description": "Change tables of the captured PostgreSQL tables (raw.cdc_<table>"
                "): append-only, at-least-once, one row per change (shopstream.events.raw).",
                "schema": "raw",
                "tables": [
                    {
                        "name": t.raw_table,
                        "description": f"Changes of {t.source_schema}.{t.source_table}.",
                    }
                    for t in tables
                ],
            }
        ],
        "models": models,
    }


def write_models(tables: Sequence[CapturedTable], directory: Path) -> list[str]:
    """Write the staging models of ``tables``, their yml and ``pipeline_freshness`` into
    ``directory`` (created if missing; files of tables no longer captured are removed).

    Returns the names of the models written, e.g. ``['stg_orders', 'stg_orders_history',
    ..., 'pipeline_freshness']``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    files: dict[str, str] = {}
    for table in tables:
        if table.has_current_state:
            files[table.model_name] = _model_sql(table, "cdc_current")
            names.append(table.model_name)
        files[table.history_model_name] = _model_sql(table, "cdc_history")
        names.append(table.history_model_name)
    files[FRESHNESS_MODEL] = _freshness_sql(tables)
    names.append(FRESHNESS_MODEL)
    for stale in directory.glob("*.sql"):
        if stale.stem not in files:
            stale.unlink()
    for name, sql in files.items():
        (directory / f"{name}.sql").write_text(sql, encoding="utf-8")
    (directory / YAML_FILE).write_text(
        "# Generated by shopstream.transform.cdc_models; do not edit.\n"
        + yaml.safe_dump(_yaml_document(tables), sort_keys=False, width=100),
        encoding="utf-8",
    )
    return names
