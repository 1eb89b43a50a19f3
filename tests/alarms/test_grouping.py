"""Major faults and repeats as timelines on virtual time: alarms in at t, messages out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.grouping import Grouper
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.repeats import Repeats
from alarmd.alarms.store import Store
from alarmd.announce import Announcer
from alarmd.config import Config, KafkaTopics
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, fingerprint
from alarmd.testing import FakeClock, FakeSink

TIERS = {"A1": "ordinary", "A2": "gold", "A3": "ordinary", "A4": "diamond", "A5": "ordinary", "B1": "gold"}


def config(**major_faults: Any) -> Config:
    """Five circuits on segment SEG-A, one on SEG-B; all six behind PE-1."""
    return Config.model_validate(
        {
            "customers": [{"id": f"C-{c}", "name": f"Customer {c}", "tier": t} for c, t in TIERS.items()],
            "devices": [
                {"name": f"r-{c}", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}}
                for c in TIERS
            ],
            "elements": [
                {"name": "SEG-A", "kind": "transmission_segment"},
                {"name": "SEG-B", "kind": "transmission_segment"},
                {"name": "PE-1", "kind": "pe"},
            ],
            "circuits": [
                {
                    "id": f"CIR-{c}",
                    "customer": f"C-{c}",
                    "path": [{"device": f"r-{c}"}],
                    "shared": ["PE-1", f"SEG-{c[0]}"],
                }
                for c in TIERS
            ],
            "major_faults": major_faults,
        }
    )


def line_los(circuit: str, kind: str, now: float) -> AlarmTransition:
    """An E1 loss of signal on the circuit's router starting (``firing``) or ending (``resolved``) now."""
    labels = {"alertname": "LineLOS", "device": f"r-{circuit}", "alarm_class": "transmission"}
    return AlarmTransition(
        kind=kind,  # type: ignore[arg-type]
        rule="LineLOS",
        labels=labels,
        annotations={"summary": "E1 loss of signal"},
        value=1.0,
        threshold=1.0,
        at=now,
        active_since=now,
        fingerprint=fingerprint(labels),
    )


class Timeline:
    """Book, grouping, repeats and announcer on a fake clock, wired as the daemon wires them."""

    def __init__(self, tmp_path: Path, **major_faults: Any) -> None:
        cfg = config(**major_faults)
        self.clock = FakeClock()
        self.start = self.clock.now()
        self.store = Store(tmp_path / "alarmd.sqlite")
        self.outbox = Outbox(self.store.connection)
        self.metrics = Metrics()
        inventory = Inventory(cfg)
        router = Router()
        self.book = AlarmBook(inventory, router.lead_team, self.metrics, Correlator(inventory))
        self.grouper = Grouper(inventory, self.book, cfg.major_faults, self.metrics, router.lead_team)
        self.repeats = Repeats(cfg.major_faults.repeat_window, self.metrics)
        self.announcer = Announcer(
            KafkaTopics(),
            store=self.store,
            dispatcher=Dispatcher(self.outbox, FakeSink(), Metrics()),
            router=router,
            clocks=ClockPolicy(cfg.clocks),
            clock=self.clock,
            major_faults=cfg.major_faults,
            locale="zh-CN",
        )

    def _tell(self, changes: list[Change]) -> None:
        self.repeats.mark(changes)
        for change in changes:
            self.announcer.tell(change)

    def los(self, circuit: str, kind: str = "firing") -> None:
        now = self.clock.now()
        self._tell(self.grouper.feed(self.book.apply(line_los(circuit, kind, now)), now))

    def wait(self, seconds: float, step: float = 5.0) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(min(step, end - self.clock.now()))
            now = self.clock.now()
            self.announcer.on_timers(self.book, now)
            self._tell(self.grouper.feed(self.book.tick(now), now) + self.grouper.tick(now))

    def orders(self) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in self.outbox.pending(10_000) if "workorders" in m.topic]

    def notices(self) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in self.outbox.pending(10_000) if "notices" in m.topic]


def kinds(orders: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(type, update, circuit or element) of each work order, in order."""
    return [(o["type"], o["update"], o["circuit"] or (o["major_fault"] or {}).get("element")) for o in orders]


def test_three_circuits_of_a_segment_down_within_the_window_open_one_major_fault(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.los("A1")
    tl.wait(20)
    tl.los("A2")
    tl.wait(20)
    tl.los("A4")
    assert kinds(tl.orders()) == [
        ("work_order", None, "CIR-A1"),
        ("work_order", None, "CIR-A2"),
        ("work_order", None, "SEG-A"),  # the segment, not PE-1: the element shared by the fewest circuits
        ("work_order_update", "reparented", "CIR-A1"),  # already dispatched: told its parent, to merge
        ("work_order_update", "reparented", "CIR-A2"),
    ]  # and nothing of its own for CIR-A4
    major = tl.orders()[2]
    assert major["lead_team"] == "transport_network"
    assert major["tier"] == "diamond", "the highest tier among its circuits"
    assert major["major_fault"]["circuit_count"] == 3
    assert [c["circuit"] for c in major["major_fault"]["circuits"]] == ["CIR-A4", "CIR-A2", "CIR-A1"]
    assert major["major_fault"]["customers"] == ["C-A4", "C-A2", "C-A1"]
    assert major["summary"] == "重大故障：传输段 SEG-A，3 条电路（3 个客户）传输链路中断"  # noqa: RUF001 - Chinese punctuation
    updates = [o for o in tl.orders() if o["update"] == "reparented"]
    assert {u["parent_alarm_id"] for u in updates} == {major["alarm_id"]}
    escalation = [n for n in tl.notices() if n["work_order_id"] == major["work_order_id"]]
    assert [(n["type"], n["joint_handling"]) for n in escalation] == [("escalation", True)]
    assert "maintenance_management" in escalation[0]["to_teams"]
    assert tl.metrics.major_faults.labels("transmission")._value.get() == 1


def test_circuits_down_further_apart_than_the_window_stay_ordinary_faults(tmp_path: Path) -> None:
    tl = Timeline(tmp_path, window="2m")
    tl.los("A1")
    tl.los("A2")
    tl.wait(125)
    tl.los("A3")
    assert kinds(tl.orders()) == [
        ("work_order", None, "CIR-A1"),
        ("work_order", None, "CIR-A2"),
        ("work_order", None, "CIR-A3"),
    ]


def test_a_circuit_failing_later_joins_by_an_update_and_a_lone_circuit_elsewhere_is_ordinary(
    tmp_path: Path,
) -> None:
    tl = Timeline(tmp_path, min_circuits=2)
    tl.los("A1")
    tl.los("A2")
    before = len(tl.orders())
    tl.wait(600)
    tl.los("A3")
    tl.los("A5")
    tl.wait(1)  # the joins of a second are announced together
    tl.los("B1")
    later = tl.orders()[before:]
    assert kinds(later) == [("work_order_update", "circuit_added", "SEG-A"), ("work_order", None, "CIR-B1")]
    assert [c["circuit"] for c in later[0]["major_fault"]["circuits"]] == [
        "CIR-A2",
        "CIR-A1",
        "CIR-A3",
        "CIR-A5",
    ]
    assert later[1]["parent_alarm_id"] is None


def test_the_major_fault_clears_with_its_circuits_and_a_straggler_gets_its_own_order(tmp_path: Path) -> None:
    tl = Timeline(tmp_path, straggler_wait="1m")
    for c in ("A1", "A2", "A3", "A4", "A5"):
        tl.los(c)
    tl.wait(1)
    before = len(tl.orders())
    for c in ("A1", "A2", "A3"):
        tl.los(c, "resolved")  # two left down: no longer a common cause, but give them a minute
    tl.wait(30)
    tl.los("A5", "resolved")  # recovers within the minute: stays in the major fault
    # the two dispatched before the threshold close their own tickets; the rest say nothing yet
    assert kinds(tl.orders()[before:]) == [
        ("work_order_clear", None, "CIR-A1"),
        ("work_order_clear", None, "CIR-A2"),
    ]
    before += 2
    tl.wait(35)
    after = tl.orders()[before:]
    assert kinds(after) == [("work_order_clear", None, "SEG-A"), ("work_order", None, "CIR-A4")]
    clear, own = after
    assert own["parent_alarm_id"] is None and own["lead_team"] == "transport_network"
    cleared = {c["circuit"]: c["cleared_at"] for c in clear["major_fault"]["circuits"]}
    assert cleared["CIR-A4"] is None and all(cleared[f"CIR-{c}"] for c in ("A1", "A2", "A3", "A5"))
    tl.los("A4", "resolved")
    assert kinds(tl.orders()[before + 2 :]) == [("work_order_clear", None, "CIR-A4")]


def test_the_major_fault_clears_at_once_when_every_circuit_recovered(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    for c in ("A1", "A2", "A3"):
        tl.los(c)
    before = len(tl.orders())
    for c in ("A3", "A2", "A1"):
        tl.los(c, "resolved")
    assert kinds(tl.orders()[before:]) == [
        ("work_order_clear", None, "CIR-A2"),
        ("work_order_clear", None, "CIR-A1"),
        ("work_order_clear", None, "SEG-A"),
    ]
    assert tl.orders()[-1]["summary"].startswith("重大故障已恢复")


def test_a_fault_back_within_the_repeat_window_names_the_earlier_work_order(tmp_path: Path) -> None:
    tl = Timeline(tmp_path, repeat_window="7d")
    tl.los("B1")
    first = tl.orders()[0]
    tl.los("B1", "resolved")
    tl.wait(2 * 3600, step=600)  # observed an hour, then closed
    tl.los("B1")
    again = tl.orders()[-1]
    assert (again["type"], again["repeat_of"]) == ("work_order", first["work_order_id"])
    assert again["alarm_id"] != first["alarm_id"]
    assert tl.metrics.repeat_faults.labels("transmission", "gold")._value.get() == 1
    tl.los("B1", "resolved")
    tl.wait(8 * 86400, step=3600)
    tl.los("B1")
    assert tl.orders()[-1]["repeat_of"] is None, "outside the 7 days it is a fault of its own"


def test_a_repeat_of_a_folded_circuit_names_the_major_faults_work_order(tmp_path: Path) -> None:
    tl = Timeline(tmp_path, min_circuits=2)
    tl.los("A1")
    tl.los("A2")
    major = next(o for o in tl.orders() if o["major_fault"])
    tl.los("A1", "resolved")
    tl.los("A2", "resolved")
    tl.wait(2 * 3600, step=600)
    tl.los("A2")  # folded before its own order went out: the major fault's order is the one to name
    assert tl.orders()[-1]["repeat_of"] == major["work_order_id"]
    tl.wait(300)  # apart by more than the window: no new major fault
    tl.los("A1")  # dispatched before the threshold: its own order
    assert tl.orders()[-1]["repeat_of"] == tl.orders()[0]["work_order_id"]


def test_an_open_major_fault_is_taken_back_after_a_restart_and_clears_with_its_circuits(
    tmp_path: Path,
) -> None:
    tl = Timeline(tmp_path)
    for c in ("A1", "A2", "A3"):
        tl.los(c)
    major = next(o for o in tl.orders() if o["major_fault"])
    tl.store.close()

    again = Timeline(tmp_path)  # a new process on the same store
    again.clock = tl.clock
    again.announcer.clock = tl.clock
    for alarm in again.store.open_alarms():
        again.book.restore(alarm)
    assert again.grouper.restore() == 1
    before = len(again.orders())
    again.los("A5")  # joins the restored major fault
    again.wait(1)
    for c in ("A1", "A2", "A3", "A5"):
        again.los(c, "resolved")
    assert kinds(again.orders()[before:]) == [
        ("work_order_update", "circuit_added", "SEG-A"),
        ("work_order_clear", None, "CIR-A1"),
        ("work_order_clear", None, "CIR-A2"),
        ("work_order_clear", None, "SEG-A"),
    ]
    assert again.orders()[-1]["work_order_id"] == major["work_order_id"]


def recalled(tl: Timeline, tmp_path: Path, **major_faults: Any) -> Timeline:
    """A new grouper on the same store, its book taken back and its grouping rebuilt (a hand-over)."""
    tl.store.close()
    again = Timeline(tmp_path, **major_faults)
    again.clock = tl.clock
    again.announcer.clock = tl.clock
    for alarm in again.store.open_alarms():
        again.book.restore(alarm)
    again.grouper.recall(tl.clock.now())
    return again


def test_after_a_hand_over_alarms_not_yet_grouped_still_count_towards_a_major_fault(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    tl.los("A1")
    tl.wait(20)
    tl.los("A2")
    again = recalled(tl, tmp_path)
    again.wait(20)
    again.los("A3")  # the third within the window, counting the two from before the hand-over
    assert [(t, u, c) for t, u, c in kinds(again.orders()) if c == "SEG-A"] == [("work_order", None, "SEG-A")]


def test_after_a_hand_over_a_join_not_yet_announced_is_announced_and_a_lone_straggler_released(
    tmp_path: Path,
) -> None:
    tl = Timeline(tmp_path, straggler_wait="30s")
    for c in ("A1", "A2", "A3"):
        tl.los(c)
    tl.los("A5")  # joined; the update would go on the next tick, which never comes
    for c in ("A1", "A2", "A3"):
        tl.los(c, "resolved")
    before = len(tl.orders())
    again = recalled(tl, tmp_path, straggler_wait="30s")
    again.wait(1)
    assert kinds(again.orders()[before:]) == [("work_order_update", "circuit_added", "SEG-A")]
    again.wait(30)  # one circuit still down, below min_circuits: released after straggler_wait
    assert kinds(again.orders()[before + 1 :]) == [
        ("work_order_clear", None, "SEG-A"),
        ("work_order", None, "CIR-A5"),
    ]
