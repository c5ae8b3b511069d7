"""Self-joins a window function replaces: a table joined to its own per-key aggregate, or to
itself on its key plus an ordering condition (the previous or next row).

>>> from shopstream.genai.optimizer.query import parse_query
>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> items = TableInfo("staging.stg_order_items", (Column("order_id", "BIGINT"),
...                   Column("quantity", "INTEGER")))
>>> q = parse_query("select i.order_id, i.quantity, t.units from staging.stg_order_items i join "
...                 "(select order_id, sum(quantity) as units from staging.stg_order_items "
...                 "group by order_id) t on t.order_id = i.order_id", "duckdb",
...                 Catalog({"staging.stg_order_items": items}))
>>> select = q.tree
>>> shape = self_join_shape(select, sources_of(select, q), select.args["joins"][0])
>>> shape.kind, shape.keys
('aggregate', ('order_id',))
>>> for part in window_instead_of_self_join(q, select, shape).split(" FROM "):
...     print(part)
SELECT i.order_id, i.quantity, SUM(i.quantity) OVER (PARTITION BY i.order_id) AS units
staging.stg_order_items AS i WHERE NOT i.order_id IS NULL
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlglot import exp

from shopstream.genai.optimizer.query import Query
from shopstream.genai.optimizer.rules.join_sources import (
    Source,
    owner_of,
    sources_of,
)
from shopstream.genai.optimizer.rules.table_filters import conjuncts
from shopstream.genai.optimizer.rules.tree_edits import counterpart

_WINDOWABLE = (exp.Sum, exp.Count, exp.Min, exp.Max, exp.Avg)


@dataclass(frozen=True)
class SelfJoin:
    kind: Literal["aggregate", "neighbour"]
    #: ``layer.table`` joined to itself.
    table: str
    #: The columns both sides are equated on (the window's PARTITION BY).
    keys: tuple[str, ...]
    #: The outer side (the table itself) and the joined side.
    left: Source
    right: Source
    #: The aggregate ("SUM(quantity)") or the ordering condition, for the message.
    example: str
    #: kind aggregate: the joined subquery's outputs -> the expression computing them.
    outputs: dict[str, exp.Expr] = field(default_factory=dict)


def self_join_shape(select: exp.Select, sources: list[Source], join: exp.Join) -> SelfJoin | None:
    """What kind of self-join ``join`` is (None: not one a window replaces)."""
    right = next((s for s in sources if s.node is join.this), None)
    if right is None:
        return None
    if right.table_name is None and isinstance(right.node, exp.Subquery):
        return _aggregate_shape(sources, right, join)
    if right.table_name is not None:
        return _neighbour_shape(sources, right, join)
    return None


def _aggregate_shape(sources: list[Source], right: Source, join: exp.Join) -> SelfJoin | None:
    body = right.node.this
    if not isinstance(body, exp.Select) or body.args.get("joins"):
        return None
    inner = sources_of(body, None)
    group = body.args.get("group")
    if len(inner) != 1 or not isinstance(group, exp.Group):
        return None
    grouped = [_ordinal(g, body) for g in group.expressions]
    if not all(isinstance(g, exp.Column) for g in grouped):
        return None
    table = inner[0].node
    if not isinstance(table, exp.Table):
        return None
    name = f"{table.db}.{table.name}".lower()
    left = next((s for s in sources if s.table_name == name and s is not right), None)
    if left is None:
        return None
    keys = {g.name.lower() for g in grouped}
    outputs: dict[str, exp.Expr] = {}
    for projection in body.expressions:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        outputs[projection.alias_or_name.lower()] = value
    equated: set[str] = set()
    for part in conjuncts(join.args.get("on")):
        if not isinstance(part, exp.EQ):
            return None
        columns = [part.left, part.right]
        if not all(isinstance(c, exp.Column) for c in columns):
            return None
        by_owner = {owner_of(c, sources): c.name.lower() for c in columns}  # type: ignore[arg-type]
        if set(by_owner) != {left, right}:
            return None
        mine, theirs = by_owner[left], by_owner[right]
        if mine != theirs or mine not in keys:
            return None
        equated.add(mine)
    if equated != keys:
        return None
    aggregates = [v for v in outputs.values() if isinstance(v, exp.AggFunc)]
    if not aggregates:
        return None
    return SelfJoin(
        kind="aggregate",
        table=name,
        keys=tuple(sorted(keys)),
        left=left,
        right=right,
        example=aggregates[0].sql(),
        outputs=outputs,
    )


def _ordinal(key: exp.Expr, body: exp.Select) -> exp.Expr:
    """``GROUP BY 1`` -> the first output's expression."""
    if isinstance(key, exp.Literal) and key.is_int and 0 < int(key.this) <= len(body.expressions):
        output = body.expressions[int(key.this) - 1]
        return output.this if isinstance(output, exp.Alias) else output
    return key


def _neighbour_shape(sources: list[Source], right: Source, join: exp.Join) -> SelfJoin | None:
    left = next((s for s in sources if s.table_name == right.table_name and s is not right), None)
    if left is None:
        return None
    keys: set[str] = set()
    ordering: list[exp.Expr] = []
    for part in conjuncts(join.args.get("on")):
        owners = {owner_of(c, sources) for c in part.find_all(exp.Column)}
        if owners != {left, right}:
            continue
        sides = [part.args.get("this"), part.args.get("expression")]
        names = {c.name.lower() for c in sides if isinstance(c, exp.Column)}
        if (
            isinstance(part, exp.EQ)
            and len(names) == 1
            and all(isinstance(c, exp.Column) for c in sides)
        ):
            keys |= names
        elif isinstance(part, (exp.EQ, exp.LT, exp.LTE, exp.GT, exp.GTE)):
            ordering.append(part)
    if not keys or not ordering:
        return None
    return SelfJoin(
        kind="neighbour",
        table=right.table_name or right.label,
        keys=tuple(sorted(keys)),
        left=left,
        right=right,
        example=ordering[0].sql(),
    )


def window_instead_of_self_join(query: Query, select: exp.Select, shape: SelfJoin) -> str | None:
    """The query with the per-key aggregate computed as a window over the one scan, when that
    is result-preserving: an inner join, nothing filtering either side, no GROUP BY outside."""
    join = next(j for j in select.args.get("joins") or [] if j.this is shape.right.node)
    body = shape.right.node.this
    plain_inner = join.side == "" and join.kind in ("", "INNER")
    simple = not any(select.args.get(k) for k in ("where", "group", "having", "qualify"))
    if not plain_inner or not simple or len(select.args.get("joins") or []) != 1:
        return None
    if any(body.args.get(k) for k in ("where", "having", "qualify", "distinct")):
        return None
    for value in shape.outputs.values():
        if isinstance(value, exp.AggFunc) and (
            not isinstance(value, _WINDOWABLE) or value.find(exp.Distinct)
        ):
            return None
    copy = query.tree.copy()
    target = counterpart(copy, select)
    sources = [shape.left, shape.right]
    qualifier = shape.left.alias
    partition = [exp.column(k, table=qualifier) for k in shape.keys]
    replacement: exp.Expr
    for column in list(target.find_all(exp.Column)):
        if column.find_ancestor(exp.Select) is not target:
            continue
        owner = owner_of(column, sources)
        if owner is None:
            return None
        if owner.alias != shape.right.alias:
            continue
        name = column.name.lower()
        output = shape.outputs.get(name)
        if output is None:
            return None
        if isinstance(output, exp.AggFunc):
            aggregate = output.copy()
            for inner in aggregate.find_all(exp.Column):
                inner.set("table", exp.to_identifier(qualifier))
            replacement = exp.Window(this=aggregate, partition_by=[p.copy() for p in partition])
        elif isinstance(output, exp.Column):
            replacement = exp.column(output.name, table=qualifier)
        else:
            return None
        if column.parent is target:
            replacement = exp.alias_(replacement, column.name)
        column.replace(replacement)
    target.set("joins", None)
    info = shape.left.info
    for key in partition:
        described = info.column(key.name) if info else None
        if described is None or described.nullable:
            # The inner join drops rows whose key is NULL; the window would keep them.
            target.where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())), copy=False)
    return copy.sql(dialect=query.dialect)
