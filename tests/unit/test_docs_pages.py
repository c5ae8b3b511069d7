"""The documentation's pages and site from hand-made facts, and the deploy/ files it reads (the
real alert rules, runbooks and DAGs of this checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shopstream.config import Settings
from shopstream.genai.docs.model import ColumnRef, Lineage, PipelineCode
from shopstream.genai.docs.pages import (
    alert_pipelines,
    checks_on,
    index_page,
    mermaid_graph,
    model_page,
    pipeline_page,
    writers,
)
from shopstream.genai.docs.prose import Subject, write_overviews
from shopstream.genai.docs.site import MERMAID_URL, to_html, write_site
from shopstream.genai.docs.sources import (
    ALERT_RULES,
    CHECKOUT,
    DAGS,
    RUNBOOKS,
    Column,
    DocSources,
    Model,
    Schedule,
    deploy_files,
    deploy_text,
    parse_alerts,
    parse_dag_schedules,
    parse_runbooks,
)
from shopstream.quality.spec import QualityConfig, load_config
from tests.support.site_links import broken_links, links_of

ROOT = Path(__file__).resolve().parents[2]

ORDERS = "staging.stg_orders"
SALES = "mart.daily_sales"


def facts() -> tuple[DocSources, Lineage, dict[str, PipelineCode]]:
    sales = Model(
        name="daily_sales",
        table=SALES,
        description="Sales per business day.",
        materialized="table",
        path="models/marts/daily_sales.sql",
        columns=(
            Column("order_date", "DATE", "Business day the order was placed."),
            Column("net_revenue", "DECIMAL(38,2)", "gross | cancelled | refunded"),
        ),
        tests=("not_null_daily_sales_order_date",),
    )
    orders = Model(
        name="stg_orders",
        table=ORDERS,
        description="Orders with their current status.",
        materialized="incremental",
        path="models/staging/generated/stg_orders.sql",
        columns=(Column("order_id", "VARCHAR", "Order id."), Column("total_amount", "DECIMAL")),
    )
    rules, _ = deploy_text(ALERT_RULES)
    runbooks, _ = deploy_text(RUNBOOKS)
    sources = DocSources(
        dialect="duckdb",
        manifest={},
        models=(sales, orders),
        tables={
            SALES: sales.columns,
            ORDERS: orders.columns,
            "raw.cdc_orders": (
                Column("key", "JSON"),
                Column("after", "JSON", "The row after the change."),
            ),
        },
        descriptions={
            SALES: sales.description,
            ORDERS: orders.description,
            "raw.cdc_orders": "Changes of the shop's orders, as captured.",
        },
        checks=load_config(),
        alerts=parse_alerts(rules),
        runbooks=parse_runbooks(runbooks),
        schedules=(
            Schedule("transform", "running platform", "every 5 minutes"),
            Schedule("transform", "Airflow DAG shopstream_transform_hourly", "15 * * * *"),
        ),
        provenance=("models: a test",),
    )
    lineage = Lineage(
        tables={SALES: (ORDERS,), ORDERS: ("raw.cdc_orders",)},
        columns={
            ColumnRef(SALES, "net_revenue"): (ColumnRef(ORDERS, "total_amount"),),
            ColumnRef(SALES, "order_date"): (),
            ColumnRef(ORDERS, "total_amount"): (ColumnRef("raw.cdc_orders", "after"),),
        },
    )
    pipelines = {
        "cdc": PipelineCode(
            "cdc",
            "Change data capture from PostgreSQL.",
            ("shopstream.cdc.reader",),
            {"shopstream cdc": "The CDC reader alone."},
            ("cdc.slot_name",),
            ("raw.cdc_<table>",),
            (),
            ("shopstream_cdc_replication_lag_seconds",),
        ),
        "transform": PipelineCode(
            "transform", "Staging and marts with dbt.", ("shopstream.transform.runner",)
        ),
        "quality": PipelineCode(
            "quality",
            "The data quality checks.",
            ("shopstream.quality.runner",),
            tables_written=("monitoring.data_quality_checks",),
            metrics=("shopstream_quality_check_status",),
        ),
    }
    return sources, lineage, pipelines


def test_a_model_page_shows_typed_described_columns_lineage_checks_and_alerts() -> None:
    sources, lineage, pipelines = facts()
    page = model_page(sources.models[0], sources, lineage, pipelines, "An overview.")
    assert page.path == "models/mart/daily_sales.md"
    text = page.markdown
    assert text.startswith("# mart.daily_sales\n\nAn overview.")
    assert (
        "| `order_date` | DATE | Business day the order was placed. | (a constant or count) |"
        in text
    )
    # A pipe inside a description stays inside its cell.
    assert "gross \\| cancelled \\| refunded | staging.stg_orders.total_amount |" in text
    assert "| `net_revenue` | raw.cdc_orders.after |" in text  # column lineage back to raw
    assert "[staging.stg_orders](../staging/stg_orders.md)" in text
    assert "raw_cdc_orders --> staging_stg_orders" in text  # the Mermaid graph
    # The checks on the table it is computed from guard it, and the quality alert with them.
    assert "staging.stg_orders.total_matches_items" in text
    assert "DataQualityCheckFailing" in text and "PipelineExecutionFailed" in text
    assert "[CdcReplicationLagHigh](../../pipelines/cdc.md#cdcreplicationlaghigh)" in text
    assert "`shopstream transform --select daily_sales+`" in text


def test_a_pipeline_page_has_its_tables_alerts_with_runbooks_and_troubleshooting() -> None:
    sources, lineage, pipelines = facts()
    page = pipeline_page("cdc", pipelines["cdc"], sources, lineage, pipelines, "CDC overview.")
    text = page.markdown
    assert page.path == "pipelines/cdc.md"
    # raw.cdc_<table> expands to the captured tables known to the warehouse.
    assert "| `raw.cdc_orders` | [staging.stg_orders](../models/staging/stg_orders.md) |" in text
    assert "| `shopstream cdc` | The CDC reader alone. |" in text
    assert "### CdcReplicationLagHigh" in text and "CdcSlotRetainedWalHigh" in text
    runbook = sources.runbooks["CdcReplicationLagHigh"]
    assert runbook.splitlines()[0] in text  # the runbook section itself
    assert "- `cdc.slot_name`" in text and "snapshot_mode" in text
    # The default checks' freshness SLA on the raw table it writes.
    assert (
        "| raw.cdc_orders | newest ingested_at | 15 min | 30 min | raw.cdc_orders.freshness |"
        in text
    )


def test_the_index_links_every_page_and_says_where_its_facts_come_from() -> None:
    sources, lineage, pipelines = facts()
    page = index_page(sources, pipelines, lineage, ["stg_x: no column lineage"], "Overview.")
    text = page.markdown
    assert "[mart.daily_sales](models/mart/daily_sales.md)" in text
    assert "[cdc](pipelines/cdc.md)" in text
    assert "- models: a test" in text and "stg_x: no column lineage" in text


def test_alerts_map_to_the_pipelines_they_watch() -> None:
    sources, _, pipelines = facts()
    pipelines = {
        **pipelines,
        "collector": PipelineCode(
            "collector",
            "",
            (),
            tables_written=("raw.events",),
            metrics=("shopstream_sink_queue_rows",),
        ),
        # A Counter declared without its _total suffix, as prometheus_client allows.
        "loader": PipelineCode(
            "loader", "", (), tables_written=("raw.events",), metrics=("shopstream_dead_letters",)
        ),
    }
    mapped = {a.name: alert_pipelines(a, pipelines) for a in sources.alerts}
    assert mapped["CdcReplicationLagHigh"] == ["cdc"]
    assert mapped["DataQualityCheckFailing"] == ["quality"]
    assert mapped["EventCollectorHighErrorRate"] == ["collector"]
    assert mapped["SinkBackPressure"] == ["collector"]
    assert mapped["PipelineExecutionFailed"] == ["quality", "transform"]
    assert set(mapped["ShopstreamTargetDown"]) == {"cdc", "collector", "loader"}
    assert "loader" in mapped["LoaderNotProgressing"]
    assert mapped["DataFreshnessSLABreach"] == ["collector", "loader"]
    assert mapped["DeadLettersGrowing"] == ["collector", "loader"]
    assert set(mapped["DataPlatformPodRestarting"]) == {"cdc", "collector", "loader"}
    assert all(mapped.values()), [n for n, p in mapped.items() if not p]
    assert writers("raw.cdc_orders", pipelines) == ["cdc"]


def test_every_alert_has_its_runbook_section() -> None:
    sources, _, _ = facts()
    assert len(sources.alerts) >= 10
    assert [a.name for a in sources.alerts if a.name not in sources.runbooks] == []


def test_checks_on_a_table_include_rules_and_relationships_that_read_it() -> None:
    checks = load_config().checks()
    names = {c.name for c in checks_on("staging.stg_order_items", checks)}
    assert "staging.stg_orders.total_matches_items" in names  # its SQL reads the table
    assert all(c.table == "raw.events" for c in checks_on("raw.events", checks))
    assert checks_on("mart.nothing", QualityConfig().checks()) == []


def test_dag_schedules_are_read_without_importing_airflow() -> None:
    files, where = deploy_files(DAGS, ".py")
    assert where == CHECKOUT  # an editable install: the checkout's deploy/
    schedules = [s for name, text in files for s in parse_dag_schedules(name, text)]
    assert Schedule("transform", "Airflow DAG shopstream_transform_hourly", "15 * * * *") in (
        schedules
    )
    assert Schedule("docs", "Airflow DAG shopstream_docs", "0 4 * * 1") in schedules
    assert Schedule("quality", "Airflow DAG shopstream_quality", "*/30 * * * *") in schedules


def test_the_wheel_carries_every_deploy_file_the_docs_read() -> None:
    """pyproject's force-include copies them into shopstream/_deploy/ (where deploy_text looks
    first); a DAG added to deploy/airflow/dags/ must be added there too."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    wanted = [f"deploy/{ALERT_RULES}", f"deploy/{RUNBOOKS}"]
    wanted += [f"deploy/{DAGS}/{p.name}" for p in sorted((ROOT / "deploy" / DAGS).glob("*.py"))]
    for path in wanted:
        assert included.get(path) == "shopstream/_" + path, path


def test_mermaid_graphs_are_sorted_and_quote_their_labels() -> None:
    text = mermaid_graph([("b.x", "a.y"), ("b.x", "a.y"), ('q."z"', "a.y")], highlight="a.y")
    assert text.splitlines() == [
        "```mermaid",
        "flowchart LR",
        '  a_y["a.y"]',
        '  b_x["b.x"]',
        '  q__z_["q.#quot;z#quot;"]',
        "  b_x --> a_y",
        "  q__z_ --> a_y",
        "  style a_y stroke-width:3px",
        "```",
    ]


def test_the_site_renders_links_anchors_mermaid_and_escapes_html() -> None:
    page = to_html(
        "# T\n\nSee [cdc](../pipelines/cdc.md#lag) <script>x</script>\n\n```mermaid\nflowchart LR\n"
        "  a --> b\n```\n",
        "T",
        "models/mart/t.md",
    )
    parsed = links_of(page)
    assert "../pipelines/cdc.html#lag" in parsed.hrefs
    assert "../../style.css" in parsed.hrefs and "../../index.html" in parsed.hrefs
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert parsed.mermaid == 1 and MERMAID_URL in page and "t" in parsed.ids
    assert "a --&gt; b" in page


def test_a_rebuild_writes_the_same_bytes_and_removes_stale_files(tmp_path: Path) -> None:
    sources, lineage, pipelines = facts()
    pages = [index_page(sources, pipelines, lineage, [], "Overview.")]
    pages += [model_page(m, sources, lineage, pipelines, "A model.") for m in sources.models]
    pages += [
        pipeline_page(name, code, sources, lineage, pipelines, "A pipeline.")
        for name, code in pipelines.items()
    ]
    first = write_site(pages, tmp_path)
    snapshot = {p: p.read_bytes() for p in first}
    stale = tmp_path / "site" / "models" / "old" / "gone.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier build")
    second = write_site(pages, tmp_path)
    assert second == first and {p: p.read_bytes() for p in second} == snapshot
    assert not stale.exists() and not stale.parent.exists()
    pages_written = {"index", "models/mart/daily_sales", "models/staging/stg_orders"}
    pages_written |= {f"pipelines/{name}" for name in pipelines}
    assert {p.relative_to(tmp_path).as_posix() for p in first} == {
        *(f"markdown/{p}.md" for p in pages_written),
        *(f"site/{p}.html" for p in pages_written),
        "site/style.css",
    }
    assert broken_links(tmp_path / "site") == []


def test_without_a_model_the_overviews_are_the_deterministic_text(tmp_path: Path) -> None:
    subjects = [Subject("index", "the platform", ("It has 5 pipelines.",), "Five pipelines.")]
    written = write_overviews(subjects, Settings(data_dir=tmp_path))
    assert written.text == {"index": "Five pipelines."} and written.author == "deterministic"
    assert not (tmp_path / "docs-cache").exists()


def test_a_model_page_lists_only_the_alerts_about_its_own_upstream() -> None:
    """An alert matched to a raw table (``table="events"``) concerns the models computed from
    that table, not every model its writers feed."""
    sources, lineage, _ = facts()
    pipelines = {
        **facts()[2],
        "collector": PipelineCode("collector", "", (), tables_written=("raw.events",)),
        "loader": PipelineCode("loader", "", (), tables_written=("raw.events", "raw.cdc_<table>")),
    }
    sales = model_page(sources.models[0], sources, lineage, pipelines, "").markdown
    related = sales.split("## Related alerts", 1)[1].split("## Troubleshooting", 1)[0]
    assert "CdcReplicationLagHigh" in related  # cdc writes raw.cdc_orders, which it reads
    assert "DataFreshnessSLABreach" not in related and "DataFreshnessUnknown" not in related
    events = Model("stg_events", "staging.stg_events", "", "incremental", "x.sql", ())
    on_events = Lineage(tables={"staging.stg_events": ("raw.events",)}, columns={})
    text = model_page(events, sources, on_events, pipelines, "").markdown
    related = text.split("## Related alerts", 1)[1]
    assert "| DataFreshnessSLABreach | critical |" in related


def test_what_the_lineage_could_not_trace_is_on_the_index_and_the_models_page(
    tmp_path: Path,
) -> None:
    """A model whose compiled SQL sqlglot cannot parse: the build says so (the index's lineage
    notes) and its page points there."""
    from dataclasses import replace

    from shopstream.genai.pipeline_doc_generator import render_pages

    sources, _, _ = facts()
    manifest = {
        "nodes": {
            "model.shop.daily_sales": {
                "resource_type": "model",
                "schema": "mart",
                "alias": "daily_sales",
                "depends_on": {"nodes": ["model.shop.stg_orders"]},
                "compiled_code": "select from where (",
            },
            "model.shop.stg_orders": {
                "resource_type": "model",
                "schema": "staging",
                "alias": "stg_orders",
                "depends_on": {"nodes": []},
                "compiled_code": 'select "after" as order_id from "db"."raw"."cdc_orders"',
            },
        }
    }
    pages = {
        p.path: p.markdown
        for p in render_pages(replace(sources, manifest=manifest), Settings(data_dir=tmp_path))
    }
    notes = pages["index.md"].split("## Lineage notes", 1)[1]
    assert "- mart.daily_sales: sqlglot cannot parse its compiled SQL: " in notes
    sales = pages["models/mart/daily_sales.md"]
    assert "sqlglot cannot parse its compiled SQL" in sales
    assert "[the index's lineage notes](../../index.md#lineage-notes)" in sales
    assert "sqlglot cannot" not in pages["models/staging/stg_orders.md"]


def test_only_a_directory_the_docs_made_is_cleaned(tmp_path: Path) -> None:
    from shopstream.genai.docs.site import MARKER, OutDirError

    sources, lineage, pipelines = facts()
    pages = [index_page(sources, pipelines, lineage, [], "Overview.")]
    mine = tmp_path / "site" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(OutDirError, match="is not empty and was not written by") as refused:
        write_site(pages, tmp_path)
    assert str(refused.value).startswith(str(mine.parent))
    assert mine.read_text() == "mine" and not (tmp_path / "markdown").exists()
    mine.unlink()
    written = write_site(pages, tmp_path)
    assert (tmp_path / "site" / MARKER).is_file() and (tmp_path / "markdown" / MARKER).is_file()
    assert tmp_path / "site" / MARKER not in written  # a mark, not a page
    stale = tmp_path / "markdown" / "old.md"
    stale.write_text("an earlier build's page")
    write_site(pages, tmp_path)
    assert not stale.exists() and (tmp_path / "markdown" / MARKER).is_file()


def test_the_loader_page_draws_the_transports_it_reads_into_it() -> None:
    sources, lineage, pipelines = facts()
    loader = PipelineCode(
        "loader", "Lands the topics.", ("shopstream.loader",), reads_from=("kafka", "pubsub")
    )
    text = pipeline_page("loader", loader, sources, lineage, pipelines, "").markdown
    assert "  kafka --> loader" in text and "  pubsub --> loader" in text
    assert "loader --> kafka" not in text
    assert "Records are read from: `kafka`, `pubsub`." in text


def test_a_model_page_lists_the_freshness_slas_of_the_raw_tables_it_comes_from() -> None:
    sources, lineage, pipelines = facts()
    text = model_page(sources.models[0], sources, lineage, pipelines, "").markdown
    freshness = text.split("## Freshness and schedules", 1)[1].split("\n## ", 1)[0]
    assert (
        "| raw.cdc_orders | newest ingested_at | 15 min | 30 min | raw.cdc_orders.freshness |"
        in freshness
    )
    # The lineage table says how far its downstream row reaches.
    assert "| downstream, all the way | - |" in text


def test_the_overviews_facts_read_as_english(tmp_path: Path) -> None:
    from shopstream.genai.pipeline_doc_generator import _subjects

    sources, lineage, pipelines = facts()
    subjects = {s.key: s for s in _subjects(sources, lineage, pipelines)}
    orders = " ".join(subjects["model:staging.stg_orders"].facts)
    assert "staging.stg_orders is an incremental model built by the dbt transform." in orders
    sales = " ".join(subjects["model:mart.daily_sales"].facts)
    assert "mart.daily_sales is a table model built by the dbt transform." in sales
    index = " ".join(subjects["index"].facts)
    assert "The transform builds 2 dbt models: 1 in mart and 1 in staging." in index


def test_alert_templates_read_as_placeholders() -> None:
    [alert] = parse_alerts(
        """groups:
  - name: g
    rules:
      - alert: A
        expr: x > 1
        annotations:
          summary: "raw.events is {{ $value | humanizeDuration }} old"
          description: "{{ $labels.table }} lags by {{$value}}."
"""
    )
    assert alert.summary == "raw.events is [value] old"
    assert alert.description == "[table] lags by [value]."


def test_a_pipeline_page_has_the_schemas_of_the_tables_it_writes() -> None:
    sources, lineage, pipelines = facts()
    text = pipeline_page("cdc", pipelines["cdc"], sources, lineage, pipelines, "").markdown
    schemas = text.split("## Schemas of the tables it writes", 1)[1].split("\n## ", 1)[0]
    assert "### raw.cdc_orders\n\nChanges of the shop's orders, as captured." in schemas
    assert "| `key` | JSON |  |" in schemas
    assert "| `after` | JSON | The row after the change. |" in schemas
    # The transform's tables are the models: their pages carry the schemas.
    transform = pipeline_page(
        "transform", pipelines["transform"], sources, lineage, pipelines, ""
    ).markdown
    schemas = transform.split("## Schemas of the tables it writes", 1)[1].split("\n## ", 1)[0]
    assert "| [staging.stg_orders](../models/staging/stg_orders.md) | Orders with" in schemas


def test_a_deploy_file_that_cannot_be_read_is_a_source_error_naming_it(tmp_path: Path) -> None:
    """A read failure (exit 1 in the CLI, "cannot read ..."), never taken for a failure to
    write the docs."""
    from shopstream.genai.docs.sources import DocsSourceError, _read_deploy

    with pytest.raises(DocsSourceError, match=r"^cannot read deploy/monitoring/runbooks\.md: "):
        _read_deploy(tmp_path, "monitoring/runbooks.md")  # a directory: IsADirectoryError
    undecodable = tmp_path / "rules.yml"
    undecodable.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DocsSourceError, match=r"cannot read deploy/rules\.yml"):
        _read_deploy(undecodable, "rules.yml")
