"""A quality run's verdict (what makes `shopstream quality run` exit 1), its trip over the
query socket (to_dict / from_dict) and its rendering."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from shopstream.quality.report import as_json, as_markdown, observed_vs_expected
from shopstream.quality.results import CheckResult
from shopstream.quality.runner import CheckOutcome
from shopstream.quality.runs import QualityRun

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def result(check: str, status: str, observed: float | None = 1.0) -> CheckResult:
    return CheckResult(
        check=check,
        kind="volume",
        table="raw.events",
        column=None,
        status=status,  # type: ignore[arg-type]
        observed=observed,
        expected=1_204.0,
        threshold="|score| above 4",
        severity="high",
        message=f"{check} is {status}",
        evidence=[{"day": "2026-11-30", "rows": 3}],
        details={"score": -5.5},
        window_start=NOW.replace(hour=9),
        window_end=NOW,
        unit="rows",
    )


def run_of(*statuses: str, error: str | None = None) -> QualityRun:
    checks = tuple(
        CheckOutcome(f"c{i}", "raw.events", "volume", (result(f"c{i}", s),))
        for i, s in enumerate(statuses)
    )
    return QualityRun("r1", NOW, checks, error=error)


@pytest.mark.parametrize(
    ("statuses", "failed"),
    [
        (("pass", "pass"), False),
        (("pass", "warn"), False),
        (("learning", "warn"), False),
        (("pass", "fail"), True),
        (("error",), True),
        ((), False),
    ],
)
def test_only_fail_and_error_fail_the_run(statuses: tuple[str, ...], failed: bool) -> None:
    assert run_of(*statuses).failed is failed


def test_a_run_that_could_not_run_fails() -> None:
    assert run_of(error="the warehouse is gone").failed


def test_a_check_in_parts_shows_its_worst() -> None:
    parts = (result("v.mon", "pass", 1.0), result("v.tue", "warn", 2.0), result("v", "error", 3))
    outcome = CheckOutcome("v", "raw.events", "volume", parts)
    assert outcome.status == "error" and outcome.observed == 3
    assert CheckOutcome("v", "raw.events", "volume", ()).status == "pass"


def test_the_run_crosses_the_socket_unchanged() -> None:
    run = run_of("pass", "fail", "learning")
    wire = orjson.loads(orjson.dumps(run.to_dict(), default=str))
    back = QualityRun.from_dict(wire)
    assert back == run
    assert back.counts() == {"pass": 1, "warn": 0, "fail": 1, "error": 0, "learning": 1}


def test_renderings() -> None:
    run = run_of("pass", "fail")
    assert observed_vs_expected(run.results[1]) == "1 rows vs 1,204"
    data = orjson.loads(as_json(run))
    assert data["report"] is None and [c["status"] for c in data["run"]["checks"]] == [
        "pass",
        "fail",
    ]
    markdown = as_markdown(run)
    assert markdown.index("| fail | c1 |") < markdown.index("| pass | c0 |")  # worst first
    # A pipe in a message does not break the Markdown table.
    odd = QualityRun(
        "r2", NOW, (CheckOutcome("x", "raw.events", "rule", (result("x|y", "warn"),)),)
    )
    assert "| warn | x\\|y |" in as_markdown(odd)


def test_numbers_a_kind_hands_over_as_decimals_become_floats() -> None:
    from decimal import Decimal

    from shopstream.quality.results import results_table
    from shopstream.quality.runner import _as_floats

    raw = replace(result("d", "pass"), observed=Decimal("0.0125"), expected=3)  # type: ignore[arg-type]
    plain = _as_floats(raw)
    assert plain.observed == 0.0125 and type(plain.observed) is float
    assert plain.expected == 3.0 and type(plain.expected) is float
    # What the results table takes (it refuses a Decimal in its float column).
    assert results_table([plain], "r1", NOW).column("observed").to_pylist() == [0.0125]
    with pytest.raises(pa.ArrowInvalid):
        results_table([raw], "r1", NOW)


def test_the_json_report_carries_what_sql_hands_over() -> None:
    """Details and evidence come from SQL: DuckDB's SUM is a DECIMAL, days are dates. The JSON
    rendering (`quality run --format json`, what the Airflow DAG reads) must not crash on them,
    and numbers stay numbers."""
    from datetime import date
    from decimal import Decimal

    odd = replace(
        result("dup", "fail"),
        details={"rows": Decimal("12"), "share": Decimal("0.25")},
        evidence=[{"day": date(2026, 11, 30), "revenue": Decimal("10.50")}],
    )
    run = QualityRun("r3", NOW, (CheckOutcome("dup", "raw.events", "duplicates", (odd,)),))
    data = orjson.loads(as_json(run))
    (check,) = data["run"]["checks"]
    part = check["results"][0] if "results" in check else check
    assert part["details"] == {"rows": 12, "share": 0.25}
    assert part["evidence"] == [{"day": "2026-11-30", "revenue": 10.5}]
