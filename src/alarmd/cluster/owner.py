"""A correlator's share of the events topic: its partitions' faults, kept in a changelog and restored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

from alarmd.alarms.lifecycle import AlarmBook
from alarmd.cluster.changelog import Changelog, ChangelogStore, RuleStates
from alarmd.cluster.codec import Keys
from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import KafkaSink, KafkaStartError, default_partition, read_compacted
from alarmd.dispatch.outbox import SinkError
from alarmd.metrics import Metrics
from alarmd.model import Alarm
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd.cluster")


class PartitionOwner:
    """Keeps each owned events partition's faults in the changelog and takes them back when a partition comes.

    On every assignment (:meth:`assign`): faults of partitions that are no longer owned
    leave the book, the rule engine and the local store (no clear, no notice: their new
    owner carries them on); partitions newly owned are read back from the changelog (from
    the start to its end at that moment) and their faults, with their clocks and original
    due times, are taken into the store, the book and the rule engine, then the rule states
    no fault holds (pending ``for``, clear hysteresis) into the rule engine; :attr:`recall`
    reads back the event ids of their recent input meanwhile.  A clock that came due
    meanwhile fires on the next tick.  :meth:`flush` writes the faults that changed;
    with ``writes=False`` it writes nothing, and the caller takes the changelog records
    (:class:`alarmd.cluster.transactions.PartitionCommitter`, in each partition's transaction).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        store: ChangelogStore,
        *,
        book: Callable[[], AlarmBook],
        engine: Callable[[], RuleEngine],
        keys: Callable[[], Keys],
        metrics: Metrics,
        now: Callable[[], float],
        writes: bool = True,
    ) -> None:
        self.kafka, self.topic, self.store = kafka, topic, store
        self._book, self._engine, self._keys = book, engine, keys
        self.metrics, self._now = metrics, now
        #: Partitions of the events topic (as the cluster has it); set once the topics exist.
        self.partitions = 1
        self.owned: set[int] = set()
        #: False from a rebalance's revocation until the new assignment is restored: clocks wait meanwhile.
        self.settled = False
        self.changelog = Changelog(store, self.home, RuleStates(engine, self.home_of))
        self.sink = KafkaSink(kafka) if writes else None
        #: Reads back what else newly assigned partitions had beside the changelog (the event
        #: ids their input carried lately), beside the changelog's read; how many ids.
        self.recall: Callable[[set[int]], Awaitable[int]] | None = None
        self._lock = asyncio.Lock()

    def home(self, alarm: Alarm) -> int:
        """The events partition (and so the changelog partition) of a fault: that of its circuit's key."""
        return self.home_of(alarm.labels)

    def home_of(self, labels: Mapping[str, str]) -> int:
        """The events partition (and so the changelog partition) of a fault's or a series' labels."""
        return default_partition(self._keys().of(labels), self.partitions)

    def clear_cache(self) -> int:
        """Empty the local store of open faults at start: the changelog rebuilds what is assigned."""
        cached = self.store.open_alarms()
        with self.store.transaction():
            for alarm in cached:
                self.store.drop(alarm.alarm_id)
        self.store.changed.clear()
        return len(cached)

    async def assign(self, partitions: set[int], stop: asyncio.Event) -> None:
        """Drop the faults of partitions that went, restore those that came (retrying until ``stop``)."""
        started = time.monotonic()
        keep = self.owned & partitions
        book, engine = self._book(), self._engine()
        async with self._lock:
            await self._write()  # what changed here before the rebalance goes out first
            gone = self._drop(lambda home: home not in keep)
            came = partitions - keep
            found, ids = await asyncio.gather(self._read(came, stop), self._recall(came))
            if found is None:
                return
            now = self._now()
            alarms, skipped = self.changelog.restore(found, now)
            for alarm in alarms:
                book.restore(alarm)
                if alarm.state == "firing":
                    engine.restore(alarm.rule, alarm.fingerprint, alarm.labels, alarm.raised_at, now)
            resumed = self.changelog.rules.restore(found, skipped) if self.changelog.rules else 0
            self.owned = set(partitions)
            self.settled = True
        seconds = time.monotonic() - started
        self.metrics.restore_seconds.observe(seconds)
        self.metrics.restored_records.inc(len(alarms))
        for reason in skipped:
            log.warning("changelog_record_skipped", topic=self.topic, reason=reason)
        log.info(
            "partitions_restored",
            changelog=self.topic,
            partitions=sorted(partitions - keep),
            kept=sorted(keep),
            faults_restored=len(alarms),
            faults_dropped=gone,
            rule_states_restored=resumed,
            ids_rebuilt=ids,
            timers_due=len(self.store.due_timers(now)),
            seconds=round(seconds, 3),
        )

    def release(self, partitions: set[int]) -> int:
        """Drop the faults of partitions another instance took (no clear, no notice); how many went."""
        self.owned -= partitions
        return self._drop(lambda home: home in partitions)

    def _drop(self, leaving: Callable[[int], bool]) -> int:
        book, engine = self._book(), self._engine()
        gone = [a for a in self.store.open_alarms() if leaving(self.home(a))]
        with self.store.transaction():
            for alarm in gone:
                self.store.drop(alarm.alarm_id)
        for alarm in gone:
            book.drop(alarm.fingerprint)
            engine.drop(alarm.rule, alarm.fingerprint)
            self.changelog.forget(alarm.alarm_id)
        if self.changelog.rules is not None:
            self.changelog.rules.release(leaving)
        return len(gone)

    def revoking(self) -> None:
        """A rebalance began: what this instance owns may move, so its clocks wait for the new assignment."""
        self.settled = False

    async def _recall(self, partitions: set[int]) -> int:
        return await self.recall(partitions) if self.recall is not None and partitions else 0

    async def _read(self, partitions: set[int], stop: asyncio.Event) -> dict[int, dict[bytes, bytes]] | None:
        delay = max(self.kafka.retry_backoff, 0.05)
        while not stop.is_set():
            try:
                return await read_compacted(self.kafka, self.topic, partitions)
            except (KafkaStartError, TimeoutError, OSError) as exc:
                log.warning("changelog_unreadable", topic=self.topic, error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        return None

    async def flush(self) -> bool:
        """Write the faults changed since the last write; False (they stay pending) if Kafka refused."""
        async with self._lock:
            return await self._write()

    async def _write(self) -> bool:
        if self.sink is None:
            return True  # the caller takes the records
        records = self.changelog.take()
        if not records:
            return True
        try:
            await self.sink.send_to_partitions(self.topic, records)
        except SinkError as exc:
            self.changelog.put_back(records)
            self.metrics.changelog_failures.inc()
            log.warning("changelog_write_failed", topic=self.topic, error=str(exc), pending=len(records))
            return False
        tombstones = sum(1 for _, _, value in records if value is None)
        self.metrics.changelog_records.labels("tombstone").inc(tombstones)
        self.metrics.changelog_records.labels("state").inc(len(records) - tombstones)
        return True

    async def close(self) -> None:
        """Write what changed last, then disconnect the changelog producer."""
        await self.flush()
        if self.sink is not None:
            await self.sink.stop()
