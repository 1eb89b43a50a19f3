"""What ticketing hears, and when: work orders, updates, clears, notices, escalations, status updates.

Every announcement is written with the fault's new state and timers in one store
transaction (the outbox shares the store's database), so a crash never loses a message and
never repeats an escalation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from alarmd.alarms.clocks import ClockPolicy, NoticeKind, Timer
from alarmd.alarms.grouping import is_major
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.maintenance import Outage, Outages, Phase, customer_notices
from alarmd.alarms.store import Store, StoreError
from alarmd.clock import Clock
from alarmd.config import KafkaTopics, MajorFaultsConfig
from alarmd.dispatch.outbox import Dispatcher
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.locale import Locale
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmClass, DueTimes, Notice, Team, TicketFeedback, Tier, WorkOrder, isotime

log = structlog.get_logger("alarmd.announce")

Update = Literal["reparented", "released", "reopened", "flapping", "circuit_added"]


class FeedbackRejectedError(Exception):
    """A ticketing message that cannot be used; it goes to the dead-letter topic with the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Announcer:
    """Turns alarm changes and due timers into messages, keeping each fault's clock in the store."""

    def __init__(
        self,
        topics: KafkaTopics,
        *,
        metrics: Metrics | None = None,
        store: Store,
        dispatcher: Dispatcher,
        router: Router,
        clocks: ClockPolicy,
        clock: Clock,
        outages: Outages | None = None,
        major_faults: MajorFaultsConfig | None = None,
        locale: Locale = "en",
    ) -> None:
        self.topics = topics
        self.outages = outages
        self.major_faults = major_faults or MajorFaultsConfig()
        self.locale = locale
        self.store = store
        self.dispatcher = dispatcher
        self.router = router
        self.clocks = clocks
        self.clock = clock
        self.metrics = metrics
        #: Called with each batch of changes inside its store transaction, once they are announced.
        self.also: Callable[[list[Change]], object] | None = None

    # ------------------------------------------------------------------ changes

    def tell(self, change: Change) -> None:
        """Announce one alarm change (or keep quiet, for a child), and store the fault's new state."""
        alarm = change.alarm
        dispatched = alarm.dispatched
        try:
            self._tell(change)
        except StoreError:
            alarm.dispatched = dispatched  # nothing was stored, so nothing was announced either
            raise

    def tell_all(self, changes: list[Change]) -> None:
        """Announce changes in order, stored in one transaction: a storm of changes costs one commit."""
        before = [(c.alarm, c.alarm.dispatched, dict(c.alarm.extra)) for c in changes]
        try:
            with self.store.transaction():
                for change in changes:
                    self._tell(change)
                if self.also is not None:
                    self.also(changes)
        except StoreError:
            for alarm, dispatched, extra in reversed(before):
                alarm.dispatched, alarm.extra = dispatched, extra  # nothing was stored, nor announced
            raise

    def _tell(self, change: Change) -> None:
        alarm = change.alarm
        held = "planned_outage" in alarm.extra and not alarm.dispatched and alarm.parent_id is None
        with self.store.transaction():
            if change.kind == "raised" and alarm.parent_id is not None:
                pass  # folded under a major fault before its turn came: no work order of its own
            elif change.kind == "raised" and is_major(alarm):
                alarm.dispatched = True
                self._count_fault(alarm)
                self._dispatch_major(alarm)
            elif (
                change.kind == "raised"
                or (change.kind == "released" and not alarm.dispatched)
                or (change.kind in ("reopened", "flapping") and held)
            ):
                alarm.extra.pop("closed", None)
                outage = self.outages.covering(alarm, self.clock.now()) if self.outages is not None else None
                if outage is not None:
                    self._hold(alarm, outage)
                else:
                    self._dispatch(alarm)
            elif change.kind == "cleared" and held:
                alarm.extra["closed"] = "true"  # over within its planned outage: recorded, never dispatched
            elif change.kind == "joined" and alarm.dispatched:
                self._order(alarm, update="circuit_added")
            elif change.kind == "cleared" and alarm.dispatched:
                self._count_repair(alarm)
                self.store.drop_timers(alarm.alarm_id, "escalation", "status_update")
                self.store.add_timers(self.clocks.on_clear(alarm, alarm.cleared_at or self.clock.now()))
                self._order(alarm)
            elif change.kind in ("reparented", "released", "reopened", "flapping") and alarm.dispatched:
                if change.kind == "reopened":
                    self._rearm(alarm)
                self._order(alarm, update=change.kind, previous=change.previous_lead_team)
            self.store.save(alarm, change.kind, at=self.clock.now())

    def _dispatch(self, alarm: Alarm) -> None:
        alarm.dispatched = True
        self._count_fault(alarm)
        self.store.add_timers(self.clocks.on_dispatch(alarm))
        self._order(alarm)
        self._notice(alarm, "notice")

    def _hold(self, alarm: Alarm, outage: Outage) -> None:
        """A fault in a planned outage's scope: recorded and shown as planned, no work order yet."""
        alarm.extra["planned_outage"] = outage.id
        log.info(
            "alarm_held",
            alarm_id=alarm.alarm_id,
            outage=outage.id,
            circuit=alarm.circuit,
            window_ends=isotime(outage.ends_at),
        )

    def _dispatch_major(self, alarm: Alarm) -> None:
        """A major fault is escalated at once: joint handling, the escalation team told, hourly updates."""
        now = self.clock.now()
        alarm.extra["escalated_at"] = isotime(now)
        step = self.clocks.config.status_update_every
        self.store.add_timers([Timer(alarm.alarm_id, "status_update", now + step, 1)])
        self._order(alarm)
        self._notice(alarm, "escalation")

    def _count_fault(self, alarm: Alarm) -> None:
        if self.metrics is not None:
            self.metrics.faults.labels(
                alarm.alarm_class.value, alarm.tier.value if alarm.tier else "unknown"
            ).inc()

    def _count_repair(self, alarm: Alarm) -> None:
        if self.metrics is not None and alarm.cleared_at is not None:
            on_time = alarm.cleared_at <= self.clocks.start(alarm) + self.clocks.escalation_after(alarm)
            tier = alarm.tier.value if alarm.tier else "unknown"
            self.metrics.repairs.labels(tier, "true" if on_time else "false").inc()

    def _rearm(self, alarm: Alarm) -> None:
        """A relapse in observation: the same fault runs again, and so does its clock."""
        alarm.extra["relapsed"] = "true"
        self.store.drop_timers(alarm.alarm_id, "close")
        if "escalated_at" in alarm.extra:
            seq = int(alarm.extra.get("status_updates", "0")) + 1
            step = self.clocks.config.status_update_every
            self.store.add_timers([Timer(alarm.alarm_id, "status_update", self.clock.now() + step, seq)])
        else:
            self.store.add_timers(self.clocks.on_dispatch(alarm))

    # ------------------------------------------------------------------ time

    def on_timers(self, book: AlarmBook, now: float) -> int:
        """Act on every due timer once; return how many acted."""
        acted = 0
        for timer in self.store.due_timers(now):
            alarm = book.find(timer.alarm_id)
            before = dict(alarm.extra) if alarm is not None else {}
            try:
                with self.store.transaction():
                    if not self.store.done(timer) or alarm is None:
                        continue
                    kind, follow = self.clocks.on_fire(alarm, timer)
                    self.store.add_timers(follow)
                    if kind is None:
                        continue
                    if kind == "escalation":
                        alarm.extra["escalated_at"] = isotime(timer.due)
                    elif kind == "status_update":
                        alarm.extra["status_updates"] = str(timer.seq)
                    elif kind == "closed":
                        alarm.extra["closed"] = "true"
                    self._notice(alarm, kind, timer.seq)
                    self.store.save(alarm, kind, f"due {isotime(timer.due)}", at=self.clock.now())
            except StoreError:
                if alarm is not None:
                    alarm.extra = before  # the timer stays due and fires again once the store is writable
                raise
            assert alarm is not None
            assert kind is not None
            if kind == "closed":
                book.forget(alarm)
            acted += 1
            log.info(
                "clock_fired",
                alarm_id=alarm.alarm_id,
                kind=kind,
                due=isotime(timer.due),
                circuit=alarm.circuit,
                tier=alarm.tier.value if alarm.tier else None,
            )
        return acted

    # ------------------------------------------------------------------ planned outages

    def on_outages(self, book: AlarmBook, inventory: Inventory, now: float) -> int:
        """Send the customer notices due and dispatch held faults that outlived their window plus grace."""
        if self.outages is None:
            return 0
        acted = 0
        for outage, phase in self.outages.due_notices(now):
            self._outage_notice(outage, phase, inventory, now)
            acted += 1
        held = 0
        for alarm in list(book.active.values()):
            if alarm.dispatched or alarm.parent_id is not None or "planned_outage" not in alarm.extra:
                continue
            release = self.outages.release_at(alarm)
            if release is not None and now < release:
                alarm.extra["held_until"] = isotime(release)
                held += 1
                continue
            self._release(alarm, now)
            if alarm.dispatched:
                acted += 1
            else:
                held += 1  # another window holds it on
        self.outages.export(now, held)
        return acted

    def _outage_notice(self, outage: Outage, phase: Phase, inventory: Inventory, now: float) -> None:
        assert self.outages is not None
        short = self.outages.short_notice(outage)
        notices = customer_notices(outage, phase, inventory, short=short, now=now)
        with self.store.transaction():
            for notice in notices:
                self.dispatcher.submit(
                    self.topics.notices,
                    notice.customer.id.encode(),
                    notice.model_dump_json().encode(),
                    notice.type,
                )
            self.outages.notified(outage, phase)
        log.info(
            "planned_outage_notice",
            outage=outage.id,
            phase=phase,
            customers=len(notices),
            circuits=len(outage.affected_circuits),
            short_notice=short,
        )

    def _release(self, alarm: Alarm, now: float) -> None:
        """The window (plus grace) is over and the fault is still there: its work order goes out now."""
        assert self.outages is not None
        before, previous = dict(alarm.extra), alarm.extra["planned_outage"]
        try:
            with self.store.transaction():
                other = self.outages.covering(alarm, now)
                if other is not None:
                    self._hold(alarm, other)  # another window open on it holds it on
                    self.store.save(alarm, "held", f"by planned outage {other.id}")
                    return
                alarm.extra.pop("held_until", None)
                alarm.extra["released_at"] = isotime(now)
                self._dispatch(alarm)
                self.store.save(alarm, "outlived_outage", f"planned outage {previous}")
        except StoreError:
            alarm.extra, alarm.dispatched = before, False
            raise
        if self.metrics is not None:
            self.metrics.maintenance_released.inc()
        log.info("alarm_outlived_outage", alarm_id=alarm.alarm_id, outage=previous, circuit=alarm.circuit)

    # ------------------------------------------------------------------ ticketing

    def feedback(self, payload: bytes, book: AlarmBook) -> None:
        """Apply ticketing's word on a work order; acknowledgement stops no clock (SPEC §4)."""
        try:
            fb = TicketFeedback.read(payload)
        except ValueError as exc:
            raise FeedbackRejectedError("schema", str(exc)) from None
        alarm = book.find(fb.work_order_id.removeprefix("WO-"))
        if alarm is None:
            log.warning(
                "ticket_feedback_unknown",
                work_order_id=fb.work_order_id,
                type=fb.type,
                ticket_id=fb.ticket_id,
            )
            return
        with self.store.transaction():
            alarm.extra["ticket_state"] = fb.type
            alarm.extra["ticket_id"] = fb.ticket_id
            if fb.type == "acknowledged":
                alarm.extra.setdefault("acknowledged_at", isotime(fb.at.timestamp()))
            self.store.save(
                alarm, f"ticket_{fb.type}", f"{fb.ticket_id} by {fb.by}".strip(), at=self.clock.now()
            )
        log.info(
            "ticket_feedback",
            alarm_id=alarm.alarm_id,
            work_order_id=fb.work_order_id,
            type=fb.type,
            ticket_id=fb.ticket_id,
            circuit=alarm.circuit,
        )

    # ------------------------------------------------------------------ messages

    def _key(self, alarm: Alarm) -> bytes:
        return (alarm.circuit or alarm.labels.get("device") or alarm.fingerprint).encode()

    def _due(self, alarm: Alarm) -> DueTimes:
        return DueTimes(**self.clocks.due(alarm).as_text())

    def _order(self, alarm: Alarm, *, update: Update | None = None, previous: Team | None = None) -> None:
        order = WorkOrder.from_alarm(
            alarm,
            self.clock.now(),
            update=update,
            previous_lead_team=previous,
            related_teams=self.router.related_teams(alarm.lead_team),
            due=self._due(alarm),
            locale=self.locale,
        )
        self.dispatcher.submit(
            self.topics.work_orders, self._key(alarm), order.model_dump_json().encode(), order.type
        )

    def _notice(self, alarm: Alarm, kind: NoticeKind, seq: int = 0) -> None:
        important = alarm.tier is not None and alarm.tier.important
        related = list(self.router.related_teams(alarm.lead_team))
        if kind == "notice" and not important:
            teams = [Team.SERVICE_SUPPORT.value]  # SPEC §4: ordinary faults, service support is notified
        else:
            teams = list(dict.fromkeys([alarm.lead_team.value, *related, Team.SERVICE_SUPPORT.value]))
        if is_major(alarm):
            teams.append(self.major_faults.escalation_team)
        on_site = alarm.tier is Tier.DIAMOND or (important and alarm.alarm_class is AlarmClass.TRANSMISSION)
        now = self.clock.now()
        notice = Notice(
            type=kind,
            **Notice.identity(alarm, self.locale),
            alarm_class=alarm.alarm_class,
            lead_team=alarm.lead_team,
            to_teams=teams,
            joint_handling=kind in ("escalation", "status_update") or "escalated_at" in alarm.extra,
            service_support_on_site=on_site,
            state="closed" if kind == "closed" else alarm.state,
            fault_age_seconds=round(now - alarm.raised_at, 3),
            status_update_number=seq if kind == "status_update" else 0,
            relapsed=alarm.extra.get("relapsed") == "true",
            due=self._due(alarm),
            sent_at=isotime(now),
        )
        self.dispatcher.submit(self.topics.notices, self._key(alarm), notice.model_dump_json().encode(), kind)
