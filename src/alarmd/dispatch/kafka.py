"""The Kafka sink: an idempotent aiokafka producer with ``acks=all`` (the only aiokafka import)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)

from alarmd.config import KafkaConfig
from alarmd.dispatch.outbox import SinkError, SinkReason


def _reason(exc: BaseException) -> SinkReason:
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError):
        return "timeout"
    if isinstance(exc, KafkaConnectionError | NodeNotReadyError):
        return "unavailable"
    if isinstance(exc, KafkaError):
        return "rejected"
    return "internal"


class KafkaSink:
    """Delivers messages to Kafka; ``send`` returns once all in-sync replicas have them."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the cluster (raises ``SinkError`` if it cannot be reached)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            request_timeout_ms=int(self.config.request_timeout * 1000),
            retry_backoff_ms=int(self.config.retry_backoff * 1000),
        )
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise SinkError(_reason(exc), f"{self.config.bootstrap_servers}: {exc}") from None
        self._producer = producer

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Deliver one message and wait for the broker's acknowledgement."""
        if self._producer is None:
            await self.start()
        producer = self._producer
        if producer is None:
            raise SinkError("internal", "producer did not start")
        try:
            await producer.send_and_wait(topic, value=value, key=key)
        except Exception as exc:
            raise SinkError(_reason(exc), f"{topic}: {exc}") from None

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
