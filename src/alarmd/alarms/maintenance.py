"""Planned outages (割接, SPEC §9): a scope, a window, a reason and who made it; which alarms they hold back.

An outage names circuits, devices and customers (an alarm on any one of them is in scope) and
Alertmanager-shaped ``matchers`` (every one must hold as well); an outage of matchers alone
scopes by them only.  An alarm is matched on its own labels plus its ``circuit``,
``customer`` and ``tier``, so a fault elsewhere on the same circuit's path, outside the
scope, is dispatched as usual.  Outages come from ``maintenance/*.yml`` files (reloaded
with the rest of the config) and from the API; each is kept in the alarm store with the
customer notices already sent for it, so a restart neither forgets one nor repeats a notice.
"""

from __future__ import annotations

import datetime
import glob
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alarmd.alarms.store import Store, StoreError
from alarmd.config import (
    ConfigError,
    Duration,
    Loaded,
    MaintenanceConfig,
    MatcherList,
    Strict,
    read_yaml,
    validate,
)
from alarmd.inventory import Inventory
from alarmd.matchers import Matcher, matches_all, parse_matcher_list
from alarmd.metrics import Metrics
from alarmd.model import Alarm, Tier, isotime

Phase = Literal["scheduled", "reminder", "started", "ended", "cancelled"]
#: The labels a circuit's place in the network gives; matchers on other labels scope alarms only.
PLACE_LABELS = frozenset({"circuit", "customer", "tier", "device", "interface"})
SCHEMA_VERSION = 1
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class OutageError(Exception):
    """A planned outage that cannot be taken or ended; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class OutageSpec(Strict):
    """A planned outage as written in a maintenance file or sent to the API."""

    id: str | None = Field(None, pattern=_ID, description="change number; the API makes one if absent")
    reason: str = Field(min_length=1, max_length=1024)
    created_by: str = Field("", max_length=128, description="who asked for it; default: the API token's name")
    starts_at: datetime.datetime = Field(description="RFC 3339; without an offset, the operator's local time")
    ends_at: datetime.datetime | None = None
    duration: Duration | None = Field(None, description="instead of ends_at: 2h, 90m")
    circuits: list[str] = []
    devices: list[str] = []
    customers: list[str] = []
    matchers: MatcherList = Field([], description='Alertmanager-shaped, e.g. alertname="LinkDown"')

    @model_validator(mode="after")
    def _window_and_scope(self) -> OutageSpec:
        if (self.ends_at is None) == (self.duration is None):
            raise ValueError("give either ends_at or duration")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be more than 0s")
        if not (self.circuits or self.devices or self.customers or self.matchers):
            raise ValueError("an outage needs a scope: circuits, devices, customers or matchers")
        return self

    def window(self, tz: datetime.tzinfo) -> tuple[float, float]:
        """Start and end as epoch seconds (a naive time is read in ``tz``); raises OutageError if empty."""

        def epoch(moment: datetime.datetime) -> float:
            return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()

        start = epoch(self.starts_at)
        end = epoch(self.ends_at) if self.ends_at is not None else start + (self.duration or 0.0)
        if end <= start:
            raise OutageError("ends_at must be after starts_at")
        return start, end


class OutageFile(Strict):
    """A maintenance file: a list of planned outages."""

    outages: list[OutageSpec] = []


class Outage(BaseModel):
    """A planned outage as kept in the store: its spec resolved, the circuits it touches, notices sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    reason: str
    created_by: str
    source: str = Field(description="'api', or the maintenance file it comes from")
    created_at: float
    starts_at: float
    ends_at: float
    circuits: list[str] = []
    devices: list[str] = []
    customers: list[str] = []
    matchers: list[str] = []
    affected_circuits: list[str] = Field([], description="circuits in scope when it was made")
    affected_customers: list[str] = []
    ended_by: str | None = Field(None, description="who ended it early, or why it was withdrawn")
    cancelled: bool = Field(False, description="withdrawn before it started")
    notified: list[Phase] = Field([], description="customer notices already sent")

    def active(self, now: float) -> bool:
        """Whether the window is open at ``now``."""
        return not self.cancelled and self.starts_at <= now < self.ends_at

    def state(self, now: float) -> Literal["scheduled", "active", "ended", "cancelled"]:
        """Where the outage is at ``now``."""
        if self.cancelled:
            return "cancelled"
        if now < self.starts_at:
            return "scheduled"
        return "active" if now < self.ends_at else "ended"

    def covers(self, labels: Mapping[str, str]) -> bool:
        """Whether an alarm (or a circuit hop) with these labels is in scope."""
        return in_scope(self.circuits, self.devices, self.customers, _compiled(tuple(self.matchers)), labels)

    def view(self, now: float) -> dict[str, object]:
        """The outage for the API and the CLI, with its state and RFC 3339 times."""
        return {
            **self.model_dump(exclude={"created_at", "starts_at", "ends_at"}),
            "state": self.state(now),
            "created_at": isotime(self.created_at),
            "starts_at": isotime(self.starts_at),
            "ends_at": isotime(self.ends_at),
        }


@lru_cache(maxsize=1024)
def _compiled(matchers: tuple[str, ...]) -> tuple[Matcher, ...]:
    return parse_matcher_list(matchers)


def in_scope(
    circuits: Collection[str],
    devices: Collection[str],
    customers: Collection[str],
    matchers: tuple[Matcher, ...],
    labels: Mapping[str, str],
) -> bool:
    """On a named circuit, device or customer (when any is named), and every matcher holds."""
    named = (circuits, devices, customers)
    if any(named) and not (
        labels.get("circuit") in circuits
        or labels.get("device") in devices
        or labels.get("customer") in customers
    ):
        return False
    return matches_all(matchers, labels)


def alarm_labels(alarm: Alarm) -> dict[str, str]:
    """An alarm's labels with its place: circuit, customer and tier."""
    return {
        **alarm.labels,
        "circuit": alarm.circuit or "",
        "customer": alarm.customer or "",
        "tier": alarm.tier.value if alarm.tier else "",
    }


def affected(spec: OutageSpec | Outage, inventory: Inventory) -> tuple[list[str], list[str]]:
    """The circuits and customers an outage touches: any hop of a circuit in scope (place labels only)."""
    place = tuple(m for m in _compiled(tuple(spec.matchers)) if m.name in PLACE_LABELS)
    circuits: list[str] = []
    customers: dict[str, None] = {}
    for circuit in inventory.circuits.values():
        customer = inventory.customers[circuit.customer]
        for hop in circuit.path:
            labels = {
                "circuit": circuit.id,
                "customer": customer.id,
                "tier": customer.tier.value,
                "device": hop.device,
                "interface": hop.interface or "",
            }
            if in_scope(spec.circuits, spec.devices, spec.customers, place, labels):
                circuits.append(circuit.id)
                customers[customer.id] = None
                break
    return circuits, list(customers)


def unknown_names(spec: OutageSpec, inventory: Inventory) -> list[tuple[str, int, str]]:
    """(key, index, name) of every circuit, device or customer the inventory does not know."""
    named: dict[str, tuple[list[str], Collection[str]]] = {
        "circuits": (spec.circuits, inventory.circuits.keys()),
        "devices": (spec.devices, inventory.devices.keys()),
        "customers": (spec.customers, inventory.customers.keys()),
    }
    return [
        (key, i, name)
        for key, (names, known) in named.items()
        for i, name in enumerate(names)
        if name not in known
    ]


# --------------------------------------------------------------------------- files


def outage_paths(loaded: Loaded) -> list[Path]:
    """The maintenance files the config names (a glob that matches nothing is no error)."""
    base = loaded.path.parent
    paths: list[Path] = []
    for pattern in loaded.config.maintenance.files:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        paths.extend(sorted(Path(p) for p in glob.glob(full)))
    return paths


@dataclass(frozen=True, slots=True)
class FileOutage:
    """One outage from a maintenance file, with where it was written."""

    spec: OutageSpec
    source: str
    where: str


def load_outage_files(loaded: Loaded) -> list[FileOutage]:
    """Read and check every maintenance file; errors name the file, line and key."""
    inventory = Inventory(loaded.config)
    tz = local_zone(loaded.config.clocks.utc_offset_hours)
    found: list[FileOutage] = []
    seen: dict[str, str] = {}
    for path in outage_paths(loaded):
        doc = read_yaml(path)
        for i, spec in enumerate(validate(doc, OutageFile).outages):
            where = doc.where(("outages", i))
            if spec.id is None:
                raise ConfigError(f"{where}: outages[{i}]: missing required key 'id' (the change number)")
            if spec.id in seen:
                raise ConfigError(
                    f"{where}: outages[{i}].id: duplicate '{spec.id}' (first at {seen[spec.id]})"
                )
            seen[spec.id] = where
            for key, j, name in unknown_names(spec, inventory):
                raise ConfigError(
                    f"{doc.where(('outages', i, key, j))}: outages[{i}].{key}[{j}]: "
                    f"unknown {key.removesuffix('s')} '{name}'"
                )
            try:
                spec.window(tz)
            except OutageError as exc:
                raise ConfigError(f"{where}: outages[{i}]: {exc}") from None
            found.append(FileOutage(spec, str(path), where))
    return found


@dataclass(slots=True)
class FileSync:
    """What a reading of the maintenance files changed, by outage id."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        """``added CHG-1, CHG-2; withdrawn CHG-0``, or ``no change``."""
        parts = [
            f"{k} {', '.join(v)}"
            for k, v in (("added", self.added), ("changed", self.changed), ("withdrawn", self.withdrawn))
            if v
        ]
        return "; ".join(parts) or "no change"


def local_zone(utc_offset_hours: float) -> datetime.timezone:
    """The operator's local time zone."""
    return datetime.timezone(datetime.timedelta(hours=utc_offset_hours))


# --------------------------------------------------------------------------- the registry


class Outages:
    """Every planned outage: which window covers an alarm, which notices are due, kept in the store."""

    def __init__(
        self, store: Store, config: MaintenanceConfig, utc_offset_hours: float, metrics: Metrics
    ) -> None:
        self.store = store
        self.config = config
        self.tz = local_zone(utc_offset_hours)
        self.metrics = metrics
        self.by_id: dict[str, Outage] = self._stored()
        #: Outages not yet settled (open, to come, or with a notice still to send): what each tick looks at.
        self._pending = dict(self.by_id)

    def _stored(self) -> dict[str, Outage]:
        outages = (Outage.model_validate_json(body) for body in self.store.outages())
        return {o.id: o for o in outages}

    def configure(self, config: MaintenanceConfig, utc_offset_hours: float) -> None:
        """Take the settings of a reloaded config."""
        self.config = config
        self.tz = local_zone(utc_offset_hours)

    def covering(self, alarm: Alarm, now: float) -> Outage | None:
        """The open window that holds this alarm back (the one ending last, if several do)."""
        labels = alarm_labels(alarm)
        found = [o for o in self._pending.values() if o.active(now) and o.covers(labels)]
        return max(found, key=lambda o: o.ends_at) if found else None

    def release_at(self, alarm: Alarm) -> float | None:
        """When a fault held by its outage gets its work order if still there: window end plus grace."""
        outage = self.by_id.get(alarm.extra.get("planned_outage", ""))
        if outage is None:
            return None
        return (outage.starts_at if outage.cancelled else outage.ends_at) + self.config.grace

    def _save(self, outage: Outage) -> Outage:
        with self.store.transaction():
            self.store.save_outage(outage.id, outage.model_dump_json(), outage.ends_at)
        self.by_id[outage.id] = self._pending[outage.id] = outage
        return outage

    def _resolve(
        self, spec: OutageSpec, inventory: Inventory, *, source: str, created_by: str, now: float
    ) -> Outage:
        start, end = spec.window(self.tz)
        circuits, customers = affected(spec, inventory)
        return Outage(
            id=spec.id or "",
            reason=spec.reason,
            created_by=spec.created_by or created_by,
            source=source,
            created_at=now,
            starts_at=start,
            ends_at=end,
            circuits=spec.circuits,
            devices=spec.devices,
            customers=spec.customers,
            matchers=spec.matchers,
            affected_circuits=circuits,
            affected_customers=customers,
        )

    def add(self, spec: OutageSpec, inventory: Inventory, *, created_by: str, now: float) -> Outage:
        """Take an outage from the API; raises OutageError naming what is wrong with it."""
        unknown = unknown_names(spec, inventory)
        if unknown:
            key, j, name = unknown[0]
            raise OutageError(f"{key}[{j}]: unknown {key.removesuffix('s')} '{name}'")
        outage_id = spec.id or _new_id(now, self.by_id)
        if outage_id in self.by_id:
            raise OutageError(
                f"id '{outage_id}' is taken (by an outage from {self.by_id[outage_id].source})", 409
            )
        outage = self._resolve(
            spec.model_copy(update={"id": outage_id}), inventory, source="api", created_by=created_by, now=now
        )
        if outage.ends_at <= now:
            raise OutageError(f"the window ended at {isotime(outage.ends_at)}, before now")
        return self._save(outage)

    def end(self, outage_id: str, by: str, now: float) -> Outage:
        """End an outage now (withdraw it, if it has not started); raises OutageError if it cannot be."""
        outage = self.by_id.get(outage_id)
        if outage is None:
            raise OutageError(f"no outage '{outage_id}'", 404)
        state = outage.state(now)
        if state in ("ended", "cancelled"):
            raise OutageError(f"outage '{outage_id}' is {state} already", 409)
        if state == "scheduled":
            return self._save(outage.model_copy(update={"cancelled": True, "ended_by": by}))
        return self._save(outage.model_copy(update={"ends_at": now, "ended_by": by}))

    def check_files(self, found: list[FileOutage]) -> None:
        """Refuse file outages whose id an API-made outage holds (before anything changes)."""
        for item in found:
            taken = self.by_id.get(item.spec.id or "")
            if taken is not None and taken.source == "api":
                raise ConfigError(f"{item.where}: id '{taken.id}' is taken by an outage made through the API")

    def sync_files(self, found: list[FileOutage], inventory: Inventory, now: float) -> FileSync:
        """Make the file outages those found now, in one transaction: added, changed, withdrawn."""
        self.check_files(found)
        sync = FileSync()
        try:
            with self.store.transaction():
                self._sync(found, inventory, now, sync)
        except StoreError:
            self.by_id = self._stored()  # nothing of it was kept
            self._pending = dict(self.by_id)
            raise
        return sync

    def _sync(self, found: list[FileOutage], inventory: Inventory, now: float, sync: FileSync) -> None:
        current = {f.spec.id for f in found}
        for item in found:
            new = self._resolve(item.spec, inventory, source=item.source, created_by="file", now=now)
            old = self.by_id.get(new.id)
            if old is None:
                if new.ends_at > now:
                    self._save(new)
                    sync.added.append(new.id)
                continue
            keep = {"created_at", "notified", "affected_circuits", "affected_customers", "source"}
            if old.model_dump(exclude=keep) != new.model_dump(exclude=keep) and not old.ended_by:
                again = [p for p in old.notified if p not in ("scheduled", "reminder")]
                self._save(new.model_copy(update={"created_at": now, "notified": again}))
                sync.changed.append(new.id)  # customers are told the new plan
        for outage in list(self.by_id.values()):
            if (
                outage.source != "api"
                and outage.id not in current
                and outage.state(now) in ("scheduled", "active")
            ):
                self.end(outage.id, "removed from its maintenance file", now)
                sync.withdrawn.append(outage.id)

    def due_notices(self, now: float) -> list[tuple[Outage, Phase]]:
        """The customer notices due at ``now``, oldest outage first."""
        due: list[tuple[Outage, Phase]] = []
        for outage in list(self._pending.values()):
            if _settled(outage, now):
                del self._pending[outage.id]
                continue
            sent = outage.notified
            if outage.cancelled:
                if "scheduled" in sent and "cancelled" not in sent:
                    due.append((outage, "cancelled"))
                continue
            if now >= outage.ends_at:
                if "started" in sent and "ended" not in sent:
                    due.append((outage, "ended"))
                continue
            if "scheduled" not in sent:
                due.append((outage, "scheduled"))
            remind = outage.starts_at - self.config.notice_lead
            if "reminder" not in sent and outage.created_at < remind <= now < outage.starts_at:
                due.append((outage, "reminder"))
            if "started" not in sent and now >= outage.starts_at:
                due.append((outage, "started"))
        due.sort(key=lambda item: item[0].starts_at)  # stable: each outage's phases stay in order
        return due

    def notified(self, outage: Outage, phase: Phase) -> None:
        """Remember that a notice went out (in the caller's transaction, with the notice)."""
        current = self.by_id.get(outage.id, outage)
        self._save(current.model_copy(update={"notified": [*current.notified, phase]}))

    def short_notice(self, outage: Outage) -> bool:
        """Whether customers were told less than the configured lead time before the start."""
        return outage.starts_at - outage.created_at < self.config.notice_lead

    def export(self, now: float, held: int) -> None:
        """Windows by state and alarms held, as metrics."""
        states = [o.state(now) for o in self._pending.values()]
        for state in ("scheduled", "active"):
            self.metrics.maintenance_windows.labels(state).set(states.count(state))
        self.metrics.maintenance_held.set(held)


def _settled(outage: Outage, now: float) -> bool:
    """Over, with every notice it will ever need sent: no tick needs to look at it again."""
    sent = outage.notified
    if outage.cancelled:
        return "cancelled" in sent or "scheduled" not in sent
    return now >= outage.ends_at and ("ended" in sent or "started" not in sent)


def _new_id(now: float, taken: Mapping[str, Outage]) -> str:
    """``MW-20261206-1`` and onwards: the date in UTC and a number free on that day."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%d")
    n = 1
    while f"MW-{day}-{n}" in taken:
        n += 1
    return f"MW-{day}-{n}"


# --------------------------------------------------------------------------- the customer notice


class CustomerRef(BaseModel):
    """A customer told of a planned outage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    tier: Tier
    important_customer: bool


class PlannedOutageNotice(BaseModel):
    """A planned outage told to one customer (SPEC §9), on the notices topic keyed by customer.

    One message per affected customer, naming only that customer's circuits (SPEC §8).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    type: Literal["planned_outage"] = "planned_outage"
    phase: Phase = Field(
        description="scheduled (made or changed), reminder (the lead time before the start), "
        "started, ended, cancelled (withdrawn before the start)"
    )
    outage_id: str
    reason: str
    created_by: str
    starts_at: str
    ends_at: str
    customer: CustomerRef
    circuits: list[str] = Field(description="this customer's circuits in the outage")
    short_notice: bool = Field(description="made less than maintenance.notice_lead before its start")
    sent_at: str


def customer_notices(
    outage: Outage, phase: Phase, inventory: Inventory, *, short: bool, now: float
) -> list[PlannedOutageNotice]:
    """The notices of one phase of an outage, one per affected customer the inventory still knows."""
    notices = []
    for customer_id in outage.affected_customers:
        customer = inventory.customers.get(customer_id)
        if customer is None:
            continue
        circuits = [
            c
            for c in outage.affected_circuits
            if (known := inventory.circuits.get(c)) and known.customer == customer_id
        ]
        notices.append(
            PlannedOutageNotice(
                phase=phase,
                outage_id=outage.id,
                reason=outage.reason,
                created_by=outage.created_by,
                starts_at=isotime(outage.starts_at),
                ends_at=isotime(outage.ends_at),
                customer=CustomerRef(
                    id=customer.id,
                    name=customer.name,
                    tier=customer.tier,
                    important_customer=customer.tier.important,
                ),
                circuits=circuits,
                short_notice=short,
                sent_at=isotime(now),
            )
        )
    return notices
