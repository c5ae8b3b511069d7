"""The warehouse's tables as the optimizer's rules see them.

A :class:`Catalog` maps ``layer.table`` names (``raw.events``, ``mart.daily_sales``) to a
:class:`TableInfo`: columns with their types and logical sizes, row count, the partition column
and the cluster columns (what BigQuery prunes by; the DuckDB shape keeps the same layout so the
advice holds in both), and the key that makes a row unique when one is known.

>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"), Column("event_date", "DATE")),
...                    partition_by="event_date")
>>> catalog = Catalog({"raw.events": events})
>>> catalog.find(["my-project", "raw", "events"]).name
'raw.events'
>>> catalog.sqlglot_schema()
{'raw': {'events': {'event_id': 'VARCHAR', 'event_date': 'DATE'}}}
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import ParseError

from shopstream.events.raw import SOURCE_SCHEMAS
from shopstream.genai.optimizer.findings import Dialect
from shopstream.warehouse.base import LAYERS, QueryError

if TYPE_CHECKING:
    from jinja2 import Environment

    from shopstream.transform.cdc_models import CapturedTable
    from shopstream.warehouse.base import Warehouse


@dataclass(frozen=True)
class Column:
    name: str
    #: The warehouse's type name, as the warehouse spells it (DuckDB: VARCHAR, DECIMAL(18,2)).
    type: str
    nullable: bool = True
    #: Logical bytes of the whole column (what BigQuery bills for reading it); None: unknown.
    bytes: int | None = None


@dataclass(frozen=True)
class TableInfo:
    #: ``layer.table``, lower case.
    name: str
    columns: tuple[Column, ...]
    rows: int | None = None
    #: The column the table is partitioned by (by day), if any.
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()
    #: Columns whose values are unique per row (a primary key, a model's grain), if known.
    unique_key: tuple[str, ...] = ()
    #: Rows per partition value (ISO date -> rows), when known: how much a filter prunes.
    partition_rows: Mapping[str, int] = field(default_factory=dict)
    #: A view: reading it runs its query (its rows and sizes are not measured).
    is_view: bool = False
    #: A view's query (as the warehouse stores it, in its dialect), when known: what reading
    #: the view really scans.
    definition: str | None = None

    def column(self, name: str) -> Column | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)

    @property
    def bytes(self) -> int | None:
        sizes = [c.bytes for c in self.columns]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


@dataclass(frozen=True)
class Catalog:
    tables: Mapping[str, TableInfo]

    def find(self, parts: Sequence[str]) -> TableInfo | None:
        """The table a reference names: ``events`` (if only one layer has it), ``raw.events``,
        or ``project.raw.events`` (BigQuery's project prefix is ignored)."""
        names = [p.lower() for p in parts if p]
        if len(names) >= 2:
            return self.tables.get(f"{names[-2]}.{names[-1]}")
        if len(names) == 1:
            found = [t for key, t in self.tables.items() if key.split(".", 1)[1] == names[0]]
            return found[0] if len(found) == 1 else None
        return None

    def sqlglot_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        """``{layer: {table: {column: type}}}``, what sqlglot's ``qualify`` takes."""
        schema: dict[str, dict[str, dict[str, str]]] = {}
        for name, table in sorted(self.tables.items()):
            layer, _, short = name.partition(".")
            schema.setdefault(layer, {})[short] = {c.name: c.type for c in table.columns}
        return schema


# -- loading a warehouse's catalog ----------------------------------------------------------------

#: The delivery contract's deterministic id of each kind of raw row (one per change or event:
#: at-least-once, so raw may hold a copy of one; staging drops copies by it).
_RAW_ROW_IDS: dict[str, tuple[str, ...]] = {
    "events": ("event_id",),
    "dead_letter": ("dead_letter_id",),
}
_CDC_ROW_ID: tuple[str, ...] = ("change_id",)

#: The layer a model of the project lands in, by its folder under models/.
_MODEL_LAYERS = {"staging": "staging", "marts": "mart", "monitoring": "monitoring"}

#: Source (PostgreSQL) base types a CDC key column may be clustered by on BigQuery (the rest,
#: JSON, bytes, floats and arrays, BigQuery cannot cluster by); see cdc_model_config in
#: macros/cdc_staging.sql, which this follows.
_NOT_CLUSTERABLE = ("json", "jsonb", "bytea", "real", "double precision", "float")


@dataclass(frozen=True)
class Layout:
    """What a table's definition (not its data) says: partitioning, clustering, unique key."""

    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()
    unique_key: tuple[str, ...] = ()


def load_catalog(
    warehouse: Warehouse,
    dialect: Dialect = "duckdb",
    *,
    project_dir: Path | None = None,
    measure: Collection[str] | None = None,
) -> Catalog:
    """Every table and view of the layers raw, staging, mart and monitoring in ``warehouse``,
    with their layout (BigQuery's partitioning and clustering, unique keys) and, on DuckDB,
    their measured logical sizes and rows per partition.

    Types are spelled in ``dialect`` (the query's: sqlglot resolves columns with them).
    ``project_dir``: the dbt project whose model configs give staging's and the marts'
    layouts (default: the packaged one).

    On DuckDB the sizes are measured with one aggregate query per table (a full read of it):
    the bytes BigQuery would bill for each column, fixed-width types by their width,
    strings and blobs 2 bytes plus their octet length, JSON its text's octet length, NULL
    nothing. ``measure``: only these tables (``layer.table``) are measured, the others keep
    unknown sizes (default: all; on a large warehouse, pass the tables a query reads). Only
    the warehouse's ``query`` is used (and, on BigQuery, ``table_counts``).

    On BigQuery the catalog comes from the datasets' INFORMATION_SCHEMA (COLUMNS, TABLES,
    PARTITIONS; rows from the tables' metadata where PARTITIONS says nothing) and sizes are
    left unknown: the cost is BigQuery's own dry run. bqemulator answers TABLES and
    COLUMNS (with the partitioning and clustering of tables made through the API) but no
    PARTITIONS, and its dry run says 0 bytes.
    """
    from shopstream.genai.optimizer.query import warehouse_dialect_of  # query imports this module

    source = warehouse_dialect_of(warehouse)
    found = _bigquery_tables(warehouse) if source == "bigquery" else _duckdb_tables(warehouse)
    layouts = declared_layouts(warehouse, project_dir)
    tables: dict[str, TableInfo] = {}
    for name, table in sorted(found.items()):
        layer, _, short = name.partition(".")
        declared = layouts.get(name) or (
            # A CDC raw table whose schema record is missing still has the raw layout.
            _raw_layout(short) if layer == "raw" and short.startswith("cdc_") else Layout()
        )
        columns = table.columns
        if dialect != source:
            columns = tuple(replace(c, type=_type_in(c.type, source, dialect)) for c in columns)
        tables[name] = replace(
            table,
            columns=columns,
            # What the warehouse itself says wins; the declared layout fills in where it says
            # nothing (DuckDB has no partitions; bqemulator drops dbt's partitioning).
            partition_by=table.partition_by or declared.partition_by,
            cluster_by=table.cluster_by or declared.cluster_by,
            unique_key=table.unique_key or declared.unique_key,
        )
    if source == "duckdb":
        wanted = None if measure is None else {name.lower() for name in measure}
        tables = {
            name: _measured(warehouse, table) if wanted is None or name in wanted else table
            for name, table in tables.items()
        }
    return Catalog(tables)


def _type_in(type_name: str, source: Dialect, target: Dialect) -> str:
    """A column type written for another dialect (``VARCHAR`` on DuckDB is BigQuery's
    ``STRING``); left as it is when sqlglot cannot read it.

    >>> _type_in("DECIMAL(18,2)", "duckdb", "bigquery")
    'NUMERIC(18, 2)'
    """
    try:
        return exp.DataType.build(type_name, dialect=source).sql(dialect=target)
    except (ParseError, ValueError):
        return type_name


# -- what the definitions say ---------------------------------------------------------------------


def declared_layouts(warehouse: Warehouse, project_dir: Path | None = None) -> dict[str, Layout]:
    """``layer.table`` -> the layout BigQuery gives it: raw tables from the raw layout
    (:func:`shopstream.warehouse.bigquery.tables.raw_layout`), the dbt models' from their
    config blocks as compiled for target bigquery, CDC staging from the capture's schema
    record (primary keys)."""
    from shopstream.transform.workspace import PACKAGED_PROJECT

    layouts = {
        f"{layer}.{model}": layout
        for layer, model, layout in model_layouts((project_dir or PACKAGED_PROJECT) / "models")
    }
    for raw_table in ("events", "dead_letter", SOURCE_SCHEMAS):
        layouts[f"raw.{raw_table}"] = _raw_layout(raw_table)
    for table in _captured(warehouse):
        layouts[f"raw.{table.raw_table}"] = _raw_layout(table.raw_table)
        key = tuple(table.primary_key)
        clustered = tuple(
            c.name
            for c in table.columns
            if c.name in key
            and not (c.base_type.endswith("[]") or c.base_type.lower() in _NOT_CLUSTERABLE)
        )[:4]
        if table.has_current_state:
            layouts[f"staging.{table.model_name}"] = Layout(None, clustered, key)
        layouts[f"staging.{table.history_model_name}"] = Layout("valid_from", clustered)
    return layouts


def _raw_layout(table: str) -> Layout:
    from shopstream.warehouse.bigquery.tables import raw_layout

    layout = raw_layout(table)
    key = _CDC_ROW_ID if table.startswith("cdc_") else _RAW_ROW_IDS.get(table, ())
    return Layout(layout.partition_by, layout.cluster_by, key)


def _captured(warehouse: Warehouse) -> list[CapturedTable]:
    """The captured tables' newest schema record (none when raw.source_schemas is empty or
    missing: then there is no CDC staging either)."""
    from shopstream.transform.cdc_models import LATEST_SCHEMAS_SQL, captured_tables

    try:
        rows = warehouse.query(LATEST_SCHEMAS_SQL).to_pylist()
    except QueryError:
        return []
    return captured_tables(rows)


def model_layouts(models: Path) -> list[tuple[str, str, Layout]]:
    """(layer, model, layout) of every model under ``models`` with a config block, read from the
    block as dbt would evaluate it for target bigquery (the models declare partitioning and
    clustering only there), and a unique key from the config's ``unique_key`` or else the
    model's uniqueness tests in its YAML (``unique`` on one column, ``unique_key_columns`` /
    ``cdc_unique_key`` on several: its grain).

    >>> from shopstream.transform.workspace import PACKAGED_PROJECT
    >>> found = {f"{l}.{m}": x for l, m, x in model_layouts(PACKAGED_PROJECT / "models")}
    >>> sales = found["mart.daily_sales"]
    >>> sales.partition_by, sales.cluster_by, sales.unique_key
    ('order_date', ('category', 'delivery_type'), ('order_date', 'category', 'delivery_type'))
    """
    tested = _tested_keys(models)
    found = []
    for path in sorted(models.rglob("*.sql")):
        folder = path.relative_to(models).parts[0]
        layer = _MODEL_LAYERS.get(folder)
        if layer is None:
            continue
        config = _model_config(path.read_text(encoding="utf-8"), str(path))
        partition = config.get("partition_by")
        partition_by = partition.get("field") if isinstance(partition, Mapping) else None
        cluster = config.get("cluster_by") or ()
        key = config.get("unique_key") or tested.get(path.stem, ())
        found.append(
            (
                str(config.get("schema") or layer),
                path.stem,
                Layout(
                    partition_by=str(partition_by) if partition_by else None,
                    cluster_by=(cluster,) if isinstance(cluster, str) else tuple(cluster),
                    unique_key=(key,) if isinstance(key, str) else tuple(key),
                ),
            )
        )
    return found


def _model_config(text: str, where: str) -> dict[str, Any]:
    """The keyword arguments of a model's ``{{ config(...) }}``, evaluated as for target
    bigquery; other names the block calls (``shop_models_exist``, ``var``) answer "yes" or
    their default: only the layout is read from it."""
    from jinja2 import ChainableUndefined
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    class Anything(ChainableUndefined):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return True

    environment = SandboxedEnvironment(undefined=Anything)
    try:
        tokens = _config_tokens(environment, text)
    except TemplateError as exc:
        raise ValueError(f"{where}: cannot read the model's config block: {exc}") from exc
    if not tokens:
        return {}
    captured: dict[str, Any] = {}

    def config(*args: Any, **kwargs: Any) -> str:
        for arg in args:  # config(**cdc_model_config(...)): nothing to read here
            if isinstance(arg, Mapping):
                captured.update(arg)
        captured.update(kwargs)
        return ""

    try:
        environment.compile_expression(" ".join(tokens))(
            config=config,
            target={"type": "bigquery"},
            var=lambda _name, default=None: default,
        )
    except TemplateError as exc:
        raise ValueError(f"{where}: cannot read the model's config block: {exc}") from exc
    return captured


def _config_tokens(environment: Environment, text: str) -> list[str]:
    """The tokens of the first ``{{ config(...) }}`` (none if the model has none). Tokens, not
    a pattern: a pre_hook string may hold a "}}" of its own."""
    tokens: list[str] = []
    inside = False
    for _, kind, value in environment.lexer.tokeniter(text, None):
        if kind == "variable_begin":
            tokens, inside = [], True
        elif kind == "variable_end" and inside:
            inside = False
            if tokens[:2] == ["config", "("]:
                return tokens
        elif inside and kind != "whitespace":
            tokens.append(value)
    return []


def _tested_keys(models: Path) -> dict[str, tuple[str, ...]]:
    """model -> the columns its YAML tests as unique (the model's grain)."""
    keys: dict[str, tuple[str, ...]] = {}
    for path in sorted([*models.rglob("*.yml"), *models.rglob("*.yaml")]):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for model in document.get("models") or []:
            name = model.get("name")
            for test in model.get("data_tests") or model.get("tests") or []:
                if isinstance(test, Mapping):
                    for kind in ("unique_key_columns", "cdc_unique_key"):
                        body = test.get(kind)
                        if isinstance(body, Mapping):
                            columns = (body.get("arguments") or body).get("columns")
                            if columns and name not in keys:
                                keys[name] = tuple(columns)
            for column in model.get("columns") or []:
                tests = column.get("data_tests") or column.get("tests") or []
                plain = {t if isinstance(t, str) else next(iter(t), "") for t in tests}
                if "unique" in plain and name not in keys:
                    keys[name] = (column["name"],)
    return keys


# -- what the warehouse says ----------------------------------------------------------------------


def _duckdb_tables(warehouse: Warehouse) -> dict[str, TableInfo]:
    layers = ", ".join(f"'{layer}'" for layer in LAYERS)
    rows = warehouse.query(
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.is_nullable, "
        "t.table_type FROM information_schema.columns AS c "
        "JOIN information_schema.tables AS t USING (table_catalog, table_schema, table_name) "
        f"WHERE c.table_catalog = current_database() AND c.table_schema IN ({layers}) "
        "ORDER BY c.table_schema, c.table_name, c.ordinal_position"
    ).to_pylist()
    columns: dict[str, list[Column]] = {}
    views: set[str] = set()
    for row in rows:
        name = f"{row['table_schema']}.{row['table_name']}".lower()
        columns.setdefault(name, []).append(
            Column(row["column_name"], row["data_type"], row["is_nullable"] == "YES")
        )
        if row["table_type"] == "VIEW":
            views.add(name)
    definitions = {
        f"{r['schema_name']}.{r['view_name']}".lower(): r["sql"]
        for r in warehouse.query(
            "SELECT schema_name, view_name, sql FROM duckdb_views() "
            "WHERE NOT internal AND database_name = current_database()"
        ).to_pylist()
    }
    return {
        name: TableInfo(
            name, tuple(cols), is_view=name in views, definition=_view_query(definitions.get(name))
        )
        for name, cols in columns.items()
    }


def _view_query(create_view: str | None) -> str | None:
    """The query of DuckDB's ``CREATE VIEW ... AS <query>`` (None when sqlglot cannot read
    it: the view's cost is then unknown)."""
    if not create_view:
        return None
    try:
        statement = sqlglot.parse_one(create_view, read="duckdb")
    except ParseError:
        return None
    query = statement.expression if isinstance(statement, exp.Create) else None
    if isinstance(query, exp.Subquery):
        query = query.this
    return query.sql(dialect="duckdb") if isinstance(query, exp.Query) else None


def _bigquery_tables(warehouse: Warehouse) -> dict[str, TableInfo]:
    project = getattr(warehouse, "project", "")
    # Rows from the tables' metadata (free), for tables PARTITIONS says nothing of.
    counts = warehouse.table_counts()
    tables: dict[str, TableInfo] = {}
    for layer in LAYERS:
        schema = (
            f"`{project}.{layer}.INFORMATION_SCHEMA" if project else f"`{layer}.INFORMATION_SCHEMA"
        )
        try:
            kinds = {
                r["table_name"]: r["table_type"]
                for r in warehouse.query(
                    f"SELECT table_name, table_type FROM {schema}.TABLES`"
                ).to_pylist()
            }
            columns = warehouse.query(
                "SELECT table_name, column_name, data_type, is_nullable, is_partitioning_column, "
                f"clustering_ordinal_position FROM {schema}.COLUMNS` "
                "ORDER BY table_name, ordinal_position"
            ).to_pylist()
            partitions = warehouse.query(
                f"SELECT table_name, partition_id, total_rows FROM {schema}.PARTITIONS`"
            ).to_pylist()
        except QueryError:
            continue  # a dataset this warehouse does not have (or may not read)
        per_table: dict[str, list[dict[str, Any]]] = {}
        for row in columns:
            per_table.setdefault(row["table_name"], []).append(row)
        for table, cols in per_table.items():
            name = f"{layer}.{table}".lower()
            partition = next(
                (c["column_name"] for c in cols if c["is_partitioning_column"] == "YES"), None
            )
            clustered = sorted(
                (c for c in cols if c.get("clustering_ordinal_position")),
                key=lambda c: int(c["clustering_ordinal_position"]),
            )
            by_partition = {
                _partition_day(p["partition_id"]): int(p["total_rows"] or 0)
                for p in partitions
                if p["table_name"] == table
            }
            tables[name] = TableInfo(
                name,
                tuple(
                    Column(c["column_name"], c["data_type"], c["is_nullable"] == "YES")
                    for c in cols
                ),
                rows=sum(by_partition.values()) if by_partition else counts.get(name),
                partition_by=partition,
                cluster_by=tuple(c["column_name"] for c in clustered),
                partition_rows=by_partition if partition else {},
                is_view=kinds.get(table) == "VIEW",
            )
    return tables


def _partition_day(partition_id: str | None) -> str:
    """BigQuery's partition id (``20261130``) as an ISO day; its special partitions
    (``__NULL__``, ``__UNPARTITIONED__``) as they are."""
    text = partition_id or "__UNPARTITIONED__"
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


# -- sizes, measured on DuckDB --------------------------------------------------------------------


def logical_bytes_sql(column: Column) -> str:
    """The SQL summing the bytes BigQuery bills for reading ``column`` (its logical size):
    per non-NULL value 8 for integers, floats, dates and times, 1 for booleans, 16 for NUMERIC
    (32 for BIGNUMERIC), 16 for intervals, 2 + octet length for strings and blobs, the octet
    length of the text for JSON (and, as an approximation, for lists and structs).

    >>> logical_bytes_sql(Column("event_id", "VARCHAR"))
    'sum(2 + strlen(CAST("event_id" AS VARCHAR)))'
    >>> logical_bytes_sql(Column("revenue", "DECIMAL(18,2)"))
    'count("revenue") * 16'
    """
    quoted = '"' + column.name.replace('"', '""') + '"'
    kind = column.type.upper()
    width = _fixed_width(kind)
    if width is not None:
        return f"count({quoted}) * {width}"
    if kind == "BLOB":
        return f"sum(2 + octet_length({quoted}))"
    text = f"strlen(CAST({quoted} AS VARCHAR))"
    if kind in ("VARCHAR", "UUID", "TEXT", "STRING") or kind.startswith("ENUM"):
        return f"sum(2 + {text})"
    return f"sum({text})"  # JSON; LIST, STRUCT, MAP approximately: as their text


def _fixed_width(kind: str) -> int | None:
    if kind == "BOOLEAN":
        return 1
    if kind.startswith("DECIMAL"):
        digits = [int(d) for d in re.findall(r"\d+", kind)] or [18, 3]
        precision, scale = [*digits, 0][:2]
        return 16 if scale <= 9 and precision - scale <= 29 else 32
    if kind in ("HUGEINT", "UHUGEINT", "INTERVAL"):
        return 16
    if kind.endswith("[]") or "(" in kind:
        return None
    fixed = ("INT", "FLOAT", "DOUBLE", "REAL", "DATE", "TIME", "BIGINT", "SMALLINT", "TINYINT")
    return 8 if any(word in kind for word in fixed) and "INTERVAL" not in kind else None


def _measured(warehouse: Warehouse, table: TableInfo) -> TableInfo:
    """``table`` with its rows, each column's logical bytes and (partitioned) rows per day,
    from one aggregate query over it. A view is left unmeasured: reading it runs it."""
    if table.is_view or not table.columns:
        return table
    layer, _, short = table.name.partition(".")
    sizes = ", ".join(
        f"coalesce({logical_bytes_sql(c)}, 0) AS c{i}" for i, c in enumerate(table.columns)
    )
    partition = table.column(table.partition_by) if table.partition_by else None
    if partition is not None:
        day = '"' + partition.name.replace('"', '""') + '"'
        if partition.type.upper() != "DATE":
            day = f"CAST({day} AS DATE)"  # a timestamp's day in UTC (the warehouse's zone)
        sql = (
            f"SELECT CAST({day} AS VARCHAR) AS day, count(*) AS n, {sizes} "
            f'FROM "{layer}"."{short}" GROUP BY 1'
        )
    else:
        sql = f'SELECT NULL AS day, count(*) AS n, {sizes} FROM "{layer}"."{short}"'
    rows = warehouse.query(sql).to_pylist()
    totals = [sum(int(r[f"c{i}"] or 0) for r in rows) for i in range(len(table.columns))]
    columns = tuple(replace(c, bytes=b) for c, b in zip(table.columns, totals, strict=True))
    by_day = (
        {str(r["day"]) if r["day"] is not None else "__NULL__": int(r["n"]) for r in rows}
        if partition is not None
        else {}
    )
    return replace(
        table,
        columns=columns,
        rows=sum(int(r["n"]) for r in rows),
        partition_rows=dict(sorted(by_day.items())),
    )
