"""alarmd as a systemd service: the unit verifies, sd_notify speaks, SIGHUP reloads or keeps the old one."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parent.parent
ALARMD = Path(sys.executable).parent / "alarmd"


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by tools/system-deps.sh"
    unit = (REPO / "deploy" / "alarmd.service").read_text().replace("/opt/alarmd/bin/alarmd", str(ALARMD))
    (tmp_path / "alarmd.service").write_text(unit)
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / "alarmd.service")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ExecReload=" in unit


CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
customers: [{{id: C1, name: Harbour Logistics, tier: gold}}]
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {port},
     snmp: {{community: cpe-router-01}}}}
circuits: [{{id: CIR-0001, customer: C1, path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]}}]
kafka: {{topics: {{work_orders: {topic}, notices: {topic}.notices}}}}
http: {{listen: "127.0.0.1:{http}"}}
"""
RULES = """\
groups:
  - name: g
    rules:
      - alert: BandwidthOccupancyHigh
        expr: interface_utilisation_percent > {threshold}
        labels: {{severity: major, alarm_class: data_anomaly}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


@pytest.mark.integration
async def test_notify_watchdog_and_reload(tmp_path: Path, kafka_bootstrap: str, sim_network: Any) -> None:
    topic, http = f"alarmd.reload.{uuid.uuid4().hex[:8]}", free_port()
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(repo=REPO, port=sim_network.port, topic=topic, http=http)
    )
    (tmp_path / "rules.yml").write_text(RULES.format(threshold=95))  # the line runs at 50%: fine at first
    sim_network.set_rates({"cpe-router-01/2/in": 625_000.0})
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    received: list[str] = []

    def drain() -> None:
        while True:
            try:
                received.extend(notify.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "2000000",
    }
    with (tmp_path / "alarmd.log").open("wb") as log:
        daemon = subprocess.Popen(
            [str(ALARMD), "run", "-c", str(tmp_path), "--log-format", "json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while "READY=1" not in received and time.monotonic() < deadline:
            drain()
            await asyncio.sleep(0.2)
        assert "READY=1" in received
        await asyncio.sleep(3)
        drain()
        assert "WATCHDOG=1" in received
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/board", timeout=5) as page:
            assert page.status == 200 and b"NOC board" in page.read()
        assert await consumer.getmany(timeout_ms=1000) == {}, "no alarm for a line at 50% against 95%"

        # a valid change applies at once, without a restart
        (tmp_path / "rules.yml").write_text(RULES.format(threshold=40))
        daemon.send_signal(signal.SIGHUP)
        orders: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not orders and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                orders.extend(json.loads(r.value) for r in records)
        assert orders and orders[0]["alert"] == "BandwidthOccupancyHigh"
        drain()
        assert "RELOADING=1" in received
        assert scrape(http, "alarmd_config_last_reload_successful") == 1

        # an invalid one is refused, reported, and the old configuration keeps running
        (tmp_path / "rules.yml").write_text(
            "groups:\n  - name: g\n    rules:\n      - alert: X\n        exprr: m\n"
        )
        periods = scrape(http, "alarmd_collection_periods_total")
        request = urllib.request.Request(f"http://127.0.0.1:{http}/-/reload", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 500
        refused.value.close()
        assert scrape(http, "alarmd_config_last_reload_successful") == 0
        await asyncio.sleep(2.5)
        assert scrape(http, "alarmd_collection_periods_total") >= periods + 2, "polling goes on"
        failed = [
            json.loads(line)
            for line in (tmp_path / "alarmd.log").read_text().splitlines()
            if '"reload_failed"' in line
        ]
        assert "unknown key 'groups.0.rules.0.exprr'" in failed[0]["reason"]

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        drain()
        assert "STOPPING=1" in received
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await consumer.stop()
        notify.close()
        sim_network.set_rates({"cpe-router-01/2/in": 1_125_000.0})
