"""The short ``make chaos-scaleout``: one collector SIGKILLed while traps go to two receivers.

It asserts what distributed mode guarantees today (at-least-once events, receivers in pairs):
no fault loses its work order across a collector's SIGKILL, and a fault whose every trap
reaches two receivers is ordered once.  The full run (tests/chaos/scaleout.py) measures the
rest against the issue's targets and reports misses instead of asserting them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bench import snmpd_fleet

from tests.chaos.scaleout import QUICK, Record, deviation, failovers, locations, peers, run, table, trap_of

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_a_collector_sigkilled_loses_no_work_order_and_two_receivers_make_one(
    tmp_path: Path, kafka_bootstrap: str, chaos_report: Callable[..., None]
) -> None:
    reason = snmpd_fleet.namespaces_allowed()
    if reason is not None:
        pytest.skip(reason)
    with peers(QUICK, tmp_path, kafka_bootstrap) as (servers, _, fleet):
        summary = await run(QUICK, tmp_path, servers, fleet, say=lambda _: None)
    print(table(summary))
    kill: dict[str, Any] = summary["phases"]["kill"]
    chaos_report(
        "scale-out: collector SIGKILL",
        expected=kill["work_orders_expected"],
        delivered=kill["work_orders_expected"] - kill["work_orders_lost"],
        duplicates=kill["faults_ordered_twice"],
        note=f"traps lost {kill['traps_lost']} of {kill['traps_sent']}, "
        f"devices back {kill['failover_p99_s']}s after the SIGKILL",
    )
    assert kill["kill_runs"] == 1
    assert [f["role"] for f in summary["faults"]["kill"]] == ["collector"]
    assert summary["faults"]["kill"][0]["devices"], "the killed collector polled devices"
    assert kill["traps_sent"] == QUICK.trap_rate * QUICK.seconds
    assert kill["work_orders_expected"] == QUICK.faults_per_location
    assert kill["work_orders_lost"] == 0
    assert kill["faults_ordered_twice"] == 0, "each trap reached two receivers, and one fault is one order"
    assert kill["conflicting_duplicates"] == 0
    assert kill["failover_never"] == 0, "every device of the killed collector is polled again"


def test_the_trap_schedule_brings_every_fault_and_gives_each_trap_its_own_uptime() -> None:
    where = locations(QUICK)
    traps = [trap_of(i, QUICK, where) for i in range(round(QUICK.trap_rate * QUICK.seconds))]
    assert len({uptime for *_, uptime in traps}) == len(traps)
    assert len({(agent, if_index) for _, agent, if_index, _ in traps}) == QUICK.faults_per_location
    first_half = traps[: len(traps) // 2]
    assert len({(agent, if_index) for _, agent, if_index, _ in first_half}) < QUICK.faults_per_location, (
        "faults keep appearing while the traffic runs"
    )


def test_work_share_deviation_is_the_busiest_member_against_an_even_share() -> None:
    assert deviation({"a": 100, "b": 100, "c": 100}) == 0
    assert deviation({"a": 150, "b": 75, "c": 75}) == pytest.approx(0.5)
    assert deviation({"a": 5}) == 0


def test_failover_runs_from_the_fault_to_the_first_output_of_each_partition_the_victim_held() -> None:
    record = Record(offsets=[(100.0, 1, 5), (104.0, 1, 9), (107.0, 2, 3)])
    record.device_seen["north-001"] = [99.0, 112.0]  # on the topic
    record.samples_by_device["north-001"] = [98.5, 104.0]  # polled
    kills = [
        {"signal": "SIGKILL", "role": "correlator", "at": 101.0, "events": [1, 2, 3]},
        {"signal": "SIGKILL", "role": "collector", "at": 100.0, "devices": ["north-001"]},
        {"signal": "SIGTERM", "role": "correlator", "at": 103.5, "events": [1]},
    ]
    found = failovers(SimpleNamespace(kills=kills, record=record))  # type: ignore[arg-type]
    assert found["failover_never"] == 1, "partition 3 never moved on"
    assert (found["failover_correlator_p99_s"], found["failover_collector_p99_s"]) == (6.0, 12.0)
    assert found["failover_p99_s"] == 12.0
    assert found["failover_sigterm_p99_s"] == 0.5
    assert kills[0]["failover_max_s"] == 6.0
    assert kills[1]["slowest"] == {"device": "north-001", "polled_s": 4.0, "published_s": 12.0}
