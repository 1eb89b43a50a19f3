"""The collector against real agents on 127.0.0.1: snmpsim recordings and Debian's snmpd (v1, v2c, v3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import snmpd as snmpd_tool  # tools/, on sys.path via conftest
from alarmd.clock import Clock, SystemClock
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.poller import DevicePoller
from alarmd.collector.profile import load_profiles
from alarmd.collector.snmp import PysnmpClient, SnmpClient, SnmpError, Target
from alarmd.config import DeviceConfig, PollingConfig, SnmpV1, SnmpV2c, SnmpV3
from alarmd.metrics import Metrics
from alarmd.model import Sample
from alarmd.testing import FakeClock

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(sorted((REPO / "config" / "profiles").glob("*.yml")))
SYS_NAME = "1.3.6.1.2.1.1.5.0"


@pytest.fixture(scope="module")
def agent() -> Iterator[snmpd_tool.Snmpd]:
    sd = snmpd_tool.start()
    try:
        yield sd
    finally:
        sd.stop()


@pytest.fixture(params=["fast", "pysnmp"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[SnmpClient]:
    c: SnmpClient = PysnmpClient(max_in_flight=8)
    if request.param == "fast":
        c = FastSnmpClient(max_in_flight=8, v3=c)
    try:
        yield c
    finally:
        c.close()


def target(port: int, credentials: SnmpV1 | SnmpV2c | SnmpV3, name: str = "agent") -> Target:
    return Target(name=name, address="127.0.0.1", port=port, credentials=credentials, timeout=1.0, retries=0)


@pytest.mark.parametrize("user", [u.name for u in snmpd_tool.DEFAULT_USERS])
async def test_snmpv3_every_security_level_and_protocol(
    agent: snmpd_tool.Snmpd, client: SnmpClient, user: str
) -> None:
    creds = SnmpV3.model_validate(agent.user(user).as_config())
    result = await client.get(target(agent.port, creds), [SYS_NAME])
    assert isinstance(result[SYS_NAME], bytes)
    assert result[SYS_NAME]


async def test_snmpv3_wrong_auth_key_is_an_auth_error(agent: snmpd_tool.Snmpd, client: SnmpClient) -> None:
    config = {**agent.user("alarmd-sha256-aes128").as_config(), "auth_key": "not-the-right-key"}
    with pytest.raises(SnmpError) as err:
        await client.get(target(agent.port, SnmpV3.model_validate(config)), [SYS_NAME])
    assert err.value.reason == "auth", err.value.detail


async def test_snmpv1_walks_with_getnext_to_the_end_of_a_column(
    agent: snmpd_tool.Snmpd, client: SnmpClient
) -> None:
    v1 = SnmpV1(version="1", community=agent.community)  # type: ignore[arg-type]
    table = await client.walk(target(agent.port, v1), ["1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.2.2.1.8"], 25)
    names = {v.decode() for v in table["1.3.6.1.2.1.2.2.1.2"].values() if isinstance(v, bytes)}
    assert "lo" in names
    assert set(table["1.3.6.1.2.1.2.2.1.8"]) == set(table["1.3.6.1.2.1.2.2.1.2"])


async def test_counter32_wrap_on_a_real_agent_gives_true_rates(
    agent: snmpd_tool.Snmpd, tmp_path: Path
) -> None:
    profile_file = tmp_path / "wrapper.yml"
    profile_file.write_text(
        "tables:\n  - name: wrap\n    columns:\n"
        "      - {name: wrap32_octets, oid: 1.3.6.1.4.1.8072.9999.1.1, type: counter32}\n"
        "      - {name: wrap64_octets, oid: 1.3.6.1.4.1.8072.9999.1.2, type: counter64}\n"
    )
    profile = load_profiles([profile_file])["wrapper"]
    device = DeviceConfig.model_validate(
        {
            "name": "snmpd",
            "kind": "cpe_router",
            "address": "127.0.0.1",
            "port": agent.port,
            "snmp": {"community": agent.community},
        }
    )
    assert device.snmp is not None
    client = FastSnmpClient(v3=PysnmpClient())
    poller = DevicePoller(
        device,
        credentials=device.snmp,
        profile=profile,
        polling=PollingConfig(),
        client=client,
        clock=SystemClock(),
        metrics=Metrics(),
    )
    rate = agent.wrap["rate"]  # bytes/s: the Counter32 wraps every 10 s
    rates32: list[float] = []
    try:
        for _ in range(8):  # 8 polls 2 s apart: the Counter32 wraps every 10 s
            samples = await poller.poll_once()
            rates32.extend(_values(samples, "wrap32_octets_per_second"))
            await asyncio.sleep(2)
    finally:
        client.close()
    assert len(rates32) == 7
    for value in rates32:
        assert value == pytest.approx(rate, rel=0.2), rates32


def _values(samples: list[Sample], metric: str) -> list[float]:
    return [s.value for s in samples if s.metric == metric]


def sim_poller(sim: Any, name: str, kind: str, client: SnmpClient, clock: Clock) -> DevicePoller:
    device = DeviceConfig.model_validate(
        {"name": name, "kind": kind, "address": "127.0.0.1", "port": sim.port, "snmp": {"community": name}}
    )
    assert device.snmp is not None
    return DevicePoller(
        device,
        credentials=device.snmp,
        profile=PROFILES[kind],
        polling=PollingConfig(),
        client=client,
        clock=clock,
        metrics=Metrics(),
    )


async def test_optical_transceiver_profile_reads_power_per_port(sim_network: Any, client: SnmpClient) -> None:
    poller = sim_poller(sim_network, "optical-tx-01", "optical_transceiver", client, FakeClock())
    samples = await poller.poll_once()
    rx = [s for s in samples if s.metric == "optical_rx_power_dbm"]
    assert [(s.labels["interface"], round(s.value, 1)) for s in rx] == [("fiber-1", -7.5)]
    sim_network.set_values({"optical-tx-01/rx_power": -300})
    try:
        samples = await poller.poll_once()
    finally:
        sim_network.set_values({"optical-tx-01/rx_power": None})
    assert [round(s.value, 1) for s in samples if s.metric == "optical_rx_power_dbm"] == [-30.0]
    assert [s.value for s in samples if s.metric == "module_temperature_celsius"] == [pytest.approx(41.3)]


async def test_protocol_converter_profile_reads_e1_alarms(sim_network: Any, client: SnmpClient) -> None:
    poller = sim_poller(sim_network, "proto-conv-01", "protocol_converter", client, FakeClock())
    quiet = {s.metric: s.value for s in await poller.poll_once() if s.metric.startswith("e1_loss")}
    assert quiet == {"e1_loss_of_signal": 0.0, "e1_loss_of_frame": 0.0}
    sim_network.set_values({"proto-conv-01/1/line_status": 64 + 32})
    try:
        samples = await poller.poll_once()
    finally:
        sim_network.set_values({"proto-conv-01/1/line_status": None})
    los = next(s for s in samples if s.metric == "e1_loss_of_signal")
    assert los.value == 1.0
    assert (los.labels["interface"], los.labels["e1_circuit_id"]) == ("E1-1", "CIR-0002")
    assert next(s.value for s in samples if s.metric == "e1_loss_of_frame") == 1.0


async def test_cpe_router_profile_measures_the_congested_wan(sim_network: Any, client: SnmpClient) -> None:
    sim_network.set_rates({"cpe-router-01/2/in": 1_125_000.0})  # 90% of the 10 Mbit/s WAN port
    poller = sim_poller(sim_network, "cpe-router-01", "cpe_router", client, SystemClock())
    await poller.poll_once()
    # The rate's interval is between the two interface walks' ends: 3 s keeps the jitter of one walk
    # (up to ~0.1 s under load) within the tolerance.
    await asyncio.sleep(3.0)
    samples = await poller.poll_once()
    util = {s.labels["interface"]: s.value for s in samples if s.metric == "interface_utilisation_percent"}
    assert util["GigabitEthernet0/0/1"] == pytest.approx(90, abs=8)
    assert {s.labels["interface"] for s in samples if s.metric == "interface_link_down"} >= {
        "GigabitEthernet0/0/1"
    }


async def test_the_v3_client_is_made_at_the_first_v3_target_only(agent: snmpd_tool.Snmpd) -> None:
    made: list[PysnmpClient] = []

    def factory() -> PysnmpClient:
        made.append(PysnmpClient(max_in_flight=4))
        return made[-1]

    client = FastSnmpClient(max_in_flight=4, v3=factory)
    try:
        v2 = SnmpV2c.model_validate({"version": "2c", "community": agent.community})
        assert isinstance((await client.get(target(agent.port, v2), [SYS_NAME]))[SYS_NAME], bytes)
        assert made == [], "a v1/v2c network never builds pysnmp's engine"
        v3 = SnmpV3.model_validate(agent.user(snmpd_tool.DEFAULT_USERS[0].name).as_config())
        for _ in range(2):
            assert isinstance((await client.get(target(agent.port, v3), [SYS_NAME]))[SYS_NAME], bytes)
        assert len(made) == 1
    finally:
        client.close()
