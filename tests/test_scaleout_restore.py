"""A correlator's faults survive it: changelog, restore on assignment, and a due clock fired by the new owner.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1; the fault arrives on the events topic as a collector publishes it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from alarmd.cluster.codec import encode_event
from alarmd.model import Event
from tests.chaos.harness import PROFILES, Daemon, Inbox, free_port

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 6.0  # the broker's lowest allowed session timeout
ESCALATION = 4.0  # seconds from dispatch: due while the killed owner is dead, before the survivor takes over
LOAD_SLACK = 15.0  # rebalance and restore on a machine shared with other test runs

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: state
dial_test: {{every: 0s, preprocess_budget: 0s}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
{devices}
circuits:
{circuits}
clocks: {{important_escalation: {escalation}s, ordinary_escalation: {escalation}s}}
kafka:
  request_timeout: 5s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
cluster:
  events_topic: {topic}.events
  events_partitions: 2
  correlator_group: {topic}.correlators
  session_timeout: {session}s
http: {{listen: "127.0.0.1:{http}"}}
"""
RULES = """\
groups:
  - name: traps
    rules:
      - alert: LinkDown
        event: '{trap="linkDown"}'
        resolve: '{trap="linkUp"}'
        by: [device, if_index]
        labels: {severity: critical, alarm_class: transmission}
"""


def correlator(
    root: Path, name: str, bootstrap: str, topic: str, *, circuits: int = 1, escalation: float = ESCALATION
) -> Daemon:
    """A config directory for one correlator and the daemon that runs it.

    Circuit ``CIR-000<i>`` (i from 1) is one gold customer's, over device ``cpe-router-0<i>``.
    """
    directory = root / name
    directory.mkdir()
    http = free_port()
    numbers = range(1, circuits + 1)
    (directory / "alarmd.yml").write_text(
        CONFIG.format(
            profiles=PROFILES,
            devices="\n".join(
                f"  - {{name: cpe-router-{i:02d}, kind: cpe_router, address: 127.0.0.1, "
                f"port: {free_port()}, snmp: {{community: x}}}}"
                for i in numbers
            ),
            circuits="\n".join(
                f"  - {{id: CIR-{i:04d}, customer: CUST-0001, "
                f"path: [{{device: cpe-router-{i:02d}, interface: GigabitEthernet0/0/1}}]}}"
                for i in numbers
            ),
            escalation=escalation,
            topic=topic,
            session=SESSION_TIMEOUT,
            http=http,
        )
    )
    (directory / "rules.yml").write_text(RULES)
    return Daemon(directory, bootstrap, http, "--role", "correlator")


def trap_payload(trap: str, uptime: int) -> bytes:
    """A trap of cpe-router-01's ifIndex 2 as a collector publishes it (its key: ``CIR-0001``)."""
    labels = {
        "trap": trap,
        "if_index": "2",
        "source_address": "127.0.0.1",
        "agent_address": "127.0.0.1",
        "device": "cpe-router-01",
        "interface": "GigabitEthernet0/0/1",
    }
    return encode_event(Event("trap", trap, time.time(), labels, uptime=uptime))[1]


async def publish_trap(bootstrap: str, topic: str, trap: str, uptime: int) -> None:
    """:func:`trap_payload` on the events topic, keyed by the device's circuit."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(f"{topic}.events", trap_payload(trap, uptime), key=b"CIR-0001")
    finally:
        await producer.stop()


def epoch(text: str) -> float:
    """An RFC 3339 timestamp as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def until(predicate: Any, timeout: float, what: str) -> None:
    """Wait for ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def start_with_one_partition_each(pair: list[Daemon], each: int = 1) -> None:
    """Start the correlators and wait until each owns one events partition (or ``each``)."""
    for daemon in pair:
        daemon.start()
    for daemon in pair:
        await daemon.wait_ready()
    owned = lambda d: d.metric("alarmd_cluster_partitions_owned", group="events")  # noqa: E731
    await until(lambda: [owned(d) for d in pair] == [each] * len(pair), 30, f"{each} events partitions each")


async def test_a_killed_correlators_fault_keeps_its_id_and_its_due_escalation_fires_once_on_the_survivor(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.restore.{uuid.uuid4().hex[:8]}"
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await start_with_one_partition_each(pair)
            owned = lambda d: d.metric("alarmd_cluster_partitions_owned", group="events")  # noqa: E731
            await publish_trap(kafka_bootstrap, topic, "linkDown", uptime=1000)

            orders = lambda kind: [o for o in inbox.of_type(kind) if o["alert"] == "LinkDown"]  # noqa: E731
            assert await inbox.until(lambda _: orders("work_order"), 30), "no work order"
            order = orders("work_order")[0]
            due = order["due"]["escalation_at"]
            judged = lambda d: d.metric(  # noqa: E731
                "alarmd_cluster_events_consumed_total", type="event", outcome="judged"
            )
            owner, survivor = sorted(pair, key=judged, reverse=True)
            assert (judged(owner), judged(survivor)) == (1, 0)
            owner.kill()
            killed_at = time.time()
            assert killed_at < epoch(due), "the owner was killed only after the escalation was due"

            await until(
                lambda: survivor.metric("alarmd_cluster_restored_records_total") == 1,
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor restored the fault",
            )
            assert owned(survivor) == 2
            alarm_id = order["alarm_id"]
            escalations = lambda: [n for n in inbox.of_type("escalation") if n["alarm_id"] == alarm_id]  # noqa: E731
            assert await inbox.until(lambda _: escalations(), 15), "the due escalation did not fire"

            await inbox.collect(2)
            (escalation,) = escalations()
            assert escalation["due"]["escalation_at"] == due
            assert epoch(escalation["sent_at"]) > killed_at
            fired = survivor.events("clock_fired")
            assert [(e["alarm_id"], e["kind"], e["due"]) for e in fired] == [(alarm_id, "escalation", due)]
            assert not owner.events("clock_fired")
            restored = survivor.events("partitions_restored")[-1]
            assert restored["faults_restored"] == 1 and restored["timers_due"] == 1
            assert epoch(fired[0]["timestamp"]) - epoch(restored["timestamp"]) < 3.0  # at once: next tick
            print(  # the figures docs/scaleout.md quotes (pytest -s)
                f"SIGKILL to restored: {epoch(restored['timestamp']) - killed_at:.1f}s, "
                f"restore took {restored['seconds']}s, escalation due {due}, "
                f"fired {fired[0]['timestamp']} ({epoch(fired[0]['timestamp']) - epoch(due):.1f}s late)"
            )

            # The killed one comes back (its SQLite still holds the fault and its escalation clock,
            # as they were when it died) and the survivor is stopped: the fault moves back.
            owner.start()
            await owner.wait_ready()
            await until(lambda: [owned(d) for d in pair] == [1, 1], 30, "one events partition each again")
            stopped_at = time.time()
            assert await survivor.stop() == 0
            await until(
                lambda: owned(owner) == 2 and owner.metric("alarmd_cluster_restored_records_total") == 1,
                LOAD_SLACK,
                "the fault back on the restarted correlator",
            )
            took_over = owner.events("partitions_restored")[-1]  # the stopped one's partition
            print(f"SIGTERM to its partition restored: {epoch(took_over['timestamp']) - stopped_at:.1f}s")

            # The fault reported again, then cleared: it is carried on under its id.
            await publish_trap(kafka_bootstrap, topic, "linkDown", uptime=2000)
            await publish_trap(kafka_bootstrap, topic, "linkUp", uptime=3000)
            assert await inbox.until(lambda _: orders("work_order_clear"), 30), "the clear was not sent"
            await inbox.collect(2)
            assert [o["alarm_id"] for o in orders("work_order")] == [alarm_id]
            assert [o["alarm_id"] for o in orders("work_order_clear")] == [alarm_id]
            assert len(escalations()) == 1  # the stale clock in the restarted one's cache never fired
            assert not owner.events("clock_fired")
            assert owner.metric("alarmd_cluster_restore_seconds_count") >= 1
            assert await owner.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()
