"""Acceptance timelines for the fault clocks, on virtual time: push events at t, expect messages at t."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.store import Store
from alarmd.announce import Announcer
from alarmd.cli import message_schemas
from alarmd.config import ClocksConfig, Config, KafkaTopics
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, fingerprint
from alarmd.testing import FakeClock, FakeSink

HOUR = 3600.0
CONFIG = Config.model_validate(
    {
        "customers": [
            {"id": "GOLD", "name": "Harbour Logistics", "tier": "gold"},
            {"id": "PLAIN", "name": "Riverside School", "tier": "ordinary"},
            {"id": "DIAMOND", "name": "City Bank", "tier": "diamond"},
        ],
        "devices": [
            {"name": f"r{i}", "kind": "cpe_router", "address": f"127.0.0.{i}", "snmp": {"community": "c"}}
            for i in (1, 2, 3)
        ],
        "circuits": [
            {"id": "CIR-G", "customer": "GOLD", "path": [{"device": "r1"}]},
            {"id": "CIR-O", "customer": "PLAIN", "path": [{"device": "r2"}]},
            {"id": "CIR-D", "customer": "DIAMOND", "path": [{"device": "r3"}]},
        ],
    }
)
# 2026-11-23 is a Monday; 02:00 UTC is 10:00 in the operator's UTC+8
MONDAY_10H = datetime.datetime(2026, 11, 23, 2, 0, tzinfo=datetime.UTC).timestamp()


class Timeline:
    """The alarm stage and the announcer on a fake clock, with the outbox read back as messages."""

    def __init__(self, tmp_path: Path, clocks: ClocksConfig | None = None) -> None:
        self.clock = FakeClock(start=MONDAY_10H)
        self.path = tmp_path / "alarmd.sqlite"
        self.clocks = clocks or ClocksConfig()
        self.open()

    def open(self) -> None:
        self.store = Store(self.path)
        self.outbox = Outbox(self.store.connection)
        inventory = Inventory(CONFIG)
        router = Router()
        self.book = AlarmBook(
            inventory,
            router.lead_team,
            Metrics(),
            Correlator(inventory),
            reopen_window=self.clocks.observation,
            watch_window=self.clocks.business_watch,
        )
        dispatcher = Dispatcher(self.outbox, FakeSink(), Metrics())
        self.announcer = Announcer(
            KafkaTopics(),
            store=self.store,
            dispatcher=dispatcher,
            router=router,
            clocks=ClockPolicy(self.clocks),
            clock=self.clock,
        )
        for alarm in self.store.open_alarms():
            self.book.restore(alarm)

    def fire(self, device: str, kind: str = "firing", alert: str = "BandwidthOccupancyHigh") -> None:
        labels = {"alertname": alert, "device": device, "alarm_class": "data_anomaly", "severity": "major"}
        now = self.clock.now()
        t = AlarmTransition(
            kind=kind,
            rule=alert,
            labels=labels,
            annotations={"summary": "busy"},  # type: ignore[arg-type]
            value=90.0,
            threshold=80.0,
            at=now,
            active_since=now,
            fingerprint=fingerprint(labels),
        )
        for change in self.book.apply(t):
            self.announcer.tell(change)

    def run_until(self, seconds: float, step: float = 60.0) -> None:
        """Advance the clock to ``seconds`` after the start, acting on timers every ``step``."""
        end = MONDAY_10H + seconds
        while True:
            self.announcer.on_timers(self.book, self.clock.now())
            self.book.tick(self.clock.now())
            if self.clock.now() >= end:
                return
            self.clock.advance(min(step, end - self.clock.now()))

    def sent(self) -> list[tuple[str, str, float]]:
        """(topic, type, seconds after start) of every message, in order."""
        out = []
        for m in self.outbox.pending(10_000):
            body = json.loads(m.value)
            at = datetime.datetime.fromisoformat(body["sent_at"].replace("Z", "+00:00")).timestamp()
            out.append((m.topic.split(".")[1], body["type"], at - MONDAY_10H))
        return out


def test_important_customer_timeline(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")  # gold customer, at 10:00
    tl.run_until(3.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.run_until(5 * HOUR)
    assert tl.sent() == [
        ("workorders", "work_order", 0),
        ("notices", "notice", 0),
        ("notices", "escalation", HOUR),  # unresolved at 1 h: joint handling
        ("notices", "status_update", 2 * HOUR),  # hourly while in joint handling
        ("notices", "status_update", 3 * HOUR),
        ("workorders", "work_order_clear", 3.5 * HOUR),
        ("notices", "closed", 4.5 * HOUR),  # 1 h of observation after the clear
    ]
    bodies = [json.loads(m.value) for m in tl.outbox.pending(100)]
    order, notice, escalation = bodies[0], bodies[1], bodies[2]
    assert order["due"]["on_site_by"] == "2026-11-23T04:00:00.000Z"
    assert order["due"]["escalation_at"] == "2026-11-23T03:00:00.000Z"
    assert notice["to_teams"] == ["service_support", "transport_network", "data_network"]
    assert escalation["joint_handling"] and "service_support" in escalation["to_teams"]
    assert not escalation["service_support_on_site"], "a gold data anomaly needs no site lead"
    clear = bodies[5]
    # cleared Monday 13:30 local: summary due 2 working days later, call-back in 2 weeks
    assert clear["due"]["summary_due"] == "2026-11-25T05:30:00.000Z"
    assert clear["due"]["callback_due"] == "2026-12-07T05:30:00.000Z"
    assert clear["due"]["observation_ends"] == "2026-11-23T06:30:00.000Z"


def test_ordinary_customer_escalates_at_three_hours(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r2")
    tl.run_until(4.5 * HOUR)
    assert tl.sent() == [
        ("workorders", "work_order", 0),
        ("notices", "notice", 0),
        ("notices", "escalation", 3 * HOUR),
        ("notices", "status_update", 4 * HOUR),
    ]
    notice = json.loads(tl.outbox.pending(10)[1].value)
    assert notice["to_teams"] == ["service_support"]
    assert notice["due"]["on_site_by"] is None


def test_resolved_before_the_clock_never_escalates(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")
    tl.run_until(0.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.run_until(3 * HOUR)
    assert [t for _, t, _ in tl.sent()] == ["work_order", "notice", "work_order_clear", "closed"]


def test_diamond_fault_needs_service_support_on_site(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r3")
    assert json.loads(tl.outbox.pending(10)[1].value)["service_support_on_site"] is True


def test_a_relapse_during_observation_reopens_the_same_fault_and_its_clock(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")
    tl.run_until(0.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.run_until(1.0 * HOUR)
    tl.fire("r1")  # 30 min into observation: the same fault again
    tl.run_until(2.5 * HOUR)
    sent = tl.sent()
    assert [t for _, t, _ in sent] == [
        "work_order",
        "notice",
        "work_order_clear",
        "work_order_update",
        "escalation",
        "status_update",
    ]
    bodies = [json.loads(m.value) for m in tl.outbox.pending(100)]
    assert len({b["work_order_id"] for b in bodies}) == 1
    assert bodies[3]["update"] == "reopened"
    assert sent[4][2] == HOUR, "the clock still counts from the fault, not from the relapse"
    assert bodies[4]["relapsed"] is True


def test_clocks_survive_a_restart_and_never_fire_twice(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")
    tl.run_until(0.75 * HOUR)
    tl.store.close()  # the daemon dies 45 minutes into the fault
    tl.clock.advance(0.5 * HOUR)  # ... and is back 30 minutes later, past the 1 h escalation
    tl.open()
    tl.run_until(1.5 * HOUR)
    sent = tl.sent()
    assert [t for _, t, _ in sent] == ["work_order", "notice", "escalation"]
    assert sent[2][2] == pytest.approx(1.25 * HOUR), "sent as soon as the daemon is back"
    assert json.loads(tl.outbox.pending(10)[2].value)["due"]["escalation_at"] == "2026-11-23T03:00:00.000Z"
    tl.store.close()
    tl.open()  # a second restart after the escalation: nothing repeats
    tl.run_until(1.9 * HOUR)
    assert [t for _, t, _ in tl.sent()] == ["work_order", "notice", "escalation"]
    tl.run_until(2.3 * HOUR)
    assert [t for _, t, _ in tl.sent()][-1] == "status_update"


def test_working_days_skip_weekends_and_holidays() -> None:
    friday = datetime.datetime(2026, 11, 27, 8, 0, tzinfo=datetime.UTC).timestamp()  # Fri 16:00 +08
    plain = ClockPolicy(ClocksConfig())
    assert plain.working_days_after(friday, 2) == friday + 4 * 86400  # Tuesday
    holiday = ClockPolicy(ClocksConfig(holidays=[datetime.date(2026, 11, 30)]))
    assert holiday.working_days_after(friday, 2) == friday + 5 * 86400  # Wednesday


def test_store_schema_is_versioned(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    assert store.version == 2
    store.close()
    assert Store(tmp_path / "s.sqlite").version == 2


SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_committed_schemas_match_the_models() -> None:
    for name, text in message_schemas().items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == text, (
            f"schemas/{name} is out of date; regenerate with: alarmd schemas --out schemas"
        )


def test_every_produced_message_validates_against_its_shipped_schema(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")
    tl.run_until(2.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.run_until(4 * HOUR)
    validators = {
        "workorders": Draft202012Validator(json.loads((SCHEMAS / "work-order.schema.json").read_text())),
        "notices": Draft202012Validator(json.loads((SCHEMAS / "notice.schema.json").read_text())),
    }
    messages = tl.outbox.pending(100)
    assert {m.kind for m in messages} == {
        "work_order",
        "notice",
        "escalation",
        "status_update",
        "work_order_clear",
        "closed",
    }
    for m in messages:
        validators[m.topic.split(".")[1]].validate(json.loads(m.value))


def test_a_relapse_within_the_business_watch_is_flagged_on_the_new_fault(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.fire("r1")
    tl.run_until(0.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.run_until(3 * HOUR)  # observed for an hour, then closed
    tl.fire("r1")  # back the same afternoon: a new fault, flagged as a relapse
    bodies = [json.loads(m.value) for m in tl.outbox.pending(100)]
    assert [b["type"] for b in bodies] == [
        "work_order",
        "notice",
        "work_order_clear",
        "closed",
        "work_order",
        "notice",
    ]
    assert bodies[4]["relapse_of"] == bodies[0]["alarm_id"]
    assert bodies[4]["work_order_id"] != bodies[0]["work_order_id"]


def test_fault_and_repair_counters_give_repair_timeliness(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    metrics = Metrics()
    tl.announcer.metrics = metrics
    tl.fire("r1")  # gold: repaired after 30 min, within 1 h
    tl.run_until(0.5 * HOUR)
    tl.fire("r1", "resolved")
    tl.fire("r2")  # ordinary: repaired after 4 h, past 3 h
    tl.run_until(4.5 * HOUR)
    tl.fire("r2", "resolved")
    value = metrics.registry.get_sample_value
    assert value("alarmd_faults_total", {"alarm_class": "data_anomaly", "tier": "gold"}) == 1
    assert value("alarmd_faults_repaired_total", {"tier": "gold", "on_time": "true"}) == 1
    assert value("alarmd_faults_repaired_total", {"tier": "ordinary", "on_time": "false"}) == 1
