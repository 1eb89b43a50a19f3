"""Fault clocks across a daemon crash, and ticketing's acknowledgement, on the real broker."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.chaos.harness import GOLD_CIRCUIT

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

REPO = Path(__file__).resolve().parent.parent
ESCALATE_AFTER = 8.0
UPDATE_EVERY = 4.0

CONFIG = (
    """\
rule_files: [rules.yml]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
clocks: {{important_escalation: {escalate}s, status_update_every: {update}s, observation: 5s}}
"""
    + GOLD_CIRCUIT
    + """\
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
ticketing:
  {{enabled: true, topic: {topic}.feedback, group_id: {topic}-ticketing, dead_letter_topic: {topic}.dlq}}
http: {{listen: "127.0.0.1:0"}}
"""
)
RULES = """\
groups:
  - name: g
    rules:
      - alert: BandwidthOccupancyHigh
        expr: interface_utilisation_percent > 80
        for: 2s
        labels: {severity: major, alarm_class: data_anomaly}
"""


def start(tmp_path: Path, bootstrap: str, run: int) -> subprocess.Popen[bytes]:
    with (tmp_path / f"alarmd-{run}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "alarmd", "run", "-c", str(tmp_path), "--log-format", "json"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def logs(tmp_path: Path, run: int) -> list[dict[str, Any]]:
    text = (tmp_path / f"alarmd-{run}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_escalation_is_sent_once_on_time_across_a_crash_and_an_ack_stops_no_clock(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, chaos_report: Callable[..., None]
) -> None:
    topic = f"alarmd.lifecycle.{uuid.uuid4().hex[:8]}"
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO, port=sim_network.port, topic=topic, escalate=ESCALATE_AFTER, update=UPDATE_EVERY
        )
    )
    (tmp_path / "rules.yml").write_text(RULES)
    sim_network.set_rates({"cpe-router-01/2/in": 1_125_000.0})
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
        while time.monotonic() < until:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend((r.topic.rsplit(".", 1)[1], json.loads(r.value), time.time()) for r in records)

    daemon = start(tmp_path, kafka_bootstrap, 1)
    try:
        deadline = time.monotonic() + 60
        while not any(t == "workorders" for t, _, _ in seen) and time.monotonic() < deadline:
            await collect(time.monotonic() + 0.5)
        order = next(m for t, m, _ in seen if t == "workorders")
        raised = seconds(order["raised_at"])
        assert seconds(order["due"]["escalation_at"]) == pytest.approx(raised + ESCALATE_AFTER, abs=0.01)

        # ticketing acknowledges; that must not stop the escalation clock
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                f"{topic}.feedback",
                key=b"CIR-0001",
                value=json.dumps(
                    {
                        "type": "acknowledged",
                        "work_order_id": order["work_order_id"],
                        "ticket_id": "TT-1",
                        "by": "noc-operator",
                        "at": "2026-11-22T01:00:00+08:00",
                    }
                ).encode(),
            )
        finally:
            await producer.stop()
        deadline = time.monotonic() + 20
        while (
            not any(e["event"] == "ticket_feedback" for e in logs(tmp_path, 1))
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.2)
        ack = next(e for e in logs(tmp_path, 1) if e["event"] == "ticket_feedback")
        assert (ack["type"], ack["alarm_id"]) == ("acknowledged", order["alarm_id"])

        # the daemon dies before the escalation is due, and comes back
        assert time.time() < raised + ESCALATE_AFTER - 1, "the crash must come before the escalation"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        daemon = start(tmp_path, kafka_bootstrap, 2)
        await collect(time.monotonic() + (raised + ESCALATE_AFTER + UPDATE_EVERY + 3 - time.time()))

        notices = [(m, at) for t, m, at in seen if t == "notices"]
        kinds = [m["type"] for m, _ in notices]
        assert kinds.count("notice") == 1
        assert kinds.count("escalation") == 1, kinds
        escalation = next(m for m, _ in notices if m["type"] == "escalation")
        assert seconds(escalation["sent_at"]) == pytest.approx(raised + ESCALATE_AFTER, abs=2.5)
        assert escalation["joint_handling"] and escalation["work_order_id"] == order["work_order_id"]
        assert "status_update" in kinds
        assert [t for t, _, _ in seen].count("workorders") == 1, "no second work order after the restart"
        assert any(e["event"] == "alarms_restored" for e in logs(tmp_path, 2))
        late = seconds(escalation["sent_at"]) - raised - ESCALATE_AFTER
        delivered = [t for t, _, _ in seen if t == "workorders"] + [
            k for k in kinds if k in ("notice", "escalation")
        ]
        chaos_report(
            "2 daemon SIGKILLed between dispatch and escalation",
            expected=3,  # work order, notice, escalation
            delivered=len(delivered),
            duplicates=len(delivered) - 3,
            note=f"escalation {late:+.1f}s from due after the restart",
        )

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        await consumer.stop()
