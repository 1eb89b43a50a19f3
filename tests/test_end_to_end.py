"""The walking skeleton on real parts: snmpsim → alarmd → Apache Kafka, as a user would run it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CONGESTED = 1_125_000.0  # bytes/s on a 10 Mbit/s WAN port: 90% occupancy
RELIEVED = 125_000.0  # 10%

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 1}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {port},
     snmp: {{community: cpe-router-01}}}}
  - {{name: optical-tx-01, kind: optical_transceiver, address: 127.0.0.1, port: {port},
     snmp: {{community: optical-tx-01}}}}
  - {{name: proto-conv-01, kind: protocol_converter, address: 127.0.0.1, port: {port},
     snmp: {{community: proto-conv-01}}}}
  - {{name: dead-router, kind: cpe_router, address: 127.0.0.1, port: {dead_port}, snmp: {{community: x}}}}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path:
      - {{device: cpe-router-01, interface: GigabitEthernet0/0/1}}
      - {{device: optical-tx-01}}
kafka:
  topics: {{work_orders: {topic}}}
http: {{listen: "127.0.0.1:0"}}
"""

RULES = """\
groups:
  - name: data_anomaly
    rules:
      - alert: BandwidthOccupancyHigh
        expr: interface_utilisation_percent > 80
        for: 2s
        labels: {severity: major, alarm_class: data_anomaly, unit: percent}
        annotations:
          summary: "Bandwidth occupancy {{ $value }}% on {{ $labels.device }} {{ $labels.interface }}"
  - name: transmission
    rules:
      - alert: OpticalPowerOutOfRange
        expr: optical_rx_power_dbm < -25
        clear: "> -24"
        labels: {severity: critical, alarm_class: transmission, unit: dBm}
"""


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 where nothing answers: a device that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """Everything consumed from the topic, in order, so no record of a batch is lost between waits."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.records: list[tuple[bytes, dict[str, Any]]] = []

    async def next(self, timeout: float) -> tuple[bytes, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.records and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=500)
            for records in batch.values():
                self.records.extend((r.key, json.loads(r.value)) for r in records)
        if not self.records:
            raise AssertionError(f"no message on the topic within {timeout:.0f}s")
        return self.records.pop(0)


async def test_congested_line_yields_a_work_order_folded_under_a_transmission_fault_then_cleared(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic = f"alarmd.workorders.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            port=sim_network.port,
            dead_port=free_udp_port(),
            topic=topic,
            profiles=REPO / "config" / "profiles" / "*.yml",
        )
    )
    (tmp_path / "rules.yml").write_text(RULES)
    sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    inbox = Inbox(consumer)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    log_path = tmp_path / "alarmd.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "alarmd", "run", "-c", str(tmp_path), "--log-format", "json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        started = time.monotonic()
        key, order = await inbox.next(60)
        raised_after = time.monotonic() - started
        assert key == b"CIR-0001"
        assert order["type"] == "work_order"
        assert order["schema_version"] == 1
        assert order["work_order_id"].startswith("WO-") and order["alarm_id"] in order["work_order_id"]
        assert (order["circuit"], order["customer"], order["tier"]) == ("CIR-0001", "CUST-0001", "gold")
        assert (order["device"], order["interface"]) == ("cpe-router-01", "GigabitEthernet0/0/1")
        assert (order["alarm_class"], order["lead_team"]) == ("data_anomaly", "service_support")
        assert order["threshold"] == 80
        assert 85 < order["observed_value"] < 95, order
        assert order["raised_at"].endswith("Z")
        assert order["lifecycle"] == "dispatched"
        pre = order["preprocessing"]
        assert pre["verdict"] == "path_healthy", pre
        assert {p["target"] for p in pre["probes"]} == {"cpe-router-01", "optical-tx-01"}
        assert all(p["loss_percent"] == 0 for p in pre["probes"])
        print(f"work order after {raised_after:.1f}s: {order['work_order_id']} at {order['observed_value']}%")

        # Loss of light on the circuit's optical transceiver: a transmission fault becomes the root
        # cause; the open congestion order is folded under it and handed to the transport team.
        sim_network.set_values({"optical-tx-01/rx_power": -300})
        messages = [await inbox.next(30), await inbox.next(30)]
        by_type = {m["type"]: (k, m) for k, m in messages}
        key, optical = by_type["work_order"]
        assert (key, optical["alert"], optical["alarm_class"], optical["lead_team"]) == (
            b"CIR-0001",
            "OpticalPowerOutOfRange",
            "transmission",
            "transport_network",
        )
        assert optical["interface"] == "fiber-1"
        key, folded = by_type["work_order_update"]
        assert (folded["work_order_id"], folded["update"], folded["parent_alarm_id"]) == (
            order["work_order_id"],
            "reparented",
            optical["alarm_id"],
        )
        assert (folded["lead_team"], folded["previous_lead_team"]) == ("transport_network", "service_support")

        # Light back: the optical order clears and the congestion order stands on its own again.
        sim_network.set_values({"optical-tx-01/rx_power": None})
        messages = [await inbox.next(30), await inbox.next(30)]
        by_type = {m["type"]: m for _, m in messages}
        assert by_type["work_order_clear"]["work_order_id"] == optical["work_order_id"]
        released = by_type["work_order_update"]
        assert (released["update"], released["lead_team"], released["parent_alarm_id"]) == (
            "released",
            "service_support",
            None,
        )

        sim_network.set_rates({"cpe-router-01/2/in": RELIEVED})
        key, clear = await inbox.next(30)
        assert key == b"CIR-0001"
        assert clear["type"] == "work_order_clear"
        assert clear["work_order_id"] == order["work_order_id"]
        assert clear["observed_value"] < 80 and clear["cleared_at"] is not None
        await asyncio.sleep(2)
        assert await inbox.consumer.getmany(timeout_ms=500) == {}, "one work order and one clear, no repeats"

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        logs = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        events = [entry["event"] for entry in logs]
        assert "alarm_raised" in events and "alarm_cleared" in events
        dead = [e for e in logs if e["event"] == "poll_failed" and e.get("device") == "dead-router"]
        assert dead, "a dead device is reported (and did not hold up the congested one)"
        assert dead[0]["reason"] == "timeout"
        assert events[-1] == "shutdown_complete"
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await consumer.stop()
        sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})
        sim_network.set_values({"optical-tx-01/rx_power": None})
