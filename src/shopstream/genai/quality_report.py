"""What the data quality agent is given and what it hands back.

:class:`QualityEvidence` is one run's alarming checks (warn, fail, error) with their recent trend,
their neighbours and the pipeline's state; :class:`QualityReport` is the analysis a person on call
reads, the same shape whichever analyst wrote it (a language model or the deterministic one).

>>> report = QualityReport(run_id="r1", analyst="deterministic", summary="All clear.")
>>> print(report.to_markdown().splitlines()[0])
# Data quality report (run r1)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from shopstream.genai.llm import Usage
from shopstream.quality.results import CheckResult, Severity

#: Worst first: findings and the summary are ordered by it.
SEVERITY_RANK: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}
STATUS_RANK: dict[str, int] = {"fail": 0, "error": 1, "warn": 2}


class CheckEvidence(BaseModel):
    """One alarming check and what surrounds it."""

    #: ``CheckResult.to_dict()`` of the alarming result (evidence rows already redacted).
    result: dict[str, Any]
    #: Earlier runs of the same check, newest first: {checked_at, status, observed}.
    trend: list[dict[str, Any]] = Field(default_factory=list)
    #: Other checks on the same table or pipeline stage in this run: {check, status, observed,
    #: message}.
    related: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("result")
    @classmethod
    def _a_check_result(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The analysts read every field of it: say now, not in the middle of a report.
        try:
            CheckResult.from_dict(value)
        except TypeError as exc:
            raise ValueError(f"result must be CheckResult.to_dict(): {exc}") from None
        return value

    @classmethod
    def of(
        cls,
        result: CheckResult,
        trend: list[dict[str, Any]] | None = None,
        related: list[dict[str, Any]] | None = None,
    ) -> CheckEvidence:
        return cls(result=result.to_dict(), trend=trend or [], related=related or [])

    def check_result(self) -> CheckResult:
        return CheckResult.from_dict(self.result)


class QualityEvidence(BaseModel):
    """Everything an analyst may use for one run's report: nothing else reaches a model."""

    run_id: str
    checked_at: datetime
    #: Only the warn / fail / error results.
    checks: list[CheckEvidence] = Field(default_factory=list)
    #: Facts about the pipeline: transform status, CDC lag, collector counts, ...
    pipeline: dict[str, Any] = Field(default_factory=dict)
    #: Dead letters of the recent window by reason: {reason, source, count}.
    dead_letter_reasons: list[dict[str, Any]] = Field(default_factory=list)


class Finding(BaseModel):
    """The analysis of one alarming check."""

    check: str
    severity: Severity
    title: str
    #: Hypotheses, most likely first: what to rule in or out.
    root_causes: list[str] = Field(default_factory=list)
    business_impact: str = ""
    immediate_actions: list[str] = Field(default_factory=list)
    long_term_fixes: list[str] = Field(default_factory=list)
    #: What to watch next (checks, metrics, tables) to know it is over.
    monitor: list[str] = Field(default_factory=list)


class QualityReport(BaseModel):
    run_id: str
    #: ``deterministic`` or ``llm:<provider>:<model>``.
    analyst: str
    summary: str
    findings: list[Finding] = Field(default_factory=list)
    #: Sentences of the model's answer removed because a number in them is not in the evidence.
    dropped_claims: list[str] = Field(default_factory=list)
    #: Why the deterministic analyst wrote the report although a model is configured.
    fallback_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)

    def to_markdown(self) -> str:
        """The report as a person on call reads it: worst finding first, actions before theory."""
        lines = [f"# Data quality report (run {self.run_id})", "", self.summary, ""]
        by = f"_Written by: {self.analyst}"
        if self.fallback_reason:
            by += f" (fallback: {self.fallback_reason})"
        lines += [by + "_", ""]
        for finding in self.findings:
            lines += [
                f"## [{finding.severity.upper()}] {finding.title}",
                "",
                f"Check: `{finding.check}`",
                "",
            ]
            if finding.business_impact:
                lines += [f"**Impact:** {finding.business_impact}", ""]
            for heading, items in (
                ("Do now", finding.immediate_actions),
                ("Likely causes", finding.root_causes),
                ("Watch", finding.monitor),
                ("Fix for good", finding.long_term_fixes),
            ):
                if items:
                    lines += [f"**{heading}:**", *(f"- {item}" for item in items), ""]
        if self.dropped_claims:
            lines += ["**Removed from the model's answer (numbers not in the evidence):**"]
            lines += [f"- {claim}" for claim in self.dropped_claims]
            lines += [""]
        u = self.usage
        if u.input_tokens or u.output_tokens:
            lines += [
                f"_Model usage: {u.input_tokens} input + {u.output_tokens} output tokens, "
                f"cost {u.cost:.6f}, {u.seconds:.1f} s_",
                "",
            ]
        return "\n".join(lines).rstrip() + "\n"


def worst_first(checks: list[CheckEvidence]) -> list[CheckEvidence]:
    """Fail before error before warn, then by severity, then by name (a stable order)."""
    return sorted(
        checks,
        key=lambda c: (
            STATUS_RANK.get(str(c.result.get("status")), 9),
            SEVERITY_RANK.get(str(c.result.get("severity")), 9),
            str(c.result.get("check")),
        ),
    )


__all__ = [
    "SEVERITY_RANK",
    "CheckEvidence",
    "Finding",
    "QualityEvidence",
    "QualityReport",
    "Usage",
    "worst_first",
]
