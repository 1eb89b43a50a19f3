"""Interface polling: IF-MIB counters → per-interface utilisation samples, one device at a time."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from alarmd.clock import Clock
from alarmd.collector.snmp import SnmpClient, SnmpError, SnmpValue, Target
from alarmd.config import DeviceConfig, PollingConfig
from alarmd.metrics import Metrics
from alarmd.model import Sample

log = structlog.get_logger("alarmd.collector")

IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"
IF_HIGH_SPEED = "1.3.6.1.2.1.31.1.1.1.15"
IF_COLUMNS = (IF_NAME, IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS, IF_HIGH_SPEED)

#: A rate above line speed by more than this factor is a counter discontinuity, not traffic.
LINE_RATE_SLACK = 1.1


def counter_delta(previous: int, current: int, bits: int = 64) -> int:
    """Increase of an SNMP counter between two readings, allowing for one wrap at ``2**bits``."""
    if current >= previous:
        return current - previous
    return current + (1 << bits) - previous


@dataclass(slots=True)
class _Reading:
    value: int
    at: float


class CounterRates:
    """Per-series counter → rate (per second); the first reading of a series gives no rate."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], _Reading] = {}

    def rate(
        self, key: tuple[str, ...], value: int, at: float, bits: int = 64, max_rate: float | None = None
    ) -> float | None:
        """Rate since the previous reading, or ``None`` for a first or discontinuous reading."""
        previous = self._last.get(key)
        self._last[key] = _Reading(value, at)
        if previous is None or at <= previous.at:
            return None
        rate = counter_delta(previous.value, value, bits) / (at - previous.at)
        if max_rate is not None and rate > max_rate * LINE_RATE_SLACK:
            return None
        return rate

    def forget(self, keep: Callable[[tuple[str, ...]], bool]) -> None:
        """Drop series for which ``keep`` is false (interfaces that disappeared)."""
        self._last = {k: v for k, v in self._last.items() if keep(k)}


def utilisation_percent(in_bps: float | None, out_bps: float | None, high_speed_mbps: int) -> float | None:
    """Bandwidth occupancy: the busier direction as a percentage of ``ifHighSpeed``."""
    if high_speed_mbps <= 0:
        return None
    rates = [r for r in (in_bps, out_bps) if r is not None]
    if not rates:
        return None
    return max(rates) / (high_speed_mbps * 1_000_000) * 100


def _text(value: SnmpValue, fallback: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace") or fallback
    if isinstance(value, str) and value:
        return value
    return fallback


class DevicePoller:
    """Polls one device on its own schedule; an unreachable device is data, never an exception."""

    def __init__(
        self, device: DeviceConfig, polling: PollingConfig, client: SnmpClient, clock: Clock, metrics: Metrics
    ) -> None:
        self.device = device
        self.interval = device.interval or polling.interval
        self.max_repetitions = polling.max_repetitions
        self.target = Target(
            name=device.name,
            address=device.address,
            port=device.port,
            community=device.snmp.community,
            timeout=device.timeout or polling.timeout,
            retries=device.retries if device.retries is not None else polling.retries,
        )
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.rates = CounterRates()
        self.log = log.bind(device=device.name, device_kind=device.kind.value)

    def _labels(self) -> dict[str, str]:
        return {"device": self.device.name, "device_kind": self.device.kind.value}

    async def poll_once(self) -> list[Sample]:
        """Poll the device once and return its samples (``device_up`` always among them)."""
        kind = self.device.kind.value
        self.metrics.poll_requests.labels(kind).inc()
        started = time.perf_counter()
        try:
            table = await self.client.walk(self.target, IF_COLUMNS, self.max_repetitions)
        except SnmpError as exc:
            self.metrics.poll_errors.labels(kind, exc.reason).inc()
            self.metrics.device_up.labels(self.device.name, kind).set(0)
            self.log.warning("poll_failed", reason=exc.reason, detail=exc.detail)
            return [Sample("device_up", self._labels(), 0.0, self.clock.now())]
        finally:
            self.metrics.poll_duration.labels(kind).observe(time.perf_counter() - started)
        at = self.clock.now()
        self.metrics.device_up.labels(self.device.name, kind).set(1)
        samples = [Sample("device_up", self._labels(), 1.0, at)]
        samples.extend(self._interfaces(table, at))
        self.log.debug(
            "poll_done",
            interfaces=len(table[IF_HC_IN_OCTETS]),
            samples=len(samples),
            seconds=round(time.perf_counter() - started, 4),
        )
        return samples

    def _interfaces(self, table: dict[str, dict[str, SnmpValue]], at: float) -> list[Sample]:
        out: list[Sample] = []
        names, speeds = table[IF_NAME], table[IF_HIGH_SPEED]
        for index, in_octets in table[IF_HC_IN_OCTETS].items():
            out_octets = table[IF_HC_OUT_OCTETS].get(index)
            speed = speeds.get(index)
            if (
                not isinstance(in_octets, int)
                or not isinstance(out_octets, int)
                or not isinstance(speed, int)
            ):
                continue
            name = _text(names.get(index), f"ifIndex {index}")
            max_bytes = speed * 1_000_000 / 8 if speed > 0 else None
            rate_in = self.rates.rate((index, "in"), in_octets, at, 64, max_bytes)
            rate_out = self.rates.rate((index, "out"), out_octets, at, 64, max_bytes)
            util = utilisation_percent(
                rate_in * 8 if rate_in is not None else None,
                rate_out * 8 if rate_out is not None else None,
                speed,
            )
            if util is None:
                continue
            labels = {**self._labels(), "interface": name, "if_index": index}
            out.append(Sample("interface_utilisation_percent", labels, util, at))
        return out

    async def run(self, emit: Callable[[Sample], None], stop: asyncio.Event) -> None:
        """Poll every interval (with a random start offset) until ``stop`` is set."""
        first_delay = random.uniform(0, min(self.interval, 10.0))  # noqa: S311 - jitter, not crypto
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), first_delay)
        next_at = self.clock.monotonic()
        while not stop.is_set():
            try:
                for sample in await self.poll_once():
                    emit(sample)
            except Exception:  # a defect in one poller must not stop the others
                self.metrics.poll_errors.labels(self.device.kind.value, "internal").inc()
                self.log.exception("poll_crashed")
            next_at += self.interval
            delay = next_at - self.clock.monotonic()
            if delay < 0:  # overran: skip missed slots instead of bursting
                next_at = self.clock.monotonic()
                delay = 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
