"""Correlator: trap events judged and committed per second, in per-partition Kafka transactions.

One ``alarmd run --role correlator`` on a real broker (``KAFKA_BOOTSTRAP_SERVERS``, else a
local KRaft node) owns every partition of a fresh events topic.  ``events`` linkDown trap
events go onto the topic first, as collectors publish them (keyed by circuit), over
``circuits`` circuits.  Judged by the shipped ``rules/*.yml``, each circuit's first trap
raises a fault (work order, notice, changelog record), the others are repeats (a changelog
record each).  Then the correlator starts and works through the backlog.  Measured, from the
correlator's own metrics:

* ``events_per_second``: events judged, from the first to the last;
* ``transactions``: committed per-partition transactions, and the mean events per one;
* ``cpu_seconds_per_1k_events`` of the correlator process;
* ``work_orders``: work orders read back ``read_committed`` (one per circuit expected).

    python -m bench.correlator [--quick] [--events N] [--circuits N] [--results-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from alarmd.cluster.codec import encode_event
from alarmd.model import Event
from bench import latency
from bench.host import host_facts, write_result

ROOT = latency.ROOT

CONFIG = """\
rule_files: ["{root}/rules/*.yml"]
profile_files: ["{root}/config/profiles/*.yml"]
state_dir: state
dial_test: {{every: 0s, preprocess_budget: 0s}}
customers:
  - {{id: CUST-0001, name: Bench Customer, tier: gold}}
devices:
{devices}
circuits:
{circuits}
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
cluster:
  events_topic: {topic}.events
  events_partitions: {partitions}
  correlator_group: {topic}.correlators
  session_timeout: 6s
http: {{listen: "127.0.0.1:{http}"}}
"""


@dataclass(frozen=True)
class Options:
    """What one run sends."""

    events: int = 20_000
    circuits: int = 200
    partitions: int = 12
    within: float = 300.0


class Correlator(latency.Daemon):
    """``python -m alarmd run --role correlator``."""

    run_args = ("--role", "correlator")


def config_text(options: Options, topic: str, http: int) -> str:
    """A correlator's config: ``circuits`` one-device circuits of one gold customer."""
    numbers = range(1, options.circuits + 1)
    return CONFIG.format(
        root=ROOT,
        devices="\n".join(
            f"  - {{name: cpe-{i:04d}, kind: cpe_router, address: 127.0.0.1, port: 9, "
            "snmp: {community: x}}"
            for i in numbers
        ),
        circuits="\n".join(
            f"  - {{id: CIR-{i:04d}, customer: CUST-0001, path: [{{device: cpe-{i:04d}, interface: Gi0/1}}]}}"
            for i in numbers
        ),
        topic=topic,
        partitions=options.partitions,
        http=http,
    )


async def publish(bootstrap: str, topic: str, options: Options) -> None:
    """The backlog: ``events`` linkDown events round-robin over the circuits, each with its own uptime."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for n in range(options.events):
            circuit = n % options.circuits + 1
            labels = {
                "trap": "linkDown",
                "if_index": "2",
                "device": f"cpe-{circuit:04d}",
                "interface": "Gi0/1",
            }
            _, payload = encode_event(Event("trap", "linkDown", time.time(), labels, uptime=1000 + n))
            futures.append(await producer.send(f"{topic}.events", payload, key=f"CIR-{circuit:04d}".encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def work_orders(bootstrap: str, topic: str, expected: int) -> int:
    """Work orders read back ``read_committed`` (until ``expected`` or 10 s of nothing new)."""
    consumer = AIOKafkaConsumer(
        f"{topic}.workorders",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    seen = 0
    try:
        quiet = time.monotonic() + 10
        while seen < expected and time.monotonic() < quiet:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += sum(1 for r in records if json.loads(r.value).get("type") == "work_order")
                quiet = time.monotonic() + 10
    finally:
        await consumer.stop()
    return seen


async def measure(options: Options, run: latency.Run, bootstrap: str, topic: str) -> dict[str, Any]:
    """Publish the backlog, start the correlator, sample its metrics until every event is judged."""
    http = latency.free_port(socket.SOCK_STREAM)
    config_dir = run.workdir / "config"
    config_dir.mkdir()
    (config_dir / "alarmd.yml").write_text(config_text(options, topic, http), encoding="utf-8")
    daemon = Correlator(config_dir, bootstrap, http)
    run.daemon = daemon
    daemon.start()  # it creates the topics, then waits for its assignment
    judged = 'alarmd_cluster_events_consumed_total{outcome="judged",type="event"}'
    committed = 'alarmd_cluster_transactions_total{group="events",outcome="committed"}'
    deadline = time.monotonic() + options.within
    owned = 'alarmd_cluster_partitions_owned{group="events"}'
    while time.monotonic() < deadline:  # every partition assigned: restored (nothing), it waits
        if (await asyncio.to_thread(daemon.metrics)).get(owned) == options.partitions:
            break
        await asyncio.sleep(0.5)
    await publish(bootstrap, topic, options)
    first = last = None
    start_cpu = daemon.cpu_seconds()
    samples: list[tuple[float, float, float]] = []
    while time.monotonic() < deadline:
        metrics = await asyncio.to_thread(daemon.metrics)
        now, count = time.monotonic(), metrics.get(judged, 0.0)
        samples.append((now, count, metrics.get(committed, 0.0)))
        if first is None and count > 0:
            first = samples[-2][0] if len(samples) > 1 else now
        if count >= options.events:
            last = now
            break
        await asyncio.sleep(0.2)
    cpu = (daemon.cpu_seconds() or 0.0) - (start_cpu or 0.0)
    await asyncio.sleep(2)  # the last batch's transaction
    transactions = (await asyncio.to_thread(daemon.metrics)).get(committed, 0.0) - samples[0][2]
    seconds = (last - first) if first is not None and last is not None else None
    return {
        "complete": last is not None,
        "events": options.events,
        "judged": samples[-1][1],
        "seconds": round(seconds, 2) if seconds else None,
        "events_per_second": round(options.events / seconds) if seconds else None,
        "transactions": int(transactions),
        "events_per_transaction": round(options.events / transactions, 1) if transactions else None,
        "cpu_seconds_per_1k_events": round(cpu / options.events * 1000, 3),
        "work_orders": await work_orders(bootstrap, topic, options.circuits),
    }


def run(options: Options, results_dir: Path) -> dict[str, Any]:
    """Run the workload, write ``correlator.json`` and return its summary."""
    topic = f"alarmd.bench.correlator.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-correlator-") as tmp:
        state = latency.Run(Path(tmp))
        try:
            bootstrap = state.kafka(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
            measured = asyncio.run(measure(options, state, bootstrap, topic))
            measured["daemon_exit_code"] = state.daemon.stop() if state.daemon is not None else None
        finally:
            state.stop()
    result = {
        "options": asdict(options),
        **measured,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # a shared host skews every figure
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host_facts(),
    }
    write_result(results_dir, "correlator", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the correlator workload and print what it measured."""
    parser = argparse.ArgumentParser(prog="python -m bench.correlator", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 events over 50 circuits")
    parser.add_argument("--events", type=int, help="trap events in the backlog")
    parser.add_argument("--circuits", type=int, help="circuits they are spread over")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    options = Options(events=2_000, circuits=50) if args.quick else Options()
    if args.events or args.circuits:
        options = Options(events=args.events or options.events, circuits=args.circuits or options.circuits)
    print(json.dumps(run(options, args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
