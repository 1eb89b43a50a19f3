"""Ticketing feedback re-keyed to its fault's owner.

Ticketing produces feedback with its own keys and partitioner, so a message can land on any
correlator.  In the correlator role one correlator reads each feedback message (consumer group
``<correlator_group>.feedback``), finds the work order's fault in the cluster view and sends
the feedback onto the events topic, to the partition of the fault's circuit, as a ``feedback``
envelope whose id hashes the message: the owner of that partition applies it like any other
change (and writes it to the changelog); a redelivered copy is a duplicate there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from alarmd.cluster.codec import Keys, encode_feedback
from alarmd.cluster.view import ClusterView
from alarmd.dispatch.kafka import ConsumeStopped
from alarmd.dispatch.outbox import SinkError
from alarmd.metrics import Metrics
from alarmd.model import TicketFeedback

log = structlog.get_logger("alarmd.cluster")


class PartitionSink(Protocol):
    """Sends records to chosen partitions (``KafkaSink``)."""

    async def send_to_partitions(
        self, topic: str, records: Sequence[tuple[int | None, bytes, bytes | None]]
    ) -> None:
        """Deliver ``(partition, key, value)`` records; ``SinkError`` if the brokers did not take them."""


class RekeyError(Exception):
    """Feedback that cannot be re-keyed; it goes to the feedback dead-letter topic with the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FeedbackRekeyer:
    """Sends each ticketing feedback message to the events partition of its work order's fault.

    A work order whose fault the view does not have yet (the work order went out, its
    changelog record is still on the way) is waited for up to ``wait`` seconds, then
    dead-lettered as ``unknown_alarm``.  A fault that closed lately still has its partition:
    its owner gets the feedback and handles it as ``--role all`` does.
    """

    def __init__(
        self,
        view: ClusterView,
        keys: Callable[[], Keys],
        sink: PartitionSink,
        events_topic: str,
        metrics: Metrics,
        *,
        wait: float,
        backoff: float,
    ) -> None:
        self.view, self._keys, self.sink, self.events_topic = view, keys, sink, events_topic
        self.metrics, self.wait, self.backoff = metrics, wait, max(backoff, 0.05)

    async def handle(self, payload: bytes, key: bytes | None) -> None:
        """Re-key one feedback message; returns once the brokers have it on the events topic."""
        try:
            feedback = TicketFeedback.read(payload)
        except ValueError as exc:
            raise RekeyError("schema", str(exc)) from None
        alarm_id = feedback.work_order_id.removeprefix("WO-")
        found = self.view.where(alarm_id) or await self.view.wait_for(alarm_id, self.wait)
        if found is None:
            if self.view.stopped:
                raise ConsumeStopped  # read again after the restart
            self.metrics.feedback_rekeyed.labels("unknown").inc()
            raise RekeyError(
                "unknown_alarm",
                f"{feedback.work_order_id}: no fault of the cluster has this work order "
                f"(waited {self.wait:g}s for the changelog)",
            )
        partition, alarm = found
        circuit_key = self._keys().of(alarm.labels) if alarm is not None else alarm_id.encode()
        event_id, body = encode_feedback(payload)
        await self._send(partition, circuit_key, body)
        self.metrics.feedback_rekeyed.labels("rekeyed").inc()
        log.info(
            "ticket_feedback_rekeyed",
            alarm_id=alarm_id,
            work_order_id=feedback.work_order_id,
            type=feedback.type,
            partition=partition,
            event_id=event_id,
            closed=alarm is None,
        )

    async def _send(self, partition: int, key: bytes, body: bytes) -> None:
        """Send until the brokers acknowledge; give up (read again later) only when intake stops."""
        delay = self.backoff
        while True:
            try:
                await self.sink.send_to_partitions(self.events_topic, [(partition, key, body)])
            except SinkError as exc:
                if self.view.stopped:
                    raise ConsumeStopped from None
                log.warning("ticket_feedback_not_rekeyed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                return
