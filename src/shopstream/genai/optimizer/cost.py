"""What a query scans, in bytes and dollars at on-demand list price.

On BigQuery (``capabilities.dry_run_cost``) BigQuery says it: a dry run. Elsewhere (DuckDB) the
figure is an estimate made the way BigQuery bills, from the catalog's measured column sizes
(:func:`shopstream.genai.optimizer.catalog.load_catalog`):

- per table scan, the logical bytes of the columns the query reads from it (after column
  pruning through CTEs and subqueries, as BigQuery prunes; ``SELECT *`` reads them all;
  ``count(*)`` none);
- times the share of its rows in the partitions its filters keep: ``=``, ``IN``, ``BETWEEN``,
  ``<``, ``>``, ``<=``, ``>=`` between the bare partition column and constants prune, as
  BigQuery prunes; a function or cast on the column, or an ``OR`` with a branch that does not
  filter it, prunes nothing;
- every scan counted: a CTE read twice is scanned twice, as BigQuery evaluates it twice;
- a view is its query (what reading it scans), when the catalog has it.

>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR", bytes=600),
...     Column("event_type", "VARCHAR", bytes=300), Column("event_date", "DATE", bytes=240)),
...     rows=30, partition_by="event_date",
...     partition_rows={"2026-11-28": 10, "2026-11-29": 10, "2026-11-30": 10})
>>> cost = cost_of("select event_id from raw.events where event_date >= '2026-11-29'",
...                "duckdb", Catalog({"raw.events": events}))
>>> cost.bytes, cost.method  # event_id and event_date (the filter reads it) of 2 days in 3
(560, 'estimate from column sizes: raw.events 2 of 3 columns, 2 of 3 partitions')
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from shopstream.genai.optimizer.catalog import Catalog, TableInfo
from shopstream.genai.optimizer.findings import LIST_PRICE_PER_TIB, TIB, Cost, Dialect
from shopstream.genai.optimizer.query import for_warehouse, parse_query, table_references
from shopstream.genai.optimizer.rules.partition_filters import classify
from shopstream.genai.optimizer.rules.table_filters import distinct_on, restricting_conditions

if TYPE_CHECKING:
    from shopstream.config import OptimizerSettings, Settings
    from shopstream.warehouse.base import Warehouse

DRY_RUN = "BigQuery dry run"

#: A partition-day test: does the partition of this ISO day hold rows the filter keeps?
DayTest = Callable[[dt.date], bool]


def cost_of(
    query: str | exp.Expression,
    dialect: Dialect,
    catalog: Catalog,
    warehouse: Warehouse | None = None,
    settings: Settings | OptimizerSettings | None = None,
) -> Cost:
    """Bytes ``query`` scans and their price (``settings.optimizer.price_per_tib``, default
    BigQuery's list price): BigQuery's dry run when ``warehouse`` offers one, otherwise the
    estimate (see the module). A ValueError names a table the catalog does not know or whose
    sizes it does not have."""
    tree = parse_query(query, dialect, catalog).tree if isinstance(query, str) else query
    price = _price_per_tib(settings)
    if warehouse is not None and warehouse.capabilities.dry_run_cost:
        scanned = warehouse.dry_run_bytes(for_warehouse(tree, "bigquery"))
        return Cost(bytes=scanned, dollars=scanned / TIB * price, method=DRY_RUN)
    scans = table_scans(tree, dialect, catalog)
    scanned = round(sum(s.bytes for s in scans))
    return Cost(bytes=scanned, dollars=scanned / TIB * price, method=_method(scans))


def _price_per_tib(settings: Settings | OptimizerSettings | None) -> float:
    if settings is None:
        return LIST_PRICE_PER_TIB
    optimizer = getattr(settings, "optimizer", settings)
    return float(getattr(optimizer, "price_per_tib", LIST_PRICE_PER_TIB))


@dataclass(frozen=True)
class TableScan:
    """One read of a table by a query: which columns, which partitions, how often."""

    table: TableInfo
    columns: frozenset[str]
    #: Rows in the partitions kept over all rows (1.0: no pruning).
    share: float
    partitions_kept: int | None = None
    partitions: int | None = None
    times: int = 1

    @property
    def bytes(self) -> float:
        sizes = {c.name.lower(): c.bytes for c in self.table.columns}
        read = [sizes.get(name) for name in self.columns]
        return sum(size or 0 for size in read) * self.share * self.times


def table_scans(tree: exp.Expression, dialect: Dialect, catalog: Catalog) -> list[TableScan]:
    """Every table read of ``tree`` (a CTE read twice: its tables twice), with the columns it
    reads and the partitions its filters keep; a ValueError for a table the catalog does not
    know, or knows without sizes."""
    resolved = _resolved(tree.copy(), catalog)
    try:
        schema: dict[str, object] = dict(catalog.sqlglot_schema())
        qualified = qualify(
            resolved,
            schema=schema,
            dialect=dialect,
            validate_qualify_columns=False,
        )
    except SqlglotError as exc:
        raise ValueError(f"cannot resolve the query's columns against the catalog: {exc}") from exc
    steps: list[Callable[[exp.Expression], exp.Expression]] = [
        pushdown_projections,
        pushdown_predicates,
    ]
    if any(distinct_on(s) for s in qualified.find_all(exp.Select)):
        # sqlglot would push a filter below a DISTINCT ON, which changes which rows it keeps:
        # BigQuery does not, so neither does the estimate.
        steps.remove(pushdown_predicates)
    for step in steps:
        # Both only make the estimate closer to what BigQuery does; a query they cannot
        # handle is estimated without them (more bytes, never fewer).
        try:
            qualified = step(qualified.copy())
        except SqlglotError:
            continue
    root = build_scope(qualified)
    if root is None:
        return []
    scans: list[TableScan] = []
    _collect(root, catalog, scans)
    # The same read reached twice (a CTE referenced twice) is one entry read twice.
    merged: dict[tuple[str, frozenset[str], float], TableScan] = {}
    for scan in scans:
        key = (scan.table.name, scan.columns, scan.share)
        seen = merged.get(key)
        merged[key] = scan if seen is None else replace(seen, times=seen.times + 1)
    return list(merged.values())


#: Views within views followed at most this deep (a deeper nest is left unexpanded).
_VIEW_DEPTH = 8


def _resolved(tree: exp.Expression, catalog: Catalog) -> exp.Expression:
    """``tree`` with every table named ``layer.table`` as the catalog has it (BigQuery's
    project prefix dropped) and every view whose query is known replaced by that query (what
    reading it scans), or a ValueError naming a table the catalog does not have."""
    for _ in range(_VIEW_DEPTH):
        expanded = False
        for table in table_references(tree):
            info = catalog.find([table.catalog, table.db, table.name])
            if info is None:
                named = ".".join(p for p in (table.catalog, table.db, table.name) if p)
                if named.endswith("*"):
                    raise ValueError(
                        f"{named} is a wildcard table (BigQuery only): its cost is what "
                        "BigQuery's dry run says, there is nothing here to estimate it from"
                    )
                raise ValueError(
                    f"table {named} is not in the warehouse's catalog (layers raw, staging, "
                    "mart, monitoring): its cost cannot be estimated; check the name"
                )
            if info.is_view and info.definition:
                view: exp.Expr = sqlglot.parse_one(info.definition, read="duckdb")
                alias = table.alias_or_name
                replaced = exp.Subquery(
                    this=view, alias=exp.TableAlias(this=exp.to_identifier(alias))
                )
                table.replace(replaced)
                expanded = True
                continue
            layer, _, short = info.name.partition(".")
            table.set("catalog", None)
            table.set("db", exp.to_identifier(layer))
            table.set("this", exp.to_identifier(short))
        if not expanded:
            break
    return tree


def _collect(scope: Scope, catalog: Catalog, scans: list[TableScan]) -> None:
    """Each reference of a CTE walks it again: BigQuery evaluates it once per reference."""
    walked: set[int] = set()
    for alias, (_, source) in scope.selected_sources.items():
        if isinstance(source, Scope):
            _collect(source, catalog, scans)
            walked.add(id(source))
        elif isinstance(source, exp.Table):
            info = catalog.find([source.db, source.name])
            if info is not None:
                scans.append(_scan(scope, alias, info))
    for child in (*scope.subquery_scopes, *scope.set_operation_scopes, *scope.udtf_scopes):
        if id(child) not in walked:  # a LATERAL subquery is a source and a UDTF scope: once
            _collect(child, catalog, scans)


def _scan(scope: Scope, alias: str, table: TableInfo) -> TableScan:
    if table.is_view:
        raise ValueError(
            f"{table.name} is a view whose query the catalog does not have: reading it runs "
            "that query, so its cost is that of the tables the view reads; estimate a query "
            "on those instead"
        )
    if any(c.bytes is None for c in table.columns):
        raise ValueError(
            f"the catalog has no sizes for {table.name}: load it from the warehouse "
            "(shopstream.genai.optimizer.catalog.load_catalog) to estimate the cost"
        )
    known = {c.name.lower() for c in table.columns}
    columns = {c.name.lower() for c in scope.source_columns(alias)} & known
    if any(_star_of(star, alias) for star in scope.stars):
        columns = known
    share, kept, total = _partition_share(scope, alias, table)
    return TableScan(table, frozenset(columns), share, kept, total)


def _star_of(star: exp.Expression, alias: str) -> bool:
    table = star.args.get("table") if isinstance(star, exp.Column) else None
    return table is None or table.name == alias


# -- partition pruning ----------------------------------------------------------------------------


def _partition_share(
    scope: Scope, alias: str, table: TableInfo
) -> tuple[float, int | None, int | None]:
    """(share of rows kept, partitions kept, partitions) for ``table`` read as ``alias``."""
    if not table.partition_by or not table.partition_rows:
        return 1.0, None, None
    column = table.column(table.partition_by)
    point = column is not None and column.type.upper() == "DATE"
    name = table.partition_by

    def is_partition_column(node: exp.Column) -> bool:
        return _is_column(node, alias, name)

    tests = [
        test
        for condition in _conditions(scope, alias)
        # Only what the partition rules call prunable prunes here too (one verdict for the
        # finding and the estimate); the test then says which days it keeps.
        if (verdict := classify(condition, is_partition_column, column.type if column else "DATE"))
        and verdict.prunable
        and (test := _day_test(condition, alias, name, point)) is not None
    ]
    total = sum(table.partition_rows.values())
    partitions = len(table.partition_rows)
    if not tests:
        return 1.0, partitions, partitions
    kept = {
        day: rows
        for day, rows in table.partition_rows.items()
        if (date := _iso_day(day)) is not None and all(test(date) for test in tests)
    }
    share = sum(kept.values()) / total if total else 1.0
    return share, len(kept), partitions


def _conditions(scope: Scope, alias: str) -> list[exp.Expression]:
    """The AND-ed conditions that filter ``alias`` in ``scope``: the WHERE and the ON of the
    joins that drop its rows (the rules' :func:`restricting_conditions`: one answer for both)."""
    select = scope.expression
    return restricting_conditions(select, alias) if isinstance(select, exp.Expression) else []


_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}
_FLIPPED = {"=": "=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


def _day_test(node: exp.Expr, alias: str, column: str, point: bool) -> DayTest | None:
    """A test of partition days for one condition, or None when it prunes nothing."""
    if isinstance(node, exp.Paren):
        return _day_test(node.this, alias, column, point)
    if isinstance(node, exp.And):
        parts = [_day_test(p, alias, column, point) for p in node.flatten()]
        tests = [t for t in parts if t is not None]
        return (lambda day: all(t(day) for t in tests)) if tests else None
    if isinstance(node, exp.Or):
        branches = [_day_test(p, alias, column, point) for p in node.flatten()]
        if any(b is None for b in branches):
            return None  # a branch that does not filter the column keeps every partition
        kept = [b for b in branches if b is not None]
        return lambda day: any(t(day) for t in kept)
    if isinstance(node, exp.Between) and _is_column(node.this, alias, column):
        low, high = _constant(node.args["low"]), _constant(node.args["high"])
        if low is None or high is None:
            return None
        return lambda day: _keeps(day, ">=", low, point) and _keeps(day, "<=", high, point)
    if isinstance(node, exp.In) and _is_column(node.this, alias, column):
        values = [_constant(v) for v in node.expressions]
        if not values or any(v is None for v in values) or node.args.get("query"):
            return None
        constants = [v for v in values if v is not None]
        return lambda day: any(_keeps(day, "=", v, point) for v in constants)
    op = _COMPARISONS.get(type(node))
    if op is None:
        return None
    left, right = node.this, node.expression
    if _is_column(right, alias, column):
        left, right, op = right, left, _FLIPPED[op]
    if not _is_column(left, alias, column):
        return None
    value = _constant(right)
    if value is None:
        return None
    return lambda day: _keeps(day, op, value, point)


def _is_column(node: exp.Expr, alias: str, column: str) -> bool:
    """The bare partition column (not under a function or cast: those prune nothing)."""
    return (
        isinstance(node, exp.Column)
        and node.name.lower() == column.lower()
        and (not node.table or node.table == alias)
    )


def _keeps(day: dt.date, op: str, value: dt.datetime, point: bool) -> bool:
    """Whether partition ``day`` may hold a value ``v`` with ``v <op> value``: a DATE column's
    partition holds the one day; a TIMESTAMP column's the instants of that day (UTC)."""
    start = dt.datetime.combine(day, dt.time())
    if point:
        return {
            "=": start == value,
            ">": start > value,
            ">=": start >= value,
            "<": start < value,
            "<=": start <= value,
        }[op]
    end = start + dt.timedelta(days=1)
    return {
        "=": start <= value < end,
        ">": value < end,
        ">=": value < end,
        "<": start < value,
        "<=": start <= value,
    }[op]


#: Functions that make a date or timestamp out of one literal: ``DATE('2026-11-30')``.
_CONSTRUCTORS = (exp.Date, exp.TsOrDsToDate, exp.DateStrToDate, exp.TimeStrToTime, exp.Timestamp)
_STEPS = {
    "SECOND": dt.timedelta(seconds=1),
    "MINUTE": dt.timedelta(minutes=1),
    "HOUR": dt.timedelta(hours=1),
    "DAY": dt.timedelta(days=1),
    "WEEK": dt.timedelta(weeks=1),
}


def _constant(node: exp.Expr) -> dt.datetime | None:
    """A date or timestamp constant, as BigQuery evaluates it before choosing partitions:
    ``'2026-11-30'``, ``DATE '2026-11-30'``, ``CAST('...' AS TIMESTAMP)``, ``DATE('2026-11-30')``,
    ``CURRENT_DATE`` / ``CURRENT_TIMESTAMP`` (now, UTC) and those plus or minus an interval
    (``- INTERVAL 7 DAY``, ``DATE_SUB(..., INTERVAL 7 DAY)``, ``- 7`` days); None for anything
    else (another function of a constant is not that constant)."""
    while isinstance(node, exp.Paren | exp.Cast | exp.TryCast):
        if isinstance(node, exp.Cast | exp.TryCast) and not node.to.is_type(
            *exp.DataType.TEMPORAL_TYPES
        ):
            return None
        node = node.this
    if isinstance(node, exp.CurrentDate):
        return dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time())
    if isinstance(node, exp.CurrentTimestamp | exp.CurrentDatetime):
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if isinstance(node, exp.Add | exp.Sub | exp.DateAdd | exp.DateSub | exp.TimestampAdd):
        return _shifted(node)
    if isinstance(node, exp.TimestampSub | exp.DatetimeAdd | exp.DatetimeSub):
        return _shifted(node)
    if isinstance(node, _CONSTRUCTORS):
        arguments = [a for a in node.args.values() if isinstance(a, exp.Expression)]
        if len(arguments) != 1:
            return None
        node = arguments[0]
    if not (isinstance(node, exp.Literal) and node.is_string):
        return None
    text = node.this.strip().replace("Z", "+00:00")
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _shifted(node: exp.Expr) -> dt.datetime | None:
    """``start ± amount`` for a constant start and an interval (or a number of days)."""
    start = _constant(node.this)
    if start is None:
        return None
    amount: exp.Expr = node.expression
    unit = node.args.get("unit")
    if isinstance(amount, exp.Interval):
        unit, amount = amount.args.get("unit"), amount.this
    step = _STEPS.get((unit.name if unit is not None else "DAY").upper().rstrip("S"))
    if step is None or not isinstance(amount, exp.Literal | exp.Neg):
        return None
    try:
        count = float(amount.sql().strip("'"))
    except ValueError:
        return None
    sign = -1 if isinstance(node, exp.Sub | exp.DateSub | exp.TimestampSub | exp.DatetimeSub) else 1
    return start + sign * count * step


def _iso_day(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None  # __NULL__ / __UNPARTITIONED__: no filter on the column keeps them


def _method(scans: list[TableScan]) -> str:
    """What the estimate counted, table by table, in the order the query reads them."""
    if not scans:
        return "estimate from column sizes: no table read"
    parts = []
    for scan in scans:
        text = f"{scan.table.name} {len(scan.columns)} of {len(scan.table.columns)} columns"
        if scan.partitions is not None:
            text += f", {scan.partitions_kept} of {scan.partitions} partitions"
        if scan.times > 1:
            text += f", read {scan.times} times"
        parts.append(text)
    return "estimate from column sizes: " + "; ".join(parts)
