from __future__ import annotations

import pytest

from alarmd.collector.poller import (
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_NAME,
    CounterRates,
    DevicePoller,
    counter_delta,
    utilisation_percent,
)
from alarmd.config import DeviceConfig, PollingConfig
from alarmd.metrics import Metrics
from alarmd.testing import FakeClock, FakeSnmpClient

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


def test_utilisation_uses_the_busier_direction_against_if_high_speed() -> None:
    assert utilisation_percent(9_000_000, 3_200_000, 10) == pytest.approx(90.0)
    assert utilisation_percent(None, 5_000_000, 10) == pytest.approx(50.0)
    assert utilisation_percent(None, None, 10) is None
    assert utilisation_percent(1_000, 1_000, 0) is None


def router(in_octets: int, out_octets: int) -> dict[str, dict[str, int | bytes | str | None]]:
    return {
        IF_NAME: {"1": b"GigabitEthernet0/0/0", "2": b"GigabitEthernet0/0/1"},
        IF_HC_IN_OCTETS: {"1": 5_000, "2": in_octets},
        IF_HC_OUT_OCTETS: {"1": 5_000, "2": out_octets},
        IF_HIGH_SPEED: {"1": 1000, "2": 10},
    }


def make_poller(client: FakeSnmpClient, clock: FakeClock, metrics: Metrics) -> DevicePoller:
    device = DeviceConfig.model_validate(
        {"name": "cpe-router-01", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}}
    )
    return DevicePoller(device, PollingConfig(interval="10s"), client, clock, metrics)


async def test_poller_turns_counters_into_utilisation_from_the_second_poll() -> None:
    clock, metrics = FakeClock(), Metrics()
    client = FakeSnmpClient({"cpe-router-01": router(10**12, 10**12)})
    poller = make_poller(client, clock, metrics)

    first = await poller.poll_once()
    assert [(s.metric, s.value) for s in first] == [("device_up", 1.0)]

    clock.advance(10)
    client.tables["cpe-router-01"] = router(10**12 + 11_250_000, 10**12 + 4_000_000)
    second = await poller.poll_once()
    util = {s.labels["interface"]: s.value for s in second if s.metric == "interface_utilisation_percent"}
    assert util["GigabitEthernet0/0/1"] == pytest.approx(90.0)
    assert util["GigabitEthernet0/0/0"] == pytest.approx(0.0)


async def test_unreachable_device_is_data_not_an_exception() -> None:
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
    assert (
        registry.get_sample_value(
            "alarmd_device_up", {"device": "cpe-router-01", "device_kind": "cpe_router"}
        )
        == 0
    )
