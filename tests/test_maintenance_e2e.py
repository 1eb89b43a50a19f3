"""Planned outages on the running daemon: snmpsim, a real Kafka broker and the CLI over the API."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import signal
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
from jsonschema import Draft202012Validator

from tests.chaos.harness import BANDWIDTH_RULE, GOLD_CIRCUIT, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TOKEN = "e2e-change-desk-token"
WINDOW = 12.0  # seconds from the test's start to the end of the planned outage
GRACE = 2.0

CONFIG = (
    """\
rule_files: [rules.yml]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
maintenance: {{grace: {grace}s, notice_lead: 1h}}
api: {{tokens_file: tokens.yml}}
"""
    + GOLD_CIRCUIT
    + """\
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
http: {{listen: "127.0.0.1:{http}"}}
"""
)


def stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


def seconds(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def start(config: Path, bootstrap: str, run: int) -> subprocess.Popen[bytes]:
    with (config / f"alarmd-{run}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "alarmd", "run", "-c", str(config), "--log-format", "json"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def events(config: Path, run: int) -> list[dict[str, Any]]:
    text = (config / f"alarmd-{run}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def wait_for(config: Path, event: str, **fields: object) -> dict[str, Any]:
    """The first line of the second run's log with this event and these fields (within 15 s)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in events(config, 2):
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {event} {fields} in the log")


def ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError("the daemon did not become ready")


def maintenance(config: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "alarmd", "maintenance", "-c", str(config), *args],
        env={**os.environ, "ALARMD_API_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


async def test_a_fault_in_a_planned_outage_waits_for_its_end_and_outages_survive_a_restart(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any
) -> None:
    began = time.time()
    topic, http = f"alarmd.maintenance.{uuid.uuid4().hex[:8]}", free_port()
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(repo=REPO, port=sim_network.port, topic=topic, http=http, grace=GRACE)
    )
    (tmp_path / "rules.yml").write_text(BANDWIDTH_RULE)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (tmp_path / "tokens.yml").write_text(
        f"tokens:\n  - {{name: change-desk, sha256: {digest}, scope: all, can_maintain: true}}\n"
    )
    (tmp_path / "maintenance").mkdir()
    (tmp_path / "maintenance" / "tonight.yml").write_text(
        "outages:\n"
        f"  - {{id: CHG-E2E, reason: replace the CPE router, created_by: Li Wei, "
        f"starts_at: '{stamp(began - 1)}', ends_at: '{stamp(began + WINDOW)}', circuits: [CIR-0001]}}\n"
    )
    sim_network.set_rates({"cpe-router-01/2/in": 1_125_000.0})  # 90% of the 10 Mbit/s line
    consumer = AIOKafkaConsumer(
        f"{topic}.workorders",
        f"{topic}.notices",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    seen: list[tuple[str, dict[str, Any], float]] = []

    async def collect(until: float) -> None:
        while time.time() < until:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend((r.topic.rsplit(".", 1)[1], json.loads(r.value), time.time()) for r in records)

    def orders() -> list[tuple[dict[str, Any], float]]:
        return [(m, at) for t, m, at in seen if t == "workorders" and m["type"] == "work_order"]

    daemon = start(tmp_path, kafka_bootstrap, 1)
    try:
        await asyncio.to_thread(ready, http)
        code, out, err = await asyncio.to_thread(
            maintenance, tmp_path, "add", "--id", "CHG-LATER", "--start", "+1h", "--for", "2h",
            "--device", "cpe-router-01", "--reason", "fibre splice",
        )  # fmt: skip
        assert code == 0, err
        assert out.startswith("CHG-LATER: scheduled")
        code, out, err = await asyncio.to_thread(maintenance, tmp_path, "list")
        assert code == 0, err
        states = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
        assert states == {"CHG-E2E": "active", "CHG-LATER": "scheduled"}

        # the fault is raised inside the window: recorded, held, no work order until window + grace
        await collect(began + WINDOW + GRACE - 0.5)
        held = [e for e in events(tmp_path, 1) if e["event"] == "alarm_held"]
        assert held and held[0]["outage"] == "CHG-E2E", "the fault must come up inside the window"
        assert orders() == []
        deadline = began + WINDOW + GRACE + 10
        while not orders() and time.time() < deadline:
            await collect(time.time() + 0.5)
        ((order, at),) = orders()
        assert at >= began + WINDOW + GRACE - 0.1
        assert seconds(order["raised_at"]) < began + WINDOW, "the original raise time, inside the window"
        assert order["planned_outage"] == "CHG-E2E"

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        daemon = start(tmp_path, kafka_bootstrap, 2)
        await asyncio.to_thread(ready, http)
        code, out, err = await asyncio.to_thread(maintenance, tmp_path, "list")
        assert code == 0, err
        assert [line.split()[:2] for line in out.splitlines()[1:]] == [["CHG-LATER", "scheduled"]]
        code, out, err = await asyncio.to_thread(maintenance, tmp_path, "end", "CHG-LATER")
        assert (code, out.strip()) == (0, "CHG-LATER: cancelled (by change-desk)"), err

        # maintenance files are read again on SIGHUP; a bad one is refused and changes nothing
        (tmp_path / "maintenance" / "later.yml").write_text(
            "outages:\n"
            f"  - {{id: CHG-HUP, reason: power work, starts_at: '{stamp(began + 7200)}', duration: 1h, "
            "devices: [cpe-router-01]}\n"
        )
        daemon.send_signal(signal.SIGHUP)
        await wait_for(tmp_path, "maintenance_files_applied", added=1)
        (tmp_path / "maintenance" / "bad.yml").write_text(
            "outages:\n"
            f"  - {{id: CHG-BAD, reason: x, starts_at: '{stamp(began)}', duration: 1h, "
            "circuits: [CIR-9999]}\n"
        )
        daemon.send_signal(signal.SIGHUP)
        failed = await wait_for(tmp_path, "reload_failed")
        assert "bad.yml:2: outages[0].circuits[0]: unknown circuit 'CIR-9999'" in failed["reason"]
        code, out, err = await asyncio.to_thread(maintenance, tmp_path, "list")
        assert [line.split()[:2] for line in out.splitlines()[1:]] == [["CHG-HUP", "scheduled"]], err
        await collect(time.time() + 3)

        validator = Draft202012Validator(
            json.loads((REPO / "schemas" / "planned-outage.schema.json").read_text())
        )
        notices = [m for t, m, _ in seen if t == "notices" and m["type"] == "planned_outage"]
        for notice in notices:
            validator.validate(notice)
        assert [(n["outage_id"], n["phase"], n["customer"]["id"], n["circuits"]) for n in notices] == [
            ("CHG-E2E", "scheduled", "CUST-0001", ["CIR-0001"]),
            ("CHG-E2E", "started", "CUST-0001", ["CIR-0001"]),
            ("CHG-LATER", "scheduled", "CUST-0001", ["CIR-0001"]),
            ("CHG-E2E", "ended", "CUST-0001", ["CIR-0001"]),
            ("CHG-LATER", "cancelled", "CUST-0001", ["CIR-0001"]),
            ("CHG-HUP", "scheduled", "CUST-0001", ["CIR-0001"]),
        ]
        assert len(orders()) == 1, "no second work order after the restart"
        audit = [json.loads(line) for line in (tmp_path / "state" / "audit.log").read_text().splitlines()]
        changes = [(e["token"], e["detail"].split(":")[0]) for e in audit if e["action"] == "maintenance"]
        assert changes == [
            (None, "maintenance files"),  # CHG-E2E, at the first start
            ("change-desk", "POST /api/v1/maintenance -> 201"),
            ("change-desk", "POST /api/v1/maintenance/CHG-LATER/end -> 200"),
            (None, "maintenance files"),  # CHG-HUP, on SIGHUP
        ]
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        sim_network.set_rates({"cpe-router-01/2/in": None})
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await consumer.stop()
