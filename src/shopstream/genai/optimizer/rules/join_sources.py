"""What one SELECT joins: its sources (tables, CTEs, subqueries) with what is known about each
(rows, columns, the column sets that are unique per row), and which source a column belongs to.

The join rules reason about pairs of sources: whether a join condition links them, whether its
columns are unique on either side.

>>> from sqlglot import parse_one
>>> select = parse_one("select o.status from staging.stg_orders o "
...                    "join (select order_id, sum(quantity) as units from staging.stg_order_items "
...                    "group by order_id) i on i.order_id = o.order_id")
>>> [(s.alias, s.label, s.unique_keys) for s in sources_of(select, None)]
[('o', 'staging.stg_orders', None), ('i', 'a subquery', [frozenset({'order_id'})])]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp

from shopstream.genai.optimizer.catalog import TableInfo
from shopstream.genai.optimizer.query import Query
from shopstream.genai.optimizer.rules.table_filters import conjuncts

#: A source with at most this many rows makes no cartesian product worth reporting.
TINY_ROWS = 10

_AGGREGATES = (exp.AggFunc,)


@dataclass(frozen=True, eq=False)  # compared by identity: one per FROM/JOIN item
class Source:
    """One thing a SELECT reads from: a table, a CTE or a subquery, under its alias."""

    #: The name its columns are qualified with (the alias, or the table's name), lower case.
    alias: str
    node: exp.Expr
    #: The catalog's entry (tables only).
    info: TableInfo | None
    #: "raw.events", "CTE e", "a subquery": how messages name it.
    label: str
    #: Rows, when known (the catalog's count; 1 for an aggregate without GROUP BY).
    rows: int | None
    #: Its column names, lower case (None: unknown, e.g. a table missing from the catalog).
    columns: frozenset[str] | None
    #: Column sets unique per row; [] when none is known to be; None when nothing is known.
    unique_keys: list[frozenset[str]] | None

    def unique_on(self, columns: set[str]) -> bool | None:
        """Whether rows are unique on ``columns`` (None: cannot tell)."""
        if self.unique_keys is None:
            return None
        return any(key <= columns for key in self.unique_keys)

    @property
    def table_name(self) -> str | None:
        """``layer.table`` of a catalog table, else None."""
        return self.info.name if self.info else None


def ctes_in_scope(node: exp.Expr) -> dict[str, exp.CTE]:
    """The CTEs visible from ``node``: every WITH of it and of the queries around it."""
    found: dict[str, exp.CTE] = {}
    current: exp.Expr | None = node
    while current is not None:
        with_ = current.args.get("with_") if isinstance(current, exp.Query) else None
        if isinstance(with_, exp.With):
            for cte in with_.expressions:
                found.setdefault(cte.alias_or_name.lower(), cte)
        current = current.parent
    return found


def sources_of(select: exp.Select, query: Query | None) -> list[Source]:
    """The FROM source and every joined one, in order (UNNEST and LATERAL are left out)."""
    from_ = select.args.get("from_")
    nodes = [from_.this] if isinstance(from_, exp.From) else []
    nodes += [j.this for j in select.args.get("joins") or []]
    ctes = ctes_in_scope(select)
    found = [_source(n, query, ctes) for n in nodes]
    return [s for s in found if s is not None]


def _source(node: exp.Expr, query: Query | None, ctes: dict[str, exp.CTE]) -> Source | None:
    alias = node.alias_or_name.lower() if node.alias_or_name else ""
    if isinstance(node, exp.Table) and node.name:
        cte = ctes.get(node.name.lower()) if not node.db else None
        if cte is not None:
            body = cte.this
            return Source(
                alias=alias,
                node=node,
                info=None,
                label=f"CTE {cte.alias_or_name}",
                rows=_derived_rows(body),
                columns=_output_columns(body),
                unique_keys=_derived_unique(body),
            )
        info = query.table_info(node) if query else None
        if info is None:
            name = ".".join(p for p in (node.catalog, node.db, node.name) if p)
            return Source(alias, node, None, name, None, None, None)
        keys = [frozenset(c.lower() for c in info.unique_key)] if info.unique_key else []
        return Source(
            alias=alias,
            node=node,
            info=info,
            label=info.name,
            rows=info.rows,
            columns=frozenset(c.name.lower() for c in info.columns),
            unique_keys=keys,
        )
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Query):
        return Source(
            alias=alias,
            node=node,
            info=None,
            label="a subquery",
            rows=_derived_rows(node.this),
            columns=_output_columns(node.this),
            unique_keys=_derived_unique(node.this),
        )
    return None


def _output_columns(body: exp.Expr) -> frozenset[str] | None:
    if not isinstance(body, exp.Query):
        return None
    names = [n.lower() for n in body.named_selects]
    return None if "*" in names or "" in names else frozenset(names)


def aggregates(select: exp.Select) -> bool:
    """Whether a projection of ``select`` aggregates its rows (an aggregate outside a window)."""
    return any(
        isinstance(n, _AGGREGATES) and not n.find_ancestor(exp.Window)
        for projection in select.expressions
        for n in projection.walk()
    )


def is_single_row(select: exp.Select) -> bool:
    """An aggregate without GROUP BY: exactly one row."""
    return not select.args.get("group") and aggregates(select)


def _derived_rows(body: exp.Expr) -> int | None:
    if not isinstance(body, exp.Select):
        return None
    no_from = not body.args.get("from_") and not body.args.get("joins")
    return 1 if is_single_row(body) or no_from else None


def _derived_unique(body: exp.Expr) -> list[frozenset[str]] | None:
    """What a subquery's rows are unique on: its GROUP BY columns, its DISTINCT columns."""
    if not isinstance(body, exp.Select):
        return None
    if is_single_row(body):
        return [frozenset()]
    group = body.args.get("group")
    if isinstance(group, exp.Group) and group.expressions:
        names = []
        for key in group.expressions:
            name = _group_output(key, body.expressions)
            if name is None:
                return []  # grouped by something it does not output
            names.append(name)
        return [frozenset(names)]
    if body.args.get("distinct"):
        columns = _output_columns(body)
        return [columns] if columns is not None else []
    return None


def _group_output(key: exp.Expr, projections: list[exp.Expr]) -> str | None:
    """The output column (name, lower case) a GROUP BY key is: the same expression, its
    position (``GROUP BY 1``), its alias (``user_id AS uid ... GROUP BY uid``), or the same column
    qualified differently (``ev.product_id`` / ``product_id``)."""
    if isinstance(key, exp.Literal) and key.is_int:
        index = int(key.this) - 1
        return projections[index].alias_or_name.lower() if 0 <= index < len(projections) else None
    for projection in projections:
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if inner.sql().lower() == key.sql().lower():
            return projection.alias_or_name.lower()
    if not isinstance(key, exp.Column):
        return None
    name = key.name.lower()
    for projection in projections:
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Column) and inner.name.lower() == name:
            return projection.alias_or_name.lower()
    if not key.table:
        aliases = [p for p in projections if isinstance(p, exp.Alias)]
        if any(p.alias.lower() == name for p in aliases):
            return name
    return None


def owner_of(column: exp.Column, sources: list[Source]) -> Source | None:
    """The source ``column`` belongs to (None: cannot tell, or not one of ``sources``)."""
    qualifier = column.table.lower()
    if qualifier:
        return next((s for s in sources if s.alias == qualifier), None)
    name = column.name.lower()
    having = [s for s in sources if s.columns is not None and name in s.columns]
    if having:
        return having[0] if len(having) == 1 else None
    # Not a column of any known source: the one source of unknown columns, if there is one
    # (else it is an outer query's column, or a typo the warehouse will report).
    unknown = [s for s in sources if s.columns is None]
    return unknown[0] if len(unknown) == 1 else None


def owners_in(node: exp.Expr, sources: list[Source]) -> set[str] | None:
    """The aliases of the sources whose columns ``node`` reads (None: a column of unknown
    owner). Columns of subqueries inside ``node`` that are their own are not counted."""
    owners: set[str] = set()
    home = node if isinstance(node, exp.Select) else node.parent_select
    aliases = {s.alias for s in sources}
    for column in node.find_all(exp.Column):
        nested = column.find_ancestor(exp.Select) is not home
        if nested and (not column.table or column.table.lower() not in aliases):
            continue  # a nested query's own column: only qualified outer references count
        owner = owner_of(column, sources)
        if owner is None:
            return None
        owners.add(owner.alias)
    return owners


def equalities(
    condition: exp.Expr | None, sources: list[Source]
) -> Iterator[tuple[Source, str, Source, str]]:
    """Every ``a.x = b.y`` conjunct between two different sources, as (a, x, b, y)."""
    for part in conjuncts(condition if isinstance(condition, exp.Expression) else None):
        if not isinstance(part, exp.EQ):
            continue
        left, right = part.left, part.right
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
            continue
        a, b = owner_of(left, sources), owner_of(right, sources)
        if a is not None and b is not None and a.alias != b.alias:
            yield a, left.name.lower(), b, right.name.lower()
