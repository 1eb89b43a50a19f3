"""KafkaSource against a real Apache Kafka broker on 127.0.0.1: order, commits, dead letters, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alarmd.collector.upstream import UpstreamError, parse_upstream
from alarmd.config import KafkaConfig, UpstreamConfig
from alarmd.dispatch.kafka import KafkaSink, KafkaSource
from alarmd.metrics import Metrics

pytestmark = pytest.mark.integration

KEY = b"CIR-0001"  # one key, so every message lands on one partition and order is defined
WAIT = 30.0


def alarm(alarm_id: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "source_system": "temip",
            "alarm_id": alarm_id,
            "event_type": "raise",
            "alarm_type": "LOS",
            "severity": "critical",
            "raised_at": "2024-05-01T10:00:00+08:00",
            "circuit": "CIR-0001",
        }
    ).encode()


def rejection_of(exc: Exception) -> tuple[str, str] | None:
    return (exc.reason, exc.detail) if isinstance(exc, UpstreamError) else None


class Recorder:
    """A handler that parses like the daemon does and notes the upstream alarm ids it accepted."""

    def __init__(self, fail_once_on: str | None = None) -> None:
        self.ids: list[str] = []
        self.keys: list[bytes | None] = []
        self.fail_once_on = fail_once_on
        self._changed = asyncio.Event()

    async def handle(self, payload: bytes, key: bytes | None) -> None:
        event = parse_upstream(payload, 0.0)
        alarm_id = event.labels["upstream_alarm_id"]
        if alarm_id == self.fail_once_on:
            self.fail_once_on = None
            raise RuntimeError("work-order stage exploded")
        self.ids.append(alarm_id)
        self.keys.append(key)
        self._changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.ids) < count:
                self._changed.clear()
                await self._changed.wait()


class Setup:
    """Unique topics and group for one test, and the configs that point at them."""

    def __init__(self, bootstrap: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.bootstrap = bootstrap
        self.kafka = KafkaConfig(
            bootstrap_servers=bootstrap, client_id=f"test-{tag}", request_timeout=10.0, retry_backoff=0.1
        )
        self.upstream = UpstreamConfig(
            enabled=True,
            topic=f"upstream.{tag}",
            group_id=f"alarmd-upstream-{tag}",
            dead_letter_topic=f"upstream.{tag}.dead-letter",
        )
        self.metrics = Metrics()

    async def create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(self.upstream.topic, num_partitions=3, replication_factor=1),
                    NewTopic(self.upstream.dead_letter_topic, num_partitions=1, replication_factor=1),
                ]
            )
        finally:
            await admin.close()

    async def produce(self, *values: bytes) -> None:
        sink = KafkaSink(KafkaConfig(bootstrap_servers=self.bootstrap))
        await sink.start()
        try:
            for value in values:
                await sink.send(self.upstream.topic, KEY, value)
        finally:
            await sink.stop()

    def count(self, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value("alarmd_upstream_messages_total", {"outcome": outcome})

    @contextlib.asynccontextmanager
    async def running(
        self, handle: Callable[[bytes, bytes | None], Awaitable[None]], **options: Any
    ) -> AsyncIterator[asyncio.Task[None]]:
        """A source (KafkaSource ``options``) in the background; stopped on exit, it must end by itself."""
        stop = asyncio.Event()
        source = KafkaSource(self.kafka, self.upstream, handle, rejection_of, self.metrics, **options)
        task = asyncio.create_task(source.run(stop))
        try:
            yield task
        finally:
            stop.set()
            try:
                async with asyncio.timeout(15):
                    await asyncio.gather(task, return_exceptions=True)
            finally:
                await source.close()

    async def dead_letters(self, count: int) -> list[Any]:
        consumer = AIOKafkaConsumer(
            self.upstream.dead_letter_topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        records: list[Any] = []
        try:
            async with asyncio.timeout(WAIT):
                while len(records) < count:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        records.extend(batch)
            # nothing beyond what was expected
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        finally:
            await consumer.stop()
        return records


@pytest.fixture
async def setup(kafka_bootstrap: str) -> Setup:
    s = Setup(kafka_bootstrap)
    await s.create_topics()
    return s


async def test_messages_reach_the_handler_in_order_and_are_not_seen_again_after_restart(setup: Setup) -> None:
    await setup.produce(*(alarm(f"A-{i}") for i in range(5)))
    first = Recorder()
    async with setup.running(first.handle):
        await first.until(5)
    assert first.ids == [f"A-{i}" for i in range(5)]
    assert first.keys == [KEY] * 5
    assert setup.count("accepted") == 5
    assert setup.count("dead_letter") == 0

    await setup.produce(alarm("A-5"))
    second = Recorder()
    async with setup.running(second.handle):
        await second.until(1)
    assert second.ids == ["A-5"], "offsets of the first run were not committed"
    assert setup.count("accepted") == 6


async def test_malformed_messages_go_to_the_dead_letter_topic_and_consumption_goes_on(setup: Setup) -> None:
    schema_bad = json.dumps({**json.loads(alarm("B-x")), "severity": "catastrophic"}).encode()
    await setup.produce(alarm("B-0"), b"not json at all", schema_bad, alarm("B-1"))
    recorder = Recorder()
    with structlog.testing.capture_logs() as logs:
        async with setup.running(recorder.handle):
            await recorder.until(2)
    assert recorder.ids == ["B-0", "B-1"]
    assert setup.count("accepted") == 2
    assert setup.count("dead_letter") == 2

    letters = await setup.dead_letters(2)
    assert [r.value for r in letters] == [b"not json at all", schema_bad]
    assert [r.key for r in letters] == [KEY, KEY]
    headers = [dict(r.headers) for r in letters]
    assert [h["alarmd-reason"] for h in headers] == [b"not_json", b"schema"]
    assert headers[1]["alarmd-detail"].startswith(b"severity:")
    partition = headers[0]["alarmd-source-partition"]
    for offset, h in zip((1, 2), headers, strict=True):
        assert h["alarmd-source-topic"] == setup.upstream.topic.encode()
        assert h["alarmd-source-partition"] == partition
        assert h["alarmd-source-offset"] == str(offset).encode()

    dead = [e for e in logs if e["event"] == "upstream_dead_letter"]
    assert [(e["reason"], e["offset"]) for e in dead] == [("not_json", 1), ("schema", 2)]

    # the dead-lettered offsets were committed too: a restart sees only what is new
    await setup.produce(alarm("B-2"))
    again = Recorder()
    async with setup.running(again.handle):
        await again.until(1)
    assert again.ids == ["B-2"]
    assert setup.count("dead_letter") == 2


async def test_an_unexpected_handler_error_stops_the_source_and_the_message_is_redelivered(
    setup: Setup,
) -> None:
    """Not the message's fault (a bug, a broken stage): no dead letter, no commit, ``run`` raises."""
    await setup.produce(alarm("C-0"), alarm("C-1"), alarm("C-2"))
    failing = Recorder(fail_once_on="C-1")
    with structlog.testing.capture_logs() as logs:
        async with setup.running(failing.handle) as task:
            async with asyncio.timeout(WAIT):
                with pytest.raises(RuntimeError, match="work-order stage exploded"):
                    await task
    assert failing.ids == ["C-0"]
    assert setup.count("dead_letter") == 0
    failed = [e for e in logs if e["event"] == "upstream_handler_failed"]
    assert [(e["offset"], e["log_level"]) for e in failed] == [(1, "error")]

    after_restart = Recorder()
    async with setup.running(after_restart.handle):
        await after_restart.until(2)
    assert after_restart.ids == ["C-1", "C-2"], "C-0 must stay committed, C-1 must come again"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _unavailable_logs(
    logs: list[MutableMapping[str, Any]], count: int
) -> list[MutableMapping[str, Any]]:
    async with asyncio.timeout(WAIT):
        while True:
            found = [e for e in logs if e["event"] == "upstream_kafka_unavailable"]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def test_a_broker_that_is_down_at_start_is_retried_with_backoff_not_fatal() -> None:
    closed = f"127.0.0.1:{_free_port()}"
    setup = Setup(closed)
    recorder = Recorder()
    with structlog.testing.capture_logs() as logs:
        async with setup.running(recorder.handle) as task:
            found = await _unavailable_logs(logs, 3)
            assert not task.done()
    assert task.done() and task.exception() is None
    assert all(e["bootstrap_servers"] == closed for e in found)
    delays = [e["retry_in"] for e in found[:3]]
    assert delays == sorted(delays) and delays[0] < delays[2], delays


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_broker_that_comes_up_late_is_consumed_from_once_reachable(kafka_bootstrap: str) -> None:
    """Bootstrap through a loopback port that only starts forwarding to the broker after a few retries."""
    host, port = kafka_bootstrap.rsplit(":", 1)
    late = _free_port()
    setup = Setup(f"127.0.0.1:{late}")
    setup.bootstrap = kafka_bootstrap  # the test's own admin and producer go straight to the broker
    await setup.create_topics()
    await setup.produce(alarm("D-0"))

    async def proxy(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_forward(client_reader, broker_writer), _forward(broker_reader, client_writer))

    recorder = Recorder()
    server: asyncio.Server | None = None
    try:
        with structlog.testing.capture_logs() as logs:
            async with setup.running(recorder.handle):
                await _unavailable_logs(logs, 2)
                server = await asyncio.start_server(proxy, "127.0.0.1", late)
                await recorder.until(1)
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    assert recorder.ids == ["D-0"]
    assert any(e["event"] == "upstream_consumer_started" for e in logs)


async def test_records_fetched_while_their_partition_is_restored_are_handled_once_the_restore_is_done(
    setup: Setup,
) -> None:
    # aiokafka fetches a newly assigned partition while the rebalance listener still restores it
    # (a new owner's restore waits, for example, for the previous owner's open transaction to be
    # aborted): its records must wait for the restore, not reach the handler or be lost.
    await setup.produce(*(alarm(f"UP-{i}") for i in range(5)))
    recorder = Recorder()
    during: list[str] = []
    restored = asyncio.Event()

    async def restore(partitions: set[int], unbroken: bool) -> None:
        # a slow restore: 2 s, cut short if a record reaches the handler meanwhile
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while not recorder.ids:
                    await asyncio.sleep(0.05)
        during.extend(recorder.ids)
        restored.set()

    async with setup.running(recorder.handle, on_assign=lambda partitions: None, on_restore=restore):
        await recorder.until(5)
        assert restored.is_set()
        assert during == [], "records were handled before their partition's restore was done"
        assert recorder.ids == [f"UP-{i}" for i in range(5)]
