"""The local spool: nothing lost while Kafka is back in time, the oldest dropped and counted when full."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from alarmd.cluster.spool import Message, Spool, SpoolPolicy
from alarmd.metrics import Metrics


class Broker:
    """Takes batches while up; raises while down."""

    def __init__(self) -> None:
        self.up = False
        self.received: list[Message] = []

    async def send(self, batch: Sequence[Message]) -> None:
        if not self.up:
            raise ConnectionError("broker unreachable")
        self.received.extend(batch)


def value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def test_messages_wait_while_kafka_is_down_and_go_in_order_when_it_is_back() -> None:
    metrics, broker = Metrics(), Broker()
    spool = Spool(10, metrics, SpoolPolicy(batch=3))
    for i in range(7):
        spool.put(b"k", str(i).encode())
    assert not await spool.flush_once(broker.send)
    assert spool.problem == "broker unreachable"
    assert value(metrics, "alarmd_cluster_spool_depth") == 7
    broker.up = True
    assert await spool.drain(broker.send, deadline=5) == 0
    assert [v for _, v in broker.received] == [str(i).encode() for i in range(7)]
    assert spool.problem is None
    assert value(metrics, "alarmd_cluster_events_published_total") == 7


async def test_a_full_spool_drops_the_oldest_and_counts_each_drop() -> None:
    metrics, broker = Metrics(), Broker()
    spool = Spool(3, metrics)
    for i in range(5):
        spool.put(b"k", str(i).encode())
    assert value(metrics, "alarmd_cluster_spool_dropped_total") == 2
    broker.up = True
    await spool.drain(broker.send, deadline=5)
    assert [v for _, v in broker.received] == [b"2", b"3", b"4"]


async def test_drops_during_a_send_do_not_lose_newer_messages() -> None:
    metrics = Metrics()
    spool = Spool(2, metrics, SpoolPolicy(batch=2))
    received: list[Message] = []

    async def slow(batch: Sequence[Message]) -> None:
        spool.put(b"k", b"c")  # arrives while the batch is in flight: drops "a"
        received.extend(batch)

    spool.put(b"k", b"a")
    spool.put(b"k", b"b")
    assert await spool.flush_once(slow)
    assert len(spool) == 1
    await spool.flush_once(lambda batch: _take(batch, received))
    assert [v for _, v in received] == [b"a", b"b", b"c"]


async def _take(batch: Sequence[Message], into: list[Message]) -> None:
    into.extend(batch)


async def test_run_sends_as_messages_arrive_and_stops_when_told() -> None:
    metrics, broker = Metrics(), Broker()
    broker.up = True
    spool, stop = Spool(10, metrics), asyncio.Event()
    task = asyncio.create_task(spool.run(broker.send, stop))
    spool.put(b"k", b"x")
    for _ in range(10):
        await asyncio.sleep(0)
    assert broker.received == [(b"k", b"x")]
    stop.set()
    await asyncio.wait_for(task, 1)
