"""Major faults (重大故障, SPEC §9): many circuits of one shared element down at once become one fault.

The stage sits between the alarm book and the announcer and is fed the book's changes; its
state is keyed by shared element (a PE, an aggregation ring, a transmission segment named in
``circuits[].shared``), so that it can run as a stage of its own keyed by element.

- When at least ``min_circuits`` circuits sharing an element raise root alarms of one class
  within ``window``, a major fault opens on that element (the element shared by the fewest
  circuits, when several qualify).  It is an alarm of its own (rule ``MajorFault``) with the
  element's lead team and the highest tier among its circuits; the circuits' alarms are
  folded under it as children and get no work order of their own.  Those already
  dispatched get an update naming the parent; circuits that fail later join the major
  fault at once and are announced together by one update per tick (a second), so a storm
  of hundreds of circuits is a handful of updates, not one per circuit.
- The major fault clears when its children clear.  Once fewer than ``min_circuits`` are
  still down, those left are given ``straggler_wait`` to recover; then the major fault
  clears and each of them gets a work order of its own (it has a cause of its own).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.config import ElementConfig, MajorFaultsConfig
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import (
    MAJOR_FAULT_KEY,
    AffectedCircuit,
    Alarm,
    AlarmClass,
    AlarmTransition,
    MajorFaultDetail,
    Team,
    Tier,
    fingerprint,
    isotime,
    major_detail,
)

log = structlog.get_logger("alarmd.grouping")

MAJOR_FAULT = "MajorFault"
#: ``Alarm.extra`` key on a child: the major fault it belongs (or belonged) to.
MEMBER_OF = "major_fault_id"
_TIER_RANK = {Tier.DIAMOND: 0, Tier.GOLD: 1, Tier.ORDINARY: 2}


def is_major(alarm: Alarm) -> bool:
    """Whether an alarm is a major fault (rather than a circuit's own alarm)."""
    return alarm.rule == MAJOR_FAULT and MAJOR_FAULT_KEY in alarm.extra


def _rank(tier: Tier | None) -> int:
    return _TIER_RANK.get(tier, 3) if tier is not None else 3


@dataclass
class _Group:
    """One element and one alarm class: recent root alarms of its circuits, and its open major fault."""

    element: ElementConfig
    alarm_class: AlarmClass
    recent: deque[Alarm] = field(default_factory=deque)
    major: Alarm | None = None
    release_at: float | None = None
    joined: bool = False


class Grouper:
    """Folds the alarms of circuits that share an element into one major fault, and lets them go again."""

    def __init__(
        self,
        inventory: Inventory,
        book: AlarmBook,
        config: MajorFaultsConfig,
        metrics: Metrics,
        route: Callable[[Mapping[str, str]], Team],
    ) -> None:
        self.inventory = inventory
        self.book = book
        self.config = config
        self.metrics = metrics
        self.route = route
        self._groups: dict[tuple[str, AlarmClass], _Group] = {}

    # ------------------------------------------------------------------ changes

    def feed(self, changes: Iterable[Change], now: float) -> list[Change]:
        """Pass the book's changes on, with what grouping adds (a major fault, folds, joins, clears)."""
        out: list[Change] = []
        for change in changes:
            alarm = change.alarm
            if is_major(alarm) or not self.config.enabled:
                out.append(change)
            elif change.kind == "raised" and alarm.parent_id is None:
                out.append(change)
                out.extend(self._raised(alarm, now))
            elif change.kind == "cleared" and MEMBER_OF in alarm.extra:
                out.append(change)
                out.extend(self._child_cleared(alarm, now))
            elif change.kind == "reopened" and alarm.parent_id is None and not alarm.dispatched:
                # a former child back after its major fault cleared: it never had a work order of its own
                out.append(Change("released", alarm, change.previous_lead_team))
            else:
                out.append(change)
        return out

    def _raised(self, alarm: Alarm, now: float) -> list[Change]:
        elements = self.inventory.shared_by(alarm.circuit)
        for element in elements:
            group = self._groups.get((element.name, alarm.alarm_class))
            if group is not None and group.major is not None:
                return self._join(group, group.major, alarm)
        qualified: list[tuple[_Group, list[Alarm]]] = []
        for element in elements:
            key = (element.name, alarm.alarm_class)
            group = self._groups.setdefault(key, _Group(element, alarm.alarm_class))
            group.recent.append(alarm)
            members = self._candidates(group, now)
            if len({m.circuit for m in members}) >= self.config.min_circuits:
                qualified.append((group, members))
        if not qualified:
            return []
        group, members = qualified[0]  # the element shared by the fewest circuits explains best
        return self._open(group, members, now)

    def _candidates(self, group: _Group, now: float) -> list[Alarm]:
        """Root alarms of the group's circuits still firing, raised within the window."""
        recent = group.recent
        while recent and (
            now - recent[0].raised_at > self.config.window
            or recent[0].state != "firing"
            or recent[0].parent_id is not None
        ):
            recent.popleft()
        return [a for a in recent if a.state == "firing" and a.parent_id is None]

    def _open(self, group: _Group, members: list[Alarm], now: float) -> list[Change]:
        element = group.element
        labels = {
            "alertname": MAJOR_FAULT,
            "alarm_class": group.alarm_class.value,
            "element": element.name,
            "element_kind": element.kind,
            "severity": "critical",
        }
        first = min(m.raised_at for m in members)
        transition = AlarmTransition(
            kind="firing",
            rule=MAJOR_FAULT,
            labels=labels,
            annotations={"summary": f"Major fault on {element.kind} {element.name}"},
            value=float(len(members)),
            threshold=float(self.config.min_circuits),
            at=first,
            active_since=first,
            fingerprint=fingerprint(labels),
        )
        changes = self.book.apply(transition)
        major = self.book.active[transition.fingerprint]
        major.extra[MAJOR_FAULT_KEY] = MajorFaultDetail(
            element=element.name, element_kind=element.kind, circuit_count=0, customers=[], circuits=[]
        ).model_dump_json()
        self.book.amend(major, lead_team=element.lead_team or self.route(labels))
        group.major, group.release_at = major, None
        group.recent.clear()
        for member in members:
            changes.extend(self._fold(major, member))
        self._describe(major)
        self.metrics.major_faults.labels(group.alarm_class.value).inc()
        log.info(
            "major_fault_opened",
            alarm_id=major.alarm_id,
            element=element.name,
            element_kind=element.kind,
            circuits=len(members),
            lead_team=major.lead_team.value,
            tier=major.tier.value if major.tier else None,
            seconds_since_first=round(now - first, 3),
        )
        return changes

    def _join(self, group: _Group, major: Alarm, alarm: Alarm) -> list[Change]:
        """Fold a circuit under an open major fault; :meth:`tick` announces the joins of a second at once."""
        changes = self._fold(major, alarm)
        group.joined = True
        if group.release_at is not None and self._down(major) >= self.config.min_circuits:
            group.release_at = None  # enough circuits down again: a common cause after all
        log.debug("major_fault_joined", alarm_id=major.alarm_id, circuit=alarm.circuit, child=alarm.alarm_id)
        return changes

    def _fold(self, major: Alarm, member: Alarm) -> list[Change]:
        previous = member.lead_team
        self.book.amend(member, parent_id=major.alarm_id, lead_team=major.lead_team)
        member.extra[MEMBER_OF] = major.alarm_id
        if _rank(member.tier) < _rank(major.tier):
            self.book.amend(major, tier=member.tier)
        return [Change("reparented", member, previous)]

    def _children(self, major: Alarm) -> list[Alarm]:
        """Every alarm folded under a major fault, firing or recently cleared."""
        return [
            a
            for a in (*self.book.active.values(), *self.book.recent.values())
            if a.extra.get(MEMBER_OF) == major.alarm_id and a is not major
        ]

    def circuits_down(self, major: Alarm) -> int:
        """How many of a major fault's circuits are still down."""
        return self._down(major)

    def _down(self, major: Alarm) -> int:
        return sum(1 for a in self.book.active.values() if a.parent_id == major.alarm_id)

    def _describe(self, major: Alarm) -> None:
        """Write the element and its circuits onto the major fault, for its messages and the board."""
        old = major_detail(major)
        assert old is not None
        known = {c.alarm_id: c for c in old.circuits}
        for child in self._children(major):
            if child.circuit is None:
                continue
            known[child.alarm_id] = AffectedCircuit(
                circuit=child.circuit,
                customer=child.customer,
                customer_name=child.customer_name,
                tier=child.tier,
                alarm_id=child.alarm_id,
                alert=child.rule,
                raised_at=isotime(child.raised_at),
                cleared_at=isotime(child.cleared_at) if child.cleared_at is not None else None,
            )
        circuits = sorted(known.values(), key=lambda c: (_rank(c.tier), c.circuit))
        customers = list(dict.fromkeys(c.customer for c in circuits if c.customer))
        detail = MajorFaultDetail(
            element=old.element,
            element_kind=old.element_kind,
            circuit_count=len({c.circuit for c in circuits}),
            customers=customers,
            circuits=circuits,
        )
        major.extra[MAJOR_FAULT_KEY] = detail.model_dump_json()
        major.value = float(detail.circuit_count)

    # ------------------------------------------------------------------ clearing

    def _child_cleared(self, child: Alarm, now: float) -> list[Change]:
        group = next(
            (
                g
                for g in self._groups.values()
                if g.major is not None and g.major.alarm_id == child.extra[MEMBER_OF]
            ),
            None,
        )
        if group is None or group.major is None:
            return []
        major = group.major
        down = self._down(major)
        if down == 0:
            return self._close(group, now)
        if down < self.config.min_circuits and group.release_at is None:
            group.release_at = now + self.config.straggler_wait
        return []

    def tick(self, now: float) -> list[Change]:
        """Announce the circuits that joined since the last tick in one update of each major fault.

        Also close major faults whose last circuits stayed down past ``straggler_wait``, and
        forget alarms that fell out of the window.
        """
        changes: list[Change] = []
        for group in self._groups.values():
            if group.major is None:
                self._candidates(group, now)
                continue
            if group.joined:
                group.joined = False
                self._describe(group.major)
                changes.append(Change("joined", group.major))
                log.info(
                    "major_fault_grown",
                    alarm_id=group.major.alarm_id,
                    element=group.element.name,
                    circuits=group.major.value,
                )
            if group.release_at is not None and now >= group.release_at:
                if self._down(group.major) < self.config.min_circuits:
                    changes.extend(self._close(group, now))
                else:
                    group.release_at = None
        return changes

    def _close(self, group: _Group, now: float) -> list[Change]:
        major = group.major
        assert major is not None
        group.major, group.release_at = None, None
        stragglers = [a.circuit for a in self.book.active.values() if a.parent_id == major.alarm_id]
        transition = AlarmTransition(
            kind="resolved",
            rule=MAJOR_FAULT,
            labels=major.labels,
            annotations=major.annotations,
            value=float(len(stragglers)),
            threshold=float(self.config.min_circuits),
            at=now,
            active_since=major.raised_at,
            fingerprint=major.fingerprint,
        )
        changes = self.book.apply(transition)  # releases the children still down, each to its own order
        for child in self._children(major):
            if child.state == "cleared" and child.parent_id == major.alarm_id:
                child.parent_id = None  # a later relapse is the circuit's own fault
        self._describe(major)
        self.metrics.major_fault_seconds.labels(group.alarm_class.value).inc(now - major.raised_at)
        log.info(
            "major_fault_cleared",
            alarm_id=major.alarm_id,
            element=group.element.name,
            seconds=round(now - major.raised_at, 3),
            stragglers=stragglers,
        )
        return changes

    # ------------------------------------------------------------------ restart

    def restore(self) -> int:
        """Take the open major faults back from the book after a restart; return how many."""
        restored = 0
        for alarm in list(self.book.active.values()):
            detail = major_detail(alarm)
            if detail is None or alarm.rule != MAJOR_FAULT:
                continue
            element = self.inventory.elements.get(detail.element)
            if element is None:
                continue
            group = self._groups.setdefault(
                (element.name, alarm.alarm_class), _Group(element, alarm.alarm_class)
            )
            group.major = alarm
            restored += 1
        return restored

    def recall(self, now: float) -> int:
        """Rebuild all grouping state from the book (a stage of its own, after a hand-over); return majors.

        Besides the open major faults (:meth:`restore`), root alarms not yet grouped and still
        within the window are candidates again; a major fault whose circuits changed since it
        was last described is announced on the next tick; one with fewer than
        ``min_circuits`` down gives them ``straggler_wait`` from now.
        """
        restored = self.restore()
        for alarm in sorted(self.book.active.values(), key=lambda a: a.raised_at):
            if is_major(alarm) or alarm.parent_id is not None or now - alarm.raised_at > self.config.window:
                continue
            for element in self.inventory.shared_by(alarm.circuit):
                key = (element.name, alarm.alarm_class)
                self._groups.setdefault(key, _Group(element, alarm.alarm_class)).recent.append(alarm)
        for group in self._groups.values():
            if group.major is None:
                continue
            detail = major_detail(group.major)
            described = {c.alarm_id for c in detail.circuits} if detail is not None else set()
            group.joined = described != {c.alarm_id for c in self._children(group.major)}
            down = self._down(group.major)
            if down < self.config.min_circuits:
                group.release_at = now + self.config.straggler_wait if down else now
        return restored

    def open_majors(self) -> list[Alarm]:
        """The major faults open now."""
        return [g.major for g in self._groups.values() if g.major is not None]
