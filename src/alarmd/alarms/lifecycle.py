"""Turn rule transitions into alarms: identity, circuit and tier, lead team, root cause, flapping.

:meth:`AlarmBook.apply` returns :class:`Change` records that say what dispatch should tell
ticketing: a root alarm raised or cleared, an open alarm folded under a root cause (its
lead team re-assigned), a child released when its root cause cleared, an alarm re-opened
or found flapping.  Children are kept, visible and linked, but get no work order of their
own while their root cause fires (SPEC §3).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from alarmd.alarms.inhibit import Correlator
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmClass, AlarmTransition, Team, Tier, fingerprint

log = structlog.get_logger("alarmd.alarms")

ChangeKind = Literal["raised", "cleared", "reparented", "released", "reopened", "flapping", "joined"]


def alarm_id(fp: str, active_since: float) -> str:
    """A fault's identity: its series and the moment it started, so a restart derives the same id."""
    return hashlib.sha256(f"{fp}@{active_since:.3f}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Change:
    """Something ticketing should hear about an alarm."""

    kind: ChangeKind
    alarm: Alarm
    previous_lead_team: Team | None = None


class AlarmBook:
    """The alarms that are firing (and recently cleared ones, to spot flapping), keyed by fingerprint."""

    def __init__(
        self,
        inventory: Inventory,
        route: Callable[[Mapping[str, str]], Team],
        metrics: Metrics,
        correlator: Correlator | None = None,
        *,
        flap_window: float = 600.0,
        flap_threshold: int = 4,
        reopen_window: float = 3600.0,
        watch_window: float = 86400.0,
    ) -> None:
        self.inventory = inventory
        self.route = route
        self.metrics = metrics
        self.correlator = correlator or Correlator(inventory)
        self.flap_window = flap_window
        self.flap_threshold = flap_threshold
        self.reopen_window = reopen_window
        self.watch_window = watch_window
        self.watched: dict[str, tuple[str, float]] = {}
        self.active: dict[str, Alarm] = {}
        self.recent: dict[str, Alarm] = {}
        self._changes: dict[str, deque[float]] = {}

    # ------------------------------------------------------------------ transitions

    def apply(self, transition: AlarmTransition) -> list[Change]:
        """Record a transition; return what changed."""
        labels = dict(transition.labels)
        fp = transition.fingerprint or fingerprint(labels)
        if transition.kind == "repeat":
            if fp in self.active:
                self.active[fp].occurrences += 1
            return []
        if transition.kind == "firing":
            return self._fire(transition, labels, fp) if fp not in self.active else []
        return self._clear(transition, fp)

    def _fire(self, transition: AlarmTransition, labels: dict[str, str], fp: str) -> list[Change]:
        flaps = self._flap_count(fp, transition.at)
        previous = self.recent.pop(fp, None)
        if previous is not None:
            alarm = previous
            alarm.state, alarm.cleared_at, alarm.value = "firing", None, transition.value
            alarm.occurrences += 1
        else:
            alarm = self._new(transition, labels, fp)
            watched = self.watched.pop(fp, None)
            if watched is not None and transition.at <= watched[1]:
                alarm.extra["relapse_of"] = watched[0]  # within the business watch after a close (SPEC §5)
        self.active[fp] = alarm
        self._count(alarm, +1)
        self.metrics.alarm_transitions.labels("raised").inc()
        changes: list[Change] = []
        parent = self.correlator.parent_for(alarm, (a for a in self.active.values() if a.parent_id is None))
        if parent is not None:
            alarm.parent_id = parent.alarm_id
            alarm.lead_team = parent.lead_team
        elif previous is None:
            changes.append(Change("raised", alarm))
        if previous is not None and alarm.parent_id is None:
            if flaps >= self.flap_threshold and not alarm.flapping:
                alarm.flapping = True
                changes.append(Change("flapping", alarm))
            elif not alarm.flapping:
                changes.append(Change("reopened", alarm))
        if alarm.parent_id is None:
            changes.extend(self._adopt(alarm))
        log.info(
            "alarm_raised",
            alarm_id=alarm.alarm_id,
            alert=alarm.rule,
            circuit=alarm.circuit,
            device=labels.get("device"),
            interface=labels.get("interface"),
            value=round(alarm.value, 2),
            lead_team=alarm.lead_team.value,
            parent=alarm.parent_id,
            reopened=previous is not None,
        )
        return changes

    def _clear(self, transition: AlarmTransition, fp: str) -> list[Change]:
        alarm = self.active.pop(fp, None)
        if alarm is None:
            return []
        self._flap_count(fp, transition.at)
        alarm.state, alarm.cleared_at, alarm.value = "cleared", transition.at, transition.value
        self._count(alarm, -1)
        self.metrics.alarm_transitions.labels("cleared").inc()
        self.recent[fp] = alarm
        log.info(
            "alarm_cleared",
            alarm_id=alarm.alarm_id,
            alert=alarm.rule,
            circuit=alarm.circuit,
            value=round(transition.value, 2),
            flapping=alarm.flapping,
        )
        changes = [] if alarm.flapping else [Change("cleared", alarm)]
        return changes + self._release(alarm)

    # ------------------------------------------------------------------ correlation

    def _adopt(self, root: Alarm) -> list[Change]:
        """Fold firing root alarms that ``root`` explains under it (and their children with them)."""
        changes: list[Change] = []
        for other in list(self.active.values()):
            if other is root or other.parent_id is not None or not self.correlator.is_parent(root, other):
                continue
            for child in list(self.active.values()):
                if child.parent_id == other.alarm_id:
                    self._reassign(child, root.alarm_id, root.lead_team)
            previous = other.lead_team
            self._reassign(other, root.alarm_id, root.lead_team)
            changes.append(Change("reparented", other, previous))
            log.info(
                "alarm_reparented",
                alarm_id=other.alarm_id,
                parent=root.alarm_id,
                lead_team=root.lead_team.value,
                previous_lead_team=previous.value,
            )
        return changes

    def _release(self, root: Alarm) -> list[Change]:
        """Children of a cleared root cause stand on their own again, unless another root explains them."""
        changes: list[Change] = []
        for child in [a for a in self.active.values() if a.parent_id == root.alarm_id]:
            previous = child.lead_team
            roots = (a for a in self.active.values() if a.parent_id is None and a is not child)
            parent = self.correlator.parent_for(child, roots)
            if parent is not None:
                self._reassign(child, parent.alarm_id, parent.lead_team)
                changes.append(Change("reparented", child, previous))
                continue
            self._reassign(child, None, self.route(child.labels))
            changes.append(Change("released", child, previous))
        return changes

    def amend(
        self,
        alarm: Alarm,
        *,
        parent_id: str | None = None,
        lead_team: Team | None = None,
        tier: Tier | None = None,
    ) -> None:
        """Fold an open alarm under a parent, or give it another lead team or tier; the gauges follow."""
        self._count(alarm, -1)
        if parent_id is not None:
            alarm.parent_id = parent_id
        alarm.lead_team = lead_team or alarm.lead_team
        alarm.tier = tier or alarm.tier
        self._count(alarm, +1)

    def parent_of(self, alarm: Alarm) -> Alarm | None:
        """The firing alarm this one is folded under."""
        return next((a for a in self.active.values() if a.alarm_id == alarm.parent_id), None)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[Change]:
        """A flapping alarm sends its clear once quiet for the flap window; old clears are let go."""
        changes: list[Change] = []
        for fp, alarm in list(self.recent.items()):
            if alarm.cleared_at is None:
                continue
            quiet = now - alarm.cleared_at
            if alarm.flapping and quiet >= self.flap_window:
                alarm.flapping = False
                changes.append(Change("cleared", alarm))
            if not alarm.flapping and quiet >= max(self.flap_window, self.reopen_window):
                del self.recent[fp]
                self._changes.pop(fp, None)
        return changes

    def find(self, alarm_id: str) -> Alarm | None:
        """A firing or recently cleared alarm by id."""
        for alarm in (*self.active.values(), *self.recent.values()):
            if alarm.alarm_id == alarm_id:
                return alarm
        return None

    def forget(self, alarm: Alarm) -> None:
        """Let a closed fault go: a new occurrence is a new fault, flagged as a relapse during the watch."""
        self.recent.pop(alarm.fingerprint, None)
        self._changes.pop(alarm.fingerprint, None)
        if alarm.cleared_at is not None:
            self.watched[alarm.fingerprint] = (alarm.alarm_id, alarm.cleared_at + self.watch_window)

    def restore(self, alarm: Alarm) -> None:
        """Take back an alarm from the store after a restart."""
        if alarm.state == "firing":
            self.active[alarm.fingerprint] = alarm
            self._count(alarm, +1)
        else:
            self.recent[alarm.fingerprint] = alarm

    def _flap_count(self, fp: str, at: float) -> int:
        times = self._changes.setdefault(fp, deque())
        times.append(at)
        while times and at - times[0] > self.flap_window:
            times.popleft()
        return len(times)

    # ------------------------------------------------------------------ helpers

    def _new(self, transition: AlarmTransition, labels: dict[str, str], fp: str) -> Alarm:
        alarm_class = AlarmClass(labels.get("alarm_class", AlarmClass.DATA_ANOMALY.value))
        placement = self.inventory.place(labels.get("device"), labels.get("interface"), labels.get("circuit"))
        alarm = Alarm(
            alarm_id=alarm_id(fp, transition.active_since),
            rule=transition.rule,
            fingerprint=fp,
            labels=labels,
            annotations=dict(transition.annotations),
            alarm_class=alarm_class,
            lead_team=self.route(labels),
            severity=labels.get("severity", "major"),
            value=transition.value,
            threshold=transition.threshold,
            raised_at=transition.at,
        )
        if placement is not None:
            alarm.circuit = placement.circuit.id
            alarm.customer = placement.customer.id
            alarm.customer_name = placement.customer.name
            alarm.tier = placement.customer.tier
        return alarm

    def _reassign(self, alarm: Alarm, parent_id: str | None, team: Team) -> None:
        self._count(alarm, -1)
        alarm.parent_id, alarm.lead_team = parent_id, team
        self._count(alarm, +1)

    def _count(self, alarm: Alarm, delta: int) -> None:
        tier = alarm.tier.value if alarm.tier else "unknown"
        self.metrics.alarms_active.labels(alarm.alarm_class.value, alarm.lead_team.value, tier).inc(delta)
