"""The optimizer's corpus (every tests/optimizer_corpus/*.yml) through :func:`optimize` on the
generated shop: exactly the expected findings, and every rule rewrite verified equal on the
shop's data where one is expected (none verified where none is)."""

from __future__ import annotations

from typing import Any

import pytest

from shopstream.genai.optimizer.catalog import Catalog
from shopstream.genai.optimizer.findings import Dialect
from shopstream.genai.optimizer.query import SqlSyntaxError
from shopstream.genai.sql_optimizer import optimize
from shopstream.warehouse.base import Warehouse
from tests.support.optimizer_corpus import CORPUS, FIELDS, load_corpus
from tests.support.shop_catalog import shop_catalog
from tests.support.shop_warehouse import ShopWarehouse

ENTRIES = load_corpus()


@pytest.fixture(scope="module")
def catalogs(shop_reader: Warehouse) -> dict[str, Catalog]:
    """The shop's catalog per dialect, loaded once (each load measures every table)."""
    from shopstream.genai.optimizer.catalog import load_catalog

    return {d: load_catalog(shop_reader, d) for d in ("duckdb", "bigquery")}


def test_the_corpus_is_well_formed() -> None:
    assert ENTRIES, f"no corpus entries in {CORPUS}"
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names)), "corpus names must be unique across files"
    for entry in ENTRIES:
        assert set(entry) - {"file"} <= FIELDS, entry["name"]
        assert entry["dialect"] in ("duckdb", "bigquery"), entry["name"]
        assert isinstance(entry["findings"], list) and isinstance(entry["rewrite"], bool)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_corpus_entry(
    entry: dict[str, Any],
    shop_reader: Warehouse,
    catalogs: dict[str, Catalog],
    shop_warehouse: ShopWarehouse,
) -> None:
    report = optimize(
        entry["sql"],
        dialect=entry["dialect"],
        warehouse=shop_reader,
        settings=shop_warehouse.settings,
        catalog=catalogs[entry["dialect"]],
    )
    assert sorted({f.rule for f in report.findings}) == sorted(set(entry["findings"])), (
        report.findings
    )
    for finding in report.findings:
        assert finding.evidence and finding.fix, finding
    rule_rewrites = [r for r in report.rewrites if r.source.startswith("rule:")]
    if entry["rewrite"]:
        assert rule_rewrites, "a rule rewrite was expected"
        for rewrite in rule_rewrites:
            assert rewrite.status == "verified", (rewrite.source, rewrite.verification)
            assert rewrite.verification.same_results and rewrite.verification.compared_on
            # Verified rewrites are costed; a rewrite never reads more than the query.
            assert rewrite.cost_after is not None and report.cost_before is not None
            assert rewrite.cost_after.bytes <= report.cost_before.bytes, rewrite.source
    else:
        assert not [r for r in rule_rewrites if r.status == "verified"], rule_rewrites
        for rewrite in rule_rewrites:  # offered, and refused with the reason
            assert rewrite.verification.reason, rewrite
    if "_*" not in entry["sql"]:  # wildcard tables exist in BigQuery only
        assert report.cost_before is not None, report.notes
        assert not [n for n in report.notes if n.startswith("unknown table")], report.notes


def test_optimize_loads_the_catalog_itself_and_says_what_it_measured(
    shop_reader: Warehouse, shop_warehouse: ShopWarehouse
) -> None:
    report = optimize(
        "select event_id, event_type from raw.events where event_date = '2026-11-28'",
        warehouse=shop_reader,
        settings=shop_warehouse.settings,
    )
    assert report.cost_before is not None and report.cost_before.bytes > 0
    assert report.cost_before.method
    assert report.warehouse.startswith("duckdb:///")
    assert report.notes == []


def test_unknown_tables_are_noted(shop_reader: Warehouse, shop_warehouse: ShopWarehouse) -> None:
    report = optimize(
        "select id from mart.no_such_mart", warehouse=shop_reader, settings=shop_warehouse.settings
    )
    assert report.cost_before is None
    assert any(n.startswith("unknown table mart.no_such_mart:") for n in report.notes)
    assert any(n.startswith("no cost for the query:") for n in report.notes), report.notes


def test_invalid_sql_is_a_clear_error_before_anything_is_read() -> None:
    with pytest.raises(SqlSyntaxError) as raised:
        optimize("select event_id, from where raw.events", dialect="duckdb")
    assert str(raised.value).startswith("the query is not valid duckdb SQL at line 1")
    with pytest.raises(SqlSyntaxError, match="only a query"):
        optimize("delete from raw.events", dialect="duckdb")
    with pytest.raises(SqlSyntaxError, match="unknown dialect 'postgres'"):
        optimize("select 1", dialect="postgres")  # type: ignore[arg-type]


def test_a_column_its_table_does_not_have_is_a_clear_error(
    shop_reader: Warehouse, shop_warehouse: ShopWarehouse
) -> None:
    """Columns are resolved against the warehouse's tables: a misspelt one fails the way the
    warehouse would, naming it, instead of an analysis of a query that cannot run."""
    for sql, named in [
        ("select evnt_type, count(*) from raw.events group by 1", "evnt_type"),
        (
            "select o.status, e.nope from staging.stg_orders o "
            "join raw.events e on e.user_id = o.user_id",
            "nope",
        ),
        ("SELECT revenu FROM `shop-prod.mart.daily_sales`", "revenu"),
    ]:
        dialect: Dialect = "bigquery" if "`" in sql else "duckdb"
        with pytest.raises(SqlSyntaxError) as raised:
            optimize(sql, dialect=dialect, warehouse=shop_reader, settings=shop_warehouse.settings)
        assert named in str(raised.value) and "no such column" in str(raised.value)


def test_without_a_warehouse_the_report_says_what_is_missing() -> None:
    report = optimize("select 1 as one")
    assert report.cost_before is None and report.warehouse == ""
    assert report.notes[0].startswith("no warehouse:")
    # With the tables known but no warehouse: the tables it cannot resolve are named.
    report = optimize(
        "SELECT e.event_id FROM `p.raw.events_*` AS e JOIN `p.mart.gone` AS g ON TRUE",
        dialect="bigquery",
        catalog=shop_catalog(),
    )
    assert [n.split(":")[0] for n in report.notes] == [
        "no warehouse",
        "unknown table p.mart.gone",
        "wildcard table p.raw.events_*",
    ]
