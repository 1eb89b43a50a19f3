"""Distributed mode on real parts: collectors sharing a location's devices, a correlator judging their events.

A real Kafka broker, snmpsim's simulated devices and net-snmp's snmptrap, on 127.0.0.1; the
daemons run as ``alarmd run --role collector|correlator`` processes.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

import kafka_local  # tools/, on sys.path via conftest
from alarmd.cluster.membership import partition_of
from tests.chaos.harness import BANDWIDTH_RULE, CONGESTED, PROFILES, Daemon, Inbox, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SESSION_TIMEOUT = 6.0  # the broker's lowest allowed session timeout
LOAD_SLACK = 8.0  # seconds: one polling interval (1 s), rebalance and a machine shared with other test runs
INVENTORY_PARTITIONS = 6
SPOOL = 6  # messages a collector keeps while Kafka is away: two seconds of three devices, one message a poll
DEVICES = ("cpe-router-01", "optical-tx-01", "proto-conv-01")
KINDS = {
    "cpe-router-01": "cpe_router",
    "optical-tx-01": "optical_transceiver",
    "proto-conv-01": "protocol_converter",
}

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: state
polling: {{interval: {interval}s, timeout: 1s, retries: 0}}
dial_test: {{every: 0s, preprocess_budget: 0s}}
credentials:
  trap-v2: {{version: 2c, community: trap-secret}}
traps:
  enabled: {traps}
  listen: 127.0.0.1:{trap_port}
  credentials: [trap-v2]
  definitions: ["{repo}/config/traps/*.yml"]
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
{devices}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]
kafka:
  request_timeout: 5s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
cluster:
  location: dc-north
  events_topic: {topic}.events
  events_partitions: 3
  inventory_topic: {topic}.inventory
  inventory_partitions: {partitions}
  collector_group: {topic}.collectors
  correlator_group: {topic}.correlators
{spool}  session_timeout: {session}s
http: {{listen: "127.0.0.1:{http}"}}
"""
RULES = (
    BANDWIDTH_RULE
    + """\
      - alert: LinkDown
        event: '{trap="linkDown"}'
        resolve: '{trap="linkUp"}'
        by: [device, if_index]
        labels: {severity: critical, alarm_class: transmission}
"""
)


def instance(
    root: Path,
    name: str,
    sim_port: int,
    bootstrap: str,
    topic: str,
    role: str,
    *,
    trap_port: int | None = None,
    fleet: dict[str, str] | None = None,
    interval: float = 1.0,
    partitions: int = INVENTORY_PARTITIONS,
    spool: str = "",
    session: float = SESSION_TIMEOUT,
) -> Daemon:
    """A config directory for one instance and the daemon that runs ``--role role`` on it.

    ``fleet`` maps device names to the simulated device that answers for them (the three
    :data:`DEVICES` by default); ``spool`` is one more ``cluster`` setting (``"spool_size: 10"``).
    """
    directory = root / name
    directory.mkdir()
    http = free_port()
    devices = "\n".join(
        f"  - {{name: {d}, kind: {KINDS[sim]}, address: 127.0.0.1, port: {sim_port}, location: dc-north, "
        f"snmp: {{community: {sim}}}}}"
        for d, sim in (fleet or {d: d for d in DEVICES}).items()
    )
    (directory / "alarmd.yml").write_text(
        CONFIG.format(
            profiles=PROFILES,
            repo=REPO,
            traps="true" if trap_port else "false",
            trap_port=trap_port or free_port(socket.SOCK_DGRAM),
            devices=devices,
            topic=topic,
            partitions=partitions,
            session=session,
            interval=interval,
            spool=f"  {spool}\n" if spool else "",
            http=http,
        )
    )
    (directory / "rules.yml").write_text(RULES)
    return Daemon(directory, bootstrap, http, "--role", role)


async def until(predicate: Any, timeout: float, what: str) -> float:
    """Wait for ``predicate()``; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def unpacked(value: bytes) -> list[dict[str, Any]]:
    """A message's samples (one device poll's) or its event, each with the message's id and bytes."""
    body = json.loads(value)
    if body.get("type") != "samples":
        return [body | {"_bytes": value}]
    return [
        {
            "id": body["id"],
            "metric": metric,
            "labels": body["labels"] | own,
            "value": v,
            "at": at,
            "_bytes": value,
        }
        for metric, own, v, at in body["samples"]
    ]


async def samples(bootstrap: str, topic: str, seconds: float) -> list[dict[str, Any]]:
    """Every sample and event on the events topic, read for ``seconds`` after the last message."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        quiet = time.monotonic() + seconds
        while time.monotonic() < quiet:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(m | {"_key": r.key.decode()} for r in records for m in unpacked(r.value))
            if batch:
                quiet = time.monotonic() + seconds
    finally:
        await consumer.stop()
    return found


def assert_one_payload_per_id(messages: list[dict[str, Any]]) -> None:
    """A message sent again (a batch retried after a timeout) carries the same id and the same payload."""
    payloads: dict[str, bytes] = {}
    for message in messages:
        assert payloads.setdefault(message["id"], message["_bytes"]) == message["_bytes"], (
            "one id, two payloads"
        )


async def test_collectors_share_a_location_and_the_survivor_takes_a_killed_ones_devices(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic, port = f"alarmd.scale.{uuid.uuid4().hex[:8]}", sim_network.port
    first = instance(tmp_path, "a", port, kafka_bootstrap, topic, "collector")
    second = instance(tmp_path, "b", port, kafka_bootstrap, topic, "collector")
    try:
        first.start()
        await first.wait_ready()
        assert first.metric("alarmd_cluster_devices_owned") == 3, "alone, it polls the whole location"
        second.start()
        await second.wait_ready()
        owned = lambda d: d.metric("alarmd_cluster_devices_owned")  # noqa: E731
        await until(lambda: {owned(first), owned(second)} == {1, 2}, 30, "a fair share of the three devices")
        shares = {d: d.metric("alarmd_cluster_devices_owned") for d in (first, second)}
        assert sum(shares.values()) == 3, "every device is polled, by one collector"
        victim, survivor = (first, second) if shares[first] >= shares[second] else (second, first)
        moved = shares[victim]
        killed_at = time.time()
        victim.kill()
        took = await until(
            lambda: survivor.metric("alarmd_cluster_devices_owned") == 3, SESSION_TIMEOUT + 20, "take-over"
        )
        assert took <= SESSION_TIMEOUT + LOAD_SLACK
        assert survivor.events("devices_assigned")[-1]["started"] == moved
        await asyncio.sleep(3)  # one polling interval and a little
        victim.start()  # back again: it gets its share, then the other one is stopped cleanly
        await victim.wait_ready()
        await until(lambda: {owned(victim), owned(survivor)} == {1, 2}, 30, "shared again")
        assert await survivor.stop() == 0  # SIGTERM: it leaves the group, so no session timeout to wait
        handed = await until(lambda: victim.metric("alarmd_cluster_devices_owned") == 3, 20, "hand-over")
        assert handed < SESSION_TIMEOUT, "a clean stop does not wait for the session to expire"
        await asyncio.sleep(2)
        assert await victim.stop() == 0
    finally:
        first.close()
        second.close()
    print(f"devices moved {took:.1f}s after SIGKILL, {handed:.1f}s after SIGTERM")
    messages = await samples(kafka_bootstrap, f"{topic}.events", 2)
    up = [m for m in messages if m.get("metric") == "device_up"]
    assert {m["labels"]["device"] for m in up if m["at"] > killed_at + took} == set(DEVICES)
    for device in DEVICES:  # the session timeout and about one cycle missed at a hand-over, no more
        times = sorted(m["at"] for m in up if m["labels"]["device"] == device)
        gap = max(b - a for a, b in itertools.pairwise(times))
        assert gap <= SESSION_TIMEOUT + LOAD_SLACK, (device, gap)
    assert all(m["value"] == 1 for m in up), "no device looked down through the hand-over"
    assert {m["_key"] for m in up if m["labels"]["device"] == "cpe-router-01"} == {"CIR-0001"}, (
        "keyed by circuit"
    )
    assert {m["_key"] for m in up if m["labels"]["device"] == "proto-conv-01"} == {"proto-conv-01"}
    assert_one_payload_per_id(messages)


HANDOVER_INTERVAL = 10.0  # seconds between polls in the hand-over test: more than the session timeout
HANDOVER_FLEET = {"cpe-router-01": "cpe-router-01"} | {f"cpe-{i:02d}": "cpe-router-01" for i in range(1, 24)}
"""24 devices, all answered by one simulated router (the first is on the circuit of the config)."""


async def polls(bootstrap: str, topic: str) -> dict[str, list[tuple[float, float, float]]]:
    """Each device's ``device_up`` samples as ``(record time, sample time, value)``, in record order."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: dict[str, list[tuple[float, float, float]]] = {}
    try:
        quiet = time.monotonic() + 2
        while time.monotonic() < quiet:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    for body in unpacked(r.value):
                        if body.get("metric") != "device_up":
                            continue
                        found.setdefault(body["labels"]["device"], []).append(
                            (r.timestamp / 1000, body["at"], body["value"])
                        )
            if batch:
                quiet = time.monotonic() + 2
    finally:
        await consumer.stop()
    return found


def first_after(
    seen: dict[str, list[tuple[float, float, float]]], devices: set[str], moment: float
) -> list[float]:
    """Seconds from ``moment`` to each device's next poll (as the chaos harness counts), shortest first."""
    return sorted(min(t for t, _, _ in seen[d] if t > moment) - moment for d in devices)


def held(daemon: Daemon) -> set[str]:
    """The devices of the hand-over fleet that a collector was last assigned."""
    partitions = daemon.events("devices_assigned")[-1]["partitions"]
    return {d for d in HANDOVER_FLEET if partition_of(d, 12) in partitions}


def iso(stamp: str) -> float:
    """Epoch seconds of a log line's ISO timestamp."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def missed_cycles(seen: dict[str, list[tuple[float, float, float]]], interval: float) -> int:
    """The most polling cycles any device missed (as the chaos harness counts them)."""
    gaps = [b - a for s in seen.values() for a, b in itertools.pairwise(sorted({at for _, at, _ in s}))]
    return max(round(g / interval) - 1 for g in gaps)


async def test_a_killed_or_stopped_collectors_devices_are_polled_again_within_a_cycle(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic, port = f"alarmd.handover.{uuid.uuid4().hex[:8]}", sim_network.port
    first, second = (
        instance(tmp_path, n, port, kafka_bootstrap, topic, "collector", fleet=HANDOVER_FLEET,
                 interval=HANDOVER_INTERVAL, partitions=12)
        for n in ("a", "b")
    )  # fmt: skip
    owned = lambda d: d.metric("alarmd_cluster_devices_owned")  # noqa: E731
    try:
        for daemon in (first, second):
            daemon.start()
            await daemon.wait_ready()
        await until(
            lambda: owned(first) + owned(second) == 24 and owned(first) * owned(second) > 0, 30, "shared"
        )
        await asyncio.sleep(1.2 * HANDOVER_INTERVAL)  # both poll their share on their cadence
        victim, survivor = (first, second) if owned(first) >= owned(second) else (second, first)
        lost = held(victim)
        killed_at = time.time()
        victim.kill()
        await until(lambda: owned(survivor) == 24, SESSION_TIMEOUT + 20, "take-over")
        assigned_kill = survivor.events("devices_assigned")[-1]["timestamp"]
        await asyncio.sleep(1.2 * HANDOVER_INTERVAL)
        took = lambda kind: survivor.metric(f"alarmd_cluster_takeover_seconds_{kind}", group="inventory")  # noqa: E731
        assert took("count") == 1, "the take-over is timed once its devices have all been polled"
        assert took("sum") <= 5 + LOAD_SLACK, "within the take-over spread and a poll"
        victim.start()  # back again: it takes a share, then the survivor is stopped cleanly
        await victim.wait_ready()
        await until(
            lambda: 0 < owned(victim) < 24 and owned(survivor) + owned(victim) == 24, 30, "shared again"
        )
        await asyncio.sleep(1.2 * HANDOVER_INTERVAL)
        left = held(survivor)
        stopped_at = time.time()
        assert survivor.proc is not None
        survivor.proc.send_signal(signal.SIGTERM)
        await until(lambda: owned(victim) == 24, 20, "hand-over")
        assigned_term = victim.events("devices_assigned")[-1]["timestamp"]
        await asyncio.sleep(1.2 * HANDOVER_INTERVAL)
        assert await survivor.stop() == 0
        assert await victim.stop() == 0
    finally:
        first.close()
        second.close()
    seen = await polls(kafka_bootstrap, f"{topic}.events")
    after_kill, after_term = first_after(seen, lost, killed_at), first_after(seen, left, stopped_at)
    missed = missed_cycles(seen, HANDOVER_INTERVAL)
    print(
        f"SIGKILL: {len(lost)} devices polled again within {after_kill[-1]:.1f}s (p50 "
        f"{statistics.median(after_kill):.1f}s, assigned after {iso(assigned_kill) - killed_at:.1f}s); "
        f"SIGTERM: {len(left)} within {after_term[-1]:.1f}s (p50 {statistics.median(after_term):.1f}s, "
        f"assigned after {iso(assigned_term) - stopped_at:.1f}s); most cycles missed: {missed}"
    )
    assert after_kill[-1] <= SESSION_TIMEOUT + HANDOVER_INTERVAL + LOAD_SLACK
    assert after_term[-1] <= 10
    assert missed <= 1
    assert all(v == 1 for s in seen.values() for _, _, v in s), "no device looked down through the hand-overs"


async def test_a_collector_is_not_ready_until_its_group_assigns_it_devices(
    tmp_path: Path, sim_network: Any
) -> None:
    topic, port = f"alarmd.scale.{uuid.uuid4().hex[:8]}", sim_network.port
    lonely = instance(tmp_path, "a", port, f"127.0.0.1:{free_port()}", topic, "collector")  # no broker there
    try:
        lonely.start()
        await until(lambda: lonely.get("/metrics")[0] == 200, 30, "the HTTP listener")
        await asyncio.sleep(2)
        assert lonely.get("/-/ready")[0] == 503
        assert lonely.metric("alarmd_cluster_devices_owned") == 0
        assert await lonely.stop() == 0
    finally:
        lonely.close()


FROZEN_SESSION = 40.0  # seconds: a rebalance waits this long for the frozen member to rejoin
JOIN_TIMEOUT = 8.0  # the joining collector's cluster.join_timeout


async def test_a_collector_whose_join_stalls_leaves_joins_again_and_polls_once_the_group_can_settle(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    """A rebalance held up by a frozen member (SIGSTOP, 40 s session) stalls the joining collector's join.

    Past ``join_timeout`` the joining collector logs ``group_join_stalled``, counts it, leaves
    and joins again as a new member; once the frozen one resumes, the group settles with it.
    """
    topic, port = f"alarmd.join.{uuid.uuid4().hex[:8]}", sim_network.port
    frozen = instance(tmp_path, "a", port, kafka_bootstrap, topic, "collector", session=FROZEN_SESSION)
    joining = instance(
        tmp_path, "b", port, kafka_bootstrap, topic, "collector", spool=f"join_timeout: {JOIN_TIMEOUT}s"
    )
    owned = lambda d: d.metric("alarmd_cluster_devices_owned")  # noqa: E731
    stalls = lambda: joining.metric("alarmd_cluster_join_stalls_total", group="inventory")  # noqa: E731
    try:
        frozen.start()
        await frozen.wait_ready()
        await until(lambda: owned(frozen) == len(DEVICES), 30, "the first collector's devices")
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        joining.start()
        await until(lambda: joining.get("/metrics")[0] == 200, 30, "the HTTP listener")
        assert stalls() == 0
        stalled = await until(
            lambda: joining.events("group_join_stalled"), JOIN_TIMEOUT + LOAD_SLACK + 5, "stall"
        )
        [first, *_] = joining.events("group_join_stalled")
        assert first["limit_s"] == JOIN_TIMEOUT
        assert first["waited_s"] >= JOIN_TIMEOUT
        assert stalls() >= 1
        assert joining.get("/-/ready")[0] == 503, "not ready while it has no devices"
        assert owned(joining) == 0
        resumed = time.time()
        frozen.proc.send_signal(signal.SIGCONT)
        settled = await until(
            lambda: owned(joining) > 0 and owned(joining) + owned(frozen) == len(DEVICES),
            JOIN_TIMEOUT + LOAD_SLACK,
            "the joining collector's share",
        )
        await joining.wait_ready(timeout=10)
        mine = {d for d in DEVICES if partition_of(d, INVENTORY_PARTITIONS) in held_partitions(joining)}
        await asyncio.sleep(3)  # a few 1 s polling cycles
        assert await joining.stop() == 0
        assert await frozen.stop() == 0
    finally:
        if frozen.proc is not None and frozen.proc.poll() is None:
            frozen.proc.send_signal(signal.SIGCONT)
        frozen.close()
        joining.close()
    seen = await polls(kafka_bootstrap, f"{topic}.events")
    after = first_after(seen, mine, resumed)
    print(
        f"join stalled after {stalled:.1f}s ({len(joining.events('group_join_stalled'))} stalls); "
        f"assigned {settled:.1f}s after SIGCONT; its {len(mine)} devices polled within {after[-1]:.1f}s"
    )
    assert after[-1] <= JOIN_TIMEOUT + LOAD_SLACK


def held_partitions(daemon: Daemon) -> set[int]:
    """The inventory partitions a collector was last assigned."""
    return set(daemon.events("devices_assigned")[-1]["partitions"])


def snmptrap(port: int, uptime: int) -> None:
    """linkDown of ifIndex 2, as the device at 127.0.0.1 sends it, with its own sysUpTime."""
    subprocess.run(
        ["snmptrap", "-v2c", "-c", "trap-secret", f"127.0.0.1:{port}", str(uptime), "1.3.6.1.6.3.1.1.5.3",
         "1.3.6.1.2.1.2.2.1.1.2", "i", "2", "1.3.6.1.2.1.2.2.1.7.2", "i", "1",
         "1.3.6.1.2.1.2.2.1.8.2", "i", "2"],
        check=True,
        env={**os.environ, "MIBS": ":"},
        timeout=10,
    )  # fmt: skip


async def test_a_correlator_dispatches_from_collected_samples_and_one_trap_to_two_receivers_is_one_alarm(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic, port = f"alarmd.scale.{uuid.uuid4().hex[:8]}", sim_network.port
    traps = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
    collectors = [
        instance(tmp_path, f"collector-{i}", port, kafka_bootstrap, topic, "collector", trap_port=trap)
        for i, trap in enumerate(traps)
    ]
    correlator = instance(tmp_path, "correlator", port, kafka_bootstrap, topic, "correlator")
    sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders") as inbox:
            for daemon in (correlator, *collectors):
                daemon.start()
            for daemon in (correlator, *collectors):
                await daemon.wait_ready()
            orders = lambda alert: [o for o in inbox.of_type("work_order") if o["alert"] == alert]  # noqa: E731
            assert await inbox.until(lambda _: orders("BandwidthOccupancyHigh"), 60), (
                "no work order from polling"
            )
            order = orders("BandwidthOccupancyHigh")[0]
            assert (order["device"], order["circuit"], order["tier"]) == ("cpe-router-01", "CIR-0001", "gold")
            for trap in traps:  # one trap, sent by the device to both of its receivers
                snmptrap(trap, uptime=424242)
            assert await inbox.until(lambda _: orders("LinkDown"), 30), "no work order from the trap"
            consumed = lambda outcome: correlator.metric(  # noqa: E731
                "alarmd_cluster_events_consumed_total", type="event", outcome=outcome
            )
            await until(lambda: consumed("duplicate") == 1, 15, "the second copy counted")
            for trap in traps:  # the same fault reported again later: a repeat, not a duplicate
                snmptrap(trap, uptime=434343)
            await until(lambda: consumed("duplicate") == 2 and consumed("judged") == 2, 15, "the repeat")
            await inbox.collect(3)
            assert len(orders("LinkDown")) == 1, orders("LinkDown")
            assert len(orders("BandwidthOccupancyHigh")) == 1
            assert correlator.metric("alarmd_cluster_partitions_owned", group="events") == 3
            messages = sum(c.metric("alarmd_cluster_events_published_total") for c in collectors)
            judged = correlator.metric(
                "alarmd_cluster_events_consumed_total", type="sample", outcome="judged"
            )
            assert judged > 5 * messages, "a device poll is one message, counted as its samples"
            for daemon in (*collectors, correlator):
                assert await daemon.stop() == 0
    finally:
        for daemon in (*collectors, correlator):
            daemon.close()
        sim_network.set_rates({"cpe-router-01/2/in": None})


def test_the_three_devices_do_not_all_share_one_partition() -> None:
    assert len({partition_of(d, INVENTORY_PARTITIONS) for d in DEVICES}) > 1


async def publishing(collector: Daemon) -> None:
    """Start a collector and wait until the brokers have acknowledged some of its samples."""
    collector.start()
    await collector.wait_ready()
    await until(lambda: collector.metric("alarmd_cluster_events_published_total") > 0, 20, "publishing")


@pytest.mark.chaos
async def test_a_collector_spools_while_kafka_is_away_counts_what_it_drops_and_sends_the_rest_after(
    tmp_path: Path, kafka_broker: kafka_local.Broker | None, sim_network: Any
) -> None:
    if kafka_broker is None:
        pytest.skip("pauses its own broker; an external cluster cannot be paused from here")
    topic = f"alarmd.spool.{uuid.uuid4().hex[:8]}"
    collector = instance(
        tmp_path,
        "a",
        sim_network.port,
        kafka_broker.bootstrap,
        topic,
        "collector",
        spool=f"spool_size: {SPOOL}",
    )
    paused = False
    try:
        await publishing(collector)
        os.killpg(kafka_broker.pid, signal.SIGSTOP)  # the broker answers nothing: Kafka is away
        paused, away_at = True, time.time()
        await until(lambda: collector.metric("alarmd_cluster_spool_dropped_total") > 0, 30, "a full spool")
        await until(lambda: time.time() > away_at + 3, 5, "three polling intervals away")
        assert collector.metric("alarmd_cluster_spool_depth") == SPOOL
        assert collector.get("/-/ready")[0] == 200, "polling goes on while Kafka is away"
        os.killpg(kafka_broker.pid, signal.SIGCONT)
        paused, back_at = False, time.time()
        await until(
            lambda: collector.metric("alarmd_cluster_spool_depth") < SPOOL / 2, 60, "the spool drains"
        )
        dropped = collector.metric("alarmd_cluster_spool_dropped_total")
        assert await collector.stop() == 0
    finally:
        if paused:
            os.killpg(kafka_broker.pid, signal.SIGCONT)
        collector.close()
    messages = await samples(kafka_broker.bootstrap, f"{topic}.events", 2)
    kept = [m for m in messages if away_at < m.get("at", 0) < back_at]
    assert kept, "what was polled while Kafka was away and kept in the spool arrived afterwards"
    assert dropped > 0
    assert_one_payload_per_id(messages)


@pytest.mark.chaos
async def test_a_collector_killed_while_kafka_is_away_sends_its_disk_spool_after_the_restart(
    tmp_path: Path, kafka_broker: kafka_local.Broker | None, sim_network: Any
) -> None:
    if kafka_broker is None:
        pytest.skip("pauses its own broker; an external cluster cannot be paused from here")
    topic = f"alarmd.diskspool.{uuid.uuid4().hex[:8]}"
    spool = "spool_disk_bytes: 4000000"
    collector = instance(
        tmp_path, "a", sim_network.port, kafka_broker.bootstrap, topic, "collector", spool=spool
    )
    paused = False
    try:
        await publishing(collector)
        os.killpg(kafka_broker.pid, signal.SIGSTOP)  # Kafka is away
        paused, away_at = True, time.time()
        await until(lambda: collector.metric("alarmd_cluster_spool_depth") > 9, 20, "a spool filling")
        held = collector.metric("alarmd_cluster_spool_depth")
        collector.kill()  # crashed while Kafka was away: its spool is on disk
        killed_at = time.time()
        os.killpg(kafka_broker.pid, signal.SIGCONT)
        paused = False
        collector.start()
        await until(lambda: collector.events("spool_recovered"), 30, "the spool read back")
        recovered = collector.events("spool_recovered")[0]["messages"]
        # the spool is read back before the HTTP listener opens
        await until(lambda: collector.get("/metrics")[0] == 200, 30, "the HTTP listener")
        await until(
            lambda: collector.metric("alarmd_cluster_events_published_total") >= recovered, 60, "sent"
        )
        assert await collector.stop() == 0
    finally:
        if paused:
            os.killpg(kafka_broker.pid, signal.SIGCONT)
        collector.close()
    assert recovered >= held
    messages = await samples(kafka_broker.bootstrap, f"{topic}.events", 2)
    polled_while_away = {m["id"] for m in messages if away_at < m.get("at", 0) < killed_at}
    assert len(polled_while_away) >= held, "what the killed collector held arrived after its restart"
    assert_one_payload_per_id(messages)
