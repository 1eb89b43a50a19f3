from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmd.collector import poller as poller_module
from alarmd.collector.poller import (
    LOSS_OF_LIGHT_DBM,
    MAX_COUNTER,
    CounterRates,
    DevicePoller,
    counter_delta,
    error_ratio_percent,
    line_speed_bps,
    sensor_value,
    utilisation_percent,
    watts_to_dbm,
)
from alarmd.collector.profile import load_profiles
from alarmd.config import DeviceConfig, PollingConfig
from alarmd.metrics import Metrics
from alarmd.model import Sample
from alarmd.testing import FakeClock, FakeSnmpClient

PROFILES = load_profiles(sorted((Path(__file__).resolve().parents[2] / "config" / "profiles").glob("*.yml")))

MAX64 = (1 << 64) - 1


def test_counter64_delta_plain_and_across_wrap() -> None:
    assert counter_delta(1_000, 1_250_000_000_000, 64) == 1_249_999_999_000
    assert counter_delta(MAX64 - 9, 10, 64) == 20
    assert counter_delta(2**32 - 5, 5, 32) == 10


def test_first_sample_gives_no_rate() -> None:
    rates = CounterRates()
    assert rates.rate(("1", "in"), 10**15, at=100.0) is None
    assert rates.rate(("1", "in"), 10**15 + 1_125_000 * 10, at=110.0) == pytest.approx(1_125_000)


def test_counter64_wrap_gives_the_true_rate() -> None:
    rates = CounterRates()
    rates.rate(("2", "in"), MAX64 - 999, at=0.0)
    assert rates.rate(("2", "in"), 9_000, at=10.0, max_rate=1_250_000) == pytest.approx(1_000)


def test_counter_reset_gives_no_rate_instead_of_a_spike() -> None:
    rates = CounterRates()
    rates.rate(("2", "in"), 5_000_000_000, at=0.0)
    # the device rebooted: the counter restarts near zero; a "wrap" would be 2**64 bytes in 10 s
    assert rates.rate(("2", "in"), 1_000, at=10.0, max_rate=1_250_000) is None
    assert rates.rate(("2", "in"), 1_000 + 500_000, at=20.0, max_rate=1_250_000) == pytest.approx(50_000)


def test_a_clock_that_does_not_move_on_gives_no_rate() -> None:
    rates = CounterRates()
    rates.rate(("1", "in"), 1_000, at=10.0)
    assert rates.rate(("1", "in"), 2_000, at=10.0) is None
    assert rates.rate(("1", "in"), 3_000, at=5.0) is None
    assert rates.rate(("1", "in"), 4_000, at=15.0) == pytest.approx(100.0)


def test_a_reading_that_is_no_counter_gives_no_rate_and_starts_the_series_over() -> None:
    rates = CounterRates()
    rates.rate(("1", "in"), 1_000, at=0.0)
    assert rates.rate(("1", "in"), -5, at=10.0) is None
    assert rates.rate(("1", "in"), 2_000, at=20.0) is None
    assert rates.rate(("1", "in"), MAX_COUNTER + 1, at=30.0) is None
    assert rates.rate(("1", "in"), MAX_COUNTER, at=40.0) is None
    assert rates.rate(("1", "in"), 99, at=50.0, max_rate=100.0) == pytest.approx(10.0)  # one wrap


def test_forget_drops_the_series_not_kept_and_no_other() -> None:
    rates = CounterRates()
    for row in ("1", "2", "3"):
        for column in ("in", "out"):
            rates.rate((row, column), 0, at=0.0)
    rates.forget(lambda key: key != ("2", "in") and key[0] != "3")
    assert len(rates) == 3
    assert rates.rate(("2", "in"), 100, at=10.0) is None
    assert rates.rate(("3", "out"), 100, at=10.0) is None
    assert rates.rate(("2", "out"), 100, at=10.0) == pytest.approx(10.0)
    assert rates.rate(("1", "in"), 100, at=10.0) == pytest.approx(10.0)
    assert rates.rate(("1", "out"), 100, at=10.0) == pytest.approx(10.0)
    rates.forget()
    assert len(rates) == 0
    assert rates.rate(("1", "in"), 200, at=20.0) is None
    assert rates.rate(("1", "in"), 300, at=30.0) == pytest.approx(10.0)


def test_a_counter_series_costs_a_few_bytes() -> None:
    rates = CounterRates()
    rows = [str(i) for i in range(2_000)]
    tracemalloc.start()
    try:
        for at in (0.0, 10.0, 20.0):
            for row in rows:
                for column in ("in", "out", "errors"):
                    rates.rate((row, column), 10**15, at)
        kept = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, poller_module.__file__)])
    finally:
        tracemalloc.stop()
    per_series = sum(s.size for s in kept.statistics("filename")) / (len(rows) * 3)
    assert per_series < 40  # two 8-byte cells, and shares of the row's dict entry and the arrays' spare room


def test_utilisation_uses_the_busier_direction_against_the_line_speed() -> None:
    assert utilisation_percent(9_000_000, 3_200_000, 10e6) == pytest.approx(90.0)
    assert utilisation_percent(None, 5_000_000, 10e6) == pytest.approx(50.0)
    assert utilisation_percent(None, None, 10e6) is None
    assert utilisation_percent(1_000, 1_000, 0) is None


def test_if_speed_is_the_line_speed_whenever_it_can_hold_it() -> None:
    # An Ericsson T1: ifHighSpeed rounds 1.544 Mbit/s to 1
    assert line_speed_bps(1_544_000, 1) == 1_544_000
    assert line_speed_bps(2_048_000, None) == 2_048_000  # a basic agent: ifSpeed only
    assert line_speed_bps(4_294_967_295, 10_000) == 10e9  # faster than a Gauge32: ifHighSpeed
    assert line_speed_bps(None, 1000) == 1e9
    assert line_speed_bps(0, 0) is None


@given(
    start=st.integers(0, 2**64 - 1),
    step=st.integers(0, 2**64 - 1),
    seconds=st.floats(0.5, 600),
    speed_mbps=st.integers(1, 100_000),
)
def test_counter64_rates_are_never_negative_nor_above_line_rate(
    start: int, step: int, seconds: float, speed_mbps: int
) -> None:
    rates = CounterRates()
    max_rate = speed_mbps * 1_000_000 / 8
    rates.rate(("1", "in"), start, at=0.0)
    rate = rates.rate(("1", "in"), (start + step) % 2**64, at=seconds, max_rate=max_rate)
    assert rate is None or 0 <= rate <= max_rate * 1.1


@given(previous=st.integers(0, 2**32 - 1), current=st.integers(0, 2**32 - 1))
def test_counter32_delta_is_within_one_wrap(previous: int, current: int) -> None:
    assert 0 <= counter_delta(previous, current, 32) < 2**32


def test_sensor_scale_precision_and_dbm() -> None:
    assert sensor_value(-75, scale=9, precision=1) == pytest.approx(-7.5)
    assert sensor_value(178, scale=7, precision=0) == pytest.approx(178e-6)
    assert watts_to_dbm(178e-6) == pytest.approx(-7.496, abs=0.01)
    assert watts_to_dbm(1e-3) == pytest.approx(0.0)


def test_no_light_is_a_floor_reading_not_no_reading() -> None:
    assert watts_to_dbm(0) == LOSS_OF_LIGHT_DBM == -40.0
    assert watts_to_dbm(1e-12) == LOSS_OF_LIGHT_DBM  # -90 dBm is no light either
    assert watts_to_dbm(-1e-6) is None


def test_error_ratio_counts_errors_and_discards_against_all_packets() -> None:
    assert error_ratio_percent(20, 10, 70) == pytest.approx(30.0)
    assert error_ratio_percent(0, 0, 0) == 0.0
    assert error_ratio_percent(None, 1, 1) is None


IF = "1.3.6.1.2.1.2.2.1."
IFX = "1.3.6.1.2.1.31.1.1.1."


def router(
    in_octets: int,
    out_octets: int,
    *,
    oper: int = 1,
    errors: int = 0,
    discontinuity: int = 0,
    uptime: int = 1000,
) -> dict[str, dict[str, int | bytes | str | None]]:
    return {
        "": {"1.3.6.1.2.1.1.3.0": uptime},
        IFX + "1": {"1": b"GigabitEthernet0/0/0", "2": b"GigabitEthernet0/0/1"},
        IFX + "6": {"1": 5_000, "2": in_octets},
        IFX + "10": {"1": 5_000, "2": out_octets},
        IFX + "7": {"1": 10, "2": in_octets // 1000},
        IFX + "11": {"1": 10, "2": out_octets // 1000},
        IFX + "15": {"1": 1000, "2": 10},
        IFX + "19": {"1": 0, "2": discontinuity},
        IF + "7": {"1": 1, "2": 1},
        IF + "8": {"1": 1, "2": oper},
        IF + "13": {"1": 0, "2": 0},
        IF + "14": {"1": 0, "2": errors},
        IF + "19": {"1": 0, "2": 0},
        IF + "20": {"1": 0, "2": 0},
    }


def make_poller(
    client: FakeSnmpClient,
    clock: FakeClock,
    metrics: Metrics,
    kind: str = "cpe_router",
    name: str = "cpe-router-01",
) -> DevicePoller:
    device = DeviceConfig.model_validate(
        {"name": name, "kind": kind, "address": "127.0.0.1", "snmp": {"community": "c"}}
    )
    assert device.snmp is not None
    return DevicePoller(
        device,
        credentials=device.snmp,
        profile=PROFILES[kind],
        polling=PollingConfig(interval="10s"),
        client=client,
        clock=clock,
        metrics=metrics,
    )


def values(samples: list[Sample], metric: str, label: str = "interface") -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.metric == metric}


async def test_poller_turns_counters_into_utilisation_from_the_second_poll() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12)})
    poller = make_poller(client, clock, metrics)

    first = await poller.poll_once()
    assert values(first, "interface_utilisation_percent") == {}
    assert ("device_up", 1.0) in [(s.metric, s.value) for s in first]

    clock.advance(10)
    client.tables["cpe-router-01"] = router(10**12 + 11_250_000, 10**12 + 4_000_000, uptime=2000)
    second = await poller.poll_once()
    util = values(second, "interface_utilisation_percent")
    assert util["GigabitEthernet0/0/1"] == pytest.approx(90.0)
    assert util["GigabitEthernet0/0/0"] == pytest.approx(0.0)
    assert values(second, "if_hc_in_octets_per_second")["GigabitEthernet0/0/1"] == pytest.approx(1_125_000)
    assert poller.interface_names == {"1": "GigabitEthernet0/0/0", "2": "GigabitEthernet0/0/1"}


async def test_what_a_poller_keeps_between_polls_is_small_per_interface() -> None:
    interfaces = [str(i) for i in range(1, 501)]

    def agent(t: int) -> dict[str, dict[str, int | bytes | str | None]]:
        return {
            "": {"1.3.6.1.2.1.1.3.0": 1_000 + t},
            IFX + "1": {i: f"GigabitEthernet0/0/{i}".encode() for i in interfaces},
            IFX + "6": dict.fromkeys(interfaces, 10**12 + t * 10**6),
            IFX + "10": dict.fromkeys(interfaces, 10**12 + t * 10**6),
            IFX + "15": dict.fromkeys(interfaces, 1_000),
            IF + "7": dict.fromkeys(interfaces, 1),
            IF + "8": dict.fromkeys(interfaces, 1),
        }

    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": agent(0)})
    poller = make_poller(client, clock, metrics)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for t in range(4):
            clock.advance(10)
            client.tables["cpe-router-01"] = agent(t)
            samples = await poller.poll_once()
        assert len(values(samples, "interface_utilisation_percent")) == len(interfaces)
        del samples
        client.tables.clear()
        gc.collect()
        grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    # The interface's name and its entry in interface_names, 16 bytes per counter series and a row
    # number: readings are replaced in place, so no object per series or per poll stays behind.
    assert grown / len(interfaces) < 320


async def test_agent_restart_gives_no_rate_instead_of_a_spike() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12, uptime=500_000)})
    poller = make_poller(client, clock, metrics)
    await poller.poll_once()
    clock.advance(10)
    client.tables["cpe-router-01"] = router(500, 500, uptime=1_000)  # rebooted: small uptime, small counters
    assert values(await poller.poll_once(), "interface_utilisation_percent") == {}
    clock.advance(10)
    client.tables["cpe-router-01"] = router(500 + 6_250_000, 500, uptime=2_000)
    assert values(await poller.poll_once(), "interface_utilisation_percent")["GigabitEthernet0/0/1"] == (
        pytest.approx(50.0)
    )


async def test_counter_discontinuity_time_drops_that_interface_only() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12)})
    poller = make_poller(client, clock, metrics)
    await poller.poll_once()
    clock.advance(10)
    client.tables["cpe-router-01"] = router(10**12 + 1_000_000, 10**12, discontinuity=4242, uptime=2000)
    util = values(await poller.poll_once(), "interface_utilisation_percent")
    assert "GigabitEthernet0/0/1" not in util
    assert "GigabitEthernet0/0/0" in util


async def test_link_down_and_error_ratio() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12)})
    poller = make_poller(client, clock, metrics)
    await poller.poll_once()
    clock.advance(10)
    client.tables["cpe-router-01"] = router(10**12 + 1_000_000, 10**12, oper=2, errors=1_000, uptime=2000)
    samples = await poller.poll_once()
    assert values(samples, "interface_link_down") == {
        "GigabitEthernet0/0/0": 0.0,
        "GigabitEthernet0/0/1": 1.0,
    }
    # 1,000 inbound packets received, 1,000 errored: half the inbound traffic is lost
    assert values(samples, "interface_error_ratio_percent")["GigabitEthernet0/0/1"] == pytest.approx(50.0)


async def test_unreachable_device_is_data_and_a_failed_collection_period() -> None:
    clock, metrics = FakeClock(), Metrics()
    poller = make_poller(FakeSnmpClient(down={"cpe-router-01"}), clock, metrics)
    samples = await poller.poll_once()
    assert [(s.metric, s.value) for s in samples] == [("device_up", 0.0)]
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "alarmd_poll_errors_total", {"device_kind": "cpe_router", "reason": "timeout"}
        )
        == 1
    )
    device = {"device": "cpe-router-01", "device_kind": "cpe_router"}
    assert registry.get_sample_value("alarmd_device_up", device) == 0
    assert registry.get_sample_value("alarmd_collection_periods_total", device) == 1
    assert registry.get_sample_value("alarmd_collection_failed_periods_total", device) == 1


ENT = "1.3.6.1.2.1.47.1.1.1.1."
SENSOR = "1.3.6.1.2.1.99.1.1.1."


async def test_optical_power_from_entity_sensors_mapped_to_the_port() -> None:
    tables = {
        "": {"1.3.6.1.2.1.1.3.0": 100},
        IFX + "1": {"1": b"fiber-1", "2": b"eth-1"},
        IFX + "15": {"1": 1000, "2": 1000},
        IFX + "6": {"1": 1, "2": 1},
        IFX + "10": {"1": 1, "2": 1},
        # chassis 1 contains SFP 10 (mapped to ifIndex 1), which contains sensors 11 (rx), 12 (tx), 13 (temp)
        ENT + "7": {
            "1": b"chassis",
            "10": b"SFP fiber-1",
            "11": b"fiber-1 Rx Power",
            "12": b"fiber-1 Tx Power",
            "13": b"fiber-1 Temperature",
        },
        ENT + "4": {"1": 0, "10": 1, "11": 10, "12": 10, "13": 10},
        SENSOR + "1": {"11": 14, "12": 14, "13": 8},
        SENSOR + "2": {"11": 9, "12": 9, "13": 9},
        SENSOR + "3": {"11": 1, "12": 1, "13": 1},
        SENSOR + "4": {"11": -75, "12": -52, "13": 413},
        SENSOR + "5": {"11": 1, "12": 1, "13": 1},
        "1.3.6.1.2.1.47.1.3.2.1.2": {"10.0": "1.3.6.1.2.1.2.2.1.1.1"},
    }
    clock, metrics = FakeClock(), Metrics()
    poller = make_poller(
        FakeSnmpClient({"optical-tx-01": tables}), clock, metrics, "optical_transceiver", "optical-tx-01"
    )
    samples = await poller.poll_once()
    rx = [s for s in samples if s.metric == "optical_rx_power_dbm"]
    assert [(s.value, s.labels["interface"], s.labels["sensor"]) for s in rx] == [
        (pytest.approx(-7.5), "fiber-1", "fiber-1 Rx Power")
    ]
    assert values(samples, "optical_tx_power_dbm", "sensor") == {"fiber-1 Tx Power": pytest.approx(-5.2)}
    assert values(samples, "module_temperature_celsius", "sensor") == {
        "fiber-1 Temperature": pytest.approx(41.3)
    }


async def test_e1_line_status_bits_become_one_sample_each() -> None:
    tables = {
        "": {"1.3.6.1.2.1.1.3.0": 100},
        IFX + "1": {"1": b"E1-1", "2": b"eth-1"},
        "1.3.6.1.2.1.10.18.6.1.10": {"1": 64 + 8},  # LOS and AIS
        "1.3.6.1.2.1.10.18.6.1.8": {"1": b"CIR-0002"},
    }
    clock, metrics = FakeClock(), Metrics()
    poller = make_poller(
        FakeSnmpClient({"proto-conv-01": tables}), clock, metrics, "protocol_converter", "proto-conv-01"
    )
    samples = await poller.poll_once()
    e1 = {s.metric: s.value for s in samples if s.metric.startswith("e1_")}
    assert e1 == {
        "e1_loss_of_signal": 1.0,
        "e1_ais": 1.0,
        "e1_loss_of_frame": 0.0,
        "e1_remote_alarm": 0.0,
        "e1_loopback": 0.0,
    }
    los = next(s for s in samples if s.metric == "e1_loss_of_signal")
    assert (los.labels["interface"], los.labels["e1_circuit_id"]) == ("E1-1", "CIR-0002")


async def test_a_rate_is_stamped_with_the_time_its_counters_were_read() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12)}, clock=clock, walk_seconds=2.0)
    poller = make_poller(client, clock, metrics)
    start = clock.now()
    first = await poller.poll_once()
    tables = len(PROFILES["cpe_router"].spec.tables)
    assert next(s.at for s in first if s.metric == "device_up") == start + 2.0 * tables
    assert next(s.at for s in first if s.metric == "interface_link_down") == start + 1.0  # mid-walk
    # The next poll starts 10 s after the first; the interface walk (the first) again reads mid-walk,
    # so the rate divides by 10 s, not by the time between the ends of the two polls.
    clock.advance(10 - 2.0 * tables)
    client.tables["cpe-router-01"] = router(10**12 + 11_250_000, 10**12, uptime=2000)
    client.walk_seconds = 5.0  # a slower agent this time: its walk ends later, the reading is no later
    second = await poller.poll_once()
    rate = next(s for s in second if s.metric == "if_hc_in_octets_per_second" and s.labels["if_index"] == "2")
    assert rate.at == start + 10 + 2.5
    assert rate.value == pytest.approx(11_250_000 / 11.5)


def basic_agent(octets: int, packets: int, errors: int) -> dict[str, dict[str, int | bytes | str | None]]:
    """An ifTable-only agent (no ifXTable): ifSpeed 10 Mbit/s, 32-bit counters."""
    return {
        "": {"1.3.6.1.2.1.1.3.0": 1000, "1.3.6.1.2.1.1.2.0": "1.3.6.1.4.1.311.1.1.3.1.1"},
        IF + "2": {"1": b"eth0"},
        IF + "5": {"1": 10_000_000},
        IF + "7": {"1": 1},
        IF + "8": {"1": 1},
        IF + "10": {"1": octets % 2**32},
        IF + "16": {"1": 1_000},
        IF + "11": {"1": packets % 2**32},
        IF + "17": {"1": 10},
        IF + "13": {"1": 0},
        IF + "14": {"1": errors},
        IF + "19": {"1": 0},
        IF + "20": {"1": 0},
    }


async def test_a_basic_agent_gives_utilisation_and_loss_from_if_speed_and_32_bit_counters() -> None:
    clock, metrics = FakeClock(), Metrics()
    start = 2**32 - 5_000_000  # the octet counter wraps between the two polls
    client = FakeSnmpClient({"cpe-router-01": basic_agent(start, 0, 0)})
    poller = make_poller(client, clock, metrics)
    await poller.poll_once()
    clock.advance(10)
    # 90% of 10 Mbit/s for 10 s; 6,700 packets delivered and 3,300 errored (33%)
    client.tables["cpe-router-01"] = basic_agent(start + 11_250_000, 6_700, 3_300)
    samples = await poller.poll_once()
    assert values(samples, "interface_utilisation_percent") == {"eth0": pytest.approx(90.0)}
    assert values(samples, "interface_error_ratio_percent") == {"eth0": pytest.approx(33.0)}


async def test_if_speed_below_its_maximum_is_the_speed_of_a_t1() -> None:
    clock, metrics = FakeClock(), Metrics()

    def t1(octets: int) -> dict[str, dict[str, int | bytes | str | None]]:
        return {
            "": {"1.3.6.1.2.1.1.3.0": 1000},
            IFX + "1": {"5": b"T1 1/0/0"},
            IF + "5": {"5": 1_544_000},
            IFX + "15": {"5": 1},  # ifHighSpeed rounds down to 1 Mbit/s
            IFX + "6": {"5": octets},
            IFX + "10": {"5": 0},
        }

    client = FakeSnmpClient({"cpe-router-01": t1(0)})
    poller = make_poller(client, clock, metrics)
    await poller.poll_once()
    for load in (0.65, 0.84):
        clock.advance(10)
        before = client.tables["cpe-router-01"][IFX + "6"]["5"]
        assert isinstance(before, int)
        client.tables["cpe-router-01"] = t1(before + int(1_544_000 / 8 * load * 10))
        util = values(await poller.poll_once(), "interface_utilisation_percent")
        assert util == {"T1 1/0/0": pytest.approx(load * 100, abs=0.01)}


async def test_watts_sensors_named_in_their_description_become_dbm_on_their_port() -> None:
    # Arista and Extreme: entPhysicalName empty, type watts(6), scale micro(7), precision 1;
    # no entAliasMappingTable: the port is named in entPhysicalDescr.
    tables = {
        "": {"1.3.6.1.2.1.1.3.0": 100},
        IFX + "1": {"1": b"Ethernet1", "2": b"Ethernet2", "10": b"Ethernet10"},
        IFX + "15": {"1": 10_000, "2": 10_000, "10": 10_000},
        ENT + "2": {
            "100": b"Arista DCS-7050",
            "1011": b"DOM RX Power Sensor for Ethernet1",
            "1012": b"DOM TX Power Sensor for Ethernet1",
            "1021": b"DOM RX Power Sensor for Ethernet10",
            "1031": b"DOM Temperature Sensor for Ethernet2",
            "1101": b"Cpu temp sensor",
        },
        ENT + "7": {"100": b"", "1011": b"", "1012": b"", "1021": b"", "1031": b"", "1101": b""},
        SENSOR + "1": {"1011": 6, "1012": 6, "1021": 6, "1031": 8, "1101": 8},
        SENSOR + "2": {"1011": 7, "1012": 7, "1021": 7, "1031": 9, "1101": 9},
        SENSOR + "3": {"1011": 1, "1012": 1, "1021": 1, "1031": 1, "1101": 0},
        SENSOR + "4": {"1011": 4467, "1012": 5012, "1021": 0, "1031": 352, "1101": 48},
        SENSOR + "5": {"1011": 1, "1012": 1, "1021": 1, "1031": 1, "1101": 1},
    }
    clock, metrics = FakeClock(), Metrics()
    poller = make_poller(
        FakeSnmpClient({"optical-tx-01": tables}), clock, metrics, "optical_transceiver", "optical-tx-01"
    )
    samples = await poller.poll_once()
    # 446.7 µW is -3.50 dBm, 501.2 µW -3.00 dBm; Ethernet10's receiver sees no light: the floor
    assert values(samples, "optical_rx_power_dbm") == {
        "Ethernet1": pytest.approx(-3.50, abs=0.01),
        "Ethernet10": LOSS_OF_LIGHT_DBM,
    }
    assert values(samples, "optical_tx_power_dbm") == {"Ethernet1": pytest.approx(-3.00, abs=0.01)}
    rx = next(s for s in samples if s.metric == "optical_rx_power_dbm")
    assert (rx.labels["if_index"], rx.labels["sensor"]) == ("1", "DOM RX Power Sensor for Ethernet1")
    assert values(samples, "module_temperature_celsius") == {"Ethernet2": pytest.approx(35.2)}
    assert values(samples, "chassis_temperature_celsius", "sensor") == {"Cpu temp sensor": 48.0}


CISCO_SENSOR = "1.3.6.1.4.1.9.9.91.1.1.1.1."


async def test_cisco_sensor_table_and_standard_sensors_of_type_other() -> None:
    # An ISR4321 fills CISCO-ENTITY-SENSOR-MIB (dBm, 14); an IR1101 only the standard table, as other(1).
    tables = {
        "": {"1.3.6.1.2.1.1.3.0": 100},
        IFX + "1": {"1": b"Gi0/0/0", "2": b"Gi0/0/1"},
        IFX + "15": {"1": 1000, "2": 1000},
        ENT + "7": {
            "1": b"Chassis",
            "20": b"subslot 0/0 transceiver 0",
            "21": b"subslot 0/0 transceiver 0 Rx Power Sensor",
            "22": b"subslot 0/0 transceiver 0 Tx Power Sensor",
            "30": b"subslot 0/1 transceiver 1",
            "31": b"Gi0/0/1 Receive Power Sensor",
            "32": b"Gi0/0/1 Transmit Power Sensor",
        },
        ENT + "4": {"1": 0, "20": 1, "21": 20, "22": 20, "30": 1, "31": 30, "32": 30},
        "1.3.6.1.2.1.47.1.3.2.1.2": {"20.0": "1.3.6.1.2.1.2.2.1.1.1"},
        CISCO_SENSOR + "1": {"21": 14, "22": 14},
        CISCO_SENSOR + "2": {"21": 9, "22": 9},
        CISCO_SENSOR + "3": {"21": 1, "22": 1},
        CISCO_SENSOR + "4": {"21": -91, "22": -56},
        CISCO_SENSOR + "5": {"21": 1, "22": 1},
        # the standard table repeats sensors 21 and 22 (read once) and adds 31 and 32 as other(1)
        SENSOR + "1": {"21": 1, "22": 1, "31": 1, "32": 1},
        SENSOR + "2": {"21": 9, "22": 9, "31": 9, "32": 9},
        SENSOR + "3": {"21": 1, "22": 1, "31": 1, "32": 1},
        SENSOR + "4": {"21": -91, "22": -56, "31": -77, "32": -68},
        SENSOR + "5": {"21": 1, "22": 1, "31": 1, "32": 1},
    }
    clock, metrics = FakeClock(), Metrics()
    poller = make_poller(FakeSnmpClient({"cpe-router-01": tables}), clock, metrics)
    samples = await poller.poll_once()
    assert values(samples, "optical_rx_power_dbm") == {
        "Gi0/0/0": pytest.approx(-9.1),
        "Gi0/0/1": pytest.approx(-7.7),
    }
    assert values(samples, "optical_tx_power_dbm") == {
        "Gi0/0/0": pytest.approx(-5.6),
        "Gi0/0/1": pytest.approx(-6.8),
    }
    assert len([s for s in samples if s.metric == "entity_sensor_value"]) == 4


HUAWEI_OPTICAL = "1.3.6.1.4.1.2011.5.25.31.1.1.3.1."
MRV_PORT = "1.3.6.1.4.1.629.200.8.1.1."


@pytest.mark.parametrize(
    ("sys_object_id", "expected_rx", "expected_tx"),
    [
        ("1.3.6.1.4.1.2011.2.224.67", {"GigabitEthernet0/0/1": -12.34}, {"GigabitEthernet0/0/1": -4.5}),
        ("1.3.6.1.4.1.629.22.1.1", {"1.1.2": -20.5}, {"1.1.2": -5.25}),
        ("1.3.6.1.4.1.9.1.2661", {}, {}),  # neither vendor: their tables are not even walked
    ],
)
async def test_vendor_optical_tables_apply_by_sys_object_id(
    sys_object_id: str, expected_rx: dict[str, float], expected_tx: dict[str, float]
) -> None:
    tables = {
        "": {"1.3.6.1.2.1.1.3.0": 100, "1.3.6.1.2.1.1.2.0": sys_object_id},
        IFX + "1": {"5": b"GigabitEthernet0/0/1"},
        IFX + "15": {"5": 1000},
        # Huawei: rows by entPhysicalIndex; module 67109000 sits in port entity 67108999, aliased to ifIndex 5
        ENT + "7": {"67108999": b"GigabitEthernet0/0/1", "67109000": b"SFP 1000BASE-LX"},
        ENT + "4": {"67108999": 1, "67109000": 67108999},
        "1.3.6.1.2.1.47.1.3.2.1.2": {"67108999.0": "1.3.6.1.2.1.2.2.1.1.5"},
        HUAWEI_OPTICAL + "8": {"67109000": -1234, "67109001": -1},
        HUAWEI_OPTICAL + "9": {"67109000": -450, "67109001": -1},
        # MRV: rows by chassis.slot.port, thousandths of a dBm
        MRV_PORT + "31": {"1.1.2": -5250, "1.1.3": -2147483648},
        MRV_PORT + "32": {"1.1.2": -20500, "1.1.3": -2147483648},
    }
    profiles = list(PROFILES.values())
    device = DeviceConfig.model_validate(
        {"name": "box", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}}
    )
    assert device.snmp is not None
    client = FakeSnmpClient({"box": tables})
    poller = DevicePoller(
        device,
        credentials=device.snmp,
        profile=PROFILES["cpe_router"],
        polling=PollingConfig(interval="10s"),
        client=client,
        clock=FakeClock(),
        metrics=Metrics(),
        extensions=profiles,
    )
    samples = await poller.poll_once()
    label = "mrv_port" if "629" in sys_object_id else "interface"
    assert values(samples, "optical_rx_power_dbm", label) == pytest.approx(expected_rx)
    assert values(samples, "optical_tx_power_dbm", label) == pytest.approx(expected_tx)
    if expected_rx and label == "interface":
        rx = next(s for s in samples if s.metric == "optical_rx_power_dbm")
        assert (rx.labels["if_index"], rx.labels["module"]) == ("5", "SFP 1000BASE-LX")
