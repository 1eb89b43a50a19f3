"""Storm: linkDown traps from 500 circuits of one aggregation ring → one major fault, on a real broker.

The real daemon (``python -m alarmd run``) runs as a subprocess against a real broker
(``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft node), with the shipped ``rules/*.yml``,
``config/traps/standard.yml`` and device profiles, on the inventory of the latency bench: one
aggregation router served by snmpsim (every device must sit at 127.0.0.1, so one router carries
the circuits), polled every 10 s; the storm waits for its first poll, after which alarmd knows
the interface of each ifIndex.  ``circuits``
circuits share the ring ``RING-STORM``; ``bystanders`` more share ``RING-CALM`` and stay up.

After the first poll, a v2c ``linkDown`` for each storm circuit goes out from this process at
``rate`` per second (the shipped ``LinkDown`` event rule fires at once).  The work-order topic
records the broker's append time (``LogAppendTime``).  Measured:

* ``storm_last_trap_to_last_update_ms``: from just before the last trap's ``sendto`` to the
  broker's append of the major fault's last message (its work order or the ``circuit_added``
  update that lists every circuit), with nothing more for ``quiet`` seconds after;
* ``storm_last_trap_to_major_order_ms``: the same to the major fault's first work order;
* how many work orders went out: major faults (1 expected), circuits' own (only those
  dispatched before the threshold), updates of the major fault.

    python -m bench.storm [--quick] [--circuits N] [--bootstrap HOST:PORT] [--results-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer

from bench import latency
from bench.host import host_facts, write_result
from bench.sender import link_down

ROOT: Final = Path(__file__).resolve().parent.parent
STORM_REQUEST_ID: Final = 0x30000000


@dataclass(frozen=True)
class Options:
    """How wide the storm is and how fast it comes."""

    circuits: int = 500
    bystanders: int = 20
    rate: float = 5_000.0
    min_circuits: int = 3
    quiet: float = 3.0
    within: float = 60.0
    bootstrap: str | None = None


def options_from(quick: bool, circuits: int | None = None, bootstrap: str | None = None) -> Options:
    """Options from command-line values: 500 circuits (quick: 100), the given broker or the environment's."""
    return Options(
        circuits=circuits or (100 if quick else 500),
        bootstrap=bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
    )


def config_text(options: Options, *, agent_port: int, trap_port: int, http_port: int, topic: str) -> str:
    """alarmd.yml: the shipped rules and profiles, the router, its circuits on two rings."""
    storm = range(1, options.circuits + 1)
    calm = range(options.circuits + 1, options.circuits + options.bystanders + 1)
    customers = [
        f"  - {{id: CUST-{n:03d}, name: Bench customer {n}, tier: {latency.TIERS[n % 3]}}}" for n in range(30)
    ]
    circuits = [
        f"  - {{id: {latency.circuit_id(i)}, customer: CUST-{i % 30:03d}, "
        f'path: [{{device: {latency.DEVICE}, interface: "{latency.interface_name(i)}"}}], '
        f"shared: [{'RING-STORM' if i in storm else 'RING-CALM'}]}}"
        for i in (*storm, *calm)
    ]
    return "\n".join(
        [
            f'rule_files: ["{ROOT}/rules/*.yml"]',
            f'profile_files: ["{ROOT}/config/profiles/*.yml"]',
            "state_dir: state",
            "polling: {interval: 10s, timeout: 5s, retries: 1}",  # as config/alarmd.yml
            "credentials:",
            f"  agent: {{version: 2c, community: {latency.DEVICE}}}",
            f"  trap_senders: {{version: 2c, community: {latency.COMMUNITY}}}",
            "traps:",
            "  enabled: true",
            f'  listen: "127.0.0.1:{trap_port}"',
            "  credentials: [trap_senders]",
            f'  definitions: ["{ROOT}/config/traps/*.yml"]',
            "dial_test: {every: 0s, count: 1, interval: 10ms, timeout: 1s}",
            f"major_faults: {{min_circuits: {options.min_circuits}, window: 2m}}",
            "elements:",
            "  - {name: RING-STORM, kind: aggregation_ring}",
            "  - {name: RING-CALM, kind: aggregation_ring}",
            *latency.router_lines(
                customers, circuits, agent_port=agent_port, http_port=http_port, topic=topic
            ),
        ]
    )


@dataclass
class Message:
    """One work-order record: what it was and when the broker appended it."""

    type: str
    update: str | None
    circuit: str | None
    major: str | None
    listed: int
    appended: float


async def collect(consumer: AIOKafkaConsumer, into: list[Message], stop: asyncio.Event) -> None:
    """Every work-order record until ``stop`` is set."""
    while not stop.is_set():
        for records in (await consumer.getmany(timeout_ms=100)).values():
            for record in records:
                value = json.loads(record.value)
                major = value.get("major_fault")
                into.append(
                    Message(
                        type=value["type"],
                        update=value.get("update"),
                        circuit=value.get("circuit"),
                        major=value["alarm_id"] if major else None,
                        listed=major["circuit_count"] if major else 0,
                        appended=record.timestamp / 1000,
                    )
                )


async def storm(options: Options, run: latency.Run, bootstrap: str, topic: str) -> dict[str, Any]:
    """Start the daemon, send the storm, wait for the major fault to list every circuit and go quiet."""
    await latency.create_topics(bootstrap, topic)
    trap_port = latency.free_port(socket.SOCK_DGRAM)
    http_port = latency.free_port(socket.SOCK_STREAM)
    config_dir = run.workdir / "config"
    config_dir.mkdir()
    (config_dir / "alarmd.yml").write_text(
        config_text(options, agent_port=run.sim.port, trap_port=trap_port, http_port=http_port, topic=topic),
        encoding="utf-8",
    )
    daemon = run.daemon = latency.Daemon(config_dir, bootstrap, http_port)
    daemon.start()
    await latency.wait_ready(daemon, 120)
    consumer = AIOKafkaConsumer(
        f"{topic}.workorders", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    messages: list[Message] = []
    stop = asyncio.Event()
    reader = asyncio.create_task(collect(consumer, messages, stop))
    try:
        packets = [
            link_down(latency.COMMUNITY.encode(), i, STORM_REQUEST_ID + i)
            for i in range(1, options.circuits + 1)
        ]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", trap_port))
        first = time.time()
        gap = 1 / options.rate
        last = first
        for n, packet in enumerate(packets):
            while time.time() < first + n * gap:
                pass  # paced busy-wait: sleeps are too coarse at thousands per second
            last = time.time()
            sock.send(packet)
        sock.close()
        deadline = time.monotonic() + options.within
        complete = False
        while time.monotonic() < deadline:
            listed = max((m.listed for m in messages), default=0)
            if listed >= options.circuits:
                complete = True
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(options.quiet)  # anything still to come comes now
        metrics = await asyncio.to_thread(daemon.metrics)
    finally:
        stop.set()
        await reader
        await consumer.stop()
    storm_circuits = {latency.circuit_id(i) for i in range(1, options.circuits + 1)}
    majors = [m for m in messages if m.major]
    first_orders = [m for m in majors if m.type == "work_order"]
    return {
        "complete": complete,
        "traps_sent": len(packets),
        "send_seconds": round(last - first, 3),
        "traps_received": latency.counter(metrics, "alarmd_traps_received_total"),
        "traps_dropped": latency.counter(metrics, "alarmd_traps_dropped_total"),
        "major_faults": len({m.major for m in first_orders}),
        "circuits_listed": max((m.listed for m in majors), default=0),
        "major_updates": sum(1 for m in majors if m.type == "work_order_update"),
        "own_work_orders": sum(1 for m in messages if m.type == "work_order" and m.circuit in storm_circuits),
        "reparent_updates": sum(1 for m in messages if m.update == "reparented"),
        "bystander_work_orders": sum(
            1 for m in messages if m.type == "work_order" and not m.major and m.circuit not in storm_circuits
        ),
        "last_trap_to_major_order_ms": round((first_orders[0].appended - last) * 1000, 1)
        if first_orders
        else None,
        "last_trap_to_last_update_ms": round((majors[-1].appended - last) * 1000, 1) if majors else None,
        "messages": len(messages),
    }


def from_log(path: Path) -> dict[str, Any]:
    """Where the time went, from the daemon's own log: pre-processing, the first alarm to the major fault."""
    entries = [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line[:1] == "{"]

    def stamp(entry: dict[str, Any]) -> float:
        return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()

    raised = [
        stamp(e) for e in entries if e.get("event") == "alarm_raised" and e.get("alert") != "MajorFault"
    ]
    opened = [stamp(e) for e in entries if e.get("event") == "major_fault_opened"]
    return {
        "preprocessed_seconds": [e["seconds"] for e in entries if e.get("event") == "preprocessed"],
        "first_raised_to_opened_ms": round((opened[0] - raised[0]) * 1000, 1) if opened and raised else None,
        "first_to_last_raised_ms": round((raised[-1] - raised[0]) * 1000, 1) if raised else None,
    }


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``storm.json`` and return the ``storm_*`` summary for ``latest.json``."""
    topic = f"alarmd.bench.storm.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-storm-") as tmp:
        state = latency.Run(Path(tmp))
        try:
            bootstrap = state.kafka(options.bootstrap)
            devices = state.workdir / "devices"
            devices.mkdir()
            if_indexes = range(1, options.circuits + options.bystanders + 1)
            (devices / f"{latency.DEVICE}.snmprec").write_text(latency.snmprec(if_indexes), encoding="ascii")
            state.sim = latency._tool("simnet").start(devices_dir=devices)
            say(f"storm: broker {bootstrap}, snmpsim :{state.sim.port}, {options.circuits} circuits")
            measured = asyncio.run(storm(options, state, bootstrap, topic))
            measured["daemon_exit_code"] = state.daemon.stop() if state.daemon is not None else None
            measured["daemon_log"] = from_log(state.workdir / "config" / "alarmd.log")
        finally:
            state.stop()
            if options.bootstrap is not None:
                with contextlib.suppress(Exception):
                    asyncio.run(latency.delete_topics(options.bootstrap, topic))
    result = {
        "options": asdict(options),
        **measured,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # a shared host skews every figure
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host_facts(),
    }
    write_result(results_dir, "storm", result)
    say(json.dumps(measured, indent=2))
    return {
        f"storm_{key}": measured[key]
        for key in (
            "complete",
            "traps_sent",
            "major_faults",
            "circuits_listed",
            "major_updates",
            "own_work_orders",
            "reparent_updates",
            "last_trap_to_major_order_ms",
            "last_trap_to_last_update_ms",
        )
    } | {
        "storm_circuits": options.circuits,
        "storm_load_average_1m": result["load_average_after"][0],
        "timestamp": result["timestamp"],
        "details": "storm.json",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the storm workload and print its summary."""
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 circuits instead of 500")
    parser.add_argument("--circuits", type=int, help="circuits of the ring that fails")
    parser.add_argument(
        "--bootstrap", help="an existing Kafka cluster (default: KAFKA_BOOTSTRAP_SERVERS or local)"
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    print(
        json.dumps(run(options_from(args.quick, args.circuits, args.bootstrap), args.results_dir), indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
