"""What one check run found: :class:`CheckResult`, and its row in
``monitoring.data_quality_checks`` (:data:`CHECKS_SCHEMA`).

Statuses:

- ``pass``: within the threshold;
- ``warn`` / ``fail``: beyond the warning / failing threshold;
- ``error``: the check could not run (its message says why and what to do);
- ``learning``: not enough history to judge yet (a baseline check says so instead of guessing).

>>> r = CheckResult(check="raw.events.freshness", kind="freshness", table="raw.events",
...                 column=None, status="pass", observed=3.0, expected=None,
...                 threshold="warn above 30 min, fail above 60 min", severity="high",
...                 message="newest event landed 3 min ago", unit="minutes")
>>> r.alarming
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa

Status = Literal["pass", "warn", "fail", "error", "learning"]
Severity = Literal["critical", "high", "medium", "low"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "error", "learning")
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")

#: The monitoring table the results are appended to, one row per check per run.
CHECKS_TABLE = "data_quality_checks"
#: The monitoring table the analyses are appended to, one row per run that had any.
REPORTS_TABLE = "data_quality_reports"


@dataclass(frozen=True)
class CheckResult:
    #: The check's name, unique in the configuration (``raw.events.volume_hourly``).
    check: str
    #: Its kind (``freshness``, ``volume``, ... : the module in :mod:`shopstream.quality.checks`).
    kind: str
    #: What it looked at: ``layer.table`` (``raw.events``), or ``pipeline.<thing>`` for checks
    #: of the pipeline itself (``pipeline.replication``).
    table: str
    column: str | None
    status: Status
    #: The measured value (rows, minutes, a rate, a score: see ``unit``); None when there is none.
    observed: float | None
    #: What the baseline or the rule expected; None when the check has no single expectation.
    expected: float | None
    #: The threshold in plain words ("warn above 30 min, fail above 60 min", "|z| > 4").
    threshold: str
    severity: Severity
    #: One line a person reads: what was seen, against what was expected.
    message: str
    #: A few offending keys or rows, personal data redacted (shopstream.quality.redact).
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: Numbers behind the verdict, by kind (baseline, spread, score, counts, seconds taken).
    details: dict[str, Any] = field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None
    unit: str = ""

    @property
    def alarming(self) -> bool:
        """Warn, fail or error: something for a person to look at."""
        return self.status in ("warn", "fail", "error")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601)."""
        data = asdict(self)
        for name in ("window_start", "window_end"):
            value = data[name]
            data[name] = None if value is None else value.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        values = dict(data)
        for name in ("window_start", "window_end"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


_TS = pa.timestamp("us", tz="UTC")
#: ``monitoring.data_quality_checks``. JSON columns travel as strings (as in raw).
CHECKS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("checked_at", _TS, nullable=False),
        pa.field("check_name", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("column_name", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("observed", pa.float64()),
        pa.field("expected", pa.float64()),
        pa.field("threshold", pa.string()),
        pa.field("unit", pa.string()),
        pa.field("message", pa.string()),
        pa.field("evidence", pa.string()),
        pa.field("details", pa.string()),
        pa.field("window_start", _TS),
        pa.field("window_end", _TS),
    ]
)
CHECKS_JSON_COLUMNS = frozenset({"evidence", "details"})


def json_value(value: Any) -> Any:
    """orjson's ``default`` for what checks hand over from SQL: a DECIMAL (DuckDB's SUM) stays
    a number, anything else orjson does not know becomes its text.

    >>> from decimal import Decimal
    >>> [json_value(Decimal("12")), json_value(Decimal("0.25")), json_value(Decimal("NaN"))]
    [12, 0.25, 'NaN']
    """
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=json_value, option=orjson.OPT_NON_STR_KEYS).decode()


def results_table(results: Sequence[CheckResult], run_id: str, checked_at: datetime) -> pa.Table:
    """The rows of ``monitoring.data_quality_checks`` for one run."""
    rows = [
        {
            "run_id": run_id,
            "checked_at": checked_at,
            "check_name": r.check,
            "kind": r.kind,
            "table_name": r.table,
            "column_name": r.column,
            "status": r.status,
            "severity": r.severity,
            "observed": r.observed,
            "expected": r.expected,
            "threshold": r.threshold,
            "unit": r.unit,
            "message": r.message,
            "evidence": _json(r.evidence),
            "details": _json(r.details),
            "window_start": r.window_start,
            "window_end": r.window_end,
        }
        for r in results
    ]
    return pa.Table.from_pylist(rows, schema=CHECKS_SCHEMA)


__all__ = [
    "CHECKS_JSON_COLUMNS",
    "CHECKS_SCHEMA",
    "CHECKS_TABLE",
    "REPORTS_TABLE",
    "SEVERITIES",
    "STATUSES",
    "CheckResult",
    "Severity",
    "Status",
    "results_table",
]
