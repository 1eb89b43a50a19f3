"""A correlator's output in one Kafka transaction per events partition: messages, changelog, offsets.

Each events partition ``p`` a correlator owns has its own transactional producer,
``transactional_id = <prefix>-<p>``.  Taking the id on assignment (``InitProducerId``)
aborts whatever the previous owner of ``p`` left open and fences it: a correlator that was
paused past the session timeout (a zombie) and resumes finds every further request for
``p`` refused.  The work orders and notices of the faults whose home is ``p`` (they wait in
the SQLite outbox, the staging area), ``p``'s changelog records and ``p``'s consumed offsets
are committed in one transaction per fetched batch; clock ticks commit their messages and
changelog records the same way.  A reader with ``isolation.level=read_committed`` sees all
of a transaction or nothing of it.  Outbox rows are deleted only once their transaction
committed.

Messages that belong to no partition (planned-outage notices, which no fault carries, and
faults whose home partition no correlator of this instance owns) are sent with the
idempotent producer, at least once, as ``--role all`` sends everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from alarmd.cluster.changelog import Changelog, ChangelogStore, Record
from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import FencedError, KafkaSink, KafkaTransactions, OutRecord
from alarmd.dispatch.outbox import Dispatcher, Message, Outbox, SinkError, headers
from alarmd.metrics import Metrics
from alarmd.model import Alarm

log = structlog.get_logger("alarmd.cluster")

#: The most outbox rows one commit takes (a fetched batch stages far fewer).
COMMIT_ROWS = 100_000


class StagedDispatcher(Dispatcher):
    """A correlator's outbox: messages wait there until their partition's transaction takes them."""

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing to send here: :class:`PartitionCommitter` sends the outbox; wait for ``stop``."""
        self._empty.set()
        await stop.wait()


def alarm_of(message: Message) -> str | None:
    """The alarm id a message is about; None for a message of no fault (an outage notice).

    Work orders and notices carry ``alarm_id``; a circuit's root alarm change for the element
    topic carries the whole alarm.
    """
    try:
        body = json.loads(message.value)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    alarm = body.get("alarm")
    alarm_id = body.get("alarm_id", alarm.get("alarm_id") if isinstance(alarm, dict) else None)
    return alarm_id if isinstance(alarm_id, str) else None


class Transactions(Protocol):
    """A transactional producer of one id (``KafkaTransactions``; ``FakeTransactions`` in tests)."""

    transactional_id: str
    #: The last failed commit was aborted cleanly: the id was held until then.
    aborted: bool

    @property
    def ready(self) -> bool:
        """The id is held: commits may be made."""
        ...

    async def start(self) -> None:
        """Take the id, fencing its previous holder."""
        ...

    async def commit(
        self, records: Sequence[OutRecord], offsets: dict[tuple[str, int], int], group_id: str
    ) -> None:
        """Send the records and commit the offsets in one transaction; ``FencedError`` or ``SinkError``."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...


@dataclass
class _Staged:
    """What one partition's next transaction carries."""

    records: list[OutRecord] = field(default_factory=list)
    rows: list[Message] = field(default_factory=list)
    changelog: list[Record] = field(default_factory=list)


class PartitionCommitter:
    """Commits each owned partition's output in that partition's own Kafka transaction.

    ``label`` is the ``group`` label of its metrics: ``events`` (correlators) or ``elements``.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        prefix: str,
        group: str,
        events_topic: str,
        changelog_topic: str,
        outbox: Outbox,
        store: ChangelogStore,
        changelog: Changelog,
        home: Callable[[Alarm], int],
        metrics: Metrics,
        on_fenced: Callable[[int], object],
        session_timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        producer: Callable[[str], Transactions] | None = None,
        plain: KafkaSink | None = None,
        label: str = "events",
        settled: Callable[[], bool] = lambda: True,
        rejoin: Callable[[], None] = lambda: None,
    ) -> None:
        self.kafka, self.prefix, self.group, self.label = kafka, prefix, group, label
        self.events_topic, self.changelog_topic = events_topic, changelog_topic
        self.outbox, self.store, self.changelog, self.home = outbox, store, changelog, home
        self.metrics, self._on_fenced, self._monotonic = metrics, on_fenced, monotonic
        self._settled, self._rejoin = settled, rejoin
        self._producer = producer or (lambda transactional_id: KafkaTransactions(kafka, transactional_id))
        self.producers: dict[int, Transactions] = {}
        #: The next offset to commit of each owned partition, once its messages' changes are stored.
        self.offsets: dict[int, int] = {}
        #: Partitions this instance owned and lost (revoked, or fenced by a newer owner): their faults'
        #: messages and changelog records are dropped, never sent, until they are assigned here again.
        self.lost: set[int] = set()
        self._assigned_at: dict[int, float] = {}
        self.session_timeout = session_timeout
        #: When a partition's producer lost a transaction's outcome (it must take its id again).
        self._broken: dict[int, float] = {}
        #: Home partition of each outbox row read so far (None: no fault of this store).
        self._rows: dict[int, int | None] = {}
        self.plain = plain or KafkaSink(kafka)
        self.lock = asyncio.Lock()
        #: Set by :meth:`close`: nothing is committed (nor sent) any more.
        self.closed = False

    def transactional_id(self, partition: int) -> str:
        """The transactional id of an events partition's producer."""
        return f"{self.prefix}-{partition}"

    def discard_uncommitted(self) -> int:
        """At start: drop the outbox's fault messages, which no transaction committed."""
        dropped = [m.id for m in self.outbox.pending(COMMIT_ROWS) if alarm_of(m) is not None]
        self.outbox.remove(dropped)
        self.metrics.outbox_depth.set(self.outbox.depth())
        return len(dropped)

    async def claim(self, partitions: set[int], stop: asyncio.Event) -> bool:
        """Close the producers of partitions that went; take the ids of those that came (fencing past owners).

        Retries until every new id is taken or ``stop`` is set (False then).
        """
        gone = set(self.producers) - partitions
        await self._close(gone)
        self.lost = (self.lost | gone) - partitions
        # kept, but its producer lost a transaction's outcome: assigned anew, its id is taken again
        retake = {p for p in partitions & set(self.producers) if p in self._broken}
        came = (partitions - set(self.producers)) | retake
        now = self._monotonic()
        delay = max(self.kafka.retry_backoff, 0.05)
        while came and not stop.is_set():
            fresh = {p: self._producer(self.transactional_id(p)) for p in came}
            results = await asyncio.gather(*(t.start() for t in fresh.values()), return_exceptions=True)
            for (partition, producer), result in zip(fresh.items(), results, strict=True):
                if isinstance(result, BaseException):
                    log.warning(
                        "transactional_id_unavailable",
                        transactional_id=producer.transactional_id,
                        error=str(result),
                        retry_in=delay,
                    )
                    continue
                self.producers[partition] = producer
                if partition not in retake:
                    self._assigned_at[partition] = now
                self._broken.pop(partition, None)
                came.discard(partition)
            if came:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        return not came

    async def release(self, partitions: set[int]) -> None:
        """Give up partitions kept across a generation this instance missed, to :meth:`claim` them afresh.

        Another instance may have owned them meanwhile (and fenced their producers): their
        producers are closed and whatever waits for them (messages, changelog records, offsets)
        is dropped, judged again from their committed offsets once they are claimed and restored.
        """
        await self._close(partitions)
        self._drop([m for m in self.outbox.pending(COMMIT_ROWS) if self._partition_of(m) in partitions])
        self.changelog.drop(partitions)

    async def _close(self, partitions: set[int]) -> None:
        """Close these partitions' producers and forget what was noted of them."""
        for partition in sorted(partitions):
            producer = self.producers.pop(partition, None)
            if producer is not None:
                await producer.stop()
            self._forget(partition)

    def _forget(self, partition: int) -> None:
        """Forget a partition's offset to commit, its assignment time and whether its id is to be retaken."""
        self.offsets.pop(partition, None)
        self._assigned_at.pop(partition, None)
        self._broken.pop(partition, None)

    def note(self, offsets: dict[int, int]) -> None:
        """A fetched batch is judged and its changes stored: its offsets go with the next commit."""
        for partition, offset in offsets.items():
            if partition in self.producers:  # not one revoked or fenced meanwhile
                self.offsets[partition] = max(offset, self.offsets.get(partition, 0))

    async def commit(self) -> bool:
        """Commit what waits (messages, changelog records, offsets), one transaction per partition.

        True if everything went out; what failed stays pending and goes with the next commit.
        """
        async with self.lock:
            return await self.commit_held()

    async def commit_held(self) -> bool:
        """:meth:`commit` for a caller that holds :attr:`lock`."""
        if self.closed:
            return False  # after close every message would look unowned: none leaves any more
        staged: defaultdict[int, _Staged] = defaultdict(_Staged)
        plain: list[Message] = []
        dropped: list[Message] = []
        for message in self.outbox.pending(COMMIT_ROWS):
            partition = self._partition_of(message)
            if partition is None:
                (plain if alarm_of(message) is None else dropped).append(message)
                continue
            if partition in self.producers:
                staged[partition].rows.append(message)
                staged[partition].records.append(
                    (message.topic, None, message.key, message.value, headers(message.kind))
                )
            elif partition in self.lost:
                dropped.append(message)
            else:
                plain.append(message)
        unowned: list[Record] = []
        for record in self.changelog.take():
            partition, key, value = record
            if partition in self.producers:
                staged[partition].changelog.append(record)
                staged[partition].records.append((self.changelog_topic, partition, key, value, ()))
            elif partition not in self.lost:
                unowned.append(record)
        for partition in set(self.offsets) & set(self.producers):
            staged.setdefault(partition, _Staged())  # the offsets go even without output
        self._drop(dropped)
        results = await asyncio.gather(*(self._one(p, s) for p, s in sorted(staged.items())))
        sent = await self._send_plain(plain, unowned)
        self.metrics.outbox_depth.set(self.outbox.depth())
        return all(results) and sent

    def _partition_of(self, message: Message) -> int | None:
        """The home partition of a staged message's fault (remembered: a row waiting is read every commit)."""
        if message.id not in self._rows:
            alarm_id = alarm_of(message)
            alarm = self.store.alarm(alarm_id) if alarm_id is not None else None
            self._rows[message.id] = self.home(alarm) if alarm is not None else None
        return self._rows[message.id]

    def _remove(self, messages: list[Message]) -> None:
        self.outbox.remove([m.id for m in messages])
        for message in messages:
            self._rows.pop(message.id, None)

    def _drop(self, messages: list[Message]) -> None:
        """Messages of faults that left this instance: their partition's new owner judges the input again."""
        if not messages:
            return
        self._remove(messages)
        log.info("outbox_dropped", messages=len(messages), detail="their faults moved to another owner")

    async def _one(self, partition: int, staged: _Staged) -> bool:
        producer = self.producers[partition]
        if not producer.ready and not await self._retake(partition, producer):
            self.changelog.put_back(staged.changelog)
            return False
        offset = self.offsets.get(partition)
        offsets = {(self.events_topic, partition): offset} if offset is not None else {}
        try:
            await producer.commit(staged.records, offsets, self.group)
        except FencedError as exc:
            self._fenced(partition, staged, str(exc))
            await producer.stop()
            if self._settled():
                # The coordinator also fences a transaction that outlived its timeout (a broker
                # restarting under it): then no newer owner exists, and the partition, assigned
                # here still, would wait for some later rebalance.  The group's next assignment
                # gives it out again either way.
                self._ask_rejoin(partition, "fenced: the group's next assignment says who owns the partition")
            return False
        except SinkError as exc:
            self.changelog.put_back(staged.changelog)
            self.metrics.transactions.labels(self.label, "aborted").inc()
            log.warning(
                "transaction_aborted",
                group=self.label,
                partition=partition,
                transactional_id=producer.transactional_id,
                error=exc.detail,
                messages=len(staged.rows),
                changelog_records=len(staged.changelog),
                detail="all of it goes again with the next commit",
            )
            if not producer.ready:
                self._broken[partition] = self._monotonic()
                # Aborted cleanly, the id was ours a moment ago: a fresh producer takes it again at
                # once, unless a rebalance is under way (the partition may be another's by now).
                if producer.aborted and self._settled():
                    await self._retake(partition, producer, at_once=True)
                elif self._settled():  # the group's next assignment says whether the id is still ours
                    self._ask_rejoin(
                        partition, "the transaction's outcome is unknown: its id is taken again once assigned"
                    )
            return False
        self.metrics.transactions.labels(self.label, "committed").inc()
        if self.offsets.get(partition) == offset:
            self.offsets.pop(partition, None)
        self._remove(staged.rows)
        for kind, count in Counter(m.kind for m in staged.rows).items():
            self.metrics.workorders_sent.labels(kind).inc(count)
        self._count_changelog(staged.changelog)
        assigned = self._assigned_at.pop(partition, None)
        if assigned is not None:
            self.metrics.takeover_seconds.labels(self.label).observe(self._monotonic() - assigned)
        for message in staged.rows:
            log.info(
                "message_sent",
                kind=message.kind,
                topic=message.topic,
                key=message.key.decode(errors="replace"),
                partition=partition,
                queued_seconds=round(time.time() - message.created, 3),
            )
        return True

    def _ask_rejoin(self, partition: int, detail: str) -> None:
        """Ask the group to rebalance because of ``partition``, saying why."""
        log.info("rejoin_requested", group=self.label, partition=partition, detail=detail)
        self._rejoin()

    async def _retake(self, partition: int, producer: Transactions, *, at_once: bool = False) -> bool:
        """Take the id again after a failed transaction, once it is safe to fence its holder.

        Taking it fences whoever holds it, which may be this partition's new owner if this
        instance was frozen or revoked and is out of the group without knowing yet.  So unless
        ``at_once`` (the abort went through and no rebalance is under way), the group is asked
        to rebalance, whose assignment takes the id again (:meth:`claim`) or closes the
        producer; failing that, it is taken here once one session timeout passed: a member
        that is out of the group learns it from its next heartbeat (a third of that).
        """
        broken = self._broken.setdefault(partition, self._monotonic())
        if not at_once and self._monotonic() - broken < self.session_timeout:
            return False
        try:
            await producer.start()
        except (SinkError, FencedError) as exc:
            log.warning(
                "transactional_id_unavailable", transactional_id=producer.transactional_id, error=str(exc)
            )
            return False
        self._broken.pop(partition, None)
        return True

    def _fenced(self, partition: int, staged: _Staged, error: str) -> None:
        """A newer owner holds the partition: drop its producer, output and faults; commit nothing more."""
        producer = self.producers.pop(partition)
        self.lost.add(partition)
        self._forget(partition)
        self.metrics.transactions.labels(self.label, "fenced").inc()
        log.error(
            "partition_fenced",
            group=self.label,
            partition=partition,
            transactional_id=producer.transactional_id,
            error=error,
            messages_dropped=len(staged.rows),
            changelog_records_dropped=len(staged.changelog),
            detail="another correlator owns this partition now; its faults left this instance",
        )
        self._drop(staged.rows)
        self._on_fenced(partition)

    async def _send_plain(self, messages: list[Message], records: list[Record]) -> bool:
        """Messages and changelog records of no owned partition: idempotent producer, at least once."""
        try:
            for message in messages:
                await self.plain.send(message.topic, message.key, message.value, headers(message.kind))
                self.outbox.ack(message.id)
                self._rows.pop(message.id, None)
                self.metrics.workorders_sent.labels(message.kind).inc()
            if records:
                await self.plain.send_to_partitions(self.changelog_topic, records)
                self._count_changelog(records)
        except SinkError as exc:
            self.changelog.put_back(records)
            if records:
                self.metrics.changelog_failures.inc()
            self.metrics.kafka_errors.labels(exc.reason).inc()
            log.warning("send_failed", reason=exc.reason, detail=exc.detail, depth=self.outbox.depth())
            return False
        return True

    def _count_changelog(self, records: list[Record]) -> None:
        tombstones = sum(1 for _, _, value in records if value is None)
        self.metrics.changelog_records.labels("tombstone").inc(tombstones)
        self.metrics.changelog_records.labels("state").inc(len(records) - tombstones)

    async def close(self) -> None:
        """Disconnect every producer (after the caller's last :meth:`commit`); later commits do nothing."""
        async with self.lock:  # not in the middle of a tick's transaction
            self.closed = True
            producers, self.producers = list(self.producers.values()), {}
        await asyncio.gather(*(p.stop() for p in producers))
        await self.plain.stop()
