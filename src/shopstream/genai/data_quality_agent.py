"""The data quality agent: explains a run's failed, warning and errored checks to the person on
call, as a language model when one is configured (``SHOPSTREAM_LLM``) or as the deterministic
analyst (:mod:`.quality_playbook`) when none is, or when the model times out, fails, or answers
with something that is not the report asked for.

The model sees only the evidence (compact JSON in the prompt) and must state only its numbers:
every number of the answer is checked against the evidence (:mod:`.grounding`), and a sentence or
list item carrying an invented one is dropped and listed in ``dropped_claims``. A check the
model left out, or a field it left empty, is written by the deterministic analyst.

>>> from datetime import datetime, timezone
>>> from shopstream.config import Settings
>>> ev = QualityEvidence(run_id="r1", checked_at=datetime(2026, 12, 2, tzinfo=timezone.utc))
>>> write_report(ev, Settings(llm="")).summary
'No check warned, failed or errored in run r1.'
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopstream.genai.grounding import NumberPool, sentences
from shopstream.genai.llm import LLMConfigError, LLMFailure, ask_json, build_chat_model
from shopstream.genai.quality_playbook import deterministic_report, evidence_pool, finding
from shopstream.genai.quality_report import (
    CheckEvidence,
    Finding,
    QualityEvidence,
    QualityReport,
    Usage,
    worst_first,
)

if TYPE_CHECKING:
    from shopstream.config import Settings

log = logging.getLogger(__name__)


# -- what the model must answer -------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    # Small models often give one string where a list is asked for: the same content.
    return [value] if isinstance(value, str) else value


class AnswerFinding(BaseModel):
    model_config = ConfigDict(extra="ignore")

    check: str
    title: str
    root_causes: list[str] = Field(min_length=1)
    business_impact: str
    immediate_actions: list[str] = Field(min_length=1)
    long_term_fixes: list[str] = Field(default_factory=list)
    monitor: list[str] = Field(default_factory=list)

    _lists = field_validator(
        "root_causes", "immediate_actions", "long_term_fixes", "monitor", mode="before"
    )(_as_list)


class AgentAnswer(BaseModel):
    """The JSON document the model is asked for."""

    model_config = ConfigDict(extra="ignore")

    summary: str
    findings: list[AnswerFinding] = Field(min_length=1)


_EXAMPLE = {
    "summary": "one or two sentences: what is wrong, worst first",
    "findings": [
        {
            "check": "<the check's name, exactly as in the evidence>",
            "title": "<table>: <what happened> (<status>)",
            "root_causes": ["most likely hypothesis, and how to confirm it", "..."],
            "business_impact": "who or what is affected, in the shop's terms",
            "immediate_actions": ["first thing to do now", "..."],
            "long_term_fixes": ["what prevents it next time"],
            "monitor": ["what to watch to know it is over"],
        }
    ],
}

SYSTEM = (
    "You are a senior data engineer on call for shopstream, an e-commerce data platform "
    "(collector -> raw.events; PostgreSQL CDC -> raw.cdc_<table>; dbt staging and marts). "
    "Explain each failed, warning or errored check in the evidence to the person on call: "
    "root-cause hypotheses grounded in the evidence (the trend, the related checks, the "
    "pipeline state, the dead-letter reasons), the business impact, immediate actions, "
    "long-term fixes and what to monitor.\n"
    "Rules: use ONLY numbers that appear in the evidence; do not estimate, extrapolate or "
    "invent any number (sentences with other numbers are removed). One finding per check "
    "in the evidence, named exactly as there. Answer with ONE JSON object and nothing "
    "else, shaped like this example:\n" + orjson.dumps(_EXAMPLE).decode()
)


def prompt(evidence: QualityEvidence) -> str:
    """The user message: the evidence as compact JSON, worst check first."""
    data = evidence.model_dump(mode="json")
    data["checks"] = [c.model_dump(mode="json") for c in worst_first(evidence.checks)]
    return "Evidence of quality run " + evidence.run_id + ":\n" + orjson.dumps(data).decode()


# -- the report -----------------------------------------------------------------------------------


def write_report(evidence: QualityEvidence, settings: Settings) -> QualityReport:
    """The run's report. Never raises for a model failure: the deterministic analyst answers and
    ``fallback_reason`` says why."""
    if not evidence.checks:
        return deterministic_report(evidence)  # nothing to explain: no model call
    try:
        model = build_chat_model(settings)
    except LLMConfigError as exc:
        return deterministic_report(evidence, fallback_reason=f"no usable LLM: {exc}")
    if model is None:
        return deterministic_report(evidence)
    try:
        answer = ask_json(model, SYSTEM, prompt(evidence), AgentAnswer)
    except LLMFailure as exc:
        log.warning("quality report: %s answered nothing usable: %s", model.analyst, exc.reason)
        report = deterministic_report(evidence, fallback_reason=exc.reason)
        report.usage = exc.usage
        return report
    try:
        report = grounded_report(answer.value, evidence, model.analyst)
    except LLMFailure as exc:
        log.warning("quality report: %s: %s", model.analyst, exc.reason)
        report = deterministic_report(evidence, fallback_reason=exc.reason)
    report.usage = answer.usage
    return report


class _Grounding:
    """Keeps the model's text whose numbers are in the evidence; collects what it drops."""

    def __init__(self, pool: NumberPool) -> None:
        self.pool = pool
        self.dropped: list[str] = []

    def ok(self, text: str) -> bool:
        if self.pool.invented(text):
            self.dropped.append(text.strip())
            return False
        return True

    def items(self, items: list[str]) -> list[str]:
        return [item.strip() for item in items if item.strip() and self.ok(item)]

    def prose(self, text: str) -> str:
        return " ".join(s for s in sentences(text) if self.ok(s))


def grounded_report(answer: AgentAnswer, evidence: QualityEvidence, analyst: str) -> QualityReport:
    """The model's answer with invented numbers dropped, and the deterministic analyst's
    findings where the model left a check or a field out. LLMFailure when the answer explains
    none of the evidence's checks (it answered something else)."""
    keep = _Grounding(evidence_pool(evidence))
    by_check: dict[str, CheckEvidence] = {str(c.result["check"]): c for c in evidence.checks}
    written: dict[str, Finding] = {}
    for item in answer.findings:
        ev = by_check.get(item.check.strip())
        if ev is None or item.check in written:
            keep.dropped.append(f"finding for {item.check!r}, not a check of this run's evidence")
            continue
        fallback = finding(ev, evidence)
        title = item.title.strip()
        written[item.check] = Finding(
            check=fallback.check,
            severity=fallback.severity,  # the evidence's, never the model's
            title=title if title and keep.ok(title) else fallback.title,
            root_causes=keep.items(item.root_causes) or fallback.root_causes,
            business_impact=keep.prose(item.business_impact) or fallback.business_impact,
            immediate_actions=keep.items(item.immediate_actions) or fallback.immediate_actions,
            long_term_fixes=keep.items(item.long_term_fixes) or fallback.long_term_fixes,
            monitor=keep.items(item.monitor) or fallback.monitor,
        )
    if not written:
        raise LLMFailure(
            "off-schema answer: its findings name none of the checks in the evidence "
            f"({', '.join(sorted(by_check))})"
        )
    findings = [
        written.get(str(ev.result["check"])) or finding(ev, evidence)
        for ev in worst_first(evidence.checks)
    ]
    summary = keep.prose(answer.summary) or deterministic_report(evidence).summary
    return QualityReport(
        run_id=evidence.run_id,
        analyst=analyst,
        summary=summary,
        findings=findings,
        dropped_claims=keep.dropped,
    )


__all__ = [
    "SYSTEM",
    "AgentAnswer",
    "AnswerFinding",
    "CheckEvidence",
    "Finding",
    "QualityEvidence",
    "QualityReport",
    "Usage",
    "grounded_report",
    "prompt",
    "write_report",
]
