"""Numbers in a report must come from the evidence, however they are written."""

from __future__ import annotations

import pytest

from shopstream.genai.data_quality_agent import AgentAnswer, grounded_report
from shopstream.genai.grounding import NumberPool, claim_numbers
from shopstream.genai.quality_playbook import evidence_pool
from tests.support.quality_evidence import SIGNATURES, evidence_of

POOL = NumberPool([41230, 0.1234, 734003200, 95])


@pytest.mark.parametrize(
    "text",
    [
        "41,230 events",
        "41230 events",
        "about 41,000 events",  # rounded to two figures
        "41.2k events",
        "12.3% of rows",  # the rate 0.1234
        "12% of rows",
        "a rate of 0.123",
        "0.1234",
        "95 minutes",
    ],
)
def test_the_same_number_written_differently_is_grounded(text: str) -> None:
    assert POOL.invented(text) == []


@pytest.mark.parametrize(
    ("text", "invented"),
    [
        ("42,230 events", ["42,230"]),
        ("about 40,000 events", ["40,000"]),  # not 41,230 rounded
        ("13.3% of rows", ["13.3%"]),
        ("95 minutes, 17 orders lost", ["17"]),
        ("1.2345 rate", ["1.2345"]),
    ],
)
def test_other_numbers_are_invented(text: str, invented: list[str]) -> None:
    assert POOL.invented(text) == invented


def test_identifiers_code_and_list_markers_are_not_claims() -> None:
    text = "1. Check raw.cdc_orders, order O0000000042 and p99 with `LIMIT 20` (see stg_v2)."
    assert claim_numbers(text) == []


def test_times_in_the_evidence_ground_the_times_in_a_claim() -> None:
    pool = NumberPool.of_evidence({"window_start": "2026-12-02T04:00:00+00:00"})
    assert pool.invented("Between 2026-12-02 04:00 and 04:00 UTC") == []
    assert pool.invented("since 03:15") == ["03:15"]
    assert pool.invented("for 2026 days, 12 times, 4 hours") == ["2026", "12", "4"]


def test_derived_numbers_of_a_check_are_grounded() -> None:
    pool = evidence_pool(evidence_of("volume_drop", "replication"))
    # 16,492 vs 41,230: 60% below; 24,738 fewer; 734,003,200 bytes: 700 MiB, 734 MB.
    assert pool.invented("60% below, 24,738 fewer, 700 MiB, 734 MB retained") == []
    assert pool.invented("65% below") == ["65%"]


def test_grounded_report_drops_exactly_the_sentences_with_invented_numbers() -> None:
    evidence = evidence_of("duplicates")
    check = SIGNATURES["duplicates"].check
    answer = AgentAnswer.model_validate(
        {
            "summary": "7.31% of event ids repeat. That is 9 times the usual rate.",
            "findings": [
                {
                    "check": check,
                    "title": "raw.events: 3,013 duplicated events",
                    "root_causes": ["Client retries (7.31%).", "A replay of 5,000 events."],
                    "business_impact": "Raw double counts. Staging is fine.",
                    "immediate_actions": ["List the repeated event_id values."],
                }
            ],
        }
    )
    report = grounded_report(answer, evidence, "llm:openai:m")
    assert report.summary == "7.31% of event ids repeat."
    assert report.findings[0].root_causes == ["Client retries (7.31%)."]
    assert report.findings[0].title == "raw.events: 3,013 duplicated events"
    assert set(report.dropped_claims) == {
        "That is 9 times the usual rate.",
        "A replay of 5,000 events.",
    }


@pytest.mark.parametrize(
    "sentence",
    [
        "About 3,000 orders were lost in the gap.",  # 30 (an SLA) x 100: 30 is no rate
        "Revenue at risk is about 2,026 thousand won.",  # the year of a timestamp
        "The drop cost an estimated 12 percent of daily revenue.",  # the month
        "The stall has lasted 3 days.",  # a digit of the run id or a timestamp
        "Only 58% of expected volume arrived.",
        "Order 42 is the first one lost.",  # O0000000042's digits are an id, not a number
    ],
)
def test_numbers_made_of_timestamps_ids_and_percent_forms_are_invented(sentence: str) -> None:
    evidence = evidence_of("volume_drop", "freshness")
    evidence.checks[0].result["evidence"] = [{"order_id": "O0000000042", "change_id": 7}]
    assert evidence_pool(evidence).invented(sentence), sentence


@pytest.mark.parametrize(
    "sentence",
    [
        "16,492 events arrived, 60% below the expected 41,230.",
        "16492 of about 41k events (40% of the usual).",
        "The newest event landed 95 minutes (1.6 hours) ago; the SLA is 30 minutes.",
        "Between 04:00 and 05:00 UTC on 2026-12-02 the tracker went quiet.",
        "The run at 05:10 found it; the usual range is 37,004 to 45,456.",
        "24,738 fewer events than expected.",
        "A score of -7.8 against a fail threshold of 6.",
    ],
)
def test_numbers_the_evidence_holds_are_kept(sentence: str) -> None:
    assert evidence_pool(evidence_of("volume_drop", "freshness")).invented(sentence) == []


def test_identifiers_in_evidence_text_hold_no_numbers() -> None:
    pool = NumberPool.of_evidence({"message": "order O0000000042 of run-7731 on stg_v2: 5 rows"})
    assert pool.invented("7731 orders, 42 lost, 2 tables, 5 rows") == ["7731", "42", "2"]
