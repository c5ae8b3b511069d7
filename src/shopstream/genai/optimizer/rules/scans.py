"""Rules on scans (see :mod:`shopstream.genai.optimizer.rules`): what a query reads and what
BigQuery bills for it: the columns (SELECT *), the partitions (filters on the partition column),
the storage blocks (cluster columns), the shards (wildcard tables), and the work that does not
shrink the bill (ORDER BY without LIMIT, LIMIT, exact COUNT(DISTINCT)).

>>> from shopstream.config import OptimizerSettings
>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> from shopstream.genai.optimizer.query import parse_query
>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"), Column("event_date", "DATE")),
...                    partition_by="event_date")
>>> q = parse_query("select event_id from raw.events where year(event_date) = 2026", "duckdb",
...                 Catalog({"raw.events": events}))
>>> [finding] = partition_filter_not_prunable(q, OptimizerSettings())
>>> finding.evidence
'YEAR(event_date)'
>>> print(finding.rewrite)
SELECT
  event_id
FROM raw.events
WHERE
  event_date >= CAST('2026-01-01' AS DATE)
  AND event_date < CAST('2027-01-01' AS DATE)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.catalog import TableInfo
from shopstream.genai.optimizer.findings import Finding, Severity
from shopstream.genai.optimizer.query import Query
from shopstream.genai.optimizer.rules.columns import needed_columns, resolves
from shopstream.genai.optimizer.rules.evidence import finding, rows_text
from shopstream.genai.optimizer.rules.join_sources import aggregates
from shopstream.genai.optimizer.rules.partition_filters import Pruning, classify
from shopstream.genai.optimizer.rules.table_filters import (
    TableRead,
    conjuncts,
    distinct_on,
    local_columns,
    query_scopes,
    tables_read,
)
from shopstream.genai.optimizer.rules.tree_edits import counterpart, replaced

if TYPE_CHECKING:
    from shopstream.genai.optimizer.rules import Rule

#: Aggregates whose result depends on the order rows arrive in: an ORDER BY in the subquery
#: feeding them may matter, so it is not dropped mechanically.
_ORDER_SENSITIVE = (exp.ArrayAgg, exp.GroupConcat, exp.First, exp.Last, exp.AnyValue)
#: Window functions whose value depends on the order of the rows they number or step through.
_ORDER_WINDOWS = (
    exp.RowNumber,
    exp.Rank,
    exp.DenseRank,
    exp.Lead,
    exp.Lag,
    exp.FirstValue,
    exp.LastValue,
    exp.NthValue,
    exp.Ntile,
)


def _rewrite(query: Query, tree: exp.Expression) -> str:
    return tree.sql(dialect=query.dialect, pretty=True)


def _described(info: TableInfo) -> str:
    """``raw.events (12,000 rows)``: a table as messages name it."""
    return f"{info.name} ({rows_text(info.rows)})"


def _is_output(query: Query, select: exp.Expression) -> bool:
    """Whether ``select``'s rows are the query's result (the query, or a branch of its UNION)."""
    node = select
    while isinstance(node.parent, exp.SetOperation) or (
        isinstance(node.parent, exp.Subquery) and isinstance(node.parent.parent, exp.SetOperation)
    ):
        node = node.parent
    return node is query.tree


def _aggregated(select: exp.Select) -> bool:
    """A summary of its rows: grouped, distinct, or aggregating."""
    return bool(select.args.get("group") or select.args.get("distinct")) or aggregates(select)


def _row_level(scope: Scope) -> bool:
    """Whether the SELECT of ``scope`` returns rows of the tables (not a summary of them):
    it is not aggregated, and some table, CTE or subquery it reads returns rows too."""
    select = scope.expression
    if not isinstance(select, exp.Select):
        return True  # a set operation: as large as its branches, assume rows
    if _aggregated(select):
        return False
    return any(
        not isinstance(source, Scope) or _row_level(source)
        for _node, source in scope.selected_sources.values()
    )


def _scopes_by_select(query: Query) -> dict[int, Scope]:
    return {id(s.expression): s for s in query_scopes(query)}


def _table_sources(query: Query, select: exp.Select) -> list[tuple[exp.Table, TableInfo]]:
    """The catalog tables in ``select``'s FROM and JOINs (CTE names and unknown tables left out)."""
    real = {id(t) for t in query.tables}
    found = []
    for source in [select.args.get("from_"), *(select.args.get("joins") or [])]:
        table = source.this if source is not None else None
        if isinstance(table, exp.Table) and id(table) in real:
            info = query.table_info(table)
            if info is not None:
                found.append((table, info))
    return found


# -- SELECT * ------------------------------------------------------------------------------


def _star_columns(star: exp.Expression, info: TableInfo) -> list[str]:
    """The table's columns a ``*`` (or ``t.*``, ``* EXCEPT (...)``) projects."""
    target = star.this if isinstance(star, exp.Column) else star
    excluded = {e.name.lower() for e in target.args.get("except") or []}
    return [c.name for c in info.columns if c.name.lower() not in excluded]


@dataclass(frozen=True)
class _Star:
    """A ``*`` over a wide catalog table."""

    node: exp.Expression
    #: ``SELECT * FROM raw.events``: the star with the table it expands.
    evidence: str
    info: TableInfo
    #: The table's columns it projects.
    columns: list[str]


def select_star(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """``SELECT *`` over a wide table: at the top it returns (and bills) every column; in a CTE
    or subquery it reads columns the query never uses, and then the rewrite names the used ones."""
    needed: dict[int, list[str]] | None = None
    for select in query.tree.find_all(exp.Select):
        if _in_exists(select):
            continue  # EXISTS (SELECT * ...) reads no column for its answer
        sources = _table_sources(query, select)
        for node in select.expressions:
            if isinstance(node, exp.Column) and isinstance(node.this, exp.Star):
                starred = [
                    (t, i) for t, i in sources if t.alias_or_name.lower() == node.table.lower()
                ]
            elif isinstance(node, exp.Star):
                starred = sources
            else:
                continue
            wide = [
                (t, i)
                for t, i in starred
                if len(_star_columns(node, i)) >= settings.wide_table_columns
            ]
            if not wide:
                continue
            table, info = wide[0]
            evidence = query.sql_of(exp.select(node.copy()).from_(table.copy()))
            star = _Star(node, evidence, info, _star_columns(node, info))
            if _is_output(query, select):
                yield _star_advice(
                    query, star, reads="returns", fix="name the columns you need instead of *"
                )
                continue
            if needed is None:
                needed = needed_columns(query)
            yield _inner_star(query, select, star, needed.get(id(select)), len(sources))


def _in_exists(select: exp.Select) -> bool:
    parent = select.parent
    return isinstance(parent, exp.Exists) or (
        isinstance(parent, exp.Subquery) and isinstance(parent.parent, exp.Exists)
    )


def _star_advice(query: Query, star: _Star, *, reads: str, fix: str) -> Finding:
    """A SELECT * finding with no rewrite: the columns it should name are listed."""
    return finding(
        query,
        "select_star",
        star.node,
        evidence=star.evidence,
        severity="medium",
        title="SELECT * on a wide table",
        message=f"`{star.evidence}` {reads} all {len(star.columns)} columns of "
        f"{_described(star.info)}; BigQuery bills every column a query reads, so "
        "each column nobody looks at costs as much as the ones they do",
        fix=f"{fix}; {star.info.name} has: {', '.join(star.columns)}",
    )


def _pruning_blocker(select: exp.Select) -> str | None:
    """What makes every column of ``select`` count for its rows, so BigQuery reads them all
    though nothing uses them: its DISTINCT, or a UNION (DISTINCT) / EXCEPT / INTERSECT it is a
    branch of (each compares whole rows)."""
    if select.args.get("distinct"):
        return "DISTINCT"
    node: exp.Expression = select
    while isinstance(node.parent, (exp.SetOperation, exp.Subquery)):
        node = node.parent
        if isinstance(node, exp.Except):
            return "EXCEPT"
        if isinstance(node, exp.Intersect):
            return "INTERSECT"
        if isinstance(node, exp.Union) and node.args.get("distinct"):
            return "UNION"
    return None


def _inner_star(
    query: Query, select: exp.Select, star: _Star, needed: list[str] | None, source_count: int
) -> Finding:
    blocker = _pruning_blocker(select)
    if blocker is not None:
        return finding(
            query,
            "select_star",
            star.node,
            evidence=star.evidence,
            severity="high",
            title="SELECT * whose every column is read",
            message=f"`{star.evidence}` feeds a {blocker}, which compares whole rows: all "
            f"{len(star.columns)} columns of {_described(star.info)} are read "
            "and billed, even those the rest of the query never uses",
            fix=f"name only the columns the result needs before the {blocker} (this can "
            f"change which rows are {blocker.lower()}-compared equal, so check the result); "
            f"{star.info.name} has: {', '.join(star.columns)}",
        )
    if needed is None:
        return _star_advice(
            query,
            star,
            reads="reads (for a CTE or subquery whose use could not be resolved)",
            fix="select only the columns the rest of the query uses",
        )
    used = [c for c in star.columns if c.lower() in needed]
    if len(used) == len(star.columns):
        return _star_advice(
            query,
            star,
            reads="passes through to the result",
            fix="name the columns the result needs, here and in the outer SELECT",
        )
    node = star.node
    others = [p for p in select.expressions if p is not node]
    rewrite = None
    if (
        source_count == 1
        and not node.args.get("replace")
        and not (isinstance(node, exp.Column) and node.this.args.get("replace"))
    ):
        copy = query.tree.copy()
        target = counterpart(copy, select)
        assert isinstance(target, exp.Select)
        position = select.expressions.index(node)
        projections = [p.copy() for p in target.expressions]
        listed: list[exp.Expression] = [exp.column(c) for c in used]
        if not used and not others:
            listed = [exp.Literal.number(1)]  # the rows are needed (counted), no column is
        projections[position : position + 1] = listed
        target.set("expressions", projections)
        rewrite = _rewrite(query, copy) if resolves(copy, query) else None
    return finding(
        query,
        "select_star",
        node,
        evidence=star.evidence,
        severity="low",
        title="SELECT * in a CTE or subquery",
        message=f"`{star.evidence}` hands on all {len(star.columns)} columns of "
        f"{star.info.name}, but the rest of the query uses "
        + (f"only {len(used)}: {', '.join(used)}" if used else "none of them")
        + ". BigQuery prunes the unused columns through CTEs and subqueries, so the scan cost "
        "is unchanged (pruning stops only at a DISTINCT, a UNION DISTINCT, EXCEPT or INTERSECT, "
        "or where the star reaches the result); naming the columns says what the query "
        "depends on, and a column added to the table later cannot change it",
        fix=f"select only {', '.join(used)} there"
        if used
        else "select no columns of it there (`SELECT 1 FROM ...` when only its rows are counted)",
        rewrite=rewrite,
    )


# -- partitions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartitionVerdict:
    read: TableRead
    #: Every path prunes the table.
    pruned: bool
    #: The non-prunable filter on a path without a prunable one (None: a path has no filter).
    blocking: Pruning | None


def _partition_verdict(read: TableRead) -> _PartitionVerdict | None:
    column = read.info.partition_by
    if column is None:
        return None
    found = read.info.column(column)
    column_type = found.type if found else "DATE"
    blocking = None
    for path in read.paths:
        results = [p for f in path if (p := classify(f.predicate, f.picks(column), column_type))]
        if any(r.prunable for r in results):
            continue
        if not results:
            return _PartitionVerdict(read, False, None)
        blocking = blocking or results[0]
    return _PartitionVerdict(read, blocking is None, blocking)


def _verdicts(query: Query) -> list[_PartitionVerdict]:
    return [v for read in tables_read(query) if (v := _partition_verdict(read))]


def _filter_example(query: Query, column: str, column_type: str) -> str:
    timestamp = "TIMESTAMP" in column_type.upper()
    if query.dialect == "bigquery":
        now = (
            "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)"
            if timestamp
            else ("DATE_SUB(CURRENT_DATE(), INTERVAL 7 DAY)")
        )
    else:
        now = "current_timestamp - INTERVAL 7 DAY" if timestamp else "current_date - INTERVAL 7 DAY"
    return f"WHERE {column} >= {now}"


def _layer_severity(info: TableInfo) -> Severity:
    # raw and staging grow with every event and change; marts are small aggregates.
    return "high" if info.name.split(".", 1)[0] in ("raw", "staging") else "medium"


def partition_filter_missing(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A partitioned table read with no filter on its partition column: every day is read."""
    for verdict in _verdicts(query):
        if verdict.pruned or verdict.blocking is not None:
            continue
        info = verdict.read.info
        column = info.partition_by or ""
        found = info.column(column)
        example = _filter_example(query, column, found.type if found else "DATE")
        yield finding(
            query,
            "partition_filter_missing",
            verdict.read.table,
            severity=_layer_severity(info),
            title="No filter on the partition column",
            message=f"{_described(info)} is partitioned by day on {column}, and no "
            f"filter on {column} reaches this read of it, so BigQuery reads every partition "
            "(the whole history)",
            fix=f"filter {column} with constants to the days you need, e.g. `{example}`; "
            "only those partitions are then read and billed",
        )


def partition_filter_not_prunable(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A filter on the partition column that BigQuery cannot prune with (a function or cast
    around the column, a subquery, an OR with a branch that does not filter it)."""
    for verdict in _verdicts(query):
        pruning = verdict.blocking
        if verdict.pruned or pruning is None:
            continue
        info = verdict.read.info
        column = info.partition_by or ""
        if pruning.replacement is not None:
            fix = f"filter the bare column instead: `{query.sql_of(pruning.replacement)}`"
        elif isinstance(pruning.culprit, exp.Or):
            fix = (
                f"give every branch of the OR a constant filter on {column}, or AND one filter "
                f"on {column} covering all branches with the OR (e.g. `{column} BETWEEN <first "
                "day> AND <last day> AND (...)`)"
            )
        elif isinstance(pruning.culprit, (exp.Query, exp.Subquery)) or pruning.culprit.find(
            exp.Query
        ):
            fix = (
                "compute the value first and pass it as a constant: a query parameter, or "
                "(BigQuery scripting) `DECLARE day DATE DEFAULT (SELECT ...);` then "
                f"`{column} = day`"
            )
        else:
            fix = (
                f"compare the bare column {column} with constants, e.g. `{column} BETWEEN "
                "<first day> AND <last day>` instead of a function of it"
            )
        rewrite = None
        if pruning.replacement is not None:
            rewrite = _rewrite(query, replaced(query.tree, pruning.predicate, pruning.replacement))
        yield finding(
            query,
            "partition_filter_not_prunable",
            pruning.culprit,
            severity="high",
            title="Filter on the partition column does not prune",
            message=f"{_described(info)} is partitioned by day on {column}; the filter "
            f"`{query.sql_of(pruning.predicate)}` does not limit the partitions read because "
            f"{pruning.reason}: every partition is read, then filtered",
            fix=fix,
            rewrite=rewrite,
        )


# -- clustering -----------------------------------------------------------------------------


def cluster_unused(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A clustered table filtered on other columns but on none of its cluster columns."""
    for read in tables_read(query):
        info = read.info
        # Clustered by its own key (the CDC staging tables): only lookups by key benefit, and
        # a query that wants rows by another column has no key values to add.
        if not info.cluster_by or {c.lower() for c in info.cluster_by} == {
            c.lower() for c in info.unique_key
        }:
            continue
        cluster = [c.lower() for c in info.cluster_by]
        partition = (info.partition_by or "").lower()
        single_table = [
            f
            for path in read.paths
            for f in path
            if len(list(local_columns(f.predicate))) == len(f.columns)
            # An IN / NOT IN (subquery) is a semi or anti join, not a filter by constants:
            # there are no cluster values to add to it.
            and not f.predicate.find(exp.Query)
        ]
        filtered = {c for f in single_table for c in f.columns.values()}
        others = sorted(filtered - set(cluster) - {partition})
        if not others or filtered & set(cluster):
            continue
        evidence = next(f for f in single_table if set(f.columns.values()) & set(others))
        first = info.cluster_by[0]
        yield finding(
            query,
            "cluster_unused",
            evidence.predicate,
            severity="low",
            title="Cluster columns not filtered",
            message=f"{info.name} is clustered by {', '.join(info.cluster_by)}: BigQuery stores "
            "each partition's rows sorted by them in blocks and skips the blocks a filter on "
            f"them rules out. This query filters {', '.join(others)} but no cluster column, so "
            "it reads every block of the partitions it keeps",
            fix=f"if you know which {first} values you need, filter them too (`{first} IN (...)`)"
            f" and only their blocks are read; if lookups by {others[0]} are the usual case, "
            f"cluster {info.name} by {others[0]} instead",
        )


# -- ORDER BY and LIMIT ---------------------------------------------------------------------


def order_by_without_limit(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """ORDER BY with no LIMIT: in a CTE or subquery it orders nothing anyone can see (dropped
    by the rewrite); at the top of a row-level query it sorts the whole result on one worker."""
    scopes = _scopes_by_select(query)
    for select in query.tree.find_all(exp.Select):
        order = select.args.get("order")
        if order is None or select.args.get("limit") or select.args.get("offset"):
            continue
        if _is_output(query, select):
            scope = scopes.get(id(select))
            if scope is not None and not _row_level(scope):
                continue  # a sorted summary is small; sorting it is what the reader wants
            yield finding(
                query,
                "order_by_without_limit",
                order,
                severity="low",
                title="ORDER BY on every row of the result",
                message=f"`{query.sql_of(order)}` sorts every row the query returns; BigQuery "
                "does the final sort on a single worker, which is slow and can fail with "
                "'Resources exceeded' on a large result",
                fix="add a LIMIT if only the first rows are read, or drop the ORDER BY and sort "
                "where the rows are consumed",
            )
            continue
        reliance = _order_relied_on(query, select)
        if reliance is None:
            yield finding(
                query,
                "order_by_without_limit",
                order,
                severity="medium",
                title="ORDER BY inside a CTE or subquery",
                message=f"`{query.sql_of(order)}` sorts rows that a CTE or subquery hands on; "
                "SQL keeps no order across that boundary, so the sort is work with no effect",
                fix="drop the ORDER BY there (sort in the outer query if the result must be "
                "ordered)",
                rewrite=_rewrite(query, replaced(query.tree, order, None)),
            )
            continue
        needed_here = reliance == "distinct on"
        yield finding(
            query,
            "order_by_without_limit",
            order,
            severity="low" if needed_here else "medium",
            title="ORDER BY inside a CTE or subquery, relied on",
            message=f"`{query.sql_of(order)}` sorts rows inside a CTE or subquery; "
            + (
                "DISTINCT ON in the same SELECT keeps the first row of each key in this order, "
                "so the sort is needed (it is the one sort of the whole input there is)"
                if needed_here
                else f"{_RELIANCE[reliance]}, which SQL does not promise to keep across the "
                "subquery's boundary: the result depends on an order the engine may drop"
            ),
            fix="keep it: without it DISTINCT ON keeps an arbitrary row per key"
            if needed_here
            else "state the order where it is used (the window's or aggregate's own ORDER BY, "
            "e.g. `STRING_AGG(x ORDER BY y)`, or an ORDER BY next to the LIMIT), then drop "
            "this one",
        )


#: What downstream reads rows in the order a subquery's ORDER BY gives them (by
#: :func:`_order_relied_on`'s answer).
_RELIANCE = {
    "array": "ARRAY(SELECT ...) keeps its rows in the order they come",
    "first rows": "a LIMIT, OFFSET or QUALIFY outside takes rows in the order they arrive",
    "aggregate": "an aggregate outside (STRING_AGG, ARRAY_AGG, FIRST, ...) reads rows in the "
    "order they arrive",
    "window": "a window function outside numbers or steps through rows in the order they arrive",
}


def _order_relied_on(query: Query, select: exp.Select) -> str | None:
    """What may depend on the row order ``select``'s ORDER BY gives (None: nothing can, the
    ORDER BY is safe to drop): its own DISTINCT ON; an ARRAY(SELECT ...) around it; or, anywhere
    outside it, a LIMIT/OFFSET/QUALIFY taking the first rows, an order-sensitive aggregate, a
    window function that numbers or steps through rows, or a window without an ORDER BY."""
    if distinct_on(select):
        return "distinct on"
    if select.find_ancestor(exp.Array, exp.ArrayAgg):
        return "array"
    for node in query.tree.walk(prune=lambda n: n is select):
        if node is select:
            continue
        if isinstance(node, exp.Select) and any(
            node.args.get(k) for k in ("limit", "offset", "qualify", "fetch")
        ):
            return "first rows"
        if isinstance(node, _ORDER_SENSITIVE):
            return "aggregate"
        if isinstance(node, exp.Window) and (
            not node.args.get("order") or node.find(*_ORDER_WINDOWS)
        ):
            return "window"
    return None


def _within(node: exp.Expression, ancestor: exp.Expression) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent  # type: ignore[assignment]
    return False


def limit_without_pruning(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A LIMIT on a row-level query that still reads whole tables: BigQuery bills the bytes
    scanned, not the rows returned."""
    verdicts = _verdicts(query)
    for select in query.tree.find_all(exp.Select):
        limit = select.args.get("limit")
        if limit is None or _aggregated(select):
            continue
        whole = [v.read.info for v in verdicts if not v.pruned and _within(v.read.table, select)]
        if not select.args.get("order"):
            # A preview of an unpartitioned table: there is no partition to prune, the whole
            # table is read for the first rows.
            whole += [
                info for _, info in _table_sources(query, select) if info.partition_by is None
            ]
        if not whole:
            continue
        names = ", ".join(dict.fromkeys(_described(i) for i in whole))
        partitioned = next((i for i in whole if i.partition_by), None)
        yield finding(
            query,
            "limit_without_pruning",
            limit,
            severity="medium",
            title="LIMIT does not cut the bytes scanned",
            message=f"`{query.sql_of(limit)}` stops the output, not the scan: BigQuery still "
            f"reads and bills the columns used from all of {names}",
            fix=(
                f"filter {partitioned.name}'s partition column {partitioned.partition_by} to the "
                "days you need; "
                if partitioned
                else ""
            )
            + "to look at a few rows use the table preview (free) or `TABLESAMPLE SYSTEM "
            "(1 PERCENT)`, which reads a fraction of the storage blocks",
        )


# -- wildcard tables ------------------------------------------------------------------------


def wildcard_without_table_suffix(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """A BigQuery wildcard table (``dataset.events_*``) read without a constant filter on
    ``_TABLE_SUFFIX``: every table matching the prefix is read."""
    for table in query.tree.find_all(exp.Table):
        if not table.name.endswith("*"):
            continue
        select = table.find_ancestor(exp.Select)
        where = select.args.get("where") if select else None
        results = [
            p
            for condition in conjuncts(where.this if where else None)
            if (p := classify(condition, lambda c: c.name.upper() == "_TABLE_SUFFIX", "STRING"))
        ]
        if any(r.prunable for r in results):
            continue
        why = (
            f" (the filter `{query.sql_of(results[0].predicate)}` does not limit them: "
            f"{results[0].reason})"
            if results
            else ""
        )
        prefix = table.name[:-1]
        yield finding(
            query,
            "wildcard_without_table_suffix",
            table,
            severity="high",
            title="Wildcard table without a _TABLE_SUFFIX filter",
            message=f"{query.sql_of(table)} reads every table whose name starts with "
            f"{prefix!r}{why}: all the shards, the whole history",
            fix="filter the shards with constants, e.g. `WHERE _TABLE_SUFFIX BETWEEN '20261101' "
            "AND '20261130'`; only the matching tables are then read",
        )


# -- COUNT(DISTINCT) ------------------------------------------------------------------------


def count_distinct_exact(query: Query, settings: OptimizerSettings) -> Iterator[Finding]:
    """COUNT(DISTINCT x): exact, so every distinct value is shuffled and kept; an estimate
    costs a fraction of that. Never rewritten: the numbers would change."""
    for count in query.tree.find_all(exp.Count):
        distinct = count.this
        if not isinstance(distinct, exp.Distinct):
            continue
        counted = ", ".join(query.sql_of(e) for e in distinct.expressions)
        yield finding(
            query,
            "count_distinct_exact",
            count,
            severity="low",
            title="Exact COUNT(DISTINCT)",
            message=f"`{query.sql_of(count)}` keeps every distinct value of {counted} in "
            "memory and shuffles them between workers to count them exactly",
            fix=f"if an estimate is enough (dashboards, trends), use `APPROX_COUNT_DISTINCT("
            f"{counted})`" + (" on one combined key" if len(distinct.expressions) > 1 else ""),
            tradeoff="approximate: HyperLogLog++, typically within ~1% of the exact count; keep "
            "COUNT(DISTINCT) for figures that must reconcile exactly (revenue, order counts "
            "checked against the shop database)",
        )


RULES: dict[str, Rule] = {
    "select_star": select_star,
    "partition_filter_missing": partition_filter_missing,
    "partition_filter_not_prunable": partition_filter_not_prunable,
    "cluster_unused": cluster_unused,
    "order_by_without_limit": order_by_without_limit,
    "limit_without_pruning": limit_without_pruning,
    "wildcard_without_table_suffix": wildcard_without_table_suffix,
    "count_distinct_exact": count_distinct_exact,
}
