"""Devices as the operator's customers have them, through the running daemon to Apache Kafka.

A basic agent (ifTable only: ifSpeed and 32-bit counters) at 90% load with 33% errors, and an
E1 converter whose dsx1LineStatusChange trap reports LOS while its last poll said noAlarm.
"""

from __future__ import annotations

import asyncio
import bz2
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

import simnet
from tests.test_daemon_intake import free_port, snmptrap_v2c, wait_for
from tests.test_end_to_end import Inbox

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
#: The Windows XP agent of the snmpsim-data package: ifTable only, ifSpeed 54 Mbit/s on ifIndex 65539.
BASIC_AGENT = "os/windows/XP.snmprec.bz2"
WLAN = "65539"
WLAN_NAME = "Intel(R) PRO/Wireless 2200BG Network Connection"
#: 90% of 54 Mbit/s inbound; 6,700 packets/s delivered and 3,300/s errored: 33% lost.
IN_OCTETS, IN_UCAST, IN_ERRORS = 0.9 * 54_000_000 / 8, 6_700, 3_300

DAEMON_CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: {interval}, timeout: 1s, retries: 1}}
credentials:
  trap-v2: {{version: 2c, community: trap-secret}}
traps:
  enabled: true
  listen: 127.0.0.1:{trap_port}
  credentials: [trap-v2]
  definitions: ["{repo}/config/traps/*.yml"]
kafka: {{topics: {{work_orders: {topic}}}}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: {device}, kind: {kind}, address: 127.0.0.1, port: {port}, snmp: {{community: {community}}}}}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path: [{{device: {device}, interface: "{interface}"}}]
http: {{listen: "127.0.0.1:0"}}
"""

# The shipped data-anomaly rules with their `for` compressed to two polls of one second.
DATA_ANOMALY_RULES = """\
groups:
  - name: data_anomaly
    rules:
      - alert: BandwidthOccupancyHigh
        expr: interface_utilisation_percent > 80
        clear: "< 75"
        for: 1s
        labels: {severity: major, alarm_class: data_anomaly, unit: percent}
      - alert: PacketLossHigh
        expr: interface_error_ratio_percent > 30
        clear: "< 10"
        for: 1s
        labels: {severity: major, alarm_class: data_anomaly, unit: percent}
"""


def basic_agent(dest: Path) -> Path:
    """The XP recording with the WLAN's inbound octets, packets and errors moving (``ratecounter``)."""
    moving = {
        f"1.3.6.1.2.1.2.2.1.10.{WLAN}": f"basic/in,rate={IN_OCTETS},initial={2**32 - 20_000_000}",
        f"1.3.6.1.2.1.2.2.1.11.{WLAN}": f"basic/in_ucast,rate={IN_UCAST},initial=616079",
        f"1.3.6.1.2.1.2.2.1.14.{WLAN}": f"basic/in_errors,rate={IN_ERRORS},initial=0",
    }
    lines = []
    with bz2.open(simnet.recorded() / BASIC_AGENT, "rt", encoding="latin-1") as fh:
        for line in fh:
            oid = line.split("|", 1)[0]
            lines.append(f"{oid}|65:ratecounter|name={moving[oid]}\n" if oid in moving else line)
    dest.mkdir()
    (dest / "basic-agent.snmprec").write_text("".join(lines), encoding="latin-1")
    return dest


def start_daemon(config_dir: Path, bootstrap: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = config_dir / "alarmd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            # debug: the tests wait for a device's first complete poll (poll_done)
            [
                sys.executable,
                "-m",
                "alarmd",
                "run",
                "-c",
                str(config_dir),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    return daemon, log


async def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.to_thread(daemon.wait, 30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


@pytest.fixture
def basic_sim(tmp_path: Path) -> Iterator[simnet.SimNet]:
    sim = simnet.start(devices_dir=basic_agent(tmp_path / "agent"))
    try:
        yield sim
    finally:
        sim.stop()


async def inbox(bootstrap: str, topic: str) -> Inbox:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    return Inbox(consumer)


async def test_a_basic_agent_at_90_percent_with_33_percent_errors_raises_both_work_orders(
    tmp_path: Path, kafka_bootstrap: str, basic_sim: simnet.SimNet
) -> None:
    topic = f"alarmd.workorders.{uuid.uuid4().hex[:8]}"
    (tmp_path / "alarmd.yml").write_text(
        DAEMON_CONFIG.format(
            repo=REPO,
            interval="1s",
            trap_port=free_port(socket.SOCK_DGRAM),
            topic=topic,
            device="basic-agent",
            kind="cpe_router",
            port=basic_sim.port,
            community="basic-agent",
            interface=WLAN_NAME,
        )
    )
    (tmp_path / "rules.yml").write_text(DATA_ANOMALY_RULES)
    orders = await inbox(kafka_bootstrap, topic)
    daemon, _ = start_daemon(tmp_path, kafka_bootstrap)
    try:
        found = {}
        for _ in range(2):
            key, order = await orders.next(60)
            found[order["alert"]] = (key, order)
        assert set(found) == {"BandwidthOccupancyHigh", "PacketLossHigh"}
        for key, order in found.values():
            assert key == b"CIR-0001"
            assert order["type"] == "work_order"
            assert (order["device"], order["interface"]) == ("basic-agent", WLAN_NAME)
            assert (order["alarm_class"], order["lead_team"]) == ("data_anomaly", "service_support")
        # utilisation against ifSpeed (no ifHighSpeed here), from 32-bit counters that wrap
        assert 85 < found["BandwidthOccupancyHigh"][1]["observed_value"] < 95
        assert 30 < found["PacketLossHigh"][1]["observed_value"] < 36
    finally:
        await stop_daemon(daemon)
        await orders.consumer.stop()


async def test_a_dsx1_los_trap_alone_raises_a_transmission_work_order_the_next_poll_clears(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    topic = f"alarmd.workorders.{uuid.uuid4().hex[:8]}"
    trap_port = free_port(socket.SOCK_DGRAM)
    (tmp_path / "alarmd.yml").write_text(
        DAEMON_CONFIG.format(
            repo=REPO,
            interval="4s",
            trap_port=trap_port,
            topic=topic,
            device="proto-conv-01",
            kind="protocol_converter",
            port=sim_network.port,
            community="proto-conv-01",
            interface="E1-1",
        )
    )
    # The shipped transmission rules: LineLOS from the poll, and from the trap alone.
    (tmp_path / "rules.yml").write_text((REPO / "rules" / "transmission.yml").read_text())
    orders = await inbox(kafka_bootstrap, topic)
    daemon, log = start_daemon(tmp_path, kafka_bootstrap)
    try:
        # The first complete poll said noAlarm (dsx1LineStatus 1) and named ifIndex 1 (E1-1).
        await wait_for(log, lambda e: e["event"] == "poll_done", 60)
        snmptrap_v2c(
            trap_port,
            "trap-secret",
            "1.3.6.1.2.1.10.18.15.0.1",  # dsx1LineStatusChange
            *("1.3.6.1.2.1.10.18.6.1.10.1", "i", "64"),  # dsx1LineStatus.1: dsx1LossOfSignal
            *("1.3.6.1.2.1.10.18.6.1.11.1", "t", "12345"),  # dsx1LineStatusLastChange.1
        )
        key, order = await orders.next(30)
        assert key == b"CIR-0001"
        assert (order["type"], order["alert"], order["interface"]) == ("work_order", "LineLOS", "E1-1")
        assert (order["alarm_class"], order["lead_team"]) == ("transmission", "transport_network")
        # The converter's next poll still reads noAlarm: the line is clear, so is the alarm.
        key, clear = await orders.next(30)
        assert (clear["type"], clear["work_order_id"]) == ("work_order_clear", order["work_order_id"])
    finally:
        await stop_daemon(daemon)
        await orders.consumer.stop()
