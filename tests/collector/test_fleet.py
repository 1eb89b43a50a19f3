"""The running pollers: a device handed over while alarmd shuts down is not started."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from alarmd.collector.fleet import PollerFleet
from alarmd.config import DeviceConfig


class _Poller:
    """Polls nothing: runs until told to stop, and says it ran."""

    def __init__(self, runs: list[str], name: str) -> None:
        self.runs, self.name = runs, name

    async def run(self, emit: Any, stop: asyncio.Event, cadence: Any = None) -> None:
        self.runs.append(self.name)
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
