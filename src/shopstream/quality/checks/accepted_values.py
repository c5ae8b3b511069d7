"""accepted_values: rows whose ``column`` holds a value not in ``values``.

Values compare as text (``CAST(column AS VARCHAR)``: true/false for booleans). NULLs are left
out (null_rate judges them). ``window: hour`` / ``day`` looks at the last hour / 24 hours up to
now by the time column, ``all`` at the whole table. The evidence is the offending values with
their counts, most frequent first.

Options: column, values, window (hour | day | all), warn_rate, fail_rate, time_column, where.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import (
    TRAILING_WORDS,
    CheckOptionError,
    TrailingWindow,
    count_words,
    ident,
    pct,
    relation,
    require_column,
    result,
    trailing_condition,
    where_sql,
)

SEVERITY = "high"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: list[str | int | float | bool] = Field(default_factory=list)
    window: TrailingWindow = "day"
    warn_rate: float = Field(0.0, ge=0, le=1)
    fail_rate: float = Field(0.0, ge=0, le=1)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_rate < self.warn_rate:
            raise ValueError("fail_rate must be at least warn_rate")
        return self

    def texts(self) -> list[str]:
        """The accepted values as DuckDB writes them as text."""
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in self.values]


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column = require_column(ctx, check, check.spec.column, "accepted_values")
    if not params.values:
        raise CheckOptionError("`values` is empty: list the values the column may hold")
    col = ident(column)
    in_window, bounds, start, end = trailing_condition(
        ctx, check, params.window, params.time_column
    )
    conditions = [f"{col} IS NOT NULL", *in_window]
    accepted = params.texts()
    sql = (
        f"WITH g AS (SELECT CAST({col} AS VARCHAR) AS _value, count(*) AS _rows "
        f"FROM {relation(check.table)} WHERE {' AND '.join(conditions)}{where_sql(params.where)} "
        "GROUP BY 1), "
        "s AS (SELECT coalesce(sum(_rows), 0) AS _total, "
        "coalesce(sum(_rows) FILTER (WHERE NOT list_contains(?, _value)), 0) AS _bad, "
        "count(*) FILTER (WHERE NOT list_contains(?, _value)) AS _bad_values FROM g), "
        "top AS (SELECT _value, _rows FROM g WHERE NOT list_contains(?, _value) "
        "ORDER BY _rows DESC, _value LIMIT ?) "
        "SELECT * FROM s LEFT JOIN top ON true"
    )
    found = ctx.query(sql, [*bounds, accepted, accepted, accepted, int(ctx.evidence_rows)])
    rows = found.to_pylist()
    total, bad, kinds = rows[0]["_total"], rows[0]["_bad"], rows[0]["_bad_values"]
    rate = bad / total if total else 0.0
    status: Status = "pass"
    if bad and rate > params.fail_rate:
        status = "fail"
    elif bad and rate > params.warn_rate:
        status = "warn"
    # Keyed by the column's name so that redaction knows what the value is.
    evidence = [{column: r["_value"], "rows": r["_rows"]} for r in rows if r["_value"] is not None]
    if params.warn_rate == 0 and params.fail_rate == 0:
        allowed, threshold = "none allowed", "fail on any value not accepted"
    else:
        allowed = f"warn above {pct(params.warn_rate, 2)}, fail above {pct(params.fail_rate, 2)}"
        threshold = allowed
    shown = ", ".join(accepted[:8]) + (", ..." if len(accepted) > 8 else "")
    message = (
        f"{count_words(bad)} of {count_words(total)} rows {TRAILING_WORDS[params.window]} "
        f"({pct(rate, 2)}) have a {column} outside {shown} ({count_words(kinds)} distinct "
        f"values; {allowed})"
    )
    return [
        result(
            check,
            kind="accepted_values",
            severity=SEVERITY,
            status=status,
            observed=rate,
            expected=None,
            threshold=threshold,
            unit="share of rows",
            column=column,
            message=message,
            evidence=evidence,
            evidence_rows=ctx.evidence_rows,
            details={"rows": total, "rejected_rows": bad, "rejected_values": kinds},
            window_start=start,
            window_end=end,
        )
    ]
