"""Reload at scale: a daemon of 10k devices (100k interfaces) reloaded 100 times, 1 % changed each time.

The daemon (:class:`alarmd.app.Daemon`, in this process, on the real event loop and the real
clock) polls ``devices`` CPE routers of ten interfaces each, listed in a CSV export
(``inventory_files``) as the resource system would give it, with one circuit per device.  The
SNMP agents are an in-process stand-in (:class:`BenchAgents`) that answers the six IF-MIB
columns of the polling workload at once: what is measured is the daemon's reload, not SNMP.

After one polling interval of warm-up, every ``spacing`` seconds the export is rewritten with
1 % of the devices moved to other credentials (their pollers must be re-created; the changes
rotate over the same tenth of the inventory, so nine devices in ten are never touched) and
``Daemon.reload`` is called, as SIGHUP does.  For each reload: the wall time and the CPU time of
the call (the loop does nothing else meanwhile: that is the daemon time a reload costs).  Over
the run: every poll of every device that no reload changed, and its gaps: a gap longer than
1.5 intervals is a missed cycle.  RSS (``VmRSS``) is read after the tenth reload and after the
last, each once the sample queue has drained and after a full garbage collection (a backlog
of samples on a busy machine is not memory a reload kept), and after every reload as it is.

Keys in ``latest.json`` (``reload``): ``reload_seconds_p50`` / ``_max``,
``reload_cpu_seconds_max``, ``reload_missed_cycles``, ``reload_rss_mb_after_10`` /
``_after_last``, ``reload_rss_growth_mb``, and whether the targets held (``reload_targets_met``:
at most 2 s per reload, no missed cycle, RSS growth under 5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from alarmd import logging as alarmd_logging
from alarmd.app import Daemon, load_rules
from alarmd.collector.snmp import SnmpValue, Target
from alarmd.config import load
from alarmd.metrics import Metrics
from alarmd.testing import FakeSink
from bench import snmpd_fleet
from bench.host import host_facts, write_result
from bench.memory import proc_status

ROOT: Final = Path(__file__).resolve().parent.parent
INTERFACES_PER_DEVICE: Final = 10
TARGET_SECONDS: Final = 2.0
RSS_GROWTH_LIMIT: Final = 0.05
MISSED_GAP: Final = 1.5  # intervals
ROTATION: Final = 10  # batches the changes rotate over: 10 % of the devices, when 1 % change each time


@dataclass(frozen=True)
class Options:
    """Inventory size, reloads, the share changed per reload, and the polling interval."""

    devices: int = 10_000
    reloads: int = 100
    changed_share: float = 0.01
    interval: float = 120.0
    spacing: float = 5.0


def options_from(
    quick: bool,
    devices: int | None = None,
    reloads: int | None = None,
    interval: float | None = None,
    spacing: float | None = None,
) -> Options:
    """Options from command-line values (quick: 500 devices, 10 reloads, 10 s interval)."""
    if quick:
        return Options(
            devices=devices or 500, reloads=reloads or 10, interval=interval or 10.0, spacing=spacing or 0.5
        )
    return Options(
        devices=devices or 10_000, reloads=reloads or 100, interval=interval or 120.0, spacing=spacing or 5.0
    )


class BenchAgents:
    """Every device answers at once: sysUpTime, and ten interfaces of the six IF-MIB columns."""

    def __init__(self) -> None:
        self.polls: dict[str, list[float]] = defaultdict(list)
        self._started = time.monotonic()

    async def get(self, target: Target, oids: Sequence[str]) -> dict[str, SnmpValue]:
        """SysUpTime in hundredths since the bench started; the poll is recorded."""
        now = time.monotonic()
        self.polls[target.name].append(now)
        uptime = int((now - self._started) * 100) + 1
        return {oid: uptime if oid == snmpd_fleet.SYS_UPTIME else None for oid in oids}

    async def walk(
        self, target: Target, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, SnmpValue]]:
        """Ten rows; the octet counters grow at about 1 Mbit/s."""
        octets = int((time.monotonic() - self._started) * 125_000)
        values: dict[str, SnmpValue | Callable[[int], SnmpValue]] = {
            snmpd_fleet.COLUMNS["ifName"]: lambda i: f"ge-0-0-{i}",
            snmpd_fleet.COLUMNS["ifOperStatus"]: 1,
            snmpd_fleet.COLUMNS["ifHighSpeed"]: 1000,
            snmpd_fleet.COLUMNS["ifHCInOctets"]: octets,
            snmpd_fleet.COLUMNS["ifHCOutOctets"]: octets,
            snmpd_fleet.COLUMNS["ifInErrors"]: 0,
        }
        out: dict[str, dict[str, SnmpValue]] = {}
        for column in columns:
            value = values.get(column)
            out[column] = {
                str(i): value(i) if callable(value) else value for i in range(1, INTERFACES_PER_DEVICE + 1)
            }
        return out

    def close(self) -> None:
        """Nothing to release."""


def write_inventory(directory: Path, devices: int, moved: set[int]) -> None:
    """The CSV export: one row per device and circuit; ``moved`` devices use the other credentials."""
    rows = ["circuit,customer,customer_name,tier,device,kind,address,credentials,profile,interface"]
    for d in range(devices):
        customer = f"CUST-{d // 10:05d}"
        named = f"Bench customer {d // 10},ordinary" if d % 10 == 0 else ","
        creds = "bench-b" if d in moved else "bench-a"
        rows.append(
            f"CIR-{d:05d},{customer},{named},cpe-{d:05d},cpe_router,127.0.0.1,{creds},"
            f"{snmpd_fleet.PROFILE_NAME},ge-0-0-1"
        )
    temp = directory / "export.csv.tmp"
    temp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    temp.replace(directory / "export.csv")


def write_config(directory: Path, options: Options) -> None:
    """``alarmd.yml``, a one-rule rule file, the bench profile and the first export."""
    profile = snmpd_fleet.write_profile(directory)
    (directory / "rules.yml").write_text(
        "groups:\n  - name: bench\n    rules:\n"
        "      - {alert: Down, expr: device_up < 1, labels: {alarm_class: transmission}}\n",
        encoding="utf-8",
    )
    (directory / "alarmd.yml").write_text(
        "# generated by bench/reload.py\n"
        "rule_files: [rules.yml]\n"
        f"profile_files: ['{profile}']\n"
        "inventory_files: [export.csv]\n"
        "state_dir: state\n"
        f"queue_size: {options.devices * (1 + INTERFACES_PER_DEVICE * 6)}\n"
        f"polling: {{interval: {options.interval:g}s, timeout: 2s, retries: 0}}\n"
        "credentials:\n  bench-a: {community: bench-a}\n  bench-b: {community: bench-b}\n"
        "http: {listen: '127.0.0.1:0'}\n"
        "dial_test: {every: 0s}\n",
        encoding="utf-8",
    )
    write_inventory(directory, options.devices, set())


async def settled_rss(daemon: Daemon, patience: float = 60.0) -> tuple[float, int]:
    """RSS in MiB once the sample queue has drained (at most ``patience`` s) and after a full collection.

    A backlog of samples is memory the rule stage has not caught up with, not what reloads
    keep: it is waited out, and what is left of it is reported beside the figure.
    """
    deadline = time.monotonic() + patience
    while daemon.samples.qsize() and time.monotonic() < deadline:  # noqa: ASYNC110 - a queue has no "empty" event
        await asyncio.sleep(0.2)
    gc.collect()
    return proc_status(os.getpid())["VmRSS"] / 1024, daemon.samples.qsize()


async def _drive(options: Options, directory: Path, say: Callable[[str], None]) -> dict[str, Any]:
    alarmd_logging.setup("warning", "json")  # as a daemon logs: not a line per poll
    loaded = load(directory, env={})
    agents = BenchAgents()
    started = time.perf_counter()
    daemon = Daemon(
        loaded, load_rules(loaded), snmp=agents, sink=FakeSink(), metrics=Metrics(), settle_heap=True
    )
    build_seconds = time.perf_counter() - started
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    say(f"reload: {options.devices} devices built in {build_seconds:.1f}s; warming up {options.interval:g}s")
    await asyncio.sleep(options.interval * 1.2)
    window_start = time.monotonic()
    walls: list[float] = []
    cpus: list[float] = []
    touched: set[str] = set()
    rss_after_10, queued_after_10 = 0.0, 0
    step = max(1, round(options.devices * options.changed_share))
    moved: set[int] = set()
    rss_trend: list[float] = []
    for n in range(options.reloads):
        # the changes rotate over the first ROTATION batches: the other devices are never touched
        first = (n % ROTATION * step) % options.devices
        batch = {(first + i) % options.devices for i in range(step)}
        moved ^= batch  # these move to the other credentials (or back)
        touched.update(f"cpe-{d:05d}" for d in batch)
        write_inventory(directory, options.devices, moved)
        wall, cpu = time.perf_counter(), time.process_time()
        if not daemon.reload():
            raise RuntimeError("a bench reload was refused; see the log")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        rss_trend.append(round(proc_status(os.getpid())["VmRSS"] / 1024, 1))
        if n + 1 == min(10, options.reloads):
            rss_after_10, queued_after_10 = await settled_rss(daemon)
        await asyncio.sleep(options.spacing)
    await asyncio.sleep(options.interval * 1.2)  # one more cycle after the last reload
    window_end = time.monotonic()
    rss_last, queued_last = await settled_rss(daemon)
    stop.set()
    await task
    missed, checked, gaps = 0, 0, []
    for name, times in agents.polls.items():
        if name in touched:
            continue
        inside = [t for t in times if window_start - options.interval <= t <= window_end]
        checked += 1
        for a, b in itertools.pairwise(inside):
            gaps.append(b - a)
            if b - a > options.interval * MISSED_GAP:
                missed += 1
        if inside and window_end - inside[-1] > options.interval * MISSED_GAP:
            missed += 1
    return {
        "devices": options.devices,
        "interfaces": options.devices * INTERFACES_PER_DEVICE,
        "reloads": len(walls),
        "changed_per_reload": step,
        "build_seconds": round(build_seconds, 3),
        "reload_seconds": [round(w, 4) for w in walls],
        "reload_cpu_seconds": [round(c, 4) for c in cpus],
        "unchanged_devices_checked": checked,
        "longest_gap_seconds": round(max(gaps), 3) if gaps else None,
        "missed_cycles": missed,
        "rss_mb_after_10": round(rss_after_10, 1),
        "rss_mb_after_last": round(rss_last, 1),
        "samples_queued_at_rss_reads": [queued_after_10, queued_last],
        "rss_mb_after_each_reload": rss_trend,
    }


def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the reloads in a fresh event loop and temp dir; the full result."""
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-reload-") as temp:
        directory = Path(temp)
        write_config(directory, options)
        measured = asyncio.run(_drive(options, directory, say))
    growth = measured["rss_mb_after_last"] - measured["rss_mb_after_10"]
    p50, worst = statistics.median(measured["reload_seconds"]), max(measured["reload_seconds"])
    return {
        "options": asdict(options),
        **measured,
        "reload_seconds_p50": round(p50, 4),
        "reload_seconds_max": round(worst, 4),
        "reload_cpu_seconds_p50": round(statistics.median(measured["reload_cpu_seconds"]), 4),
        "reload_cpu_seconds_max": round(max(measured["reload_cpu_seconds"]), 4),
        "rss_growth_mb": round(growth, 1),
        "targets_met": worst <= TARGET_SECONDS
        and measured["missed_cycles"] == 0
        and growth <= measured["rss_mb_after_10"] * RSS_GROWTH_LIMIT,
        "machine": host_facts(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    return (
        f"reload: {result['devices']} devices ({result['interfaces']} interfaces), "
        f"{result['reloads']} reloads of {result['changed_per_reload']} changed devices: "
        f"p50 {result['reload_seconds_p50']}s, "
        f"max {result['reload_seconds_max']}s (cpu {result['reload_cpu_seconds_max']}s); "
        f"missed cycles of unchanged devices {result['missed_cycles']} "
        f"(longest gap {result['longest_gap_seconds']}s); RSS {result['rss_mb_after_10']} -> "
        f"{result['rss_mb_after_last']} MiB; targets met: {result['targets_met']}"
    )


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``reload.json`` and return the ``reload_*`` keys for ``latest.json``."""
    result = bench(options, say)
    write_result(results_dir, "reload", result)
    say(table(result))
    return {
        "reload_devices": result["devices"],
        "reload_interfaces": result["interfaces"],
        "reload_count": result["reloads"],
        "reload_changed_per_reload": result["changed_per_reload"],
        "reload_seconds_p50": result["reload_seconds_p50"],
        "reload_seconds_max": result["reload_seconds_max"],
        "reload_cpu_seconds_p50": result["reload_cpu_seconds_p50"],
        "reload_cpu_seconds_max": result["reload_cpu_seconds_max"],
        "reload_missed_cycles": result["missed_cycles"],
        "reload_samples_queued_at_end": result["samples_queued_at_rss_reads"][-1],
        "reload_rss_mb_after_10": result["rss_mb_after_10"],
        "reload_rss_mb_after_last": result["rss_mb_after_last"],
        "reload_rss_growth_mb": result["rss_growth_mb"],
        "reload_targets_met": result["targets_met"],
        "timestamp": result["timestamp"],
        "details": "reload.json",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.reload [--quick] [--devices N] [--reloads R] [--results-dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.reload", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 devices, 10 reloads, 10 s interval")
    parser.add_argument("--devices", type=int)
    parser.add_argument("--reloads", type=int)
    parser.add_argument("--interval", type=float, help="polling interval in seconds (default 120, quick 10)")
    parser.add_argument("--spacing", type=float, help="seconds between the end of a reload and the next")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    options = options_from(args.quick, args.devices, args.reloads, args.interval, args.spacing)
    print(json.dumps(run(options, args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
