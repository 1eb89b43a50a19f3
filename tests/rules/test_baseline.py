from __future__ import annotations

import math
import random
import statistics
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmd.rules import baseline as baseline_module
from alarmd.rules.baseline import BaselineConfig, RobustBaseline

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
SLOT = 300
# Monday 2024-01-01 00:00 in China (UTC+8), as epoch seconds.
MONDAY = 1_704_067_200 - 8 * HOUR
FIXED_THRESHOLD = 80.0  # the plain bandwidth-occupancy alarm the fluctuation warning must beat


def local(week: int, day: int, hour: float) -> float:
    """Epoch seconds of ``hour`` o'clock China time on ``day`` (0 = Monday) of ``week``."""
    return MONDAY + week * WEEK + day * DAY + hour * HOUR


def office_line(rng: random.Random) -> Callable[[float], float]:
    """Utilisation of a busy office line: daytime hump on weekdays, near idle at weekends, +-1.5 jitter."""

    def util(at: float) -> float:
        since = at - MONDAY
        day = int(since // DAY) % 7
        hour = (since % DAY) / HOUR
        weekend = day >= 5
        level = 3.0 if weekend else 5.0 + 15.0 * max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0))
        return level + rng.uniform(-1.5, 1.5)

    return util


def feed(base: RobustBaseline, key: str, signal: Callable[[float], float], start: float, end: float) -> None:
    for at in range(int(start), int(end), SLOT):
        base.observe(key, signal(at), at)


def test_defaults_match_the_operator() -> None:
    cfg = BaselineConfig()
    assert (cfg.bucket, cfg.utc_offset_hours, cfg.history, cfg.resolution) == ("hour_of_week", 8.0, 4, 300)
    assert (cfg.min_history, cfg.mad_floor) == (6, 1.0)
    assert (cfg.buckets, cfg.slots_per_bucket, cfg.slots_per_series) == (168, 48, 168 * 48)


def test_own_pattern_scores_near_zero_and_a_jump_scores_far_before_the_fixed_threshold() -> None:
    base = RobustBaseline()
    line = office_line(random.Random(7))
    feed(base, "cust-a/wan", line, local(0, 0, 0), local(4, 0, 0))

    # Week 5 follows the usual pattern, weekends included: the baseline calls it ordinary.
    scores = []
    for at in range(int(local(4, 0, 0)), int(local(4, 6, 24)), SLOT):
        score = base.observe("cust-a/wan", line(at), at)
        assert score is not None
        scores.append(abs(score))
    assert statistics.median(scores) < 1.0
    assert max(scores) < 3.5

    # Week 6, Tuesday: normal until 10:00, then the line that sits near 20% at 10:00 jumps to 60%.
    feed(base, "cust-a/wan", line, local(5, 0, 0), local(5, 1, 10))
    expected = base.expected("cust-a/wan", local(5, 1, 10))
    assert expected is not None
    median, spread = expected
    assert 16.0 < median < 21.0
    assert spread < 5.0
    jump = base.observe("cust-a/wan", 60.0, local(5, 1, 10))
    assert jump is not None
    assert jump > 4.0
    assert FIXED_THRESHOLD > 60.0  # the fixed threshold would still be silent


def test_hour_of_week_keeps_weekends_apart_from_weekdays() -> None:
    base = RobustBaseline()
    line = office_line(random.Random(11))
    feed(base, "k", line, local(0, 0, 0), local(4, 0, 0))
    saturday = base.expected("k", local(4, 5, 10))
    monday = base.expected("k", local(4, 0, 10))
    assert saturday is not None
    assert monday is not None
    assert saturday[0] == pytest.approx(3.0, abs=1.0)
    assert monday[0] == pytest.approx(18.0, abs=2.0)
    score = base.observe("k", 18.0, local(4, 5, 10))  # a weekday level on a Saturday is unusual
    assert score is not None
    assert score > 4.0


def test_buckets_follow_local_clock_hours() -> None:
    # Whole-hour offsets only relabel buckets; a half-hour offset moves where each hour starts.
    china = RobustBaseline(BaselineConfig(bucket="hour_of_day", history=2, min_history=7))
    india = RobustBaseline(
        BaselineConfig(bucket="hour_of_day", history=2, min_history=7, utc_offset_hours=5.5)
    )
    for base in (china, india):
        feed(base, "k", lambda at: 40.0, local(0, 0, 10), local(0, 0, 11))  # 10:00-11:00 China time
    assert china.expected("k", local(0, 1, 10.75)) == (40.0, 1.0)
    assert india.expected("k", local(0, 1, 10.75)) is None  # 08:15 in India: only 08:00-08:30 was seen


def test_no_score_until_min_history_closed_slots() -> None:
    base = RobustBaseline()  # min_history=6 five-minute slots in the bucket
    start = local(0, 2, 9)
    scores = [base.observe("k", 30.0, start + i * 10) for i in range(6 * 30)]  # 10 s polls, 6 slots
    assert scores == [None] * (6 * 30)
    seventh = base.observe("k", 30.0, start + 6 * SLOT)
    assert seventh == 0.0
    # A new hour is a new bucket: in the line's first week it waits for half an hour again.
    assert base.observe("k", 30.0, local(0, 2, 10)) is None


def test_ten_second_and_five_minute_pollers_build_the_same_baseline() -> None:
    rng = random.Random(3)
    base = RobustBaseline()
    start, end = local(0, 0, 0), local(2, 0, 0)
    for slot_start in range(int(start), int(end), SLOT):
        level = 20.0 + 10.0 * math.sin(2 * math.pi * (slot_start - start) / DAY)
        # What the line carried in each 10 s of this 5 minutes; a 5-minute counter delta sees their mean.
        tens = [max(0.0, level + rng.gauss(0.0, 4.0)) for _ in range(30)]
        for i, value in enumerate(tens):
            base.observe("fast", value, slot_start + 10 * i)
        base.observe("slow", sum(tens) / len(tens), slot_start)

    for hours in range(0, 7 * 24, 5):
        at = local(2, 0, 0) + hours * HOUR
        fast, slow = base.expected("fast", at), base.expected("slow", at)
        assert fast is not None
        assert slow is not None
        assert fast == pytest.approx(slow, rel=1e-9)
    fast_score = base.observe("fast", 55.0, local(2, 0, 9))
    slow_score = base.observe("slow", 55.0, local(2, 0, 9))
    assert fast_score == pytest.approx(slow_score, rel=1e-9)


def test_flat_history_uses_mad_floor() -> None:
    at = local(0, 0, 9)
    for floor, expected_score in [(1.0, 1.5), (0.5, 3.0)]:
        base = RobustBaseline(BaselineConfig(mad_floor=floor))
        for i in range(11):
            base.observe("k", 20.0, at + i * SLOT)
        assert base.expected("k", at + 11 * SLOT) == (20.0, floor)
        assert base.observe("k", 21.5, at + 11 * SLOT) == pytest.approx(expected_score)


def test_spread_above_the_floor_is_1_4826_mad() -> None:
    base = RobustBaseline(BaselineConfig(min_history=5))
    at = local(0, 0, 9)
    for i, value in enumerate([10.0, 12.0, 14.0, 16.0, 100.0]):  # one outlier barely moves it
        base.observe("k", value, at + i * SLOT)
    expected = base.expected("k", at + 5 * SLOT)
    assert expected is not None
    assert expected[0] == 14.0
    assert expected[1] == pytest.approx(2.0 * 1.4826)


def test_memory_per_series_stays_bounded_over_many_weeks() -> None:
    base = RobustBaseline()
    line = office_line(random.Random(5))
    tracemalloc.start()
    try:
        only_baseline = [tracemalloc.Filter(True, baseline_module.__file__)]
        feed(base, "k", line, local(0, 0, 0), local(5, 0, 0))
        after_5 = sum(
            s.size for s in tracemalloc.take_snapshot().filter_traces(only_baseline).statistics("filename")
        )
        feed(base, "k", line, local(5, 0, 0), local(10, 0, 0))
        after_10 = sum(
            s.size for s in tracemalloc.take_snapshot().filter_traces(only_baseline).statistics("filename")
        )
    finally:
        tracemalloc.stop()
    ring_bytes = 4 * base.config.slots_per_series  # slot means are 32-bit floats
    assert ring_bytes <= after_5 < ring_bytes + 4096
    assert after_10 <= after_5 + 512


def test_a_long_gap_leaves_no_stale_history() -> None:
    base = RobustBaseline()
    feed(base, "k", lambda at: 20.0, local(0, 0, 0), local(4, 0, 0))
    assert base.expected("k", local(4, 0, 10)) == (20.0, 1.0)
    assert base.expected("k", local(6, 0, 10)) is not None  # two weeks of the four are still in the window
    assert base.expected("k", local(8, 0, 10)) is None  # looking past the window: all of it is stale
    assert base.observe("k", 90.0, local(9, 0, 10)) is None  # the poller came back after five silent weeks
    assert base.observe("k", 90.0, local(9, 0, 10) + 10 * SLOT) is None  # four closed slots so far


def test_late_samples_are_scored_but_not_recorded() -> None:
    base = RobustBaseline()
    at = local(0, 0, 9)
    for i in range(10):
        base.observe("k", 20.0, at + i * SLOT)
    before = base.expected("k", at + 9 * SLOT)
    assert base.observe("k", 99.0, at + 2 * SLOT) == pytest.approx(79.0)
    assert base.expected("k", at + 9 * SLOT) == before


def test_non_finite_values_are_ignored_and_forget_drops_the_series() -> None:
    base = RobustBaseline()
    at = local(0, 0, 9)
    for i in range(8):
        base.observe("k", 20.0, at + i * SLOT)
    assert base.observe("k", math.nan, at + 8 * SLOT) is None
    assert base.observe("k", math.inf, at + 8 * SLOT) is None
    assert base.expected("k", at + 8 * SLOT) == (20.0, 1.0)
    assert len(base) == 1
    base.forget("k")
    base.forget("never-seen")
    assert len(base) == 0
    assert base.expected("k", at + 8 * SLOT) is None
    with pytest.raises(ValueError, match="finite"):
        base.observe("k", 1.0, math.nan)


@pytest.mark.parametrize(
    "bad",
    [
        {"bucket": "day_of_month"},
        {"utc_offset_hours": 15},
        {"utc_offset_hours": 1e-9},
        {"history": 0},
        {"resolution": 0},
        {"resolution": 7},
        {"min_history": 0},
        {"min_history": 49},
        {"mad_floor": 0.0},
        {"mad_floor": math.nan},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        BaselineConfig(**bad)  # type: ignore[arg-type]


# Property tests: a small hour_of_day baseline over random poll times and values.
SMALL = BaselineConfig(bucket="hour_of_day", history=1, min_history=2)
samples = st.lists(
    st.tuples(st.integers(0, 1200), st.floats(-1000, 1000, allow_nan=False)),
    min_size=1,
    max_size=120,
)


def run(
    steps: list[tuple[int, float]], start: int, shift: float = 0.0, key: str = "k"
) -> tuple[RobustBaseline, list[float | None]]:
    base = RobustBaseline(SMALL)
    at, out = start, []
    for gap, value in steps:
        at += gap
        out.append(base.observe(key, value + shift, at))
    return base, out


@settings(max_examples=200, deadline=None)
@given(samples, st.integers(0, 2_000_000_000))
def test_scores_are_finite_and_deterministic(steps: list[tuple[int, float]], start: int) -> None:
    _, first = run(steps, start)
    _, second = run(steps, start)
    assert first == second
    assert all(math.isfinite(s) for s in first if s is not None)


@settings(max_examples=200, deadline=None)
@given(samples, samples, st.integers(0, 2_000_000_000), st.randoms(use_true_random=False))
def test_other_keys_do_not_change_a_series(
    steps: list[tuple[int, float]], noise: list[tuple[int, float]], start: int, rng: random.Random
) -> None:
    _, alone = run(steps, start)
    base = RobustBaseline(SMALL)
    mine = list(steps)
    theirs = list(noise)
    at_mine = at_theirs = start
    mixed: list[float | None] = []
    while mine or theirs:
        if mine and (not theirs or rng.random() < 0.5):
            gap, value = mine.pop(0)
            at_mine += gap
            mixed.append(base.observe("k", value, at_mine))
        else:
            gap, value = theirs.pop(0)
            at_theirs += gap
            base.observe(("other", 1), value, at_theirs)
    assert mixed == alone


@settings(max_examples=200, deadline=None)
@given(samples, st.integers(0, 2_000_000_000), st.floats(-1000, 1000))
def test_adding_a_constant_to_history_and_value_keeps_the_score(
    steps: list[tuple[int, float]], start: int, shift: float
) -> None:
    _, plain = run(steps, start)
    _, moved = run(steps, start, shift)
    assert [s is None for s in plain] == [s is None for s in moved]
    for a, b in zip(plain, moved, strict=True):
        if a is not None and b is not None:
            assert b == pytest.approx(a, rel=1e-4, abs=1e-3)  # slot means are stored as 32-bit floats
