"""The SQL the verifier sends to BigQuery (no BigQuery here: the embedded path runs in the
integration tests; this checks that what BigQuery would get parses as BigQuery SQL and reads the
stated sample)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from shopstream.genai.optimizer.query import parse_query
from shopstream.genai.optimizer.verify import _comparison_sql, as_run
from tests.support.shop_catalog import shop_catalog

QUERY = "SELECT e.event_type, COUNT(*) AS n FROM `shop-prod.raw.events` AS e GROUP BY 1"


def test_large_tables_are_read_as_their_sample_under_their_own_alias() -> None:
    query = parse_query(QUERY, "bigquery", shop_catalog())
    events = shop_catalog().tables["raw.events"]
    sql = as_run(query, "bigquery", {"raw.events": events}, 10.0)
    tree = sqlglot.parse_one(sql, read="bigquery")
    [sample] = list(tree.find_all(exp.Subquery))
    assert sample.alias == "e"
    key = "STRUCT(optimizer_sample.event_id)"
    assert f"MOD(ABS(FARM_FINGERPRINT(TO_JSON_STRING({key}))), 10000) < 1000" in sql
    assert [t.name for t in tree.find_all(exp.Table)] == ["events"]  # read once, sampled
    # Nothing sampled: the query as BigQuery runs it, untouched.
    assert as_run(query, "bigquery", {}, 10.0) == query.tree.sql(dialect="bigquery")


def test_the_bigquery_comparison_counts_rows_without_except_all() -> None:
    sql = _comparison_sql("bigquery", "SELECT 1 AS a", "SELECT 1 AS a")
    tree = sqlglot.parse_one(sql, read="bigquery")
    assert [s.alias for s in tree.selects] == [
        "original_rows",
        "rewrite_rows",
        "only_original",
        "only_rewrite",
    ]
    assert "EXCEPT" not in sql.upper()
