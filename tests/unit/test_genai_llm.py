"""genai.llm: which chat model the settings build, and how a structured answer is read.

Gemini cannot be reached from here: its model is built for real (langchain-google-genai makes no
call when constructed) and its options checked; its answers come from LangChain's own fake chat
model, a double that answers in Gemini's shape (content as a list of parts, usage metadata).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from pydantic import ValidationError

from shopstream.config import GenAISettings, Settings
from shopstream.genai.data_quality_agent import write_report
from shopstream.genai.llm import (
    ChatModel,
    LLMConfigError,
    LLMFailure,
    ask_json,
    build_chat_model,
    parse_llm,
)
from tests.support.quality_evidence import SIGNATURES, evidence_of


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("anthropic:claude-3", "unknown LLM provider 'anthropic'"),
        ("gemini-2.5-flash", "names no model"),
        ("openai:", "names no model"),
    ],
)
def test_a_bad_llm_setting_names_the_accepted_forms(value: str, says: str) -> None:
    with pytest.raises(LLMConfigError) as caught:
        parse_llm(value)
    message = str(caught.value)
    assert says in message
    assert "google_genai:<model>" in message and "openai:<model>" in message


def test_settings_refuse_an_unknown_provider_at_start() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(llm="mistral:large")
    assert "unknown LLM provider 'mistral'" in str(caught.value)
    assert "google_genai:<model>" in str(caught.value)


def test_no_llm_builds_nothing() -> None:
    assert build_chat_model(Settings(llm="")) is None
    assert build_chat_model(Settings(llm="  ")) is None


def test_gemini_is_built_with_the_settings_options() -> None:
    from langchain_google_genai import ChatGoogleGenerativeAI

    genai = GenAISettings(
        api_key="gemini-secret-key",
        timeout_seconds=7.5,
        max_retries=1,
        temperature=0.2,
        max_output_tokens=512,
        input_cost_per_million_tokens=0.30,
        output_cost_per_million_tokens=2.50,
    )
    model = build_chat_model(Settings(llm="google_genai:gemini-2.5-flash", genai=genai))
    assert model is not None
    chat = model.chat
    assert isinstance(chat, ChatGoogleGenerativeAI)
    assert model.analyst == "llm:google_genai:gemini-2.5-flash"
    assert chat.model.removeprefix("models/") == "gemini-2.5-flash"
    assert (chat.temperature, chat.max_output_tokens) == (0.2, 512)
    assert (chat.timeout, chat.max_retries) == (7.5, 1)
    assert chat.response_mime_type == "application/json"
    assert chat.google_api_key is not None
    assert chat.google_api_key.get_secret_value() == "gemini-secret-key"
    assert "gemini-secret-key" not in repr(chat)
    assert model.cost(1_000_000, 1_000_000) == pytest.approx(2.80)


def test_openai_compatible_servers_are_built_with_base_url_and_a_placeholder_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from langchain_openai import ChatOpenAI

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    genai = GenAISettings(base_url="http://127.0.0.1:11434/v1", timeout_seconds=3, max_retries=0)
    model = build_chat_model(Settings(llm="openai:qwen2.5:0.5b", genai=genai))
    assert model is not None
    chat = model.chat
    assert isinstance(chat, ChatOpenAI)
    assert model.model == "qwen2.5:0.5b"  # Ollama's names have colons of their own
    assert chat.model_name == "qwen2.5:0.5b"
    assert chat.openai_api_base == "http://127.0.0.1:11434/v1"
    assert (chat.request_timeout, chat.max_retries, chat.max_tokens) == (3, 0, 2048)
    assert chat.openai_api_key is not None


def _gemini_double(*messages: AIMessage) -> ChatModel:
    """A stand-in for Gemini (unreachable here) answering the scripted messages."""
    genai = GenAISettings(input_cost_per_million_tokens=0.30, output_cost_per_million_tokens=2.50)
    chat = GenericFakeChatModel(messages=iter(messages))
    return ChatModel("google_genai", "gemini-2.5-flash", chat, genai)


def test_gemini_shaped_answers_are_parsed_and_accounted() -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        summary: str

    message = AIMessage(
        content=[{"type": "text", "text": '```json\n{"summary": "all good"}\n```'}],
        usage_metadata={"input_tokens": 800, "output_tokens": 40, "total_tokens": 840},
    )
    answer = ask_json(_gemini_double(message), "system", "user", Verdict)
    assert answer.value.summary == "all good"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (800, 40)
    assert answer.usage.cost == pytest.approx((800 * 0.30 + 40 * 2.50) / 1e6)


def test_write_report_through_the_gemini_double(monkeypatch: pytest.MonkeyPatch) -> None:
    check = SIGNATURES["freshness"].check
    document = {
        "summary": "Events stopped 95 minutes ago.",
        "findings": [
            {
                "check": check,
                "title": "raw.events stalled for 95 minutes",
                "root_causes": "The collector stopped receiving events.",  # one string
                "business_impact": "Dashboards are 95 minutes old.",
                "immediate_actions": ["Check the collector's readiness."],
            }
        ],
    }
    message = AIMessage(content=json.dumps(document), usage_metadata=_usage(500, 90))
    double = _gemini_double(message)
    monkeypatch.setattr(
        "shopstream.genai.data_quality_agent.build_chat_model", lambda settings: double
    )
    report = write_report(evidence_of("freshness"), Settings())
    assert report.analyst == "llm:google_genai:gemini-2.5-flash"
    assert report.fallback_reason is None
    assert report.findings[0].root_causes == ["The collector stopped receiving events."]
    assert report.usage.input_tokens == 500


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def test_ask_json_says_why_an_answer_is_unusable() -> None:
    from pydantic import BaseModel

    class Verdict(BaseModel):
        summary: str

    with pytest.raises(LLMFailure) as malformed:
        ask_json(_gemini_double(AIMessage(content="no JSON here")), "s", "u", Verdict)
    assert malformed.value.reason.startswith("malformed answer: not JSON")
    with pytest.raises(LLMFailure) as off_schema:
        ask_json(_gemini_double(AIMessage(content='{"verdict": 1}')), "s", "u", Verdict)
    assert off_schema.value.reason == "off-schema answer: summary: Field required"


def test_langchain_is_not_imported_without_a_model() -> None:
    code = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from shopstream.config import Settings\n"
        "from shopstream.genai.data_quality_agent import QualityEvidence, write_report\n"
        "ev = QualityEvidence(run_id='r', checked_at=datetime.now(timezone.utc))\n"
        "write_report(ev, Settings(llm=''))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain_openai', 'langchain_google_genai', 'openai')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_model_that_cannot_be_built_falls_back_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(llm="google_genai:gemini-2.5-flash")
    with pytest.raises(LLMConfigError) as caught:
        build_chat_model(settings)
    assert "cannot build google_genai:gemini-2.5-flash: " in str(caught.value)
    assert "SHOPSTREAM_GENAI__API_KEY" in str(caught.value)

    report = write_report(evidence_of("freshness"), settings)
    assert report.analyst == "deterministic"
    assert (report.fallback_reason or "").startswith(
        "no usable LLM: cannot build google_genai:gemini-2.5-flash: "
    )
