"""The daemon's other intakes on real parts: traps from net-snmp, upstream alarms on Kafka, the dial test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
credentials:
  sim-cpe: {{version: 2c, community: cpe-router-01}}
  trap-v2: {{version: 2c, community: trap-secret}}
traps:
  enabled: true
  listen: 127.0.0.1:{trap_port}
  credentials: [trap-v2]
  definitions: ["{repo}/config/traps/*.yml"]
kafka: {{topics: {{work_orders: {topic}.workorders}}}}
upstream:
  enabled: true
  topic: {topic}
  group_id: {topic}-group
  dead_letter_topic: {topic}.dlq
dial_test: {{every: 1s, count: 2, interval: 50ms, timeout: 500ms}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {sim_port}, credentials: sim-cpe}}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]
    dial_targets: {{cpe_wan: 127.0.0.1}}
http: {{listen: "127.0.0.1:{http_port}"}}
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def snmptrap_v2c(port: int, community: str, trap_oid: str, *varbinds: str) -> None:
    """Send a v2c trap with net-snmp's snmptrap to 127.0.0.1 (varbinds as OID, type, value triples)."""
    subprocess.run(
        ["snmptrap", "-v2c", "-c", community, f"127.0.0.1:{port}", "", trap_oid, *varbinds],
        check=True,
        env={**os.environ, "MIBS": ":"},
        timeout=10,
    )


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def wait_for(log: Path, predicate: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in events(log):
            if predicate(entry):
                return entry
        await asyncio.sleep(0.2)
    raise AssertionError(f"no matching log line within {timeout:.0f}s")


async def work_orders(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    assert len(found) >= count, found
    return found


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def test_traps_upstream_alarms_and_dial_tests_reach_the_rule_stage_resolved(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic = f"alarmd.upstream.{uuid.uuid4().hex[:8]}"
    trap_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO, trap_port=trap_port, http_port=http_port, topic=topic, sim_port=sim_network.port
        )
    )
    log = tmp_path / "alarmd.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alarmd",
                "run",
                "-c",
                str(tmp_path),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        await wait_for(log, lambda e: e["event"] == "daemon_started", 30)
        await asyncio.sleep(3)  # the first polls learn ifIndex -> ifName, so the trap can name it
        snmptrap_v2c(
            trap_port,
            "trap-secret",
            "1.3.6.1.6.3.1.1.5.3",
            *("1.3.6.1.2.1.2.2.1.1.2", "i", "2"),
            *("1.3.6.1.2.1.2.2.1.7.2", "i", "1"),
            *("1.3.6.1.2.1.2.2.1.8.2", "i", "2"),
        )
        trap = await wait_for(log, lambda e: e["event"] == "event_received" and e["source"] == "trap", 15)
        assert (trap["trap"], trap["device"], trap["interface"], trap["circuit"]) == (
            "linkDown",
            "cpe-router-01",
            "GigabitEthernet0/0/1",
            "CIR-0001",
        )

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic,
                key=b"CIR-0001",
                value=json.dumps(
                    {
                        "schema_version": 1,
                        "source_system": "transmission_nms",
                        "alarm_id": "TNMS-77",
                        "event_type": "raise",
                        "alarm_type": "LOS",
                        "severity": "critical",
                        "raised_at": "2026-11-22T01:00:00Z",
                        "circuit": "CIR-0001",
                    }
                ).encode(),
            )
            await producer.send_and_wait(topic, key=b"CIR-0001", value=b"{not json")
        finally:
            await producer.stop()

        def is_upstream(e: dict[str, Any]) -> bool:
            return bool(e["event"] == "event_received" and e["source"] == "upstream")

        upstream = await wait_for(log, is_upstream, 30)
        assert (upstream["kind"], upstream["circuit"]) == ("LOS", "CIR-0001")
        await wait_for(log, lambda e: e["event"] == "upstream_dead_letter", 15)

        orders = await work_orders(kafka_bootstrap, f"{topic}.workorders", 2)
        by_alert = {o["alert"]: o for o in orders}
        link = by_alert["LinkDown"]
        assert (link["alarm_class"], link["lead_team"], link["circuit"], link["interface"]) == (
            "transmission",
            "transport_network",
            "CIR-0001",
            "GigabitEthernet0/0/1",
        )
        los = by_alert["UpstreamTransmissionAlarm"]
        assert (los["circuit"], los["customer"], los["tier"], los["lead_team"]) == (
            "CIR-0001",
            "CUST-0001",
            "gold",
            "transport_network",
        )

        assert metric(http_port, 'alarmd_probe_runs_total{outcome="ok"}') >= 1
        assert metric(http_port, 'alarmd_traps_received_total{pdu="trap",version="2c"}') == 1

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
