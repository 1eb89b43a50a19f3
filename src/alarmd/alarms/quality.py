"""Quality figures the operator reports (SPEC §7), computed from the alarm store over a window.

- **fault count** and **total fault duration** (障碍次数, 障碍历时): root faults (not folded
  under another) that overlap the window, and the time they overlap it;
- **availability**: 1 - (time with a transmission-class fault, overlaps merged) ÷ window; a
  data anomaly degrades a line but does not make it unavailable;
- **repair timeliness** (故障修复及时率): faults repaired within their limit (1 h for diamond and
  gold, 3 h for ordinary, the escalation clock) ÷ faults that were repaired, or are overdue,
  in the window;
- **planned outages** (SPEC §9): faults raised inside a planned outage's scope and window are
  counted apart (``planned_faults``), and a second availability leaves the planned windows out
  of both the outage time and the window; a fault over within its outage had no work order and
  so no repair limit.
Data-collection completeness is exported live as metrics (``alarmd_collection_*``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.maintenance import Outage
from alarmd.model import Alarm, AlarmClass

By = Literal["circuit", "customer", "device"]


@dataclass(frozen=True, slots=True)
class QualityRow:
    """The figures of one circuit, customer or device."""

    key: str
    customer: str
    tier: str
    faults: int
    fault_seconds: float
    availability: float
    repaired_on_time: int
    repairs_due: int
    planned_faults: int = 0
    planned_seconds: float = 0.0
    availability_unplanned: float = 1.0

    @property
    def timeliness(self) -> float | None:
        """Faults repaired within their limit ÷ faults whose limit fell in the window."""
        return self.repaired_on_time / self.repairs_due if self.repairs_due else None


def _merged(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _without(spans: list[tuple[float, float]], cut: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of ``spans`` outside every interval of ``cut``."""
    out = []
    for start, stop in spans:
        at = start
        for a, b in sorted(cut):
            if b <= at or a >= stop:
                continue
            if a > at:
                out.append((at, a))
            at = max(at, b)
        if at < stop:
            out.append((at, stop))
    return out


def _planned(
    outages: Iterable[Outage], by: By, key: str, start: float, end: float
) -> list[tuple[float, float]]:
    """The windows of the outages that touch a circuit, customer or device, within [start, end)."""
    spans = []
    for outage in outages:
        touched = {
            "circuit": outage.affected_circuits,
            "customer": outage.affected_customers,
            "device": outage.devices,
        }
        a, b = max(outage.starts_at, start), min(outage.ends_at, end)
        if not outage.cancelled and key in touched[by] and a < b:
            spans.append((a, b))
    return spans


def quality(
    alarms: Iterable[Alarm],
    *,
    start: float,
    end: float,
    now: float,
    clocks: ClockPolicy,
    by: By = "circuit",
    customer: str | None = None,
    outages: Iterable[Outage] = (),
) -> list[QualityRow]:
    """Figures per circuit, customer or device for faults overlapping [start, end)."""
    windows = list(outages)
    window = end - start
    groups: dict[str, list[Alarm]] = defaultdict(list)
    for alarm in alarms:
        if alarm.parent_id is not None or (customer is not None and alarm.customer != customer):
            continue
        finished = alarm.cleared_at if alarm.cleared_at is not None else now
        if alarm.raised_at >= end or finished <= start:
            continue
        key = {"circuit": alarm.circuit, "customer": alarm.customer, "device": alarm.labels.get("device")}[by]
        groups[key or "(none)"].append(alarm)
    rows = []
    for key, faults in sorted(groups.items()):
        spans = [
            (max(a.raised_at, start), min(a.cleared_at if a.cleared_at is not None else now, end))
            for a in faults
        ]
        down = [
            span for a, span in zip(faults, spans, strict=True) if a.alarm_class is AlarmClass.TRANSMISSION
        ]
        on_time = due = 0
        for alarm in faults:
            if "planned_outage" in alarm.extra and not alarm.dispatched:
                continue  # over within its planned outage: no work order, no limit
            limit = clocks.start(alarm) + clocks.escalation_after(alarm)
            repaired = alarm.cleared_at
            if repaired is not None and start <= repaired < end:
                due += 1
                on_time += repaired <= limit
            elif repaired is None and start <= limit < min(end, now):
                due += 1  # overdue and still open
        first = faults[0]
        planned = _planned(windows, by, key, start, end)
        planned_seconds = _merged(planned)
        planned_faults = sum(1 for a in faults if "planned_outage" in a.extra)
        rest = window - planned_seconds
        rows.append(
            QualityRow(
                key=key,
                customer=first.customer_name or first.customer or "",
                tier=first.tier.value if first.tier else "",
                faults=len(faults) - planned_faults,
                fault_seconds=round(sum(b - a for a, b in spans), 3),
                availability=round(1 - _merged(down) / window, 6) if window > 0 else 1.0,
                repaired_on_time=on_time,
                repairs_due=due,
                planned_faults=planned_faults,
                planned_seconds=round(planned_seconds, 3),
                availability_unplanned=round(1 - _merged(_without(down, planned)) / rest, 6)
                if rest > 0
                else 1.0,
            )
        )
    return rows
