"""Numbers in a report must come from the evidence: find them, and keep only claims that match.

A language model asked about 41,230 events may write "41,230", "41230", "about 41,000" or "41.2k";
asked about a rate of 0.1234 it may write "12.3%". Those are the same numbers, rounded or
formatted. A number found nowhere in the evidence (nor as a simple derivation of it: a percentage
of a rate, the change between observed and expected, a unit conversion) is invented, and the
sentence or list item that carries it is dropped.

Times and dates are read whole, on both sides: 2026-12-02T04:00 grounds "2026-12-02" and "04:00",
never a loose "2026", "12" or "4". Identifiers (run-20261202-0510, O0000000042, raw.cdc_orders)
hold no numbers at all, and a value only reads as a percentage when it is a rate or a share: an
SLA of 30 minutes does not ground "3,000".

>>> pool = NumberPool([41230, 0.1234])
>>> [pool.grounded(c) for c in claims("Volume fell to 41,230 rows (12.3%), not 52,000.")]
[True, True, False]
>>> [c.text for c in claims("Check raw.cdc_orders and O0000000042 (v2) on 2026-12-02 04:00")]
['2026-12-02', '04:00']
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# A number as prose writes it: not part of an identifier (raw.cdc_orders, O0000000042, p99, v2),
# thousands separated by commas or not, decimals, an optional percent sign or k/M suffix.
_CLAIM_NUMBER = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?"
    r"(?P<suffix>\s?%|\s(?:percent|per cent)\b|\s?(?:k|K|M)\b)?"
)
# A time stamp (date, time of day, seconds and offset): its date and its HH:MM are what it says.
_DATETIME = re.compile(
    r"(?<![\w-])(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{1,2}:\d{2})"
    r"(?::\d{2}(?:\.\d+)?)?(?:Z|\s?[+-]\d{2}:?\d{2}\b)?"
)
_DATE = re.compile(r"(?<![\w-])(?P<date>\d{4}-\d{2}-\d{2})(?![\w-]*\d)")
_TIME = re.compile(r"(?<![\w:.])(?P<time>\d{1,2}:\d{2})(?::\d{2})?(?![\d:])")
# An identifier: letters and digits joined (O0000000042, run-20261202-0510, stg_v2, p99), but
# not a number with its unit letter (41.2k, 2.5x, 95min is not written by the playbook).
_IDENTIFIER = re.compile(r"[\w.-]*(?:[A-Za-z_][\w.-]*\d|\d[\w.-]*[A-Za-z_])[\w.-]*")
_NUMBER_WITH_SUFFIX = re.compile(r"[\d,.]+[kKMx]")
# A list item's own marker ("1. ", "2) ") is not a claim.
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_CODE_SPAN = re.compile(r"`[^`]*`")
# Sentences end at . ! ? followed by space: "12.3" and "raw.events" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Keys whose values identify a row (never a quantity an analyst may state).
_ID_KEY = re.compile(r"(^|_)(id|ids|lsn|tx_id|run_id|key)$", re.IGNORECASE)
# Keys and units that say a value is a rate or a share (which prose writes as a percentage).
_RATE_WORD = re.compile(r"rate|share|ratio|fraction|percent|psi", re.IGNORECASE)

#: Numbers any sentence may use without evidence: "one table", "100%", "zero rows".
TRIVIAL: frozenset[float] = frozenset({0.0, 1.0, 100.0})


@dataclass(frozen=True)
class Claimed:
    """One number as written: the values it may stand for, each with how precisely it was
    written (half of the last written digit's unit: 12.3 -> 0.05; 41,000 -> 500, two
    significant figures at least kept for four digits and more). A date or a time of day is a
    ``token`` ("2026-12-02", "04:00") with no readings: only the same date or time grounds it."""

    text: str
    readings: tuple[tuple[float, float], ...]
    token: str | None = None

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
    if suffix in ("%", "percent", "per cent"):
        # 12.3% is 12.3 (a value in percent) or 0.123 (a rate).
        return Claimed(text, ((value, half), (value / 100, half / 100)))
    if suffix in ("k", "K"):
        return Claimed(text, ((value * 1_000, half * 1_000),))
    if suffix == "M":
        return Claimed(text, ((value * 1_000_000, half * 1_000_000),))
    return Claimed(text, ((value, half),))


def _time(text: str) -> str:
    """HH:MM with two-digit hours (4:00 and 04:00 are the same time)."""
    hours, minutes = text.split(":")[:2]
    return f"{int(hours):02d}:{minutes}"


def _tokens(text: str) -> tuple[list[tuple[int, Claimed]], str]:
    """The dates and times of ``text`` (with where they stand), and the text without them."""
    found: list[tuple[int, Claimed]] = []

    def take(match: re.Match[str]) -> str:
        groups = match.groupdict()
        if groups.get("date"):
            date = groups["date"]
            found.append((match.start("date"), Claimed(date, (), token=date)))
        if groups.get("time"):
            written = match.group("time")
            found.append((match.start("time"), Claimed(written, (), token=_time(written))))
        return " " * len(match.group(0))

    for pattern in (_DATETIME, _DATE, _TIME):
        text = pattern.sub(take, text)
    return found, text


def _without_identifiers(text: str) -> str:
    return _IDENTIFIER.sub(
        lambda m: m.group(0) if _NUMBER_WITH_SUFFIX.fullmatch(m.group(0)) else " ", text
    )


def claims(text: str) -> list[Claimed]:
    """The numbers, dates and times ``text`` states, in order. Inline code (`LIMIT 20`) is a
    command to run, not a claim about the data: its digits are left out, like a list item's own
    number and an identifier's digits."""
    prose = _CODE_SPAN.sub(" ", _LIST_MARKER.sub("", text, count=1))
    found, prose = _tokens(prose)
    prose = _without_identifiers(prose)
    found += [(m.start(), _parse(m)) for m in _CLAIM_NUMBER.finditer(prose)]
    return [claimed for _, claimed in sorted(found, key=lambda f: f[0])]


def claim_numbers(text: str) -> list[float]:
    """The numbers a sentence states (dates, times, identifiers' digits and list markers left
    out)."""
    return [float(c) for c in claims(text) if c.token is None]


class NumberPool:
    """The numbers an analyst may state, with the forms they may take, and the dates and times
    of day it may name."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._values: set[float] = set(TRIVIAL)
        self._tokens: set[str] = set()
        for value in values:
            self.add(value)

    @classmethod
    def of_evidence(cls, evidence: Any) -> NumberPool:
        """The pool of a JSON-like value: its numbers, and its dates and times as tokens."""
        pool = cls()
        pool.add_evidence(evidence)
        return pool

    def add(self, value: float, *, rate: bool | None = None) -> None:
        """``value``, and as a percentage (x 100) and back (/ 100) when it is a rate or a share:
        ``rate`` says so, or (when None) a value between 0 and 1 is taken for one. A count or
        an SLA (30 minutes) is never written x 100."""
        if math.isfinite(value):
            v = abs(value)
            self._values.add(v)
            if rate or (rate is None and v <= 1):
                self._values.update((v * 100, v / 100))

    def add_all(self, values: Iterable[float], *, rate: bool | None = None) -> None:
        for value in values:
            self.add(value, rate=rate)

    def add_token(self, token: str) -> None:
        self._tokens.add(token)

    def add_text(self, text: str, *, rate: bool | None = None) -> None:
        """What a piece of evidence text states: its dates and times as tokens, its numbers
        (a percentage also as a rate), nothing from its identifiers."""
        found, rest = _tokens(text)
        self._tokens.update(c.token for _, c in found if c.token)
        for match in _CLAIM_NUMBER.finditer(_without_identifiers(rest)):
            claimed = _parse(match)
            percent = len(claimed.readings) > 1
            for value, _ in claimed.readings:
                self.add(value, rate=rate if not percent else False)
            if percent:
                self.add(claimed.readings[1][0], rate=True)

    def add_evidence(self, value: Any, key: str = "", rate: bool | None = None) -> None:
        """Every number of a JSON-like value: a row's id (order_id, change_id, run_id) is not
        one; a value keyed or in a record whose unit says rate/share/ratio is a rate."""
        if value is None or isinstance(value, bool) or _ID_KEY.search(key):
            return
        if _RATE_WORD.search(key):
            rate = True
        if isinstance(value, int | float):
            self.add(float(value), rate=rate)
        elif isinstance(value, str):
            self.add_text(value, rate=rate)
        elif isinstance(value, Mapping):
            unit = value.get("unit")
            inner = True if isinstance(unit, str) and _RATE_WORD.search(unit) else rate
            for k, item in value.items():
                self.add_evidence(item, str(k), inner)
        elif isinstance(value, list | tuple):
            for item in value:
                self.add_evidence(item, key, rate)
        else:  # dates, decimals: through their text
            self.add_text(str(value), rate=rate)

    def __contains__(self, value: float) -> bool:
        return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=1e-12) for v in self._values)

    def __len__(self) -> int:
        return len(self._values)

    def grounded(self, claimed: Claimed | float) -> bool:
        """Whether the evidence holds the number (up to the rounding of its last digit), or the
        date or time of day."""
        if not isinstance(claimed, Claimed):
            claimed = Claimed(str(claimed), ((float(claimed), 1e-9),))
        if claimed.token is not None:
            return claimed.token in self._tokens
        # A tie does not ground: 2.5 is as much "2" as "3", and a bare "3" next to an evidence
        # ratio of 2.5 is more likely a number of its own (3 days) than that ratio rounded.
        return any(
            abs(value - known) < half - 1e-12 or math.isclose(value, known, rel_tol=1e-9)
            for value, half in claimed.readings
            for known in self._values
        )

    def invented(self, text: str) -> list[str]:
        """The numbers of ``text`` the evidence does not hold, as written."""
        return [c.text.strip() for c in claims(text) if not self.grounded(c)]


def evidence_numbers(value: Any) -> list[float]:
    """The numbers of a JSON-like value as :meth:`NumberPool.add_evidence` reads them (ids,
    identifiers' digits, dates and times left out)."""
    pool = NumberPool.of_evidence(value)
    return sorted(pool._values - TRIVIAL)


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
