"""The deterministic analyst: one playbook per check signature, with the evidence's numbers."""

from __future__ import annotations

import pytest

from shopstream.genai.data_quality_agent import QualityReport
from shopstream.genai.quality_playbook import deterministic_report, evidence_pool
from tests.support.quality_evidence import SIGNATURES, evidence_of

# signature -> (in the title, a cause only THAT signature has, numbers the finding must state)
EXPECTED: dict[str, tuple[str, str, list[str]]] = {
    "freshness": ("raw.events: no new rows for 95 minutes", "collector is not receiving", ["95"]),
    "freshness_cdc": ("raw.cdc_orders", "CDC reader stopped", ["22"]),
    "volume_drop": (
        "volume drop",
        "Tracking broke",
        ["16,492", "41,230", "60%", "-7.8", "usual range 37,004 to 45,456"],
    ),
    "volume_spike": ("volume spike", "Bot or crawler traffic", ["88,120", "41,230", "114%"]),
    "null_spike": ("null rate 41.35%", "stopped sending session_id", ["0.21%", "6,819"]),
    "duplicates": ("duplicate event_id burst", "Clients retried batches", ["7.31%", "3,013"]),
    "schema_drift": (
        "schema changed",
        "migration altered the shop's orders",
        ["added 1, type changed 1", "column=coupon_code, change=added"],
    ),
    "distribution": (
        "distribution shifted (PSI 0.37",
        "mislabels device_type",
        ["most moved: ios 81% (was 32%)"],
    ),
    "orphans": (
        "without staging.stg_orders",
        "Late-arriving parents",
        ["1.14%", "(57 rows)", "O0000031337"],
    ),
    "order_totals": ("order totals differ", "different transactions", ["12", "O0000040001"]),
    "status_transition": ("invalid order status transitions", "skips a step", ["3"]),
    "replication": ("CDC replication behind", "fills its disk", ["700 MiB", "1,260"]),
    "dead_letters": ("Dead letters surging: 4.42%", "contract violation", ["1,822", "0.12%"]),
    "tracking_coverage": ("Tracking coverage 88.3%", "purchase event is not fired", ["88.3%"]),
    "error": ("raw.events.null_rate.coupon could not run", "no column coupon", []),
}


def _text(report: QualityReport) -> str:
    return report.to_markdown()


def test_every_signature_has_its_expectations() -> None:
    assert set(EXPECTED) == set(SIGNATURES)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_each_signature_gets_its_own_specific_finding(name: str) -> None:
    evidence = evidence_of(name)
    report = deterministic_report(evidence)
    title, cause, numbers = EXPECTED[name]
    result = SIGNATURES[name]

    assert report.analyst == "deterministic"
    assert report.fallback_reason is None
    [found] = report.findings
    assert found.check == result.check
    assert found.severity == result.severity
    assert title in found.title
    text = _text(report)
    assert cause in text
    for number in numbers:
        assert number in text, f"{name}: {number} not in the report:\n{text}"
    # Every part a person acts on is there.
    assert found.root_causes and found.business_impact and found.immediate_actions
    assert found.monitor


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_deterministic_analyst_states_only_numbers_from_the_evidence(name: str) -> None:
    trend = [{"checked_at": "2026-12-02T04:40:00+00:00", "status": "warn", "observed": 30500.0}]
    evidence = evidence_of(name, trend=trend)
    report = deterministic_report(evidence)
    pool = evidence_pool(evidence)
    texts = [report.summary]
    for f in report.findings:
        texts += [f.title, f.business_impact, *f.root_causes, *f.immediate_actions]
        texts += [*f.long_term_fixes, *f.monitor]
    invented = {t: pool.invented(t) for t in texts if pool.invented(t)}
    assert not invented


def test_a_volume_drop_and_a_spike_get_different_causes() -> None:
    drop = _text(deterministic_report(evidence_of("volume_drop")))
    spike = _text(deterministic_report(evidence_of("volume_spike")))
    assert "Tracking broke" in drop and "Tracking broke" not in spike
    assert "Bot or crawler" in spike and "Bot or crawler" not in drop
    assert "2026-12-02 04:00 to 05:00 UTC" in drop


def test_the_trend_and_the_neighbours_are_part_of_the_finding() -> None:
    trend = [
        {"checked_at": "2026-12-02T04:40:00+00:00", "status": "fail", "observed": 17003.0},
        {"checked_at": "2026-12-02T04:10:00+00:00", "status": "warn", "observed": 29950.0},
        {"checked_at": "2026-12-02T03:40:00+00:00", "status": "pass", "observed": 40118.0},
    ]
    report = deterministic_report(evidence_of("volume_drop", "freshness", trend=trend))
    volume = next(f for f in report.findings if f.check == "raw.events.volume_hourly")
    causes = "\n".join(volume.root_causes)
    assert "alarming for 2 earlier runs in a row" in causes
    assert "17,003" in causes
    # The stalled ingest beside it is the first hypothesis for the drop.
    assert volume.root_causes[1].startswith("Ingest stalled in this window")
    assert "raw.events.freshness fail: newest event landed 95 min ago" in causes


def test_a_first_alarm_says_the_previous_run_passed() -> None:
    trend = [{"checked_at": "2026-12-02T04:40:00+00:00", "status": "pass", "observed": 9.0}]
    report = deterministic_report(evidence_of("freshness", trend=trend))
    assert "New in this run: the previous run was pass (observed 9)" in _text(report)


def test_dead_letter_reasons_are_listed_with_their_counts() -> None:
    text = _text(deterministic_report(evidence_of("dead_letters")))
    assert "schema_validation: properties.price missing from collector: 1,822" in text
    assert "json_decode from collector: 41" in text
    assert "1,863 dead letters" in text


def test_findings_come_worst_first_and_the_summary_counts_them() -> None:
    report = deterministic_report(evidence_of("tracking_coverage", "error", "replication"))
    assert [f.check for f in report.findings] == [
        "pipeline.replication",  # fail, critical
        "raw.events.null_rate.coupon",  # error
        "mart.tracking_coverage.tracking_coverage",  # warn
    ]
    assert report.summary.startswith("1 fail, 1 error, 1 warn in run run-20261202-0510.")


def test_the_markdown_is_what_a_person_on_call_reads() -> None:
    report = deterministic_report(evidence_of("replication"), fallback_reason="timeout")
    md = report.to_markdown()
    assert md.startswith("# Data quality report (run run-20261202-0510)")
    assert "## [CRITICAL] CDC replication behind" in md
    assert md.index("**Do now:**") < md.index("**Likely causes:**")
    assert "_Written by: deterministic (fallback: timeout)_" in md


def test_no_alarming_check_makes_a_short_report() -> None:
    report = deterministic_report(evidence_of())
    assert report.findings == []
    assert report.summary == "No check warned, failed or errored in run run-20261202-0510."


def test_evidence_that_is_not_a_check_result_is_refused_with_the_fields_missing() -> None:
    from pydantic import ValidationError

    from shopstream.genai.data_quality_agent import CheckEvidence

    with pytest.raises(ValidationError) as caught:
        CheckEvidence(result={"check": "raw.events.freshness", "status": "fail"})
    assert "result must be CheckResult.to_dict()" in str(caught.value)
    assert "'kind'" in str(caught.value)


def test_the_state_of_the_stage_that_feeds_the_table_is_quoted() -> None:
    events = "\n".join(deterministic_report(evidence_of("freshness")).findings[0].root_causes)
    assert "collector={accepted=16,492, rejected=1,863, sink_pending_rows=0}" in events
    assert "cdc=" not in events and "transform=" not in events
    slot = "\n".join(deterministic_report(evidence_of("replication")).findings[0].root_causes)
    assert "lag_bytes=734,003,200" in slot and "collector=" not in slot
