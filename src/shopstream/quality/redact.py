"""Evidence without personal data: the rows a check keeps to show what it found are redacted
before they are stored, printed or sent to a language model.

A value is redacted when its column names personal data (e-mail, a person's name, phone,
address, IP, user agent, ...). Text is read too, because DuckDB hands JSON columns (after,
before, payload, properties) back as text and dead letters are often cut off: a JSON document
is redacted key by key and written back; text that does not parse loses the values of its
personal keys ("phone": "..."), and e-mails, IP addresses and phone numbers anywhere in it.
Keys stay: an order id or a product id is what a person needs to find the row.

>>> redact_row({"order_id": "O0000000042", "email": "kim@shop.example", "note": "mail kim@x.io"})
{'order_id': 'O0000000042', 'email': '<redacted>', 'note': 'mail <email>'}
>>> redact_value("after", '{"user_id":"U1","name":"Kim"}')
'{"user_id":"U1","name":"<redacted>"}'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Column names (or parts of them) that hold personal data. A person's name is listed name by
#: name: a bare `name` part would blank event_name, product_name or table_name.
PERSONAL = re.compile(
    r"^name$|(^|_)(first_name|last_name|full_name|customer_name|recipient_name|user_name|"
    r"username|display_name)$|"
    r"(^|_)(e?mail|phone|mobile|address|street|zip|postcode|ip|ipv4|ipv6|ip_addr|"
    r"ip_address|user_agent|birth|birthday|ssn|card|iban|password|token|secret)($|_)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_HEX = r"[0-9A-Fa-f]{1,4}"
# Full (eight groups) or compressed (with ::): a time like 04:00:00 is neither.
_IPV6 = re.compile(
    rf"(?<![\w:])(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{0,6}}(?:{_HEX})?::(?:{_HEX}(?::{_HEX})*)?)"
    r"(?![\w:])"
)
# Digit groups joined by dashes, dots or spaces the way phone numbers are written (010-1234-5678,
# +82 10 1234 5678), or a + and 8+ digits; dates (2026-12-02) and counts (41,230) are not.
_PHONE = re.compile(
    r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?)?(?:\(?\d{2,4}\)?[ .-]){1,3}\d{3,4}[ .-]\d{4}(?![\w-])"
    r"|(?<![\w.+-])(?:\+\d{8,15}|0\d{9,10})(?![\w.-])"
)
# "key": value in text no parser reads; a string value may be cut off before its quote.
_KEY_VALUE = re.compile(
    r'"(?P<key>[^"\\]{1,64})"\s*:\s*'
    r'(?P<value>"(?:[^"\\]|\\.)*(?:"|$)|(?![{\[\s])[^,}\]\s]+)'
)
REDACTED = "<redacted>"


def is_personal(column: str) -> bool:
    """Whether ``column``'s name says it holds personal data.

    >>> is_personal("customer_email"), is_personal("product_name"), is_personal("ip")
    (True, False, True)
    """
    return bool(PERSONAL.search(column))


def _redact_key_value(match: re.Match[str]) -> str:
    if not is_personal(match.group("key")):
        return match.group(0)
    start = match.start("value") - match.start(0)
    return f'{match.group(0)[:start]}"{REDACTED}"'


def redact_text(text: str) -> str:
    """Free text (or JSON no parser reads) without personal values, e-mails, IPs or phones."""
    text = _KEY_VALUE.sub(_redact_key_value, text)
    text = _EMAIL.sub("<email>", text)
    text = _IPV6.sub("<ip>", text)
    text = _IPV4.sub("<ip>", text)
    return _PHONE.sub("<phone>", text)


def _json_document(text: str) -> Any:
    """The object or array ``text`` holds, or None when it holds none."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict | list) else None


def redact_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if is_personal(column):
        return REDACTED
    if isinstance(value, str):
        document = _json_document(value)
        if document is None:
            return redact_text(value)
        redacted = redact_value(column, document)
        return json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), default=str)
    if isinstance(value, Mapping):
        return redact_row(value)
    if isinstance(value, list | tuple):
        return [redact_value(column, item) for item in value]
    return value


def redact_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(column): redact_value(str(column), value) for column, value in row.items()}


def redact_rows(
    rows: Iterable[Mapping[str, Any]], limit: int | None = None
) -> list[dict[str, Any]]:
    """At most ``limit`` rows, each redacted (dates and decimals kept as they are)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(redact_row(row))
    return out


__all__ = ["REDACTED", "is_personal", "redact_row", "redact_rows", "redact_text", "redact_value"]
