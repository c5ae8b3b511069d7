"""volume: rows per complete hour (or day) in the shop's time zone against the same hour-of-week
(day-of-week) of the previous weeks: drops and spikes (see :mod:`shopstream.quality.baseline`).

One query: rows per UTC quarter-hour over the weeks the baseline needs, folded into local
hours or days here. With less than ``min_history_weeks`` of data the check says "learning".

Options: granularity (hour | day), baseline_weeks, min_history_weeks, warn_score, fail_score
(spreads from the expectation), min_change (a relative change below which it never alarms),
time_column, where.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.baseline import count_band, judge_counts, lookback_weeks
from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import PERIOD, Granularity, count_words, result, seasonal_buckets

SEVERITY = "high"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granularity: Literal["hour", "day"] = "hour"
    baseline_weeks: int = Field(4, ge=1, le=12)
    min_history_weeks: float = Field(3.0, ge=1, le=12)
    warn_score: float = Field(4.0, gt=0)
    fail_score: float = Field(6.0, gt=0)
    min_change: float = Field(0.2, ge=0)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_score < self.warn_score:
            raise ValueError("fail_score must be at least warn_score")
        return self


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    granularity: Granularity = params.granularity
    period = PERIOD[granularity]
    buckets = seasonal_buckets(
        ctx,
        check,
        time_override=params.time_column,
        where=params.where,
        granularity=granularity,
        weeks=lookback_weeks(params.baseline_weeks),
    )
    window = buckets.window
    verdict = judge_counts(buckets.rows, period=period, weeks=params.baseline_weeks)
    what = f"rows of {check.table}"
    unit = f"rows per {granularity}"
    threshold = (
        f"same {granularity} of the week in the last {params.baseline_weeks} weeks: warn beyond "
        f"{params.warn_score:g} spreads, fail beyond {params.fail_score:g}, never under a "
        f"{params.min_change:.0%} change"
    )
    common = {
        "kind": "volume",
        "severity": SEVERITY,
        "threshold": threshold,
        "unit": unit,
        "evidence_rows": ctx.evidence_rows,
        "window_start": window.start,
        "window_end": window.end,
    }
    observed = verdict.observed
    details: dict[str, Any] = {
        "granularity": granularity,
        "baseline": [round(v, 2) for v in verdict.baseline],
        "levels": [round(v, 4) for v in verdict.levels],
        "spread": round(verdict.sigma, 4),
        "extra_spread": round(verdict.extra, 4),
        "dispersion": round(verdict.dispersion, 3),
        "score": round(verdict.score, 2),
        "history_weeks": round(verdict.history_weeks, 2),
        "training_buckets": verdict.training,
    }
    if verdict.expected is None or verdict.history_weeks < params.min_history_weeks:
        have = verdict.history_weeks
        message = (
            f"learning: {have:.1f} weeks of {check.table} history before {window.label}, "
            f"needs {params.min_history_weeks:g} (min_history_weeks) to judge its volume"
        )
        return [
            result(
                check,
                status="learning",
                observed=observed,
                expected=verdict.expected,
                message=message,
                details=details,
                **common,  # type: ignore[arg-type]
            )
        ]
    expected = verdict.expected
    change = (observed / expected - 1) if expected > 0 else (math.inf if observed > 0 else 0.0)
    big = abs(change) >= params.min_change
    status: Status = "pass"
    if big and abs(verdict.score) >= params.fail_score:
        status = "fail"
    elif big and abs(verdict.score) >= params.warn_score:
        status = "warn"
    low, high = count_band(verdict, params.warn_score, params.min_change)
    if math.isinf(change):
        how = "none expected"
    elif change < 0:
        how = f"{-change:.0%} fewer"
    else:
        how = f"{change:.0%} more"
    message = (
        f"{count_words(observed)} {what} in {window.label}, expected ~{count_words(expected)} "
        f"(usual range {count_words(low)}-{count_words(high)}): {how}"
    )
    details.update(
        {"change": None if math.isinf(change) else round(change, 4), "low": low, "high": high}
    )
    # The same slot of the previous weeks, as counted (the expectation scales them by the level).
    evidence = [{"window": window.label, "rows": round(observed, 2)}]
    for k in range(1, params.baseline_weeks + 1):
        past = buckets.rows[k * period] if k * period < len(buckets.rows) else None
        if past is not None:
            evidence.append({"window": buckets.label(k * period), "rows": round(past, 2)})
    return [
        result(
            check,
            status=status,
            observed=observed,
            expected=expected,
            message=message,
            details=details,
            evidence=evidence,
            **common,  # type: ignore[arg-type]
        )
    ]
