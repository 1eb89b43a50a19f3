"""When a collector first polls the devices it gains, and the take-over seconds it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from alarmd.cluster.takeover import Takeover, slot_of
from alarmd.collector.fleet import PollerFleet
from alarmd.collector.poller import Cadence, next_slot
from alarmd.metrics import Metrics
from alarmd.testing import FakeClock

INTERVAL = 30.0


@dataclass
class _Poller:
    interval: float = INTERVAL


@dataclass
class FakeFleet:
    """The part of :class:`PollerFleet` a take-over drives: which devices run, with what cadence."""

    pollers: dict[str, Any] = field(default_factory=lambda: {f"cpe-{i:02d}": _Poller() for i in range(20)})
    running: dict[str, Cadence | None] = field(default_factory=dict)

    def resume(self, name: str, cadence: Cadence | None = None) -> None:
        self.running[name] = cadence

    def pause(self, name: str) -> None:
        self.running.pop(name, None)


def takeover(spread: float = 5.0) -> tuple[Takeover, FakeFleet, FakeClock, Metrics]:
    fleet, clock, metrics = FakeFleet(), FakeClock(), Metrics()
    return Takeover(cast(PollerFleet, fleet), metrics, clock, spread), fleet, clock, metrics


def observed(metrics: Metrics) -> tuple[float, float]:
    """(count, sum) of the inventory take-over histogram."""
    values = {
        s.name: s.value
        for family in metrics.registry.collect()
        if family.name == "alarmd_cluster_takeover_seconds"
        for s in family.samples
        if s.labels.get("group") == "inventory"
    }
    return values.get("alarmd_cluster_takeover_seconds_count", 0.0), values.get(
        "alarmd_cluster_takeover_seconds_sum", 0.0
    )


def test_every_collector_computes_the_same_slot_for_a_device() -> None:
    assert slot_of("cpe-01", INTERVAL) == slot_of("cpe-01", INTERVAL)
    slots = {slot_of(f"cpe-{i:03d}", INTERVAL) for i in range(300)}
    assert all(0 <= s < INTERVAL for s in slots)
    assert min(slots) < INTERVAL / 10 and max(slots) > INTERVAL * 9 / 10, "spread over the interval"


def test_next_slot_is_the_first_time_on_the_slot_at_or_after() -> None:
    assert next_slot(100.0, 5.0, 30.0) == 125.0
    assert next_slot(125.0, 5.0, 30.0) == 125.0
    assert next_slot(126.0, 5.0, 30.0) == 155.0


def test_devices_of_a_first_assignment_wait_for_their_slot() -> None:
    owner, fleet, clock, metrics = takeover()
    owner.start({"cpe-01", "cpe-02"}, taken_over=False)
    for name in ("cpe-01", "cpe-02"):
        cadence = fleet.running[name]
        assert cadence is not None and cadence.polled is None
        first_poll_at = clock.now() + cadence.first_delay
        assert first_poll_at == pytest.approx(next_slot(clock.now(), slot_of(name, INTERVAL), INTERVAL))
    assert owner.waiting == 0 and observed(metrics) == (0, 0)


def test_devices_taken_over_are_polled_within_the_spread_and_the_takeover_is_timed() -> None:
    owner, fleet, clock, metrics = takeover(spread=5.0)
    devices = {f"cpe-{i:02d}" for i in range(10)}
    owner.start(devices, taken_over=True)
    cadences = {name: fleet.running[name] for name in devices}
    assert all(c is not None and 0 <= c.first_delay <= 5.0 for c in cadences.values())
    assert owner.waiting == 10
    clock.advance(3.0)
    for name in sorted(devices)[:9]:
        polled = cadences[name].polled  # type: ignore[union-attr]
        assert polled is not None
        polled()
    assert observed(metrics) == (0, 0), "not until the last device brought has been polled"
    clock.advance(1.5)
    cadences[sorted(devices)[9]].polled()  # type: ignore[union-attr,misc]
    assert observed(metrics) == (1, pytest.approx(4.5))
    assert owner.waiting == 0


def test_the_spread_never_exceeds_the_interval() -> None:
    owner, fleet, _, _ = takeover(spread=600.0)
    owner.start({"cpe-01"}, taken_over=True)
    cadence = fleet.running["cpe-01"]
    assert cadence is not None and cadence.first_delay <= INTERVAL


def test_a_takeover_whose_devices_moved_on_unpolled_is_not_timed() -> None:
    owner, fleet, _clock, metrics = takeover()
    owner.start({"cpe-01", "cpe-02"}, taken_over=True)
    polled = fleet.running["cpe-01"].polled  # type: ignore[union-attr]
    owner.stop({"cpe-01", "cpe-02"})  # another rebalance took them before their first poll
    assert not fleet.running and owner.waiting == 0
    assert polled is not None
    polled()  # a poll in flight that completes after the pause
    assert observed(metrics) == (0, 0)


def test_a_device_that_moves_on_no_longer_holds_the_takeover_back() -> None:
    owner, fleet, clock, metrics = takeover()
    owner.start({"cpe-01", "cpe-02"}, taken_over=True)
    clock.advance(2.0)
    fleet.running["cpe-01"].polled()  # type: ignore[union-attr,misc]
    owner.stop({"cpe-02"})
    assert observed(metrics) == (1, pytest.approx(2.0))
