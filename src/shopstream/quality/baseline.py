"""Seasonal robust baselines: what a bucket (an hour, a day) should hold, judged against the
same hour-of-week (day-of-week) of the previous weeks, and how far from that is still normal.

Why this shape (the usual complaint about anomaly monitors is false alarms on normal weekly
patterns):

- **Seasonal**: a bucket is compared with the same position in the week only, so Monday 09:00
  is never judged against Sunday 03:00.
- **The window under test is never in its own baseline**: baselines are whole weeks back.
- **Robust**: the expectation is the median of the previous weeks (one bad week does not move it)
  after a *level adjustment* (each past week scaled by how the level moved since: the median of
  seven day-by-day ratios measured over the week before last, so growth does not read as a
  spike, one incident day does not move the level, and a drop lasting days is not learnt as
  the new level; at most 0.8x-1.25x per week).
- **Spread from the model's own errors**: a MAD of four values is no spread estimate. Instead every
  recent bucket is predicted exactly as the window is (from its own previous weeks) and the
  prediction errors of all of them (hundreds for hours) give the spread. Counting noise (Poisson
  for counts, binomial for rates) is part of each error's expected size, so quiet night hours get a
  wide band and busy hours a narrow one. Real data varies more than counting noise in two ways,
  both fitted robustly (median standardised error = a normal's): ``dispersion`` scales the
  counting noise (events come in sessions: an hour of five sessions swings far more than its
  rows suggest) and ``extra`` adds noise of its own (a busy hour's drift from week to week).

Counts are judged on a log scale (changes are relative); rates on their own scale.

>>> week = [100.0, 50.0, 20.0, 10.0, 20.0, 60.0, 90.0]
>>> series = (week * 6)[::-1]  # index 0 = the window under test (90), then back in time
>>> v = judge_counts(series, period=7, weeks=4)
>>> round(v.expected), v.score == 0.0
(90, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median

#: Added to counts before logs: an empty bucket is not minus infinity.
PSEUDO = 0.5
#: The median absolute value of a standard normal variable.
NORMAL_MAD = 0.6744897501960817
#: How many rows' worth of the whole span's rate a bucket's own rate is blended with.
PRIOR_ROWS = 100.0
#: Recent buckets whose prediction errors give the spread: up to three weeks of them, from the
#: week before last back (a drop lasting days is in the last week: learnt as normal spread, it
#: would widen the band until the drop itself looked normal, as it did the level).
TRAINING_WEEKS = 3
TRAINING_FROM = 1
#: Weeks of data a query must cover: baselines, the level spans before them (the week before
#: last, see :func:`_level`), the training span.
LOOKBACK_EXTRA_WEEKS = TRAINING_FROM + TRAINING_WEEKS + 2
#: How far the level may move per week (down, up): growth of a few % a week is followed, an
#: incident week in the level span cannot halve or double the baseline.
LEVEL_STEP = (0.8, 1.25)


def lookback_weeks(weeks: int) -> int:
    """Weeks of buckets before the window that :func:`judge_counts` can use."""
    return weeks + LOOKBACK_EXTRA_WEEKS


@dataclass
class Verdict:
    """What a seasonal baseline says of the window (index 0 of the series)."""

    observed: float
    #: None when there is no baseline at all.
    expected: float | None
    #: The previous weeks' values at the window's position, level-adjusted, newest first.
    baseline: list[float] = field(default_factory=list)
    #: Their level factors (how much the level moved since each of those weeks).
    levels: list[float] = field(default_factory=list)
    #: The spread beyond counting noise (log scale for counts, rate for rates).
    extra: float = 0.0
    #: How many times counting noise's variance the buckets really vary by (sessions).
    dispersion: float = 1.0
    #: The window's total expected spread (same scale).
    sigma: float = 0.0
    #: How many spreads away the window is (signed: negative = fewer / lower).
    score: float = 0.0
    #: How many recent prediction errors the spread was learnt from.
    training: int = 0
    #: Weeks of data before the window.
    history_weeks: float = 0.0

    def band(self, score: float) -> tuple[float, float]:
        """The range of observed values within ``score`` spreads of the expectation."""
        if self.expected is None:
            return (math.nan, math.nan)
        return (self.expected - score * self.sigma, self.expected + score * self.sigma)


def _history_weeks(values: Sequence[float | None], period: int) -> float:
    oldest = max((i for i, v in enumerate(values) if v is not None), default=0)
    return oldest / period


def _prefix(values: Sequence[float | None]) -> tuple[list[float], list[int]]:
    """Running sums of the values and of how many were present (None = no data)."""
    sums, present = [0.0], [0]
    for v in values:
        sums.append(sums[-1] + (v or 0.0))
        present.append(present[-1] + (v is not None))
    return sums, present


def _level(
    sums: list[float], present: list[int], period: int, size: int, target: int, back: int
) -> float:
    """How much the level rose from ``back`` buckets before ``target`` to ``target``: the median
    of day-by-day ratios over the week BEFORE the week before ``target`` (days without full data
    skipped), kept within :data:`LEVEL_STEP` per week.

    Why not the seven days just before ``target``: a lasting drop (a tracker broken for days)
    is in those days, and once it holds more than half of them the level follows it and the
    drop reads as normal by its fourth day. Measured a week further back, the level still sees
    steady growth (the rise over ``back`` buckets is the same a week earlier) but a change of
    the last week is judged, not learnt; the clamp bounds what an older incident can do."""
    day = period // 7
    ratios = []
    for d in range(7):
        lo, hi = target + 1 + period + d * day, target + 1 + period + (d + 1) * day
        lo2, hi2 = lo + back, hi + back
        if hi2 > size:
            break
        if present[hi] - present[lo] < day or present[hi2] - present[lo2] < day:
            continue
        ratios.append((sums[hi] - sums[lo] + PSEUDO) / (sums[hi2] - sums[lo2] + PSEUDO))
    if len(ratios) < 3:
        return 1.0
    weeks = back / period
    low, high = LEVEL_STEP
    return min(max(median(ratios), low**weeks), high**weeks)


def _predict(
    values: Sequence[float | None],
    sums: list[float],
    present: list[int],
    period: int,
    weeks: int,
    target: int,
) -> tuple[list[float], list[float]]:
    """The level-adjusted values of ``target``'s previous ``weeks`` weeks, and their factors."""
    baseline, levels = [], []
    for k in range(1, weeks + 1):
        i = target + k * period
        if i >= len(values):
            break
        value = values[i]
        if value is None:
            continue
        factor = _level(sums, present, period, len(values), target, k * period)
        baseline.append(value * factor)
        levels.append(factor)
    return baseline, levels


def _standardised_mad(errors: list[float], noise: list[float], phi: float, extra: float) -> float:
    return median(
        abs(e) / math.sqrt(extra * extra + phi * n) for e, n in zip(errors, noise, strict=True)
    )


def _bisect(spread_of: Callable[[float], float], lo: float, hi: float) -> float:
    """The smallest x in [lo, hi] with spread_of(x) <= NORMAL_MAD (spread_of decreasing)."""
    if spread_of(lo) <= NORMAL_MAD:
        return lo
    for _ in range(25):
        mid = (lo + hi) / 2
        if spread_of(mid) > NORMAL_MAD:
            lo = mid
        else:
            hi = mid
    return hi


def _solve_spread(errors: list[float], noise: list[float]) -> tuple[float, float]:
    """How much wider than counting noise the errors are: ``dispersion`` (a factor on the
    counting noise: events come in sessions, so a quiet hour of five sessions swings far more
    than Poisson says) and ``extra`` (noise of its own, as a busy hour's drift). Each is fitted
    where it dominates: the dispersion on the noisier half of the buckets, the extra on the
    quieter half, alternately, so the median standardised error of each half is a normal's."""
    if len(errors) < 4:
        return 1.0, 0.0
    cut = median(noise)
    loud = [i for i, n in enumerate(noise) if n >= cut]
    calm = [i for i, n in enumerate(noise) if n < cut] or loud
    loud_e, loud_n = [errors[i] for i in loud], [noise[i] for i in loud]
    calm_e, calm_n = [errors[i] for i in calm], [noise[i] for i in calm]
    top = 10 * max(abs(e) for e in errors) + 1.0
    phi, extra = 1.0, 0.0
    for _ in range(3):
        phi = _bisect(
            lambda f, x=extra: _standardised_mad(loud_e, loud_n, f, x),  # type: ignore[misc]
            1.0,
            10_000.0,
        )
        extra = _bisect(
            lambda x, f=phi: _standardised_mad(calm_e, calm_n, f, x),  # type: ignore[misc]
            0.0,
            top,
        )
    return phi, extra


def judge_counts(
    values: Sequence[float | None],
    *,
    period: int,
    weeks: int,
    min_extra: float = 0.02,
) -> Verdict:
    """Judge ``values[0]`` (a count) against its seasonal baseline.

    ``values[i]`` is the count ``i`` buckets before the window (None where there is no data:
    before the table's history, or a wall-clock hour that did not exist). ``period`` buckets
    make a week; ``weeks`` previous weeks make the baseline.
    """
    observed = values[0] or 0.0
    history = _history_weeks(values, period)
    sums, present = _prefix(values)
    baseline, levels = _predict(values, sums, present, period, weeks, 0)
    if not baseline:
        return Verdict(observed, None, history_weeks=history)
    expected = median(baseline)
    errors, noise = [], []
    for target in range(TRAINING_FROM * period, (TRAINING_FROM + TRAINING_WEEKS) * period):
        value = values[target] if target < len(values) else None
        if value is None:
            continue
        past, _ = _predict(values, sums, present, period, weeks, target)
        if len(past) < 2:
            continue
        guess = median(past)
        errors.append(math.log(value + PSEUDO) - math.log(guess + PSEUDO))
        noise.append((1 + math.pi / (2 * len(past))) / (guess + PSEUDO))
    dispersion, extra = _solve_spread(errors, noise)
    extra = max(extra, min_extra)
    sigma = math.sqrt(
        extra**2 + dispersion * (1 + math.pi / (2 * len(baseline))) / (expected + PSEUDO)
    )
    score = (math.log(observed + PSEUDO) - math.log(expected + PSEUDO)) / sigma
    return Verdict(
        observed=observed,
        expected=expected,
        baseline=baseline,
        levels=levels,
        extra=extra,
        dispersion=dispersion,
        sigma=sigma,
        score=score,
        training=len(errors),
        history_weeks=history,
    )


def count_band(verdict: Verdict, score: float, min_change: float) -> tuple[float, float]:
    """The counts a volume check calls normal: within ``score`` spreads on the log scale, and
    never narrower than ``min_change`` either way."""
    if verdict.expected is None:
        return (math.nan, math.nan)
    centre = math.log(verdict.expected + PSEUDO)
    low = math.exp(centre - score * verdict.sigma) - PSEUDO
    high = math.exp(centre + score * verdict.sigma) - PSEUDO
    return (
        max(0.0, min(low, verdict.expected * (1 - min_change))),
        max(high, verdict.expected * (1 + min_change)),
    )


def _rate_noise(rate: float, rows: float) -> float:
    """Binomial variance of a rate over ``rows`` rows (a rate of 0 or 1 is never certain)."""
    rate = min(max(rate, 0.5 / (rows + 1)), 1 - 0.5 / (rows + 1))
    return rate * (1 - rate) / max(rows, 1.0)


def judge_rates(
    hits: Sequence[float | None],
    rows: Sequence[float | None],
    *,
    period: int,
    weeks: int,
    min_extra: float = 0.002,
) -> Verdict:
    """Judge the rate ``hits[0] / rows[0]`` (nulls per row, say) against the same bucket of the
    previous weeks, the spread learnt like :func:`judge_counts`'s.

    The expectation pools the previous weeks' rows (hits / rows over all of them): with few rows
    a bucket (a night hour) the median of four small-sample rates is biased low, and a past spike
    in the pool only makes the check less sensitive, never alarm."""
    history = _history_weeks(rows, period)

    def rate(i: int) -> float | None:
        h, r = hits[i], rows[i]
        return None if h is None or r is None or r <= 0 else h / r

    def past(target: int) -> tuple[list[float], float, float]:
        found, pooled_hits, pooled_rows = [], 0.0, 0.0
        for k in range(1, weeks + 1):
            i = target + k * period
            if i < len(rows) and (r := rate(i)) is not None:
                found.append(r)
                pooled_hits += hits[i] or 0.0
                pooled_rows += rows[i] or 0.0
        return found, (pooled_hits / pooled_rows if pooled_rows else 0.0), pooled_rows

    # A bucket of few rows learns little from its own past: its rate is pulled towards the
    # rate of the whole span (PRIOR_ROWS rows' worth), which busy buckets barely notice.
    total_hits = sum(h or 0.0 for h in hits[1:])
    total_rows = sum(r or 0.0 for r in rows[1:])
    overall = total_hits / total_rows if total_rows else 0.0

    def shrunk(rate_: float, rows_: float) -> float:
        return (rate_ * rows_ + overall * PRIOR_ROWS) / (rows_ + PRIOR_ROWS)

    now = rate(0)
    observed = now if now is not None else 0.0
    baseline, pooled, baseline_rows = past(0)
    if not baseline or now is None:
        return Verdict(observed, pooled if baseline else None, baseline, history_weeks=history)
    expected = shrunk(pooled, baseline_rows)
    errors, noise = [], []
    last = min((TRAINING_FROM + TRAINING_WEEKS) * period, len(rows))
    for target in range(TRAINING_FROM * period, last):
        value = rate(target)
        if value is None:
            continue
        found, guess, found_rows = past(target)
        if len(found) < 2:
            continue
        guess = shrunk(guess, found_rows)
        errors.append(value - guess)
        noise.append(_rate_noise(guess, rows[target] or 0.0) + _rate_noise(guess, found_rows))
    dispersion, extra = _solve_spread(errors, noise)
    extra = max(extra, min_extra)
    # The window's counting noise at the larger of the expected and the seen rate: a rise is
    # judged against the noise it would have if it were real (never narrower than expected).
    at = max(expected, observed)
    sigma = math.sqrt(
        extra**2
        + dispersion * (_rate_noise(at, rows[0] or 0.0) + _rate_noise(expected, baseline_rows))
    )
    return Verdict(
        observed=observed,
        expected=expected,
        baseline=baseline,
        extra=extra,
        dispersion=dispersion,
        sigma=sigma,
        score=(observed - expected) / sigma,
        training=len(errors),
        history_weeks=history,
    )


def psi(window: Sequence[float], baseline: Sequence[float]) -> tuple[float, list[float]]:
    """The population stability index of ``window``'s counts per bin against ``baseline``'s,
    and each bin's share of it. Half a row is added to every bin: an empty bin is not infinite.

    >>> round(psi([50, 50], [50, 50])[0], 6), round(psi([90, 10], [50, 50])[0], 2)
    (0.0, 0.85)
    """
    total_w = sum(window) + PSEUDO * len(window)
    total_b = sum(baseline) + PSEUDO * len(baseline)
    parts = []
    for w, b in zip(window, baseline, strict=True):
        pw, pb = (w + PSEUDO) / total_w, (b + PSEUDO) / total_b
        parts.append((pw - pb) * math.log(pw / pb))
    return sum(parts), parts


__all__ = [
    "LOOKBACK_EXTRA_WEEKS",
    "NORMAL_MAD",
    "PSEUDO",
    "Verdict",
    "count_band",
    "judge_counts",
    "judge_rates",
    "lookback_weeks",
    "psi",
]
