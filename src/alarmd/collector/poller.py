"""Interface polling: IF-MIB counters → per-interface utilisation samples, one device at a time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat

import structlog

from alarmd.clock import Clock
from alarmd.collector.entity import EntityTree
from alarmd.collector.profile import SYS_OBJECT_ID, ColumnSpec, Profile, TableSpec
from alarmd.collector.snmp import SnmpClient, SnmpError, SnmpValue, Target
from alarmd.config import DeviceConfig, PollingConfig, SnmpV1, SnmpV2c, SnmpV3
from alarmd.metrics import Metrics
from alarmd.model import Sample

log = structlog.get_logger("alarmd.collector")

#: RFC 3433 EntitySensorDataScale → power of ten.
SENSOR_SCALE = {
    1: -24,
    2: -21,
    3: -18,
    4: -15,
    5: -12,
    6: -9,
    7: -6,
    8: -3,
    9: 0,
    10: 3,
    11: 6,
    12: 9,
    13: 12,
    14: 18,
    15: 15,
    16: 21,
    17: 24,
}
#: RFC 3433 EntitySensorDataType → name.
SENSOR_TYPE = {
    1: "other",
    2: "unknown",
    3: "voltsAC",
    4: "voltsDC",
    5: "amperes",
    6: "watts",
    7: "hertz",
    8: "celsius",
    9: "percentRH",
    10: "rpm",
    11: "cmm",
    12: "truthvalue",
    13: "specialEnum",
    14: "dBm",
}
IF_OPER_DOWN = (2, 7)  # down, lowerLayerDown
#: Gauges are mostly small enumerations (ifOperStatus, ifAdminStatus): their samples share these floats.
_SMALL_FLOATS = tuple(float(i) for i in range(256))
#: A rate above line speed by more than this factor is a counter discontinuity, not traffic.
LINE_RATE_SLACK = 1.1


def counter_delta(previous: int, current: int, bits: int = 64) -> int:
    """Increase of an SNMP counter between two readings, allowing for one wrap at ``2**bits``."""
    if current >= previous:
        return current - previous
    return current + (1 << bits) - previous


#: The largest reading a counter can hold (Counter64); the arrays below store readings as unsigned 64-bit.
MAX_COUNTER = (1 << 64) - 1
_NO_READING = math.nan  # the time in a cell that holds no reading


class CounterRates:
    """Per-series counter → rate (per second); the first reading of a series gives no rate.

    A series is keyed ``(row, column)``, e.g. ``(if_index, "if_hc_in_octets")``.  Readings are
    kept in arrays rather than an object per series: each row key gets a row number, and each
    column two arrays indexed by it, the raw counter (unsigned 64-bit) and the time it was read.
    A series costs 16 bytes plus its row's share of one dict entry; a cell without a reading
    holds the time NaN.  A reading outside ``0 .. 2**64 - 1`` is no counter value: it gives no
    rate, and the series starts over with the next reading.
    """

    __slots__ = ("_columns", "_rows")

    def __init__(self) -> None:
        self._rows: dict[Hashable, int] = {}
        self._columns: dict[Hashable, tuple[array[int], array[float]]] = {}

    def __len__(self) -> int:
        """The number of series holding a reading."""
        return sum(1 for _, times in self._columns.values() for at in times if not math.isnan(at))

    def rate(
        self,
        key: tuple[Hashable, Hashable],
        value: int,
        at: float,
        bits: int = 64,
        max_rate: float | None = None,
    ) -> float | None:
        """Rate since the previous reading, or ``None`` for a first or discontinuous reading."""
        row, column = key
        rows = self._rows
        n = rows.get(row)
        if n is None:
            n = rows[row] = len(rows)
        cells = self._columns.get(column)
        if cells is None:
            cells = self._columns[column] = (array("Q"), array("d"))
        values, times = cells
        if n >= len(times):
            missing = n + 1 - len(times)
            values.extend(repeat(0, missing))
            times.extend(repeat(_NO_READING, missing))
        previous, then = values[n], times[n]
        if not 0 <= value <= MAX_COUNTER:
            times[n] = _NO_READING
            return None
        values[n] = value
        times[n] = at
        if not at > then:  # a first reading (NaN), or the clock did not move on
            return None
        delta = counter_delta(previous, value, bits)
        if not delta:
            return 0.0  # an idle counter (errors, discards): one float shared by all of them
        rate = delta / (at - then)
        if max_rate is not None and rate > max_rate * LINE_RATE_SLACK:
            return None
        return rate

    def forget(self, keep: Callable[[tuple[Hashable, Hashable]], bool] = lambda _: False) -> None:
        """Drop series for which ``keep`` is false (all of them by default: a discontinuity)."""
        kept_rows: dict[Hashable, int] = {}
        kept: dict[Hashable, list[tuple[int, int, float]]] = {column: [] for column in self._columns}
        for row, n in self._rows.items():
            cells = []
            for column, (values, times) in self._columns.items():
                if n < len(times) and not math.isnan(times[n]) and keep((row, column)):
                    cells.append((column, values[n], times[n]))
            if cells:
                m = kept_rows[row] = len(kept_rows)
                for column, value, at in cells:
                    kept[column].append((m, value, at))
        columns: dict[Hashable, tuple[array[int], array[float]]] = {}
        for column, cells_of_column in kept.items():
            if not cells_of_column:
                continue
            size = cells_of_column[-1][0] + 1
            values, times = array("Q", repeat(0, size)), array("d", repeat(_NO_READING, size))
            for m, value, at in cells_of_column:
                values[m], times[m] = value, at
            columns[column] = (values, times)
        self._rows, self._columns = kept_rows, columns


def utilisation_percent(in_bps: float | None, out_bps: float | None, speed_bps: float) -> float | None:
    """Bandwidth occupancy: the busier direction as a percentage of the line's speed in bit/s."""
    if speed_bps <= 0:
        return None
    rates = [r for r in (in_bps, out_bps) if r is not None]
    if not rates:
        return None
    busiest = max(rates)
    return busiest / speed_bps * 100 if busiest else 0.0


#: ifSpeed's largest value: the line is faster than a Gauge32 can say, ifHighSpeed tells.
IF_SPEED_MAX = 4_294_967_295


def line_speed_bps(if_speed: SnmpValue, if_high_speed: SnmpValue) -> float | None:
    """A line's speed in bit/s: ifSpeed whenever it is below its maximum, else ifHighSpeed (Mbit/s).

    ifHighSpeed rounds to whole Mbit/s (an E1 or a T1 reads 2 or 1), so ifSpeed is the exact
    figure wherever it can hold the speed; basic agents have only ifSpeed.
    """
    if isinstance(if_speed, int) and 0 < if_speed < IF_SPEED_MAX:
        return float(if_speed)
    if isinstance(if_high_speed, int) and if_high_speed > 0:
        return if_high_speed * 1e6
    return None


#: The optical power reported for a receiver that sees no light (0 W is -inf dBm): far below any
#: receiver's sensitivity, so the low-power alarm fires, and a finite number a sample can carry.
LOSS_OF_LIGHT_DBM = -40.0


def sensor_value(raw: int, scale: int, precision: int) -> float:
    """An ENTITY-SENSOR-MIB reading in its unit: raw * 10^scale / 10^precision (RFC 3433)."""
    return raw * 10.0 ** SENSOR_SCALE.get(scale, 0) / 10.0**precision


def watts_to_dbm(watts: float) -> float | None:
    """Optical power in watts as dBm; no light (0 W) is :data:`LOSS_OF_LIGHT_DBM`, negative power None."""
    if watts < 0:
        return None
    if watts == 0:
        return LOSS_OF_LIGHT_DBM
    return max(10 * math.log10(watts * 1000), LOSS_OF_LIGHT_DBM)


def error_ratio_percent(errors: float | None, discards: float | None, packets: float | None) -> float | None:
    """Share of packets lost to errors and discards in one direction, in percent."""
    if errors is None or discards is None or packets is None:
        return None
    total, lost = packets + errors + discards, errors + discards
    return lost / total * 100 if total > 0 and lost else 0.0


def _text(value: SnmpValue, fallback: str) -> str:
    """A label's text; Windows agents end ifDescr with a NUL byte, which is no part of the name."""
    if isinstance(value, bytes):
        return value.rstrip(b"\x00").decode("utf-8", errors="replace") or fallback
    if isinstance(value, str) and value:
        return value
    return fallback


Rows = dict[str, dict[str, SnmpValue]]


def _scaled(column: ColumnSpec, value: int) -> float | None:
    """A gauge's value in its unit (shared floats for the small enumerations of unscaled columns)."""
    if column.to_dbm:
        return watts_to_dbm(value * column.scale)
    if column.scale != 1.0:
        return value * column.scale
    return _SMALL_FLOATS[value] if 0 <= value < len(_SMALL_FLOATS) else float(value)


def _either(values: Mapping[str, float | None], wide: str, narrow: str) -> float | None:
    """The 64-bit counter's rate where the agent has that counter, else the 32-bit one's."""
    return values[wide] if wide in values else values.get(narrow)


def _columns(tables: Mapping[str, tuple[Rows, float]]) -> dict[str, dict[str, SnmpValue]]:
    """Every walked column of a poll as ``{column OID: {index: value}}``, whichever table walked it."""
    columns: dict[str, dict[str, SnmpValue]] = {}
    for rows, _ in tables.values():
        for index, row in rows.items():
            for oid, value in row.items():
                columns.setdefault(oid, {})[index] = value
    return columns


@dataclass(slots=True)
class _Row:
    """What the columns of one table row share while they are turned into samples."""

    rates: CounterRates
    index: str
    labels: dict[str, str]
    #: The line's speed in bit/s (interfaces tables), which no octet rate can exceed.
    speed: float | None
    values: dict[str, float | None]


def _rows(table: TableSpec, walked: dict[str, dict[str, SnmpValue]]) -> Rows:
    """Column-major walk results → ``{index: {oid: value}}``.

    Index strings are interned: every poll of every device walks the same few (``"1"``, ``"2"``
    ...), and the ones kept (counter state, interface names, labels) are then one object each.
    """
    rows: Rows = {}
    for oid, values in walked.items():
        for index, value in values.items():
            row = rows.get(index)
            if row is None:
                row = rows[sys.intern(index)] = {}
            row[oid] = value
    return rows


def next_slot(after: float, slot: float, interval: float) -> float:
    """The first wall-clock time at or after ``after`` that is ``slot`` seconds into an interval."""
    return after + (slot - after) % interval


@dataclass(frozen=True)
class Cadence:
    """When a poller polls in distributed mode, where collectors take turns with a device.

    Every collector polls a device on the same wall-clock slot within its interval, so a
    device that changes hands keeps its rhythm: the first poll after ``first_delay``
    seconds, each later one on ``slot`` (at least half an interval after the one before).
    ``polled`` is called once the first poll has completed.
    """

    first_delay: float
    slot: float
    polled: Callable[[], None] | None = None


class DevicePoller:
    """Polls one device by its profile on its own schedule; an unreachable device is data, not an error."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        credentials: SnmpV1 | SnmpV2c | SnmpV3,
        profile: Profile,
        polling: PollingConfig,
        client: SnmpClient,
        clock: Clock,
        metrics: Metrics,
        extensions: Sequence[Profile] = (),
    ) -> None:
        self.device = device
        self.profile = profile
        #: Vendor extension profiles (``sys_object_ids``); those matching the device's sysObjectID apply.
        self.extensions = [p for p in extensions if p.spec.sys_object_ids and p is not profile]
        self.sys_object_id: str | None = None
        #: The entPhysicalIndex of each sensor read so far in this poll.
        self._sensors_read: set[str] = set()
        self.interval = device.interval or polling.interval
        self.max_repetitions = polling.max_repetitions
        self.target = Target(
            name=device.name,
            address=device.address,
            port=device.port,
            credentials=credentials,
            timeout=device.timeout or polling.timeout,
            retries=device.retries if device.retries is not None else polling.retries,
        )
        self.client = client
        self.clock = clock
        self.metrics = metrics
        #: Counter readings per table, by ``(index, column name)``.
        self.rates: dict[str, CounterRates] = {}
        self.uptime: int | None = None
        #: Table → index → the row's counter discontinuity time at the last poll.
        self.discontinuity: dict[str, dict[str, SnmpValue]] = {}
        #: ifIndex → interface name from the last poll, for resolving traps.
        self.interface_names: dict[str, str] = {}
        self.log = log.bind(device=device.name, device_kind=device.kind.value)
        kind = device.kind.value
        #: Shared by every sample of the device; samples' labels are never changed in place.
        self._device_labels = {"device": device.name, "device_kind": kind}
        self._periods = metrics.poll_periods.labels(device.name, kind)
        self._failed = metrics.poll_failed_periods.labels(device.name, kind)

    def _labels(self) -> dict[str, str]:
        return self._device_labels

    def applied(self) -> list[Profile]:
        """The device's profile, then the vendor extensions that apply to its sysObjectID."""
        oid = self.sys_object_id
        return [self.profile] + [p for p in self.extensions if oid and p.applies_to(oid)]

    def tables(self) -> list[tuple[Profile, TableSpec]]:
        """The tables to walk: the profile's, then those of the vendor extensions for this sysObjectID.

        Where two extensions have a table of the same name, the more specific one (the longer
        matching sysObjectID: a model rather than the vendor) replaces the other.
        """
        found = [(self.profile, t) for t in self.profile.spec.tables]
        best: dict[str, tuple[int, Profile, TableSpec]] = {}
        for extension in self.applied()[1:]:
            closeness = extension.applies_to(self.sys_object_id or "")
            for table in extension.spec.tables:
                if table.name not in best or best[table.name][0] < closeness:
                    best[table.name] = (closeness, extension, table)
        return found + [(p, t) for _, p, t in best.values()]

    async def poll_once(self) -> list[Sample]:
        """Poll the device once and return its samples (``device_up`` always among them).

        Each table's samples, and the rates of its counters, are stamped with the time its walk
        returned, when the agent had just read them, not the end of the poll: the tables walked
        after it, however slow, do not stretch its rates' intervals.
        """
        kind = self.device.kind.value
        self.metrics.poll_requests.labels(kind).inc()
        self._periods.inc()
        started = time.perf_counter()
        spec = self.profile.spec
        scalar_specs = list(spec.scalars)
        try:
            scalar_oids = [spec.uptime_oid, SYS_OBJECT_ID] + [c.oid for c in spec.scalars]
            scalars = await self.client.get(self.target, scalar_oids)
            sys_object_id = scalars.get(SYS_OBJECT_ID)
            if isinstance(sys_object_id, str | bytes):
                self.sys_object_id = _text(sys_object_id, "")
            for extension in self.applied()[1:]:
                if extension.spec.scalars:
                    scalar_specs += extension.spec.scalars
                    oids = [c.oid for c in extension.spec.scalars]
                    scalars.update(await self.client.get(self.target, oids))
            tables: dict[str, tuple[Rows, float]] = {}
            for profile, table in self.tables():
                walked = await self.client.walk(self.target, profile.columns(table), self.max_repetitions)
                tables[table.name] = (_rows(table, walked), self.clock.now())
        except SnmpError as exc:
            self.metrics.poll_errors.labels(kind, exc.reason).inc()
            self.metrics.device_up.labels(self.device.name, kind).set(0)
            self._failed.inc()
            self.log.warning("poll_failed", reason=exc.reason, detail=exc.detail)
            return [Sample("device_up", self._labels(), 0.0, self.clock.now())]
        finally:
            self.metrics.poll_duration.labels(kind).observe(time.perf_counter() - started)
        at = self.clock.now()
        self.metrics.device_up.labels(self.device.name, kind).set(1)
        self._check_uptime(scalars.get(spec.uptime_oid))
        samples = [Sample("device_up", self._labels(), 1.0, at)]
        for column in scalar_specs:
            value = scalars.get(column.oid)
            if isinstance(value, int) and column.type in {"gauge", "timeticks"}:
                number = None if value in column.missing else _scaled(column, value)
                if number is not None:
                    samples.append(Sample(column.name, self._labels(), number, at))
        # Interfaces first: the other tables name their ports after them.
        ordered = sorted((t for _, t in self.tables()), key=lambda t: t.kind != "interfaces")
        entities: EntityTree | None = None
        self._sensors_read.clear()
        for table in ordered:
            if entities is None and (table.kind == "entity_sensor" or table.port == "entity"):
                entity_tables = {t.name: tables[t.name] for t in ordered if t.kind != "interfaces"}
                entities = EntityTree.from_columns(_columns(entity_tables), self.interface_names)
            rows, read_at = tables[table.name]
            samples.extend(self._table(table, rows, read_at, entities))
        self.log.debug("poll_done", samples=len(samples), seconds=round(time.perf_counter() - started, 4))
        return samples

    def _check_uptime(self, uptime: SnmpValue) -> None:
        """Forget counter rates when sysUpTime went backwards: the agent restarted."""
        if not isinstance(uptime, int):
            return
        if self.uptime is not None and uptime < self.uptime:
            for rates in self.rates.values():
                rates.forget()
            self.log.info("counter_discontinuity", cause="agent_restart", uptime=uptime)
        self.uptime = uptime

    def _row_labels(self, table: TableSpec, index: str, row: dict[str, SnmpValue]) -> dict[str, str]:
        labels = {**self._labels(), table.index_label: index}
        for spec in table.labels:
            value = row.get(spec.oid)
            if value in (None, b"") and spec.fallback_oid:
                value = row.get(spec.fallback_oid)
            if value in (None, b""):
                continue
            if spec.kind == "if_index":
                port = str(value) if isinstance(value, int) else _text(value, "")
                if port and port != "0":
                    labels["if_index"] = port
                    labels[spec.name] = self.interface_names.get(port, f"ifIndex {port}")
            else:
                labels[spec.name] = sys.intern(_text(value, index))
        return labels

    def _port_labels(self, labels: dict[str, str], port: str | None) -> None:
        """Name a row's port: its ifIndex and the interface's name."""
        if port is not None:
            labels["if_index"] = port
            labels["interface"] = self.interface_names.get(port, f"ifIndex {port}")

    def _table(self, table: TableSpec, rows: Rows, at: float, entities: EntityTree | None) -> list[Sample]:
        if table.kind == "entity_alias":
            return []
        if table.kind == "entity_sensor":
            return self._sensors(table, rows, at, entities or EntityTree())
        out: list[Sample] = []
        oids = {c.name: c.oid for c in table.columns}
        speed_oid, high_speed_oid = oids.get("if_speed", ""), oids.get("if_high_speed", "")
        rates = self.rates.get(table.name)
        if rates is None:
            rates = self.rates[table.name] = CounterRates()
        for index, values in rows.items():
            if table.discontinuity_oid is not None:
                self._check_row_discontinuity(table, index, values.get(table.discontinuity_oid))
            labels = self._row_labels(table, index, values)
            if table.port == "if_index":
                self._port_labels(labels, index)
            elif table.port == "entity" and entities is not None:
                self._port_labels(labels, entities.port_of(index))
            row = _Row(
                rates, index, labels, line_speed_bps(values.get(speed_oid), values.get(high_speed_oid)), {}
            )
            for column in table.columns:
                self._column(column, values.get(column.oid), row, at, out)
            if table.kind == "interfaces":
                out.extend(self._interface(row, at))
                self.interface_names[index] = row.labels.get("interface", f"ifIndex {index}")
        return out

    def _column(self, column: ColumnSpec, value: SnmpValue, row: _Row, at: float, out: list[Sample]) -> None:
        """Append the samples of one column of one row; counters become rates, bits 0/1 per bit."""
        if not isinstance(value, int) or value in column.missing:
            return
        kind = column.type
        if kind in {"gauge", "timeticks"}:
            number = _scaled(column, value)
            if number is None:
                return
            row.values[column.name] = number
            out.append(Sample(column.name, row.labels, number, at))
        elif kind in {"counter32", "counter64"}:
            max_rate = row.speed / 8 if row.speed and column.octets else None  # bit/s → bytes/s
            bits = 32 if kind == "counter32" else 64
            rate = row.rates.rate((row.index, column.name), value, at, bits, max_rate)
            row.values[column.name] = rate
            if rate is not None:
                out.append(Sample(column.rate_name, row.labels, rate, at))
        elif kind == "bits":
            out.extend(
                Sample(name, row.labels, 1.0 if value & bit else 0.0, at) for name, bit in column.bits.items()
            )

    def _check_row_discontinuity(self, table: TableSpec, index: str, value: SnmpValue) -> None:
        seen = self.discontinuity.get(table.name)
        if seen is None:
            seen = self.discontinuity[table.name] = {}
        if index in seen and seen[index] != value:
            rates = self.rates.get(table.name)
            if rates is not None:
                rates.forget(lambda k: k[0] != index)
            self.log.info("counter_discontinuity", cause="discontinuity_time", table=table.name, index=index)
        seen[index] = value

    def _interface(self, row: _Row, at: float) -> list[Sample]:
        """Utilisation, error ratio and link state of one interface.

        The 64-bit counters are used where the agent has them; a basic agent (ifTable only)
        gives its 32-bit octet and unicast packet counters instead, and ifSpeed its speed.
        """
        out: list[Sample] = []
        values, labels = row.values, row.labels
        rate_in, rate_out = (
            _either(values, "if_hc_in_octets", "if_in_octets"),
            _either(values, "if_hc_out_octets", "if_out_octets"),
        )
        if row.speed is not None:
            util = utilisation_percent(
                rate_in * 8 if rate_in is not None else None,
                rate_out * 8 if rate_out is not None else None,
                row.speed,
            )
            if util is not None:
                out.append(Sample("interface_utilisation_percent", labels, util, at))
        ratios = [
            r
            for r in (
                error_ratio_percent(
                    values.get("if_in_errors"),
                    values.get("if_in_discards"),
                    _either(values, "if_hc_in_ucast_pkts", "if_in_ucast_pkts"),
                ),
                error_ratio_percent(
                    values.get("if_out_errors"),
                    values.get("if_out_discards"),
                    _either(values, "if_hc_out_ucast_pkts", "if_out_ucast_pkts"),
                ),
            )
            if r is not None
        ]
        if ratios:
            out.append(Sample("interface_error_ratio_percent", labels, max(ratios), at))
        admin, oper = values.get("if_admin_status"), values.get("if_oper_status")
        if admin is not None and oper is not None:
            down = admin == 1 and int(oper) in IF_OPER_DOWN
            out.append(Sample("interface_link_down", labels, 1.0 if down else 0.0, at))
        return out

    def _sensors(self, table: TableSpec, rows: Rows, at: float, entities: EntityTree) -> list[Sample]:
        """ENTITY-SENSOR-MIB (or CISCO-ENTITY-SENSOR-MIB) readings, in their units, on their ports.

        A sensor read by an earlier sensor table of the same poll is not read again (Cisco fills
        both its own table and the standard one for the same entPhysicalIndex).
        """
        col = {c.name: c.oid for c in table.columns}
        name_label = table.labels[0].name if table.labels else ""
        out: list[Sample] = []
        for index, row in rows.items():
            raw, kind = row.get(col["sensor_value"]), row.get(col["sensor_type"])
            scale, precision = row.get(col["sensor_scale"]), row.get(col["sensor_precision"])
            status = row.get(col.get("sensor_oper_status", ""), 1)
            if (
                not (
                    isinstance(raw, int)
                    and isinstance(kind, int)
                    and isinstance(scale, int)
                    and isinstance(precision, int)
                )
                or status != 1
                or index in self._sensors_read
            ):
                continue  # unavailable or nonoperational sensors give no reading
            self._sensors_read.add(index)
            reading = sensor_value(raw, scale, precision)
            type_name = SENSOR_TYPE.get(kind, "other")
            labels = {**self._row_labels(table, index, row), "sensor_type": type_name}
            port = entities.port_of(index)
            self._port_labels(labels, port)
            out.append(Sample("entity_sensor_value", labels, reading, at))
            sensor_name = labels.get(name_label, "") or entities.names.get(index, "")
            for metric, wanted in table.sensor_metrics.items():
                if type_name not in wanted.types or not wanted.pattern.search(sensor_name):
                    continue
                if wanted.on_port is not None and wanted.on_port != (port is not None):
                    continue
                shown = watts_to_dbm(reading) if type_name == "watts" and wanted.unit == "dbm" else reading
                if shown is not None:
                    out.append(Sample(metric, labels, shown, at))
        return out

    async def run(
        self,
        emit: Callable[[Sequence[Sample]], Awaitable[None]],
        stop: asyncio.Event,
        cadence: Cadence | None = None,
    ) -> None:
        """Poll every interval until ``stop`` is set, handing each poll's samples to ``emit`` at once.

        Devices start at a random offset within their interval, so thousands of them spread
        their polls instead of bursting together; ``emit`` may wait (a full queue holds the
        next poll back rather than losing samples).  With a ``cadence`` (distributed mode) the
        first poll comes after its ``first_delay`` and every later one on the device's slot.
        """
        jitter = random.uniform(0, self.interval)  # noqa: S311 - jitter, not crypto
        first_delay = jitter if cadence is None else cadence.first_delay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), first_delay)
        next_at = self.clock.monotonic()
        while not stop.is_set():
            started = self.clock.now()
            try:
                samples = await self.poll_once()
                if samples:
                    await emit(samples)
            except Exception:  # a defect in one poller must not stop the others
                self.metrics.poll_errors.labels(self.device.kind.value, "internal").inc()
                self.log.exception("poll_crashed")
            if cadence is None:
                next_at += self.interval
            else:
                if cadence.polled is not None:
                    cadence.polled()
                    cadence = replace(cadence, polled=None)
                next_at += next_slot(started + self.interval / 2, cadence.slot, self.interval) - started
            delay = next_at - self.clock.monotonic()
            if delay < 0:  # overran: skip missed slots instead of bursting
                next_at = self.clock.monotonic()
                delay = 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
