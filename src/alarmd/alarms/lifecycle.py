"""Turn rule transitions into alarms with circuit, customer, tier, class and lead team."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import structlog

from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmClass, AlarmTransition, Team, fingerprint

log = structlog.get_logger("alarmd.alarms")


def alarm_id(fp: str, active_since: float) -> str:
    """A fault's identity: its series and the moment it started, so a restart derives the same id."""
    return hashlib.sha256(f"{fp}@{active_since:.3f}".encode()).hexdigest()[:20]


class AlarmBook:
    """The active alarms, keyed by fingerprint."""

    def __init__(self, inventory: Inventory, route: Callable[[AlarmClass], Team], metrics: Metrics) -> None:
        self.inventory = inventory
        self.route = route
        self.metrics = metrics
        self.active: dict[str, Alarm] = {}

    def apply(self, transition: AlarmTransition) -> Alarm | None:
        """Record a transition; return the alarm if its state changed."""
        labels = dict(transition.labels)
        fp = transition.fingerprint or fingerprint(labels)
        if transition.kind == "repeat":
            repeated = self.active.get(fp)
            if repeated is not None:
                repeated.occurrences += 1
            return None
        if transition.kind == "firing":
            if fp in self.active:
                return None
            alarm = self._raise(transition, labels, fp)
            self.active[fp] = alarm
            self._count(alarm, +1)
            self.metrics.alarm_transitions.labels("raised").inc()
            log.info(
                "alarm_raised",
                alarm_id=alarm.alarm_id,
                alert=alarm.rule,
                circuit=alarm.circuit,
                device=labels.get("device"),
                interface=labels.get("interface"),
                value=round(alarm.value, 2),
                lead_team=alarm.lead_team.value,
            )
            return alarm
        cleared = self.active.pop(fp, None)
        if cleared is None:
            return None
        cleared.state = "cleared"
        cleared.cleared_at = transition.at
        cleared.value = transition.value
        self._count(cleared, -1)
        self.metrics.alarm_transitions.labels("cleared").inc()
        log.info(
            "alarm_cleared",
            alarm_id=cleared.alarm_id,
            alert=cleared.rule,
            circuit=cleared.circuit,
            value=round(transition.value, 2),
        )
        return cleared

    def _raise(self, transition: AlarmTransition, labels: dict[str, str], fp: str) -> Alarm:
        alarm_class = AlarmClass(labels.get("alarm_class", AlarmClass.DATA_ANOMALY.value))
        placement = self.inventory.place(labels.get("device"), labels.get("interface"), labels.get("circuit"))
        alarm = Alarm(
            alarm_id=alarm_id(fp, transition.active_since),
            rule=transition.rule,
            fingerprint=fp,
            labels=labels,
            annotations=dict(transition.annotations),
            alarm_class=alarm_class,
            lead_team=self.route(alarm_class),
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

    def _count(self, alarm: Alarm, delta: int) -> None:
        tier = alarm.tier.value if alarm.tier else "unknown"
        self.metrics.alarms_active.labels(alarm.alarm_class.value, alarm.lead_team.value, tier).inc(delta)
