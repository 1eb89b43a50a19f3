"""The local spool: nothing lost while Kafka is back in time, the oldest dropped and counted when full."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from alarmd.cluster.spool import Message, Spool, SpoolLog, SpoolPolicy
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


def reopened(directory: Path, max_bytes: int = 0) -> list[bytes]:
    """What a spool started afresh on ``directory`` queues first (the values)."""
    spool = Spool(1000, Metrics(), disk=SpoolLog(directory), max_bytes=max_bytes)
    spool.close()
    return [v for _, v in spool._queue]


async def test_a_disk_spool_gives_a_restarted_collector_what_the_killed_one_held(tmp_path: Path) -> None:
    metrics = Metrics()
    killed = Spool(100, metrics, disk=SpoolLog(tmp_path, segment_bytes=64))
    for i in range(10):
        killed.put(b"k", f"sample-{i}".encode())
    # SIGKILL: nothing flushed beyond what put() wrote (closing the file below writes nothing more)
    restarted = Spool(100, Metrics(), disk=SpoolLog(tmp_path, segment_bytes=64))
    killed.close()
    assert len(restarted) == 10
    broker = Broker()
    broker.up = True
    assert await restarted.drain(broker.send, deadline=5) == 0
    assert [v for _, v in broker.received] == [f"sample-{i}".encode() for i in range(10)]
    restarted.close()
    assert not list(tmp_path.glob("*.seg")), "every segment delivered is deleted"
    assert reopened(tmp_path) == [], "nothing is sent twice after that"


def test_a_record_cut_short_by_a_crash_is_left_out(tmp_path: Path) -> None:
    spool = Spool(100, Metrics(), disk=SpoolLog(tmp_path))
    spool.put(b"k", b"whole")
    spool.put(b"k", b"cut short")
    segment = next(tmp_path.glob("*.seg"))
    spool.close()
    segment.write_bytes(segment.read_bytes()[:-3])
    assert reopened(tmp_path) == [b"whole"]


def test_a_disk_spool_past_its_bytes_drops_the_oldest_counted_and_deletes_their_segments(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    spool = Spool(1000, metrics, disk=SpoolLog(tmp_path, segment_bytes=100), max_bytes=200)
    for i in range(100):
        spool.put(b"key", f"{i:07d}".encode())  # 10 bytes a message
    assert len(spool) == 20
    assert value(metrics, "alarmd_cluster_spool_dropped_total") == 80
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= 200 + 2 * 100 + 18, "what was dropped is deleted with its segment"
    spool.close()
    assert reopened(tmp_path, max_bytes=200) == [f"{i:07d}".encode() for i in range(80, 100)]


async def test_messages_delivered_leave_the_disk(tmp_path: Path) -> None:
    spool = Spool(100, Metrics(), SpoolPolicy(batch=5), disk=SpoolLog(tmp_path, segment_bytes=40))
    broker = Broker()
    broker.up = True
    for i in range(12):
        spool.put(b"k", str(i).encode())
    assert await spool.flush_once(broker.send)
    spool.close()
    again = reopened(tmp_path)
    assert again[-7:] == [str(i).encode() for i in range(5, 12)]
    assert len(again) <= 7 + 3, "at most a segment's worth of delivered messages would go again"


async def test_a_disk_spool_syncs_what_it_wrote_while_kafka_is_away(tmp_path: Path) -> None:
    broker, stop = Broker(), asyncio.Event()
    disk = SpoolLog(tmp_path)
    spool = Spool(100, Metrics(), disk=disk)
    spool.sync_every = 0.01
    spool.put(b"k", b"polled while the broker is down")
    assert disk.unsynced > 0, "written to the kernel, not yet to the disk"
    task = asyncio.create_task(spool.run(broker.send, stop))
    await asyncio.wait_for(spool.synced.wait(), 5)
    assert disk.unsynced == 0
    assert broker.received == [], "still undelivered: the disk copy is what a power cut leaves"
    stop.set()
    await asyncio.wait_for(task, 5)
    spool.close()
    assert reopened(tmp_path) == [b"polled while the broker is down"]


def test_a_spool_log_syncs_only_when_something_was_written(tmp_path: Path) -> None:
    disk = SpoolLog(tmp_path, segment_bytes=32)
    assert disk.sync() is False
    disk.append(b"k", b"v" * 40)
    assert disk.sync() is True
    assert disk.sync() is False
    disk.append(b"k", b"w")  # a new segment: synced when the next one begins, and on close
    disk.append(b"k", b"x" * 40)
    disk.close()
    assert disk.unsynced == 0
