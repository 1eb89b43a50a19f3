"""What a reload would change: devices, circuits, customers, credentials and listeners, compared."""

from __future__ import annotations

from typing import Any

from alarmd.config import Config
from alarmd.inventory.reconcile import ConfigDiff, diff_configs

BASE: dict[str, Any] = {
    "credentials": {"a": {"community": "one"}, "b": {"community": "two"}, "t": {"community": "trap"}},
    "customers": [{"id": "C1", "name": "One", "tier": "gold"}],
    "devices": [
        {"name": "r1", "kind": "cpe_router", "address": "127.0.0.1", "credentials": "a"},
        {"name": "r2", "kind": "cpe_router", "address": "127.0.0.2", "credentials": "b"},
        {"name": "r3", "kind": "cpe_router", "address": "127.0.0.3", "credentials": "a", "interval": "1m"},
    ],
    "circuits": [{"id": "CIR-1", "customer": "C1", "path": [{"device": "r1"}]}],
    "traps": {"enabled": True, "listen": "127.0.0.1:1162", "credentials": ["t"]},
}


def diff(**changes: Any) -> ConfigDiff:
    old = Config.model_validate(BASE)
    new = Config.model_validate({**BASE, **changes})
    return diff_configs(old, new, old_profile=lambda name: name, new_profile=lambda name: name)


def test_nothing_changed_is_an_empty_diff() -> None:
    assert not diff()
    assert diff().lines() == []


def test_a_changed_community_changes_only_the_devices_that_use_it() -> None:
    found = diff(credentials={**BASE["credentials"], "a": {"community": "rotated"}})
    assert set(found.devices.changed) == {"r1", "r3"}
    assert found.credentials.changed == ("a",)
    assert not found.devices.added and not found.devices.removed


def test_a_default_interval_changes_the_devices_without_their_own() -> None:
    found = diff(polling={"interval": "30s"})
    assert set(found.devices.changed) == {"r1", "r2"}


def test_added_and_removed_devices_and_circuits() -> None:
    devices = [
        *BASE["devices"][1:],
        {"name": "r4", "kind": "cpe_router", "address": "127.0.0.4", "credentials": "a"},
    ]
    found = diff(devices=devices, circuits=[{"id": "CIR-2", "customer": "C1", "path": [{"device": "r2"}]}])
    assert (found.devices.added, found.devices.removed) == (("r4",), ("r1",))
    assert (found.circuits.added, found.circuits.removed) == (("CIR-2",), ("CIR-1",))
    assert found.lines() == ["+ device r4", "- device r1", "+ circuit CIR-2", "- circuit CIR-1"]


def test_a_changed_profile_changes_its_devices() -> None:
    old = Config.model_validate(BASE)
    found = diff_configs(old, old, old_profile=lambda name: name, new_profile=lambda name: name + "-v2")
    assert set(found.devices.changed) == {"r1", "r2", "r3"}


def test_listeners_kafka_and_restart_only_sections() -> None:
    assert diff(traps={**BASE["traps"], "listen": "127.0.0.1:1163"}).traps_rebind
    accept = diff(credentials={**BASE["credentials"], "t": {"community": "new-trap"}})
    assert accept.traps_accept and not accept.traps_rebind
    assert diff(kafka={"client_id": "other"}).kafka
    assert diff(http={"listen": "127.0.0.1:9999"}).http
    moved = diff(state_dir="/elsewhere")
    assert moved.restart_required == ("state_dir",)
    assert "! state_dir: applies at the next start only" in moved.lines()
    assert diff(clocks={"observation": "2h"}).other == ("clocks",)
