"""Distributed mode under faults, measured against a run without them: ``make chaos-scaleout``.

On 127.0.0.1 only: an N-broker KRaft cluster (tools/kafka_local.py), a fleet of Debian snmpd
agents of 50 interfaces each (bench/snmpd_fleet.py) split over two locations, and three
"machines", each running an ``alarmd run --role correlator`` and the ``--role collector`` of
one or two locations (the layout of deploy/scaleout: north on m1 and m2, south on m2 and m3).
A paced sender sends every trap to both collectors of its location; each trap carries its
own sysUpTime and an snmpTrapAddress standing for one of a fixed set of agents, so every trap
and every fault (agent, ifIndex) can be followed to the events topic, a work order and an
escalation.  Clocks are compressed (polling interval, session timeout, escalation).

Every phase starts fresh topics and state on the same inputs; ``reference`` has no faults and
says what the others should produce.  The fault phases: ``kill`` (SIGKILL a random process at
a random moment, restarted a little later), ``sigstop`` (a correlator stopped past the session
timeout, then continued: its transactions are fenced), ``brokers`` (the broker that is
transaction coordinator of the correlators' first transactional id killed, then the group
coordinator's, or the events leader's if that is the same), ``rolling`` (each machine
SIGTERMed and restarted in turn), ``cold`` (after one machine, the others started one by one
while traffic flows) and ``receiver`` (one trap receiver dead for a while); ``single`` runs
the reference load on one machine to compare CPU.  ``upgrade``, run only when asked for (it
leaves the cluster on the new release, so it goes last), is a rolling upgrade of the brokers
while traffic flows: each stopped (SIGTERM) and started on ``Plan.upgrade_to`` in turn, the
next once every partition of the events topic is fully in sync again.  ``alarmd-upgrade``, also
only when asked for, starts every process on an earlier release (``--upgrade-from``, its
venv's Python) and restarts them machine by machine on this checkout, as ``rolling`` does.

``python -m tests.chaos.scaleout [--quick]`` prints a table and writes
tests/artifacts/scaleout-summary.json.  Everything it starts dies with it (SIGTERM, Ctrl-C):
daemons, the sender and the brokers as first started get SIGTERM from the kernel when it exits;
agents, and a broker the ``brokers`` phase restarted, are stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bench.host import die_with_parent

from alarmd.cluster.codec import Samples, decode
from alarmd.cluster.membership import partition_of
from alarmd.cluster.share import deviation
from alarmd.collector.ber import VERSION_2C, PduType, encode_message
from alarmd.collector.trapdefs import SNMP_TRAP_OID, SYS_UPTIME
from alarmd.model import Event, Sample, VarBind
from tests.chaos.harness import REPO, Daemon, free_port

SUMMARY = REPO / "tests" / "artifacts" / "scaleout-summary.json"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX, IF_ADMIN, IF_OPER = "1.3.6.1.2.1.2.2.1.1", "1.3.6.1.2.1.2.2.1.7", "1.3.6.1.2.1.2.2.1.8"
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"
TRAP_COMMUNITY = "chaos-trap"
FLEET_COMMUNITY = "chaos-fleet"
FIRST_UPTIME = 1_000_000
ESCALATION_SLACK = 30.0  # an escalation later than due + this is late

#: Machine -> the locations whose collector it runs; every machine also runs a correlator.
LAYOUT: dict[str, tuple[str, ...]] = {"m1": ("north",), "m2": ("north", "south"), "m3": ("south",)}
SINGLE: dict[str, tuple[str, ...]] = {"m1": ("north", "south")}
FAULT_PHASES = ("kill", "sigstop", "brokers", "rolling", "cold", "receiver")
ON_REQUEST = ("upgrade", "alarmd-upgrade")  # phases not in the default run

#: The profile the agents are polled with: each interface's ifOperStatus, named by ifName.
PROFILE = """\
description: chaos-scaleout — ifOperStatus of every interface, ifName as the interface label
tables:
  - name: interface
    index_label: if_index
    labels:
      - {name: interface, oid: 1.3.6.1.2.1.31.1.1.1.1}
    columns:
      - {name: if_oper_status, oid: 1.3.6.1.2.1.2.2.1.8}
"""

RULES = """\
groups:
  - name: chaos
    rules:
      - alert: LinkDown
        event: '{trap="linkDown"}'
        by: [agent_address, if_index]
        labels: {severity: major, alarm_class: transmission}
        annotations:
          summary: "fault {{ $labels.agent_address }}/{{ $labels.if_index }}"
"""


@dataclass(frozen=True)
class Plan:
    """How big and how long: the full run's defaults, :data:`QUICK` for the one inside ``make test``."""

    brokers: int = 3
    agents_per_location: int = 100  # snmpd agents of 50 interfaces: 10,000 interfaces in all
    faults_per_location: int = 40  # distinct (agent, ifIndex) faults the traps report
    trap_rate: float = 1000.0  # traps/s over all locations, each sent to both receivers of its location
    seconds: float = 20.0  # traffic per phase
    interval: float = 30.0  # polling interval
    session_timeout: float = 6.0  # the brokers' lowest allowed
    rebalance_check: float = 3.0  # correlators: a few checks of the traffic share within a phase's traffic
    escalation: float = 15.0  # ordinary and important escalation
    kills: int = 20
    restart: bool = True  # killed processes come back (the short run leaves its victim dead)
    settle: float = 75.0  # at most this long for spools and correlators to catch up after the traffic
    events_partitions: int = 12
    inventory_partitions: int = 12
    layout: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(LAYOUT))
    phases: tuple[str, ...] = ("reference", "single", *FAULT_PHASES)
    upgrade_to: str = "4.4.0"  # the Kafka release the ``upgrade`` phase moves the brokers to
    upgrade_from: str = ""  # the ``alarmd-upgrade`` phase: the Python of the release it starts on


QUICK = Plan(
    brokers=1,
    agents_per_location=4,
    faults_per_location=8,
    trap_rate=200.0,
    seconds=16.0,
    interval=4.0,
    escalation=600.0,
    kills=1,
    restart=False,
    settle=25.0,
    events_partitions=4,
    inventory_partitions=4,
    layout={"m1": ("north",), "m2": ("north",)},
    phases=("kill",),
)


# --------------------------------------------------------------------------- the traps


def locations(plan: Plan) -> list[str]:
    """Every location of the layout, sorted."""
    return sorted({loc for locs in plan.layout.values() for loc in locs})


def trap_of(i: int, plan: Plan, where: list[str]) -> tuple[str, str, int, int]:
    """Trap number ``i``: (location, agent address, ifIndex, sysUpTime).

    Faults appear one after another over the first 60% of the traffic; after that the traps
    only repeat them, each with a sysUpTime of its own (a repeat, never a duplicate).
    """
    loc = i % len(where)
    j = i // len(where)
    ramp = max(plan.trap_rate / len(where) * plan.seconds * 0.6, 1.0)
    active = min(plan.faults_per_location, 1 + int(plan.faults_per_location * j / ramp))
    fault = j % active
    return where[loc], f"10.77.{loc + 1}.{fault // 2 + 1}", 1 + fault % 2, FIRST_UPTIME + i


def encode_trap(agent: str, if_index: int, uptime: int) -> bytes:
    """A linkDown trap as a device behind NAT sends it: snmpTrapAddress says who it is."""
    varbinds = (
        VarBind(SYS_UPTIME, "TimeTicks", uptime),
        VarBind(SNMP_TRAP_OID, "ObjectIdentifier", LINK_DOWN),
        VarBind(f"{IF_INDEX}.{if_index}", "Integer", if_index),
        VarBind(f"{IF_ADMIN}.{if_index}", "Integer", 1),
        VarBind(f"{IF_OPER}.{if_index}", "Integer", 2),
        VarBind(SNMP_TRAP_ADDRESS, "IpAddress", agent),
    )
    return encode_message(
        VERSION_2C, TRAP_COMMUNITY.encode(), PduType.SNMPV2_TRAP, varbinds, request_id=uptime
    )


def send(plan: Plan, receivers: dict[str, list[int]], tick: float = 0.005) -> dict[str, float]:
    """Send ``trap_rate * seconds`` traps, each to every receiver of its location, paced; bounded in time."""
    where = locations(plan)
    total = round(plan.trap_rate * plan.seconds)
    packets = []
    for i in range(total):
        loc, agent, if_index, uptime = trap_of(i, plan, where)
        packets.append((encode_trap(agent, if_index, uptime), receivers[loc]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, start = 0, time.perf_counter()
    deadline = start + plan.seconds * 1.5  # bounded: a starved sender stops and says what it sent
    try:
        for step in itertools.count():
            now = time.perf_counter()
            due = min(total, int(plan.trap_rate * (now - start)) + 1)
            for packet, ports in packets[sent:due]:
                for port in ports:
                    with contextlib.suppress(OSError):
                        sock.sendto(packet, ("127.0.0.1", port))
            sent = due
            if sent >= total or now > deadline:
                break
            wait = start + (step + 1) * tick - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    finally:
        sock.close()
    seconds = time.perf_counter() - start
    return {"sent": sent, "seconds": round(seconds, 3), "per_s": round(sent / seconds, 1)}


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Member(Daemon):
    """One ``alarmd run --role ...`` process that dies with the harness and keeps its CPU seconds."""

    preexec = staticmethod(die_with_parent)

    def __init__(self, name: str, config_dir: Path, bootstrap: str, http_port: int, role: str) -> None:
        super().__init__(config_dir, bootstrap, http_port, "--role", role)
        self.name, self.role = name, role
        self.cpu = 0.0  # of runs that ended

    @property
    def alive(self) -> bool:
        """Whether the current run is still running."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig``; a SIGKILL also waits for the process and books its CPU."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            self.cpu += cpu_seconds(self.proc.pid)
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    async def terminate(self) -> int:
        """SIGTERM, wait, book the CPU; the exit status."""
        if self.proc is None:
            return 0
        cpu = cpu_seconds(self.proc.pid)
        status = await self.stop()
        self.cpu += cpu
        return status

    def total_cpu(self) -> float:
        """CPU seconds of every run so far, the live one included."""
        return self.cpu + (cpu_seconds(self.proc.pid) if self.alive and self.proc else 0.0)

    def owned(self, group: str) -> list[int]:
        """The partitions of ``group`` (inventory, events) this run last logged as its own."""
        for event in reversed(self.events("partitions_assigned")):
            if event.get("group") == group:
                return list(event.get("partitions", []))
        return []

    def metric_or_zero(self, name: str, **labels: str) -> float:
        """A metric, or 0 if the process does not answer."""
        try:
            return self.metric(name, **labels)
        except AssertionError:
            return 0.0


CONFIG = """\
rule_files: [rules.yml]
profile_files: ["{profile}"]
state_dir: state
polling: {{interval: {interval}s, timeout: 2s, retries: 1}}
dial_test: {{every: 0s, preprocess_budget: 0s}}
clocks: {{important_escalation: {escalation}s, ordinary_escalation: {escalation}s}}
credentials:
  trap-v2: {{version: 2c, community: {trap_community}}}
  fleet: {{version: 2c, community: {fleet_community}}}
traps:
  enabled: {traps}
  listen: 127.0.0.1:{trap_port}
  credentials: [trap-v2]
  definitions: ["{repo}/config/traps/*.yml"]
devices:
{devices}
kafka:
  request_timeout: 15s  # a loaded 2-core machine answers slowly
  retry_backoff: 500ms
  topics: {{work_orders: {prefix}.workorders, notices: {prefix}.notices}}
cluster:
  location: {location}
  events_topic: {prefix}.events
  events_partitions: {events_partitions}
  inventory_topic: {prefix}.inventory
  inventory_partitions: {inventory_partitions}
  collector_group: {prefix}.collectors
  correlator_group: {prefix}.correlators
  session_timeout: {session}s
  rebalance_check: {rebalance_check}s
  spool_disk_bytes: 67108864  # as deploy/scaleout: what a stopped collector could not send, it sends after
http: {{listen: "127.0.0.1:{http}"}}
"""


@dataclass
class Machine:
    """A correlator and the collectors of some locations, as one host would run them."""

    name: str
    correlator: Member
    collectors: dict[str, Member]
    trap_ports: dict[str, int]

    @property
    def members(self) -> list[Member]:
        """Its processes, correlator first."""
        return [self.correlator, *self.collectors.values()]


def device_names(plan: Plan, location: str) -> list[str]:
    """The names of a location's agents."""
    return [f"{location}-{i:03d}" for i in range(plan.agents_per_location)]


# --------------------------------------------------------------------------- what the cluster said


@dataclass
class Record:
    """What the phase read off the topics and the correlators' committed offsets."""

    traps: set[tuple[str, int]] = field(default_factory=set)  # (agent, sysUpTime) on the events topic
    events: int = 0
    events_by_partition: Counter[int] = field(default_factory=Counter)  # samples and traps
    messages_by_partition: Counter[int] = field(default_factory=Counter)  # what end offsets count
    samples_by_device: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # at
    device_seen: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # record time
    orders: list[dict[str, Any]] = field(default_factory=list)
    order_bytes: dict[tuple[str, str], set[bytes]] = field(default_factory=lambda: defaultdict(set))
    notices: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[tuple[float, int, int]] = field(default_factory=list)  # (time, partition, committed)


class Recorder:
    """Reads the events, work-order and notice topics and polls the correlators' committed offsets."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        self.prefix, self.partitions = prefix, partitions
        self.bootstrap = bootstrap
        self.record = Record()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.consumer = self._consumer()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *(f"{self.prefix}.{t}" for t in ("events", "workorders", "notices")),
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            metadata_max_age_ms=1000,
            request_timeout_ms=10_000,
            isolation_level="read_committed",  # as ticketing reads: aborted transactions unseen
        )

    async def __aenter__(self) -> Recorder:
        await self.admin.start()
        for attempt in range(1, 11):  # a topic not created yet, or whose leaders do not know it yet
            try:
                await self._topics()  # again on a retry: an existing topic is left as it is
                await asyncio.wait_for(self.consumer.start(), 30)
                break
            except Exception:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.consumer.stop(), 10)
                if attempt == 10:
                    raise
                await asyncio.sleep(2.0)
                self.consumer = self._consumer()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._offsets())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.admin.close()

    async def _topics(self) -> None:
        """Create the phase's topics first, so that reading them never auto-creates one of another size."""
        brokers = len((await self.admin.describe_cluster())["brokers"])
        replicas = min(3, brokers)
        config = {"min.insync.replicas": "2"} if replicas >= 3 else {}
        new = [
            NewTopic(f"{self.prefix}.{name}", count, replicas, topic_configs=config)
            for name, count in (("events", self.partitions), ("workorders", 3), ("notices", 3))
        ]
        await self.admin.create_topics(new)

    async def _read(self) -> None:
        rec, events = self.record, f"{self.prefix}.events"
        while not self._stop.is_set():
            try:
                batch = await self.consumer.getmany(timeout_ms=300, max_records=5000)
            except Exception:  # a broker being killed: read again
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                for r in records:
                    if tp.topic == events:
                        item = decode(r.value).item
                        rec.messages_by_partition[tp.partition] += 1
                        ones = item.samples if isinstance(item, Samples) else (item,)  # a poll's samples
                        rec.events_by_partition[tp.partition] += len(ones)
                        for one in ones:
                            rec.events += 1
                            if isinstance(one, Event):
                                rec.traps.add((one.labels.get("agent_address", ""), one.uptime or 0))
                            elif isinstance(one, Sample) and one.metric == "device_up":
                                device = one.labels.get("device", "")
                                rec.samples_by_device[device].append(one.at)
                                rec.device_seen[device].append(r.timestamp / 1000)
                        continue
                    body = json.loads(r.value)
                    if tp.topic.endswith(".workorders"):
                        body["_read"] = time.time()
                        rec.orders.append(body)
                        rec.order_bytes[(body["work_order_id"], body["type"])].add(r.value)
                    else:
                        body["_read"] = time.time()
                        rec.notices.append(body)
            await asyncio.sleep(0)

    async def _offsets(self) -> None:
        group, last = f"{self.prefix}.correlators", dict[int, int]()
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                offsets = await self.admin.list_consumer_group_offsets(group)
                now = time.time()
                for tp, meta in offsets.items():
                    if meta.offset >= 0 and last.get(tp.partition) != meta.offset:
                        last[tp.partition] = meta.offset
                        self.record.offsets.append((now, tp.partition, meta.offset))
            await asyncio.sleep(0.5)

    async def lag(self) -> int | None:
        """Events not yet committed by the correlators (None if it cannot be told now)."""
        try:
            topic = f"{self.prefix}.events"
            partitions = self.consumer.partitions_for_topic(topic) or set()
            ends = await self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            committed = await self.admin.list_consumer_group_offsets(f"{self.prefix}.correlators")
        except Exception:
            return None
        done = {tp.partition: meta.offset for tp, meta in committed.items()}
        return sum(max(end - max(done.get(tp.partition, 0), 0), 0) for tp, end in ends.items())

    def first_commit_after(self, partition: int, moment: float) -> float | None:
        """When the committed offset of ``partition`` first moved after ``moment``."""
        return next((t for t, p, _ in self.record.offsets if p == partition and t > moment), None)


# --------------------------------------------------------------------------- one phase


@dataclass
class Outcome:
    """One phase's figures."""

    phase: str
    figures: dict[str, Any]


class Phase:
    """Fresh topics, state and processes for one run of the inputs, and what it measured."""

    def __init__(
        self, name: str, plan: Plan, root: Path, bootstrap: str, fleet: dict[str, list[int]], profile: Path,
        layout: dict[str, tuple[str, ...]],
    ) -> None:  # fmt: skip
        self.name, self.plan, self.bootstrap = name, plan, bootstrap
        self.prefix = f"chaos.{name}.{uuid.uuid4().hex[:6]}"
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.machines = [self._machine(m, locs, fleet, profile) for m, locs in layout.items()]
        self.kills: list[dict[str, Any]] = []  # every fault: what, when, which partitions it held
        self.notes: list[str] = []
        self.sent: dict[str, float] = {}
        self.broker_dirs: list[str] = []  # node directories of the cluster the harness started
        self.record = Record()
        self.ended = 0.0

    def _machine(
        self, name: str, locs: tuple[str, ...], fleet: dict[str, list[int]], profile: Path
    ) -> Machine:
        ports = {loc: free_port(socket.SOCK_DGRAM) for loc in locs}
        correlator = self._member(f"{name}-correlator", "correlator", locs[0], fleet, profile, None)
        collectors = {
            loc: self._member(f"{name}-collector-{loc}", "collector", loc, fleet, profile, ports[loc])
            for loc in locs
        }
        return Machine(name, correlator, collectors, ports)

    def _member(
        self,
        name: str,
        role: str,
        location: str,
        fleet: dict[str, list[int]],
        profile: Path,
        trap_port: int | None,
    ) -> Member:
        directory = self.dir / name
        directory.mkdir()
        http = free_port()
        devices = "\n".join(
            f"  - {{name: {device}, kind: cpe_router, profile: chaos_interfaces, address: 127.0.0.1, "
            f"port: {port}, credentials: fleet, location: {loc}}}"
            for loc, ports in sorted(fleet.items())
            for device, port in zip(device_names(self.plan, loc), ports, strict=True)
        )
        (directory / "alarmd.yml").write_text(
            CONFIG.format(
                profile=profile,
                interval=self.plan.interval,
                escalation=self.plan.escalation,
                trap_community=TRAP_COMMUNITY,
                fleet_community=FLEET_COMMUNITY,
                traps="true" if trap_port else "false",
                trap_port=trap_port or free_port(socket.SOCK_DGRAM),
                repo=REPO,
                devices=devices,
                prefix=self.prefix,
                location=location,
                events_partitions=self.plan.events_partitions,
                inventory_partitions=self.plan.inventory_partitions,
                session=self.plan.session_timeout,
                rebalance_check=self.plan.rebalance_check,
                http=http,
            )
        )
        (directory / "rules.yml").write_text(RULES)
        member = Member(name, directory, self.bootstrap, http, role)
        if self.name == "alarmd-upgrade":  # it starts on the earlier release
            member.python = self.plan.upgrade_from
        return member

    @property
    def members(self) -> list[Member]:
        """Every process of every machine."""
        return [m for machine in self.machines for m in machine.members]

    async def start(self, machines: list[Machine] | None = None, stagger: float = 0.0) -> None:
        """Start the machines' processes (``stagger`` s apart) and wait until all are ready."""
        chosen = machines if machines is not None else self.machines
        for i, machine in enumerate(chosen):
            if i and stagger:
                await asyncio.sleep(stagger)
            for member in machine.members:
                member.start()
        await asyncio.gather(*(m.wait_ready(300) for machine in chosen for m in machine.members))

    def first(self) -> list[Machine]:
        """The machine a cold start begins with: the one that collects for the most locations."""
        return [max(self.machines, key=lambda m: len(m.collectors))]

    async def stop(self) -> None:
        """SIGTERM every live process; SIGKILL what does not stop."""
        await asyncio.gather(*(m.terminate() for m in self.members if m.alive), return_exceptions=True)
        for member in self.members:
            member.close()

    async def traffic(self) -> dict[str, float]:
        """Run the trap sender (its own process) over the phase's inputs; its figures."""
        receivers: dict[str, list[int]] = defaultdict(list)
        for machine in self.machines:
            for loc, port in machine.trap_ports.items():
                receivers[loc].append(port)
        spec = json.dumps({"plan": _plan_json(self.plan), "receivers": receivers})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.chaos.scaleout", "send", spec,
            stdout=subprocess.PIPE, cwd=REPO, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.plan.seconds * 3 + 60)
        finally:
            if proc.returncode is None:
                proc.kill()
        self.sent = json.loads(out)
        return self.sent

    async def settle(self, recorder: Recorder) -> float:
        """Wait (bounded) until the collectors' spools are empty and the correlators committed every event."""
        started = time.monotonic()
        while time.monotonic() - started < self.plan.settle:
            spooled = sum(m.metric_or_zero("alarmd_cluster_spool_depth") for m in self.members if m.alive)
            if spooled == 0 and await recorder.lag() == 0:
                break
            await asyncio.sleep(1)
        waited = time.monotonic() - started
        await asyncio.sleep(3)  # the outboxes send what the last events caused
        return waited

    async def run(self, faults: Callable[[Phase, Recorder], Awaitable[None]] | None) -> Outcome:
        """Start, send the traffic while ``faults`` runs, settle, stop; the figures."""
        started = time.time()
        try:
            await self.start(self.first() if self.name == "cold" else None)
            async with Recorder(self.bootstrap, self.prefix, self.plan.events_partitions) as recorder:
                traffic_started = time.time()
                sending = asyncio.create_task(self.traffic())
                if faults is not None:
                    try:
                        await faults(self, recorder)
                    except Exception as exc:  # the phase goes on and says what did not happen
                        self.notes.append(f"the fault script failed: {type(exc).__name__}: {exc}")
                await sending
                settle = await self.settle(recorder)
                if self.plan.escalation < 120:  # the last faults' escalations come due
                    last_fault = traffic_started + self.plan.seconds * 0.6
                    await asyncio.sleep(max(0.0, last_fault + self.plan.escalation + 5 - time.time()))
                shares = self._shares()
                cpu = sum(m.total_cpu() for m in self.members)
                ended = time.time()
                await self.stop()
                await asyncio.sleep(1)
                record = recorder.record
        finally:
            await self.stop()
        figures = {
            "seconds": round(ended - started, 1),
            "traps_sent": int(self.sent.get("sent", 0)),
            "traps_per_s": self.sent.get("per_s", 0.0),
            "settle_s": round(settle, 1),
            "events": record.events,
            "cpu_s": round(cpu, 1),
            "cpu_s_per_1k_events": round(cpu / record.events * 1000, 3) if record.events else None,
            "events_by_partition": dict(sorted(record.events_by_partition.items())),
            "messages_by_partition": dict(sorted(record.messages_by_partition.items())),
            **shares,
        }
        self.record = record
        self.ended = ended
        return Outcome(self.name, figures)

    def _shares(self) -> dict[str, Any]:
        """How evenly the live processes share work: events judged per correlator, devices per collector."""
        consumed = {
            machine.correlator.name: machine.correlator.metric_or_zero("alarmd_cluster_events_consumed_total")
            for machine in self.machines
        }
        by_location: dict[str, dict[str, float]] = defaultdict(dict)
        for machine in self.machines:
            for loc, member in machine.collectors.items():
                by_location[loc][member.name] = member.metric_or_zero("alarmd_cluster_devices_owned")
        deviations = [deviation(consumed)] + [deviation(v) for v in by_location.values()]
        return {
            "events_judged": {k: int(v) for k, v in consumed.items()},
            "devices_owned": {loc: {k: int(v) for k, v in v2.items()} for loc, v2 in by_location.items()},
            "work_share_max_dev": round(max(deviations), 3),
        }


def _plan_json(plan: Plan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


# --------------------------------------------------------------------------- the faults


def _held(member: Member, plan: Plan) -> dict[str, Any]:
    """What a process holds just before a fault: partitions of its group and, for a collector, devices."""
    if member.role == "correlator":
        return {"events": member.owned("events")}
    location = member.name.rsplit("-", 1)[1]
    partitions = member.owned("inventory")
    devices = [
        d for d in device_names(plan, location) if partition_of(d, plan.inventory_partitions) in partitions
    ]
    return {"inventory": partitions, "devices": devices}


def _peer_group(member: Member) -> str:
    """Members that stand in for each other: the correlators, the collectors of one location."""
    return member.role if member.role == "correlator" else member.name.rsplit("-", 1)[1]


async def _restart(member: Member, after: float) -> None:
    await asyncio.sleep(after)
    member.start()
    with contextlib.suppress(AssertionError):
        await member.wait_ready(120)


async def kill_random(phase: Phase, recorder: Recorder) -> None:
    """SIGKILL a random process at a random moment, ``plan.kills`` times; each comes back a little later."""
    plan, rng = phase.plan, random.Random(14)
    spacing = plan.seconds / 2 if plan.kills == 1 else 4.0
    restarts: list[asyncio.Task[None]] = []
    recovering: set[str] = set()  # killed, or restarted and not ready yet

    async def back(member: Member) -> None:
        await _restart(member, plan.session_timeout + 6)
        recovering.discard(member.name)

    done = 0
    for _ in range(plan.kills * 10):  # bounded: a moment with nobody to kill is skipped
        if done == plan.kills:
            break
        await asyncio.sleep(rng.uniform(0.5, 1.5) * spacing)
        down = {_peer_group(m) for m in phase.members if m.name in recovering}
        candidates = [m for m in phase.members if m.alive and _peer_group(m) not in down]
        if plan.kills == 1:  # the short run kills a collector that polls devices: the guarantee it checks
            candidates = [m for m in candidates if m.role == "collector" and _held(m, plan)["devices"]]
        if not candidates:
            continue
        victim = rng.choice(candidates)
        held = _held(victim, plan)
        moment = time.time()
        victim.signal(signal.SIGKILL)
        phase.kills.append(
            {"signal": "SIGKILL", "member": victim.name, "role": victim.role, "at": moment, **held}
        )
        recovering.add(victim.name)
        if plan.restart:
            restarts.append(asyncio.create_task(back(victim)))
        done += 1
    await asyncio.gather(*restarts)


async def stop_continue(phase: Phase, recorder: Recorder) -> None:
    """SIGSTOP a correlator past the session timeout, then SIGCONT: its later log says what it did."""
    await asyncio.sleep(phase.plan.seconds * 0.3)
    victim = phase.machines[0].correlator
    held = _held(victim, phase.plan)
    moment = time.time()
    victim.signal(signal.SIGSTOP)
    phase.kills.append(
        {"signal": "SIGSTOP", "member": victim.name, "role": "correlator", "at": moment, **held}
    )
    await asyncio.sleep(phase.plan.session_timeout * 2 + 2)
    lines_before = len(victim.logs())
    victim.signal(signal.SIGCONT)
    await asyncio.sleep(10)
    after = Counter(e.get("event", "?") for e in victim.logs()[lines_before:])
    phase.notes.append(
        f"after SIGCONT {victim.name} logged {dict(after.most_common(6))}, "
        f"partition_fenced {after.get('partition_fenced', 0)} times"
    )


async def kill_brokers(phase: Phase, recorder: Recorder) -> None:
    """Kill the transaction coordinator's broker, restart it; then the group coordinator's (or a leader's)."""
    import kafka_local  # noqa: PLC0415 - tools/ is on the path once the cluster runs

    await asyncio.sleep(phase.plan.seconds * 0.2)
    nodes = {i + 1: Path(d) for i, d in enumerate(phase.broker_dirs)}
    transactional_id = f"{phase.prefix}.correlators.{phase.prefix}.events-0"  # the default prefix
    txn = await recorder.admin.find_coordinator(transactional_id, coordinator_type=1)
    group = await recorder.admin.find_coordinator(f"{phase.prefix}.correlators")
    leaders: Counter[int] = Counter()
    described = await recorder.admin.describe_topics([f"{phase.prefix}.events"])
    for partition in described[0]["partitions"]:
        leaders[partition["leader"]] += 1
    lead = leaders.most_common(1)[0][0]
    second, second_what = (group, "group coordinator") if group != txn else (lead, "events leader")
    phase.notes.append(
        f"killed node {txn}, transaction coordinator of {transactional_id}, then node {second}, "
        f"{second_what} (group coordinator: node {group})"
    )
    for node, what in ((txn, "transaction coordinator"), (second, second_what)):
        moment = time.time()
        await asyncio.to_thread(kafka_local.kill, nodes[node])
        phase.kills.append({"signal": f"broker SIGKILL ({what})", "member": f"node-{node}", "role": "broker",
                            "at": moment})  # fmt: skip
        await asyncio.sleep(phase.plan.session_timeout + 6)
        await asyncio.to_thread(kafka_local.restart, nodes[node])
        await asyncio.sleep(4)


async def upgrade_brokers(phase: Phase, recorder: Recorder) -> None:
    """Rolling upgrade: each broker stopped, started on ``plan.upgrade_to``; the next once all is in sync."""
    import kafka_local  # noqa: PLC0415 - tools/ is on the path once the cluster runs

    await asyncio.sleep(phase.plan.seconds * 0.15)
    events = f"{phase.prefix}.events"
    for i, directory in enumerate(phase.broker_dirs):
        node = Path(directory)
        moment = time.time()
        await asyncio.to_thread(kafka_local.stop, node)
        phase.kills.append({"signal": f"broker SIGTERM (upgrade to {phase.plan.upgrade_to})",
                            "member": f"node-{i + 1}", "role": "broker", "at": moment})  # fmt: skip
        stopped = time.time()
        await asyncio.to_thread(kafka_local.restart, node, version=phase.plan.upgrade_to)
        started = time.time()
        for _ in range(120):  # bounded: a minute for the restarted broker's replicas to catch up
            with contextlib.suppress(Exception):
                (described,) = await recorder.admin.describe_topics([events])
                if all(len(p["isr"]) == len(p["replicas"]) for p in described["partitions"]):
                    break
            await asyncio.sleep(0.5)
        phase.notes.append(
            f"node-{i + 1}: stopped in {stopped - moment:.1f} s, answering on {phase.plan.upgrade_to} "
            f"{started - stopped:.1f} s later, every replica in sync {time.time() - started:.1f} s after that"
        )


async def upgrade_alarmd(phase: Phase, recorder: Recorder) -> None:
    """A rolling upgrade of alarmd: every process started on ``plan.upgrade_from``, then ``rolling``.

    Each machine's processes come back on this checkout's alarmd, so for a while correlators
    and collectors of both releases share their groups, topics and changelog.
    """
    await rolling_restart(phase, recorder, then=sys.executable)


async def rolling_restart(phase: Phase, recorder: Recorder, then: str | None = None) -> None:
    """SIGTERM one machine's processes at a time and start them again (on ``then``'s alarmd if given)."""
    await asyncio.sleep(phase.plan.seconds * 0.15)
    for machine in phase.machines:
        for member in machine.members:
            held = _held(member, phase.plan)
            moment = time.time()
            phase.kills.append({"signal": "SIGTERM", "member": member.name, "role": member.role, "at": moment,
                                **held})  # fmt: skip
        await asyncio.gather(*(m.terminate() for m in machine.members))
        for member in machine.members:
            if then is not None:
                member.python = then
            member.start()
        await asyncio.gather(*(m.wait_ready(120) for m in machine.members), return_exceptions=True)
        await asyncio.sleep(2)


async def cold_start(phase: Phase, recorder: Recorder) -> None:
    """After the first machine, the others started one after another while the traffic flows."""
    rest = [m for m in phase.machines if m not in phase.first()]
    await phase.start(rest, stagger=phase.plan.session_timeout)


async def receiver_dead(phase: Phase, recorder: Recorder) -> None:
    """One trap receiver (a collector of the middle machine) SIGKILLed for a while, then back."""
    await asyncio.sleep(phase.plan.seconds * 0.2)
    machine = phase.machines[len(phase.machines) // 2]
    victim = next(iter(machine.collectors.values()))
    held = _held(victim, phase.plan)
    moment = time.time()
    victim.signal(signal.SIGKILL)
    phase.kills.append(
        {"signal": "SIGKILL", "member": victim.name, "role": "collector", "at": moment, **held}
    )
    await _restart(victim, phase.plan.seconds * 0.4)


FAULTS: dict[str, Callable[[Phase, Recorder], Awaitable[None]]] = {
    "kill": kill_random,
    "sigstop": stop_continue,
    "brokers": kill_brokers,
    "rolling": rolling_restart,
    "upgrade": upgrade_brokers,
    "alarmd-upgrade": upgrade_alarmd,
    "cold": cold_start,
    "receiver": receiver_dead,
}


# --------------------------------------------------------------------------- judging a phase


def fault_of(order: dict[str, Any]) -> str:
    """The fault (agent/ifIndex) a work order or notice is about, from its summary."""
    return str(order.get("summary", "")).rsplit(" ", 1)[-1]


def judge(phase: Phase, expected: set[str]) -> dict[str, Any]:
    """Losses, duplicates, escalations, traps, cycles and failover times of a finished phase."""
    rec, plan = phase.record, phase.plan
    where = locations(plan)
    firsts = [o for o in rec.orders if o["type"] == "work_order"]
    ordered = Counter(fault_of(o) for o in {o["work_order_id"]: o for o in firsts}.values())
    conflicting = sum(1 for payloads in rec.order_bytes.values() if len(payloads) > 1)
    repeated = sum(1 for payloads in rec.order_bytes.values() for _ in payloads) - len(rec.order_bytes)
    escalations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for notice in rec.notices:
        if notice["type"] == "escalation":
            escalations[fault_of(notice)].append(notice)
    raised = {}
    for order in sorted(firsts, key=lambda o: o["raised_at"]):
        raised.setdefault(fault_of(order), _epoch(order["raised_at"]))
    due = {f: at + plan.escalation for f, at in raised.items()}
    late = sum(
        1
        for f, at in due.items()
        if at + ESCALATION_SLACK < phase.ended
        and not any(_epoch(n["sent_at"]) <= at + ESCALATION_SLACK for n in escalations.get(f, []))
    )
    sent_traps = {
        (agent, uptime)
        for i in range(int(phase.sent.get("sent", 0)))
        for _, agent, _, uptime in [trap_of(i, plan, where)]
    }
    gaps = [
        b - a for times in rec.samples_by_device.values() for a, b in itertools.pairwise(sorted(set(times)))
    ]
    return {
        "kill_runs": sum(1 for k in phase.kills if k["signal"] == "SIGKILL" and phase.name == "kill"),
        "work_orders_expected": len(expected),
        "work_orders_lost": len(expected - set(ordered)),
        "faults_ordered_twice": sum(1 for n in ordered.values() if n > 1),
        "twice_examples": [
            {"fault": f, "orders": [(o["work_order_id"], o["raised_at"]) for o in firsts if fault_of(o) == f]}
            for f in sorted(f for f, n in ordered.items() if n > 1)[:5]
        ],
        "conflicting_duplicates": conflicting,
        "conflict_examples": conflict_examples(rec.order_bytes),
        "identical_repeats": repeated,
        "escalations_expected": sum(1 for at in due.values() if at + ESCALATION_SLACK < phase.ended),
        "escalations_twice": sum(
            1 for ns in escalations.values() if len({n["alarm_id"] for n in ns}) > 1 or len(ns) > 1
        ),
        "escalations_late": late,
        "traps_lost": len(sent_traps - rec.traps),
        "max_missed_cycles": max((round(g / plan.interval) - 1 for g in gaps), default=0),
        **failovers(phase),
    }


def conflict_examples(order_bytes: dict[tuple[str, str], set[bytes]], limit: int = 5) -> list[dict[str, Any]]:
    """The first ``limit`` ids sent with different payloads: id, type and each field whose values differ."""
    out = []
    for (order_id, kind), payloads in sorted(order_bytes.items()):
        if len(payloads) < 2:
            continue
        bodies = [json.loads(p) for p in payloads]
        keys = sorted({k for b in bodies for k in b})
        values = {k: [b.get(k) for b in bodies] for k in keys}
        differ = {k: v for k, v in values.items() if len({json.dumps(x) for x in v}) > 1}
        out.append({"work_order_id": order_id, "type": kind, "differ": differ})
        if len(out) >= limit:
            break
    return out


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def failovers(phase: Phase) -> dict[str, Any]:
    """Seconds from each fault to the first output of every partition the process held."""
    sigkill: list[float] = []
    sigterm: list[float] = []
    by_role: dict[str, list[float]] = defaultdict(list)  # after SIGKILL
    missing = 0
    rec = phase.record
    for fault in phase.kills:
        moment = fault["at"]
        times: list[float | None] = []
        for partition in fault.get("events", []):
            times.append(next((t for t, p, _ in rec.offsets if p == partition and t > moment), None))
        slowest: tuple[float, str, float] | None = None  # (published, device, polled) of the last device
        for device in fault.get("devices", []):
            seen = rec.device_seen.get(device, [])
            first = next((i for i, t in enumerate(seen) if t > moment), None)
            times.append(None if first is None else seen[first])
            if first is not None and (slowest is None or seen[first] > slowest[0]):
                polled = rec.samples_by_device.get(device, [])  # read with ``seen``, one entry each
                slowest = (seen[first], device, polled[first] if first < len(polled) else seen[first])
        if slowest is not None:  # whether the last device was polled late, or published late
            published, device, polled = slowest
            fault["slowest"] = {"device": device, "polled_s": round(polled - moment, 2),
                                "published_s": round(published - moment, 2)}  # fmt: skip
        measured = [t - moment for t in times if t is not None]
        missing += sum(1 for t in times if t is None)
        fault["moved"], fault["never"] = len(times), len(times) - len(measured)
        fault["failover_max_s"] = round(max(measured), 2) if measured else None
        if fault["signal"] == "SIGKILL":
            sigkill.extend(measured)
            by_role[fault["role"]].extend(measured)
        elif fault["signal"] == "SIGTERM":
            sigterm.extend(measured)
    return {
        "failover_samples": len(sigkill) + len(sigterm),
        "failover_never": missing,
        "failover_p50_s": _pct(sigkill, 50),
        "failover_p99_s": _pct(sigkill, 99),
        "failover_sigterm_p99_s": _pct(sigterm, 99),
        "failover_collector_p99_s": _pct(by_role["collector"], 99),
        "failover_correlator_p99_s": _pct(by_role["correlator"], 99),
        "_sigkill": sigkill,
        "_sigterm": sigterm,
    }


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 2)


# --------------------------------------------------------------------------- the run

TARGETS = {
    "work_orders_lost": 0,
    "conflicting_duplicates": 0,
    "escalations_twice": 0,
    "escalations_late": 0,
    "traps_lost": 0,
    "max_missed_cycles": 1,
    "failover_p99_s": 30.0,
    "failover_sigterm_p99_s": 10.0,
    "work_share_max_dev": 0.2,
}


@contextlib.contextmanager
def peers(
    plan: Plan, root: Path, bootstrap: str | None
) -> Iterator[tuple[str, list[str], dict[str, list[int]]]]:
    """The brokers (unless ``bootstrap`` is given) and the agent fleet; both stopped on the way out."""
    sys.path.insert(0, str(REPO / "tools"))
    from bench.snmpd_fleet import Fleet  # noqa: PLC0415

    import kafka_local  # noqa: PLC0415

    cluster = None
    if bootstrap is None:
        cluster = kafka_local.start_cluster(root / "kafka", plan.brokers)
        bootstrap = cluster.bootstrap
    where = locations(plan)
    fleet = Fleet(plan.agents_per_location * len(where), FLEET_COMMUNITY)
    try:
        fleet.start()
        ports = fleet.ports
        by_location = {
            loc: ports[i * plan.agents_per_location : (i + 1) * plan.agents_per_location]
            for i, loc in enumerate(where)
        }
        dirs = [str(b.state_dir) for b in cluster.brokers] if cluster else []
        yield bootstrap, dirs, by_location
    finally:
        try:
            fleet.stop()
        finally:  # an agent that does not stop in time must not leave the brokers running
            if cluster is not None:
                cluster.stop()


async def run(
    plan: Plan,
    root: Path,
    servers: str,
    fleet: dict[str, list[int]],
    broker_dirs: tuple[str, ...] = (),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every phase of ``plan`` against running peers (:func:`peers`); the summary."""
    profile = root / "chaos_interfaces.yml"
    profile.write_text(PROFILE, encoding="utf-8")
    results: dict[str, dict[str, Any]] = {}
    kills: dict[str, list[dict[str, Any]]] = {}
    notes: dict[str, list[str]] = {}
    say(f"cluster {servers}; {sum(map(len, fleet.values())) * 50} interfaces in {len(fleet)} locations")
    expected: set[str] = {
        agent + "/" + str(if_index)
        for i in range(round(plan.trap_rate * plan.seconds))
        for _, agent, if_index, _ in [trap_of(i, plan, locations(plan))]
    }
    for name in plan.phases:
        layout = SINGLE if name == "single" else plan.layout
        phase = Phase(name, plan, root, servers, fleet, profile, layout)
        phase.broker_dirs = list(broker_dirs)
        say(f"phase {name}: {len(phase.members)} processes on {len(layout)} machines ...")
        try:
            outcome = await phase.run(FAULTS.get(name))
        except Exception as exc:  # one phase that cannot run does not cost the others
            notes[name] = [*phase.notes, f"the phase did not run: {type(exc).__name__}: {str(exc)[:300]}"]
            results[name] = {"error": type(exc).__name__}
            say(f"  {notes[name][-1]}")
            continue
        if name == "reference":
            found = {fault_of(o) for o in phase.record.orders if o["type"] == "work_order"}
            if found != expected:
                notes.setdefault(name, []).append(f"reference ordered {len(found)} of {len(expected)} faults")
        figures = outcome.figures | judge(phase, expected)
        results[name] = figures
        kills[name] = phase.kills
        notes[name] = notes.get(name, []) + phase.notes
        say(f"  {_line(name, figures)}")
    return {
        "plan": _plan_json(plan),
        "totals": totals(results),
        "targets": TARGETS,
        "phases": {k: {n: v for n, v in f.items() if not n.startswith("_")} for k, f in results.items()},
        "faults": kills,
        "notes": notes,
    }


def totals(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue asks for, over every phase."""
    faults = [f for p, f in results.items() if p != "single" and "error" not in f]
    sigkill = [t for f in results.values() for t in f.get("_sigkill", [])]
    sigterm = [t for f in results.values() for t in f.get("_sigterm", [])]
    reference = results.get("reference", {})
    return {
        "kill_runs": sum(f.get("kill_runs", 0) for f in results.values()),
        "work_orders_expected": sum(f["work_orders_expected"] for f in faults),
        "work_orders_lost": sum(f["work_orders_lost"] for f in faults),
        "faults_ordered_twice": sum(f["faults_ordered_twice"] for f in faults),
        "conflicting_duplicates": sum(f["conflicting_duplicates"] for f in faults),
        "escalations_twice": sum(f["escalations_twice"] for f in faults),
        "escalations_late": sum(f["escalations_late"] for f in faults),
        "traps_lost": sum(f["traps_lost"] for f in faults),
        "max_missed_cycles": max((f["max_missed_cycles"] for f in faults), default=0),
        "failover_p50_s": _pct(sigkill, 50),
        "failover_p99_s": _pct(sigkill, 99),
        "failover_sigterm_p99_s": _pct(sigterm, 99),
        "cpu_s_per_1k_events_1": results.get("single", {}).get("cpu_s_per_1k_events"),
        "cpu_s_per_1k_events_3": reference.get("cpu_s_per_1k_events"),
        "work_share_max_dev": reference.get("work_share_max_dev"),
    }


COLUMNS = (
    "work_orders_expected", "work_orders_lost", "faults_ordered_twice", "conflicting_duplicates",
    "escalations_twice", "escalations_late", "traps_lost", "max_missed_cycles", "failover_p50_s",
    "failover_p99_s", "failover_sigterm_p99_s", "cpu_s_per_1k_events", "work_share_max_dev",
)  # fmt: skip
SHORT = {
    "work_orders_expected": "wo exp", "work_orders_lost": "wo lost", "faults_ordered_twice": "wo twice",
    "conflicting_duplicates": "conflict", "escalations_twice": "esc twice", "escalations_late": "esc late",
    "traps_lost": "traps lost", "max_missed_cycles": "missed", "failover_p50_s": "fo p50",
    "failover_p99_s": "fo p99", "failover_sigterm_p99_s": "fo term p99", "cpu_s_per_1k_events": "cpu/1k",
    "work_share_max_dev": "share dev",
}  # fmt: skip


def _line(name: str, figures: dict[str, Any]) -> str:
    return ", ".join(f"{SHORT[c]} {figures.get(c)}" for c in COLUMNS)


def table(summary: dict[str, Any]) -> str:
    """The phases and the totals as a plain-text table, each total marked met or missed."""
    rows = [["phase", *(SHORT[c] for c in COLUMNS)]]
    for name, figures in summary["phases"].items():
        rows.append([name, *(_cell(figures.get(c)) for c in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    for key, value in summary["totals"].items():
        target = summary["targets"].get(key)
        verdict = (
            ""
            if target is None
            else "  not measured"
            if value is None
            else "  met"
            if value <= target
            else "  MISSED"
        )
        lines.append(
            f"{key:<28} {_cell(value):>10}{'' if target is None else f'  (target <= {target})'}{verdict}"
        )
    for phase, notes in summary["notes"].items():
        lines.extend(f"{phase}: {note}" for note in notes)
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """``send SPEC`` (the trap sender's own process) or the whole run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmd", nargs="?", default="run", choices=["run", "send"])
    parser.add_argument("spec", nargs="?", help="for send: the plan and receivers, JSON")
    parser.add_argument("--quick", action="store_true", help="the short plan of the test suite")
    parser.add_argument(
        "--phases",
        help=f"comma-separated phases (default: all but {', '.join(ON_REQUEST)}, which runs last when named)",
    )
    parser.add_argument(
        "--upgrade-to", help=f"the Kafka release of the upgrade phase (default {Plan.upgrade_to})"
    )
    parser.add_argument(
        "--upgrade-from",
        help="the alarmd-upgrade phase: the Python (a venv's bin/python) of the release it starts on",
    )
    parser.add_argument("--kills", type=int, help="SIGKILLs in the kill phase (default 20)")
    parser.add_argument("--keep", type=Path, help="keep configs and logs in this directory")
    args = parser.parse_args(argv)
    if args.cmd == "send":
        spec = json.loads(args.spec)
        plan = Plan(**{**spec["plan"], "phases": tuple(spec["plan"]["phases"])})
        print(json.dumps(send(plan, spec["receivers"])))
        return 0
    plan = QUICK if args.quick else Plan()
    if args.phases:
        named = args.phases.split(",")
        last = [p for p in named if p in ON_REQUEST]  # it leaves the cluster upgraded
        plan = dataclasses.replace(plan, phases=(*(p for p in named if p not in ON_REQUEST), *last))
    if args.upgrade_to:
        plan = dataclasses.replace(plan, upgrade_to=args.upgrade_to)
    if args.upgrade_from:
        plan = dataclasses.replace(plan, upgrade_from=args.upgrade_from)
    if "alarmd-upgrade" in plan.phases and not plan.upgrade_from:
        parser.error("the alarmd-upgrade phase needs --upgrade-from (an earlier release's bin/python)")
    if args.kills is not None:
        plan = dataclasses.replace(plan, kills=args.kills)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: all stops
    root = args.keep or Path(tempfile.mkdtemp(prefix="alarmd-scaleout-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with peers(plan, root, None) as (servers, broker_dirs, fleet):
            summary = asyncio.run(run(plan, root, servers, fleet, tuple(broker_dirs)))
    except KeyboardInterrupt:
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(table(summary))
    print(f"\nwritten {SUMMARY.relative_to(REPO)}; logs in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
