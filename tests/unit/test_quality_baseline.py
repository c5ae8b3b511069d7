"""The seasonal robust statistics behind volume, null_rate and distribution (pure functions)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shopstream.quality.baseline import count_band, judge_counts, judge_rates, psi
from shopstream.quality.windows import last_complete

BERLIN = ZoneInfo("Europe/Berlin")


def weekly_hours(
    weeks: int, *, level: float = 400.0, growth: float = 0.0, noise: float = 0.1, seed: int = 1
) -> list[float | None]:
    """Hourly counts with a night trough, an evening peak, busier weekends, weekly growth and
    multiplicative noise, then Poisson counting noise; index 0 = the newest hour."""
    rng = random.Random(seed)
    values = []
    for h in range(weeks * 168):
        hour, day = h % 24, (h // 24) % 7
        shape = 0.15 + math.sin(math.pi * max(0, hour - 5) / 19) ** 2
        rate = level * shape * (1.35 if day >= 5 else 1.0) * (1 + growth) ** (h / 168)
        rate *= math.exp(rng.gauss(0, noise))
        # Poisson by normal approximation (counts here are large enough)
        values.append(max(0.0, round(rng.gauss(rate, math.sqrt(rate)))))
    return list(reversed(values))


def test_a_normal_hour_scores_small_and_the_band_holds_it() -> None:
    series = weekly_hours(6)
    v = judge_counts(series, period=168, weeks=4)
    assert v.expected is not None and abs(v.score) < 3
    low, high = count_band(v, 4.0, 0.2)
    assert low < series[0] < high  # type: ignore[operator]
    assert v.training > 300  # the spread is learnt from hundreds of recent errors


@pytest.mark.parametrize("factor", [0.3, 3.0])
def test_a_drop_or_spike_scores_far_out(factor: float) -> None:
    series = weekly_hours(6)
    series[0] = (series[0] or 0) * factor
    v = judge_counts(series, period=168, weeks=4)
    assert abs(v.score) > 6
    assert (v.score < 0) == (factor < 1)


def test_growth_is_followed_by_the_level_adjustment() -> None:
    series = weekly_hours(6, growth=0.15, noise=0.03)
    v = judge_counts(series, period=168, weeks=4)
    assert v.expected is not None
    # Without the level factors the median of the four previous weeks is ~25% low.
    assert abs(v.expected / series[0] - 1) < 0.1  # type: ignore[operator]
    assert all(f > 1.05 for f in v.levels)
    assert abs(v.score) < 4


def test_the_window_is_not_in_its_own_baseline() -> None:
    series = weekly_hours(6)
    clean = judge_counts(series, period=168, weeks=4)
    series[0] = 50_000.0
    spiked = judge_counts(series, period=168, weeks=4)
    assert spiked.expected == clean.expected


def test_small_counts_get_a_poisson_floor() -> None:
    # Three rows an hour expected: eight is counting noise, not an anomaly.
    series: list[float | None] = [3.0] * (6 * 168)
    series[0] = 8.0
    v = judge_counts(series, period=168, weeks=4)
    assert v.extra == pytest.approx(0.02)  # no noise beyond counting, the floor
    assert abs(v.score) < 4


def test_history_is_measured_from_the_oldest_bucket_with_data() -> None:
    series = weekly_hours(6)[: 2 * 168] + [None] * (4 * 168)
    v = judge_counts(series, period=168, weeks=4)
    assert v.history_weeks == pytest.approx(2, abs=0.01)
    assert len(v.baseline) == 1


def test_rates_pool_the_past_and_catch_a_rise() -> None:
    rng = random.Random(2)
    rows = [float(rng.randint(50, 1500)) for _ in range(6 * 168)]
    hits: list[float | None] = [
        float(sum(rng.random() < 0.05 for _ in range(int(n)))) for n in rows
    ]
    rows_: list[float | None] = list(rows)
    normal = judge_rates(hits, rows_, period=168, weeks=4)
    assert normal.expected == pytest.approx(0.05, abs=0.02)
    assert normal.score < 4
    hits[0] = rows[0] * 0.6
    spiked = judge_rates(hits, rows_, period=168, weeks=4)
    assert spiked.score > 10


def test_psi() -> None:
    assert psi([100, 100, 100], [200, 200, 200])[0] == pytest.approx(0, abs=1e-9)
    index, parts = psi([800, 100, 100], [333, 333, 334])
    assert index > 0.25
    assert max(range(3), key=lambda i: parts[i]) in (0, 1, 2)


def test_last_complete_windows_count_local_wall_clock_days() -> None:
    # 25 October 2026: Berlin's clocks go back, the day has 25 hours.
    now = datetime(2026, 10, 26, 0, 30, tzinfo=BERLIN).astimezone(UTC)
    day = last_complete(now, BERLIN, "day")
    assert day.label == "Sun 25 Oct" and day.hours == 25
    hour = last_complete(now, BERLIN, "hour")
    assert hour.label == "23:00-00:00 Sun 25 Oct" and hour.hours == 1


def session_hours(weeks: int, seed: int = 3) -> tuple[list[float | None], list[float | None]]:
    """Events and events without a user per hour, newest first. Events come in sessions of ~20,
    and a session is signed in or not as a whole (30% anonymous): a night hour of four sessions
    swings between 0% and 100% anonymous, far beyond what its 80 rows' binomial noise says."""
    rng = random.Random(seed)
    rows: list[float | None] = []
    nulls: list[float | None] = []
    for h in range(weeks * 168):
        hour = h % 24
        sessions = max(1, round(rng.gauss(1, 0.1) * (3 + 60 * math.sin(math.pi * hour / 24) ** 2)))
        sizes = [rng.randint(5, 35) for _ in range(sessions)]
        rows.append(float(sum(sizes)))
        nulls.append(float(sum(n for n in sizes if rng.random() < 0.3)))
    return rows[::-1], nulls[::-1]


def test_session_clustered_rates_raise_no_alarm_at_any_hour_of_a_week() -> None:
    rows, nulls = session_hours(6)
    alarms = []
    for h in range(168):
        v = judge_rates(nulls[h:], rows[h:], period=168, weeks=4)
        if v.score >= 4 and v.observed - (v.expected or 0) >= 0.05:  # null_rate's warn rule
            alarms.append((h, rows[h], round(v.observed, 2), round(v.expected or 0, 2)))
    assert not alarms
    v = judge_rates(nulls, rows, period=168, weeks=4)
    assert v.dispersion > 5  # about the mean session size


def test_a_real_rise_still_stands_out_of_session_noise() -> None:
    rows, nulls = session_hours(6)
    busy = max(range(24), key=lambda h: rows[h] or 0)
    nulls[busy] = (rows[busy] or 0) * 0.9
    v = judge_rates(nulls[busy:], rows[busy:], period=168, weeks=4)
    assert v.score > 6


@pytest.mark.parametrize("days", [1, 4, 5, 7])
def test_a_lasting_drop_keeps_alarming_for_a_week(days: int) -> None:
    # A tracker broken for days: the level adjustment must not follow the drop itself (it used
    # to rescale by the seven days just before the window, so from day 4 the drop was "normal").
    series = weekly_hours(10, level=2000.0, growth=0.03, noise=0.05)
    for i in range(days * 24):
        series[i] = (series[i] or 0.0) * 0.5
    v = judge_counts(series, period=168, weeks=4)
    assert v.score < -6, (days, v.score, v.levels)  # the volume check's fail_score
    assert all(0.95 < f / 1.03**k < 1.05 for k, f in enumerate(v.levels, 1)), v.levels


@pytest.mark.parametrize("growth", [0.03, 0.08])
def test_steady_growth_raises_no_alarm_at_any_hour_of_a_week(growth: float) -> None:
    series = weekly_hours(10, growth=growth, noise=0.05, seed=5)
    worst = max(abs(judge_counts(series[h:], period=168, weeks=4).score) for h in range(0, 168, 7))
    assert worst < 4, worst
