from __future__ import annotations

import asyncio
from pathlib import Path

from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.metrics import Metrics
from alarmd.testing import FakeSink


def test_outbox_keeps_messages_across_reopen_until_acknowledged(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    first = outbox.add("t", b"CIR-1", b"one", "work_order")
    outbox.add("t", b"CIR-1", b"two", "work_order_clear")
    outbox.close()

    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert [m.value for m in reopened.pending()] == [b"one", b"two"]
    reopened.ack(first)
    assert [m.value for m in reopened.pending()] == [b"two"]
    assert reopened.depth() == 1


async def test_dispatcher_retries_until_the_broker_is_back_and_keeps_order(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = FakeSink(failing=True)
    dispatcher = Dispatcher(Outbox(tmp_path / "o.sqlite"), sink, metrics, backoff=0.001, max_backoff=0.002)
    for i in range(5):
        dispatcher.submit("t", b"CIR-1", f"m{i}".encode(), "work_order")
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while (
        metrics.registry.get_sample_value("alarmd_dispatch_kafka_errors_total", {"reason": "unavailable"}) < 3
    ):
        await asyncio.sleep(0)
    assert sink.sent == []
    assert metrics.registry.get_sample_value("alarmd_dispatch_outbox_depth") == 5

    sink.failing = False
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [v for _, _, v in sink.sent] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert metrics.registry.get_sample_value("alarmd_dispatch_outbox_depth") == 0
    assert (
        metrics.registry.get_sample_value("alarmd_dispatch_messages_sent_total", {"type": "work_order"}) == 5
    )


async def test_the_dispatcher_is_idle_only_once_everything_submitted_is_acknowledged(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = FakeSink(failing=True)
    dispatcher = Dispatcher(Outbox(tmp_path / "o.sqlite"), sink, metrics, backoff=0.001, max_backoff=0.002)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.wait_for(dispatcher.wait_idle(), 5)  # nothing submitted yet
    dispatcher.submit("t", b"CIR-1", b"m0", "work_order")
    assert not dispatcher.idle
    waiting = asyncio.create_task(dispatcher.wait_idle())
    while (
        metrics.registry.get_sample_value("alarmd_dispatch_kafka_errors_total", {"reason": "unavailable"}) < 2
    ):
        await asyncio.sleep(0)
    assert not waiting.done()  # the broker has not acknowledged it
    sink.failing = False
    await asyncio.wait_for(waiting, 5)
    assert dispatcher.idle
    assert [v for _, _, v in sink.sent] == [b"m0"]
    stop.set()
    await asyncio.wait_for(task, 5)
