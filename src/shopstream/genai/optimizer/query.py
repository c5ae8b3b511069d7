"""One query, parsed in its dialect and resolved against the catalog: what every rule reads.

>>> q = parse_query("select event_id\\nfrom raw.events where event_date = '2026-11-30'", "duckdb")
>>> [t.sql() for t in q.tables]
['raw.events']
>>> position_of(q.tree.find(exp.Column), q.sql)
Position(line=1, column=8, offset=7)
>>> try:
...     parse_query("select from where", "duckdb")
... except SqlSyntaxError as exc:
...     print(str(exc).splitlines()[0])
the query is not valid duckdb SQL at line 1, column 17: Expected table name but got 'where'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError

from shopstream.genai.optimizer.catalog import Catalog, TableInfo
from shopstream.genai.optimizer.findings import Dialect, Position

_TOKEN = re.compile(r"<Token token_type: [^,]*, text: ([^,]*), [^>]*>")


class SqlSyntaxError(ValueError):
    """The query does not parse in its dialect; the message names where and what."""


@dataclass(frozen=True)
class Query:
    sql: str
    dialect: Dialect
    #: As parsed (positions refer to ``sql``).
    tree: exp.Expression
    catalog: Catalog

    @property
    def tables(self) -> list[exp.Table]:
        """Every table reference (CTE names excluded), outer query first."""
        return table_references(self.tree)

    def table_info(self, table: exp.Table) -> TableInfo | None:
        """The catalog's entry for a table reference (None: not a known table)."""
        return self.catalog.find([table.catalog, table.db, table.name])

    def sql_of(self, node: exp.Expression) -> str:
        """``node`` written back in the query's dialect (the evidence of a finding)."""
        return node.sql(dialect=self.dialect)


def table_references(node: exp.Expression, tree: exp.Expression | None = None) -> list[exp.Table]:
    """The references to real tables under ``node`` (outer query first, breadth-first): a name
    without a dataset that is a CTE of ``tree`` (the whole query; default ``node``) is the CTE.

    >>> tree = sqlglot.parse_one("with e as (select 1 from raw.events) select * from e, mart.x")
    >>> [t.sql() for t in table_references(tree)]
    ['mart.x', 'raw.events']
    """
    ctes = {c.alias_or_name.lower() for c in (tree or node).find_all(exp.CTE)}
    return [
        t for t in node.find_all(exp.Table) if t.name and not (not t.db and t.name.lower() in ctes)
    ]


def parse_query(sql: str, dialect: Dialect, catalog: Catalog | None = None) -> Query:
    """Parse one SELECT statement; :class:`SqlSyntaxError` when it does not parse or is not
    exactly one query."""
    try:
        statements = sqlglot.parse(sql, read=dialect, error_level=ErrorLevel.RAISE)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        # sqlglot names the token as its repr: say the text the user wrote instead.
        detail = _TOKEN.sub(r"'\1'", first.get("description") or str(exc))
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SqlSyntaxError(
            f"the query is not valid {dialect} SQL{where}: {detail}\n"
            f"check the SQL, or pass --dialect {'bigquery' if dialect == 'duckdb' else 'duckdb'} "
            "if it is written for the other warehouse"
        ) from exc
    queries = [s for s in statements if s is not None]
    if len(queries) != 1:
        raise SqlSyntaxError(f"expected one query, got {len(queries)} statements")
    tree = queries[0]
    if not isinstance(tree, exp.Query):
        raise SqlSyntaxError(
            "only a query (SELECT, WITH ... SELECT, UNION) can be optimized, "
            f"not {tree.key.upper()}"
        )
    parsed: exp.Expression = tree  # type: ignore[assignment]  # exp.Query is a mixin to mypy
    return Query(sql=sql, dialect=dialect, tree=parsed, catalog=catalog or Catalog({}))


def position_of(node: exp.Expression, sql: str) -> Position | None:
    """Where ``node`` starts in ``sql``: the earliest token under it that the parser placed."""
    starts = [
        n.meta["start"] for n in node.walk() if isinstance(n, exp.Expression) and "start" in n.meta
    ]
    if not starts:
        return None
    offset = min(starts)
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return Position(line=line, column=column, offset=offset)


def warehouse_dialect(warehouse_url: str) -> Dialect:
    """The SQL dialect of the warehouse a URL names (``duckdb:///...`` -> duckdb).

    >>> warehouse_dialect("bigquery://my-project?location=EU")
    'bigquery'
    """
    return "bigquery" if warehouse_url.startswith("bigquery") else "duckdb"


def warehouse_dialect_of(warehouse: object) -> Dialect:
    """The SQL dialect an opened ``warehouse`` speaks (its ``sql_dialect``; DuckDB's when it
    says none), as the quality checks read it too."""
    return "bigquery" if getattr(warehouse, "sql_dialect", "duckdb") == "bigquery" else "duckdb"


def for_warehouse(tree: exp.Expression, target: Dialect) -> str:
    """The query as the warehouse of dialect ``target`` runs it: transpiled, and on DuckDB
    without BigQuery's project prefix (``project.mart.daily_sales`` is ``mart.daily_sales``).

    >>> q = parse_query("SELECT SAFE_CAST(ip AS INT64) FROM `shop-prod.raw.events`", "bigquery")
    >>> for_warehouse(q.tree, "duckdb")
    'SELECT TRY_CAST(ip AS BIGINT) FROM "raw"."events"'
    """
    copy = tree.copy()
    if target == "duckdb":
        for table in copy.find_all(exp.Table):
            if table.args.get("catalog") is not None:
                table.set("catalog", None)
    return copy.sql(dialect=target)


def check_columns(query: Query) -> None:
    """Raise :class:`SqlSyntaxError` naming a column the query reads that its table does not
    have (as the warehouse would refuse it). Only when every table it reads is in the catalog:
    an unknown table is noted elsewhere, and its columns cannot be judged.

    >>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
    >>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"),))
    >>> q = parse_query("select evnt_id from raw.events", "duckdb", Catalog({"raw.events": events}))
    >>> try:
    ...     check_columns(q)
    ... except SqlSyntaxError as exc:
    ...     print(exc)
    no such column evnt_id in the tables the query reads (raw.events): check its name
    """
    if not query.catalog.tables or any(query.table_info(t) is None for t in query.tables):
        return
    problem = unresolved(query.tree, query)
    if problem is not None:
        column = _UNRESOLVED.search(problem)
        name = next((g for g in column.groups() if g), "a column") if column else "a column"
        read = sorted({info.name for t in query.tables if (info := query.table_info(t))})
        raise SqlSyntaxError(
            f"no such column {name} in the tables the query reads ({', '.join(read)}): "
            "check its name"
        )


def unresolved(tree: exp.Expression, query: Query) -> str | None:
    """Why a column of ``tree`` (``query`` or a rewrite of it) does not resolve against the
    catalog (sqlglot's message), or None when every one does."""
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.qualify import qualify

    copy = tree.copy()
    for table in copy.find_all(exp.Table):
        table.set("catalog", None)  # the catalog's names are layer.table, without the project
    try:
        qualify(
            copy,
            schema=dict(query.catalog.sqlglot_schema()),
            dialect=query.dialect,
            validate_qualify_columns=True,
            quote_identifiers=False,
        )
    except (SqlglotError, KeyError, ValueError) as exc:
        return str(exc)
    return None


_UNRESOLVED = re.compile(r"(?:Column '([^']+)' could not be resolved|Unknown column: (\S+))")
