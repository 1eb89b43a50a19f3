"""The clock of every fault by customer tier (SPEC §4, §5), as pure decisions on given times.

At dispatch an important customer's fault (diamond, gold) gets an escalation timer at 1 h and
an on-site deadline at 2 h; an ordinary customer's at 3 h.  An escalation starts joint
handling, and a status update follows every hour until the fault clears.  A clear stops
those clocks and starts observation (1 h, then close) and the business watch (1 day); the
fault summary is due 2 working days and the satisfaction call-back 2 weeks after the clear.
Acknowledgement stops nothing: the clocks are about resolution.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from alarmd.config import ClocksConfig
from alarmd.model import Alarm, isotime

TimerKind = Literal["escalation", "status_update", "close"]
NoticeKind = Literal["notice", "escalation", "status_update", "closed"]


@dataclass(frozen=True, slots=True)
class Timer:
    """Something due for one fault at one time; ``seq`` tells hourly updates apart."""

    alarm_id: str
    kind: TimerKind
    due: float
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Due:
    """The due times stamped on a fault's messages (epoch seconds, None where not yet known)."""

    escalation_at: float | None
    on_site_by: float | None
    observation_ends: float | None
    business_watch_ends: float | None
    summary_due: float | None
    callback_due: float | None

    def as_text(self) -> dict[str, str | None]:
        """The due times as RFC 3339 strings, for messages."""
        return {
            k: (isotime(v) if v is not None else None)
            for k, v in (
                ("escalation_at", self.escalation_at),
                ("on_site_by", self.on_site_by),
                ("observation_ends", self.observation_ends),
                ("business_watch_ends", self.business_watch_ends),
                ("summary_due", self.summary_due),
                ("callback_due", self.callback_due),
            )
        }


class ClockPolicy:
    """Timers and due dates of faults under one clock configuration."""

    def __init__(self, config: ClocksConfig | None = None) -> None:
        self.config = config or ClocksConfig()
        self._tz = datetime.timezone(datetime.timedelta(hours=self.config.utc_offset_hours))

    @staticmethod
    def start(alarm: Alarm) -> float:
        """When a fault's clock starts: its raise, or for one held by a planned outage, its release."""
        released = alarm.extra.get("released_at")
        return datetime.datetime.fromisoformat(released).timestamp() if released else alarm.raised_at

    def escalation_after(self, alarm: Alarm) -> float:
        """How long a fault may stay unresolved before joint handling starts."""
        important = alarm.tier is not None and alarm.tier.important
        return self.config.important_escalation if important else self.config.ordinary_escalation

    def on_dispatch(self, alarm: Alarm) -> list[Timer]:
        """The timers a newly dispatched fault starts: its escalation, counted from the fault."""
        return [Timer(alarm.alarm_id, "escalation", self.start(alarm) + self.escalation_after(alarm))]

    def on_fire(self, alarm: Alarm, timer: Timer) -> tuple[NoticeKind | None, list[Timer]]:
        """What a due timer means now, and the timers that follow it."""
        if timer.kind == "close":
            return ("closed", []) if alarm.state == "cleared" else (None, [])
        if alarm.state != "firing":
            return None, []
        step = self.config.status_update_every
        next_update = Timer(alarm.alarm_id, "status_update", timer.due + step, timer.seq + 1)
        return ("escalation" if timer.kind == "escalation" else "status_update"), [next_update]

    def on_clear(self, alarm: Alarm, now: float) -> list[Timer]:
        """A clear: the observation period starts; the caller drops the fault's running timers."""
        return [Timer(alarm.alarm_id, "close", now + self.config.observation)]

    def due(self, alarm: Alarm) -> Due:
        """Every due time of a fault in its current state."""
        important = alarm.tier is not None and alarm.tier.important
        cleared = alarm.cleared_at
        start = self.start(alarm)
        return Due(
            escalation_at=start + self.escalation_after(alarm),
            on_site_by=start + self.config.on_site_deadline if important else None,
            observation_ends=cleared + self.config.observation if cleared is not None else None,
            business_watch_ends=cleared + self.config.business_watch if cleared is not None else None,
            summary_due=self.working_days_after(cleared, self.config.summary_working_days)
            if cleared is not None
            else None,
            callback_due=cleared + self.config.callback if cleared is not None else None,
        )

    def working_days_after(self, at: float, days: int) -> float:
        """The same local time ``days`` working days later (weekends and holidays skipped)."""
        moment = datetime.datetime.fromtimestamp(at, self._tz)
        holidays = set(self.config.holidays)
        left = days
        while left > 0:
            moment += datetime.timedelta(days=1)
            if moment.weekday() < 5 and moment.date() not in holidays:
                left -= 1
        return moment.timestamp()
