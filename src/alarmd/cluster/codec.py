"""Samples and trap events as messages on the events topic: JSON, keyed by circuit, with deterministic ids.

A collector sends one device poll as one message: its samples, in order, under the labels
they share, with an id that hashes them, so a poll sent twice carries the same id.  Messages
of one sample each (``"type": "sample"``, what collectors sent before polls were packed) are
still read.  A trap's id is its fingerprint (:func:`trap_fingerprint`): the device, the trap OID,
the trap's own sysUpTime and its other varbinds, and nothing about the receiver, so the
copies that two receivers publish of one trap share one id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from alarmd.collector.trapdefs import SNMP_TRAP_OID, SYS_UPTIME
from alarmd.inventory import Inventory
from alarmd.model import Event, Sample, VarBind

FORMAT = 1
#: Samples in one message at most (about 100 kB), well under Kafka's default 1 MB message limit:
#: a poll of a device with thousands of interfaces goes as several messages.
POLL_MESSAGE_SAMPLES = 1000
#: Varbinds the fingerprint reads apart (the trap OID, sysUpTime) or never (the receiver's view).
_APART = frozenset({SNMP_TRAP_OID, SYS_UPTIME})


class EventDecodeError(Exception):
    """A message on the events topic that is not a sample or event of a known format."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.reason = "malformed"
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Feedback:
    """Ticketing feedback re-keyed onto the events topic: the ticketing message's bytes as it was produced."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Samples:
    """The samples of one device poll, in the order it took them: one message on the events topic."""

    samples: tuple[Sample, ...]


Item = Sample | Samples | Event | Feedback
"""What one message on the events topic carries."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: its id and the sample, poll, event or ticketing feedback it carries."""

    id: str
    item: Item


def kind_of(item: Item) -> Literal["sample", "event", "feedback"]:
    """The message type of an envelope's item, as metrics label it (a poll's samples are samples)."""
    if isinstance(item, Sample | Samples):
        return "sample"
    return "feedback" if isinstance(item, Feedback) else "event"


def _digest(*parts: object) -> str:
    text = "\x1f".join(json.dumps(p, sort_keys=True, separators=(",", ":"), default=_plain) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def trap_fingerprint(event: Event) -> str:
    """One trap's identity whichever receiver took it: device, trap OID, sysUpTime, varbinds.

    The device is the resolved ``device`` label, else ``agent_address`` (the v1 agent
    address or snmpTrapAddress.0 that relays and NAT keep), never ``source_address``.  A
    trap without sysUpTime falls back to its receipt second, which two receivers may see
    differently: such copies are then counted twice.
    """
    labels = event.labels
    device = labels.get("device") or labels.get("agent_address") or labels.get("source_address", "")
    uptime: object = event.uptime if event.uptime is not None else f"received:{int(event.at)}"
    varbinds = [(vb.oid, vb.type, vb.value) for vb in event.varbinds if vb.oid not in _APART]
    return _digest("trap", device, event.kind, uptime, varbinds)


class Keys:
    """The message key of a device's samples and events: its circuit, so one partition sees a circuit whole.

    A device on several circuits is keyed by the first of them (by id); a device on none by
    its name; an unknown sender by its address.
    """

    def __init__(self, inventory: Inventory) -> None:
        self._home: dict[str, str] = {}
        for circuit_id in sorted(inventory.circuits):
            for hop in inventory.circuits[circuit_id].path:
                self._home.setdefault(hop.device, circuit_id)

    def of(self, labels: Mapping[str, str]) -> bytes:
        """The key for a message with these labels."""
        device = labels.get("device")
        if device:
            return self._home.get(device, device).encode()
        circuit = labels.get("circuit")
        if circuit:
            return circuit.encode()
        return (labels.get("agent_address") or labels.get("source_address") or "").encode()


def encode_samples(samples: Sequence[Sample]) -> tuple[str, bytes]:
    """``(id, bytes)`` of one device poll's samples, in order; the id hashes them, so a resend is a duplicate.

    Labels every sample carries with one value are written once, for the whole poll.
    """
    shared = dict(samples[0].labels) if samples else {}
    for sample in samples[1:]:
        shared = {k: v for k, v in shared.items() if sample.labels.get(k) == v}
    rows = [
        [s.metric, {k: v for k, v in s.labels.items() if k not in shared}, s.value, s.at] for s in samples
    ]
    labels = json.dumps(shared, separators=(",", ":"))
    rows_json = json.dumps(rows, separators=(",", ":"))
    event_id = hashlib.sha256(f"samples\x1f{labels}\x1f{rows_json}".encode()).hexdigest()[:32]
    body = f'{{"format":{FORMAT},"type":"samples","id":"{event_id}","labels":{labels},"samples":{rows_json}}}'
    return event_id, body.encode()


def encode_poll(
    keys: Keys, samples: Sequence[Sample], most: int = POLL_MESSAGE_SAMPLES
) -> list[tuple[bytes, bytes]]:
    """``(key, bytes)`` messages of one device poll, in order: one per key, split every ``most`` samples.

    A known device's samples share one key, so a poll of up to ``most`` samples is one message.
    """
    by_key: dict[bytes, list[Sample]] = {}
    for sample in samples:
        by_key.setdefault(keys.of(sample.labels), []).append(sample)
    return [
        (key, encode_samples(group[start : start + most])[1])
        for key, group in by_key.items()
        for start in range(0, len(group), most)
    ]


def encode_event(event: Event, event_id: str | None = None) -> tuple[str, bytes]:
    """``(id, bytes)`` of a trap, INFORM or upstream event; a trap's id is its fingerprint."""
    event_id = event_id or trap_fingerprint(event)
    body = {
        "format": FORMAT,
        "type": "event",
        "id": event_id,
        "source": event.source,
        "kind": event.kind,
        "at": event.at,
        "labels": dict(event.labels),
        "varbinds": [
            [vb.oid, vb.type, _plain(vb.value) if isinstance(vb.value, bytes) else vb.value]
            for vb in event.varbinds
        ],
        "uptime": event.uptime,
        "attributes": dict(event.attributes),
    }
    return event_id, json.dumps(body, separators=(",", ":")).encode()


def encode_feedback(payload: bytes) -> tuple[str, bytes]:
    """``(id, bytes)`` of ticketing feedback; the id hashes its bytes, so a redelivery is a duplicate."""
    event_id = _digest("feedback", payload)
    body = {"format": FORMAT, "type": "feedback", "id": event_id, "payload": payload.decode(errors="replace")}
    return event_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode(payload: bytes) -> Envelope:
    """The sample or event in a message; raises ``EventDecodeError`` saying what is wrong."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise EventDecodeError(f"not an events message of format {FORMAT}")
    kind = body.get("type")
    if kind not in ("sample", "samples", "event", "feedback"):
        raise EventDecodeError(f"unknown message type {kind!r}")
    try:
        if kind == "samples":
            return Envelope(str(body["id"]), _samples(body))
        if kind == "feedback":
            return Envelope(str(body["id"]), Feedback(str(body["payload"]).encode()))
        return Envelope(str(body["id"]), _sample(body) if kind == "sample" else _event(body))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EventDecodeError(f"{type(exc).__name__}: {exc}") from None


_ID = re.compile(rb'^\{"format":1,"type":"[a-z]+","id":"([0-9a-f]+)"')


def peek_id(payload: bytes) -> str | None:
    """A message's id without reading the rest of it (as :func:`decode` has it); None if it has none."""
    found = _ID.match(payload)
    if found is not None:
        return found.group(1).decode()
    try:
        return decode(payload).id
    except EventDecodeError:
        return None


def _labels(raw: Mapping[str, object]) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()}


def _sample(body: dict[str, Any]) -> Sample:
    return Sample(str(body["metric"]), _labels(body["labels"]), float(body["value"]), float(body["at"]))


def _samples(body: dict[str, Any]) -> Samples:
    shared = _labels(body["labels"])
    return Samples(
        tuple(
            Sample(str(metric), {**shared, **_labels(own)}, float(value), float(at))
            for metric, own, value, at in body["samples"]
        )
    )


def _event(body: dict[str, Any]) -> Event:
    source = body["source"]
    if source not in ("trap", "inform", "upstream"):
        raise ValueError(f"unknown event source {source!r}")
    return Event(
        source=cast(Literal["trap", "inform", "upstream"], source),
        kind=str(body["kind"]),
        at=float(body["at"]),
        labels=_labels(body["labels"]),
        varbinds=tuple(_varbind(vb) for vb in body["varbinds"]),
        uptime=None if body["uptime"] is None else int(body["uptime"]),
        attributes=_labels(body["attributes"]),
    )


def _varbind(raw: Any) -> VarBind:
    oid, kind, value = raw
    if isinstance(value, dict):
        value = bytes.fromhex(value["hex"])
    return VarBind(str(oid), kind, value)
