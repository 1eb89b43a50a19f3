"""A bounded local spool: messages wait here while Kafka cannot be reached; the oldest go first, counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.cluster")

Message = tuple[bytes, bytes]
"""``(key, value)`` of one message for the events topic."""

SendBatch = Callable[[Sequence[Message]], Awaitable[None]]
"""Delivers a batch (returns once the brokers have all of it) or raises."""


@dataclass(frozen=True)
class SpoolPolicy:
    """How the spool sends: batch size and the backoff between failed attempts."""

    batch: int = 500
    backoff: float = 1.0
    max_backoff: float = 30.0


class Spool:
    """A FIFO of at most ``size`` messages; ``put`` never waits, and when full drops the oldest, counted."""

    def __init__(self, size: int, metrics: Metrics, policy: SpoolPolicy | None = None) -> None:
        self.size = size
        self.policy = policy or SpoolPolicy()
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._head_dropped = 0  # messages of the batch in flight that ``put`` dropped meanwhile
        self.problem: str | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, key: bytes, value: bytes) -> None:
        """Queue a message; if the spool is full the oldest message is dropped and counted."""
        if len(self._queue) >= self.size:
            self._queue.popleft()
            self._head_dropped += 1
            self._metrics.spool_dropped.inc()
        self._queue.append((key, value))
        self._metrics.spool_depth.set(len(self._queue))
        self._ready.set()

    async def run(self, send: SendBatch, stop: asyncio.Event) -> None:
        """Send what is queued, in order, until ``stop``; a failed batch stays queued and is tried again."""
        delay = self.policy.backoff
        while not stop.is_set():
            if not self._queue:
                self._ready.clear()
                await _first(stop.wait(), self._ready.wait())
                continue
            if await self.flush_once(send):
                delay = self.policy.backoff
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.policy.max_backoff)

    async def flush_once(self, send: SendBatch) -> bool:
        """Send one batch from the head; true if it was delivered (then it leaves the spool)."""
        batch = [self._queue[i] for i in range(min(self.policy.batch, len(self._queue)))]
        self._head_dropped = 0
        try:
            await send(batch)
        except Exception as exc:  # any failure to deliver keeps the batch; the reason is logged
            if self.problem is None:
                log.warning("spool_send_failed", error=str(exc) or type(exc).__name__, depth=len(self._queue))
            self.problem = str(exc) or type(exc).__name__
            return False
        if self.problem is not None:
            log.info("spool_send_resumed", depth=len(self._queue))
            self.problem = None
        for _ in range(max(len(batch) - self._head_dropped, 0)):
            self._queue.popleft()
        self._metrics.spool_depth.set(len(self._queue))
        self._metrics.events_published.inc(len(batch))
        return True

    async def drain(self, send: SendBatch, deadline: float) -> int:
        """At shutdown: send what is left within ``deadline`` seconds; the number of messages left behind."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        while self._queue and loop.time() < until:
            try:
                delivered = await asyncio.wait_for(self.flush_once(send), max(until - loop.time(), 0.01))
            except TimeoutError:
                break
            if not delivered:
                break
        return len(self._queue)


async def _first(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
