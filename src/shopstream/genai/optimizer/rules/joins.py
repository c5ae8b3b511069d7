"""Rules on joins (see :mod:`shopstream.genai.optimizer.rules`): how a query combines what it
reads.

- ``cartesian_join``: two sources combined without a condition linking them;
- ``exploding_join``: a join on columns unique on neither side (rows multiply);
- ``repeated_scan``: the same CTE or subquery evaluated more than once;
- ``self_join_window``: a table joined to itself for a per-key aggregate or the previous row;
- ``distinct_over_fanout``: SELECT DISTINCT undoing a join that only filters;
- ``not_in_nullable``: NOT IN over a subquery whose column can be NULL.

>>> from shopstream.genai.optimizer.query import parse_query
>>> q = parse_query("select o.order_id from staging.stg_orders o cross join staging.stg_users u",
...                 "duckdb")
>>> [f.rule for f in cartesian_join(q, OptimizerSettings())]
['cartesian_join']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlglot import exp

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.findings import Finding
from shopstream.genai.optimizer.query import Query, table_references
from shopstream.genai.optimizer.rules import join_rewrites, join_self
from shopstream.genai.optimizer.rules.evidence import finding, rows_text
from shopstream.genai.optimizer.rules.join_sources import (
    TINY_ROWS,
    Source,
    ctes_in_scope,
    equalities,
    owners_in,
    sources_of,
)
from shopstream.genai.optimizer.rules.table_filters import conjuncts

if TYPE_CHECKING:
    from shopstream.genai.optimizer.rules import Rule


def _rows(source: Source) -> str:
    return f"{source.label} ({rows_text(source.rows)})" if source.rows is not None else source.label


def _joins(query: Query) -> Iterator[tuple[exp.Select, list[Source], int, exp.Join]]:
    """Every join of every SELECT: (select, its sources, index of the joined source, join)."""
    for select in query.tree.find_all(exp.Select):
        sources = sources_of(select, query)
        for join in select.args.get("joins") or []:
            right = next((i for i, s in enumerate(sources) if s.node is join.this), None)
            if right is not None:
                yield select, sources, right, join


# -- cartesian_join ---------------------------------------------------------------------------


def _method(join: exp.Join) -> str:
    """DuckDB's join method: NATURAL, POSITIONAL, ASOF (or "")."""
    return str(join.args.get("method") or "").upper()


def _has_condition(join: exp.Join) -> bool:
    on = join.args.get("on")
    if join.args.get("using") or _method(join) in ("NATURAL", "POSITIONAL"):
        return True  # the shared columns / the row positions link the two sides
    return on is not None and not (isinstance(on, exp.Boolean) and on.this is True)


def cartesian_join(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A join without a condition (CROSS JOIN, ON TRUE, a comma with no WHERE linking the two)
    between sources that are not tiny."""
    for select, sources, index, join in _joins(query):
        if _has_condition(join):
            continue
        right, left = sources[index], sources[:index]
        where = select.args.get("where")
        linked = False
        for part in conjuncts(where.this if isinstance(where, exp.Where) else None):
            owners = owners_in(part, sources)
            if owners is None or (right.alias in owners and len(owners) > 1):
                linked = True  # a condition on both (or one we cannot place): a real join
        if linked:
            continue
        known = [s.rows for s in left if s.rows is not None]
        left_rows = math.prod(known) if len(known) == len(left) else None
        if right.rows is not None and right.rows <= TINY_ROWS:
            continue
        if left_rows is not None and left_rows <= TINY_ROWS:
            continue
        sizes = " x ".join(_rows(s) for s in [*left, right])
        product = (
            f" = {left_rows * right.rows:,} rows"
            if left_rows is not None and right.rows is not None
            else ""
        )
        shared = _linking_columns(left[-1], right) if left else []
        hint = (
            f" (both have {', '.join(shared[:3])}: ON {left[-1].alias}.{shared[0]} = "
            f"{right.alias}.{shared[0]}?)"
            if shared and left
            else ""
        )
        yield finding(
            query,
            "cartesian_join",
            join,
            severity="high",
            title="Cartesian join",
            message=(
                f"{right.label} is joined without any condition linking it to "
                f"{', '.join(s.label for s in left)}: every row pairs with every row, "
                f"{sizes}{product} before any filter"
            ),
            fix=(
                f"join on the columns that link them{hint}; if every combination is really "
                "wanted, cross join a small, pre-aggregated or filtered side"
            ),
        )


def _linking_columns(left: Source, right: Source) -> list[str]:
    """Columns both sides have that could link them: keys first, then ``*_id`` columns;
    bookkeeping columns (``_cdc_*``) are no join candidates."""
    keys = {c for s in (left, right) for key in s.unique_keys or [] for c in key}
    shared = (left.columns or frozenset()) & (right.columns or frozenset())
    candidates = [c for c in shared if not c.startswith("_")]
    return sorted(candidates, key=lambda c: (c not in keys, not c.endswith("_id"), c))


# -- exploding_join ---------------------------------------------------------------------------


def _equal_columns(
    join: exp.Join, sources: list[Source], right: Source
) -> dict[str, tuple[Source, set[str], set[str]]]:
    """For each source before the joined one: (it, its columns, the joined one's columns) in
    ON ``left.x = right.y`` / USING."""
    columns: dict[str, tuple[Source, set[str], set[str]]] = {}
    for left, x, joined, y in _pairs(join, sources):
        if joined is right:
            entry = columns.setdefault(left.alias, (left, set(), set()))
            entry[1].add(x)
            entry[2].add(y)
    return columns


def _pairs(join: exp.Join, sources: list[Source]) -> list[tuple[Source, str, Source, str]]:
    """The ON / USING equalities as (earlier source, column, joined source, column)."""
    right = next(s for s in sources if s.node is join.this)
    earlier = sources[: sources.index(right)]
    ordered = []
    condition = join.args.get("on")
    if not _has_condition(join) and isinstance(join.parent, exp.Select):
        # A comma join: its condition is in the WHERE.
        where = join.parent.args.get("where")
        condition = where.this if isinstance(where, exp.Where) else None
    for a, x, b, y in equalities(condition, sources):
        if a is right and b in earlier:
            ordered.append((b, y, a, x))
        elif b is right and a in earlier:
            ordered.append((a, x, b, y))
    for name in (i.name.lower() for i in join.args.get("using") or []):
        owner = next((s for s in earlier if s.columns and name in s.columns), None)
        if owner is not None:
            ordered.append((owner, name, right, name))
    return ordered


def _keys(source: Source) -> str:
    if source.unique_keys:
        return " or ".join("(" + ", ".join(sorted(k)) + ")" for k in source.unique_keys)
    return "no known key"


def exploding_join(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A join whose columns are unique on neither side: every match on the left pairs with
    every match on the right, so rows (and sums over them) multiply."""
    for select, sources, index, join in _joins(query):
        right = sources[index]
        if join_self.self_join_shape(select, sources, join) is not None:
            continue  # self_join_window's business
        if _method(join) == "ASOF":
            continue  # each left row takes at most one match: nothing multiplies
        for left, left_columns, right_columns in _equal_columns(join, sources, right).values():
            if left.unique_on(left_columns) is not False:
                continue
            if right.unique_on(right_columns) is not False:
                continue
            on = ", ".join(sorted(left_columns))
            pairs = (
                " and ".join(
                    f"{left.alias}.{x} = {right.alias}.{y}"
                    for a, x, _joined, y in _pairs(join, sources)
                    if a is left
                )
                or f"({on})"
            )
            yield finding(
                query,
                "exploding_join",
                join,
                severity="high",
                title="Join on columns unique on neither side",
                message=(
                    f"{_rows(left)} and {_rows(right)} are joined on {pairs}, "
                    f"unique on neither side ({left.label}: {_keys(left)}; {right.label}: "
                    f"{_keys(right)}): each matching row on one side pairs with each on the "
                    "other, so rows multiply and sums count the same values several times"
                ),
                fix=(
                    f"make one side unique on ({on}) before joining: aggregate it in a subquery "
                    f"GROUP BY {on}, or keep one row per key (QUALIFY ROW_NUMBER() OVER "
                    f"(PARTITION BY {on} ORDER BY ...) = 1), or join on the side's full key"
                ),
            )


# -- repeated_scan ----------------------------------------------------------------------------


def _reads(node: exp.Expression, query: Query) -> list[str]:
    names = []
    for table in table_references(node, query.tree):
        info = query.table_info(table)
        names.append(info.name if info else table.sql())
    return sorted(set(names))


def repeated_scan(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """The same CTE referenced more than once, the same subquery written twice, or several
    scalar subqueries aggregating the same table: each is a separate scan."""
    yield from _repeated_ctes(query)
    scalar = list(_repeated_scalar_aggregates(query))
    # Copies of one scalar subquery among them are that finding's business (it has the
    # rewrite): not reported a second time as "the same subquery twice".
    combined = {
        id(s)
        for select in query.tree.find_all(exp.Select)
        for group in join_rewrites.scalar_aggregates(select, query).values()
        if len(group) > 1
        for s in group
    }
    yield from _repeated_subqueries(query, combined)
    yield from scalar
    yield from _repeated_union_branches(query)


def _repeated_ctes(query: Query) -> Iterator[Finding]:
    for with_ in query.tree.find_all(exp.With):
        if with_.args.get("recursive"):
            continue
        scope = with_.parent
        if scope is None:
            continue
        for cte in with_.expressions:
            name = cte.alias_or_name.lower()
            references = [
                t
                for t in scope.find_all(exp.Table)
                if not t.db
                and t.name.lower() == name
                and ctes_in_scope(t).get(name) is cte
                and t.find_ancestor(exp.CTE) is not cte
            ]
            reads = _reads(cte.this, query)
            if len(references) < 2 or not reads:
                continue
            yield finding(
                query,
                "repeated_scan",
                references[1],
                severity="medium",
                title="CTE evaluated at every reference",
                message=(
                    f"CTE {cte.alias_or_name} is referenced {len(references)} times; BigQuery "
                    "runs a WITH clause again at every reference (it does not materialize it), "
                    f"so {', '.join(reads)} is scanned {len(references)} times"
                ),
                fix=(
                    "read the data once: compute the variants in one pass with conditional "
                    "aggregation (COUNTIF(...), SUM(IF(..., x, 0))) or window functions; if the "
                    "result really is reused, materialize it once (a temporary table; in DuckDB "
                    f"`{cte.alias_or_name} AS MATERIALIZED (...)`)"
                ),
            )


def _repeated_subqueries(query: Query, reported: set[int]) -> Iterator[Finding]:
    seen: Counter[str] = Counter()
    for subquery in query.tree.find_all(exp.Subquery):
        if not isinstance(subquery.this, exp.Query) or not _reads(subquery, query):
            continue
        if id(subquery) in reported:
            continue
        text = subquery.this.sql(normalize=True, dialect=query.dialect)
        seen[text] += 1
        if seen[text] == 2:
            yield finding(
                query,
                "repeated_scan",
                subquery,
                severity="medium",
                title="The same subquery twice",
                message=(
                    f"this subquery appears more than once; each copy scans "
                    f"{', '.join(_reads(subquery, query))} again"
                ),
                fix="compute it once (a CTE read once, or a join to one copy of it)",
            )


def _repeated_scalar_aggregates(query: Query) -> Iterator[Finding]:
    for select in query.tree.find_all(exp.Select):
        for table, subqueries in join_rewrites.scalar_aggregates(select, query).items():
            if len(subqueries) < 2:
                continue
            yield finding(
                query,
                "repeated_scan",
                subqueries[1],
                severity="medium",
                title="One scan per aggregate",
                message=(
                    f"{len(subqueries)} scalar subqueries each aggregate {table}: it is scanned "
                    f"{len(subqueries)} times, once per number"
                ),
                fix=(
                    f"aggregate {table} once and compute each number with a condition inside "
                    "the aggregate: SUM(CASE WHEN <filter> THEN x END), COUNT(CASE WHEN "
                    "<filter> THEN 1 END) (BigQuery: COUNTIF(<filter>))"
                ),
                rewrite=join_rewrites.conditional_aggregation(query, select),
            )


def _branches(union: exp.SetOperation) -> Iterator[exp.Expr]:
    for side in (union.left, union.right):
        if isinstance(side, exp.SetOperation):
            yield from _branches(side)
        else:
            yield side


def _repeated_union_branches(query: Query) -> Iterator[Finding]:
    """UNION branches that each read the same table alone: one scan per branch."""
    for union in query.tree.find_all(exp.SetOperation):
        if isinstance(union.parent, exp.SetOperation):
            continue  # counted from the top of the chain
        by_table: dict[str, list[exp.Select]] = {}
        for branch in _branches(union):
            if not isinstance(branch, exp.Select) or branch.args.get("joins"):
                continue
            sources = sources_of(branch, query)
            if len(sources) == 1 and sources[0].table_name:
                by_table.setdefault(sources[0].table_name, []).append(branch)
        for table, branches in sorted(by_table.items()):
            if len(branches) < 2:
                continue
            yield finding(
                query,
                "repeated_scan",
                branches[1],
                severity="medium",
                title="One scan per UNION branch",
                message=(
                    f"{len(branches)} branches of this UNION each read {table}: it is scanned "
                    f"{len(branches)} times, once per branch"
                ),
                fix=(
                    f"read {table} once: GROUP BY the column the branches differ on, or "
                    "compute each branch's numbers with conditional aggregation "
                    "(SUM(CASE WHEN <branch filter> THEN x END)) and unpivot if rows are needed"
                ),
            )


# -- self_join_window -------------------------------------------------------------------------


def self_join_window(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A table joined to itself on its key to get a per-key aggregate (-> aggregate OVER
    (PARTITION BY key)) or the previous/next row (-> LAG/LEAD)."""
    for select, sources, _index, join in _joins(query):
        shape = join_self.self_join_shape(select, sources, join)
        if shape is None:
            continue
        keys = ", ".join(shape.keys)
        if shape.kind == "aggregate":
            yield finding(
                query,
                "self_join_window",
                join,
                severity="medium",
                title="Self-join for a per-key aggregate",
                message=(
                    f"{shape.table} is aggregated per ({keys}) in a subquery and joined back "
                    f"to itself: it is scanned twice and joined, where one scan with a window "
                    f"function gives the same numbers"
                ),
                fix=(
                    f"compute the aggregate as a window over one scan: "
                    f"{shape.example} OVER (PARTITION BY {keys})"
                ),
                rewrite=join_self.window_instead_of_self_join(query, select, shape),
            )
        else:
            yield finding(
                query,
                "self_join_window",
                join,
                severity="medium",
                title="Self-join for a neighbouring row",
                message=(
                    f"{shape.table} is joined to itself on ({keys}) and {shape.example}: a "
                    "second scan and a join to reach the row before or after"
                ),
                fix=(
                    f"read the neighbour with LAG(...) / LEAD(...) OVER (PARTITION BY {keys} "
                    f"ORDER BY <the ordering column>) in one scan (check that the join picks "
                    "exactly the adjacent row: LAG takes the previous row whatever its value)"
                ),
            )


# -- distinct_over_fanout ---------------------------------------------------------------------


def distinct_over_fanout(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """SELECT DISTINCT over a join whose other side's columns are not selected: the join only
    filters, DISTINCT undoes the duplicates it makes -> EXISTS (a semi join)."""
    for select in query.tree.find_all(exp.Select):
        if not select.args.get("distinct") or not select.args.get("joins"):
            continue
        sources = sources_of(select, query)
        if len(sources) < 2:
            continue
        placed = [owners_in(projection, sources) for projection in select.expressions]
        selected = set().union(*(p for p in placed if p is not None))
        if None in placed or len(selected) != 1:
            continue
        kept = next(s for s in sources if s.alias in selected)
        others = [s for s in sources if s is not kept]
        joins = select.args.get("joins") or []
        if len(others) == 1 and _unique_on_join(joins[0], sources, kept, others[0]):
            continue  # the join cannot repeat a row: nothing for DISTINCT to undo
        yield finding(
            query,
            "distinct_over_fanout",
            joins[0],
            severity="medium",
            title="DISTINCT over a join used as a filter",
            message=(
                f"only columns of {kept.label} are selected; the join to "
                f"{', '.join(s.label for s in others)} repeats each of its rows once per "
                "match and DISTINCT then removes the repeats: the join does work only to be "
                "undone"
            ),
            fix=(
                f"keep the rows of {kept.label} that have a match with WHERE EXISTS (SELECT 1 "
                f"FROM {others[0].label} WHERE <the join condition>), a semi join that stops at "
                "the first match"
            ),
            rewrite=join_rewrites.semi_join(query, select, sources, kept),
        )


def _unique_on_join(join: exp.Join, sources: list[Source], kept: Source, other: Source) -> bool:
    right = sources[-1]
    for left, left_columns, right_columns in _equal_columns(join, sources, right).values():
        columns = left_columns if left is other else right_columns
        if other.unique_on(columns):
            return True
    return False


# -- not_in_nullable --------------------------------------------------------------------------


def not_in_nullable(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """``x NOT IN (SELECT col ...)`` where col can be NULL: one NULL and no row qualifies."""
    for negation in query.tree.find_all(exp.Not):
        test = negation.this.unnest() if negation.this else None
        if not isinstance(test, exp.In) or not isinstance(test.args.get("query"), exp.Subquery):
            continue
        inner = test.args["query"].this
        if not isinstance(inner, exp.Select) or len(inner.expressions) != 1:
            continue
        column = inner.expressions[0]
        column = column.this if isinstance(column, exp.Alias) else column
        if not isinstance(column, exp.Column):
            continue
        where = inner.args.get("where")
        guarded = any(
            isinstance(p, exp.Not)
            and isinstance(p.this, exp.Is)
            and p.this.this.sql().lower() == column.sql().lower()
            for p in conjuncts(where.this if isinstance(where, exp.Where) else None)
        )
        sources = sources_of(inner, query)
        owner = next(
            (s for s in sources if (column.table and s.alias == column.table.lower())),
            sources[0] if len(sources) == 1 else None,
        )
        described = owner.info.column(column.name) if owner and owner.info else None
        if guarded or owner is None or described is None or not described.nullable:
            continue  # cannot NULL, or the catalog does not say (a table it does not know)
        yield finding(
            query,
            "not_in_nullable",
            negation,
            severity="high",
            title="NOT IN over a column that can be NULL",
            message=(
                f"{owner.label}.{column.name} can be NULL: if any row of the subquery gives NULL, "
                f"{test.this.sql(dialect=query.dialect)} NOT IN (...) is never true (x NOT IN "
                "(1, NULL) is NULL, not TRUE) and the query silently returns no rows at all"
            ),
            fix=(
                "write NOT EXISTS (SELECT 1 FROM ... WHERE <inner column> = <outer column>), "
                "which is TRUE when nothing matches whatever the NULLs; or add WHERE "
                f"{column.sql(dialect=query.dialect)} IS NOT NULL inside the subquery"
            ),
            tradeoff=(
                "NOT EXISTS differs from NOT IN exactly where NULLs are: it keeps rows when "
                "the subquery has NULLs (that is the fix), and it keeps outer rows whose own "
                "value is NULL, which NOT IN drops"
            ),
            rewrite=join_rewrites.not_exists(query, negation, test, owner, column),
        )


RULES: dict[str, Rule] = {
    "cartesian_join": cartesian_join,
    "exploding_join": exploding_join,
    "repeated_scan": repeated_scan,
    "self_join_window": self_join_window,
    "distinct_over_fanout": distinct_over_fanout,
    "not_in_nullable": not_in_nullable,
}
