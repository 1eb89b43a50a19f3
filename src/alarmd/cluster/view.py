"""The cluster view: every open fault of every correlator, read from the changelog, for people to see.

Each correlator owns some events partitions and keeps only their faults in its alarm book.
The compacted changelog (``<events_topic>.changelog``) holds every open fault of the cluster,
one record per fault, tombstoned when it closes.  :class:`ClusterView` reads all of its
partitions from the beginning (no consumer group, ``read_committed``) and follows them, so
that the NOC board, the read API and the open-fault metrics of any correlator show the whole
cluster.  It lags a fault's owner by at most one changelog write: the owner writes after each
fetched batch (once that batch's work orders are acknowledged) and on the clock tick after
feedback or a clock changed a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from alarmd.cluster.changelog import ChangelogError, decode, is_fault
from alarmd.config import KafkaConfig
from alarmd.dispatch.kafka import KafkaStartError, ensure_topics, follow_compacted
from alarmd.metrics import Metrics
from alarmd.model import Alarm

log = structlog.get_logger("alarmd.cluster")

#: Closed faults whose partition the view remembers, so that late feedback still reaches their owner.
CLOSED_REMEMBERED = 10_000


class ClusterView:
    """Every open fault of the cluster as the changelog has it: ``active`` (firing), ``recent`` (cleared).

    It has the shape the board and the read API read from an alarm book.  ``where`` tells
    which events partition a fault lives in (the changelog partition its record came from),
    also for a fault closed lately (``CLOSED_REMEMBERED`` of them), so that ticketing feedback
    can be sent to the fault's owner.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        partitions: int,
        metrics: Metrics,
        *,
        now: Callable[[], float] = time.time,
        keep: Callable[[Alarm], bool] | None = None,
    ) -> None:
        self.kafka, self.topic, self.partitions = kafka, topic, partitions
        self.metrics, self._now = metrics, now
        #: Which faults of the topic the view shows (all without it); the others it does not count either.
        self._keep = keep
        #: Firing faults by fingerprint.
        self.active: dict[str, Alarm] = {}
        #: Cleared faults in observation, by fingerprint.
        self.recent: dict[str, Alarm] = {}
        self._faults: dict[str, tuple[int, Alarm]] = {}
        self._closed: OrderedDict[str, int] = OrderedDict()
        #: True once the changelog was read to the end it had when reading began.
        self.ready = False
        self.stopped = False
        self._arrived = asyncio.Event()
        #: Told ``(partition, alarm_id)`` of every tombstone read (a fault closed).
        self.on_close: Callable[[int, str], None] | None = None
        #: While the changelog is read again after a broken connection: the faults read so far.
        self._reloading: dict[str, tuple[int, Alarm]] | None = None

    def __len__(self) -> int:
        return len(self._faults)

    def where(self, alarm_id: str) -> tuple[int, Alarm | None] | None:
        """A fault's events partition and the fault (None once closed); None if the view never had it."""
        found = self._faults.get(alarm_id)
        if found is not None:
            return found
        partition = self._closed.get(alarm_id)
        return None if partition is None else (partition, None)

    async def wait_for(self, alarm_id: str, seconds: float) -> tuple[int, Alarm | None] | None:
        """:meth:`where`, waiting up to ``seconds`` for the fault; None if it did not (or the view stops)."""
        deadline = time.monotonic() + seconds
        while (found := self.where(alarm_id)) is None and not self.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return found

    def take(self, partition: int, key: bytes, value: bytes | None, written_at: float) -> None:
        """Apply one changelog record: a fault's new state, or its tombstone."""
        alarm_id = key.decode(errors="replace")
        if self._reloading is not None:
            self._take_into(self._reloading, partition, alarm_id, value)
        else:
            old = self._faults.get(alarm_id)
            if old is not None:
                for by_print in (self.active, self.recent):
                    if (seen := by_print.get(old[1].fingerprint)) is not None and seen.alarm_id == alarm_id:
                        del by_print[old[1].fingerprint]
            self._take_into(self._faults, partition, alarm_id, value)
            if (found := self._faults.get(alarm_id)) is not None:
                alarm = found[1]
                (self.active if alarm.state == "firing" else self.recent)[alarm.fingerprint] = alarm
        if self._keep is None:  # the changelog's own view is the one the view metrics describe
            self.metrics.view_lag.set(max(self._now() - written_at, 0.0))
            self.metrics.view_faults.set(len(self._faults))
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _take_into(
        self, faults: dict[str, tuple[int, Alarm]], partition: int, alarm_id: str, value: bytes | None
    ) -> None:
        if not is_fault(alarm_id.encode()):
            return  # a rule state's record: it holds no fault
        if value is None:
            faults.pop(alarm_id, None)
            if self.on_close is not None:
                self.on_close(partition, alarm_id)
            self._closed[alarm_id] = partition
            self._closed.move_to_end(alarm_id)
            while len(self._closed) > CLOSED_REMEMBERED:
                self._closed.popitem(last=False)
            return
        try:
            alarm, _ = decode(value)
        except ChangelogError as exc:
            log.warning(
                "view_record_skipped", topic=self.topic, partition=partition, key=alarm_id, reason=str(exc)
            )
            return
        if self._keep is not None and not self._keep(alarm):
            faults.pop(alarm_id, None)
            return
        faults[alarm_id] = (partition, alarm)
        self._closed.pop(alarm_id, None)

    def _caught_up(self) -> None:
        if self._reloading is not None:
            self._faults, self._reloading = self._reloading, None
            self.active = {a.fingerprint: a for _, a in self._faults.values() if a.state == "firing"}
            self.recent = {a.fingerprint: a for _, a in self._faults.values() if a.state != "firing"}
        if not self.ready:
            log.info("cluster_view_ready", topic=self.topic, faults=len(self._faults))
        self.ready = True
        if self._keep is None:
            self.metrics.view_faults.set(len(self._faults))
            self.metrics.view_lag.set(0)  # what was read is as old as it is, but nothing newer is missing
            self.metrics.view_ready.set(1)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the changelog and follow it until ``stop``; after a broken link, again from the start."""
        delay = max(self.kafka.retry_backoff, 0.05)
        try:
            while not stop.is_set():
                try:
                    found = await ensure_topics(
                        self.kafka, [(self.topic, self.partitions)], compacted=[self.topic]
                    )
                    partitions = found.get(self.topic, self.partitions)
                    if self._faults or self.ready:
                        self._reloading = {}  # the old view is shown until the new one has caught up
                    await follow_compacted(
                        self.kafka, self.topic, partitions, self.take, stop, caught_up=self._caught_up
                    )
                    return  # noqa: TRY300 - the loop retries only what failed
                except (KafkaStartError, TimeoutError, OSError) as exc:
                    log.warning("cluster_view_unavailable", topic=self.topic, error=str(exc), retry_in=delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, 30.0)
        finally:
            self.stopped = True
            self._arrived.set()


class Together:
    """Several views shown as one: the board and the API read the cluster's faults and its major faults."""

    def __init__(self, *views: ClusterView) -> None:
        self.views = views

    @property
    def active(self) -> dict[str, Alarm]:
        """Firing faults of every view."""
        return {k: a for view in self.views for k, a in view.active.items()}

    @property
    def recent(self) -> dict[str, Alarm]:
        """Cleared faults of every view."""
        return {k: a for view in self.views for k, a in view.recent.items()}
