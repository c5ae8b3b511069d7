"""The data quality agent against a model over real HTTP.

The model is tests/support/llm_server.py: an OpenAI-compatible server on 127.0.0.1 with
scripted answers, standing in for a remote model that cannot be reached from here. Everything
on the client side is real: settings -> genai.llm -> LangChain's ChatOpenAI -> the openai SDK ->
HTTP, then parsing, validation, number grounding and the fallback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shopstream.config import GenAISettings, Settings
from shopstream.genai.data_quality_agent import QualityReport, write_report
from shopstream.genai.quality_playbook import deterministic_report
from tests.support.llm_server import ChatServer, Reply
from tests.support.quality_evidence import SIGNATURES, evidence_of

API_KEY = "sk-test-0123456789abcdef"


def settings(server: ChatServer, **genai: Any) -> Settings:
    options: dict[str, Any] = {
        "base_url": server.url,
        "api_key": API_KEY,
        "timeout_seconds": 5.0,
        "max_retries": 0,
        "temperature": 0.1,
        "max_output_tokens": 900,
        "input_cost_per_million_tokens": 0.30,
        "output_cost_per_million_tokens": 2.50,
    }
    options.update(genai)
    return Settings(llm="openai:test-model", genai=GenAISettings(**options))


def finding(check: str, **fields: Any) -> dict[str, Any]:
    base = {
        "check": check,
        "title": f"{check}: explained by the model",
        "root_causes": ["A tracker release on the web shop stopped sending events."],
        "business_impact": "Funnel conversion for the hour is understated.",
        "immediate_actions": ["Compare the hour with the same hour last week."],
        "long_term_fixes": ["Add a synthetic session after each deploy."],
        "monitor": ["The next hour's volume."],
    }
    base.update(fields)
    return base


def answer(*findings: dict[str, Any], summary: str = "Events dropped sharply.") -> str:
    return json.dumps({"summary": summary, "findings": list(findings)})


VOLUME = SIGNATURES["volume_drop"].check
FRESHNESS = SIGNATURES["freshness"].check


def test_the_prompt_carries_the_evidence_and_a_good_answer_becomes_the_report(
    chat_server: ChatServer,
) -> None:
    evidence = evidence_of("volume_drop", "dead_letters")
    good = answer(
        finding(
            VOLUME,
            title="raw.events: 16,492 events instead of 41,230 (fail)",
            root_causes=[
                "Volume is 60% below the baseline: tracking broke on part of the site.",
                "Dead letters rose to 4.42% (1,822 for properties.price missing): a release "
                "sends events the contract rejects.",
            ],
        ),
        finding(SIGNATURES["dead_letters"].check),
        summary="Events fell to 16,492 against 41,230 usually. Dead letters explain part of it.",
    )
    chat_server.script(Reply(content=good, prompt_tokens=2_000, completion_tokens=400))

    report = write_report(evidence, settings(chat_server))

    [request] = chat_server.received
    # What the model was told: the check names and their numbers, the dead-letter reasons.
    told = request.text
    for needle in (VOLUME, "16492", "41230", "raw.dead_letter.dead_letters", "0.0442", "1822"):
        assert needle in told, f"{needle} missing from the prompt"
    assert "properties.price missing" in told
    assert request.body["model"] == "test-model"
    assert request.body["temperature"] == pytest.approx(0.1)
    # Both names of the limit: OpenAI reads one, llama.cpp / older vLLM and Ollama the other.
    assert request.body["max_completion_tokens"] == 900
    assert request.body["max_tokens"] == 900
    assert request.body["response_format"] == {"type": "json_object"}
    assert request.authorization == f"Bearer {API_KEY}"

    assert report.analyst == "llm:openai:test-model"
    assert report.fallback_reason is None
    assert report.dropped_claims == []
    assert report.summary.startswith("Events fell to 16,492 against 41,230 usually.")
    volume = next(f for f in report.findings if f.check == VOLUME)
    assert volume.title == "raw.events: 16,492 events instead of 41,230 (fail)"
    assert volume.severity == SIGNATURES["volume_drop"].severity  # the evidence's, not the model's
    assert volume.root_causes[0].startswith("Volume is 60% below the baseline")
    # Usage and cost: 2,000 x 0.30 + 400 x 2.50 per million tokens.
    assert (report.usage.input_tokens, report.usage.output_tokens) == (2_000, 400)
    assert report.usage.cost == pytest.approx((2_000 * 0.30 + 400 * 2.50) / 1e6)
    assert report.usage.seconds > 0


def test_invented_numbers_are_dropped_and_listed(chat_server: ChatServer) -> None:
    evidence = evidence_of("volume_drop")
    invented_cause = "About 3,900 sessions were lost, costing 52,000 EUR in revenue."
    invented_sentence = "Traffic will recover within 17 minutes."
    chat_server.script(
        Reply(
            content=answer(
                finding(
                    VOLUME,
                    title="raw.events: 77% fewer events (fail)",
                    root_causes=[
                        "16,492 events arrived against a baseline of 41,230.",
                        invented_cause,
                    ],
                    business_impact="Funnel conversion is understated. " + invented_sentence,
                ),
                summary="Volume dropped 60%. The drop started 9 hours ago.",
            )
        )
    )

    report = write_report(evidence, settings(chat_server))

    assert report.analyst == "llm:openai:test-model"
    assert report.fallback_reason is None
    assert set(report.dropped_claims) == {
        "raw.events: 77% fewer events (fail)",
        invented_cause,
        invented_sentence,
        "The drop started 9 hours ago.",
    }
    [volume] = report.findings
    assert volume.root_causes == ["16,492 events arrived against a baseline of 41,230."]
    assert volume.business_impact == "Funnel conversion is understated."
    assert report.summary == "Volume dropped 60%."
    # The title with an invented number is replaced by the deterministic analyst's.
    assert volume.title == deterministic_report(evidence).findings[0].title
    text = report.to_markdown()
    assert "52,000 EUR" in text.split("**Removed from the model's answer")[1]
    assert "52,000" not in text.split("**Removed from the model's answer")[0]


def _assert_fallback(report: QualityReport, evidence_names: tuple[str, ...]) -> None:
    expected = deterministic_report(evidence_of(*evidence_names))
    assert report.analyst == "deterministic"
    assert report.findings == expected.findings
    assert report.summary == expected.summary
    assert API_KEY not in (report.fallback_reason or "")


def test_a_timeout_falls_back_to_the_deterministic_analyst(chat_server: ChatServer) -> None:
    chat_server.script(Reply(content=answer(finding(VOLUME)), delay=3.0))
    report = write_report(evidence_of("volume_drop"), settings(chat_server, timeout_seconds=0.5))
    # The client gave up: had it waited the 3 s, the model's answer would have made the report
    # (no fallback); one request, no retry (max_retries 0).
    assert len(chat_server.received) == 1
    _assert_fallback(report, ("volume_drop",))
    assert report.fallback_reason == "the model did not answer within 0.5 s (timeout)"
    assert report.usage.seconds >= 0.5


def test_a_retry_after_a_timeout_can_still_answer(chat_server: ChatServer) -> None:
    chat_server.script(
        Reply(content=answer(finding(VOLUME)), delay=3.0), Reply(content=answer(finding(VOLUME)))
    )
    report = write_report(
        evidence_of("volume_drop"), settings(chat_server, timeout_seconds=0.5, max_retries=1)
    )
    assert len(chat_server.received) == 2
    assert report.analyst == "llm:openai:test-model"
    assert report.fallback_reason is None


def test_a_malformed_answer_falls_back(chat_server: ChatServer) -> None:
    chat_server.script(Reply(content="The volume dropped because of {a tracker"))
    report = write_report(evidence_of("volume_drop"), settings(chat_server))
    _assert_fallback(report, ("volume_drop",))
    assert (report.fallback_reason or "").startswith("malformed answer: not JSON")
    # The call was made and paid for, even though its answer was useless.
    assert report.usage.input_tokens == 1_200


def test_an_answer_cut_off_at_the_output_limit_falls_back_with_its_tokens(
    chat_server: ChatServer,
) -> None:
    chat_server.script(
        Reply(content='{"summary": "Events fell', finish_reason="length", completion_tokens=900)
    )
    report = write_report(evidence_of("volume_drop"), settings(chat_server))
    _assert_fallback(report, ("volume_drop",))
    assert report.fallback_reason == "malformed answer: cut off at the output limit (900 tokens)"
    assert (report.usage.input_tokens, report.usage.output_tokens) == (1_200, 900)


def test_an_off_schema_answer_falls_back(chat_server: ChatServer) -> None:
    chat_server.script(Reply(content=json.dumps({"summary": "fine", "findings": [{"x": 1}]})))
    report = write_report(evidence_of("volume_drop"), settings(chat_server))
    _assert_fallback(report, ("volume_drop",))
    reason = report.fallback_reason or ""
    assert reason.startswith("off-schema answer:")
    assert "findings.0.check: Field required" in reason


def test_an_answer_about_other_checks_falls_back(chat_server: ChatServer) -> None:
    chat_server.script(Reply(content=answer(finding("raw.orders.something_else"))))
    report = write_report(evidence_of("volume_drop"), settings(chat_server))
    _assert_fallback(report, ("volume_drop",))
    assert "name none of the checks in the evidence" in (report.fallback_reason or "")


def test_a_server_error_falls_back_without_the_api_key(chat_server: ChatServer) -> None:
    chat_server.script(Reply(status=500, error="model overloaded"))
    report = write_report(evidence_of("volume_drop"), settings(chat_server))
    _assert_fallback(report, ("volume_drop",))
    reason = report.fallback_reason or ""
    assert reason.startswith("the model call failed:")
    assert "Error code: 500 - model overloaded" in reason
    assert "Bearer ***" in reason  # the server echoed the key; the reason does not


def test_checks_the_model_left_out_are_written_by_the_deterministic_analyst(
    chat_server: ChatServer,
) -> None:
    evidence = evidence_of("volume_drop", "freshness")
    chat_server.script(Reply(content=answer(finding(VOLUME))))
    report = write_report(evidence, settings(chat_server))
    assert report.analyst == "llm:openai:test-model"
    by_check = {f.check: f for f in report.findings}
    assert by_check[VOLUME].title == f"{VOLUME}: explained by the model"
    fallback = deterministic_report(evidence)
    assert by_check[FRESHNESS] == next(f for f in fallback.findings if f.check == FRESHNESS)


def test_json_mode_can_be_turned_off_for_servers_without_it(chat_server: ChatServer) -> None:
    chat_server.script(Reply(content=answer(finding(VOLUME))))
    report = write_report(evidence_of("volume_drop"), settings(chat_server, json_mode=False))
    [request] = chat_server.received
    assert "response_format" not in request.body
    assert report.analyst == "llm:openai:test-model"


def test_no_model_configured_means_no_request(chat_server: ChatServer) -> None:
    chat_server.script()
    report = write_report(evidence_of("volume_drop"), Settings(llm=""))
    assert chat_server.received == []
    assert report.analyst == "deterministic"
    assert report.fallback_reason is None
