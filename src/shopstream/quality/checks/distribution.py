"""distribution: has the mix of a column's values moved? The last complete day (or hour) against
the pooled same weekday (same hour-of-week) of the previous ``baseline_weeks`` weeks, as a
population stability index (PSI: 0.1 is a moderate shift, 0.25 a large one).

Seasonal on purpose: Saturday's mix of devices or categories is compared with earlier Saturdays,
never with a weekday, so weekend patterns are not shifts.

- categorical: the share of each value (the ``max_categories`` most common; the rest pooled as
  "(other)");
- numeric: the share in each of ``bins`` quantile bins of the baseline (so the bins follow the
  data), values read with TRY_CAST(... AS DOUBLE);
- auto: numeric for a numeric column, or an expression whose values read as numbers.

``expression`` judges any SQL expression instead of a column, e.g. a JSON field:
``json_extract_string(properties, '$.price')``. NULLs are left out (null_rate judges them).
The evidence is the values or bins whose share moved most.

Options: column or expression, type (categorical | numeric | auto), window (day | hour),
baseline_weeks, min_history_weeks, warn_psi, fail_psi, min_rows, bins, max_categories,
time_column, where.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopstream.quality.baseline import psi
from shopstream.quality.checks import CheckContext
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import (
    CheckOptionError,
    Window,
    bound,
    count_words,
    ident,
    last_complete,
    pct,
    relation,
    result,
    time_column,
    where_sql,
    window_at,
)

SEVERITY = "medium"
_NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "REAL",
    "DOUBLE",
    "DECIMAL",
)
OTHER = "(other)"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str | None = None
    type: Literal["categorical", "numeric", "auto"] = "auto"
    window: Literal["day", "hour"] = "day"
    baseline_weeks: int = Field(4, ge=1, le=12)
    min_history_weeks: float = Field(2.0, ge=1, le=12)
    warn_psi: float = Field(0.1, gt=0)
    fail_psi: float = Field(0.25, gt=0)
    min_rows: int = Field(500, ge=1)
    bins: int = Field(10, ge=2, le=50)
    max_categories: int = Field(20, ge=2, le=200)
    time_column: str | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.fail_psi < self.warn_psi:
            raise ValueError("fail_psi must be at least warn_psi")
        return self


class _Query:
    """The windows as SQL: a group number per row (0 = the window, k = k weeks back)."""

    def __init__(self, ctx: CheckContext, check: PlannedCheck, params: Params) -> None:
        column, sql_type = time_column(ctx, check, params.time_column)
        self.window = last_complete(ctx.now, ctx.timezone, params.window)
        self.windows: list[Window] = [
            window_at(self.window.wall - timedelta(weeks=k), ctx.timezone, params.window)
            for k in range(params.baseline_weeks + 1)
        ]
        t = ident(column)
        self.group = (
            "CASE "
            + " ".join(f"WHEN {t} >= ? AND {t} < ? THEN {k}" for k in range(len(self.windows)))
            + " END"
        )
        # The whole span first (AND: the scan skips what is outside it), then the windows.
        self.ranges = (
            f"{t} >= ? AND {t} < ? AND ("
            + " OR ".join(f"({t} >= ? AND {t} < ?)" for _ in self.windows)
            + ")"
        )
        self.bounds: list[Any] = [
            b for w in self.windows for b in (bound(w.start, sql_type), bound(w.end, sql_type))
        ]
        span = [bound(self.windows[-1].start, sql_type), bound(self.window.end, sql_type)]
        self.range_bounds = span + self.bounds
        self.table = relation(check.table)
        self.where = where_sql(params.where)

    def rows(self, value: str) -> str:
        """Each row's group and value, in the windows only (NULL values left out)."""
        return (
            f"SELECT {self.group} AS _grp, {value} AS _v FROM {self.table} "
            f"WHERE ({self.ranges}){self.where}"
        )

    def params(self) -> list[Any]:
        """The parameters of :meth:`rows`: the groups' bounds, then the filter's."""
        return self.bounds + self.range_bounds


def _value_sql(ctx: CheckContext, check: PlannedCheck, params: Params) -> tuple[str, str]:
    """The SQL of what is judged and its words."""
    if params.expression:
        return f"({params.expression})", params.expression
    column = check.spec.column
    if not column:
        raise CheckOptionError("distribution needs `column:` or `expression:` (what to judge)")
    if column not in ctx.columns(check.table):
        raise CheckOptionError(
            f"column {column!r} is not in {check.table} "
            f"(it has {', '.join(ctx.columns(check.table))}): fix `column`"
        )
    return ident(column), column


def _declared_numeric(ctx: CheckContext, check: PlannedCheck, params: Params) -> bool | None:
    """Numeric or not from the options and the column's type; None: ask the data."""
    if params.type != "auto":
        return params.type == "numeric"
    if not params.expression and check.spec.column:
        sql_type = ctx.columns(check.table)[check.spec.column].upper()
        return sql_type.startswith(_NUMERIC_TYPES)
    return None


def _categorical(
    ctx: CheckContext, q: _Query, value: str, params: Params
) -> tuple[list[str], dict[int, dict[str, int]]]:
    sql = (
        f"WITH d AS ({q.rows(f'CAST({value} AS VARCHAR)')}), "
        "g AS (SELECT _grp, _v, count(*) AS _n FROM d WHERE _v IS NOT NULL GROUP BY ALL), "
        f"top AS (SELECT _v FROM g GROUP BY _v ORDER BY sum(_n) DESC, _v LIMIT "
        f"{int(params.max_categories)}) "
        f"SELECT _grp, CASE WHEN _v IN (SELECT _v FROM top) THEN _v ELSE '{OTHER}' END AS _v, "
        "sum(_n) AS _n FROM g GROUP BY ALL"
    )
    counts: dict[int, dict[str, int]] = {}
    for row in ctx.query(sql, q.params()).to_pylist():
        counts.setdefault(row["_grp"], {})[row["_v"]] = int(row["_n"])
    labels = sorted({v for c in counts.values() for v in c})
    return labels, counts


def _edges(ctx: CheckContext, q: _Query, value: str, params: Params) -> tuple[bool, list[float]]:
    """Whether the values read as numbers (95% of them), and the baseline's quantile edges."""
    number = "TRY_CAST(_v AS DOUBLE)"
    cuts = [i / params.bins for i in range(1, params.bins)]
    found = ctx.query(
        f"SELECT count(_v) AS n, count({number}) AS m, "
        f"approx_quantile({number}, {cuts}) FILTER (WHERE _grp > 0) AS q "
        f"FROM ({q.rows(value)}) WHERE _v IS NOT NULL",
        q.params(),
    ).to_pylist()[0]
    numeric = bool(found["n"]) and found["m"] >= 0.95 * found["n"]
    return numeric, sorted({float(e) for e in (found["q"] or []) if e is not None})


def _numeric(
    ctx: CheckContext, q: _Query, value: str, edges: list[float]
) -> tuple[list[str], dict[int, dict[str, int]]]:
    number = f"TRY_CAST({value} AS DOUBLE)"
    labels = _bin_labels(edges)
    case = (
        (
            "CASE "
            + " ".join(f"WHEN _v <= {e!r} THEN {i}" for i, e in enumerate(edges))
            + f" ELSE {len(edges)} END"
        )
        if edges
        else "0"  # one bin (a CASE without a WHEN is DuckDB's alone)
    )
    counts: dict[int, dict[str, int]] = {}
    rows = ctx.query(
        f"SELECT _grp, {case} AS _bin, count(*) AS _n FROM ({q.rows(number)}) "
        "WHERE _v IS NOT NULL GROUP BY ALL",
        q.params(),
    ).to_pylist()
    for row in rows:
        counts.setdefault(row["_grp"], {})[labels[row["_bin"]]] = int(row["_n"])
    return labels, counts


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all values"]
    labels = [f"<= {edges[0]:.4g}"]
    labels += [f"({lo:.4g}, {hi:.4g}]" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"> {edges[-1]:.4g}")
    return labels


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    value, words = _value_sql(ctx, check, params)
    q = _Query(ctx, check, params)
    declared = _declared_numeric(ctx, check, params)
    numeric = declared is not False
    if numeric:
        # An expression of type auto is text (a JSON field): numeric when it reads as numbers.
        read_as_numbers, edges = _edges(ctx, q, value, params)
        numeric = declared is True or read_as_numbers
    if numeric:
        labels, counts = _numeric(ctx, q, value, edges)
    else:
        labels, counts = _categorical(ctx, q, value, params)
    window = q.window
    current = counts.get(0, {})
    pooled: dict[str, int] = {}
    weeks_with_data = 0
    for k in range(1, params.baseline_weeks + 1):
        if counts.get(k):
            weeks_with_data += 1
        for label, n in counts.get(k, {}).items():
            pooled[label] = pooled.get(label, 0) + n
    rows_now, rows_before = sum(current.values()), sum(pooled.values())
    w = [float(current.get(label, 0)) for label in labels]
    b = [float(pooled.get(label, 0)) for label in labels]
    index, parts = psi(w, b) if labels else (0.0, [])
    same = "weekday" if params.window == "day" else "hour of the week"
    threshold = (
        f"PSI against the same {same} of the last {params.baseline_weeks} weeks: warn at "
        f"{params.warn_psi:g}, fail at {params.fail_psi:g} (judged from {params.min_rows} rows)"
    )
    details: dict[str, Any] = {
        "type": "numeric" if numeric else "categorical",
        "rows": rows_now,
        "baseline_rows": rows_before,
        "baseline_weeks_with_data": weeks_with_data,
        "psi": round(index, 5),
    }
    moved = sorted(range(len(labels)), key=lambda i: -parts[i])
    total_w, total_b = max(rows_now, 1), max(rows_before, 1)
    evidence = [
        {
            # Keyed by the column's name so that redaction knows what the value is.
            ("bin" if numeric else (check.spec.column or "value")): labels[i],
            "share": round(w[i] / total_w, 4),
            "baseline_share": round(b[i] / total_b, 4),
            "psi_part": round(parts[i], 5),
        }
        for i in moved
    ]
    status: Status = "pass"
    if weeks_with_data < params.min_history_weeks or rows_before < params.min_rows:
        status = "learning"
        message = (
            f"learning: {weeks_with_data} earlier {same}s with {words} values "
            f"({count_words(rows_before)} rows), needs {params.min_history_weeks:g} "
            f"(min_history_weeks) and {params.min_rows} rows (min_rows)"
        )
        evidence = []
    elif rows_now < params.min_rows:
        message = (
            f"only {count_words(rows_now)} rows with {words} in {window.label}: too few to "
            f"judge its distribution (min_rows {params.min_rows})"
        )
        evidence = []
    else:
        if index >= params.fail_psi:
            status = "fail"
        elif index >= params.warn_psi:
            status = "warn"
        top = moved[0]
        message = (
            f"{words} in {window.label} ({count_words(rows_now)} rows): PSI {index:.3f} against "
            f"earlier {same}s; most moved: {labels[top]} {pct(w[top] / total_w)} "
            f"(was {pct(b[top] / total_b)})"
        )
    return [
        result(
            check,
            kind="distribution",
            severity=SEVERITY,
            status=status,
            observed=round(index, 5),
            expected=None,
            threshold=threshold,
            unit="PSI",
            column=check.spec.column,
            message=message,
            evidence=evidence,
            evidence_rows=ctx.evidence_rows,
            details=details,
            window_start=window.start,
            window_end=window.end,
        )
    ]
