"""Where a quality run is kept: its check rows in ``monitoring.data_quality_checks`` (one per
result, :func:`shopstream.quality.results.results_table`) and its report in
``monitoring.data_quality_reports`` (one per run that had something to report).

Both are appended through the warehouse's ``append_monitoring``, which creates a table from
its rows' Arrow schema the first time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import pyarrow as pa

from shopstream.quality.results import (
    CHECKS_JSON_COLUMNS,
    CHECKS_TABLE,
    REPORTS_TABLE,
    CheckResult,
    results_table,
)

if TYPE_CHECKING:
    from shopstream.genai.data_quality_agent import QualityReport

_TS = pa.timestamp("us", tz="UTC")
#: ``monitoring.data_quality_reports``: the analysis of one run (JSON columns as strings).
REPORTS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", _TS, nullable=False),
        #: ``deterministic`` or ``llm:<provider>:<model>``.
        pa.field("analyst", pa.string(), nullable=False),
        #: The whole report (QualityReport as JSON).
        pa.field("report", pa.string(), nullable=False),
        #: The same, as a person reads it.
        pa.field("markdown", pa.string(), nullable=False),
        #: input_tokens, output_tokens, cost, seconds.
        pa.field("usage", pa.string()),
    ]
)
REPORTS_JSON_COLUMNS = frozenset({"report", "usage"})


class MonitoringWarehouse(Protocol):
    def append_monitoring(
        self, table: str, batch: pa.Table, *, json_columns: Collection[str] = ...
    ) -> None: ...


def report_table(report: QualityReport, created_at: datetime) -> pa.Table:
    """The row of ``monitoring.data_quality_reports`` for ``report``."""
    data: dict[str, Any] = report.model_dump(mode="json")
    row = {
        "run_id": report.run_id,
        "created_at": created_at,
        "analyst": report.analyst,
        "report": orjson.dumps(data).decode(),
        "markdown": report.to_markdown(),
        "usage": orjson.dumps(data.get("usage")).decode(),
    }
    return pa.Table.from_pylist([row], schema=REPORTS_SCHEMA)


def store_results(
    warehouse: MonitoringWarehouse,
    results: Sequence[CheckResult],
    run_id: str,
    checked_at: datetime,
) -> None:
    warehouse.append_monitoring(
        CHECKS_TABLE, results_table(results, run_id, checked_at), json_columns=CHECKS_JSON_COLUMNS
    )


def store_report(
    warehouse: MonitoringWarehouse, report: QualityReport, created_at: datetime
) -> None:
    warehouse.append_monitoring(
        REPORTS_TABLE, report_table(report, created_at), json_columns=REPORTS_JSON_COLUMNS
    )


__all__ = [
    "REPORTS_JSON_COLUMNS",
    "REPORTS_SCHEMA",
    "report_table",
    "store_report",
    "store_results",
]
