"""Memory: the resident set of the real daemon polling 10k and 100k interfaces.

For each size the workload generates a config of ``size / 50`` devices (one circuit each, one
customer per ten circuits, the shipped ``rules/*.yml``, the six-column profile of the polling
workload) spread round-robin over a fleet of Debian ``snmpd`` agents (:mod:`bench.snmpd_fleet`;
several device entries share an agent, and each entry is a device of its own for alarmd), and
starts ``python -m alarmd run`` on it with a real Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``, or
a local KRaft node from ``tools/kafka_local.py``).

The daemon's sample queue (``queue_size``) is set to hold one whole cycle of samples: the
fleet is polled in one burst per interval (start jitter is at most 10 s), and with the default
of 10,000 the rule stage drops most samples at 100k interfaces, so the rule state that costs
the memory would never be built.  ``--queue-size 0`` measures the default instead; drops are
reported either way.

While the daemon runs, ``/proc/<pid>/status`` is read every half second and ``/metrics`` every
two seconds.  A polling cycle is complete when every device has finished one more successful
poll (``alarmd_collection_periods_total`` minus ``alarmd_collection_failed_periods_total`` per
device, less one while any poll is in flight).  The figure is ``VmRSS`` once ``cycles``
(default 3) full cycles are done and the rule stage has gone idle (its evaluation count stood
still between two reads), with ``VmHWM`` (the peak so far) beside it; the interval is chosen
per size so that a cycle fits in it with room to spare.

If the largest size exceeds :data:`RSS_LIMIT_MB`, the daemon is run once more under ``tracemalloc``
(``python -m bench.memory traced``) at the smallest size (the same structures per interface, in
far less time), and the biggest allocation sites and object types go into ``memory.json``; that
run's RSS is inflated by tracemalloc and not reported.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import snmpd_fleet
from bench.host import die_with_parent, host_facts, write_result
from bench.polling import cpu_seconds, free_tcp_port
from bench.snmpd_fleet import INTERFACES, Fleet

ROOT: Final = Path(__file__).resolve().parent.parent
COMMUNITY: Final = "alarmd-bench"
SIZES: Final = (10_000, 100_000)
QUICK_SIZES: Final = (10_000,)
AGENTS: Final = 16
QUICK_AGENTS: Final = 4
CYCLES: Final = 3
RSS_LIMIT_MB: Final = 150.0
STATUS_EVERY: Final = 0.5
METRICS_EVERY: Final = 2.0
DEVICES_PER_CUSTOMER: Final = 10
MIN_INTERVAL: Final = 5.0
VARBINDS_PER_SECOND_BUDGET: Final = 15_000  # a cycle may take this rate, well below the poller's
TOP: Final = 25
DEFAULT_QUEUE: Final = 10_000  # Config.queue_size
TRACED_SLOWDOWN: Final = 4
SAMPLES_PER_POLL: Final = 1 + INTERFACES * 6  # device_up; per interface 2 gauges, 3 rates, utilisation


@dataclass(frozen=True)
class Options:
    """What to run: sizes in interfaces, agents, cycles before reading RSS, and where Kafka is."""

    sizes: tuple[int, ...] = SIZES
    agents: int = AGENTS
    cycles: int = CYCLES
    interval: float | None = None  # None: by size, see interval_for
    kafka_bootstrap: str | None = None  # None: KAFKA_BOOTSTRAP_SERVERS, else a local broker
    breakdown: bool | None = None  # None: only when the largest size exceeds RSS_LIMIT_MB
    timeout: float = 900.0  # per size, from start to the last cycle
    queue_size: int | None = None  # None: one cycle of samples (see queue_for); 0: the daemon's default


def options_from(
    quick: bool,
    *,
    sizes: Sequence[int] | None = None,
    agents: int | None = None,
    cycles: int | None = None,
    interval: float | None = None,
    kafka_bootstrap: str | None = None,
    breakdown: bool | None = None,
    queue_size: int | None = None,
) -> Options:
    """Options from command-line values (``--quick``: 10k interfaces only, 4 agents, no heap breakdown)."""
    return Options(
        sizes=tuple(sizes) if sizes else (QUICK_SIZES if quick else SIZES),
        agents=agents if agents is not None else (QUICK_AGENTS if quick else AGENTS),
        cycles=cycles if cycles is not None else CYCLES,
        interval=interval,
        kafka_bootstrap=kafka_bootstrap,
        breakdown=False if quick and breakdown is None else breakdown,
        queue_size=queue_size,
    )


def interval_for(interfaces: int) -> float:
    """A polling interval that a full cycle of ``interfaces`` fits in with room to spare."""
    varbinds = interfaces * len(snmpd_fleet.COLUMNS)
    return float(max(MIN_INTERVAL, round(varbinds / VARBINDS_PER_SECOND_BUDGET)))


def queue_for(devices: int, options: Options) -> int | None:
    """The sample queue to configure: room for one whole cycle, so the rule stage sees every sample.

    ``None`` keeps the daemon's default (``queue_size: 10000``), under which a fleet polled in one
    burst overflows the queue and the dropped samples never build rule state.
    """
    if options.queue_size == 0:
        return None
    if options.queue_size is not None:
        return options.queue_size
    return max(DEFAULT_QUEUE, devices * SAMPLES_PER_POLL)


def size_key(interfaces: int) -> str:
    """``10000`` → ``10k``."""
    return f"{interfaces // 1000}k" if interfaces % 1000 == 0 else str(interfaces)


# --------------------------------------------------------------------------- config


def write_config(
    directory: Path,
    interfaces: int,
    *,
    ports: Sequence[int],
    interval: float,
    http_port: int,
    queue_size: int | None,
) -> None:
    """Write ``alarmd.yml`` and the profile for ``interfaces / 50`` devices."""
    directory.mkdir(parents=True, exist_ok=True)
    profile = snmpd_fleet.write_profile(directory)
    devices = max(1, interfaces // INTERFACES)
    customers = (devices + DEVICES_PER_CUSTOMER - 1) // DEVICES_PER_CUSTOMER
    lines = [
        "# generated by bench/memory.py",
        f"rule_files: ['{ROOT / 'rules' / '*.yml'}']",
        f"profile_files: ['{profile}']",
        "state_dir: state",
        *([f"queue_size: {queue_size}"] if queue_size is not None else []),
        f"polling: {{interval: {interval:g}s, timeout: 2s, retries: 1}}",
        f"credentials: {{bench: {{version: 2c, community: {COMMUNITY}}}}}",
        f"kafka: {{topics: {{work_orders: alarmd.bench.{uuid.uuid4().hex[:8]}}}}}",
        f"http: {{listen: '127.0.0.1:{http_port}'}}",
        "customers:",
        *[f"  - {{id: CUST-{c:05d}, name: Bench customer {c}, tier: ordinary}}" for c in range(customers)],
        "devices:",
        *[
            f"  - {{name: cpe-{d:05d}, kind: cpe_router, address: 127.0.0.1, port: {ports[d % len(ports)]}, "
            f"credentials: bench, profile: {snmpd_fleet.PROFILE_NAME}}}"
            for d in range(devices)
        ],
        "circuits:",
        *[
            f"  - {{id: CIR-{d:05d}, customer: CUST-{d // DEVICES_PER_CUSTOMER:05d}, "
            f"path: [{{device: cpe-{d:05d}, interface: ge-0-0-1}}]}}"
            for d in range(devices)
        ],
    ]
    (directory / "alarmd.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- observing the daemon


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` in KiB (VmRSS, VmHWM, RssAnon, RssFile ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, names: set[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of the metric ``names`` in a Prometheus text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {n: [] for n in names}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = _SAMPLE.match(line)
        if found is None or found.group(1) not in names:
            continue
        labels = dict(_LABEL.findall(found.group(2) or ""))
        out[found.group(1)].append((labels, float(found.group(3))))
    return out


@dataclass
class Progress:
    """What ``/metrics`` says about polling so far."""

    devices: int
    devices_seen: int = 0
    completed_cycles: int = 0
    polls_started: int = 0
    polls_finished: int = 0
    failed_periods: int = 0
    devices_up: int = 0
    samples_dropped: int = 0
    rule_evaluations: int = 0

    @classmethod
    def from_metrics(cls, text: str, devices: int) -> Progress:
        """Read the poll counters; a cycle counts only once every device finished it successfully."""
        names = {
            "alarmd_collection_periods_total",
            "alarmd_collection_failed_periods_total",
            "alarmd_poll_requests_total",
            "alarmd_poll_duration_seconds_count",
            "alarmd_device_up",
            "alarmd_pipeline_samples_dropped_total",
            "alarmd_rules_evaluations_total",
        }
        m = parse_metrics(text, names)
        periods = {lb.get("device", ""): v for lb, v in m["alarmd_collection_periods_total"]}
        failed = {lb.get("device", ""): v for lb, v in m["alarmd_collection_failed_periods_total"]}
        started = int(sum(v for _, v in m["alarmd_poll_requests_total"]))
        finished = int(sum(v for _, v in m["alarmd_poll_duration_seconds_count"]))
        good = [periods[d] - failed.get(d, 0.0) for d in periods]
        cycles = int(min(good)) if len(good) >= devices else 0
        if started > finished:  # some poll is in flight: do not count its period yet
            cycles = max(0, cycles - 1)
        return cls(
            devices=devices,
            devices_seen=len(periods),
            completed_cycles=cycles,
            polls_started=started,
            polls_finished=finished,
            failed_periods=int(sum(failed.values())),
            devices_up=int(sum(v for _, v in m["alarmd_device_up"])),
            samples_dropped=int(sum(v for _, v in m["alarmd_pipeline_samples_dropped_total"])),
            rule_evaluations=int(sum(v for _, v in m["alarmd_rules_evaluations_total"])),
        )


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``path`` from 127.0.0.1:``port``: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


@dataclass
class Daemon:
    """``python -m alarmd run`` (or its traced variant) on a generated config."""

    argv: list[str]
    config_dir: Path
    http_port: int
    bootstrap: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.config_dir / "alarmd.log"

    def start(self, timeout: float = 120.0) -> None:
        """Start the daemon and wait until ``/-/ready`` answers 200."""
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alarmd exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(self.http_port, "/-/ready", timeout=2)[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"alarmd was not ready within {timeout:g}s: {self.tail()}")

    @property
    def pid(self) -> int:
        """The daemon's PID."""
        if self.proc is None:
            raise RuntimeError("alarmd is not running")
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, chars: int = 2000) -> str:
        """The end of the daemon's log."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:] if self.log.exists() else ""


def watch(daemon: Daemon, devices: int, cycles: int, timeout: float, settle: float) -> dict[str, Any]:
    """Follow RSS and polling until ``cycles`` full cycles are done and the rule stage is idle.

    Idle: the rule evaluation count stood still between two ``/metrics`` reads, waited for at
    most ``settle`` seconds after the last cycle (else the readings say ``settled: false``).
    """
    started = time.monotonic()
    deadline = started + timeout
    series: list[dict[str, Any]] = []
    cycle_at: dict[int, float] = {}
    progress = previous = Progress(devices)
    cycles_done_at: float | None = None
    settled = False
    status = proc_status(daemon.pid)
    cpu0 = cpu_seconds(daemon.pid)
    next_metrics = 0.0
    while True:
        now = time.monotonic()
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise RuntimeError(f"alarmd exited ({daemon.proc.returncode}) while polling: {daemon.tail()}")
        status = proc_status(daemon.pid)
        if now >= next_metrics:
            next_metrics = now + METRICS_EVERY
            code, text = http_get(daemon.http_port, "/metrics", timeout=30)
            if code == 200:
                previous, progress = progress, Progress.from_metrics(text, devices)
                cycle_at.setdefault(progress.completed_cycles, round(now - started, 2))
            series.append(
                {
                    "t": round(now - started, 2),
                    "rss_kib": status["VmRSS"],
                    "cycles": progress.completed_cycles,
                    "polls": progress.polls_finished,
                    "dropped": progress.samples_dropped,
                    "evaluations": progress.rule_evaluations,
                }
            )
        if progress.completed_cycles >= cycles:
            cycles_done_at = cycles_done_at or now
            settled = progress.rule_evaluations == previous.rule_evaluations
            if settled or now - cycles_done_at > settle:
                break
        if progress.polls_finished > devices * (cycles + 2) and progress.devices_seen < devices:
            raise RuntimeError(
                f"/metrics shows collection periods for {progress.devices_seen} of {devices} devices "
                f"after {progress.polls_finished} polls"
            )
        if now > deadline:
            raise RuntimeError(
                f"alarmd finished {progress.completed_cycles} of {cycles} cycles over {devices} devices "
                f"within {timeout:g}s ({progress.polls_finished} polls, {progress.failed_periods} failed)"
            )
        time.sleep(STATUS_EVERY)
    seconds = time.monotonic() - started
    return {
        "status_kib": status,
        "progress": progress,
        "seconds": round(seconds, 2),
        "settled": settled,
        "cpu_share": round((cpu_seconds(daemon.pid) - cpu0) / seconds, 3),
        "cycle_done_at_s": cycle_at,
        "series": series,
    }


# --------------------------------------------------------------------------- one size


def measure(
    interfaces: int,
    *,
    fleet: Fleet,
    bootstrap: str,
    workdir: Path,
    options: Options,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run the daemon on ``interfaces`` interfaces until ``cycles`` full cycles are done; RSS and polling."""
    interval = options.interval or interval_for(interfaces)
    devices = max(1, interfaces // INTERFACES)
    queue = queue_for(devices, options)
    http_port = free_tcp_port()
    write_config(
        workdir, interfaces, ports=fleet.ports, interval=interval, http_port=http_port, queue_size=queue
    )
    argv = [sys.executable, "-m", "alarmd", "run", "-c", str(workdir), "--log-format", "json"]
    daemon = Daemon(argv, workdir, http_port, bootstrap)
    say(f"memory: {devices} devices x {INTERFACES} interfaces, every {interval:g}s, {options.cycles} cycles")
    try:
        daemon.start()
        seen = watch(daemon, devices, options.cycles, options.timeout, settle=interval)
    finally:
        exit_code = daemon.stop()
    progress: Progress = seen["progress"]
    status = seen["status_kib"]
    return {
        "interfaces": devices * INTERFACES,
        "devices": devices,
        "agents": len(fleet.ports),
        "interval_seconds": interval,
        "queue_size": queue or DEFAULT_QUEUE,
        "cycles": progress.completed_cycles,
        "rule_stage_idle": seen["settled"],
        "seconds_to_cycles": seen["seconds"],
        "daemon_cpu_share": seen["cpu_share"],
        "cycle_done_at_s": seen["cycle_done_at_s"],
        "rss_mb": round(status["VmRSS"] / 1024, 1),
        "hwm_mb": round(status["VmHWM"] / 1024, 1),
        "status_kib": status,
        "polling": {
            "polls_started": progress.polls_started,
            "polls_finished": progress.polls_finished,
            "failed_periods": progress.failed_periods,
            "devices_up": progress.devices_up,
            "samples_dropped": progress.samples_dropped,
            "rule_evaluations": progress.rule_evaluations,
        },
        "exit_code": exit_code,
        "argv": argv,
        "series": seen["series"],
    }


def breakdown(
    interfaces: int,
    *,
    fleet: Fleet,
    bootstrap: str,
    workdir: Path,
    options: Options,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run the daemon once more under tracemalloc and take a heap breakdown after the cycles.

    tracemalloc slows every allocation, so this run polls :data:`TRACED_SLOWDOWN` times less often
    with twice the queue, for the rule stage to see every sample as in the measured run.
    """
    interval = (options.interval or interval_for(interfaces)) * TRACED_SLOWDOWN
    devices = max(1, interfaces // INTERFACES)
    queue = queue_for(devices, options)
    http_port = free_tcp_port()
    write_config(
        workdir,
        interfaces,
        ports=fleet.ports,
        interval=interval,
        http_port=http_port,
        queue_size=queue * 2 if queue is not None else None,
    )
    out, trigger = workdir / "heap.json", workdir / "heap.trigger"
    argv = [sys.executable, "-m", "bench.memory", "traced", str(workdir), str(out), str(trigger)]
    daemon = Daemon(argv, workdir, http_port, bootstrap)
    say(f"memory: heap breakdown at {devices * INTERFACES} interfaces (tracemalloc; slower)")
    try:
        daemon.start()
        seen = watch(daemon, devices, options.cycles, options.timeout * TRACED_SLOWDOWN, settle=interval)
        trigger.touch()
        deadline = time.monotonic() + 300
        while not out.exists():
            if time.monotonic() > deadline or (daemon.proc is not None and daemon.proc.poll() is not None):
                raise RuntimeError(f"the traced daemon wrote no heap breakdown: {daemon.tail()}")
            time.sleep(0.5)
        status = proc_status(daemon.pid)
    finally:
        daemon.stop()
    heap: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    heap["traced_run_rss_mb"] = round(status["VmRSS"] / 1024, 1)
    heap["traced_run_samples_dropped"] = seen["progress"].samples_dropped
    return heap


# --------------------------------------------------------------------------- traced daemon (child process)


def _short(where: str) -> str:
    """A source location relative to the repository when it lies inside it."""
    return where.removeprefix(f"{ROOT}/")


def heap_report() -> dict[str, Any]:
    """Where the Python heap is: tracemalloc's top sites and files, and live objects by type."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    by_line = snapshot.statistics("lineno")
    by_file = snapshot.statistics("filename")
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return {
        "tracemalloc_traced_mb": round(traced / 2**20, 1),
        "tracemalloc_peak_mb": round(peak / 2**20, 1),
        "top_lines": [
            {"site": _short(str(s.traceback[0])), "mb": round(s.size / 2**20, 2), "blocks": s.count}
            for s in by_line[:TOP]
        ],
        "top_files": [
            {"file": _short(s.traceback[0].filename), "mb": round(s.size / 2**20, 2), "blocks": s.count}
            for s in by_file[:TOP]
        ],
        "gc_objects_by_type": [
            {"type": name, "count": counts[name], "shallow_mb": round(size / 2**20, 2)}
            for name, size in sizes.most_common(TOP)
        ],
    }


def traced_main(config_dir: Path, out: Path, trigger: Path) -> int:
    """Run the daemon with tracemalloc on; write :func:`heap_report` once ``trigger`` exists."""
    tracemalloc.start(1)

    def wait_for_trigger() -> None:
        while not trigger.exists():
            time.sleep(0.2)
        report = heap_report()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
        tmp.replace(out)

    threading.Thread(target=wait_for_trigger, name="heap-report", daemon=True).start()
    from alarmd.cli import main as alarmd_main  # noqa: PLC0415 - imported after tracemalloc starts

    return alarmd_main(["run", "-c", str(config_dir), "--log-format", "json"])


# --------------------------------------------------------------------------- the workload


@contextlib.contextmanager
def kafka(options: Options, workdir: Path, say: Callable[[str], None]) -> Iterator[str]:
    """The bootstrap address of the broker to use; a local one is started (and stopped) if none is given."""
    given = options.kafka_bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    import kafka_local  # type: ignore[import-not-found]  # noqa: PLC0415 - a dev tool in tools/

    say("memory: starting a local Kafka broker (tools/kafka_local.py)")
    broker = kafka_local.start(workdir / "kafka", with_parent=True)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Run every size one after the other (and the breakdown if wanted); the full result."""
    sizes: dict[str, dict[str, Any]] = {}
    heap: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="alarmd-bench-memory-") as tmp,
        Fleet(options.agents, COMMUNITY) as fleet,
        kafka(options, Path(tmp), say) as bootstrap,
    ):
        for interfaces in options.sizes:
            sizes[size_key(interfaces)] = measure(
                interfaces,
                fleet=fleet,
                bootstrap=bootstrap,
                workdir=Path(tmp) / f"size-{interfaces}",
                options=options,
                say=say,
            )
        over = [n for n in sorted(options.sizes) if sizes[size_key(n)]["rss_mb"] > RSS_LIMIT_MB]
        wanted = options.breakdown if options.breakdown is not None else max(options.sizes) in over
        if wanted:
            # The smallest size shows the same structures per interface as the largest, in far less
            # time: tracemalloc slows the daemon several times over.
            at = min(options.sizes)
            heap = breakdown(
                at,
                fleet=fleet,
                bootstrap=bootstrap,
                workdir=Path(tmp) / "breakdown",
                options=options,
                say=say,
            )
            heap["interfaces"] = at
    return {
        "workload": "memory",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "sizes_interfaces": list(options.sizes),
            "agents": options.agents,
            "cycles": options.cycles,
            "interfaces_per_device": INTERFACES,
            "profile": snmpd_fleet.PROFILE_YAML,
            "rules": "rules/*.yml (shipped)",
            "rss_limit_mb": RSS_LIMIT_MB,
        },
        "host": host_facts(),
        "sizes": sizes,
        "heap_breakdown": heap,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, one row per size."""
    lines = [
        f"{'interfaces':>10} {'devices':>7} {'interval':>8} {'cycles':>6} {'seconds':>7} {'polls':>7} "
        f"{'failed':>6} {'dropped':>7} {'cpu':>5} {'RSS MB':>7} {'HWM MB':>7}"
    ]
    for s in result["sizes"].values():
        p = s["polling"]
        lines.append(
            f"{s['interfaces']:>10} {s['devices']:>7} {s['interval_seconds']:>8g} {s['cycles']:>6} "
            f"{s['seconds_to_cycles']:>7} {p['polls_finished']:>7} {p['failed_periods']:>6} "
            f"{p['samples_dropped']:>7} {s['daemon_cpu_share']:>5.0%} {s['rss_mb']:>7} {s['hwm_mb']:>7}"
        )
    heap = result["heap_breakdown"]
    if heap:
        lines.append(
            f"heap breakdown at {heap['interfaces']} interfaces (tracemalloc, traced "
            f"{heap['tracemalloc_traced_mb']} MB), top sites:"
        )
        lines += [f"  {t['mb']:>8} MB  {t['site']}" for t in heap["top_lines"][:10]]
    return "\n".join(lines)


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``memory.json`` and return the summary for ``latest.json``."""
    result = bench(options, say)
    write_result(results_dir, "memory", result)
    say(table(result))
    summary: dict[str, Any] = {}
    for key, s in result["sizes"].items():
        summary[f"rss_mb_{key}_interfaces"] = s["rss_mb"]
        summary[f"hwm_mb_{key}_interfaces"] = s["hwm_mb"]
    summary["samples_dropped"] = {key: s["polling"]["samples_dropped"] for key, s in result["sizes"].items()}
    measured = sorted(result["sizes"].values(), key=lambda s: s["interfaces"])
    if len(measured) >= 2 and measured[-1]["interfaces"] > measured[0]["interfaces"]:
        grew = (measured[-1]["rss_mb"] - measured[0]["rss_mb"]) * 1024
        summary["rss_kib_per_interface"] = round(
            grew / (measured[-1]["interfaces"] - measured[0]["interfaces"]), 2
        )
    heap = result["heap_breakdown"]
    if heap:
        top = heap["top_lines"][0]
        summary["heap_top_site"] = f"{top['site']}: {top['mb']} MB at {heap['interfaces']} interfaces"
    summary["rss_limit_mb"] = RSS_LIMIT_MB
    summary["cycles"] = options.cycles
    summary["versions"] = {
        "net_snmp": result["host"]["net_snmp"],
        "python": result["host"]["python"],
        "alarmd": result["host"]["alarmd"],
    }
    summary["timestamp"] = result["timestamp"]
    summary["details"] = "memory.json"
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.memory [--quick]`` runs the workload; ``traced DIR OUT TRIGGER`` is its child."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    traced = sub.add_parser("traced", help="the daemon under tracemalloc (started by the workload)")
    traced.add_argument("config_dir", type=Path)
    traced.add_argument("out", type=Path)
    traced.add_argument("trigger", type=Path)
    parser.add_argument("--quick", action="store_true", help="10k interfaces only, 4 agents")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 10000,100000")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--interval", type=float)
    parser.add_argument(
        "--queue-size", type=int, help="the daemon's queue_size (default: one cycle; 0: 10000)"
    )
    parser.add_argument("--breakdown", action="store_true", default=None, help="always take a heap breakdown")
    parser.add_argument("--no-breakdown", action="store_false", dest="breakdown", help="never take one")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.cmd == "traced":
        return traced_main(args.config_dir, args.out, args.trigger)
    options = options_from(
        args.quick,
        sizes=args.sizes,
        agents=args.agents,
        cycles=args.cycles,
        interval=args.interval,
        breakdown=args.breakdown,
        queue_size=args.queue_size,
    )
    print(json.dumps(run(options, args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
