"""The trap receiver against Debian's net-snmp `snmptrap` / `snmpinform` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from alarmd.collector import ber
from alarmd.collector.ber import PduType
from alarmd.collector.trapdefs import LabelRule, TrapDefinition, TrapDefinitions, label_value
from alarmd.collector.traps import TrapReceiver
from alarmd.config import ConfigError, SnmpV1, SnmpV2c, SnmpV3, TrapsConfig, YamlDoc, read_yaml
from alarmd.metrics import Metrics
from alarmd.model import Event, VarBind
from alarmd.testing import FakeClock

REPO = Path(__file__).resolve().parents[2]
STANDARD = REPO / "config" / "traps" / "standard.yml"
SENDER_ENGINE = "8000000001020304"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
V3 = [
    "-u",
    "alarmd",
    "-l",
    "authPriv",
    "-a",
    "SHA-256",
    "-A",
    "auth-pass-1",
    "-x",
    "AES",
    "-X",
    "priv-pass-1",
]

CREDENTIALS: Mapping[str, SnmpV1 | SnmpV2c | SnmpV3] = {
    "lines-v2c": SnmpV2c.model_validate({"community": "s3cret-v2"}),
    "legacy-v1": SnmpV1.model_validate({"version": "1", "community": "s3cret-v1"}),
    "ops-v3": SnmpV3.model_validate(
        {
            "version": "3",
            "user": "alarmd",
            "auth_protocol": "sha256",
            "auth_key": "auth-pass-1",
            "priv_protocol": "aes128",
            "priv_key": "priv-pass-1",
            "engine_id": SENDER_ENGINE,
        }
    ),
    "not-for-traps": SnmpV2c.model_validate({"community": "polling-only"}),
}

needs_net_snmp = pytest.mark.skipif(
    shutil.which("snmptrap") is None or shutil.which("snmpinform") is None,
    reason="net-snmp tools missing: apt-get install -y snmp",
)
T = TypeVar("T")


def integration(test: T) -> T:
    """A test against the real receiver on 127.0.0.1, driven by net-snmp."""
    return cast(T, pytest.mark.integration(needs_net_snmp(test)))


class Harness:
    """A started receiver, its metrics, and helpers to drive net-snmp at it."""

    def __init__(self, receiver: TrapReceiver, metrics: Metrics, home: Path) -> None:
        self.receiver = receiver
        self.metrics = metrics
        self.target = f"127.0.0.1:{receiver.port}"
        # keep net-snmp away from /var/lib/snmp and ~/.snmp; no MIBs: every OID here is numeric
        self.env = {**os.environ, "SNMP_PERSISTENT_DIR": str(home), "SNMPCONFPATH": str(home), "MIBS": ""}

    async def run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode is not None
        return proc.returncode, err.decode(errors="replace")

    async def event(self, timeout: float = 5.0) -> Event:
        return await asyncio.wait_for(self.receiver.queue.get(), timeout)

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def rejected(self, reason: str) -> float:
        return self.value("alarmd_traps_rejected_total", reason=reason)

    def received(self, version: str, pdu: str) -> float:
        return self.value("alarmd_traps_received_total", version=version, pdu=pdu)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) for a counter to move: a rejected datagram leaves nothing else to await."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.01)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Start]:
    # pysnmp keeps the engine's boot counter under tempfile.gettempdir(); keep it in the test's directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started: list[TrapReceiver] = []

    async def _start(clock: FakeClock | None = None, **overrides: object) -> Harness:
        fields: dict[str, object] = {
            "listen": "127.0.0.1:0",
            "credentials": ["lines-v2c", "legacy-v1", "ops-v3"],
            **overrides,
        }
        metrics = Metrics()
        receiver = TrapReceiver(
            TrapsConfig.model_validate(fields),
            CREDENTIALS,
            TrapDefinitions.load([STANDARD]),
            metrics,
            clock or FakeClock(),
        )
        await receiver.start()
        started.append(receiver)
        return Harness(receiver, metrics, tmp_path)

    yield _start
    for receiver in started:
        await receiver.stop()


# --------------------------------------------------------------------------- v1, v2c, INFORM


@integration
async def test_v2c_trap_becomes_a_normalised_event(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmptrap", "-v2c", "-c", "s3cret-v2", h.target, "4200", LINK_DOWN,
        f"{IF_INDEX}.7", "i", "7",
        "1.3.6.1.2.1.2.2.1.7.7", "i", "1",
        "1.3.6.1.2.1.2.2.1.8.7", "i", "2",
        "1.3.6.1.2.1.2.2.1.2.7", "s", "GigabitEthernet0/0/7",
    )  # fmt: skip
    assert rc == 0, err
    event = await h.event()
    assert event.source == "trap"
    assert event.kind == LINK_DOWN
    assert event.at == FakeClock().now()
    assert event.uptime == 4200
    assert dict(event.labels) == {
        "source_address": "127.0.0.1",
        "agent_address": "127.0.0.1",
        "trap": "linkDown",
        "if_index": "7",
        "if_admin_status": "1",
        "if_oper_status": "2",
    }
    assert event.varbinds[:2] == (
        VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", 4200),
        VarBind("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", LINK_DOWN),
    )
    assert event.varbinds[-1] == VarBind("1.3.6.1.2.1.2.2.1.2.7", "OctetString", b"GigabitEthernet0/0/7")
    assert h.received("2c", "trap") == 1


@integration
async def test_v1_enterprise_trap_is_converted_to_the_v2_form(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmptrap", "-v1", "-c", "s3cret-v1", h.target,
        "1.3.6.1.4.1.2636.4.1", "10.20.30.40", "6", "17", "98765",
        "1.3.6.1.4.1.2636.3.1.1.0", "s", "fan tray 2",
    )  # fmt: skip
    assert rc == 0, err
    event = await h.event()
    assert event.kind == "1.3.6.1.4.1.2636.4.1.0.17"  # RFC 3584 §3.1: enterprise.0.specific
    assert event.uptime == 98765
    assert event.labels["agent_address"] == "10.20.30.40"
    assert event.labels["source_address"] == "127.0.0.1"
    assert event.labels["trap"] == "1.3.6.1.4.1.2636.4.1.0.17"  # no definition: the OID
    assert event.varbinds == (
        VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", 98765),
        VarBind("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", "1.3.6.1.4.1.2636.4.1.0.17"),
        VarBind("1.3.6.1.4.1.2636.3.1.1.0", "OctetString", b"fan tray 2"),
        VarBind("1.3.6.1.6.3.18.1.3.0", "IpAddress", "10.20.30.40"),
        VarBind("1.3.6.1.6.3.18.1.4.0", "OctetString", b"<secret>"),  # the community never travels
        VarBind("1.3.6.1.6.3.1.1.4.3.0", "ObjectIdentifier", "1.3.6.1.4.1.2636.4.1"),
    )
    assert h.received("1", "trap") == 1


@integration
async def test_v1_generic_link_down_gets_the_standard_trap_oid_and_labels(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmptrap", "-v1", "-c", "s3cret-v1", h.target, "1.3.6.1.4.1.9.1.1", "10.0.0.9", "2", "0", "5",
        f"{IF_INDEX}.3", "i", "3",
    )  # fmt: skip
    assert rc == 0, err
    event = await h.event()
    assert event.kind == LINK_DOWN
    assert (event.labels["trap"], event.labels["if_index"]) == ("linkDown", "3")


@integration
async def test_v2c_inform_is_acknowledged_and_labelled_from_its_definition(start: Start) -> None:
    h = await start()
    # snmpinform exits 0 only when it got the Response
    rc, err = await h.run(
        "snmpinform", "-v2c", "-c", "s3cret-v2", "-t", "2", "-r", "1", h.target, "777",
        "1.3.6.1.2.1.10.18.15.0.1",
        "1.3.6.1.2.1.10.18.6.1.10.12", "i", "64",
        "1.3.6.1.2.1.10.18.6.1.17.12", "t", "700",
    )  # fmt: skip
    assert rc == 0, err
    event = await h.event()
    assert event.source == "inform"
    assert event.labels["trap"] == "dsx1LineStatusChange"
    assert event.labels["dsx1_line_status"] == "64"
    assert event.labels["dsx1_line_index"] == event.labels["if_index"] == "12"
    assert h.received("2c", "inform") == 1
    assert h.value("alarmd_traps_informs_acknowledged_total") == 1


@integration
async def test_inform_is_not_acknowledged_while_the_queue_is_full(start: Start) -> None:
    h = await start(queue_size=1)
    rc, _ = await h.run("snmptrap", "-v2c", "-c", "s3cret-v2", h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.received("2c", "trap") == 1)
    rc, _ = await h.run(
        "snmpinform", "-v2c", "-c", "s3cret-v2", "-t", "0.3", "-r", "1", h.target, "1", LINK_DOWN
    )
    assert rc != 0  # no Response: the sender keeps the INFORM and retries
    await h.until(lambda: h.value("alarmd_traps_dropped_total") == 2)  # the first send and its one retry
    assert h.value("alarmd_traps_informs_acknowledged_total") == 0
    await h.event()  # drain: the next INFORM gets through
    rc, err = await h.run(
        "snmpinform", "-v2c", "-c", "s3cret-v2", "-t", "2", "-r", "1", h.target, "1", LINK_DOWN
    )
    assert rc == 0, err


@integration
async def test_v1_trap_with_an_unknown_agent_addr_names_the_sender(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmptrap", "-v1", "-c", "s3cret-v1", h.target, "1.3.6.1.4.1.9", "0.0.0.0", "0", "0", "1"
    )
    assert rc == 0, err
    event = await h.event()
    assert (event.labels["trap"], event.labels["agent_address"]) == ("coldStart", "127.0.0.1")


UPTIME = VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", 4200)
TRAP_OID = VarBind("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", LINK_DOWN)
IF_7 = VarBind(f"{IF_INDEX}.7", "Integer", 7)
FORWARDED = VarBind("1.3.6.1.6.3.18.1.3.0", "IpAddress", "10.9.8.7")


async def test_the_trap_oid_uptime_and_forwarding_agent_are_found_wherever_they_are(start: Start) -> None:
    cases: list[tuple[tuple[VarBind, ...], int | None, str]] = [
        ((UPTIME, TRAP_OID, IF_7), 4200, "127.0.0.1"),
        ((UPTIME, TRAP_OID, IF_7, FORWARDED), 4200, "10.9.8.7"),
        ((TRAP_OID, IF_7, FORWARDED, UPTIME), 4200, "10.9.8.7"),  # not in RFC 3416 order
        ((IF_7, TRAP_OID), None, "127.0.0.1"),  # no sysUpTime.0
        ((UPTIME, VarBind(TRAP_OID.oid, "Integer", 3), TRAP_OID, IF_7), 4200, "127.0.0.1"),
        ((VarBind(UPTIME.oid, "OctetString", b"up"), TRAP_OID, IF_7, UPTIME), 4200, "127.0.0.1"),
        (
            (UPTIME, TRAP_OID, VarBind(FORWARDED.oid, "OctetString", b"10.0.0.1"), FORWARDED, IF_7),
            4200,
            "10.9.8.7",
        ),
    ]
    h = await start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for varbinds, uptime, agent in cases:
            sock.sendto(
                ber.encode_message(1, b"s3cret-v2", PduType.SNMPV2_TRAP, varbinds),
                ("127.0.0.1", h.receiver.port or 0),
            )
            event = await h.event()
            assert (event.kind, event.uptime, event.varbinds) == (LINK_DOWN, uptime, varbinds)
            assert dict(event.labels) == {
                "source_address": "127.0.0.1",
                "agent_address": agent,
                "trap": "linkDown",
                "if_index": "7",
            }


# --------------------------------------------------------------------------- v3


@integration
async def test_v3_authpriv_trap_from_a_configured_engine_is_received(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmptrap", "-v3", "-e", f"0x{SENDER_ENGINE}", *V3, h.target, "31337", LINK_DOWN,
        f"{IF_INDEX}.2", "i", "2",
    )  # fmt: skip
    assert rc == 0, err
    event = await h.event()
    assert (event.source, event.kind, event.uptime) == ("trap", LINK_DOWN, 31337)
    assert event.labels["if_index"] == "2"
    assert event.attributes["snmp_version"] == "3"
    assert h.received("3", "trap") == 1


@integration
async def test_v3_authpriv_inform_is_acknowledged(start: Start) -> None:
    h = await start()
    rc, err = await h.run(
        "snmpinform", "-v3", *V3, "-t", "2", "-r", "1", h.target, "55", "1.3.6.1.6.3.1.1.5.1"
    )
    assert rc == 0, err
    event = await h.event()
    assert (event.source, event.labels["trap"]) == ("inform", "coldStart")
    assert h.received("3", "inform") == 1
    assert h.value("alarmd_traps_informs_acknowledged_total") == 1


@integration
async def test_v3_with_a_wrong_auth_key_is_rejected(start: Start) -> None:
    h = await start()
    wrong = [*V3[:7], "not-the-key", *V3[8:]]
    rc, _ = await h.run("snmptrap", "-v3", "-e", f"0x{SENDER_ENGINE}", *wrong, h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.rejected("auth_failed") == 1)
    rc, _ = await h.run("snmpinform", "-v3", *wrong, "-t", "0.3", "-r", "0", h.target, "1", LINK_DOWN)
    assert rc != 0  # never acknowledged
    await h.until(lambda: h.rejected("auth_failed") == 2)
    assert h.receiver.queue.empty()
    assert h.value("alarmd_traps_informs_acknowledged_total") == 0


@integration
async def test_v3_with_a_wrong_priv_key_is_rejected_as_undecryptable(start: Start) -> None:
    h = await start()
    wrong = [*V3[:-1], "not-the-priv-key"]
    rc, _ = await h.run("snmptrap", "-v3", "-e", f"0x{SENDER_ENGINE}", *wrong, h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.rejected("v3_decrypt_failed") == 1)
    assert h.receiver.queue.empty()


@integration
async def test_v3_below_the_users_security_level_is_rejected(start: Start) -> None:
    h = await start()
    # right user and engine, but unauthenticated: must not pass for an authPriv user
    rc, _ = await h.run(
        "snmptrap",
        "-v3",
        "-e",
        f"0x{SENDER_ENGINE}",
        "-u",
        "alarmd",
        "-l",
        "noAuthNoPriv",
        h.target,
        "1",
        LINK_DOWN,
    )
    assert rc == 0
    await h.until(lambda: h.rejected("auth_failed") == 1)
    assert h.receiver.queue.empty()


@integration
async def test_v3_unknown_user_or_unknown_engine_is_rejected(start: Start) -> None:
    h = await start()
    other_user = ["-u", "mallory", *V3[2:]]
    rc, _ = await h.run("snmptrap", "-v3", "-e", f"0x{SENDER_ENGINE}", *other_user, h.target, "1", LINK_DOWN)
    assert rc == 0
    rc, _ = await h.run("snmptrap", "-v3", "-e", "0x80000000010a0b0c", *V3, h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.rejected("unknown_user") == 2)
    assert h.receiver.queue.empty()


@integration
async def test_a_restart_rebinds_the_port_and_keeps_the_engine_id_senders_cached(start: Start) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = await start(listen=f"127.0.0.1:{port}")
    engine = first.receiver.engine_id
    await first.receiver.stop()
    second = await start(listen=f"127.0.0.1:{port}")
    assert second.receiver.engine_id == engine
    # -e names the receiver's engine id, as a sender that discovered it before the restart would
    rc, err = await second.run(
        "snmpinform", "-v3", "-e", f"0x{engine}", *V3, "-t", "2", "-r", "1", second.target, "9", LINK_DOWN
    )
    assert rc == 0, err
    assert (await second.event()).source == "inform"


# --------------------------------------------------------------------------- refusals


@integration
async def test_wrong_community_is_rejected_and_counted(start: Start) -> None:
    h = await start()
    for community in ("public", "polling-only"):  # "polling-only" exists, but not for traps
        rc, _ = await h.run("snmptrap", "-v2c", "-c", community, h.target, "1", LINK_DOWN)
        assert rc == 0
    # a v1 community is not a v2c one
    rc, _ = await h.run("snmptrap", "-v2c", "-c", "s3cret-v1", h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.rejected("unknown_community") == 3)
    assert h.receiver.queue.empty()
    assert h.received("2c", "trap") == 0


@integration
async def test_sources_outside_allowed_networks_are_rejected(start: Start) -> None:
    h = await start(allowed_sources=["10.0.0.0/8"])
    rc, _ = await h.run("snmptrap", "-v2c", "-c", "s3cret-v2", h.target, "1", LINK_DOWN)
    assert rc == 0
    await h.until(lambda: h.rejected("source_not_allowed") == 1)
    assert h.receiver.queue.empty()


@integration
async def test_requests_that_are_not_notifications_are_rejected(start: Start) -> None:
    h = await start()
    get = ber.encode_message(
        1, b"s3cret-v2", PduType.GET_REQUEST, [VarBind("1.3.6.1.2.1.1.3.0", "Null", None)]
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(get, ("127.0.0.1", h.receiver.port or 0))
    await h.until(lambda: h.rejected("not_a_notification") == 1)


@integration
async def test_rejections_are_logged_once_per_reason_per_10s_with_a_count(start: Start) -> None:
    clock = FakeClock()
    h = await start(clock=clock)
    guess = ber.encode_message(1, b"guessed-community", PduType.SNMPV2_TRAP, [])
    with capture_logs() as logs, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sock.sendto(guess, ("127.0.0.1", h.receiver.port or 0))
        await h.until(lambda: h.rejected("unknown_community") == 3)
        clock.advance(10)
        sock.sendto(guess, ("127.0.0.1", h.receiver.port or 0))
        await h.until(lambda: h.rejected("unknown_community") == 4)
    lines = [entry for entry in logs if entry["event"] == "trap_rejected"]
    assert [(entry["reason"], entry["count"]) for entry in lines] == [
        ("unknown_community", 1),
        ("unknown_community", 3),
    ]
    assert "guessed-community" not in repr(logs)


@integration
async def test_random_bytes_are_counted_as_malformed_and_the_receiver_keeps_working(start: Start) -> None:
    h = await start()
    rng = random.Random(162)
    trap_oid = VarBind("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", LINK_DOWN)
    good = ber.encode_message(
        1, b"s3cret-v2", PduType.SNMPV2_TRAP, [VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", 1), trap_oid]
    )
    junk = [rng.randbytes(rng.randint(1, 1400)) for _ in range(200)]
    junk += [good[: rng.randint(1, len(good) - 1)] for _ in range(50)]  # truncated traps
    junk += [
        b"\x30\x84\xff\xff\xff\xff\x02\x01\x01",
        b"\x30\x00",
        b"\x30\x03\x02\x01\x03",
    ]  # lies and a stub v3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in junk:
            sock.sendto(datagram, ("127.0.0.1", h.receiver.port or 0))
        await h.until(lambda: h.value("alarmd_traps_malformed_total") == len(junk))
        sock.sendto(good, ("127.0.0.1", h.receiver.port or 0))
    event = await h.event()
    assert event.kind == LINK_DOWN
    assert h.received("2c", "trap") == 1


# --------------------------------------------------------------------------- a burst


def _udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the socket bound to ``port`` (the last column of /proc/net/udp)."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            return int(fields[-1])
    return 0


@integration
async def test_a_burst_of_5000_traps_is_received_or_every_loss_counted(start: Start) -> None:
    h = await start()  # default receive_buffer: 8 MiB
    port = h.receiver.port or 0
    sent = 5000
    datagrams = [
        ber.encode_message(
            1,
            b"s3cret-v2",
            PduType.SNMPV2_TRAP,
            [
                VarBind("1.3.6.1.2.1.1.3.0", "TimeTicks", i),
                VarBind("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", LINK_DOWN),
                VarBind(f"{IF_INDEX}.{i}", "Integer", i),
                VarBind(f"1.3.6.1.2.1.2.2.1.7.{i}", "Integer", 1),
                VarBind(f"1.3.6.1.2.1.2.2.1.8.{i}", "Integer", 2),
            ],
            request_id=i,
        )
        for i in range(sent)
    ]

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", port))

    def accounted() -> float:
        return (
            h.received("2c", "trap")
            + h.value("alarmd_traps_dropped_total")
            + h.value("alarmd_traps_malformed_total")
            + _udp_drops(port)
        )

    started = time.perf_counter()
    await asyncio.to_thread(blast)
    await h.until(lambda: accounted() >= sent, timeout=30)
    elapsed = time.perf_counter() - started
    received = h.received("2c", "trap")
    print(f"\nburst: {received:.0f}/{sent} received in {elapsed:.3f}s = {received / elapsed:,.0f} traps/s")
    assert accounted() == sent
    assert received == sent, f"kernel dropped {_udp_drops(port)}: is SO_RCVBUF capped by net.core.rmem_max?"
    assert h.receiver.queue.qsize() == sent
    if_indexes = {h.receiver.queue.get_nowait().labels["if_index"] for _ in range(sent)}
    assert if_indexes == {str(i) for i in range(sent)}


# --------------------------------------------------------------------------- definitions


def _doc(tmp_path: Path, text: str) -> YamlDoc:
    path = tmp_path / "vendor.yml"
    path.write_text(text)
    return read_yaml(path)


def test_shipped_definitions_load_and_name_the_standard_traps() -> None:
    defs = TrapDefinitions.load([STANDARD])
    names = {d.name for d in defs}
    assert {"linkDown", "linkUp", "coldStart", "warmStart", "authenticationFailure"} <= names
    assert {"dsx1LineStatusChange", "entConfigChange", "entSensorThresholdNotification"} <= names
    sensor = defs.get("1.3.6.1.2.1.99.2.0.1")
    assert sensor is not None
    assert sensor.name == "entSensorThresholdNotification"


def test_an_unknown_key_in_a_definition_names_file_and_line(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "traps:\n  - name: fanFailed\n    oid: 1.3.6.1.4.1.9.0.1\n    lables: {}\n")
    with pytest.raises(
        ConfigError, match=r"vendor\.yml:4: unknown key 'traps\.0\.lables' \(did you mean 'labels'\?\)"
    ):
        TrapDefinitions.from_docs([doc])


def test_a_trap_name_instead_of_an_oid_is_refused(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "traps:\n  - name: linkDown\n    oid: IF-MIB::linkDown\n")
    with pytest.raises(ConfigError, match=r"vendor\.yml:3: .*is not a numeric OID"):
        TrapDefinitions.from_docs([doc])


def test_a_trap_oid_defined_twice_is_refused(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "traps:\n  - name: myLinkDown\n    oid: 1.3.6.1.6.3.1.1.5.3\n")
    with pytest.raises(ConfigError, match=r"is already defined at .*standard\.yml:"):
        TrapDefinitions.from_docs([read_yaml(STANDARD), doc])


def test_index_labels_take_the_oid_suffix(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "traps:\n  - name: x\n    oid: 1.3.6.1.4.1.1.0.1\n    labels:\n"
        "      slot: {oid: 1.3.6.1.4.1.1.1.5, part: index}\n      state: 1.3.6.1.4.1.1.1.5\n",
    )
    (definition,) = TrapDefinitions.from_docs([doc])
    varbinds = [
        VarBind("1.3.6.1.4.1.1.1.50.9", "Integer", 1),
        VarBind("1.3.6.1.4.1.1.1.5.3.1", "OctetString", b"down"),
    ]
    assert definition.extract(varbinds) == {"slot": "3.1", "state": "down"}


HEADER = ("1.3.6.1.2.1.1.3.0", "1.3.6.1.6.3.1.1.4.1.0")
PREFIXES = [*HEADER, "1.3.6.1.2.1.1", "1.3.6.1.2.1.2.2.1.1", "1.3.6.1.2.1.2.2.1.1.5", "1.3.6.1.2.1.2.2.1.10"]
OIDS = [*PREFIXES, "1.3.6.1.2.1.2.2.1.1.5.2", "1.3.6.1.2.1.2.2.1.10.3", "1.3.6.1.2.1.2.2.1.100.3"]
varbind = st.builds(
    VarBind,
    st.sampled_from(OIDS),
    st.just("Integer"),
    st.one_of(st.none(), st.integers(0, 9), st.binary(max_size=2), st.sampled_from(["up", "\n"])),
)


@given(
    rules=st.lists(st.tuples(st.sampled_from(PREFIXES), st.sampled_from(["value", "index"])), max_size=4),
    header=st.booleans(),
    varbinds=st.lists(varbind, max_size=6),
)
def test_labels_come_from_the_first_varbind_under_their_prefix(
    rules: list[tuple[str, str]], header: bool, varbinds: list[VarBind]
) -> None:
    if header:
        varbinds = [
            VarBind(HEADER[0], "TimeTicks", 1),
            VarBind(HEADER[1], "ObjectIdentifier", LINK_DOWN),
            *varbinds,
        ]
    labels = tuple(LabelRule(f"l{i}", prefix, part) for i, (prefix, part) in enumerate(rules))  # type: ignore[arg-type]
    expected: dict[str, str] = {}
    for rule in labels:
        vb = next(
            (vb for vb in varbinds if vb.oid == rule.prefix or vb.oid.startswith(rule.prefix + ".")), None
        )
        if vb is None:
            continue
        value = vb.oid[len(rule.prefix) + 1 :] if rule.part == "index" else label_value(vb.value)
        if value is not None:
            expected[rule.name] = value
    got = TrapDefinition("t", "1.3.6.1.4.1.1.0.1", labels).extract(tuple(varbinds))
    assert list(got.items()) == list(expected.items())


@integration
async def test_v3_only_mode_refuses_v1_and_v2c_traps(start: Start, tmp_path: Path) -> None:
    metrics = Metrics()
    receiver = TrapReceiver(
        TrapsConfig.model_validate({"listen": "127.0.0.1:0", "credentials": ["ops-v3"]}),
        CREDENTIALS,
        TrapDefinitions.load([STANDARD]),
        metrics,
        FakeClock(),
        v3_only=True,
    )
    await receiver.start()
    try:
        h = Harness(receiver, metrics, tmp_path)
        rc, err = await h.run("snmptrap", "-v2c", "-c", "s3cret-v2", h.target, "", LINK_DOWN)
        assert rc == 0, err
        await h.until(lambda: h.rejected("v1v2c_disabled") == 1)
        assert receiver.queue.empty()
    finally:
        await receiver.stop()


def test_dsx1_line_status_bits_become_labels_of_their_own() -> None:
    definition = TrapDefinitions.load([STANDARD]).get("1.3.6.1.2.1.10.18.15.0.1")
    assert definition is not None and definition.name == "dsx1LineStatusChange"
    status = "1.3.6.1.2.1.10.18.6.1.10.3"
    labels = definition.extract([VarBind(status, "Integer", 64 + 8)])  # LOS and AIS
    assert labels == {
        "dsx1_line_status": "72",
        "dsx1_line_index": "3",
        "if_index": "3",
        "e1_loss_of_signal": "1",
        "e1_ais": "1",
        "e1_loss_of_frame": "0",
        "e1_remote_alarm": "0",
    }
    assert definition.extract([VarBind(status, "Integer", 1)])["e1_loss_of_signal"] == "0"  # noAlarm
    assert "e1_loss_of_signal" not in definition.extract([VarBind(status, "OctetString", b"x")])
