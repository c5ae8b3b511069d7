"""null_rate: the share of rows whose ``column`` is NULL in the last complete hour (or day), against
the same hour-of-week (day-of-week) of the previous weeks, and an optional absolute ceiling.

It alarms on an increase only when it is both large (``warn_increase`` / ``fail_increase``
over the baseline rate, in rate units: 0.05 = five percentage points) and beyond ``min_score``
spreads of the baseline's own noise, so a quiet hour's few rows do not alarm. ``max_rate`` is a
rule, not a baseline: above it fails even while the baseline is still learning. ``window: all``
judges the whole table against ``max_rate`` only.

Options: window (hour | day | all), max_rate, warn_increase, fail_increase, min_score,
baseline_weeks, min_history_weeks, time_column, where.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.baseline import judge_rates, lookback_weeks
from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import (
    PERIOD,
    CheckOptionError,
    bound,
    count_words,
    ident,
    pct,
    relation,
    require_column,
    result,
    seasonal_buckets,
    time_column,
    where_sql,
)

SEVERITY = "medium"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Literal["hour", "day", "all"] = "hour"
    max_rate: float | None = Field(None, ge=0, le=1)
    warn_increase: float = Field(0.05, ge=0, le=1)
    fail_increase: float = Field(0.2, ge=0, le=1)
    min_score: float = Field(4.0, ge=0)
    baseline_weeks: int = Field(4, ge=1, le=12)
    min_history_weeks: float = Field(3.0, ge=1, le=12)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_increase < self.warn_increase:
            raise ValueError("fail_increase must be at least warn_increase")
        return self


def _null_keys(
    ctx: CheckContext, check: PlannedCheck, column: str, condition: str, params: list[Any]
) -> list[dict[str, Any]]:
    """A few rows with the NULL, by the table's key (only asked when the check alarms)."""
    keys = [k for k in check.table_spec.key if k in ctx.columns(check.table)]
    time_col = check.table_spec.time_column
    shown = [*keys, *([time_col] if time_col and time_col in ctx.columns(check.table) else [])]
    if not shown:
        return []
    sql = (
        f"SELECT {', '.join(ident(c) for c in shown)} FROM {relation(check.table)} "
        f"WHERE {ident(column)} IS NULL{condition} LIMIT {int(ctx.evidence_rows)}"
    )
    return ctx.query(sql, params).to_pylist()


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column = require_column(ctx, check, check.spec.column, "null_rate")
    ceiling = "" if params.max_rate is None else f"; fail above {pct(params.max_rate)} at any time"
    if params.window == "all":
        return [_whole_table(ctx, check, column, params)]
    granularity = params.window
    buckets = seasonal_buckets(
        ctx,
        check,
        time_override=params.time_column,
        where=params.where,
        granularity=granularity,
        weeks=lookback_weeks(params.baseline_weeks),
        sums_sql=[f"CASE WHEN {ident(column)} IS NULL THEN 1 ELSE 0 END"],
    )
    window = buckets.window
    nulls: list[float | None] = [s[0] if s else None for s in buckets.sums]
    verdict = judge_rates(
        nulls, buckets.rows, period=PERIOD[granularity], weeks=params.baseline_weeks
    )
    rows = buckets.rows[0] or 0.0
    observed = verdict.observed
    threshold = (
        f"same {granularity} of the week in the last {params.baseline_weeks} weeks: warn "
        f"{params.warn_increase * 100:g} points above it, fail {params.fail_increase * 100:g} "
        f"points above (and beyond {params.min_score:g} spreads){ceiling}"
    )
    details: dict[str, Any] = {
        "rows": rows,
        "nulls": nulls[0] or 0.0,
        "baseline": [round(v, 5) for v in verdict.baseline],
        "spread": round(verdict.sigma, 5),
        "extra_spread": round(verdict.extra, 5),
        "dispersion": round(verdict.dispersion, 3),
        "score": round(verdict.score, 2),
        "history_weeks": round(verdict.history_weeks, 2),
        "training_buckets": verdict.training,
    }
    common: dict[str, Any] = {
        "kind": "null_rate",
        "severity": SEVERITY,
        "threshold": threshold,
        "unit": "share of rows",
        "column": column,
        "evidence_rows": ctx.evidence_rows,
        "window_start": window.start,
        "window_end": window.end,
        "details": details,
    }
    seen = f"NULL {column} in {pct(observed)} of {count_words(rows)} rows in {window.label}"
    if rows <= 0:
        return [
            result(
                check,
                status="pass",
                observed=None,
                expected=verdict.expected,
                message=f"no rows of {check.table} in {window.label}: no null rate to judge",
                **common,
            )
        ]
    over_ceiling = params.max_rate is not None and observed > params.max_rate
    learning = verdict.expected is None or verdict.history_weeks < params.min_history_weeks
    status: Status = "pass"
    if learning:
        status = "learning"
        message = (
            f"{seen}; learning: {verdict.history_weeks:.1f} weeks of history, needs "
            f"{params.min_history_weeks:g} (min_history_weeks) to judge against a baseline"
        )
    else:
        expected = verdict.expected or 0.0
        increase = observed - expected
        significant = verdict.score >= params.min_score
        if significant and increase >= params.fail_increase:
            status = "fail"
        elif significant and increase >= params.warn_increase:
            status = "warn"
        usual_high = min(1.0, expected + params.min_score * verdict.sigma)
        message = (
            f"{seen}, usually {pct(expected)} (up to {pct(usual_high)}): "
            f"{increase * 100:+.1f} points"
        )
        details["increase"] = round(increase, 5)
    if over_ceiling:
        status = "fail"
        message += f"; above the ceiling of {pct(params.max_rate or 0.0)} (max_rate)"
    evidence: list[dict[str, Any]] = []
    if status in ("warn", "fail"):
        col, sql_type = time_column(ctx, check, params.time_column)
        evidence = _null_keys(
            ctx,
            check,
            column,
            f" AND {ident(col)} >= ? AND {ident(col)} < ?{where_sql(params.where)}",
            [bound(window.start, sql_type), bound(window.end, sql_type)],
        )
    return [
        result(
            check,
            status=status,
            observed=observed,
            expected=verdict.expected,
            message=message,
            evidence=evidence,
            **common,
        )
    ]


def _whole_table(
    ctx: CheckContext, check: PlannedCheck, column: str, params: Params
) -> CheckResult:
    if params.max_rate is None:
        raise CheckOptionError(
            "window: all has no baseline to compare with: set `max_rate` (the highest share "
            "of NULLs allowed) or use window: hour | day"
        )
    where = where_sql(params.where)
    row = ctx.query(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE {ident(column)} IS NULL) AS k "
        f"FROM {relation(check.table)} WHERE true{where}"
    ).to_pylist()[0]
    rows, nulls = row["n"], row["k"]
    rate = nulls / rows if rows else 0.0
    status: Status = "fail" if rate > params.max_rate else "pass"
    evidence = _null_keys(ctx, check, column, where, []) if status == "fail" else []
    return result(
        check,
        kind="null_rate",
        severity=SEVERITY,
        status=status,
        observed=rate,
        expected=None,
        threshold=f"fail above {pct(params.max_rate)}",
        unit="share of rows",
        column=column,
        message=(
            f"NULL {column} in {pct(rate)} of {count_words(rows)} rows of {check.table} "
            f"(at most {pct(params.max_rate)} allowed)"
        ),
        evidence=evidence,
        evidence_rows=ctx.evidence_rows,
        details={"rows": rows, "nulls": nulls},
    )
