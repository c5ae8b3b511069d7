"""Mechanical, result-preserving rewrites of the join rules: a semi join for DISTINCT over a
filtering join, NOT EXISTS for NOT IN, one scan with conditional aggregation for scalar
subqueries over the same table. Each returns the whole query (None when the shape is not one
the rewrite keeps equal).

>>> from shopstream.genai.optimizer.query import parse_query
>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> orders = TableInfo("staging.stg_orders", (Column("status", "VARCHAR"),
...                    Column("total_amount", "DECIMAL(18,2)")))
>>> q = parse_query("select (select count(*) from staging.stg_orders where status = 'PAID')"
...                 " as paid, (select sum(total_amount) from staging.stg_orders) as revenue",
...                 "duckdb",
...                 Catalog({"staging.stg_orders": orders}))
>>> for part in conditional_aggregation(q, q.tree).split(", "):
...     print(part)
SELECT COUNT(CASE WHEN status = 'PAID' THEN 1 END) AS paid
SUM(total_amount) AS revenue FROM staging.stg_orders
"""

from __future__ import annotations

from sqlglot import exp

from shopstream.genai.optimizer.query import Query
from shopstream.genai.optimizer.rules.join_sources import (
    Source,
    owner_of,
    owners_in,
    sources_of,
)
from shopstream.genai.optimizer.rules.table_filters import conjuncts
from shopstream.genai.optimizer.rules.tree_edits import counterpart


def _and(parts: list[exp.Expr]) -> exp.Expr | None:
    return exp.and_(*parts) if parts else None


def _qualified(part: exp.Expr, sources: list[Source]) -> exp.Expr | None:
    """``part`` with every column qualified by its source (None: one cannot be placed)."""
    copy = part.copy()
    for column in copy.find_all(exp.Column):
        if column.table:
            continue
        owner = owner_of(column, sources)
        if owner is None:
            return None
        column.set("table", exp.to_identifier(owner.alias))
    return copy


def semi_join(query: Query, select: exp.Select, sources: list[Source], kept: Source) -> str | None:
    """SELECT DISTINCT <kept's columns> FROM kept JOIN other ... -> ... FROM kept WHERE EXISTS
    (SELECT 1 FROM other WHERE <join condition>); with a LEFT JOIN the join is dropped."""
    joins = select.args.get("joins") or []
    if len(sources) != 2 or len(joins) != 1:
        return None
    if any(select.args.get(k) for k in ("group", "having", "qualify")) or any(
        e.find(exp.AggFunc, exp.Window) for e in select.expressions
    ):
        return None
    join = joins[0]
    other = next(s for s in sources if s is not kept)
    if join.kind not in ("", "INNER") or join.side not in ("", "LEFT"):
        return None
    if join.side == "LEFT" and kept is not sources[0]:
        return None
    condition: list[exp.Expr] = []
    for part in conjuncts(join.args.get("on")):
        qualified = _qualified(part, sources)
        if qualified is None:
            return None
        condition.append(qualified)
    for name in join.args.get("using") or []:
        condition.append(
            exp.column(name.name, table=kept.alias).eq(exp.column(name.name, table=other.alias))
        )
    if not condition:
        return None
    where = select.args.get("where")
    staying: list[exp.Expr] = []
    for part in conjuncts(where.this if isinstance(where, exp.Where) else None):
        owners = owners_in(part, sources)
        if owners is None:
            return None
        if other.alias not in owners:
            staying.append(part.copy())
            continue
        if join.side == "LEFT":
            return None  # a filter on the outer side makes it an inner join: keep it as is
        qualified = _qualified(part, sources)
        if qualified is None:
            return None
        condition.append(qualified)
    copy = query.tree.copy()
    target = counterpart(copy, select)
    target.set("joins", None)
    target.set("from_", exp.From(this=kept.node.copy()))
    if join.side != "LEFT":
        exists = exp.Exists(
            this=exp.select("1").from_(other.node.copy()).where(_and(condition), copy=False)
        )
        staying.append(exists)
    target.set("where", exp.Where(this=_and(staying)) if staying else None)
    return copy.sql(dialect=query.dialect)


def not_exists(
    query: Query, negation: exp.Not, test: exp.In, inner_source: Source | None, column: exp.Column
) -> str | None:
    """``x NOT IN (SELECT c FROM t WHERE p)`` -> ``(x IS NOT NULL AND NOT EXISTS (SELECT 1 FROM t
    WHERE p AND t.c = x))``, x qualified so that the subquery cannot capture it."""
    inner = test.args["query"].this
    outer = negation.parent_select
    if inner_source is None or outer is None or not isinstance(inner, exp.Select):
        return None
    if inner.args.get("joins") or any(
        inner.args.get(k) for k in ("group", "having", "limit", "qualify", "with_")
    ):
        return None
    outer_sources = sources_of(outer, query)
    if inner_source.alias in {s.alias for s in outer_sources}:
        return None  # the subquery's table would hide the outer one of the same name
    value = _qualified(test.this, outer_sources)
    if value is None:
        return None
    copy = query.tree.copy()
    target = counterpart(copy, negation)
    subquery = counterpart(copy, inner).copy()
    subquery.set("distinct", None)
    subquery.set("expressions", [exp.Literal.number(1)])
    table = subquery.args["from_"].this
    if isinstance(table, exp.Table) and not table.alias:
        # Name the correlation explicitly: `project.layer.table` -> `... AS table`.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(inner_source.alias)))
    subquery.where(exp.column(column.name, table=inner_source.alias).eq(value), copy=False)
    # NOT IN is NULL (the row dropped) when x is NULL and the subquery has rows; NOT EXISTS
    # would keep it. With the IS NOT NULL the rewrite equals NOT IN whenever the subquery gives
    # no NULL (and has a row).
    target.replace(
        exp.paren(
            exp.and_(
                exp.Is(this=value.copy(), expression=exp.Null()).not_(),
                exp.Not(this=exp.Exists(this=subquery)),
            )
        )
    )
    return copy.sql(dialect=query.dialect)


def scalar_aggregates(select: exp.Select, query: Query) -> dict[str, list[exp.Subquery]]:
    """The uncorrelated scalar subqueries in ``select``'s list that aggregate one catalog table
    without grouping, by table."""
    found: dict[str, list[exp.Subquery]] = {}
    for projection in select.expressions:
        subquery = projection.this if isinstance(projection, exp.Alias) else projection
        if not isinstance(subquery, exp.Subquery) or not isinstance(subquery.this, exp.Select):
            continue
        body = subquery.this
        sources = sources_of(body, query)
        if len(sources) != 1 or sources[0].info is None or len(body.expressions) != 1:
            continue
        if any(body.args.get(k) for k in ("joins", "group", "having", "limit", "distinct")):
            continue
        value = body.expressions[0]
        value = value.this if isinstance(value, exp.Alias) else value
        if not isinstance(value, exp.AggFunc) or owners_in(body, sources) is None:
            continue
        qualifiers = {c.table.lower() for c in body.find_all(exp.Column) if c.table}
        if not qualifiers <= {sources[0].alias}:
            continue  # correlated with the outer query
        found.setdefault(sources[0].info.name, []).append(subquery)
    return found


#: Aggregates that skip NULLs and ignore row order: ``agg(CASE WHEN p THEN x END)`` over all
#: rows equals ``agg(x)`` over the rows where ``p`` holds. ARRAY_AGG (keeps the NULLs), FIRST /
#: ANY_VALUE / ARG_MAX (may pick a row ``p`` rejects), STRING_AGG (order) are left alone.
_NULL_IGNORING = (exp.Sum, exp.Count, exp.Min, exp.Max, exp.Avg)


def _conditional(value: exp.AggFunc, condition: exp.Expr) -> exp.Expr | None:
    """``agg(x)`` over the rows where ``condition`` holds, as one aggregate over all rows."""
    if type(value) not in _NULL_IGNORING:
        return None
    copy = value.copy()
    argument = copy.this
    distinct = isinstance(argument, exp.Distinct)
    if distinct:
        if len(argument.expressions) != 1:
            return None
        argument = argument.expressions[0]
    then = exp.Literal.number(1) if isinstance(argument, exp.Star) else argument.copy()
    case = exp.Case(ifs=[exp.If(this=condition.copy(), true=then)])
    if distinct:
        copy.set("this", exp.Distinct(expressions=[case]))
    else:
        copy.set("this", case)
    return copy


def conditional_aggregation(query: Query, select: exp.Select) -> str | None:
    """SELECT (SELECT agg(x) FROM t WHERE p) AS a, (SELECT agg(y) FROM t WHERE q) AS b ->
    SELECT agg(CASE WHEN p THEN x END) AS a, agg(CASE WHEN q THEN y END) AS b FROM t: one scan.
    Only when that is the whole SELECT (no FROM of its own) and every output is named."""
    if select.args.get("from_") or select.args.get("where"):
        return None
    groups = scalar_aggregates(select, query)
    if len(groups) != 1:
        return None
    subqueries = next(iter(groups.values()))
    if len(subqueries) != len(select.expressions) or len(subqueries) < 2:
        return None
    tables = {sources_of(s.this, query)[0].node.sql().lower() for s in subqueries}
    if len(tables) != 1:
        return None  # different aliases: the columns would not all resolve in one FROM
    wheres = [s.this.args.get("where") for s in subqueries]
    filters = [w.this for w in wheres if isinstance(w, exp.Where)]
    if filters and len(filters) < len(wheres) and _filters_partitions(query, subqueries, filters):
        return None  # one scan of every partition reads more than the pruned scans it replaces
    outputs: list[exp.Expr] = []
    for projection, subquery, where in zip(select.expressions, subqueries, wheres, strict=True):
        if not isinstance(projection, exp.Alias):
            return None
        body = subquery.this
        value = body.expressions[0]
        value = value.this if isinstance(value, exp.Alias) else value
        if type(value) not in _NULL_IGNORING:
            return None
        if isinstance(where, exp.Where):
            value = _conditional(value, where.this)
            if value is None:
                return None
        outputs.append(exp.alias_(value.copy(), projection.alias))
    copy = query.tree.copy()
    target = counterpart(copy, select)
    target.set("expressions", outputs)
    target.set("from_", exp.From(this=subqueries[0].this.args["from_"].this.copy()))
    if len(filters) == len(wheres):
        # Every subquery reads only its rows: the one scan reads their union, so the partitions
        # (and rows) no subquery wanted stay unread.
        either = exp.or_(
            *(exp.paren(f.copy()) if isinstance(f, exp.Or) else f.copy() for f in filters)
        )
        target.set("where", exp.Where(this=either))
    return copy.sql(dialect=query.dialect)


def _filters_partitions(
    query: Query, subqueries: list[exp.Subquery], filters: list[exp.Expr]
) -> bool:
    """Whether a filter of the subqueries names the table's partition column (it may prune)."""
    info = sources_of(subqueries[0].this, query)[0].info
    column = (info.partition_by or "").lower() if info is not None else ""
    return bool(column) and any(
        c.name.lower() == column for f in filters for c in f.find_all(exp.Column)
    )
