"""A newly assigned partition's input waits for its restore: aiokafka fetches it meanwhile.

aiokafka sets a new assignment, starts fetching its partitions and only then calls the
rebalance listener, where a correlator restores their faults from the changelog.  A repeat
of an open fault fetched during that restore must be judged against the restored fault, not
raise a second one.  Two ``alarmd run --role correlator`` processes on a real Kafka broker.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.chaos.harness import Daemon, Inbox
from tests.test_scaleout_restore import (
    LOAD_SLACK,
    SESSION_TIMEOUT,
    correlator,
    start_with_one_partition_each,
    trap_payload,
    until,
)

pytestmark = pytest.mark.integration

COPIES = 40_000  # copies of the first trap before the hand-over: the new owner reads their ids back, slowly


async def test_a_repeat_fetched_while_its_partition_is_restored_is_a_repeat_of_the_restored_fault(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.restorewait.{uuid.uuid4().hex[:8]}"
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders") as inbox:
            await start_with_one_partition_each(pair)
            first = trap_payload("linkDown", uptime=1000)
            await producer.send_and_wait(f"{topic}.events", first, key=b"CIR-0001")
            assert await inbox.until(lambda _: inbox.of_type("work_order"), 30), "no work order"

            def judged(daemon: Daemon) -> float:
                return daemon.metric("alarmd_cluster_events_consumed_total", type="event", outcome="judged")

            owner, survivor = sorted(pair, key=judged, reverse=True)
            for _ in range(COPIES):  # the owner takes each for a copy; its offset moves past them all
                await producer.send(f"{topic}.events", first, key=b"CIR-0001")
            await producer.flush()
            duplicates = lambda: owner.metric(  # noqa: E731
                "alarmd_cluster_events_consumed_total", type="event", outcome="duplicate"
            )
            await until(lambda: duplicates() == COPIES, 60, "the owner consumed the copies")

            assert await owner.stop() == 0  # it commits and leaves; the survivor restores its partition
            await producer.send_and_wait(
                f"{topic}.events", trap_payload("linkDown", uptime=2000), key=b"CIR-0001"
            )
            await until(
                lambda: survivor.metric("alarmd_cluster_restored_records_total") == 1,
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor restored the fault",
            )
            await until(lambda: judged(survivor) >= 1, LOAD_SLACK, "the survivor judged the repeat")
            await inbox.collect(3)

            (restored,) = [e for e in survivor.events("partitions_restored") if e["faults_restored"]]
            orders = {o["work_order_id"] for o in inbox.of_type("work_order")}
            assert len(orders) == 1, f"the repeat raised a second fault: {sorted(orders)}"
            print(f"restore took {restored['seconds']}s, {restored.get('ids_rebuilt')} ids read back")
            assert await survivor.stop() == 0
    finally:
        await producer.stop()
        for daemon in pair:
            daemon.close()
