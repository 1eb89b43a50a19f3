"""Major faults in distributed mode: a second stage keyed by element, run by every correlator.

Correlators key their input by circuit, so the circuits of one shared element land on
different correlators and none of them sees enough to open a major fault.  So each
correlator publishes the root alarm changes (raised, cleared) of circuits on shared elements
to ``<events_topic>.elements``, keyed by the circuit's **element group**: the shared elements
linked through the circuits that name them (a segment, its ring and the PE behind them form
one group), named by its first element.  One partition, and so one correlator, sees an
element group whole.  The element stage, a consumer group over that topic in every
correlator, runs the same :class:`~alarmd.alarms.grouping.Grouper` as ``--role all`` over a
book of those alarms, and keeps its open major faults and circuit alarms in a compacted
changelog of its own, restored on assignment as the correlators' faults are
(:class:`PartitionOwner`).  It commits as the correlators do
(:class:`~alarmd.cluster.correlator.PartitionedStage`): each element partition has its own
transactional producer (``<cluster.transactional_prefix>.elements-<p>``), and the major
faults' messages, the partition's changelog records and its consumed offsets go in one
transaction per fetched batch and per clock tick; a paused owner that resumes is fenced.

The circuit owner does not wait to hear from this stage: a circuit's own work order goes
out at once, and the major fault's ``reparented`` update names it as a child, as ``--role
all`` does for a circuit dispatched before its major fault opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal, Protocol, cast

import structlog

from alarmd.alarms.grouping import MEMBER_OF, Grouper, is_major
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.store import Store, StoreError, alarm_from_json, alarm_to_json
from alarmd.clock import Clock
from alarmd.cluster.changelog import ChangelogStore
from alarmd.cluster.codec import EventDecodeError, Keys
from alarmd.cluster.correlator import PartitionedStage
from alarmd.cluster.owner import PartitionOwner
from alarmd.cluster.transactions import StagedDispatcher, Transactions
from alarmd.config import Config, MajorFaultsConfig
from alarmd.dispatch.kafka import KafkaSink, RejectionOf, default_partition
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmTransition, Team
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd.elements")

FORMAT = 1
"""Version of an element-topic message; another version goes to the dead-letter topic."""

RootChange = Literal["raised", "cleared"]
Route = Callable[[Mapping[str, str]], Team]
#: The ``alarmd-type`` header (and ``alarmd_dispatch_messages_sent_total`` type) of an element-topic message.
MESSAGE_KIND = "element_change"


def local_grouping(config: MajorFaultsConfig, role: str) -> MajorFaultsConfig:
    """What a role's own grouper does: a correlator leaves grouping to the element stage."""
    return config.model_copy(update={"enabled": False}) if role == "correlator" else config


class ElementKeys:
    """The element group of every circuit and element: the key of its messages on the element topic.

    Elements named together by a circuit are linked; a group is everything linked, and its key
    is the first of its element names.
    """

    def __init__(self, inventory: Inventory) -> None:
        parent: dict[str, str] = {name: name for name in inventory.elements}

        def root(name: str) -> str:
            while parent[name] != name:
                parent[name] = parent[parent[name]]
                name = parent[name]
            return name

        for circuit in inventory.circuits.values():
            named = [n for n in circuit.shared if n in parent]
            for other in named[1:]:
                a, b = root(named[0]), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        self._element = {name: root(name) for name in parent}
        self._circuit = {
            cid: self._element[named[0]]
            for cid, circuit in inventory.circuits.items()
            if (named := [n for n in circuit.shared if n in parent])
        }

    def of_circuit(self, circuit: str | None) -> bytes | None:
        """The key of a circuit's root alarms; None for a circuit on no shared element."""
        group = self._circuit.get(circuit or "")
        return group.encode() if group is not None else None

    def of(self, alarm: Alarm) -> bytes:
        """The key (so the partition) of an alarm of the element stage: a major fault or a circuit's."""
        element = alarm.labels.get("element") if is_major(alarm) else None
        group = self._element.get(element or "") if element else self._circuit.get(alarm.circuit or "")
        return (group or alarm.fingerprint).encode()


def encode(kind: RootChange, alarm: Alarm) -> bytes:
    """A circuit's root alarm change as an element-topic message."""
    body = {"format": FORMAT, "type": "root", "change": kind, "alarm": json.loads(alarm_to_json(alarm))}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode(payload: bytes) -> tuple[RootChange, Alarm]:
    """An element-topic message back as its change and alarm; raises EventDecodeError saying what is wrong."""
    try:
        body = json.loads(payload)
        if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("type") != "root":
            raise EventDecodeError(f"not an element-topic message of format {FORMAT}")
        change = body["change"]
        if change not in ("raised", "cleared"):
            raise EventDecodeError(f"unknown change {change!r}")
        return cast(RootChange, change), alarm_from_json(json.dumps(body["alarm"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise EventDecodeError(f"{type(exc).__name__}: {exc}") from None


class Announces(Protocol):
    """What the element stage needs of the announcer: tell changes, fire due clocks."""

    def tell_all(self, changes: list[Change]) -> None:
        """Announce changes in order, stored in one transaction."""

    def on_timers(self, book: AlarmBook, now: float) -> int:
        """Act on every due timer once; return how many acted."""


class _ElementOwner(PartitionOwner):
    """The element stage's share of the element topic: its faults kept in the element changelog."""

    def __init__(self, stage: ElementStage) -> None:
        super().__init__(
            stage.config.kafka,
            stage.changelog_topic,
            stage.store,
            book=lambda: stage.book,
            engine=lambda: stage.no_rules,  # the stage runs no rules: nothing to take back there
            keys=lambda: Keys(stage.inventory),
            metrics=stage.metrics,
            now=stage.clock.now,
            writes=False,  # the changelog goes in the element partitions' transactions
        )
        self._stage = stage

    def home(self, alarm: Alarm) -> int:
        """The element-topic partition of a major fault or of a circuit's alarm: its element group's."""
        return default_partition(self._stage.keys.of(alarm), self.partitions)


class ElementStage:
    """Groups the root alarms of circuits on shared elements into major faults, across correlators."""

    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        inventory: Inventory,
        route: Route,
        metrics: Metrics,
        clock: Clock,
        announcer: Callable[[Store, Dispatcher], Announces],
        rejection_of: RejectionOf,
        producer: Callable[[str], Transactions] | None = None,
    ) -> None:
        cluster = config.cluster
        self.config, self.metrics, self.clock = config, metrics, clock
        self.topic = f"{cluster.events_topic}.elements"
        self.changelog_topic = f"{self.topic}.changelog"
        self.group_id = f"{cluster.correlator_group}.elements"
        self._announcer = announcer
        self.store = ChangelogStore(state_dir / "elements.sqlite")
        self.outbox = Outbox(self.store.connection)
        # the outbox is the staging area: each element partition's transaction sends its messages
        self.dispatcher = StagedDispatcher(
            self.outbox, KafkaSink(config.kafka), metrics, backoff=config.kafka.retry_backoff
        )
        # The book's own gauges would count every circuit's alarm a second time: they stay private.
        self.book = AlarmBook(
            inventory,
            route,
            Metrics(),
            Correlator(inventory, config.routing),
            reopen_window=config.clocks.observation,
            watch_window=config.clocks.business_watch,
        )
        self.no_rules = RuleEngine([])
        self.grouper = Grouper(inventory, self.book, config.major_faults, metrics, route)
        self.configure(config, inventory, route)
        self.owner = _ElementOwner(self)
        self.partitioned = PartitionedStage(
            config,
            topic=self.topic,
            group_id=self.group_id,
            prefix=f"{cluster.transactional_prefix}.elements",
            group="elements",
            owner=self.owner,
            outbox=self.outbox,
            handle=self.handle,
            rejection_of=rejection_of,
            metrics=metrics,
            took=self._took,
            restoring=lambda: None,
            changed=self._regroup,
            producer=producer,
        )
        for outcome in ("committed", "aborted", "fenced"):
            metrics.transactions.labels("elements", outcome)

    def configure(self, config: Config, inventory: Inventory, route: Route) -> None:
        """Take a (re)loaded configuration: inventory, routing, thresholds, clocks."""
        self.config, self.inventory, self.route = config, inventory, route
        self.keys = ElementKeys(inventory)
        self.book.inventory, self.book.route = inventory, route
        self.book.correlator = Correlator(inventory, config.routing)
        self.announcer = self._announcer(self.store, self.dispatcher)
        self.grouper.inventory, self.grouper.route = inventory, route
        self.grouper.config = config.major_faults

    # ------------------------------------------------------------------ the circuit owner's side

    def publish(self, submit: Callable[[str, bytes, bytes, str], None], changes: Iterable[Change]) -> int:
        """Queue the root alarm changes of circuits on shared elements for the element topic; return how many.

        ``submit`` is the circuit owner's outbox, so the messages leave with its work orders,
        before its input offsets are committed.
        """
        sent = 0
        for change in changes:
            alarm = change.alarm
            raised = change.kind == "raised" and alarm.parent_id is None
            if is_major(alarm) or not (raised or change.kind == "cleared"):
                continue
            key = self.keys.of_circuit(alarm.circuit)
            if key is not None:
                submit(self.topic, key, encode(cast(RootChange, change.kind), alarm), MESSAGE_KIND)
                sent += 1
        return sent

    # ------------------------------------------------------------------ the element stage

    async def handle(self, payload: bytes, key: bytes | None) -> None:
        """Judge one root alarm change; its messages and state are stored when this returns."""
        kind, alarm = decode(payload)
        self.judge(kind, alarm)

    def judge(self, kind: RootChange, alarm: Alarm) -> None:
        """Take a circuit's root alarm change into the book and the grouper; announce what follows."""
        with self.store.transaction():
            self._tell(self._raised(alarm) if kind == "raised" else self._cleared(alarm))

    def _raised(self, alarm: Alarm) -> list[Change]:
        if self.book.find(alarm.alarm_id) is not None:
            return []  # delivered again (at least once): already here
        stale = self.book.active.get(alarm.fingerprint) or self.book.recent.get(alarm.fingerprint)
        if stale is not None:
            self._forget(stale)
        alarm.parent_id, alarm.flapping = None, False
        alarm.extra.pop(MEMBER_OF, None)
        self.book.restore(alarm)
        self.store.save(alarm, "raised", at=self.clock.now())
        return self.grouper.feed([Change("raised", alarm)], alarm.raised_at)

    def _cleared(self, alarm: Alarm) -> list[Change]:
        mine = self.book.active.get(alarm.fingerprint)
        if mine is None or mine.alarm_id != alarm.alarm_id:
            return []  # never seen here, or cleared already
        at = alarm.cleared_at if alarm.cleared_at is not None else self.clock.now()
        transition = AlarmTransition(
            kind="resolved",
            rule=mine.rule,
            labels=mine.labels,
            annotations=mine.annotations,
            value=alarm.value,
            threshold=mine.threshold,
            at=at,
            active_since=mine.raised_at,
            fingerprint=mine.fingerprint,
        )
        changes = self.book.apply(transition)
        self.store.save(mine, "cleared", at=self.clock.now())
        return self.grouper.feed(changes, at)

    def _tell(self, changes: list[Change]) -> None:
        """Announce what is ticketing's: the major faults, and the circuits folded or released by them.

        A circuit's own raise and clear were announced by its owner; here they are only stored.
        """
        told = [c for c in changes if is_major(c.alarm) or c.kind in ("reparented", "released")]
        if told:
            self.announcer.tell_all(told)

    def _forget(self, alarm: Alarm) -> None:
        self.book.drop(alarm.fingerprint)
        self.no_rules.drop(alarm.rule, alarm.fingerprint)  # a restore marks firing alarms there
        self.store.drop(alarm.alarm_id)
        self.store.changed.add(alarm.alarm_id)  # a tombstone in the element changelog

    def tick(self, now: float) -> None:
        """Let cleared circuits go, announce joins, release stragglers, fire the major faults' clocks.

        Circuits are let go first, so that every message this tick announces is about an alarm
        still in the store when its partition's transaction takes it.
        """
        if not self.owner.settled:
            return  # a rebalance: what this instance owns may move, so its clocks wait
        with self.store.transaction():
            for alarm in list(self.book.recent.values()):
                if is_major(alarm):
                    continue
                major = self.book.find(alarm.extra.get(MEMBER_OF, ""))
                if major is None or major.state != "firing":
                    self._forget(alarm)  # no open major fault of its own needs it any more
        with self.store.transaction():
            self._tell(self.grouper.tick(now))
        self.announcer.on_timers(self.book, now)
        majors = self.grouper.open_majors()
        self.metrics.major_faults_open.set(len(majors))
        self.metrics.major_fault_circuits.set(sum(self.grouper.circuits_down(m) for m in majors))

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Consume the element topic in the element group until ``stop``, committing per partition."""
        cached, dropped = self.partitioned.start()  # the changelog rebuilds what is assigned
        if dropped:
            log.info("outbox_uncommitted_dropped", group="elements", messages=dropped, faults_cached=cached)
        ticker = asyncio.ensure_future(self._ticking(stop))
        try:
            await self.partitioned.run(stop)
        finally:
            await ticker  # ``stop`` ends it; a tick after the last commit commits nothing
            await self.owner.close()
            self.outbox.close()
            self.store.close()

    async def _ticking(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.tick(self.clock.now())
            except StoreError as exc:  # the next tick tries again; the timers stay due meanwhile
                log.error("store_write_failed", operation="element_tick", error=str(exc))  # noqa: TRY400
            await self.partitioned.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def _took(self, partitions: set[int]) -> None:
        self.metrics.partitions_owned.labels("elements").set(len(partitions))
        self.metrics.rebalances.labels("elements").inc()
        log.info("partitions_assigned", group="elements", partitions=sorted(partitions))

    def _regroup(self) -> None:
        """After a restore from the element changelog, or a fence: group anew from the book."""
        self.grouper = Grouper(self.inventory, self.book, self.config.major_faults, self.metrics, self.route)
        self.grouper.recall(self.clock.now())
