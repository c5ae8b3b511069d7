"""A rewrite is shown only once the warehouse proves it equal to the query it replaces.

:func:`verify` checks, in turn, that the rewrite

1. parses in the query's dialect;
2. keeps the output schema: the same column names in the same order, of the same types (both
   queries run with ``LIMIT 0``: no rows read);
3. returns the same rows, as multisets, compared in SQL on the warehouse (``EXCEPT ALL`` both
   ways on DuckDB; per-row counts of each row's JSON on BigQuery, which has no ``EXCEPT ALL``)
   so that no result is fetched whole, floating-point columns to 12 significant digits (a sum
   in another order differs in its last bits); and in the same order when the query has an
   outer ORDER BY: the rewrite must have one too, and its rows must come with the same
   sequence of the original's ORDER BY key values (keys that are not output columns are read
   as hidden columns of both), the rows that tie on them the same ones.

What one run cannot prove is refused as "not proven": a LIMIT without ORDER BY (which rows it
keeps is the warehouse's choice), an aggregate of rows in no order (STRING_AGG, ARRAY_AGG,
ANY_VALUE without ORDER BY), the clock or random numbers unless both call them alike
(before anything runs); an outer ORDER BY ... LIMIT that cuts between rows tied on its keys;
a query that returns no rows on this data (anything equals an empty result).

Both run on the full data when every table they read has at most ``verify_full_rows`` rows;
otherwise the largest table is replaced, in both queries alike, by a deterministic sample (a
hash of the row's key below ``verify_sample_percent``) and the others are read whole (sampling
both sides of a join would lose the pairs); ``compared_on`` says so.

Each verification has a time budget (``verify_timeout_seconds``: past it, "not verified");
where the warehouse has a dry run (BigQuery), a comparison that would scan more than
``verify_max_bytes`` is not run at all (and so not billed).

Both are run as the warehouse speaks (:func:`~shopstream.genai.optimizer.query.for_warehouse`):
a BigQuery-dialect query is checked on the embedded DuckDB warehouse too.

>>> sample_predicate("duckdb", ("event_id",), "t", 10.0)
'hash(t.event_id) % 10000 < 1000'
>>> sample_predicate("bigquery", (), "t", 2.5)
'MOD(ABS(FARM_FINGERPRINT(TO_JSON_STRING(t))), 10000) < 250'
>>> sample_predicate("duckdb", ("event_id",), "t", 0.001)  # never no row at all
'hash(t.event_id) % 10000 < 1'
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.catalog import Catalog, TableInfo
from shopstream.genai.optimizer.findings import Dialect, Verification
from shopstream.genai.optimizer.query import (
    Query,
    SqlSyntaxError,
    for_warehouse,
    parse_query,
    warehouse_dialect_of,
)
from shopstream.warehouse.base import QueryTimeout, WarehouseError

if TYPE_CHECKING:
    import pyarrow as pa

    from shopstream.warehouse.base import Warehouse

#: Rows of each result fetched to compare their order (the first ones: what a reader sees).
ORDER_ROWS = 10_000
#: Significant digits floating-point values are compared to.
FLOAT_DIGITS = 12
#: Functions whose value is the clock's or a random draw: one run proves nothing about them
#: unless both queries call them alike. sqlglot's node types, and names it leaves anonymous.
_CLOCK_OR_RANDOM = (
    exp.CurrentDate,
    exp.CurrentDatetime,
    exp.CurrentTime,
    exp.CurrentTimestamp,
    exp.CurrentTimestampLTZ,
    exp.Localtime,
    exp.Localtimestamp,
    exp.Rand,
    exp.Randn,
    exp.Randstr,
    exp.Uuid,
)
#: Aggregates whose value depends on the order rows arrive in, unless given an ORDER BY.
_ROW_ORDER_AGGREGATES = (exp.GroupConcat, exp.ArrayAgg, exp.AnyValue, exp.First, exp.Last)
_ROW_ORDER_AGGREGATE_NAMES = frozenset(
    {"arbitrary", "any_value", "array_agg", "first", "group_concat", "last", "list", "listagg"}
)
_CLOCK_OR_RANDOM_NAMES = frozenset(
    {
        "now",
        "today",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "current_localtimestamp",
        "random",
        "rand",
        "uuid",
        "gen_random_uuid",
        "generate_uuid",
        "uuidv4",
        "uuidv7",
    }
)
#: The length of a value shown in an example row of a difference.
_SHOWN_VALUE = 80


def verify(
    original: str,
    rewrite: str,
    *,
    dialect: Dialect,
    warehouse: Warehouse,
    catalog: Catalog,
    settings: OptimizerSettings | None = None,
) -> Verification:
    """Whether ``rewrite`` may replace ``original`` (both in ``dialect``), step by step; the
    queries it runs are stopped once they took ``settings.verify_timeout_seconds`` together."""
    settings = settings or OptimizerSettings()
    seconds = settings.verify_timeout_seconds
    try:
        return _verify(original, rewrite, dialect, _Timed(warehouse, seconds), catalog, settings)
    except QueryTimeout:
        return Verification(
            passed=False,
            parses=True,
            reason=f"the comparison took longer than {seconds:g} s: not verified",
        )


def _verify(
    original: str,
    rewrite: str,
    dialect: Dialect,
    warehouse: _Timed,
    catalog: Catalog,
    settings: OptimizerSettings,
) -> Verification:
    try:
        rewritten = parse_query(rewrite, dialect, catalog)
    except SqlSyntaxError as exc:
        # Its first line: the second tells a user of the CLI which option to try.
        reason = f"does not parse: {str(exc).splitlines()[0]}"
        return Verification(passed=False, parses=False, reason=reason)
    query = parse_query(original, dialect, catalog)
    unproven = (
        _limit_without_order(query, rewritten)
        or _aggregate_in_row_order(query, rewritten)
        or _clock_or_random(query, rewritten)
    )
    if unproven:
        return Verification(passed=False, parses=True, reason=f"not proven: {unproven}")
    target = warehouse_dialect_of(warehouse.warehouse)
    sampled = _largest_table(query, rewritten, settings)
    percent = settings.verify_sample_percent
    before = as_run(query, target, sampled, percent)
    after = as_run(rewritten, target, sampled, percent)
    try:
        schema_before = _schema(warehouse, before)
    except QueryTimeout:
        raise
    except WarehouseError as exc:
        return Verification(
            passed=False,
            parses=True,
            reason=f"the original query fails on the warehouse, so nothing can be compared: {exc}",
        )
    try:
        schema_after = _schema(warehouse, after)
    except QueryTimeout:
        raise
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
    # Before anything reads rows: BigQuery bills a LIMIT query's whole scan.
    too_large = _over_byte_budget(warehouse.warehouse, target, before, after, settings)
    if too_large:
        return Verification(passed=False, parses=True, same_schema=True, reason=too_large)
    try:
        tied = _ties_at_the_limit(warehouse, target, before, schema_before.names)
    except QueryTimeout:
        raise
    except WarehouseError as exc:
        tied = f"whether rows tie where the LIMIT cuts could not be read: {exc}"
    if tied:
        return Verification(
            passed=False, parses=True, same_schema=True, reason=f"not proven: {tied}"
        )
    try:
        counts = _compare(warehouse, target, before, after, schema_before)
        order = _Order()
        if counts.equal and counts.original_rows:
            order = _order_check(warehouse, target, before, after, schema_before.names)
    except QueryTimeout:
        raise
    except WarehouseError as exc:
        return Verification(
            passed=False, parses=True, same_schema=True, reason=f"the rewrite fails: {exc}"
        )
    compared_on = _compared_on(query, rewritten, sampled, percent, counts.original_rows)
    compared_on += _how(query, target, schema_before)
    if not counts.equal or order.reason:
        return Verification(
            passed=False,
            parses=True,
            same_schema=True,
            same_results=False,
            compared_on=compared_on,
            reason=order.reason
            or _rows_differ(warehouse, target, before, after, counts, schema_before),
        )
    if not counts.original_rows:
        return Verification(
            passed=False,
            parses=True,
            same_schema=True,
            compared_on=compared_on,
            reason="not proven: the query returns no rows on this data",
        )
    return Verification(
        passed=True,
        parses=True,
        same_schema=True,
        same_results=True,
        compared_on=f"{compared_on}; {order.note}" if order.note else compared_on,
    )


def _rows_differ(
    warehouse: _Timed,
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
    return f"results differ: {reason}"


class _Timed:
    """The warehouse, the verifier's queries together stopped after ``seconds``: each runs
    with what is left of them."""

    def __init__(self, warehouse: Warehouse, seconds: float) -> None:
        self.warehouse = warehouse
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def query(self, sql: str, max_rows: int | None = None) -> pa.Table:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise QueryTimeout(f"the comparison took longer than {self.seconds:g} s")
        return self.warehouse.query(sql, max_rows=max_rows, timeout_seconds=left)


def _over_byte_budget(
    warehouse: Warehouse, target: Dialect, before: str, after: str, settings: OptimizerSettings
) -> str:
    """Where a dry run tells (BigQuery), why the comparison is not run: it would scan more
    than ``verify_max_bytes`` (and bill it)."""
    if not warehouse.capabilities.dry_run_cost:
        return ""
    try:
        scanned = warehouse.dry_run_bytes(_comparison_sql(target, before, after))
    except WarehouseError:
        return ""  # the comparison itself then says what is wrong
    if scanned <= settings.verify_max_bytes:
        return ""
    return (
        f"not verified: comparing the results would scan {scanned / 1024**3:,.1f} GiB, over "
        f"optimizer.verify_max_bytes ({settings.verify_max_bytes / 1024**3:,.1f} GiB)"
    )


# -- what one run cannot prove ---------------------------------------------------------------


def _limit_without_order(query: Query, rewritten: Query) -> str:
    """A LIMIT without ORDER BY keeps rows of the warehouse's choosing: equal results on one
    run are luck."""
    for whose, q in (("the original", query), ("the rewrite", rewritten)):
        for node in q.tree.find_all(exp.Query):
            limited = node.args.get("limit") is not None or node.args.get("offset") is not None
            if limited and node.args.get("order") is None:
                where = "" if node is q.tree else " (in a subquery)"
                return (
                    f"{whose} has a LIMIT without ORDER BY{where}: which rows it keeps is the "
                    "warehouse's choice, so no run can prove a rewrite equal; order it by "
                    "unique keys first"
                )
    return ""


def _aggregate_in_row_order(query: Query, rewritten: Query) -> str:
    """STRING_AGG, ARRAY_AGG, ANY_VALUE, FIRST ... without an ORDER BY take rows in the order
    they arrive: equal results on one run are luck."""
    for whose, q in (("the original's", query), ("the rewrite's", rewritten)):
        for node in q.tree.walk():
            named = isinstance(node, exp.Anonymous) and node.name.lower() in (
                _ROW_ORDER_AGGREGATE_NAMES
            )
            if not (named or isinstance(node, _ROW_ORDER_AGGREGATES)):
                continue
            window = node.parent if isinstance(node.parent, exp.Window) else None
            if node.find(exp.Order) is not None or (window and window.args.get("order")):
                continue
            return (
                f"{whose} {node.sql(dialect=q.dialect)} depends on the order rows arrive in "
                "(it has no ORDER BY), which no run can prove equal; give it an ORDER BY on "
                "unique keys"
            )
    return ""


def clock_or_random_calls(tree: exp.Expression, dialect: Dialect) -> list[str]:
    """The calls of ``tree`` whose value is the clock's or a random draw, as SQL, sorted.

    >>> clock_or_random_calls(sqlglot.parse_one("select now(), x from t where d < current_date"),
    ...                       "duckdb")
    ['CURRENT_DATE', 'NOW()']
    """
    calls = [
        node.sql(dialect=dialect)
        for node in tree.walk()
        if isinstance(node, _CLOCK_OR_RANDOM)
        or (isinstance(node, exp.Anonymous) and node.name.lower() in _CLOCK_OR_RANDOM_NAMES)
    ]
    return sorted(calls)


def _clock_or_random(query: Query, rewritten: Query) -> str:
    calls = clock_or_random_calls(query.tree, query.dialect)
    rewrite_calls = clock_or_random_calls(rewritten.tree, rewritten.dialect)
    if Counter(calls) == Counter(rewrite_calls):
        return ""
    return (
        f"the original calls {', '.join(calls) or 'no clock or random function'}, the rewrite "
        f"{', '.join(rewrite_calls) or 'none of them'}: their results depend on the clock or on "
        "random numbers, so equal results would hold only on today's clock (or this draw)"
    )


# -- running the queries as the warehouse speaks -------------------------------------------


def sample_predicate(target: Dialect, key: Sequence[str], alias: str, percent: float) -> str:
    """The WHERE condition that keeps ``percent`` % of a table's rows, by a hash of the row's
    key (the whole row when it has none): the same rows for the query and its rewrite. At
    least one bucket of 10,000: a sample never keeps nothing by rounding."""
    cut = max(1, round(percent * 100))
    if target == "bigquery":
        row = f"STRUCT({', '.join(f'{alias}.{k}' for k in key)})" if key else alias
        return f"MOD(ABS(FARM_FINGERPRINT(TO_JSON_STRING({row}))), 10000) < {cut}"
    row = ", ".join(f"{alias}.{k}" for k in key) if key else alias
    return f"hash({row}) % 10000 < {cut}"


def as_run(query: Query, target: Dialect, sampled: dict[str, TableInfo], percent: float) -> str:
    """``query`` as ``target`` runs it, with each table of ``sampled`` read as its sample (a
    column named with the table's schema, ``raw.events.event_type``, then reads the sample)."""
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
        if not table.alias:
            _unqualify_columns(tree, table)
        bare = table.copy()
        bare.set("alias", None)
        name = bare.sql(dialect=target)
        where = sample_predicate(target, info.unique_key, "optimizer_sample", percent)
        subquery = sqlglot.parse_one(
            f"(SELECT * FROM {name} AS optimizer_sample WHERE {where}) AS {alias}", read=target
        )
        table.replace(subquery)
    return tree.sql(dialect=target)


def _unqualify_columns(tree: exp.Expr, table: exp.Table) -> None:
    """``raw.events.event_type`` -> ``events.event_type``: the sample is a subquery named
    ``events``, which has no schema."""
    for column in tree.find_all(exp.Column):
        if (
            column.args.get("db") is not None
            and column.table.lower() == table.name.lower()
            and column.text("db").lower() == table.db.lower()
        ):
            column.set("db", None)
            column.set("catalog", None)


def _largest_table(
    query: Query, rewritten: Query, settings: OptimizerSettings
) -> dict[str, TableInfo]:
    """The one table to sample: the largest either query reads, when it is too large to
    compare whole. One only: sampling both sides of a join would lose the rows that pair."""
    large: dict[str, TableInfo] = {}
    for q in (query, rewritten):
        for table in q.tables:
            info = q.table_info(table)
            if info is not None and (info.rows or 0) > settings.verify_full_rows:
                large[info.name] = info
    if not large:
        return {}
    largest = max(large.values(), key=lambda info: (info.rows or 0, info.name))
    return {largest.name: largest}


@dataclass(frozen=True)
class _Schema:
    names: list[str]
    types: list[str]

    @property
    def floats(self) -> list[int]:
        """Positions of the floating-point columns (compared to :data:`FLOAT_DIGITS`)."""
        return [i for i, t in enumerate(self.types) if t in ("double", "float", "halffloat")]


def _schema(warehouse: _Timed, sql: str) -> _Schema:
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


def rounded(target: Dialect, sql: str, schema: _Schema) -> str:
    """``sql`` with its floating-point columns as text of :data:`FLOAT_DIGITS` significant
    digits (a sum in another order differs in its last bits), the others as they are.

    >>> print(rounded("duckdb", "SELECT s FROM t", _Schema(["s", "n"], ["double", "int64"])))
    SELECT printf('%.12g', "s") AS "s", "n" FROM (SELECT s FROM t) AS optimizer_rounded
    """
    if not schema.floats:
        return sql
    quote = "`" if target == "bigquery" else '"'
    function = "FORMAT" if target == "bigquery" else "printf"
    columns = []
    for position, name in enumerate(schema.names):
        quoted = quote + name.replace(quote, quote * 2) + quote
        if position in schema.floats:
            columns.append(f"{function}('%.{FLOAT_DIGITS}g', {quoted}) AS {quoted}")
        else:
            columns.append(quoted)
    return f"SELECT {', '.join(columns)} FROM ({sql}) AS optimizer_rounded"


def _compare(
    warehouse: _Timed, target: Dialect, before: str, after: str, schema: _Schema
) -> _Counts:
    sql = _comparison_sql(target, rounded(target, before, schema), rounded(target, after, schema))
    row = warehouse.query(sql).to_pylist()[0]
    return _Counts(*(int(row[k] or 0) for k in _Counts.__dataclass_fields__))


def _example(
    warehouse: _Timed,
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
    except WarehouseError:  # a timeout too: the example is a courtesy
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


# -- comparing the order ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Order:
    #: Set when the order differs or cannot be proven (the rewrite is rejected).
    reason: str = ""
    #: What was compared of the order.
    note: str = ""


#: The name of the i-th ORDER BY key read as a hidden column.
_HIDDEN = "optimizer_order_{}"


def _order_check(
    warehouse: _Timed, target: Dialect, before: str, after: str, names: list[str]
) -> _Order:
    """When the original has an outer ORDER BY, the rewrite must have one too, and give its
    first rows with the same sequence of the original's key values, the rows that tie on them
    the same ones (in any order: the ORDER BY leaves that open). Keys that are not output
    columns are read as hidden columns of both."""
    original = sqlglot.parse_one(before, read=target)
    order = original.args.get("order")
    if order is None:
        return _Order()
    rewrite = sqlglot.parse_one(after, read=target)
    if rewrite.args.get("order") is None:
        return _Order(
            reason="results differ: the original's ORDER BY sets the order of its rows, the "
            "rewrite has no ORDER BY (its rows came out in that order this time only)"
        )
    keys, hidden = _order_keys(original, order, names)
    shown = ", ".join(k.sql(dialect=target) for k in hidden)
    if hidden:
        for tree in (original, rewrite):
            if not isinstance(tree, exp.Select) or tree.args.get("distinct") is not None:
                return _Order(
                    reason=f"order not proven: the ORDER BY keys ({shown}) are not output "
                    "columns and cannot be read beside them here"
                )
        original = _with_hidden(original, hidden)
        rewrite = _with_hidden(rewrite, hidden)
    first = _rows(warehouse, original.sql(dialect=target))
    try:
        second = _rows(warehouse, rewrite.sql(dialect=target))
    except QueryTimeout:
        raise
    except WarehouseError as exc:
        if not hidden:
            raise
        return _Order(
            reason=f"order not proven: the original's ORDER BY keys ({shown}) cannot be read "
            f"beside the rewrite's rows: {exc}"
        )
    difference = _order_difference(first, second, keys)
    if difference is not None:
        return _Order(
            reason=f"results differ: the same rows in another order (first at row {difference})"
        )
    compared = min(len(first), ORDER_ROWS)
    whole = len(first) <= ORDER_ROWS
    return _Order(
        note=f"order compared on {'all' if whole else 'the first'} {compared:,} rows"
        + ("" if whole else " (ties on the ORDER BY keys beyond them not looked at)")
    )


def _order_keys(
    tree: exp.Expr, order: exp.Expr, names: list[str]
) -> tuple[list[int], list[exp.Expr]]:
    """Where each ORDER BY key is in a row: its output column, or after the output columns
    the hidden column it is read as (those returned second, in order)."""
    keys: list[int] = []
    hidden: list[exp.Expr] = []
    for ordered in order.expressions:
        key = ordered.this if isinstance(ordered, exp.Ordered) else ordered
        position = _output_position(key, tree, names)
        if position is None:
            keys.append(len(names) + len(hidden))
            hidden.append(key)
        else:
            keys.append(position)
    return keys, hidden


def _ties_at_the_limit(warehouse: _Timed, target: Dialect, before: str, names: list[str]) -> str:
    """An outer ORDER BY ... LIMIT whose cut falls between rows that tie on the keys keeps
    rows of the warehouse's choosing: nothing can be proven about it."""
    tree = sqlglot.parse_one(before, read=target)
    order, limit, offset = (tree.args.get(k) for k in ("order", "limit", "offset"))
    if order is None or limit is None or not isinstance(tree, exp.Select):
        return ""
    count = _int_of(limit)
    skip = _int_of(offset) if offset is not None else 0
    if count is None or skip is None or skip + count > ORDER_ROWS:
        return ""
    keys, hidden = _order_keys(tree, order, names)
    if hidden and tree.args.get("distinct") is not None:
        return ""
    uncut = _with_hidden(tree, hidden)
    uncut.set("offset", None)
    uncut.set("limit", exp.Limit(expression=exp.Literal.number(skip + count + 1)))
    rows = [_key(_normal(row), keys) for row in _rows(warehouse, uncut.sql(dialect=target))]
    for cut in (skip, skip + count):
        if 0 < cut < len(rows) and rows[cut - 1] == rows[cut]:
            return (
                f"rows tie on the ORDER BY keys where the LIMIT cuts (rows {cut} and {cut + 1}), "
                "so which of them it keeps is the warehouse's choice; order by unique keys"
            )
    return ""


def _int_of(node: exp.Expr) -> int | None:
    value = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(value, exp.Literal) and value.is_int:
        return int(value.this)
    return None


def _with_hidden(tree: exp.Expr, hidden: list[exp.Expr]) -> exp.Expr:
    copy = tree.copy()
    assert isinstance(copy, exp.Select)
    for i, key in enumerate(hidden):
        copy = copy.select(exp.alias_(key.copy(), _HIDDEN.format(i)), copy=False)
    return copy


def _order_difference(
    first: list[tuple[Any, ...]], second: list[tuple[Any, ...]], keys: list[int]
) -> int | None:
    """The first row (1-based) where the two stop agreeing, or None: the same key values row
    by row, and within each run of rows that tie on them, the same rows. A run cut off by
    :data:`ORDER_ROWS` is not compared (its other rows come later)."""
    first, second = [_normal(r) for r in first], [_normal(r) for r in second]
    limit = min(ORDER_ROWS, len(first))
    if len(second) < limit:
        return len(second) + 1
    start = 0
    for i in range(limit + 1):
        ended = i == limit or (i > start and _key(first[i], keys) != _key(first[start], keys))
        if i < limit and _key(first[i], keys) != _key(second[i], keys):
            return i + 1
        if not ended:
            continue
        # A run that reaches the limit may go on past it: its other rows are not read.
        complete = i < limit or len(first) <= ORDER_ROWS
        if complete and sorted(map(repr, first[start:i])) != sorted(map(repr, second[start:i])):
            return start + 1
        start = i
    return None


def _key(row: tuple[Any, ...], keys: list[int]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def _normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(float(f"{v:.{FLOAT_DIGITS}g}") if isinstance(v, float) else v for v in row)


def _rows(warehouse: _Timed, sql: str) -> list[tuple[Any, ...]]:
    # One row more than compared: a run of ties cut off by the limit shows as such.
    table: pa.Table = warehouse.query(sql, max_rows=ORDER_ROWS + 1)
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns, strict=True)) if columns else []


def _output_position(key: exp.Expr, tree: exp.Expr, names: list[str]) -> int | None:
    """The output column an ORDER BY key is (by position, alias or name), or None."""
    selects = tree.selects if isinstance(tree, exp.Query) else []
    if isinstance(key, exp.Literal) and key.is_int:
        position = int(key.this) - 1
    elif isinstance(key, exp.Column) and not key.table and key.name in names:
        position = names.index(key.name)
    else:
        position = next((i for i, s in enumerate(selects) if s == key or s.unalias() == key), -1)
    return position if 0 <= position < len(names) else None


# -- saying what was compared ----------------------------------------------------------------


def _compared_on(
    query: Query,
    rewritten: Query,
    sampled: dict[str, TableInfo],
    percent: float,
    rows_out: int,
) -> str:
    out = f"{rows_out:,} rows out"
    infos = {
        info.name: info
        for q in (query, rewritten)
        for t in q.tables
        if (info := q.table_info(t)) is not None
    }
    if sampled:
        [(name, info)] = sampled.items()
        key = ", ".join(info.unique_key) or "the whole row"
        sample = f"a {percent:g}% sample of {name} (hash of {key})"
        if len({t.sql() for q in (query, rewritten) for t in q.tables}) > 1:
            sample += ", the largest table; full data of the others"
        return f"{sample}; {out}"
    rows_in = [info.rows for info in infos.values()]
    if infos and all(r is not None for r in rows_in):
        read = sum(r or 0 for r in rows_in)
        tables = "table" if len(infos) == 1 else "tables"
        return f"full data ({read:,} rows in {len(infos)} {tables}, {out})"
    return f"full data ({out})"


def _how(query: Query, target: Dialect, schema: _Schema) -> str:
    """What else the reader of ``compared_on`` must know: the SQL that ran, rounding, the
    clock."""
    parts = []
    if query.dialect != target:
        parts.append(f"(as {'DuckDB' if target == 'duckdb' else 'BigQuery'} SQL)")
    if schema.floats:
        parts.append(f"floating-point columns to {FLOAT_DIGITS} significant digits")
    calls = clock_or_random_calls(query.tree, query.dialect)
    if calls:
        parts.append(
            f"both call {', '.join(sorted(set(calls)))}: equal on today's clock (or this draw)"
        )
    if not parts:
        return ""
    first, rest = parts[0], parts[1:]
    text = f" {first}" if first.startswith("(") else f"; {first}"
    return text + "".join(f"; {p}" for p in rest)


__all__ = [
    "FLOAT_DIGITS",
    "ORDER_ROWS",
    "as_run",
    "clock_or_random_calls",
    "rounded",
    "sample_predicate",
    "verify",
]
