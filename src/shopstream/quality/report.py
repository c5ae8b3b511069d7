"""A quality run as a person or a program reads it: ``shopstream quality run --format
table|json|markdown`` and the end of ``shopstream run``.

- ``table``: one row per result (status, check, observed vs expected, message), the counts,
  then the analyst's report;
- ``json``: ``{"run": {...results...}, "report": {...} | null}`` (:meth:`QualityRun.to_dict`);
- ``markdown``: the same table in Markdown, then the report's own Markdown.
"""

from __future__ import annotations

import orjson
from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from shopstream.quality.results import CheckResult, json_value
from shopstream.quality.runs import QualityRun

FORMATS = ("table", "json", "markdown")

#: Worst first in the listing: what needs a person comes to the top.
_ORDER = {"fail": 0, "error": 1, "warn": 2, "learning": 3, "pass": 4}
_STYLE = {"fail": "bold red", "error": "red", "warn": "yellow", "learning": "cyan", "pass": "green"}


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    # Whole numbers and anything above a thousand as whole numbers; small ones to 4 digits.
    large = float(value).is_integer() or abs(value) >= 1_000
    text = f"{value:,.0f}" if large else f"{value:,.4g}"
    return f"{text} {unit}".strip()


def observed_vs_expected(result: CheckResult) -> str:
    """``1,204 rows vs 3,010`` (just the observed value when nothing single was expected)."""
    observed = _number(result.observed, result.unit)
    if result.expected is None:
        return observed
    return f"{observed} vs {_number(result.expected)}"


def ordered(run: QualityRun) -> list[CheckResult]:
    return sorted(run.results, key=lambda r: (_ORDER.get(r.status, 5), r.check))


def counts_line(run: QualityRun) -> str:
    if run.error is not None:
        return f"quality run {run.run_id} failed: {run.error}"
    counts = ", ".join(f"{n} {status}" for status, n in run.counts().items() if n)
    line = (
        f"quality run {run.run_id} at {run.checked_at:%Y-%m-%d %H:%M} UTC: {counts or 'no checks'}"
    )
    if run.absent:
        line += f"; skipped (not here): {', '.join(run.absent)}"
    return line


def results_table(run: QualityRun, *, passing: bool = True) -> Table:
    """One row per result, worst first (``passing=False``: without the passing ones)."""
    table = Table(title="data quality", title_justify="left")
    table.add_column("status")
    table.add_column("check", overflow="fold")
    table.add_column("observed vs expected", justify="right")
    table.add_column("message")
    for result in ordered(run):
        if not passing and result.status == "pass":
            continue
        table.add_row(
            Text(result.status, style=_STYLE.get(result.status, "")),
            result.check,
            observed_vs_expected(result),
            result.message,
        )
    return table


def report_markdown(run: QualityRun) -> str:
    """The analyst's report, or why there is none."""
    if run.report is not None:
        text: str = run.report.to_markdown()
        if run.report_error:
            text += f"\n\n_{run.report_error}_"
        return text
    if run.report_error:
        return f"_No report: {run.report_error}_"
    if run.error is None:
        return "Nothing to report: every check passed (or is still learning its baseline)."
    return ""


def as_table(run: QualityRun, *, passing: bool = True) -> RenderableType:
    """For a terminal: the results, the counts, the report (``passing=False``: the passing
    checks only counted, for the end of ``shopstream run``)."""
    parts: list[RenderableType] = []
    shown = run.results if passing else [r for r in run.results if r.status != "pass"]
    if shown:
        parts.append(results_table(run, passing=passing))
    line = counts_line(run)
    if not passing and len(shown) < len(run.results):
        line += " (`shopstream quality run` lists every check)"
    parts.append(Text(line, style="red" if run.failed else ""))
    report = report_markdown(run)
    if report:
        parts.append(Markdown(report))
    return Group(*parts)


def as_json(run: QualityRun) -> str:
    data = run.to_dict()
    report = data.pop("report")
    return orjson.dumps(
        {"run": data, "report": report},
        default=json_value,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
    ).decode()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_markdown(run: QualityRun) -> str:
    lines = [f"# Data quality: {counts_line(run)}", ""]
    if run.results:
        lines += [
            "| status | check | observed vs expected | message |",
            "|---|---|---:|---|",
        ]
        lines += [
            f"| {r.status} | {_cell(r.check)} | {_cell(observed_vs_expected(r))} "
            f"| {_cell(r.message)} |"
            for r in ordered(run)
        ]
        lines.append("")
    report = report_markdown(run)
    if report:
        lines += [report, ""]
    return "\n".join(lines)


__all__ = [
    "FORMATS",
    "as_json",
    "as_markdown",
    "as_table",
    "counts_line",
    "observed_vs_expected",
    "report_markdown",
    "results_table",
]
