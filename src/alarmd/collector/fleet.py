"""The running pollers, one task per device: started, replaced and retired by name while alarmd runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from alarmd.collector.poller import Cadence, DevicePoller
from alarmd.config import DeviceConfig
from alarmd.model import Sample

log = structlog.get_logger("alarmd.collector")

PollerFactory = Callable[[DeviceConfig], DevicePoller]
Emit = Callable[[Sequence[Sample]], Awaitable[None]]
"""Takes the samples of one device poll, in order."""


class PollerFleet:
    """Every device's poller and its task; a reload touches only the devices it changes.

    An unchanged device keeps its poller, and with it its schedule and counter baselines. A
    retired poller finishes the poll it is in (its samples still count) and stops; a new one
    starts at a random offset within its interval, like every poller at start-up. With ``owns``
    (distributed mode) a device is polled only while this instance owns it: :meth:`resume` and
    :meth:`pause` follow the hand-overs, and a paused poller keeps its counter baselines.
    """

    def __init__(
        self,
        make: PollerFactory,
        devices: Iterable[DeviceConfig],
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self._make = make
        self._owns = owns or (lambda _name: True)
        self.pollers: dict[str, DevicePoller] = {d.name: make(d) for d in devices}
        self._stops: dict[str, asyncio.Event] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._emit: Emit | None = None
        self._stopped = False
        #: When a poller started without a cadence of its own polls (None: at random within its interval).
        self.cadence: Callable[[str], Cadence | None] = lambda _name: None

    def __len__(self) -> int:
        return len(self.pollers)

    def start(self, group: asyncio.TaskGroup, emit: Emit) -> None:
        """Start polling every device in ``group``; pollers added later start there too."""
        self._group, self._emit = group, emit
        for name in self.pollers:
            if self._owns(name):
                self._run(name)

    def resume(self, name: str, cadence: Cadence | None = None) -> None:
        """Start polling a device this instance has come to own; a no-op while it runs already.

        ``cadence`` says when its first and later polls come (by default: a random offset
        within its interval, then every interval).
        """
        if name in self.pollers and name not in self._running:
            self._run(name, cadence)

    def pause(self, name: str) -> None:
        """Stop polling a device another instance now owns; its poller, and baselines, stay."""
        stop = self._stops.pop(name, None)
        if stop is not None:
            stop.set()
        self._running.pop(name, None)

    def _run(self, name: str, cadence: Cadence | None = None) -> None:
        if self._group is None or self._emit is None or self._stopped:
            return  # not running yet (start() runs it), or shutting down (an assignment may come late)
        stop = self._stops[name] = asyncio.Event()
        cadence = cadence or self.cadence(name)
        task = self._running[name] = self._group.create_task(
            self.pollers[name].run(self._emit, stop, cadence)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire(self, name: str) -> asyncio.Task[None] | None:
        stop = self._stops.pop(name, None)
        if stop is not None:
            stop.set()
        self.pollers.pop(name, None)
        return self._running.pop(name, None)

    def apply(
        self,
        devices: Iterable[DeviceConfig],
        *,
        added: Iterable[str],
        changed: Iterable[str],
        removed: Iterable[str],
    ) -> list[asyncio.Task[None]]:
        """Start added devices' pollers, re-create changed ones, retire removed ones.

        Returns the tasks of the retired pollers, which end once their poll in progress has.
        """
        by_name = {d.name: d for d in devices}
        retired = [t for name in (*removed, *changed) if (t := self._retire(name)) is not None]
        for name in (*changed, *added):
            self.pollers[name] = self._make(by_name[name])
            if self._owns(name):
                self._run(name)
        return retired

    async def stop(self) -> None:
        """Stop every poller and wait for the polls in progress to end; none starts after this."""
        self._stopped = True
        for stop in self._stops.values():
            stop.set()
        self._stops.clear()
        await asyncio.gather(*self._tasks)
