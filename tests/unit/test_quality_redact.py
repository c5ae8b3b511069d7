"""Evidence without personal data, wherever it hides (JSON text, cut-off payloads, free text),
and without blanking what only sounds personal (event_name, product_name)."""

from __future__ import annotations

import json

import pytest

from shopstream.quality.redact import REDACTED, is_personal, redact_row, redact_value


@pytest.mark.parametrize(
    "column",
    ["event_name", "product_name", "table_name", "column_name", "check_name", "key_name"],
)
def test_names_of_things_are_not_personal(column: str) -> None:
    assert not is_personal(column)
    assert redact_row({column: "add_to_cart"}) == {column: "add_to_cart"}


@pytest.mark.parametrize(
    "column",
    [
        "name",
        "first_name",
        "last_name",
        "full_name",
        "customer_name",
        "recipient_name",
        "user_name",
        "username",
        "display_name",
        "ip",
        "ipv4",
        "ipv6",
        "ip_addr",
        "client_ip",
        "email",
        "phone",
    ],
)
def test_names_of_people_and_their_addresses_are_personal(column: str) -> None:
    assert is_personal(column)


def test_a_json_document_in_text_is_redacted_key_by_key() -> None:
    after = '{"user_id":"U1","name":"Kim Minji","phone":"010-1234-5678","email":"k@shop.example"}'
    row = redact_row({"change_id": 1, "after": after})
    assert row["change_id"] == 1
    assert json.loads(row["after"]) == {
        "user_id": "U1",
        "name": REDACTED,
        "phone": REDACTED,
        "email": REDACTED,
    }
    nested = redact_value("payload", '[{"context": {"ip": "10.0.0.1", "event_name": "view"}}]')
    assert json.loads(nested) == [{"context": {"ip": REDACTED, "event_name": "view"}}]


def test_text_that_is_not_json_loses_personal_values_by_key() -> None:
    cut = '{"user_id":"U1","ip":"1.2.3.4","context":{"name":"Kim"} , "phone":"010-1234'
    out = redact_value("payload", cut)
    assert '"user_id":"U1"' in out and '"context":{' in out
    for secret in ("Kim", "1.2.3.4", "010-1234"):
        assert secret not in out, out
    assert "42" not in redact_value("payload", '{"age": 7, "phone": 1012345642, "x')


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("from 203.0.113.9 at night", "203.0.113.9"),
        ("client 2001:db8::8a2e:370:7334 retried", "2001:db8::8a2e:370:7334"),
        ("call 010-1234-5678 now", "010-1234-5678"),
        ("call +82 10 1234 5678", "1234 5678"),
        ("mail kim@shop.example", "kim@shop.example"),
    ],
)
def test_addresses_and_phone_numbers_in_free_text_are_blanked(text: str, secret: str) -> None:
    # Distribution evidence on an `expression:` is keyed "value": only the text can tell.
    assert secret not in redact_row({"value": text})["value"]


@pytest.mark.parametrize(
    "text",
    ["2026-12-02T04:00:00+00:00", "O0000000042", "41,230 events at 04:00", "v1.2", "raw.events"],
)
def test_times_ids_and_counts_in_text_are_kept(text: str) -> None:
    assert redact_value("value", text) == text


def test_a_personal_key_holding_an_object_in_json_text_is_blanked_whole() -> None:
    # Only a parser sees where the object ends: the key pattern alone would leave the city.
    out = redact_value("after", '{"user_id":"U1","address":{"city":"Seoul","line":"Gangnam 12"}}')
    assert json.loads(out) == {"user_id": "U1", "address": REDACTED}
