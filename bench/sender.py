"""A paced SNMPv2c linkDown trap sender, run as its own process so it never competes with the receiver.

Every datagram is encoded before the clock starts: a few templates (one per ifIndex) come from
:func:`alarmd.collector.ber.encode_message`, and each trap gets its own request-id by splicing a
fixed-width 4-byte INTEGER into a template.  Sending is paced in small batches against
:func:`time.perf_counter`, and stops after ``rate * duration`` traps or a hard deadline.

``python -m bench.sender --port P --rate R --duration D`` prints one JSON object:
``{"sent", "errors", "seconds", "achieved_per_s"}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Final

from alarmd.collector.ber import VERSION_2C, PduType, decode_message, encode_message
from alarmd.collector.trapdefs import SNMP_TRAP_OID, SYS_UPTIME
from alarmd.model import VarBind

LINK_DOWN: Final = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX: Final = "1.3.6.1.2.1.2.2.1.1"
IF_ADMIN_STATUS: Final = "1.3.6.1.2.1.2.2.1.7"
IF_OPER_STATUS: Final = "1.3.6.1.2.1.2.2.1.8"
INTERFACES: Final = 64
TICK: Final = 0.002  # seconds between batches: 2 traps a batch at 1k/s, 160 at 80k/s
# Request-ids from here up encode in exactly 4 content bytes (0x00800000..0x7FFFFFFF), so they
# can be spliced into a template without re-encoding any length.
REQUEST_ID_BASE: Final = 0x10000000
REQUEST_ID_MAX: Final = 0x7FFFFFFF
_PLACEHOLDER: Final = 0x7F000000
_PLACEHOLDER_TLV: Final = bytes((0x02, 0x04)) + _PLACEHOLDER.to_bytes(4, "big")
_UPTIME_PLACEHOLDER: Final = 0x7E000000
_UPTIME_TLV: Final = bytes((0x43, 0x04)) + _UPTIME_PLACEHOLDER.to_bytes(4, "big")


def link_down(community: bytes, if_index: int, request_id: int, uptime: int = 4242) -> bytes:
    """One SNMPv2c linkDown trap (IF-MIB: ifIndex, ifAdminStatus up, ifOperStatus down)."""
    varbinds = (
        VarBind(SYS_UPTIME, "TimeTicks", uptime),
        VarBind(SNMP_TRAP_OID, "ObjectIdentifier", LINK_DOWN),
        VarBind(f"{IF_INDEX}.{if_index}", "Integer", if_index),
        VarBind(f"{IF_ADMIN_STATUS}.{if_index}", "Integer", 1),
        VarBind(f"{IF_OPER_STATUS}.{if_index}", "Integer", 2),
    )
    return encode_message(VERSION_2C, community, PduType.SNMPV2_TRAP, varbinds, request_id=request_id)


def encode_traps(community: bytes, count: int, first_id: int, *, distinct: bool = False) -> list[bytes]:
    """``count`` linkDown traps with request-ids ``REQUEST_ID_BASE + first_id + i``, cycling ifIndex.

    With ``distinct`` each trap's ``sysUpTime.0`` is its request-id too, so no two are the same
    trap: a receiver that deduplicates by fingerprint (distributed mode) judges every one as a
    repeat of its interface's fault, where identical traps would be dropped as copies.
    """
    last = REQUEST_ID_BASE + first_id + count - 1
    if first_id < 0 or last > REQUEST_ID_MAX:
        raise ValueError(f"request-ids up to {last:#x} do not fit in 4 bytes")
    templates: list[list[bytes]] = []
    for if_index in range(1, INTERFACES + 1):
        template = link_down(community, if_index, _PLACEHOLDER, _UPTIME_PLACEHOLDER if distinct else 4242)
        at = template.index(_PLACEHOLDER_TLV) + 2
        pieces = [template[:at], template[at + 4 :]]
        if distinct:
            up = pieces[1].index(_UPTIME_TLV) + 2
            pieces[1:] = [pieces[1][:up], pieces[1][up + 4 :]]
        templates.append(pieces)
    out: list[bytes] = []
    for i in range(count):
        stamp = (REQUEST_ID_BASE + first_id + i).to_bytes(4, "big")
        out.append(stamp.join(templates[i % INTERFACES]))
    if out:  # the splice is only right if the result still decodes to what was meant
        message = decode_message(out[-1])
        if message.request_id != last or message.community != community:
            raise AssertionError("request-id splice produced a different message")
        if distinct and message.varbinds[0].value != last:
            raise AssertionError("sysUpTime splice produced a different message")
    return out


def send_paced(
    port: int, packets: Sequence[bytes], rate: float, deadline: float, total: int | None = None
) -> dict[str, float]:
    """Send ``total`` datagrams to 127.0.0.1:``port`` at ``rate`` per second, for at most ``deadline`` s.

    ``total`` defaults to each of ``packets`` once; a larger one cycles through them.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    if total is not None and total > len(packets):
        packets = list(itertools.islice(itertools.cycle(packets), total))
    total, sent, errors = len(packets), 0, 0
    start = time.perf_counter()
    now = start
    try:
        for tick in range(int(deadline / TICK) + 1):  # bounded: at most deadline / TICK batches
            due = min(total, int(rate * (now - start)) + 1)
            for packet in packets[sent:due]:
                try:
                    sock.send(packet)
                except OSError:  # e.g. ECONNREFUSED from an earlier ICMP: the receiver went away
                    errors += 1
            sent = due
            if sent >= total:
                break
            now = time.perf_counter()
            wait = start + (tick + 1) * TICK - now
            if wait > 0:
                time.sleep(wait)
                now = time.perf_counter()
    finally:
        sock.close()
    seconds = time.perf_counter() - start
    return {
        "sent": sent - errors,
        "errors": errors,
        "seconds": round(seconds, 4),
        "achieved_per_s": round((sent - errors) / seconds, 1) if seconds > 0 else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, encode, send, print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="traps per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--community", default="alarmd-bench")
    parser.add_argument("--first-id", type=int, default=0, help="offset of the first request-id")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--unique", type=int, default=None, help="encode only this many and cycle them")
    parser.add_argument("--distinct", action="store_true", help="a sysUpTime of its own in every trap")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    count = round(args.rate * args.duration)
    packets = encode_traps(
        args.community.encode(), min(count, args.unique or count), args.first_id, distinct=args.distinct
    )
    result = send_paced(args.port, packets, args.rate, deadline=args.duration * 2 + 5, total=count)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
