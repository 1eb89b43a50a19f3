"""What a reload changes: devices, circuits, customers and credentials added, changed and removed.

:func:`diff_configs` compares the running configuration with a new one and returns a
:class:`ConfigDiff`; the daemon applies it (``Daemon.reload``) and ``alarmd check-config
--diff`` prints it before anyone reloads.  It is pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from alarmd.config import Config, DeviceConfig, SnmpV1, SnmpV2c, SnmpV3

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


#: Device fields whose change re-creates its poller: everything except where it sits on circuits.
def _poll_settings(
    config: Config, device: DeviceConfig, credentials: Credentials, profile: Hashable
) -> tuple[object, ...]:
    polling = config.polling
    return (
        device,
        credentials,
        profile,
        device.interval or polling.interval,
        device.timeout or polling.timeout,
        device.retries if device.retries is not None else polling.retries,
        polling.max_repetitions,
    )


def _credentials_of(config: Config, device: DeviceConfig) -> Credentials:
    return device.snmp if device.snmp is not None else config.credentials[device.credentials or ""]


def diff_configs(
    old: Config,
    new: Config,
    *,
    old_profile: Callable[[str], Hashable],
    new_profile: Callable[[str], Hashable],
) -> ConfigDiff:
    """What changes from ``old`` to ``new``; ``*_profile(name)`` gives a device profile's content."""

    def polled(config: Config, profile: Callable[[str], Hashable]) -> dict[str, tuple[object, ...]]:
        return {
            d.name: _poll_settings(config, d, _credentials_of(config, d), profile(d.profile or d.kind.value))
            for d in config.devices
        }

    trap_keys = ("listen", "receive_buffer", "queue_size", "engine_id", "enabled")
    traps_rebind = any(getattr(old.traps, k) != getattr(new.traps, k) for k in trap_keys)
    accepted_old = {n: old.credentials.get(n) for n in old.traps.credentials}
    accepted_new = {n: new.credentials.get(n) for n in new.traps.credentials}
    traps_accept = (
        accepted_old != accepted_new
        or old.traps.allowed_sources != new.traps.allowed_sources
        or old.traps.definitions != new.traps.definitions
        or old.security.v3_only != new.security.v3_only
    )
    kafka = any(getattr(old, k) != getattr(new, k) for k in ("kafka", "upstream", "ticketing"))
    http = old.http != new.http
    handled = {
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
    other = tuple(
        name
        for name in type(new).model_fields
        if name not in handled and getattr(old, name) != getattr(new, name)
    )
    return ConfigDiff(
        devices=Changes.between(polled(old, old_profile), polled(new, new_profile)),
        circuits=Changes.between({c.id: c for c in old.circuits}, {c.id: c for c in new.circuits}),
        customers=Changes.between({c.id: c for c in old.customers}, {c.id: c for c in new.customers}),
        credentials=Changes.between(dict(old.credentials), dict(new.credentials)),
        traps_rebind=traps_rebind,
        traps_accept=traps_accept and old.traps.enabled and new.traps.enabled,
        kafka=kafka,
        http=http,
        other=other,
        restart_required=tuple(k for k in RESTART_ONLY if getattr(old, k) != getattr(new, k)),
    )
