"""The checks speak DuckDB's SQL; this says it to the warehouse at hand.

Every kind builds its queries in DuckDB's dialect (the embedded shape's warehouse, and the
dialect the checks file's ``where:`` and ``sql:`` options are written in). On a warehouse of
another dialect (BigQuery: the production shape) a :class:`WarehouseReader` translates each
statement before it runs: sqlglot transpiles it, and :data:`BIGQUERY_FUNCTIONS` rewrites the
few things sqlglot leaves in DuckDB's words. Layer tables are qualified with the project
(``raw.events`` -> ```project`.`raw`.`events```), and the catalogue questions (which columns a
table has, whether it exists) go to the dataset's own ``INFORMATION_SCHEMA``.

>>> print(to_bigquery('SELECT epoch_us("x") // 60 AS m FROM "raw"."events"', "shop"))
SELECT DIV(UNIX_MICROS(`x`), 60) AS m FROM `shop`.`raw`.`events`
>>> print(to_bigquery("SELECT 1 AS hit FROM raw.events WHERE NOT list_contains(?, event_type)"))
SELECT 1 AS hit FROM raw.events WHERE NOT event_type IN UNNEST(?)

On DuckDB nothing is translated: the reader hands the SQL over as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from shopstream.warehouse.base import LAYERS

#: The SQL dialects a warehouse may speak (its ``sql_dialect`` attribute; DuckDB without one).
DUCKDB = "duckdb"
BIGQUERY = "bigquery"

NativeQuery = Callable[..., pa.Table]


def _unix_micros(node: Any) -> Any:
    """``epoch_us(ts)`` (``epoch(ts)``: its argument is ``this``) -> ``UNIX_MICROS(ts)``."""
    from sqlglot import exp

    argument = node.expressions[0] if isinstance(node, exp.Anonymous) else node.this
    return exp.Anonymous(this="UNIX_MICROS", expressions=[argument])


def _bigquery_node(node: Any) -> Any:
    """One node of a DuckDB statement in BigQuery's words (the node itself when sqlglot's own
    generator already says it right)."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).lower() in BIGQUERY_FUNCTIONS:
        return BIGQUERY_FUNCTIONS[str(node.this).lower()](node)
    if isinstance(node, exp.TimeToUnix):  # epoch(ts): seconds, with their fraction
        return exp.Div(
            this=_unix_micros(node), expression=exp.Literal.number(1_000_000), typed=False
        )
    if isinstance(node, exp.ArrayContains) and isinstance(node.this, exp.Placeholder):
        # list_contains(?, x) with a list parameter: an ARRAY parameter on BigQuery.
        return exp.In(this=node.expression, unnest=exp.Unnest(expressions=[node.this]))
    if isinstance(node, exp.CTE) and node.args.get("materialized"):
        node.set("materialized", None)  # BigQuery decides for itself
    if isinstance(node, exp.JSONType) and node.expression is not None:
        # json_type(j, path): BigQuery's JSON_TYPE takes a value, not a path.
        return exp.JSONType(this=_json_query(node.this, node.expression))
    if isinstance(node, exp.JSONKeys) and not node.expressions:
        # DuckDB's json_keys: the top level only (BigQuery's goes all the way down).
        return exp.Anonymous(this="JSON_KEYS", expressions=[node.this, exp.Literal.number(1)])
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.ApproxQuantile):
        # approx_quantile(x, [...]) FILTER (WHERE c): the filter moves into the value.
        condition = node.expression.this if isinstance(node.expression, exp.Where) else None
        if condition is not None:
            quantile = node.this
            value = exp.If(this=condition, true=quantile.this, false=exp.Null())
            return _quantiles(value, quantile.args["quantile"])
    if isinstance(node, exp.ApproxQuantile) and isinstance(node.args.get("quantile"), exp.Array):
        return _quantiles(node.this, node.args["quantile"])
    if isinstance(node, exp.TableSample):
        return _sample(node)
    if isinstance(node, exp.Select) and isinstance(node.args.get("sample"), exp.TableSample):
        sample = node.args["sample"]
        if str(sample.args.get("method", "")).upper() == "RESERVOIR" and sample.args.get("size"):
            # A reservoir of N rows of a subquery: BigQuery samples tables only, so any N
            # rows (what they are for here: a bounded look at recent rows).
            node.set("sample", None)
            return node.limit(sample.args["size"].copy(), copy=False)
    return node


def _json_query(value: Any, path: Any) -> Any:
    from sqlglot import exp

    return exp.Anonymous(this="JSON_QUERY", expressions=[value, path])


def _json_exists(node: Any) -> Any:
    """``json_exists(j, path)``: the path leads to a value (JSON null included)."""
    from sqlglot import exp

    value, path = node.expressions
    return exp.Paren(
        this=exp.Not(this=exp.Is(this=_json_query(value, path), expression=exp.Null()))
    )


def _quantiles(value: Any, cuts: Any) -> Any:
    """``approx_quantile(x, [k/n, ...])`` (a list of cuts in, a list out) as BigQuery's
    ``[APPROX_QUANTILES(x, n)[OFFSET(k)], ...]`` (NULL without values): ``n`` is the smallest
    count of equal parts that has every cut (a thousand at most: then the nearest thousandth)."""
    from sqlglot import exp

    fractions = [float(cut.this) for cut in cuts.expressions]
    parts = next(
        (n for n in range(2, 1001) if all(abs(f * n - round(f * n)) < 1e-9 for f in fractions)),
        1000,
    )
    # No values: NULL, as DuckDB answers (BigQuery refuses an array with NULLs in a result).
    quantiles = exp.Array(
        expressions=[
            exp.Bracket(
                this=exp.Anonymous(
                    this="APPROX_QUANTILES",
                    expressions=[value.copy(), exp.Literal.number(parts)],
                ),
                expressions=[
                    exp.Anonymous(this="OFFSET", expressions=[exp.Literal.number(round(f * parts))])
                ],
            )
            for f in fractions
        ]
    )
    none = exp.EQ(this=exp.Count(this=value.copy()), expression=exp.Literal.number(0))
    return exp.If(this=none, true=exp.Null(), false=quantiles)


def _sample(node: Any) -> Any:
    """``TABLESAMPLE p% (system, seed)``: BigQuery samples blocks too, without a seed."""
    node.set("seed", None)
    return node


#: DuckDB functions (lower case) sqlglot leaves as they are, and what BigQuery calls them.
BIGQUERY_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "epoch_us": _unix_micros,
    "json_exists": _json_exists,
}


def _qualified(node: Any, project: str | None) -> Any:
    from sqlglot import exp

    if (
        project
        and isinstance(node, exp.Table)
        and not node.args.get("catalog")
        and node.args.get("db") is not None
        and node.db.lower() in LAYERS
    ):
        node.set("catalog", exp.to_identifier(project, quoted=True))
    return node


def to_bigquery(sql: str, project: str | None = None) -> str:
    """``sql`` (DuckDB's dialect, positional ``?`` parameters) as BigQuery reads it, layer
    tables qualified with ``project`` when one is given. ValueError when it does not parse."""
    import sqlglot

    try:
        statements = sqlglot.parse(sql, read=DUCKDB)
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(f"cannot translate the check's SQL for BigQuery: {exc}") from exc
    if len(statements) != 1 or statements[0] is None:
        raise ValueError(f"a check sends one statement at a time, not {len(statements)}")
    tree = statements[0].transform(_bigquery_node)
    tree = tree.transform(lambda node: _qualified(node, project))
    return str(tree.sql(dialect=BIGQUERY))


def _backquoted(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


#: BigQuery's column types in DuckDB's words. TIMESTAMP is an instant (the checks' time
#: bounds go to it as instants); DATETIME, a wall-clock time, stays itself: the checks refuse it
#: as a time column rather than compare it with instants.
DUCKDB_TYPES = {
    "TIMESTAMP": "TIMESTAMP WITH TIME ZONE",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "NUMERIC": "DECIMAL(38,9)",
    "BIGNUMERIC": "DECIMAL(76,38)",
    "STRING": "VARCHAR",
    "BOOL": "BOOLEAN",
    "BYTES": "BLOB",
}


def _duckdb_type(kind: str) -> str:
    """``NUMERIC(12, 2)`` -> ``DECIMAL(38,9)`` too: the base type decides."""
    base = kind.split("(", 1)[0].split("<", 1)[0].strip().upper()
    return DUCKDB_TYPES.get(base, kind)


@dataclass(frozen=True)
class WarehouseReader:
    """The checks' view of one warehouse: ``query`` takes DuckDB's SQL; ``columns`` and
    ``exists`` ask the warehouse's own catalogue."""

    native: NativeQuery
    dialect: str = DUCKDB
    #: BigQuery: the project whose datasets are the layers.
    project: str | None = None

    def translate(self, sql: str) -> str:
        return sql if self.dialect == DUCKDB else to_bigquery(sql, self.project)

    def query(
        self, sql: str, parameters: list[Any] | None = None, *, max_rows: int | None = None
    ) -> pa.Table:
        if self.dialect == DUCKDB:  # as before: nothing in between
            if max_rows is None:
                return self.native(sql, parameters)
            return self.native(sql, parameters, max_rows=max_rows)
        translated = self.translate(sql)
        if max_rows is None:
            return self.native(translated, parameters)
        return self.native(translated, parameters, max_rows=max_rows)

    def columns(self, table: str) -> dict[str, str]:
        """``layer.table``'s columns and their types ({} when it does not exist), in DuckDB's
        words (:data:`DUCKDB_TYPES`), which the checks read."""
        schema, _, name = table.partition(".")
        if self.dialect == DUCKDB:
            sql = (
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
            )
            rows = self.native(sql, [schema, name]).to_pylist()
        else:
            where = f"{_backquoted(self.project)}." if self.project else ""
            sql = (
                f"SELECT column_name, data_type FROM {where}{_backquoted(schema)}"
                ".INFORMATION_SCHEMA.COLUMNS WHERE table_name = ? ORDER BY ordinal_position"
            )
            rows = self.native(sql, [name]).to_pylist()
        found = {row["column_name"]: str(row["data_type"]) for row in rows}
        if self.dialect == BIGQUERY:
            found = {column: _duckdb_type(kind) for column, kind in found.items()}
        return found

    def exists(self, table: str) -> bool:
        return bool(self.columns(table))


def reader_of(warehouse: object) -> WarehouseReader:
    """The checks' reader of ``warehouse`` (its ``query``; its ``sql_dialect`` and
    ``project`` when it says it speaks another dialect than DuckDB's)."""
    dialect = str(getattr(warehouse, "sql_dialect", DUCKDB))
    if dialect not in (DUCKDB, BIGQUERY):
        raise ValueError(
            f"the quality checks cannot speak {dialect!r} SQL (known: {DUCKDB}, {BIGQUERY})"
        )
    project = getattr(warehouse, "project", None) if dialect == BIGQUERY else None
    return WarehouseReader(warehouse.query, dialect, project)  # type: ignore[attr-defined]


__all__ = [
    "BIGQUERY",
    "BIGQUERY_FUNCTIONS",
    "DUCKDB",
    "DUCKDB_TYPES",
    "WarehouseReader",
    "reader_of",
    "to_bigquery",
]
