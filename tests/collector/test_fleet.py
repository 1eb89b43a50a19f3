"""The running pollers: a device handed over while alarmd shuts down is not started."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from alarmd.collector.fleet import PollerFleet
from alarmd.collector.poller import Cadence
from alarmd.config import DeviceConfig


class _Poller:
    """Polls nothing: runs until told to stop, and says it ran (with its cadence)."""

    def __init__(self, runs: list[str], name: str) -> None:
        self.runs, self.name = runs, name
        self.cadence: Cadence | None = None

    async def run(self, emit: Any, stop: asyncio.Event, cadence: Cadence | None = None) -> None:
        self.runs.append(self.name)
        self.cadence = cadence
        await stop.wait()


def device(name: str) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {"name": name, "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}}
    )


async def test_an_assignment_that_arrives_during_shutdown_starts_no_poller() -> None:
    runs: list[str] = []
    owned: set[str] = set()
    fleet = PollerFleet(
        lambda d: cast(Any, _Poller(runs, d.name)), [device("a"), device("b")], owns=owned.__contains__
    )

    async def nothing(_sample: Any) -> None:
        return None

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:  # a poller left running never ends
        fleet.start(group, nothing)
        fleet.resume("a")
        await asyncio.sleep(0)
        await fleet.stop()
        fleet.resume("b")  # the group's assignment came after the stop began
    assert runs == ["a"], "the task group ended: nothing was left running"


async def test_a_poller_started_without_a_cadence_gets_the_fleets() -> None:
    runs: list[str] = []
    fleet = PollerFleet(lambda d: cast(Any, _Poller(runs, d.name)), [device("a"), device("b")])
    fleet.cadence = lambda name: Cadence(1.0, 2.0) if name == "a" else None

    async def nothing(_sample: Any) -> None:
        return None

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        fleet.start(group, nothing)
        await asyncio.sleep(0)
        assert cast(Any, fleet.pollers["a"]).cadence == Cadence(1.0, 2.0)
        assert cast(Any, fleet.pollers["b"]).cadence is None, "at random within its interval, as ever"
        await fleet.stop()
