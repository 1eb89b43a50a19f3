"""A segment cut on the running daemon: LOS traps from Debian's snmptrap, a simulated E1 mux, a real broker.

Twenty circuits ride one 20-port E1 mux (snmpsim); CIR-01..14 share transmission segment
SEG-A, CIR-15..20 segment SEG-B.  Twelve circuits of SEG-A lose signal within seconds: one
major-fault work order lists them, and no circuit gets a work order of its own beyond those
already out before the threshold (each then told its parent).  One circuit of SEG-B is an
ordinary fault.  Eleven recover: the major fault clears and the twelfth, still down, gets its
own work order.  SEG-B's circuit fails again after its clear: the new order carries repeat_of.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import PROFILES, Daemon, Inbox, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import simnet

pytestmark = pytest.mark.integration

MUX = "e1-mux-01"
CIRCUITS = 20
SEG_A = range(1, 15)
MIN_CIRCUITS = 3
DSX1_LINE_STATUS = "1.3.6.1.2.1.10.18.6.1.10"
DSX1_LINE_STATUS_CHANGE = "1.3.6.1.2.1.10.18.15.0.1"
LOS, NO_ALARM = 64, 1

RULES = """\
groups:
  - name: e1
    rules:
      - alert: LineLOS
        event: '{trap="dsx1LineStatusChange", dsx1_line_status="64"}'
        resolve: '{trap="dsx1LineStatusChange", dsx1_line_status="1"}'
        by: [device, if_index]
        labels: {severity: critical, alarm_class: transmission}
        annotations:
          summary: "E1 loss of signal on {{ $labels.device }} {{ $labels.interface }}"
"""


def config(sim_port: int, trap_port: int, http: int, topic: str) -> str:
    tiers = ["diamond", "gold", "ordinary", "ordinary"]
    customers = "\n".join(
        f"  - {{id: CUST-{i:02d}, name: Customer {i:02d}, tier: {tiers[i % 4]}}}" for i in range(1, 11)
    )
    circuits = "\n".join(
        f"  - {{id: CIR-{i:02d}, customer: CUST-{(i - 1) % 10 + 1:02d}, "
        f"path: [{{device: {MUX}, interface: E1-{i}}}], shared: [PE-01, SEG-{'A' if i in SEG_A else 'B'}]}}"
        for i in range(1, CIRCUITS + 1)
    )
    return f"""\
rule_files: [rules.yml]
profile_files: ["{PROFILES}"]
state_dir: state
locale: zh-CN
polling: {{interval: 2s, timeout: 1s, retries: 0}}
dial_test: {{every: 0s, preprocess_budget: 0s}}
clocks: {{observation: 2s}}
credentials:
  traps: {{version: 2c, community: noc-traps}}
traps:
  enabled: true
  listen: 127.0.0.1:{trap_port}
  credentials: [traps]
  definitions: ["{simnet.REPO}/config/traps/*.yml"]
major_faults:
  {{min_circuits: {MIN_CIRCUITS}, window: 30s, straggler_wait: 3s, escalation_team: noc_duty_manager}}
elements:
  - {{name: SEG-A, kind: transmission_segment}}
  - {{name: SEG-B, kind: transmission_segment}}
  - {{name: PE-01, kind: pe}}
customers:
{customers}
devices:
  - {{name: {MUX}, kind: protocol_converter, address: 127.0.0.1, port: {sim_port},
     snmp: {{community: {MUX}}}}}
circuits:
{circuits}
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
http: {{listen: "127.0.0.1:{http}"}}
"""


@pytest.fixture(scope="module")
def mux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[simnet.SimNet]:
    """snmpsim serving one E1 mux with a port per circuit."""
    devices = tmp_path_factory.mktemp("mux")
    simnet.write_e1_mux(devices, MUX, CIRCUITS)
    sim = simnet.start(devices_dir=devices)
    try:
        yield sim
    finally:
        sim.stop()


def snmptrap(port: int, line: int, status: int) -> None:
    """dsx1LineStatusChange for one E1 line, sent by Debian's snmptrap (SNMPv2c)."""
    subprocess.run(
        [
            *("snmptrap", "-v", "2c", "-c", "noc-traps", f"127.0.0.1:{port}", ""),
            *(DSX1_LINE_STATUS_CHANGE, f"{DSX1_LINE_STATUS}.{line}", "i", str(status)),
        ],
        check=True,
        timeout=10,
    )


def orders(inbox: Inbox) -> list[dict[str, Any]]:
    return [m for topic, m, _ in inbox.records if topic.endswith(".workorders")]


def major_orders(inbox: Inbox) -> list[dict[str, Any]]:
    return [m for m in orders(inbox) if m["major_fault"]]


def listed(message: dict[str, Any]) -> set[str]:
    return {c["circuit"] for c in message["major_fault"]["circuits"]}


async def test_a_segment_cut_is_one_major_fault_and_its_straggler_gets_its_own_order(
    tmp_path: Path, kafka_bootstrap: str, mux: simnet.SimNet
) -> None:
    trap_port, http = free_port(socket.SOCK_DGRAM), free_port()
    topic = f"alarmd.major.{uuid.uuid4().hex[:8]}"
    (tmp_path / "alarmd.yml").write_text(config(mux.port, trap_port, http, topic))
    (tmp_path / "rules.yml").write_text(RULES)
    daemon = Daemon(tmp_path, kafka_bootstrap, http)
    daemon.start()
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await daemon.wait_ready()
            deadline = time.monotonic() + 30  # the first poll names the E1 ports behind the ifIndex of a trap
            while daemon.metric("alarmd_collection_periods_total", device=MUX) < 1:
                assert time.monotonic() < deadline, "the mux was never polled"
                await inbox.collect(0.5)
            cut = [f"CIR-{i:02d}" for i in range(1, 13)]
            started = time.monotonic()
            for line in range(1, 13):
                snmptrap(trap_port, line, LOS)
            snmptrap(trap_port, 15, LOS)
            assert time.monotonic() - started < 30
            assert await inbox.until(
                lambda _: major_orders(inbox) and listed(major_orders(inbox)[-1]) == set(cut), 30
            ), [(m["type"], m["circuit"], m["update"]) for m in orders(inbox)]
            await inbox.collect(2)  # anything that should not come would come now

            majors = [m for m in major_orders(inbox) if m["type"] == "work_order"]
            assert len(majors) == 1
            major = majors[0]
            latest = major_orders(inbox)[-1]  # the circuits that joined later came by updates
            assert (latest["lead_team"], latest["tier"]) == ("transport_network", "diamond")
            assert major["major_fault"]["element"] == "SEG-A"
            assert major["summary"].startswith("重大故障：传输段 SEG-A")  # noqa: RUF001 - Chinese punctuation
            own = [m for m in orders(inbox) if m["type"] == "work_order" and m["circuit"] in cut]
            assert len(own) < MIN_CIRCUITS, "only circuits dispatched before the threshold have orders"
            told = {
                m["circuit"]
                for m in orders(inbox)
                if m["update"] == "reparented" and m["parent_alarm_id"] == major["alarm_id"]
            }
            assert {m["circuit"] for m in own} <= told
            assert not [m for m in orders(inbox) if m["circuit"] in cut and m["type"] == "work_order_clear"]
            seg_b = [m for m in orders(inbox) if m["circuit"] == "CIR-15"]
            assert [(m["type"], m["parent_alarm_id"]) for m in seg_b] == [("work_order", None)]
            escalation = [
                m
                for t, m, _ in inbox.records
                if t.endswith(".notices") and m["alarm_id"] == major["alarm_id"]
            ]
            assert escalation and escalation[0]["type"] == "escalation"
            assert "noc_duty_manager" in escalation[0]["to_teams"]
            assert daemon.metric("alarmd_major_faults_open") == 1
            assert daemon.metric("alarmd_major_fault_circuits") == 12

            # recovery: eleven come back, CIR-12 stays down
            for line in range(1, 12):
                snmptrap(trap_port, line, NO_ALARM)
            assert await inbox.until(
                lambda _: any(m["type"] == "work_order" and m["circuit"] == "CIR-12" for m in orders(inbox)),
                30,
            ), [(m["type"], m["circuit"], m["update"]) for m in orders(inbox)]
            clear = [m for m in major_orders(inbox) if m["type"] == "work_order_clear"]
            assert len(clear) == 1
            straggler = next(
                m for m in orders(inbox) if m["type"] == "work_order" and m["circuit"] == "CIR-12"
            )
            assert straggler["parent_alarm_id"] is None
            assert orders(inbox).index(clear[0]) < orders(inbox).index(straggler)
            assert daemon.metric("alarmd_major_faults_open") == 0

            # a repeat: CIR-15 clears, is closed after its observation, and fails again
            snmptrap(trap_port, 15, NO_ALARM)
            assert await inbox.until(
                lambda _: any(
                    m["type"] == "closed" and m["circuit"] == "CIR-15" for _, m, _ in inbox.records
                ),
                30,
            )
            snmptrap(trap_port, 15, LOS)
            assert await inbox.until(
                lambda _: (
                    len([m for m in orders(inbox) if m["type"] == "work_order" and m["circuit"] == "CIR-15"])
                    == 2
                ),
                30,
            )
            again = [m for m in orders(inbox) if m["type"] == "work_order" and m["circuit"] == "CIR-15"][-1]
            assert again["repeat_of"] == seg_b[0]["work_order_id"]
            assert daemon.metric("alarmd_repeat_faults_total") == 1
        assert await daemon.stop() == 0
    finally:
        daemon.close()
