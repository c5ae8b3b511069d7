"""What the analyst is given about a run's alarming checks (warn, fail, error): each check's
result, its trend (earlier runs of the same check in ``monitoring.data_quality_checks``), the
related checks of this run, the pipeline's state and the newest dead-letter reasons.

Everything here is read in the platform's process, through the warehouse's read-only query,
after the checks ran; rows taken from the warehouse are redacted (shopstream.quality.redact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from shopstream.quality.redact import redact_rows
from shopstream.quality.results import CHECKS_TABLE, CheckResult

if TYPE_CHECKING:
    from shopstream.genai.data_quality_agent import QualityEvidence

Query = Callable[..., pa.Table]
#: ``exists(layer, table)``: whether the warehouse has it (None: DuckDB's information_schema).
Exists = Callable[[str, str], bool]

#: Earlier runs of a check shown as its trend (a day at the default 30-minute schedule would
#: be 48: the newest dozen say whether it is new, growing or flapping).
TREND_RUNS = 12
#: Related checks shown per alarming check.
RELATED_CHECKS = 10
#: Dead-letter reasons of the last day before the run's "now", the commonest first.
DEAD_LETTER_HOURS = 24
DEAD_LETTER_REASONS = 10


def _exists(query: Query, schema: str, table: str) -> bool:
    rows = query(
        "SELECT count(*) AS n FROM information_schema.tables "
        "WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    )
    return bool(rows.column(0)[0].as_py())


def trends(
    query: Query,
    checks: Sequence[str],
    run_id: str,
    before: datetime,
    *,
    exists: Exists | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per check name: its earlier runs (checked_at, status, observed), newest first."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in checks}
    there = exists or (lambda schema, table: _exists(query, schema, table))
    if not checks or not there("monitoring", CHECKS_TABLE):
        return found
    marks = ", ".join("?" for _ in checks)
    rows = query(
        "SELECT check_name, checked_at, status, observed FROM ("
        "  SELECT check_name, checked_at, status, observed, row_number() OVER ("
        "    PARTITION BY check_name ORDER BY checked_at DESC) AS n"
        f"  FROM monitoring.{CHECKS_TABLE}"
        f"  WHERE check_name IN ({marks}) AND run_id <> ? AND checked_at <= ?"
        f") WHERE n <= {TREND_RUNS} ORDER BY check_name, checked_at DESC",
        [*checks, run_id, before],
    ).to_pylist()
    for row in rows:
        found[row["check_name"]].append(
            {
                "checked_at": row["checked_at"].isoformat(),
                "status": row["status"],
                "observed": row["observed"],
            }
        )
    return found


def related(result: CheckResult, results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    """This run's other checks on the same table, then the alarming ones of the same stage
    (raw, staging, mart, pipeline)."""
    stage = result.table.split(".", 1)[0]
    same_table = [r for r in results if r is not result and r.table == result.table]
    same_stage = [
        r
        for r in results
        if r is not result
        and r.table != result.table
        and r.table.split(".", 1)[0] == stage
        and r.alarming
    ]
    return [
        {"check": r.check, "status": r.status, "observed": r.observed, "message": r.message}
        for r in (same_table + same_stage)[:RELATED_CHECKS]
    ]


def dead_letter_reasons(
    query: Query, now: datetime, *, exists: Exists | None = None
) -> list[dict[str, Any]]:
    there = exists or (lambda schema, table: _exists(query, schema, table))
    if not there("raw", "dead_letter"):
        return []
    rows = query(
        "SELECT reason, source, count(*) AS count FROM raw.dead_letter "
        "WHERE received_at >= ? AND received_at < ? "
        f"GROUP BY ALL ORDER BY count DESC, reason LIMIT {DEAD_LETTER_REASONS}",
        [now - timedelta(hours=DEAD_LETTER_HOURS), now],
    ).to_pylist()
    return redact_rows(rows)


def gather_evidence(
    query: Query,
    results: Sequence[CheckResult],
    *,
    run_id: str,
    checked_at: datetime,
    pipeline: Mapping[str, Any],
    exists: Exists | None = None,
) -> QualityEvidence:
    """The analyst's evidence for the alarming results of one run (``query`` reads DuckDB's
    SQL: a :class:`shopstream.quality.dialect.WarehouseReader` says it to other warehouses,
    and gives ``exists``)."""
    from shopstream.genai.data_quality_agent import CheckEvidence, QualityEvidence

    alarming = [r for r in results if r.alarming]
    trend = trends(query, sorted({r.check for r in alarming}), run_id, checked_at, exists=exists)
    return QualityEvidence(
        run_id=run_id,
        checked_at=checked_at,
        checks=[
            CheckEvidence(
                result=r.to_dict(), trend=trend.get(r.check, []), related=related(r, results)
            )
            for r in alarming
        ],
        pipeline=dict(pipeline),
        dead_letter_reasons=dead_letter_reasons(query, checked_at, exists=exists),
    )


__all__ = [
    "DEAD_LETTER_HOURS",
    "TREND_RUNS",
    "dead_letter_reasons",
    "gather_evidence",
    "related",
    "trends",
]
