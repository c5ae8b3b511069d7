"""Table and column lineage of the dbt project, from the manifest's compiled SQL.

Tables come from each model's ``depends_on`` and from the tables its compiled SQL reads (sources
and refs resolved to ``layer.table`` through the manifest's schema/alias and the sources'
schema/identifier, whatever database or project prefix the warehouse puts in front). Columns
come from sqlglot: the compiled SQL is qualified against the warehouse's columns, then every
output column is followed back through CTEs, subqueries and unions to the table columns its
expression is computed from. Only the projections count (what a value is computed *from*), not
the filters and join keys that decide *which* rows there are.

A model sqlglot cannot read keeps its table edges and gets a warning saying why.

>>> manifest = {
...     "nodes": {"model.shop.daily": {
...         "resource_type": "model", "schema": "mart", "alias": "daily",
...         "depends_on": {"nodes": ["source.shop.raw.orders"]},
...         "compiled_code": 'with o as (select amount * 2 as doubled, day'
...             ' from "db"."raw"."orders")'
...             ' select day, sum(doubled) as revenue from o group by day'}},
...     "sources": {"source.shop.raw.orders": {"schema": "raw", "identifier": "orders"}},
... }
>>> traced = trace_lineage(manifest, {"raw.orders": ["day", "amount"]}, "duckdb")
>>> traced.lineage.tables
{'mart.daily': ('raw.orders',)}
>>> traced.lineage.columns[ColumnRef("mart.daily", "revenue")]
(ColumnRef(table='raw.orders', column='amount'),)
>>> traced.warnings
()
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from shopstream.genai.docs.model import ColumnRef, Lineage

#: Manifest node types that are tables in the warehouse (tests, macros, analyses are not).
_RELATION_TYPES = frozenset({"model", "seed", "snapshot"})


@dataclass(frozen=True)
class TracedLineage:
    """The project's lineage and what could not be traced (one sentence per model)."""

    lineage: Lineage
    #: Why a model has table edges only, e.g. "mart.x: sqlglot cannot parse ...: ..." (sorted).
    warnings: tuple[str, ...]


def trace_lineage(
    manifest: Mapping[str, Any], table_columns: Mapping[str, Sequence[str]], dialect: str
) -> TracedLineage:
    """Table and column lineage of the models in a dbt ``manifest`` (its parsed JSON).

    ``table_columns``: ``layer.table`` -> its columns, as the warehouse has them (needed to
    expand ``select *`` and to tell which table an unqualified column comes from).
    ``dialect``: the SQL dialect the manifest was compiled for (``duckdb``, ``bigquery``).
    """
    relations = _relations(manifest)
    by_parts = {tuple(name.split(".", 1)): name for name in relations.values()}
    schema = _sqlglot_schema(table_columns)
    known = {table.lower() for table in table_columns}
    tables: dict[str, set[str]] = {}
    columns: dict[ColumnRef, set[ColumnRef]] = {}
    warnings: list[str] = []
    for unique_id, node in sorted(manifest.get("nodes", {}).items()):
        if node.get("resource_type") != "model":
            continue
        name = relations[unique_id]
        parents = tables.setdefault(name, set())
        parents.update(
            relations[parent]
            for parent in node.get("depends_on", {}).get("nodes", ())
            if parent in relations
        )
        sql = node.get("compiled_code") or node.get("compiled_sql")
        if not sql:
            warnings.append(f"{name}: no compiled SQL in the manifest (run dbt compile first)")
            continue
        try:
            tree = sqlglot.parse_one(sql, read=dialect)
        except SqlglotError as exc:
            warnings.append(f"{name}: sqlglot cannot parse its compiled SQL: {_first_line(exc)}")
            continue
        read = _read_tables(tree, by_parts)
        parents.update(read)
        unknown = sorted(t for t in read if t not in known and t != name)
        if unknown:
            warnings.append(
                f"{name}: the warehouse has no columns for {', '.join(unknown)} (not built "
                "yet?): its column lineage through them is incomplete"
            )
        try:
            traced, unresolved = _column_lineage(name, tree, schema, dialect)
        except Exception as exc:  # sqlglot's optimizer raises more than SqlglotError on odd SQL
            warnings.append(f"{name}: no column lineage, sqlglot failed: {_first_line(exc)}")
            continue
        if unresolved:
            warnings.append(
                f"{name}: sqlglot could not tie {', '.join(sorted(unresolved))} to a table: "
                "column lineage through them is incomplete"
            )
        for column, sources in traced.items():
            # An incremental model reads its own table (values kept from its earlier run):
            # those were computed from its real sources, which the lineage already has.
            columns.setdefault(column, set()).update(s for s in sources if s.table != name)
    for name, parents in tables.items():
        parents.discard(name)  # an incremental model reads itself for its high-water mark
    return TracedLineage(
        Lineage(
            tables={t: tuple(sorted(p)) for t, p in sorted(tables.items())},
            columns={c: tuple(sorted(s)) for c, s in sorted(columns.items())},
        ),
        tuple(sorted(warnings)),
    )


def relation_name(node: Mapping[str, Any]) -> str:
    """The ``layer.table`` of a manifest node (model, seed, snapshot: its alias) or source (its
    identifier), whatever the warehouse calls the table's database.

    >>> relation_name({"schema": "Mart", "name": "daily_sales", "alias": None})
    'mart.daily_sales'
    >>> relation_name({"schema": "raw", "name": "orders", "identifier": "cdc_orders"})
    'raw.cdc_orders'
    """
    name = node.get("alias") or node.get("identifier") or node["name"]
    return f"{node['schema']}.{name}".lower()


def _relations(manifest: Mapping[str, Any]) -> dict[str, str]:
    """unique_id -> ``layer.table`` for every model, seed, snapshot and source."""
    names = {
        unique_id: relation_name(node)
        for unique_id, node in manifest.get("nodes", {}).items()
        if node.get("resource_type") in _RELATION_TYPES
    }
    names.update(
        (unique_id, relation_name(source))
        for unique_id, source in manifest.get("sources", {}).items()
    )
    return names


def _sqlglot_schema(table_columns: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """{layer: {table: {column: type}}}; types do not matter to lineage, so all are TEXT."""
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for table, names in table_columns.items():
        layer, _, bare = table.lower().partition(".")
        schema.setdefault(layer, {})[bare] = {column.lower(): "TEXT" for column in names}
    return schema


def _read_tables(tree: exp.Expr, by_parts: Mapping[tuple[str, ...], str]) -> set[str]:
    """The ``layer.table`` names the SQL reads; also drops the database/project prefix from
    its table references (in place) so that they match the ``layer.table`` schema."""
    read = set()
    for table in tree.find_all(exp.Table):
        if not table.args.get("db"):
            continue  # a CTE, or a table the warehouse resolves by search path: not a relation
        parts = (table.db.lower(), table.name.lower())
        read.add(by_parts.get(parts, ".".join(parts)))
        table.set("catalog", None)
    return read


def _column_lineage(
    model: str, tree: exp.Expr, schema: Mapping[str, Any], dialect: str
) -> tuple[dict[ColumnRef, set[ColumnRef]], set[str]]:
    """Each output column of ``model`` -> the table columns it is computed from; and the
    column references that could not be tied to a source."""
    qualified = qualify(
        tree,
        schema=dict(schema),
        dialect=dialect,
        validate_qualify_columns=False,
        identify=False,
    )
    root = build_scope(qualified)
    if root is None:
        raise SqlglotError("no SELECT to trace")
    tracer = _Tracer()
    traced = {
        ColumnRef(model, output.lower()): tracer.sources(root, index)
        for index, output in enumerate(_outputs(root))
    }
    return traced, tracer.unresolved


class _Tracer:
    """Follows output columns back to table columns, remembering each scope's answers (the CDC
    staging models chain a dozen CTEs that many columns pass through)."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], set[ColumnRef]] = {}
        #: Column references with no source (as ``table.column`` or ``column``).
        self.unresolved: set[str] = set()

    def sources(self, scope: Scope, index: int) -> set[ColumnRef]:
        """The table columns the ``index``-th output column of ``scope`` is computed from."""
        key = (id(scope), index)
        if key not in self._known:
            self._known[key] = set()  # a recursive CTE reaching itself adds nothing new
            self._known[key] = self._trace(scope, index)
        return self._known[key]

    def _trace(self, scope: Scope, index: int) -> set[ColumnRef]:
        if scope.set_operation_scopes:
            branches = scope.set_operation_scopes
            return set().union(*(self.sources(branch, index) for branch in branches))
        select = scope.expression
        if not isinstance(select, exp.Select) or index >= len(select.expressions):
            return set()
        found: set[ColumnRef] = set()
        for node in _references(select.expressions[index], scope):
            if isinstance(node, Scope):  # a scalar subquery: what its output is computed from
                for inner in range(len(_outputs(node))):
                    found |= self.sources(node, inner)
            else:
                found |= self._column(scope, node)
        return found

    def _column(self, scope: Scope, column: exp.Column) -> set[ColumnRef]:
        name = column.name.lower()
        # A correlated subquery's column belongs to an enclosing scope's table.
        owner: Scope | None = scope
        while owner is not None and column.table not in owner.sources:
            owner = owner.parent
        source = owner.sources[column.table] if owner is not None else None
        if isinstance(source, exp.Table):
            return {ColumnRef(f"{source.db}.{source.name}".lower(), name)}
        if isinstance(source, Scope) and source.is_udtf:
            # UNNEST(json_extract(properties, '$.items[*]')) AS item(element, position): every
            # column of the table function comes from the columns its arguments read.
            found: set[ColumnRef] = set()
            for node in _references(source.expression, source):
                if isinstance(node, exp.Column):
                    found |= self._column(scope if owner is None else owner, node)
            return found
        if isinstance(source, Scope):
            outputs = [output.lower() for output in _outputs(source)]
            if name in outputs:
                return self.sources(source, outputs.index(name))
        self.unresolved.add(column.sql())
        return set()


def _outputs(scope: Scope) -> list[str]:
    """A scope's output column names, in order (a union's are its first branch's)."""
    while scope.set_operation_scopes:
        scope = scope.set_operation_scopes[0]
    select = scope.expression
    return list(select.named_selects) if isinstance(select, exp.Select) else []


def _references(expression: exp.Expr, scope: Scope) -> Iterator[exp.Column | Scope]:
    """The columns ``expression`` reads in ``scope``, and the scopes of the scalar subqueries
    in it (their columns are theirs to resolve)."""
    nested = {id(child.expression): child for child in scope.subquery_scopes}
    todo = [expression]
    while todo:
        node = todo.pop()
        if id(node) in nested:
            yield nested[id(node)]
            continue
        if isinstance(node, exp.Column):
            yield node
        elif isinstance(node, exp.Window):
            # OVER (PARTITION BY k ORDER BY t) picks the rows, like GROUP BY: the value is
            # computed from the function's arguments only.
            todo.append(node.this)
        else:
            todo.extend(node.iter_expressions())


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
