"""Alarms forwarded by upstream systems (TeMIP, IPNET, transmission NMS): the message schema and its parser.

Pure: no I/O, no Kafka.  ``dispatch.kafka.KafkaSource`` hands each message's bytes to a
callback in ``app`` that calls :func:`parse_upstream`; an :class:`UpstreamError` sends the
message to the dead-letter topic with its ``reason``.  The JSON Schema that upstream
integrators build against is generated from :class:`UpstreamAlarm` by :func:`schema_json`
and committed as ``schemas/upstream-alarm.schema.json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import from_json

from alarmd.model import Event, isotime

UPSTREAM_SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
"""Larger messages are refused with reason ``too_large`` before they are decoded."""

SCHEMA_ID = "https://alarmd.invalid/schemas/upstream-alarm.schema.json"

UpstreamReason = Literal["not_json", "not_an_object", "schema", "unsupported_version", "too_large"]
UPSTREAM_REASONS: tuple[UpstreamReason, ...] = (
    "not_json",
    "not_an_object",
    "schema",
    "unsupported_version",
    "too_large",
)

SourceSystem = Literal["temip", "ipnet", "transmission_nms", "other"]
EventType = Literal["raise", "clear"]
Severity = Literal["critical", "major", "minor", "warning", "cleared"]

_Id = Annotated[str, Field(min_length=1, max_length=256)]
_Name = Annotated[str, Field(max_length=256)]
_AttrKey = Annotated[str, Field(min_length=1, max_length=128)]
_AttrValue = Annotated[str, Field(max_length=1024)]


class UpstreamError(Exception):
    """An upstream message that cannot be used; ``reason`` is one of ``UPSTREAM_REASONS``."""

    def __init__(self, reason: UpstreamReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: UpstreamReason = reason
        self.detail = detail


class UpstreamAlarm(BaseModel):
    """One alarm raise or clear forwarded by an upstream network-management system, as JSON in UTF-8."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="alarmd upstream alarm",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
            "examples": [
                {
                    "schema_version": 1,
                    "source_system": "transmission_nms",
                    "alarm_id": "OTN-2024-0001187",
                    "event_type": "raise",
                    "alarm_type": "LOS",
                    "severity": "critical",
                    "raised_at": "2024-05-01T10:00:00.000+08:00",
                    "circuit": "CIR-0001",
                    "device": "otn-ne-0231",
                    "managed_object": "NE=0231,SHELF=1,SLOT=3,PORT=2",
                    "interface": "1-3-2",
                    "probable_cause": "lossOfSignal",
                    "text": "E1 2 on board 3: loss of signal",
                    "attributes": {"ems": "U2000", "board": "PQ1"},
                },
                {
                    "schema_version": 1,
                    "source_system": "transmission_nms",
                    "alarm_id": "OTN-2024-0001187",
                    "event_type": "clear",
                    "alarm_type": "LOS",
                    "severity": "cleared",
                    "raised_at": "2024-05-01T10:00:00.000+08:00",
                    "cleared_at": "2024-05-01T10:42:10.500+08:00",
                    "circuit": "CIR-0001",
                },
            ],
        },
    )

    schema_version: Literal[1] = Field(
        description="Version of this message format; always 1. Other integers are refused as "
        "'unsupported_version' so that a newer sender is noticed, not misread."
    )
    source_system: SourceSystem = Field(
        description="The system that forwarded the alarm: 'temip' (HPE TeMIP), 'ipnet' (IPNET IP network "
        "manager), 'transmission_nms' (the SDH/PTN/OTN transmission network manager) or 'other'."
    )
    alarm_id: _Id = Field(
        description="The sender's own identifier of this alarm (e.g. the TeMIP alarm object identifier or "
        "the NMS alarm serial number). A raise and its clear carry the same value; it is unique per "
        "source_system."
    )
    event_type: EventType = Field(
        description="'raise' when the fault begins (or is re-sent while still active), 'clear' when it ends."
    )
    alarm_type: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="What kind of fault: LOS (loss of signal), LOF (loss of frame), AIS (alarm indication "
        "signal), LINK_DOWN, OPTICAL_POWER_LOW, EQUIPMENT (board or device failure), or any other "
        "upper-case name the sender uses. Rules and routing match on it."
    )
    severity: Severity = Field(
        description="ITU-T X.733 perceived severity: critical, major, minor, warning; 'cleared' on a clear. "
        "A raise may not have severity 'cleared'; a clear may repeat the raise's severity."
    )
    raised_at: AwareDatetime = Field(
        description="When the fault began, as an RFC 3339 timestamp with a UTC offset "
        "(e.g. 2024-05-01T10:00:00.000+08:00); not before 1970. A clear repeats the raise's value."
    )
    cleared_at: AwareDatetime | None = Field(
        None,
        description="When the fault ended, as an RFC 3339 timestamp with a UTC offset; only on a clear.",
    )
    circuit: _Name | None = Field(
        None,
        description="The leased-line circuit identifier as held in the operator's resource inventory "
        "(e.g. CIR-0001), when the sender knows which circuit is hit; absent, null or empty when unknown.",
    )
    device: _Name | None = Field(
        None,
        description="Name of the alarmed network element (router, transceiver, protocol converter, "
        "transmission NE) as in the operator's inventory; absent, null or empty when unknown.",
    )
    managed_object: Annotated[str, Field(max_length=1024)] | None = Field(
        None,
        description="The sender's full name of the alarmed object (a TeMIP managed object, an NMS "
        "distinguished name such as NE=0231,SHELF=1,SLOT=3,PORT=2), kept verbatim for the engineer.",
    )
    interface: _Name | None = Field(
        None,
        description="The alarmed port or interface on the device (e.g. GigabitEthernet0/0/1, E1 1-3-2). "
        "Absent, null or empty when the alarm concerns the whole device.",
    )
    probable_cause: _Name | None = Field(
        None,
        description="ITU-T X.733 probable cause as the sender names it (e.g. lossOfSignal, powerProblem).",
    )
    text: Annotated[str, Field(max_length=4096)] = Field(
        "", description="Free text describing the alarm, for the work order and the engineer."
    )
    attributes: dict[_AttrKey, _AttrValue] = Field(
        {},
        max_length=64,
        description="Any further sender-specific fields as a flat map of strings to strings (at most 64); "
        "carried through to the work order, never interpreted.",
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        # Literal[1] would also take true and 1.0, which no sender means.
        if type(value) is not int:
            raise ValueError("schema_version must be the integer 1")
        return value

    @field_validator("raised_at", "cleared_at")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            utc = value.astimezone(UTC)
            # 9999-12-31T23:59:59.999999Z rounds up to year 10000 as epoch seconds (Event.attributes)
            isotime(utc.timestamp())
        except (OverflowError, ValueError):
            raise ValueError("timestamp is out of range") from None
        if utc.year < 1970:
            raise ValueError("timestamp is before 1970")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamAlarm:
        if self.event_type == "raise" and self.severity == "cleared":
            raise ValueError("a raise cannot have severity 'cleared'")
        if self.event_type == "raise" and self.cleared_at is not None:
            raise ValueError("cleared_at belongs on a clear, not on a raise")
        return self

    def to_event(self, at: float) -> Event:
        """The pipeline's ``Event`` for this message, received at ``at`` (epoch seconds)."""
        labels = {
            "source_system": self.source_system,
            "upstream_alarm_id": self.alarm_id,
            "event_type": self.event_type,
            "severity": self.severity,
        }
        for name, value in (
            ("circuit", self.circuit),
            ("device", self.device),
            ("interface", self.interface),
        ):
            if value:
                labels[name] = value
        attributes = {f"attributes.{key}": value for key, value in self.attributes.items()}
        attributes["raised_at"] = isotime(self.raised_at.timestamp())
        if self.cleared_at is not None:
            attributes["cleared_at"] = isotime(self.cleared_at.timestamp())
        for name, value in (
            ("managed_object", self.managed_object),
            ("probable_cause", self.probable_cause),
            ("text", self.text),
        ):
            if value:
                attributes[name] = value
        return Event(source="upstream", kind=self.alarm_type, at=at, labels=labels, attributes=attributes)


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in err["loc"]) or "(message)"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")


def parse_upstream(payload: bytes, at: float) -> Event:
    """Validate one upstream message and normalise it to an ``Event``; raise ``UpstreamError`` if unusable.

    ``at`` (the time it was received, epoch seconds) becomes ``Event.at``: upstream clocks
    are not trusted for ordering, and the sender's ``raised_at`` / ``cleared_at`` are kept
    in ``Event.attributes`` as RFC 3339 UTC.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise UpstreamError("too_large", f"{len(payload)} bytes, at most {MAX_MESSAGE_BYTES} are accepted")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamError("not_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        # pydantic's own parser, so that what passes here also parses in model_validate_json
        data: Any = from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise UpstreamError("not_json", str(exc)) from None
    if not isinstance(data, dict):
        raise UpstreamError("not_an_object", f"the message is a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version")
    if type(version) is int and version != UPSTREAM_SCHEMA_VERSION:
        raise UpstreamError(
            "unsupported_version", f"schema_version {version}; this alarmd reads {UPSTREAM_SCHEMA_VERSION}"
        )
    try:
        alarm = UpstreamAlarm.model_validate_json(text)
    except ValidationError as exc:
        raise UpstreamError("schema", _describe(exc)) from None
    return alarm.to_event(at)


def schema_json() -> str:
    """The JSON Schema of ``UpstreamAlarm`` as committed in ``schemas/upstream-alarm.schema.json``."""
    return json.dumps(UpstreamAlarm.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
