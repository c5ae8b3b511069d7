"""The optimization report's three forms, on a report written out by hand (what the optimizer
would return for a SELECT * in a CTE on raw.events), and the LLM's prompt."""

from __future__ import annotations

import json

from rich.console import Console

from shopstream.genai.optimizer.findings import (
    Cost,
    Finding,
    OptimizationReport,
    Position,
    Rewrite,
    Verification,
)
from shopstream.genai.optimizer.llm_rewrites import prompt
from shopstream.genai.optimizer.query import parse_query
from shopstream.genai.optimizer.report import as_json, as_markdown, as_table, summary_line
from tests.support.shop_catalog import shop_catalog

SQL = "with e as (select * from raw.events)\nselect event_type, count(*) as n from e group by 1"
FIXED = (
    "with e as (select event_type from raw.events)\n"
    "select event_type, count(*) as n from e group by 1"
)
WRONG = (
    "select event_type, count(*) as n from raw.events where event_date > '2026-11-27' group by 1"
)


def report() -> OptimizationReport:
    star = Finding(
        rule="select_star",
        severity="high",
        title="SELECT * on a wide table",
        message="reads all 20 columns of raw.events; the query uses 1: event_type",
        evidence="SELECT * FROM raw.events",
        position=Position(line=1, column=12, offset=11),
        fix="select only event_type there",
        rewrite=FIXED,
    )
    distinct = Finding(
        rule="count_distinct_exact",
        severity="low",
        title="Exact COUNT(DISTINCT)",
        message="an exact distinct count",
        evidence="COUNT(DISTINCT x)",
        fix="APPROX_COUNT_DISTINCT(x)",
        tradeoff="approximate, ~1% error",
    )
    return OptimizationReport(
        sql=SQL,
        dialect="duckdb",
        warehouse="duckdb:///data/shopstream.duckdb",
        findings=[star, distinct],
        cost_before=Cost(bytes=6 * 1024**2, dollars=0.0000358, method="estimate from column sizes"),
        rewrites=[
            Rewrite(
                source="rule:select_star",
                sql=FIXED,
                fixes=["select_star"],
                status="verified",
                verification=Verification(
                    passed=True,
                    parses=True,
                    same_schema=True,
                    same_results=True,
                    compared_on="full data (6,000 rows in 1 table, 15 rows out)",
                ),
                cost_after=Cost(bytes=1536 * 1024, dollars=0.0000089, method="estimate"),
            ),
            Rewrite(
                source="llm:openai:test-model",
                sql=WRONG,
                status="rejected",
                verification=Verification(
                    passed=False,
                    parses=True,
                    same_schema=True,
                    same_results=False,
                    reason="results differ: the original returns 15 rows, the rewrite 15",
                ),
            ),
        ],
        notes=["unknown table mart.gone: ..."],
    )


def test_the_summary_names_the_cheapest_verified_rewrite_and_its_saving() -> None:
    assert summary_line(report()) == (
        "2 findings, 1 verified rewrite, 1 rejected; scans 6.0 MiB ($0.000036); "
        "rule:select_star scans 1.5 MiB ($0.0000089), 75% less"
    )


def test_the_table_shows_findings_fixes_tradeoffs_and_how_rewrites_were_verified() -> None:
    console = Console(record=True, width=200)
    console.print(as_table(report()))
    text = console.export_text()
    assert "select_star" in text and "1:12" in text and "evidence: SELECT * FROM raw.events" in text
    assert "trade-off: approximate, ~1% error" in text
    assert "verified: parses, same schema, same results on full data (6,000 rows" in text
    assert "6.0 MiB ($0.000036) -> 1.5 MiB ($0.0000089), 75% less" in text
    assert "rejected: results differ: the original returns 15 rows" in text
    assert "event_date > '2026-11-27'" not in text  # a rejected rewrite is never offered
    assert "note: unknown table mart.gone" in text


def test_json_is_the_report_itself() -> None:
    data = json.loads(as_json(report()))
    assert OptimizationReport.model_validate(data) == report()
    assert data["rewrites"][1]["verification"]["reason"].startswith("results differ")


def test_markdown_has_the_query_the_findings_and_each_rewrite() -> None:
    text = as_markdown(report())
    assert text.startswith("# SQL optimizer: 2 findings, 1 verified rewrite, 1 rejected")
    assert f"```sql\n{SQL}\n```" in text and f"```sql\n{FIXED}\n```" in text
    assert "| high | select_star | 1:12 | `SELECT * FROM raw.events` |" in text
    assert "Trade-off: approximate, ~1% error" in text
    assert "### llm:openai:test-model: rejected" in text
    assert "- Rejected: results differ: the original returns 15 rows" in text
    assert "- Verified: parses, same schema, same results on full data (6,000 rows" in text
    assert WRONG not in text
    assert "## Notes\n\n- unknown table mart.gone" in text


def test_markdown_code_with_backticks_inside_stays_code() -> None:
    bigquery = "SELECT * FROM `shop-prod.raw.events`\n-- ``` in a comment"
    finding = (
        report().findings[0].model_copy(update={"evidence": "SELECT * FROM `shop-prod.raw.events`"})
    )
    text = as_markdown(report().model_copy(update={"sql": bigquery, "findings": [finding]}))
    # A span of two backticks, padded: the one inside cannot end it.
    assert "| `` SELECT * FROM `shop-prod.raw.events` `` |" in text
    # A fence longer than any run of backticks in the SQL.
    assert f"````sql\n{bigquery}\n````" in text


def test_a_narrow_terminal_stacks_each_findings_details() -> None:
    wide, narrow = Console(record=True, width=200), Console(record=True, width=80)
    wide.print(as_table(report()))
    narrow.print(as_table(report()))
    text = narrow.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    # Each finding a heading and its details beneath, whole words, no table columns.
    assert "high  select_star  at 1:12" in text
    assert "  evidence: SELECT * FROM raw.events" in text
    assert "  fix: select only event_type there" in text
    assert "  trade-off: approximate, ~1% error" in text
    assert "│" not in text.split("rewrite (")[0]
    assert "│" in wide.export_text()  # wide enough: the table


def test_a_clean_report_says_so() -> None:
    clean = OptimizationReport(sql="select 1", dialect="bigquery")
    assert summary_line(clean) == "0 findings, 0 verified rewrites; scans unknown"
    assert "No findings: nothing in this query to fix." in as_markdown(clean)


def test_the_llm_is_told_the_query_its_tables_and_the_findings() -> None:
    query = parse_query(SQL, "duckdb", shop_catalog())
    text = prompt(query, report().findings)
    assert "Dialect: duckdb" in text and SQL in text
    rows = shop_catalog().tables["raw.events"].rows
    assert (
        f"- raw.events ({rows:,} rows; partitioned by event_date; clustered by event_type;" in text
    )
    assert "event_id VARCHAR" in text
    assert "- select_star (high): reads all 20 columns" in text
