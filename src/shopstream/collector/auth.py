"""Write keys: who may send events.

A key arrives as the basic-auth user (Segment's way), a bearer token, an ``X-Write-Key``
header, or a Segment body's ``writeKey``. Comparison is constant-time and keys are never
logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence

from pydantic import SecretStr


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    header = headers.get("x-write-key")
    if header:
        return header
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


def key_is_valid(candidate: str | None, keys: Sequence[SecretStr]) -> bool:
    if candidate is None:
        return False
    given = candidate.encode()
    valid = False
    # Compare against every key, so the time taken does not tell which one nearly matched.
    for key in keys:
        valid |= hmac.compare_digest(given, key.get_secret_value().encode())
    return valid
