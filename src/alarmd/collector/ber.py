"""A small BER codec for SNMPv1/v2c messages that builds plain Python values, not pyasn1 objects.

It decodes what a trap receiver sees (RFC 1157 / RFC 3416 messages, the v1 Trap-PDU included)
and encodes what it answers (the Response that acknowledges an INFORM).  Every malformed input
raises :class:`BerError`; nothing else escapes.  SNMPv3 messages are recognised by
:func:`message_version` and left to pysnmp, which owns USM.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Final

from alarmd.model import SnmpType, VarBind

# Universal and SNMP application tags (RFC 2578 §7.1, RFC 3416 §3).
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
OBJECT_IDENTIFIER: Final = 0x06
SEQUENCE: Final = 0x30
IP_ADDRESS: Final = 0x40
COUNTER32: Final = 0x41
GAUGE32: Final = 0x42
TIMETICKS: Final = 0x43
OPAQUE: Final = 0x44
NSAP_ADDRESS: Final = 0x45
COUNTER64: Final = 0x46
UINTEGER32: Final = 0x47
NO_SUCH_OBJECT: Final = 0x80
NO_SUCH_INSTANCE: Final = 0x81
END_OF_MIB_VIEW: Final = 0x82

VERSION_1: Final = 0
VERSION_2C: Final = 1
VERSION_3: Final = 3

MAX_SUB_IDS: Final = 128  # RFC 2578 §3.5
MAX_SUB_ID: Final = 0xFFFFFFFF
_MAX_PARTIAL: Final = (MAX_SUB_ID + 80) >> 7  # a sub-identifier still below 2**32 + 80 before its last octet
MAX_UNSIGNED32: Final = 0xFFFFFFFF
MAX_UNSIGNED64: Final = 0xFFFFFFFFFFFFFFFF
MAX_INT_OCTETS: Final = 9  # a Counter64 with its leading zero; anything longer is not SNMP


class PduType(IntEnum):
    """The context-specific constructed tags of the SNMP PDUs."""

    GET_REQUEST = 0xA0
    GET_NEXT_REQUEST = 0xA1
    RESPONSE = 0xA2
    SET_REQUEST = 0xA3
    TRAP_V1 = 0xA4
    GET_BULK_REQUEST = 0xA5
    INFORM_REQUEST = 0xA6
    SNMPV2_TRAP = 0xA7
    REPORT = 0xA8


class BerError(Exception):
    """A datagram is not a well-formed SNMPv1/v2c message; ``reason`` says where and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TrapV1Fields:
    """The fields only an SNMPv1 Trap-PDU has (RFC 1157 §4.1.6)."""

    enterprise: str
    agent_address: str
    generic: int
    specific: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded SNMPv1/v2c message; ``trap`` is set for a v1 Trap-PDU, which has no request-id."""

    version: int
    community: bytes
    pdu_type: PduType
    request_id: int
    error_status: int
    error_index: int
    varbinds: tuple[VarBind, ...]
    trap: TrapV1Fields | None = None
    varbind_bytes: bytes = b""


@dataclass(frozen=True, slots=True)
class Pdu:
    """A decoded PDU on its own (what a v3 scoped PDU carries)."""

    pdu_type: PduType
    request_id: int
    error_status: int
    error_index: int
    varbinds: tuple[VarBind, ...]
    trap: TrapV1Fields | None
    varbind_bytes: bytes


# --------------------------------------------------------------------------- decoding

_PDU_TYPES: Final = frozenset(int(t) for t in PduType)


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read the tag and length at ``pos``; return (tag, content start, content end)."""
    if pos + 2 > end:
        raise BerError(f"truncated header at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError(f"multi-byte tag at offset {pos} is not used by SNMP")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise BerError(f"indefinite length at offset {pos - 1} is not allowed in SNMP")
    else:
        count = first & 0x7F
        if count > 4:
            raise BerError(f"length of {count} octets at offset {pos - 1} is too long")
        if pos + count > end:
            raise BerError(f"truncated length at offset {pos - 1}")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    stop = pos + length
    if stop > end:
        raise BerError(f"length {length} at offset {pos} runs past the end of its container")
    return tag, pos, stop


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _header(data, pos, end)
    if got != tag:
        raise BerError(f"expected {what} (tag 0x{tag:02x}) at offset {pos}, got tag 0x{got:02x}")
    return start, stop


def _int(data: bytes, start: int, stop: int) -> int:
    if start == stop:
        raise BerError(f"empty integer at offset {start}")
    if stop - start > MAX_INT_OCTETS:
        raise BerError(f"integer of {stop - start} octets at offset {start} is too long")
    return int.from_bytes(data[start:stop], "big", signed=True)


def _unsigned(data: bytes, start: int, stop: int, limit: int) -> int:
    value = _int(data, start, stop)
    if value < 0:
        # Some agents encode unsigned values of 2**31 and up without the leading zero octet;
        # net-snmp reads them modulo 2**32, and so do we (the bits are unambiguous).
        value += 1 << (8 * (stop - start))
    if value > limit:
        raise BerError(f"unsigned value {value} at offset {start} is out of range")
    return value


_OID_CACHE: dict[bytes, str] = {}
_OID_CACHE_SIZE: Final = 4096


def _oid(data: bytes, start: int, stop: int) -> str:
    """Decode an OID's content octets; trap OIDs repeat, so the result is cached by those octets."""
    raw = data[start:stop]
    found = _OID_CACHE.get(raw)
    if found is None:
        found = _decode_oid(data, start, stop)
        if len(_OID_CACHE) >= _OID_CACHE_SIZE:
            _OID_CACHE.clear()
        _OID_CACHE[raw] = found
    return found


def _decode_oid(data: bytes, start: int, stop: int) -> str:
    raw = data[start:stop]
    if not raw:
        raise BerError(f"empty object identifier at offset {start}")
    if raw[-1] & 0x80:
        raise BerError(f"object identifier at offset {start} ends inside a sub-identifier")
    if max(raw) < 0x80:  # the common case: every sub-identifier fits one octet
        subs: list[int] | bytes = raw
    else:
        subs = []
        value = 0
        for pos, byte in enumerate(raw, start):
            if byte & 0x80:
                if value == 0 and byte == 0x80:
                    raise BerError(f"sub-identifier with a leading 0x80 octet at offset {pos}")
                value = (value << 7) | (byte & 0x7F)
                if value > _MAX_PARTIAL:
                    raise BerError(f"sub-identifier at offset {pos} exceeds 32 bits")
            else:
                subs.append((value << 7) | byte)
                value = 0
    if len(subs) >= MAX_SUB_IDS:  # the first sub-identifier holds two arcs
        raise BerError(f"object identifier at offset {start} has more than {MAX_SUB_IDS} sub-identifiers")
    first = subs[0]
    if first > MAX_SUB_ID + 80 or (len(subs) > 1 and max(subs[1:]) > MAX_SUB_ID):
        raise BerError(f"object identifier at offset {start} has a sub-identifier over 32 bits")
    head = f"0.{first}" if first < 40 else f"1.{first - 40}" if first < 80 else f"2.{first - 80}"
    return head + "." + ".".join(map(str, subs[1:])) if len(subs) > 1 else head


Value = int | str | bytes | None
_Decoder = Callable[[bytes, int, int], tuple[SnmpType, Value]]


def _ip(data: bytes, start: int, stop: int) -> tuple[SnmpType, Value]:
    if stop - start != 4:
        raise BerError(f"IpAddress of {stop - start} octets at offset {start}")
    return "IpAddress", ".".join(map(str, data[start:stop]))


def _empty(kind: SnmpType) -> _Decoder:
    def decode(data: bytes, start: int, stop: int) -> tuple[SnmpType, Value]:
        if start != stop:
            raise BerError(f"{kind} with content at offset {start}")
        return kind, None

    return decode


def _unsigned_of(kind: SnmpType, limit: int) -> _Decoder:
    def decode(data: bytes, start: int, stop: int) -> tuple[SnmpType, Value]:
        return kind, _unsigned(data, start, stop, limit)

    return decode


def _octets_of(kind: SnmpType) -> _Decoder:
    def decode(data: bytes, start: int, stop: int) -> tuple[SnmpType, Value]:
        return kind, data[start:stop]

    return decode


_DECODERS: Final[dict[int, _Decoder]] = {
    INTEGER: lambda data, start, stop: ("Integer", _int(data, start, stop)),
    OCTET_STRING: _octets_of("OctetString"),
    NULL: _empty("Null"),
    OBJECT_IDENTIFIER: lambda data, start, stop: ("ObjectIdentifier", _oid(data, start, stop)),
    IP_ADDRESS: _ip,
    COUNTER32: _unsigned_of("Counter32", MAX_UNSIGNED32),
    GAUGE32: _unsigned_of("Gauge32", MAX_UNSIGNED32),
    TIMETICKS: _unsigned_of("TimeTicks", MAX_UNSIGNED32),
    OPAQUE: _octets_of("Opaque"),
    NSAP_ADDRESS: _octets_of("OctetString"),  # RFC 1442, obsolete: kept as its octets
    COUNTER64: _unsigned_of("Counter64", MAX_UNSIGNED64),
    UINTEGER32: _unsigned_of("Gauge32", MAX_UNSIGNED32),  # RFC 1442's UInteger32 became Unsigned32
    NO_SUCH_OBJECT: _empty("noSuchObject"),
    NO_SUCH_INSTANCE: _empty("noSuchInstance"),
    END_OF_MIB_VIEW: _empty("endOfMibView"),
}


#: Number types by tag, with the largest value each may hold (an Integer's sign is its own).
_NUMBERS: Final[dict[int, tuple[SnmpType, int]]] = {
    INTEGER: ("Integer", (1 << 71) - 1),
    COUNTER32: ("Counter32", MAX_UNSIGNED32),
    GAUGE32: ("Gauge32", MAX_UNSIGNED32),
    TIMETICKS: ("TimeTicks", MAX_UNSIGNED32),
    COUNTER64: ("Counter64", MAX_UNSIGNED64),
    UINTEGER32: ("Gauge32", MAX_UNSIGNED32),
}


def _value(data: bytes, pos: int, end: int) -> tuple[SnmpType, Value, int]:
    """Decode one ObjectSyntax value at ``pos``; return (type, value, next offset)."""
    tag, start, stop = _header(data, pos, end)
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise BerError(f"unknown value type (tag 0x{tag:02x}) at offset {pos}")
    kind, value = decoder(data, start, stop)
    return kind, value, stop


def _varbinds(data: bytes, pos: int, end: int) -> tuple[tuple[VarBind, ...], int]:
    start, stop = _expect(data, pos, end, SEQUENCE, "variable-bindings")
    out: list[VarBind] = []
    pos = start
    while pos < stop:
        # Fast path: a varbind under 128 octets whose name and value are under 128 octets each,
        # which is nearly every varbind in a trap; anything else goes through the general reader.
        if (
            pos + 6 <= stop
            and data[pos] == SEQUENCE
            and data[pos + 1] < 0x80
            and data[pos + 2] == OBJECT_IDENTIFIER
            and data[pos + 3] < 0x80
        ):
            vb_stop = pos + 2 + data[pos + 1]
            name_start = pos + 4
            name_stop = name_start + data[pos + 3]
            if vb_stop > stop or name_stop + 2 > vb_stop:
                raise BerError(f"variable binding at offset {pos} runs past the end of its container")
            tag, size = data[name_stop], data[name_stop + 1]
            decoder = _DECODERS.get(tag)
            if size < 0x80 and decoder is not None:
                after = name_stop + 2 + size
                if after > vb_stop:
                    raise BerError(
                        f"length {size} at offset {name_stop + 2} runs past the end of its container"
                    )
                fast = _NUMBERS.get(tag)
                if fast is not None and 0 < size <= MAX_INT_OCTETS and data[name_stop + 2] < 0x80:
                    # A non-negative number, the bulk of every response: read in place.
                    kind, limit = fast
                    number = int.from_bytes(data[name_stop + 2 : after], "big")
                    if number > limit:
                        raise BerError(f"{kind} value {number} at offset {name_stop + 2} is out of range")
                    value: Value = number
                else:
                    kind, value = decoder(data, name_stop + 2, after)
            else:
                kind, value, after = _value(data, name_stop, vb_stop)
        else:
            vb_start, vb_stop = _expect(data, pos, stop, SEQUENCE, "variable binding")
            name_start, name_stop = _expect(data, vb_start, vb_stop, OBJECT_IDENTIFIER, "name")
            kind, value, after = _value(data, name_stop, vb_stop)
        if after != vb_stop:
            raise BerError(f"trailing octets in the variable binding at offset {pos}")
        out.append(VarBind(_oid(data, name_start, name_stop), kind, value))
        pos = vb_stop
    return tuple(out), stop


def _pdu(data: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    tag, start, stop = _header(data, pos, end)
    if tag not in _PDU_TYPES:
        raise BerError(f"unknown PDU type (tag 0x{tag:02x}) at offset {pos}")
    pdu_type = PduType(tag)
    trap = None
    if pdu_type is PduType.TRAP_V1:
        s, p = _expect(data, start, stop, OBJECT_IDENTIFIER, "enterprise")
        enterprise = _oid(data, s, p)
        s, p = _expect(data, p, stop, IP_ADDRESS, "agent-addr")
        if p - s != 4:
            raise BerError(f"agent-addr of {p - s} octets at offset {s}")
        agent = ".".join(map(str, data[s:p]))
        s, p = _expect(data, p, stop, INTEGER, "generic-trap")
        generic = _int(data, s, p)
        s, p = _expect(data, p, stop, INTEGER, "specific-trap")
        specific = _int(data, s, p)
        s, p = _expect(data, p, stop, TIMETICKS, "time-stamp")
        trap = TrapV1Fields(enterprise, agent, generic, specific, _unsigned(data, s, p, MAX_UNSIGNED32))
        request_id = error_status = error_index = 0
    else:
        s, p = _expect(data, start, stop, INTEGER, "request-id")
        request_id = _int(data, s, p)
        s, p = _expect(data, p, stop, INTEGER, "error-status")
        error_status = _int(data, s, p)
        s, p = _expect(data, p, stop, INTEGER, "error-index")
        error_index = _int(data, s, p)
    varbinds, after = _varbinds(data, p, stop)
    if after != stop:
        raise BerError(f"trailing octets in the PDU at offset {after}")
    return Pdu(pdu_type, request_id, error_status, error_index, varbinds, trap, data[p:after]), stop


def message_version(data: bytes) -> int:
    """The msgVersion of an SNMP message (0 = v1, 1 = v2c, 3 = v3), read without decoding the rest."""
    data = bytes(data)
    if len(data) > 5 and data[0] == SEQUENCE and data[1] != 0x80:
        # The common shape, read in place: a one-octet INTEGER right after the message header.
        pos = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
        if pos + 3 <= len(data) and data[pos] == INTEGER and data[pos + 1] == 1:
            version = data[pos + 2]
            return version - 256 if version & 0x80 else version
    start, stop = _expect(data, 0, len(data), SEQUENCE, "message")
    s, p = _expect(data, start, stop, INTEGER, "version")
    return _int(data, s, p)


def py_decode_pdu(data: bytes) -> Pdu:
    """Decode one BER-encoded PDU (the ``data`` of a scoped PDU, or pyasn1's encoding of one)."""
    data = bytes(data)
    pdu, stop = _pdu(data, 0, len(data))
    if stop != len(data):
        raise BerError(f"trailing octets after the PDU at offset {stop}")
    return pdu


def py_decode_message(data: bytes) -> Message:
    """Decode an SNMPv1 or v2c message; anything else, or anything malformed, raises BerError."""
    data = bytes(data)
    start, stop = _expect(data, 0, len(data), SEQUENCE, "message")
    if stop != len(data):
        raise BerError(f"trailing octets after the message at offset {stop}")
    s, p = _expect(data, start, stop, INTEGER, "version")
    version = _int(data, s, p)
    if version not in (VERSION_1, VERSION_2C):
        raise BerError(f"version {version} is not SNMPv1 or v2c")
    s, p = _expect(data, p, stop, OCTET_STRING, "community")
    community = data[s:p]
    pdu, after = _pdu(data, p, stop)
    if after != stop:
        raise BerError(f"trailing octets after the PDU at offset {after}")
    return Message(
        version,
        community,
        pdu.pdu_type,
        pdu.request_id,
        pdu.error_status,
        pdu.error_index,
        pdu.varbinds,
        pdu.trap,
        pdu.varbind_bytes,
    )


def _accelerator() -> ModuleType | None:
    """The C decoder, configured with this module's classes; None when absent or turned off."""
    if os.environ.get("ALARMD_BER", "").lower() == "python":
        return None
    try:
        from alarmd.collector import _ber  # noqa: PLC0415 - optional, built by setup.py where a compiler is
    except ImportError:
        return None
    try:
        _ber.configure(
            VarBind, Message, Pdu, TrapV1Fields, BerError, tuple(PduType(t) for t in range(0xA0, 0xA9))
        )
    except (TypeError, ValueError):
        return None
    return _ber


_C: Final = _accelerator()
#: Which decoder :func:`decode_message` and :func:`decode_pdu` are: ``"c"`` or ``"python"``.
CODEC: Final = "python" if _C is None else "c"
#: Decode an SNMPv1 or v2c message; anything else, or anything malformed, raises BerError.
decode_message: Final[Callable[[bytes], Message]] = py_decode_message if _C is None else _C.decode_message
#: Decode one BER-encoded PDU (the ``data`` of a scoped PDU, or pyasn1's encoding of one).
decode_pdu: Final[Callable[[bytes], Pdu]] = py_decode_pdu if _C is None else _C.decode_pdu


# --------------------------------------------------------------------------- encoding


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def _int_content(value: int) -> bytes:
    return value.to_bytes((value if value >= 0 else ~value).bit_length() // 8 + 1, "big", signed=True)


_OID_BYTES: dict[str, bytes] = {}


def _oid_content(oid: str) -> bytes:
    """An OID's content octets; request OIDs repeat every poll cycle, so they are cached."""
    found = _OID_BYTES.get(oid)
    if found is None:
        found = _encode_oid(oid)
        if len(_OID_BYTES) >= _OID_CACHE_SIZE:
            _OID_BYTES.clear()
        _OID_BYTES[oid] = found
    return found


def _encode_oid(oid: str) -> bytes:
    try:
        arcs = [int(part) for part in oid.split(".")]
    except ValueError:
        raise BerError(f"'{oid}' is not a numeric OID") from None
    if len(arcs) < 2 or len(arcs) > MAX_SUB_IDS:
        raise BerError(f"'{oid}' must have 2 to {MAX_SUB_IDS} sub-identifiers")
    first, second = arcs[0], arcs[1]
    if first > 2 or (first < 2 and second >= 40) or min(arcs) < 0 or max(arcs[1:]) > MAX_SUB_ID:
        raise BerError(f"'{oid}' is not an encodable OID")
    out = bytearray()
    for arc in (first * 40 + second, *arcs[2:]):
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


_ENCODE_TAGS: Final[dict[SnmpType, int]] = {
    "Integer": INTEGER,
    "OctetString": OCTET_STRING,
    "Null": NULL,
    "ObjectIdentifier": OBJECT_IDENTIFIER,
    "IpAddress": IP_ADDRESS,
    "Counter32": COUNTER32,
    "Gauge32": GAUGE32,
    "TimeTicks": TIMETICKS,
    "Opaque": OPAQUE,
    "Counter64": COUNTER64,
    "noSuchObject": NO_SUCH_OBJECT,
    "noSuchInstance": NO_SUCH_INSTANCE,
    "endOfMibView": END_OF_MIB_VIEW,
}
_UNSIGNED_LIMITS: Final[dict[SnmpType, int]] = {
    "Counter32": MAX_UNSIGNED32,
    "Gauge32": MAX_UNSIGNED32,
    "TimeTicks": MAX_UNSIGNED32,
    "Counter64": MAX_UNSIGNED64,
}


def _ip_content(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == 4:
        return value
    if isinstance(value, str):
        parts = value.split(".")
        if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
            return bytes(int(p) for p in parts)
    raise BerError(f"{value!r} is not an IPv4 address")


def encode_value(kind: SnmpType, value: Value) -> bytes:
    """Encode one value of an SNMP type (the ObjectSyntax of a variable binding)."""
    tag = _ENCODE_TAGS.get(kind)
    if tag is None:
        raise BerError(f"unknown SNMP type {kind!r}")
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        if value is not None:
            raise BerError(f"{kind} carries no value, got {value!r}")
        return bytes((tag, 0))
    if kind == "Integer" or kind in _UNSIGNED_LIMITS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BerError(f"{kind} needs an int, got {value!r}")
        limit = _UNSIGNED_LIMITS.get(kind)
        if limit is not None and not 0 <= value <= limit:
            raise BerError(f"{kind} value {value} is out of range")
        if limit is None and not -(1 << 63) <= value < 1 << 63:
            raise BerError(f"Integer value {value} is out of range")
        return _tlv(tag, _int_content(value))
    if kind == "ObjectIdentifier":
        if not isinstance(value, str):
            raise BerError(f"ObjectIdentifier needs a dotted str, got {value!r}")
        return _tlv(tag, _oid_content(value))
    if kind == "IpAddress":
        return _tlv(tag, _ip_content(value))
    if not isinstance(value, bytes):
        raise BerError(f"{kind} needs bytes, got {value!r}")
    return _tlv(tag, value)


def encode_varbinds(varbinds: Iterable[VarBind]) -> bytes:
    """Encode a variable-bindings list (the SEQUENCE OF VarBind, header included)."""
    body = b"".join(
        _tlv(SEQUENCE, _tlv(OBJECT_IDENTIFIER, _oid_content(vb.oid)) + encode_value(vb.type, vb.value))
        for vb in varbinds
    )
    return _tlv(SEQUENCE, body)


def encode_message(
    version: int,
    community: bytes,
    pdu_type: PduType,
    varbinds: Iterable[VarBind] = (),
    *,
    request_id: int = 0,
    error_status: int = 0,
    error_index: int = 0,
    trap: TrapV1Fields | None = None,
    varbind_bytes: bytes | None = None,
) -> bytes:
    """Encode an SNMPv1/v2c message; a v1 Trap-PDU takes its header fields from ``trap``."""
    if version not in (VERSION_1, VERSION_2C):
        raise BerError(f"version {version} is not SNMPv1 or v2c")
    vbs = varbind_bytes if varbind_bytes is not None else encode_varbinds(varbinds)
    if pdu_type is PduType.TRAP_V1:
        if trap is None:
            raise BerError("a v1 Trap-PDU needs its trap fields")
        head = (
            _tlv(OBJECT_IDENTIFIER, _oid_content(trap.enterprise))
            + _tlv(IP_ADDRESS, _ip_content(trap.agent_address))
            + _tlv(INTEGER, _int_content(trap.generic))
            + _tlv(INTEGER, _int_content(trap.specific))
            + encode_value("TimeTicks", trap.timestamp)
        )
    else:
        head = (
            _tlv(INTEGER, _int_content(request_id))
            + _tlv(INTEGER, _int_content(error_status))
            + _tlv(INTEGER, _int_content(error_index))
        )
    return _tlv(
        SEQUENCE,
        _tlv(INTEGER, _int_content(version)) + _tlv(OCTET_STRING, community) + _tlv(pdu_type, head + vbs),
    )


def encode_response(request: Message) -> bytes:
    """The Response that acknowledges an INFORM (RFC 3416 §4.2.7): same request-id and varbinds, no error."""
    return encode_message(
        request.version,
        request.community,
        PduType.RESPONSE,
        request.varbinds,
        request_id=request.request_id,
        varbind_bytes=request.varbind_bytes or None,
    )
