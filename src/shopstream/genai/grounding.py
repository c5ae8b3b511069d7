"""Numbers in a report must come from the evidence: find them, and keep only claims that match.

A language model asked about 41,230 events may write "41,230", "41230", "about 41,000" or "41.2k";
asked about a rate of 0.1234 it may write "12.3%". Those are the same numbers, rounded or
formatted. A number found nowhere in the evidence (nor as a simple derivation of it: a percentage,
the change between observed and expected, a unit conversion) is invented, and the sentence or
list item that carries it is dropped.

>>> pool = NumberPool([41230, 0.1234])
>>> [pool.grounded(c) for c in claims("Volume fell to 41,230 rows (12.3%), not 52,000.")]
[True, True, False]
>>> claim_numbers("Check raw.cdc_orders and O0000000042 (v2) on 2026-12-02 04:00")
[2026.0, 12.0, 2.0, 4.0, 0.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A number as prose writes it: not part of an identifier (raw.cdc_orders, O0000000042, p99, v2),
# thousands separated by commas or not, decimals, an optional percent sign or k/M suffix.
_CLAIM_NUMBER = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?"
    r"(?P<suffix>\s?%|\s?(?:k|K|M)\b)?"
)
# In evidence every digit run counts, identifiers included: an ISO time (T04:00) or a check
# name's number is something the evidence says.
_EVIDENCE_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
# A list item's own marker ("1. ", "2) ") is not a claim.
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_CODE_SPAN = re.compile(r"`[^`]*`")
# Sentences end at . ! ? followed by space: "12.3" and "raw.events" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

#: Numbers any sentence may use without evidence: "one table", "100%", "zero rows".
TRIVIAL: frozenset[float] = frozenset({0.0, 1.0, 100.0})


@dataclass(frozen=True)
class Claimed:
    """One number as written: the values it may stand for, each with how precisely it was
    written (half of the last written digit's unit: 12.3 -> 0.05; 41,000 -> 500, two
    significant figures at least kept for four digits and more)."""

    text: str
    readings: tuple[tuple[float, float], ...]

    def __float__(self) -> float:
        return self.readings[0][0]


def _parse(match: re.Match[str]) -> Claimed:
    whole = match.group("int").replace(",", "")
    frac = match.group("frac") or ""
    suffix = (match.group("suffix") or "").strip()
    value = float(whole + frac)
    if frac:
        unit = 10.0 ** -(len(frac) - 1)
    else:
        # Trailing zeros of a long integer are rounding ("about 41,000"), down to two
        # significant figures; 100 or 300 are taken as written.
        zeros = len(whole) - len(whole.rstrip("0"))
        unit = 10.0 ** min(zeros, max(len(whole) - 2, 0)) if len(whole) >= 4 else 1.0
    half = unit / 2
    text = match.group(0)
    if suffix == "%":
        # 12.3% is 12.3 (a value in percent) or 0.123 (a rate).
        return Claimed(text, ((value, half), (value / 100, half / 100)))
    if suffix in ("k", "K"):
        return Claimed(text, ((value * 1_000, half * 1_000),))
    if suffix == "M":
        return Claimed(text, ((value * 1_000_000, half * 1_000_000),))
    return Claimed(text, ((value, half),))


def claims(text: str) -> list[Claimed]:
    """The numbers ``text`` states. Inline code (`LIMIT 20`) is a command to run, not a claim
    about the data: its digits are left out, like a list item's own number."""
    prose = _CODE_SPAN.sub(" ", _LIST_MARKER.sub("", text, count=1))
    return [_parse(m) for m in _CLAIM_NUMBER.finditer(prose)]


def claim_numbers(text: str) -> list[float]:
    """The numbers a sentence states (identifiers' digits and list markers left out)."""
    return [float(c) for c in claims(text)]


class NumberPool:
    """The numbers an analyst may state, with the forms they may take."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values: set[float] = set(TRIVIAL)
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        if math.isfinite(value):
            v = abs(value)
            # A rate may be written as a percentage and a percentage as a rate.
            self._values.update((v, v * 100, v / 100))

    def add_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def __contains__(self, value: float) -> bool:
        return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=1e-12) for v in self._values)

    def __len__(self) -> int:
        return len(self._values)

    def grounded(self, claimed: Claimed | float) -> bool:
        """Whether the evidence holds the number, up to the rounding of its last digit."""
        if not isinstance(claimed, Claimed):
            claimed = Claimed(str(claimed), ((float(claimed), 1e-9),))
        return any(
            abs(value - known) <= half + 1e-12
            for value, half in claimed.readings
            for known in self._values
        )

    def invented(self, text: str) -> list[str]:
        """The numbers of ``text`` the evidence does not hold, as written."""
        return [c.text.strip() for c in claims(text) if not self.grounded(c)]


def evidence_numbers(value: Any) -> Iterable[float]:
    """Every number in a JSON-like value, digit runs inside strings (times, names) included."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, str):
        for match in _EVIDENCE_NUMBER.finditer(value):
            yield float(match.group(0).replace(",", ""))
    elif isinstance(value, dict):
        for item in value.values():
            yield from evidence_numbers(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from evidence_numbers(item)
    else:  # dates, decimals: through their text
        yield from evidence_numbers(str(value))


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


__all__ = [
    "TRIVIAL",
    "Claimed",
    "NumberPool",
    "claim_numbers",
    "claims",
    "evidence_numbers",
    "sentences",
]
