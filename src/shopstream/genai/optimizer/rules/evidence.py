"""A rule's finding at a node of the query: the node's SQL is the evidence, its place in the
text the position; and how messages state a table's size. Shared by the scan and join rules.

>>> from shopstream.genai.optimizer.query import parse_query
>>> q = parse_query("select event_id\\nfrom raw.events", "duckdb")
>>> table = q.tree.find(exp.Table)
>>> f = finding(q, "example", table, severity="low", title="t", message="m", fix="f")
>>> f.evidence, (f.position.line, f.position.column), rows_text(12000)
('raw.events', (2, 6), '12,000 rows')
"""

from __future__ import annotations

from sqlglot import exp

from shopstream.genai.optimizer.findings import Finding, Severity
from shopstream.genai.optimizer.query import Query, position_of


def finding(
    query: Query,
    rule: str,
    node: exp.Expression,
    *,
    severity: Severity,
    title: str,
    message: str,
    fix: str,
    evidence: str | None = None,
    tradeoff: str | None = None,
    rewrite: str | None = None,
) -> Finding:
    """A finding on ``node``: its SQL is the evidence (unless given), its place the position."""
    return Finding(
        rule=rule,
        severity=severity,
        title=title,
        message=message,
        evidence=evidence or query.sql_of(node),
        position=position_of(node, query.sql),
        fix=fix,
        tradeoff=tradeoff,
        rewrite=rewrite,
    )


def rows_text(rows: int | None) -> str:
    """A table's row count as messages say it."""
    return f"{rows:,} rows" if rows is not None else "rows unknown"
