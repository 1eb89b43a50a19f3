"""The C decoder against the Python one: the same verdict, object or reason, on every mutated datagram.

``alarmd.collector._ber`` replaces ``ber.decode_message`` and ``ber.decode_pdu`` where it is built.
A fifth of ``ALARMD_FUZZ_CASES`` mutated messages and PDUs (the seeds and mutator of the volume
fuzzer) go through both decoders; each must return an equal message or raise ``BerError`` with
the same reason.  Equal decodes are also the C decoder's round-trip proof: the Python decoder's
results are proven to survive encoding by ``test_ber_volume``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from alarmd.collector import ber
from tests.fuzz.snmp_corpus import Mutator, Seed, message_seeds, pdu_seeds
from tests.fuzz.summary import Summary, fuzz_cases, fuzz_seed

SHARE = 0.2
MAX_SHOWN = 5

pytestmark = pytest.mark.skipif(ber.CODEC != "c", reason="ALARMD_BER=python: the C decoder is turned off")


def _verdict(decode: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "decoded", decode(data)
    except ber.BerError as exc:
        return "rejected", exc.reason
    except Exception as exc:
        return "crashed", repr(exc)


@pytest.mark.parametrize(
    ("target", "stream", "seeds", "c", "python"),
    [
        ("_ber.decode_message", 10, message_seeds, ber.decode_message, ber.py_decode_message),
        ("_ber.decode_pdu", 11, lambda: pdu_seeds(message_seeds()), ber.decode_pdu, ber.py_decode_pdu),
    ],
)
def test_the_c_decoder_gives_the_python_decoders_verdict(
    fuzz_summary: Summary,
    target: str,
    stream: int,
    seeds: Callable[[], list[Seed]],
    c: Callable[[bytes], Any],
    python: Callable[[bytes], Any],
) -> None:
    budget = math.ceil(fuzz_cases() * SHARE / 2)
    mutator = Mutator(seeds(), fuzz_seed() * 100 + stream)
    counts = {"decoded": 0, "rejected": 0, "crashed": 0}
    differ: list[str] = []
    started = time.perf_counter()
    for _ in range(budget):
        data = mutator.mutate()
        ours, reference = _verdict(c, data), _verdict(python, data)
        counts[ours[0]] += 1
        if ours != reference:
            if len(differ) < MAX_SHOWN:
                differ.append(f"input {data.hex()}: C {ours!r}, Python {reference!r}")
            counts.setdefault("differ", 0)
            counts["differ"] += 1
    seconds = time.perf_counter() - started
    fuzz_summary.record(target, decoder=True, cases=budget, seconds=round(seconds, 3), **counts)
    assert not differ, f"{counts.get('differ')} verdicts differ, the first:\n" + "\n".join(differ)
    assert counts["crashed"] == 0
    assert 0 < counts["decoded"] < budget, "the mutations must neither all break nor all spare the messages"
