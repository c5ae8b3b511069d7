"""Kind ``dead_letters``: did the share of refused records jump?

The last COMPLETE hour (``window: hour``; ``day``: the last complete business day) is judged:
its dead letters per accepted event (raw.events landed in it), against the usual rate, which
is the median of the hourly (daily) rates over the ``baseline_weeks`` before it (the window
itself left out). A median shrugs off an earlier surge, and a shop whose trackers always send
a trickle of bad events gets that trickle as its usual rate instead of an alarm.

It alarms only when all of these hold: at least ``min_count`` dead letters; a rate above
``warn_rate`` (``fail_rate``); and a rate above ``warn_factor`` (``fail_factor``) times the
usual rate. Dead letters with no accepted events at all (everything refused) fail once there
are ``min_count``. Evidence: the most frequent reasons (source, reason code, count) with a
sample record each, personal data redacted.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import evidence, plural
from shopstream.quality.redact import redact_value
from shopstream.quality.results import CheckResult, Severity
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import Window, last_complete, relation

SEVERITY: Severity = "high"
EVENTS = "raw.events"
_SAMPLE_CHARS = 300


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Literal["hour", "day"] = "hour"
    baseline_weeks: int = Field(default=4, ge=1, le=52)
    #: Dead letters per accepted event above which it may warn / fail.
    warn_rate: float = Field(default=0.01, ge=0)
    fail_rate: float = Field(default=0.05, ge=0)
    #: ... and only as many times the usual rate.
    warn_factor: float = Field(default=3.0, ge=1)
    fail_factor: float = Field(default=10.0, ge=1)
    #: Fewer dead letters than this never alarm (one bad client is not an incident).
    min_count: int = Field(default=20, ge=1)


def _counts(ctx: CheckContext, table: str, since: datetime, window: Window) -> dict[int, int]:
    """Rows landed per bucket: bucket 0 is exactly the window under test (the rows its reasons
    come from), -1 the hour (day) before it, ... Baseline buckets are plain arithmetic on epochs
    back from the window's start (cheap on a big table; a baseline day across a clock change is
    an hour off, which a median over weeks does not feel)."""
    seconds = 3600 if window.granularity == "hour" else 86400
    # The bucket's length is written into the SQL, not passed: bqemulator (the BigQuery tests'
    # peer) loses a parameter that divides.
    rows = ctx.query(
        f"""SELECT CASE WHEN received_at >= ? THEN 0
                        ELSE CAST(floor((epoch(received_at) - ?) / {seconds}) AS BIGINT)
                        END AS bucket,
                   count(*) AS n
            FROM {relation(table)} WHERE received_at >= ? AND received_at < ?
            GROUP BY bucket""",
        [window.start, window.start.timestamp(), since, window.end],
    ).to_pylist()
    return {int(row["bucket"]): int(row["n"]) for row in rows}


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    # The same local hour (day) the baseline kinds judge: across a clock change too.
    window = last_complete(ctx.now, ctx.timezone, params.window)
    start, end = window.start, window.end
    since = start - timedelta(weeks=params.baseline_weeks)
    unit = window.granularity
    letters = _counts(ctx, check.table, since, window)
    accepted = _counts(ctx, EVENTS, since, window) if ctx.exists(EVENTS) else {}
    dead, events = letters.pop(0, 0), accepted.pop(0, 0)
    # The usual rate: buckets that had traffic (a quiet night hour with neither says nothing).
    rates = [letters.get(bucket, 0) / n for bucket, n in accepted.items() if n > 0]
    usual = statistics.median(rates) if rates else None
    rate = dead / events if events else None

    def alarming(rate_limit: float, factor: float) -> bool:
        if dead < params.min_count:
            return False
        if rate is None:  # dead letters and nothing accepted: everything is being refused
            return True
        return rate > rate_limit and (usual is None or rate > factor * usual)

    if alarming(params.fail_rate, params.fail_factor):
        status: Literal["pass", "warn", "fail"] = "fail"
    elif alarming(params.warn_rate, params.warn_factor):
        status = "warn"
    else:
        status = "pass"
    reasons = _reasons(ctx, check.table, start, end) if dead else []
    local = window.wall
    period = (
        f"the hour from {local:%Y-%m-%d %H:%M} {ctx.timezone.key}"
        if unit == "hour"
        else f"{local:%Y-%m-%d}"
    )
    shown_rate = "no accepted events" if rate is None else f"{rate:.2%} of accepted events"
    usual_text = "no usual rate yet" if usual is None else f"usually {usual:.3%}"
    message = f"{plural(dead, 'dead letter')} in {period} ({shown_rate}; {usual_text})"
    if reasons:
        top = reasons[0]
        message += f"; most: {top['reason']} ({top['count']})"
    return [
        CheckResult(
            check=check.name,
            kind=check.spec.kind,
            table=check.table,
            column=None,
            status=status,
            observed=rate if rate is not None else float(dead),
            expected=usual,
            threshold=(
                f"at least {params.min_count} dead letters and above {params.warn_rate:.1%} of "
                f"accepted events and {params.warn_factor:g}x the usual rate warns; above "
                f"{params.fail_rate:.1%} and {params.fail_factor:g}x fails"
            ),
            severity=check.spec.severity or SEVERITY,
            message=message,
            evidence=evidence(ctx, reasons),
            details={
                "dead_letters": dead,
                "accepted_events": events,
                "usual_rate": usual,
                "baseline_buckets": len(rates),
            },
            window_start=start,
            window_end=end,
            unit="rate" if rate is not None else "rows",
        )
    ]


def _reasons(ctx: CheckContext, table: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Top reasons: by source and reason code (context.code; the reason text without one)."""
    rows = ctx.query(
        f"""SELECT source,
                   coalesce(json_extract_string(context, '$.code'), reason) AS reason,
                   count(*) AS count,
                   arg_min(reason, received_at) AS example_reason,
                   arg_min(payload, received_at) AS example_payload
            FROM {relation(table)} WHERE received_at >= ? AND received_at < ?
            GROUP BY ALL ORDER BY count DESC, reason LIMIT ?""",
        [start, end, ctx.evidence_rows],
    ).to_pylist()
    for row in rows:
        row["count"] = int(row["count"])
        row["example_payload"] = _sample(row["example_payload"])
    return rows


def _sample(payload: str | None) -> Any:
    """The payload redacted by the shared rules (key by key when it parses; by key pattern,
    e-mail, IP and phone when it is malformed or cut off, as dead letters often are), then cut
    short. Redacted before cutting, so the cut can never expose half a value."""
    if payload is None:
        return None
    text = str(redact_value("payload", payload))
    return text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + "..."


__all__ = ["SEVERITY", "Params", "run"]
