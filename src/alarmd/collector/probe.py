"""The dial test (拨测): an active ICMP echo probe to a circuit's customer equipment, on asyncio.

Socket choice, per address family, tried again on every run until one opens:

1. an unprivileged ping socket (``SOCK_DGRAM`` / ``IPPROTO_ICMP``), allowed when one of the
   process's groups is inside ``net.ipv4.ping_group_range`` (this sysctl also governs ICMPv6);
   the kernel rewrites the echo identifier and only delivers replies to our own requests;
2. a raw socket (``SOCK_RAW``), allowed with ``CAP_NET_RAW`` (e.g. root); it sees every ICMP
   packet of the host, so replies are matched by identifier, sequence, payload and source;
3. neither: every run returns a result whose ``error`` says what to configure, and the
   ``probe_unavailable`` event is logged once per process.

An :class:`IcmpProber` shares one socket per family between all its runs; sequence numbers are
unique per socket, so concurrent runs never take each other's replies.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import random
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, Protocol

import structlog

from alarmd.clock import Clock, SystemClock
from alarmd.config import DialTestConfig
from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.collector")

ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129
ICMP_HEADER_LEN: Final = 8
#: Largest ICMP payload that fits one IPv4 datagram (65535 - 20 IP - 8 ICMP); IPv6 allows 65527.
MAX_PAYLOAD: Final = 65507

_RECV_SIZE: Final = 65536
_DRAIN_BATCH: Final = 256
_PING_GROUP_RANGE: Final = "/proc/sys/net/ipv4/ping_group_range"
#: Send errors that say the target cannot be reached: data about the line, not a fault of ours.
_UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)

Outcome = Literal["ok", "unreachable", "error"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one dial test saw: echo requests sent and answered, loss, round-trip times, and why not."""

    address: str
    sent: int
    received: int
    loss_percent: float
    rtt_min_ms: float | None
    rtt_avg_ms: float | None
    rtt_max_ms: float | None
    error: str | None = None

    @property
    def outcome(self) -> Outcome:
        """``ok`` if any reply came, ``error`` if nothing could be sent, else ``unreachable``."""
        if self.received:
            return "ok"
        return "error" if self.sent == 0 else "unreachable"


class ProbeUnavailableError(Exception):
    """No ICMP socket can be opened; the message says what to configure."""


# --------------------------------------------------------------------------- ICMP wire format


@dataclass(frozen=True, slots=True)
class EchoReply:
    """The fields of an ICMP or ICMPv6 echo reply that identify the request it answers."""

    ident: int
    seq: int
    payload: bytes


def icmp_checksum(data: bytes) -> int:
    """The RFC 1071 Internet checksum of ``data`` (0 for a packet that carries a correct checksum)."""
    if len(data) % 2:
        data += b"\x00"
    # The one's-complement sum does not depend on byte order (RFC 1071 §2(B)): add native 16-bit
    # words at C speed and swap the folded result on a little-endian host.
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if sys.byteorder == "little":
        total = ((total & 0xFF) << 8) | (total >> 8)
    return ~total & 0xFFFF


def build_echo(kind: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP message of type ``kind`` (code 0) with identifier, sequence, payload and checksum."""
    header = bytes((kind, 0, 0, 0)) + (ident & 0xFFFF).to_bytes(2, "big") + (seq & 0xFFFF).to_bytes(2, "big")
    packet = header + payload
    checksum = icmp_checksum(packet)
    return packet[:2] + checksum.to_bytes(2, "big") + packet[4:]


def build_echo_request(ident: int, seq: int, payload: bytes, *, ipv6: bool = False) -> bytes:
    """An echo request; for ICMPv6 the kernel fills in the checksum (it covers a pseudo-header)."""
    if ipv6:
        packet = build_echo(ICMP6_ECHO_REQUEST, ident, seq, payload)
        return packet[:2] + b"\x00\x00" + packet[4:]
    return build_echo(ICMP_ECHO_REQUEST, ident, seq, payload)


def parse_echo_reply(data: bytes, *, ipv6: bool = False, ip_header: bool = False) -> EchoReply | None:
    """The echo reply in ``data`` (after an IPv4 header if ``ip_header``), or ``None`` for anything else."""
    if ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        ihl = (data[0] & 0x0F) * 4
        if ihl < 20 or len(data) < ihl + ICMP_HEADER_LEN or data[9] != socket.IPPROTO_ICMP:
            return None
        data = data[ihl:]
    if len(data) < ICMP_HEADER_LEN or data[1] != 0:
        return None
    if data[0] != (ICMP6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY):
        return None
    if not ipv6 and icmp_checksum(data) != 0:
        return None  # the kernel checks ICMPv6 checksums (pseudo-header) before we see them
    return EchoReply(int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big"), bytes(data[8:]))


# --------------------------------------------------------------------------- sockets


class IcmpSocket(Protocol):
    """The part of :class:`socket.socket` the prober uses, so tests can put a fake network behind it."""

    def fileno(self) -> int:
        """The descriptor the event loop watches for readability."""
        ...

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        """Send one datagram without blocking."""
        ...

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, object]:
        """Receive one datagram without blocking, or raise :class:`BlockingIOError`."""
        ...

    def close(self) -> None:
        """Release the descriptor."""
        ...


@dataclass(frozen=True, slots=True)
class OpenedSocket:
    """A non-blocking ICMP socket and whether it is raw (sees all ICMP, IPv4 header included)."""

    sock: IcmpSocket
    raw: bool


SocketOpener = Callable[[int], OpenedSocket]

_reported: set[str] = set()


def _family_name(family: int) -> str:
    return "ipv6" if family == socket.AF_INET6 else "ipv4"


def _ping_group_range() -> tuple[int, int] | None:
    try:
        with open(_PING_GROUP_RANGE, encoding="ascii") as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        return None
    return low, high


def unavailable_message(family: int, dgram_error: OSError, raw_error: OSError) -> str:
    """The guidance given when neither a ping socket nor a raw socket can be opened."""
    if errno.EAFNOSUPPORT in (dgram_error.errno, raw_error.errno):
        return (
            f"dial test unavailable for {_family_name(family)}: this host has no "
            f"{_family_name(family)} stack ({os.strerror(errno.EAFNOSUPPORT)})"
        )
    gid = os.getegid()
    current = _ping_group_range()
    if current is not None and current[0] <= current[1]:
        low, high = min(current[0], gid), max(current[1], gid)
        shown = f'it is "{current[0]} {current[1]}"'
    else:
        low, high = gid, gid
        shown = f'it is "{current[0]} {current[1]}", which allows no group' if current else "it is unreadable"
    return (
        f"dial test unavailable: cannot open an ICMP socket (ping socket: {dgram_error.strerror}; "
        f"raw socket: {raw_error.strerror}). Allow unprivileged ping for group {gid} with "
        f'`sysctl -w net.ipv4.ping_group_range="{low} {high}"` ({shown}; persist the change '
        f"in /etc/sysctl.d/), or give alarmd CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW; "
        f"docker: --cap-add NET_RAW)."
    )


def open_icmp_socket(family: int) -> OpenedSocket:
    """A non-blocking ping socket if allowed, else a raw socket, else :class:`ProbeUnavailableError`."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        raw = False
    except OSError as dgram_error:
        try:
            sock = socket.socket(family, socket.SOCK_RAW, proto)
            raw = True
        except OSError as raw_error:
            raise ProbeUnavailableError(unavailable_message(family, dgram_error, raw_error)) from None
    sock.setblocking(False)
    return OpenedSocket(sock, raw)


# --------------------------------------------------------------------------- matching replies


@dataclass(slots=True)
class _Echo:
    seq: int
    payload: bytes
    source: bytes  # packed address the reply must come from
    reply: asyncio.Future[float]  # resolves to the monotonic time the reply arrived
    sent_at: float = 0.0
    deadline: float = 0.0  # event-loop time after which the echo counts as lost
    send_error: OSError | None = None


@dataclass(eq=False)
class _Channel:
    """One ICMP socket of one family, shared by concurrent runs; hands each reply to its echo."""

    sock: IcmpSocket
    raw: bool
    ipv6: bool
    ident: int
    clock: Clock
    loop: asyncio.AbstractEventLoop
    pending: dict[int, _Echo] = field(default_factory=dict)
    next_seq: int = field(default_factory=lambda: random.randrange(0x10000))  # noqa: S311 - not a secret
    write_waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def register(self, payload: bytes, source: IpAddress) -> _Echo:
        """A new echo with a sequence number no other in-flight echo on this socket has."""
        if len(self.pending) >= 0x10000:
            raise RuntimeError("65536 echo requests in flight on one socket")
        while self.next_seq in self.pending:
            self.next_seq = (self.next_seq + 1) & 0xFFFF
        seq, self.next_seq = self.next_seq, (self.next_seq + 1) & 0xFFFF
        echo = _Echo(seq, payload, source.packed, self.loop.create_future())
        self.pending[seq] = echo
        return echo

    def forget(self, echo: _Echo) -> None:
        """Stop waiting for ``echo`` (answered, lost or abandoned)."""
        if self.pending.get(echo.seq) is echo:
            del self.pending[echo.seq]
        if not echo.reply.done():
            echo.reply.cancel()

    async def send(self, packet: bytes, sockaddr: tuple[str, int]) -> None:
        """Send one packet, waiting for buffer space if the socket is full."""
        while True:
            try:
                self.sock.sendto(packet, sockaddr)
            except (BlockingIOError, InterruptedError):
                await self._writable()
            else:
                return

    async def _writable(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.write_waiters.append(waiter)
        if len(self.write_waiters) == 1:
            self.loop.add_writer(self.sock.fileno(), self._on_writable)
        await waiter

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        waiters, self.write_waiters = self.write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _on_readable(self) -> None:
        for _ in range(_DRAIN_BATCH):
            try:
                data, sender = self.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a queued ICMP error on a ping socket; its echo just goes unanswered
                log.debug("probe_receive_error", error=str(exc))
                return
            self._deliver(data, sender, self.clock.monotonic())

    def _deliver(self, data: bytes, sender: object, at: float) -> None:
        reply = parse_echo_reply(data, ipv6=self.ipv6, ip_header=self.raw and not self.ipv6)
        if reply is None:
            return
        echo = self.pending.get(reply.seq)
        if echo is None or (self.raw and reply.ident != self.ident) or reply.payload != echo.payload:
            return  # another process's ping, a late or duplicate reply, or a corrupted one
        if _packed(sender) != echo.source:
            return
        del self.pending[reply.seq]
        if not echo.reply.done():
            echo.reply.set_result(at)

    def close(self) -> None:
        """Stop watching the socket, close it and abandon every echo still in flight."""
        self.loop.remove_reader(self.sock.fileno())
        if self.write_waiters:
            self.loop.remove_writer(self.sock.fileno())
        for waiter in self.write_waiters:
            waiter.cancel()
        for echo in list(self.pending.values()):
            self.forget(echo)
        self.sock.close()


def _packed(sender: object) -> bytes | None:
    if not isinstance(sender, tuple) or not sender or not isinstance(sender[0], str):
        return None
    try:
        return ipaddress.ip_address(sender[0].split("%", 1)[0]).packed
    except ValueError:
        return None


# --------------------------------------------------------------------------- the prober


def _result(address: str, sent: int, rtts: list[float], error: str | None) -> ProbeResult:
    received = len(rtts)
    loss = 100.0 if sent == 0 else round(100.0 * (sent - received) / sent, 3)
    if not rtts:
        return ProbeResult(address, sent, received, loss, None, None, None, error)
    ms = [rtt * 1000.0 for rtt in rtts]
    return ProbeResult(
        address,
        sent,
        received,
        loss,
        round(min(ms), 3),
        round(sum(ms) / received, 3),
        round(max(ms), 3),
        error,
    )


def _send_errors(echoes: list[_Echo]) -> str | None:
    failed = [echo.send_error for echo in echoes if echo.send_error is not None]
    if not failed:
        return None
    reasons = sorted({exc.strerror or str(exc) for exc in failed})
    return f"{len(failed)} of {len(echoes)} echo requests could not be sent: {'; '.join(reasons)}"


class IcmpProber:
    """Runs dial tests over one shared ICMP socket per address family; use it within one event loop."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        opener: SocketOpener = open_icmp_socket,
    ) -> None:
        self._metrics = metrics
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._opener = opener
        self._ident = random.randrange(0x10000)  # noqa: S311 - an identifier, not a secret
        self._channels: dict[int, _Channel] = {}

    async def __aenter__(self) -> IcmpProber:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the sockets; runs still in flight see their remaining echoes as lost."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()

    async def run(self, address: str, config: DialTestConfig) -> ProbeResult:
        """A dial test to ``address`` with the count, interval, size and timeout of ``config``."""
        return await self.ping(
            address, count=config.count, interval=config.interval, size=config.size, timeout=config.timeout
        )

    async def ping(
        self,
        address: str,
        *,
        count: int,
        interval: float,
        size: int,
        timeout: float,  # noqa: ASYNC109 - how long each echo waits for its reply, not a deadline
    ) -> ProbeResult:
        """Send ``count`` echo requests of ``size`` bytes, ``interval`` apart, each awaited ``timeout`` s."""
        if count < 1 or not 0 <= size <= MAX_PAYLOAD or interval < 0 or timeout <= 0:
            raise ValueError(
                f"dial test needs count >= 1, 0 <= size <= {MAX_PAYLOAD}, interval >= 0 and timeout > 0"
            )
        result = await self._ping(address, count, interval, size, timeout)
        if self._metrics is not None:
            self._metrics.probe_runs.labels(result.outcome).inc()
        log.info(
            "probe_finished",
            address=address,
            outcome=result.outcome,
            sent=result.sent,
            received=result.received,
            loss_percent=result.loss_percent,
            rtt_avg_ms=result.rtt_avg_ms,
            error=result.error,
        )
        return result

    async def _ping(
        self,
        address: str,
        count: int,
        interval: float,
        size: int,
        timeout: float,  # noqa: ASYNC109 - how long each echo waits for its reply, not a deadline
    ) -> ProbeResult:
        try:
            target: IpAddress = ipaddress.ip_address(address)
        except ValueError:
            return _result(address, 0, [], f"'{address}' is not an IP address")
        if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is not None:
            target = target.ipv4_mapped
        family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
        channel = self._channels.get(family)
        if channel is None:
            try:
                channel = self._open(family)
            except ProbeUnavailableError as exc:
                _report_once(family, str(exc))
                return _result(address, 0, [], str(exc))
        echoes: list[_Echo] = []
        try:
            await self._exchange(
                channel, target, echoes, count=count, interval=interval, size=size, timeout=timeout
            )
        finally:
            for echo in echoes:
                channel.forget(echo)
        rtts = [
            max(0.0, echo.reply.result() - echo.sent_at)
            for echo in echoes
            if echo.reply.done() and not echo.reply.cancelled()
        ]
        error = _send_errors(echoes)
        if error and not rtts and all(_local_failure(echo) for echo in echoes):
            return _result(address, 0, [], error)  # nothing went on the wire, for a reason of ours
        return _result(address, count, rtts, error)

    async def _exchange(
        self,
        channel: _Channel,
        target: IpAddress,
        echoes: list[_Echo],
        *,
        count: int,
        interval: float,
        size: int,
        timeout: float,  # noqa: ASYNC109 - how long each echo waits for its reply, not a deadline
    ) -> None:
        """Send the echo requests ``interval`` apart, then wait for each reply until its own deadline."""
        loop = channel.loop
        sockaddr = (str(target), 0)
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            echo = channel.register(_payload(size), target)
            echoes.append(echo)
            packet = build_echo_request(channel.ident, echo.seq, echo.payload, ipv6=channel.ipv6)
            echo.sent_at = self._clock.monotonic()
            echo.deadline = loop.time() + timeout
            try:
                async with asyncio.timeout(timeout):
                    await channel.send(packet, sockaddr)
            except TimeoutError:
                echo.send_error = OSError(errno.ENOBUFS, "send buffer stayed full")
                channel.forget(echo)
            except OSError as exc:
                echo.send_error = exc
                channel.forget(echo)
        for echo in echoes:
            if echo.send_error is None:
                await asyncio.wait((echo.reply,), timeout=max(0.0, echo.deadline - loop.time()))

    def _open(self, family: int) -> _Channel:
        opened = self._opener(family)
        log.info("probe_socket_opened", family=_family_name(family), kind="raw" if opened.raw else "ping")
        channel = _Channel(
            opened.sock,
            opened.raw,
            family == socket.AF_INET6,
            self._ident,
            self._clock,
            asyncio.get_running_loop(),
        )
        self._channels[family] = channel
        return channel


def _report_once(family: int, message: str) -> None:
    """Log why probing is impossible the first time this process meets that reason."""
    if message not in _reported:
        _reported.add(message)
        log.error("probe_unavailable", family=_family_name(family), error=message)


def _local_failure(echo: _Echo) -> bool:
    """Whether the echo never left this host for a reason of ours (not a routing verdict on the target)."""
    return echo.send_error is not None and echo.send_error.errno not in _UNREACHABLE_ERRNOS


def _payload(size: int) -> bytes:
    """A payload unique to one echo request, so a stale or foreign reply cannot match it."""
    token = os.urandom(8)
    return (token * (size // 8 + 1))[:size]


async def dial_test(
    address: str,
    *,
    count: int,
    interval: float,
    size: int,
    timeout: float,  # noqa: ASYNC109 - how long each echo waits for its reply, not a deadline
    metrics: Metrics | None = None,
) -> ProbeResult:
    """One dial test on a prober of its own; never raises for a network or permission problem."""
    async with IcmpProber(metrics=metrics) as prober:
        return await prober.ping(address, count=count, interval=interval, size=size, timeout=timeout)
