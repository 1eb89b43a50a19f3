"""The element stage on virtual time: two circuit owners publish root alarm changes, one stage groups them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.grouping import Grouper
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.store import Store
from alarmd.announce import Announcer
from alarmd.cluster.codec import EventDecodeError
from alarmd.cluster.elements import ElementKeys, ElementStage, decode, encode, local_grouping
from alarmd.cluster.transactions import PartitionCommitter
from alarmd.config import Config
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition
from alarmd.testing import FakeClock, FakeSink, FakeTransactions
from tests.alarms.test_grouping import config, kinds, line_los


def announcer(cfg: Config, store: Store, dispatcher: Dispatcher, clock: FakeClock) -> Announcer:
    """An announcer wired as the daemon wires it."""
    return Announcer(
        cfg.kafka.topics,
        store=store,
        dispatcher=dispatcher,
        router=Router(),
        clocks=ClockPolicy(cfg.clocks),
        clock=clock,
        major_faults=cfg.major_faults,
    )


class Owner:
    """One correlator's circuits: book, a grouper that leaves grouping to the stage, announcer, outbox."""

    def __init__(self, path: Path, cfg: Config, clock: FakeClock, stage: ElementStage) -> None:
        inventory, router = Inventory(cfg), Router()
        self.clock = clock
        self.store = Store(path)
        self.outbox = Outbox(self.store.connection)
        dispatcher = Dispatcher(self.outbox, FakeSink(), Metrics())
        self.book = AlarmBook(inventory, router.lead_team, Metrics(), Correlator(inventory))
        grouping = local_grouping(cfg.major_faults, "correlator")
        self.grouper = Grouper(inventory, self.book, grouping, Metrics(), router.lead_team)
        self.announcer = announcer(cfg, self.store, dispatcher, clock)
        self.announcer.also = lambda changes: stage.publish(dispatcher.submit, changes)
        self.taken = 0

    def los(self, circuit: str, kind: str = "firing") -> None:
        now = self.clock.now()
        self.announcer.tell_all(self.grouper.feed(self.book.apply(line_los(circuit, kind, now)), now))

    def element_messages(self) -> list[tuple[bytes, bytes]]:
        """What this owner queued for the element topic since the last call."""
        found = [(m.key, m.value) for m in self.outbox.pending(10_000) if m.topic.endswith(".elements")]
        new, self.taken = found[self.taken :], len(found)
        return new

    def orders(self) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in self.outbox.pending(10_000) if m.topic == "alarmd.workorders"]


class Cluster:
    """Circuits A1, A2 on owner ``a``; A3, A4, A5, B1 on owner ``b``; one element stage."""

    def __init__(self, tmp_path: Path, **major_faults: Any) -> None:
        self.cfg = config(**major_faults)
        self.clock = FakeClock()
        self.producers: dict[str, FakeTransactions] = {}
        inventory = Inventory(self.cfg)
        self.stage = ElementStage(
            self.cfg,
            tmp_path,
            inventory=inventory,
            route=Router().lead_team,
            metrics=Metrics(),
            clock=self.clock,
            announcer=lambda store, dispatcher: announcer(self.cfg, store, dispatcher, self.clock),
            rejection_of=lambda exc: None,
            producer=lambda tid: self.producers.setdefault(tid, FakeTransactions(tid)),
        )
        self.stage.owner.settled = True  # as after its first assignment
        self.a = Owner(tmp_path / "a.sqlite", self.cfg, self.clock, self.stage)
        self.b = Owner(tmp_path / "b.sqlite", self.cfg, self.clock, self.stage)

    def owner(self, circuit: str) -> Owner:
        return self.a if circuit in ("A1", "A2") else self.b

    def los(self, circuit: str, kind: str = "firing") -> None:
        """The circuit's owner judges it; what it publishes reaches the element stage."""
        owner = self.owner(circuit)
        owner.los(circuit, kind)
        for key, value in owner.element_messages():
            assert key == b"PE-1"  # every circuit of this inventory is in PE-1's element group
            self.stage.judge(*decode(value))

    def wait(self, seconds: float) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(min(1.0, end - self.clock.now()))
            self.stage.tick(self.clock.now())

    def major_orders(self) -> list[dict[str, Any]]:
        pending = self.stage.outbox.pending(10_000)
        return [json.loads(m.value) for m in pending if m.topic == "alarmd.workorders"]


def test_circuits_on_two_correlators_open_one_major_fault_that_names_each_and_clears_once(
    tmp_path: Path,
) -> None:
    c = Cluster(tmp_path)
    c.los("A1")
    c.wait(10)
    c.los("A3")
    c.wait(10)
    assert c.major_orders() == []  # two circuits: below min_circuits
    c.los("A4")
    assert kinds(c.a.orders()) == [("work_order", None, "CIR-A1")]  # each owner dispatches its own at once
    assert kinds(c.b.orders()) == [("work_order", None, "CIR-A3"), ("work_order", None, "CIR-A4")]
    assert kinds(c.major_orders()) == [
        ("work_order", None, "SEG-A"),  # the element shared by the fewest circuits, as in --role all
        ("work_order_update", "reparented", "CIR-A1"),
        ("work_order_update", "reparented", "CIR-A3"),
        ("work_order_update", "reparented", "CIR-A4"),
    ]
    major = c.major_orders()[0]
    assert major["alert"] == "MajorFault" and major["tier"] == "diamond"
    assert sorted(x["circuit"] for x in major["major_fault"]["circuits"]) == ["CIR-A1", "CIR-A3", "CIR-A4"]
    own = {o["circuit"]: o["work_order_id"] for o in (*c.a.orders(), *c.b.orders())}
    for update in c.major_orders()[1:]:
        assert update["work_order_id"] == own[update["circuit"]]  # the circuit's own ticket, to merge
        assert update["parent_alarm_id"] == major["alarm_id"]

    c.los("A2")  # joins the open major fault; announced on the next tick
    c.wait(1)
    grown = c.major_orders()[-2:]
    assert kinds(grown) == [
        ("work_order_update", "reparented", "CIR-A2"),
        ("work_order_update", "circuit_added", "SEG-A"),
    ]
    assert grown[1]["major_fault"]["circuit_count"] == 4

    for circuit in ("A1", "A2", "A3", "A4"):
        c.los(circuit, "resolved")
    c.wait(2)
    clears = [o for o in c.major_orders() if o["type"] == "work_order_clear"]
    assert [o["alarm_id"] for o in clears] == [major["alarm_id"]]
    assert c.stage.metrics.registry.get_sample_value("alarmd_major_faults_open") == 0
    assert c.stage.book.active == {}  # the circuits' alarms left with the major fault


def test_a_message_delivered_again_changes_nothing(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    for circuit in ("A1", "A3", "A4"):
        c.los(circuit)
    before = len(c.major_orders())
    for owner in (c.a, c.b):
        for message in owner.outbox.pending(10_000):
            if message.topic.endswith(".elements"):
                c.stage.judge(*decode(message.value))  # at least once: the whole batch again
    assert len(c.major_orders()) == before


def test_stragglers_are_released_on_their_own_work_orders(tmp_path: Path) -> None:
    c = Cluster(tmp_path, straggler_wait="30s")
    for circuit in ("A1", "A3", "A4"):
        c.los(circuit)
    c.los("A1", "resolved")
    c.wait(31)
    updates = [(o["type"], o["update"], o["circuit"]) for o in c.major_orders()[4:]]
    assert updates == [
        ("work_order_clear", None, None),  # the major fault clears, and its stragglers stand on their own
        ("work_order_update", "released", "CIR-A3"),
        ("work_order_update", "released", "CIR-A4"),
    ]


def test_circuits_of_linked_elements_share_a_key_and_unrelated_ones_do_not() -> None:
    cfg = config()
    data = cfg.model_dump(mode="json")
    data["elements"].append({"name": "SEG-Z", "kind": "transmission_segment"})
    data["circuits"].append(
        {"id": "CIR-Z", "customer": "C-A1", "path": [{"device": "r-A1"}], "shared": ["SEG-Z"]}
    )
    data["circuits"].append({"id": "CIR-N", "customer": "C-A1", "path": [{"device": "r-A1"}]})
    keys = ElementKeys(Inventory(Config.model_validate(data)))
    assert {keys.of_circuit(c) for c in ("CIR-A1", "CIR-A5", "CIR-B1")} == {b"PE-1"}
    assert keys.of_circuit("CIR-Z") == b"SEG-Z"
    assert keys.of_circuit("CIR-N") is None  # on no shared element: nothing to publish


def test_only_root_raises_and_clears_of_circuits_on_shared_elements_are_published(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    sent: list[tuple[str, bytes, bytes, str]] = []
    alarm = c.a.book.apply(
        AlarmTransition("firing", "LineLOS", {"device": "r-A1"}, {}, 1.0, 1.0, 0.0, 0.0, "fp")
    )[0].alarm
    submit = lambda *m: sent.append(m)  # noqa: E731
    assert c.stage.publish(submit, [Change("raised", alarm), Change("reparented", alarm)]) == 1
    alarm.parent_id = "parent"
    assert c.stage.publish(submit, [Change("raised", alarm), Change("cleared", alarm)]) == 1
    assert [(t, k, decode(v)[0], kind) for t, k, v, kind in sent] == [
        ("alarmd.events.elements", b"PE-1", "raised", "element_change"),
        ("alarmd.events.elements", b"PE-1", "cleared", "element_change"),
    ]
    assert decode(encode("raised", alarm))[1] == alarm


@pytest.mark.parametrize(
    "payload", [b"{", b'{"format": 2}', b'{"format":1,"type":"root","change":"x","alarm":{}}']
)
def test_a_message_that_is_not_a_root_change_is_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode(payload)


def test_a_correlator_leaves_grouping_to_the_element_stage() -> None:
    cfg = config()
    assert local_grouping(cfg.major_faults, "all").enabled
    assert not local_grouping(cfg.major_faults, "correlator").enabled


async def major_fault_owned(tmp_path: Path) -> tuple[Cluster, PartitionCommitter]:
    """A stage holding element partition 0's transactional id, with a major fault of three circuits open."""
    c = Cluster(tmp_path)
    committer = c.stage.partitioned.committer
    assert await committer.claim({0}, asyncio.Event())
    for circuit in ("A1", "A3", "A4"):
        c.los(circuit)
    return c, committer


async def test_a_major_faults_messages_changelog_and_offsets_commit_in_its_element_partitions_transaction(
    tmp_path: Path,
) -> None:
    c, committer = await major_fault_owned(tmp_path)
    committer.note({0: 3})  # the batch that carried the three root alarms
    assert await committer.commit()

    producer = c.producers[f"{c.cfg.cluster.transactional_prefix}.elements-0"]
    ((records, offsets),) = producer.committed
    topics = [topic for topic, *_ in records]
    assert topics.count("alarmd.workorders") == 4  # the major fault and three reparented updates
    assert "alarmd.notices" in topics  # its escalation at once
    assert c.stage.changelog_topic in topics  # the major fault and its circuits, with the messages
    assert offsets == {(c.stage.topic, 0): 3}
    assert c.stage.outbox.depth() == 0  # deleted once committed
    committed = c.stage.metrics.registry.get_sample_value(
        "alarmd_cluster_transactions_total", {"group": "elements", "outcome": "committed"}
    )
    assert committed == 1


async def test_a_fenced_element_partition_drops_its_major_faults_and_commits_nothing_more(
    tmp_path: Path,
) -> None:
    c, committer = await major_fault_owned(tmp_path)
    assert await committer.commit()
    producer = c.producers[f"{c.cfg.cluster.transactional_prefix}.elements-0"]
    producer.fenced = True  # a newer owner took the id while this one was frozen
    c.los("A2")  # joins the open major fault
    c.wait(1)

    assert not await committer.commit()
    assert len(producer.committed) == 1  # nothing after the fence
    assert c.stage.outbox.depth() == 0  # the join's messages are dropped, not sent
    assert c.stage.book.active == {}  # the major fault and its circuits left with the partition
    fenced = c.stage.metrics.registry.get_sample_value(
        "alarmd_cluster_transactions_total", {"group": "elements", "outcome": "fenced"}
    )
    assert fenced == 1
    assert c.stage.grouper.open_majors() == []  # grouped anew from what is left
    c.los("A5")
    await committer.commit()
    assert len(producer.committed) == 1
    assert c.stage.outbox.depth() == 0
