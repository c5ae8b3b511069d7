"""The data quality agent against a real small model served locally (``make test-llm``).

SmolLM2-135M through llama-cpp-python's OpenAI-compatible server (tests/support/llama_server.py).
A 135M-parameter model rarely writes a useful report: this proves the plumbing end to end with
a real model (the prompt reaches it, an answer comes back with its token counts, and it is
either parsed, grounded and used, or refused with the reason and replaced by the deterministic
analyst), not the quality of its answers.
"""

from __future__ import annotations

import pytest

from shopstream.config import GenAISettings, Settings
from shopstream.genai.data_quality_agent import QualityReport, write_report
from shopstream.genai.quality_playbook import deterministic_report, evidence_pool
from tests.support.llama_server import LlamaServer
from tests.support.quality_evidence import SIGNATURES, evidence_of

# Two shared cores run a 135M model at a few tokens a second when busy: generous limits, and
# a short answer (a cut-off one is a malformed answer, which exercises the fallback).
pytestmark = [pytest.mark.llm, pytest.mark.timeout(900)]

FALLBACK_REASONS = ("malformed answer", "off-schema answer", "the model did not answer")


def test_a_real_small_model_answers_and_the_report_is_parsed_or_replaced(
    smollm2_server: LlamaServer,
) -> None:
    evidence = evidence_of("volume_drop")
    settings = Settings(
        llm="openai:smollm2",
        genai=GenAISettings(
            base_url=smollm2_server.url,
            timeout_seconds=600,
            max_retries=0,
            # Honoured by llama.cpp only because llm.py also sends it as max_tokens: without
            # that the model wrote until its context was full and timed out.
            max_output_tokens=256,
            input_cost_per_million_tokens=0.1,
            output_cost_per_million_tokens=0.2,
        ),
    )

    report = write_report(evidence, settings)

    # The call went through: the prompt (system rules + the evidence) was read by the model.
    assert report.usage.input_tokens > 500, report
    assert report.usage.output_tokens > 0
    assert report.usage.cost == pytest.approx(
        (report.usage.input_tokens * 0.1 + report.usage.output_tokens * 0.2) / 1e6
    )
    [found] = report.findings
    assert found.check == SIGNATURES["volume_drop"].check
    assert found.severity == SIGNATURES["volume_drop"].severity
    if report.analyst == "deterministic":
        assert (report.fallback_reason or "").startswith(FALLBACK_REASONS), report.fallback_reason
        assert report.findings == deterministic_report(evidence).findings
    else:
        assert report.analyst == "llm:openai:smollm2"
        assert report.fallback_reason is None
        pool = evidence_pool(evidence)
        kept = [report.summary, found.title, found.business_impact, *found.root_causes]
        kept += [*found.immediate_actions, *found.long_term_fixes, *found.monitor]
        assert not [text for text in kept if pool.invented(text)]
    # What the quality run stores comes back whole.
    assert QualityReport.model_validate_json(report.model_dump_json()) == report
    assert report.to_markdown().startswith(f"# Data quality report (run {evidence.run_id})")
    print(f"\n{report.analyst} ({report.fallback_reason}):\n{report.to_markdown()}")
