"""Filters on a partition column: which ones let BigQuery skip partitions, and the prunable
predicate that replaces a non-prunable one when that is mechanical.

BigQuery prunes when the bare partition column is compared with a constant expression (``=``,
``IN``, ``BETWEEN``, ``<``, ``<=``, ``>``, ``>=``; literals, ``CURRENT_DATE()`` and arithmetic on
them). A function or a cast around the column, a comparison with a subquery, or an OR with a
branch that does not filter the column make it read every partition.

>>> import sqlglot
>>> def verdict(sql):
...     where = sqlglot.parse_one(f"select 1 from t where {sql}", read="duckdb").args["where"].this
...     found = classify(where, lambda c: c.name == "event_date", "DATE")
...     return found.prunable, found.replacement.sql("duckdb") if found.replacement else None
>>> verdict("event_date >= current_date - interval 7 day")
(True, None)
>>> verdict("extract(year from event_date) = 2026")
(False, "event_date >= CAST('2026-01-01' AS DATE) AND event_date < CAST('2027-01-01' AS DATE)")
>>> verdict("event_date = '2026-11-28' or event_type = 'purchase'")
(False, None)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlglot import exp

from shopstream.genai.optimizer.rules.table_filters import VARIABLE, unparen

IsColumn = Callable[[exp.Column], bool]

_COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NEQ)
_FLIPPED: dict[type[exp.Expression], type[exp.Expression]] = {
    exp.EQ: exp.EQ,
    exp.NEQ: exp.NEQ,
    exp.GT: exp.LT,
    exp.GTE: exp.LTE,
    exp.LT: exp.GT,
    exp.LTE: exp.GTE,
}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TEXT_TYPES = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR}
_TRUNC_UNITS = {"DAY", "MONTH", "QUARTER", "YEAR"}


@dataclass(frozen=True)
class Pruning:
    """What one conjunct does to the partitions read."""

    prunable: bool
    #: The conjunct.
    predicate: exp.Expression
    #: What stops the pruning (the function around the column, the OR, the subquery); the
    #: predicate itself when it prunes.
    culprit: exp.Expression
    #: Why it does not prune ("" when it does).
    reason: str = ""
    #: A prunable predicate selecting the same rows, when there is a mechanical one.
    replacement: exp.Expression | None = None


def is_constant(node: exp.Expression) -> bool:
    """No column (but variables) and no subquery in it: BigQuery evaluates it before choosing
    partitions."""
    return not any(
        isinstance(n, (exp.Query, exp.Subquery))
        or (isinstance(n, exp.Column) and not n.meta.get(VARIABLE))
        for n in node.walk()
    )


def _mentions(node: exp.Expression, is_column: IsColumn) -> bool:
    return any(isinstance(n, exp.Column) and is_column(n) for n in node.walk())


def classify(predicate: exp.Expression, is_column: IsColumn, column_type: str) -> Pruning | None:
    """What ``predicate`` (one conjunct) does for the partition column ``is_column`` picks out
    (of warehouse type ``column_type``); None when it does not filter that column (or only joins
    it to another table's column)."""
    node = unparen(predicate)
    if not _mentions(node, is_column):
        return None
    if isinstance(node, exp.Or):
        return _classify_or(predicate, node, is_column, column_type)
    if isinstance(node, exp.And):
        found = [
            p
            for part in (node.this, node.expression)
            if (p := classify(part, is_column, column_type))
        ]
        if not found:
            return None
        best = next((p for p in found if p.prunable), found[0])
        return Pruning(best.prunable, predicate, best.culprit, best.reason)
    if isinstance(node, _COMPARISONS):
        return _classify_comparison(predicate, node, is_column, column_type)
    if isinstance(node, exp.Between):
        return _classify_between(predicate, node, is_column, column_type)
    if isinstance(node, exp.Is) and _is_bare(node.this, is_column):
        return Pruning(True, predicate, predicate)  # the NULL partition
    if isinstance(node, exp.In) and _is_bare(node.this, is_column):
        if node.args.get("query") is not None:
            return Pruning(
                False,
                predicate,
                node.args["query"],
                "its values come from a subquery, which BigQuery "
                "runs only after it has chosen what to read",
            )
        if all(is_constant(v) for v in node.expressions):
            return Pruning(True, predicate, predicate)
    return Pruning(
        False, predicate, node, "it is not a comparison of the bare column with constants"
    )


def _classify_or(
    predicate: exp.Expression, node: exp.Or, is_column: IsColumn, column_type: str
) -> Pruning:
    branches = [unparen(b) for b in node.flatten() if isinstance(b, exp.Expression)]
    for branch in branches:
        found = classify(branch, is_column, column_type)
        if found is None or not found.prunable:
            column = next(c.sql() for c in node.find_all(exp.Column) if is_column(c))
            why = (
                f"its branch `{branch.sql()}` does not filter {column}, so rows of every "
                "partition can match it"
                if found is None
                else f"its branch `{branch.sql()}` does not prune: {found.reason}"
            )
            return Pruning(False, predicate, node, why)
    return Pruning(True, predicate, predicate)


def _is_bare(node: exp.Expression, is_column: IsColumn) -> bool:
    return isinstance(node, exp.Column) and is_column(node)


def _classify_comparison(
    predicate: exp.Expression, node: exp.Expression, is_column: IsColumn, column_type: str
) -> Pruning | None:
    side, other, kind = node.this, node.expression, type(node)
    if not _mentions(side, is_column):
        side, other, kind = other, side, _FLIPPED[kind]
    if _mentions(other, is_column):
        return Pruning(False, predicate, node, "the partition column is on both sides")
    if _is_bare(side, is_column):
        if any(isinstance(n, (exp.Query, exp.Subquery)) for n in other.walk()):
            return Pruning(
                False,
                predicate,
                other,
                "it compares with a subquery, which BigQuery runs only "
                "after it has chosen what to read",
            )
        if not is_constant(other):
            return None  # a join condition between two tables' columns, not a filter
        if kind is exp.NEQ:
            return Pruning(False, predicate, node, "`<>` excludes at most one partition")
        return Pruning(True, predicate, predicate)
    replacement = None
    if kind is not exp.NEQ and column_type.upper() == "DATE":
        window = _window(side, other, is_column)
        if window is not None:
            column, start, end = window
            replacement = _range(column, *_compared(kind, start, end))
    return Pruning(
        False,
        predicate,
        side,
        f"`{side.sql()}` wraps the partition column in a function or cast, so BigQuery "
        "cannot tell which partitions can match",
        replacement,
    )


def _classify_between(
    predicate: exp.Expression, node: exp.Between, is_column: IsColumn, column_type: str
) -> Pruning:
    low, high = node.args["low"], node.args["high"]
    if _is_bare(node.this, is_column) and is_constant(low) and is_constant(high):
        return Pruning(True, predicate, predicate)
    if _is_bare(node.this, is_column):
        return Pruning(False, predicate, node, "its bounds are not constants")
    replacement = None
    if column_type.upper() == "DATE":
        first, last = _window(node.this, low, is_column), _window(node.this, high, is_column)
        if first is not None and last is not None:
            replacement = _range(first[0], first[1], last[2])
    return Pruning(
        False,
        predicate,
        node.this,
        f"`{node.this.sql()}` wraps the partition column in a function or cast, so BigQuery "
        "cannot tell which partitions can match",
        replacement,
    )


def _compared(
    kind: type[exp.Expression], start: date, end: date
) -> tuple[date | None, date | None]:
    """The column's range for ``f(column) <kind> value`` when ``f(column) == value`` exactly for
    ``start <= column < end`` (and f grows with the column)."""
    if kind is exp.EQ:
        return start, end
    if kind is exp.GTE:
        return start, None
    if kind is exp.GT:
        return end, None
    if kind is exp.LT:
        return None, start
    return None, end  # LTE


def _range(column: exp.Column, start: date | None, end: date | None) -> exp.Expression:
    parts: list[exp.Expression] = []
    if start is not None:
        parts.append(exp.GTE(this=column.copy(), expression=_date(start)))
    if end is not None:
        parts.append(exp.LT(this=column.copy(), expression=_date(end)))
    return exp.And(this=parts[0], expression=parts[1]) if len(parts) > 1 else parts[0]


def _date(value: date) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))


def _literal_date(node: exp.Expression) -> date | None:
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DATE:
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string and _ISO_DATE.match(node.this):
        try:
            return date.fromisoformat(node.this)
        except ValueError:
            return None
    return None


def _unit(node: exp.Expression) -> str:
    unit = node.args.get("unit")
    return unit.name.upper() if isinstance(unit, (exp.Var, exp.Literal)) else ""


def _add(start: date, unit: str) -> date:
    if unit == "DAY":
        return start + timedelta(days=1)
    months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[unit]
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _aligned(value: date, unit: str) -> bool:
    if unit == "DAY":
        return True
    if value.day != 1:
        return False
    return (
        unit == "MONTH" or (unit == "QUARTER" and value.month in (1, 4, 7, 10)) or value.month == 1
    )


def _window(
    wrapped: exp.Expression, value: exp.Expression, is_column: IsColumn
) -> tuple[exp.Column, date, date] | None:
    """For ``f(column) = value``: the column, and the dates ``start <= column < end`` where that
    holds, when f is one of the functions that keep the column's order (a date cast to text, a
    truncation to a calendar unit, the year) and value a matching literal."""
    column = wrapped.expression if isinstance(wrapped, exp.Extract) else wrapped.this
    if not isinstance(column, exp.Column) or not is_column(column):
        return None
    if isinstance(wrapped, (exp.Cast, exp.TryCast)):
        day = _literal_date(value)
        target = wrapped.to.this
        if day is not None and (target in _TEXT_TYPES or target == exp.DataType.Type.DATE):
            return column, day, day + timedelta(days=1)
        return None
    if isinstance(wrapped, (exp.DateTrunc, exp.TimestampTrunc)):
        day, unit = _literal_date(value), _unit(wrapped)
        if day is not None and unit in _TRUNC_UNITS and _aligned(day, unit):
            return column, day, _add(day, unit)
        return None
    is_year = isinstance(wrapped, exp.Year) or (
        isinstance(wrapped, exp.Extract) and wrapped.this.name.upper() == "YEAR"
    )
    if is_year and isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit():
        year = int(value.this)
        if 1 <= year < 9999:
            return column, date(year, 1, 1), date(year + 1, 1, 1)
    return None
