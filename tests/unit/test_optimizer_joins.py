"""The join rules on the shop's catalog: the corpus (tests/optimizer_corpus/joins.yml) gives
exactly its expected rule ids, rewrites parse and no longer trip their rule, and each rule's
evidence, position, fix and edge cases. Whether rewrites give equal results on the generated
shop is the optimizer's corpus test (tests/integration/test_optimizer_corpus.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo
from shopstream.genai.optimizer.findings import Finding
from shopstream.genai.optimizer.query import Query, parse_query
from shopstream.genai.optimizer.rules import RULES, find_all, joins
from tests.support.optimizer_corpus import load_corpus
from tests.support.shop_catalog import shop_catalog

JOINS = load_corpus(pattern="joins.yml")
ALL_ENTRIES = load_corpus()
#: NOT IN's rewrite to NOT EXISTS is always offered; on data with NULLs the verifier rejects it,
#: so such entries say ``rewrite: false`` although the finding carries one.
REJECTED_BY_DATA = {"not_in_nullable"}


def _query(sql: str, dialect: Any = "duckdb", catalog: Catalog | None = None) -> Query:
    return parse_query(sql, dialect, catalog or shop_catalog())


def _found(sql: str, rule: str, dialect: Any = "duckdb") -> list[Finding]:
    return list(RULES[rule](_query(sql, dialect), OptimizerSettings()))


def test_the_corpus_is_big_enough_and_names_are_unique() -> None:
    assert len(JOINS) >= 16
    assert sum(e["dialect"] == "bigquery" for e in JOINS) >= 3
    names = [e["name"] for e in ALL_ENTRIES]
    assert len(names) == len(set(names))
    assert {rule for e in JOINS for rule in e["findings"]} >= set(joins.RULES)


@pytest.mark.parametrize("entry", JOINS, ids=[e["name"] for e in JOINS])
def test_corpus_entry_gives_exactly_its_findings(entry: dict[str, Any]) -> None:
    query = _query(entry["sql"], entry["dialect"])
    findings = find_all(query)
    assert sorted({f.rule for f in findings}) == sorted(entry["findings"])
    for finding in findings:
        assert finding.evidence and finding.fix and finding.message
        assert finding.position is not None
        # The position points into the evidence, in the text as written.
        word = re.match(r"[`\"'(]*([\w.-]+)", entry["sql"][finding.position.offset :])
        assert word is not None and word.group(1).lower() in finding.evidence.lower()
    rewrites = [f for f in findings if f.rewrite]
    if entry["rewrite"]:
        assert rewrites, "a rule rewrite is expected"
    else:
        assert all(f.rule in REJECTED_BY_DATA for f in rewrites)
    for finding in rewrites:
        assert finding.rewrite is not None
        rewritten = _query(finding.rewrite, entry["dialect"])
        again = {f.rule for f in find_all(rewritten)}
        assert finding.rule not in again, finding.rewrite


@pytest.mark.parametrize(
    "entry",
    [e for e in ALL_ENTRIES if not e["findings"]],
    ids=[e["name"] for e in ALL_ENTRIES if not e["findings"]],
)
def test_clean_queries_give_no_join_findings(entry: dict[str, Any]) -> None:
    query = _query(entry["sql"], entry["dialect"])
    assert [f.rule for rule in joins.RULES.values() for f in rule(query, OptimizerSettings())] == []


def test_cartesian_join_says_rows_times_rows_and_where_it_is() -> None:
    sql = "select o.order_id, u.email\nfrom staging.stg_orders o\ncross join staging.stg_users u"
    (finding,) = _found(sql, "cartesian_join")
    assert finding.evidence == "CROSS JOIN staging.stg_users AS u"
    assert finding.position is not None and finding.position.line == 3
    assert "staging.stg_orders (1,000 rows) x staging.stg_users (249 rows) = 249,000 rows" in (
        finding.message
    )
    assert "ON o.user_id = u.user_id" in finding.fix
    assert finding.severity == "high" and finding.rewrite is None


@pytest.mark.parametrize(
    "sql",
    [
        # A tiny side (3 rows) multiplies by at most 3.
        "select o.order_id, c.months_since from staging.stg_orders o "
        "cross join mart.cohort_retention c",
        # ON TRUE is a cross join, but a single-row side is harmless.
        "select o.order_id from staging.stg_orders o join (select max(total_amount) as top "
        "from staging.stg_orders) m on true",
        "select o.order_id from staging.stg_orders o join staging.stg_users u using (user_id)",
        "select u.user_id, x from staging.stg_users u cross join unnest([1, 2]) as t(x)",
    ],
)
def test_cartesian_join_leaves_linked_and_tiny_joins_alone(sql: str) -> None:
    assert _found(sql, "cartesian_join") == []


def test_on_true_is_a_cartesian_join() -> None:
    sql = "select o.order_id from staging.stg_orders o join staging.stg_users u on true"
    assert [f.rule for f in _found(sql, "cartesian_join")] == ["cartesian_join"]


def test_exploding_join_names_both_sides_and_their_keys() -> None:
    sql = (
        "select * from raw.cdc_orders o join raw.cdc_order_items i on i.key = o.key "
        "where o.commit_date = '2026-11-29'"
    )
    (finding,) = _found(sql, "exploding_join")
    assert "raw.cdc_orders (3,625 rows) and raw.cdc_order_items (2,487 rows)" in finding.message
    assert "o.key = i.key" in finding.message
    assert "raw.cdc_orders: (change_id)" in finding.message
    assert "GROUP BY key" in finding.fix


def test_exploding_join_reads_a_comma_join_s_condition_in_the_where() -> None:
    sql = (
        "select o.status, i.quantity from staging.stg_orders_history o, "
        "staging.stg_order_items_history i where i.order_id = o.order_id and i.quantity > 1"
    )
    (finding,) = _found(sql, "exploding_join")
    assert "o.order_id = i.order_id" in finding.message
    assert _found(sql, "cartesian_join") == []


def test_exploding_join_is_silent_when_a_side_is_unique_or_unknown() -> None:
    on_key = (
        "select o.status from staging.stg_orders o "
        "join staging.stg_payments p on p.payment_id = o.order_id"
    )
    unknown = (
        "select 1 from shop.orders o join staging.stg_order_items_history i on i.order_id = o.id"
    )
    grouped = (
        "select 1 from staging.stg_order_items_history h join (select distinct order_id "
        "from staging.stg_orders_history) o on o.order_id = h.order_id"
    )
    assert _found(on_key, "exploding_join") == []
    assert _found(unknown, "exploding_join") == []
    assert _found(grouped, "exploding_join") == []


def test_repeated_scan_of_a_cte_names_the_tables_it_reads() -> None:
    sql = (
        "with paid as (select order_id from staging.stg_orders where status = 'PAID') "
        "select a.order_id from paid a join paid b on a.order_id = b.order_id"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert "CTE paid is referenced 2 times" in finding.message
    assert "staging.stg_orders is scanned 2 times" in finding.message
    assert "MATERIALIZED" in finding.fix


def test_a_cte_read_once_or_shadowed_is_not_a_repeated_scan() -> None:
    once = "with p as (select order_id from staging.stg_orders) select count(*) from p"
    constants = "with v as (select 1 as x) select a.x from v a join v b on a.x = b.x"
    assert _found(once, "repeated_scan") == []
    assert _found(constants, "repeated_scan") == []


def test_scalar_aggregates_become_one_scan_with_conditions() -> None:
    sql = (
        "select (select count(distinct user_id) from staging.stg_orders where status = 'PAID') "
        "as buyers, (select avg(total_amount) from staging.stg_orders) as aov"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite == (
        "SELECT COUNT(DISTINCT CASE WHEN status = 'PAID' THEN user_id END) AS buyers, "
        "AVG(total_amount) AS aov FROM staging.stg_orders"
    )


@pytest.mark.parametrize(
    "aggregate",
    [
        "array_agg(event_id)",
        "first(event_id)",
        "string_agg(event_id, ',')",
        "arg_max(event_id, event_ts)",
    ],
)
def test_scalar_aggregates_that_see_nulls_or_order_are_not_combined(aggregate: str) -> None:
    # CASE WHEN p THEN x END hands these aggregates NULLs for the rows p rejects (ARRAY_AGG
    # keeps them, FIRST may pick one): only NULL-ignoring aggregates combine this way.
    sql = (
        f"select (select {aggregate} from raw.events where event_date = '2026-11-28' "
        "and event_type = 'purchase') as p, "
        "(select count(*) from raw.events where event_date = '2026-11-28') as n"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite is None, finding.rewrite


def test_combined_scalar_aggregates_keep_the_partition_filters() -> None:
    sql = (
        "select (select count(*) from raw.events where event_date = '2026-11-28') as d1, "
        "(select count(*) from raw.events where event_date = '2026-11-29') as d2"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite is not None
    assert finding.rewrite.endswith(
        "FROM raw.events WHERE event_date = '2026-11-28' OR event_date = '2026-11-29'"
    ), finding.rewrite


def test_scalar_aggregates_one_unfiltered_one_pruned_are_not_combined() -> None:
    # The combined scan would read every partition for each aggregate's column: more than the
    # pruned subquery reads, so the rewrite could cost more than it saves. No rewrite.
    sql = (
        "select (select count(*) from raw.events where event_date = '2026-11-28') as d1, "
        "(select count(*) from raw.events) as everything"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite is None, finding.rewrite


def test_scalar_aggregates_with_a_from_are_found_but_not_rewritten() -> None:
    sql = (
        "select u.user_id, (select count(*) from staging.stg_orders) as orders, "
        "(select max(total_amount) from staging.stg_orders) as top from staging.stg_users u"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite is None


def test_self_join_for_a_per_key_aggregate_becomes_a_window() -> None:
    sql = (
        "select i.order_id, i.line_no, t.units, t.order_id as same_order\n"
        "from staging.stg_order_items i\n"
        "join (select order_id, sum(quantity) as units from staging.stg_order_items group by 1) t\n"
        "  on t.order_id = i.order_id"
    )
    (finding,) = _found(sql, "self_join_window")
    assert finding.position is not None and finding.position.line == 3
    assert "SUM(quantity) OVER (PARTITION BY order_id)" in finding.fix
    assert finding.rewrite == (
        "SELECT i.order_id, i.line_no, SUM(i.quantity) OVER (PARTITION BY i.order_id) AS units, "
        "i.order_id AS same_order FROM staging.stg_order_items AS i WHERE NOT i.order_id IS NULL"
    )


@pytest.mark.parametrize(
    "shape",
    [
        # A filter outside applies after the join; a window would see the filtered rows only.
        "{sql} where i.quantity > 1",
        # A LEFT JOIN keeps rows with a NULL key, with NULL totals.
        "{sql_left}",
    ],
)
def test_self_join_rewrite_only_when_result_preserving(shape: str) -> None:
    inner = (
        "(select order_id, sum(quantity) as units from staging.stg_order_items group by order_id)"
    )
    sql = (
        f"select i.order_id, t.units from staging.stg_order_items i join {inner} t "
        "on t.order_id = i.order_id"
    )
    sql_left = sql.replace(" join ", " left join ")
    (finding,) = _found(shape.format(sql=sql, sql_left=sql_left), "self_join_window")
    assert finding.rewrite is None


def test_previous_row_self_join_suggests_lag() -> None:
    sql = (
        "select cur.product_id, prev.price as previous_price from staging.stg_products_history cur "
        "join staging.stg_products_history prev on prev.product_id = cur.product_id "
        "and prev.valid_to = cur.valid_from"
    )
    (finding,) = _found(sql, "self_join_window")
    assert "LAG(...) / LEAD(...) OVER (PARTITION BY product_id" in finding.fix
    assert "prev.valid_to = cur.valid_from" in finding.message
    assert _found(sql, "exploding_join") == []


def test_distinct_over_a_left_join_drops_the_join() -> None:
    sql = (
        "select distinct o.order_id from staging.stg_orders o "
        "left join staging.stg_order_items i on i.order_id = o.order_id"
    )
    (finding,) = _found(sql, "distinct_over_fanout")
    assert finding.rewrite == "SELECT DISTINCT o.order_id FROM staging.stg_orders AS o"


def test_distinct_over_a_join_to_a_unique_side_is_not_a_fanout() -> None:
    sql = (
        "select distinct i.product_id from staging.stg_order_items i "
        "join staging.stg_orders o on o.order_id = i.order_id where o.status = 'PAID'"
    )
    assert _found(sql, "distinct_over_fanout") == []


def test_not_in_explains_the_null_trap_and_rewrites_to_not_exists() -> None:
    sql = (
        "select order_id from staging.stg_orders\n"
        "where user_id not in (select user_id from staging.stg_users where grade = 'VIP')"
    )
    (finding,) = _found(sql, "not_in_nullable")
    assert "returns no rows at all" in finding.message
    assert finding.position is not None and (finding.position.line, finding.position.column) == (
        2,
        7,
    )
    assert finding.tradeoff and "NULL" in finding.tradeoff
    # NOT IN drops outer rows whose value is NULL (x NOT IN (...) is NULL then): the rewrite
    # keeps that, so it equals NOT IN whenever the subquery has no NULL.
    assert finding.rewrite == (
        "SELECT order_id FROM staging.stg_orders WHERE (NOT stg_orders.user_id IS NULL AND "
        "NOT EXISTS(SELECT 1 FROM staging.stg_users AS stg_users WHERE grade = 'VIP' AND "
        "stg_users.user_id = stg_orders.user_id))"
    )


def test_not_in_over_the_same_table_unaliased_is_found_but_not_rewritten() -> None:
    sql = (
        "select order_id from staging.stg_orders "
        "where user_id not in (select user_id from staging.stg_orders where status = 'CANCELLED')"
    )
    (finding,) = _found(sql, "not_in_nullable")
    assert finding.rewrite is None


def test_not_in_over_a_table_the_catalog_does_not_know_is_left_alone() -> None:
    sql = (
        "select o.order_id from staging.stg_orders o "
        "where o.user_id not in (select id from shop.vip)"
    )
    assert _found(sql, "not_in_nullable") == []


def test_not_in_over_a_not_null_column_is_fine() -> None:
    users = TableInfo("staging.stg_users", (Column("user_id", "BIGINT", nullable=False),))
    orders = TableInfo("staging.stg_orders", (Column("user_id", "BIGINT"),))
    catalog = Catalog({"staging.stg_users": users, "staging.stg_orders": orders})
    query = _query(
        "select 1 from staging.stg_orders "
        "where user_id not in (select user_id from staging.stg_users)",
        catalog=catalog,
    )
    assert list(joins.not_in_nullable(query, OptimizerSettings())) == []


@pytest.mark.parametrize(
    "sql",
    [
        # grouped by the output alias
        "select u.user_id, e.n from staging.stg_users u join (select user_id as uid, count(*) "
        "as n from raw.events where event_date = '2026-11-28' group by uid) e on e.uid = u.user_id",
        "select i.order_id, e.views from staging.stg_order_items i join (select product_id as "
        "pid, count(*) as views from staging.stg_events where event_date = '2026-11-28' "
        "group by pid) e on e.pid = i.product_id",
        # the key qualified in the projection, unqualified in GROUP BY (and the reverse)
        "select i.order_id, e.views from staging.stg_order_items i join (select ev.product_id, "
        "count(*) as views from staging.stg_events ev where ev.event_date = '2026-11-28' "
        "group by product_id) e on e.product_id = i.product_id",
        "select i.order_id, e.views from staging.stg_order_items i join (select product_id, "
        "count(*) as views from staging.stg_events ev where ev.event_date = '2026-11-28' "
        "group by ev.product_id) e on e.product_id = i.product_id",
    ],
)
def test_a_subquery_grouped_by_the_join_key_is_unique_however_the_key_is_written(sql: str) -> None:
    assert _found(sql, "exploding_join") == []


@pytest.mark.parametrize(
    "sql",
    [
        # NATURAL joins on the columns both have; POSITIONAL pairs row n with row n
        "select * from raw.events natural join staging.stg_events",
        "select * from staging.stg_users positional join staging.stg_orders",
    ],
)
def test_natural_and_positional_joins_are_not_cartesian(sql: str) -> None:
    assert _found(sql, "cartesian_join") == []


def test_an_asof_join_matches_one_row_and_does_not_explode() -> None:
    sql = (
        "select e.event_id, o.order_id from raw.events e asof join staging.stg_orders o "
        "on o.user_id = e.user_id and o.created_at <= e.event_ts "
        "where e.event_date = '2026-11-28'"
    )
    assert _found(sql, "exploding_join") == []


def test_the_same_scalar_subquery_twice_is_one_finding() -> None:
    sql = (
        "select (select count(*) from raw.events where event_date = '2026-11-28') as a, "
        "(select count(*) from raw.events where event_date = '2026-11-28') as b"
    )
    (finding,) = _found(sql, "repeated_scan")
    assert finding.rewrite is not None  # one scan computes both
