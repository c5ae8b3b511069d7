"""What an optimization report is made of. Pydantic models: the CLI prints them, the HTTP route
returns them as JSON, the benchmark scores them.

>>> Finding(rule="order_by_without_limit", severity="low", title="ORDER BY without LIMIT",
...         message="the whole result is sorted", evidence="ORDER BY received_at",
...         fix="drop the ORDER BY, or add a LIMIT").rule
'order_by_without_limit'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Severity = Literal["high", "medium", "low", "info"]
Dialect = Literal["duckdb", "bigquery"]
DIALECTS: tuple[Dialect, ...] = ("duckdb", "bigquery")

#: Dollars per TiB scanned at BigQuery's on-demand list price (settings: optimizer.price_per_tib).
LIST_PRICE_PER_TIB = 6.25
TIB = 1024**4


class Position(BaseModel):
    """Where the offending expression starts in the query as given (1-based line and column;
    ``offset`` 0-based into the text)."""

    line: int
    column: int
    offset: int


class Finding(BaseModel):
    """One anti-pattern found in a query."""

    #: A stable id (the rule's name in :data:`shopstream.genai.optimizer.rules.RULES`).
    rule: str
    severity: Severity
    #: A short heading ("SELECT * on a wide table").
    title: str
    #: What is wrong, in the query's own words: tables, columns, numbers.
    message: str
    #: The offending expression as SQL, in the query's dialect.
    evidence: str
    position: Position | None = None
    #: The concrete fix, in words (and SQL where it helps).
    fix: str
    #: What the fix gives up, when it is not free (APPROX_COUNT_DISTINCT is approximate).
    tradeoff: str | None = None
    #: The whole query rewritten to fix this (in the query's dialect), when the fix is
    #: mechanical; shown only once verified (:mod:`.verify`).
    rewrite: str | None = None


class Cost(BaseModel):
    """What a query scans, and what that costs at on-demand list price."""

    bytes: int
    dollars: float
    #: How it was measured: "BigQuery dry run", or "estimate: column sizes of 3 tables,
    #: 2 of 30 partitions of raw.events".
    method: str


class Verification(BaseModel):
    """How a rewrite was checked, step by step; ``passed`` only when every step passed."""

    passed: bool
    parses: bool
    same_schema: bool | None = None
    same_results: bool | None = None
    #: What the rows were compared on: "full data (12,345 rows in, 108 out)" or "a 10% sample
    #: of raw.events (hash of event_id), full data of the others".
    compared_on: str = ""
    #: Why it failed (None when it passed).
    reason: str | None = None


class Rewrite(BaseModel):
    """A rewrite of the whole query, from a rule or the LLM, with its verification."""

    #: "rule:<rule id>" or "llm:<provider:model>".
    source: str
    sql: str
    #: The findings it fixes (rule ids).
    fixes: list[str] = Field(default_factory=list)
    explanation: str = ""
    #: "verified": shown as a fix; "rejected": reported with why, never offered.
    status: Literal["verified", "rejected"]
    verification: Verification
    cost_after: Cost | None = None


class OptimizationReport(BaseModel):
    sql: str
    dialect: Dialect
    #: The warehouse it was checked against (URL without secrets), "" when none.
    warehouse: str = ""
    findings: list[Finding] = Field(default_factory=list)
    cost_before: Cost | None = None
    rewrites: list[Rewrite] = Field(default_factory=list)
    #: Why something could not be done (no warehouse, cost unknown, LLM unreachable, ...).
    notes: list[str] = Field(default_factory=list)

    @property
    def verified(self) -> list[Rewrite]:
        return [r for r in self.rewrites if r.status == "verified"]
