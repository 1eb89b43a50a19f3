"""read_recent on a real Kafka broker on 127.0.0.1: what a group consumed lately, to its committed offset."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import ensure_topics, read_recent

pytestmark = pytest.mark.integration


async def test_only_what_the_group_consumed_since_the_time_is_read_and_at_most_so_many(
    kafka_bootstrap: str,
) -> None:
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topic, group = f"alarmd.recent.{uuid.uuid4().hex[:8]}", f"alarmd.recent.{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [(topic, 2)])
    now = time.time()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        stamps = [now - 3600, now - 60, now - 30, now - 10]  # an hour old, then recent
        for n, stamp in enumerate(stamps):
            await producer.send_and_wait(
                topic, f"p0-{n}".encode(), partition=0, timestamp_ms=int(stamp * 1000)
            )
        await producer.send_and_wait(topic, b"p1-0", partition=1)  # the group never consumed partition 1
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 3})  # p0-3 is still to be judged
    finally:
        await committer.stop()

    def reader(into: list[tuple[int, bytes]]) -> Callable[[int, bytes], None]:
        return lambda partition, value: into.append((partition, value))

    seen: list[tuple[int, bytes]] = []
    read, unfinished = await read_recent(
        config, topic, group, {0, 1}, since=now - 600, take=reader(seen), most=100, within=10
    )
    assert (read, unfinished) == (2, set())
    assert seen == [(0, b"p0-1"), (0, b"p0-2")]

    last: list[tuple[int, bytes]] = []
    read, _ = await read_recent(
        config, topic, group, {0}, since=now - 600, take=reader(last), most=1, within=10
    )
    assert (read, last) == (1, [(0, b"p0-2")])

    newest_first: list[tuple[int, bytes]] = []
    await read_recent(
        config, topic, group, {0}, since=now - 600, take=reader(newest_first), most=100, within=10, chunk=1
    )
    assert newest_first == [(0, b"p0-2"), (0, b"p0-1")]
