"""Kind ``tracking_coverage``: how many of the shop database's orders the behaviour tracking saw.

Reads ``mart.tracking_coverage`` (per business day: orders in the database, those a purchase
event names). The last ``days`` COMPLETE business days (in ``ctx.timezone``) are judged: their
matched orders over their orders, against ``warn_below`` / ``fail_below``. A day of a hundred
orders swings by a few points on its own (a few purchase events lost more or less), so the
verdict is on the coverage the day's orders could still have with ``confidence`` (the upper
Wilson bound): it alarms when even that is below the threshold. A drop means lost
purchase events (an ad blocker, a tracking release that broke the purchase call, a collector
outage). Evidence: orders of those days no purchase event names (from staging).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import evidence, plural
from shopstream.quality.results import CheckResult, Severity, Status
from shopstream.quality.spec import PlannedCheck

SEVERITY: Severity = "medium"
ORDERS = "staging.stg_orders"
EVENTS = "staging.stg_events"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn_below: float = Field(default=0.95, ge=0, le=1)
    fail_below: float = Field(default=0.80, ge=0, le=1)
    #: Complete business days judged together (the latest ones).
    days: int = Field(default=1, ge=1, le=366)
    #: How sure the coverage must be below a threshold before it alarms (small days are noisy).
    confidence: float = Field(default=0.999, ge=0.5, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_below > self.warn_below:
            raise ValueError("fail_below must not be above warn_below")
        return self


def business_days(ctx: CheckContext, days: int) -> tuple[datetime, datetime, list[str]]:
    """The last ``days`` complete local days: (start, end) as aware instants, and the dates."""
    today = ctx.now.astimezone(ctx.timezone).date()
    first = today - timedelta(days=days)
    start = datetime.combine(first, time(), tzinfo=ctx.timezone)
    end = datetime.combine(today, time(), tzinfo=ctx.timezone)
    return start, end, [(first + timedelta(days=i)).isoformat() for i in range(days)]


def upper_bound(matched: int, orders: int, confidence: float) -> float:
    """The highest coverage ``matched`` of ``orders`` is consistent with (one-sided Wilson).

    >>> round(upper_bound(138, 150, 0.999), 3), round(upper_bound(9_000, 10_000, 0.999), 3)
    (0.966, 0.909)
    """
    z = NormalDist().inv_cdf(confidence)
    p = matched / orders
    spread = z * math.sqrt(p * (1 - p) / orders + z * z / (4 * orders * orders))
    return min(1.0, (p + z * z / (2 * orders) + spread) / (1 + z * z / orders))


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    start, end, dates = business_days(ctx, params.days)
    totals = ctx.query(
        f"""SELECT coalesce(sum(orders_in_db), 0) AS orders,
                   coalesce(sum(matched_orders), 0) AS matched,
                   coalesce(sum(orders_without_event), 0) AS without_event
            FROM mart.tracking_coverage
            WHERE CAST(coverage_date AS DATE) IN ({", ".join("?" for _ in dates)})""",
        [datetime.fromisoformat(d).date() for d in dates],
    ).to_pylist()[0]
    orders, matched = int(totals["orders"]), int(totals["matched"])
    missing = int(totals["without_event"])
    days = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    threshold = (
        f"warn below {params.warn_below:.0%}, fail below {params.fail_below:.0%} "
        f"(at {params.confidence:.1%} confidence)"
    )

    def result(
        status: Status,
        observed: float | None,
        message: str,
        details: dict[str, Any],
        rows: list[dict[str, Any]] | None = None,
    ) -> list[CheckResult]:
        return [
            CheckResult(
                check=check.name,
                kind=check.spec.kind,
                table=check.table,
                column="coverage_rate",
                status=status,
                observed=observed,
                expected=params.warn_below,
                threshold=threshold,
                severity=check.spec.severity or SEVERITY,
                message=message,
                evidence=evidence(ctx, rows or []),
                details={**details, "days": dates},
                window_start=start,
                window_end=end,
                unit="rate",
            )
        ]

    if not orders:
        return result(
            "pass",
            None,
            f"no orders in the shop database on {days}: nothing to cover",
            {"orders_in_db": 0},
        )
    coverage = matched / orders
    could_be = upper_bound(matched, orders, params.confidence)
    status: Status
    if could_be < params.fail_below:
        status = "fail"
    elif could_be < params.warn_below:
        status = "warn"
    else:
        status = "pass"
    sample: list[dict[str, Any]] = []
    if missing and ctx.exists(ORDERS) and ctx.exists(EVENTS):
        sample = ctx.query(
            f"""SELECT o.order_id, o.created_at, o.status, o.total_amount
                FROM {ORDERS} AS o
                WHERE o.created_at >= ? AND o.created_at < ?
                  AND o.order_id NOT IN (
                      -- A purchase is tracked within seconds of its order: a day either
                      -- side keeps this scan to the days in question.
                      SELECT e.order_id FROM {EVENTS} AS e
                      WHERE e.event_type = 'purchase' AND NOT e.is_bot
                        AND e.order_id IS NOT NULL
                        AND e.event_ts >= ? AND e.event_ts < ?)
                ORDER BY o.created_at LIMIT ?""",
            [start, end, start - timedelta(days=1), end + timedelta(days=1), ctx.evidence_rows],
        ).to_pylist()
    message = (
        f"{coverage:.1%} of {orders} orders on {days} have a purchase event "
        f"({plural(missing, 'order')} without one; with this many orders the true coverage "
        f"is at most {could_be:.1%})"
    )
    return result(
        status,
        coverage,
        message,
        {
            "orders_in_db": orders,
            "matched_orders": matched,
            "orders_without_event": missing,
            "coverage_upper_bound": round(could_be, 4),
            "confidence": params.confidence,
        },
        sample,
    )


__all__ = ["SEVERITY", "Params", "run"]
