"""Polling: IF-MIB varbinds per CPU-second of alarmd's collector against prometheus-snmp-exporter.

Both managers poll the same fleet of Debian ``snmpd`` agents (:mod:`bench.snmpd_fleet`: one
device per agent, 50 interfaces each, served by net-snmp's C handlers) for the same six IF-MIB
columns (ifName, ifOperStatus, ifHighSpeed, ifHCInOctets, ifHCOutOctets, ifInErrors): 300
varbinds per device per poll.  The two run one after the other for ``duration`` seconds each,
every device polled back to back with one poll in flight per device (the same concurrency on
both sides), after two warm-up rounds that are not counted.

* ``alarmd``: a process of its own (``python -m bench.polling worker``) under uvloop, one
  :class:`~alarmd.collector.poller.DevicePoller` per device with :class:`FastSnmpClient` (the
  client the daemon uses) and a generated profile of the six columns, calling
  :meth:`~DevicePoller.poll_once` in a loop: GET sysUpTime, GETBULK-walk the columns, turn the
  rows into samples (rates, utilisation), as the daemon does each period.  Varbinds = column
  values the walks returned (the sysUpTime GET is extra work, not counted).
* ``exporter``: ``prometheus-snmp-exporter`` with a generated ``snmp.yml`` module walking the
  six columns (ifName also as a lookup label, as the generator writes it), scraped over
  keep-alive HTTP by threads of this process, one per device.  Varbinds = samples of the six
  metrics in the scrape bodies.

Both walk with max-repetitions 25 (each one's default) against snmpd's default limit of 100
varbinds per GETBULK response: alarmd's six-column requests come back with 16 rows (4 requests
a walk), the exporter's one-column requests with 25 (3 requests a column, 18 a scrape).

CPU is the manager process's user + system time (``/proc/<pid>/stat``, all threads) over the
measured window only; agents and scraper are not counted.  With two or more CPUs the manager
(alarmd's worker, or the exporter through ``taskset``) runs alone on the first one, and agents
and scraper on the others.  The figure is varbinds per CPU-second; wall throughput is reported
too (it depends on what else shares the CPUs).  If alarmd misses :data:`TARGET_RATIO`, the
worker runs again under cProfile and its top functions, and its own time per source file, go
into ``polling.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import io
import json
import os
import pstats
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import uvloop

from alarmd import heap
from alarmd import logging as alarmd_logging
from alarmd.clock import SystemClock
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.poller import DevicePoller
from alarmd.collector.profile import load_profiles
from alarmd.config import DeviceConfig, PollingConfig, SnmpV2c
from alarmd.metrics import Metrics
from bench import snmpd_fleet
from bench.host import EXPORTER, die_with_parent, host_facts, stop_process, write_result
from bench.snmpd_fleet import COLUMNS, INTERFACES, Fleet

ROOT: Final = Path(__file__).resolve().parent.parent
COMMUNITY: Final = "alarmd-bench"
MODULE: Final = "bench_if_mib"
AGENTS: Final = 16
QUICK_AGENTS: Final = 4
DURATION: Final = 10.0
QUICK_DURATION: Final = 2.0
WARMUP_ROUNDS: Final = 2
MAX_REPETITIONS: Final = 25  # the default of both alarmd (polling.max_repetitions) and snmp_exporter
MAX_IN_FLIGHT: Final = 64  # alarmd's default polling.max_in_flight
TIMEOUT: Final = 2.0
TARGET_RATIO: Final = 1.5
PROFILE_SECONDS: Final = 5.0
PROFILE_LINES: Final = 30
VARBINDS_PER_POLL: Final = len(COLUMNS) * INTERFACES


@dataclass(frozen=True)
class Options:
    """What to run: agents (one device each), seconds per peer, peers, and whether to profile alarmd."""

    agents: int = AGENTS
    duration: float = DURATION
    peers: tuple[str, ...] = ("alarmd", "exporter")
    max_repetitions: int = MAX_REPETITIONS
    profile: bool | None = None  # None: profile alarmd only when it misses the target
    pin: bool = True  # with two or more CPUs: the manager on the first, everything else on the rest


def pinning(options: Options) -> tuple[int, set[int]] | None:
    """(the manager's CPU, the CPUs of agents and scraper) when pinning is on and there are two CPUs."""
    usable = sorted(os.sched_getaffinity(0))
    if not options.pin or len(usable) < 2:
        return None
    return usable[0], set(usable[1:])


def options_from(
    quick: bool,
    *,
    agents: int | None = None,
    duration: float | None = None,
    peers: Sequence[str] = ("alarmd", "exporter"),
    profile: bool | None = None,
) -> Options:
    """Options from command-line values (``--quick``: 4 agents, 2 s per peer)."""
    return Options(
        agents=agents if agents is not None else (QUICK_AGENTS if quick else AGENTS),
        duration=duration if duration is not None else (QUICK_DURATION if quick else DURATION),
        peers=tuple(peers),
        profile=profile,
    )


@dataclass
class PeerResult:
    """What one manager did in its measured window."""

    name: str
    varbinds: int
    polls: int
    failed_polls: int
    cpu_seconds: float
    wall_seconds: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def varbinds_per_cpu_s(self) -> float:
        """Varbinds per CPU-second of the manager process."""
        return self.varbinds / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def varbinds_per_wall_s(self) -> float:
        """Varbinds per second of wall time."""
        return self.varbinds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        good = self.polls - self.failed_polls
        return {
            **asdict(self),
            "varbinds_per_cpu_s": round(self.varbinds_per_cpu_s),
            "varbinds_per_wall_s": round(self.varbinds_per_wall_s),
            "varbinds_per_poll": round(self.varbinds / good, 2) if good else None,
            "cpu_share": round(self.cpu_seconds / self.wall_seconds, 3) if self.wall_seconds else None,
        }


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process, all its threads, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state); utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


# --------------------------------------------------------------------------- alarmd (worker process)


class CountingClient:
    """An SNMP client that counts the column values its walks returned, then hands them on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.varbinds = 0

    async def get(self, target: Any, oids: Sequence[str]) -> dict[str, Any]:
        """GET through the inner client."""
        result: dict[str, Any] = await self.inner.get(target, oids)
        return result

    async def walk(
        self, target: Any, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, Any]]:
        """Walk through the inner client and count what came back."""
        walked: dict[str, dict[str, Any]] = await self.inner.walk(target, columns, max_repetitions)
        self.varbinds += sum(len(values) for values in walked.values())
        return walked

    def close(self) -> None:
        """Close the inner client."""
        self.inner.close()


async def _poll_devices(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then poll every device back to back for ``spec["duration"]`` seconds and count."""
    profile = load_profiles([Path(spec["profile"])])[snmpd_fleet.PROFILE_NAME]
    polling = PollingConfig(
        interval=60.0,
        timeout=TIMEOUT,
        retries=1,
        max_in_flight=spec["max_in_flight"],
        max_repetitions=spec["max_repetitions"],
    )
    credentials = SnmpV2c.model_validate({"version": "2c", "community": spec["community"]})
    client = CountingClient(FastSnmpClient(polling.max_in_flight))
    metrics, clock = Metrics(), SystemClock()
    pollers = [
        DevicePoller(
            DeviceConfig.model_validate(
                {
                    "name": f"bench-{i:04d}",
                    "kind": "cpe_router",
                    "address": "127.0.0.1",
                    "port": port,
                    "snmp": {"version": "2c", "community": spec["community"]},
                    "profile": snmpd_fleet.PROFILE_NAME,
                }
            ),
            credentials=credentials,
            profile=profile,
            polling=polling,
            client=client,
            clock=clock,
            metrics=metrics,
        )
        for i, port in enumerate(spec["ports"])
    ]
    polls = failed = samples = 0

    async def loop(poller: DevicePoller, stop_at: float) -> None:
        nonlocal polls, failed, samples
        while time.monotonic() < stop_at:
            out = await poller.poll_once()
            polls += 1
            samples += len(out)
            if out[0].metric == "device_up" and out[0].value == 0:
                failed += 1

    try:
        for _ in range(WARMUP_ROUNDS):
            warm = await asyncio.gather(*(p.poll_once() for p in pollers))
            down = [p.device.name for p, out in zip(pollers, warm, strict=True) if out[0].value == 0]
            if down:
                raise RuntimeError(f"warm-up polls failed for {down[:5]} ({len(down)} devices)")
        heap.settle()  # as `alarmd run` does once it is up
        profiler = cProfile.Profile() if spec["cprofile"] else None
        varbinds0 = client.varbinds
        wall0, cpu0, usage0 = time.monotonic(), cpu_seconds(), os.times()
        if profiler is not None:
            profiler.enable()
        await asyncio.gather(*(loop(p, wall0 + spec["duration"]) for p in pollers))
        if profiler is not None:
            profiler.disable()
        wall, cpu, usage = time.monotonic() - wall0, cpu_seconds() - cpu0, os.times()
    finally:
        client.close()
    result: dict[str, Any] = {
        "varbinds": client.varbinds - varbinds0,
        "polls": polls,
        "failed_polls": failed,
        "samples": samples,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "getrusage_cpu_seconds": (usage.user - usage0.user) + (usage.system - usage0.system),
        "malformed": client.inner.malformed,
        "unmatched": client.inner.unmatched,
    }
    if profiler is not None:
        result["profile"] = profile_text(profiler)
    return result


def profile_text(profiler: cProfile.Profile) -> dict[str, Any]:
    """The top functions of a profile by own time and by cumulative time, and own time per file."""
    out: dict[str, Any] = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(key).print_stats(PROFILE_LINES)
        out[key] = buf.getvalue()
    per_file: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, *_) in raw.items():
        name = "builtins and C" if filename == "~" else Path(filename).name
        per_file[name] = per_file.get(name, 0.0) + own
    total = sum(per_file.values()) or 1.0
    out["own_time_share_by_file"] = {
        name: round(own / total, 3) for name, own in sorted(per_file.items(), key=lambda kv: -kv[1])[:15]
    }
    return out


def worker_main(spec_path: Path, out_path: Path) -> int:
    """The alarmd side in its own process: read the spec, poll under uvloop, write the counts."""
    alarmd_logging.setup("info")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec["cpu"] is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    result = uvloop.run(_poll_devices(spec))
    out_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


def bench_alarmd(
    ports: Sequence[int],
    options: Options,
    workdir: Path,
    *,
    duration: float,
    cpu: int | None,
    cprofile: bool = False,
) -> dict[str, Any]:
    """Run the worker process against ``ports`` and return what it counted."""
    spec = {
        "ports": list(ports),
        "community": COMMUNITY,
        "duration": duration,
        "max_repetitions": options.max_repetitions,
        "max_in_flight": MAX_IN_FLIGHT,
        "profile": str(snmpd_fleet.write_profile(workdir)),
        "cprofile": cprofile,
        "cpu": cpu,
    }
    spec_path, out_path, log_path = (
        workdir / "worker.json",
        workdir / "worker-out.json",
        workdir / "worker.log",
    )
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.polling", "worker", str(spec_path), str(out_path)]
    with log_path.open("wb") as log:
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            timeout=duration + 120,
            check=False,
        )
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"the alarmd poller process failed ({proc.returncode}): {_tail(log_path)}")
    result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    return result


def run_alarmd(ports: Sequence[int], options: Options, workdir: Path, cpu: int | None) -> PeerResult:
    """The alarmd side's measured window as a :class:`PeerResult`."""
    raw = bench_alarmd(ports, options, workdir, duration=options.duration, cpu=cpu)
    good = raw["polls"] - raw["failed_polls"]
    return PeerResult(
        "alarmd",
        varbinds=raw["varbinds"],
        polls=raw["polls"],
        failed_polls=raw["failed_polls"],
        cpu_seconds=raw["cpu_seconds"],
        wall_seconds=round(raw["wall_seconds"], 3),
        detail={
            "getrusage_cpu_seconds": round(raw["getrusage_cpu_seconds"], 3),
            "samples_per_poll": round(raw["samples"] / good, 2) if good else None,
            "malformed_datagrams": raw["malformed"],
            "unmatched_responses": raw["unmatched"],
            "client": "FastSnmpClient (v2c GETBULK, BER codec), DevicePoller.poll_once, uvloop",
            "max_in_flight": MAX_IN_FLIGHT,
        },
    )


# --------------------------------------------------------------------------- prometheus-snmp-exporter


def exporter_config(community: str, max_repetitions: int) -> str:
    """``snmp.yml`` (0.21 layout: modules at the top, auth inside) walking the six columns."""
    lookup = (
        "    lookups:\n"
        "    - labels: [ifIndex]\n"
        "      labelname: ifName\n"
        f"      oid: {COLUMNS['ifName']}\n"
        "      type: DisplayString\n"
    )
    types = {
        "ifName": "DisplayString",
        "ifOperStatus": "gauge",
        "ifHighSpeed": "gauge",
        "ifHCInOctets": "counter",
        "ifHCOutOctets": "counter",
        "ifInErrors": "counter",
    }
    lines = [
        "# generated by bench/polling.py: the six IF-MIB columns, ifName also as a lookup label",
        f"{MODULE}:",
        "  walk:",
        *[f"  - {oid}" for oid in COLUMNS.values()],
        "  version: 2",
        f"  max_repetitions: {max_repetitions}",
        "  retries: 1",
        f"  timeout: {TIMEOUT:g}s",
        "  auth:",
        f"    community: {community}",
        "  metrics:",
    ]
    for name, oid in COLUMNS.items():
        lines += [
            f"  - name: {name}",
            f"    oid: {oid}",
            f"    type: {types[name]}",
            "    indexes:",
            "    - labelname: ifIndex",
            "      type: gauge",
            lookup.rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


class Exporter:
    """prometheus-snmp-exporter on 127.0.0.1 at a port chosen at run time."""

    def __init__(self, workdir: Path, max_repetitions: int, cpu: int | None) -> None:
        self.workdir = workdir
        self.config = workdir / "snmp.yml"
        self.config.write_text(exporter_config(COMMUNITY, max_repetitions), encoding="utf-8")
        self.log = workdir / "exporter.log"
        self.port = free_tcp_port()
        taskset = shutil.which("taskset")
        pin = [taskset, "-c", str(cpu)] if cpu is not None and taskset else []
        self.argv = [
            *pin,
            EXPORTER,
            f"--config.file={self.config}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Exporter:
        check = subprocess.run(
            [EXPORTER, f"--config.file={self.config}", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(
                f"snmp_exporter rejects {self.config}: {(check.stdout + check.stderr)[-2000:]}"
            )
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"snmp_exporter exited ({self.proc.returncode}): {_tail(self.log)}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"snmp_exporter did not answer on 127.0.0.1:{self.port} in {timeout:g}s")

    def stop(self) -> None:
        """Stop the exporter (SIGTERM, SIGKILL after 5 s)."""
        if self.proc is not None:
            stop_process(self.proc)

    @property
    def pid(self) -> int:
        """The exporter's PID."""
        if self.proc is None:
            raise RuntimeError("snmp_exporter is not running")
        return self.proc.pid


_SAMPLE_PREFIXES: Final = tuple(f"\n{name}{{".encode() for name in COLUMNS)
_PDUS = re.compile(rb"\nsnmp_scrape_pdus_returned(?:\{[^}]*\})? (\S+)")


@dataclass
class _Scraper:
    """One device's scrape loop: keep-alive HTTP to the exporter, counting the six columns' samples."""

    exporter_port: int
    target_port: int
    scrapes: int = 0
    failed: int = 0
    short: int = 0
    varbinds: int = 0
    pdus: int = 0
    errors: list[str] = field(default_factory=list)

    def once(self, conn: http.client.HTTPConnection) -> tuple[int, int] | None:
        path = f"/snmp?module={MODULE}&target=127.0.0.1:{self.target_port}"
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            self.errors.append(f"HTTP {response.status}: {body[:200]!r}")
            return None
        count = sum(body.count(prefix) for prefix in _SAMPLE_PREFIXES)
        found = _PDUS.search(body)
        return count, int(float(found.group(1))) if found else 0

    def run(self, warmup: int, start: threading.Barrier, window: _Window) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.exporter_port, timeout=30)
        try:
            for _ in range(warmup):
                if self.once(conn) is None:
                    self.failed += 1
            start.wait()
            while time.monotonic() < window.stop_at:
                self.scrapes += 1
                try:
                    got = self.once(conn)
                except (OSError, http.client.HTTPException) as exc:
                    self.errors.append(repr(exc))
                    conn.close()
                    got = None
                if got is None:
                    self.failed += 1
                    continue
                self.varbinds += got[0]
                self.pdus += got[1]
                if got[0] < VARBINDS_PER_POLL:
                    self.short += 1
        finally:
            conn.close()


@dataclass
class _Window:
    """The measured window, opened by the last scraper to finish its warm-up."""

    pid: int
    duration: float
    stop_at: float = 0.0
    started: float = 0.0
    cpu0: float = 0.0

    def open(self) -> None:
        self.started = time.monotonic()
        self.stop_at = self.started + self.duration
        self.cpu0 = cpu_seconds(self.pid)


def run_exporter(ports: Sequence[int], options: Options, workdir: Path, cpu: int | None) -> PeerResult:
    """Scrape the exporter for every device back to back for ``duration`` seconds; count and time it."""
    with Exporter(workdir, options.max_repetitions, cpu) as exporter:
        window = _Window(exporter.pid, options.duration)
        scrapers = [_Scraper(exporter.port, port) for port in ports]
        start = threading.Barrier(len(scrapers), action=window.open)
        threads = [
            threading.Thread(
                target=s.run, args=(WARMUP_ROUNDS, start, window), name=f"scrape-{s.target_port}"
            )
            for s in scrapers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(options.duration + 120)
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError("a scraper thread did not finish within the window plus 120 s")
        wall, used = time.monotonic() - window.started, cpu_seconds(exporter.pid) - window.cpu0
        argv = exporter.argv
        log = _tail(exporter.log)
    errors = [e for s in scrapers for e in s.errors]
    return PeerResult(
        "exporter",
        varbinds=sum(s.varbinds for s in scrapers),
        polls=sum(s.scrapes for s in scrapers),
        failed_polls=sum(s.failed for s in scrapers),
        cpu_seconds=used,
        wall_seconds=round(wall, 3),
        detail={
            "short_scrapes": sum(s.short for s in scrapers),
            "pdus_returned": sum(s.pdus for s in scrapers),
            "errors": errors[:10],
            "argv": argv,
            "log_tail": log,
            "scraper": "keep-alive HTTP/1.1, one thread per device, in the bench process",
        },
    )


# --------------------------------------------------------------------------- the workload


def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Start the fleet, run each peer, profile alarmd if it misses the target; the full result."""
    results: dict[str, PeerResult] = {}
    profile: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="alarmd-bench-polling-") as tmp,
        Fleet(options.agents, COMMUNITY) as fleet,
    ):
        rows = fleet.verify()
        say(f"polling: {options.agents} snmpd agents x {INTERFACES} interfaces, {rows} rows per column")
        pinned = pinning(options)
        affinity = os.sched_getaffinity(0)
        if pinned:  # agents, this thread and the scraper threads it starts stay off the manager's CPU
            for pid in fleet.pids():
                os.sched_setaffinity(pid, pinned[1])
            os.sched_setaffinity(0, pinned[1])
        try:
            runners = {"alarmd": run_alarmd, "exporter": run_exporter}
            for name in options.peers:
                workdir = Path(tmp) / name
                workdir.mkdir()
                say(f"polling: {name} for {options.duration:g}s")
                agents_cpu0, started = _fleet_cpu(fleet), time.monotonic()
                results[name] = runners[name](fleet.ports, options, workdir, pinned[0] if pinned else None)
                results[name].detail["agents_cpu_share"] = round(
                    (_fleet_cpu(fleet) - agents_cpu0) / (time.monotonic() - started), 3
                )
            ratio = _ratio(results)
            wanted = (
                options.profile
                if options.profile is not None
                else (ratio is not None and ratio < TARGET_RATIO)
            )
            if wanted and "alarmd" in options.peers:
                seconds = min(options.duration, PROFILE_SECONDS)
                say(f"polling: profiling alarmd for {seconds:g}s (cProfile)")
                workdir = Path(tmp) / "alarmd-profile"
                workdir.mkdir()
                raw = bench_alarmd(
                    fleet.ports,
                    options,
                    workdir,
                    duration=seconds,
                    cpu=pinned[0] if pinned else None,
                    cprofile=True,
                )
                profile = {
                    "seconds": seconds,
                    "note": "cProfile slows the process; use the shares, not the absolute times",
                    "varbinds": raw["varbinds"],
                    "cpu_seconds": round(raw["cpu_seconds"], 3),
                    **raw["profile"],
                }
        finally:
            os.sched_setaffinity(0, affinity)
    return {
        "workload": "polling",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "agents": options.agents,
            "devices": options.agents,
            "interfaces_per_device": INTERFACES,
            "columns": COLUMNS,
            "varbinds_per_device_poll": VARBINDS_PER_POLL,
            "seconds_per_peer": options.duration,
            "warmup_rounds": WARMUP_ROUNDS,
            "max_repetitions": options.max_repetitions,
            "concurrency": f"one poll in flight per device ({options.agents})",
            "agent_getbulk_limit": "net-snmp default maxGetbulkResponses 100 varbinds per response",
            "agent": "net-snmp snmpd, own network namespace (lo, 24 veth pairs, 1 tap), socket-activated",
            "pinning": (
                {"manager_cpu": pinned[0], "agents_and_scraper_cpus": sorted(pinned[1])} if pinned else None
            ),
            "alarmd_profile": snmpd_fleet.PROFILE_YAML,
            "exporter_config": exporter_config(COMMUNITY, options.max_repetitions),
        },
        "host": host_facts(),
        "peers": {name: r.as_dict() for name, r in results.items()},
        "alarmd_varbinds_per_cpu_s": _rate(results, "alarmd"),
        "exporter_varbinds_per_cpu_s": _rate(results, "exporter"),
        "ratio": _ratio(results),
        "target_ratio": TARGET_RATIO,
        "profile": profile,
    }


def _fleet_cpu(fleet: Fleet) -> float:
    """CPU seconds the agents used so far, all of them together."""
    return sum(cpu_seconds(pid) for pid in fleet.pids())


def _rate(results: dict[str, PeerResult], name: str) -> int | None:
    return round(results[name].varbinds_per_cpu_s) if name in results else None


def _ratio(results: dict[str, PeerResult]) -> float | None:
    alarmd, exporter = results.get("alarmd"), results.get("exporter")
    if alarmd is None or exporter is None or not exporter.varbinds_per_cpu_s:
        return None
    return round(alarmd.varbinds_per_cpu_s / exporter.varbinds_per_cpu_s, 3)


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, one row per peer, then the ratio."""
    lines = [
        f"{'peer':<10} {'varbinds':>10} {'polls':>7} {'failed':>6} {'cpu s':>7} {'wall s':>7} "
        f"{'vb/cpu-s':>10} {'vb/wall-s':>10} {'vb/poll':>8}"
    ]
    for name, p in result["peers"].items():
        lines.append(
            f"{name:<10} {p['varbinds']:>10} {p['polls']:>7} {p['failed_polls']:>6} {p['cpu_seconds']:>7.2f} "
            f"{p['wall_seconds']:>7.2f} {p['varbinds_per_cpu_s']:>10} {p['varbinds_per_wall_s']:>10} "
            f"{p['varbinds_per_poll'] or 0:>8}"
        )
    lines.append(
        f"ratio alarmd/exporter (varbinds per CPU-second): {result['ratio']} (target {TARGET_RATIO})"
    )
    return "\n".join(lines)


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``polling.json`` and return the summary for ``latest.json``."""
    if "exporter" in options.peers and not Path(EXPORTER).exists():
        raise RuntimeError(f"{EXPORTER} is missing: apt-get install prometheus-snmp-exporter")
    if shutil.which("snmpbulkwalk") is None:
        raise RuntimeError("snmpbulkwalk is missing: apt-get install snmp")
    result = bench(options, say)
    write_result(results_dir, "polling", result)
    say(table(result))
    peers = result["peers"]
    return {
        "alarmd_varbinds_per_cpu_s": result["alarmd_varbinds_per_cpu_s"],
        "exporter_varbinds_per_cpu_s": result["exporter_varbinds_per_cpu_s"],
        "ratio": result["ratio"],
        "target_ratio": TARGET_RATIO,
        "alarmd_varbinds_per_wall_s": peers["alarmd"]["varbinds_per_wall_s"] if "alarmd" in peers else None,
        "exporter_varbinds_per_wall_s": peers["exporter"]["varbinds_per_wall_s"]
        if "exporter" in peers
        else None,
        "devices": options.agents,
        "seconds_per_peer": options.duration,
        "versions": {
            "net_snmp": result["host"]["net_snmp"],
            "snmp_exporter": result["host"]["snmp_exporter"],
            "python": result["host"]["python"],
            "alarmd": result["host"]["alarmd"],
        },
        "timestamp": result["timestamp"],
        "details": "polling.json",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.polling [--quick]`` runs the workload; ``worker SPEC OUT`` is the alarmd side."""
    parser = argparse.ArgumentParser(prog="python -m bench.polling", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    worker = sub.add_parser("worker", help="the alarmd poller process (started by the workload)")
    worker.add_argument("spec", type=Path)
    worker.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="4 agents, 2 s per peer")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--profile", action="store_true", default=None, help="always profile alarmd")
    parser.add_argument("--no-profile", action="store_false", dest="profile", help="never profile alarmd")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        return worker_main(args.spec, args.out)
    options = options_from(args.quick, agents=args.agents, duration=args.duration, profile=args.profile)
    print(json.dumps(run(options, args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
