"""LLM rewrites over real HTTP, each verified on the generated shop before it is shown.

The model is tests/support/llm_server.py: an OpenAI-compatible server on 127.0.0.1 with
scripted answers, standing in for a remote model (Gemini, OpenAI) that cannot be reached from
here. Everything else is real: settings -> genai.llm -> LangChain's ChatOpenAI -> HTTP, the
answer's parsing, and the verification on a real DuckDB warehouse. The last test asks a real
small model (SmolLM2, ``make test-llm``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shopstream.config import GenAISettings, OptimizerSettings, Settings
from shopstream.genai.optimizer.catalog import Catalog
from shopstream.genai.optimizer.report import as_markdown
from shopstream.genai.sql_optimizer import optimize
from shopstream.warehouse.base import Warehouse
from tests.support.llama_server import LlamaServer
from tests.support.llm_server import ChatServer, Reply
from tests.support.shop_warehouse import ShopWarehouse

QUERY = """select category, sum(net_revenue) as revenue
from (select * from mart.daily_sales)
group by category"""
RIGHT = """select category, sum(net_revenue) as revenue
from mart.daily_sales
group by category"""
#: Drops a day: fewer rows summed, different revenues.
WRONG = """select category, sum(net_revenue) as revenue
from mart.daily_sales where order_date > '2026-11-27'
group by category"""


@pytest.fixture(scope="module")
def catalog(shop_reader: Warehouse) -> Catalog:
    from shopstream.genai.optimizer.catalog import load_catalog

    return load_catalog(shop_reader, "duckdb")


def settings(shop: ShopWarehouse, url: str, model: str = "test-model", **genai: Any) -> Settings:
    options: dict[str, Any] = {"base_url": url, "timeout_seconds": 10.0, "max_retries": 0}
    options.update(genai)
    return Settings(data_dir=shop.data_dir, llm=f"openai:{model}", genai=GenAISettings(**options))


def answer(*rewrites: tuple[str, str]) -> str:
    return json.dumps({"rewrites": [{"sql": s, "explanation": e} for s, e in rewrites]})


def test_a_right_rewrite_is_verified_and_a_wrong_one_rejected_with_why(
    chat_server: ChatServer, shop_reader: Warehouse, catalog: Catalog, shop_warehouse: ShopWarehouse
) -> None:
    chat_server.script(
        Reply(
            content=answer(
                (RIGHT, "reads daily_sales directly"),
                (WRONG, "skips the first day"),
                ("select category, sum( from", "broken"),
            )
        )
    )
    report = optimize(
        QUERY,
        warehouse=shop_reader,
        settings=settings(shop_warehouse, chat_server.url),
        catalog=catalog,
    )
    # What reached the model: the query, its dialect, the table's columns and the findings.
    [request] = chat_server.received
    assert QUERY.strip() in request.text and "Dialect: duckdb" in request.text
    assert "mart.daily_sales (108 rows" in request.text and "net_revenue" in request.text
    for finding in report.findings:
        assert finding.rule in request.text
    llm = {r.sql: r for r in report.rewrites if r.source == "llm:openai:test-model"}
    assert set(llm) == {RIGHT, WRONG, "select category, sum( from"}
    right = llm[RIGHT]
    assert right.status == "verified", right.verification
    assert right.explanation == "reads daily_sales directly"
    assert right.verification.compared_on.startswith("full data (108 rows in 1 table")
    assert right.cost_after is not None
    wrong = llm[WRONG]
    assert wrong.status == "rejected" and wrong.verification.same_results is False
    assert (wrong.verification.reason or "").startswith("results differ: the original returns")
    broken = llm["select category, sum( from"]
    assert broken.status == "rejected" and not broken.verification.parses
    assert (broken.verification.reason or "").startswith("does not parse: ")
    # The report offers the right one and says why the others were not.
    text = as_markdown(report)
    assert "### llm:openai:test-model: verified" in text and RIGHT in text
    assert "- Rejected: results differ" in text and "- Rejected: does not parse" in text
    assert WRONG not in text  # a rejected rewrite is never offered


def test_a_malformed_proposal_is_left_out_and_the_others_kept(
    chat_server: ChatServer, shop_reader: Warehouse, catalog: Catalog, shop_warehouse: ShopWarehouse
) -> None:
    content = json.dumps(
        {"rewrites": [{"explanation": "forgot the SQL"}, {"sql": RIGHT, "explanation": "ok"}]}
    )
    chat_server.script(Reply(content=content))
    report = optimize(
        QUERY,
        warehouse=shop_reader,
        settings=settings(shop_warehouse, chat_server.url),
        catalog=catalog,
    )
    [right] = [r for r in report.rewrites if r.source.startswith("llm:")]
    assert right.sql == RIGHT and right.status == "verified"
    assert "llm:openai:test-model: proposal 1 is malformed (sql: Field required), left out" in (
        report.notes
    )


def test_a_model_that_fails_is_a_note_and_the_rules_still_answer(
    chat_server: ChatServer, shop_reader: Warehouse, catalog: Catalog, shop_warehouse: ShopWarehouse
) -> None:
    chat_server.script(Reply(content="I would rather not answer in JSON."))
    report = optimize(
        QUERY,
        warehouse=shop_reader,
        settings=settings(shop_warehouse, chat_server.url),
        catalog=catalog,
    )
    assert not [r for r in report.rewrites if r.source.startswith("llm:")]
    assert any(
        n.startswith("no LLM rewrites: llm:openai:test-model gave no usable answer: malformed")
        for n in report.notes
    ), report.notes
    assert report.cost_before is not None


def test_llm_rewrites_switched_off_asks_no_model(
    chat_server: ChatServer, shop_reader: Warehouse, catalog: Catalog, shop_warehouse: ShopWarehouse
) -> None:
    chat_server.script()
    quiet = settings(shop_warehouse, chat_server.url).model_copy(
        update={"optimizer": OptimizerSettings(llm_rewrites=False)}
    )
    report = optimize(QUERY, warehouse=shop_reader, settings=quiet, catalog=catalog)
    assert chat_server.received == []
    assert not [r for r in report.rewrites if r.source.startswith("llm:")]


@pytest.mark.llm
@pytest.mark.timeout(900)
def test_a_real_small_model_proposes_and_each_proposal_is_verified_or_rejected(
    smollm2_server: LlamaServer,
    shop_reader: Warehouse,
    catalog: Catalog,
    shop_warehouse: ShopWarehouse,
) -> None:
    """SmolLM2-135M rarely writes a useful rewrite: this proves the plumbing (the prompt
    reaches it, its answer is parsed or refused with the reason, every proposal is verified)."""
    report = optimize(
        QUERY,
        warehouse=shop_reader,
        settings=settings(
            shop_warehouse,
            smollm2_server.url,
            model="smollm2",
            timeout_seconds=600,
            max_output_tokens=256,
        ),
        catalog=catalog,
    )
    proposals = [r for r in report.rewrites if r.source == "llm:openai:smollm2"]
    noted = [n for n in report.notes if "llm:openai:smollm2" in n]
    assert proposals or noted, report
    # What the model did, for the person running make test-llm.
    print(f"\nSmolLM2: {[(r.status, r.verification.reason) for r in proposals]} {noted}")
    for rewrite in proposals:
        if rewrite.status == "verified":
            assert rewrite.verification.same_results and rewrite.cost_after is not None
        else:
            assert rewrite.verification.reason, rewrite
