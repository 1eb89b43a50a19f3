"""How long a consumer group member has waited for its assignment, and what happens past the limit.

A member waits for an assignment at its first join and from the start of every rebalance
(its partitions revoked) until the next assignment.  A healthy join takes one rebalance
timeout at most, plus the broker's delay for a new group and a SyncGroup round trip.  A
member that waits past ``limit`` seconds is stuck, whatever the cause (a coordinator that
died mid-join, a rebalance that never settles): :meth:`JoinWatch.check` logs
``group_join_stalled``, counts it in ``alarmd_cluster_join_stalls_total{group}`` and raises
:class:`JoinStalled`, and the caller closes its consumer (leaving the group) and joins again
as a new member.  The limit is ``cluster.join_timeout`` (see ``ClusterConfig.join_limit``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog

from alarmd.clock import Clock, SystemClock
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.cluster")
T = TypeVar("T")


class JoinStalled(Exception):
    """A group member waited past its limit for an assignment: it is to leave and join as a new member."""


class JoinWatch:
    """One group member's wait for its assignment (``group_id``; metrics label ``group``) against a limit."""

    def __init__(
        self, group_id: str, group: str, limit: float, metrics: Metrics, clock: Clock | None = None
    ) -> None:
        """Watch ``group_id``'s joins; a wait over ``limit`` seconds is counted under ``group``."""
        self.group_id, self.group, self.limit = group_id, group, limit
        self._metrics = metrics
        self._clock = clock or SystemClock()
        #: When the current wait for an assignment began (monotonic), or None while assigned.
        self.since: float | None = None
        metrics.join_stalls.labels(group)

    def waiting(self) -> None:
        """A join or a rebalance began: the wait for the assignment runs from now, unless it already runs."""
        if self.since is None:
            self.since = self._clock.monotonic()

    def assigned(self) -> None:
        """An assignment arrived: the member is no longer waiting."""
        self.since = None

    def waited(self) -> float:
        """Seconds of the current wait (0 while assigned)."""
        return 0.0 if self.since is None else self._clock.monotonic() - self.since

    def check(self) -> None:
        """Raise :class:`JoinStalled` (logged and counted) if the current wait has lasted past the limit."""
        if self.since is not None and self.waited() > self.limit:
            self.stalled()

    def stalled(self) -> None:
        """Log and count the stall, end the wait and raise :class:`JoinStalled`."""
        waited = self.waited()
        self.since = None
        self._metrics.join_stalls.labels(self.group).inc()
        log.warning(
            "group_join_stalled",
            group_id=self.group_id,
            group=self.group,
            waited_s=round(waited, 1),
            limit_s=self.limit,
            action="leave the group and join again as a new member",
        )
        raise JoinStalled(f"{self.group_id}: no assignment after {waited:.1f}s (limit {self.limit:g}s)")

    async def within(self, join: Awaitable[T]) -> T:
        """Await ``join`` (a consumer's start, done at its first assignment) for the rest of the limit.

        Past it ``join`` is cancelled and :meth:`stalled` raises :class:`JoinStalled`.
        """
        self.waiting()
        try:
            joined = await asyncio.wait_for(join, max(self.limit - self.waited(), 0.0))
        except TimeoutError:
            self.stalled()
            raise  # not reached: stalled() raises
        self.assigned()
        return joined
