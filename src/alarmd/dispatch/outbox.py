"""The outbox: each message is stored (SQLite, WAL) before it is sent, then sent in order until acked."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import structlog

from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.dispatch")
SCHEMA_VERSION = b"1"

SinkReason = Literal["timeout", "unavailable", "rejected", "internal"]


class SinkError(Exception):
    """A send was not acknowledged; ``reason`` is one of a fixed set, for metrics."""

    def __init__(self, reason: SinkReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: SinkReason = reason
        self.detail = detail


class WorkOrderSink(Protocol):
    """Where messages go: returns from ``send`` only once the destination has acknowledged."""

    async def start(self) -> None:
        """Connect."""
        ...

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Deliver one message; raise ``SinkError`` if it was not acknowledged."""
        ...

    async def stop(self) -> None:
        """Flush and disconnect."""
        ...


def headers(kind: str) -> list[tuple[str, bytes]]:
    """The Kafka headers every message of alarmd carries: its type and the schema version."""
    return [("alarmd-type", kind.encode()), ("alarmd-schema-version", SCHEMA_VERSION)]


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message awaiting acknowledgement."""

    id: int
    topic: str
    key: bytes
    value: bytes
    kind: str
    created: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class Outbox:
    """A durable FIFO of messages: added before sending, removed only after acknowledgement."""

    def __init__(self, target: Path | str | sqlite3.Connection) -> None:
        self._owned = not isinstance(target, sqlite3.Connection)
        if isinstance(target, sqlite3.Connection):
            self._db = target
        else:
            if isinstance(target, Path):
                target.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(target), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def add(self, topic: str, key: bytes, value: bytes, kind: str) -> int:
        """Store a message durably; return its id."""
        cur = self._db.execute(
            "INSERT INTO outbox (topic, key, value, kind, created) VALUES (?, ?, ?, ?, ?)",
            (topic, key, value, kind, time.time()),
        )
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = 100) -> list[Message]:
        """The oldest unacknowledged messages, in the order they were added."""
        rows = self._db.execute(
            "SELECT id, topic, key, value, kind, created FROM outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [Message(*row) for row in rows]

    def ack(self, message_id: int) -> None:
        """Forget a message the destination acknowledged.

        The delete is not fsynced on its own (the next durable commit carries it): losing it in
        a power cut means one resend of a message consumers already drop by id, while an fsync
        per acknowledgement would sit on every work order's path to the broker.
        """
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def remove(self, message_ids: Sequence[int]) -> None:
        """Forget several messages at once (committed in a Kafka transaction, or never to be sent)."""
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in message_ids])

    def depth(self) -> int:
        """How many messages wait."""
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest(self) -> float | None:
        """When the oldest waiting message was stored (epoch seconds)."""
        row = self._db.execute("SELECT min(created) FROM outbox").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        """Close the database, if the outbox opened it."""
        if self._owned:
            self._db.close()


class Dispatcher:
    """Sends the outbox in order through a sink, retrying with backoff until each is acknowledged."""

    def __init__(
        self,
        outbox: Outbox,
        sink: WorkOrderSink,
        metrics: Metrics,
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.metrics = metrics
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()  # set while the sender found the outbox empty
        self._started = False
        #: Why the outbox could not be read or written, until a message is acknowledged again.
        self.problem: str | None = None
        self.metrics.outbox_depth.set(outbox.depth())

    async def _store_failed(self, operation: str, exc: sqlite3.Error, delay: float) -> float:
        """Report a failed outbox read or write, wait, and return the next delay."""
        self.problem = f"outbox: {exc}"
        self.metrics.store_errors.labels(operation).inc()
        self.metrics.store_writable.set(0)
        log.error("store_write_failed", operation=operation, error=str(exc), retry_in=delay)
        await asyncio.sleep(delay)
        return min(delay * 2, self.max_backoff)

    def refresh_metrics(self, now: float) -> None:
        """Export the outbox's depth and the age of its oldest message."""
        self.metrics.outbox_depth.set(self.outbox.depth())
        oldest = self.outbox.oldest()
        self.metrics.outbox_age.set(max(0.0, now - oldest) if oldest is not None else 0.0)

    def replace_sink(self, sink: WorkOrderSink) -> WorkOrderSink:
        """Send through ``sink`` from the next message on; return the old sink for the caller to stop.

        The outbox is untouched: a message the old sink had in flight and that was not
        acknowledged is sent again through the new one.
        """
        old, self.sink = self.sink, sink
        self._started = False
        self._wake.set()
        return old

    def submit(self, topic: str, key: bytes, value: bytes, kind: str) -> None:
        """Store a message and wake the sender."""
        self.outbox.add(topic, key, value, kind)
        self.metrics.outbox_depth.set(self.outbox.depth())
        self._empty.clear()
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Everything submitted so far has been acknowledged by the brokers."""
        return self._empty.is_set()

    async def wait_idle(self) -> None:
        """Wait until everything submitted so far is acknowledged."""
        await self._empty.wait()

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.sink.start()
            self._started = True

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set and the outbox is empty (the caller bounds the drain)."""
        delay = self.backoff
        while True:
            try:
                batch = self.outbox.pending()
            except sqlite3.Error as exc:
                delay = await self._store_failed("outbox_read", exc, delay)
                continue
            if not batch:
                self._empty.set()
                if stop.is_set():
                    return
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                _, rest = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in rest:
                    w.cancel()
                continue
            for message in batch:
                try:
                    await self._ensure_started()
                    started = self._monotonic()
                    await self.sink.send(message.topic, message.key, message.value, headers(message.kind))
                except SinkError as exc:
                    self.metrics.kafka_errors.labels(exc.reason).inc()
                    log.warning(
                        "send_failed",
                        reason=exc.reason,
                        detail=exc.detail,
                        retry_in=delay,
                        depth=self.outbox.depth(),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    break
                self.metrics.kafka_latency.observe(self._monotonic() - started)
                try:
                    self.outbox.ack(message.id)
                except sqlite3.Error as exc:
                    # Sent but still in the outbox: it goes again, an exact duplicate consumers drop by id.
                    delay = await self._store_failed("outbox_ack", exc, delay)
                    break
                self.problem = None
                self.metrics.workorders_sent.labels(message.kind).inc()
                self.metrics.outbox_depth.set(self.outbox.depth())
                delay = self.backoff
                log.info(
                    "message_sent",
                    kind=message.kind,
                    topic=message.topic,
                    key=message.key.decode(),
                    queued_seconds=round(time.time() - message.created, 3),
                )
