"""The demo: a local Kafka, the simulated network, alarmd on config/, and work orders as they arrive.

    python tools/demo.py [--duration SECONDS] [--relieve-after SECONDS]

The WAN port of cpe-router-01 (circuit CIR-0001) runs at 90% of its 10 Mbit/s, so alarmd
raises BandwidthOccupancyHigh and sends a work order within about a minute.  Some time after
that the demo relieves the line and the clear arrives on the same key.  Ctrl-C stops
everything; the daemon's own log is in .run/alarmd.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_local
import simnet
from devenv import REPO, PeerError

TOPIC = "alarmd.workorders"
WAN = "cpe-router-01/2/in"


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def show(key: bytes | None, order: dict[str, object]) -> None:
    kind = "WORK ORDER" if order.get("type") == "work_order" else "CLEARED   "
    print(
        f"\n=== {kind} {order.get('work_order_id')}  key={key.decode() if key else None}\n"
        f"    {order.get('alert')}: {order.get('summary')}\n"
        f"    circuit {order.get('circuit')}  customer {order.get('customer_name')} ({order.get('tier')})  "
        f"class {order.get('alarm_class')}  lead team {order.get('lead_team')}",
        flush=True,
    )
    print(json.dumps(order, indent=2, ensure_ascii=False), flush=True)


async def watch(
    bootstrap: str, sim: simnet.SimNet, duration: float, relieve_after: float, daemon: subprocess.Popen[bytes]
) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    await admin.close()
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
    await consumer.start()
    say(f"waiting for work orders on {TOPIC} (the congested line should produce one within ~1 minute)")
    started = time.monotonic()
    relieve_at: float | None = None
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            if daemon.poll() is not None:
                say(f"alarmd exited with code {daemon.returncode}; see .run/alarmd.log")
                return
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    order = json.loads(record.value)
                    show(record.key, order)
                    if order.get("type") == "work_order" and relieve_at is None and relieve_after >= 0:
                        relieve_at = time.monotonic() + relieve_after
                        say(f"the demo will relieve the congested line in {relieve_after:.0f}s")
            if relieve_at is not None and time.monotonic() >= relieve_at:
                sim.set_rates({WAN: 125_000.0})
                say("line relieved to 10% occupancy; the clear follows after the next polls")
                relieve_at = float("inf")
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DEMO_DURATION", "0")),
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--relieve-after",
        type=float,
        default=60.0,
        help="seconds after the first work order to relieve the line (-1: never)",
    )
    args = parser.parse_args(argv)
    run_dir = REPO / ".run"
    run_dir.mkdir(exist_ok=True)
    shutil.rmtree(run_dir / "state", ignore_errors=True)  # each demo starts with no open faults
    broker = None
    sim = None
    daemon = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            say(f"using the Kafka cluster at {bootstrap}")
        else:
            say("starting Apache Kafka (KRaft, single node) on 127.0.0.1 ...")
            broker = kafka_local.start(run_dir / "kafka")
            bootstrap = broker.bootstrap
            say(f"Kafka is up at {bootstrap}")
        say("starting the simulated network (snmpsim) ...")
        sim = simnet.start()
        sim.set_rates({WAN: 1_125_000.0})
        say(
            f"snmpsim on 127.0.0.1:{sim.port} serving {', '.join(sim.devices)}; "
            f"cpe-router-01 GigabitEthernet0/0/1 (CIR-0001) runs at 90% of 10 Mbit/s"
        )
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ALARMD_SIM_PORT": str(sim.port),
            "ALARMD_STATE_DIR": str(run_dir / "state"),
        }
        log = open(run_dir / "alarmd.log", "ab")  # noqa: SIM115 - handed to the child
        daemon = subprocess.Popen(
            [sys.executable, "-m", "alarmd", "run", "-c", str(REPO / "config"), "--log-format", "json"],
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        say(
            f"alarmd running (pid {daemon.pid}); metrics on http://127.0.0.1:9464/metrics; "
            f"log in {run_dir / 'alarmd.log'}"
        )
        asyncio.run(watch(bootstrap, sim, args.duration, args.relieve_after, daemon))
    except PeerError as exc:
        say(f"cannot start: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if sim is not None:
            sim.stop()
        if broker is not None:
            broker.stop()
        say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
