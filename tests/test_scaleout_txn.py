"""Per-partition transactions: a zombie correlator is fenced, and a killed one leaves no message twice.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1.  What they send is read as ticketing must read it, ``read_committed``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from alarmd.cluster.codec import encode_event
from alarmd.model import Event
from tests.chaos.harness import Daemon, Inbox
from tests.test_scaleout_restore import (
    ESCALATION,
    LOAD_SLACK,
    SESSION_TIMEOUT,
    correlator,
    start_with_one_partition_each,
    until,
)

pytestmark = pytest.mark.integration

CIRCUITS = 40


def pair_member(root: Path, name: str, bootstrap: str, topic: str) -> Daemon:
    """One of the two correlators, with ``CIRCUITS`` circuits."""
    return correlator(root, name, bootstrap, topic, circuits=CIRCUITS)


def link_down(circuit: int) -> tuple[bytes, bytes]:
    """A linkDown trap of a circuit's device as a collector publishes it: (key, payload)."""
    labels = {
        "trap": "linkDown",
        "if_index": "2",
        "device": f"cpe-router-{circuit:02d}",
        "interface": "GigabitEthernet0/0/1",
    }
    _, payload = encode_event(Event("trap", "linkDown", time.time(), labels, uptime=1000 + circuit))
    return f"CIR-{circuit:04d}".encode(), payload


async def publish(bootstrap: str, topic: str, circuits: range, every: float = 0.0) -> None:
    """linkDown of each circuit's device on the events topic, ``every`` seconds apart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for circuit in circuits:
            key, payload = link_down(circuit)
            await producer.send_and_wait(f"{topic}.events", payload, key=key)
            await asyncio.sleep(every)
    finally:
        await producer.stop()


def owned(daemon: Daemon) -> float:
    """Events partitions the daemon owns."""
    return daemon.metric("alarmd_cluster_partitions_owned", group="events")


def judged(daemon: Daemon) -> float:
    """Trap events the daemon judged."""
    return daemon.metric("alarmd_cluster_events_consumed_total", type="event", outcome="judged")


def by_id(inbox: Inbox, kind: str) -> Counter[str]:
    """How often each work order id was read with this type."""
    return Counter(m["work_order_id"] for m in inbox.of_type(kind))


async def test_a_paused_owner_is_fenced_when_it_resumes_and_commits_nothing_more(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.txn.{uuid.uuid4().hex[:8]}"
    pair = [pair_member(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await start_with_one_partition_each(pair)
            await publish(kafka_bootstrap, topic, range(1, 2))
            assert await inbox.until(lambda _: inbox.of_type("work_order"), 30), "no work order"
            (order,) = inbox.of_type("work_order")
            zombie, survivor = sorted(pair, key=judged, reverse=True)
            assert (judged(zombie), judged(survivor)) == (1, 0)
            committed = zombie.metric("alarmd_cluster_transactions_total", outcome="committed")
            assert committed >= 1

            zombie.pause()  # its escalation clock comes due while it is frozen
            paused_at = time.monotonic()
            await until(
                lambda: (
                    owned(survivor) == 2 and survivor.metric("alarmd_cluster_restored_records_total") == 1
                ),
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor took the paused owner's partition",
            )
            taken = time.monotonic() - paused_at
            assert await inbox.until(lambda _: inbox.of_type("escalation"), 15), "no escalation"
            zombie.resume()
            await until(lambda: zombie.events("partition_fenced"), 15, "the resumed zombie was fenced")
            await inbox.collect(4)

            assert list(by_id(inbox, "work_order").values()) == [1]
            escalations = inbox.of_type("escalation")
            assert [e["alarm_id"] for e in escalations] == [order["alarm_id"]]
            assert zombie.metric("alarmd_cluster_transactions_total", outcome="committed") == committed
            assert zombie.metric("alarmd_cluster_transactions_total", outcome="fenced") >= 1
            (fenced, *_) = zombie.events("partition_fenced")
            assert fenced["transactional_id"] == f"{topic}.correlators.{topic}.events-{fenced['partition']}"
            assert survivor.metric("alarmd_cluster_takeover_seconds_count", group="events") >= 1
            print(f"SIGSTOP to the partition restored on the survivor: {taken:.1f}s")
            for daemon in pair:
                assert await daemon.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()  # SIGKILL ends a paused process too


async def test_an_owner_killed_while_judging_leaves_every_fault_ordered_and_escalated_exactly_once(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.txn.{uuid.uuid4().hex[:8]}"
    pair = [pair_member(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    topics = (f"{topic}.workorders", f"{topic}.notices")
    try:
        async with (
            Inbox(kafka_bootstrap, *topics) as inbox,
            Inbox(kafka_bootstrap, *topics, isolation="read_uncommitted") as raw,
        ):
            await start_with_one_partition_each(pair)
            stream = asyncio.create_task(publish(kafka_bootstrap, topic, range(1, CIRCUITS + 1), every=0.1))
            # Kill whichever has judged most once about half the traps are out, in the middle of its batches.
            await until(lambda: sum(judged(d) for d in pair) >= CIRCUITS // 2, 30, "half the traps judged")
            victim, survivor = sorted(pair, key=judged, reverse=True)
            victim.kill()
            killed = judged(survivor)
            await stream
            await until(
                lambda: owned(survivor) == 2,
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor took both partitions",
            )
            wanted = lambda _: len(by_id(inbox, "work_order")) == CIRCUITS  # noqa: E731
            # the survivor restores and judges the victim's backlog: on a loaded machine that takes a while
            assert await inbox.until(wanted, 60), f"{len(by_id(inbox, 'work_order'))} of {CIRCUITS} ordered"
            escalated = lambda _: len(by_id(inbox, "escalation")) == CIRCUITS  # noqa: E731
            assert await inbox.until(escalated, ESCALATION + 15), "not every fault escalated"
            await inbox.collect(3)
            await raw.collect(3)

            orders, escalations = by_id(inbox, "work_order"), by_id(inbox, "escalation")
            assert set(orders.values()) == {1}, [i for i, n in orders.items() if n > 1]
            assert set(escalations.values()) == {1}, [i for i, n in escalations.items() if n > 1]
            assert set(escalations) == set(orders)
            uncommitted = sum(by_id(raw, "work_order").values()) - CIRCUITS
            print(
                f"{CIRCUITS} faults; survivor had judged {killed:.0f} at the SIGKILL; "
                f"work orders read_committed {sum(orders.values())}, read_uncommitted "
                f"{sum(by_id(raw, 'work_order').values())} ({uncommitted} aborted or never committed)"
            )
            assert await survivor.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()
