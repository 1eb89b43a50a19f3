"""Volume fuzzing of the BER decoder: a seeded mutation fuzzer over valid SNMP messages.

``ALARMD_FUZZ_CASES`` mutated datagrams per run (default 1,000,000) are split over the
decoder's four entry points, so that the whole budget fits in about a minute on one core:
``ber.decode_message`` (with ``ber.message_version`` on the same input) takes the largest
share, ``ber.decode_pdu`` reads mutated PDUs on their own, and the rest go through the two
places that take datagrams off a socket, ``FastSnmpClient._received`` and
``TrapReceiver._on_datagram``.  The only exception the codec may raise is ``BerError``;
whatever decodes must survive ``encode_message`` and decode to the same message again; the
socket entry points must count every datagram and raise nothing.
"""

from __future__ import annotations

import math
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from alarmd.collector import ber
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.collector.traps import TrapReceiver
from alarmd.config import SnmpV1, SnmpV2c, SnmpV3, TrapsConfig
from alarmd.metrics import Metrics
from alarmd.model import VarBind
from alarmd.testing import FakeClock
from tests.fuzz.snmp_corpus import COMMUNITY, Mutator, message_seeds, pdu_seeds
from tests.fuzz.summary import Summary, fuzz_cases, fuzz_seed

REPO = Path(__file__).resolve().parents[2]
STANDARD_TRAPS = REPO / "config" / "traps" / "standard.yml"
AGENT = ("127.0.0.1", 161)
MAX_SHOWN = 5
PROVEN_LIMIT = 100_000

# Shares of the budget per entry point; they add up to the whole budget.
SHARES = {
    "ber.decode_message": 0.55,
    "ber.decode_pdu": 0.15,
    "FastSnmpClient._received": 0.15,
    "TrapReceiver._on_datagram": 0.15,
}
assert math.isclose(sum(SHARES.values()), 1.0)


def budget(target: str) -> int:
    """The cases a target must run: its share of ``ALARMD_FUZZ_CASES``, rounded up."""
    return math.ceil(fuzz_cases() * SHARES[target])


def target_seed(target: str) -> int:
    """Each target its own stream of mutations, all derived from ``ALARMD_FUZZ_SEED``."""
    return fuzz_seed() * 100 + list(SHARES).index(target)


class Failures:
    """Unexpected outcomes: all counted, the first few kept with the input that caused them."""

    def __init__(self) -> None:
        self.count = 0
        self.shown: list[str] = []

    def add(self, case: int, data: bytes, what: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(f"case {case}: {what}; input {data.hex()}")

    def exception(self, case: int, data: bytes, where: str, exc: BaseException) -> None:
        self.add(case, data, f"{where} raised {type(exc).__name__}: {exc}")

    def report(self) -> str:
        return f"{self.count} unexpected outcomes, the first:\n" + "\n".join(self.shown)


class RoundTrip:
    """Checks decode(encode(m)) == m for decoded messages, re-encoding only varbinds not proven yet.

    Encoding is three to four times the work of decoding, and a mutated message mostly carries
    the varbinds of its corpus entry unchanged.  A varbinds list encodes as the concatenation of
    its varbinds, so each varbind proven once (with the header fields of every message, always)
    proves every message built from proven varbinds; the corpus entries prove the long-form
    lengths of large lists.
    """

    def __init__(self) -> None:
        self.proven: set[VarBind] = set()
        self.checked = 0
        self.undefined = 0

    def check(self, m: ber.Message | ber.Pdu, version: int, community: bytes) -> str | None:
        """Why ``m`` does not survive encode and decode, or None when it does (or cannot be encoded)."""
        proven = self.proven
        fresh = tuple(vb for vb in m.varbinds if vb not in proven)
        try:
            again = ber.encode_message(
                version,
                community,
                m.pdu_type,
                fresh,
                request_id=m.request_id,
                error_status=m.error_status,
                error_index=m.error_index,
                trap=m.trap,
            )
        except ber.BerError:
            self.undefined += 1  # only an Integer of 9 octets cannot be encoded again
            return None
        self.checked += 1
        try:
            second = ber.decode_message(again)
        except ber.BerError as exc:
            return f"its re-encoding does not decode: {exc.reason}"
        expected = (
            version,
            community,
            m.pdu_type,
            m.request_id,
            m.error_status,
            m.error_index,
            fresh,
            m.trap,
        )
        got = (
            second.version,
            second.community,
            second.pdu_type,
            second.request_id,
            second.error_status,
            second.error_index,
            second.varbinds,
            second.trap,
        )
        if got != expected:
            return f"re-encoding changes the message: {expected!r} became {got!r}"
        if len(proven) > PROVEN_LIMIT:
            proven.clear()
        proven.update(fresh)
        return None


def _record(
    summary: Summary, target: str, cases: int, seconds: float, failures: Failures, **extra: Any
) -> None:
    figures = {
        "decoder": True,
        "cases": cases,
        "budget": budget(target),
        "exceptions": failures.count,
        "seconds": round(seconds, 3),
        "cases_per_second": round(cases / seconds) if seconds else None,
        **extra,
    }
    summary.record(target, **figures)
    print(f"{target}: {figures}")


def test_decode_message_raises_only_ber_error_and_what_decodes_round_trips(fuzz_summary: Summary) -> None:
    target = "ber.decode_message"
    mutator = Mutator(message_seeds(), target_seed(target))
    mutate, decode, version_of, error = mutator.mutate, ber.decode_message, ber.message_version, ber.BerError
    failures = Failures()
    round_trip = RoundTrip()
    check = round_trip.check
    decoded = rejected = crashed = versions = versions_refused = 0
    started = time.perf_counter()
    for case in range(budget(target)):
        data = mutate()
        try:
            version: int | None = version_of(data)
            versions += 1
        except error:
            versions_refused += 1
            version = None
        except Exception as exc:
            failures.exception(case, data, "message_version", exc)
            version = None
        try:
            message = decode(data)
        except error:
            rejected += 1
            continue
        except Exception as exc:
            crashed += 1
            failures.exception(case, data, "decode_message", exc)
            continue
        decoded += 1
        if version != message.version:
            failures.add(case, data, f"message_version says {version}, decode_message {message.version}")
        problem = check(message, message.version, message.community)
        if problem is not None:
            failures.add(case, data, problem)
    seconds = time.perf_counter() - started
    cases = decoded + rejected + crashed  # decode_message calls that returned or raised
    _record(
        fuzz_summary,
        target,
        cases,
        seconds,
        failures,
        decoded=decoded,
        rejected=rejected,
        round_trips=round_trip.checked,
        encode_undefined=round_trip.undefined,
        message_version_cases=versions + versions_refused,
        message_version_read=versions,
        corpus=len(mutator.seeds),
        havoc_steps=mutator.step_counts,
    )
    assert failures.count == 0, failures.report()
    assert cases >= budget(target) > 0
    assert versions + versions_refused >= budget(target)
    assert 0 < decoded < cases, "the mutations must neither all break nor all spare the messages"


def test_decode_pdu_raises_only_ber_error_and_what_decodes_round_trips(fuzz_summary: Summary) -> None:
    target = "ber.decode_pdu"
    mutator = Mutator(pdu_seeds(message_seeds()), target_seed(target))
    mutate, decode, error = mutator.mutate, ber.decode_pdu, ber.BerError
    failures = Failures()
    round_trip = RoundTrip()
    check = round_trip.check
    decoded = rejected = crashed = 0
    started = time.perf_counter()
    for case in range(budget(target)):
        data = mutate()
        try:
            pdu = decode(data)
        except error:
            rejected += 1
            continue
        except Exception as exc:
            crashed += 1
            failures.exception(case, data, "decode_pdu", exc)
            continue
        decoded += 1
        problem = check(pdu, ber.VERSION_2C, COMMUNITY)
        if problem is not None:
            failures.add(case, data, problem)
    seconds = time.perf_counter() - started
    cases = decoded + rejected + crashed
    _record(
        fuzz_summary,
        target,
        cases,
        seconds,
        failures,
        decoded=decoded,
        rejected=rejected,
        round_trips=round_trip.checked,
        encode_undefined=round_trip.undefined,
    )
    assert failures.count == 0, failures.report()
    assert cases >= budget(target) > 0
    assert 0 < decoded < cases


async def test_fast_snmp_client_counts_every_datagram_and_never_raises(fuzz_summary: Summary) -> None:
    target = "FastSnmpClient._received"
    mutator = Mutator(message_seeds(), target_seed(target))
    client = FastSnmpClient()
    received: Callable[[bytes, tuple[str, int]], None] = client._received
    mutate = mutator.mutate
    failures = Failures()
    started = time.perf_counter()
    try:
        for case in range(budget(target)):
            data = mutate()
            try:
                received(data, AGENT)
            except Exception as exc:
                failures.exception(case, data, "_received", exc)
    finally:
        client.close()
    seconds = time.perf_counter() - started
    # No request is in flight: every datagram the client took is either malformed or a response to nothing.
    cases = client.malformed + client.unmatched
    _record(
        fuzz_summary,
        target,
        cases,
        seconds,
        failures,
        malformed=client.malformed,
        unmatched=client.unmatched,
    )
    assert failures.count == 0, failures.report()
    assert cases >= budget(target) > 0
    assert 0 < client.malformed < cases


def _counted(metrics: Metrics) -> dict[str, float]:
    """Every trap receiver counter that a datagram can move, summed over its labels."""
    names = {
        "alarmd_traps_received_total",
        "alarmd_traps_rejected_total",
        "alarmd_traps_malformed_total",
        "alarmd_traps_dropped_total",
        "alarmd_traps_informs_acknowledged_total",
    }
    out = dict.fromkeys(sorted(names), 0.0)
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name in names:
                out[sample.name] += sample.value
    return out


@pytest.fixture
def sink() -> Iterator[tuple[str, int]]:
    """A UDP socket on 127.0.0.1 that takes the INFORM acknowledgements and is never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        host, port = sock.getsockname()
        yield str(host), int(port)
    finally:
        sock.close()


async def test_trap_receiver_counts_every_datagram_and_never_fails(
    fuzz_summary: Summary, sink: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = "TrapReceiver._on_datagram"
    # pysnmp keeps the engine's boot counter under tempfile.gettempdir(); keep it in the test's directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    credentials = {
        "v1": SnmpV1.model_validate({"version": "1", "community": COMMUNITY.decode()}),
        "v2c": SnmpV2c.model_validate({"community": COMMUNITY.decode()}),
        "v3": SnmpV3.model_validate(
            {"version": "3", "user": "alarmd", "auth_protocol": "sha256", "auth_key": "auth-pass-1"}
        ),
    }
    metrics = Metrics()
    receiver = TrapReceiver(
        TrapsConfig.model_validate(
            {
                "listen": "127.0.0.1:0",
                "credentials": list(credentials),
                "allowed_sources": ["127.0.0.0/8"],
                "queue_size": 16,
            }
        ),
        credentials,
        TrapDefinitions.load([STANDARD_TRAPS]),
        metrics,
        FakeClock(),
    )
    mutator = Mutator(message_seeds(), target_seed(target))
    mutate, on_datagram, queue = mutator.mutate, receiver._on_datagram, receiver.queue
    failures = Failures()
    queued = 0
    await receiver.start()
    with capture_logs() as logs:
        started = time.perf_counter()
        try:
            for case in range(budget(target)):
                data = mutate()
                seen = len(logs)
                try:
                    on_datagram(data, sink)
                except Exception as exc:
                    failures.exception(case, data, "_on_datagram", exc)
                if len(logs) != seen and logs[-1]["event"] == "trap_failed":
                    failures.add(case, data, f"trap_failed: {logs[-1].get('error')}")
                if case % 256 == 255:  # the rule stage takes what was queued, now and then: some drop
                    queued += queue.qsize()
                    while not queue.empty():
                        queue.get_nowait()
            seconds = time.perf_counter() - started
        finally:
            await receiver.stop()
    # Failures after the first are only counted by the log throttle; stop() reports that count.
    unlogged = sum(e.get("count", 0) for e in logs if e["event"] == "trap_failed" and e.get("final"))
    failures.count += unlogged
    counted = _counted(metrics)
    # Every datagram is exactly one of: queued as an event, rejected, malformed, or dropped (queue full).
    cases = int(sum(v for k, v in counted.items() if "informs_acknowledged" not in k))
    _record(
        fuzz_summary,
        target,
        cases,
        seconds,
        failures,
        events_queued=queued + queue.qsize(),
        **{name.removeprefix("alarmd_traps_").removesuffix("_total"): int(v) for name, v in counted.items()},
    )
    assert failures.count == 0, failures.report()
    assert cases == budget(target) > 0
    assert counted["alarmd_traps_received_total"] > 0
    assert counted["alarmd_traps_dropped_total"] > 0
    assert counted["alarmd_traps_malformed_total"] > 0
    assert counted["alarmd_traps_informs_acknowledged_total"] > 0
