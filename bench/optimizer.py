"""SQL optimizer benchmark: how well the findings match the corpus, what verified rewrites save,
and how long a query takes.

    .venv/bin/python bench/optimizer.py                  # the corpus on a freshly generated shop
    .venv/bin/python bench/optimizer.py --data-dir DIR   # reuse (or build once into) DIR
    .venv/bin/python bench/optimizer.py --llm            # LLM rewrites too (SHOPSTREAM_LLM set)

1. A shop as the tests' fixture makes it (tests/support/shop_warehouse.py): ``shopstream
   generate-history`` with a fixed seed and end, then ``shopstream transform``, both run as a
   user would, into a DuckDB file in a fresh directory (or ``--data-dir``, built once there).
2. The warehouse's catalog (:func:`shopstream.genai.optimizer.catalog.load_catalog`: columns,
   measured sizes, partitions): loaded once, its time printed.
3. Every entry of tests/optimizer_corpus/*.yml through
   ``shopstream.genai.sql_optimizer.optimize(sql, dialect=..., warehouse=..., settings=...,
   catalog=...)`` on that warehouse, each ``--repeat`` times (the first answer is scored, every
   run timed).
4. Printed: findings precision and recall against the corpus's expected rule ids (per rule and
   over all), the queries whose findings differ, rewrites (expected ones verified, unexpected
   ones), bytes saved by the verified rewrites (the cheapest verified rewrite of each query:
   total bytes before and after, median ratio after/before) and the time per query (median,
   p95).

The cost figures are the optimizer's own (on DuckDB: its estimate from column sizes, see
:mod:`shopstream.genai.optimizer.cost`); a BigQuery warehouse would give dry-run bytes. The
machine's load is printed at the start and the end: other work on it lowers the speed figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _machine import machine_load, progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # tests.support: the shop the tests' fixture builds
CORPUS = ROOT / "tests" / "optimizer_corpus"
#: Marks a data directory the benchmark finished building (generate + transform).
BUILT = ".bench-optimizer-built"

console = Console(width=None if sys.stdout.isatty() else 160)


# -- the corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    dialect: str
    sql: str
    findings: frozenset[str]
    rewrite: bool
    source: str


def load_corpus(directory: Path) -> list[Entry]:
    """Every entry of ``directory``/*.yml, read as the tests read them (a ValueError naming the
    file and the entry that is malformed)."""
    from tests.support.optimizer_corpus import load_corpus as load

    return [
        Entry(
            name=e["name"],
            dialect=e["dialect"],
            sql=e["sql"],
            findings=frozenset(e["findings"]),
            rewrite=bool(e["rewrite"]),
            source=e["file"],
        )
        for e in load(directory)
    ]


# -- the shop -------------------------------------------------------------------------------------


def build_shop(data_dir: Path) -> float:
    """Generate the shop's history and build staging and marts in ``data_dir``, as the tests'
    fixture does (tests/support/shop_warehouse.py: the same data, so the corpus's expectations
    hold); seconds taken. Done once per directory."""
    from tests.support.shop_warehouse import build_shop as build

    if (data_dir / BUILT).exists():
        return 0.0
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    began = time.perf_counter()
    build(data_dir)
    (data_dir / BUILT).write_text("generate-history + transform done\n")
    return time.perf_counter() - began


# -- scoring --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    entry: Entry
    found: frozenset[str] = frozenset()
    #: Seconds of each run of the query.
    seconds: list[float] = field(default_factory=list)
    bytes_before: int | None = None
    #: The cheapest verified rewrite's bytes (None: no verified rewrite with a cost).
    bytes_after: int | None = None
    verified_rule_rewrites: int = 0
    verified_llm_rewrites: int = 0
    rejected: int = 0
    error: str | None = None


def score(entry: Entry, report: Any) -> Outcome:
    """What one report says against its corpus entry (``report``: an OptimizationReport)."""
    outcome = Outcome(entry, frozenset(f.rule for f in report.findings))
    if report.cost_before is not None:
        outcome.bytes_before = report.cost_before.bytes
    for rewrite in report.rewrites:
        if rewrite.status != "verified":
            outcome.rejected += 1
            continue
        if rewrite.source.startswith("rule:"):
            outcome.verified_rule_rewrites += 1
        else:
            outcome.verified_llm_rewrites += 1
        if rewrite.cost_after is not None and (
            outcome.bytes_after is None or rewrite.cost_after.bytes < outcome.bytes_after
        ):
            outcome.bytes_after = rewrite.cost_after.bytes
    return outcome


@dataclass(frozen=True)
class RuleScore:
    rule: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else None

    @property
    def recall(self) -> float | None:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else None


def rule_scores(outcomes: Iterable[Outcome]) -> list[RuleScore]:
    """Per rule: findings that were expected (TP), not expected (FP), expected but missing
    (FN), over the entries that ran."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for o in outcomes:
        if o.error is not None:
            continue
        tp.update(o.found & o.entry.findings)
        fp.update(o.found - o.entry.findings)
        fn.update(o.entry.findings - o.found)
    rules = sorted(set(tp) | set(fp) | set(fn))
    return [RuleScore(r, tp[r], fp[r], fn[r]) for r in rules]


def overall(scores: Sequence[RuleScore]) -> RuleScore:
    return RuleScore(
        "all rules",
        sum(s.true_positives for s in scores),
        sum(s.false_positives for s in scores),
        sum(s.false_negatives for s in scores),
    )


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.95 = p95)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- running --------------------------------------------------------------------------------------


def run_corpus(
    entries: Sequence[Entry], optimize_one: Callable[[Entry], Any], repeat: int
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with progress(console) as bar:
        task = bar.add_task("optimizing the corpus", total=len(entries))
        for entry in entries:
            seconds: list[float] = []
            outcome: Outcome | None = None
            for _ in range(repeat):
                began = time.perf_counter()
                try:
                    report = optimize_one(entry)
                except Exception as exc:  # scored as an error, named in the output
                    outcome = Outcome(entry, error=f"{type(exc).__name__}: {exc}")
                    break
                seconds.append(time.perf_counter() - began)
                if outcome is None:
                    outcome = score(entry, report)
            assert outcome is not None
            outcome.seconds = seconds
            outcomes.append(outcome)
            bar.advance(task)
    return outcomes


def print_results(outcomes: Sequence[Outcome]) -> None:
    from shopstream.genai.optimizer.report import human_bytes

    scores = rule_scores(outcomes)
    table = Table(title="findings against the corpus's expected rule ids")
    for column in ("rule", "expected & found", "found, not expected", "expected, missing"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    for s in [*scores, overall(scores)]:
        table.add_row(
            s.rule,
            str(s.true_positives),
            str(s.false_positives),
            str(s.false_negatives),
            ratio_text(s.precision),
            ratio_text(s.recall),
            style="bold" if s.rule == "all rules" else None,
        )
    console.print(table)

    ran = [o for o in outcomes if o.error is None]
    exact = sum(1 for o in ran if o.found == o.entry.findings)
    console.print(f"queries with exactly the expected findings: {exact} of {len(ran)}")
    for o in ran:
        if o.found != o.entry.findings:
            missing = ", ".join(sorted(o.entry.findings - o.found)) or "-"
            extra = ", ".join(sorted(o.found - o.entry.findings)) or "-"
            console.print(
                f"  {o.entry.name} ({o.entry.source}): missing {missing}; not expected {extra}",
                highlight=False,
            )
    for o in outcomes:
        if o.error is not None:
            console.print(f"  [red]{o.entry.name}: {o.error}", highlight=False)

    expected = [o for o in ran if o.entry.rewrite]
    verified = sum(1 for o in expected if o.verified_rule_rewrites)
    unexpected = [o for o in ran if not o.entry.rewrite and o.verified_rule_rewrites]
    console.print(
        f"rule rewrites: expected and verified {verified} of {len(expected)}; verified where none "
        f"was expected {len(unexpected)}; LLM rewrites verified "
        f"{sum(o.verified_llm_rewrites for o in ran)}; rewrites rejected "
        f"{sum(o.rejected for o in ran)}"
    )
    for o in expected:
        if not o.verified_rule_rewrites:
            console.print(f"  no verified rewrite: {o.entry.name}", highlight=False)

    costed = [
        o
        for o in ran
        if o.bytes_before is not None and o.bytes_after is not None and o.bytes_before > 0
    ]
    if costed:
        before = sum(o.bytes_before or 0 for o in costed)
        after = sum(o.bytes_after or 0 for o in costed)
        ratios = [(o.bytes_after or 0) / (o.bytes_before or 1) for o in costed]
        console.print(
            f"bytes of the {len(costed)} queries with a verified rewrite: {human_bytes(before)} "
            f"before, {human_bytes(after)} after (saved {human_bytes(before - after)}, "
            f"{1 - after / before:.0%}); median after/before {statistics.median(ratios):.2f}"
        )
    else:
        console.print("bytes saved: no query has a verified rewrite with a cost")

    times = [s for o in ran for s in o.seconds]
    if times:
        median, p95 = statistics.median(times) * 1000, percentile(times, 0.95) * 1000
        console.print(
            f"time per query ({len(times)} runs): median {median:,.0f} ms, p95 {p95:,.0f} ms, "
            f"max {max(times) * 1000:,.0f} ms"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="directory of *.yml entries")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the shop's data directory: built there once and reused (default: a fresh temp dir)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (timed)")
    parser.add_argument(
        "--llm", action="store_true", help="ask the configured LLM for rewrites too"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console.rule("[bold]shopstream SQL optimizer benchmark")
    console.print(f"machine at the start: {machine_load()}")
    try:
        entries = load_corpus(args.corpus)
    except ValueError as exc:
        console.print(f"[red]{exc}")
        return 2
    try:
        from shopstream.genai.sql_optimizer import optimize
    except ImportError as exc:
        console.print(
            f"[red]the optimizer is not there yet (shopstream.genai.sql_optimizer): {exc}"
        )
        return 2
    from shopstream.config import OptimizerSettings, Settings
    from shopstream.genai.optimizer.catalog import load_catalog
    from shopstream.warehouse import open_warehouse

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="shopstream-bench-optimizer-")) / "d"
    with console.status(f"generating the shop and building its marts in {data_dir}..."):
        built = build_shop(data_dir)
    console.print(
        f"shop in {data_dir}: " + (f"built in {built:,.1f} s" if built else "reused (built before)")
    )
    settings = Settings(data_dir=data_dir, optimizer=OptimizerSettings(llm_rewrites=args.llm))
    if not args.llm:
        settings = settings.model_copy(update={"llm": None})
    warehouse = open_warehouse(settings, read_only=True)
    try:
        began = time.perf_counter()
        catalog = load_catalog(warehouse, "duckdb")
        console.print(
            f"catalog: {len(catalog.tables)} tables, measured in "
            f"{time.perf_counter() - began:,.2f} s; {len(entries)} corpus queries from "
            f"{len({e.source for e in entries})} files"
        )
        catalogs = {"duckdb": catalog, "bigquery": load_catalog(warehouse, "bigquery")}

        def optimize_one(entry: Entry) -> Any:
            return optimize(
                entry.sql,
                dialect=entry.dialect,
                warehouse=warehouse,
                settings=settings,
                catalog=catalogs.get(entry.dialect, catalog),
            )

        outcomes = run_corpus(entries, optimize_one, max(1, args.repeat))
    finally:
        warehouse.close()
    print_results(outcomes)
    console.print(f"machine at the end: {machine_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
