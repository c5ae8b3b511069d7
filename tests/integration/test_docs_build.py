"""``shopstream docs build`` on the generated shop (shop_warehouse): a real DuckDB warehouse,
``dbt docs generate`` in the transform workspace, the real lineage and code map, and the CLI
as a process. The shop is copied first (the build writes dbt's target/ and the docs into its
data directory; the session's shop is read only). The language model is the scripted
OpenAI-compatible server (a remote model cannot be reached from here): real HTTP, scripted
answers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from shopstream.config import GenAISettings, Settings
from shopstream.genai.docs.code_map import PIPELINES
from shopstream.genai.docs.prose import CACHE_DIR, Subject, write_overviews
from shopstream.genai.docs.site import MARKER
from shopstream.genai.docs.sources import DocsSourceError, _left_by_last_transform
from tests.support.llm_server import ChatServer, Reply
from tests.support.shop_warehouse import ShopWarehouse, shopstream
from tests.support.site_links import broken_links, links_of


@pytest.fixture(scope="module")
def shop(shop_warehouse: ShopWarehouse, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the generated shop's data directory."""
    data_dir = tmp_path_factory.mktemp("docs-shop") / "data"
    shutil.copytree(shop_warehouse.data_dir, data_dir)
    return data_dir


@pytest.fixture(scope="module")
def built(
    shop: Path, shop_warehouse: ShopWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """Two builds: one in-process, one by the CLI as a process (the second finds a stale
    file of an "earlier build" and must remove it)."""
    from shopstream.genai.pipeline_doc_generator import build_docs

    first = tmp_path_factory.mktemp("docs-first")
    steps: list[str] = []
    build_docs(Settings(data_dir=shop), first, steps.append)
    assert "dbt docs generate" in steps
    second = tmp_path_factory.mktemp("docs-second")
    stale = second / "site" / "models" / "mart" / "a_dropped_model.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by an earlier build")
    (second / "site" / MARKER).write_text("")  # the earlier build's mark: its to clean
    env = {**shop_warehouse.env, "SHOPSTREAM_DATA_DIR": str(shop)}
    result = shopstream(env, "docs", "build", "--out", str(second))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pages written" in result.stderr and str(second / "site" / "index.html") in " ".join(
        result.stderr.split()
    )
    assert not stale.exists()
    return first, second


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_two_builds_are_byte_identical(built: tuple[Path, Path]) -> None:
    first, second = built
    assert tree(first) == tree(second)


def test_no_file_names_a_path_of_this_machine(built: tuple[Path, Path], shop: Path) -> None:
    first, second = built
    paths = {str(shop), str(first), str(second), str(Path.cwd())}
    for name, data in tree(first).items():
        text = data.decode("utf-8")
        assert not [p for p in paths if p in text], name


def test_a_page_per_pipeline_and_per_model(built: tuple[Path, Path], shop: Path) -> None:
    first, _ = built
    manifest = json.loads((shop / "transform/project/target/manifest.json").read_text())
    models = {
        f"{n['schema']}/{n['name']}"
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model"
    }
    assert {"mart/daily_sales", "staging/stg_orders", "staging/stg_events"} <= models
    for kind, root, suffix in (("markdown", first, "md"), ("site", first, "html")):
        pages = {p.relative_to(root / kind).as_posix() for p in (root / kind).rglob(f"*.{suffix}")}
        assert pages == {
            f"index.{suffix}",
            *(f"pipelines/{p}.{suffix}" for p in PIPELINES),
            *(f"models/{m}.{suffix}" for m in models),
        }


def test_the_daily_sales_page(built: tuple[Path, Path]) -> None:
    first, _ = built
    text = (first / "markdown/models/mart/daily_sales.md").read_text()
    # Columns with the warehouse's types and the YAML's descriptions.
    assert "| `net_revenue` | DECIMAL(38,2) | gross_revenue - cancelled_revenue" in text
    assert "| `order_date` | DATE | Business day the order was placed" in text
    # Lineage back to the raw change table, table and column level.
    assert "raw_cdc_order_items --> staging_stg_order_items" in text
    [net] = [line for line in text.splitlines() if line.startswith("| `net_revenue` | raw.")]
    assert "raw.cdc_order_items.after" in net
    # The checks that guard it (on the staging tables it is computed from) and the alerts.
    assert "staging.stg_orders.total_matches_items" in text
    for alert in ("PipelineExecutionFailed", "DataQualityCheckFailing", "CdcReplicationLagHigh"):
        assert alert in text
    assert "| running platform | every 5 minutes |" in text
    assert "shopstream_transform_hourly | 15 * * * *" in text
    # Computed from the order tables only: raw.events' freshness alert is not about it.
    related = text.split("## Related alerts", 1)[1]
    assert "DataFreshnessSLABreach" not in related and "{{" not in text


def test_an_incremental_models_columns_do_not_come_from_itself(built: tuple[Path, Path]) -> None:
    """dbt docs generate compiles the CDC staging models incrementally (their tables exist):
    their SQL joins their own table, which is not where a column comes from."""
    text = (built[0] / "markdown/models/staging/stg_orders.md").read_text()
    columns = text.split("## Columns", 1)[1].split("\n## ", 1)[0]
    assert "| `order_id` |" in columns and "raw.cdc_orders.after" in columns
    assert "staging.stg_orders." not in columns


def test_the_pipeline_pages_carry_alerts_runbooks_and_sources(built: tuple[Path, Path]) -> None:
    first, _ = built
    collector = (first / "markdown/pipelines/collector.md").read_text()
    assert "raw.events" in collector and "raw.dead_letter" in collector
    assert "### EventCollectorHighErrorRate" in collector and "**First checks.**" in collector
    cdc = (first / "markdown/pipelines/cdc.md").read_text()
    assert "`raw.cdc_orders`" in cdc and "### CdcSlotRetainedWalHigh" in cdc
    index = (first / "markdown/index.md").read_text()
    assert "`dbt docs generate` (manifest and catalog)" in index
    assert "from the source checkout (deploy/)" in index  # an editable install


def test_the_html_parses_and_every_internal_link_resolves(built: tuple[Path, Path]) -> None:
    site = built[0] / "site"
    index = links_of((site / "index.html").read_text())
    assert "pipelines/cdc.html" in index.hrefs and index.mermaid == 1
    assert broken_links(site) == []


def test_with_a_running_platform_the_last_transforms_manifest_is_read(shop: Path) -> None:
    """The path taken when a platform holds the file: the manifest the last transform left,
    the types from information_schema (asked read-only here: nothing holds this copy)."""
    artifacts = _left_by_last_transform(Settings(data_dir=shop), lambda _: None)
    assert artifacts.types["mart.daily_sales"]["net_revenue"].startswith("DECIMAL")
    assert "model.shopstream.daily_sales" in artifacts.manifest["nodes"]


def test_without_a_transform_the_error_says_to_run_one(tmp_path: Path) -> None:
    with pytest.raises(DocsSourceError, match="run `shopstream transform` first"):
        _left_by_last_transform(Settings(data_dir=tmp_path), lambda _: None)
    # No warehouse at all: the CLI says so (exit 1) and makes none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    out = tmp_path / "out"
    result = shopstream(
        {**env, "SHOPSTREAM_DATA_DIR": str(tmp_path)}, "docs", "build", "--out", str(out)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "run `shopstream transform`" in " ".join(result.stderr.split())
    assert not (tmp_path / "shopstream.duckdb").exists()
    assert not out.exists()  # a failed build leaves no empty directory behind
    # An --out that cannot be a directory: a usage error (exit 2) naming it.
    taken = tmp_path / "a-file"
    taken.write_text("")
    result = shopstream(
        {**env, "SHOPSTREAM_DATA_DIR": str(tmp_path)}, "docs", "build", "--out", str(taken)
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{taken} is not a directory" in " ".join(result.stderr.split())


def test_a_dbt_project_that_cannot_run_is_an_error_naming_it(
    shop: Path, shop_warehouse: ShopWarehouse, tmp_path: Path
) -> None:
    env = {**shop_warehouse.env, "SHOPSTREAM_DATA_DIR": str(shop)}
    env["SHOPSTREAM_TRANSFORM__PROJECT_DIR"] = str(tmp_path / "no-project")
    result = shopstream(env, "docs", "build", "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"no dbt project at {tmp_path / 'no-project'}" in said and "Traceback" not in said


def test_a_broken_checks_file_is_a_usage_error_before_dbt_runs(
    shop: Path, shop_warehouse: ShopWarehouse, tmp_path: Path
) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text("tables: [this is: not, a mapping")
    env = {**shop_warehouse.env, "SHOPSTREAM_DATA_DIR": str(shop)}
    env["SHOPSTREAM_QUALITY__CHECKS_FILE"] = str(checks)
    result = shopstream(env, "docs", "build", "--out", str(tmp_path / "out"))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{checks} is not valid YAML" in said and "Traceback" not in said
    assert not (tmp_path / "out").exists()


def test_an_untransformed_warehouse_is_an_error_saying_to_transform(tmp_path: Path) -> None:
    """A warehouse with raw data but no staging or mart table: documenting it would give
    every column the type "?"; the build says to run the transform instead."""
    import duckdb

    with duckdb.connect(str(tmp_path / "shopstream.duckdb")) as db:
        db.execute("CREATE SCHEMA raw; CREATE TABLE raw.events (event_id VARCHAR)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_DATA_DIR"] = str(tmp_path)
    result = shopstream(env, "docs", "build", "--out", str(tmp_path / "out"))
    said = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "none of the dbt models' tables" in said and "run `shopstream transform`" in said
    assert not (tmp_path / "out").exists()


def test_a_directory_not_made_by_the_docs_is_never_cleaned(
    shop: Path, shop_warehouse: ShopWarehouse, tmp_path: Path
) -> None:
    mine = tmp_path / "out" / "markdown" / "my-notes.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    env = {**shop_warehouse.env, "SHOPSTREAM_DATA_DIR": str(shop)}
    result = shopstream(env, "docs", "build", "--out", str(tmp_path / "out"))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{mine.parent} is not empty and was not written by `shopstream docs build`" in said
    assert mine.read_text() == "mine" and not (tmp_path / "out" / "site").exists()


# -- overviews by a language model ----------------------------------------------------------------


def llm_settings(server: ChatServer, data_dir: Path) -> Settings:
    genai: dict[str, Any] = {
        "base_url": server.url,
        "api_key": "sk-test-0123456789abcdef",
        "timeout_seconds": 5.0,
        "max_retries": 0,
    }
    return Settings(data_dir=data_dir, llm="openai:test-model", genai=GenAISettings(**genai))


SUBJECTS = [
    Subject(
        "model:mart.daily_sales",
        "the table mart.daily_sales",
        ("mart.daily_sales is a table built by the dbt transform.", "3 quality checks guard it."),
        "deterministic sales",
    ),
    Subject("pipeline:cdc", "the cdc pipeline", ("It writes raw.cdc_<table>.",), "deterministic"),
]


def overview(text: str) -> Reply:
    return Reply(content=json.dumps({"overview": text}))


def test_the_models_overviews_are_grounded_and_cached(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    chat_server.script(
        overview("Daily sales per category. 3 checks guard it. It holds 12,345 orders."),
        overview("The CDC pipeline lands the shop's changes in raw."),
    )
    settings = llm_settings(chat_server, tmp_path)
    first = write_overviews(SUBJECTS, settings)
    assert first.author == "llm:openai:test-model" and first.asked == 2
    # The invented number's sentence is dropped; the grounded ones stay.
    assert first.text == {
        "model:mart.daily_sales": "Daily sales per category. 3 checks guard it.",
        "pipeline:cdc": "The CDC pipeline lands the shop's changes in raw.",
    }
    [asked, _] = chat_server.received
    assert "3 quality checks guard it." in asked.text
    assert len(list((tmp_path / CACHE_DIR).glob("*.json"))) == 2
    chat_server.script()  # nothing more to answer: a second ask would fail
    second = write_overviews(SUBJECTS, settings)
    assert second.text == first.text and second.asked == 0 and chat_server.received == []


def test_a_failed_answer_falls_back_and_is_asked_again_next_time(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    chat_server.script(Reply(status=500), Reply(content="not json"))
    settings = llm_settings(chat_server, tmp_path)
    written = write_overviews(SUBJECTS, settings)
    assert written.text == {s.key: s.fallback for s in SUBJECTS}
    assert len(written.fallbacks) == 2 and "malformed" in written.fallbacks[1]
    assert not list((tmp_path / CACHE_DIR).glob("*.json"))


def test_a_build_with_a_model_asks_it_once_per_page_and_uses_its_prose(
    chat_server: ChatServer, shop: Path, tmp_path: Path
) -> None:
    """(The cache that makes a rebuild ask nothing: the test of the overviews above.)"""
    from shopstream.genai.pipeline_doc_generator import build_docs

    data_dir = tmp_path / "data"
    shutil.copytree(shop, data_dir, ignore=shutil.ignore_patterns("docs", CACHE_DIR))
    settings = llm_settings(chat_server, data_dir)
    chat_server.script(*[overview("Written by the model from the facts.")] * 60)
    first = tmp_path / "first"
    build_docs(settings, first)
    asked = len(chat_server.received)
    pages = len(list((first / "markdown").rglob("*.md")))
    assert asked == pages  # one overview per page
    daily_sales = (first / "markdown/models/mart/daily_sales.md").read_text()
    assert daily_sales.startswith("# mart.daily_sales\n\nWritten by the model from the facts.")
    assert len(list((data_dir / CACHE_DIR).glob("*.json"))) == pages
