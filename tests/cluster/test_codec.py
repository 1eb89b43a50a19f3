"""Events-topic messages: what the correlator reads back, ids that survive a resend, keys by circuit."""

from __future__ import annotations

import pytest

from alarmd.cluster.codec import (
    Envelope,
    EventDecodeError,
    Feedback,
    Keys,
    Samples,
    decode,
    encode_event,
    encode_feedback,
    encode_poll,
    encode_samples,
    kind_of,
    peek_id,
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


def poll(at: float = 1000.0) -> list[Sample]:
    """A device poll: interface rows that share the device's labels, and one device-wide reading."""
    device = {"device": "cpe-1", "device_kind": "cpe_router", "circuit": "CIR-2", "customer": "C1"}
    rows = [
        Sample(metric, {**device, "if_index": str(i), "interface": f"Gi0/0/{i}"}, value + i, at)
        for i in (1, 2, 3)
        for metric, value in (("if_oper_status", 1.0), ("interface_in_octets", 5e9))
    ]
    return [*rows, Sample("device_uptime_seconds", device, 86400.0, at + 0.2)]


def test_a_poll_reads_back_as_its_samples_in_order_and_its_labels_whole() -> None:
    samples = poll()
    event_id, payload = encode_samples(samples)
    envelope = decode(payload)
    assert envelope == Envelope(event_id, Samples(tuple(samples)))
    assert kind_of(envelope.item) == "sample"
    assert payload.count(b'"customer"') == 1, "labels every sample shares are written once"


def test_a_poll_sent_again_has_its_id_and_another_poll_another() -> None:
    first_id, payload = encode_samples(poll())
    assert encode_samples(poll())[0] == first_id
    assert decode(payload).id == first_id
    assert encode_samples(poll(at=1060.0))[0] != first_id
    changed = poll()
    changed[2] = Sample(changed[2].metric, changed[2].labels, 0.0, changed[2].at)
    assert encode_samples(changed)[0] != first_id


def test_a_poll_is_one_message_per_key_and_one_for_a_known_device() -> None:
    keys = Keys(inventory())
    samples = poll()
    (key, payload), *more = encode_poll(keys, samples)
    assert (key, more) == (b"CIR-2", [])
    assert decode(payload).item == Samples(tuple(samples))
    stray = Sample("device_uptime_seconds", {"device": "spare"}, 5.0, 1000.0)
    assert [k for k, _ in encode_poll(keys, [*samples, stray])] == [b"CIR-2", b"spare"]


def polled(payload: bytes) -> tuple[Sample, ...]:
    item = decode(payload).item
    assert isinstance(item, Samples)
    return item.samples


def test_a_large_poll_goes_as_several_messages_in_order() -> None:
    samples = poll()
    messages = encode_poll(Keys(inventory()), samples, most=3)
    assert [len(polled(v)) for _, v in messages] == [3, 3, 1]
    assert [s for _, v in messages for s in polled(v)] == samples
    assert len({decode(v).id for _, v in messages}) == 3


def test_messages_of_collectors_before_polls_were_packed_still_read() -> None:
    old_sample = (
        b'{"format":1,"type":"sample","id":"0f3c","metric":"if_oper_status",'
        b'"labels":{"device":"cpe-1","if_index":"2"},"value":2.0,"at":1000.0}'
    )
    assert decode(old_sample) == Envelope(
        "0f3c", Sample("if_oper_status", {"device": "cpe-1", "if_index": "2"}, 2.0, 1000.0)
    )
    old_trap = (
        b'{"format":1,"type":"event","id":"9a1b","source":"trap","kind":"linkDown","at":1000.0,'
        b'"labels":{"device":"cpe-1"},"varbinds":[["1.3.6.1.2.1.2.2.1.2.2","OctetString",{"hex":"ff"}]],'
        b'"uptime":4200,"attributes":{"snmp_version":"2c"}}'
    )
    assert decode(old_trap).item == Event(
        "trap",
        "linkDown",
        1000.0,
        {"device": "cpe-1"},
        (VarBind("1.3.6.1.2.1.2.2.1.2.2", "OctetString", b"\xff"),),
        4200,
        {"snmp_version": "2c"},
    )


def test_a_poll_message_with_a_bad_row_is_refused_saying_why() -> None:
    with pytest.raises(EventDecodeError, match="ValueError"):
        decode(b'{"format":1,"type":"samples","id":"x","labels":{},"samples":[["m",{},1.0]]}')


def test_a_messages_id_is_read_without_the_rest_and_a_message_without_one_has_none() -> None:
    trap = Event("trap", "1.3.6.1.6.3.1.1.5.3", 10.0, {"device": "r1"}, uptime=5)
    messages = [
        encode_samples([Sample("m", {"device": "r1"}, 1.0, 10.0)]),
        encode_event(trap),
        encode_feedback(b'{"ticket": 1}'),
    ]
    for event_id, payload in messages:
        assert peek_id(payload) == event_id == decode(payload).id
    assert peek_id(b'{"type":"event","format":1,"id":"abc","at":1,"source":"trap","kind":"x"}') is None
    assert peek_id(b"not json") is None
