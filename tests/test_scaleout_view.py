"""One view for people and ticketing feedback re-keyed to its fault's owner, with two correlators.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1, two events partitions (one each), a fault on a circuit of each partition.  Each
instance's read API and board list both faults; ticketing feedback for both, produced with
ticketing's own key onto a one-partition feedback topic (so one correlator reads it all and at
least one message lands on the instance that does not own its fault), is applied once, by
the owner of each fault, and reaches every instance's view.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alarmd.cluster.codec import encode_event
from alarmd.dispatch.kafka import default_partition
from alarmd.model import Event
from tests.chaos.harness import PROFILES, Daemon, Inbox, free_port
from tests.test_scaleout_restore import RULES, start_with_one_partition_each, until

pytestmark = pytest.mark.integration

TOKEN = "noc-wall-" + uuid.uuid4().hex
CIRCUITS = {"CIR-0001": "cpe-router-01", "CIR-0003": "cpe-router-03"}  # events partitions 0 and 1 of 2
FEEDBACK_WAIT = 2.0
OBSERVATION = 2.0  # a cleared fault closes this long after its clear

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: state
dial_test: {{every: 0s, preprocess_budget: 0s}}
clocks: {{observation: {observation}s}}
api: {{tokens_file: tokens.yml}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {snmp}, snmp: {{community: x}}}}
  - {{name: cpe-router-03, kind: cpe_router, address: 127.0.0.1, port: {snmp}, snmp: {{community: x}}}}
circuits:
  - {{id: CIR-0001, customer: CUST-0001, path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]}}
  - {{id: CIR-0003, customer: CUST-0001, path: [{{device: cpe-router-03, interface: GigabitEthernet0/0/1}}]}}
kafka:
  request_timeout: 5s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
ticketing:
  enabled: true
  topic: {topic}.feedback
  dead_letter_topic: {topic}.feedback.dead-letter
cluster:
  events_topic: {topic}.events
  events_partitions: 2
  correlator_group: {topic}.correlators
  session_timeout: 6s
  feedback_wait: {wait}s
http: {{listen: "127.0.0.1:{http}"}}
"""


def correlator(root: Path, name: str, bootstrap: str, topic: str) -> Daemon:
    """A config directory for one correlator (with an API token) and the daemon that runs it."""
    directory = root / name
    directory.mkdir()
    http = free_port()
    text = CONFIG.format(
        profiles=PROFILES,
        snmp=free_port(),
        topic=topic,
        wait=FEEDBACK_WAIT,
        observation=OBSERVATION,
        http=http,
    )
    (directory / "alarmd.yml").write_text(text)
    (directory / "rules.yml").write_text(RULES)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (directory / "tokens.yml").write_text(f"tokens:\n  - {{name: wall, sha256: {digest}, scope: all}}\n")
    return Daemon(directory, bootstrap, http, "--role", "correlator")


def api(daemon: Daemon, path: str) -> Any:
    """GET an API path with the token; its JSON body."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.http_port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """Send ``(topic, key, value)`` records and wait for the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def link(device: str, trap: str = "linkDown") -> bytes:
    """A linkDown (or linkUp) trap of the device's ifIndex 2, as a collector publishes it."""
    uptime = 1000 if trap == "linkDown" else 2000
    labels = {
        "trap": trap,
        "if_index": "2",
        "source_address": "127.0.0.1",
        "device": device,
        "interface": "GigabitEthernet0/0/1",
    }
    return encode_event(Event("trap", trap, time.time(), labels, uptime=uptime))[1]


def acknowledged(alarm_id: str) -> bytes:
    """Ticketing's word that the work order of ``alarm_id`` was taken."""
    body = {
        "type": "acknowledged",
        "work_order_id": f"WO-{alarm_id}",
        "ticket_id": f"T-{alarm_id[:6]}",
        "by": "night shift",
        "at": "2026-12-06T23:00:00+08:00",
    }
    return json.dumps(body).encode()


async def test_every_correlator_shows_every_fault_and_feedback_is_applied_once_by_the_faults_owner(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.view.{uuid.uuid4().hex[:8]}"
    assert sorted(default_partition(c.encode(), 2) for c in CIRCUITS) == [0, 1]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # one partition: one correlator reads all the feedback, whoever owns the faults
        await admin.create_topics([NewTopic(f"{topic}.feedback", 1, 1)])
    finally:
        await admin.close()
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.feedback.dead-letter") as inbox:
            await start_with_one_partition_each(pair)
            await produce(
                kafka_bootstrap,
                [(f"{topic}.events", c.encode(), link(device)) for c, device in CIRCUITS.items()],
            )
            assert await inbox.until(lambda _: len(inbox.of_type("work_order")) == 2, 30), "no work orders"
            alarm_of = {o["circuit"]: o["alarm_id"] for o in inbox.of_type("work_order")}
            started = time.monotonic()

            # Every instance's API and board show both faults, whichever owns them.
            listed = lambda d: sorted(a["alarm_id"] for a in api(d, "/api/v1/alarms"))  # noqa: E731
            await until(lambda: all(listed(d) == sorted(alarm_of.values()) for d in pair), 15, "both faults")
            for daemon in pair:
                board = api(daemon, "/api/v1/board")
                assert sorted(r["alarm_id"] for r in board["rows"]) == sorted(alarm_of.values())
                assert daemon.metric("alarmd_cluster_view_faults") == 2
                opened = daemon.metric  # counted on the next tick
                await until(
                    lambda m=opened: m("alarmd_alarms_open", lifecycle="dispatched") == 2, 3, "counted"
                )
            print(f"both faults on both boards {time.monotonic() - started:.1f}s after the work orders")

            # Feedback for both, with ticketing's own key: one correlator reads both messages.
            feedback = {c: acknowledged(a) for c, a in alarm_of.items()}
            await produce(
                kafka_bootstrap, [(f"{topic}.feedback", b"ticket-42", m) for m in feedback.values()]
            )
            acked = lambda d: {a["alarm_id"]: a["ticket_state"] for a in api(d, "/api/v1/alarms")}  # noqa: E731
            everywhere = dict.fromkeys(alarm_of.values(), "acknowledged")
            await until(lambda: all(acked(d) == everywhere for d in pair), 20, "feedback in every view")
            (reader,) = [d for d in pair if d.events("ticket_feedback_rekeyed")]
            for circuit, alarm_id in alarm_of.items():
                partition = default_partition(circuit.encode(), 2)
                (owner,) = [d for d in pair if _assigned(d) == [partition]]
                applied = [
                    (d, e) for d in pair for e in d.events("ticket_feedback") if e["alarm_id"] == alarm_id
                ]
                assert [d for d, _ in applied] == [owner], f"{circuit}: applied once, by its owner"
                assert api(owner, f"/api/v1/alarms/{alarm_id}")["lifecycle"] == "acknowledged"
            theirs = [c for c in alarm_of if default_partition(c.encode(), 2) not in _assigned(reader)]
            assert len(theirs) == 1, "one message was read by the correlator that does not own its fault"
            assert reader.metric("alarmd_cluster_feedback_total", outcome="rekeyed") == 2

            # Ticketing delivers one message again: the same id, a duplicate on the owner.
            await produce(kafka_bootstrap, [(f"{topic}.feedback", b"ticket-42", feedback["CIR-0003"])])
            dupes = lambda: sum(  # noqa: E731
                d.metric("alarmd_cluster_events_consumed_total", type="feedback", outcome="duplicate")
                for d in pair
            )
            await until(lambda: dupes() == 1, 15, "the copy counted as a duplicate")
            assert sum(len(d.events("ticket_feedback")) for d in pair) == 2

            # A work order no fault of the cluster has: dead-lettered after the wait, with the reason.
            stranger = acknowledged("f" * 20)
            await produce(kafka_bootstrap, [(f"{topic}.feedback", b"ticket-43", stranger)])
            assert await inbox.until(
                lambda records: any(t.endswith("dead-letter") for t, _, _ in records), FEEDBACK_WAIT + 15
            ), "unknown work order not dead-lettered"
            assert reader.metric("alarmd_cluster_feedback_total", outcome="unknown") == 1
            (dead,) = reader.events("upstream_dead_letter")
            assert dead["reason"] == "unknown_alarm"

            # A fault clears and closes on its owner: gone from every view, kept in the history topic,
            # and `alarmd report --cluster` on either instance covers both faults.
            await produce(
                kafka_bootstrap, [(f"{topic}.events", b"CIR-0001", link("cpe-router-01", "linkUp"))]
            )
            history = lambda d: d.metric("alarmd_cluster_history_records_total", outcome="written")  # noqa: E731
            await until(
                lambda: sum(history(d) for d in pair) == 1,
                OBSERVATION + 20,
                "the closed fault in the history topic",
            )
            await until(
                lambda: all(listed(d) == [alarm_of["CIR-0003"]] for d in pair), 5, "closed: off the views"
            )
            for daemon in pair:
                own = {r["circuit"]: r["faults"] for r in report(daemon)}
                assert own == {
                    c: 1 for c in alarm_of if default_partition(c.encode(), 2) in _assigned(daemon)
                }
                assert {r["circuit"]: r["faults"] for r in report(daemon, "--cluster")} == dict.fromkeys(
                    alarm_of, 1
                )
            for daemon in pair:
                assert await daemon.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()


def report(daemon: Daemon, *more: str) -> list[dict[str, Any]]:
    """``alarmd report`` of the last hour and the next, by circuit, as JSON."""
    now = time.time()
    start, end = (datetime.fromtimestamp(t, UTC).isoformat() for t in (now - 3600, now + 3600))
    window = ["--from", start, "--to", end]
    done = subprocess.run(
        [sys.executable, "-m", "alarmd", "report", "-c", str(daemon.dir), *window, "--format", "json", *more],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": daemon.bootstrap},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _assigned(daemon: Daemon) -> list[int]:
    """The events partitions the daemon was assigned last."""
    lines = [e for e in daemon.events("partitions_assigned") if e.get("group") == "events"]
    return list(lines[-1]["partitions"]) if lines else []
