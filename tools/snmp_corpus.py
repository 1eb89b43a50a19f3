"""Record a corpus of real SNMP responses for the codec tests (``tests/collector/corpus``).

    python tools/snmp_corpus.py [--out tests/collector/corpus/responses.jsonl]

Starts Debian's snmpd and the snmpsim demo network on 127.0.0.1, walks each agent from
``1.3.6.1`` to endOfMibView with GETBULK (v2c, max-repetitions 10 and 40, several columns
at once), asks GETs that hit noSuchObject / noSuchInstance, GETNEXTs in v1 that end in
noSuchName, and writes every request/response pair as one JSON line of hex.  The corpus is
what the agents really send (long-form lengths, Counter64, IpAddress, OIDs as values,
negative and large numbers, exceptions), so the codec is checked against pysnmp on bytes
it did not produce itself.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import simnet
import snmpd
from alarmd.collector import ber
from alarmd.collector.ber import PduType
from alarmd.model import VarBind

OUT = Path(__file__).resolve().parent.parent / "tests" / "collector" / "corpus" / "responses.jsonl"
MAX_PAIRS_PER_WALK = 60


def _exchange(sock: socket.socket, port: int, request: bytes) -> bytes | None:
    sock.sendto(request, ("127.0.0.1", port))
    try:
        data, _ = sock.recvfrom(65535)
    except TimeoutError:
        return None
    return data


def _request(version: int, community: str, pdu: PduType, oids: list[str], rid: int, reps: int = 0) -> bytes:
    return ber.encode_message(
        version,
        community.encode(),
        pdu,
        [VarBind(oid, "Null", None) for oid in oids],
        request_id=rid,
        error_index=reps,
    )


def _walk(
    sock: socket.socket, port: int, community: str, start: list[str], reps: int
) -> Iterator[tuple[bytes, bytes]]:
    cursors = start
    for rid in range(1, MAX_PAIRS_PER_WALK + 1):
        request = _request(1, community, PduType.GET_BULK_REQUEST, cursors, rid, reps)
        response = _exchange(sock, port, request)
        if response is None:
            return
        yield request, response
        vbs = ber.decode_message(response).varbinds
        if not vbs or any(vb.type == "endOfMibView" for vb in vbs):
            return
        cursors = [vb.oid for vb in vbs[-len(cursors) :]]


def record(port: int, community: str, agent: str) -> Iterator[dict[str, str]]:
    """Every request/response pair for one agent and community."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        walks = [
            (["1.3.6.1"], 10),
            (["1.3.6.1"], 40),
            (["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.31.1.1.1.6"], 25),
        ]
        for start, reps in walks:
            for request, response in _walk(sock, port, community, start, reps):
                yield {"agent": agent, "request": request.hex(), "response": response.hex()}
        probes = [
            (
                1,
                PduType.GET_REQUEST,
                ["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.99.0", "1.3.6.1.2.1.2.2.1.2.99999"],
            ),
            (0, PduType.GET_NEXT_REQUEST, ["1.3.6.1.6.3.99"]),
            (0, PduType.GET_REQUEST, ["1.3.6.1.2.1.1.99.0"]),
        ]
        for rid, (version, pdu, oids) in enumerate(probes, 1000):
            request = _request(version, community, pdu, oids, rid)
            response = _exchange(sock, port, request)
            if response is not None:
                yield {"agent": agent, "request": request.hex(), "response": response.hex()}


def main(argv: list[str] | None = None) -> int:
    """Record the corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows: list[dict[str, str]] = []
    agent = snmpd.start()
    try:
        rows.extend(record(agent.port, agent.community, "snmpd"))
    finally:
        agent.stop()
    sim = simnet.start()
    try:
        for device in sorted(simnet.DEVICES.glob("*.snmprec")):
            rows.extend(record(sim.port, device.stem, f"snmpsim/{device.stem}"))
    finally:
        sim.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), encoding="utf-8")
    print(f"snmp_corpus: {len(rows)} request/response pairs → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
