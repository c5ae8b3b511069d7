"""freshness: how long ago the newest row landed (``now - max(landed column)``) against an SLA.

The landed column is the table's ``landed_column`` (received_at, ingested_at), else its
``time_column``, unless the check's ``time_column`` option names another. An empty table fails:
nothing has landed at all. A newest row in the future (a clock ahead) counts as just landed.

Options: warn_after_minutes, fail_after_minutes, time_column, where.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import ident, minutes_words, result, time_column, where_sql

SEVERITY = "high"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn_after_minutes: float = Field(30.0, gt=0)
    fail_after_minutes: float = Field(60.0, gt=0)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_after_minutes < self.warn_after_minutes:
            raise ValueError("fail_after_minutes must be at least warn_after_minutes")
        return self


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column, _ = time_column(ctx, check, params.time_column, landed=True)
    newest = ctx.query(
        f"SELECT max({ident(column)}) AS newest FROM {ident(check.table)} "
        f"WHERE true{where_sql(params.where)}"
    ).to_pylist()[0]["newest"]
    threshold = (
        f"warn above {minutes_words(params.warn_after_minutes)}, "
        f"fail above {minutes_words(params.fail_after_minutes)}"
    )
    common = {
        "kind": "freshness",
        "severity": SEVERITY,
        "threshold": threshold,
        "unit": "minutes",
        "column": column,
        "evidence_rows": ctx.evidence_rows,
        "window_end": ctx.now,
    }
    if newest is None:
        filtered = " matching `where`" if params.where else ""
        return [
            result(
                check,
                status="fail",
                observed=None,
                expected=params.warn_after_minutes,
                message=f"{check.table} has no rows{filtered}: nothing has landed",
                **common,  # type: ignore[arg-type]
            )
        ]
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)  # naive TIMESTAMPs hold UTC here
    lag = max(0.0, (ctx.now - newest).total_seconds() / 60)
    status: Status = "pass"
    if lag > params.fail_after_minutes:
        status = "fail"
    elif lag > params.warn_after_minutes:
        status = "warn"
    message = (
        f"newest row of {check.table} landed {minutes_words(lag)} ago "
        f"({column} {newest.astimezone(ctx.timezone):%a %d %b %H:%M %Z}); {threshold}"
    )
    return [
        result(
            check,
            status=status,
            observed=round(lag, 2),
            expected=params.warn_after_minutes,
            message=message,
            evidence=[{"newest": newest.isoformat(), "minutes_ago": round(lag, 2)}],
            details={"newest": newest.isoformat(), "lag_minutes": round(lag, 2)},
            **common,  # type: ignore[arg-type]
        )
    ]
