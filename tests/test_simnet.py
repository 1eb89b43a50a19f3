"""The simulated network (tools/simnet.py): every recorded OID is served, status values change live."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import simnet

DEVICES = sorted(p.stem for p in simnet.DEVICES.glob("*.snmprec"))
END_OF_MIB = "No more variables left in this MIB View"

LINE_STATUS = "1.3.6.1.2.1.10.18.6.1.10.1"  # dsx1LineStatus of the E1 (ifIndex 1)
PCV_OPER = "1.3.6.1.2.1.2.2.1.8.1"  # ifOperStatus of E1-1 / fiber-1
RX_POWER = "1.3.6.1.2.1.99.1.1.1.4.5"  # entPhySensorValue of the SFP's rx power sensor


def _oids(path: Path) -> list[str]:
    return [line.split("|", 1)[0] for line in path.read_text().splitlines() if line.strip()]


def _key(oid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in oid.split("."))


def _snmp(tool: str, sim: simnet.SimNet, community: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [tool, "-v2c", "-c", community, "-On", "-Oq", "-t", "2", "-r", "1", f"127.0.0.1:{sim.port}", *args]
    env = {**os.environ, "MIBS": ":"}
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=120)


def _get(sim: simnet.SimNet, community: str, oid: str) -> str:
    proc = _snmp("snmpget", sim, community, oid)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(" ", 1)[1]


def _eventually(sim: simnet.SimNet, community: str, oid: str, expected: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    value = _get(sim, community, oid)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = _get(sim, community, oid)
    assert value == expected, f"{community} {oid} = {value}, expected {expected}"


@pytest.mark.parametrize("device", DEVICES)
def test_records_are_in_numeric_oid_order(device: str) -> None:
    oids = _oids(simnet.DEVICES / f"{device}.snmprec")
    assert oids == sorted(oids, key=_key)
    assert len(oids) == len(set(oids)), "duplicate OIDs"


@pytest.mark.integration
@pytest.mark.parametrize("tool", ["snmpwalk", "snmpbulkwalk"])
@pytest.mark.parametrize("device", DEVICES)
def test_walk_serves_every_recorded_oid(sim_network: simnet.SimNet, device: str, tool: str) -> None:
    proc = _snmp(tool, sim_network, device, "1.3.6.1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(".1.")]
    served = [line.split(" ", 1)[0].lstrip(".") for line in lines if END_OF_MIB not in line]
    assert served == _oids(simnet.DEVICES / f"{device}.snmprec")
    assert not [line for line in lines if "No Such" in line or "Wrong Type" in line]


@pytest.fixture
def restore_values(sim_network: simnet.SimNet) -> Iterator[simnet.SimNet]:
    """Give the network back with every controlled value at its recorded default."""
    names = [
        "proto-conv-01/1/line_status",
        "proto-conv-01/1/oper_status",
        "optical-tx-01/rx_power",
        "optical-tx-01/1/oper_status",
    ]
    try:
        yield sim_network
    finally:
        sim_network.set_values(dict.fromkeys(names))


@pytest.mark.integration
def test_set_values_changes_e1_line_status_live(restore_values: simnet.SimNet) -> None:
    sim = restore_values
    assert _get(sim, "proto-conv-01", LINE_STATUS) == "1"  # dsx1NoAlarm
    assert _get(sim, "proto-conv-01", "1.3.6.1.2.1.10.18.6.1.8.1") == '"CIR-0002"'
    sim.set_values({"proto-conv-01/1/line_status": 2 + 64, "proto-conv-01/1/oper_status": 2})
    _eventually(sim, "proto-conv-01", LINE_STATUS, "66")  # RcvFarEndLOF + LossOfSignal
    _eventually(sim, "proto-conv-01", PCV_OPER, "2")
    sim.set_values({"proto-conv-01/1/line_status": None, "proto-conv-01/1/oper_status": None})
    _eventually(sim, "proto-conv-01", LINE_STATUS, "1")
    _eventually(sim, "proto-conv-01", PCV_OPER, "1")


@pytest.mark.integration
def test_set_values_changes_optical_rx_power_live(restore_values: simnet.SimNet) -> None:
    sim = restore_values
    assert _get(sim, "optical-tx-01", RX_POWER) == "-75"  # -7.5 dBm
    assert _get(sim, "optical-tx-01", "1.3.6.1.2.1.47.1.1.1.1.7.5") == '"fiber-1 Rx Power"'
    assert _get(sim, "optical-tx-01", "1.3.6.1.2.1.47.1.3.2.1.2.3.0") == ".1.3.6.1.2.1.2.2.1.1.1"
    sim.set_values({"optical-tx-01/rx_power": -300, "optical-tx-01/1/oper_status": 2})  # loss of light
    _eventually(sim, "optical-tx-01", RX_POWER, "-300")
    _eventually(sim, "optical-tx-01", PCV_OPER, "2")
    assert _get(sim, "optical-tx-01", "1.3.6.1.2.1.99.1.1.1.4.6") == "-52"  # tx power untouched
    sim.set_values({"optical-tx-01/rx_power": None, "optical-tx-01/1/oper_status": None})
    _eventually(sim, "optical-tx-01", RX_POWER, "-75")
    _eventually(sim, "optical-tx-01", PCV_OPER, "1")
