"""Latency: an SNMP trap sent to alarmd → its work order acknowledged by Apache Kafka, at 1,000 traps/s.

The real daemon (``python -m alarmd run``) runs as a subprocess on a generated config against a
real broker (``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft node from ``tools/kafka_local.py``),
with the shipped ``rules/*.yml`` and ``config/traps/standard.yml``, the shipped device profiles,
and its own defaults for logging (JSON, level info, to a file) and the outbox (SQLite, WAL,
``synchronous=FULL``).  Everything listens on 127.0.0.1 at ports chosen at run time.

Inventory.  alarmd maps a trap to a device by its source address and to an interface by the
ifIndex → ifName table of its last poll, and every device here must sit at 127.0.0.1, so one
aggregation router carries all circuits: an snmpsim agent (``tools/simnet.py``) serves a
generated IF-MIB for it (``noise_interfaces`` + one interface per probe), polled with the
``cpe_router`` profile every ``poll_interval`` seconds (10 s, as in ``config/alarmd.yml``, so
that polls and the evaluation of their samples fall inside the measured period).  Each interface
is one customer's circuit (tiers diamond, gold, ordinary in turn), with a ``cpe_wan`` dial
target at 127.0.0.1.

Path of a probe.  A v2c ``linkDown`` (ifIndex, ifAdminStatus up, ifOperStatus down) for an
interface never used before → the shipped event rule ``LinkDown`` (``event: '{trap="linkDown"}'``,
no ``for:``, so it fires at once) → a transmission alarm on that circuit → the pre-processing
dial test of the circuit (its router and its ``cpe_wan`` target, both 127.0.0.1; ``dial_count``
echoes ``dial_interval`` apart, default one echo: every extra echo adds ``dial_interval`` to each
first work order by design) → the work order in the outbox → Kafka (``acks=all``, idempotent).
The work-order topic is created beforehand with ``message.timestamp.type=LogAppendTime``, so a
record's timestamp is the moment the broker appended it, just before it acknowledged it.
Latency = that timestamp minus the wall-clock time (``time.time()``) just before the probe's
``sendto``; the broker and this process share the host's clock.  Resolution: 1 ms.

Background.  A separate process sends v2c ``linkUp`` traps for the ``noise_interfaces``
interfaces, which are up and have no open alarm, at ``noise_rate`` per second from before the
first probe until after the last: each is decoded, enriched with device, interface, circuit and
tier and evaluated against every event rule (``LinkDown``'s ``resolve`` matches, nothing to
resolve), but raises nothing.  Probes go out one every 100-200 ms (uniform, seeded) for
``duration`` seconds after ``warmup_probes`` unmeasured ones (the producer connects lazily).

Where the time goes: the daemon's own log lines (``alarm_raised``, ``preprocessed`` with the dial
test's ``seconds``, ``message_sent`` with ``queued_seconds`` since the outbox insert) split each
probe's latency into trap → alarm raised, wait for the announce stage, dial test, announce →
outbox insert, and outbox insert → broker append; percentiles of each are in ``latency.json``,
with the daemon's own Kafka produce times (its histogram, before and after).  When ``py-spy`` is
on PATH (or given), the daemon is sampled during the measured period without being paused
(``--nonblocking``), and the busiest functions and source files are added as ``daemon_profile``.
Last, in process (:func:`poll_stall`), one poll of the router runs through alarmd's poller and
rule stage while a 1 ms heartbeat measures the longest stall of the event loop: how long a trap
arriving at that moment would wait.

    python -m bench.latency run [--quick] [--duration S] [--bootstrap HOST:PORT] [--results-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import structlog
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alarmd.app import Daemon as AlarmdDaemon
from alarmd.app import load_rules
from alarmd.collector.ber import VERSION_2C, PduType, encode_message
from alarmd.collector.trapdefs import SNMP_TRAP_OID, SYS_UPTIME
from alarmd.config import load
from alarmd.model import VarBind
from alarmd.testing import FakeSink
from bench.host import die_with_parent, host_facts, write_result
from bench.sender import IF_ADMIN_STATUS, IF_INDEX, IF_OPER_STATUS, link_down, send_paced

ROOT: Final = Path(__file__).resolve().parent.parent
LINK_UP: Final = "1.3.6.1.6.3.1.1.5.4"
COMMUNITY: Final = "alarmd-bench"
DEVICE: Final = "agg-router-01"
TARGET_P99_MS: Final = 50.0
PROBE_FIRST_IF_INDEX: Final = 1001
PROBE_REQUEST_ID: Final = 0x20000000  # far above the background's request-ids
TIERS: Final = ("diamond", "gold", "ordinary")
STAGES: Final = (
    "trap_to_alarm_raised",
    "wait_for_announce",
    "dial_test",
    "announce_to_outbox",
    "outbox_to_broker_append",
)


@dataclass(frozen=True)
class Options:
    """What to run: measured period, background rate, probe pacing, inventory and dial test."""

    duration: float = 30.0
    noise_rate: int = 1_000
    probe_gap: tuple[float, float] = (0.1, 0.2)
    noise_interfaces: int = 64
    warmup_probes: int = 3
    lead_in: float = 2.0
    poll_interval: float = 10.0
    dial_count: int = 1
    dial_interval: float = 0.01
    bootstrap: str | None = None
    py_spy: str | None = None
    seed: int = 7
    stall_check: bool = True
    ready_timeout: float = 60.0
    drain_timeout: float = 20.0

    @property
    def max_probes(self) -> int:
        """The most probes the measured period can send at the shortest gap (interfaces to create)."""
        return math.ceil(self.duration / self.probe_gap[0]) + 1


def options_from(
    quick: bool, duration: float | None = None, bootstrap: str | None = None, py_spy: str | None = None
) -> Options:
    """Options from command-line values: 30 s measured (quick: 5 s), the given broker, py-spy if on PATH."""
    return Options(
        duration=duration if duration is not None else (5.0 if quick else 30.0),
        bootstrap=bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        py_spy=py_spy or shutil.which("py-spy"),
    )


# --------------------------------------------------------------------------- helpers


def _tool(name: str) -> Any:
    """A module of ``tools/`` (the dev peers: ``kafka_local``, ``simnet``; on the path through bench.host)."""
    return importlib.import_module(name)


def free_port(kind: socket.SocketKind) -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99 and max of seconds, in milliseconds."""

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 3)

    return {
        "count": len(values),
        "p50": ms(percentile(values, 50)),
        "p90": ms(percentile(values, 90)),
        "p99": ms(percentile(values, 99)),
        "max": ms(max(values) if values else None),
    }


def link_up(community: bytes, if_index: int, request_id: int) -> bytes:
    """One SNMPv2c linkUp trap (IF-MIB: ifIndex, ifAdminStatus up, ifOperStatus up)."""
    varbinds = (
        VarBind(SYS_UPTIME, "TimeTicks", 4242),
        VarBind(SNMP_TRAP_OID, "ObjectIdentifier", LINK_UP),
        VarBind(f"{IF_INDEX}.{if_index}", "Integer", if_index),
        VarBind(f"{IF_ADMIN_STATUS}.{if_index}", "Integer", 1),
        VarBind(f"{IF_OPER_STATUS}.{if_index}", "Integer", 1),
    )
    return encode_message(VERSION_2C, community, PduType.SNMPV2_TRAP, varbinds, request_id=request_id)


def interface_name(if_index: int) -> str:
    """The ifName the agent reports for an ifIndex."""
    return f"GigabitEthernet{if_index // 1000 + 1}/0/{if_index % 1000}"


def circuit_id(if_index: int) -> str:
    """The circuit carried by an interface."""
    return f"CIR-{if_index:05d}"


# --------------------------------------------------------------------------- the agent and the config


def snmprec(if_indexes: Sequence[int]) -> str:
    """An snmpsim data file of an aggregation router: system group, ifTable and ifXTable rows."""
    records: list[tuple[tuple[int, ...], str, str]] = [
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), "4", "Huawei NE40E aggregation router (alarmd latency bench)"),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), "6", "1.3.6.1.4.1.2011.2.62.2.3"),
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), "67:ratecounter", f"name={DEVICE}/sysuptime,rate=100,initial=100000"),
        ((1, 3, 6, 1, 2, 1, 1, 5, 0), "4", DEVICE),
        ((1, 3, 6, 1, 2, 1, 2, 1, 0), "2", str(len(if_indexes))),
    ]
    if_table = (1, 3, 6, 1, 2, 1, 2, 2, 1)
    if_x_table = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
    for i in if_indexes:
        name = interface_name(i)
        octets = 1_000_000_000 + 7919 * i
        for column, tag, value in (
            (1, "2", str(i)),
            (2, "4", name),
            (3, "2", "6"),
            (4, "2", "1500"),
            (5, "66", "1000000000"),
            (7, "2", "1"),
            (8, "2", "1"),
            (9, "67", "1000"),
            (10, "65", str(octets % 2**32)),
            (11, "65", str(octets // 1000)),
            (13, "65", "0"),
            (14, "65", "0"),
            (16, "65", str(octets % 2**32)),
            (17, "65", str(octets // 1000)),
            (19, "65", "0"),
            (20, "65", "0"),
        ):
            records.append(((*if_table, column, i), tag, value))
        for column, tag, value in (
            (1, "4", name),
            (6, "70", str(octets)),
            (7, "70", str(octets // 1000)),
            (10, "70", str(octets)),
            (11, "70", str(octets // 1000)),
            (15, "66", "1000"),
            (18, "4", circuit_id(i)),
            (19, "67", "0"),
        ):
            records.append(((*if_x_table, column, i), tag, value))
    records.sort(key=lambda r: r[0])
    return "".join(f"{'.'.join(map(str, oid))}|{tag}|{value}\n" for oid, tag, value in records)


def config_text(
    options: Options,
    if_indexes: Sequence[int],
    *,
    agent_port: int,
    trap_port: int,
    http_port: int,
    topic: str,
) -> str:
    """alarmd.yml for the run: the shipped rules, trap definitions and profiles, one router, its circuits."""
    customers = [
        f"  - {{id: CUST-{n:03d}, name: Bench customer {n}, tier: {TIERS[n % 3]}}}" for n in range(30)
    ]
    circuits = [
        f"  - {{id: {circuit_id(i)}, customer: CUST-{n % 30:03d}, "
        f'path: [{{device: {DEVICE}, interface: "{interface_name(i)}"}}], '
        "dial_targets: {cpe_wan: 127.0.0.1}}"
        for n, i in enumerate(if_indexes)
    ]
    return "\n".join(
        [
            f'rule_files: ["{ROOT}/rules/*.yml"]',
            f'profile_files: ["{ROOT}/config/profiles/*.yml"]',
            "state_dir: state",
            f"polling: {{interval: {options.poll_interval}s, timeout: 2s, retries: 1}}",
            "credentials:",
            f"  agent: {{version: 2c, community: {DEVICE}}}",
            f"  trap_senders: {{version: 2c, community: {COMMUNITY}}}",
            "traps:",
            "  enabled: true",
            f'  listen: "127.0.0.1:{trap_port}"',
            "  credentials: [trap_senders]",
            f'  definitions: ["{ROOT}/config/traps/*.yml"]',
            "dial_test:",
            f"  {{every: 0s, count: {options.dial_count}, interval: {options.dial_interval}s, timeout: 1s}}",
            *router_lines(customers, circuits, agent_port=agent_port, http_port=http_port, topic=topic),
        ]
    )


def router_lines(
    customers: Sequence[str], circuits: Sequence[str], *, agent_port: int, http_port: int, topic: str
) -> list[str]:
    """The end of a bench alarmd.yml: customers, the one router, its circuits, the topics, the listener."""
    return [
        "customers:",
        *customers,
        "devices:",
        f"  - {{name: {DEVICE}, kind: cpe_router, address: 127.0.0.1, port: {agent_port}, "
        "credentials: agent}",
        "circuits:",
        *circuits,
        "kafka:",
        f"  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}",
        f'http: {{listen: "127.0.0.1:{http_port}"}}',
        "",
    ]


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """``python -m alarmd run`` on a config directory, logging JSON to a file."""

    def __init__(self, config_dir: Path, bootstrap: str, http_port: int) -> None:
        self.config_dir = config_dir
        self.log = config_dir / "alarmd.log"
        self.http = f"http://127.0.0.1:{http_port}"
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        self.proc: subprocess.Popen[bytes] | None = None

    #: More arguments of ``alarmd run`` (a role, say).
    run_args: tuple[str, ...] = ()

    def start(self) -> None:
        """Start the daemon."""
        argv = [sys.executable, "-m", "alarmd", "run", *self.run_args, "-c", str(self.config_dir)]
        argv += ["--log-format", "json"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> str | None:
        """The body of a GET on the daemon's HTTP listener, or None if it does not answer 200."""
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as response:  # noqa: S310 - loopback
                body: bytes = response.read()
                return body.decode() if response.status == 200 else None
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """The daemon's metrics: ``name{labels}`` → value."""
        text = self.get("/metrics") or ""
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the daemon used so far (from /proc)."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs of the host so far (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def device_polled(metrics: dict[str, float]) -> bool:
    """Whether the router answered its first poll (then ifIndex → ifName is known to the daemon)."""
    return any(
        k.startswith("alarmd_device_up{") and f'device="{DEVICE}"' in k and v == 1 for k, v in metrics.items()
    )


def counter(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's series whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        if (key == name or key.startswith(name + "{")) and all(
            f'{k}="{v}"' in key for k, v in labels.items()
        ):
            total += value
    return total


# --------------------------------------------------------------------------- Kafka


async def create_topics(bootstrap: str, topic: str) -> None:
    """The work-order topic with broker append time as record timestamp, and the notices topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="alarmd-bench-latency")
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    f"{topic}.workorders",
                    num_partitions=3,
                    replication_factor=1,
                    topic_configs={"message.timestamp.type": "LogAppendTime"},
                ),
                NewTopic(f"{topic}.notices", num_partitions=3, replication_factor=1),
            ]
        )
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topic: str) -> None:
    """Remove the run's two topics (from a cluster the run did not start)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="alarmd-bench-latency")
    await admin.start()
    try:
        await admin.delete_topics([f"{topic}.workorders", f"{topic}.notices"])
    finally:
        await admin.close()


@dataclass
class Received:
    """Work-order records seen on the topic, by key."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def work_orders(self, key: str) -> list[dict[str, Any]]:
        """Records of type ``work_order`` for one key."""
        return [r for r in self.records.get(key, []) if r["type"] == "work_order"]


async def consume(consumer: AIOKafkaConsumer, into: Received, stop: asyncio.Event) -> None:
    """Collect every record of the work-order topic until ``stop`` is set."""
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for record in records:
                value = json.loads(record.value)
                key = record.key.decode() if record.key else ""
                into.records.setdefault(key, []).append(
                    {
                        "type": value.get("type"),
                        "alert": value.get("alert"),
                        "interface": value.get("interface"),
                        "timestamp_ms": record.timestamp,
                        "timestamp_type": record.timestamp_type,
                    }
                )


# --------------------------------------------------------------------------- probes and background


@dataclass
class Probe:
    """One linkDown sent for one circuit, and when."""

    if_index: int
    circuit: str
    sent_at: float
    warmup: bool


class Prober:
    """Sends the linkDown probes from this process, one fresh interface each."""

    def __init__(self, port: int, if_indexes: Sequence[int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.free = list(if_indexes)
        self.sent: list[Probe] = []

    def send(self, *, warmup: bool) -> Probe:
        """Send one probe for the next unused interface."""
        if_index = self.free.pop(0)
        packet = link_down(COMMUNITY.encode(), if_index, PROBE_REQUEST_ID + len(self.sent))
        sent_at = time.time()
        self.sock.send(packet)
        probe = Probe(if_index, circuit_id(if_index), sent_at, warmup)
        self.sent.append(probe)
        return probe

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def noise_packets(count: int, interfaces: int, first_id: int) -> list[bytes]:
    """``count`` linkUp traps cycling over ifIndex 1..``interfaces``, each with its own request-id."""
    community = COMMUNITY.encode()
    return [link_up(community, 1 + n % interfaces, first_id + n) for n in range(count)]


def start_noise(port: int, options: Options, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """The background sender in its own process; it writes its summary (JSON) to ``out``."""
    argv = [
        sys.executable,
        "-m",
        "bench.latency",
        "noise",
        "--port",
        str(port),
        "--rate",
        str(options.noise_rate),
    ]
    argv += ["--duration", f"{seconds:.3f}", "--interfaces", str(options.noise_interfaces)]
    with out.open("wb") as stdout, (out.parent / "noise.stderr").open("wb") as stderr:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )


# --------------------------------------------------------------------------- where the time goes


def _stamp(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def breakdown(log: Path, probes: Sequence[Probe], appended: dict[str, float]) -> dict[str, Any]:
    """Split each measured probe's latency into stages from the daemon's log; percentiles per stage."""
    wanted = {p.circuit: p for p in probes if not p.warmup and p.circuit in appended}
    raised: dict[str, float] = {}
    preprocessed: dict[str, tuple[float, float]] = {}
    inserted: dict[str, float] = {}
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not ('"alarm_raised"' in line or '"preprocessed"' in line or '"message_sent"' in line):
                continue
            entry = json.loads(line)
            event = entry.get("event")
            if event == "alarm_raised" and entry.get("circuit") in wanted:
                raised.setdefault(entry["circuit"], _stamp(entry))
            elif event == "preprocessed" and entry.get("circuit") in wanted:
                preprocessed.setdefault(entry["circuit"], (_stamp(entry), float(entry["seconds"])))
            elif event == "message_sent" and entry.get("kind") == "work_order" and entry.get("key") in wanted:
                inserted.setdefault(entry["key"], _stamp(entry) - float(entry["queued_seconds"]))
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    per_probe: list[dict[str, Any]] = []
    for circuit, probe in wanted.items():
        if circuit not in raised or circuit not in preprocessed or circuit not in inserted:
            continue
        done, dial = preprocessed[circuit]
        parts = (
            raised[circuit] - probe.sent_at,
            done - dial - raised[circuit],
            dial,
            inserted[circuit] - done,
            appended[circuit] - inserted[circuit],
        )
        for name, seconds in zip(STAGES, parts, strict=True):
            stages[name].append(seconds)
        per_probe.append(
            {
                "circuit": circuit,
                "sent_at": round(probe.sent_at, 6),
                "total_ms": round((appended[circuit] - probe.sent_at) * 1000, 3),
                **{name: round(seconds * 1000, 3) for name, seconds in zip(STAGES, parts, strict=True)},
            }
        )
    return {
        "probes_with_all_log_lines": len(per_probe),
        "stages_ms": {name: summary_ms(values) for name, values in stages.items()},
        "per_probe_ms": per_probe,
        "notes": {
            "trap_to_alarm_raised": "UDP, decode, trap queue, enrichment, events queue, rules, alarm book",
            "wait_for_announce": "alarm raised → its pre-processing starts (the announce stage's queue)",
            "dial_test": "the pre-processing dial test (the 'seconds' of its log line)",
            "announce_to_outbox": "dial test done → work order inserted in the outbox (store transaction)",
            "outbox_to_broker_append": "outbox insert → broker append time: commit, dispatcher, producer",
            "clock": "log timestamps are the daemon's wall clock (µs), appends the broker's (ms)",
        },
    }


PRODUCE: Final = "alarmd_dispatch_kafka_produce_seconds"
PROFILE_TOP: Final = 25


def produce_times(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The daemon's own Kafka produce times (send → acknowledgement) during the measured period."""
    count = counter(after, PRODUCE + "_count") - counter(before, PRODUCE + "_count")
    total = counter(after, PRODUCE + "_sum") - counter(before, PRODUCE + "_sum")
    within: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith(PRODUCE + "_bucket{"):
            le = key.partition('le="')[2].partition('"')[0]
            within[le] = int(value - before.get(key, 0.0))
    return {
        "messages": int(count),
        "mean_ms": round(total / count * 1000, 3) if count else None,
        "acknowledged_within_s": within,
        "note": "work orders and notices alike; the daemon sends them one at a time",
    }


def start_profiler(py_spy: str, pid: int, seconds: float, workdir: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` of the daemon without pausing it (``--nonblocking``), raw collapsed stacks."""
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)), "--rate", "250"]
    argv += ["--nonblocking", "--format", "raw", "--output", str(workdir / "py-spy.txt")]
    with (workdir / "py-spy.log").open("wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )


def _frame_file(frame: str) -> str:
    """``func (path/file.py:12)`` → ``path/file.py``."""
    return frame.rpartition(" (")[2].rpartition(":")[0] or frame


def profile_summary(path: Path) -> dict[str, Any] | None:
    """Where the daemon's busy samples were: top functions (self), and source files (inclusive)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    leaves: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        for name in {_frame_file(f) for f in frames[1:]}:
            files[name] += count
    if not total:
        return None

    def share(counts: Counter[str]) -> list[dict[str, Any]]:
        return [{"where": k, "share": round(v / total, 4)} for k, v in counts.most_common(PROFILE_TOP)]

    return {
        "busy_samples": total,
        "rate_per_s": 250,
        "self": share(leaves),
        "inclusive_by_file": share(files),
        "note": "py-spy --nonblocking, idle (waiting) stacks excluded; shares of the busy samples",
    }


async def heartbeat(gaps: list[float], stop: asyncio.Event) -> None:
    """Wake every millisecond and record how long each wake-up really took: the loop's stalls."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def poll_stall(options: Options, sim_port: int, workdir: Path) -> dict[str, Any]:
    """How long one poll of the router holds the event loop, in process with alarmd's own stages.

    A :class:`alarmd.app.Daemon` on the run's config (a fake sink, nothing started) polls the router
    twice (the first poll has no counter rates), then its samples go through the daemon's rule
    stage (``_evaluate``) as they would in ``alarmd run``, while a 1 ms heartbeat task measures the
    longest time the loop could not run anything else, such as a trap waiting to be decoded.
    """
    config_dir = workdir / "stall"
    config_dir.mkdir()
    (config_dir / "alarmd.yml").write_text(
        config_text(
            options,
            all_interfaces(options),
            agent_port=sim_port,
            trap_port=free_port(socket.SOCK_DGRAM),
            http_port=free_port(socket.SOCK_STREAM),
            topic="alarmd.bench.latency.unused",
        ),
        encoding="utf-8",
    )
    loaded = load(config_dir)
    daemon = AlarmdDaemon(loaded, load_rules(loaded), sink=FakeSink())
    try:
        poller = daemon.pollers[DEVICE]
        await poller.poll_once()
        await asyncio.sleep(1.0)
        gaps: list[float] = []
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(gaps, stop))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        samples = await poller.poll_once()
        poll_seconds, poll_gap = time.perf_counter() - started, max(gaps, default=0.0)
        gaps.clear()
        for sample in samples:
            daemon._emit(sample)
        await daemon.samples.put(None)
        started = time.perf_counter()
        await daemon._evaluate()
        evaluate_seconds = time.perf_counter() - started
        await asyncio.sleep(0.01)
        evaluate_gap = max(gaps, default=0.0)
        stop.set()
        await beat
    finally:
        daemon.snmp.close()
        daemon.prober.close()
        daemon.outbox.close()
        daemon.store.close()
    return {
        "samples_per_poll": len(samples),
        "poll_seconds": round(poll_seconds, 3),
        "longest_stall_during_poll_ms": round(poll_gap * 1000, 1),
        "rule_stage_seconds": round(evaluate_seconds, 3),
        "longest_stall_during_rule_stage_ms": round(evaluate_gap * 1000, 1),
        "note": "in process, uvloop; the daemon's rule stage evaluates a poll's samples without yielding",
    }


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a run started, to stop in reverse order."""

    workdir: Path
    broker: Any = None
    sim: Any = None
    daemon: Daemon | None = None
    noise: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None

    def kafka(self, bootstrap: str | None) -> str:
        """``bootstrap`` if given, else a local broker's, started for this run (stopped with it)."""
        if bootstrap:
            return bootstrap
        self.broker = _tool("kafka_local").start(self.workdir / "kafka")
        return str(self.broker.bootstrap)

    def stop(self) -> None:
        """Stop the background sender, the profiler, the daemon, the agent and the broker this run started."""
        for proc in (self.noise, self.profiler):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
        if self.daemon is not None:
            self.daemon.stop()
        if self.sim is not None:
            self.sim.stop()
        if self.broker is not None:
            self.broker.stop()


async def wait_ready(daemon: Daemon, within: float) -> None:
    """Until the daemon is ready and has polled the router once."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(
                f"alarmd exited with {daemon.proc.returncode if daemon.proc else '?'}:\n{daemon.log_tail()}"
            )
        if await asyncio.to_thread(daemon.get, "/-/ready") is not None and device_polled(
            await asyncio.to_thread(daemon.metrics)
        ):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"alarmd was not ready and polled within {within:.0f}s:\n{daemon.log_tail()}")


async def wait_background(daemon: Daemon, noise: subprocess.Popen[bytes], received_before: float) -> None:
    """Until the daemon has taken the first hundred background traps (the sender has started)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if noise.poll() is not None:
            raise RuntimeError(f"the background sender exited with {noise.returncode}")
        metrics = await asyncio.to_thread(daemon.metrics)
        if counter(metrics, "alarmd_traps_received_total") - received_before >= 100:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the daemon took no background traps within 30 s")


async def wait_for(received: Received, probes: Sequence[Probe], within: float) -> bool:
    """Until every probe's circuit has a work order on the topic, or ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(received.work_orders(p.circuit) for p in probes):
            return True
        await asyncio.sleep(0.05)
    return False


async def start_daemon(options: Options, run: Run, bootstrap: str, topic: str) -> tuple[Daemon, int]:
    """Write the config, start alarmd and wait until it is ready and has polled; it and its trap port."""
    trap_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    config_dir = run.workdir / "config"
    config_dir.mkdir()
    (config_dir / "alarmd.yml").write_text(
        config_text(
            options,
            all_interfaces(options),
            agent_port=run.sim.port,
            trap_port=trap_port,
            http_port=http_port,
            topic=topic,
        ),
        encoding="utf-8",
    )
    daemon = run.daemon = Daemon(config_dir, bootstrap, http_port)
    daemon.start()
    await wait_ready(daemon, options.ready_timeout)
    return daemon, trap_port


def probe_interfaces(options: Options) -> list[int]:
    """The ifIndexes kept for probes, one per probe."""
    return list(
        range(PROBE_FIRST_IF_INDEX, PROBE_FIRST_IF_INDEX + options.warmup_probes + options.max_probes)
    )


def all_interfaces(options: Options) -> list[int]:
    """Every ifIndex of the router: the background's, then the probes'."""
    return [*range(1, options.noise_interfaces + 1), *probe_interfaces(options)]


async def measure(
    options: Options, run: Run, bootstrap: str, topic: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """Start the daemon, warm it up, send probes under background load, collect the work orders."""
    rng = random.Random(options.seed)  # noqa: S311 - pacing jitter, not crypto
    await create_topics(bootstrap, topic)
    daemon, trap_port = await start_daemon(options, run, bootstrap, topic)
    # Started once the daemon is up, the topic's partitions have long been loaded on the broker.
    consumer = AIOKafkaConsumer(
        f"{topic}.workorders",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        client_id="alarmd-bench-latency",
    )
    await consumer.start()
    received, stop_consuming = Received(), asyncio.Event()
    consuming = asyncio.create_task(consume(consumer, received, stop_consuming))
    prober = Prober(trap_port, probe_interfaces(options))
    try:
        for _ in range(options.warmup_probes):
            probe = prober.send(warmup=True)
            if not await wait_for(received, [probe], 30):
                raise RuntimeError(
                    f"warm-up probe {probe.circuit}: no work order within 30 s:\n{daemon.log_tail()}"
                )
        say(f"latency: alarmd ready after {options.warmup_probes} warm-up work orders")

        noise_seconds = options.lead_in + options.duration + 1.0
        before = await asyncio.to_thread(daemon.metrics)
        run.noise = start_noise(trap_port, options, noise_seconds, run.workdir / "noise.json")
        await wait_background(daemon, run.noise, counter(before, "alarmd_traps_received_total"))
        if options.py_spy is not None and daemon.proc is not None:
            run.profiler = start_profiler(options.py_spy, daemon.proc.pid, noise_seconds, run.workdir)
        cpu_before, host_before = daemon.cpu_seconds(), host_cpu()
        await asyncio.sleep(options.lead_in)
        started = time.monotonic()
        while time.monotonic() - started < options.duration and len(prober.free) > 0:
            prober.send(warmup=False)
            await asyncio.sleep(rng.uniform(*options.probe_gap))
        measured = [p for p in prober.sent if not p.warmup]
        all_arrived = await wait_for(received, measured, options.drain_timeout)
        try:
            await asyncio.to_thread(run.noise.wait, noise_seconds + 30)
            if run.profiler is not None:
                await asyncio.to_thread(run.profiler.wait, 30)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the background sender or the profiler did not finish") from None
        cpu_after, host_after = daemon.cpu_seconds(), host_cpu()
        after = await asyncio.to_thread(daemon.metrics)
        await asyncio.sleep(1.0)  # a duplicate would arrive within this
    finally:
        prober.close()
        stop_consuming.set()
        await consuming
        await consumer.stop()
    noise = json.loads((run.workdir / "noise.json").read_text(encoding="utf-8"))
    return {
        "topic": topic,
        "probes": prober.sent,
        "received": received,
        "all_arrived": all_arrived,
        "noise": noise,
        "noise_seconds": noise_seconds,
        "daemon_cpu_seconds": (cpu_after - cpu_before)
        if cpu_after is not None and cpu_before is not None
        else None,
        "metrics_delta": {
            name: counter(after, name, **labels) - counter(before, name, **labels)
            for name, labels in (
                ("alarmd_events_total", {"source": "trap"}),
                ("alarmd_traps_received_total", {}),
                ("alarmd_traps_dropped_total", {}),
                ("alarmd_traps_rejected_total", {}),
                ("alarmd_pipeline_samples_dropped_total", {}),
                ("alarmd_rules_evaluations_total", {}),
                ("alarmd_collection_periods_total", {}),
            )
        },
        "produce": produce_times(before, after),
        "host_busy_share": round(
            (host_after[0] - host_before[0]) / max(1, host_after[1] - host_before[1]), 3
        ),
        "profile": profile_summary(run.workdir / "py-spy.txt") if run.profiler is not None else None,
    }


def analyse(options: Options, raw: dict[str, Any], log: Path) -> dict[str, Any]:
    """Latencies, missing and duplicate work orders, the stage breakdown, the settings."""
    received: Received = raw["received"]
    measured = [p for p in raw["probes"] if not p.warmup]
    latencies: list[float] = []
    appended: dict[str, float] = {}
    missing, duplicates, wrong_timestamp = [], [], []
    for probe in measured:
        orders = received.work_orders(probe.circuit)
        if not orders:
            missing.append(probe.circuit)
            continue
        if len(orders) > 1:
            duplicates.append(probe.circuit)
        first = orders[0]
        if first["timestamp_type"] != 1:  # 1 = LogAppendTime
            wrong_timestamp.append(probe.circuit)
        appended[probe.circuit] = first["timestamp_ms"] / 1000
        latencies.append(appended[probe.circuit] - probe.sent_at)
    lat = summary_ms(latencies)
    p99 = lat["p99"]
    noise_sent = int(raw["noise"]["sent"])
    return {
        "workload": "latency",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            **{k: v for k, v in asdict(options).items() if k != "bootstrap"},
            "broker": "KAFKA_BOOTSTRAP_SERVERS / --bootstrap"
            if options.bootstrap
            else "tools/kafka_local.py",
            "probe_trap": "SNMPv2c linkDown for a fresh interface → shipped rule LinkDown (event, no for:)",
            "background_trap": "SNMPv2c linkUp for interfaces that are up and have no open alarm",
            "work_order_topic": f"{raw['topic']}.workorders (message.timestamp.type=LogAppendTime)",
            "circuits": options.noise_interfaces + options.warmup_probes + options.max_probes,
        },
        "host": host_facts(),
        "peers": peer_versions(options),
        "latency_ms": lat,
        "target_p99_ms": TARGET_P99_MS,
        "p99_over_target": round(p99 / TARGET_P99_MS, 3) if p99 is not None else None,
        "meets_target": p99 is not None and p99 <= TARGET_P99_MS,
        "probes": len(measured),
        "warmup_probes": sum(1 for p in raw["probes"] if p.warmup),
        "missing": missing,
        "duplicates": duplicates,
        "not_log_append_time": wrong_timestamp,
        "background": {
            **raw["noise"],
            "asked_per_s": options.noise_rate,
            "seconds_planned": round(raw["noise_seconds"], 3),
            "daemon_events_from_traps": raw["metrics_delta"]["alarmd_events_total"],
            "daemon_traps_received": raw["metrics_delta"]["alarmd_traps_received_total"],
            "daemon_traps_dropped": raw["metrics_delta"]["alarmd_traps_dropped_total"],
            "daemon_traps_rejected": raw["metrics_delta"]["alarmd_traps_rejected_total"],
            "sent_plus_probes": noise_sent + len(measured),
        },
        "daemon_cpu_share": (
            round(raw["daemon_cpu_seconds"] / raw["noise_seconds"], 3) if raw["daemon_cpu_seconds"] else None
        ),
        "breakdown": {**breakdown(log, raw["probes"], appended), "kafka_produce": raw["produce"]},
        "polls_during_measurement": raw["metrics_delta"]["alarmd_collection_periods_total"],
        "daemon_profile": raw["profile"],
        "host_busy_share": raw["host_busy_share"],
        "load_average_after": os.getloadavg(),
        "latencies_ms": [round(x * 1000, 3) for x in latencies],
    }


def peer_versions(options: Options) -> dict[str, Any]:
    """The versions of what the figures depend on besides alarmd."""
    out: dict[str, Any] = {"aiokafka": metadata.version("aiokafka")}
    if options.bootstrap:
        out["kafka"] = "external cluster"
    else:
        out["kafka"] = _tool("kafka_local").KAFKA_VERSION
    out["snmpsim"] = " ".join(_tool("simnet").SNMPSIM)
    return out


def table(result: dict[str, Any]) -> str:
    """The result as plain text: latency percentiles, then the stages."""
    lat = result["latency_ms"]
    lines = [
        f"{'':<26} {'count':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
        f"{'trap → work order acked':<26} {lat['count']:>6} {_ms(lat['p50'])} {_ms(lat['p90'])} "
        f"{_ms(lat['p99'])} {_ms(lat['max'])}",
    ]
    for name, s in result["breakdown"]["stages_ms"].items():
        lines.append(
            f"  {name:<24} {s['count']:>6} {_ms(s['p50'])} {_ms(s['p90'])} {_ms(s['p99'])} {_ms(s['max'])}"
        )
    stall = result["breakdown"].get("poll_stall")
    if stall:
        lines.append(
            f"one poll: {stall['samples_per_poll']} samples; event loop stalled up to "
            f"{stall['longest_stall_during_rule_stage_ms']:.0f} ms by the rule stage, "
            f"{stall['longest_stall_during_poll_ms']:.0f} ms by the poll"
        )
    bg = result["background"]
    lines.append(
        f"background: {bg['sent']} linkUp at {bg['achieved_per_s']:.0f}/s, daemon took "
        f"{bg['daemon_events_from_traps']:.0f} trap events, dropped {bg['daemon_traps_dropped']:.0f}; "
        f"daemon CPU {result['daemon_cpu_share']}, all CPUs busy {result['host_busy_share']:.0%}"
    )
    lines.append(
        f"missing work orders: {len(result['missing'])}, duplicates: {len(result['duplicates'])}; "
        f"p99 target {result['target_p99_ms']:g} ms: {'met' if result['meets_target'] else 'NOT met'} "
        f"(p99/target {result['p99_over_target']})"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.1f}"


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``latency.json`` and return the summary for ``latest.json``."""
    topic = f"alarmd.bench.latency.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-latency-") as tmp:
        state = Run(Path(tmp))
        try:
            bootstrap = options.bootstrap
            if bootstrap is None:
                state.broker = _tool("kafka_local").start(state.workdir / "kafka")
                bootstrap = state.broker.bootstrap
            devices = state.workdir / "devices"
            devices.mkdir()
            if_indexes = all_interfaces(options)
            (devices / f"{DEVICE}.snmprec").write_text(snmprec(if_indexes), encoding="ascii")
            state.sim = _tool("simnet").start(devices_dir=devices)
            say(f"latency: broker {bootstrap}, snmpsim :{state.sim.port}, {len(if_indexes)} circuits")
            raw = asyncio.run(measure(options, state, bootstrap, topic, say))
            exit_code = state.daemon.stop() if state.daemon is not None else None
            result = analyse(options, raw, state.workdir / "config" / "alarmd.log")
            result["daemon_exit_code"] = exit_code
            if options.stall_check:
                previous = structlog.get_config()
                structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
                try:
                    stall = uvloop.run(poll_stall(options, state.sim.port, state.workdir))
                finally:
                    structlog.configure(**previous)
                result["breakdown"]["poll_stall"] = stall
            profile = state.workdir / "py-spy.txt"
            if profile.exists():
                results_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(profile, results_dir / "latency-py-spy.txt")
                result["daemon_profile_raw"] = "latency-py-spy.txt"
        finally:
            state.stop()
            if options.bootstrap is not None:
                with contextlib.suppress(Exception):  # the topics may not exist if the run failed early
                    asyncio.run(delete_topics(options.bootstrap, topic))
    write_result(results_dir, "latency", result)
    say(table(result))
    lat = result["latency_ms"]
    return {
        "trap_to_workorder_p50_ms": lat["p50"],
        "trap_to_workorder_p99_ms": lat["p99"],
        "trap_to_workorder_p90_ms": lat["p90"],
        "trap_to_workorder_max_ms": lat["max"],
        "probes": result["probes"],
        "missing": len(result["missing"]),
        "background_per_s": result["background"]["achieved_per_s"],
        "target_p99_ms": TARGET_P99_MS,
        "p99_over_target": result["p99_over_target"],
        "timestamp": result["timestamp"],
        "details": "latency.json",
    }


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``run``: the workload; ``noise``: the background sender (its own process, started by ``run``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_args = sub.add_parser("run", help="run the workload")
    run_args.add_argument("--quick", action="store_true", help="5 s measured instead of 30 s")
    run_args.add_argument("--duration", type=float, help="seconds of probes")
    run_args.add_argument(
        "--bootstrap", help="an existing Kafka cluster (default: KAFKA_BOOTSTRAP_SERVERS or local)"
    )
    run_args.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    run_args.add_argument("--py-spy", help="py-spy to profile the daemon with (default: py-spy on PATH)")
    noise = sub.add_parser("noise", help="send linkUp background traps and print a JSON summary")
    noise.add_argument("--port", type=int, required=True)
    noise.add_argument("--rate", type=float, required=True)
    noise.add_argument("--duration", type=float, required=True)
    noise.add_argument("--interfaces", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "noise":
        packets = noise_packets(round(args.rate * args.duration), args.interfaces, 0x10000000)
        summary = send_paced(args.port, packets, args.rate, deadline=args.duration * 2 + 5)
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
        return 0
    options = options_from(args.quick, args.duration, args.bootstrap, args.py_spy)
    print(json.dumps(run(options, args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
