"""Alarming check results of every signature, as the quality run hands them to the agent.

The numbers are distinctive (41,230 events; 95 minutes; PSI 0.37) so that a test can find them
in a prompt or a report and tell them from anything a template could contain.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shopstream.genai.data_quality_agent import CheckEvidence, QualityEvidence
from shopstream.quality.results import CheckResult

CHECKED_AT = datetime(2026, 12, 2, 5, 10, tzinfo=UTC)
HOUR_START = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
HOUR_END = HOUR_START + timedelta(hours=1)
DAY_START = datetime(2026, 12, 1, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)


def result(**fields: Any) -> CheckResult:
    base: dict[str, Any] = {
        "column": None,
        "expected": None,
        "severity": "high",
        "unit": "",
        "evidence": [],
        "details": {},
        "window_start": None,
        "window_end": None,
    }
    base.update(fields)
    return CheckResult(**base)


SIGNATURES: dict[str, CheckResult] = {
    "freshness": result(
        check="raw.events.freshness",
        kind="freshness",
        table="raw.events",
        status="fail",
        observed=95.0,
        threshold="warn above 30 min, fail above 60 min",
        message="newest event landed 95 min ago",
        unit="minutes",
    ),
    "freshness_cdc": result(
        check="raw.cdc_orders.freshness",
        kind="freshness",
        table="raw.cdc_orders",
        status="warn",
        observed=22.0,
        threshold="warn above 15 min, fail above 30 min",
        message="newest change landed 22 min ago",
        unit="minutes",
    ),
    "volume_drop": result(
        check="raw.events.volume_hourly",
        kind="volume",
        table="raw.events",
        status="fail",
        observed=16492.0,
        expected=41230.0,
        threshold="|score| > 6 fails, > 4 warns",
        message="16,492 events in 04:00-05:00, expected ~41,230 (usual range 37,004-45,456)",
        unit="rows per hour",
        details={"granularity": "hour", "score": -7.8, "low": 37004.0, "high": 45456.0},
        window_start=HOUR_START,
        window_end=HOUR_END,
    ),
    "volume_spike": result(
        check="raw.events.volume_hourly",
        kind="volume",
        table="raw.events",
        status="warn",
        observed=88120.0,
        expected=41230.0,
        threshold="|score| > 6 fails, > 4 warns",
        message="88,120 events in 04:00-05:00, expected ~41,230 (usual range 37,004-45,456)",
        unit="rows per hour",
        details={"granularity": "hour", "score": 5.1, "low": 37004.0, "high": 45456.0},
        window_start=HOUR_START,
        window_end=HOUR_END,
    ),
    "null_spike": result(
        check="raw.events.null_rate.session_id",
        kind="null_rate",
        table="raw.events",
        column="session_id",
        status="fail",
        observed=0.4135,
        expected=0.0021,
        threshold="fail when 10 points above the baseline",
        unit="share of rows",
        message="session_id NULL in 41.35% of rows against 0.21% usually",
        details={"nulls": 6819, "rows": 16492},
        evidence=[{"event_id": "e-00917"}, {"event_id": "e-00918"}],
        window_start=HOUR_START,
        window_end=HOUR_END,
    ),
    "duplicates": result(
        check="raw.events.duplicates",
        kind="duplicates",
        table="raw.events",
        column="event_id",
        status="fail",
        observed=0.0731,
        threshold="warn above 1%, fail above 5%",
        unit="share of rows",
        message="7.31% of event_id repeated",
        details={"duplicate_rows": 3013, "rows": 41230, "duplicate_keys": 1130},
        evidence=[{"event_id": "e-77", "copies": 4}],
        window_start=HOUR_START,
        window_end=HOUR_END,
    ),
    "schema_drift": result(
        check="raw.source_schemas.schema_drift",
        kind="schema_drift",
        table="raw.cdc_orders",
        status="warn",
        observed=2.0,
        threshold="any change warns",
        unit="changes",
        message="orders: column coupon_code added, total_amount numeric(12,2) -> text",
        details={"version": 2, "added": 1, "removed": 0, "type_changed": 1},
        evidence=[
            {"column": "coupon_code", "change": "added", "type": "text"},
            {"column": "total_amount", "change": "type changed", "type": "numeric -> text"},
        ],
    ),
    "distribution": result(
        check="raw.events.distribution.device_type",
        kind="distribution",
        table="raw.events",
        column="device_type",
        status="fail",
        observed=0.37,
        expected=None,
        threshold="warn above PSI 0.1, fail above 0.25",
        unit="PSI",
        message="device_type PSI 0.37 against last 4 weeks; most moved: ios 81% (was 32%)",
        details={"type": "categorical", "rows": 912000, "baseline_rows": 3480000, "psi": 0.37},
        evidence=[{"device_type": "ios", "share": 0.81, "baseline_share": 0.32, "psi_part": 0.2}],
        window_start=DAY_START,
        window_end=DAY_END,
    ),
    "orphans": result(
        check="staging.stg_order_items.relationships.order_id",
        kind="relationships",
        table="staging.stg_order_items",
        column="order_id",
        status="fail",
        observed=0.0114,
        threshold="fail on any orphan",
        unit="rate",
        message="57 order items without order",
        details={"to": "staging.stg_orders", "orphans": 57, "rows_with_key": 5000},
        evidence=[{"order_id": "O0000031337", "line_no": 1}],
    ),
    "order_totals": result(
        check="staging.stg_orders.order_total_matches_items",
        kind="rule",
        table="staging.stg_orders",
        status="fail",
        observed=12.0,
        threshold="fail above 0 rows",
        unit="rows",
        message="12 orders whose total_amount differs from the sum of their items",
        evidence=[{"order_id": "O0000040001", "total_amount": "120.00", "items_sum": "99.00"}],
    ),
    "status_transition": result(
        check="staging.stg_orders_history.valid_status_transitions",
        kind="rule",
        table="staging.stg_orders_history",
        status="fail",
        observed=3.0,
        threshold="fail above 0 rows",
        unit="rows",
        message="3 orders jumped from PAID to DELIVERED",
        evidence=[{"order_id": "O0000050003", "from": "PAID", "to": "DELIVERED"}],
    ),
    "replication": result(
        check="pipeline.replication",
        kind="replication",
        table="pipeline.replication",
        status="fail",
        observed=734003200.0,
        severity="critical",
        threshold="warn above 256 MiB, fail above 512 MiB retained",
        unit="bytes",
        message="slot shopstream retains 734,003,200 bytes of WAL",
        details={"lag_seconds": 1260.0, "active": False},
    ),
    "dead_letters": result(
        check="raw.dead_letter.dead_letters",
        kind="dead_letters",
        table="raw.dead_letter",
        status="fail",
        observed=0.0442,
        expected=0.0012,
        unit="rate",
        threshold="warn above 1%, fail above 3% of accepted events",
        message="4.42% of events dead-lettered against 0.12% usually",
        window_start=HOUR_START,
        window_end=HOUR_END,
    ),
    "tracking_coverage": result(
        check="mart.tracking_coverage.tracking_coverage",
        kind="tracking_coverage",
        table="mart.tracking_coverage",
        status="warn",
        observed=0.883,
        unit="rate",
        threshold="warn below 95%, fail below 85%",
        message="88.3% of orders have a purchase event",
        window_start=DAY_START,
        window_end=DAY_END,
    ),
    "error": result(
        check="raw.events.null_rate.coupon",
        kind="null_rate",
        table="raw.events",
        column="coupon",
        status="error",
        observed=None,
        threshold="",
        message="raw.events has no column coupon: fix the column option in the checks YAML",
    ),
}

DEAD_LETTER_REASONS = [
    {"reason": "schema_validation: properties.price missing", "source": "collector", "count": 1822},
    {"reason": "json_decode", "source": "collector", "count": 41},
]

#: As the platform reports it (Platform.pipeline_facts).
PIPELINE: dict[str, Any] = {
    "transform": {"running": False, "runs": 14, "last_ok": True, "last_finished": None},
    "cdc": {"state": "streaming", "changes": 48213, "lag_bytes": 734003200, "lag_seconds": 1260},
    "collector": {"accepted": 16492, "rejected": 1863, "sink_pending_rows": 0},
}


def evidence_of(*names: str, trend: list[dict[str, Any]] | None = None) -> QualityEvidence:
    """One run's evidence holding the named signatures (each with the same trend)."""
    checks = [CheckEvidence.of(SIGNATURES[name], trend=trend or []) for name in names]
    # Related: the other alarming checks on the same table, as the quality run gathers them.
    for ev in checks:
        ev.related = [
            {
                "check": other.result["check"],
                "status": other.result["status"],
                "observed": other.result["observed"],
                "message": other.result["message"],
            }
            for other in checks
            if other is not ev and other.result["table"] == ev.result["table"]
        ]
    return QualityEvidence(
        run_id="run-20261202-0510",
        checked_at=CHECKED_AT,
        checks=checks,
        pipeline=dict(PIPELINE),
        dead_letter_reasons=list(DEAD_LETTER_REASONS),
    )
