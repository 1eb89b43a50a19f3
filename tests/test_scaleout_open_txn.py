"""A correlator SIGKILLed inside an open transaction: its output is aborted, and nothing is lost or doubled.

Two ``alarmd run --role correlator`` processes in one group on the real three-node KRaft
cluster on 127.0.0.1.  The kill is aimed by construction, not by timing.  A correlator's
transaction goes: ``AddPartitionsToTxn`` (transaction coordinator), the records to the
partition leaders, ``AddOffsetsToTxn`` (transaction coordinator), ``TxnOffsetCommit`` (group
coordinator), ``EndTxn`` (transaction coordinator).  The test

1. sets ``min.insync.replicas=3`` on ``__consumer_offsets`` (replication factor 3);
2. freezes (SIGSTOP) the broker that is neither the group's coordinator nor the victim
   partition's transaction coordinator, and waits until the controller has fenced it: every
   partition's ISR is then the two live brokers, and their leaders are live;
3. publishes the victim partition's traps.  The transaction log, the work-order, notice and
   changelog topics (``min.insync.replicas=2``) take their writes; ``__consumer_offsets``, with
   two in sync out of three wanted, refuses ``TxnOffsetCommit`` (``NOT_ENOUGH_REPLICAS``,
   answered as ``COORDINATOR_NOT_AVAILABLE``, which the producer retries).  The transaction
   stays open between its records and ``EndTxn`` for as long as the broker is away;
4. checks that a ``read_uncommitted`` reader shows the work orders and a ``read_committed``
   one does not, SIGKILLs the victim, resumes (SIGCONT) the broker and puts the setting back.

Neither part alone holds a transaction open.  With every broker in sync the setting changes
nothing (``min.insync.replicas`` counts only up to the replica count: a value of 4, tried
first, let the transaction commit).  A frozen broker alone only delays it: until the broker is
fenced, every ``__transaction_state`` partition waits for its acknowledgement, so
``AddPartitionsToTxn`` waits and no record is written; once it is fenced, every partition has
a live leader and enough replicas in sync, and the transaction commits as soon as the
victim's clients stop waiting on the frozen broker (one run without the setting still saw the
kill land inside the transaction, by that delay alone: timing, not construction).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import default_partition, ensure_topics
from devenv import die_with_parent
from kafka_local import Broker, Cluster
from tests.chaos.harness import Daemon, Inbox
from tests.test_scaleout_restore import (
    ESCALATION,
    LOAD_SLACK,
    SESSION_TIMEOUT,
    correlator,
    epoch,
    start_with_one_partition_each,
    until,
)
from tests.test_scaleout_txn import by_id, judged, link_down, owned

pytestmark = pytest.mark.integration

T = TypeVar("T")

CIRCUITS = 30
PARTITIONS = 2  # the events partitions of tests.test_scaleout_restore's config
OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL = (OFFSETS_TOPIC, "__transaction_state")
RAW = "read_uncommitted"
#: ``config_source`` of a topic's own setting in a DescribeConfigs answer (version 1 on).
TOPIC_CONFIG = 1


def home(circuit: int) -> int:
    """The events partition of a circuit's traps (collectors key them by circuit id)."""
    return default_partition(f"CIR-{circuit:04d}".encode(), PARTITIONS)


def circuit_of(message: dict[str, Any]) -> str:
    """The circuit id a work order or notice is about."""
    circuit = message["circuit"]
    return str(circuit["id"] if isinstance(circuit, dict) else circuit)


async def publish_at_once(bootstrap: str, topic: str, circuits: Iterable[int]) -> None:
    """linkDown of each circuit's device on the events topic, in as few produce batches as possible."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=200)
    await producer.start()
    try:
        sent = []
        for circuit in circuits:
            key, payload = link_down(circuit)
            sent.append(await producer.send(f"{topic}.events", payload, key=key))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _topic_overrides(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    """A topic's own settings (not its defaults): AlterConfigs replaces all of them at once."""
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    ((code, message, _type, _name, entries),) = response.resources
    assert not code, f"{topic}: DescribeConfigs: {code} {message}"
    overrides = {}
    for name, value, _read_only, source, *_ in entries:
        # version 0 has is_default where later versions have config_source
        if (source is False) if response.API_VERSION == 0 else (source == TOPIC_CONFIG):
            overrides[name] = value
    return overrides


async def _set_topic_configs(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Make ``configs`` the topic's own settings, and wait until a broker reports them."""
    (response,) = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    errors = [(code, message) for code, message, *_ in response.resources if code]
    assert not errors, f"{topic}: AlterConfigs refused: {errors}"
    deadline = time.monotonic() + 15
    while await _topic_overrides(admin, topic) != configs:
        assert time.monotonic() < deadline, f"{topic}: {configs} not in effect within 15s"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def offsets_refused(bootstrap: str) -> AsyncIterator[None]:
    """While inside, ``__consumer_offsets`` wants all three replicas in sync for every write.

    Its own settings are put back on leaving, whatever happened.  The topic must exist (a
    consumer group has been joined).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        original = await _topic_overrides(admin, OFFSETS_TOPIC)
        assert original.get("cleanup.policy") == "compact", original  # read right, or it would be lost
        await _set_topic_configs(admin, OFFSETS_TOPIC, {**original, "min.insync.replicas": "3"})
        try:
            yield
        finally:
            await _set_topic_configs(admin, OFFSETS_TOPIC, original)
    finally:
        await admin.close()


def member(root: Path, name: str, bootstrap: str, topic: str) -> Daemon:
    """One of the two correlators, with ``CIRCUITS`` circuits; it dies with the test run."""
    daemon = correlator(root, name, bootstrap, topic, circuits=CIRCUITS)
    daemon.preexec = die_with_parent
    return daemon


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    return admin


async def retried(what: str, call: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """``call()`` until it answers: with a broker frozen, a request may go to it and time out."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (KafkaError, OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: no answer within {within:.0f}s: {exc!r}") from None
            await asyncio.sleep(0.5)


async def isr(bootstrap: str, topics: list[str]) -> list[list[int]]:
    """The ISR of every partition of the topics."""
    admin = await _admin(bootstrap)
    try:
        described = await retried("describe topics", lambda: admin.describe_topics(topics))
    finally:
        await admin.close()
    return [list(p["isr"]) for topic in described for p in topic["partitions"]]


async def spare(cluster: Cluster, group: str, transactional_id: str) -> tuple[Broker, int, str]:
    """A broker that is neither the group's coordinator nor the transactional id's: it, its id, the others."""
    admin = await _admin(cluster.bootstrap)
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        coordinators = {
            await admin.find_coordinator(group),
            await admin.find_coordinator(transactional_id, 1),
        }
    finally:
        await admin.close()
    addresses = {b["node_id"]: f"{b['host']}:{b['port']}" for b in brokers}
    node = min(set(addresses) - coordinators)
    (broker,) = [b for b in cluster.brokers if b.bootstrap == addresses[node]]
    return broker, node, ",".join(a for n, a in sorted(addresses.items()) if n != node)


@contextlib.contextmanager
def frozen(broker: Broker) -> Iterator[None]:
    """The broker's JVM stopped (SIGSTOP) while inside, resumed (SIGCONT) on leaving whatever happened."""
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.pid, signal.SIGCONT)


async def in_sync(bootstrap: str, topics: list[str], *, without: int | None = None, within: float) -> None:
    """Until every partition of the topics has all three replicas in sync, or all but ``without``."""
    deadline = time.monotonic() + within
    wanted = 3 if without is None else 2
    while not all(
        len(replicas) == wanted and without not in replicas for replicas in await isr(bootstrap, topics)
    ):
        assert time.monotonic() < deadline, f"ISR of {topics} not {wanted} brokers within {within:.0f}s"
        await asyncio.sleep(0.5)


async def test_an_owner_killed_inside_an_open_transaction_has_it_aborted_and_every_fault_ordered_once(
    tmp_path: Path, kafka_cluster: Cluster
) -> None:
    bootstrap = kafka_cluster.bootstrap
    topic = f"alarmd.opentxn.{uuid.uuid4().hex[:8]}"
    group = f"{topic}.correlators"
    pair = [member(tmp_path, name, bootstrap, topic) for name in ("a", "b")]
    outputs = [f"{topic}.workorders", f"{topic}.notices"]
    written = [*outputs, f"{topic}.events", f"{topic}.events.changelog", INTERNAL[0], INTERNAL[1]]
    circuits = range(1, CIRCUITS + 1)
    first = {p: min(c for c in circuits if home(c) == p) for p in range(PARTITIONS)}
    held = {f"CIR-{c:04d}": c for c in circuits if home(c) == 0 and c != first[0]}
    of_held = lambda box: [m for m in box.of_type("work_order") if circuit_of(m) in held]  # noqa: E731
    try:
        # the readers' topics exist, known to every broker, before they subscribe
        await ensure_topics(KafkaConfig(bootstrap_servers=bootstrap), [(t, 3) for t in outputs])
        await start_with_one_partition_each(pair)
        async with Inbox(bootstrap, *outputs) as inbox, Inbox(bootstrap, *outputs, isolation=RAW) as raw:
            # One fault in each partition, committed as usual: who judges partition 0's is the victim.
            await publish_at_once(bootstrap, topic, [first[0]])
            await until(lambda: sum(judged(d) for d in pair) == 1, 30, "partition 0's first trap judged")
            victim, survivor = sorted(pair, key=judged, reverse=True)
            await publish_at_once(bootstrap, topic, [first[1]])
            await until(lambda: judged(survivor) == 1, 30, "partition 1's first trap judged")
            # their escalations go before the broker is frozen: no clock's commit waits on it
            assert await inbox.until(lambda _: len(by_id(inbox, "escalation")) == 2, ESCALATION + 20)

            broker, node, live = await spare(kafka_cluster, group, f"{group}.{topic}.events-0")
            async with offsets_refused(live):
                with frozen(broker):
                    froze_at = time.monotonic()
                    await in_sync(live, written, without=node, within=45)  # fenced: the others lead
                    fenced = time.monotonic() - froze_at
                    await publish_at_once(live, topic, held.values())
                    assert await raw.until(lambda _: of_held(raw), 20), "the held batch was never written"
                    await asyncio.gather(raw.collect(1.0), inbox.collect(1.0))  # the rest of its transaction
                    inside = {m["work_order_id"] for m in of_held(raw)}
                    assert not of_held(inbox), "a read_committed reader saw the open transaction"
                    assert not victim.events("transaction_aborted"), "the transaction ended before the kill"
                    victim.kill()
                    killed_at = time.time()
                    before = survivor.metric("alarmd_cluster_transactions_total", outcome="committed")
            assert not [e for e in victim.events("message_sent") if e["key"] in held], "it had committed"

            await until(lambda: owned(survivor) == 2, SESSION_TIMEOUT + LOAD_SLACK, "the survivor took over")
            taken = time.time() - killed_at
            everything = lambda _: len(by_id(inbox, "work_order")) == len(held) + 2  # noqa: E731
            assert await inbox.until(everything, 60), f"{len(by_id(inbox, 'work_order'))} ordered"
            escalated = lambda _: len(by_id(inbox, "escalation")) == len(held) + 2  # noqa: E731
            assert await inbox.until(escalated, ESCALATION + 15), "not every fault escalated"
            await asyncio.gather(inbox.collect(3), raw.collect(3))

            orders, escalations = by_id(inbox, "work_order"), by_id(inbox, "escalation")
            assert set(orders.values()) == {1}, [i for i, n in orders.items() if n > 1]
            assert set(escalations.values()) == {1}, [i for i, n in escalations.items() if n > 1]
            assert set(escalations) == set(orders)
            ordered = Counter(circuit_of(m) for m in inbox.of_type("work_order"))
            assert ordered == Counter([*held, *(f"CIR-{c:04d}" for c in first.values())])
            # The new owner judged the same traps again, under the same ids: each is read once
            # read_committed, while read_uncommitted also shows the aborted copy.
            copies = by_id(raw, "work_order")
            assert {i: copies[i] for i in inside} == dict.fromkeys(inside, 2)
            assert copies - orders == Counter(inside), "the only extra copies are the aborted ones"
            assert survivor.metric("alarmd_cluster_transactions_total", outcome="committed") > before
            sent = [e for e in survivor.events("message_sent") if e["partition"] == 0]
            first_commit = epoch(sent[0]["timestamp"]) - killed_at
            print(  # the figures docs/scaleout.md quotes (pytest -s)
                f"broker {node} frozen, fenced after {fenced:.1f}s; {len(inside)} work orders inside the "
                f"open transaction at the SIGKILL; the survivor owned both partitions {taken:.1f}s after "
                f"it and first committed partition 0 {first_commit:.1f}s after it; read_committed "
                f"{sum(orders.values())} work orders and {sum(escalations.values())} escalations, "
                f"read_uncommitted {sum(copies.values())} work orders"
            )
            assert await survivor.stop() == 0
    finally:
        for daemon in pair:
            daemon.close()
        await in_sync(bootstrap, list(INTERNAL), within=60)  # the cluster is the session's: left whole
