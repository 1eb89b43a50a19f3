"""Agents that stay silent, answer slowly, answer garbage or reset their counters, next to a healthy one."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alarmd.model import VarBind
from tests.chaos.harness import PROFILES, REPO, Daemon, Inbox, free_port
from tests.snmp_agent import Mib, mib_answer, start

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RUN_SECONDS = 20.0
SPEED_MBPS = 10
RATE = SPEED_MBPS * 1_000_000 / 8 * 0.5  # bytes/s: 50% occupancy
RESET_EVERY = 5.0

CONFIG = """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{profiles}"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {sim},
     snmp: {{community: cpe-router-01}}}}
  - {{name: silent-router, kind: cpe_router, address: 127.0.0.1, port: {silent}, snmp: {{community: public}}}}
  - {{name: slow-router, kind: cpe_router, address: 127.0.0.1, port: {slow}, snmp: {{community: public}},
     timeout: 3s}}
  - {{name: garbage-router, kind: cpe_router, address: 127.0.0.1, port: {garbage},
     snmp: {{community: public}}}}
  - {{name: resetting-router, kind: cpe_router, address: 127.0.0.1, port: {resetting},
     snmp: {{community: public}}}}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]
  - id: CIR-0002
    customer: CUST-0001
    path: [{{device: resetting-router, interface: wan0}}]
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
http: {{listen: "127.0.0.1:{http}"}}
"""


def router_mib(born: float, counter: Callable[[float], int]) -> Callable[[], Mib]:
    """A one-interface CPE router whose octet counters read ``counter(now)``."""

    def mib() -> Mib:
        now = time.monotonic()
        octets = counter(now)
        values = [
            VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", int((now - born) * 100)),
            VarBind("1.3.6.1.2.1.2.2.1.2.1", "OctetString", b"wan0"),
            VarBind("1.3.6.1.2.1.2.2.1.7.1", "Integer", 1),
            VarBind("1.3.6.1.2.1.2.2.1.8.1", "Integer", 1),
            VarBind("1.3.6.1.2.1.2.2.1.10.1", "Counter32", octets % 2**32),
            VarBind("1.3.6.1.2.1.2.2.1.16.1", "Counter32", octets % 2**32),
            VarBind("1.3.6.1.2.1.31.1.1.1.1.1", "OctetString", b"wan0"),
            VarBind("1.3.6.1.2.1.31.1.1.1.6.1", "Counter64", octets),
            VarBind("1.3.6.1.2.1.31.1.1.1.10.1", "Counter64", octets),
            VarBind("1.3.6.1.2.1.31.1.1.1.15.1", "Gauge32", SPEED_MBPS),
        ]
        return {vb.oid: vb for vb in values}

    return mib


async def test_bad_agents_are_counted_and_stall_neither_the_others_nor_raise_false_spikes(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, chaos_report: Callable[..., None]
) -> None:
    born = time.monotonic()
    steady = router_mib(born, lambda now: int(RATE * (now - born)))
    resetting = router_mib(born, lambda now: int(RATE * ((now - born) % RESET_EVERY)))
    slow = await start(mib_answer(steady), delay=2.0)
    garbage = await start(lambda request: [b"\x30\x03\x02\x01"])  # a message cut short
    reset = await start(mib_answer(resetting))
    topic, http = f"alarmd.agents.{uuid.uuid4().hex[:8]}", free_port()
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO,
            profiles=PROFILES,
            sim=sim_network.port,
            silent=free_port(socket.SOCK_DGRAM),
            slow=slow.port,
            garbage=garbage.port,
            resetting=reset.port,
            topic=topic,
            http=http,
        )
    )
    daemon = Daemon(tmp_path, kafka_bootstrap, http)
    peak = 0.0
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders") as inbox:
            daemon.start()
            await daemon.wait_ready()
            before = daemon.metric("alarmd_collection_periods_total", device="cpe-router-01")
            started = time.monotonic()
            while time.monotonic() - started < RUN_SECONDS:
                share = daemon.metric("alarmd_interface_utilisation_ratio", device="resetting-router")
                peak = max(peak, share)
                await inbox.collect(0.5)
            elapsed = time.monotonic() - started
            periods = daemon.metric("alarmd_collection_periods_total", device="cpe-router-01") - before
            failed = daemon.metric("alarmd_collection_failed_periods_total", device="cpe-router-01")
            up = {
                name: daemon.metric("alarmd_device_up", device=f"{name}-router")
                for name in ("slow", "garbage", "silent", "resetting")
            }
            timeouts = daemon.metric("alarmd_poll_errors_total", reason="timeout")
            decode = daemon.metric("alarmd_poll_errors_total", reason="decode")
            orders = inbox.of_type("work_order")
            assert await daemon.stop() == 0
    finally:
        daemon.close()
        for agent in (slow, garbage, reset):
            agent.close()

    assert periods >= 0.8 * elapsed, f"the healthy device polled {periods:.0f} times in {elapsed:.0f}s"
    assert failed == 0
    assert up == {"slow": 1, "garbage": 0, "silent": 0, "resetting": 1}
    assert timeouts >= 0.5 * elapsed, "the silent device's timeouts are counted"
    assert decode >= 0.5 * elapsed, "the garbage device's answers are counted as decode errors"
    assert 0.3 < peak < 0.8, f"occupancy of the resetting line peaked at {peak:.0%}"
    spikes = [o for o in orders if o["alert"] == "BandwidthOccupancyHigh"]
    assert spikes == [], spikes
    assert len(reset.requests) > RUN_SECONDS, "the resetting device was polled throughout"
    chaos_report(
        "4 silent, slow, garbage and resetting agents",
        expected=0,
        delivered=len(spikes),
        duplicates=0,
        drops_counted=int(timeouts + decode),
        note=(
            f"healthy device polled {periods:.0f}x in {elapsed:.0f}s, 0 failed; "
            f"{timeouts:.0f} timeouts, {decode:.0f} decode errors counted; "
            f"resetting line peaked at {peak:.0%}, no BandwidthOccupancyHigh"
        ),
    )
