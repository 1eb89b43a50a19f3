"""follow_compacted against a real Apache Kafka broker on 127.0.0.1: the whole topic, then what follows."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import KafkaSink, ensure_topics, follow_compacted

pytestmark = pytest.mark.integration


async def test_every_partition_is_read_from_the_start_then_followed_tombstones_included(
    kafka_bootstrap: str,
) -> None:
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic = f"alarmd.follow.{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [(topic, 3)], compacted=[topic])
    sink = KafkaSink(config)
    await sink.send_to_partitions(topic, [(0, b"A1", b"one"), (2, b"A2", b"two"), (2, b"A2", b"two again")])
    seen: list[tuple[int, bytes, bytes | None]] = []
    ready = asyncio.Event()
    stop = asyncio.Event()

    def take(partition: int, key: bytes, value: bytes | None, written_at: float) -> None:
        assert written_at > 0
        seen.append((partition, key, value))

    following = asyncio.create_task(follow_compacted(config, topic, 3, take, stop, caught_up=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        assert sorted(seen) == [(0, b"A1", b"one"), (2, b"A2", b"two"), (2, b"A2", b"two again")]
        await sink.send_to_partitions(topic, [(1, b"A3", b"three"), (0, b"A1", None)])
        async with asyncio.timeout(30):
            while len(seen) < 5:
                await asyncio.sleep(0.1)
        assert sorted(seen[3:], key=lambda r: r[0]) == [(0, b"A1", None), (1, b"A3", b"three")]
    finally:
        stop.set()
        await asyncio.wait_for(following, 10)
        await sink.stop()
