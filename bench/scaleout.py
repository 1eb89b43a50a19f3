"""Per-instance cost in distributed mode, and the sizing that follows from it.

One collector (``alarmd run --role collector``) polls Debian ``snmpd`` agents
(:mod:`bench.snmpd_fleet`) and publishes to the events topic of a real Kafka; one correlator
(``--role correlator``) consumes it.  The same inventory is then run by one ``--role all``
process, the peer: what distributed mode costs over one process doing everything.

Each run has two windows, after two full polling cycles:

1. **polling**: ``window`` seconds of polling only.  Cost per 1,000 interface polls (one
   interface's row of the profile's columns, read once) for each process.
2. **traps**: ``trap_rate`` linkDown traps per second for ``trap_seconds`` seconds, each
   with a ``sysUpTime`` of its own (:func:`bench.sender.encode_traps` ``distinct``), so a
   correlator judges every one instead of dropping it as a copy.  Cost per 1,000 traps is
   the CPU above the polling window's rate.

CPU is user + system time from ``/proc/<pid>/stat``, so other load on the machine moves it
little.  From the costs, :func:`sizing` gives the instances needed for 100k devices and 10k
traps/s at the operator's polling interval (5 minutes) with each instance kept under half a
core.

    python -m bench.scaleout [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import memory, snmpd_fleet
from bench.host import host_facts, write_result
from bench.polling import cpu_seconds, free_tcp_port
from bench.traps import free_udp_port, send

INTERFACES: Final = 10_000
QUICK_INTERFACES: Final = 2_000
INTERVAL: Final = 10.0
QUICK_INTERVAL: Final = 5.0
WINDOW: Final = 60.0
QUICK_WINDOW: Final = 20.0
TRAP_RATE: Final = 1_000
TRAP_SECONDS: Final = 30.0
QUICK_TRAP_SECONDS: Final = 10.0
SETTLE: Final = 5.0
BACKLOG: Final = 30.0
DRAIN: Final = 10.0
QUICK_BACKLOG: Final = 5.0
QUICK_DRAIN: Final = 2.0

#: The sizing question of the issue, and what it assumes.
SIZING_DEVICES: Final = 100_000
SIZING_INTERFACES_PER_DEVICE: Final = 4  # a leased-line CPE: uplink, LAN and two more polled ports
SIZING_INTERVAL: Final = 300.0  # polling.interval's default, the operator's 5-minute base
SIZING_TRAPS: Final = 10_000
CORE_BUDGET: Final = 0.5  # each instance kept under half a core: room for bursts and failover


@dataclass(frozen=True)
class Options:
    """What to run: interfaces, polling interval, window lengths, trap rate, and where Kafka is."""

    interfaces: int = INTERFACES
    interval: float = INTERVAL
    window: float = WINDOW
    trap_rate: int = TRAP_RATE
    trap_seconds: float = TRAP_SECONDS
    agents: int = memory.AGENTS
    kafka_bootstrap: str | None = None
    timeout: float = 600.0
    backlog: float = BACKLOG  # seconds the collector publishes before the correlator starts
    drain_seconds: float = DRAIN


def options_from(quick: bool, *, window: float | None = None, trap_seconds: float | None = None) -> Options:
    """Options for ``make bench`` (``--quick``: 2k interfaces, short windows); lengths may be given."""
    base = (
        Options(
            interfaces=QUICK_INTERFACES,
            interval=QUICK_INTERVAL,
            window=QUICK_WINDOW,
            trap_seconds=QUICK_TRAP_SECONDS,
            agents=memory.QUICK_AGENTS,
            backlog=QUICK_BACKLOG,
            drain_seconds=QUICK_DRAIN,
        )
        if quick
        else Options()
    )
    return replace(
        base,
        window=window if window is not None else base.window,
        trap_seconds=trap_seconds if trap_seconds is not None else base.trap_seconds,
    )


@dataclass
class Reading:
    """One moment of one process: its CPU time and the counters that measure its work."""

    at: float
    cpu: float
    polls: int
    traps: int
    judged: int
    consumed: int
    published: int

    @classmethod
    def of(cls, daemon: memory.Daemon) -> Reading:
        """Read ``/proc`` and ``/metrics`` of a running daemon."""
        code, text = memory.http_get(daemon.http_port, "/metrics", timeout=30)
        if code != 200:
            raise RuntimeError(f"/metrics answered {code}")
        m = memory.parse_metrics(
            text,
            {
                "alarmd_poll_duration_seconds_count",
                "alarmd_traps_received_total",
                "alarmd_cluster_events_consumed_total",
                "alarmd_cluster_messages_consumed_total",
                "alarmd_cluster_events_published_total",
            },
        )
        judged = sum(
            v for lb, v in m["alarmd_cluster_events_consumed_total"] if lb.get("outcome") == "judged"
        )
        return cls(
            at=time.monotonic(),
            cpu=cpu_seconds(daemon.pid),
            polls=int(sum(v for _, v in m["alarmd_poll_duration_seconds_count"])),
            traps=int(sum(v for _, v in m["alarmd_traps_received_total"])),
            judged=int(judged),
            consumed=int(sum(v for _, v in m["alarmd_cluster_messages_consumed_total"])),
            published=int(sum(v for _, v in m["alarmd_cluster_events_published_total"])),
        )


def cost(before: Reading, after: Reading) -> dict[str, float]:
    """CPU seconds and work done between two readings."""
    return {
        "seconds": round(after.at - before.at, 2),
        "cpu_s": round(after.cpu - before.cpu, 3),
        "device_polls": after.polls - before.polls,
        "traps": after.traps - before.traps,
        "events_judged": after.judged - before.judged,
    }


def per_1k(cpu: float, count: float) -> float | None:
    """CPU seconds per 1,000 of something; None without any."""
    return round(cpu / count * 1000, 4) if count > 0 else None


def config_for(
    directory: Path,
    options: Options,
    fleet: snmpd_fleet.Fleet,
    *,
    trap_port: int,
    cluster: str | None,
) -> tuple[int, int]:
    """Write the bench inventory to ``directory``; (devices, HTTP port).  ``cluster``: the topics' suffix."""
    http_port = free_tcp_port()
    devices = max(1, options.interfaces // snmpd_fleet.INTERFACES)
    memory.write_config(
        directory,
        options.interfaces,
        ports=fleet.ports,
        interval=options.interval,
        http_port=http_port,
        queue_size=memory.queue_for(devices, memory.Options()),
    )
    extra = [
        f"traps: {{enabled: true, listen: '127.0.0.1:{trap_port}', credentials: [bench], "
        f"definitions: ['{memory.ROOT}/config/traps/*.yml']}}",
        *(
            [
                f"cluster: {{events_topic: alarmd.bench.events.{cluster}, "
                f"inventory_topic: alarmd.bench.inventory.{cluster}, "
                f"collector_group: alarmd.bench.collectors.{cluster}, "
                f"correlator_group: alarmd.bench.correlators.{cluster}, session_timeout: 6s}}"
            ]
            if cluster
            else []
        ),
    ]
    with (directory / "alarmd.yml").open("a", encoding="utf-8") as out:
        out.write("\n".join(extra) + "\n")
    return devices, http_port


def daemon(directory: Path, http_port: int, bootstrap: str, role: str) -> memory.Daemon:
    """An ``alarmd run --role ROLE`` on ``directory``'s config (not started)."""
    argv = [sys.executable, "-m", "alarmd", "run", "-c", str(directory), "--log-format", "json"]
    return memory.Daemon([*argv, "--role", role], directory, http_port, bootstrap)


def wait_cycles(poller: memory.Daemon, devices: int, cycles: int, timeout: float) -> None:
    """Until every device finished ``cycles`` polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poller.proc is not None and poller.proc.poll() is not None:
            raise RuntimeError(f"alarmd exited ({poller.proc.returncode}): {poller.tail()}")
        code, text = memory.http_get(poller.http_port, "/metrics", timeout=30)
        if code == 200 and memory.Progress.from_metrics(text, devices).completed_cycles >= cycles:
            return
        time.sleep(1.0)
    raise RuntimeError(f"{devices} devices did not finish {cycles} polling cycles within {timeout:g}s")


def measure(
    processes: dict[str, memory.Daemon], poller: str, trap_port: int, options: Options
) -> dict[str, Any]:
    """Polling, traps, polling again, for each of ``processes`` (``poller`` polls and receives).

    The polling rate is taken from both polling windows, before and after the traps, so a
    trap window's cost above it does not depend on which side of the cycle it fell.  A
    correlator that falls behind during the traps judges them later, in the second polling
    window; its cost per event is therefore taken over all three windows together.
    """
    start = {name: Reading.of(d) for name, d in processes.items()}
    time.sleep(options.window)
    polled = {name: Reading.of(d) for name, d in processes.items()}
    sent = asyncio.run(send(trap_port, options.trap_rate, options.trap_seconds, 0, None, distinct=True))
    time.sleep(SETTLE)
    trapped = {name: Reading.of(d) for name, d in processes.items()}
    time.sleep(options.window / 2)
    end = {name: Reading.of(d) for name, d in processes.items()}
    polls = (polled[poller].polls - start[poller].polls) + (end[poller].polls - trapped[poller].polls)
    interface_polls = polls * snmpd_fleet.INTERFACES
    trap_count = trapped[poller].traps - polled[poller].traps
    out: dict[str, Any] = {
        "traps_sent": sent,
        "interface_polls": interface_polls,
        "traps_received": trap_count,
    }
    for name, process in processes.items():
        windows = [
            cost(start[name], polled[name]),
            cost(polled[name], trapped[name]),
            cost(trapped[name], end[name]),
        ]
        before, traps, after = windows
        polling_cpu, polling_seconds = before["cpu_s"] + after["cpu_s"], before["seconds"] + after["seconds"]
        baseline = polling_cpu / polling_seconds if polling_seconds else 0.0
        above = traps["cpu_s"] - baseline * traps["seconds"]
        row: dict[str, Any] = {
            "windows": windows,
            "cpu_share_polling": round(baseline, 3),
            "cpu_s_per_1k_interface_polls": per_1k(polling_cpu, interface_polls),
            "cpu_s_per_1k_traps": per_1k(above, trap_count) if above > 0 else None,
        }
        status = memory.proc_status(process.pid)
        row |= {"rss_mb": round(status["VmRSS"] / 1024, 1), "hwm_mb": round(status["VmHWM"] / 1024, 1)}
        judged = sum(w["events_judged"] for w in windows)
        if judged:  # a correlator: what an event costs, and how fast it got through them
            first = windows[0]
            first_interface_polls = (
                max(1, polled[poller].polls - start[poller].polls) * snmpd_fleet.INTERFACES
            )
            per_sample = first["cpu_s"] / first["events_judged"] if first["events_judged"] else 0.0
            rest_cpu = traps["cpu_s"] + after["cpu_s"]
            rest_samples = traps["events_judged"] + after["events_judged"] - trap_count
            trap_cpu = rest_cpu - per_sample * rest_samples
            row |= {
                "cpu_s_per_1k_events": per_1k(sum(w["cpu_s"] for w in windows), judged),
                "events_per_interface_poll": round(first["events_judged"] / first_interface_polls, 2),
                "cpu_s_per_1k_traps": per_1k(trap_cpu, trap_count) if trap_cpu > 0 else None,
            }
        out[name] = row
    return out


def run_layout(
    layout: str,
    *,
    options: Options,
    fleet: snmpd_fleet.Fleet,
    bootstrap: str,
    workdir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """``distributed`` (a collector and a correlator) or ``all`` (one process), measured."""
    trap_port = free_udp_port()
    suffix = uuid.uuid4().hex[:8] if layout == "distributed" else None
    processes: dict[str, memory.Daemon] = {}
    if layout == "distributed":
        devices, port = config_for(
            workdir / "correlator", options, fleet, trap_port=free_udp_port(), cluster=suffix
        )
        processes["correlator"] = daemon(workdir / "correlator", port, bootstrap, "correlator")
        devices, port = config_for(workdir / "collector", options, fleet, trap_port=trap_port, cluster=suffix)
        processes["collector"] = daemon(workdir / "collector", port, bootstrap, "collector")
        poller = "collector"
    else:
        devices, port = config_for(workdir / "all", options, fleet, trap_port=trap_port, cluster=None)
        processes["all"] = daemon(workdir / "all", port, bootstrap, "all")
        poller = "all"
    say(
        f"scaleout: {layout}: {devices} devices x {snmpd_fleet.INTERFACES} interfaces "
        f"every {options.interval:g}s"
    )
    drain: dict[str, float] | None = None
    try:
        processes[poller].start()
        wait_cycles(processes[poller], devices, 2, options.timeout)
        if "correlator" in processes:  # started late, it finds a backlog: how fast it gets through one
            time.sleep(options.backlog)
            drain = catch_up(processes["correlator"], processes["collector"], options.drain_seconds)
            caught_up(processes["collector"], processes["correlator"], options.timeout)
        result = measure(processes, poller, trap_port, options)
    finally:
        for d in processes.values():
            d.stop()
    if drain is not None:
        result["correlator"]["backlog_drain"] = drain
    result["devices"] = devices
    return result


def caught_up(collector: memory.Daemon, correlator: memory.Daemon, timeout: float) -> None:
    """Until ``correlator`` read as many messages as ``collector`` had published when this began."""
    published = Reading.of(collector).published
    deadline = time.monotonic() + timeout
    while Reading.of(correlator).consumed < published:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the correlator did not catch up with {published} events within {timeout:g}s")
        time.sleep(0.5)


def catch_up(correlator: memory.Daemon, collector: memory.Daemon, seconds: float) -> dict[str, float]:
    """Start ``correlator`` on a backlog: its judging rate and CPU share from its first judged event.

    Measured over ``seconds``, or until it has read the messages ``collector`` had published
    when it started, if that comes first: past the backlog it judges only what comes in.
    """
    backlog = Reading.of(collector).published
    started = time.monotonic()
    correlator.start()
    deadline = time.monotonic() + 120
    last = Reading.of(correlator)
    # from the last reading before any event was judged; if the first already has some (a small
    # backlog judged before /metrics first answered), from the start: the rate is then a floor
    first = last if last.judged == 0 else dataclasses.replace(last, at=started, cpu=0.0, judged=0, consumed=0)
    while last.judged == 0 and time.monotonic() < deadline:
        first = last
        time.sleep(0.2)
        last = Reading.of(correlator)
    while last.consumed < backlog and last.at - first.at < seconds:
        time.sleep(0.2)
        last = Reading.of(correlator)
    span = max(last.at - first.at, 1e-3)
    return {
        "seconds": round(span, 2),
        "events_judged": last.judged - first.judged,
        "judged_per_s": round((last.judged - first.judged) / span, 1),
        "cpu_share": round((last.cpu - first.cpu) / span, 3),
    }


def sizing(distributed: dict[str, Any]) -> dict[str, Any]:
    """Instances for :data:`SIZING_DEVICES` devices and :data:`SIZING_TRAPS` traps/s from measured costs.

    Collectors are bound by CPU.  Correlators by CPU and by throughput: one judges a fetched
    batch, waits for its work orders and changelog to be acknowledged, then commits, so its
    rate may be bounded by those round trips before its core is busy.  Its capacity is the
    rate at which it got through a backlog (``backlog_drain``), and each instance is planned
    at :data:`CORE_BUDGET` of it, as of a core.
    """
    interface_polls_per_s = SIZING_DEVICES * SIZING_INTERFACES_PER_DEVICE / SIZING_INTERVAL
    out: dict[str, Any] = {
        "devices": SIZING_DEVICES,
        "interfaces_per_device": SIZING_INTERFACES_PER_DEVICE,
        "interval_s": SIZING_INTERVAL,
        "traps_per_s": SIZING_TRAPS,
        "core_budget_per_instance": CORE_BUDGET,
    }
    for role in ("collector", "correlator"):
        row = distributed[role]
        per_poll, per_trap = row["cpu_s_per_1k_interface_polls"], row["cpu_s_per_1k_traps"]
        if not per_poll or not per_trap:
            out[role] = None
            continue
        cores = interface_polls_per_s / 1000 * per_poll + SIZING_TRAPS / 1000 * per_trap
        need: dict[str, Any] = {
            "cores": round(cores, 2),
            "instances_by_cpu": max(1, math.ceil(cores / CORE_BUDGET)),
            "interfaces_per_instance_at_interval": int(CORE_BUDGET / per_poll * 1000 * SIZING_INTERVAL),
            "traps_per_s_per_instance": int(CORE_BUDGET / per_trap * 1000),
        }
        if row.get("backlog_drain", {}).get("judged_per_s"):  # none judged: no capacity to plan by
            events = interface_polls_per_s * row["events_per_interface_poll"] + SIZING_TRAPS
            capacity = row["backlog_drain"]["judged_per_s"]
            need["events_per_s"] = round(events)
            need["instances_by_throughput"] = max(1, math.ceil(events / (capacity * CORE_BUDGET)))
        need["instances"] = max(need["instances_by_cpu"], need.get("instances_by_throughput", 1))
        out[role] = need
    return out


def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Both layouts on the same fleet and broker; the full result."""
    with (
        tempfile.TemporaryDirectory(prefix="alarmd-bench-scaleout-") as tmp,
        snmpd_fleet.Fleet(options.agents, memory.COMMUNITY) as fleet,
        memory.kafka(memory.Options(kafka_bootstrap=options.kafka_bootstrap), Path(tmp), say) as bootstrap,
    ):
        work = {"options": options, "fleet": fleet, "bootstrap": bootstrap, "say": say}
        distributed = run_layout("distributed", workdir=Path(tmp) / "distributed", **work)
        single = run_layout("all", workdir=Path(tmp) / "single", **work)
    return {
        "workload": "scaleout",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "interfaces": options.interfaces,
            "interval_s": options.interval,
            "window_s": options.window,
            "trap_rate": options.trap_rate,
            "trap_seconds": options.trap_seconds,
            "agents": options.agents,
        },
        "host": host_facts(),
        "distributed": distributed,
        "all": single,
        "sizing": sizing(distributed),
    }


def table(result: dict[str, Any]) -> str:
    """The costs, one row per process, and the sizing."""
    lines = [
        f"{'process':<22} {'cpu share polling':>17} {'s/1k interface polls':>21} {'s/1k traps':>11} "
        f"{'RSS MiB':>8} {'peak MiB':>9}"
    ]
    for layout in ("distributed", "all"):
        for name, row in result[layout].items():
            if not isinstance(row, dict) or "cpu_share_polling" not in row:  # the run's own figures
                continue
            lines.append(
                f"{layout + ' ' + name:<22} {row['cpu_share_polling']:>17} "
                f"{row['cpu_s_per_1k_interface_polls']!s:>21} {row['cpu_s_per_1k_traps']!s:>11} "
                f"{row['rss_mb']:>8} {row['hwm_mb']:>9}"
            )
    drain = result["distributed"]["correlator"].get("backlog_drain")
    if drain:
        lines.append(
            f"correlator through a backlog: {drain['judged_per_s']} events/s, {drain['cpu_share']} of a core"
        )
    s = result["sizing"]
    for role in ("collector", "correlator"):
        if s[role]:
            lines.append(
                f"{role}s for {s['devices']} devices x {s['interfaces_per_device']} interfaces every "
                f"{s['interval_s']:g}s and {s['traps_per_s']} traps/s: {s[role]['instances']} "
                f"({s[role]['cores']} cores at {s['core_budget_per_instance']} core each)"
            )
    return "\n".join(lines)


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``scaleout.json`` and return the summary for ``latest.json``."""
    result = bench(options, say)
    write_result(results_dir, "scaleout", result)
    say(table(result))
    d, a, s = result["distributed"], result["all"], result["sizing"]
    summary: dict[str, Any] = {
        "collector_cpu_s_per_1k_interface_polls": d["collector"]["cpu_s_per_1k_interface_polls"],
        "correlator_cpu_s_per_1k_interface_polls": d["correlator"]["cpu_s_per_1k_interface_polls"],
        "all_cpu_s_per_1k_interface_polls": a["all"]["cpu_s_per_1k_interface_polls"],
        "collector_cpu_s_per_1k_traps": d["collector"]["cpu_s_per_1k_traps"],
        "correlator_cpu_s_per_1k_traps": d["correlator"]["cpu_s_per_1k_traps"],
        "all_cpu_s_per_1k_traps": a["all"]["cpu_s_per_1k_traps"],
        "rss_mb": {
            "collector": d["collector"]["rss_mb"],
            "correlator": d["correlator"]["rss_mb"],
            "all": a["all"]["rss_mb"],
            "interfaces": result["settings"]["interfaces"],
        },
        "correlator_cpu_s_per_1k_events": d["correlator"].get("cpu_s_per_1k_events"),
        "correlator_backlog_events_per_s": (d["correlator"].get("backlog_drain") or {}).get("judged_per_s"),
        "traps_received": {"distributed": d["traps_received"], "all": a["traps_received"]},
        "sizing": s,
        "timestamp": result["timestamp"],
        "details": "scaleout.json",
    }
    with contextlib.suppress(TypeError, ZeroDivisionError):
        both = (
            d["collector"]["cpu_s_per_1k_interface_polls"] + d["correlator"]["cpu_s_per_1k_interface_polls"]
        )
        summary["distributed_over_all_polling"] = round(both / a["all"]["cpu_s_per_1k_interface_polls"], 2)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.scaleout [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k interfaces, short windows")
    parser.add_argument("--window", type=float, help=f"seconds of polling measured (default {WINDOW:g})")
    parser.add_argument("--trap-seconds", type=float, help=f"seconds of traps (default {TRAP_SECONDS:g})")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    run(options_from(args.quick, window=args.window, trap_seconds=args.trap_seconds), args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
