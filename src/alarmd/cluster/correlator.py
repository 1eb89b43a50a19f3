"""The correlator role's path through Kafka: consume the events topic, judge, commit each partition's output.

:class:`PartitionedStage` is that path for any topic consumed this way (the element stage
runs it too); :class:`Correlation` is the events topic's.

For each fetched batch of the events topic: every message is decoded, dropped if its id
was seen, otherwise judged by the stages ``--role all`` runs, and the batch is done once
the alarm changes it caused are stored (SQLite: store and outbox).  Then each partition's
messages, changelog records and offsets are committed in that partition's transaction
(:class:`~alarmd.cluster.transactions.PartitionCommitter`).  A new assignment first
commits what waits, then takes the transactional ids of the partitions that came (fencing
their previous owners), then restores their faults from the changelog, and only then lets
their input be fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from alarmd.alarms.lifecycle import AlarmBook
from alarmd.clock import Clock
from alarmd.cluster.changelog import ChangelogStore
from alarmd.cluster.codec import Item, Keys, Samples, decode, kind_of, peek_id
from alarmd.cluster.dedup import SeenIds
from alarmd.cluster.owner import PartitionOwner
from alarmd.cluster.share import TrafficShare
from alarmd.cluster.transactions import PartitionCommitter, Transactions
from alarmd.config import Config, ConsumedTopic
from alarmd.dispatch.kafka import KafkaSource, KafkaStartError, RejectionOf, ensure_topics, read_recent
from alarmd.dispatch.outbox import Outbox
from alarmd.metrics import Metrics
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd.cluster")

#: Messages of the events topic judged per fetched batch, so per transaction round: a commit
#: takes a few round trips to the brokers, so the batch is larger than other consumers'.
BATCH = 500

Judge = Callable[[Item], Awaitable[None]]
"""Runs a sample, poll, event or re-keyed feedback through the stages; returns once its changes are stored."""


class PartitionedStage:
    """A consumer group over one topic: each partition's output, changelog and offsets in one transaction.

    The correlators' events topic and the element stage's topic are both consumed this way.
    ``handle`` takes one message and returns once the changes it caused are stored (SQLite:
    store and outbox).  After each fetched batch, each partition's messages, changelog
    records and offsets go in that partition's transaction; a new assignment first commits
    what waits, then takes the transactional ids of the partitions that came (fencing their
    previous owners), restores their state from the changelog, calls ``changed``, and only
    then lets their input be fetched; a fenced partition's state is dropped, then ``changed``
    is called too.  ``group`` labels the stage's metrics and logs;
    ``producer`` makes each partition's transactional producer (Kafka's by default).
    """

    def __init__(
        self,
        config: Config,
        *,
        topic: str,
        group_id: str,
        prefix: str,
        group: str,
        owner: PartitionOwner,
        outbox: Outbox,
        handle: Callable[[bytes, bytes | None], Awaitable[None]],
        rejection_of: RejectionOf,
        metrics: Metrics,
        took: Callable[[set[int]], None],
        restoring: Callable[[], None],
        changed: Callable[[], None] = lambda: None,
        producer: Callable[[str], Transactions] | None = None,
        share: TrafficShare | None = None,
    ) -> None:
        cluster = config.cluster
        self.share = share
        self.config, self.metrics = config, metrics
        self.topic, self.group_id, self.group = topic, group_id, group
        self._handle, self._rejection_of = handle, rejection_of
        self._took, self._restoring, self._changed = took, restoring, changed
        self.owner = owner
        self.changelog_topic = owner.topic
        self.committer = PartitionCommitter(
            config.kafka,
            prefix=prefix,
            group=group_id,
            events_topic=topic,
            changelog_topic=owner.topic,
            outbox=outbox,
            store=owner.store,
            changelog=owner.changelog,
            home=owner.home,
            metrics=metrics,
            on_fenced=self._fenced,
            session_timeout=cluster.session_timeout,
            label=group,
            producer=producer,
            settled=lambda: self.owner.settled,
            rejoin=lambda: self._source.rejoin() if self._source is not None else None,
        )
        #: True from a batch's first message until its offsets are noted: its output waits for them.
        self._in_batch = False
        #: Partitions claimed afresh while a batch was judged: the rest of it is fetched again.
        self._refetch: set[int] = set()
        self._source: KafkaSource | None = None

    @property
    def settled(self) -> bool:
        """False from a rebalance's revocation until the new assignment is restored: clocks wait meanwhile."""
        return self.owner.settled

    def start(self) -> tuple[int, int]:
        """At start: empty the cache of open faults, drop their uncommitted messages; how many of each."""
        return self.owner.clear_cache(), self.committer.discard_uncommitted()

    async def tick(self) -> None:
        """Commit what clocks and feedback changed, unless a batch is being judged (its commit takes it)."""
        if not self._in_batch:
            await self.committer.commit()

    async def run(self, stop: asyncio.Event) -> None:
        """Make sure the topic and its changelog exist, then consume the topic in the group until ``stop``."""
        partitions = self.config.cluster.events_partitions
        delay = max(self.config.kafka.retry_backoff, 0.05)
        wanted = [(self.topic, partitions), (self.changelog_topic, partitions)]
        while not stop.is_set():
            try:
                found = await ensure_topics(self.config.kafka, wanted, compacted=[self.changelog_topic])
                self.owner.partitions = found.get(self.topic, partitions)
                break
            except KafkaStartError as exc:
                log.warning("topic_unavailable", topic=self.topic, error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        consumed = ConsumedTopic(
            enabled=True,
            topic=self.topic,
            group_id=self.group_id,
            dead_letter_topic=f"{self.topic}.dead-letter",
        )
        source = self._source = KafkaSource(
            self.config.kafka,
            consumed,
            self._on_message,
            self._rejection_of,
            self.metrics,
            on_assign=self._assigned,
            balance=self.share.balance if self.share is not None else None,
            tell=self.share.tell if self.share is not None else None,
            on_restore=lambda partitions, unbroken: self._assign(partitions, unbroken, stop),
            on_revoke=self.owner.revoking,
            commit=self._commit_batch,
            session_timeout=self.config.cluster.session_timeout,
            join_timeout=self.config.cluster.join_limit,
            group=self.group,
            max_batch=BATCH,
        )
        share = self.share
        measuring = asyncio.create_task(share.run(stop, source.end_offsets, source.rejoin)) if share else None
        try:
            await source.run(stop)
        finally:
            if measuring is not None:
                measuring.cancel()
                await asyncio.gather(measuring, return_exceptions=True)
            self._in_batch = False
            await self.committer.commit()  # the last changes go out before the group is left
            await source.close()
            await self.committer.close()

    def _assigned(self, partitions: set[int]) -> None:
        """The group's assignment is taken (restored): tell the traffic share, then ``took``."""
        if self.share is not None:
            self.share.assigned(partitions)
        self._took(partitions)

    async def _assign(self, partitions: set[int], unbroken: bool, stop: asyncio.Event) -> None:
        """A new assignment: commit what waits, take the new ids (fencing), restore the new state.

        Unless ``unbroken`` (this instance took part in every generation since its last
        assignment), the partitions it keeps may have had another owner in between, whose
        output its state lacks: they are released and claimed, restored and judged afresh.
        """
        self._restoring()
        async with self.committer.lock:
            # a batch cut by the rebalance commits its kept partitions' output with its offsets
            if not self._in_batch:
                await self.committer.commit_held()
            stale = set() if unbroken else partitions & (set(self.committer.producers) | self.owner.owned)
            self._forget((set(self.committer.producers) - partitions) | stale)
            if stale:
                log.info("partitions_reclaimed", group=self.group, partitions=sorted(stale))
                await self.committer.release(stale)
                self.owner.release(stale)
                if self._in_batch:  # the rest of the batch of these partitions is fetched again
                    self._refetch |= stale
            if await self.committer.claim(partitions, stop):
                await self.owner.assign(partitions, stop)
                self._changed()

    def _fenced(self, partition: int) -> None:
        """A newer owner holds the partition: its state leaves this instance, as on a revocation."""
        self.owner.release({partition})
        self._forget({partition})
        self._changed()

    def _forget(self, partitions: set[int]) -> None:
        """These partitions are no longer judged here (or start afresh): forget what is kept of them."""

    async def _commit_batch(self, offsets: dict[int, int]) -> None:
        """A fetched batch is judged: its partitions' output and offsets go in their transactions."""
        self.committer.note({p: o for p, o in offsets.items() if p not in self._refetch})
        self._refetch.clear()
        self._in_batch = False
        await self.committer.commit()

    async def _on_message(self, payload: bytes, key: bytes | None) -> None:
        """Hand a message to ``handle``, unless its partition is no longer this instance's."""
        self._in_batch = True
        partition = self._source.partition if self._source is not None else None
        if partition not in self.committer.producers or partition in self._refetch:
            return  # revoked while its batch was judged, fenced out, or claimed afresh: judged again
        await self._handle(payload, key)


class Correlation(PartitionedStage):
    """A correlator's share of the events topic: consume, judge, restore on assignment, commit."""

    def __init__(
        self,
        config: Config,
        store: ChangelogStore,
        outbox: Outbox,
        *,
        book: Callable[[], AlarmBook],
        engine: Callable[[], RuleEngine],
        keys: Callable[[], Keys],
        judge: Judge,
        rejection_of: RejectionOf,
        metrics: Metrics,
        clock: Clock,
        took: Callable[[set[int]], None],
        restoring: Callable[[], None],
    ) -> None:
        cluster = config.cluster
        self.clock = clock
        self._judge = judge
        self.seen = SeenIds(cluster.dedup_window, cluster.dedup_size)
        owner = PartitionOwner(
            config.kafka,
            f"{cluster.events_topic}.changelog",
            store,
            book=book,
            engine=engine,
            keys=keys,
            metrics=metrics,
            now=clock.now,
            writes=False,  # the changelog goes in the partitions' transactions
        )
        super().__init__(
            config,
            topic=cluster.events_topic,
            group_id=cluster.correlator_group,
            prefix=cluster.transactional_prefix,
            group="events",
            owner=owner,
            outbox=outbox,
            handle=self._on_event,
            rejection_of=rejection_of,
            metrics=metrics,
            took=took,
            restoring=restoring,
            share=TrafficShare(cluster.rebalance_check, metrics, clock),
        )
        owner.recall = self._recall

    def _forget(self, partitions: set[int]) -> None:
        """Forget the event ids seen in these partitions: fetched again, their events are judged again."""
        if partitions:
            self.seen.forget(partitions)

    async def _recall(self, partitions: set[int]) -> int:
        """Read back the ids of the events the group judged lately in newly assigned partitions; how many.

        The input before the committed offset, at most ``dedup_window`` old, read for at most
        ``dedup_rebuild`` seconds: a copy of one of them that arrives after the hand-over (a
        trap's second receiver, a collector's resend) is then a duplicate here too.
        """
        cluster = self.config.cluster
        if not partitions or cluster.dedup_rebuild <= 0:
            return 0
        now = self.clock.now()

        def take(partition: int, payload: bytes) -> None:
            event_id = peek_id(payload)
            if event_id is not None:
                self.seen.check(event_id, now, partition)

        try:
            read, unfinished = await read_recent(
                self.config.kafka,
                self.topic,
                self.group_id,
                partitions,
                since=time.time() - cluster.dedup_window,
                take=take,
                most=max(cluster.dedup_size // len(partitions), 1),
                within=cluster.dedup_rebuild,
            )
        except (KafkaStartError, OSError) as exc:
            log.warning("event_ids_not_rebuilt", partitions=sorted(partitions), error=str(exc))
            return 0
        self.metrics.ids_rebuilt.inc(read)
        if unfinished:
            log.warning(
                "event_ids_not_rebuilt",
                partitions=sorted(unfinished),
                error=f"only the latest ids: not read back to dedup_window within {cluster.dedup_rebuild}s",
                ids_rebuilt=read,
            )
        return read

    async def _on_event(self, payload: bytes, key: bytes | None) -> None:
        """Judge a sample, poll or event; return once the alarm changes it caused are stored.

        A poll's message is dropped whole if its id was seen; its samples are counted one by one.
        """
        self.metrics.messages_consumed.inc()
        envelope = decode(payload)
        item = envelope.item
        kind = kind_of(item)
        count = len(item.samples) if isinstance(item, Samples) else 1
        partition = self._source.partition if self._source is not None else None
        if self.share is not None:  # the partition's events per message weigh it in the assignment
            self.share.consumed(partition, count)
        if self.seen.check(envelope.id, self.clock.now(), partition):
            self.metrics.events_consumed.labels(kind, "duplicate").inc(count)
            return
        self.metrics.events_consumed.labels(kind, "judged").inc(count)
        await self._judge(item)
