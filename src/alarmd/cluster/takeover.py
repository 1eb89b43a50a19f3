"""When a collector polls the devices it gains, and how long each take-over took.

Every collector polls a device on the same slot within its interval (a stable hash of its
name, on the wall clock), so a device keeps its rhythm whoever polls it:

* devices gained at a collector's **first assignment** (it has just started: the group
  either starts with it or another collector polled them on their slot until now) are first
  polled on their slot, so joining costs no missed cycle and a cold start spreads the polls
  over the interval;
* devices gained **later** were held by a collector that died or left, possibly for a
  session timeout or more: they are polled at once, their first polls spread over
  ``cluster.takeover_spread`` seconds (never more than their interval), then on their slot.

A device taken over is polled one more time than its cadence asks when its last owner was
alive until the hand-over (a clean stop: with :func:`~alarmd.cluster.membership.balance` a
collector that joins takes partitions, the others never gain any); that poll gives its
rates over a shorter span, never a spike, and nothing is judged as absent.
``alarmd_cluster_takeover_seconds{group="inventory"}`` is the time from the assignment to
the first completed poll of the last device it brought.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from functools import partial

import structlog

from alarmd.clock import Clock
from alarmd.collector.fleet import PollerFleet
from alarmd.collector.poller import Cadence, next_slot
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.cluster")


def slot_of(device: str, interval: float) -> float:
    """The seconds into each interval at which every collector polls ``device``: CRC-32 of its name."""
    return zlib.crc32(b"slot/" + device.encode()) / 2**32 * interval


@dataclass
class _Pending:
    """One assignment's devices taken over, until each has been polled (or moved on unpolled)."""

    at: float
    devices: set[str] = field(default_factory=set)
    polled: int = 0


class Takeover:
    """Starts and stops a collector's pollers as its share of the location changes; times each take-over."""

    def __init__(self, fleet: PollerFleet, metrics: Metrics, clock: Clock, spread: float) -> None:
        self._fleet, self._metrics, self._clock = fleet, metrics, clock
        self.spread = spread
        self._waiting: list[_Pending] = []

    @property
    def waiting(self) -> int:
        """Devices taken over whose first poll has not completed yet."""
        return sum(len(p.devices) for p in self._waiting)

    def start(self, devices: set[str], taken_over: bool) -> None:
        """Start polling ``devices``: on their slot, or at once (spread) if ``taken_over``."""
        now = self._clock.now()
        pending = _Pending(self._clock.monotonic())
        for device in sorted(devices):
            poller = self._fleet.pollers.get(device)
            if poller is None:
                continue
            if taken_over:
                pending.devices.add(device)
                first = random.uniform(0, min(self.spread, poller.interval))  # noqa: S311 - spread, not crypto
                cadence: Cadence | None = Cadence(
                    first, slot_of(device, poller.interval), partial(self._polled, device)
                )
            else:
                cadence = self.on_slot(device, now)
            self._fleet.resume(device, cadence)
        if pending.devices:
            self._waiting.append(pending)

    def on_slot(self, device: str, now: float | None = None) -> Cadence | None:
        """The cadence of a device nobody polled off its slot: its first poll on its next slot."""
        poller = self._fleet.pollers.get(device)
        if poller is None:
            return None
        now = self._clock.now() if now is None else now
        slot = slot_of(device, poller.interval)
        return Cadence(next_slot(now, slot, poller.interval) - now, slot)

    def stop(self, devices: set[str]) -> None:
        """Stop polling ``devices`` (another collector has them now); a take-over no longer waits for them."""
        for device in devices:
            self._fleet.pause(device)
            for pending in self._waiting:
                pending.devices.discard(device)
        self._settle()

    def _polled(self, device: str) -> None:
        for pending in self._waiting:
            if device in pending.devices:
                pending.devices.discard(device)
                pending.polled += 1
        self._settle()

    def _settle(self) -> None:
        """Observe the take-overs whose devices have all been polled; forget those all moved on unpolled."""
        done = [p for p in self._waiting if not p.devices]
        if not done:
            return
        self._waiting = [p for p in self._waiting if p.devices]
        took = self._clock.monotonic()
        for pending in done:
            if pending.polled:
                self._metrics.takeover_seconds.labels("inventory").observe(took - pending.at)
                log.info(
                    "takeover_polled",
                    group="inventory",
                    devices=pending.polled,
                    seconds=round(took - pending.at, 3),
                )
