"""A bounded local spool: messages wait here while Kafka cannot be reached; the oldest go first, counted.

By default the spool lives in memory.  With a :class:`SpoolLog` every message is also
written to segment files on disk as it is queued, and a segment is deleted once all its
messages have been delivered or dropped: a collector killed while Kafka was away sends them
after its restart.  What is written reaches the kernel at once (it survives the process) and
the disk within :data:`SYNC_EVERY` (it survives the machine: a power cut or a kernel panic
loses at most that last second).  Delivery stays at least once: a message delivered just before a crash,
whose segment still held undelivered ones, is sent again after the restart, with its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

    batch: int = 5000
    backoff: float = 1.0
    max_backoff: float = 30.0


_HEADER = struct.Struct(">II")  # key length, value length

SYNC_EVERY = 1.0
"""Seconds at most between a disk spool's write and its ``fsync``."""


class SpoolLog:
    """The spool's messages in numbered segment files under ``directory``, written as they are queued.

    A record is its key's and value's lengths (4 bytes each, big-endian) and the two; a
    record cut short by a crash is ignored.  A new segment begins once the current one holds
    ``segment_bytes``, or when everything written has left the spool.
    """

    def __init__(self, directory: Path, segment_bytes: int = 1 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: deque[int] = deque(sorted(int(p.stem) for p in directory.glob("*.seg")))
        self._file: BinaryIO | None = None
        self._written = 0
        self._next = self._segments[-1] + 1 if self._segments else 0
        #: Bytes written since the last :meth:`sync`; a new segment's name is unsynced until then too.
        self.unsynced = 0
        self._new_name = False

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def load(self) -> list[tuple[int, Message]]:
        """What a previous run left, oldest first, each with its segment's number."""
        found: list[tuple[int, Message]] = []
        for segment in self._segments:
            data = self._path(segment).read_bytes()
            at = 0
            while at + _HEADER.size <= len(data):
                key_len, value_len = _HEADER.unpack_from(data, at)
                start, end = at + _HEADER.size, at + _HEADER.size + key_len + value_len
                if end > len(data):
                    break  # cut short by a crash: never acknowledged to anybody
                found.append((segment, (data[start : start + key_len], data[start + key_len : end])))
                at = end
        return found

    def append(self, key: bytes, value: bytes) -> int:
        """Write one message (to the kernel: it survives the process); the number of its segment."""
        if self._file is None or self._written >= self.segment_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(_HEADER.pack(len(key), len(value)) + key + value)
        self._file.flush()
        self._written += _HEADER.size + len(key) + len(value)
        self.unsynced += _HEADER.size + len(key) + len(value)
        return self._segments[-1]

    def sync(self) -> bool:
        """Put what was written on the disk (``fsync``), and a new segment's name; true if there was any."""
        if not self.unsynced and not self._new_name:
            return False
        if self._file is not None:
            os.fsync(self._file.fileno())
        if self._new_name:
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self.unsynced, self._new_name = 0, False
        return True

    def _rotate(self) -> None:
        if self._file is not None:
            self.sync()  # the segment being closed: synced before the next one begins
            self._file.close()
        segment, self._next = self._next, self._next + 1
        self._segments.append(segment)
        self._file = self._path(segment).open("ab")
        self._written = 0
        self._new_name = True

    def release(self, oldest: int | None) -> None:
        """Delete the segments before ``oldest`` (the oldest queued message's segment); all if None."""
        while self._segments and (oldest is None or self._segments[0] < oldest):
            segment = self._segments.popleft()
            if self._file is not None and not self._segments:
                self._file.close()
                self._file = None
            self._path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        """Sync and close the segment being written; the files stay for the next run."""
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None


class Spool:
    """A FIFO of at most ``size`` messages; ``put`` never waits, and when full drops the oldest, counted.

    With a ``disk`` log the messages are on disk too (at most ``max_bytes`` of them: past that the
    oldest are dropped, counted), and what a previous run left is queued first.
    """

    def __init__(
        self,
        size: int,
        metrics: Metrics,
        policy: SpoolPolicy | None = None,
        disk: SpoolLog | None = None,
        max_bytes: int = 0,
    ) -> None:
        self.size = size
        self.policy = policy or SpoolPolicy()
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        self._segments: deque[int] = deque()  # with a log: each queued message's segment
        self._disk = disk
        self.max_bytes = max_bytes
        self._bytes = 0
        self._ready = asyncio.Event()
        self._head_dropped = 0  # messages of the batch in flight that ``put`` dropped meanwhile
        self.problem: str | None = None
        self.sync_every = SYNC_EVERY
        #: Set each time the disk log was synced while running.
        self.synced = asyncio.Event()
        if disk is not None:
            for segment, (key, value) in disk.load():
                self._enqueue(key, value, segment)
            disk.release(self._segments[0] if self._segments else None)
            if self._queue:
                self._ready.set()
                log.info("spool_recovered", messages=len(self._queue), directory=str(disk.directory))

    @classmethod
    def configured(cls, size: int, metrics: Metrics, state_dir: Path | None, max_bytes: int) -> Spool:
        """A spool of ``size`` messages, on disk too (``state_dir/spool``) if given and ``max_bytes`` > 0."""
        if state_dir is None or max_bytes <= 0:
            return cls(size, metrics)
        segment = min(1 << 20, max(max_bytes // 16, 4096))  # a crash may send one segment's worth again
        return cls(size, metrics, disk=SpoolLog(state_dir / "spool", segment), max_bytes=max_bytes)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def left_behind(self) -> str:
        """What becomes of messages still queued at shutdown."""
        return (
            "lost: the spool lives in memory"
            if self._disk is None
            else "kept on disk: sent after the restart"
        )

    def close(self) -> None:
        """Close the disk log, if any; what it holds stays for the next run."""
        if self._disk is not None:
            self._disk.close()

    def put(self, key: bytes, value: bytes) -> None:
        """Queue a message; if the spool is full the oldest message is dropped and counted."""
        segment = self._disk.append(key, value) if self._disk is not None else 0
        self._enqueue(key, value, segment)
        self._ready.set()

    def _enqueue(self, key: bytes, value: bytes, segment: int) -> None:
        self._queue.append((key, value))
        self._segments.append(segment)
        self._bytes += len(key) + len(value)
        while len(self._queue) > self.size or (self.max_bytes and self._bytes > self.max_bytes):
            self._pop()
            self._head_dropped += 1
            self._metrics.spool_dropped.inc()
        self._metrics.spool_depth.set(len(self._queue))

    def _pop(self) -> None:
        """The oldest message leaves (delivered or dropped); a segment whose messages all left is deleted."""
        key, value = self._queue.popleft()
        self._segments.popleft()
        self._bytes -= len(key) + len(value)
        if self._disk is not None:
            self._disk.release(self._segments[0] if self._segments else None)

    async def run(self, send: SendBatch, stop: asyncio.Event) -> None:
        """Send what is queued, in order, until ``stop``; a failed batch stays queued and is tried again.

        A disk spool is synced meanwhile, every :data:`SYNC_EVERY` seconds that saw writes.
        """
        syncing = asyncio.ensure_future(self._keep_synced(stop)) if self._disk is not None else None
        try:
            await self._send_until(send, stop)
        finally:
            if syncing is not None:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing

    async def _keep_synced(self, stop: asyncio.Event) -> None:
        assert self._disk is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sync_every)
            if self._disk.sync():
                self.synced.set()

    async def _send_until(self, send: SendBatch, stop: asyncio.Event) -> None:
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
            self._pop()
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
