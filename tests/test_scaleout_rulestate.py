"""A partition's pending rule state and recent event ids move with it to the correlator that takes it over.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1; samples and traps arrive on the events topic as a collector publishes them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from alarmd.cluster.codec import encode_samples
from alarmd.model import Sample
from tests.chaos.harness import Inbox
from tests.test_scaleout_restore import (
    LOAD_SLACK,
    RULES,
    SESSION_TIMEOUT,
    correlator,
    epoch,
    publish_trap,
    start_with_one_partition_each,
    until,
)

#: Longer than a SIGKILL's hand-over (session timeout and restore): the breach is pending across it.
FOR = 20.0
BUSY = f"""\
      - alert: Busy
        expr: interface_utilisation_percent > 80
        for: {FOR:.0f}s
        labels: {{severity: major, alarm_class: data_anomaly}}
"""
pytestmark = pytest.mark.integration

LINE = {"device": "cpe-router-01", "interface": "GigabitEthernet0/0/1", "if_index": "2"}


async def breach(bootstrap: str, topic: str, stop: asyncio.Event, every: float = 1.0) -> None:
    """cpe-router-01's utilisation at 95% every second, keyed by its circuit, until ``stop`` (60 at most)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(60):
            _, payload = encode_samples([Sample("interface_utilisation_percent", LINE, 95.0, time.time())])
            await producer.send_and_wait(f"{topic}.events", payload, key=b"CIR-0001")
            try:
                await asyncio.wait_for(stop.wait(), every)
                return
            except TimeoutError:
                continue
    finally:
        await producer.stop()


async def test_a_pending_breach_fires_on_time_and_a_trap_copy_is_a_duplicate_after_the_owner_is_killed(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.rulestate.{uuid.uuid4().hex[:8]}"
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    # One rules file for both, as on machines that all read /etc/alarmd: a metric alarm's
    # fingerprint names its rule's file and line.
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + BUSY)
    for daemon in pair:
        config = daemon.dir / "alarmd.yml"
        config.write_text(config.read_text().replace("rule_files: [rules.yml]", f"rule_files: [{rules}]"))
    stop = asyncio.Event()
    publishing: asyncio.Task[None] | None = None
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await start_with_one_partition_each(pair)
            owned = lambda d: d.metric("alarmd_cluster_partitions_owned", group="events")  # noqa: E731
            consumed = lambda d, kind, outcome: d.metric(  # noqa: E731
                "alarmd_cluster_events_consumed_total", type=kind, outcome=outcome
            )
            began = time.time()
            publishing = asyncio.create_task(breach(kafka_bootstrap, topic, stop))
            await publish_trap(kafka_bootstrap, topic, "linkDown", uptime=1000)
            orders = lambda alert: [o for o in inbox.of_type("work_order") if o["alert"] == alert]  # noqa: E731
            assert await inbox.until(lambda _: orders("LinkDown"), 30), "no LinkDown work order"
            await publish_trap(kafka_bootstrap, topic, "linkUp", uptime=1100)
            clears = lambda: [o for o in inbox.of_type("work_order_clear") if o["alert"] == "LinkDown"]  # noqa: E731
            assert await inbox.until(lambda _: clears(), 30), "no LinkDown clear"
            owner, survivor = sorted(pair, key=lambda d: consumed(d, "event", "judged"), reverse=True)
            assert consumed(survivor, "sample", "judged") == 0
            # the pending state's record went out in a transaction (with the fault's)
            await until(
                lambda: owner.metric("alarmd_cluster_changelog_records_total", kind="state") >= 2,
                10,
                "the pending state in the changelog",
            )
            assert not orders("Busy") and time.time() - began < FOR - 5, "too slow to kill it while pending"
            owner.kill()
            killed_at = time.time()

            took = lambda: [e for e in survivor.events("partitions_restored") if e["partitions"]][1:]  # noqa: E731
            await until(took, SESSION_TIMEOUT + LOAD_SLACK, "the survivor took over")
            (restored,) = took()
            assert restored["rule_states_restored"] == 1
            await until(lambda: owned(survivor) == 2, LOAD_SLACK, "both partitions on the survivor")
            assert restored["ids_rebuilt"] >= 3  # the trap, its linkUp and the samples before the kill
            assert not survivor.events("event_ids_not_rebuilt")

            await publish_trap(kafka_bootstrap, topic, "linkDown", uptime=1000)  # the other receiver's copy
            await until(
                lambda: consumed(survivor, "event", "duplicate") == 1, 15, "the copy counted a duplicate"
            )
            assert consumed(survivor, "event", "judged") == 0

            assert await inbox.until(lambda _: orders("Busy"), FOR + LOAD_SLACK), "the breach never fired"
            stop.set()
            (order,) = orders("Busy")
            took_over = epoch(restored["timestamp"])
            print(  # figures for docs/scaleout.md (pytest -s)
                f"breach began {began:.1f}, killed +{killed_at - began:.1f}s, "
                f"restored +{took_over - began:.1f}s, "
                f"fired +{epoch(order['raised_at']) - began:.1f}s (for {FOR:.0f}s)"
            )
            # on time: the first sample at least FOR after the breach began, not FOR after the takeover
            assert began + FOR <= epoch(order["raised_at"]) < began + FOR + 3.0
            assert epoch(order["raised_at"]) < took_over + FOR  # where a restarted for would have put it
            await inbox.collect(1)
            assert len(orders("LinkDown")) == 1 and len(orders("Busy")) == 1  # the copy raised nothing
    finally:
        stop.set()
        if publishing is not None:
            await asyncio.gather(publishing, return_exceptions=True)
        for daemon in pair:
            daemon.close()
