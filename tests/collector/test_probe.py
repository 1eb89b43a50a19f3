"""The dial test: ICMP wire format, reply matching, timeouts and real echo to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from alarmd.collector import probe
from alarmd.collector.probe import (
    ICMP6_ECHO_REPLY,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    EchoReply,
    IcmpProber,
    OpenedSocket,
    ProbeUnavailableError,
    build_echo,
    build_echo_request,
    dial_test,
    icmp_checksum,
    open_icmp_socket,
    parse_echo_reply,
    unavailable_message,
)
from alarmd.config import DialTestConfig
from alarmd.metrics import Metrics

Sockaddr = tuple[str, int]
Reply = tuple[bytes, Sockaddr]
Responder = Callable[[bytes, Sockaddr], list[Reply]]

u16 = st.integers(0, 0xFFFF)


def outcomes(metrics: Metrics) -> dict[str, float]:
    """``alarmd_probe_runs_total`` by outcome."""
    return {
        outcome: metrics.registry.get_sample_value("alarmd_probe_runs_total", {"outcome": outcome}) or 0.0
        for outcome in ("ok", "unreachable", "error")
    }


# --------------------------------------------------------------------------- a fake network


def reply_to(request: bytes, *, ident: int | None = None) -> bytes:
    """The echo reply a host sends for ``request``, optionally with the identifier a ping socket sets."""
    new_ident = int.from_bytes(request[4:6], "big") if ident is None else ident
    return build_echo(ICMP_ECHO_REPLY, new_ident, int.from_bytes(request[6:8], "big"), request[8:])


def ipv4_header(source: str, protocol: int = socket.IPPROTO_ICMP) -> bytes:
    """A 20-byte IPv4 header as a raw socket delivers it (no options; length and checksum unchecked)."""
    return bytes((0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0)) + socket.inet_aton(source) + bytes(4)


class FakeIcmpSocket:
    """An ICMP socket whose network is a function from each request to the datagrams that come back."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.sent: list[tuple[bytes, Sockaddr]] = []
        self.send_errors: deque[OSError | None] = deque()
        self.closed = False
        self._inbox: deque[Reply] = deque()
        self._bell, self._ring = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._bell.setblocking(False)

    def deliver(self, data: bytes, sender: Sockaddr) -> None:
        """Make one datagram readable."""
        if not self.closed:
            self._inbox.append((data, sender))
            self._ring.send(b"!")

    def fileno(self) -> int:
        return self._bell.fileno()

    def sendto(self, data: bytes, address: Sockaddr, /) -> int:
        error = self.send_errors.popleft() if self.send_errors else None
        if error is not None:
            raise error
        self.sent.append((data, address))
        for reply in self.responder(data, address):
            self.deliver(*reply)
        return len(data)

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, object]:
        self._bell.recv(1)  # raises BlockingIOError when nothing is waiting, like the real thing
        return self._inbox.popleft()

    def close(self) -> None:
        self.closed = True
        self._bell.close()
        self._ring.close()


def opener_for(fake: FakeIcmpSocket, *, raw: bool = False) -> Callable[[int], OpenedSocket]:
    return lambda family: OpenedSocket(fake, raw)


def silent(request: bytes, address: Sockaddr) -> list[Reply]:
    return []


def ping_socket_host(request: bytes, address: Sockaddr) -> list[Reply]:
    """A host behind a ping socket: the kernel has replaced our identifier with its own."""
    return [(reply_to(request, ident=0x4242), address)]


@pytest.fixture(autouse=True)
def fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees a process that has not yet reported ``probe_unavailable``."""
    monkeypatch.setattr(probe, "_reported", set())


# --------------------------------------------------------------------------- wire format


@given(ident=u16, seq=u16, payload=st.binary(max_size=300))
def test_checksum_of_a_packet_including_its_checksum_is_zero(ident: int, seq: int, payload: bytes) -> None:
    assert icmp_checksum(build_echo_request(ident, seq, payload)) == 0
    assert icmp_checksum(build_echo(ICMP_ECHO_REPLY, ident, seq, payload)) == 0


@given(st.binary(max_size=300))
def test_checksum_matches_rfc1071_word_by_word(data: bytes) -> None:
    padded = data + b"\x00" * (len(data) % 2)
    total = 0
    for i in range(0, len(padded), 2):
        total += padded[i] << 8 | padded[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    assert icmp_checksum(data) == ~total & 0xFFFF


def test_checksum_known_value() -> None:
    # RFC 1071 §3 example: the words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is 220d.
    assert icmp_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_parser_never_raises(data: bytes, ipv6: bool, ip_header: bool) -> None:
    reply = parse_echo_reply(data, ipv6=ipv6, ip_header=ip_header)
    assert reply is None or isinstance(reply, EchoReply)


@given(ident=u16, seq=u16, payload=st.binary(max_size=200))
def test_parser_reads_back_what_was_built(ident: int, seq: int, payload: bytes) -> None:
    packet = build_echo(ICMP_ECHO_REPLY, ident, seq, payload)
    expected = EchoReply(ident, seq, payload)
    assert parse_echo_reply(packet) == expected
    assert parse_echo_reply(ipv4_header("192.0.2.1") + packet, ip_header=True) == expected
    v6 = build_echo(ICMP6_ECHO_REPLY, ident, seq, payload)
    assert parse_echo_reply(v6, ipv6=True) == expected


@given(payload=st.binary(min_size=1, max_size=64), bit=st.integers(0, 8 * 72 - 1))
def test_parser_refuses_a_reply_with_any_single_bit_flipped(payload: bytes, bit: int) -> None:
    packet = bytearray(build_echo(ICMP_ECHO_REPLY, 7, 9, payload))
    bit %= 8 * len(packet)
    packet[bit // 8] ^= 1 << (bit % 8)
    assert parse_echo_reply(bytes(packet)) is None


def test_parser_ignores_requests_other_protocols_and_short_packets() -> None:
    request = build_echo_request(1, 2, b"abc")
    assert parse_echo_reply(request) is None
    assert parse_echo_reply(reply_to(request)[:7]) is None
    assert (
        parse_echo_reply(ipv4_header("192.0.2.1", socket.IPPROTO_UDP) + reply_to(request), ip_header=True)
        is None
    )
    assert parse_echo_reply(reply_to(request), ipv6=True) is None  # an ICMPv4 reply is not an ICMPv6 one
    assert build_echo_request(1, 2, b"abc", ipv6=True)[2:4] == b"\x00\x00"  # the kernel fills it in


# --------------------------------------------------------------------------- matching and timeouts


async def test_replies_are_matched_by_sequence_and_payload_when_the_kernel_rewrites_the_identifier() -> None:
    fake = FakeIcmpSocket(ping_socket_host)
    async with IcmpProber(opener=opener_for(fake)) as prober:
        result = await prober.ping("192.0.2.10", count=3, interval=0, size=24, timeout=1)
    assert (result.sent, result.received, result.loss_percent, result.error) == (3, 3, 0.0, None)
    assert [len(packet) for packet, _ in fake.sent] == [8 + 24] * 3
    assert {address for _, address in fake.sent} == {("192.0.2.10", 0)}
    assert result.rtt_min_ms is not None and result.rtt_max_ms is not None and result.rtt_avg_ms is not None
    assert 0 <= result.rtt_min_ms <= result.rtt_avg_ms <= result.rtt_max_ms


async def test_concurrent_runs_on_one_socket_do_not_take_each_others_replies() -> None:
    """All replies carry one identifier and come back in reverse order; only the sequence and payload tell."""
    held: list[Reply] = []

    def hold(request: bytes, address: Sockaddr) -> list[Reply]:
        held.append((reply_to(request, ident=0x4242), address))
        return []

    fake = FakeIcmpSocket(hold)
    async with IcmpProber(opener=opener_for(fake)) as prober:
        runs = [
            asyncio.create_task(prober.ping(f"192.0.2.{n}", count=n, interval=0, size=n * 8, timeout=1))
            for n in range(1, 6)
        ]
        async with asyncio.timeout(2):
            while len(held) < sum(range(1, 6)):
                await asyncio.sleep(0)
        for data, sender in reversed(held):
            fake.deliver(data, sender)
            fake.deliver(data, sender)  # duplicates are not counted twice
        results = await asyncio.gather(*runs)
    assert [(r.address, r.sent, r.received) for r in results] == [(f"192.0.2.{n}", n, n) for n in range(1, 6)]


async def test_a_reply_from_the_wrong_host_or_with_the_wrong_payload_is_not_an_answer() -> None:
    def impostor(request: bytes, address: Sockaddr) -> list[Reply]:
        reply = reply_to(request)
        tampered = build_echo(ICMP_ECHO_REPLY, 1, int.from_bytes(request[6:8], "big"), request[8:-1] + b"?")
        return [(reply, ("192.0.2.99", 0)), (tampered, address)]

    async with IcmpProber(opener=opener_for(FakeIcmpSocket(impostor))) as prober:
        result = await prober.ping("192.0.2.10", count=2, interval=0, size=16, timeout=0.05)
    assert (result.received, result.loss_percent, result.outcome) == (0, 100.0, "unreachable")


async def test_a_raw_socket_skips_the_ip_header_and_other_processes_packets() -> None:
    def busy_host(request: bytes, address: Sockaddr) -> list[Reply]:
        ident, seq = int.from_bytes(request[4:6], "big"), int.from_bytes(request[6:8], "big")
        ours = ipv4_header(address[0]) + reply_to(request)
        return [
            (ipv4_header(address[0]) + request, address),  # our own request, seen on loopback
            (ipv4_header(address[0]) + build_echo(ICMP_ECHO_REPLY, ident ^ 1, seq, request[8:]), address),
            (ipv4_header(address[0]) + bytes((3, 1)) + bytes(30), address),  # host unreachable
            (ours[:-1] + bytes((ours[-1] ^ 0xFF,)), address),  # corrupted on the way
            (ours, address),
        ]

    metrics = Metrics()
    async with IcmpProber(opener=opener_for(FakeIcmpSocket(busy_host), raw=True), metrics=metrics) as prober:
        result = await prober.ping("192.0.2.10", count=4, interval=0, size=56, timeout=1)
    assert (result.sent, result.received, result.loss_percent) == (4, 4, 0.0)
    assert outcomes(metrics) == {"ok": 1, "unreachable": 0, "error": 0}


async def test_on_a_raw_socket_a_reply_with_another_identifier_belongs_to_another_process() -> None:
    def other_process(request: bytes, address: Sockaddr) -> list[Reply]:
        ident = int.from_bytes(request[4:6], "big") ^ 0x8000
        return [(ipv4_header(address[0]) + reply_to(request, ident=ident), address)]

    async with IcmpProber(opener=opener_for(FakeIcmpSocket(other_process), raw=True)) as prober:
        result = await prober.ping("192.0.2.10", count=2, interval=0, size=16, timeout=0.05)
    assert (result.received, result.outcome) == (0, "unreachable")


async def test_no_reply_is_data_and_ends_at_the_timeout() -> None:
    metrics = Metrics()
    fake = FakeIcmpSocket(silent)
    started = time.monotonic()
    async with IcmpProber(opener=opener_for(fake), metrics=metrics) as prober:
        result = await prober.ping("192.0.2.10", count=3, interval=0.01, size=8, timeout=0.1)
    elapsed = time.monotonic() - started
    assert result == probe.ProbeResult("192.0.2.10", 3, 0, 100.0, None, None, None, None)
    assert result.outcome == "unreachable"
    assert len(fake.sent) == 3
    assert 0.1 <= elapsed < 1.0
    assert outcomes(metrics) == {"ok": 0, "unreachable": 1, "error": 0}
    assert fake.closed


async def test_a_reply_after_the_timeout_is_lost_and_does_not_confuse_the_next_run() -> None:
    fake = FakeIcmpSocket(silent)

    def slow(request: bytes, address: Sockaddr) -> list[Reply]:
        asyncio.get_running_loop().call_later(0.15, fake.deliver, reply_to(request), address)
        return []

    fake.responder = slow
    async with IcmpProber(opener=opener_for(fake)) as prober:
        late = await prober.ping("192.0.2.10", count=2, interval=0, size=8, timeout=0.05)
        fake.responder = ping_socket_host
        await asyncio.sleep(0.2)  # the late replies arrive now, during the next run
        prompt = await prober.ping("192.0.2.10", count=2, interval=0, size=8, timeout=1)
    assert (late.received, late.loss_percent) == (0, 100.0)
    assert (prompt.sent, prompt.received) == (2, 2)


async def test_a_send_failure_counts_as_lost_and_is_noted() -> None:
    fake = FakeIcmpSocket(ping_socket_host)
    fake.send_errors.extend([None, OSError(errno.EHOSTUNREACH, "No route to host"), None])
    async with IcmpProber(opener=opener_for(fake)) as prober:
        partial = await prober.ping("192.0.2.10", count=3, interval=0, size=8, timeout=1)
        fake.send_errors.extend([OSError(errno.ENETUNREACH, "Network is unreachable")] * 2)
        none = await prober.ping("192.0.2.10", count=2, interval=0, size=8, timeout=1)
    assert (partial.sent, partial.received, partial.loss_percent, partial.outcome) == (3, 2, 33.333, "ok")
    assert partial.error == "1 of 3 echo requests could not be sent: No route to host"
    assert (none.sent, none.received, none.loss_percent, none.outcome) == (2, 0, 100.0, "unreachable")
    assert none.error == "2 of 2 echo requests could not be sent: Network is unreachable"


async def test_a_local_send_refusal_is_an_error_not_a_verdict_on_the_line() -> None:
    fake = FakeIcmpSocket(ping_socket_host)
    fake.send_errors.extend([PermissionError(errno.EPERM, "Operation not permitted")] * 2)
    async with IcmpProber(opener=opener_for(fake)) as prober:
        result = await prober.ping("192.0.2.10", count=2, interval=0, size=8, timeout=1)
    assert (result.sent, result.received, result.outcome) == (0, 0, "error")
    assert result.error == "2 of 2 echo requests could not be sent: Operation not permitted"


async def test_without_an_icmp_socket_every_result_says_what_to_set_and_it_is_logged_once() -> None:
    message = unavailable_message(
        socket.AF_INET,
        PermissionError(errno.EACCES, "Permission denied"),
        PermissionError(errno.EPERM, "Operation not permitted"),
    )

    def refuse(family: int) -> OpenedSocket:
        raise ProbeUnavailableError(message)

    metrics = Metrics()
    with capture_logs() as logs:
        async with IcmpProber(opener=refuse, metrics=metrics) as prober:
            first = await prober.ping("127.0.0.1", count=2, interval=0, size=8, timeout=1)
            second = await prober.run("::1", DialTestConfig())
        async with IcmpProber(opener=refuse) as other:
            third = await other.ping("127.0.0.1", count=1, interval=0, size=8, timeout=1)
    assert first.error == second.error == third.error == message
    assert (first.sent, first.received, first.loss_percent, first.rtt_avg_ms) == (0, 0, 100.0, None)
    assert [entry["error"] for entry in logs if entry["event"] == "probe_unavailable"] == [message]
    assert outcomes(metrics) == {"ok": 0, "unreachable": 0, "error": 2}
    assert "net.ipv4.ping_group_range=" in message
    assert "CAP_NET_RAW" in message


def test_the_guidance_names_a_range_that_keeps_the_groups_already_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(probe, "_ping_group_range", lambda: (100, 200))
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    assert 'ping_group_range="100 1000"' in unavailable_message(socket.AF_INET, denied, denied)
    monkeypatch.setattr(probe, "_ping_group_range", lambda: (1, 0))
    assert 'ping_group_range="1000 1000"' in unavailable_message(socket.AF_INET, denied, denied)
    no_v6 = OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    assert "no ipv6 stack" in unavailable_message(socket.AF_INET6, no_v6, no_v6)


async def test_a_bad_address_is_an_error_result_and_bad_arguments_are_a_bug() -> None:
    def no_socket_needed(family: int) -> OpenedSocket:
        raise AssertionError("a name is not probed")

    async with IcmpProber(opener=no_socket_needed) as prober:
        result = await prober.ping("cpe-17.example", count=1, interval=0, size=8, timeout=1)
        assert (result.outcome, result.error) == ("error", "'cpe-17.example' is not an IP address")
        with pytest.raises(ValueError, match="count >= 1"):
            await prober.ping("127.0.0.1", count=0, interval=0, size=8, timeout=1)


async def test_cancelling_a_run_leaves_the_prober_usable() -> None:
    fake = FakeIcmpSocket(silent)
    async with IcmpProber(opener=opener_for(fake)) as prober:
        run = asyncio.create_task(prober.ping("192.0.2.10", count=5, interval=0, size=8, timeout=10))
        async with asyncio.timeout(2):
            while not fake.sent:
                await asyncio.sleep(0)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        fake.responder = ping_socket_host
        result = await prober.ping("192.0.2.10", count=2, interval=0, size=8, timeout=1)
    assert result.received == 2


# --------------------------------------------------------------------------- real sockets, loopback only


class RecordingSocket:
    """A real ICMP socket that remembers what it sent."""

    def __init__(self, inner: OpenedSocket) -> None:
        self.inner = inner.sock
        self.sent: list[tuple[int, Sockaddr]] = []

    def fileno(self) -> int:
        return self.inner.fileno()

    def sendto(self, data: bytes, address: Sockaddr, /) -> int:
        self.sent.append((len(data), address))
        return self.inner.sendto(data, address)

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, object]:
        return self.inner.recvfrom(bufsize)

    def close(self) -> None:
        self.inner.close()


async def test_loopback_echo_has_no_loss_and_honours_count_and_size() -> None:
    recorded: list[RecordingSocket] = []

    def recording(family: int) -> OpenedSocket:
        opened = open_icmp_socket(family)
        recorded.append(RecordingSocket(opened))
        return OpenedSocket(recorded[-1], opened.raw)

    metrics = Metrics()
    async with IcmpProber(opener=recording, metrics=metrics) as prober:
        result = await prober.ping("127.0.0.1", count=4, interval=0.01, size=100, timeout=2)
    assert (result.address, result.sent, result.received, result.loss_percent, result.error) == (
        "127.0.0.1",
        4,
        4,
        0.0,
        None,
    )
    assert result.rtt_min_ms is not None and result.rtt_avg_ms is not None and result.rtt_max_ms is not None
    assert 0 < result.rtt_min_ms <= result.rtt_avg_ms <= result.rtt_max_ms < 1000
    assert recorded[0].sent == [(8 + 100, ("127.0.0.1", 0))] * 4
    assert outcomes(metrics)["ok"] == 1


async def test_loopback_run_takes_its_settings_from_the_config() -> None:
    async with IcmpProber() as prober:
        result = await prober.run("127.0.0.1", DialTestConfig(count=2, interval=0.01, size=0, timeout=2))
    assert (result.sent, result.received, result.error) == (2, 2, None)


async def test_concurrent_loopback_probes_each_get_exactly_their_own_replies() -> None:
    async with IcmpProber() as shared:
        on_shared = [
            shared.ping(f"127.0.0.{n}", count=n + 1, interval=0.005, size=n * 50, timeout=2)
            for n in range(1, 5)
        ]
        on_own = [dial_test("127.0.0.1", count=3, interval=0.005, size=n, timeout=2) for n in (0, 1, 1400)]
        results = await asyncio.gather(*on_shared, *on_own)
    assert [(r.address, r.sent, r.received) for r in results] == [
        ("127.0.0.1", 2, 2),
        ("127.0.0.2", 3, 3),
        ("127.0.0.3", 4, 4),
        ("127.0.0.4", 5, 5),
        ("127.0.0.1", 3, 3),
        ("127.0.0.1", 3, 3),
        ("127.0.0.1", 3, 3),
    ]


async def test_loopback_ipv6_echo() -> None:
    result = await dial_test("::1", count=2, interval=0.01, size=32, timeout=2)
    if result.error is not None and "no ipv6 stack" in result.error:
        pytest.skip(result.error)
    assert (result.sent, result.received, result.error) == (2, 2, None)


def test_reply_types_are_the_standard_ones() -> None:
    assert (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, ICMP6_ECHO_REPLY) == (8, 0, 129)
