"""PartitionCommitter: each partition's output in its own transaction, fencing and aborts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from alarmd.cluster.changelog import Changelog, ChangelogStore
from alarmd.cluster.transactions import PartitionCommitter, alarm_of
from alarmd.config import KafkaConfig
from alarmd.dispatch.outbox import Message, Outbox
from alarmd.metrics import Metrics
from alarmd.model import Alarm
from alarmd.testing import FakeClock, FakeTransactions
from tests.cluster.test_changelog import fault

HOMES = {"cpe-01": 0, "cpe-02": 1}


class Harness:
    """A committer over a real SQLite store and outbox, with fake transactional producers."""

    def __init__(self, path: Path) -> None:
        self.store = ChangelogStore(path)
        self.outbox = Outbox(self.store.connection)
        self.changelog = Changelog(self.store, self.home)
        self.metrics = Metrics()
        self.clock = FakeClock()
        self.producers: dict[str, FakeTransactions] = {}
        self.fenced: list[int] = []
        self.settled = True
        self.rejoins = 0
        self.committer = PartitionCommitter(
            KafkaConfig(),
            prefix="corr.events",
            group="corr",
            events_topic="events",
            changelog_topic="events.changelog",
            outbox=self.outbox,
            store=self.store,
            changelog=self.changelog,
            home=self.home,
            metrics=self.metrics,
            on_fenced=self.fenced.append,
            monotonic=self.clock.monotonic,
            producer=lambda tid: self.producers.setdefault(tid, FakeTransactions(tid)),
            settled=lambda: self.settled,
            rejoin=self.rejoin,
        )

    def rejoin(self) -> None:
        self.rejoins += 1

    @staticmethod
    def home(alarm: Alarm) -> int:
        return HOMES[alarm.labels["device"]]

    def raise_fault(self, alarm_id: str, device: str) -> None:
        """A fault stored and its work order staged, as the announce stage does in one SQLite transaction."""
        alarm = fault(alarm_id, device)
        with self.store.transaction():
            self.store.save(alarm, "raised")
            body = {"type": "work_order", "work_order_id": f"WO-{alarm_id}", "alarm_id": alarm_id}
            self.outbox.add("workorders", b"CIR-1", json.dumps(body).encode(), "work_order")

    def transactions(self, partition: int) -> list[tuple[list[str], dict[tuple[str, int], int]]]:
        """Each committed transaction of a partition: the topics of its records, and its offsets."""
        producer = self.producers[f"corr.events-{partition}"]
        return [([topic for topic, *_ in records], offsets) for records, offsets in producer.committed]

    def count(self, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "alarmd_cluster_transactions_total", {"group": "events", "outcome": outcome}
        )


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path / "alarmd.sqlite")
    stop = asyncio.Event()
    assert await h.committer.claim({0, 1}, stop)
    return h


async def test_a_partitions_work_order_changelog_record_and_offset_commit_in_one_transaction(
    harness: Harness,
) -> None:
    harness.raise_fault("A1", "cpe-01")
    harness.committer.note({0: 42})
    assert await harness.committer.commit()

    assert harness.transactions(0) == [(["workorders", "events.changelog"], {("events", 0): 42})]
    assert harness.transactions(1) == []
    assert harness.outbox.depth() == 0  # deleted only once committed
    assert harness.count("committed") == 1
    takeovers = harness.metrics.registry.get_sample_value(
        "alarmd_cluster_takeover_seconds_count", {"group": "events"}
    )
    assert takeovers == 1  # the first committed transaction since the assignment


async def test_an_aborted_transaction_leaves_everything_for_the_next_commit(harness: Harness) -> None:
    harness.raise_fault("A1", "cpe-01")
    harness.committer.note({0: 42})
    harness.producers["corr.events-0"].failing = True
    assert not await harness.committer.commit()
    assert harness.outbox.depth() == 1
    assert harness.count("aborted") == 1
    assert harness.producers["corr.events-0"].starts == 2  # aborted cleanly: a fresh producer took the id
    assert harness.rejoins == 0

    harness.producers["corr.events-0"].failing = False
    assert await harness.committer.commit()
    assert harness.transactions(0) == [(["workorders", "events.changelog"], {("events", 0): 42})]
    assert harness.outbox.depth() == 0


async def test_a_fenced_partition_drops_its_output_and_commits_nothing_more(harness: Harness) -> None:
    harness.raise_fault("A1", "cpe-01")
    harness.raise_fault("B1", "cpe-02")
    harness.committer.note({0: 42, 1: 7})
    harness.producers["corr.events-0"].fenced = True
    assert not await harness.committer.commit()

    assert harness.fenced == [0]
    assert harness.count("fenced") == 1
    assert harness.committer.lost == {0}
    # fenced by a transaction's timeout there is no newer owner: the group says who owns it now
    assert harness.rejoins == 1
    assert harness.transactions(1) == [(["workorders", "events.changelog"], {("events", 1): 7})]
    assert harness.outbox.depth() == 0  # partition 0's work order dropped: its new owner judges again

    harness.committer.note({0: 50})  # a batch fetched before the rebalance found us out
    harness.raise_fault("A2", "cpe-01")
    assert await harness.committer.commit()
    assert harness.transactions(1) == [(["workorders", "events.changelog"], {("events", 1): 7})]
    assert harness.producers["corr.events-0"].committed == []
    assert harness.outbox.depth() == 0


async def test_at_start_uncommitted_fault_messages_are_dropped_and_outage_notices_kept(
    harness: Harness,
) -> None:
    harness.raise_fault("A1", "cpe-01")
    harness.outbox.add("notices", b"OUT-1", json.dumps({"type": "outage_start"}).encode(), "outage_start")
    assert harness.committer.discard_uncommitted() == 1
    assert [m.kind for m in harness.outbox.pending()] == ["outage_start"]


async def test_a_new_assignment_closes_the_producers_that_went_and_takes_the_new_ids(
    harness: Harness,
) -> None:
    stop = asyncio.Event()
    assert await harness.committer.claim({1, 2}, stop)
    assert sorted(harness.committer.producers) == [1, 2]
    assert not harness.producers["corr.events-0"].started
    assert harness.producers["corr.events-2"].started

    harness.raise_fault("A1", "cpe-01")  # judged in a batch cut by the rebalance: its partition went
    assert await harness.committer.commit()
    assert harness.outbox.depth() == 0
    assert harness.producers["corr.events-0"].committed == []


def test_a_message_names_its_fault_by_alarm_id_or_carries_the_whole_alarm() -> None:
    def message(body: object) -> Message:
        return Message(1, "t", b"k", json.dumps(body).encode(), "kind", 0.0)

    assert alarm_of(message({"type": "work_order", "alarm_id": "A1"})) == "A1"
    assert alarm_of(message({"type": "root", "alarm": {"alarm_id": "A2"}})) == "A2"
    assert alarm_of(message({"type": "planned_outage", "outage_id": "O1"})) is None
    assert alarm_of(Message(1, "t", b"k", b"not json", "kind", 0.0)) is None


async def a_commit_fails(harness: Harness, producer: FakeTransactions) -> None:
    """Fault A1 is staged with partition 0's offset 42, and the commit that takes them fails."""
    harness.raise_fault("A1", "cpe-01")
    harness.committer.note({0: 42})
    producer.failing = True
    assert not await harness.committer.commit()
    producer.failing = False


async def test_after_a_lost_outcome_the_id_is_taken_again_only_once_a_session_timeout_passed(
    harness: Harness,
) -> None:
    producer = harness.producers["corr.events-0"]
    producer.outcome_lost = True
    await a_commit_fails(harness, producer)
    assert not producer.ready
    assert harness.rejoins == 1, "the group's next assignment says whether the id is still ours"

    harness.clock.advance(5)  # a frozen instance may be out of the group without knowing yet
    assert not await harness.committer.commit()
    assert producer.starts == 1  # the id not taken again: it would fence the partition's new owner
    assert harness.outbox.depth() == 1

    harness.clock.advance(6)  # past the session timeout (10 s) and no rebalance: still ours
    assert await harness.committer.commit()
    assert producer.starts == 2
    assert harness.transactions(0) == [(["workorders", "events.changelog"], {("events", 0): 42})]


async def test_an_abort_during_a_rebalance_leaves_the_id_to_whoever_the_partition_goes_to(
    harness: Harness,
) -> None:
    producer = harness.producers["corr.events-0"]
    harness.settled = False  # revoked: partition 0 may be another correlator's by now
    await a_commit_fails(harness, producer)
    assert producer.starts == 1, "taking the id again would fence the partition's new owner"

    assert await harness.committer.claim({1}, asyncio.Event())  # it went to another correlator
    harness.settled = True
    assert await harness.committer.commit()
    assert producer.starts == 1
    assert producer.committed == []
    assert harness.outbox.depth() == 0  # its new owner judges the input again


async def test_a_new_assignment_takes_again_the_id_of_a_kept_partition_whose_outcome_was_lost(
    harness: Harness,
) -> None:
    producer = harness.producers["corr.events-0"]
    harness.raise_fault("A1", "cpe-01")
    producer.failing = producer.outcome_lost = True
    assert not await harness.committer.commit()
    producer.failing = False
    assert await harness.committer.claim({0, 1}, asyncio.Event())
    assert producer.starts == 2
    assert await harness.committer.commit()
    assert harness.outbox.depth() == 0


async def test_a_partition_kept_across_a_missed_generation_is_released_and_claimed_afresh(
    harness: Harness,
) -> None:
    producer = harness.producers["corr.events-0"]
    harness.raise_fault("A1", "cpe-01")  # judged on state another owner may have changed meanwhile
    harness.raise_fault("B1", "cpe-02")
    harness.committer.note({0: 42, 1: 7})
    await harness.committer.release({0})
    assert not producer.ready
    assert await harness.committer.claim({0, 1}, asyncio.Event())
    assert producer.starts == 2, "the id is taken again: whoever held it in between is fenced"
    assert await harness.committer.commit()
    assert harness.producers["corr.events-0"].committed == [], "its output and offset were dropped"
    assert harness.transactions(1) == [(["workorders", "events.changelog"], {("events", 1): 7})]


async def test_a_partition_fenced_with_no_newer_owner_is_taken_again_when_the_group_gives_it_back(
    harness: Harness,
) -> None:
    harness.raise_fault("A1", "cpe-01")
    harness.committer.note({0: 42})
    harness.producers["corr.events-0"].fenced = True  # the coordinator timed the transaction out
    assert not await harness.committer.commit()
    assert harness.rejoins == 1

    fenced = harness.producers.pop("corr.events-0")
    assert await harness.committer.claim({0, 1}, asyncio.Event())  # the rebalance gives it back here
    assert harness.producers["corr.events-0"] is not fenced, "a fresh producer took the id again"
    harness.raise_fault("A2", "cpe-01")  # judged afresh from the committed offset
    harness.committer.note({0: 42})
    assert await harness.committer.commit()
    assert harness.transactions(0) == [(["workorders", "events.changelog"], {("events", 0): 42})]
