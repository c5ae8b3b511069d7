"""Evidence without personal data: the rows a check keeps to show what it found are redacted
before they are stored, printed or sent to a language model.

A value is redacted when its column names personal data (e-mail, name, phone, address, IP,
user agent, ...) or when it looks like an e-mail address wherever it is. Keys stay: an order id
or a product id is what a person needs to find the row.

>>> redact_row({"order_id": "O0000000042", "email": "kim@shop.example", "note": "mail kim@x.io"})
{'order_id': 'O0000000042', 'email': '<redacted>', 'note': 'mail <email>'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Column names (or parts of them) that hold personal data.
PERSONAL = re.compile(
    r"(^|_)(e?mail|name|first_name|last_name|phone|mobile|address|street|zip|postcode|ip|"
    r"ip_address|user_agent|birth|birthday|ssn|card|iban|password|token|secret)($|_)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
REDACTED = "<redacted>"


def is_personal(column: str) -> bool:
    """Whether ``column``'s name says it holds personal data.

    >>> is_personal("customer_email"), is_personal("product_id"), is_personal("ip")
    (True, False, True)
    """
    return bool(PERSONAL.search(column))


def redact_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if is_personal(column):
        return REDACTED
    if isinstance(value, str):
        return _EMAIL.sub("<email>", value)
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


__all__ = ["REDACTED", "is_personal", "redact_row", "redact_rows", "redact_value"]
