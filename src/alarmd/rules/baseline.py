"""Per-series robust baseline that scores how far a sample strays from its line's own normal pattern.

How it works, for the NOC: "normal" for a line is what that same line did at the same hour of the
week (Monday 10:00-11:00 local time is compared with earlier Mondays 10:00-11:00, never with Sunday
night) over the last ``history`` weeks; ``bucket="hour_of_day"`` pools all days instead, for lines
without a weekday/weekend rhythm. Raw polls are first averaged into fixed ``resolution`` slots (5
minutes by default, the operator's reporting granularity), so a 10-second poller and a 5-minute
poller build the same baseline; with the defaults each hour-of-week keeps up to 4 weeks x 12 slot
averages. A sample's score is a robust z-score, ``(value - median) / max(1.4826 x MAD, mad_floor)``:
the median and the median absolute deviation (MAD) are used instead of mean and standard deviation
because a few past outages, bursts or missing polls barely move them, and ``1.4826 x MAD`` equals
one standard deviation for well-behaved data, so a score of 4 means "four ordinary wiggles away
from usual". ``mad_floor`` (in the metric's own units, e.g. 1.0 percentage point) stops a line
that was perfectly flat from turning every tiny wiggle into an enormous score. No score is given
until the hour bucket holds ``min_history`` closed slots (default 6, i.e. half an hour of data for
that hour); set it to 12 x k to require k past weeks (or days) first. Tuning: raise the score
threshold in the rule (4 is a sane start) or ``mad_floor`` for fewer warnings; lengthen
``history`` for a steadier but slower-adapting baseline. ``utc_offset_hours`` (default +8, China
time, fixed, no daylight saving) sets where local hours begin; it only changes results where local
hours do not start on a UTC hour (e.g. +5.5). Memory per series is fixed: buckets x history x
(slots per hour) 32-bit floats (about 32 KiB with these defaults; the shipped FluctuationWarning
rule uses 15-minute slots, about 11 KiB), plus the open slot. Samples whose time falls before the
slot being filled are scored but not recorded, non-finite values are ignored (``None``), and a gap
in polling leaves holes rather than stale data.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

MAD_TO_SIGMA = 1.4826
"""Factor that turns a median absolute deviation into a standard deviation for normal data."""

_HOUR = 3600
_BUCKETS = {"hour_of_week": 168, "hour_of_day": 24}


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineConfig:
    """How a robust baseline buckets, aggregates and keeps the history of one metric."""

    bucket: Literal["hour_of_week", "hour_of_day"] = "hour_of_week"
    utc_offset_hours: float = 8.0
    history: int = 4
    resolution: int = 300
    min_history: int = 6
    mad_floor: float = 1.0

    def __post_init__(self) -> None:
        if self.bucket not in _BUCKETS:
            raise ValueError(f"bucket must be one of {sorted(_BUCKETS)}, not {self.bucket!r}")
        offset = self.utc_offset_hours * _HOUR
        if not (-14 * _HOUR <= offset <= 14 * _HOUR) or offset != int(offset):
            raise ValueError(
                f"utc_offset_hours must be whole seconds within +-14 h, not {self.utc_offset_hours}"
            )
        if self.history < 1:
            raise ValueError(f"history must be at least 1 period, not {self.history}")
        if self.resolution < 1 or _HOUR % self.resolution:
            raise ValueError(
                f"resolution must be a whole number of seconds dividing 3600, not {self.resolution}"
            )
        if not 1 <= self.min_history <= self.slots_per_bucket:
            raise ValueError(
                f"min_history must be between 1 and {self.slots_per_bucket} "
                f"(history x slots per hour), not {self.min_history}"
            )
        if not (math.isfinite(self.mad_floor) and self.mad_floor > 0):
            raise ValueError(f"mad_floor must be a positive number, not {self.mad_floor}")

    @property
    def buckets(self) -> int:
        """Number of buckets in one period: 168 for hour_of_week, 24 for hour_of_day."""
        return _BUCKETS[self.bucket]

    @property
    def slots_per_bucket(self) -> int:
        """Most closed slot values one bucket can hold: history x slots per hour."""
        return self.history * (_HOUR // self.resolution)

    @property
    def slots_per_series(self) -> int:
        """Size of the fixed ring of slot values kept for each series."""
        return self.buckets * self.slots_per_bucket


class _Series:
    """Ring of closed slot means plus the slot still being filled, for one key."""

    __slots__ = ("cache_slot", "cache_stats", "count", "open_slot", "ring", "total")

    def __init__(self, ring: array[float], slot: int) -> None:
        self.ring = ring
        self.open_slot = slot
        self.total = 0.0
        self.count = 0
        self.cache_slot: int | None = None
        self.cache_stats: tuple[float, float] | None = None


class RobustBaseline:
    """Robust per-series baselines (median and MAD per hour bucket) that score each new sample."""

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config if config is not None else BaselineConfig()
        cfg = self.config
        self._offset = int(cfg.utc_offset_hours * _HOUR)
        self._per_hour = _HOUR // cfg.resolution
        self._size = cfg.slots_per_series
        per_period = cfg.buckets * self._per_hour
        # Where each bucket's slot values start in the ring, one run of `_per_hour` cells per period.
        self._starts = [
            tuple(k * per_period + b * self._per_hour for k in range(cfg.history)) for b in range(cfg.buckets)
        ]
        self._blank = array("f", [math.nan]) * self._size
        self._series: dict[Hashable, _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, key: Hashable, value: float, at: float) -> float | None:
        """Score ``value`` at epoch ``at`` against ``key``'s history, then record it; None while too short."""
        slot = self._slot(at)
        if not math.isfinite(value):
            return None
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._blank[:], slot)
        elif slot > series.open_slot:
            self._close(series, slot)
        bucket = self._bucket(slot)
        if slot == series.open_slot:
            if series.cache_slot != slot:  # the ring only changes when a slot closes
                series.cache_slot = slot
                series.cache_stats = self._stats(series, bucket, slot)
            stats = series.cache_stats
            series.total += value
            series.count += 1
        else:  # a late sample: its slot is already closed, so it is scored but not recorded
            stats = self._stats(series, bucket, series.open_slot)
        if stats is None:
            return None
        median, spread = stats
        return (value - median) / spread

    def expected(self, key: Hashable, at: float) -> tuple[float, float] | None:
        """The (median, spread) that a sample of ``key`` at epoch ``at`` would be scored against, if any."""
        slot = self._slot(at)
        series = self._series.get(key)
        if series is None:
            return None
        return self._stats(series, self._bucket(slot), max(slot, series.open_slot))

    def forget(self, key: Hashable) -> None:
        """Drop everything kept for ``key`` (a deleted circuit or interface); unknown keys are ignored."""
        self._series.pop(key, None)

    def _slot(self, at: float) -> int:
        if not math.isfinite(at):
            raise ValueError(f"sample time must be finite epoch seconds, not {at}")
        return math.floor((at + self._offset) / self.config.resolution)

    def _bucket(self, slot: int) -> int:
        return (slot // self._per_hour) % self.config.buckets

    def _close(self, series: _Series, slot: int) -> None:
        """Move the open slot's mean into the ring and blank the cells of slots nobody polled."""
        ring, size, last = series.ring, self._size, series.open_slot
        ring[last % size] = series.total / series.count if series.count else math.nan
        for missed in range(last + 1, min(slot, last + 1 + size)):
            ring[missed % size] = math.nan
        series.open_slot, series.total, series.count = slot, 0.0, 0

    def _stats(self, series: _Series, bucket: int, horizon: int) -> tuple[float, float] | None:
        """Median and spread of ``bucket``'s slot values in the ``size`` slots before ``horizon``."""
        ring, per_hour, size = series.ring, self._per_hour, self._size
        values: list[float] = []
        if horizon == series.open_slot:
            for start in self._starts[bucket]:
                values.extend(x for x in ring[start : start + per_hour] if not math.isnan(x))
        else:  # looking ahead of the data: cells that would have left the window, plus the open slot
            newest = series.open_slot - 1
            oldest = horizon - size
            for start in self._starts[bucket]:
                for cell in range(start, start + per_hour):
                    x = ring[cell]
                    if not math.isnan(x) and newest - (newest - cell) % size >= oldest:
                        values.append(x)
            if series.count and series.open_slot >= oldest and self._bucket(series.open_slot) == bucket:
                values.append(series.total / series.count)
        if len(values) < self.config.min_history:
            return None
        median = _median(values)
        mad = _median([abs(x - median) for x in values])
        return median, max(MAD_TO_SIGMA * mad, self.config.mad_floor)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2
