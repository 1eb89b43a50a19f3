"""Dedup rebuild: how fast a correlator reads back a gained partition's event ids on assignment.

On a real broker (``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft node), one partition of a
fresh topic gets ``traps`` trap events and ``polls`` device polls of ``samples`` samples each
(interleaved, as collectors publish them), and a consumer group's offset is committed at its
end.  Then the read a correlator makes on assignment (``read_recent`` and each message's id
noted in a :class:`SeenIds`, as ``Correlation._recall`` does) is timed:

* ``seconds`` and ``ids_per_second``: the whole read, ids noted;
* ``megabytes_per_second``: the messages' bytes read;
* ``covered_by_default``: how many messages the default ``cluster.dedup_rebuild`` (2 s) reads back
  at that rate (the newest first).

    python -m bench.dedup_rebuild [--quick] [--traps N] [--polls N] [--results-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from alarmd.cluster.codec import encode_event, encode_samples, peek_id
from alarmd.cluster.dedup import SeenIds
from alarmd.config import ClusterConfig, KafkaConfig
from alarmd.dispatch.kafka import ensure_topics, read_recent
from alarmd.model import Event, Sample
from bench import latency
from bench.host import host_facts, write_result

ROOT = latency.ROOT
#: The default time a correlator gives the read back.
BUDGET: float = ClusterConfig.model_fields["dedup_rebuild"].default


@dataclass(frozen=True)
class Options:
    """The backlog to read back."""

    traps: int = 100_000
    polls: int = 5_000
    samples: int = 200  # a 50-interface device, four metrics each


def backlog(options: Options) -> list[bytes]:
    """The messages, traps and polls interleaved."""
    now = time.time()
    traps = [
        encode_event(Event("trap", "1.3.6.1.6.3.1.1.5.3", now, {"device": f"cpe-{n % 500}"}, uptime=n))[1]
        for n in range(options.traps)
    ]
    polls = [
        encode_samples(
            [
                Sample("ifHCInOctets", {"device": f"cpe-{n}", "if_index": str(i)}, float(n * i), now)
                for i in range(options.samples)
            ]
        )[1]
        for n in range(options.polls)
    ]
    step = max(len(traps) // max(len(polls), 1), 1)
    messages: list[bytes] = []
    for n, trap in enumerate(traps):
        messages.append(trap)
        if n % step == 0 and polls:
            messages.append(polls.pop())
    return messages + polls


async def measure(options: Options, bootstrap: str) -> dict[str, Any]:
    """Fill the partition, commit the group's offset at its end, time the read back."""
    config = KafkaConfig(bootstrap_servers=bootstrap)
    topic, group = f"alarmd.bench.dedup.{uuid.uuid4().hex[:8]}", f"alarmd.bench.dedup.{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [(topic, 1)])
    messages = backlog(options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for start in range(0, len(messages), 2000):
            sent = [await producer.send(topic, m, partition=0) for m in messages[start : start + 2000]]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): len(messages)})
    finally:
        await committer.stop()

    seen = SeenIds(600.0, 1_000_000)
    size = 0

    def take(partition: int, payload: bytes) -> None:
        nonlocal size
        size += len(payload)
        event_id = peek_id(payload)
        if event_id is not None:
            seen.check(event_id, 0.0, partition)

    started = time.monotonic()
    read, unfinished = await read_recent(
        config, topic, group, {0}, since=time.time() - 600, take=take, most=1_000_000, within=600
    )
    seconds = time.monotonic() - started
    return {
        "messages": len(messages),
        "read": read,
        "ids_noted": len(seen),
        "unfinished": sorted(unfinished),
        "seconds": round(seconds, 3),
        "ids_per_second": round(read / seconds),
        "megabytes_per_second": round(size / seconds / 1e6, 1),
        "covered_by_default": min(read, round(read / seconds * BUDGET)),
    }


def run(options: Options, results_dir: Path) -> dict[str, Any]:
    """Run the workload, write ``dedup_rebuild.json`` and return its summary."""
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-dedup-") as tmp:
        state = latency.Run(Path(tmp))
        try:
            measured = asyncio.run(measure(options, state.kafka(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))))
        finally:
            state.stop()
    result = {
        "options": asdict(options),
        **measured,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host_facts(),
    }
    write_result(results_dir, "dedup_rebuild", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dedup rebuild workload and print what it measured."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dedup_rebuild", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="10,000 traps and 500 polls")
    parser.add_argument("--traps", type=int, help="trap events in the partition")
    parser.add_argument("--polls", type=int, help="device polls in the partition")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    options = Options(10_000, 500) if args.quick else Options()
    if args.traps is not None or args.polls is not None:
        options = Options(
            args.traps if args.traps is not None else options.traps,
            args.polls if args.polls is not None else options.polls,
        )
    result = run(options, args.results_dir)
    print({k: v for k, v in result.items() if k not in ("machine", "options")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
