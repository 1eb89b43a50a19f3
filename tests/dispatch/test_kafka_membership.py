"""Group members on a real broker: collectors started together are all assigned at once; stalled joins end."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

import kafka_local  # tools/, on sys.path via conftest
from alarmd.cluster.membership import balance
from alarmd.config import ConsumedTopic, KafkaConfig
from alarmd.dispatch.kafka import KafkaMembership, KafkaSink, KafkaSource, Told, ensure_topics
from alarmd.metrics import Metrics
from devenv import die_with_parent

pytestmark = pytest.mark.integration

PARTITIONS = 12
COLD_STARTS = 6  # a two-protocol member (aiokafka#1168) missed the first assignment in 2 of 4 such starts
ASSIGNED_WITHIN = 15.0  # seconds: a join on a loaded machine, well under the 60 s join_timeout


def config(bootstrap: str) -> KafkaConfig:
    """A client config with short timeouts and backoff."""
    return KafkaConfig(bootstrap_servers=bootstrap, request_timeout="5s", retry_backoff="200ms")


def evenly(partitions: list[int], held: dict[str, set[int]], told: Told) -> dict[str, set[int]]:
    """Every partition weighs the same (what members told is not used)."""
    return balance(dict.fromkeys(partitions, 1), held)


async def cold_start(bootstrap: str, members: int) -> float:
    """Start ``members`` members of a new group at once; the seconds until the topic is shared among all."""
    kafka = config(bootstrap)
    topic = f"alarmd.membership.{uuid.uuid4().hex[:8]}"
    owned: list[set[int]] = [set() for _ in range(members)]

    def taker(i: int) -> Callable[[set[int]], None]:
        return lambda partitions: owned.__setitem__(i, set(partitions))

    group = [
        KafkaMembership(
            kafka, topic, f"{topic}.collectors", PARTITIONS, taker(i),
            metrics=Metrics(), join_timeout=60.0, session_timeout=6.0, balance=evenly,
        )
        for i in range(members)
    ]  # fmt: skip
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(member.run(stop)) for member in group]
    try:
        while not (all(owned) and sum(map(len, owned)) == PARTITIONS):
            if time.monotonic() - started > ASSIGNED_WITHIN:
                raise AssertionError(f"not all assigned within {ASSIGNED_WITHIN:.0f}s: {owned}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_collectors_that_start_together_are_all_assigned_at_the_first_rebalance(
    kafka_bootstrap: str,
) -> None:
    took = [await cold_start(kafka_bootstrap, 2) for _ in range(COLD_STARTS)]
    print(f"{COLD_STARTS} cold starts of two members: all assigned within {max(took):.2f}s (each: "
          + ", ".join(f"{t:.2f}" for t in took) + ")")  # fmt: skip
    assert max(took) < ASSIGNED_WITHIN


FROZEN_MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer
async def main():
    bootstrap, topic, group = sys.argv[1:4]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=40000,
                                rebalance_timeout_ms=40000, heartbeat_interval_ms=1000)
    await consumer.start()
    print("assigned", flush=True)
    while True:
        await consumer.getmany(timeout_ms=500)
asyncio.run(main())
"""
"""A plain consumer with a 40 s session and rebalance timeout: frozen, it holds up a rebalance that long."""
JOIN_TIMEOUT = 4.0


async def events_topic(bootstrap: str, partitions: int) -> tuple[KafkaConfig, ConsumedTopic]:
    """A client config for ``bootstrap`` and a new events topic of ``partitions``, consumed by correlators."""
    kafka = config(bootstrap)
    topic = f"alarmd.events.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [(topic, partitions)])
    return kafka, ConsumedTopic(
        enabled=True, topic=topic, group_id=f"{topic}.correlators", dead_letter_topic=f"{topic}.dl"
    )


async def test_a_correlator_whose_join_is_held_up_stalls_at_its_limit_and_is_assigned_once_the_group_settles(
    kafka_bootstrap: str,
) -> None:
    kafka, consumed = await events_topic(kafka_bootstrap, 4)
    topic = consumed.topic
    frozen = subprocess.Popen(
        [sys.executable, "-c", FROZEN_MEMBER, kafka_bootstrap, topic, consumed.group_id],
        stdout=subprocess.PIPE, preexec_fn=functools.partial(die_with_parent, signal.SIGKILL),  # noqa: PLW1509 - prctl only
    )  # fmt: skip
    owned: list[set[int]] = []
    metrics = Metrics()

    def stalls() -> float:
        return (
            metrics.registry.get_sample_value("alarmd_cluster_join_stalls_total", {"group": "events"}) or 0.0
        )

    async def handle(payload: bytes, key: bytes | None) -> None:
        """Nothing is sent to the topic."""

    source = KafkaSource(
        kafka, consumed, handle, lambda _: None, metrics,
        on_assign=owned.append, session_timeout=6.0, join_timeout=JOIN_TIMEOUT, group="events",
    )  # fmt: skip
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        assert frozen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(frozen.stdout.readline), 60)
        assert line.strip() == b"assigned"
        frozen.send_signal(signal.SIGSTOP)
        task = asyncio.create_task(source.run(stop))
        started = time.monotonic()
        while not stalls():
            assert time.monotonic() - started < JOIN_TIMEOUT + 10, "no stall reported"
            await asyncio.sleep(0.1)
        stalled = time.monotonic() - started
        assert not owned, "nothing assigned while the rebalance is held up"
        frozen.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        while not (owned and owned[-1]):
            assert time.monotonic() - resumed < JOIN_TIMEOUT + 10, (
                "not assigned after the frozen member resumed"
            )
            await asyncio.sleep(0.1)
        print(f"stalled {stalled:.1f}s after the start ({stalls():.0f} stalls); "
              f"assigned {time.monotonic() - resumed:.1f}s after SIGCONT: {sorted(owned[-1])}")  # fmt: skip
        assert stalled >= JOIN_TIMEOUT
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)
        frozen.send_signal(signal.SIGCONT)
        frozen.kill()
        frozen.wait(10)
        if frozen.stdout is not None:
            frozen.stdout.close()


COORDINATOR_FROZEN = 15.0  # seconds the group coordinator's node stays stopped: past its broker session (9 s)


async def coordinator_of(
    admin: AIOKafkaAdminClient, cluster: kafka_local.Cluster, group_id: str
) -> kafka_local.Broker:
    """The broker that coordinates ``group_id`` now (on a new cluster, once the offsets topic exists)."""
    for _ in range(60):  # bounded: 30 s
        try:
            node = await admin.find_coordinator(group_id)
            break
        except GroupCoordinatorNotAvailableError:
            await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"no coordinator for {group_id}")
    ports = {b["node_id"]: b["port"] for b in (await admin.describe_cluster())["brokers"]}
    return next(b for b in cluster.brokers if b.bootstrap.endswith(f":{ports[node]}"))


async def offsets_in_sync(admin: AIOKafkaAdminClient) -> bool:
    """Every partition of the consumer offsets topic has all its replicas in sync again."""
    (described,) = await admin.describe_topics(["__consumer_offsets"])
    partitions = described["partitions"]
    return bool(partitions) and all(len(p["isr"]) == len(p["replicas"]) for p in partitions)


async def test_a_collector_joining_while_its_group_coordinator_is_frozen_is_assigned_once_it_moves_or_resumes(
    kafka_cluster: kafka_local.Cluster,
) -> None:
    kafka = config(kafka_cluster.bootstrap)
    topic = f"alarmd.inventory.{uuid.uuid4().hex[:8]}"
    group_id = f"{topic}.collectors"
    await ensure_topics(kafka, [(topic, PARTITIONS)])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap, request_timeout_ms=5000)
    await admin.start()
    owned: list[set[int]] = []
    metrics = Metrics()
    member = KafkaMembership(
        kafka, topic, group_id, PARTITIONS, owned.append,
        metrics=metrics, join_timeout=20.0, session_timeout=6.0, balance=evenly,
    )  # fmt: skip
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    frozen = await coordinator_of(admin, kafka_cluster, group_id)
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        started = time.monotonic()
        task = asyncio.create_task(member.run(stop))
        while not owned and time.monotonic() - started < COORDINATOR_FROZEN:
            await asyncio.sleep(0.1)
        before = time.monotonic() - started if owned else None
        os.kill(frozen.pid, signal.SIGCONT)
        resumed = time.monotonic()
        while not owned:
            assert time.monotonic() - resumed < 30, "not assigned 30 s after the coordinator resumed"
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        stalls = metrics.registry.get_sample_value("alarmd_cluster_join_stalls_total", {"group": "inventory"})
        print(
            f"coordinator node frozen {COORDINATOR_FROZEN:.0f}s: assigned "
            + (
                f"{before:.1f}s after the start, while it was frozen"
                if before
                else f"{took:.1f}s after the start"
            )
            + f"; {stalls:.0f} stalls"
        )
        assert owned[-1] == set(range(PARTITIONS))
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)
        for _ in range(120):  # bounded (60 s): the next test gets a whole cluster
            if await offsets_in_sync(admin):
                break
            await asyncio.sleep(0.5)
        await admin.close()


async def test_a_failed_restore_makes_the_source_join_again_and_nothing_is_handled_before_a_restore_succeeds(
    kafka_bootstrap: str,
) -> None:
    kafka, consumed = await events_topic(kafka_bootstrap, 2)
    topic = consumed.topic
    timeline: list[str] = []

    async def restore(partitions: set[int], unbroken: bool) -> None:
        if "restore failed" not in timeline:
            timeline.append("restore failed")
            raise TimeoutError("offsets by times not within 15000 ms")  # as on an overloaded cluster
        timeline.append("restored")

    async def handle(payload: bytes, key: bytes | None) -> None:
        timeline.append(payload.decode())

    sink = KafkaSink(kafka)
    await sink.send(topic, b"k", b"message")
    await sink.stop()
    source = KafkaSource(
        kafka, consumed, handle, lambda _: None, Metrics(),
        on_assign=lambda partitions: timeline.append("assigned"), on_restore=restore, session_timeout=6.0,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        started = time.monotonic()
        while "message" not in timeline:
            assert time.monotonic() - started < 30, f"not handled after a second restore: {timeline}"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert timeline[:4] == ["restore failed", "restored", "assigned", "message"], timeline


async def test_a_source_is_told_whether_it_took_part_in_every_generation_since_its_last_assignment(
    kafka_bootstrap: str,
) -> None:
    kafka, consumed = await events_topic(kafka_bootstrap, 4)
    told: dict[str, list[tuple[set[int], bool]]] = {"first": [], "second": []}

    def source(name: str) -> KafkaSource:
        async def restore(partitions: set[int], unbroken: bool) -> None:
            told[name].append((partitions, unbroken))

        async def handle(payload: bytes, key: bytes | None) -> None:
            pass

        return KafkaSource(
            kafka, consumed, handle, lambda _: None, Metrics(),
            on_assign=lambda partitions: None, on_restore=restore, session_timeout=6.0,
        )  # fmt: skip

    async def until(predicate: Callable[[], bool], what: str) -> None:
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < 30, f"{what}: {told}"
            await asyncio.sleep(0.1)

    stop = asyncio.Event()
    first = asyncio.create_task(source("first").run(stop))
    second: asyncio.Task[None] | None = None
    try:
        await until(lambda: len(told["first"]) == 1, "the first member's assignment")
        assert told["first"][0] == ({0, 1, 2, 3}, False), "a first assignment follows no generation it saw"
        second = asyncio.create_task(source("second").run(stop))
        await until(lambda: told["second"] and len(told["first"]) >= 2, "the rebalance for the second member")
        kept, unbroken = told["first"][1]
        assert 0 < len(kept) < 4
        assert unbroken, "the first member took part in the generation right after its last one"
        assert told["second"][0][1] is False
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(first, *([second] if second else [])), 30)
