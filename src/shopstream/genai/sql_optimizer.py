"""The SQL cost optimizer: findings with evidence and fixes, cost before and after, and rewrites
shown only once the warehouse proved them equal.

:func:`optimize` is the library call (``shopstream optimize-sql`` and the running platform's
``POST /v1/optimize`` both end there):

1. parse the query in its dialect (:class:`~shopstream.genai.optimizer.query.SqlSyntaxError`
   says where it does not);
2. resolve it against the warehouse's catalog (columns, sizes, partitions, clusters, keys);
3. run every rule (:mod:`shopstream.genai.optimizer.rules`);
4. cost it (BigQuery's dry run; on DuckDB an estimate from column sizes and partitions);
5. gather rewrites: each rule's, one that applies all the mechanical fixes in turn, and the
   LLM's when one is configured; verify each (:mod:`shopstream.genai.optimizer.verify`) and
   cost the verified ones.

Whatever cannot be done (no warehouse, a table the catalog does not know, an LLM that does not
answer) is said in the report's notes, never silently skipped.

>>> report = optimize("select event_id from raw.events", dialect="duckdb")
>>> report.findings, report.cost_before
([], None)
>>> print(report.notes[0].partition(" (")[0])
no warehouse: findings from the query's text alone
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import sqlglot

from shopstream.config import Settings
from shopstream.genai.optimizer.catalog import Catalog
from shopstream.genai.optimizer.findings import (
    DIALECTS,
    Cost,
    Dialect,
    Finding,
    OptimizationReport,
    Rewrite,
    Verification,
)
from shopstream.genai.optimizer.query import Query, SqlSyntaxError, check_columns, parse_query
from shopstream.genai.optimizer.rules import find_all
from shopstream.genai.optimizer.verify import verify

if TYPE_CHECKING:
    from shopstream.warehouse.base import Warehouse

#: Fixes applied in turn for the combined rewrite, at most (each is a rules pass).
_COMBINE_STEPS = 8


@dataclasses.dataclass
class _Candidate:
    source: str
    sql: str
    fixes: list[str]
    explanation: str = ""


def optimize(
    sql: str,
    *,
    dialect: Dialect = "duckdb",
    warehouse: Warehouse | None = None,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
) -> OptimizationReport:
    """Analyse ``sql`` (in ``dialect``) against ``warehouse``: see the module's docstring.

    ``catalog``: the warehouse's tables, when the caller loaded them already (otherwise they
    are loaded from ``warehouse``). Raises SqlSyntaxError when the dialect is unknown, the
    query does not parse or it names a column its tables do not have, and the warehouse's
    errors when it cannot be read at all.
    """
    if dialect not in DIALECTS:
        raise SqlSyntaxError(f"unknown dialect {dialect!r}: use {' or '.join(DIALECTS)}")
    settings = settings or Settings()
    parsed = parse_query(sql, dialect)  # a typo is the user's to fix before anything is loaded
    notes: list[str] = []
    if catalog is None and warehouse is not None:
        from shopstream.genai.optimizer.catalog import load_catalog

        catalog = load_catalog(warehouse, dialect)
    if warehouse is None:
        notes.append(
            "no warehouse: findings from the query's text alone (no table sizes, partitions or "
            "keys), no cost and no verification"
            if catalog is None
            else "no warehouse: no cost and no verification"
        )
    catalog = catalog or Catalog({})
    query = dataclasses.replace(parsed, catalog=catalog)
    if catalog.tables:
        notes += _unknown_tables(query)
    check_columns(query)  # a misspelt column: the user's to fix, as the warehouse would say
    findings = find_all(query, settings.optimizer)
    cost_before = _cost(query.tree, query, warehouse, settings, notes, "the query")
    candidates = _rule_candidates(query, findings, settings)
    candidates += _llm_candidates(query, findings, settings, notes)
    rewrites = [_checked(candidate, query, warehouse, settings, notes) for candidate in candidates]
    return OptimizationReport(
        sql=sql,
        dialect=dialect,
        warehouse=_public_url(settings.warehouse) if warehouse is not None else "",
        findings=findings,
        cost_before=cost_before,
        rewrites=rewrites,
        notes=notes,
    )


def _unknown_tables(query: Query) -> list[str]:
    names = {
        ".".join(part for part in (t.catalog, t.db, t.name) if part)
        for t in query.tables
        if query.table_info(t) is None
    }
    return [
        f"wildcard table {name}: BigQuery reads every table the prefix matches; the catalog "
        "knows the tables one by one, so the rules that need columns, partitioning or size "
        "skipped it and its bytes are not in the cost"
        if name.endswith("*")
        else f"unknown table {name}: the warehouse has no such table, so the rules that need "
        "its columns, partitioning or size skipped it and its bytes are not in the cost"
        for name in sorted(names)
    ]


def _cost(
    tree_or_sql: Any,
    query: Query,
    warehouse: Warehouse | None,
    settings: Settings,
    notes: list[str],
    what: str,
) -> Cost | None:
    if warehouse is None:
        return None
    from shopstream.genai.optimizer.cost import cost_of
    from shopstream.warehouse.base import WarehouseError

    try:
        return cost_of(tree_or_sql, query.dialect, query.catalog, warehouse, settings.optimizer)
    except (ValueError, WarehouseError) as exc:
        note = f"no cost for {what}: {exc}"
        if note not in notes:
            notes.append(note)
        return None


def _normal(sql: str, dialect: Dialect) -> str:
    """One spelling of a query, to tell rewrites apart (and from the query itself)."""
    try:
        return sqlglot.parse_one(sql, read=dialect).sql(dialect=dialect, normalize=True)
    except sqlglot.errors.SqlglotError:
        return sql.strip()


def _rule_candidates(query: Query, findings: list[Finding], settings: Settings) -> list[_Candidate]:
    """One rewrite per distinct rewritten query (its fixes: every rule that proposed it), and
    the combination of all mechanical fixes when more than one rule has one."""
    by_sql: dict[str, _Candidate] = {}
    for finding in findings:
        if not finding.rewrite:
            continue
        key = _normal(finding.rewrite, query.dialect)
        if key in by_sql:
            if finding.rule not in by_sql[key].fixes:
                by_sql[key].fixes.append(finding.rule)
            continue
        by_sql[key] = _Candidate(
            f"rule:{finding.rule}", finding.rewrite, [finding.rule], finding.fix
        )
    combined = _combined(query, findings, settings)
    if combined is not None and _normal(combined.sql, query.dialect) not in by_sql:
        by_sql[_normal(combined.sql, query.dialect)] = combined
    return list(by_sql.values())


def _combined(query: Query, findings: list[Finding], settings: Settings) -> _Candidate | None:
    """Apply the mechanical fixes in turn: take one finding's rewrite, run the rules on it,
    take the next rewritable finding among those the query had, until none is left."""
    wanted = {f.rule for f in findings if f.rewrite}
    if len(wanted) < 2:
        return None
    current, applied = query, list[str]()
    pending = findings
    for _ in range(_COMBINE_STEPS):
        step = next((f for f in pending if f.rewrite and f.rule in wanted - set(applied)), None)
        if step is None or step.rewrite is None:
            break
        try:
            current = parse_query(step.rewrite, query.dialect, query.catalog)
        except SqlSyntaxError:
            return None  # a rule's rewrite that does not parse is reported on its own
        applied.append(step.rule)
        pending = find_all(current, settings.optimizer)
    if len(applied) < 2:
        return None
    return _Candidate(
        "rule:" + "+".join(applied),
        current.sql,
        applied,
        "the fixes of " + ", ".join(applied) + " applied in turn",
    )


def _llm_candidates(
    query: Query, findings: list[Finding], settings: Settings, notes: list[str]
) -> list[_Candidate]:
    if not settings.llm or not settings.optimizer.llm_rewrites:
        return []
    from shopstream.genai.llm import LLMConfigError, LLMFailure, build_chat_model
    from shopstream.genai.optimizer.llm_rewrites import propose

    try:
        model = build_chat_model(settings)
    except LLMConfigError as exc:
        notes.append(f"no LLM rewrites: {exc}")
        return []
    if model is None:
        return []
    try:
        proposals, malformed, _usage = propose(query, findings, model)
    except LLMFailure as exc:
        notes.append(f"no LLM rewrites: {model.analyst} gave no usable answer: {exc.reason}")
        return []
    notes += [f"{model.analyst}: {problem}, left out" for problem in malformed]
    if not proposals and not malformed:
        notes.append(f"{model.analyst} proposed no rewrite")
    source = f"llm:{model.provider}:{model.model}"
    return [_Candidate(source, p.sql, [], p.explanation) for p in proposals]


def _checked(
    candidate: _Candidate,
    query: Query,
    warehouse: Warehouse | None,
    settings: Settings,
    notes: list[str],
) -> Rewrite:
    """``candidate`` verified on ``warehouse`` (and costed once verified)."""
    verification: Verification
    if _normal(candidate.sql, query.dialect) == _normal(query.sql, query.dialect):
        verification = Verification(
            passed=False, parses=True, reason="the rewrite is the query itself: nothing to gain"
        )
    elif warehouse is None:
        try:
            parse_query(candidate.sql, query.dialect, query.catalog)
            parses, reason = True, "not verified: no warehouse to run it on"
        except SqlSyntaxError as exc:
            parses, reason = False, f"does not parse: {str(exc).splitlines()[0]}"
        verification = Verification(passed=False, parses=parses, reason=reason)
    else:
        verification = verify(
            query.sql,
            candidate.sql,
            dialect=query.dialect,
            warehouse=warehouse,
            catalog=query.catalog,
            settings=settings.optimizer,
        )
    cost_after = None
    if verification.passed:
        cost_after = _cost(
            candidate.sql, query, warehouse, settings, notes, f"the {candidate.source} rewrite"
        )
    return Rewrite(
        source=candidate.source,
        sql=candidate.sql,
        fixes=candidate.fixes,
        explanation=candidate.explanation,
        status="verified" if verification.passed else "rejected",
        verification=verification,
        cost_after=cost_after,
    )


def _public_url(url: str) -> str:
    """A warehouse URL without what may be secret (user info, query options).

    >>> _public_url("bigquery://shop-prod?location=EU&credentials=/k.json")
    'bigquery://shop-prod'
    """
    scheme, sep, rest = url.partition("://")
    rest = rest.split("?", 1)[0]
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def optimize_warehouse(
    settings: Settings, sql: str, dialect: Dialect | None = None
) -> OptimizationReport:
    """``shopstream optimize-sql``: :func:`optimize` on the warehouse ``settings`` name, opened
    read-only; when a running platform holds it and only one process may (DuckDB's file), that
    platform answers over its local socket instead. ``dialect``: the warehouse's by default.

    Raises SqlSyntaxError for a query that does not parse (or names a missing column),
    WarehouseError naming what went wrong with the warehouse.
    """
    from shopstream.genai.optimizer.query import warehouse_dialect
    from shopstream.runtime import optimize_running, read_here_or_running

    chosen = dialect or warehouse_dialect(settings.warehouse)
    parse_query(sql, chosen)  # a typo fails here, before any warehouse is opened or asked
    return read_here_or_running(
        settings,
        lambda warehouse: optimize(sql, dialect=chosen, warehouse=warehouse, settings=settings),
        lambda: OptimizationReport.model_validate(optimize_running(settings.data_dir, sql, chosen)),
    )


__all__ = ["optimize", "optimize_warehouse"]
