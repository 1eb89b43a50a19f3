"""Valid SNMPv1/v2c messages built with ``ber.encode_message``, and a seeded mutator that damages them.

The corpus covers what reaches the decoder in production: v1 and v2c traps, INFORMs, the
requests a manager sends (GET, GETNEXT, GETBULK, SET) and Responses up to 300 varbinds, so
that long-form lengths, every SNMP type, negative Integers and OIDs with sub-identifiers up to
2**32 - 1 are all present before the mutator starts.  The mutator stacks one to four havoc
steps (after AFL): bit flips, bytes set to interesting values, truncation, insertion, deletion,
duplication, length-field corruption and splicing with another message.  Everything is drawn
from one ``random.Random(seed)``, so a run is reproducible from its seed and case number.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from alarmd.collector import ber
from alarmd.collector.ber import PduType, TrapV1Fields
from alarmd.model import SnmpType, VarBind

U32 = 2**32 - 1
U64 = 2**64 - 1
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_TABLE = "1.3.6.1.2.1.2.2.1"
IF_X_TABLE = "1.3.6.1.2.1.31.1.1.1"
COMMUNITY = b"public"
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF)
_CONSTRUCTED = frozenset({ber.SEQUENCE, *(int(t) for t in PduType)})

EVERY_TYPE: tuple[tuple[SnmpType, ber.Value], ...] = (
    ("Integer", 0),
    ("Integer", -1),
    ("Integer", -129),
    ("Integer", -(2**31)),
    ("Integer", 2**31 - 1),
    ("Integer", -(2**63)),
    ("OctetString", b""),
    ("OctetString", b"GigabitEthernet0/0/1"),
    ("OctetString", bytes(range(256))[:200]),  # 200 octets: a long-form length (0x81)
    ("OctetString", "光纤 收发器".encode()),
    ("Null", None),
    ("ObjectIdentifier", "1.3.6.1.4.1.2011.2.23.1"),
    ("ObjectIdentifier", f"1.3.6.1.4.1.{U32}.{U32 - 1}.128.16384.2097152"),
    ("ObjectIdentifier", f"2.{U32 - 80}.1"),
    ("ObjectIdentifier", "0.0"),
    ("IpAddress", "10.20.30.40"),
    ("IpAddress", "255.255.255.255"),
    ("Counter32", 0),
    ("Counter32", U32),
    ("Gauge32", 2**31),
    ("TimeTicks", 123456789),
    ("Opaque", bytes.fromhex("9f780441200000")),  # an Opaque-wrapped float, as net-snmp sends it
    ("Counter64", 0),
    ("Counter64", U64),
    ("Counter64", 2**63 + 12345),
    ("noSuchObject", None),
    ("noSuchInstance", None),
    ("endOfMibView", None),
)


def _every_type_varbinds() -> list[VarBind]:
    return [
        VarBind(f"1.3.6.1.4.1.8072.9999.{i}.0", kind, value) for i, (kind, value) in enumerate(EVERY_TYPE)
    ]


def _if_walk(rows: int) -> list[VarBind]:
    """A GETBULK answer over ifTable / ifXTable: ``rows`` varbinds cycling through the columns."""
    columns: tuple[tuple[str, SnmpType, Callable[[int], ber.Value]], ...] = (
        (f"{IF_TABLE}.2", "OctetString", lambda i: f"GigabitEthernet0/0/{i}".encode()),
        (f"{IF_TABLE}.7", "Integer", lambda i: 1 + i % 2),
        (f"{IF_TABLE}.8", "Integer", lambda i: 1 + (i + 1) % 2),
        (f"{IF_TABLE}.14", "Counter32", lambda i: (i * 7919) % U32),
        (f"{IF_X_TABLE}.6", "Counter64", lambda i: 2**40 + i * 1_000_003),
        (f"{IF_X_TABLE}.10", "Counter64", lambda i: U64 - i),
        (f"{IF_X_TABLE}.15", "Gauge32", lambda i: 10_000),
        (f"{IF_TABLE}.9", "TimeTicks", lambda i: 4200 + i),
        (f"{IF_X_TABLE}.18", "OctetString", lambda i: b""),
        (f"{IF_TABLE}.6", "OctetString", lambda i: bytes((0, 0x1E, 0x73, 0, 0, i % 256))),
    )
    out = []
    for i in range(rows):
        oid, kind, value = columns[i % len(columns)]
        out.append(VarBind(f"{oid}.{1 + i // len(columns)}", kind, value(i)))
    tail: list[tuple[SnmpType, ber.Value]] = [("noSuchInstance", None), ("endOfMibView", None)]
    out += [VarBind(f"{IF_X_TABLE}.99.{i}", kind, value) for i, (kind, value) in enumerate(tail)]
    return out


def _link_down(if_index: int) -> list[VarBind]:
    return [
        VarBind(SYS_UPTIME, "TimeTicks", 4200),
        VarBind(SNMP_TRAP_OID, "ObjectIdentifier", LINK_DOWN),
        VarBind(f"{IF_TABLE}.1.{if_index}", "Integer", if_index),
        VarBind(f"{IF_TABLE}.7.{if_index}", "Integer", 1),
        VarBind(f"{IF_TABLE}.8.{if_index}", "Integer", 2),
        VarBind(f"{IF_TABLE}.2.{if_index}", "OctetString", f"GigabitEthernet0/0/{if_index}".encode()),
    ]


def _requested(*oids: str) -> list[VarBind]:
    return [VarBind(oid, "Null", None) for oid in oids]


@dataclass(frozen=True)
class Seed:
    """One valid message of the corpus, how often it is picked, and where its length octets are."""

    name: str
    data: bytes
    weight: int
    lengths: tuple[int, ...] = field(default=())


def message_seeds() -> list[Seed]:
    """The corpus of whole messages; small ones weigh more, as they dominate a trap receiver's input."""
    v1_enterprise = TrapV1Fields("1.3.6.1.4.1.2636.4.1", "10.20.30.40", 6, 17, 98765)
    v1_generic = TrapV1Fields("1.3.6.1.4.1.2011", "0.0.0.0", 2, 0, U32)
    v1_negative = TrapV1Fields(f"1.3.6.1.4.1.{U32}", "192.168.0.1", 6, -(2**31), 0)
    if_oids = [f"{IF_X_TABLE}.6", f"{IF_X_TABLE}.10", f"{IF_TABLE}.8"]
    built: list[tuple[str, int, bytes]] = [
        (
            "v1-trap-enterprise",
            6,
            ber.encode_message(
                0,
                COMMUNITY,
                PduType.TRAP_V1,
                [VarBind("1.3.6.1.4.1.2636.3.1.1.0", "OctetString", b"fan tray 2")],
                trap=v1_enterprise,
            ),
        ),
        (
            "v1-trap-linkdown",
            6,
            ber.encode_message(0, COMMUNITY, PduType.TRAP_V1, _link_down(7)[2:], trap=v1_generic),
        ),
        ("v1-trap-negative", 3, ber.encode_message(0, COMMUNITY, PduType.TRAP_V1, trap=v1_negative)),
        (
            "v2c-trap",
            10,
            ber.encode_message(1, COMMUNITY, PduType.SNMPV2_TRAP, _link_down(3), request_id=77),
        ),
        (
            "v2c-trap-every-type",
            4,
            ber.encode_message(
                1,
                COMMUNITY,
                PduType.SNMPV2_TRAP,
                _link_down(1)[:2] + _every_type_varbinds(),
                request_id=-(2**31),
            ),
        ),
        (
            "v2c-inform",
            8,
            ber.encode_message(1, COMMUNITY, PduType.INFORM_REQUEST, _link_down(12), request_id=2**31 - 1),
        ),
        ("v1-get", 3, ber.encode_message(0, COMMUNITY, PduType.GET_REQUEST, _requested(SYS_UPTIME))),
        (
            "v2c-get",
            3,
            ber.encode_message(
                1, COMMUNITY, PduType.GET_REQUEST, _requested(SYS_UPTIME, "1.3.6.1.2.1.1.5.0"), request_id=5
            ),
        ),
        (
            "v1-getnext",
            3,
            ber.encode_message(0, COMMUNITY, PduType.GET_NEXT_REQUEST, _requested(*if_oids), request_id=9),
        ),
        (
            "v2c-getbulk",
            3,
            ber.encode_message(
                1,
                COMMUNITY,
                PduType.GET_BULK_REQUEST,
                _requested(*if_oids),
                request_id=1234567,
                error_status=0,
                error_index=25,
            ),
        ),
        (
            "v2c-set",
            1,
            ber.encode_message(
                1,
                b"private",
                PduType.SET_REQUEST,
                [VarBind("1.3.6.1.2.1.1.6.0", "OctetString", b"rack 4")],
                request_id=3,
            ),
        ),
        (
            "v2c-report",
            1,
            ber.encode_message(
                1, COMMUNITY, PduType.REPORT, [VarBind("1.3.6.1.6.3.15.1.1.4.0", "Counter32", 1)]
            ),
        ),
        (
            "v2c-response-every-type",
            4,
            ber.encode_message(1, COMMUNITY, PduType.RESPONSE, _every_type_varbinds(), request_id=42),
        ),
        (
            "v1-response-error",
            2,
            ber.encode_message(
                0,
                COMMUNITY,
                PduType.RESPONSE,
                _requested(SYS_UPTIME),
                request_id=42,
                error_status=2,
                error_index=1,
            ),
        ),
        (
            "v2c-response-40",
            3,
            ber.encode_message(1, COMMUNITY, PduType.RESPONSE, _if_walk(40), request_id=1001),
        ),
        (
            "v2c-response-300",
            1,
            ber.encode_message(1, b"c" * 200, PduType.RESPONSE, _if_walk(300), request_id=1002),
        ),
    ]
    return [Seed(name, data, weight, length_offsets(data)) for name, weight, data in built]


def pdu_seeds(messages: Sequence[Seed]) -> list[Seed]:
    """The PDU inside each message on its own: what ``decode_pdu`` reads from a v3 scoped PDU."""
    out = []
    for seed in messages:
        _, start, stop = _tlv(seed.data, 0)
        _, _, pos = _tlv(seed.data, start)  # version
        _, _, pos = _tlv(seed.data, pos)  # community
        pdu = seed.data[pos:stop]
        out.append(Seed(seed.name, pdu, seed.weight, length_offsets(pdu)))
    return out


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(length octet offset, content start, content end) of the well-formed TLV at ``pos``."""
    first = data[pos + 1]
    if first < 0x80:
        return pos + 1, pos + 2, pos + 2 + first
    count = first & 0x7F
    start = pos + 2 + count
    return pos + 1, start, start + int.from_bytes(data[pos + 2 : start], "big")


def length_offsets(data: bytes) -> tuple[int, ...]:
    """The offset of every length octet in a well-formed message (the targets of length corruption)."""
    out: list[int] = []

    def walk(pos: int, end: int) -> None:
        while pos < end:
            at, start, stop = _tlv(data, pos)
            out.append(at)
            if data[pos] in _CONSTRUCTED:
                walk(start, stop)
            pos = stop

    walk(0, len(data))
    return tuple(out)


class Mutator:
    """Damages corpus entries: one to four stacked havoc steps per case, from ``random.Random(seed)``."""

    def __init__(self, seeds: Sequence[Seed], seed: int) -> None:
        self.seeds = list(seeds)
        self.rng = random.Random(seed)
        self._picks = [s for s in self.seeds for _ in range(s.weight)]
        self._steps: list[Callable[[bytearray, Seed], bytearray]] = [
            self._flip_bit,
            self._flip_bit,
            self._flip_bit,
            self._set_interesting,
            self._set_interesting,
            self._set_random,
            self._truncate,
            self._insert,
            self._delete,
            self._duplicate,
            self._corrupt_length,
            self._corrupt_length,
            self._corrupt_length,
            self._long_form_length,
            self._splice,
        ]
        self._names = [step.__name__.lstrip("_") for step in self._steps]
        self._counts = [0] * len(self._steps)

    @property
    def step_counts(self) -> dict[str, int]:
        """How often each havoc step was applied."""
        out = dict.fromkeys(self._names, 0)
        for name, count in zip(self._names, self._counts, strict=True):
            out[name] += count
        return out

    def mutate(self) -> bytes:
        """One damaged message; now and then (1 in 32) an undamaged one, so success paths stay hot."""
        random = self.rng.random
        picks, steps, counts = self._picks, self._steps, self._counts
        seed = picks[int(random() * len(picks))]
        roll = random()
        if roll < 1 / 32:
            return seed.data
        rounds = 1 if roll < 0.55 else 2 if roll < 0.8 else 3 if roll < 0.93 else 4
        data = bytearray(seed.data)
        for _ in range(rounds):
            i = int(random() * len(steps))
            counts[i] += 1
            data = steps[i](data, seed)
            if not data:
                break
        return bytes(data)

    # ------------------------------------------------------------------ havoc steps

    def _below(self, n: int) -> int:
        """A uniform int in [0, n): ``random()`` scaled, several times cheaper than ``randrange``."""
        return int(self.rng.random() * n)

    def _flip_bit(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            bits = self.rng.getrandbits(24)
            data[(bits >> 3) % len(data)] ^= 1 << (bits & 7)
        return data

    def _set_interesting(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            data[self._below(len(data))] = INTERESTING[self._below(len(INTERESTING))]
        return data

    def _set_random(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            data[self._below(len(data))] = self.rng.getrandbits(8)
        return data

    def _truncate(self, data: bytearray, seed: Seed) -> bytearray:
        del data[self._below(len(data) + 1) :]
        return data

    def _insert(self, data: bytearray, seed: Seed) -> bytearray:
        below = self._below
        pos = below(len(data) + 1)
        if below(2):
            data[pos:pos] = bytes(INTERESTING[below(len(INTERESTING))] for _ in range(1 + below(4)))
        else:
            data[pos:pos] = self.rng.randbytes(1 + below(8))
        return data

    def _delete(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            pos = self._below(len(data))
            del data[pos : pos + 1 + self._below(8)]
        return data

    def _duplicate(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            pos = self._below(len(data))
            data[pos:pos] = data[pos : pos + 1 + self._below(32)]
        return data

    def _corrupt_length(self, data: bytearray, seed: Seed) -> bytearray:
        """A length octet (where the valid message had one) set off by one, to an edge, or at random."""
        below = self._below
        pos = seed.lengths[below(len(seed.lengths))]
        if pos >= len(data):
            return data
        how = below(4)
        if how == 0:
            data[pos] = (data[pos] + 1) & 0xFF
        elif how == 1:
            data[pos] = (data[pos] - 1) & 0xFF
        elif how == 2:
            data[pos] = INTERESTING[below(len(INTERESTING))]
        else:
            data[pos] = self.rng.getrandbits(8)
        return data

    def _long_form_length(self, data: bytearray, seed: Seed) -> bytearray:
        """A short-form length rewritten in long form: minimal, padded, oversized or over 4 octets."""
        below = self._below
        pos = seed.lengths[below(len(seed.lengths))]
        if pos >= len(data) or data[pos] & 0x80:
            return data
        count = (1, 2, 4, 5)[below(4)]
        length = data[pos]
        if below(4) == 0:
            length = (length + 1, 0x7FFFFFFF, (1 << (8 * count)) - 1)[below(3)]
        data[pos : pos + 1] = bytes((0x80 | count,)) + (length & ((1 << (8 * count)) - 1)).to_bytes(
            count, "big"
        )
        return data

    def _splice(self, data: bytearray, seed: Seed) -> bytearray:
        other = self._picks[self._below(len(self._picks))].data
        return data[: self._below(len(data) + 1)] + other[self._below(len(other) + 1) :]
