"""Daemon.reload on fakes: which pollers survive, what removed devices' faults become, what stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.app import Daemon, load_rules
from alarmd.config import load
from alarmd.metrics import Metrics
from alarmd.model import Sample, WorkOrder
from alarmd.testing import FakeClock, FakeSink, FakeSnmpClient

REPO = Path(__file__).resolve().parent.parent
CONFIG = f"""\
rule_files: [rules.yml]
profile_files: ["{REPO}/config/profiles/*.yml"]
inventory_files: [export.csv]
state_dir: state
credentials:
  a: {{community: one}}
  b: {{community: two}}
"""
RULES = """\
groups:
  - name: g
    rules:
      - alert: Unreachable
        expr: device_up < 1
        labels: {severity: major, alarm_class: transmission}
"""
HEADER = "circuit,customer,customer_name,tier,device,kind,address,credentials,interval"
ROWS = [
    "CIR-1,C1,One,gold,r1,cpe_router,127.0.0.1,a,",
    "CIR-2,C1,One,gold,r2,cpe_router,127.0.0.2,b,",
    ",,,,r3,cpe_router,127.0.0.3,a,",
]


def write(path: Path, rows: list[str]) -> None:
    (path / "export.csv").write_text("\n".join([HEADER, *rows]) + "\n")


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    (tmp_path / "alarmd.yml").write_text(CONFIG)
    (tmp_path / "rules.yml").write_text(RULES)
    write(tmp_path, ROWS)
    loaded = load(tmp_path, env={})
    return Daemon(
        loaded,
        load_rules(loaded),
        snmp=FakeSnmpClient(),
        sink=FakeSink(),
        clock=FakeClock(),
        metrics=Metrics(),
    )


def test_unchanged_devices_keep_their_pollers_and_changed_ones_get_new(
    daemon: Daemon, tmp_path: Path
) -> None:
    before = dict(daemon.pollers)  # a poller holds the device's schedule and counter baselines
    write(tmp_path, [ROWS[0], ROWS[1].replace(",b,", ",a,"), ROWS[2], ",,,,r4,cpe_router,127.0.0.4,b,5m"])
    assert daemon.reload()
    assert daemon.pollers["r1"] is before["r1"]
    assert daemon.pollers["r3"] is before["r3"]
    assert daemon.pollers["r2"] is not before["r2"]
    assert daemon.pollers["r2"].target.credentials == daemon.loaded.config.credentials["a"]
    assert daemon.pollers["r4"].interval == 300.0
    assert daemon.inventory.devices.keys() == {"r1", "r2", "r3", "r4"}
    assert (daemon.metrics.registry.get_sample_value("alarmd_config_last_reload_duration_seconds") or 0) > 0


def test_a_reload_that_fails_validation_changes_nothing(daemon: Daemon, tmp_path: Path) -> None:
    before, config = dict(daemon.pollers), daemon.config
    write(tmp_path, [*ROWS[:2], ",,,,r3,cpe_router,127.0.0.300,a,"])
    assert not daemon.reload()
    assert daemon.pollers == before and all(daemon.pollers[n] is p for n, p in before.items())
    assert daemon.config is config
    assert daemon.metrics.registry.get_sample_value("alarmd_config_last_reload_successful") == 0


def fire(daemon: Daemon, device: str) -> None:
    sample = Sample("device_up", {"device": device, "device_kind": "cpe_router"}, 0.0, daemon.clock.now())
    for transition in daemon.engine.evaluate(sample):
        for change in daemon.book.apply(transition):
            daemon.changes.put_nowait(change)


def drain(daemon: Daemon) -> list[str]:
    kinds = []
    while not daemon.changes.empty():
        change = daemon.changes.get_nowait()
        assert change is not None
        kinds.append(change.kind)
    return kinds


def test_a_removed_device_has_its_open_fault_cleared_as_decommissioned(
    daemon: Daemon, tmp_path: Path
) -> None:
    fire(daemon, "r1")
    fire(daemon, "r3")
    assert drain(daemon) == ["raised", "raised"]
    daemon.metrics.device_up.labels("r1", "cpe_router").set(0)
    write(tmp_path, ROWS[1:])  # r1 and its circuit CIR-1 go
    assert daemon.reload()
    assert drain(daemon) == ["cleared"]
    cleared = daemon.book.recent[next(iter(daemon.book.recent))]
    assert cleared.labels["device"] == "r1"
    order = WorkOrder.from_alarm(cleared, daemon.clock.now())
    assert (order.type, order.reason) == ("work_order_clear", "decommissioned")
    assert [a.labels["device"] for a in daemon.book.active.values()] == ["r3"]
    assert daemon.engine.firing == 1, "the removed device's rule state is gone, r3's stays"
    assert (
        daemon.metrics.registry.get_sample_value(
            "alarmd_device_up", {"device": "r1", "device_kind": "cpe_router"}
        )
        is None
    )


def test_a_removed_circuit_clears_the_faults_placed_on_it(daemon: Daemon, tmp_path: Path) -> None:
    fire(daemon, "r2")
    assert drain(daemon) == ["raised"]
    write(tmp_path, [ROWS[0], ",C1,One,gold,r2,cpe_router,127.0.0.2,b,", ROWS[2]])  # r2 stays, CIR-2 goes
    assert daemon.reload()
    assert drain(daemon) == ["cleared"]
    assert not daemon.book.active
    assert "CIR-2" not in daemon.inventory.circuits
