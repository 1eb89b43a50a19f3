"""Events-topic messages: what the correlator reads back, ids that survive a resend, keys by circuit."""

from __future__ import annotations

import pytest

from alarmd.cluster.codec import (
    Envelope,
    EventDecodeError,
    Feedback,
    Keys,
    decode,
    encode_event,
    encode_feedback,
    encode_sample,
    kind_of,
    trap_fingerprint,
)
from alarmd.config import Config
from alarmd.inventory import Inventory
from alarmd.model import Event, Sample, VarBind

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


def trap(receiver: str, uptime: int | None = 4200, at: float = 1000.0, if_index: int = 2) -> Event:
    varbinds = (
        VarBind(SYS_UPTIME, "TimeTicks", uptime),
        VarBind(TRAP_OID, "ObjectIdentifier", LINK_DOWN),
        VarBind("1.3.6.1.2.1.2.2.1.1.2", "Integer", if_index),
        VarBind("1.3.6.1.2.1.2.2.1.2.2", "OctetString", b"\xffGi0/0/1"),
    )
    labels = {"source_address": receiver, "agent_address": "10.0.0.7", "device": "cpe-1", "trap": "linkDown"}
    return Event("trap", LINK_DOWN, at, labels, varbinds, uptime, {"snmp_version": "2c"})


def test_a_trap_through_two_receivers_has_one_id() -> None:
    assert trap_fingerprint(trap("192.0.2.1", at=1000.0)) == trap_fingerprint(trap("192.0.2.2", at=1000.4))


def test_a_repeat_with_a_new_uptime_is_another_trap() -> None:
    assert trap_fingerprint(trap("192.0.2.1", uptime=4200)) != trap_fingerprint(
        trap("192.0.2.1", uptime=9900)
    )


def test_other_varbinds_make_another_trap() -> None:
    assert trap_fingerprint(trap("192.0.2.1", if_index=2)) != trap_fingerprint(trap("192.0.2.1", if_index=3))


def test_without_uptime_the_receipt_second_tells_repeats_apart() -> None:
    first, same_second, later = (trap("192.0.2.1", uptime=None, at=t) for t in (1000.1, 1000.9, 1003.0))
    assert trap_fingerprint(first) == trap_fingerprint(same_second)
    assert trap_fingerprint(first) != trap_fingerprint(later)


def test_an_event_reads_back_as_it_was_sent() -> None:
    event = trap("192.0.2.1")
    event_id, payload = encode_event(event)
    envelope = decode(payload)
    assert envelope.id == event_id == trap_fingerprint(event)
    assert envelope.item == event


def test_a_sample_reads_back_and_its_id_is_the_same_when_sent_again() -> None:
    sample = Sample(
        "interface_utilisation_percent", {"device": "cpe-1", "interface": "Gi0/0/1"}, 91.5, 1000.0
    )
    first_id, payload = encode_sample(sample)
    assert decode(payload).item == sample
    assert encode_sample(sample)[0] == first_id
    assert encode_sample(Sample(sample.metric, sample.labels, 91.5, 1300.0))[0] != first_id


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "not JSON"),
        (b'{"format": 99}', "format 1"),
        (b'{"format": 1, "type": "alarm"}', "unknown message type"),
        (b'{"format": 1, "type": "sample", "id": "x", "labels": {}}', "KeyError"),
        (
            b'{"format":1,"type":"event","id":"x","source":"fax","kind":"k","at":1,"labels":{},'
            b'"varbinds":[],"uptime":null,"attributes":{}}',
            "unknown event source",
        ),
    ],
)
def test_a_bad_message_is_refused_saying_why(payload: bytes, says: str) -> None:
    with pytest.raises(EventDecodeError, match=says) as caught:
        decode(payload)
    assert caught.value.reason == "malformed"


def inventory() -> Inventory:
    return Inventory(
        Config.model_validate(
            {
                "customers": [{"id": "C1", "name": "c", "tier": "gold"}],
                "devices": [
                    {"name": n, "kind": "cpe_router", "address": a, "snmp": {"community": "x"}}
                    for n, a in (("pe-1", "10.0.0.1"), ("cpe-1", "10.0.0.2"), ("spare", "10.0.0.3"))
                ],
                "circuits": [
                    {"id": "CIR-2", "customer": "C1", "path": [{"device": "cpe-1"}, {"device": "pe-1"}]},
                    {"id": "CIR-1", "customer": "C1", "path": [{"device": "pe-1"}]},
                ],
            }
        )
    )


def test_messages_are_keyed_by_circuit_then_device_then_sender() -> None:
    keys = Keys(inventory())
    assert keys.of({"device": "cpe-1", "interface": "Gi0/0/1"}) == b"CIR-2"
    assert keys.of({"device": "pe-1"}) == b"CIR-1", "a shared device goes with its first circuit"
    assert keys.of({"device": "spare"}) == b"spare"
    assert keys.of({"circuit": "CIR-9"}) == b"CIR-9"
    assert keys.of({"agent_address": "10.9.9.9", "source_address": "10.0.0.254"}) == b"10.9.9.9"


def test_ticketing_feedback_travels_as_its_own_bytes_with_an_id_that_depends_on_them_only() -> None:
    payload = b'{"type":"acknowledged","work_order_id":"WO-0123456789abcdef0123"}'
    event_id, body = encode_feedback(payload)
    envelope = decode(body)
    assert envelope == Envelope(event_id, Feedback(payload))
    assert kind_of(envelope.item) == "feedback"
    assert encode_feedback(payload)[0] == event_id
    assert encode_feedback(payload.replace(b"acknowledged", b"resolved"))[0] != event_id
