"""Planned outages on virtual time: what is held back, when it goes out, what the customer is told."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.maintenance import OutageError, Outages, OutageSpec, load_outage_files
from alarmd.alarms.store import Store
from alarmd.announce import Announcer
from alarmd.board import board_rows
from alarmd.config import ClocksConfig, Config, ConfigError, KafkaTopics, MaintenanceConfig, load
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, fingerprint
from alarmd.testing import FakeClock, FakeSink

HOUR = 3600.0
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CONFIG = Config.model_validate(
    {
        "customers": [
            {"id": "HARBOUR", "name": "Harbour Logistics", "tier": "gold"},
            {"id": "SCHOOL", "name": "Riverside School", "tier": "ordinary"},
        ],
        "devices": [
            {"name": name, "kind": kind, "address": f"127.0.0.{i}", "snmp": {"community": "c"}}
            for i, (name, kind) in enumerate(
                [("cpe-1", "cpe_router"), ("conv-1", "protocol_converter"), ("cpe-2", "cpe_router")], 1
            )
        ],
        "circuits": [
            {"id": "CIR-H", "customer": "HARBOUR", "path": [{"device": "cpe-1"}, {"device": "conv-1"}]},
            {"id": "CIR-S", "customer": "SCHOOL", "path": [{"device": "cpe-2"}]},
        ],
    }
)
START = datetime.datetime(2026, 11, 23, 2, 0, tzinfo=datetime.UTC).timestamp()  # a Monday, 10:00 local


class Night:
    """The alarm stage, the announcer and the planned outages on a fake clock (grace 15 min, lead 1 day)."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(start=START)
        self.store = Store(tmp_path / "alarmd.sqlite")
        self.outbox = Outbox(self.store.connection)
        self.inventory = Inventory(CONFIG)
        self.metrics = Metrics()
        self.outages = Outages(self.store, MaintenanceConfig(), 8.0, self.metrics)
        router = Router()
        self.book = AlarmBook(self.inventory, router.lead_team, self.metrics, Correlator(self.inventory))
        self.announcer = Announcer(
            KafkaTopics(),
            store=self.store,
            dispatcher=Dispatcher(self.outbox, FakeSink(), self.metrics),
            router=router,
            clocks=ClockPolicy(ClocksConfig()),
            clock=self.clock,
            metrics=self.metrics,
            outages=self.outages,
        )
        for alarm in self.store.open_alarms():
            self.book.restore(alarm)

    def plan(self, start: float, hours: float, **scope: list[str]) -> str:
        spec = OutageSpec.model_validate(
            {
                "reason": "replace protocol converter",
                "starts_at": datetime.datetime.fromtimestamp(START + start, datetime.UTC),
                "duration": hours * HOUR,
                **scope,
            }
        )
        return self.outages.add(spec, self.inventory, created_by="change-desk", now=self.clock.now()).id

    def fire(self, device: str, kind: str = "firing", alert: str = "LinkDown") -> None:
        labels = {"alertname": alert, "device": device, "alarm_class": "transmission", "severity": "critical"}
        now = self.clock.now()
        transition = AlarmTransition(
            kind=kind,  # type: ignore[arg-type]
            rule=alert,
            labels=labels,
            annotations={},
            value=1.0,
            threshold=0.0,
            at=now,
            active_since=now,
            fingerprint=fingerprint(labels),
        )
        for change in self.book.apply(transition):
            self.announcer.tell(change)

    def run_until(self, seconds: float, step: float = 60.0) -> None:
        end = START + seconds
        while True:
            now = self.clock.now()
            self.announcer.on_timers(self.book, now)
            self.announcer.on_outages(self.book, self.inventory, now)
            self.book.tick(now)
            if now >= end:
                return
            self.clock.advance(min(step, end - now))

    def messages(self) -> list[dict[str, object]]:
        return [json.loads(m.value) for m in self.outbox.pending(10_000)]

    def orders(self) -> list[dict[str, object]]:
        return [m for m in self.messages() if m["type"] == "work_order"]


def epoch(stamp: object) -> float:
    return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def test_a_fault_in_the_window_waits_and_goes_out_after_window_and_grace_with_its_raise_time(
    tmp_path: Path,
) -> None:
    night = Night(tmp_path)
    night.plan(1 * HOUR, 2, devices=["conv-1"])
    night.run_until(1.5 * HOUR)
    night.fire("conv-1")  # the converter is unplugged for the swap
    night.run_until(3 * HOUR + 14 * 60)  # window ends at 3 h, grace 15 min
    assert night.orders() == []
    assert night.metrics.maintenance_held._value.get() == 1
    row = board_rows(night.book, night.announcer.clocks, night.clock.now())[0]
    assert row["planned_outage"] == night.book.active[next(iter(night.book.active))].extra["planned_outage"]
    assert row["clock"] == "release"
    night.run_until(3 * HOUR + 16 * 60)
    (order,) = night.orders()
    assert epoch(order["raised_at"]) == START + 1.5 * HOUR
    assert order["planned_outage"]
    # the escalation clock runs from the release, not from the raise inside the window
    assert epoch(order["due"]["escalation_at"]) == pytest.approx(START + 3.25 * HOUR + HOUR)  # type: ignore[index]
    assert night.metrics.maintenance_released._value.get() == 1
    assert night.metrics.maintenance_held._value.get() == 0


def test_a_fault_over_within_the_window_is_recorded_and_never_dispatched(tmp_path: Path) -> None:
    night = Night(tmp_path)
    night.plan(0, 2, circuits=["CIR-H"])
    night.run_until(10 * 60)
    night.fire("cpe-1")
    night.run_until(40 * 60)
    night.fire("cpe-1", "resolved")
    night.run_until(5 * HOUR)
    assert night.orders() == []
    assert [m["type"] for m in night.messages()] == ["planned_outage"] * 3  # scheduled, started, ended
    stored = night.store.all_alarms()
    assert [a.lifecycle for a in stored] == ["closed"]
    assert stored[0].extra["planned_outage"]


def test_an_alarm_outside_the_scope_on_the_same_path_still_dispatches(tmp_path: Path) -> None:
    night = Night(tmp_path)
    night.plan(0, 2, devices=["conv-1"], matchers=['alertname="LinkDown"'])
    night.run_until(60)
    night.fire("cpe-1")  # same circuit, other device: not the planned work
    night.fire("conv-1", alert="PowerSupplyFailure")  # the planned device, but not the planned alarm
    night.fire("conv-1")  # in scope
    assert sorted(str(o["device"]) + "/" + str(o["alert"]) for o in night.orders()) == [
        "conv-1/PowerSupplyFailure",
        "cpe-1/LinkDown",
    ]


def test_ending_an_outage_early_releases_its_faults_after_the_grace(tmp_path: Path) -> None:
    night = Night(tmp_path)
    outage = night.plan(0, 4, customers=["HARBOUR"])
    night.run_until(60)
    night.fire("cpe-1")
    night.run_until(HOUR)
    night.outages.end(outage, "noc-operator", night.clock.now())
    night.run_until(HOUR + 14 * 60)
    assert night.orders() == []
    night.run_until(HOUR + 16 * 60)
    assert len(night.orders()) == 1
    with pytest.raises(OutageError, match="ended already"):
        night.outages.end(outage, "noc-operator", night.clock.now())


def test_customer_notices_per_customer_on_creation_reminder_start_and_end(tmp_path: Path) -> None:
    night = Night(tmp_path)
    night.plan(30 * HOUR, 2, devices=["conv-1", "cpe-2"])  # a day and a half ahead: the reminder is due too
    night.run_until(34 * HOUR, step=600)
    validator = Draft202012Validator(json.loads((SCHEMAS / "planned-outage.schema.json").read_text()))
    notices = night.messages()
    for notice in notices:
        validator.validate(notice)
    phases = [(n["phase"], n["customer"]["id"], n["circuits"]) for n in notices]  # type: ignore[index]
    assert phases == [
        ("scheduled", "HARBOUR", ["CIR-H"]),
        ("scheduled", "SCHOOL", ["CIR-S"]),
        ("reminder", "HARBOUR", ["CIR-H"]),
        ("reminder", "SCHOOL", ["CIR-S"]),
        ("started", "HARBOUR", ["CIR-H"]),
        ("started", "SCHOOL", ["CIR-S"]),
        ("ended", "HARBOUR", ["CIR-H"]),
        ("ended", "SCHOOL", ["CIR-S"]),
    ]
    sent = {n["phase"]: epoch(n["sent_at"]) - START for n in notices}
    assert sent["reminder"] == pytest.approx(6 * HOUR, abs=600)  # notice_lead 1 day before the start
    assert sent["started"] == pytest.approx(30 * HOUR, abs=600)
    assert not any(n["short_notice"] for n in notices)


def test_an_outage_made_at_short_notice_says_so_and_a_withdrawn_one_is_cancelled(tmp_path: Path) -> None:
    night = Night(tmp_path)
    outage = night.plan(2 * HOUR, 1, circuits=["CIR-S"])
    night.run_until(60)
    night.outages.end(outage, "change-desk", night.clock.now())
    night.run_until(5 * HOUR)
    notices = night.messages()
    assert [(n["phase"], n["short_notice"]) for n in notices] == [("scheduled", True), ("cancelled", True)]


def test_outages_and_their_notices_survive_a_restart(tmp_path: Path) -> None:
    night = Night(tmp_path)
    made = night.plan(HOUR, 1, circuits=["CIR-S"])
    night.run_until(60)
    night.store.close()
    again = Night(tmp_path)
    again.run_until(1.5 * HOUR)
    assert list(again.outages.by_id) == [made]
    assert again.outages.by_id[made].active(again.clock.now())
    assert [n["phase"] for n in again.messages()] == ["scheduled", "started"]  # not scheduled twice


def test_a_held_fault_stays_held_across_a_restart_and_is_dispatched_once(tmp_path: Path) -> None:
    night = Night(tmp_path)
    night.plan(0, 1, devices=["cpe-2"])
    night.run_until(60)
    night.fire("cpe-2")
    night.run_until(30 * 60)
    night.store.close()
    again = Night(tmp_path)
    again.clock.advance(30 * 60)
    again.run_until(HOUR + 14 * 60)
    assert again.orders() == []
    assert again.metrics.maintenance_held._value.get() == 1
    again.run_until(2 * HOUR)
    (order,) = again.orders()
    assert epoch(order["raised_at"]) == START + 60


def test_the_api_refuses_unknown_names_and_taken_ids(tmp_path: Path) -> None:
    night = Night(tmp_path)
    with pytest.raises(OutageError, match=r"circuits\[0\]: unknown circuit 'CIR-X'") as unknown:
        night.plan(0, 1, circuits=["CIR-X"])
    assert unknown.value.status == 400
    spec = OutageSpec.model_validate(
        {
            "id": "CHG-1",
            "reason": "r",
            "starts_at": "2026-11-23T12:00:00",
            "duration": "1h",
            "circuits": ["CIR-S"],
        }
    )
    night.outages.add(spec, night.inventory, created_by="x", now=night.clock.now())
    assert night.outages.by_id["CHG-1"].starts_at == START + 2 * HOUR  # naive: the operator's local time
    with pytest.raises(OutageError, match="taken") as taken:
        night.outages.add(spec, night.inventory, created_by="x", now=night.clock.now())
    assert taken.value.status == 409


CONFIG_YML = """\
rule_files: []
profile_files: []
state_dir: state
customers: [{id: SCHOOL, name: Riverside School, tier: ordinary}]
devices: [{name: cpe-2, kind: cpe_router, address: 127.0.0.3, snmp: {community: c}}]
circuits: [{id: CIR-S, customer: SCHOOL, path: [{device: cpe-2}]}]
"""


@pytest.mark.parametrize(
    ("outage", "message"),
    [
        (
            "{id: C1, reason: r, starts_at: 2026-12-01T00:00:00+08:00, duration: 1h, circuits: [CIR-X]}",
            r"m\.yml:3: outages\[0\]\.circuits\[0\]: unknown circuit 'CIR-X'",
        ),
        (
            "{id: C1, reason: r, starts_at: 2026-12-01T00:00:00+08:00, duration: 1h}",
            r"m\.yml:3: .*needs a scope",
        ),
        (
            "{id: C1, reason: r, starts_at: 2026-12-01T02:00:00+08:00, ends_at: 2026-12-01T01:00:00+08:00, "
            "devices: [cpe-2]}",
            r"m\.yml:3: outages\[0\]: ends_at must be after starts_at",
        ),
        (
            "{reason: r, starts_at: 2026-12-01T00:00:00+08:00, duration: 1h, devices: [cpe-2]}",
            r"missing required key 'id'",
        ),
        (
            "{id: C1, reason: r, starts_at: 2026-12-01T00:00:00+08:00, duration: 1h, devices: [cpe-2], "
            "by: me}",
            r"m\.yml:3: unknown key 'outages\.0\.by'",
        ),
    ],
)
def test_maintenance_files_are_checked_with_file_and_line(tmp_path: Path, outage: str, message: str) -> None:
    (tmp_path / "alarmd.yml").write_text(CONFIG_YML)
    (tmp_path / "maintenance").mkdir()
    (tmp_path / "maintenance" / "m.yml").write_text(f"# night work\noutages:\n  - {outage}\n")
    with pytest.raises(ConfigError, match=message):
        load_outage_files(load(tmp_path))


def test_file_outages_follow_their_files(tmp_path: Path) -> None:
    (tmp_path / "alarmd.yml").write_text(CONFIG_YML)
    assert load_outage_files(load(tmp_path)) == []  # no maintenance directory: no outages, no error
    folder = tmp_path / "maintenance"
    folder.mkdir()
    line = (
        "  - {{id: CHG-7, reason: splice, starts_at: 2026-11-24T01:00:00+08:00, duration: {},"
        " devices: [cpe-2]}}\n"
    )
    (folder / "night.yml").write_text("outages:\n" + line.format("2h"))
    night = Night(tmp_path)
    inventory = Inventory(load(tmp_path).config)

    def sync() -> str:
        return str(night.outages.sync_files(load_outage_files(load(tmp_path)), inventory, night.clock.now()))

    assert sync() == "added CHG-7"
    assert night.outages.by_id["CHG-7"].affected_circuits == ["CIR-S"]
    assert sync() == "no change"
    (folder / "night.yml").write_text("outages:\n" + line.format("3h"))
    assert sync() == "changed CHG-7"
    (folder / "night.yml").write_text("outages: []\n")
    assert sync() == "withdrawn CHG-7"
    assert night.outages.by_id["CHG-7"].cancelled
