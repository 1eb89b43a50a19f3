"""Kafka, the only aiokafka import: the work-order sink and the source of alarms forwarded upstream.

``KafkaSink`` is an idempotent producer with ``acks=all``.  ``KafkaSource`` consumes the
upstream alarm topic in a consumer group, at least once: an offset is committed only after
its message was accepted by the handler or published to the dead-letter topic.

Every client connects as ``kafka.security`` says (``client_options``): PLAINTEXT, TLS, SASL
(SCRAM or PLAIN) or both.  A client that cannot start says why in words that name the
bootstrap servers and the reason (TLS handshake, SASL authentication, refused connection),
never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import aiokafka.coordinator.assignors.roundrobin as kafka_assignors
import aiokafka.coordinator.protocol as group_protocol
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import InvalidProducerEpoch as InvalidProducerEpochError
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    ProducerFenced,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.protocol.metadata import MetadataRequest

from alarmd.config import ConsumedTopic, KafkaConfig
from alarmd.dispatch.joining import JoinStalled, JoinWatch
from alarmd.dispatch.outbox import SinkError, SinkReason
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.dispatch")


def _reason(exc: BaseException) -> SinkReason:
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | TimeoutError):
        return "timeout"
    if isinstance(exc, KafkaConnectionError | NodeNotReadyError):
        return "unavailable"
    if isinstance(exc, KafkaError):
        return "rejected"
    return "internal"


# --------------------------------------------------------------------------- connecting


class KafkaStartError(Exception):
    """A Kafka client could not start; the message names the bootstrap servers and why, never a secret."""

    def __init__(self, reason: SinkReason, message: str) -> None:
        super().__init__(message)
        self.reason: SinkReason = reason


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """The aiokafka keyword arguments every client of ``config`` shares: servers, timeouts, TLS and SASL.

    Raises ``KafkaStartError`` if the TLS material cannot be loaded.
    """
    security = config.security
    options: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "request_timeout_ms": int(config.request_timeout * 1000),
        "retry_backoff_ms": int(config.retry_backoff * 1000),
        "security_protocol": security.protocol,
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(config)
    if security.sasl is not None:
        options["sasl_mechanism"] = security.sasl.mechanism
        options["sasl_plain_username"] = security.sasl.username
        options["sasl_plain_password"] = security.sasl.password.get_secret_value()
    return options


def _ssl_context(config: KafkaConfig) -> ssl.SSLContext:
    tls = config.security.tls
    if tls is None:
        system: ssl.SSLContext = create_ssl_context()
        return system
    password = tls.key_password.get_secret_value() if tls.key_password is not None else ""
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            # "" rather than None: OpenSSL would otherwise prompt on the terminal for an encrypted key
            password=password if tls.cert_file is not None else None,
        )
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
        named = ", ".join(f"{key} {path}" for key, path in files.items() if path)
        raise KafkaStartError(
            "internal", f"{config.bootstrap_servers}: TLS setup failed: cannot load {named}: {detail}"
        ) from None
    context.check_hostname = tls.check_hostname
    return context


async def _start_client(client: Any, config: KafkaConfig, role: str) -> None:
    """Start an aiokafka client; on failure stop it and raise ``KafkaStartError`` saying why."""
    try:
        await client.start()
    except Exception as exc:
        failure = exc
    else:
        return
    with contextlib.suppress(KafkaError, OSError):
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    reason, why = await _diagnose(config, failure)
    raise KafkaStartError(reason, _redact(config, f"{config.bootstrap_servers}: {role}: {why}"))


async def _diagnose(config: KafkaConfig, exc: BaseException) -> tuple[SinkReason, str]:
    """Why a client could not start.

    aiokafka reports only "Unable to bootstrap" and keeps the cause in its own log, so each
    bootstrap server is connected to once more and asked for metadata, as the client does
    (TLS, SASL), and the first failure is put in words.  If every server answers now, the
    original error stands.
    """
    if not isinstance(exc, KafkaConnectionError):
        return _explain(config, exc)
    options = client_options(config)
    servers = _servers(config.bootstrap_servers)
    for host, port in servers:
        conn = None
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id=f"{config.client_id}-diagnosis",
                    request_timeout_ms=options["request_timeout_ms"],
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                config.request_timeout,
            )
            await asyncio.wait_for(conn.send(MetadataRequest([])), config.request_timeout)
        except Exception as probe:
            reason, why = _explain(config, probe)
            return reason, f"{host}:{port}: {why}" if len(servers) > 1 else why
        finally:
            if conn is not None:
                conn.close()
    return _reason(exc), _text(exc)


def _explain(config: KafkaConfig, exc: BaseException) -> tuple[SinkReason, str]:
    """One failure to connect, in words and a reason from the fixed set."""
    refused = _security_words(config, exc)
    if refused is not None:
        return "rejected", refused
    if isinstance(exc, ConnectionRefusedError):
        return "unavailable", "connection refused"
    if isinstance(exc, TimeoutError | KafkaTimeoutError):
        return "timeout", f"no answer within {config.request_timeout:g}s"
    if isinstance(exc, KafkaConnectionError | ConnectionError):
        protocol = config.security.protocol
        expects = {
            "PLAINTEXT": "TLS or SASL",
            "SASL_PLAINTEXT": "TLS",
            "SSL": "no TLS, or SASL, or a client certificate",
            "SASL_SSL": "no TLS, or no SASL, or a client certificate",
        }[protocol]
        return "unavailable", (
            f"{_text(exc)} (the broker closed the connection: does this listener "
            f"expect {expects}? kafka.security.protocol is {protocol})"
        )
    return _reason(exc), _text(exc)


def _security_words(config: KafkaConfig, exc: BaseException) -> str | None:
    """A TLS handshake or SASL authentication failure in words; ``None`` if ``exc`` is neither."""
    sasl = config.security.sasl
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc.strerror or type(exc).__name__}"
    if isinstance(exc, SaslAuthenticationFailed) and sasl is not None:
        return (
            f"SASL authentication failed for user '{sasl.username}' ({sasl.mechanism}): "
            f"{_broker_message(exc)}"
        )
    if isinstance(exc, UnsupportedSaslMechanismError) and sasl is not None:
        return f"SASL mechanism {sasl.mechanism} is not enabled on the broker's listener"
    return None


def _text(exc: BaseException) -> str:
    """``Type: message`` of an exception, without saying the type twice (aiokafka's own ``str`` has it)."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


def _broker_message(exc: KafkaError) -> str:
    """The broker's own words of a broker error, without aiokafka's ``[Error 58] Name:`` prefix."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (9092 if no port; IPv6 in brackets) as pairs."""
    servers = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit() or (host.count(":") and not host.endswith("]")):
            host, port = item.strip(), "9092"
        servers.append((host.strip("[]"), int(port)))
    return servers


def _redact(config: KafkaConfig, text: str) -> str:
    """``text`` with every secret of ``config`` replaced by ``<secret>``."""
    security = config.security
    secrets = [security.sasl.password if security.sasl else None]
    secrets.append(security.tls.key_password if security.tls else None)
    for secret in secrets:
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "<secret>")
    return text


# --------------------------------------------------------------------------- work orders out


class KafkaSink:
    """Delivers messages to Kafka; ``send`` returns once all in-sync replicas have them.

    ``batch_bytes`` bounds one partition's batch in a produce request.  A producer has one
    request in flight per broker, each waiting for the in-sync replicas (``acks=all``), so
    its throughput is at most a batch per partition per round trip: a bulk sender (a
    collector's events) takes :data:`BULK_BATCH_BYTES`, or a loaded cluster's round trips
    of a second or more cap it at a few hundred messages a second.
    """

    def __init__(self, config: KafkaConfig, *, batch_bytes: int = 16384) -> None:
        self.config = config
        self.batch_bytes = batch_bytes
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the cluster (raises ``SinkError`` naming the servers and why if it cannot)."""
        try:
            producer = AIOKafkaProducer(
                **client_options(self.config),
                client_id=self.config.client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=0,
                max_batch_size=self.batch_bytes,
            )
            await _start_client(producer, self.config, "producer")
        except KafkaStartError as exc:
            raise SinkError(exc.reason, str(exc)) from None
        self._producer = producer

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Deliver one message and wait for the broker's acknowledgement."""
        producer = await self._started()
        try:
            # aiokafka retries an unreachable broker without end; bound the wait so that the outage is
            # seen (metric, log) and the dispatcher's backoff applies.  A late delivery of this attempt
            # is an exact duplicate, which consumers drop by work_order_id.
            await asyncio.wait_for(
                producer.send_and_wait(topic, value=value, key=key, headers=list(headers)),
                self.config.request_timeout * 2,
            )
        except Exception as exc:
            raise self._failed(topic, exc) from None

    async def send_many(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Deliver ``(key, value)`` messages in one go; returns once all are acknowledged, else raises."""
        await self.send_to_partitions(topic, [(None, key, value) for key, value in messages])

    async def send_to_partitions(
        self, topic: str, records: Sequence[tuple[int | None, bytes, bytes | None]]
    ) -> None:
        """Deliver ``(partition, key, value)`` records and wait until all are acknowledged.

        A partition ``None`` is chosen by key; a value ``None`` is a tombstone.
        """
        producer = await self._started()
        acked: asyncio.Future[list[Any]] | None = None
        try:
            futures = [
                await producer.send(topic, value=value, key=key, partition=partition)
                for partition, key, value in records
            ]
            acked = asyncio.gather(*futures)
            await asyncio.wait_for(asyncio.shield(acked), self.config.request_timeout * 2)
        except Exception as exc:
            raise self._failed(topic, exc) from None
        finally:
            if (
                acked is not None and not acked.done()
            ):  # given up on (timeout, shutdown): its outcome is not asked
                acked.add_done_callback(_outcome_unasked)

    async def _started(self) -> AIOKafkaProducer:
        """The producer, connected first if it is not yet."""
        if self._producer is None:
            await self.start()
        if self._producer is None:
            raise SinkError("internal", "producer did not start")
        return self._producer

    def _failed(self, topic: str, exc: Exception) -> SinkError:
        """A delivery to ``topic`` that failed, as the error the dispatcher handles (credentials redacted)."""
        return SinkError(_reason(exc), _redact(self.config, f"{topic}: {str(exc) or type(exc).__name__}"))

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


# --------------------------------------------------------------------------- transactions


class FencedError(Exception):
    """Another producer took this transactional id (a newer owner of the partition): commit nothing more."""


OutRecord = tuple[str, int | None, bytes, bytes | None, Sequence[tuple[str, bytes]]]
"""``(topic, partition, key, value, headers)``: partition None is chosen by key, value None is a tombstone."""


class KafkaTransactions:
    """One transactional producer: each :meth:`commit` makes its records and consumed offsets visible at once.

    :meth:`start` registers ``transactional_id`` with the transaction coordinator
    (``InitProducerId``), which aborts the open transaction of any earlier producer of that
    id and fences it: from then on every request of the earlier producer is refused with
    ``PRODUCER_FENCED`` / ``INVALID_PRODUCER_EPOCH``, raised here as ``FencedError``.  The
    consumed offsets go in with ``TxnOffsetCommit`` (aiokafka 0.14 sends version 0: group id
    only, no generation), so fencing relies on one transactional id per input partition.

    A transaction that fails is aborted and the producer dropped (a failed send leaves
    aiokafka's sequence numbers out of step with the broker's, so it could never commit
    again): the id must be taken again (:meth:`start`) by a fresh producer before the next
    commit.  Taking it fences whoever holds it, so the caller decides when that is safe;
    :attr:`aborted` says whether the abort went through (the id was this producer's a moment
    ago) or the outcome is unknown.
    """

    def __init__(self, config: KafkaConfig, transactional_id: str, *, timeout: float = 60.0) -> None:
        self.config = config
        self.transactional_id = transactional_id
        self._timeout_ms = int(timeout * 1000)
        self._producer: AIOKafkaProducer | None = None
        #: The last failed transaction was aborted (not lost): the id was held until then.
        self.aborted = False

    async def start(self) -> None:
        """Connect and take the transactional id (fencing its previous holder); raises ``SinkError``."""
        self.aborted = False
        try:
            producer = AIOKafkaProducer(
                **client_options(self.config),
                client_id=f"{self.config.client_id}-{self.transactional_id}",
                acks="all",
                enable_idempotence=True,
                transactional_id=self.transactional_id,
                transaction_timeout_ms=self._timeout_ms,
                linger_ms=0,
            )
            await _start_client(producer, self.config, "transactional producer")
        except KafkaStartError as exc:
            raise SinkError(exc.reason, str(exc)) from None
        self._producer = producer
        try:
            # An empty transaction waits for InitProducerId: once it returns, the id is ours.
            await self._bounded(self._empty(producer))
        except FencedError:
            raise
        except SinkError:
            await self.stop()
            raise

    async def _empty(self, producer: AIOKafkaProducer) -> None:
        await producer.begin_transaction()
        await producer.commit_transaction()

    @property
    def ready(self) -> bool:
        """The id is held: :meth:`commit` may be called."""
        return self._producer is not None

    async def commit(
        self, records: Sequence[OutRecord], offsets: dict[tuple[str, int], int], group_id: str
    ) -> None:
        """Send ``records`` and commit ``offsets`` (next offset to read) for ``group_id`` in one transaction.

        Raises ``FencedError`` if a newer producer holds the id, ``SinkError`` for anything
        else; in both cases nothing of this transaction becomes visible (it is aborted, or
        the producer is dropped and the coordinator aborts it when the id is taken again).
        """
        producer = self._producer
        if producer is None:
            raise SinkError("internal", f"{self.transactional_id}: the id must be taken again first")
        try:
            await self._bounded(self._transaction(producer, records, offsets, group_id))
        except SinkError:
            try:
                await self._bounded(producer.abort_transaction())
            except SinkError:
                await self.stop()  # outcome unknown: the coordinator aborts it when the id is taken again
                raise
            # The abort went through.  A send that failed leaves the producer's sequence numbers
            # out of step with the broker's, and every later transaction would fail with
            # OutOfOrderSequenceNumber: a fresh producer must take the id again, in a new epoch.
            await self.stop()
            self.aborted = True
            raise

    async def _transaction(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[OutRecord],
        offsets: dict[tuple[str, int], int],
        group_id: str,
    ) -> None:
        await producer.begin_transaction()
        futures: list[asyncio.Future[Any]] = []
        try:
            for topic, partition, key, value, headers in records:
                futures.append(
                    await producer.send(
                        topic, value=value, key=key, partition=partition, headers=list(headers)
                    )
                )
        except BaseException:  # fenced or timed out halfway: the outcomes of what went are not asked
            for future in futures:
                future.add_done_callback(_outcome_unasked)
            raise
        for result in await asyncio.gather(*futures, return_exceptions=True):  # every outcome retrieved
            if isinstance(result, BaseException):
                raise result
        if offsets:
            await producer.send_offsets_to_transaction(
                {TopicPartition(topic, partition): offset for (topic, partition), offset in offsets.items()},
                group_id,
            )
        await producer.commit_transaction()

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a transaction step within twice the request timeout, mapping errors to Fenced/SinkError."""
        try:
            await asyncio.wait_for(work, self.config.request_timeout * 2)
        except (ProducerFenced, InvalidProducerEpochError) as exc:
            raise FencedError(f"{self.transactional_id}: {_text(exc)}") from None
        except Exception as exc:
            detail = _redact(self.config, f"{self.transactional_id}: {_text(exc)}")
            raise SinkError(_reason(exc), detail) from None

    async def stop(self) -> None:
        """Disconnect; a transaction left open is aborted by the coordinator (timeout or the next holder)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.config.request_timeout)


# --------------------------------------------------------------------------- upstream alarms in


def _heartbeat_ms(session_ms: int) -> int:
    """A group member's heartbeat: short, so that the others learn of a member's leaving within half a second.

    A member hears of a rebalance only in a heartbeat's answer; with Kafka's usual third of
    the session timeout, a clean stop would wait seconds before the others take over.
    """
    return max(min(session_ms // 3, 500), 100)


def _outcome_unasked(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of deliveries no one waits for any more, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


BULK_BATCH_BYTES = 256 * 1024
"""A bulk sender's batch per partition: a quarter of a produce request's default 1 MiB cap."""


async def _partition_counts(admin: Any, names: list[str], within: float) -> dict[str, int]:
    """Each topic's partition count, waiting (up to ``within`` s) for a just-created topic to show them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        if all(found.get(n) for n in names) or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


Assignment = Callable[[set[int]], None]
"""Told the partition numbers of a topic that this member now owns."""


Restore = Callable[[set[int], bool], Awaitable[None]]
"""Told the partitions now owned, and whether this member took part in every generation since its
last assignment (if not, a partition it keeps may have been another member's in between).  The
assignment is taken once it returns (state is restored meanwhile): aiokafka fetches the new
partitions already, and :class:`KafkaSource` holds their records back and reads them again then."""


def _generation_of(consumer: Any) -> int | None:
    """The group generation a consumer is in, or None if unknown.

    aiokafka 0.14 keeps it on its coordinator (``consumer._coordinator.generation``, set from
    the JoinGroup answer before the assignment is handed to the listener) and has no public
    accessor for it.
    """
    generation = getattr(getattr(consumer, "_coordinator", None), "generation", None)
    return generation if isinstance(generation, int) and generation >= 0 else None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the owner each new assignment of one topic's partitions."""

    def __init__(
        self,
        on_assign: Assignment,
        restore: Restore | None = None,
        revoking: Callable[[], None] | None = None,
        watch: JoinWatch | None = None,
        generation: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._on_assign = on_assign
        self._restore = restore
        self._revoking = revoking
        self._watch = watch
        self._generation = generation
        #: The generation of the last assignment taken (None before the first, or unknown).
        self._last: int | None = None
        #: What the last restore raised (None if it succeeded): the owner is to leave and join again.
        self.failed: Exception | None = None
        #: Partitions whose assignment is restored and handed over: only their records are handled.
        self.taken: set[int] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        """The next ``on_partitions_assigned`` says what stays; ``revoking`` is told that it may change."""
        if self._watch is not None:
            self._watch.waiting()
        if self._revoking is not None:
            self._revoking()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Hand the new assignment over as partition numbers (and wait for the restore, if any)."""
        if self._watch is not None:
            self._watch.assigned()  # the restore that follows is not part of the join
        partitions = {tp.partition for tp in assigned}
        self.taken &= partitions  # aiokafka fetches the new ones while they are restored
        generation = self._generation()
        # Only the generation right after the last one taken proves nobody else held a kept partition.
        unbroken = generation is not None and self._last is not None and generation == self._last + 1
        self._last = generation
        if self._restore is not None:
            try:
                await self._restore(partitions, unbroken)
            except Exception as exc:  # aiokafka would log it and fetch the partitions unrestored
                self.failed = exc
                log.warning(
                    "partitions_restore_failed",
                    partitions=sorted(partitions),
                    error=f"{type(exc).__name__}: {exc}",
                    action="leave the group and join again",
                )
                return
        self.taken = partitions
        self._on_assign(partitions)


MessageHandler = Callable[[bytes, bytes | None], Awaitable[None]]
"""``handle(payload, key)``: returns once the message is accepted, raises if it is not."""

RejectionOf = Callable[[Exception], tuple[str, str] | None]
"""Given what ``handle`` raised: ``(reason, detail)`` if the message itself is bad, else ``None``."""

DEAD_LETTER_DETAIL_BYTES = 1024
HELD_BACK_WAIT = 0.1
"""Seconds to wait before fetching again the records of a partition still being restored."""
STOP_GRACE = 3.0
"""Seconds a commit or dead-letter publish in flight may still take once ``stop`` is set."""
T = TypeVar("T")


class _Stopped(Exception):
    """``stop`` was set while waiting on the broker."""


class _RestoreFailed(Exception):
    """The restore of a new assignment failed: nothing of it is handled; the member joins again."""


class ConsumeStopped(Exception):
    """Raised by a handler that gives up as intake stops: its message stays uncommitted, ``run`` returns."""


class _HandlerFailed(Exception):
    """The handler raised something that is not the message's fault."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class KafkaSource:
    """Consumes the upstream alarm topic in a consumer group and hands each message to ``handle``.

    Delivery is at least once.  Auto-commit is off; after a fetched batch (and after
    ``before_commit``, if given, returns) the offsets of the messages that are done are
    committed, where done means ``handle`` returned, or ``handle`` raised an error that
    ``rejection_of`` maps to ``(reason, detail)`` and the original bytes were acknowledged
    on the dead-letter topic (idempotent producer, ``acks=all``).  Any
    other exception from ``handle`` commits what was done before it, logs
    ``upstream_handler_failed`` and propagates out of ``run``: the message stays uncommitted
    and is delivered again after a restart.  A broker that is unreachable (at start or
    later) is retried with exponential backoff and logged; ``stop`` ends the waiting, and
    whatever was fetched but not committed is delivered again next time.  With ``commit``
    the offsets done (partition → next offset) are handed to it instead, to be committed in
    the caller's transactions (``KafkaTransactions``).  With ``on_assign``, ``join_timeout``
    and ``group`` (its metrics label) a join or rebalance that brings no assignment in time
    makes the member leave and join again (:class:`~alarmd.dispatch.joining.JoinWatch`).  So
    does an ``on_restore`` that raises (``partitions_restore_failed``): nothing of that
    assignment is handled, and the restore is tried again at the next join.  With
    ``balance`` the group's leader assigns through :class:`BalancedAssignor`, and ``tell``
    is what this member measured of partitions, sent with each join.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        upstream: ConsumedTopic,
        handle: MessageHandler,
        rejection_of: RejectionOf,
        metrics: Metrics,
        *,
        max_batch: int = 100,
        poll_interval: float = 0.5,
        max_backoff: float = 30.0,
        on_assign: Assignment | None = None,
        on_restore: Restore | None = None,
        on_revoke: Callable[[], None] | None = None,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        commit: Callable[[dict[int, int]], Awaitable[None]] | None = None,
        session_timeout: float | None = None,
        join_timeout: float | None = None,
        group: str | None = None,
        balance: Balance | None = None,
        tell: Tell | None = None,
    ) -> None:
        self.kafka = kafka
        self._balance, self._tell = balance, tell
        self._before_commit = before_commit
        self._commit_with = commit
        self._on_assign = on_assign
        self._on_restore = on_restore
        self._on_revoke = on_revoke
        self._session_ms = int(session_timeout * 1000) if session_timeout else None
        self.upstream = upstream
        self._handle = handle
        self._rejection_of = rejection_of
        self._metrics = metrics
        self._max_batch = max_batch
        self._poll_ms = int(poll_interval * 1000)
        self._base_backoff = max(kafka.retry_backoff, 0.05)
        self._max_backoff = max(max_backoff, self._base_backoff)
        self._consumer: Any = None
        self._producer: Any = None
        self._listener: _Listener | None = None
        self._delay = self._base_backoff
        #: The partition of the message being handled (None before the first).
        self.partition: int | None = None
        #: With ``on_assign``, ``join_timeout`` and ``group``: the wait for an assignment, bounded.
        self.watch = (
            JoinWatch(upstream.group_id, group, join_timeout, metrics)
            if on_assign is not None and join_timeout is not None and group is not None
            else None
        )
        for outcome in ("accepted", "dead_letter"):
            metrics.upstream_received.labels(outcome)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; raises only what ``handle`` raised that is not a bad message."""
        self._delay = self._base_backoff
        try:
            while not stop.is_set():
                try:
                    await self._until(stop, self._connect())
                    await self._consume(stop)
                except _Stopped:
                    return
                except _HandlerFailed as failed:
                    raise failed.original from None
                except JoinStalled:  # logged and counted: join again at once, as a new member
                    await self._disconnect()
                except (KafkaError, OSError, KafkaStartError, _RestoreFailed) as exc:
                    log.warning(
                        "upstream_kafka_unavailable",
                        action="consume",
                        bootstrap_servers=self.kafka.bootstrap_servers,
                        topic=self.upstream.topic,
                        error=_redact(self.kafka, f"{type(exc).__name__}: {exc}"),
                        retry_in=round(self._delay, 3),
                    )
                    await self._disconnect()
                    if await _stopped_within(stop, self._delay):
                        return
                    self._delay = min(self._delay * 2, self._max_backoff)
        finally:
            await self._disconnect()

    def rejoin(self) -> None:
        """Ask the group for a rebalance (nothing if not connected); the member keeps consuming meanwhile.

        aiokafka has no public call for this (Java's ``enforceRebalance``); subscribing again to
        the same topic is its public way: the new subscription makes the member join again, and
        a join from the group's leader makes the broker rebalance the whole group.
        """
        if self._consumer is not None:
            listener = self._listener
            self._consumer.subscribe([self.upstream.topic], **({"listener": listener} if listener else {}))

    async def end_offsets(self) -> dict[int, int]:
        """Every partition's end offset (the last stable one); empty if the brokers cannot say now."""
        consumer = self._consumer
        if consumer is None:
            return {}
        try:
            partitions = consumer.partitions_for_topic(self.upstream.topic) or set()
            ends = await asyncio.wait_for(
                consumer.end_offsets([TopicPartition(self.upstream.topic, p) for p in partitions]),
                self.kafka.request_timeout,
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug(
                "end_offsets_unavailable", topic=self.upstream.topic, error=f"{type(exc).__name__}: {exc}"
            )
            return {}
        return {tp.partition: offset for tp, offset in ends.items()}

    async def close(self) -> None:
        """Leave the consumer group and disconnect (``run`` also does this when it returns)."""
        await self._disconnect()

    async def _connect(self) -> None:
        options = client_options(self.kafka)
        group: dict[str, Any] = {}
        if self._session_ms is not None:
            group = {
                "session_timeout_ms": self._session_ms,
                "heartbeat_interval_ms": _heartbeat_ms(self._session_ms),
            }
        consumer = AIOKafkaConsumer(
            **options,
            **group,
            partition_assignment_strategy=_join_protocols(self.upstream.topic, self._balance, self._tell),
            client_id=f"{self.kafka.client_id}-upstream",
            group_id=self.upstream.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        listener = self._listener = (
            _Listener(
                self._on_assign,
                self._on_restore,
                self._on_revoke,
                self.watch,
                generation=lambda: _generation_of(consumer),
            )
            if self._on_assign is not None
            else None
        )
        consumer.subscribe([self.upstream.topic], **({"listener": listener} if listener else {}))
        producer = AIOKafkaProducer(
            **options,
            client_id=f"{self.kafka.client_id}-upstream-dead-letter",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
        )
        self._consumer, self._producer = consumer, producer
        joining = _start_client(consumer, self.kafka, "consumer")
        await (self.watch.within(joining) if self.watch is not None else joining)
        await _start_client(producer, self.kafka, "dead-letter producer")
        log.info(
            "upstream_consumer_started",
            topic=self.upstream.topic,
            group_id=self.upstream.group_id,
            dead_letter_topic=self.upstream.dead_letter_topic,
        )

    async def _disconnect(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        for client in (consumer, producer):
            if client is None:
                continue
            try:
                await client.stop()
            except (KafkaError, OSError) as exc:
                log.warning("upstream_kafka_close_failed", error=f"{type(exc).__name__}: {exc}")

    async def _consume(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=self._poll_ms, max_records=self._max_batch)
            self._delay = self._base_backoff  # the broker answers again: the next outage starts afresh
            if self.watch is not None:
                self.watch.check()  # a rebalance that brings no assignment in time: join again
            if self._listener is not None and self._listener.failed is not None:
                raise _RestoreFailed(str(self._listener.failed))  # the batch is not handled: fetched again
            done: dict[Any, int] = {}
            try:
                await self._process(batch, done, stop)
            except Exception:
                await self._commit_quietly(done, stop)
                raise
            await self._commit(done, stop)

    async def _process(self, batch: dict[Any, list[Any]], done: dict[Any, int], stop: asyncio.Event) -> None:
        """Handle a fetched batch in order, noting in ``done`` the next offset of each partition.

        Records of a partition whose assignment is still being restored are not handled: the
        partition is read again from the first of them once the restore is done.
        """
        held = False
        for tp, records in list(batch.items()):
            if self._listener is not None and tp.partition not in self._listener.taken:
                if tp in self._consumer.assignment():
                    self._consumer.seek(tp, records[0].offset)
                held = True
                del batch[tp]
        if held:
            await asyncio.sleep(HELD_BACK_WAIT)  # the restore goes on meanwhile
        for tp, records in batch.items():
            for record in records:
                if stop.is_set():
                    return
                await self._one(record, stop)
                done[tp] = record.offset + 1

    async def _one(self, record: Any, stop: asyncio.Event) -> None:
        self.partition = record.partition
        try:
            await self._handle(record.value if record.value is not None else b"", record.key)
        except ConsumeStopped:
            raise _Stopped from None
        except Exception as exc:
            rejection = self._rejection_of(exc)
            if rejection is None:
                log.exception(
                    "upstream_handler_failed",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=f"{type(exc).__name__}: {exc}",
                )
                raise _HandlerFailed(exc) from exc
            await self._dead_letter(record, *rejection, stop=stop)
        else:
            self._metrics.upstream_received.labels("accepted").inc()

    async def _dead_letter(self, record: Any, reason: str, detail: str, *, stop: asyncio.Event) -> None:
        headers = [
            ("alarmd-reason", reason.encode()),
            ("alarmd-detail", detail.encode(errors="replace")[:DEAD_LETTER_DETAIL_BYTES]),
            ("alarmd-source-topic", record.topic.encode()),
            ("alarmd-source-partition", str(record.partition).encode()),
            ("alarmd-source-offset", str(record.offset).encode()),
        ]
        producer = self._producer
        await self._retrying(
            "dead_letter",
            lambda: producer.send_and_wait(
                self.upstream.dead_letter_topic, value=record.value, key=record.key, headers=headers
            ),
            stop,
        )
        self._metrics.upstream_received.labels("dead_letter").inc()
        log.warning(
            "upstream_dead_letter",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            detail=detail,
            dead_letter_topic=self.upstream.dead_letter_topic,
        )

    async def _commit(self, done: dict[Any, int], stop: asyncio.Event) -> None:
        if not done:
            return
        if self._commit_with is not None:  # the caller commits them (in its transactions)
            await self._commit_with({tp.partition: offset for tp, offset in done.items()})
            return
        if self._before_commit is not None:
            await self._before_commit()
        consumer, offsets = self._consumer, dict(done)
        await self._retrying("commit", lambda: consumer.commit(offsets), stop)

    async def _commit_quietly(self, done: dict[Any, int], stop: asyncio.Event) -> None:
        """Commit the progress made before a failure; a failure here only means more redelivery."""
        try:
            await self._commit(done, stop)
        except (_Stopped, KafkaError, OSError) as exc:
            log.warning("upstream_commit_failed", error=f"{type(exc).__name__}: {exc}")

    async def _retrying(
        self, action: str, attempt: Callable[[], Awaitable[Any]], stop: asyncio.Event
    ) -> None:
        """Retry ``attempt`` with backoff while the broker cannot be reached; give up only on ``stop``."""
        delay = self._base_backoff
        while True:
            try:
                await self._until(
                    stop, asyncio.wait_for(attempt(), self.kafka.request_timeout), grace=STOP_GRACE
                )
            except (TimeoutError, KafkaError) as exc:
                retriable = (
                    not isinstance(exc, KafkaError) or exc.retriable or isinstance(exc, KafkaTimeoutError)
                )
                if not retriable:
                    raise
                log.warning(
                    "upstream_kafka_unavailable",
                    action=action,
                    bootstrap_servers=self.kafka.bootstrap_servers,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                )
                if await _stopped_within(stop, delay):
                    raise _Stopped from None
                delay = min(delay * 2, self._max_backoff)
            else:
                return

    @staticmethod
    async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, T], grace: float = 0.0) -> T:
        """Await ``work``; after ``stop`` allow ``grace`` seconds more, then cancel and raise ``_Stopped``."""
        task = asyncio.ensure_future(work)
        try:
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not task.done() and grace > 0:
                await asyncio.wait({task}, timeout=grace)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _Stopped
        return task.result()


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; true if it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# --------------------------------------------------------------------------- distributed mode


async def ensure_topics(
    config: KafkaConfig, topics: Sequence[tuple[str, int]], *, compacted: Sequence[str] = ()
) -> dict[str, int]:
    """Create the topics that do not exist; the partition count of every topic, as the cluster has it.

    Replication factor is ``kafka.replication_factor`` if set (a cluster with fewer brokers up
    is waited for, within the request timeout), else min(3, brokers up); from three replicas
    on, ``min.insync.replicas=2``.  The topics in ``compacted`` get ``cleanup.policy=compact``.
    Each topic created is logged with its replicas.  A topic that exists with another
    partition count is left as it is and logged (the count is fixed at creation; changing it
    moves keys between partitions and is a migration).
    """
    admin = AIOKafkaAdminClient(**client_options(config), client_id=f"{config.client_id}-admin")
    await _start_client(admin, config, "admin")
    try:
        found = await _create(admin, config, topics, compacted)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaStartError(
            _reason(exc), _redact(config, f"{config.bootstrap_servers}: admin: {_text(exc)}")
        ) from None
    finally:
        await admin.close()
    for name, partitions in topics:
        if found.get(name, partitions) != partitions:
            log.warning(
                "topic_partitions_differ",
                topic=name,
                configured=partitions,
                actual=found[name],
                detail="the partition count is fixed at creation; the topic is used as it is",
            )
    return found


async def _create(
    admin: Any, config: KafkaConfig, topics: Sequence[tuple[str, int]], compacted: Sequence[str]
) -> dict[str, int]:
    """Create what is missing; every topic's partition count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.request_timeout
    missing = dict(topics)
    while missing:
        brokers = len((await admin.describe_cluster())["brokers"])
        replicas = config.replication_factor or min(3, brokers)
        wanted = []
        for name, partitions in missing.items():
            settings = {"min.insync.replicas": "2"} if replicas >= 3 else {}
            if name in compacted:
                settings["cleanup.policy"] = "compact"
            wanted.append(NewTopic(name, partitions, replicas, topic_configs=settings))
        response = await admin.create_topics(wanted)
        short = []  # too few brokers up for the replicas asked: waited for, within the timeout
        for name, code, *rest in response.topic_errors:
            error = for_code(code)
            message = rest[0] if rest and rest[0] else error.__name__
            if error is InvalidReplicationFactorError and loop.time() < deadline:
                short.append(name)
            elif code and error is not TopicAlreadyExistsError:
                raise KafkaStartError(
                    "rejected", f"{config.bootstrap_servers}: creating topic {name}: {message}"
                )
            elif not code:
                log.info(
                    "topic_created",
                    topic=name,
                    partitions=missing[name],
                    replicas=replicas,
                    brokers_up=brokers,
                )
        missing = {name: missing[name] for name in short}
        if missing:
            log.warning(
                "topic_waits_for_brokers", topics=sorted(missing), replicas=replicas, brokers_up=brokers
            )
            await asyncio.sleep(max(config.retry_backoff, 0.2))
    return await _partition_counts(admin, [n for n, _ in topics], config.request_timeout)


Told = dict[str, dict[int, float]]
"""What members measured of partitions (member → partition → value), as each told it with what it holds."""

Balance = Callable[[list[int], dict[str, set[int]], Told], dict[str, set[int]]]
"""``balance(partitions, held, told)``: the topic's partitions shared out among members, given what each held.

``told`` holds only the members that tell measures (the object form of the user data).
"""

Tell = Callable[[], Mapping[int, float]]
"""What this member measured of partitions, told to the leader at its next join."""


class BalancedAssignor:
    """A partition assignor for the group's leader that asks ``balance``; members tell what they hold.

    Offered alone: aiokafka 0.14 sends one JoinGroup per offered protocol, each held by the
    broker for a whole rebalance and each starting the next one (``_join_protocols``).

    A member's user data is JSON: the list of partitions it holds, or, with ``tell``, an
    object ``{"held": [...], "measured": {"<partition>": value}}``.  The leader reads both
    forms, so members of an earlier version (the list) and a later one (the object) can
    share a group during an upgrade: a list tells no measures.
    """

    name = "alarmd-balanced"
    version = 0

    def __init__(self, topic: str, balance: Balance, tell: Tell | None = None) -> None:
        self._topic, self._balance, self._tell = topic, balance, tell
        self._held: list[int] = []

    def metadata(self, topics: Any) -> group_protocol.ConsumerProtocolMemberMetadata:
        """The member's subscription, with the partitions it holds now (and its measures) as user data."""
        said: Any = self._held
        if self._tell is not None:
            said = {"held": self._held, "measured": {str(p): round(v, 3) for p, v in self._tell().items()}}
        data = json.dumps(said).encode()
        return group_protocol.ConsumerProtocolMemberMetadata(self.version, list(topics), data)

    def assign(
        self, cluster: Any, members: Any
    ) -> dict[str, group_protocol.ConsumerProtocolMemberAssignment]:
        """As the group's leader: every member's share of the topic's partitions."""
        held: dict[str, set[int]] = {}
        told: Told = {}
        for member, meta in members.items():
            held[member], measured = _said(meta.user_data)
            if measured is not None:
                told[member] = measured
        partitions = sorted(cluster.partitions_for_topic(self._topic) or ())
        shares = self._balance(partitions, held, told)
        return {
            member: group_protocol.ConsumerProtocolMemberAssignment(
                self.version, [(self._topic, sorted(shares[member]))], b""
            )
            for member in members
        }

    def on_assignment(self, assignment: group_protocol.ConsumerProtocolMemberAssignment) -> None:
        """Remember what this member holds now, for its next join."""
        self._held = sorted(tp.partition for tp in assignment.partitions())


def _said(user_data: bytes | None) -> tuple[set[int], dict[int, float] | None]:
    """A member's user data: the partitions it holds and, in the object form, its measures.

    A member that says nothing usable holds nothing and tells nothing; a measure that is not
    a finite positive number is left out.
    """
    try:
        data = json.loads(user_data or b"[]")
        if isinstance(data, list):
            return {int(p) for p in data}, None
        held = {int(p) for p in data.get("held", [])}
        measured = {int(p): float(v) for p, v in (data.get("measured") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        return set(), None
    return held, {p: v for p, v in measured.items() if 0 < v < math.inf}


def _join_protocols(topic: str, balance: Balance | None, tell: Tell | None = None) -> tuple[Any, ...]:
    """The one assignment protocol a member offers: ``BalancedAssignor`` if it can ``balance``, else Kafka's.

    One, not a preferred one and a fallback: aiokafka 0.14's ``perform_group_join`` sends its
    JoinGroup inside the loop over the assignors (aio-libs/aiokafka#1168), so a member
    offering two sends two JoinGroups per join.  The broker holds the first for a whole
    rebalance, whose assignment the member then drops; the second, with other protocols, starts
    another rebalance, in which every other member joins twice too.  Members joining at once
    can then keep failing each other's SyncGroup (``RebalanceInProgress``, which aiokafka logs
    only at debug level).
    """
    if balance is None:
        return (kafka_assignors.RoundRobinPartitionAssignor,)
    return (BalancedAssignor(topic, balance, tell),)


class KafkaMembership:
    """Membership in a consumer group over a topic, only to learn which of its partitions are ours.

    The topic is created if missing (``partitions`` fixed at creation).  Every rebalance
    calls ``on_assign`` with the partitions now owned.  A member that is silent for
    ``session_timeout`` seconds (killed, stopped, cut off) loses its partitions to the others.
    While the brokers cannot be reached the last assignment stands and joining is retried
    with backoff.  A join (or rebalance) that brings no assignment within ``join_timeout``
    seconds is logged (``group_join_stalled``) and counted, and the member leaves and joins
    again as a new member (:mod:`alarmd.dispatch.joining`).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        group_id: str,
        partitions: int,
        on_assign: Assignment,
        *,
        metrics: Metrics,
        join_timeout: float,
        session_timeout: float = 10.0,
        max_backoff: float = 30.0,
        balance: Balance | None = None,
    ) -> None:
        self.kafka, self.topic, self.group_id, self.partitions = kafka, topic, group_id, partitions
        #: The wait for an assignment, bounded by ``join_timeout``: past it the member joins again.
        self.watch = JoinWatch(group_id, "inventory", join_timeout, metrics)
        self._on_assign = on_assign
        self._session_ms = int(session_timeout * 1000)
        self._balance = balance
        self._base_backoff = max(kafka.retry_backoff, 0.05)
        self._max_backoff = max(max_backoff, self._base_backoff)

    async def run(self, stop: asyncio.Event) -> None:
        """Stay in the group until ``stop``; then leave it, so the others take over at once."""
        delay = self._base_backoff
        strategies = _join_protocols(self.topic, self._balance)
        while not stop.is_set():
            consumer = None
            try:
                await ensure_topics(self.kafka, [(self.topic, self.partitions)], compacted=[self.topic])
                consumer = AIOKafkaConsumer(
                    **client_options(self.kafka),
                    client_id=f"{self.kafka.client_id}-membership",
                    group_id=self.group_id,
                    enable_auto_commit=False,
                    session_timeout_ms=self._session_ms,
                    rebalance_timeout_ms=self._session_ms,
                    heartbeat_interval_ms=_heartbeat_ms(self._session_ms),
                    metadata_max_age_ms=5000,
                    partition_assignment_strategy=strategies,
                )
                consumer.subscribe([self.topic], listener=_Listener(self._on_assign, watch=self.watch))
                await self.watch.within(_start_client(consumer, self.kafka, "membership consumer"))
                log.info("group_joined", topic=self.topic, group_id=self.group_id)
                delay = self._base_backoff
                while not stop.is_set():  # fetching keeps the member alive; the records are not needed here
                    await consumer.getmany(timeout_ms=500, max_records=100)
                    self.watch.check()  # a rebalance that brings no assignment in time: join again
            except JoinStalled:
                continue  # logged and counted; the consumer leaves the group below, a new member joins
            except (KafkaError, OSError, KafkaStartError) as exc:
                log.warning(
                    "group_unavailable",
                    group_id=self.group_id,
                    bootstrap_servers=self.kafka.bootstrap_servers,
                    error=_redact(self.kafka, f"{type(exc).__name__}: {exc}"),
                    retry_in=round(delay, 3),
                )
                if await _stopped_within(stop, delay):
                    return
                delay = min(delay * 2, self._max_backoff)
            finally:
                if consumer is not None:
                    with contextlib.suppress(KafkaError, OSError):
                        await consumer.stop()


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` in a topic of ``partitions`` (murmur2)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def read_compacted(
    config: KafkaConfig, topic: str, partitions: set[int], *, within: float = 30.0
) -> dict[int, dict[bytes, bytes]]:
    """Each partition's latest value per key, read from the start to the end offset at the call.

    Only committed records are read (``read_committed``); a key whose latest record is a
    tombstone is left out.  Raises ``KafkaStartError`` if the brokers cannot be reached and
    ``TimeoutError`` if the end is not reached ``within`` seconds.
    """
    found: dict[int, dict[bytes, bytes]] = {p: {} for p in partitions}
    if not partitions:
        return found
    consumer = await _reader(config, "restore")
    try:
        ends, left = await _from_the_start(consumer, topic, partitions)

        def keep(partition: int, record: Any) -> None:
            if record.value is None:
                found[partition].pop(record.key, None)
            else:
                found[partition][record.key] = record.value

        async with asyncio.timeout(within):
            await _read_to(consumer, {tp: ends[tp] for tp in left}, keep)
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
    return found


#: Records read back at a time by :func:`read_recent`, the newest first.
RECENT_CHUNK = 5000


async def read_recent(
    config: KafkaConfig,
    topic: str,
    group_id: str,
    partitions: set[int],
    *,
    since: float,
    take: Callable[[int, bytes], None],
    most: int,
    within: float,
    chunk: int = RECENT_CHUNK,
) -> tuple[int, set[int]]:
    """Hand ``take(partition, value)`` each record a group has consumed of its partitions since ``since``.

    For each partition, what lies before the group's committed offset back to the first
    record written at or after ``since`` (epoch seconds), at most ``most`` records, is read
    in chunks of ``chunk`` records, the newest chunk first, so that a read cut short by
    ``within`` seconds has the most recent records; what the group is yet to consume is not
    read.  Only committed records are read.  Returns how many were handed over and the
    partitions not read back all the way in time.  Raises ``KafkaStartError`` if the brokers
    cannot be reached or refuse.
    """
    if not partitions:
        return 0, set()
    consumer = await _reader(config, "recent", group_id)
    read = 0

    def counted(partition: int, record: Any) -> None:
        nonlocal read
        if record.value is not None:
            read += 1
            take(partition, record.value)

    wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
    left: set[Any] = set(wanted)  # not read back all the way (yet)
    #: each partition's first offset to read, and the chunk being read: [first, chunk start, chunk end)
    spans: dict[Any, tuple[int, int, int]] = {}
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                consumer.assign(wanted)
                committed = {tp: await consumer.committed(tp) for tp in wanted}
                starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in wanted})
                for tp in wanted:
                    end, found = committed[tp], starts.get(tp)
                    if end is None or found is None or found.offset >= end:
                        left.discard(tp)  # nothing consumed since ``since``
                    else:
                        spans[tp] = (max(found.offset, end - most), end, end)
                while left:
                    for tp in left:  # the next chunk back
                        first, start, _ = spans[tp]
                        spans[tp] = (first, max(first, start - chunk), start)
                        consumer.seek(tp, spans[tp][1])
                    await _read_to(consumer, {tp: spans[tp][2] for tp in left}, counted)
                    left = {tp for tp in left if spans[tp][1] > spans[tp][0]}
    except KafkaError as exc:
        raise KafkaStartError("unavailable", f"{topic}: reading recent input: {exc}") from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
    return read, {tp.partition for tp in left}


async def _read_to(consumer: Any, ends: dict[Any, int], take: Callable[[int, Any], None]) -> None:
    """Read each partition from its position up to its end offset: ``take(partition, record)`` of each."""
    reading = set(ends)
    while reading:
        batch = await consumer.getmany(*reading, timeout_ms=200, max_records=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    take(tp.partition, record)
        for tp in list(reading):
            if await consumer.position(tp) >= ends[tp]:
                reading.discard(tp)


async def _reader(config: KafkaConfig, name: str, group_id: str | None = None) -> Any:
    """A started consumer that reads committed records only; ``group_id`` only to read the group's offsets."""
    consumer = AIOKafkaConsumer(
        **client_options(config),
        client_id=f"{config.client_id}-{name}",
        group_id=group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await _start_client(consumer, config, f"{name} consumer")
    return consumer


async def _from_the_start(
    consumer: Any, topic: str, partitions: Iterable[int]
) -> tuple[dict[Any, int], set[Any]]:
    """Assign the partitions from their beginning: their end offsets now, and those not yet read to it."""
    wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(wanted)
    await consumer.seek_to_beginning(*wanted)
    ends: dict[Any, int] = await consumer.end_offsets(wanted)
    return ends, {tp for tp in wanted if ends[tp] > await consumer.position(tp)}


CompactedRecord = Callable[[int, bytes, bytes | None, float], None]
"""``take(partition, key, value, written_at)`` for each record; ``value`` None is a tombstone."""


async def follow_compacted(
    config: KafkaConfig,
    topic: str,
    partitions: int,
    take: CompactedRecord,
    stop: asyncio.Event,
    *,
    caught_up: Callable[[], None],
) -> None:
    """Read the ``partitions`` of ``topic`` from the start and follow them until ``stop``, without a group.

    Only committed records are read (``read_committed``).  ``caught_up`` is called once every
    partition has been read up to its end offset as it was when reading began.  Raises
    ``KafkaStartError`` if the brokers cannot be reached or reading fails.
    """
    consumer = await _reader(config, "view")
    try:
        ends, behind = await _from_the_start(consumer, topic, range(partitions))
        if not behind:
            caught_up()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    take(tp.partition, record.key or b"", record.value, record.timestamp / 1000)
            if behind:
                for tp in list(behind):
                    if await consumer.position(tp) >= ends[tp]:
                        behind.discard(tp)
                if not behind:
                    caught_up()
    except KafkaError as exc:
        raise KafkaStartError(_reason(exc), _redact(config, f"{topic}: {_text(exc)}")) from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
