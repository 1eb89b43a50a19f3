"""The analysis report of one major fault (重大故障分析报告, SPEC §9), as markdown.

It gives the element, the circuits and customers it took down by tier, the timeline of
every milestone (circuits down, the fault opened, joins, escalation and status updates,
ticketing's word, circuits back, stragglers released, the clear and the close), and the
repeats: circuits of the fault that were themselves repeats, and faults since that repeat it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

from alarmd.alarms.grouping import MEMBER_OF
from alarmd.alarms.repeats import work_order_of
from alarmd.model import Alarm, Tier, major_detail

History = Callable[[str], list[tuple[float, str, str]]]

_TIERS = (Tier.DIAMOND, Tier.GOLD, Tier.ORDINARY)
#: History events of the major fault worth a line, and how the timeline says them.
_MILESTONES = {
    "raised": "major fault opened (threshold reached); work order sent, escalated at once",
    "joined": "circuit added to the major fault",
    "escalation": "escalation: joint handling",
    "status_update": "status update",
    "cleared": "major fault cleared",
    "closed": "closed after observation",
    "ticket_acknowledged": "ticketing acknowledged",
    "ticket_in_progress": "ticketing: in progress",
    "ticket_resolved": "ticketing: resolved",
    "ticket_closed": "ticketing: closed",
}


def _span(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def analysis_report(
    major: Alarm, alarms: Iterable[Alarm], history: History, *, utc_offset_hours: float, now: float
) -> str:
    """The markdown report of ``major``, from every alarm the store knows and their histories."""
    detail = major_detail(major)
    if detail is None:
        raise ValueError(f"WO-{major.alarm_id} is not a major fault")
    tz = datetime.timezone(datetime.timedelta(hours=utc_offset_hours))

    def when(epoch: float) -> str:
        return datetime.datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S")

    everything = list(alarms)
    children = sorted(
        (a for a in everything if a.extra.get(MEMBER_OF) == major.alarm_id),
        key=lambda a: (a.raised_at, a.circuit or ""),
    )
    end = major.cleared_at if major.cleared_at is not None else now
    lines = [
        f"# Major fault WO-{major.alarm_id}: {detail.element_kind} {detail.element}",
        "",
        f"- Element: **{detail.element}** ({detail.element_kind})",
        f"- Class: {major.alarm_class.value}; lead team: {major.lead_team.value}; "
        f"tier: {major.tier.value if major.tier else '-'}",
        f"- Circuits: {detail.circuit_count}; customers: {len(detail.customers)}",
        f"- From {when(major.raised_at)} to "
        + (when(major.cleared_at) if major.cleared_at is not None else "(still open)")
        + f" (UTC{utc_offset_hours:+g}): {_span(end - major.raised_at)}",
        "",
        "## Circuits and customers by tier",
    ]
    for tier in (*_TIERS, None):
        of_tier = [a for a in children if a.tier is tier]
        if not of_tier:
            continue
        customers = len({a.customer for a in of_tier})
        lines += [
            "",
            f"### {tier.value if tier else 'no tier'}: {len(of_tier)} circuits, {customers} customers",
            "",
            "| circuit | customer | alert | down | back | outage | own work order |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in of_tier:
            back = a.cleared_at
            outage = (back if back is not None else now) - a.raised_at
            own = f"WO-{a.alarm_id}" if a.dispatched else "-"
            lines.append(
                f"| {a.circuit} | {a.customer_name or a.customer} | {a.rule} | {when(a.raised_at)} | "
                f"{when(back) if back is not None else 'still down'} | {_span(outage)} | {own} |"
            )
    events: list[tuple[float, str]] = [(a.raised_at, f"{a.circuit} down ({a.rule})") for a in children]
    events += [(a.cleared_at, f"{a.circuit} back") for a in children if a.cleared_at is not None]
    for at, event, detail_text in history(major.alarm_id):
        if event in _MILESTONES:
            text = _MILESTONES[event] + (f" ({detail_text})" if detail_text else "")
            events.append((at, text))
    for child in children:
        events += [
            (at, f"{child.circuit} still down: released to a work order of its own")
            for at, event, _ in history(child.alarm_id)
            if event == "released"
        ]
    lines += ["", "## Timeline", "", "| time | milestone |", "|---|---|"]
    lines += [f"| {when(at)} | {text} |" for at, text in sorted(events, key=lambda e: e[0])]
    lines += ["", "## Repeats", ""]
    orders = {f"WO-{major.alarm_id}"} | {work_order_of(a) for a in children}
    before = [a for a in children if "repeat_of" in a.extra]
    after = [a for a in everything if a.extra.get("repeat_of") in orders and a.alarm_id != major.alarm_id]
    if not before and not after:
        lines.append("None: no circuit of this fault had failed the same way within the repeat window.")
    for a in before:
        lines.append(f"- {a.circuit} ({a.customer_name or a.customer}) repeated {a.extra['repeat_of']}")
    for a in sorted(after, key=lambda a: a.raised_at):
        lines.append(
            f"- {a.circuit} ({a.customer_name or a.customer}) failed again at {when(a.raised_at)}: "
            f"WO-{a.alarm_id} repeats {a.extra['repeat_of']}"
        )
    return "\n".join(lines) + "\n"
