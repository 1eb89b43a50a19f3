"""The correlators' events partitions shared out by their work, not by their number.

A correlator's work is events: a trap is one, a poll's message carries one sample per
interface (about fifty).  Every correlator measures each events partition's message rate
from the topic's end offsets (their growth, smoothed): every member sees the same topic.
Only a partition's owner sees its events per message, so each correlator measures that
ratio for the partitions it consumes (:class:`EventRatios`) and tells it with its
subscription (the assignor's user data) at every join.  The group's leader assigns with
:func:`~alarmd.cluster.membership.balance` weighted by events per second, message rate
times ratio (a member keeps what fits in its even share; with no rates yet, every
partition weighs the same; a partition whose ratio nobody told weighs the mean ratio of
the others, or one event per message).  A cold start has no rates, and a hot key can
appear at any time, so the leader checks every ``cluster.rebalance_check`` whether a new
assignment would cut the largest deviation from an even share clearly (from above
:data:`LIMIT` to below :data:`TARGET`, by :data:`MARGIN` at least) and if so asks the
group to rebalance: at most once per check, logged as ``rebalance_requested`` and counted.
If partitions carry traffic but their owners told no ratio at the last assignment (a cold
start: nothing was consumed yet), the leader asks for one rebalance to hear them (a
probing rebalance), which assigns by them at once.  A trickle of traffic (fewer than
:data:`EVIDENCE` messages in one half-life) is noise and asks for nothing.  This is the
shape of Kafka Streams' assignor with its probing rebalances.
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

Ratios = Mapping[int, float]
"""Events per message by partition."""


def fill(ratios: Ratios, partitions: Iterable[int]) -> dict[int, float]:
    """Each partition's events per message: as measured, else the mean of the measured ones, else 1."""
    partitions = list(partitions)
    known = [ratios[p] for p in partitions if p in ratios]
    default = sum(known) / len(known) if known else 1.0
    return {p: ratios.get(p, default) for p in partitions}


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

    def events(self, partitions: Iterable[int], ratios: Ratios | None = None) -> dict[int, float]:
        """Events per second by partition: its message rate times its events per message (:func:`fill`)."""
        partitions = list(partitions)
        per_message = fill(ratios or {}, partitions)
        return {p: self._rates.get(p, 0.0) * per_message[p] for p in partitions}

    def weights(self, partitions: Iterable[int], ratios: Ratios | None = None) -> dict[int, int]:
        """Integer weights for :func:`balance`: each partition's share of the events (1 without traffic)."""
        load = self.events(partitions, ratios)
        total = sum(load.values())
        if total <= 0:
            return dict.fromkeys(load, 1)
        return {p: round(v / total * SCALE) + 1 for p, v in load.items()}

    def deviation(self, shares: Mapping[str, Iterable[int]], ratios: Ratios | None = None) -> float:
        """How far ``shares`` (member → partitions) is from an even share of the measured events."""
        shares = {m: set(ps) for m, ps in shares.items()}
        load = self.events(set().union(*shares.values()), ratios)
        return deviation({m: sum(load[p] for p in ps) for m, ps in shares.items()})


class EventRatios:
    """Each partition's events per message as consumed here (a poll's samples, a trap's one), smoothed.

    The counts of messages and of events are both smoothed with a half-life, and the ratio
    is theirs: a partition of polls reads about fifty, one of traps one, a mix in between.
    """

    def __init__(self, half_life: float) -> None:
        """Ratios that follow a change half way within ``half_life`` seconds of observations."""
        self.half_life = max(half_life, 1e-3)
        self._pending: dict[int, list[int]] = {}
        self._sums: dict[int, tuple[float, float]] = {}
        self._at: float | None = None

    def consumed(self, partition: int | None, events: int) -> None:
        """One message of ``partition`` holding ``events`` events was consumed (``None``: no partition)."""
        if partition is not None:
            counts = self._pending.setdefault(partition, [0, 0])
            counts[0] += 1
            counts[1] += events

    def observe(self, at: float) -> None:
        """Fold what was consumed since the last call into the smoothed counts (``at``: monotonic seconds)."""
        keep = 1.0 if self._at is None else 0.5 ** (max(0.0, at - self._at) / self.half_life)
        self._at = at
        sums = {p: (m * keep, e * keep) for p, (m, e) in self._sums.items()}
        for p, (messages, events) in self._pending.items():
            m, e = sums.get(p, (0.0, 0.0))
            sums[p] = (m + messages, e + events)
        self._pending = {}
        self._sums = {p: (m, e) for p, (m, e) in sums.items() if m > 1e-6}  # long unseen: forgotten

    def ratios(self) -> dict[int, float]:
        """Events per message by partition (only partitions consumed here)."""
        return {p: e / m for p, (m, e) in self._sums.items()}


def heard(told: Mapping[str, Ratios], held: Mapping[str, Iterable[int]]) -> dict[int, float]:
    """Each partition's events per message as members told it: its holder's word, else an earlier owner's."""
    out: dict[int, float] = {}
    for member in sorted(told):
        for p, ratio in told[member].items():
            out.setdefault(p, ratio)
    for member in sorted(told):
        out.update({p: told[member][p] for p in held.get(member, ()) if p in told[member]})
    return out


class TrafficShare:
    """The events partitions' assignment by their events, and the leader's check for a clearly better one."""

    def __init__(self, check: float, metrics: Metrics, clock: Clock, *, group: str = "events") -> None:
        """Check every ``check`` seconds (0: never, and no rates are measured: partitions weigh the same)."""
        self.check = check
        self.rates = PartitionRates(half_life=max(check / 2, 1.0))
        #: Events per message of the partitions consumed here, told to the leader at each join.
        self.ratios = EventRatios(half_life=self.rates.half_life)
        self.sample = min(5.0, check / 6) if check > 0 else 0.0
        self.metrics, self.clock, self.group = metrics, clock, group
        #: True if this member made the group's current assignment (it is the group's leader).
        self.leading = False
        self._made: dict[str, set[int]] | None = None
        self._fresh = False
        self._partitions: list[int] = []
        self._told: dict[int, float] = {}  # events per message as told at the assignments made here
        self._telling: set[str] = set()  # the members that told ratios then (not those of earlier versions)
        self._own: set[int] = set()
        self._probing = self._probed = False
        metrics.rebalance_requests.labels(group)

    def consumed(self, partition: int | None, events: int) -> None:
        """A message of ``partition`` holding ``events`` events (a poll's samples, or 1) was consumed."""
        self.ratios.consumed(partition, events)

    def tell(self) -> dict[int, float]:
        """What this member tells at its next join: events per message of the partitions it consumed."""
        return self.ratios.ratios()

    def balance(
        self, partitions: list[int], held: dict[str, set[int]], told: Mapping[str, Ratios] | None = None
    ) -> dict[str, set[int]]:
        """As the group's leader: ``partitions`` shared among ``held``'s members by their events.

        ``told``: the ratios the members told (members of an earlier version tell none).
        """
        told = told or {}
        # a partition whose members told nothing (its owner died) keeps the ratio last heard here
        self._told, self._telling = self._told | heard(told, held), set(told)
        self._probed, self._probing = self._probing, False
        shares = assign(self.rates.weights(partitions, self._told), held)
        self._partitions = list(partitions)
        self._made, self._fresh = {m: set(ps) for m, ps in shares.items()}, True
        log.info(
            "partitions_balanced",
            group=self.group,
            members=len(shares),
            weighted=any(self.rates.rates().values()),
            deviation=round(self.rates.deviation(shares, self._told), 3),
            ratios={p: round(r, 1) for p, r in sorted(self._told.items())},
        )
        return shares

    def assigned(self, partitions: set[int]) -> None:
        """An assignment is taken: this member leads if it made it (the leader assigns just before)."""
        self.leading, self._fresh = self._fresh, False
        self._own = set(partitions)
        if not self.leading:
            self._made = None

    def known(self) -> dict[int, float]:
        """Events per message as the leader knows them: as told at its assignments, its own as now."""
        own = self.ratios.ratios()
        return self._told | {p: r for p, r in own.items() if p in self._own}

    def judge(self) -> tuple[float, float] | None:
        """``(now, after)``: the current and a new assignment's deviations, if the new one is much better."""
        made = self._made
        if not self._worth_judging() or made is None:
            return None
        ratios = self.known()
        now = self.rates.deviation(made, ratios)
        after = self.rates.deviation(assign(self.rates.weights(self._partitions, ratios), made), ratios)
        if now > LIMIT and after < TARGET and now - after >= MARGIN:
            return now, after
        return None

    def unheard(self) -> list[int]:
        """Partitions with traffic whose holders tell ratios but told none: a probing rebalance hears them.

        Only once after an assignment that was not itself a probe's, so a partition its owner
        has not consumed yet asks for one rebalance, not one per check.
        """
        made = self._made
        if self._probed or not self._worth_judging() or made is None:
            return []
        known, rates = self.known(), self.rates.rates()
        telling = {p for m in self._telling & set(made) for p in made[m]}
        return sorted(p for p in telling if rates.get(p, 0.0) > 0 and p not in known)

    def _worth_judging(self) -> bool:
        """Whether this member leads a group of two or more, with more than a trickle of traffic."""
        if not self.leading or self._made is None or len(self._made) < 2:
            return False
        return sum(self.rates.rates().values()) * self.rates.half_life >= EVIDENCE

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
            self.ratios.observe(self.clock.monotonic())
            if self.clock.monotonic() >= due:
                due = self.clock.monotonic() + self.check
                self.request_if_better(rejoin)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sample)

    def request_if_better(self, rejoin: Callable[[], None]) -> bool:
        """If :meth:`judge` says so or ratios are :meth:`unheard`: log, count, ``rejoin()``; if it did."""
        decision = self.judge()
        unheard = [] if decision is not None else self.unheard()
        if decision is None and not unheard:
            return False
        ratios = self.known()
        reason = "skew" if decision is not None else "ratios_unknown"
        now, after = decision or (self.rates.deviation(self._made or {}, ratios), None)
        log.info(
            "rebalance_requested",
            group=self.group,
            reason=reason,
            deviation=round(now, 3),
            deviation_after=None if after is None else round(after, 3),
            unheard=unheard or None,
            rates={p: round(r, 1) for p, r in sorted(self.rates.rates().items())},
            ratios={p: round(r, 1) for p, r in sorted(ratios.items())},
        )
        self.metrics.rebalance_requests.labels(self.group).inc()
        self._probing = decision is None
        self.leading = False  # the next assignment says who leads; one request per assignment
        rejoin()
        return True
