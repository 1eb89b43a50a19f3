"""What a reload changes: devices, circuits, customers and credentials added, changed and removed.

:func:`diff_configs` compares the running configuration with a new one and returns a
:class:`ConfigDiff`; the daemon applies it (``Daemon.reload``) and ``alarmd check-config
--diff`` prints it before anyone reloads.  It is pure: no I/O, no asyncio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, SecretStr

from alarmd.config import Config, SnmpV1, SnmpV2c, SnmpV3

Credentials = SnmpV1 | SnmpV2c | SnmpV3

#: Sections whose change needs a restart: the store and its outbox (``state_dir``), the size of
#: the queues between stages, and the API's tokens and audit log.
RESTART_ONLY = ("state_dir", "queue_size", "api")


@dataclass(frozen=True)
class Changes:
    """Names added, changed and removed in one section."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    @classmethod
    def between(cls, old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
        """Compare two name → value mappings (values compared with ``==``)."""
        return cls(
            added=tuple(n for n in new if n not in old),
            changed=tuple(n for n, v in new.items() if n in old and old[n] != v),
            removed=tuple(n for n in old if n not in new),
        )


@dataclass(frozen=True)
class ConfigDiff:
    """Everything a reload would do, section by section."""

    devices: Changes = Changes()
    circuits: Changes = Changes()
    customers: Changes = Changes()
    credentials: Changes = Changes()
    #: The trap listener must be bound again (address, buffer, queue, engine id).
    traps_rebind: bool = False
    #: The communities and v3 users the trap listener accepts, or its allowed sources.
    traps_accept: bool = False
    #: Kafka client settings (servers, security, topics, consumed topics).
    kafka: bool = False
    #: The HTTP listener's address.
    http: bool = False
    #: Other sections that changed (rules, routing, clocks …), applied at once.
    other: tuple[str, ...] = ()
    #: Sections that changed but apply only at the next start.
    restart_required: tuple[str, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(
            self.devices
            or self.circuits
            or self.customers
            or self.credentials
            or self.traps_rebind
            or self.traps_accept
            or self.kafka
            or self.http
            or self.other
            or self.restart_required
        )

    def summary(self) -> dict[str, int | bool | list[str]]:
        """Counts for the ``config_reloaded`` log line."""
        out: dict[str, int | bool | list[str]] = {}
        for section in ("devices", "circuits", "customers", "credentials"):
            changes: Changes = getattr(self, section)
            for what in ("added", "changed", "removed"):
                out[f"{section}_{what}"] = len(getattr(changes, what))
        out.update(
            traps_rebind=self.traps_rebind, traps_accept=self.traps_accept, kafka=self.kafka, http=self.http
        )
        out["other"] = list(self.other)
        out["restart_required"] = list(self.restart_required)
        return out

    def lines(self) -> list[str]:
        """One line per change, ``+`` added, ``~`` changed, ``-`` removed: what ``--diff`` prints."""
        out: list[str] = []
        for section in ("customers", "credentials", "devices", "circuits"):
            changes: Changes = getattr(self, section)
            singular = section.removesuffix("s")
            out.extend(f"+ {singular} {name}" for name in changes.added)
            out.extend(f"~ {singular} {name}" for name in changes.changed)
            out.extend(f"- {singular} {name}" for name in changes.removed)
        if self.traps_rebind:
            out.append("~ traps: the listener is bound again (queued traps are kept)")
        elif self.traps_accept:
            out.append("~ traps: accepted communities, v3 users or sources")
        if self.kafka:
            out.append("~ kafka: clients reconnect (the outbox is kept)")
        if self.http:
            out.append("~ http: the listener moves to the new address")
        out.extend(f"~ {section}" for section in self.other)
        out.extend(f"! {section}: applies at the next start only" for section in self.restart_required)
        return out


Snapshot = dict[str, dict[str, str]]
"""Section → name → digest: what :func:`diff_snapshots` compares (no secret in it, only digests)."""

#: Trap settings that need a new socket; the rest are taken on the socket already bound.
TRAP_BIND_KEYS = ("enabled", "listen", "receive_buffer", "queue_size", "engine_id")
#: Config sections a reload applies with its own means (pollers, listeners, clients), not as "other".
_HANDLED = frozenset(
    {
        "customers",
        "devices",
        "circuits",
        "credentials",
        "traps",
        "kafka",
        "upstream",
        "ticketing",
        "polling",
        "inventory_files",
        "profile_files",
        "security",
        "http",
        *RESTART_ONLY,
    }
)


def _plain(value: object) -> object:
    """JSON for what ``json`` does not know: secrets by value (only digests leave), models, enums."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Enum):
        return value.value
    return str(value)


def _digest(salt: bytes, value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=_plain)
    return hashlib.sha256(salt + text.encode()).hexdigest()[:32]


def _model_digest(salt: bytes, model: BaseModel, *more: str) -> str:
    """A model without secrets (pydantic's JSON, fast), and digests of what it refers to."""
    text = model.model_dump_json() + "".join(more)
    return hashlib.sha256(salt + text.encode()).hexdigest()[:32]


def snapshot(config: Config, profile: Callable[[str], str], salt: bytes = b"") -> Snapshot:
    """Digests of everything a reload compares; ``profile(name)`` is a device profile's content as text.

    A device's digest covers all that its poller is built from (its fields, its credentials,
    its profile and the polling defaults), so a device whose digest is unchanged keeps its
    poller.  ``salt`` makes a snapshot written to disk useless for guessing a community.
    """
    credentials = {n: _digest(salt, c) for n, c in config.credentials.items()}
    polling = config.polling
    profiles: dict[str, str] = {}

    def profile_digest(name: str) -> str:
        if name not in profiles:
            profiles[name] = _digest(salt, profile(name))
        return profiles[name]

    devices = {
        d.name: _model_digest(
            salt,
            d,
            credentials[d.credentials or ""] if d.snmp is None else _digest(salt, d.snmp),
            profile_digest(d.profile or d.kind.value),
            # the polling defaults as this device takes them: a default it overrides changes nothing
            f"{d.interval or polling.interval}|{d.timeout or polling.timeout}|"
            f"{d.retries if d.retries is not None else polling.retries}|{polling.max_repetitions}",
        )
        for d in config.devices
    }
    traps = config.traps
    sections = {
        "traps_bind": _digest(salt, [getattr(traps, k) for k in TRAP_BIND_KEYS]),
        "traps_enabled": str(traps.enabled),
        "traps_accept": _digest(
            salt,
            [
                {n: config.credentials.get(n) for n in traps.credentials},
                traps.allowed_sources,
                traps.definitions,
                config.security.v3_only,
            ],
        ),
        "kafka": _digest(salt, [config.kafka, config.upstream, config.ticketing]),
        "http": _digest(salt, config.http),
    }
    for name in type(config).model_fields:
        if name not in _HANDLED or name in RESTART_ONLY:
            sections[name] = _digest(salt, getattr(config, name))
    return {
        "devices": devices,
        "circuits": {c.id: _model_digest(salt, c) for c in config.circuits},
        "customers": {c.id: _model_digest(salt, c) for c in config.customers},
        "credentials": credentials,
        "sections": sections,
    }


def diff_snapshots(old: Snapshot, new: Snapshot) -> ConfigDiff:
    """What changes from the ``old`` snapshot to the ``new`` one (taken with the same salt)."""
    was, now = old["sections"], new["sections"]

    def changed(name: str) -> bool:
        return was.get(name) != now.get(name)

    both_enabled = was.get("traps_enabled") == now.get("traps_enabled") == "True"
    return ConfigDiff(
        devices=Changes.between(old["devices"], new["devices"]),
        circuits=Changes.between(old["circuits"], new["circuits"]),
        customers=Changes.between(old["customers"], new["customers"]),
        credentials=Changes.between(old["credentials"], new["credentials"]),
        traps_rebind=changed("traps_bind"),
        traps_accept=changed("traps_accept") and both_enabled,
        kafka=changed("kafka"),
        http=changed("http"),
        other=tuple(n for n in now if n not in _HANDLED and n not in _DERIVED and changed(n)),
        restart_required=tuple(n for n in RESTART_ONLY if changed(n)),
    )


_DERIVED = frozenset({"traps_bind", "traps_enabled", "traps_accept"})


def diff_configs(
    old: Config, new: Config, *, old_profile: Callable[[str], str], new_profile: Callable[[str], str]
) -> ConfigDiff:
    """What changes from ``old`` to ``new``; ``*_profile(name)`` gives a device profile's content."""
    return diff_snapshots(snapshot(old, old_profile), snapshot(new, new_profile))
