"""The trap and INFORM receiver: one UDP socket, a BER fast path for v1/v2c, pysnmp for v3 (USM).

pysnmp's asyncio UDP transport owns the socket.  Its ``datagram_received`` is overridden so that
SNMPv1/v2c datagrams go to :mod:`alarmd.collector.ber` (no pyasn1 objects; ~20x faster) and only
SNMPv3 datagrams reach pysnmp's message dispatcher, which authenticates, decrypts, answers engine
discovery and hands the scoped PDU to :meth:`TrapReceiver._v3_pdu`.  Every notification becomes an
:class:`alarmd.model.Event` on a bounded queue; an INFORM is acknowledged only once its event is
queued, so a full queue makes the sender retransmit instead of losing the INFORM.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import ipaddress
import math
import os
import socket
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import structlog
from pyasn1.codec.ber import encoder as asn1_encoder
from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.proto import errind
from pysnmp.proto import error as pysnmp_error
from pysnmp.proto.api import v2c
from pysnmp.proto.rfc1902 import OctetString
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel

from alarmd.clock import Clock
from alarmd.collector.ber import (
    VERSION_1,
    VERSION_2C,
    VERSION_3,
    BerError,
    Message,
    PduType,
    decode_message,
    decode_pdu,
    encode_response,
    message_version,
)
from alarmd.collector.snmp import AUTH, PRIV
from alarmd.collector.trapdefs import SNMP_TRAP_OID, SYS_UPTIME, TrapDefinitions
from alarmd.config import ConfigError, SnmpV1, SnmpV2c, SnmpV3, TrapsConfig
from alarmd.metrics import Metrics
from alarmd.model import Event, VarBind

log = structlog.get_logger("alarmd.collector.traps")

RejectReason = Literal[
    "unknown_community",
    "unknown_user",
    "auth_failed",
    "source_not_allowed",
    "v3_decrypt_failed",
    "not_a_notification",
    "v1v2c_disabled",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)
SnmpVersion = Literal["1", "2c", "3"]

SNMP_TRAPS: Final = "1.3.6.1.6.3.1.1.5"
SNMP_TRAP_ENTERPRISE: Final = "1.3.6.1.6.3.1.1.4.3.0"
SNMP_TRAP_ADDRESS: Final = "1.3.6.1.6.3.18.1.3.0"
SNMP_TRAP_COMMUNITY: Final = "1.3.6.1.6.3.18.1.4.0"
ENTERPRISE_SPECIFIC: Final = 6
REDACTED: Final = b"<secret>"
UNSPECIFIED: Final = "0.0.0.0"  # noqa: S104 - an agent-addr meaning "unknown", compared against, never bound
LOG_INTERVAL: Final = 10.0

# Python's socket module lacks SO_RCVBUFFORCE; it is 33 on every Linux architecture.
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
_LEVELS: Final = {"noAuthNoPriv": 1, "authNoPriv": 2, "authPriv": 3}
_SOURCE_CACHE_SIZE: Final = 65_536
_V1_NOTIFICATIONS: Final = (PduType.TRAP_V1,)
_V2_NOTIFICATIONS: Final = (PduType.SNMPV2_TRAP, PduType.INFORM_REQUEST)


def v1_to_v2(message: Message) -> tuple[VarBind, ...]:
    """An SNMPv1 Trap-PDU's varbinds in SNMPv2 form (RFC 3584 §3.1); the community is redacted."""
    trap = message.trap
    if trap is None:
        raise BerError("not a v1 Trap-PDU")
    if trap.generic == ENTERPRISE_SPECIFIC:
        trap_oid = f"{trap.enterprise}.0.{trap.specific}"
    elif 0 <= trap.generic < ENTERPRISE_SPECIFIC:
        trap_oid = f"{SNMP_TRAPS}.{trap.generic + 1}"
    else:
        raise BerError(f"generic-trap {trap.generic} is not 0..6")
    present = {vb.oid for vb in message.varbinds}
    tail = [
        vb
        for vb in (
            VarBind(SNMP_TRAP_ADDRESS, "IpAddress", trap.agent_address),
            # The community is a credential: alarmd never lets it travel with the event.
            VarBind(SNMP_TRAP_COMMUNITY, "OctetString", REDACTED),
            VarBind(SNMP_TRAP_ENTERPRISE, "ObjectIdentifier", trap.enterprise),
        )
        if vb.oid not in present
    ]
    return (
        VarBind(SYS_UPTIME, "TimeTicks", trap.timestamp),
        VarBind(SNMP_TRAP_OID, "ObjectIdentifier", trap_oid),
        *message.varbinds,
        *tail,
    )


class _Throttle:
    """Lets one log line per key through every ``interval`` seconds and counts the rest."""

    def __init__(self, clock: Clock, interval: float = LOG_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._next: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def hit(self, key: str) -> int:
        """Count one occurrence; the occurrences to report now (0 while the key is quiet)."""
        self._count[key] = self._count.get(key, 0) + 1
        now = self._clock.monotonic()
        if now < self._next.get(key, float("-inf")):
            return 0
        self._next[key] = now + self._interval
        return self._count.pop(key)

    def pending(self) -> dict[str, int]:
        """Occurrences not yet reported, by key, forgetting them."""
        out, self._count = self._count, {}
        return out


class _ObservedUsm(SnmpUSMSecurityModel):  # type: ignore[misc]
    """pysnmp's USM, remembering why the last incoming message failed and whose engine it was."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Any = None
        self.engine_id: bytes | None = None

    def process_incoming_message(self, *args: Any, **kwargs: Any) -> Any:
        """Process as pysnmp does; keep the error indication or the authoritative engine id."""
        try:
            result = super().process_incoming_message(*args, **kwargs)
        except pysnmp_error.StatusInformation as exc:
            self.failure = exc
            raise
        self.engine_id = bytes(result[0])
        return result


class _Split:
    """Every datagram goes to ``fast_path`` first; only SNMPv3 is handed on to pysnmp."""

    _callback_function: Callable[[Any, Any, bytes], None] | None

    def __init__(self, fast_path: Callable[[bytes, Any], None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)  # type: ignore[call-arg]
        self._fast_path = fast_path

    def datagram_received(self, datagram: bytes, address: Any) -> None:
        """Hand the datagram to the receiver (synchronously, no extra loop hop)."""
        self._fast_path(datagram, address)

    def to_pysnmp(self, datagram: bytes, address: Any) -> None:
        """Process an SNMPv3 datagram in pysnmp's dispatcher, synchronously."""
        if self._callback_function is None:
            raise RuntimeError("transport is not registered with a dispatcher")
        self._callback_function(self, address, datagram)


class _SplitUdpTransport(_Split, udp.UdpAsyncioTransport):  # type: ignore[misc]
    """pysnmp's UDP transport with the fast path in front."""


class _SplitUdp6Transport(_Split, udp6.Udp6AsyncioTransport):  # type: ignore[misc]
    """The IPv6 twin of :class:`_SplitUdpTransport`."""


@dataclass(slots=True)
class _V3Context:
    """What the receiver knows about the v3 datagram pysnmp is processing."""

    source: str
    handled: bool = False


class TrapReceiver:
    """Receives SNMP v1/v2c/v3 traps and INFORMs on one UDP socket and queues them as events."""

    def __init__(
        self,
        config: TrapsConfig,
        credentials: Mapping[str, SnmpV1 | SnmpV2c | SnmpV3],
        definitions: TrapDefinitions,
        metrics: Metrics,
        clock: Clock,
        *,
        engine_id: str | None = None,
        v3_only: bool = False,
        queue: asyncio.Queue[Event] | None = None,
    ) -> None:
        self._config = config
        self.v3_only = v3_only
        self._engine_id = (
            bytes.fromhex(engine_id.removeprefix("0x")) if engine_id else _stable_engine_id(config)
        )
        self._definitions = definitions
        self._metrics = metrics
        self._clock = clock
        self.queue: asyncio.Queue[Event] = (
            queue
            if queue is not None and queue.maxsize == config.queue_size
            else asyncio.Queue(config.queue_size)
        )
        self.port: int | None = None
        self._communities: dict[bytes, set[int]] = {}
        self._users: list[SnmpV3] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._source_ok: dict[str, bool] = {}
        self._take(config, credentials)
        self._throttle = _Throttle(clock)
        self._received = {
            (v, p): metrics.traps_received.labels(v, p)
            for v in get_args(SnmpVersion)
            for p in ("trap", "inform")
        }
        self._rejected = {r: metrics.traps_rejected.labels(r) for r in REJECT_REASONS}
        self._engine: Any = None
        self._usm = _ObservedUsm()
        self._transport: Any = None
        self._levels: dict[tuple[bytes, bytes], int] = {}
        self._v3: _V3Context | None = None
        self._unknown_pdus = 0
        self._sock: socket.socket | None = None

    def _take(self, config: TrapsConfig, credentials: Mapping[str, SnmpV1 | SnmpV2c | SnmpV3]) -> None:
        communities: dict[bytes, set[int]] = {}
        users: list[SnmpV3] = []
        for name in config.credentials:
            creds = credentials.get(name)
            if creds is None:
                raise ConfigError(f"traps.credentials: unknown credentials '{name}'")
            if isinstance(creds, SnmpV3):
                users.append(creds)
            else:
                version = VERSION_1 if isinstance(creds, SnmpV1) else VERSION_2C
                communities.setdefault(creds.community.get_secret_value().encode(), set()).add(version)
        self._communities, self._users = communities, users
        self._networks = [ipaddress.ip_network(c, strict=False) for c in config.allowed_sources]
        self._source_ok = {}

    def update(
        self,
        config: TrapsConfig,
        credentials: Mapping[str, SnmpV1 | SnmpV2c | SnmpV3],
        definitions: TrapDefinitions,
        *,
        v3_only: bool = False,
    ) -> None:
        """Take new communities, v3 users, allowed sources and definitions on the socket already bound."""
        old_users = self._users
        self._take(config, credentials)
        self._config, self._definitions, self.v3_only = config, definitions, v3_only
        if self._engine is not None:
            for creds in old_users:
                for engine in self._user_engines(creds):
                    pysnmp_config.delete_v3_user(
                        self._engine, creds.user, securityEngineId=OctetString(engine)
                    )
            self._levels.clear()
            self._add_users()
        log.info(
            "trap_receiver_updated",
            communities=len(self._communities),
            v3_users=len(self._users),
            allowed_sources=len(self._networks),
            definitions=len(self._definitions),
        )

    def listens_like(self, other: TrapReceiver) -> bool:
        """Whether ``other`` would bind the same address and port (so this one must close first)."""
        mine, theirs = self._config, other._config
        return mine.port != 0 and (mine.host, mine.port) == (theirs.host, theirs.port)

    # ------------------------------------------------------------------ lifecycle

    @property
    def engine_id(self) -> str:
        """The SNMP engine id of alarmd itself, in hex: what v3 INFORM senders discover."""
        return self._engine_id.hex()

    async def start(self) -> None:
        """Bind the socket and start receiving; ``port`` then holds the port actually bound."""
        if any(u.priv_protocol for u in self._users) and importlib.util.find_spec("cryptography") is None:
            raise ConfigError(
                "traps.credentials: SNMPv3 privacy (priv_protocol) needs the 'cryptography' package"
            )
        if self._engine is not None:
            raise RuntimeError("the trap receiver is already started")
        loop = asyncio.get_running_loop()
        sock, granted, forced = self._open_socket()
        self._usm = _ObservedUsm()  # a fresh USM (and engine) per start: no timelines from before
        try:
            with warnings.catch_warnings():
                # With an engine id given, pysnmp keeps snmpEngineBoots in
                # $TMPDIR/__pysnmp/<id>/boots (RFC 3414 wants boots to grow across restarts) and
                # reads it back with open(path).read(), leaking the file: a ResourceWarning.
                warnings.simplefilter("ignore", ResourceWarning)
                self._engine = SnmpEngine(snmpEngineID=OctetString(self._engine_id))
            self._engine.security_models[SnmpUSMSecurityModel.SECURITY_MODEL_ID] = self._usm
            self._add_users()
            ipv6 = sock.family == socket.AF_INET6
            cls = _SplitUdp6Transport if ipv6 else _SplitUdpTransport
            self._transport = cls(self._on_datagram, loop)
            pysnmp_config.add_transport(
                self._engine, udp6.DOMAIN_NAME if ipv6 else udp.DOMAIN_NAME, self._transport
            )
            self._engine.message_dispatcher.register_context_engine_id(
                b"", (v2c.SNMPv2TrapPDU.tagSet, v2c.InformRequestPDU.tagSet), self._v3_pdu
            )
            await loop.create_datagram_endpoint(lambda: self._transport, sock=sock)
        except BaseException:
            sock.close()
            self._close_engine()
            raise
        self.port = sock.getsockname()[1]
        self._sock = sock
        inode, ipv6 = os.fstat(sock.fileno()).st_ino, sock.family == socket.AF_INET6
        self._metrics.traps_socket_drops.set_function(lambda: socket_drops(inode, ipv6))
        log.info(
            "trap_receiver_started",
            listen=f"{self._config.host}:{self.port}",
            receive_buffer_requested=self._config.receive_buffer,
            receive_buffer_granted=granted,
            receive_buffer_forced=forced,
            communities=len(self._communities),
            v3_users=len(self._users),
            engine_id=self.engine_id,
            definitions=len(self._definitions),
        )

    async def stop(self) -> None:
        """Close the socket; datagrams it still holds are handled first, events queued stay in ``queue``."""
        drained = self._drain()
        self._close_engine()
        await asyncio.sleep(0)  # let the transport's close and pysnmp's timer cancellation run
        for key, count in self._throttle.pending().items():
            event, _, reason = key.partition(":")
            log.warning(event, reason=reason or None, count=count, final=True)
        log.info("trap_receiver_stopped", queued=self.queue.qsize(), drained=drained)

    def _drain(self) -> int:
        """Handle what the kernel holds for the socket still unread: a re-bind must not lose it."""
        sock, drained = self._sock, 0
        if sock is None or self._engine is None:
            return 0
        while drained < self._config.queue_size:
            try:
                data, address = sock.recvfrom(65535)
            except OSError:  # BlockingIOError: nothing left
                break
            self._on_datagram(data, address)
            drained += 1
        return drained

    def _close_engine(self) -> None:
        if self._engine is None:
            return
        dispatcher = self._engine.message_dispatcher
        dispatcher.unregister_context_engine_id(b"", (v2c.SNMPv2TrapPDU.tagSet, v2c.InformRequestPDU.tagSet))
        if self._engine.transport_dispatcher is not None:
            self._engine.close_dispatcher()  # closes the transport and its socket, stops pysnmp's timer
        elif self._transport is not None and self._transport.transport is not None:
            self._transport.transport.close()
        self._engine = None
        self._sock = None

    def _open_socket(self) -> tuple[socket.socket, int, bool]:
        host, port = self._config.host, self._config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            requested = self._config.receive_buffer
            forced = False
            if SO_RCVBUFFORCE is not None:
                # Past net.core.rmem_max when the process may (CAP_NET_ADMIN, e.g. root on port 162).
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, requested)
                    forced = True
                except OSError:
                    forced = False
            if not forced:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            # Linux reports twice the size it was given (the other half is bookkeeping).
            usable = granted // 2 if sys.platform.startswith("linux") else granted
            if usable < requested:
                log.warning(
                    "trap_receive_buffer_capped",
                    requested=requested,
                    granted=granted,
                    hint="raise net.core.rmem_max (sysctl) or run with CAP_NET_ADMIN",
                )
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock, granted, forced

    def _user_engines(self, creds: SnmpV3) -> list[bytes]:
        """The engines a user is known under: alarmd's own (INFORMs) and the sender's (traps)."""
        engines = [bytes(self._engine.snmpEngineID)]
        if creds.engine_id is not None:
            engines.append(bytes.fromhex(creds.engine_id.removeprefix("0x")))
        return engines

    def _add_users(self) -> None:
        for creds in self._users:
            kwargs: dict[str, Any] = {}
            if creds.auth_protocol is not None and creds.auth_key is not None:
                kwargs["authProtocol"] = AUTH[creds.auth_protocol]
                kwargs["authKey"] = creds.auth_key.get_secret_value()
            if creds.priv_protocol is not None and creds.priv_key is not None:
                kwargs["privProtocol"] = PRIV[creds.priv_protocol]
                kwargs["privKey"] = creds.priv_key.get_secret_value()
            for engine in self._user_engines(creds):
                key = (engine, creds.user.encode())
                if key in self._levels:
                    log.warning("trap_v3_user_duplicate", user=creds.user, engine_id=engine.hex())
                # INFORMs are sent to alarmd's engine, traps come from the sender's own engine.
                pysnmp_config.add_v3_user(
                    self._engine, creds.user, securityEngineId=OctetString(engine), **kwargs
                )
                self._levels[key] = _LEVELS[creds.level]

    # ------------------------------------------------------------------ the datagram path

    def _on_datagram(self, data: bytes, address: Any) -> None:
        """Every datagram on the socket lands here; nothing raised here may escape into asyncio."""
        source = _host(address)
        try:
            self._handle(data, address, source)
        except Exception as exc:  # a bug must not stop the receiver; say so loudly, count the loss
            self._metrics.traps_malformed.inc()
            if count := self._throttle.hit("trap_failed"):
                log.error("trap_failed", source_address=source, error=repr(exc), count=count, exc_info=True)

    def _handle(self, data: bytes, address: Any, source: str) -> None:
        if self._networks and not self._allowed(source):
            self._reject("source_not_allowed", source, None)
            return
        try:
            version = message_version(data)
            if version == VERSION_3:
                self._v3_datagram(data, address, source)
                return
            self._fast(decode_message(data), address, source)
        except BerError as exc:
            self._malformed(source, exc.reason)

    def _fast(self, message: Message, address: Any, source: str) -> None:
        v1 = message.version == VERSION_1
        version: SnmpVersion = "1" if v1 else "2c"
        if self.v3_only:
            self._reject("v1v2c_disabled", source, version)
            return
        if message.version not in self._communities.get(message.community, ()):
            self._reject("unknown_community", source, version)
            return
        if message.pdu_type not in (_V1_NOTIFICATIONS if v1 else _V2_NOTIFICATIONS):
            self._reject("not_a_notification", source, version)
            return
        inform = message.pdu_type is PduType.INFORM_REQUEST
        varbinds = v1_to_v2(message) if v1 else message.varbinds
        agent = message.trap.agent_address if message.trap is not None else None
        if not self._accept(version, inform, varbinds, source, agent):
            return
        if inform:
            self._transport.transport.sendto(encode_response(message), address)
            self._metrics.informs_acknowledged.inc()

    def _v3_datagram(self, data: bytes, address: Any, source: str) -> None:
        self._usm.failure = None
        self._usm.engine_id = None
        context = self._v3 = _V3Context(source)
        try:
            self._transport.to_pysnmp(data, address)
        except Exception as exc:  # pysnmp does not sort its failures; an unparsable message is ours to count
            self._malformed(source, f"pysnmp: {exc!r}"[:200])
            return
        finally:
            self._v3 = None
        if context.handled:
            return
        verdict = _v3_verdict(self._usm.failure)
        if verdict == "handshake":
            return
        if verdict is None and self._usm.failure is None and self._unknown_pdu():
            verdict = "not_a_notification"
        indication = self._usm.failure.get("errorIndication") if self._usm.failure is not None else None
        if verdict is None:
            self._malformed(source, f"SNMPv3 message not processed ({indication or 'no detail'})")
        else:
            self._reject(verdict, source, "3", detail=str(indication) if indication else None)

    def _unknown_pdu(self) -> bool:
        """Whether pysnmp just counted a PDU no application takes (a v3 GET on the trap port)."""
        (counter,) = self._engine.get_mib_builder().import_symbols("__SNMP-MPD-MIB", "snmpUnknownPDUHandlers")
        now = int(counter.syntax)
        before, self._unknown_pdus = self._unknown_pdus, now
        return now > before

    def _v3_pdu(  # noqa: PLR0917 - pysnmp calls applications with eleven positional arguments
        self,
        snmp_engine: Any,
        message_processing_model: Any,
        security_model: Any,
        security_name: Any,
        security_level: Any,
        context_engine_id: Any,
        context_name: Any,
        pdu_version: Any,
        pdu: Any,
        max_size_response_scoped_pdu: Any,
        state_reference: Any,
    ) -> None:
        """The pysnmp application callback for an authenticated, decrypted v3 notification."""
        context = self._v3
        if context is None:  # cannot happen: pysnmp calls back synchronously from to_pysnmp
            return
        context.handled = True
        source = context.source
        required = self._levels.get((self._usm.engine_id or b"", bytes(security_name)))
        if required is None or int(security_level) < required:
            self._reject("auth_failed", source, "3", detail="security level below the user's")
            return
        try:
            decoded = decode_pdu(asn1_encoder.encode(pdu))
        except BerError as exc:
            self._malformed(source, exc.reason)
            return
        inform = decoded.pdu_type is PduType.INFORM_REQUEST
        if not self._accept("3", inform, decoded.varbinds, source, None):
            return
        if inform:
            response = v2c.apiPDU.get_response(pdu)
            v2c.apiPDU.set_error_status(response, 0)
            v2c.apiPDU.set_error_index(response, 0)
            v2c.apiPDU.set_varbinds(response, v2c.apiPDU.get_varbinds(pdu))
            snmp_engine.message_dispatcher.return_response_pdu(
                snmp_engine,
                message_processing_model,
                security_model,
                security_name,
                security_level,
                context_engine_id,
                context_name,
                pdu_version,
                response,
                max_size_response_scoped_pdu,
                state_reference,
                {},
            )
            self._metrics.informs_acknowledged.inc()

    # ------------------------------------------------------------------ events and accounting

    def _accept(
        self, version: SnmpVersion, inform: bool, varbinds: Sequence[VarBind], source: str, agent: str | None
    ) -> bool:
        """Queue the event for a notification; False when it is malformed or the queue is full."""
        trap_oid: str | None = None
        uptime: int | None = None
        for vb in varbinds:
            if vb.oid == SNMP_TRAP_OID and trap_oid is None and isinstance(vb.value, str):
                trap_oid = vb.value
            elif vb.oid == SYS_UPTIME and uptime is None and isinstance(vb.value, int):
                uptime = vb.value
            elif vb.oid == SNMP_TRAP_ADDRESS and agent is None and vb.type == "IpAddress":
                agent = str(vb.value)
        if trap_oid is None:
            self._malformed(source, "notification without snmpTrapOID.0")
            return False
        definition = self._definitions.get(trap_oid)
        labels = definition.extract(varbinds) if definition is not None else {}
        labels["source_address"] = source
        labels["agent_address"] = agent if agent and agent != UNSPECIFIED else source
        labels["trap"] = definition.name if definition is not None else trap_oid
        event = Event(
            source="inform" if inform else "trap",
            kind=trap_oid,
            at=self._clock.now(),
            labels=labels,
            varbinds=tuple(varbinds),
            uptime=uptime,
            attributes={"snmp_version": version},
        )
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.traps_dropped.inc()
            if count := self._throttle.hit("trap_dropped"):
                log.warning("trap_dropped", queue_size=self.queue.maxsize, count=count, inform=inform)
            return False
        self._received[version, "inform" if inform else "trap"].inc()
        return True

    def _reject(
        self, reason: RejectReason, source: str, version: SnmpVersion | None, detail: str | None = None
    ) -> None:
        self._rejected[reason].inc()
        if count := self._throttle.hit(f"trap_rejected:{reason}"):
            log.warning(
                "trap_rejected",
                reason=reason,
                source_address=source,
                version=version,
                detail=detail,
                count=count,
            )

    def _malformed(self, source: str, detail: str) -> None:
        self._metrics.traps_malformed.inc()
        if count := self._throttle.hit("trap_malformed"):
            log.warning("trap_malformed", source_address=source, detail=detail, count=count)

    def _allowed(self, source: str) -> bool:
        ok = self._source_ok.get(source)
        if ok is None:
            try:
                ip = ipaddress.ip_address(source)
            except ValueError:
                ok = False
            else:
                ok = any(ip in net for net in self._networks)
            if len(self._source_ok) >= _SOURCE_CACHE_SIZE:
                self._source_ok.clear()
            self._source_ok[source] = ok
        return ok


_USM_VERDICTS: Final[dict[type, RejectReason | Literal["handshake"]]] = {
    errind.UnknownSecurityName: "unknown_user",
    errind.AuthenticationFailure: "auth_failed",
    errind.UnsupportedSecurityLevel: "auth_failed",
    errind.DecryptionError: "v3_decrypt_failed",
    errind.UnknownEngineID: "handshake",  # engine id discovery (RFC 3414 §4), answered with a Report
    # Not reported back: a trap older than that engine's last one (a replay, or a reset engine).
    errind.NotInTimeWindow: "auth_failed",
}


def _v3_verdict(failure: Any) -> RejectReason | Literal["handshake"] | None:
    """Why pysnmp's USM refused a message: a rejection reason, a normal handshake step, or unknown."""
    if failure is None:
        return None
    indication = failure.get("errorIndication")
    if indication is errind.unknownSecurityName and not failure.get("msgUserName"):
        return "handshake"  # discovery with an empty user name
    if indication is errind.notInTimeWindow and "oid" in failure:
        return "handshake"  # reported: an INFORM sender resynchronising its clock with ours; it resends
    return _USM_VERDICTS.get(type(indication))


def socket_drops(inode: int, ipv6: bool = False) -> float:
    """The kernel's drop counter of the UDP socket with ``inode`` (``/proc/net/udp``), or NaN if unknown."""
    try:
        table = Path("/proc/net/udp6" if ipv6 else "/proc/net/udp").read_text(encoding="ascii")
    except OSError:
        return math.nan
    wanted = str(inode)
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 13 and fields[9] == wanted:
            return float(fields[12])
    return math.nan


def _stable_engine_id(config: TrapsConfig) -> bytes:
    """An engine id that survives restarts (RFC 3411 format 5, pysnmp's enterprise 20408).

    A v3 INFORM sender caches the receiver's engine id; pysnmp's default changes with every
    process, which would leave long-running senders failing with unknownUserName until they
    rediscover.  This one depends only on the host name and the listen address.
    """
    digest = hashlib.sha256(f"alarmd {socket.gethostname()} {config.listen}".encode()).digest()
    return bytes.fromhex("80004fb805") + digest[:8]


def _host(address: Any) -> str:
    """The sender's IP as text; IPv4-mapped IPv6 addresses become plain IPv4."""
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    if host.startswith("::ffff:") and "." in host:
        return host.removeprefix("::ffff:")
    return host
