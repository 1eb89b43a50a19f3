"""A location's devices shared out among its collectors by the partitions of the location's inventory topic.

Each device belongs to one partition (a stable hash of its name); a collector polls the
devices of the partitions the consumer group assigned to it.  A rebalance hands over
only what moved: devices that stay keep their schedule, devices that leave stop, devices
that arrive start (their first poll within one interval, so at most one cycle is missed
and no stale value is ever judged as absent data).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import structlog

log = structlog.get_logger("alarmd.cluster")


def partition_of(device: str, partitions: int) -> int:
    """The inventory partition of a device: CRC-32 of its name modulo the partition count."""
    return zlib.crc32(device.encode()) % partitions


class DeviceShare:
    """Which devices of a location this collector polls, given the partitions it owns."""

    def __init__(
        self,
        devices: Iterable[str],
        partitions: int,
        start: Callable[[str], None],
        stop: Callable[[str], None],
    ) -> None:
        self.partitions = partitions
        self._by_partition: dict[int, list[str]] = {}
        self._index(devices)
        self._start, self._stop = start, stop
        self.owned_partitions: frozenset[int] = frozenset()
        self.owned: set[str] = set()
        self.rebalances = 0

    def _index(self, devices: Iterable[str]) -> None:
        self._by_partition = {}
        for device in sorted(devices):
            self._by_partition.setdefault(partition_of(device, self.partitions), []).append(device)

    def reindex(self, devices: Iterable[str]) -> None:
        """Take a reloaded inventory: the owned partitions now hold these devices (the caller starts them)."""
        self._index(devices)
        self.owned = self.devices_of(self.owned_partitions)

    def devices_of(self, partitions: Iterable[int]) -> set[str]:
        """The devices that the given partitions hold."""
        return {d for p in partitions for d in self._by_partition.get(p, ())}

    def assign(self, partitions: Iterable[int]) -> tuple[set[str], set[str]]:
        """Take this assignment: stop the devices that left, start those that came; ``(started, stopped)``."""
        self.rebalances += 1
        self.owned_partitions = frozenset(partitions)
        wanted = self.devices_of(self.owned_partitions)
        stopped, started = self.owned - wanted, wanted - self.owned
        for device in sorted(stopped):
            self._stop(device)
        for device in sorted(started):
            self._start(device)
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
        for device in sorted(stopped):
            self._stop(device)
        return stopped
