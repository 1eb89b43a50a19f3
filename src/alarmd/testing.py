"""Fakes for unit tests: a clock moved by hand, an SNMP agent in a dict, sinks and transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from alarmd.collector.snmp import SnmpError, SnmpValue, Target
from alarmd.dispatch.kafka import FencedError, OutRecord
from alarmd.dispatch.outbox import SinkError


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 1000.0

    def now(self) -> float:
        """Seconds since the epoch."""
        return self._now

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._now += seconds
        self._mono += seconds


@dataclass
class FakeSnmpClient:
    """An agent per device name: ``tables[device][column][index] = value``; ``down`` devices time out.

    With a ``clock``, each walk takes ``walk_seconds`` of it, as a real table walk takes time.
    """

    tables: dict[str, dict[str, dict[str, SnmpValue]]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    clock: FakeClock | None = None
    walk_seconds: float = 0.0

    def _table(self, target: Target) -> dict[str, dict[str, SnmpValue]]:
        if target.name in self.down or target.name not in self.tables:
            raise SnmpError("timeout", f"{target.name}: no response")
        return self.tables[target.name]

    async def get(self, target: Target, oids: Sequence[str]) -> dict[str, SnmpValue]:
        """GET scalars stored under the column ``""`` by full OID."""
        scalars = self._table(target).get("", {})
        return {oid: scalars.get(oid) for oid in oids}

    async def walk(
        self, target: Target, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, SnmpValue]]:
        """Return the stored columns."""
        table = self._table(target)
        if self.clock is not None:
            self.clock.advance(self.walk_seconds)
        return {col: dict(table.get(col, {})) for col in columns}

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class FakeSink:
    """Records what was sent; while ``failing`` every send raises like an unreachable broker."""

    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    #: ``(topic, partition, key, value)`` of what ``send_to_partitions`` delivered.
    placed: list[tuple[str, int | None, bytes, bytes | None]] = field(default_factory=list)
    failing: bool = False
    started: bool = False

    async def start(self) -> None:
        """Connect (or fail while ``failing``)."""
        if self.failing:
            raise SinkError("unavailable", "fake broker down")
        self.started = True

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Record a message (or fail while ``failing``)."""
        if self.failing:
            raise SinkError("unavailable", "fake broker down")
        self.sent.append((topic, key, value))

    async def send_to_partitions(
        self, topic: str, records: Sequence[tuple[int | None, bytes, bytes | None]]
    ) -> None:
        """Record ``(partition, key, value)`` records (or fail while ``failing``)."""
        if self.failing:
            raise SinkError("unavailable", "fake broker down")
        self.placed.extend((topic, partition, key, value) for partition, key, value in records)

    async def stop(self) -> None:
        """Disconnect."""
        self.started = False


@dataclass
class FakeTransactions:
    """A transactional producer in memory: records each committed transaction.

    While ``fenced`` every call raises ``FencedError`` (a newer holder took the id); while
    ``failing`` every commit raises ``SinkError``: the transaction is aborted (``aborted``),
    or with ``outcome_lost`` its outcome is lost (as when the abort fails too); either way
    the producer is dropped and :meth:`start` must take the id again.
    """

    transactional_id: str
    committed: list[tuple[list[OutRecord], dict[tuple[str, int], int]]] = field(default_factory=list)
    fenced: bool = False
    failing: bool = False
    outcome_lost: bool = False
    started: bool = False
    starts: int = 0
    aborted: bool = False

    @property
    def ready(self) -> bool:
        """The id is held."""
        return self.started

    async def start(self) -> None:
        """Take the id."""
        if self.fenced:
            raise FencedError(self.transactional_id)
        self.started, self.aborted = True, False
        self.starts += 1

    async def commit(
        self, records: Sequence[OutRecord], offsets: dict[tuple[str, int], int], group_id: str
    ) -> None:
        """Record one transaction (or fail while ``fenced`` or ``failing``)."""
        if self.fenced:
            raise FencedError(self.transactional_id)
        if self.failing:
            self.started, self.aborted = False, not self.outcome_lost
            raise SinkError("timeout", "fake coordinator silent")
        self.committed.append((list(records), dict(offsets)))

    async def stop(self) -> None:
        """Disconnect."""
        self.started = False
