"""An optimization report as a person or a program reads it: ``shopstream optimize-sql --format
table|json|markdown``.

- ``table``: the cost, one row per finding (severity, rule, where, evidence, fix), then each
  rewrite with how it was verified (rejected ones with why) and the notes;
- ``json``: :class:`~shopstream.genai.optimizer.findings.OptimizationReport` as JSON;
- ``markdown``: the same as the table, for a pull request or a ticket.

>>> human_bytes(0), human_bytes(1536), human_bytes(3 * 1024**4)
('0 B', '1.5 KiB', '3.0 TiB')
>>> dollars(0.0000076), dollars(12.5)
('$0.0000076', '$12.50')
>>> code_span("FROM `shop-prod.raw.events`")
'`` FROM `shop-prod.raw.events` ``'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.padding import Padding
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from shopstream.genai.optimizer.findings import Cost, Finding, OptimizationReport, Rewrite

FORMATS = ("table", "json", "markdown")

_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": ""}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
#: Below this many columns the findings are stacked (heading, then details) instead of a table
#: whose prose columns would be a few words wide.
TABLE_MIN_WIDTH = 120
_BACKTICKS = re.compile(r"`+")


def human_bytes(count: int) -> str:
    """Bytes in binary units, as BigQuery bills them (1 TiB = 1024⁴ bytes)."""
    size = float(count)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{count:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def dollars(amount: float) -> str:
    """Dollars to the cent, or to two significant digits when under a cent."""
    if amount == 0:
        return "$0"
    if amount >= 0.01:
        return f"${amount:,.2f}"
    decimals = -math.floor(math.log10(amount)) + 1
    return f"${amount:.{decimals}f}"


def cost_text(cost: Cost | None) -> str:
    if cost is None:
        return "unknown"
    return f"{human_bytes(cost.bytes)} ({dollars(cost.dollars)})"


def saving_text(before: Cost | None, after: Cost | None) -> str:
    """``6.0 MiB ($0.000036) -> 1.1 MiB ($0.0000065), 82% less``."""
    return f"{cost_text(before)} -> {cost_text(after)}{_change(before, after)}"


def _change(before: Cost | None, after: Cost | None) -> str:
    if before is None or after is None or not before.bytes:
        return ""
    change = 1 - after.bytes / before.bytes
    return f", {change:.0%} less" if change >= 0 else f", {-change:.0%} more"


def where(finding: Finding) -> str:
    return "" if finding.position is None else f"{finding.position.line}:{finding.position.column}"


def verification_text(rewrite: Rewrite) -> str:
    """How a rewrite was checked: the passed steps and what it was compared on, or why not."""
    v = rewrite.verification
    if v.passed:
        return f"verified: parses, same schema, same results on {v.compared_on}"
    return f"rejected: {v.reason or 'not verified'}"


def summary_line(report: OptimizationReport) -> str:
    verified = len(report.verified)
    rejected = len(report.rewrites) - verified
    found = f"{len(report.findings)} finding{'s' * (len(report.findings) != 1)}"
    line = f"{found}, {verified} verified rewrite{'s' * (verified != 1)}"
    if rejected:
        line += f", {rejected} rejected"
    line += f"; scans {cost_text(report.cost_before)}"
    best = best_rewrite(report)
    if best is not None and best.cost_after is not None:
        line += f"; {best.source} scans {cost_text(best.cost_after)}"
        line += _change(report.cost_before, best.cost_after)
    return line


def best_rewrite(report: OptimizationReport) -> Rewrite | None:
    """The verified rewrite that scans least (of equals, the one that fixes most)."""
    costed = [r for r in report.verified if r.cost_after is not None]
    return min(
        costed,
        key=lambda r: (r.cost_after.bytes if r.cost_after else 0, -len(r.fixes)),
        default=None,
    )


def _method(report: OptimizationReport) -> str:
    return "" if report.cost_before is None else report.cost_before.method


# -- table ----------------------------------------------------------------------------------


def as_table(report: OptimizationReport) -> RenderableType:
    """For a terminal."""
    parts: list[RenderableType] = [Text(summary_line(report), style="bold")]
    if report.cost_before is not None:
        parts.append(Text(f"cost: {_method(report)}", style="dim"))
    if report.findings:
        parts.append(_Findings(report.findings))
    else:
        parts.append(Text("no findings: nothing in this query to fix", style="green"))
    for rewrite in report.rewrites:
        ok = rewrite.status == "verified"
        heading = f"rewrite ({rewrite.source}), {verification_text(rewrite)}"
        parts.append(Text(heading, style="green" if ok else "yellow"))
        if ok:
            parts.append(Text(f"  cost: {saving_text(report.cost_before, rewrite.cost_after)}"))
            if rewrite.explanation:
                parts.append(Text(f"  {rewrite.explanation}"))
            parts.append(Syntax(rewrite.sql.strip(), "sql", word_wrap=True))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)


class _Findings:
    """The findings as a table on a wide terminal; on a narrow one (under
    :data:`TABLE_MIN_WIDTH` columns) each finding's heading with its details beneath."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        if options.max_width >= TABLE_MIN_WIDTH:
            yield self._table()
            return
        yield Text("findings", style="italic")
        for f in self.findings:
            heading = Text(f.severity, style=_SEVERITY_STYLE.get(f.severity, ""))
            heading.append(f"  {f.rule}" + (f"  at {where(f)}" if f.position else ""), "bold")
            yield heading
            details = [f"{f.title}: {f.message}", f"evidence: {f.evidence}", f"fix: {f.fix}"]
            if f.tradeoff:
                details.append(f"trade-off: {f.tradeoff}")
            for detail in details:
                yield Padding(Text(detail, overflow="fold"), (0, 0, 0, 2))

    def _table(self) -> Table:
        table = Table(title="findings", title_justify="left", show_lines=True, expand=True)
        table.add_column("severity", no_wrap=True)
        # Rule ids whole (a reader searches for them); the prose columns share the rest.
        table.add_column("rule", no_wrap=True, min_width=max(len(f.rule) for f in self.findings))
        table.add_column("at", justify="right", no_wrap=True)
        table.add_column("what is wrong", overflow="fold", ratio=3)
        table.add_column("fix", overflow="fold", ratio=2)
        for f in self.findings:
            fix = f.fix + (f"\ntrade-off: {f.tradeoff}" if f.tradeoff else "")
            table.add_row(
                Text(f.severity, style=_SEVERITY_STYLE.get(f.severity, "")),
                f.rule,
                where(f),
                f"{f.title}: {f.message}\nevidence: {f.evidence}",
                fix,
            )
        return table


# -- JSON -----------------------------------------------------------------------------------


def as_json(report: OptimizationReport) -> str:
    return report.model_dump_json(indent=2)


# -- Markdown -------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code_span(text: str) -> str:
    """``text`` as inline code that backticks inside cannot end: fenced by one backtick more
    than its longest run of them, padded when it starts or ends with one."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def code_block(text: str, language: str = "sql") -> list[str]:
    """``text`` as a fenced block whose fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", text, fence]


def as_markdown(report: OptimizationReport) -> str:
    lines = [f"# SQL optimizer: {summary_line(report)}", ""]
    if report.cost_before is not None:
        lines += [f"Cost measured by {_method(report)}.", ""]
    lines += [*code_block(report.sql.strip()), ""]
    if report.findings:
        lines += [
            "## Findings",
            "",
            "| severity | rule | at | evidence | what is wrong | fix |",
            "|---|---|---|---|---|---|",
        ]
        for f in report.findings:
            fix = f.fix + (f" Trade-off: {f.tradeoff}" if f.tradeoff else "")
            lines.append(
                f"| {f.severity} | {f.rule} | {where(f)} | {code_span(_cell(f.evidence))} "
                f"| {_cell(f.title)}: {_cell(f.message)} | {_cell(fix)} |"
            )
        lines.append("")
    else:
        lines += ["No findings: nothing in this query to fix.", ""]
    if report.rewrites:
        lines += ["## Rewrites", ""]
    for rewrite in report.rewrites:
        lines += [f"### {rewrite.source}: {rewrite.status}", ""]
        if rewrite.fixes:
            lines.append(f"- Fixes: {', '.join(rewrite.fixes)}")
        if rewrite.explanation:
            lines.append(f"- Why: {_cell(rewrite.explanation)}")
        lines.append(f"- {verification_text(rewrite).capitalize()}")
        if rewrite.status == "verified":
            lines.append(f"- Cost: {saving_text(report.cost_before, rewrite.cost_after)}")
            lines += ["", *code_block(rewrite.sql.strip())]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(lines)


__all__ = [
    "FORMATS",
    "as_json",
    "as_markdown",
    "as_table",
    "best_rewrite",
    "code_block",
    "code_span",
    "cost_text",
    "dollars",
    "human_bytes",
    "saving_text",
    "summary_line",
    "verification_text",
]
