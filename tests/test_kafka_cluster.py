"""kafka_local's three-node cluster forms; alarmd's topics on it get RF 3 and min.insync.replicas 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

import kafka_local
from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import KafkaStartError, ensure_topics
from devenv import alive

pytestmark = pytest.mark.integration


async def listed_partitions(admin: AIOKafkaAdminClient, topic: str) -> Any:
    """The topic as described once its partitions are listed with every replica in sync.

    A new topic's metadata and its followers' first fetch take a moment to spread over the
    cluster, longer on a loaded machine.
    """
    described: Any = None
    for _ in range(60):  # bounded: 30 s
        (described,) = await admin.describe_topics([topic])
        partitions = described["partitions"]
        if partitions and all(len(p["isr"]) == len(p["replicas"]) for p in partitions):
            break
        await asyncio.sleep(0.5)
    return described


async def test_the_cluster_forms_and_topics_get_three_replicas_and_two_in_sync(
    kafka_cluster: kafka_local.Cluster,
) -> None:
    assert len(kafka_cluster.brokers) == 3
    topic = f"alarmd.events.{uuid.uuid4().hex[:8]}"
    # a broker a loaded machine lets miss its heartbeats is fenced for a moment: asked for three
    # replicas, the creation waits for it rather than taking the two brokers up
    config = KafkaConfig(bootstrap_servers=kafka_cluster.bootstrap, request_timeout=20, replication_factor=3)
    assert await ensure_topics(config, [(topic, 6)]) == {topic: 6}
    assert await ensure_topics(config, [(topic, 12)]) == {topic: 6}, (
        "the partition count is fixed at creation"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    await admin.start()
    try:
        assert len((await admin.describe_cluster())["brokers"]) == 3
        described = await listed_partitions(admin, topic)
        assert {len(p["replicas"]) for p in described["partitions"]} == {3}
        assert {len(p["isr"]) for p in described["partitions"]} == {3}
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        settings = {entry[0]: entry[1] for entry in configs.resources[0][4]}
        assert settings["min.insync.replicas"] == "2"
    finally:
        await admin.close()


async def test_topics_asked_for_more_replicas_than_brokers_up_are_refused_once_the_wait_is_over(
    kafka_bootstrap: str,
) -> None:
    topic = f"alarmd.events.{uuid.uuid4().hex[:8]}"
    config = KafkaConfig(bootstrap_servers=kafka_bootstrap, request_timeout=1.5, replication_factor=2)
    with pytest.raises(KafkaStartError) as refused:
        await ensure_topics(config, [(topic, 3)])
    assert refused.value.reason == "rejected"
    assert f"creating topic {topic}" in str(refused.value)
    assert "replication factor" in str(refused.value)
    assert await ensure_topics(config.model_copy(update={"replication_factor": None}), [(topic, 3)]) == {
        topic: 3
    }, "without the setting one broker up is enough"


def test_the_brokers_stop_with_the_process_that_started_them(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            str(kafka_local.__file__),
            "cluster",
            "--brokers",
            "1",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "ALARMD_KAFKA_HEAP": "256m"},
    )
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().strip().startswith(b"127.0.0.1:")
        broker = int((tmp_path / "node-1" / "kafka.pid").read_text())
        starter.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel tells the broker
        starter.wait(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and alive(broker):
            time.sleep(0.2)
        assert not alive(broker), "the broker outlived the process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()
        starter.wait(10)
        if starter.stdout is not None:
            starter.stdout.close()
        kafka_local.stop(tmp_path / "node-1")
