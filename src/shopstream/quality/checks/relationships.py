"""Kind ``relationships``: every key in ``column`` (or ``expression``) names a row of ``to``.

Orphans (an order line whose order the warehouse does not have, an order whose member is
missing, an event naming an unknown product) are counted among the window's rows that carry
a key; the rate is judged against ``warn_rate`` / ``fail_rate`` and the most frequent orphan
keys are the evidence. Rows without a key (NULL) are not orphans: null_rate watches those.

When ``to`` does not exist here (the shop's tables are captured only when CDC is configured)
the check has nothing to compare against and returns no result.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import evidence, grade, window_filter
from shopstream.quality.results import CheckResult, Severity
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import TrailingWindow, ident, relation, time_column_name

SEVERITY: Severity = "high"
log = logging.getLogger(__name__)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The referenced table, ``layer.table``.
    to: str = ""
    #: Its key column (default: the same name as ``column``).
    field: str | None = None
    #: SQL for the key instead of ``column`` (a JSON field of raw, say).
    expression: str | None = None
    window: TrailingWindow = "day"
    time_column: str | None = None
    where: str | None = None
    #: Orphans per row with a key above which it warns / fails (0: any orphan).
    warn_rate: float = Field(default=0.0, ge=0)
    fail_rate: float = Field(default=0.001, ge=0)


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column = check.spec.column
    if not params.to or params.to.count(".") != 1:
        raise ValueError(f"{check.name}: set `to:` to the referenced table as layer.table")
    if not column and not params.expression:
        raise ValueError(f"{check.name}: set `column:` (or `expression:`) to the referring key")
    field = params.field or column
    if not field:
        raise ValueError(f"{check.name}: set `field:`, the key column of {params.to}")
    if not ctx.exists(params.to):
        log.info("%s: %s does not exist here; nothing to check against", check.name, params.to)
        return []
    parent_columns = ctx.columns(params.to)
    if field not in parent_columns:
        raise ValueError(
            f"{check.name}: {params.to} has no column {field!r} (it has "
            f"{', '.join(parent_columns)}): fix `field:`"
        )
    key = params.expression or ident(column or "")
    parent_key = ident(field)
    # Compare as text when the types differ (VARCHAR ids against a typed key, a JSON field).
    child_type = ctx.columns(check.table).get(column or "") if not params.expression else None
    if child_type != parent_columns[field]:
        key, parent_key = f"CAST({key} AS VARCHAR)", f"CAST({parent_key} AS VARCHAR)"
    where, args, start, end = window_filter(
        check, ctx, params.window, time_column_name(check, params.time_column), params.where
    )
    # The window's keys are few, the referenced table may be big: look up only the keys the
    # window has (a semi-join probing the big table), then count those not found.
    children = f"SELECT {key} AS k FROM {relation(check.table)} WHERE {where}"
    lookup = f"""WITH children AS MATERIALIZED ({children}),
        found AS (SELECT DISTINCT {parent_key} AS k FROM {relation(params.to)}
                  WHERE {parent_key} IN (SELECT k FROM children))"""
    counts = ctx.query(
        f"""{lookup}
            SELECT count(*) AS keyed,
                   count(*) FILTER (WHERE k NOT IN (SELECT k FROM found)) AS orphans
            FROM children WHERE k IS NOT NULL""",
        args,
    ).to_pylist()[0]
    keyed, orphans = int(counts["keyed"]), int(counts["orphans"] or 0)
    rate = orphans / keyed if keyed else 0.0
    status = grade(rate, warn=params.warn_rate, fail=params.fail_rate) if orphans else "pass"
    sample: list[dict[str, object]] = []
    if orphans:
        target = f"{params.to}.{field}"
        sample = ctx.query(
            f"""{lookup}
                SELECT k AS orphan_key, count(*) AS referring_rows
                FROM children WHERE k IS NOT NULL AND k NOT IN (SELECT k FROM found)
                GROUP BY k ORDER BY referring_rows DESC, orphan_key LIMIT ?""",
            [*args, ctx.evidence_rows],
        ).to_pylist()
        for row in sample:
            row["missing_in"] = target
    what = params.expression or column
    if orphans:
        message = (
            f"{orphans} of {keyed} rows of {check.table} have a {what} missing from "
            f"{params.to} ({rate:.2%})"
        )
    else:
        message = f"every {what} of {check.table} ({keyed} rows) is in {params.to}"
    return [
        CheckResult(
            check=check.name,
            kind=check.spec.kind,
            table=check.table,
            column=column,
            status=status,
            observed=rate,
            expected=0.0,
            threshold=f"warn above {params.warn_rate:.2%} orphans, fail above "
            f"{params.fail_rate:.2%}",
            severity=check.spec.severity or SEVERITY,
            message=message,
            evidence=evidence(ctx, sample),
            details={"rows_with_key": keyed, "orphans": orphans, "to": params.to},
            window_start=start,
            window_end=end,
            unit="rate",
        )
    ]


__all__ = ["SEVERITY", "Params", "run"]
