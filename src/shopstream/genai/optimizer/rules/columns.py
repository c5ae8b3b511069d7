"""The columns a query, as written, reads from each SELECT in it.

sqlglot qualifies the query against the catalog (``*`` expanded to the table's columns, every
column named with its source); the columns of a CTE or derived table that its readers name are
what they need from it. The readers are taken as written: a rule that rewrites one SELECT
leaves the others alone, so a column a reader selects is needed even when nothing reads that
reader's own output (sqlglot's ``pushdown_projections`` would prune both at once, and a rewrite
of only the inner one would then reference columns it dropped).

>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> from shopstream.genai.optimizer.query import parse_query
>>> events = TableInfo("raw.events", tuple(Column(c, "VARCHAR") for c in
...                    ("event_id", "event_type", "user_id", "page_url")))
>>> q = parse_query("with e as (select * from raw.events) "
...                 "select user_id, count(*) from e where event_type = 'purchase' group by 1",
...                 "duckdb", Catalog({"raw.events": events}))
>>> [cte_body] = [s for s in q.tree.find_all(exp.Select) if s is not q.tree]
>>> needed_columns(q)[id(cte_body)]
['event_type', 'user_id']
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope

from shopstream.genai.optimizer.query import Query, unresolved

_MARK = "shopstream_select"


def needed_columns(query: Query) -> dict[int, list[str]]:
    """``id(select)`` -> the output columns of that SELECT the rest of the query reads, for the
    SELECTs that are a CTE's or derived table's body (lower case, in the SELECT's order); a
    SELECT whose columns all count (a UNION branch, a DISTINCT, an IN subquery) gets all its
    columns. Empty when sqlglot cannot resolve the query against the catalog."""
    selects = list(query.tree.find_all(exp.Select))
    copy = query.tree.copy()
    # The copy walks in the same order as the original, and qualifying keeps a node's meta:
    # the mark finds each SELECT's original after sqlglot has rewritten the copy.
    for index, copied in enumerate(copy.find_all(exp.Select)):
        copied.meta[_MARK] = index
    try:
        qualified = qualify(
            copy,
            schema=dict(query.catalog.sqlglot_schema()),
            dialect=query.dialect,
            validate_qualify_columns=True,
            quote_identifiers=False,
        )
        scopes = traverse_scope(qualified)
    except (SqlglotError, KeyError, ValueError):
        return {}
    readers: dict[int, list[tuple[Scope, str]]] = {}
    for scope in scopes:
        for alias, (_node, source) in scope.selected_sources.items():
            if isinstance(source, Scope):
                readers.setdefault(id(source), []).append((scope, alias))
    needed: dict[int, list[str]] = {}
    for scope in scopes:
        select = scope.expression
        mark = select.meta.get(_MARK) if isinstance(select, exp.Select) else None
        if not isinstance(mark, int):
            continue
        outputs = [p.alias_or_name.lower() for p in select.expressions]
        reading = readers.get(id(scope), [])
        if (
            scope.scope_type not in (ScopeType.CTE, ScopeType.DERIVED_TABLE)
            or not reading
            or select.args.get("distinct")
        ):
            needed[id(selects[mark])] = outputs  # every column counts
            continue
        used = {
            column.name.lower()
            for reader, alias in reading
            # The reader's own columns: its expression also holds its CTEs' bodies, whose
            # columns may carry the same alias (`with events as (... from raw.events as events)`)
            for column in reader.columns
            if column.table.lower() == alias.lower()
        }
        needed[id(selects[mark])] = [name for name in outputs if name in used]
    return needed


def resolves(tree: exp.Expression, query: Query) -> bool:
    """Whether every column of ``tree`` (a rewrite of ``query``) resolves against the catalog:
    a rewrite that dropped a column something still reads is never offered."""
    return unresolved(tree, query) is None
