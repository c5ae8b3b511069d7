"""Kind ``rule``: a business rule written as a SELECT that returns the rows breaking it.

How users add their own rules (like dbt's singular tests): no rows, no problem. The rows it
returns are counted and the first few kept, redacted, as evidence::

    - kind: rule
      name: staging.stg_orders.total_matches_items
      description: an order's total is the sum of its lines
      window: day                     # {window_start} / {window_end} below
      sql: |
        SELECT o.order_id, o.total_amount, sum(i.quantity * i.unit_price) AS items_total
        FROM staging.stg_orders o JOIN staging.stg_order_items i USING (order_id)
        WHERE o.updated_at >= {window_start}
        GROUP BY o.order_id, o.total_amount
        HAVING o.total_amount <> sum(i.quantity * i.unit_price)

``{window_start}``, ``{window_end}`` and ``{now}`` in the SQL become TIMESTAMPTZ literals: the
window ending at the run's "now" (``window: all`` starts it in 1970). ``warn_rows`` /
``fail_rows``: counts of offending rows above which it warns / fails (0 / 0: any row fails).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import (
    EPOCH,
    evidence,
    grade,
    plural,
    sql_timestamp,
    window_bounds,
)
from shopstream.quality.results import CheckResult, Severity
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import TrailingWindow

SEVERITY: Severity = "high"
_COUNT = "_shopstream_offending_rows"
_LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*\n|/\*.*?\*/))*\s*", re.DOTALL)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: A SELECT (or WITH ... SELECT) returning the offending rows.
    sql: str = ""
    warn_rows: int = Field(default=0, ge=0)
    fail_rows: int = Field(default=0, ge=0)
    window: TrailingWindow = "all"

    @model_validator(mode="after")
    def _one_select(self) -> Params:
        body = _LEADING_COMMENTS.sub("", self.sql).rstrip().rstrip(";").rstrip()
        if not body:
            raise ValueError("give the rule as `sql:`, a SELECT returning the offending rows")
        if not re.match(r"(?i)(select|with|from)\b", body):
            raise ValueError(
                "`sql:` must be one SELECT (or WITH ... SELECT) returning the offending rows"
            )
        if ";" in body:
            raise ValueError("`sql:` must be one statement (no `;` inside)")
        return self

    def statement(self, ctx: CheckContext) -> str:
        start, end = window_bounds(ctx, self.window)
        body = _LEADING_COMMENTS.sub("", self.sql).rstrip().rstrip(";")
        for token, moment in (
            ("{window_start}", start or EPOCH),
            ("{window_end}", end),
            ("{now}", ctx.now),
        ):
            body = body.replace(token, sql_timestamp(moment))
        return body


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    start, end = window_bounds(ctx, params.window)
    # One pass: the first rows and, beside each, how many there are in all.
    rows = ctx.query(
        f"SELECT *, count(*) OVER () AS {_COUNT} FROM ({params.statement(ctx)}) AS offending "
        f"LIMIT {max(ctx.evidence_rows, 1)}"
    ).to_pylist()
    offending = int(rows[0][_COUNT]) if rows else 0
    status = grade(offending, warn=params.warn_rows, fail=params.fail_rows)
    sample: list[dict[str, Any]] = [{k: v for k, v in row.items() if k != _COUNT} for row in rows]
    what = check.spec.description or check.name
    if offending:
        message = f"{plural(offending, 'row')} break the rule: {what}"
    else:
        message = f"no row breaks the rule: {what}"
    if params.warn_rows == params.fail_rows:
        threshold = f"fail above {plural(params.fail_rows, 'offending row')}"
    else:
        threshold = (
            f"warn above {plural(params.warn_rows, 'offending row')}, fail above {params.fail_rows}"
        )
    return [
        CheckResult(
            check=check.name,
            kind=check.spec.kind,
            table=check.table,
            column=check.spec.column,
            status=status,
            observed=float(offending),
            expected=0.0,
            threshold=threshold,
            severity=check.spec.severity or SEVERITY,
            message=message,
            evidence=evidence(ctx, sample),
            details={"offending_rows": offending},
            window_start=start,
            window_end=end,
            unit="rows",
        )
    ]


__all__ = ["SEVERITY", "Params", "run"]
