"""The columns a query really needs from each SELECT in it.

sqlglot qualifies the query against the catalog (``*`` expanded to the table's columns), then
drops every projection of a CTE or subquery that nothing reads (its ``pushdown_projections``);
what is left of a SELECT is what the query needs from it.

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
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify

from shopstream.genai.optimizer.query import Query

_MARK = "shopstream_select"


def needed_columns(query: Query) -> dict[int, list[str]]:
    """``id(select)`` -> the output columns of that SELECT the query reads, for every SELECT of
    ``query.tree`` (lower case, in the SELECT's order); empty when sqlglot cannot resolve the
    query against the catalog (an unknown table, an ambiguous column)."""
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
        pruned = pushdown_projections(qualified)
    except (SqlglotError, KeyError, ValueError):
        return {}
    needed: dict[int, list[str]] = {}
    for select in pruned.find_all(exp.Select):
        mark = select.meta.get(_MARK)
        if not isinstance(mark, int):
            continue
        names = [p.alias_or_name.lower() for p in select.expressions]
        # pushdown_projections leaves `1 AS _` where nothing is read.
        needed[id(selects[mark])] = [] if names == ["_"] else names
    return needed
