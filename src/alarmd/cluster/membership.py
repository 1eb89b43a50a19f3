"""A location's devices shared out among its collectors by the partitions of the location's inventory topic.

Each device belongs to one partition (a stable hash of its name); a collector polls the
devices of the partitions the consumer group assigned to it.  A rebalance hands over
only what moved: devices that stay keep their schedule, devices that leave stop, devices
that arrive start (see :mod:`alarmd.cluster.takeover` for when they are first polled).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping

import structlog

from alarmd.clock import Clock
from alarmd.cluster.takeover import Takeover
from alarmd.collector.fleet import PollerFleet
from alarmd.config import ClusterConfig
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.cluster")


def partition_of(device: str, partitions: int) -> int:
    """The inventory partition of a device: CRC-32 of its name modulo the partition count."""
    return zlib.crc32(device.encode()) % partitions


def balance(weights: Mapping[int, int], held: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """Partitions shared out among members so that each gets about an even share of their weight.

    A member keeps the partitions it ``held`` (heaviest first) as long as they fit in its
    even share, so a rebalance moves only what must move: a dead member's partitions, or
    what the others give up to a new member.  The rest go heaviest first to the member
    with the least weight (then the fewest partitions, then the first name).
    """
    names = sorted(held)
    out: dict[str, set[int]] = {name: set() for name in names}
    if not names:
        return out
    even = sum(weights.values()) / len(names)
    load = dict.fromkeys(names, 0)
    free = set(weights)
    heaviest = lambda p: (-weights[p], p)  # noqa: E731
    for name in names:
        for p in sorted((p for p in held[name] if p in free), key=heaviest):
            if load[name] + weights[p] <= even:
                out[name].add(p)
                load[name] += weights[p]
                free.discard(p)
    for p in sorted(free, key=heaviest):
        name = min(names, key=lambda n: (load[n], len(out[n]), n))
        out[name].add(p)
        load[name] += weights[p]
    return out


class DeviceShare:
    """Which devices of a location this collector polls, given the partitions it owns."""

    def __init__(
        self,
        devices: Iterable[str],
        partitions: int,
        start: Callable[[set[str], bool], None],
        stop: Callable[[set[str]], None],
    ) -> None:
        """Share ``devices`` by ``partitions``; ``start`` and ``stop`` hear which ones this collector polls.

        ``start(devices, taken_over)`` starts polling devices (``taken_over``: not at the first
        assignment, so another collector polled them until now); ``stop(devices)`` stops them.
        """
        self.partitions = partitions
        self._by_partition: dict[int, list[str]] = {}
        self._index(devices)
        self._start, self._stop = start, stop
        self.owned_partitions: frozenset[int] = frozenset()
        self.owned: set[str] = set()
        self.rebalances = 0

    #: Who starts and stops the pollers, when built by :meth:`polled_by`.
    takeover: Takeover

    @classmethod
    def polled_by(
        cls, fleet: PollerFleet, cluster: ClusterConfig, metrics: Metrics, clock: Clock, *, slots: bool
    ) -> DeviceShare:
        """A share of ``fleet`` whose pollers a :class:`Takeover` starts (on their slot, or at once).

        With ``slots`` (a collector) a device added by a reload starts on its slot too.
        """
        takeover = Takeover(fleet, metrics, clock, cluster.takeover_spread)
        share = cls(fleet.pollers, cluster.inventory_partitions, takeover.start, takeover.stop)
        share.takeover = takeover
        if slots:
            fleet.cadence = takeover.on_slot
        return share

    def _index(self, devices: Iterable[str]) -> None:
        self._by_partition = {}
        for device in sorted(devices):
            self._by_partition.setdefault(partition_of(device, self.partitions), []).append(device)

    def reindex(self, devices: Iterable[str]) -> None:
        """Take a reloaded inventory: the owned partitions now hold these devices (the caller starts them)."""
        self._index(devices)
        self.owned = self.devices_of(self.owned_partitions)

    def balance(
        self,
        partitions: Iterable[int],
        held: Mapping[str, Iterable[int]],
        told: Mapping[str, Mapping[int, float]] | None = None,
    ) -> dict[str, set[int]]:
        """The topic's ``partitions`` shared among ``held``'s members by their devices (:func:`balance`).

        Collectors tell no measures (``told``): a partition weighs by its devices alone.
        """
        partitions = list(partitions)  # an empty partition weighs a little, so partitions are shared too
        count = len(partitions)
        return balance({p: len(self._by_partition.get(p, ())) * count + 1 for p in partitions}, held)

    def devices_of(self, partitions: Iterable[int]) -> set[str]:
        """The devices that the given partitions hold."""
        return {d for p in partitions for d in self._by_partition.get(p, ())}

    def assign(self, partitions: Iterable[int]) -> tuple[set[str], set[str]]:
        """Take this assignment: stop the devices that left, start those that came; ``(started, stopped)``."""
        self.rebalances += 1
        self.owned_partitions = frozenset(partitions)
        wanted = self.devices_of(self.owned_partitions)
        stopped, started = self.owned - wanted, wanted - self.owned
        if stopped:
            self._stop(stopped)
        if started:
            self._start(started, self.rebalances > 1)
        self.owned = wanted
        log.info(
            "devices_assigned",
            partitions=sorted(self.owned_partitions),
            devices=len(wanted),
            started=len(started),
            stopped=len(stopped),
        )
        return started, stopped

    def release(self) -> set[str]:
        """Give everything up (leaving the group): stop every device; the ones stopped."""
        stopped, self.owned = self.owned, set()
        self.owned_partitions = frozenset()
        if stopped:
            self._stop(stopped)
        return stopped
