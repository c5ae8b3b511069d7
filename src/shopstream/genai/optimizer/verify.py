"""A rewrite is shown only once the warehouse proves it equal to the query it replaces.

:func:`verify` checks, in turn, that the rewrite

1. parses in the query's dialect;
2. keeps the output schema: the same column names in the same order, of the same types (both
   queries run with ``LIMIT 0``: no rows read);
3. returns the same rows, as multisets, compared in SQL on the warehouse (``EXCEPT ALL`` both
   ways on DuckDB; per-row counts of each row's JSON on BigQuery, which has no ``EXCEPT ALL``)
   so that no result is fetched whole; and in the same order when the query's outer ORDER BY
   determines it (its keys are output columns whose values are unique in the result).

Both run on the full data when every table they read has at most ``verify_full_rows`` rows;
otherwise each larger table is replaced, in both queries alike, by a deterministic sample (a
hash of the row's key below ``verify_sample_percent``), and ``compared_on`` says so.

Both are run as the warehouse speaks (:func:`~shopstream.genai.optimizer.query.for_warehouse`):
a BigQuery-dialect query is checked on the embedded DuckDB warehouse too.

>>> sample_predicate("duckdb", ("event_id",), "t", 10.0)
'hash(t.event_id) % 10000 < 1000'
>>> sample_predicate("bigquery", (), "t", 2.5)
'MOD(ABS(FARM_FINGERPRINT(TO_JSON_STRING(t))), 10000) < 250'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.catalog import Catalog, TableInfo
from shopstream.genai.optimizer.findings import Dialect, Verification
from shopstream.genai.optimizer.query import Query, SqlSyntaxError, for_warehouse, parse_query
from shopstream.warehouse.base import WarehouseError

if TYPE_CHECKING:
    import pyarrow as pa

    from shopstream.warehouse.base import Warehouse

#: Rows of each result fetched to compare their order (the first ones: what a reader sees).
ORDER_ROWS = 1_000
#: The length of a value shown in an example row of a difference.
_SHOWN_VALUE = 80


def warehouse_dialect_of(warehouse: object) -> Dialect:
    """The SQL dialect ``warehouse`` speaks (its ``sql_dialect``; DuckDB's when it says none),
    as the quality checks read it too."""
    return "bigquery" if getattr(warehouse, "sql_dialect", "duckdb") == "bigquery" else "duckdb"


def verify(
    original: str,
    rewrite: str,
    *,
    dialect: Dialect,
    warehouse: Warehouse,
    catalog: Catalog,
    settings: OptimizerSettings | None = None,
) -> Verification:
    """Whether ``rewrite`` may replace ``original`` (both in ``dialect``), step by step."""
    settings = settings or OptimizerSettings()
    try:
        rewritten = parse_query(rewrite, dialect, catalog)
    except SqlSyntaxError as exc:
        # Its first line: the second tells a user of the CLI which option to try.
        reason = f"does not parse: {str(exc).splitlines()[0]}"
        return Verification(passed=False, parses=False, reason=reason)
    query = parse_query(original, dialect, catalog)
    target = warehouse_dialect_of(warehouse)
    sampled = _large_tables(query, rewritten, settings)
    percent = settings.verify_sample_percent
    before = as_run(query, target, sampled, percent)
    after = as_run(rewritten, target, sampled, percent)
    try:
        schema_before = _schema(warehouse, before)
    except WarehouseError as exc:
        return Verification(
            passed=False,
            parses=True,
            reason=f"the original query fails on the warehouse, so nothing can be compared: {exc}",
        )
    try:
        schema_after = _schema(warehouse, after)
    except WarehouseError as exc:
        return Verification(passed=False, parses=True, reason=f"the rewrite fails: {exc}")
    schema_difference = _schema_difference(schema_before, schema_after)
    if schema_difference:
        return Verification(
            passed=False,
            parses=True,
            same_schema=False,
            reason=f"schema differs: {schema_difference}",
        )
    try:
        counts = _compare(warehouse, target, before, after)
        order = _Order()
        if counts.equal:
            order = _order_check(warehouse, query, before, after, schema_before.names)
    except WarehouseError as exc:
        return Verification(
            passed=False, parses=True, same_schema=True, reason=f"the rewrite fails: {exc}"
        )
    compared_on = _compared_on(query, rewritten, sampled, percent, counts.original_rows)
    if not counts.equal or order.reason:
        return Verification(
            passed=False,
            parses=True,
            same_schema=True,
            same_results=False,
            compared_on=compared_on,
            reason=order.reason
            or _rows_differ(warehouse, query, target, before, after, counts, schema_before),
        )
    return Verification(
        passed=True,
        parses=True,
        same_schema=True,
        same_results=True,
        compared_on=f"{compared_on}; {order.note}" if order.note else compared_on,
    )


def _rows_differ(
    warehouse: Warehouse,
    query: Query,
    target: Dialect,
    before: str,
    after: str,
    counts: _Counts,
    schema: _Schema,
) -> str:
    reason = counts.difference()
    example = _example(warehouse, target, before, after, counts, schema.names)
    if example:
        reason += f"; e.g. {example}"
    if _limit_without_total_order(query.tree):
        reason += " (the query has a LIMIT without an ORDER BY: which rows it returns is not"
        reason += " determined, so no rewrite can be proven equal)"
    return f"results differ: {reason}"


# -- running the queries as the warehouse speaks -------------------------------------------


def sample_predicate(target: Dialect, key: Sequence[str], alias: str, percent: float) -> str:
    """The WHERE condition that keeps ``percent`` % of a table's rows, by a hash of the row's
    key (the whole row when it has none): the same rows for the query and its rewrite."""
    cut = round(percent * 100)
    if target == "bigquery":
        row = f"STRUCT({', '.join(f'{alias}.{k}' for k in key)})" if key else alias
        return f"MOD(ABS(FARM_FINGERPRINT(TO_JSON_STRING({row}))), 10000) < {cut}"
    row = ", ".join(f"{alias}.{k}" for k in key) if key else alias
    return f"hash({row}) % 10000 < {cut}"


def as_run(query: Query, target: Dialect, sampled: dict[str, TableInfo], percent: float) -> str:
    """``query`` as ``target`` runs it, with each table of ``sampled`` read as its sample."""
    sql = for_warehouse(query.tree, target)
    if not sampled:
        return sql
    tree = sqlglot.parse_one(sql, read=target)
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if not table.db and table.name.lower() in ctes:
            continue
        info = query.catalog.find([table.catalog, table.db, table.name])
        if info is None or info.name not in sampled:
            continue
        alias = table.alias or table.name
        bare = table.copy()
        bare.set("alias", None)
        name = bare.sql(dialect=target)
        where = sample_predicate(target, info.unique_key, "optimizer_sample", percent)
        subquery = sqlglot.parse_one(
            f"(SELECT * FROM {name} AS optimizer_sample WHERE {where}) AS {alias}", read=target
        )
        table.replace(subquery)
    return tree.sql(dialect=target)


def _large_tables(
    query: Query, rewritten: Query, settings: OptimizerSettings
) -> dict[str, TableInfo]:
    """The tables either query reads that are too large to compare whole."""
    large: dict[str, TableInfo] = {}
    for q in (query, rewritten):
        for table in q.tables:
            info = q.table_info(table)
            if info is not None and (info.rows or 0) > settings.verify_full_rows:
                large[info.name] = info
    return large


@dataclass(frozen=True)
class _Schema:
    names: list[str]
    types: list[str]


def _schema(warehouse: Warehouse, sql: str) -> _Schema:
    # LIMIT 0: the warehouse plans the query and reads nothing (BigQuery bills nothing).
    table = warehouse.query(f"SELECT * FROM ({sql}) AS optimizer_schema LIMIT 0")
    return _Schema(table.schema.names, [str(t) for t in table.schema.types])


def _schema_difference(before: _Schema, after: _Schema) -> str:
    if before == after:
        return ""
    if before.names != after.names:
        missing = [n for n in before.names if n not in after.names]
        extra = [n for n in after.names if n not in before.names]
        parts = []
        if missing:
            parts.append(f"the rewrite lacks {', '.join(missing)}")
        if extra:
            parts.append(f"the rewrite adds {', '.join(extra)}")
        if not parts:
            parts.append(
                f"columns in another order: {', '.join(after.names)} instead of "
                f"{', '.join(before.names)}"
            )
        return "; ".join(parts)
    changed = [
        f"{name} is {a} instead of {b}"
        for name, b, a in zip(before.names, before.types, after.types, strict=True)
        if a != b
    ]
    return "; ".join(changed)


# -- comparing the rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Counts:
    original_rows: int
    rewrite_rows: int
    only_original: int
    only_rewrite: int

    @property
    def equal(self) -> bool:
        return self.only_original == 0 and self.only_rewrite == 0

    def difference(self) -> str:
        text = (
            f"the original returns {self.original_rows:,} rows, the rewrite {self.rewrite_rows:,}"
        )
        if self.only_original:
            text += f"; {self.only_original:,} of the original's are not in the rewrite's"
        if self.only_rewrite:
            text += f"; {self.only_rewrite:,} of the rewrite's are not in the original's"
        return text


def _comparison_sql(target: Dialect, before: str, after: str) -> str:
    if target == "bigquery":
        # BigQuery has no EXCEPT ALL: count each row (as JSON, which also covers types that
        # cannot be grouped) in both results and sum the surpluses.
        return f"""
WITH optimizer_original AS (SELECT TO_JSON_STRING(o) AS r FROM ({before}) AS o),
optimizer_rewrite AS (SELECT TO_JSON_STRING(w) AS r FROM ({after}) AS w),
counted AS (
  SELECT r, COUNTIF(side = 0) AS a, COUNTIF(side = 1) AS b
  FROM (SELECT r, 0 AS side FROM optimizer_original UNION ALL
        SELECT r, 1 AS side FROM optimizer_rewrite)
  GROUP BY r)
SELECT COALESCE(SUM(a), 0) AS original_rows, COALESCE(SUM(b), 0) AS rewrite_rows,
  COALESCE(SUM(GREATEST(a - b, 0)), 0) AS only_original,
  COALESCE(SUM(GREATEST(b - a, 0)), 0) AS only_rewrite
FROM counted"""
    return f"""
WITH optimizer_original AS ({before}), optimizer_rewrite AS ({after})
SELECT
  (SELECT count(*) FROM optimizer_original) AS original_rows,
  (SELECT count(*) FROM optimizer_rewrite) AS rewrite_rows,
  (SELECT count(*) FROM (SELECT * FROM optimizer_original EXCEPT ALL
                         SELECT * FROM optimizer_rewrite) AS d) AS only_original,
  (SELECT count(*) FROM (SELECT * FROM optimizer_rewrite EXCEPT ALL
                         SELECT * FROM optimizer_original) AS d) AS only_rewrite"""


def _compare(warehouse: Warehouse, target: Dialect, before: str, after: str) -> _Counts:
    row = warehouse.query(_comparison_sql(target, before, after)).to_pylist()[0]
    return _Counts(*(int(row[k] or 0) for k in _Counts.__dataclass_fields__))


def _example(
    warehouse: Warehouse,
    target: Dialect,
    before: str,
    after: str,
    counts: _Counts,
    names: list[str],
) -> str:
    """One row that only one of the two returns, as ``column=value`` pairs (best effort: the
    difference is proven already)."""
    first, second, whose = (
        (before, after, "only the original returns")
        if counts.only_original
        else (after, before, "only the rewrite returns")
    )
    if target == "bigquery":
        sql = (
            f"SELECT TO_JSON_STRING(x) AS row FROM ({first}) AS x WHERE TO_JSON_STRING(x) NOT IN "
            f"(SELECT TO_JSON_STRING(y) FROM ({second}) AS y) LIMIT 1"
        )
    else:
        sql = f"SELECT * FROM (({first}) EXCEPT ALL ({second})) AS d LIMIT 1"
    try:
        rows = warehouse.query(sql, max_rows=1).to_pylist()
    except WarehouseError:
        return ""
    if not rows:
        return ""
    values = list(rows[0].values())
    if target == "bigquery":
        return f"{whose} {values[0]}"
    shown = ", ".join(f"{n}={_shown(v)}" for n, v in zip(names, values, strict=False))
    return f"{whose} ({shown})"


def _shown(value: Any) -> str:
    text = "NULL" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


def _limit_without_total_order(tree: exp.Expression) -> bool:
    return tree.args.get("limit") is not None and tree.args.get("order") is None


@dataclass(frozen=True)
class _Order:
    #: Set when the order differs (the rewrite is rejected).
    reason: str = ""
    #: What was (or could not be) compared of the order.
    note: str = ""


def _order_check(
    warehouse: Warehouse, query: Query, before: str, after: str, names: list[str]
) -> _Order:
    """When the outer ORDER BY determines the order (its keys are output columns, unique in
    the result), the first rows of both must come in the same order."""
    order = query.tree.args.get("order")
    if order is None:
        return _Order()
    keys = _output_positions(order.expressions, query.tree, names)
    if keys is None:
        return _Order(note="order not compared (the ORDER BY keys are not output columns)")
    first = _rows(warehouse, before)
    key_values = [tuple(row[i] for i in keys) for row in first]
    if len(set(key_values)) != len(key_values):
        return _Order(note="order not compared (rows tie on the ORDER BY keys)")
    shown = first[:ORDER_ROWS]
    second = _rows(warehouse, after)[:ORDER_ROWS]
    if shown != second:
        at = next(
            (i for i, (a, b) in enumerate(zip(shown, second, strict=False)) if a != b),
            min(len(shown), len(second)),
        )
        return _Order(
            reason=f"results differ: the same rows in another order (first at row {at + 1})"
        )
    return _Order(note=f"order compared on the first {len(shown):,} rows")


def _rows(warehouse: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    # One row more than compared: a tie just past the compared rows shows too.
    table: pa.Table = warehouse.query(sql, max_rows=ORDER_ROWS + 1)
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns, strict=True)) if columns else []


def _output_positions(
    keys: list[exp.Expression], tree: exp.Expression, names: list[str]
) -> list[int] | None:
    """The output column each ORDER BY key is (by position, alias or name), or None when one
    is not an output column."""
    selects = tree.selects if isinstance(tree, exp.Query) else []
    positions: list[int] = []
    for ordered in keys:
        key = ordered.this if isinstance(ordered, exp.Ordered) else ordered
        if isinstance(key, exp.Literal) and key.is_int:
            position = int(key.this) - 1
        elif isinstance(key, exp.Column) and key.name in names:
            position = names.index(key.name)
        else:
            position = next(
                (i for i, s in enumerate(selects) if s == key or s.unalias() == key), -1
            )
        if not 0 <= position < len(names):
            return None
        positions.append(position)
    return positions


def _compared_on(
    query: Query,
    rewritten: Query,
    sampled: dict[str, TableInfo],
    percent: float,
    rows_out: int,
) -> str:
    out = f"{rows_out:,} rows out"
    if sampled:
        samples = ", ".join(
            f"{name} (hash of {', '.join(info.unique_key) or 'the whole row'})"
            for name, info in sorted(sampled.items())
        )
        return f"a {percent:g}% sample of {samples}, full data of the others; {out}"
    infos = {
        info.name: info
        for q in (query, rewritten)
        for t in q.tables
        if (info := q.table_info(t)) is not None
    }
    rows_in = [info.rows for info in infos.values()]
    if infos and all(r is not None for r in rows_in):
        read = sum(r or 0 for r in rows_in)
        tables = "table" if len(infos) == 1 else "tables"
        return f"full data ({read:,} rows in {len(infos)} {tables}, {out})"
    return f"full data ({out})"


__all__ = ["ORDER_ROWS", "as_run", "sample_predicate", "verify", "warehouse_dialect_of"]
