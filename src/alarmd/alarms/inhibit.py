"""Which alarm is the root cause of which (SPEC §3: own network first), as pure decisions.

Two sources of parenthood: the circuit path (a transmission alarm on a circuit, or an
unreachable device on its path, is the parent of that circuit's data anomalies; an
unreachable device is the parent of the unreachability of the devices behind it), and
Alertmanager-shaped ``inhibit_rules`` (a firing source alarm is the parent of matching
targets whose ``equal`` labels agree).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from alarmd.config import RoutingConfig
from alarmd.inventory import Inventory
from alarmd.matchers import Matcher, matches_all, parse_matcher_list
from alarmd.model import Alarm, AlarmClass

UNREACHABLE = "DeviceUnreachable"


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """A compiled inhibit rule."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


class Correlator:
    """Finds the parent (root cause) of an alarm among the alarms that are firing."""

    def __init__(self, inventory: Inventory, config: RoutingConfig | None = None) -> None:
        config = config or RoutingConfig()
        self.inventory = inventory
        self.path_correlation = config.path_correlation
        self.rules = [
            InhibitRule(
                parse_matcher_list(r.source_matchers), parse_matcher_list(r.target_matchers), tuple(r.equal)
            )
            for r in config.inhibit_rules
        ]
        # device -> devices upstream of it (closer to the operator's network) on some circuit path
        self._upstream: dict[str, set[str]] = {}
        for circuit in inventory.circuits.values():
            names = [hop.device for hop in circuit.path]
            for i, device in enumerate(names):
                self._upstream.setdefault(device, set()).update(names[i + 1 :])

    def parent_for(self, alarm: Alarm, candidates: Iterable[Alarm]) -> Alarm | None:
        """The first candidate (oldest first) that is a root cause of ``alarm``, if any."""
        for candidate in sorted(candidates, key=lambda a: a.raised_at):
            if candidate.alarm_id != alarm.alarm_id and self.is_parent(candidate, alarm):
                return candidate
        return None

    def is_parent(self, source: Alarm, target: Alarm) -> bool:
        """Whether ``source`` explains ``target``."""
        if self.path_correlation and self._path_parent(source, target):
            return True
        return any(
            matches_all(rule.source, source.labels)
            and matches_all(rule.target, target.labels)
            and all(source.labels.get(name, "") == target.labels.get(name, "") for name in rule.equal)
            for rule in self.rules
        )

    def _path_parent(self, source: Alarm, target: Alarm) -> bool:
        source_device = source.labels.get("device")
        if source.rule == UNREACHABLE and target.rule == UNREACHABLE:
            target_device = target.labels.get("device", "")
            return source_device in self._upstream.get(target_device, set())
        if target.alarm_class is not AlarmClass.DATA_ANOMALY or target.circuit is None:
            return False
        if source.alarm_class is AlarmClass.TRANSMISSION and source.circuit == target.circuit:
            return True
        if source.rule == UNREACHABLE and source_device is not None:
            circuit = self.inventory.circuits.get(target.circuit)
            return circuit is not None and any(hop.device == source_device for hop in circuit.path)
        return False
