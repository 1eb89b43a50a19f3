"""Correlators share the events topic by its events: the leader asks for a rebalance that evens a skew out.

Two ``alarmd run --role correlator`` processes in one group on a real Kafka broker on
127.0.0.1, four events partitions, two each.  In the first test the two of one correlator
carry nine tenths of the messages (traps); in the second every partition carries as many
messages, but one correlator's are polls of many samples and the other's traps.  After one
check the leader has asked for a rebalance and each correlator judges about half the events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from alarmd.cluster.codec import encode_event, encode_samples
from alarmd.cluster.share import deviation
from alarmd.model import Event, Sample
from tests.chaos.harness import Daemon
from tests.test_scaleout_restore import correlator, start_with_one_partition_each, until

pytestmark = pytest.mark.integration

CHECK = 3.0  # cluster.rebalance_check, compressed
HOT, COLD = 180, 20  # messages per second of a hot and a cold events partition
TRAFFIC = 40.0  # seconds of traffic at most (bounded): the test stops it once it has seen enough


async def produce(
    bootstrap: str,
    topic: str,
    rates: dict[int, int],
    stop: asyncio.Event,
    polls: dict[int, int] | None = None,
) -> int:
    """Send ``rates`` to the events topic's partitions until ``stop`` or :data:`TRAFFIC`; how many sent.

    A partition in ``polls`` gets polls of that many samples, one message each; the others traps.
    """
    polls = polls or {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    by_partition = dict.fromkeys(rates, 0)
    try:
        while not stop.is_set() and (elapsed := time.monotonic() - started) < TRAFFIC:
            for partition, rate in rates.items():
                while by_partition[partition] < rate * elapsed:  # what is due by now, even on a slow loop
                    payload = message(partition, sent, polls.get(partition, 0))
                    await producer.send(f"{topic}.events", payload, key=b"k", partition=partition)
                    by_partition[partition] += 1
                    sent += 1
            await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def message(partition: int, n: int, samples: int) -> bytes:
    """The ``n``-th message sent: a device's poll of ``samples`` interfaces, or (0) a trap."""
    if not samples:
        labels = {"trap": "coldStart", "agent_address": f"10.9.0.{partition}"}
        return encode_event(Event("trap", "coldStart", time.time(), labels, uptime=n))[1]
    device = {"device": f"cpe-{partition}", "address": f"10.9.1.{partition}"}
    at = time.time()
    return encode_samples(
        [Sample("ifHCInOctets", device | {"ifIndex": str(i)}, float(n), at) for i in range(samples)]
    )[1]


def last_assignment(daemon: Daemon) -> dict[str, Any]:
    """The daemon's last ``partitions_assigned`` log line of the events group."""
    return next(e for e in reversed(daemon.events("partitions_assigned")) if e["group"] == "events")


def judged(daemon: Daemon) -> float:
    return daemon.metric("alarmd_cluster_events_consumed_total")


def correlators(root: Path, bootstrap: str, topic: str, check: float) -> list[Daemon]:
    """Two correlators of four events partitions that check their share every ``check`` seconds."""
    pair = [correlator(root, name, bootstrap, topic) for name in ("c1", "c2")]
    for daemon in pair:
        config = daemon.dir / "alarmd.yml"
        text = config.read_text().replace(
            "events_partitions: 2", f"events_partitions: 4\n  rebalance_check: {check}s"
        )
        config.write_text(text)
    return pair


Traffic = tuple[dict[int, int], dict[int, int], set[int]]
"""Messages/s by partition, samples per poll of the partitions of polls, and the heavy partitions."""


async def evened(
    bootstrap: str, root: Path, check: float, traffic: Callable[[set[int]], Traffic]
) -> dict[str, Any]:
    """Two correlators get ``traffic(first's partitions)``, heavy on the first; the share evens out.

    Whatever the traffic: under the first assignment one correlator judges most events; after
    one check the leader asks once for a rebalance, each correlator then holds one heavy
    partition and judges about half the events, and nothing more is asked.  Returns the request.
    """
    topic = f"share-{uuid.uuid4().hex[:8]}"
    pair = correlators(root, bootstrap, topic, check)
    stop = asyncio.Event()
    sending: asyncio.Task[int] | None = None
    try:
        await start_with_one_partition_each(pair, each=2)
        rates, polls, heavy = traffic(set(last_assignment(pair[0])["partitions"]))
        sending = asyncio.create_task(produce(bootstrap, topic, rates, stop, polls))
        await until(lambda: all(judged(d) > 0 for d in pair), 20, "traffic judged")
        before = {d.dir.name: judged(d) for d in pair}
        await asyncio.sleep(check)  # a check's worth under the first assignment
        skewed = {d.dir.name: judged(d) - before[d.dir.name] for d in pair}
        assert deviation(skewed) > 0.5, f"both heavy partitions start on one correlator: {skewed}"

        asked = lambda: sum(d.metric("alarmd_cluster_rebalance_requests_total") for d in pair)  # noqa: E731
        await until(lambda: asked() >= 1, 4 * check, "the leader asks for a rebalance")
        requested = [e for d in pair for e in d.events("rebalance_requested")]
        assert len(requested) == 1
        asked_at = requested[0]["timestamp"]
        taken = lambda: all(last_assignment(d)["timestamp"] > asked_at for d in pair)  # noqa: E731
        await until(taken, 30, "both took the new assignment")
        now = [last_assignment(d) for d in pair]
        assert [len(heavy & set(e["partitions"])) for e in now] == [1, 1], f"one heavy partition each: {now}"
        start = {d.dir.name: judged(d) for d in pair}
        await asyncio.sleep(2 * check)
        share = {d.dir.name: judged(d) - start[d.dir.name] for d in pair}
        assert deviation(share) < 0.3, f"each judges about half now (a backlog may still drain): {share}"
        assert asked() == 1, "no second rebalance once the share is even"
        print(f"before {skewed} ({deviation(skewed):.3f}), after {share} ({deviation(share):.3f})")
        print(requested[0])
        return requested[0]
    finally:
        stop.set()
        if sending is not None:
            await sending
        for daemon in pair:
            if daemon.proc is not None:
                await daemon.stop()
            daemon.close()


async def test_the_leader_evens_a_skewed_share_after_one_check(kafka_bootstrap: str, tmp_path: Path) -> None:
    def hot_pair(first: set[int]) -> Traffic:
        return {p: HOT if p in first else COLD for p in range(4)}, {}, first  # traps, the hot ones on one

    requested = await evened(kafka_bootstrap, tmp_path, CHECK, hot_pair)
    assert requested["reason"] == "skew"
    assert requested["deviation"] > 0.2 and requested["deviation_after"] < 0.15


POLL_CHECK = 4.0  # cluster.rebalance_check of the second test: 400 messages/s x 2 s half-life clear EVIDENCE
MESSAGES = 100  # messages per second of every events partition
SAMPLES = 10  # samples in a poll's message (a real poll of a CPE carries about 50)


async def test_partitions_of_polls_are_shared_by_their_samples_not_their_messages(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    def polls_on_one(first: set[int]) -> Traffic:
        return dict.fromkeys(range(4), MESSAGES), dict.fromkeys(first, SAMPLES), first  # as many messages

    requested = await evened(kafka_bootstrap, tmp_path, POLL_CHECK, polls_on_one)
    assert requested["reason"] == "ratios_unknown", "even by messages: it asks to hear the ratios"
