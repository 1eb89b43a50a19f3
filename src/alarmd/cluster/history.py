"""Closed faults of the whole cluster, kept for ``alarmd report --cluster``.

The changelog forgets a fault when it closes (a tombstone).  The correlator that owns the
fault's partition, once its cluster view reads that tombstone, writes the closed fault as its
local store has it to the history topic (``<events_topic>.history``, compacted, keyed by alarm
id, in the same partition), so a report run anywhere reads every closed fault of the cluster
there and the open ones from the changelog.  A record written twice (a tombstone read again
after a restart) replaces itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from alarmd.alarms.store import Store, alarm_from_json
from alarmd.cluster.changelog import encode, read_back
from alarmd.cluster.rekey import PartitionSink
from alarmd.config import Config, KafkaConfig
from alarmd.dispatch.kafka import KafkaStartError, ensure_topics, read_compacted
from alarmd.dispatch.outbox import SinkError
from alarmd.metrics import Metrics
from alarmd.model import Alarm

log = structlog.get_logger("alarmd.cluster")


def history_topic(events_topic: str) -> str:
    """The history topic of a cluster's events topic."""
    return f"{events_topic}.history"


class ClosedFaults:
    """Writes the faults this correlator closed to the history topic once the view read their tombstones."""

    def __init__(
        self,
        store: Store,
        owned: Callable[[], set[int]],
        sink: PartitionSink,
        topic: str,
        metrics: Metrics,
        *,
        kafka: KafkaConfig,
        partitions: int,
    ) -> None:
        self.store, self._owned, self.sink, self.topic, self.metrics = store, owned, sink, topic, metrics
        self.kafka, self.partitions = kafka, partitions
        self.pending: dict[str, int] = {}
        self._created = False

    def closed(self, partition: int, alarm_id: str) -> None:
        """The view read a tombstone: note it if the fault's partition is this instance's."""
        if partition in self._owned():
            self.pending[alarm_id] = partition

    def _closed_body(self, alarm_id: str) -> Alarm | None:
        row = self.store.connection.execute(
            "SELECT state, body FROM alarms WHERE alarm_id = ?", (alarm_id,)
        ).fetchone()
        return alarm_from_json(row[1]) if row and row[0] == "closed" else None

    async def flush(self) -> None:
        """Send the noted faults (as closed in the local store); what fails is sent with the next flush."""
        if not self.pending:
            return
        taken, self.pending = self.pending, {}
        records: list[tuple[int | None, bytes, bytes | None]] = []
        for alarm_id, partition in taken.items():
            alarm = self._closed_body(alarm_id)
            if alarm is None:  # its partition moved before it was noted: the store no longer has it
                self.metrics.history_records.labels("missing").inc()
                continue
            records.append((partition, alarm_id.encode(), encode(alarm, [])))
        if not records:
            return
        try:
            await self._create()
            await self.sink.send_to_partitions(self.topic, records)
        except (SinkError, KafkaStartError) as exc:
            log.warning("history_write_failed", topic=self.topic, error=str(exc), pending=len(records))
            for _, key, _ in records:
                self.pending.setdefault(key.decode(), taken[key.decode()])
            return
        self.metrics.history_records.labels("written").inc(len(records))

    async def _create(self) -> None:
        """Create the history topic if it is missing (once), so that a report finds it even before a close."""
        if not self._created:
            await ensure_topics(self.kafka, [(self.topic, self.partitions)], compacted=[self.topic])
            self._created = True

    async def run(self, stop: asyncio.Event) -> None:
        """Create the topic, then flush every second until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(KafkaStartError):  # tried again with the next flush
                await self._create()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            await self.flush()


async def cluster_faults(config: Config) -> tuple[list[Alarm], list[str]]:
    """Every fault of the cluster for a report: closed ones from the history topic, open from the changelog.

    Returns the faults and the records that could not be read.  Raises ``KafkaStartError`` if
    the brokers cannot be reached and ``TimeoutError`` if a topic is not read to its end in time.
    """
    cluster = config.cluster
    partitions = set(range(cluster.events_partitions))
    faults: dict[str, Alarm] = {}
    skipped: list[str] = []
    for topic in (history_topic(cluster.events_topic), f"{cluster.events_topic}.changelog"):
        found = await read_compacted(config.kafka, topic, partitions)
        for _, alarm, _ in read_back(found, skipped, f"{topic}/"):
            faults.setdefault(alarm.alarm_id, alarm)  # closed (history) before open (changelog)
    return list(faults.values()), skipped
