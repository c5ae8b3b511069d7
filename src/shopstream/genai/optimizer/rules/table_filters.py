"""Which catalog tables a query reads, and the filters that reach each of them.

A filter reaches a table when it is a WHERE (or ON) conjunct of the SELECT that reads the table,
or a conjunct of a query reading that SELECT (a CTE or a derived table) on a column the SELECT
passes through unchanged: BigQuery pushes such filters down to the scan, so they prune too. A CTE
read by two queries is scanned once per reader, so each reader is one *path* of filters, and a
table is only pruned when every path prunes it.

>>> import sqlglot
>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> from shopstream.genai.optimizer.query import parse_query
>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"), Column("event_date", "DATE")),
...                    partition_by="event_date")
>>> q = parse_query("with e as (select * from raw.events) "
...                 "select event_id from e where event_date = '2026-11-28'", "duckdb",
...                 Catalog({"raw.events": events}))
>>> [read] = tables_read(q)
>>> [[(f.predicate.sql(), sorted(f.columns.values())) for f in path] for path in read.paths]
[[("event_date = '2026-11-28'", ['event_date'])]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope

from shopstream.genai.optimizer.catalog import TableInfo
from shopstream.genai.optimizer.query import Query, position_of

#: Set in the meta of a column reference that names no column of any source in reach: a BigQuery
#: scripting variable (``DECLARE day DATE ...; ... WHERE event_date = day``), a constant to the
#: planner (``partition_filters.is_constant``).
VARIABLE = "shopstream_variable"

#: Maps a column reference (in some SELECT) to the read table's column it denotes, or None.
Resolver = Callable[[exp.Column], str | None]


@dataclass(frozen=True)
class Filter:
    #: The conjunct as written in the query.
    predicate: exp.Expression
    #: The column references in it that denote the table's columns: ``id(node)`` -> column name
    #: (lower case).
    columns: dict[int, str]

    def picks(self, column: str) -> Callable[[exp.Column], bool]:
        """Whether a column reference in the predicate is the table's ``column``."""
        name = column.lower()
        return lambda node: self.columns.get(id(node)) == name


@dataclass(frozen=True)
class TableRead:
    #: The reference in the query (``raw.events AS e``).
    table: exp.Table
    info: TableInfo
    #: The SELECT that reads it.
    scope: Scope
    #: One list of filters per way its rows reach the result (see the module docstring).
    paths: tuple[tuple[Filter, ...], ...]


def conjuncts(condition: exp.Expression | None) -> Iterator[exp.Expression]:
    """The AND-ed parts of a condition, parentheses removed.

    >>> import sqlglot
    >>> [c.sql() for c in conjuncts(sqlglot.parse_one("(a = 1 and b = 2) and (c = 3 or d = 4)"))]
    ['a = 1', 'b = 2', 'c = 3 OR d = 4']
    """
    if condition is None:
        return
    condition = unparen(condition)
    if isinstance(condition, exp.And):
        yield from conjuncts(condition.this)
        yield from conjuncts(condition.expression)
    else:
        yield condition


def unparen(node: exp.Expression) -> exp.Expression:
    """``node`` without the parentheses around it."""
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def local_columns(node: exp.Expression) -> Iterator[exp.Column]:
    """Column references in ``node`` that belong to its own SELECT (not to a subquery in it)."""
    for found in node.walk(
        prune=lambda n: isinstance(n, (exp.Query, exp.Subquery)) and n is not node
    ):
        if isinstance(found, exp.Column) and not isinstance(found.this, exp.Star):
            yield found


def scope_conditions(scope: Scope, alias: str) -> list[exp.Expression]:
    """The conjuncts of ``scope``'s SELECT that restrict the rows read from source ``alias``
    (see :func:`restricting_conditions`)."""
    select = scope.expression
    return restricting_conditions(select, alias) if isinstance(select, exp.Select) else []


def restricting_conditions(select: exp.Expression, alias: str) -> list[exp.Expression]:
    """The conjuncts of ``select`` that restrict the rows read from its source ``alias``: the
    WHERE, and the ON of each join that drops ``alias``'s rows failing it: an inner join's ON
    (whatever source it names), a LEFT (or SEMI/ANTI) join's ON for the joined table, a RIGHT
    join's ON for the sources before it. The preserved side of an outer join keeps every row
    whatever the ON says (a FULL join keeps both), so its ON filters nothing there. The rules and
    the cost estimate both ask this, so they agree on which filters may prune a table.

    >>> import sqlglot
    >>> q = sqlglot.parse_one("select * from a right join b on a.d = 1 and b.d = 2 "
    ...                       "left join c on c.d = 3 and b.d = 4 where a.x = 5")
    >>> for t in "abc":
    ...     print(t, [c.sql() for c in restricting_conditions(q, t)])
    a ['a.x = 5', 'a.d = 1', 'b.d = 2']
    b ['a.x = 5']
    c ['a.x = 5', 'c.d = 3', 'b.d = 4']
    """
    where = select.args.get("where")
    found = list(conjuncts(where.this)) if isinstance(where, exp.Where) else []
    before = {alias_of(select.args["from_"].this)} if select.args.get("from_") else set()
    for join in select.args.get("joins") or []:
        joined = alias_of(join.this)
        side, kind = (join.side or "").upper(), (join.kind or "").upper()
        if kind == "CROSS":
            drops = False
        elif side == "RIGHT":
            drops = alias in before
        elif side == "LEFT" or kind in ("SEMI", "ANTI"):
            drops = alias == joined
        else:
            drops = side != "FULL"
        if drops:
            found.extend(conjuncts(join.args.get("on")))
        before.add(joined)
    return found


def alias_of(source: exp.Expression) -> str:
    """The name a FROM or JOIN source is referred to by (its alias, else its name)."""
    return source.alias_or_name


def _source_resolver(scope: Scope, alias: str, known: Callable[[str], bool]) -> Resolver:
    """Resolves columns of ``scope`` that belong to its source ``alias``: qualified by the alias,
    or unqualified and a name the source is ``known`` to have (a name no source has is an outer
    query's column or a BigQuery scripting variable, not this table's)."""

    def resolve(column: exp.Column) -> str | None:
        if column.table:
            return column.name.lower() if column.table.lower() == alias.lower() else None
        return column.name.lower() if known(column.name) else None

    return resolve


def _passes_filters_up(scope: Scope, owner: Scope) -> bool:
    """Whether a filter on the output of ``owner`` (a CTE or derived table: ``scope``'s SELECT,
    or the UNION it is a branch of) may be applied before ``scope``'s SELECT (BigQuery pushes it
    down): not across a LIMIT, a window function or a DISTINCT ON."""
    select = scope.expression
    return (
        isinstance(select, exp.Select)
        and owner.scope_type in (ScopeType.CTE, ScopeType.DERIVED_TABLE)
        and not select.args.get("limit")
        and not owner.expression.args.get("limit")
        and not any(select.find_all(exp.Window))
        and not distinct_on(select)
    )


def distinct_on(select: exp.Expr) -> bool:
    """Whether ``select`` is a DuckDB ``SELECT DISTINCT ON (...)``: it keeps the first row per
    key of all its input, so a filter on its output must not be applied before it."""
    distinct = select.args.get("distinct")
    return isinstance(distinct, exp.Distinct) and distinct.args.get("on") is not None


def _through(
    scope: Scope, resolve: Resolver, outputs: list[str] | None
) -> Callable[[str], str | None]:
    """The table column behind output column ``name`` of ``scope``'s SELECT, when it is passed
    through unchanged (``x``, ``x AS y`` or ``*``). For a UNION branch, ``outputs`` are the
    UNION's column names: a branch's columns are matched by position."""
    select = scope.expression
    assert isinstance(select, exp.Select)

    def behind(name: str) -> str | None:
        if outputs is not None:
            index = outputs.index(name.lower()) if name.lower() in outputs else -1
            projections = select.expressions
            if index < 0 or index >= len(projections) or any(p.is_star for p in projections):
                return None
            inner = projections[index].unalias()
            return resolve(inner) if isinstance(inner, exp.Column) else None
        for projection in select.expressions:
            if isinstance(projection, exp.Star):
                return resolve(exp.column(name))
            if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                return resolve(exp.column(name, table=projection.table))
            if projection.alias_or_name.lower() == name.lower():
                inner = projection.unalias()
                return resolve(inner) if isinstance(inner, exp.Column) else None
        return None

    return behind


class _Readers:
    """Who reads each CTE / derived table: (reading scope, the alias it reads it by); and the
    UNION each branch belongs to."""

    def __init__(self, scopes: list[Scope]) -> None:
        self._by_scope: dict[int, list[tuple[Scope, str]]] = {}
        self._union: dict[int, Scope] = {}
        for scope in scopes:
            for alias, (_node, source) in scope.selected_sources.items():
                if isinstance(source, Scope):
                    self._by_scope.setdefault(id(source), []).append((scope, alias))
            for branch in scope.set_operation_scopes:
                self._union[id(branch)] = scope

    def of(self, scope: Scope) -> tuple[Scope, list[tuple[Scope, str]]]:
        """The scope whose output is read (``scope``, or the UNION it is a branch of), and its
        readers."""
        owner = scope
        while id(owner) not in self._by_scope and id(owner) in self._union:
            owner = self._union[id(owner)]
        return owner, self._by_scope.get(id(owner), [])


def _paths(
    scope: Scope, alias: str, resolve: Resolver, readers: _Readers, depth: int = 0
) -> list[tuple[Filter, ...]]:
    own = []
    for condition in scope_conditions(scope, alias):
        columns = {id(c): name for c in local_columns(condition) if (name := resolve(c))}
        if columns:
            own.append(Filter(condition, columns))
    owner, reading = readers.of(scope)
    if not reading or not _passes_filters_up(scope, owner) or depth > 20:
        return [tuple(own)]
    outputs = None
    if owner is not scope and isinstance(owner.expression, exp.SetOperation):
        outputs = [name.lower() for name in owner.expression.named_selects]
    behind = _through(scope, resolve, outputs)
    paths: list[tuple[Filter, ...]] = []
    for reader, reader_alias in reading:
        # A reader's column reference denotes the table's column when it names this SELECT's
        # output and that output passes the table column through.
        def passes(name: str, b: Callable[[str], str | None] = behind) -> bool:
            return b(name) is not None

        outer = _source_resolver(reader, reader_alias, passes)

        def resolve_outer(
            column: exp.Column, o: Resolver = outer, b: Callable[..., str | None] = behind
        ) -> str | None:
            name = o(column)
            return b(name) if name else None

        for path in _paths(reader, reader_alias, resolve_outer, readers, depth + 1):
            paths.append((*own, *path))
    return paths


def query_scopes(query: Query) -> list[Scope]:
    """sqlglot's scopes of the query (each SELECT with what it reads), innermost first; none
    when sqlglot refuses the shape (a CTE name used twice, ...): the scope rules skip it then."""
    try:
        return traverse_scope(query.tree)
    except Exception:
        return []


def _has_column(info: TableInfo) -> Callable[[str], bool]:
    return lambda name: info.column(name) is not None


def tables_read(query: Query) -> list[TableRead]:
    """Every reference to a catalog table in ``query``, with the filters that reach it; tables
    the catalog does not know are left out (the rules that need the catalog skip them)."""
    scopes = query_scopes(query)
    readers = _Readers(scopes)
    reads = []
    for scope in scopes:
        _mark_variables(scope, query)
        for alias, (node, source) in scope.selected_sources.items():
            if not isinstance(source, exp.Table) or not isinstance(node, exp.Table):
                continue
            info = query.table_info(source)
            if info is None:
                continue
            resolve = _source_resolver(scope, alias, _has_column(info))
            paths = _paths(scope, alias, resolve, readers)
            reads.append(TableRead(node, info, scope, tuple(paths)))
    return sorted(reads, key=lambda r: _offset(r.table, query.sql))


def _mark_variables(scope: Scope, query: Query) -> None:
    """Mark the unqualified names in ``scope``'s conditions that no source of it has (every
    source's columns known) as variables (:data:`VARIABLE`). Not in a
    subquery, where such a name is the outer query's column (a correlation)."""
    select = scope.expression
    if not isinstance(select, exp.Select) or scope.scope_type not in (
        ScopeType.ROOT,
        ScopeType.CTE,
        ScopeType.DERIVED_TABLE,
    ):
        return
    known: set[str] = set()
    for _alias, (_node, source) in scope.selected_sources.items():
        if isinstance(source, exp.Table):
            info = query.table_info(source)
            if info is None:
                return
            known.update(c.name.lower() for c in info.columns)
        elif isinstance(source, Scope) and isinstance(source.expression, exp.Query):
            names = [n.lower() for n in source.expression.named_selects]
            if "*" in names or "" in names:
                return
            known.update(names)
        else:
            return
    known.update(p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias))
    for condition in restricting_conditions(select, ""):
        for column in local_columns(condition):
            if not column.table and column.name.lower() not in known:
                column.meta[VARIABLE] = True


def _offset(node: exp.Expression, sql: str) -> int:
    position = position_of(node, sql)
    return position.offset if position else -1
