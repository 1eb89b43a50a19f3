"""Repeat faults (同一问题重复修理, SPEC §9): the same circuit and alert raised again soon after a clear.

A new fault on a circuit whose fault of the same alert cleared less than ``window`` ago
carries ``repeat_of`` (``Alarm.extra``, then on its messages) with the earlier work order:
the circuit's own, or the major fault's it was folded under.  Each repeat is counted.
"""

from __future__ import annotations

from collections.abc import Iterable

from alarmd.alarms.grouping import MEMBER_OF, is_major
from alarmd.alarms.lifecycle import Change
from alarmd.metrics import Metrics
from alarmd.model import Alarm


def work_order_of(alarm: Alarm) -> str:
    """The work order a fault was handled under: its own, or that of the major fault it was folded under."""
    member_of = alarm.extra.get(MEMBER_OF)
    return f"WO-{member_of}" if member_of and not alarm.dispatched else f"WO-{alarm.alarm_id}"


class Repeats:
    """The last clear of every circuit and alert, and the mark it leaves on the next fault."""

    def __init__(self, window: float, metrics: Metrics) -> None:
        self.window = window
        self.metrics = metrics
        self._last: dict[tuple[str, str], tuple[str, str, float]] = {}

    def load(self, alarms: Iterable[Alarm]) -> None:
        """Learn the clears from the store's alarms (after a restart)."""
        for alarm in sorted(alarms, key=lambda a: a.cleared_at or 0.0):
            self._note(alarm)

    def _note(self, alarm: Alarm) -> None:
        if alarm.circuit is not None and alarm.cleared_at is not None and not is_major(alarm):
            self._last[alarm.circuit, alarm.rule] = (alarm.alarm_id, work_order_of(alarm), alarm.cleared_at)

    def mark(self, changes: Iterable[Change]) -> None:
        """Note clears, and mark each newly raised fault that repeats a recent one."""
        for change in changes:
            alarm = change.alarm
            if change.kind == "cleared":
                self._note(alarm)
            elif change.kind == "raised" and alarm.circuit is not None and "repeat_of" not in alarm.extra:
                last = self._last.get((alarm.circuit, alarm.rule))
                if last is None or last[0] == alarm.alarm_id or alarm.raised_at - last[2] > self.window:
                    continue
                alarm.extra["repeat_of"] = last[1]
                tier = alarm.tier.value if alarm.tier else "unknown"
                self.metrics.repeat_faults.labels(alarm.alarm_class.value, tier).inc()
