"""The scan rules on the shop's catalog: the corpus (tests/optimizer_corpus/scans.yml and
clean.yml) gives exactly its expected findings, each rewrite parses and fixes what it was for,
and single cases pin evidence, positions, fixes and the edges (unknown tables, thresholds,
rewrites that must not happen). That rewrites return the same rows is proven on the generated
shop by the optimizer's corpus test (tests/integration/test_optimizer_corpus.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.findings import DIALECTS, Finding
from shopstream.genai.optimizer.query import parse_query
from shopstream.genai.optimizer.rules import find_all, scans
from tests.support.optimizer_corpus import load_corpus
from tests.support.shop_catalog import shop_catalog

ENTRIES = [e for e in load_corpus() if e["file"] in ("scans.yml", "clean.yml")]


def _run(rule: str, sql: str, dialect: str = "duckdb", **settings: Any) -> list[Finding]:
    query = parse_query(sql, dialect, shop_catalog())  # type: ignore[arg-type]
    return list(scans.RULES[rule](query, OptimizerSettings(**settings)))


def _one(rule: str, sql: str, dialect: str = "duckdb", **settings: Any) -> Finding:
    found = _run(rule, sql, dialect, **settings)
    assert len(found) == 1, [f.evidence for f in found]
    return found[0]


def _at(finding: Finding) -> tuple[int, int]:
    """Line and column of a finding (every scan finding has a position)."""
    assert finding.position is not None, finding.rule
    return finding.position.line, finding.position.column


def test_corpus_files_follow_the_shared_format() -> None:
    scan_entries = [e for e in ENTRIES if e["file"] == "scans.yml"]
    clean_entries = [e for e in ENTRIES if e["file"] == "clean.yml"]
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names))
    for entry in ENTRIES:
        assert set(entry) == {"name", "dialect", "sql", "findings", "rewrite", "note", "file"}, (
            entry
        )
        assert entry["dialect"] in DIALECTS
        assert set(entry["findings"]) <= set(scans.RULES), entry["name"]
    assert len(scan_entries) >= 18
    assert sum(e["dialect"] == "bigquery" for e in scan_entries) >= 3
    assert sum("*`" in e["sql"] for e in scan_entries) >= 2
    assert len(clean_entries) >= 5
    assert {e["dialect"] for e in clean_entries} == set(DIALECTS)
    assert all(e["findings"] == [] and not e["rewrite"] for e in clean_entries)
    # Every scan rule has corpus entries it fires on.
    assert {r for e in scan_entries for r in e["findings"]} == set(scans.RULES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_corpus_entry_gives_exactly_its_findings(entry: dict[str, Any]) -> None:
    query = parse_query(entry["sql"], entry["dialect"], shop_catalog())
    found = find_all(query)
    assert sorted(f.rule for f in found) == sorted(entry["findings"])
    for finding in found:
        assert finding.evidence and finding.fix and finding.message
        assert finding.position is not None, finding.rule
        assert entry["sql"][finding.position.offset :].strip()
    rewrites = [f for f in found if f.rewrite]
    assert bool(rewrites) == entry["rewrite"]
    for finding in rewrites:
        assert finding.rewrite is not None
        rewritten = parse_query(finding.rewrite, entry["dialect"], shop_catalog())
        again = {f.rule for f in find_all(rewritten)}
        assert finding.rule not in again, finding.rewrite
        # A rewrite fixes its own finding and brings no new one.
        assert again <= set(entry["findings"]), finding.rewrite


# -- SELECT * ---------------------------------------------------------------------------------


def test_star_in_a_cte_is_rewritten_to_the_columns_used() -> None:
    sql = (
        "with e as (select * from raw.events where event_date = '2026-11-28')\n"
        "select user_id, count(*) as purchases from e where event_type = 'purchase' group by 1"
    )
    finding = _one("select_star", sql)
    assert finding.evidence == "SELECT * FROM raw.events"
    assert _at(finding) == (1, 19)
    # BigQuery prunes the columns nobody reads through CTEs and subqueries: the bill does not
    # change, so this is about readability, and the report must not promise savings.
    assert finding.severity == "low"
    assert "bills the unused" not in finding.message
    assert "scan cost is unchanged" in finding.message
    # The columns the outer query reads, in the table's order (the CTE's own filter reads
    # event_date without projecting it).
    assert finding.fix == "select only event_type, user_id there"
    assert finding.rewrite is not None
    rewritten = parse_query(finding.rewrite, "duckdb", shop_catalog())
    cte = rewritten.tree.args["with_"].expressions[0].this
    assert [p.sql() for p in cte.expressions] == ["event_type", "user_id"]
    assert cte.args["where"].sql() == "WHERE event_date = '2026-11-28'"


def _rewrite_resolves(rewrite: str) -> None:
    """The rewrite's every column resolves against the shop's tables (none was dropped)."""
    from sqlglot.optimizer.qualify import qualify

    tree = parse_query(rewrite, "duckdb", shop_catalog()).tree
    qualify(
        tree,
        schema=dict(shop_catalog().sqlglot_schema()),
        dialect="duckdb",
        validate_qualify_columns=True,
    )


@pytest.mark.parametrize(
    "sql",
    [
        # the star's CTE is read by a CTE that is itself only counted
        "with a as (with b as (select * from raw.events where event_date = '2026-11-28') "
        "select event_id, user_id from b), c as (select event_id, user_id from a union all "
        "select event_id, user_id from a) select count(*) from c",
        "with b as (select * from raw.events where event_date = '2026-11-28'), "
        "a as (select event_id, user_id from b) select count(*) from a",
        # read through a subquery whose own columns are not used
        "select count(*) from (select event_type, device_type from "
        "(select * from raw.events where event_date = '2026-11-28') as x) as y",
    ],
)
def test_star_rewrite_keeps_what_the_readers_as_written_use(sql: str) -> None:
    finding = _one("select_star", sql)
    assert finding.rewrite is not None
    _rewrite_resolves(finding.rewrite)


@pytest.mark.parametrize(
    ("sql", "blocker"),
    [
        (
            "with b as (select distinct * from raw.events where event_date = '2026-11-28') "
            "select count(*) from b",
            "DISTINCT",
        ),
        (
            "with b as (select * from raw.events where event_date = '2026-11-28' union "
            "select * from raw.events where event_date = '2026-11-29') select count(*) from b",
            "UNION",
        ),
        (
            "select count(*) from (select * from staging.stg_orders except "
            "select * from staging.stg_orders where status = 'PAID') as t",
            "EXCEPT",
        ),
    ],
)
def test_star_whose_columns_are_really_read_is_high_without_rewrite(sql: str, blocker: str) -> None:
    found = _run("select_star", sql)
    assert found
    for finding in found:
        assert finding.severity == "high", finding.message
        assert blocker in finding.message, finding.message
        assert finding.rewrite is None  # fewer columns would change which rows are distinct


def test_star_at_the_top_lists_the_columns_and_is_not_rewritten() -> None:
    finding = _one("select_star", "select * from staging.stg_orders")
    assert finding.rewrite is None
    assert "order_id, user_id, status, delivery_type, total_amount" in finding.fix
    assert "10 columns of staging.stg_orders" in finding.message


def test_star_on_a_narrow_table_or_under_the_threshold_is_no_finding() -> None:
    assert _run("select_star", "select * from mart.cohort_retention") == []
    assert _run("select_star", "select * from raw.events", wide_table_columns=21) == []
    assert _run("select_star", "select * from raw.events", wide_table_columns=20) != []


def test_star_over_a_join_in_a_subquery_names_columns_but_does_not_rewrite() -> None:
    sql = (
        "select count(*) as orders, sum(o.total_amount) as total from "
        "(select * from staging.stg_orders join staging.stg_payments using (order_id)) as o"
    )
    found = _run("select_star", sql)
    assert found and all(f.rewrite is None for f in found)


def test_star_in_exists_reads_no_column() -> None:
    sql = (
        "select count(*) from staging.stg_orders o where exists "
        "(select * from raw.events e where e.event_date = '2026-11-28' and e.user_id = o.user_id)"
    )
    assert _run("select_star", sql) == []


def test_star_passed_through_to_the_result_is_reported_once_without_rewrite() -> None:
    finding = _one("select_star", "select * from (select * from raw.events) as e limit 5")
    assert finding.evidence == "SELECT * FROM raw.events"
    assert finding.rewrite is None
    assert "all 20 columns" in finding.message


# -- partitions -------------------------------------------------------------------------------


def test_missing_partition_filter_names_the_table_and_the_filter_to_write() -> None:
    finding = _one(
        "partition_filter_missing",
        "select op, count(*) from\n  raw.cdc_order_items as items group by op",
    )
    assert finding.evidence == "raw.cdc_order_items AS items"
    assert _at(finding) == (2, 3)
    assert "commit_date" in finding.message and "every partition" in finding.message
    assert "`WHERE commit_date >= current_date - INTERVAL 7 DAY`" in finding.fix
    assert finding.severity == "high"
    bigquery = _one(
        "partition_filter_missing", "SELECT COUNT(*) FROM `p.mart.daily_sales`", "bigquery"
    )
    assert "DATE_SUB(CURRENT_DATE(), INTERVAL 7 DAY)" in bigquery.fix
    assert bigquery.severity == "medium"  # a mart: small daily aggregates


@pytest.mark.parametrize(
    "where",
    [
        "event_date = '2026-11-28'",
        "event_date in ('2026-11-28', '2026-11-29')",
        "event_date between '2026-11-01' and '2026-11-30'",
        "'2026-11-28' <= event_date",
        "event_date >= current_date - interval 3 day",
        "(event_date = '2026-11-28' or event_date = '2026-11-29') and event_type = 'purchase'",
        "event_date is null",
        "event_date = $1",
    ],
)
def test_prunable_filters_are_no_finding(where: str) -> None:
    sql = f"select event_id from raw.events where {where}"
    assert _run("partition_filter_missing", sql) == []
    assert _run("partition_filter_not_prunable", sql) == []


def test_a_filter_reaches_the_scan_through_ctes_and_join_conditions() -> None:
    through_ctes = (
        "with e as (select * from raw.events), f as (select event_id, event_date as day from e) "
        "select event_id from f where day = '2026-11-28'"
    )
    assert _run("partition_filter_missing", through_ctes) == []
    in_on = (
        "select o.order_id, e.event_id from staging.stg_orders o join raw.events e "
        "on e.user_id = o.user_id and e.event_date = '2026-11-28'"
    )
    assert _run("partition_filter_missing", in_on) == []
    # Not across a LIMIT: the subquery's first 10 rows come from every day.
    across_limit = (
        "select event_id from (select event_id, event_date from raw.events limit 10) as e "
        "where event_date = '2026-11-28'"
    )
    assert len(_run("partition_filter_missing", across_limit)) == 1


def test_a_filter_reaches_both_branches_of_a_union() -> None:
    sql = (
        "with arrived as (select event_id, event_date as day from raw.events "
        "union all select event_id, event_date from staging.stg_events_rejected) "
        "select count(*) from arrived where day = '{}'"
    )
    assert _run("partition_filter_missing", sql.format("2026-11-28")) == []
    # Without the filter both branches read every partition.
    unfiltered = sql.replace(" where day = '{}'", "")
    assert len(_run("partition_filter_missing", unfiltered)) == 2


def test_a_cte_read_twice_must_be_filtered_by_both_readers() -> None:
    sql = (
        "with e as (select event_id, event_date from raw.events) "
        "select event_id from e where event_date = '2026-11-28' "
        "union all select event_id from e"
    )
    assert len(_run("partition_filter_missing", sql)) == 1


@pytest.mark.parametrize(
    ("where", "replacement"),
    [
        (
            "extract(year from event_date) = 2026",
            "event_date >= CAST('2026-01-01' AS DATE) AND event_date < CAST('2027-01-01' AS DATE)",
        ),
        ("year(event_date) > 2025", "event_date >= CAST('2026-01-01' AS DATE)"),
        (
            "date_trunc('quarter', event_date) <= '2026-10-01'",
            "event_date < CAST('2027-01-01' AS DATE)",
        ),
        ("cast(event_date as varchar) < '2026-11-28'", "event_date < CAST('2026-11-28' AS DATE)"),
        (
            "date_trunc('month', event_date) between '2026-10-01' and '2026-11-01'",
            "event_date >= CAST('2026-10-01' AS DATE) AND event_date < CAST('2026-12-01' AS DATE)",
        ),
    ],
)
def test_a_function_on_the_partition_column_becomes_a_range(where: str, replacement: str) -> None:
    finding = _one(
        "partition_filter_not_prunable", f"select event_id from raw.events where {where}"
    )
    assert finding.fix == f"filter the bare column instead: `{replacement}`"
    assert finding.rewrite is not None and replacement in finding.rewrite.replace("\n  AND", " AND")


def test_evidence_and_position_point_at_the_function() -> None:
    sql = (
        "select count(*)\nfrom mart.daily_sales\n"
        "where date_trunc('month', order_date) = '2026-11-01'"
    )
    finding = _one("partition_filter_not_prunable", sql)
    assert finding.evidence == "DATE_TRUNC('MONTH', order_date)"
    assert _at(finding) == (3, 7)
    assert finding.position is not None
    assert sql[finding.position.offset :].startswith("date_trunc")


@pytest.mark.parametrize(
    ("where", "why"),
    [
        # Not aligned to a month: no day truncates to it, the query returns nothing; no rewrite
        # can say that as a range, so the finding stays advice.
        ("date_trunc('month', event_date) = '2026-11-15'", "wraps the partition column"),
        ("extract(month from event_date) = 11", "wraps the partition column"),
        ("event_date <> '2026-11-28'", "excludes at most one partition"),
        ("event_date in (select order_date from mart.daily_sales)", "subquery"),
        ("event_date = '2026-11-28' or user_id = 'UH000157'", "branch `user_id = 'UH000157'`"),
    ],
)
def test_non_prunable_filters_without_a_mechanical_rewrite(where: str, why: str) -> None:
    found = _run("partition_filter_not_prunable", f"select event_id from raw.events where {where}")
    assert len(found) == 1
    assert why in found[0].message
    assert found[0].rewrite is None


def test_a_timestamp_partition_column_is_not_rewritten() -> None:
    # DATE(received_at) depends on the session time zone in DuckDB: no mechanical range.
    finding = _one(
        "partition_filter_not_prunable",
        "select dead_letter_id from raw.dead_letter where cast(received_at as date) = '2026-11-28'",
    )
    assert finding.rewrite is None


def test_unknown_tables_are_skipped_by_the_catalog_rules() -> None:
    sql = "select * from shop.unknown_events where cast(day as varchar) = '2026-11-28' limit 5"
    for rule in (
        "select_star",
        "partition_filter_missing",
        "partition_filter_not_prunable",
        "cluster_unused",
        "limit_without_pruning",
    ):
        assert _run(rule, sql) == [], rule


# -- clustering -------------------------------------------------------------------------------


def test_cluster_unused_names_the_cluster_columns_and_the_filtered_ones() -> None:
    sql = (
        "select session_id from mart.sessions "
        "where session_date = '2026-11-28' and utm_source = 'newsletter'"
    )
    finding = _one("cluster_unused", sql)
    assert finding.evidence == "utm_source = 'newsletter'"
    assert "clustered by device_type, visitor_id" in finding.message
    assert (
        "`device_type IN (...)`" in finding.fix
        and "cluster mart.sessions by utm_source" in finding.fix
    )
    # Filtering any cluster column, or only the partition column, is fine.
    assert _run("cluster_unused", sql + " and device_type = 'ios'") == []
    assert (
        _run(
            "cluster_unused",
            "select session_id from mart.sessions where session_date = '2026-11-28'",
        )
        == []
    )
    # A join condition is not a filter on the table.
    joined = (
        "select s.session_id from mart.sessions s "
        "join staging.stg_users u on u.user_id = s.user_id where s.session_date = '2026-11-28'"
    )
    assert _run("cluster_unused", joined) == []


# -- ORDER BY and LIMIT -----------------------------------------------------------------------


def test_order_by_in_a_subquery_is_dropped_by_the_rewrite() -> None:
    sql = (
        "select device_type, count(*) from (select device_type from mart.sessions "
        "where session_date = '2026-11-28' order by session_start) as s group by 1"
    )
    finding = _one("order_by_without_limit", sql)
    assert finding.evidence.startswith("ORDER BY session_start")
    assert finding.rewrite is not None and "ORDER BY" not in finding.rewrite.upper()


def test_order_by_feeding_an_order_sensitive_aggregate_is_not_dropped() -> None:
    sql = (
        "select string_agg(event_type, ',') from (select event_type, event_ts from raw.events "
        "where event_date = '2026-11-28' order by event_ts) as e"
    )
    finding = _one("order_by_without_limit", sql)
    assert finding.rewrite is None
    assert "STRING_AGG(x ORDER BY y)" in finding.fix


@pytest.mark.parametrize(
    "sql",
    [
        # an outer LIMIT / OFFSET / QUALIFY takes the first rows in the inner order
        "select * from (select event_id, event_ts from raw.events "
        "where event_date = '2026-11-28' order by event_ts desc) t limit 10",
        "select * from (select event_id, event_ts from raw.events "
        "where event_date = '2026-11-28' order by event_ts desc) t offset 5",
        "select * from (select event_id, session_id, event_ts from raw.events "
        "where event_date = '2026-11-28' order by event_ts) t "
        "qualify row_number() over (partition by session_id) = 1",
        # DISTINCT ON keeps the first row of each key in the ORDER BY of its own SELECT
        "with s as (select distinct on (user_id) user_id, event_type from raw.events "
        "where event_date = '2026-11-28' order by user_id, event_ts desc) select * from s",
        # a window without ORDER BY numbers the rows in the order they arrive
        "with b as (select order_id, created_at from staging.stg_orders order by created_at) "
        "select order_id, row_number() over () as rn from b",
        # FIRST / LIST / STRING_AGG read rows in the order they arrive
        "with s as (select user_id, event_type from raw.events where event_date = '2026-11-28' "
        "order by event_ts desc) select user_id, first(event_type) as last_type from s "
        "group by user_id",
        "select list(event_type) as types from (select event_type from raw.events "
        "where event_date = '2026-11-28' order by event_ts)",
    ],
)
def test_order_by_something_downstream_depends_on_is_kept(sql: str) -> None:
    finding = _one("order_by_without_limit", sql)
    assert finding.rewrite is None, finding.rewrite
    # The report does not call a sort that decides the result "work with no effect".
    assert "no effect" not in finding.message
    if "distinct on" in sql:
        assert finding.severity == "low" and "needed" in finding.message


def test_order_by_in_an_array_subquery_is_kept() -> None:
    sql = (
        "SELECT ARRAY(SELECT x FROM UNNEST([3, 1, 2]) AS x ORDER BY x DESC) AS arr, e.event_id "
        "FROM `shop.raw.events` AS e WHERE e.event_date = '2026-11-28'"
    )
    for finding in _run("order_by_without_limit", sql, "bigquery"):
        assert finding.rewrite is None, finding.rewrite


def test_order_by_with_limit_or_on_a_summary_is_fine() -> None:
    assert (
        _run("order_by_without_limit", "select event_id from raw.events order by event_ts limit 5")
        == []
    )
    summary = "select event_type, count(*) from raw.events group by 1 order by 2 desc"
    assert _run("order_by_without_limit", summary) == []
    from_a_summary = (
        "with daily as (select event_date, count(*) as events from raw.events group by 1) "
        "select event_date, events from daily order by event_date"
    )
    assert _run("order_by_without_limit", from_a_summary) == []
    from_rows = "with e as (select event_id, event_ts from raw.events) select * from e order by 2"
    assert len(_run("order_by_without_limit", from_rows)) == 1


def test_limit_with_a_pruning_filter_or_on_an_aggregate_is_fine() -> None:
    pruned = "select event_id from raw.events where event_date = '2026-11-28' limit 5"
    assert _run("limit_without_pruning", pruned) == []
    aggregate = "select event_type, count(*) from raw.events group by 1 limit 3"
    assert _run("limit_without_pruning", aggregate) == []
    finding = _one("limit_without_pruning", "select event_id from raw.events limit 5")
    assert finding.evidence == "LIMIT 5"
    assert "raw.events" in finding.message and "event_date" in finding.fix


# -- wildcard tables, COUNT(DISTINCT) ---------------------------------------------------------


def test_wildcard_table_needs_a_constant_table_suffix_filter() -> None:
    sql = "SELECT COUNT(*) FROM `p.analytics_export.events_*` WHERE {}"
    finding = _one(
        "wildcard_without_table_suffix", sql.format("event_name = 'purchase'"), "bigquery"
    )
    assert finding.evidence == "`p.analytics_export.events_*`"
    assert "_TABLE_SUFFIX BETWEEN" in finding.fix
    ok = sql.format("_TABLE_SUFFIX BETWEEN '20261101' AND '20261130'")
    assert _run("wildcard_without_table_suffix", ok, "bigquery") == []
    dynamic = sql.format("_TABLE_SUFFIX = (SELECT MAX(day) FROM p.shop.days)")
    assert "subquery" in _one("wildcard_without_table_suffix", dynamic, "bigquery").message


def test_count_distinct_is_a_tradeoff_never_a_rewrite() -> None:
    finding = _one(
        "count_distinct_exact",
        "select count(distinct user_id) from mart.sessions where session_date = '2026-11-28'",
    )
    assert finding.evidence == "COUNT(DISTINCT user_id)"
    assert "APPROX_COUNT_DISTINCT(user_id)" in finding.fix
    assert finding.tradeoff is not None and "~1%" in finding.tradeoff
    assert finding.rewrite is None


@pytest.mark.parametrize(
    ("sql", "missing"),
    [
        # the preserved side of an outer join is read whole, whatever its ON says
        (
            "select u.user_id, e.event_id from staging.stg_users u right join raw.events e "
            "on e.user_id = u.user_id and e.event_date = '2026-11-28'",
            True,
        ),
        (
            "select e.event_id from raw.events e left join staging.stg_users u "
            "on u.user_id = e.user_id and e.event_date = '2026-11-28'",
            True,
        ),
        (
            "select e.event_id from staging.stg_users u full join raw.events e "
            "on u.user_id = e.user_id and e.event_date = '2026-11-28'",
            True,
        ),
        # the null-padded side and inner joins are filtered by their ON
        (
            "select e.event_id from staging.stg_users u left join raw.events e "
            "on u.user_id = e.user_id and e.event_date = '2026-11-28'",
            False,
        ),
        (
            "select e.event_id from staging.stg_users u join raw.events e "
            "on u.user_id = e.user_id and e.event_date = '2026-11-28'",
            False,
        ),
    ],
)
def test_an_on_condition_filters_a_table_only_where_the_join_drops_its_rows(
    sql: str, missing: bool
) -> None:
    assert bool(_run("partition_filter_missing", sql)) is missing


def test_a_name_the_table_does_not_have_is_not_its_column() -> None:
    # `day` is a BigQuery scripting variable (DECLARE day DATE ...), not a column of raw.events:
    # the filter compares the partition column with it and filters no other column.
    sql = "select event_id from `shop.raw.events` where event_date = day"
    assert _run("cluster_unused", sql, "bigquery") == []
    # A variable is a constant when BigQuery chooses the partitions: the filter prunes.
    assert _run("partition_filter_missing", sql, "bigquery") == []
    assert _run("partition_filter_not_prunable", sql, "bigquery") == []
    # A name of an outer query in a correlated subquery is no constant.
    correlated = (
        "select o.order_id from `shop.staging.stg_orders` o where exists (select 1 from "
        "`shop.raw.events` e where e.event_date = created_at and e.user_id = o.user_id)"
    )
    assert len(_run("partition_filter_missing", correlated, "bigquery")) == 1


def test_a_filter_does_not_reach_below_distinct_on() -> None:
    # DISTINCT ON keeps each user's latest event of all days; filtering the days first would
    # keep the latest of that day instead: the filter cannot prune the scan.
    sql = (
        "with s as (select distinct on (user_id) user_id, event_date from raw.events "
        "order by user_id, event_ts desc) select * from s where event_date = '2026-11-28'"
    )
    assert len(_run("partition_filter_missing", sql)) == 1


def test_a_star_qualified_by_its_alias_in_another_case_is_found() -> None:
    finding = _one("select_star", "select E.* from raw.events e where e.event_date = '2026-11-28'")
    assert "all 20 columns" in finding.message
