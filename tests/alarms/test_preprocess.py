from __future__ import annotations

from alarmd.alarms.preprocess import verdict
from alarmd.model import ProbeOutcome

PATH = ["cpe-router-01", "protocol-conv-01", "optical-tx-01"]  # customer side first


def probes(**loss: float) -> dict[str, ProbeOutcome]:
    return {
        name.replace("_", "-"): ProbeOutcome(
            target=name, address="127.0.0.1", loss_percent=value, rtt_avg_ms=None if value >= 100 else 1.0
        )
        for name, value in loss.items()
    }


def test_the_first_silent_device_from_the_network_side_bounds_the_segment() -> None:
    result = probes(cpe_router_01=100, protocol_conv_01=100, optical_tx_01=0)
    assert verdict(PATH, result, []) == ("operator_network", "between optical-tx-01 and protocol-conv-01")
    assert verdict(PATH, probes(cpe_router_01=0, protocol_conv_01=0, optical_tx_01=100), []) == (
        "operator_network",
        "between the operator's network and optical-tx-01",
    )


def test_a_healthy_path_with_a_silent_customer_lan_is_the_customer_side() -> None:
    result = {**probes(cpe_router_01=0, protocol_conv_01=0, optical_tx_01=20), **probes(cpe_lan=100)}
    assert verdict(PATH, result, ["cpe-lan"]) == ("customer_side", "beyond cpe-router-01 (cpe-lan silent)")
    assert verdict(PATH, probes(cpe_router_01=0, protocol_conv_01=0, optical_tx_01=0), []) == (
        "path_healthy",
        None,
    )


def test_nothing_tested_within_the_budget() -> None:
    assert verdict(PATH, {}, ["cpe-lan"]) == ("not_tested", None)
