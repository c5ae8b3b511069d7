"""freshness: how long ago the newest row landed (``now - max(landed column)``) against an SLA.

The landed column is the table's ``landed_column`` (received_at, ingested_at), else its
``time_column``, unless the check's ``time_column`` option names another. An empty table fails:
nothing has landed at all. A newest row a little in the future (a clock ahead) counts as just
landed; one more than 5 minutes ahead is not counted.

A quiet hour is not a stall: a small shop takes no order at 04:00 for an hour, and an SLA alone
would alarm every night. So when the SLA is broken the check counts the arrivals (minutes in
which rows landed: an order's rows land together and count once) in the same stretch of time
(newest row -> now) in each of the previous ``baseline_weeks`` weeks (only weeks the table
already had rows); when their median is below ``min_expected_arrivals`` the silence is what
those weeks had too, and it passes, saying so.

Options: warn_after_minutes, fail_after_minutes, baseline_weeks, min_expected_arrivals (0 = the
SLA alone), time_column, where.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import (
    bound,
    ident,
    minutes_words,
    relation,
    result,
    time_column,
    to_utc,
    to_wall,
    where_sql,
)

SEVERITY = "high"
#: How far ahead of now a row's landing time may be and still count (clock skew).
FUTURE_SLACK = timedelta(minutes=5)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn_after_minutes: float = Field(30.0, gt=0)
    fail_after_minutes: float = Field(60.0, gt=0)
    baseline_weeks: int = Field(4, ge=1, le=12)
    min_expected_arrivals: float = Field(3.0, ge=0)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_after_minutes < self.warn_after_minutes:
            raise ValueError("fail_after_minutes must be at least warn_after_minutes")
        return self


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at  # naive TIMESTAMPs hold UTC


def _usual_rows(
    ctx: CheckContext,
    check: PlannedCheck,
    params: Params,
    column: str,
    sql_type: str,
    newest: datetime,
    oldest: datetime,
) -> float | None:
    """The median count of arrivals (minutes with rows landing) in (newest, now] shifted back
    1..baseline_weeks weeks (wall clock), over the weeks after the table's first row; None when
    there are none."""
    spans = []
    for k in range(1, params.baseline_weeks + 1):
        start = to_utc(to_wall(newest, ctx.timezone) - timedelta(weeks=k), ctx.timezone)
        end = to_utc(to_wall(ctx.now, ctx.timezone) - timedelta(weeks=k), ctx.timezone)
        if start >= oldest and end > start:
            spans.append((start, end))
    if not spans:
        return None
    col = ident(column)
    minute = f"epoch_us({col}) // 60000000"
    counts = ", ".join(
        f"count(DISTINCT {minute}) FILTER (WHERE {col} > ? AND {col} <= ?) AS w{i}"
        for i in range(len(spans))
    )
    values: list[Any] = [bound(t, sql_type) for span in spans for t in span]
    values += [bound(spans[-1][0], sql_type), bound(spans[0][1], sql_type)]
    row = ctx.query(
        f"SELECT {counts} FROM {relation(check.table)} "
        f"WHERE {col} > ? AND {col} <= ?{where_sql(params.where)}",
        values,
    ).to_pylist()[0]
    return float(median(row[f"w{i}"] for i in range(len(spans))))


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column, sql_type = time_column(ctx, check, params.time_column, landed=True)
    # Rows "landed" after now + FUTURE_SLACK are not evidence of freshness: a clock far ahead,
    # or a run pinned to a moment in the past (tests, benchmarks, replays).
    col = ident(column)
    found = ctx.query(
        f"SELECT max({col}) FILTER (WHERE {col} <= ?) AS newest, min({col}) AS oldest "
        f"FROM {relation(check.table)} WHERE true{where_sql(params.where)}",
        [bound(ctx.now + FUTURE_SLACK, sql_type)],
    ).to_pylist()[0]
    newest, oldest = found["newest"], found["oldest"]
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
    newest, oldest = _aware(newest), _aware(oldest)
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
    details: dict[str, Any] = {"newest": newest.isoformat(), "lag_minutes": round(lag, 2)}
    if status != "pass" and params.min_expected_arrivals > 0 and newest < ctx.now:
        usual = _usual_rows(ctx, check, params, column, sql_type, newest, oldest)
        if usual is not None:
            details["usual_arrivals_in_gap"] = usual
            if usual < params.min_expected_arrivals:
                status = "pass"
                message += (
                    f"; but a quiet time: the same stretch of the previous weeks had "
                    f"~{usual:g} arrivals (below min_expected_arrivals "
                    f"{params.min_expected_arrivals:g})"
                )
    return [
        result(
            check,
            status=status,
            observed=round(lag, 2),
            expected=params.warn_after_minutes,
            message=message,
            evidence=[{"newest": newest.isoformat(), "minutes_ago": round(lag, 2)}],
            details=details,
            **common,  # type: ignore[arg-type]
        )
    ]
