"""A broker that dies mid-stream and comes back 30 s later: every message delivered, in order per circuit."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

import kafka_local  # tools/, on sys.path via conftest
from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import KafkaSink
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MESSAGES = 90
CIRCUITS = ("CIR-0001", "CIR-0002", "CIR-0003")
OUTAGE = 30.0


@pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="stops its own broker; an external cluster cannot be stopped from here",
)
async def test_messages_wait_in_the_outbox_while_the_broker_is_down_and_arrive_in_order(
    tmp_path: Path, chaos_report: Callable[..., None]
) -> None:
    state = tmp_path / "kafka"
    broker = kafka_local.start(state, with_parent=True)
    topic = f"alarmd.outage.{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    sink = KafkaSink(
        KafkaConfig(bootstrap_servers=broker.bootstrap, request_timeout="5s", retry_backoff="500ms")
    )
    dispatcher = Dispatcher(Outbox(tmp_path / "outbox.sqlite"), sink, metrics, backoff=0.2, max_backoff=2.0)
    stop = asyncio.Event()
    sender = asyncio.create_task(dispatcher.run(stop))
    depth_during_outage = 0.0
    try:
        for i in range(MESSAGES):
            circuit = CIRCUITS[i % len(CIRCUITS)]
            body = json.dumps({"seq": i, "circuit": circuit, "id": f"m-{i}"}).encode()
            dispatcher.submit(topic, circuit.encode(), body, "work_order")
            if i == MESSAGES // 3:
                await asyncio.sleep(1.0)
                kafka_local.kill(state)  # mid-stream
                outage_started = time.monotonic()
            await asyncio.sleep(0.05)
        while time.monotonic() - outage_started < OUTAGE:
            await asyncio.sleep(1.0)
            depth_during_outage = max(
                depth_during_outage, metrics.registry.get_sample_value("alarmd_dispatch_outbox_depth") or 0
            )
        assert depth_during_outage >= MESSAGES - MESSAGES // 3 - 1, "messages wait in the outbox"
        kafka_local.restart(state, with_parent=True)
        deadline = time.monotonic() + 120
        while dispatcher.outbox.depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert dispatcher.outbox.depth() == 0, "the outbox drains once the broker is back"
        assert metrics.registry.get_sample_value("alarmd_dispatch_outbox_depth") == 0
        assert (
            metrics.registry.get_sample_value("alarmd_dispatch_kafka_errors_total", {"reason": "timeout"})
            or 0
        ) + (
            metrics.registry.get_sample_value("alarmd_dispatch_kafka_errors_total", {"reason": "unavailable"})
            or 0
        ) >= 1

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        received: list[dict[str, object]] = []
        try:
            deadline = time.monotonic() + 30
            while len({m["id"] for m in received}) < MESSAGES and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    received.extend(json.loads(r.value) for r in records)
        finally:
            await consumer.stop()
        assert {m["id"] for m in received} == {f"m-{i}" for i in range(MESSAGES)}, "nothing lost"
        per_circuit: dict[object, list[int]] = defaultdict(list)
        for m in received:
            seqs = per_circuit[m["circuit"]]
            if not seqs or seqs[-1] != m["seq"]:  # an exact duplicate (same id) may follow its original
                per_circuit[m["circuit"]].append(int(m["seq"]))  # type: ignore[call-overload]
        for circuit, seqs in per_circuit.items():
            assert seqs == sorted(seqs), f"{circuit} out of order: {seqs}"
        chaos_report(
            "1 broker SIGKILLed for 30 s mid-stream",
            expected=MESSAGES,
            delivered=len({m["id"] for m in received}),
            duplicates=len(received) - len({m["id"] for m in received}),
            note=f"outbox depth peaked at {depth_during_outage:.0f} and drained to 0; order kept per circuit",
        )
    finally:
        stop.set()
        sender.cancel()
        await sink.stop()
        kafka_local.stop(state)
