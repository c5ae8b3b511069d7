"""Rewrites asked of the configured LLM (``SHOPSTREAM_LLM``): proposals, never advice on trust.

The model is told the query, its dialect, the columns and layout of the tables it reads and
what the rules found, and answers ``{"rewrites": [{"sql": ..., "explanation": ...}]}``. Each
proposal then goes through :func:`shopstream.genai.optimizer.verify.verify` like a rule's
rewrite: shown only once proven equal, otherwise reported as rejected with why.

>>> from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
>>> from shopstream.genai.optimizer.query import parse_query
>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"), Column("event_date", "DATE")),
...                    rows=6000, partition_by="event_date")
>>> q = parse_query("select * from raw.events", "duckdb", Catalog({"raw.events": events}))
>>> print(tables_text(q))
- raw.events (6,000 rows; partitioned by event_date): event_id VARCHAR, event_date DATE
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from shopstream.genai.optimizer.findings import Finding
from shopstream.genai.optimizer.query import Query

if TYPE_CHECKING:
    from shopstream.genai.llm import ChatModel, Usage

#: Proposals taken from one answer at most (each costs a verification on the warehouse).
MAX_PROPOSALS = 3

SYSTEM = f"""You are a SQL cost optimizer for a data warehouse billed by bytes scanned \
(BigQuery on-demand pricing; the embedded shape runs DuckDB).
Rewrite the user's query so that it scans fewer bytes or does less work, while returning \
exactly the same result: the same columns (names, order and types) and the same rows \
(as a multiset; in the same order when the query orders them).
Write each rewrite in the query's own SQL dialect, as one complete query.
Do not change what the query means: never approximate (no APPROX_COUNT_DISTINCT), never add \
or drop a LIMIT, never filter rows the query keeps.
Answer with one JSON object and nothing else:
{{"rewrites": [{{"sql": "<the whole rewritten query>", "explanation": "<what it changes \
and why it is cheaper>"}}]}}
At most {MAX_PROPOSALS} rewrites; {{"rewrites": []}} when you see no safe improvement."""


class Proposal(BaseModel):
    sql: str = Field(min_length=1)
    explanation: str = ""


class Proposals(BaseModel):
    #: Checked one by one (:func:`propose`): one malformed proposal does not cost the others.
    rewrites: list[Any] = Field(default_factory=list)


def tables_text(query: Query) -> str:
    """The tables ``query`` reads, as the model is told them: rows, layout, columns."""
    lines = []
    seen: set[str] = set()
    for table in query.tables:
        info = query.table_info(table)
        if info is None or info.name in seen:
            continue
        seen.add(info.name)
        facts = [] if info.rows is None else [f"{info.rows:,} rows"]
        if info.partition_by:
            facts.append(f"partitioned by {info.partition_by}")
        if info.cluster_by:
            facts.append(f"clustered by {', '.join(info.cluster_by)}")
        if info.unique_key:
            facts.append(f"unique key {', '.join(info.unique_key)}")
        described = f" ({'; '.join(facts)})" if facts else ""
        columns = ", ".join(f"{c.name} {c.type}" for c in info.columns)
        lines.append(f"- {info.name}{described}: {columns}")
    return "\n".join(lines) or "(none of its tables is known to the warehouse)"


def prompt(query: Query, findings: Sequence[Finding]) -> str:
    """What the model is asked: the query, its dialect, its tables and the findings."""
    found = (
        "\n".join(f"- {f.rule} ({f.severity}): {f.message} Fix: {f.fix}" for f in findings)
        or "- none: look for other savings, or answer no rewrites"
    )
    return (
        f"Dialect: {query.dialect}\n\n"
        f"Query:\n{query.sql.strip()}\n\n"
        f"Tables it reads:\n{tables_text(query)}\n\n"
        f"What the rules found:\n{found}\n"
    )


def propose(
    query: Query, findings: Sequence[Finding], model: ChatModel
) -> tuple[list[Proposal], list[str], Usage]:
    """The model's rewrites of ``query`` (at most :data:`MAX_PROPOSALS`), why any of them
    was malformed, and what asking cost.

    Raises :class:`shopstream.genai.llm.LLMFailure` when the model gives no usable answer.
    """
    from shopstream.genai.llm import ask_json

    answer = ask_json(model, SYSTEM, prompt(query, findings), Proposals)
    proposals: list[Proposal] = []
    malformed: list[str] = []
    for number, item in enumerate(answer.value.rewrites[:MAX_PROPOSALS], 1):
        try:
            proposals.append(Proposal.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:2]
            )
            malformed.append(f"proposal {number} is malformed ({problems})")
    return proposals, malformed, answer.usage


__all__ = ["MAX_PROPOSALS", "SYSTEM", "Proposal", "Proposals", "prompt", "propose", "tables_text"]
