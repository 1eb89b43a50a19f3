"""The objects that flow between stages: samples, alarm transitions, alarms and work orders."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alarmd.locale import Locale, fault_summary, major_summary

SCHEMA_VERSION = 1


class Tier(StrEnum):
    """A customer's service tier (SPEC §1): diamond 钻级, gold 金级, ordinary 普通."""

    DIAMOND = "diamond"
    GOLD = "gold"
    ORDINARY = "ordinary"

    @property
    def important(self) -> bool:
        """Diamond and gold customers are the operator's "important customers"."""
        return self is not Tier.ORDINARY


class DeviceKind(StrEnum):
    """The device kinds on a customer circuit (SPEC §1)."""

    CPE_ROUTER = "cpe_router"
    OPTICAL_TRANSCEIVER = "optical_transceiver"
    PROTOCOL_CONVERTER = "protocol_converter"


class AlarmClass(StrEnum):
    """Transmission alarm or data anomaly (SPEC §2)."""

    TRANSMISSION = "transmission"
    DATA_ANOMALY = "data_anomaly"


class Team(StrEnum):
    """Teams that lead or stand by on a fault (SPEC §3)."""

    TRANSPORT_NETWORK = "transport_network"
    SERVICE_SUPPORT = "service_support"


Labels = Mapping[str, str]


def fingerprint(labels: Labels) -> str:
    """A stable, order-independent identity for a label set."""
    text = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured value of a metric for one labelled series at one time (epoch seconds)."""

    metric: str
    labels: Labels
    value: float
    at: float


SnmpType = Literal[
    "Integer",
    "OctetString",
    "Null",
    "ObjectIdentifier",
    "IpAddress",
    "Counter32",
    "Gauge32",
    "TimeTicks",
    "Opaque",
    "Counter64",
    "noSuchObject",
    "noSuchInstance",
    "endOfMibView",
]


@dataclass(frozen=True, slots=True)
class VarBind:
    """One SNMP variable binding: numeric OID, SNMP type name and a plain Python value."""

    oid: str
    type: SnmpType
    value: int | str | bytes | None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, from a trap, an INFORM or an upstream system, normalised.

    ``kind`` is the trap OID (numeric, v2 form) or the upstream alarm type; ``labels``
    carry where it happened (``source_address``, ``agent_address``, ``device``,
    ``interface``, ``circuit`` when the inventory knows them).
    """

    source: Literal["trap", "inform", "upstream"]
    kind: str
    at: float
    labels: Labels
    varbinds: tuple[VarBind, ...] = ()
    uptime: int | None = None
    attributes: Labels = field(default_factory=dict)

    def __init__(  # noqa: PLR0917 - the dataclass's own field order
        self,
        source: Literal["trap", "inform", "upstream"],
        kind: str,
        at: float,
        labels: Labels,
        varbinds: tuple[VarBind, ...] = (),
        uptime: int | None = None,
        attributes: Labels | None = None,
    ) -> None:
        """Set the fields through the slots' own setters (see :func:`_slot_setters`)."""
        s = _EVENT_SETTERS
        s[0](self, source)
        s[1](self, kind)
        s[2](self, at)
        s[3](self, labels)
        s[4](self, varbinds)
        s[5](self, uptime)
        s[6](self, {} if attributes is None else attributes)


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """The rule engine's verdict that a series started or stopped breaking a rule."""

    kind: Literal["firing", "resolved", "repeat"]
    rule: str
    labels: Labels
    annotations: Labels
    value: float
    threshold: float
    at: float
    active_since: float
    fingerprint: str = ""

    def __init__(  # noqa: PLR0917 - the dataclass's own field order
        self,
        kind: Literal["firing", "resolved", "repeat"],
        rule: str,
        labels: Labels,
        annotations: Labels,
        value: float,
        threshold: float,
        at: float,
        active_since: float,
        fingerprint: str = "",
    ) -> None:
        """Set the fields through the slots' own setters (see :func:`_slot_setters`)."""
        s = _TRANSITION_SETTERS
        s[0](self, kind)
        s[1](self, rule)
        s[2](self, labels)
        s[3](self, annotations)
        s[4](self, value)
        s[5](self, threshold)
        s[6](self, at)
        s[7](self, active_since)
        s[8](self, fingerprint)


def _slot_setters(cls: type) -> tuple[Callable[[object, Any], None], ...]:
    """The ``__set__`` of each field's slot, in field order.

    A frozen dataclass's generated ``__init__`` goes through ``object.__setattr__`` once per
    field; calling the slot descriptors directly does the same at half the cost.  Event and
    AlarmTransition are built for every trap, so they use these; assignment after
    construction still raises ``FrozenInstanceError``.
    """
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


_EVENT_SETTERS: Final = _slot_setters(Event)
_TRANSITION_SETTERS: Final = _slot_setters(AlarmTransition)


Lifecycle = Literal["firing", "dispatched", "acknowledged", "escalated", "observing", "closed"]


@dataclass(slots=True)
class Alarm:
    """A fault being tracked: what fired, where, for whom, and who leads it."""

    alarm_id: str
    rule: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    alarm_class: AlarmClass
    lead_team: Team
    severity: str
    value: float
    threshold: float
    raised_at: float
    circuit: str | None = None
    customer: str | None = None
    customer_name: str | None = None
    tier: Tier | None = None
    cleared_at: float | None = None
    state: Literal["firing", "cleared"] = "firing"
    occurrences: int = 1
    parent_id: str | None = None
    flapping: bool = False
    dispatched: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def lifecycle(self) -> Lifecycle:
        """Where the fault is in its life (SPEC §4, §5), from firing to closed."""
        if self.state == "cleared":
            return "closed" if self.extra.get("closed") else "observing"
        if "escalated_at" in self.extra:
            return "escalated"
        if "acknowledged_at" in self.extra:
            return "acknowledged"
        return "dispatched" if self.dispatched else "firing"


def isotime(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProbeOutcome(BaseModel):
    """One dial test of the pre-processing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="device on the path, or a circuit dial target")
    address: str
    loss_percent: float
    rtt_avg_ms: float | None
    error: str | None = None


class Preprocessing(BaseModel):
    """The pre-processing before the first work order (SPEC §4): dial tests and a verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probes: list[ProbeOutcome]
    verdict: Literal["operator_network", "customer_side", "path_healthy", "not_tested"]
    segment: str | None = Field(None, description="where on the path the fault sits, when it can be told")
    seconds: float = Field(description="how long the pre-processing took (bounded by its budget)")


class DueTimes(BaseModel):
    """The due times of a fault (SPEC §4, §5), RFC 3339, None where not yet known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    escalation_at: str | None = Field(None, description="unresolved by then: emergency joint handling")
    on_site_by: str | None = Field(None, description="important customers: teams on site by then")
    observation_ends: str | None = Field(None, description="after the clear: closed then if it held")
    business_watch_ends: str | None = Field(
        None, description="after the clear: a relapse until then is flagged"
    )
    summary_due: str | None = Field(None, description="fault summary to the account manager")
    callback_due: str | None = Field(None, description="satisfaction call-back")


class AffectedCircuit(BaseModel):
    """One circuit of a major fault: whose it is and its own alarm (a child, folded under the fault)."""

    model_config = ConfigDict(extra="forbid")

    circuit: str
    customer: str | None
    customer_name: str | None
    tier: Tier | None
    alarm_id: str = Field(description="the circuit's own alarm, folded under the major fault")
    alert: str
    raised_at: str
    cleared_at: str | None = None


class MajorFaultDetail(BaseModel):
    """A major fault (重大故障, SPEC §9) as its messages list it: the shared element and its circuits."""

    model_config = ConfigDict(extra="forbid")

    element: str
    element_kind: str
    circuit_count: int
    customers: list[str] = Field(description="customer ids, most important tier first")
    circuits: list[AffectedCircuit]


MAJOR_FAULT_KEY: Final = "major_fault"
"""``Alarm.extra`` key of a major fault's :class:`MajorFaultDetail` (JSON)."""


def major_detail(alarm: Alarm) -> MajorFaultDetail | None:
    """A major fault's element and circuits; None for any other alarm."""
    text = alarm.extra.get(MAJOR_FAULT_KEY)
    return MajorFaultDetail.model_validate_json(text) if text else None


def summary_of(alarm: Alarm, locale: Locale = "en") -> str:
    """The short human-readable line about a fault, in the operator's language."""
    detail = major_detail(alarm)
    if detail is not None:
        return major_summary(
            locale,
            element=detail.element,
            element_kind=detail.element_kind,
            alarm_class=alarm.alarm_class.value,
            circuits=detail.circuit_count,
            customers=len(detail.customers),
            cleared=alarm.state == "cleared",
        )
    where = " ".join(x for x in (alarm.labels.get("device"), alarm.labels.get("interface")) if x)
    return fault_summary(
        locale,
        fallback=alarm.annotations.get("summary", alarm.rule),
        alert=alarm.rule,
        alarm_class=alarm.alarm_class.value,
        tier=alarm.tier.value if alarm.tier else None,
        customer=alarm.customer_name or alarm.customer,
        circuit=alarm.circuit,
        where=where,
        cleared=alarm.state == "cleared",
    )


class FaultMessage(BaseModel):
    """What every message about a fault carries: its identity and whose it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    work_order_id: str
    alarm_id: str
    alert: str
    summary: str = Field(description="one line for people, in the configured locale (en, zh-CN)")
    circuit: str | None
    customer: str | None
    customer_name: str | None
    tier: Tier | None
    important_customer: bool

    major_fault: MajorFaultDetail | None = Field(
        None, description="on a major fault's messages: the shared element and the circuits it took down"
    )
    repeat_of: str | None = Field(
        None, description="the work order of the same circuit and alert, closed within the repeat window"
    )

    @staticmethod
    def identity(alarm: Alarm, locale: Locale = "en") -> dict[str, Any]:
        """The shared fields of a fault's messages."""
        return {
            "work_order_id": f"WO-{alarm.alarm_id}",
            "alarm_id": alarm.alarm_id,
            "alert": alarm.rule,
            "summary": summary_of(alarm, locale),
            "major_fault": major_detail(alarm),
            "repeat_of": alarm.extra.get("repeat_of"),
            "circuit": alarm.circuit,
            "customer": alarm.customer,
            "customer_name": alarm.customer_name,
            "tier": alarm.tier,
            "important_customer": bool(alarm.tier and alarm.tier.important),
        }


class WorkOrder(FaultMessage):
    """A work order (派单), its update or its clear, as sent to ticketing on Kafka keyed by circuit."""

    type: Literal["work_order", "work_order_update", "work_order_clear"]
    update: Literal["reparented", "released", "reopened", "flapping", "circuit_added"] | None = Field(
        None, description="what changed, on a work_order_update"
    )
    device: str | None
    device_kind: str | None
    interface: str | None
    alarm_class: AlarmClass
    lead_team: Team
    previous_lead_team: Team | None = None
    related_teams: list[str] = []
    parent_alarm_id: str | None = Field(None, description="the root cause this fault is folded under")
    flapping: bool = False
    severity: str
    observed_value: float
    threshold: float
    unit: str | None
    raised_at: str
    cleared_at: str | None = None
    reason: Literal["decommissioned"] | None = Field(
        None,
        description="on a work_order_clear sent without the fault clearing: its device or circuit "
        "left the inventory",
    )
    occurrences: int = 1
    lifecycle: Lifecycle = "firing"
    relapse_of: str | None = Field(
        None, description="the closed fault this one relapses, within its business watch"
    )
    planned_outage: str | None = Field(
        None, description="the planned outage the fault began in and outlived; its clocks run from then"
    )
    due: DueTimes | None = None
    preprocessing: Preprocessing | None = None
    sent_at: str

    @classmethod
    def from_alarm(
        cls,
        alarm: Alarm,
        sent_at: float,
        *,
        update: Literal["reparented", "released", "reopened", "flapping", "circuit_added"] | None = None,
        previous_lead_team: Team | None = None,
        related_teams: Sequence[str] = (),
        due: DueTimes | None = None,
        locale: Locale = "en",
    ) -> WorkOrder:
        """Build the message for an alarm's current state (an update when ``update`` is given)."""
        kind: Literal["work_order", "work_order_update", "work_order_clear"] = (
            "work_order_update" if update else "work_order" if alarm.state == "firing" else "work_order_clear"
        )
        return cls(
            type=kind,
            update=update,
            previous_lead_team=previous_lead_team,
            related_teams=list(related_teams),
            parent_alarm_id=alarm.parent_id,
            flapping=alarm.flapping,
            **cls.identity(alarm, locale),
            device=alarm.labels.get("device"),
            device_kind=alarm.labels.get("device_kind"),
            interface=alarm.labels.get("interface"),
            alarm_class=alarm.alarm_class,
            lead_team=alarm.lead_team,
            severity=alarm.severity,
            observed_value=round(alarm.value, 3),
            threshold=alarm.threshold,
            unit=alarm.labels.get("unit") or alarm.annotations.get("unit"),
            raised_at=isotime(alarm.raised_at),
            cleared_at=isotime(alarm.cleared_at) if alarm.cleared_at is not None else None,
            reason="decommissioned"
            if kind == "work_order_clear" and alarm.extra.get("clear_reason")
            else None,
            occurrences=alarm.occurrences,
            lifecycle=alarm.lifecycle,
            relapse_of=alarm.extra.get("relapse_of"),
            planned_outage=alarm.extra.get("planned_outage"),
            due=due,
            preprocessing=Preprocessing.model_validate_json(alarm.extra["preprocessing"])
            if "preprocessing" in alarm.extra
            else None,
            sent_at=isotime(sent_at),
        )


class Notice(FaultMessage):
    """A notice, escalation, status update or close, on the notices topic keyed by circuit."""

    type: Literal["notice", "escalation", "status_update", "closed"]
    alarm_class: AlarmClass
    lead_team: Team
    to_teams: list[str] = Field(description="who is told: the teams that stand by, service support")
    joint_handling: bool = Field(description="the emergency process (all teams jointly) is running")
    service_support_on_site: bool = Field(
        description="a service support engineer must be on site as site lead (diamond, or important outage)"
    )
    state: Literal["firing", "cleared", "closed"]
    fault_age_seconds: float
    status_update_number: int = 0
    relapsed: bool = False
    due: DueTimes
    sent_at: str


class TicketFeedback(BaseModel):
    """What ticketing says about a work order, on the feedback topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["acknowledged", "in_progress", "resolved", "closed"]
    work_order_id: str = Field(pattern=r"^WO-[0-9a-f]{20}$")
    ticket_id: str = Field(min_length=1, max_length=128)
    by: str = Field("", max_length=128, description="who, in ticketing")
    at: datetime = Field(description="when, RFC 3339 with offset")
    note: str = Field("", max_length=4096)

    @field_validator("at")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        # 0001-01-01T00:00+01:00 parses, but is in year 0 once in UTC: no timestamp can hold it.
        try:
            isotime(value.timestamp())
        except (OverflowError, ValueError, OSError):
            raise ValueError("timestamp is out of range") from None
        return value

    @classmethod
    def read(cls, payload: bytes) -> TicketFeedback:
        """A feedback message from its bytes; raises ValueError naming the first field that is wrong."""
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(message)"
            raise ValueError(f"{where}: {first['msg']}") from None
