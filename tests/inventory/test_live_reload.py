"""Live inventory on real parts: one running daemon (same PID) takes inventory edits by SIGHUP.

snmpsim and Debian's snmpd are the agents, net-snmp's snmptrap the trap sender, a real Kafka
carries the work orders.  Step by step: a device added to the CSV export is polled and alarmed
on; a changed community and changed v3 keys poll and receive traps; a removed device's open
fault is cleared with reason ``decommissioned``; a bad row is refused with its line and
changes nothing.
"""

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
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from bench.sender import encode_traps

import snmpd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALARMD = Path(sys.executable).parent / "alarmd"
SENDER_ENGINE = "8000000001020305"
LINK_DOWN = ["1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.2", "i", "2"]
BURST = 300
HEADER = "circuit,customer,customer_name,tier,device,kind,address,port,credentials,interface"

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{repo}/config/profiles/*.yml"]
inventory_files: [inventory/*.csv, inventory/*.yml]
state_dir: state
polling: {{interval: 1s, timeout: 3s, retries: 0}}
traps:
  enabled: true
  listen: 127.0.0.1:{trap_port}
  credentials: [trap-v2, trap-v3]
  definitions: ["{repo}/config/traps/*.yml"]
kafka: {{bootstrap_servers: "{bootstrap}", topics: {{work_orders: {topic}, notices: {topic}.notices}}}}
http: {{listen: "127.0.0.1:{http_port}"}}
"""
RULES = """\
groups:
  - name: live
    rules:
      - alert: Unreachable
        expr: device_up < 1
        labels: {severity: major, alarm_class: transmission}
      - alert: Busy
        expr: interface_utilisation_percent > 80
        labels: {severity: major, alarm_class: data_anomaly}
"""


def credentials_yml(pcv_community: str, v3: snmpd.V3User, trap_community: str, trap_auth: str) -> str:
    return f"""\
credentials:
  sim-cpe: {{community: cpe-router-01}}
  ghost-creds: {{community: nobody-answers-this}}
  pcv-creds: {{community: {pcv_community}}}
  v3-creds: {{version: 3, user: {v3.name}, auth_protocol: {v3.auth_protocol}, auth_key: {v3.auth_key},
             priv_protocol: {v3.priv_protocol}, priv_key: {v3.priv_key}}}
  trap-v2: {{community: {trap_community}}}
  trap-v3: {{version: 3, user: trap-user, auth_protocol: sha256, auth_key: {trap_auth},
            engine_id: "{SENDER_ENGINE}"}}
customers:
  - {{id: CUST-1, name: Harbour Logistics Group, tier: gold}}
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def metric(port: int, name: str, **labels: str) -> float | None:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = [v for k, v in scrape(port).items() if k.split("{")[0] == name and all(w in k for w in wanted)]
    return sum(found) if found else None


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


@pytest.fixture(scope="module")
def agent() -> Iterator[snmpd.Snmpd]:
    """Debian's snmpd with its v3 users (the v3-polled device)."""
    sd = snmpd.start()
    try:
        yield sd
    finally:
        sd.stop()


async def test_inventory_edits_apply_to_the_running_daemon(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, agent: snmpd.Snmpd
) -> None:
    topic = f"alarmd.live.{uuid.uuid4().hex[:8]}"
    trap_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    v3 = agent.user("alarmd-sha256-aes128")
    wrong_v3 = snmpd.V3User(
        v3.name, v3.auth_protocol, "not-the-auth-key", v3.priv_protocol, "not-the-priv-key"
    )
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO, trap_port=trap_port, http_port=http_port, topic=topic, bootstrap=kafka_bootstrap
        )
    )
    (tmp_path / "rules.yml").write_text(RULES)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    creds = inventory / "credentials.yml"
    creds.write_text(credentials_yml("stale-community", wrong_v3, "trap-old", "trap-auth-old"))
    sim = sim_network.port
    rows = [
        HEADER,
        f",,,,ghost-01,cpe_router,127.0.0.1,{sim},ghost-creds,",
        f",,,,proto-conv-01,protocol_converter,127.0.0.1,{sim},pcv-creds,",
        f",,,,v3-router,cpe_router,127.0.0.1,{agent.port},v3-creds,",
    ]
    export = inventory / "export.csv"
    export.write_text("\n".join(rows) + "\n")
    sim_network.set_rates({"cpe-router-01/2/in": 1_125_000.0})  # the demo's WAN port at 90%

    log = tmp_path / "alarmd.log"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}  # alarmd.yml says
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(ALARMD), "run", "-c", str(tmp_path), "--log-format", "json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    orders: list[dict[str, Any]] = []

    async def order(match: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for found in orders:
                if match(found):
                    return found
            for records in (await consumer.getmany(timeout_ms=300)).values():
                orders.extend(json.loads(r.value) for r in records)
        raise AssertionError(f"no work order within {timeout:.0f}s: {what}; got {orders}")

    def log_events(name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in (json.loads(x) for x in log.read_text().splitlines() if x.startswith("{"))
            if e["event"] == name
        ]

    def reload_and_wait() -> None:
        before = len(log_events("config_reloaded")) + len(log_events("reload_failed"))
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(log_events("config_reloaded")) + len(log_events("reload_failed")) == before:
            assert time.monotonic() < deadline, "the daemon did not answer SIGHUP"
            time.sleep(0.1)

    def trap(*auth: str) -> None:
        subprocess.run(
            ["snmptrap", *auth, f"127.0.0.1:{trap_port}", "", *LINK_DOWN],
            check=True,
            env={**os.environ, "MIBS": ":"},
            timeout=10,
        )

    v2_trap = ("-v2c", "-c", "trap-new")
    v3_trap = (
        "-v3",
        "-e",
        f"0x{SENDER_ENGINE}",
        "-u",
        "trap-user",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        "trap-auth-new",
    )

    def received() -> float:
        return metric(http_port, "alarmd_traps_received_total") or 0.0

    try:
        pid = daemon.pid
        ghost = await order(
            lambda o: o["device"] == "ghost-01" and o["type"] == "work_order", 30, "ghost-01 unreachable"
        )
        await until(
            lambda: metric(http_port, "alarmd_device_up", device="proto-conv-01") == 0,
            10,
            "proto-conv-01 polled with a stale community",
        )
        assert metric(http_port, "alarmd_device_up", device="v3-router") == 0

        # 1. a device added to the export is polled and alarmed on
        rows.append(f"CIR-1,CUST-1,,,cpe-router-01,cpe_router,127.0.0.1,{sim},sim-cpe,GigabitEthernet0/0/1")
        export.write_text("\n".join(rows) + "\n")
        preview = subprocess.run(
            [str(ALARMD), "check-config", "--diff", "-c", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=30,
        ).stdout.splitlines()
        assert f"against alarmd PID {pid} (running)" in preview[1]
        assert preview[2:] == ["+ device cpe-router-01", "+ circuit CIR-1"], preview
        reload_and_wait()
        busy = await order(
            lambda o: o["device"] == "cpe-router-01" and o["alert"] == "Busy",
            20,
            "Busy on the added cpe-router-01",
        )
        assert busy["circuit"] == "CIR-1" and busy["customer"] == "CUST-1"
        assert (metric(http_port, "alarmd_collection_periods_total", device="cpe-router-01") or 0) >= 1

        # 2. a changed community and changed v3 keys: polls and traps with the new credentials
        trap(*v2_trap)
        trap(*v3_trap)
        await asyncio.sleep(1)
        assert received() == 0, "new trap credentials are not accepted before the reload"
        creds.write_text(credentials_yml("proto-conv-01", v3, "trap-new", "trap-auth-new"))
        reload_and_wait()
        await until(
            lambda: metric(http_port, "alarmd_device_up", device="proto-conv-01") == 1,
            10,
            "proto-conv-01 polled with its new community",
        )
        await until(
            lambda: metric(http_port, "alarmd_device_up", device="v3-router") == 1,
            30,
            "v3-router polled with its new v3 keys",
        )
        trap(*v2_trap)
        await until(lambda: received() == 1, 10, "a v2c trap with the new community")
        trap(*v3_trap)
        await until(lambda: received() == 2, 10, "a v3 trap with the new keys")

        # 3. a removed device's open fault is cleared as decommissioned; its series go
        rows.remove(f",,,,ghost-01,cpe_router,127.0.0.1,{sim},ghost-creds,")
        export.write_text("\n".join(rows) + "\n")
        reload_and_wait()
        clear = await order(
            lambda o: o["type"] == "work_order_clear" and o["device"] == "ghost-01",
            15,
            "the decommissioned clear of ghost-01",
        )
        assert clear["reason"] == "decommissioned"
        assert clear["work_order_id"] == ghost["work_order_id"]
        assert metric(http_port, "alarmd_device_up", device="ghost-01") is None

        # 4. a bad row: refused with its line and column, nothing changes
        periods = metric(http_port, "alarmd_collection_periods_total", device="cpe-router-01") or 0
        export.write_text("\n".join([*rows, f",,,,extra-01,cpe_router,127.0.0.300,{sim},sim-cpe,"]) + "\n")
        reload_and_wait()
        failed = log_events("reload_failed")
        assert (
            failed
            and "export.csv:5:7: column 'address': '127.0.0.300' is not an IP address"
            in (failed[-1]["reason"])
        )
        assert metric(http_port, "alarmd_config_last_reload_successful") == 0
        await asyncio.sleep(2.5)
        assert metric(http_port, "alarmd_device_up", device="extra-01") is None
        assert (
            metric(http_port, "alarmd_collection_periods_total", device="cpe-router-01") or 0
        ) >= periods + 2

        export.write_text("\n".join(rows) + "\n")

        # 5. the trap listener moves while a burst is queued: every trap received reaches the rules
        new_trap_port = free_port(socket.SOCK_DGRAM)
        config = tmp_path / "alarmd.yml"
        config.write_text(config.read_text().replace(f"127.0.0.1:{trap_port}", f"127.0.0.1:{new_trap_port}"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in encode_traps(b"trap-new", BURST, first_id=1000):
                sender.sendto(datagram, ("127.0.0.1", trap_port))
        reload_and_wait()
        await until(lambda: received() == 2 + BURST, 10, "the whole burst, though the old socket closed")
        trap_port = new_trap_port
        trap("-v2c", "-c", "trap-new")
        trap_events = partial(metric, http_port, "alarmd_events_total", source="trap")
        await until(lambda: trap_events() == received(), 20, "every received trap handed on")
        assert received() == 3 + BURST, "the trap to the new port arrived"
        # ... and bound again at the same address (a new receive buffer): the old socket goes first
        config.write_text(
            config.read_text().replace(
                "  credentials: [trap-v2", "  receive_buffer: 4194304\n  credentials: [trap-v2"
            )
        )
        reload_and_wait()
        await until(lambda: len(log_events("trap_receiver_started")) == 3, 10, "the listener bound again")
        trap("-v2c", "-c", "trap-new")
        await until(lambda: received() == 4 + BURST, 10, "a trap after binding the same address again")
        assert metric(http_port, "alarmd_traps_dropped_total") == 0

        # 6. Kafka settings change (a broker nobody runs, then the real one): the outbox is kept
        dead = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
        config.write_text(config.read_text().replace(kafka_bootstrap, dead))
        reload_and_wait()
        rows.append(f",,,,ghost-02,cpe_router,127.0.0.1,{sim},ghost-creds,")
        export.write_text("\n".join(rows) + "\n")
        reload_and_wait()
        await until(
            lambda: (metric(http_port, "alarmd_dispatch_outbox_depth") or 0) >= 1,
            15,
            "the ghost-02 order waiting in the outbox",
        )
        config.write_text(config.read_text().replace(dead, kafka_bootstrap))
        reload_and_wait()
        await order(
            lambda o: o["device"] == "ghost-02" and o["type"] == "work_order",
            30,
            "the order kept in the outbox, sent once Kafka is back",
        )
        assert len(log_events("kafka_reconnected")) == 2

        assert daemon.poll() is None and daemon.pid == pid, "the same process throughout"
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await consumer.stop()
