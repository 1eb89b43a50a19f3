"""The correlators' events partitions shared out by their traffic, not by their number.

Every correlator measures each events partition's message rate from the topic's end
offsets (their growth, smoothed): nothing is exchanged, every member sees the same topic.
The group's leader assigns with :func:`~alarmd.cluster.membership.balance` weighted by
those rates (a member keeps what fits in its even share; with no rates yet, every
partition weighs the same).  A cold start has no rates, and a hot key can appear at any
time, so the leader checks every ``cluster.rebalance_check`` whether a new assignment
would cut the largest deviation from an even share clearly (from above :data:`LIMIT` to
below :data:`TARGET`, by :data:`MARGIN` at least) and if so asks the group to rebalance:
at most once per check, logged as ``rebalance_requested`` and counted.  A trickle of
traffic (fewer than :data:`EVIDENCE` messages in one half-life) is noise and asks for
nothing.  This is the shape of Kafka Streams' assignor with its probing rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping

import structlog

from alarmd.clock import Clock
from alarmd.cluster.membership import balance
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.cluster")

LIMIT = 0.20
"""A share of traffic further than this from even (0.2 = 20%) is worth a rebalance ..."""
TARGET = 0.15
"""... if a new assignment would bring it under this ..."""
MARGIN = 0.05
"""... and by at least this much."""
EVIDENCE = 500
"""The leader judges a share only on this many messages in one half-life at least: fewer are noise."""
STICKY = 0.02
"""A fresh assignment replaces the sticky one only if its largest deviation is lower by more than this."""
SCALE = 10_000
"""Partition weights are integers: a partition's share of the traffic in this many parts, plus one."""


def deviation(loads: Mapping[str, float]) -> float:
    """The largest member's distance from an even share of the load, as a fraction of it (0.2 = 20%)."""
    total = sum(loads.values())
    if len(loads) < 2 or total <= 0:
        return 0.0
    even = total / len(loads)
    return max(abs(v - even) for v in loads.values()) / even


def assign(weights: Mapping[int, int], held: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """Partitions shared out by weight: :func:`balance` (sticky), unless a fresh share is clearly more even.

    ``balance`` lets members keep light partitions that fit, which can leave a hot one no
    room but on top of a member's share.  So a fresh share (heaviest first to the lightest
    member) is also made and its parts given to the members that held most of each; it is
    taken when its largest deviation is lower by more than :data:`STICKY` than the sticky
    one's.
    """
    owned = {m: set(ps) for m, ps in held.items()}
    sticky = balance(weights, owned)
    parts = list(balance(weights, dict.fromkeys(owned, ())).values())
    pairs = sorted(
        ((sum(weights[p] for p in part & owned[m]), m, i) for m in owned for i, part in enumerate(parts)),
        reverse=True,
    )
    fresh: dict[str, set[int]] = {}
    given: set[int] = set()
    for _, member, i in pairs:
        if member not in fresh and i not in given:
            fresh[member] = parts[i]
            given.add(i)
    return fresh if _spread(weights, fresh) < _spread(weights, sticky) - STICKY else sticky


def _spread(weights: Mapping[int, int], shares: Mapping[str, set[int]]) -> float:
    """The largest deviation of ``shares`` by weight."""
    return deviation({m: float(sum(weights[p] for p in ps)) for m, ps in shares.items()})


class PartitionRates:
    """Each partition's message rate: the growth of its end offset, smoothed with a half-life."""

    def __init__(self, half_life: float) -> None:
        """Rates that follow a change of traffic half way within ``half_life`` seconds."""
        self.half_life = max(half_life, 1e-3)
        self._last: dict[int, tuple[float, int]] = {}
        self._rates: dict[int, float] = {}

    def observe(self, at: float, ends: Mapping[int, int]) -> None:
        """Take the end offsets read at ``at`` (monotonic seconds)."""
        for partition, end in ends.items():
            last = self._last.get(partition)
            self._last[partition] = (at, end)
            if last is None or at <= last[0]:
                continue
            rate = max(0, end - last[1]) / (at - last[0])
            old = self._rates.get(partition)
            keep = 0.5 ** ((at - last[0]) / self.half_life)
            self._rates[partition] = rate if old is None else old * keep + rate * (1 - keep)

    def rates(self) -> dict[int, float]:
        """Messages per second by partition (only partitions seen twice)."""
        return dict(self._rates)

    def weights(self, partitions: Iterable[int]) -> dict[int, int]:
        """Integer weights for :func:`balance`: each partition's share of the traffic (all 1 without any)."""
        partitions = list(partitions)
        total = sum(self._rates.get(p, 0.0) for p in partitions)
        if total <= 0:
            return dict.fromkeys(partitions, 1)
        return {p: round(self._rates.get(p, 0.0) / total * SCALE) + 1 for p in partitions}

    def deviation(self, shares: Mapping[str, Iterable[int]]) -> float:
        """How far ``shares`` (member → partitions) is from an even share of the measured traffic."""
        rates = self._rates
        return deviation({m: sum(rates.get(p, 0.0) for p in ps) for m, ps in shares.items()})


class TrafficShare:
    """The events partitions' assignment by traffic, and the leader's check for a clearly better one."""

    def __init__(self, check: float, metrics: Metrics, clock: Clock, *, group: str = "events") -> None:
        """Check every ``check`` seconds (0: never, and no rates are measured: partitions weigh the same)."""
        self.check = check
        self.rates = PartitionRates(half_life=max(check / 2, 1.0))
        self.sample = min(5.0, check / 6) if check > 0 else 0.0
        self.metrics, self.clock, self.group = metrics, clock, group
        #: True if this member made the group's current assignment (it is the group's leader).
        self.leading = False
        self._made: dict[str, set[int]] | None = None
        self._fresh = False
        self._partitions: list[int] = []
        metrics.rebalance_requests.labels(group)

    def balance(self, partitions: list[int], held: dict[str, set[int]]) -> dict[str, set[int]]:
        """As the group's leader: ``partitions`` shared among ``held``'s members by their traffic."""
        shares = assign(self.rates.weights(partitions), held)
        self._partitions = list(partitions)
        self._made, self._fresh = {m: set(ps) for m, ps in shares.items()}, True
        log.info(
            "partitions_balanced",
            group=self.group,
            members=len(shares),
            weighted=any(self.rates.rates().values()),
            deviation=round(self.rates.deviation(shares), 3),
        )
        return shares

    def assigned(self, partitions: set[int]) -> None:
        """An assignment is taken: this member leads if it made it (the leader assigns just before)."""
        self.leading, self._fresh = self._fresh, False
        if not self.leading:
            self._made = None

    def judge(self) -> tuple[float, float] | None:
        """``(now, after)``: the current and a new assignment's deviations, if the new one is much better."""
        made = self._made
        if not self.leading or made is None or len(made) < 2:
            return None
        if sum(self.rates.rates().values()) * self.rates.half_life < EVIDENCE:
            return None
        now = self.rates.deviation(made)
        after = self.rates.deviation(assign(self.rates.weights(self._partitions), made))
        if now > LIMIT and after < TARGET and now - after >= MARGIN:
            return now, after
        return None

    async def run(
        self,
        stop: asyncio.Event,
        ends: Callable[[], Awaitable[dict[int, int]]],
        rejoin: Callable[[], None],
    ) -> None:
        """Until ``stop``: measure the rates from ``ends()``; every ``check``, ``rejoin()`` if it pays."""
        if self.check <= 0:
            return
        due = self.clock.monotonic() + self.check
        while not stop.is_set():
            self.rates.observe(self.clock.monotonic(), await ends())
            if self.clock.monotonic() >= due:
                due = self.clock.monotonic() + self.check
                self.request_if_better(rejoin)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sample)

    def request_if_better(self, rejoin: Callable[[], None]) -> bool:
        """If :meth:`judge` says so, log, count and ``rejoin()``; whether it did."""
        decision = self.judge()
        if decision is None:
            return False
        now, after = decision
        log.info(
            "rebalance_requested",
            group=self.group,
            deviation=round(now, 3),
            deviation_after=round(after, 3),
            rates={p: round(r, 1) for p, r in sorted(self.rates.rates().items())},
        )
        self.metrics.rebalance_requests.labels(self.group).inc()
        self.leading = False  # the next assignment says who leads; one request per assignment
        rejoin()
        return True
