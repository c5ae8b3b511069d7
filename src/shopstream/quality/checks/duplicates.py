"""duplicates: the share of rows whose key occurs more than once.

raw.events keeps the collector's at-least-once retries, so a small rate is normal there
(``warn_rate`` / ``fail_rate`` set in its YAML); a staging key must be unique (the defaults: any
duplicate fails). ``window: hour`` / ``day`` looks at the rows of the last hour / 24 hours up to
now by the time column (a retry keeps its event's time, so its copies fall in the same window);
``all`` at the whole table. Rows with a NULL key part are not keys and are left out.

One aggregate query; the evidence is the most repeated keys with their counts.

Options: key (default: the table's key), window (hour | day | all), warn_rate, fail_rate,
time_column, where.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    result,
    trailing_condition,
    where_sql,
)

SEVERITY = "high"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: list[str] | None = None
    window: TrailingWindow = "all"
    warn_rate: float = Field(0.0, ge=0, le=1)
    fail_rate: float = Field(0.0, ge=0, le=1)
    time_column: str | None = None
    where: str | None = None

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_rate < self.warn_rate:
            raise ValueError("fail_rate must be at least warn_rate")
        return self


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    key = params.key or check.table_spec.key
    if not key:
        raise CheckOptionError(
            f"{check.table} has no key: set `key:` on the table or the check's `key:` option"
        )
    columns = ctx.columns(check.table)
    unknown = [k for k in key if k not in columns]
    if unknown:
        raise CheckOptionError(
            f"key column(s) {', '.join(unknown)} not in {check.table} "
            f"(it has {', '.join(columns)}): fix `key`"
        )
    keys = ", ".join(ident(k) for k in key)
    in_window, values, start, end = trailing_condition(
        ctx, check, params.window, params.time_column
    )
    conditions = [f"{ident(k)} IS NOT NULL" for k in key] + in_window
    values.append(int(ctx.evidence_rows))
    # g is read twice (totals and the top keys): DuckDB materialises it once.
    sql = (
        f"WITH g AS (SELECT {keys}, count(*) AS _copies FROM {relation(check.table)} "
        f"WHERE {' AND '.join(conditions)}{where_sql(params.where)} GROUP BY ALL), "
        "s AS (SELECT coalesce(sum(_copies), 0) AS _rows, "
        "coalesce(sum(_copies) FILTER (WHERE _copies > 1), 0) AS _dup_rows, "
        "count(*) FILTER (WHERE _copies > 1) AS _dup_keys FROM g), "
        f"top AS (SELECT * FROM g WHERE _copies > 1 ORDER BY _copies DESC, {keys} LIMIT ?) "
        "SELECT * FROM s LEFT JOIN top ON true"
    )
    found = ctx.query(sql, values).to_pylist()
    total, dup_rows, dup_keys = found[0]["_rows"], found[0]["_dup_rows"], found[0]["_dup_keys"]
    rate = dup_rows / total if total else 0.0
    status: Status = "pass"
    if dup_rows and rate > params.fail_rate:
        status = "fail"
    elif dup_rows and rate > params.warn_rate:
        status = "warn"
    evidence = [
        {**{k: row[k] for k in key}, "copies": row["_copies"]}
        for row in found
        if row["_copies"] is not None
    ]
    where_words = TRAILING_WORDS[params.window]
    key_words = "+".join(key)
    if params.warn_rate == 0 and params.fail_rate == 0:
        allowed, threshold = "none allowed", "fail on any duplicate key"
    else:
        allowed = f"warn above {pct(params.warn_rate, 2)}, fail above {pct(params.fail_rate, 2)}"
        threshold = allowed
    message = (
        f"{count_words(dup_rows)} of {count_words(total)} rows {where_words} ({pct(rate, 2)}) "
        f"share their {key_words} with another row ({count_words(dup_keys)} keys; {allowed})"
    )
    return [
        result(
            check,
            kind="duplicates",
            severity=SEVERITY,
            status=status,
            observed=rate,
            expected=None,
            threshold=threshold,
            unit="share of rows",
            column=check.spec.column,
            message=message,
            evidence=evidence,
            evidence_rows=ctx.evidence_rows,
            details={"rows": total, "duplicate_rows": dup_rows, "duplicate_keys": dup_keys},
            window_start=start,
            window_end=end,
        )
    ]
