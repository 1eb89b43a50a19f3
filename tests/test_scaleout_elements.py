"""Major faults in distributed mode: circuits of one element on two correlators make one major fault.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1.  Four circuits share a transmission segment; two of them are keyed to each events
partition, so each correlator owns two.  Their linkDown traps arrive on the events topic as
collectors publish them.  The element stage (in both correlators, one of which owns the
segment's element partition) opens one major fault naming all four; its owner is then
stopped (SIGTERM) and started again, and the next owner SIGKILLed, while the fault is open;
the survivor carries it on to its single clear.  In the second test the owner is paused
(SIGSTOP) past the session timeout instead: the survivor takes the major fault over, and the
owner, resumed, is fenced and commits nothing more.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator

from alarmd.cluster.codec import encode_event
from alarmd.dispatch.kafka import default_partition
from alarmd.model import Event
from tests.chaos.harness import PROFILES, Daemon, Inbox, free_port
from tests.test_scaleout_restore import RULES, epoch, until
from tests.test_scaleout_view import TOKEN, api

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 6.0  # the broker's lowest allowed session timeout
LOAD_SLACK = 20.0  # rebalance and restore on a machine shared with other test runs


def circuits_on_both_partitions(each: int) -> list[str]:
    """Circuit ids whose keys fall ``each`` on events partition 0 and ``each`` on partition 1 (of 2)."""
    found: dict[int, list[str]] = {0: [], 1: []}
    number = 0
    while min(len(v) for v in found.values()) < each:
        number += 1
        circuit = f"CIR-{number:04d}"
        side = found[default_partition(circuit.encode(), 2)]
        if len(side) < each:
            side.append(circuit)
    return found[0] + found[1]


CIRCUITS = circuits_on_both_partitions(2)
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMAS = {
    topic: Draft202012Validator(json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()))
    for topic, name in (("workorders", "work-order"), ("notices", "notice"))
}

CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: state
dial_test: {{every: 0s, preprocess_budget: 0s}}
customers:
  - {{id: CUST-G, name: Harbour Logistics Group, tier: gold}}
  - {{id: CUST-O, name: Corner Bakery, tier: ordinary}}
devices:
{devices}
elements:
  - {{name: SEG-EAST-1, kind: transmission_segment}}
circuits:
{circuits}
major_faults: {{min_circuits: 3, window: 2m, straggler_wait: 5s}}
kafka:
  request_timeout: 5s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
cluster:
  events_topic: {topic}.events
  events_partitions: 2
  correlator_group: {topic}.correlators
  session_timeout: {session}s
http: {{listen: "127.0.0.1:{http}"}}
"""


def device(circuit: str) -> str:
    """The CPE router of a circuit."""
    return f"cpe-{circuit.lower()}"


def correlator(root: Path, name: str, bootstrap: str, topic: str, extra: str = "") -> Daemon:
    """A config directory for one correlator (``extra``: more config lines) and the daemon that runs it."""
    directory = root / name
    directory.mkdir()
    http = free_port()
    devices = "\n".join(
        f"  - {{name: {device(c)}, kind: cpe_router, address: 127.0.0.1, port: {free_port()}, "
        "snmp: {community: x}}"
        for c in CIRCUITS
    )
    circuits = "\n".join(
        f"  - {{id: {c}, customer: {'CUST-G' if i == 0 else 'CUST-O'}, "
        f"path: [{{device: {device(c)}, interface: GigabitEthernet0/0/1}}], shared: [SEG-EAST-1]}}"
        for i, c in enumerate(CIRCUITS)
    )
    (directory / "alarmd.yml").write_text(
        CONFIG.format(
            profiles=PROFILES,
            devices=devices,
            circuits=circuits,
            topic=topic,
            session=SESSION_TIMEOUT,
            http=http,
        )
    )
    (directory / "rules.yml").write_text(RULES)
    with (directory / "alarmd.yml").open("a") as config:
        config.write("api: {tokens_file: tokens.yml}\n" + extra)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (directory / "tokens.yml").write_text(f"tokens:\n  - {{name: wall, sha256: {digest}, scope: all}}\n")
    return Daemon(directory, bootstrap, http, "--role", "correlator")


async def publish_traps(bootstrap: str, topic: str, trap: str, uptime: int) -> None:
    """A trap of every circuit's CPE as a collector publishes it: keyed by the circuit."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for circuit in CIRCUITS:
            labels = {
                "trap": trap,
                "if_index": "2",
                "source_address": "127.0.0.1",
                "agent_address": "127.0.0.1",
                "device": device(circuit),
                "interface": "GigabitEthernet0/0/1",
            }
            _, payload = encode_event(Event("trap", trap, time.time(), labels, uptime=uptime))
            await producer.send_and_wait(f"{topic}.events", payload, key=circuit.encode())
    finally:
        await producer.stop()


def majors(inbox: Inbox, kind: str) -> list[dict[str, Any]]:
    """The major fault's messages of one type."""
    return [o for o in inbox.of_type(kind) if o["alert"] == "MajorFault"]


def circuits_named(inbox: Inbox) -> set[str]:
    """Every circuit the major fault's latest message names."""
    latest = [m for t, m, _ in inbox.records if t.endswith(".workorders") and m["alert"] == "MajorFault"][-1]
    return {c["circuit"] for c in latest["major_fault"]["circuits"]}


def owned(daemon: Daemon, group: str) -> float:
    """Partitions of a group (events, elements) the daemon owns."""
    return daemon.metric("alarmd_cluster_partitions_owned", group=group)


async def started(pair: list[Daemon]) -> None:
    """Both correlators ready, one events and one element partition each."""
    for daemon in pair:
        daemon.start()
    for daemon in pair:
        await daemon.wait_ready()
    await until(
        lambda: [(owned(d, "events"), owned(d, "elements")) for d in pair] == [(1, 1), (1, 1)],
        40,
        "one events and one element partition each",
    )


async def test_circuits_on_two_correlators_make_one_major_fault_that_survives_its_owners_death(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.elements.{uuid.uuid4().hex[:8]}"
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic) for name in ("a", "b")]
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await started(pair)
            await publish_traps(kafka_bootstrap, topic, "linkDown", uptime=1000)

            # Each correlator judged its own two circuits and sent their work orders ...
            judged = lambda d: d.metric(  # noqa: E731
                "alarmd_cluster_events_consumed_total", type="event", outcome="judged"
            )
            await until(lambda: [judged(d) for d in pair] == [2, 2], 30, "two circuits judged on each")
            own = lambda: {o["circuit"] for o in inbox.of_type("work_order") if o["alert"] == "LinkDown"}  # noqa: E731
            assert await inbox.until(lambda _: own() == set(CIRCUITS), 30), own()
            # ... and the element stage opened one major fault naming all four.
            named = lambda _: majors(inbox, "work_order") and circuits_named(inbox) == set(CIRCUITS)  # noqa: E731
            assert await inbox.until(named, 30), "no major fault naming every circuit"
            await inbox.collect(3)
            (major,) = majors(inbox, "work_order")
            alarm_id = major["alarm_id"]
            assert major["major_fault"]["element"] == "SEG-EAST-1"
            assert major["tier"] == "gold", "the highest tier among its circuits"
            reparented = [o for o in inbox.of_type("work_order_update") if o["update"] == "reparented"]
            assert sorted(o["circuit"] for o in reparented) == sorted(CIRCUITS)
            assert {o["parent_alarm_id"] for o in reparented} == {alarm_id}
            escalations = lambda: [n for n in inbox.of_type("escalation") if n["alarm_id"] == alarm_id]  # noqa: E731
            assert len(escalations()) == 1, "a major fault is escalated at once, once"
            # Both correlators' read API (and so their boards) show the major fault, whichever owns it.
            listed = lambda d: {a["alarm_id"] for a in api(d, "/api/v1/alarms")}  # noqa: E731
            await until(lambda: all(alarm_id in listed(d) for d in pair), 10, "the major fault on both APIs")

            # Stop (SIGTERM) the element stage's owner while the major fault is open, then start it again.
            opened = lambda d: d.metric("alarmd_major_faults_open")  # noqa: E731
            (owner,) = [d for d in pair if opened(d) == 1]
            (survivor,) = [d for d in pair if d is not owner]
            assert opened(survivor) == 0
            stopped_at = time.time()
            assert await owner.stop() == 0
            await until(lambda: opened(survivor) == 1, LOAD_SLACK, "the major fault moved on SIGTERM")
            handed_over = time.time() - stopped_at
            owner.start()
            await owner.wait_ready()
            await until(
                lambda: [(owned(d, "events"), owned(d, "elements")) for d in pair] == [(1, 1), (1, 1)],
                40,
                "one events and one element partition each again",
            )

            # SIGKILL whichever owns it now.
            await until(lambda: sum(opened(d) for d in pair) == 1, LOAD_SLACK, "one owner of the major fault")
            (owner,) = [d for d in pair if opened(d) == 1]
            (survivor,) = [d for d in pair if d is not owner]
            owner.kill()
            killed_at = time.time()
            await until(
                lambda: owned(survivor, "elements") == 2 and opened(survivor) == 1,
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor restored the major fault",
            )
            restored_at = time.time()
            await until(lambda: owned(survivor, "events") == 2, LOAD_SLACK, "the survivor owns every circuit")
            await inbox.collect(3)
            assert len(majors(inbox, "work_order")) == 1, "the major fault was raised again"
            assert len(escalations()) == 1

            # The circuits recover: the major fault clears once, under its id.
            await publish_traps(kafka_bootstrap, topic, "linkUp", uptime=2000)
            cleared_major = lambda _: majors(inbox, "work_order_clear")  # noqa: E731
            assert await inbox.until(cleared_major, 30), "the major fault never cleared"
            await inbox.collect(3)
            assert [o["alarm_id"] for o in majors(inbox, "work_order_clear")] == [alarm_id]
            assert len(majors(inbox, "work_order")) == 1
            cleared = {o["circuit"] for o in inbox.of_type("work_order_clear") if o["alert"] == "LinkDown"}
            assert cleared == set(CIRCUITS)
            await until(lambda: opened(survivor) == 0, 5, "no major fault open")
            for topic_name, message, _ in inbox.records:  # the shapes ticketing knows, as in --role all
                SCHEMAS[topic_name.rsplit(".", 1)[1]].validate(message)
            restore = [
                e
                for e in survivor.events("partitions_restored")
                if e.get("faults_restored") and epoch(e["timestamp"]) > killed_at
            ]
            figures = [
                (e["faults_restored"], e["seconds"], round(epoch(e["timestamp"]) - killed_at, 1))
                for e in restore
            ]
            print(  # the figures docs/scaleout.md quotes (pytest -s)
                f"SIGTERM of the element owner to the major fault open on the other: {handed_over:.1f}s; "
                f"SIGKILL of the element owner to the major fault restored on the survivor: "
                f"{restored_at - killed_at:.1f}s (polled); "
                f"restores (faults, seconds, s after SIGKILL): {figures}"
            )
            assert await survivor.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()


async def test_a_paused_element_owner_is_fenced_when_it_resumes_and_commits_nothing_more(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"alarmd.elemz.{uuid.uuid4().hex[:8]}"
    clocks = "clocks: {status_update_every: 3s}\n"  # the major fault's clock comes due while it is frozen
    pair = [correlator(tmp_path, name, kafka_bootstrap, topic, clocks) for name in ("a", "b")]
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            await started(pair)
            await publish_traps(kafka_bootstrap, topic, "linkDown", uptime=1000)
            named = lambda _: majors(inbox, "work_order") and circuits_named(inbox) == set(CIRCUITS)  # noqa: E731
            assert await inbox.until(named, 40), "no major fault naming every circuit"
            (major,) = majors(inbox, "work_order")
            alarm_id = major["alarm_id"]
            opened = lambda d: d.metric("alarmd_major_faults_open")  # noqa: E731
            (zombie,) = [d for d in pair if opened(d) == 1]
            (survivor,) = [d for d in pair if d is not zombie]
            commits = lambda d, outcome: d.metric(  # noqa: E731
                "alarmd_cluster_transactions_total", group="elements", outcome=outcome
            )
            assert commits(zombie, "committed") >= 1, (
                "the major fault left in the element stage's transaction"
            )

            zombie.pause()
            paused_at = time.monotonic()
            await until(
                lambda: owned(survivor, "elements") == 2 and opened(survivor) == 1,
                SESSION_TIMEOUT + LOAD_SLACK,
                "the survivor took the paused owner's major fault",
            )
            taken = time.monotonic() - paused_at
            resumed = time.time()  # a message this process sends from now on was committed after it resumed
            zombie.resume()
            await until(
                lambda: any(e.get("group") == "elements" for e in zombie.events("partition_fenced")),
                15,
                "the resumed element owner was fenced",
            )
            await inbox.collect(4)

            assert commits(zombie, "fenced") >= 1
            (fenced, *_) = [e for e in zombie.events("partition_fenced") if e.get("group") == "elements"]
            prefix = f"{topic}.correlators.{topic}.events.elements"
            assert fenced["transactional_id"] == f"{prefix}-{fenced['partition']}"
            # Until the group assigns it element partitions again (as a new owner), it sends nothing.
            assigned = [
                epoch(e["timestamp"])
                for e in zombie.events("partitions_assigned")
                if e.get("group") == "elements" and epoch(e["timestamp"]) > resumed
            ]
            again = min(assigned, default=time.time())
            late = [
                e
                for e in zombie.events("message_sent")
                if resumed < epoch(e["timestamp"]) < again and not e.get("topic", "").endswith(".elements")
            ]
            assert late == [], "the zombie sent a major fault's message after it resumed"
            assert len(majors(inbox, "work_order")) == 1, "the major fault was raised again"
            updates = [n for n in inbox.of_type("status_update") if n["alarm_id"] == alarm_id]
            assert updates, "the survivor carries the major fault's clocks on"
            numbers = [n["status_update_number"] for n in updates]
            assert len(set(numbers)) == len(numbers), f"a status update was sent twice: {numbers}"
            assert len([n for n in inbox.of_type("escalation") if n["alarm_id"] == alarm_id]) == 1
            assert survivor.metric("alarmd_cluster_takeover_seconds_count", group="elements") >= 1
            print(
                f"SIGSTOP of the element owner to the major fault open on the survivor: {taken:.1f}s; "
                f"the resumed owner's refused transaction held {fenced['messages_dropped']} message(s) and "
                f"{fenced['changelog_records_dropped']} changelog record(s)"
            )
            for daemon in pair:
                assert await daemon.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()  # SIGKILL ends a paused process too
