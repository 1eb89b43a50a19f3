"""Trap intake: the highest lossless SNMPv2c trap rate of alarmd against Debian's snmptrapd.

Each peer listens on 127.0.0.1 at a port chosen at run time and is fed linkDown traps by
:mod:`bench.sender` (its own process) at stepped rates, ``duration`` seconds a step.  After a
step the peer is given time to drain, then what it received is compared with what was sent.
The lossless rate is the highest step losing < 0.1 %; a peer stops at its first lossy step.

* ``alarmd``: :class:`~alarmd.collector.traps.TrapReceiver` under uvloop with the shipped
  ``config/traps/standard.yml`` and a community credential, and a consumer task that runs every
  event through :meth:`~alarmd.rules.engine.RuleEngine.evaluate_event` with the shipped
  ``rules/*.yml``: decode, normalise, match.  Received = events the consumer finished.
* ``snmptrapd``: ``snmptrapd -f -C -c <conf> -Lf <log> -n -m '' -F '<marker> %b %v'`` (plus a
  newline) logging every trap as one line; received = lines starting with the marker.

Both get the same receive buffer (``min(8 MiB, net.core.rmem_max)``); with two or more CPUs the
receiver is pinned to CPU 0 and the sender to the last CPU, so the two never share a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import uvloop

from alarmd import heap
from alarmd import logging as alarmd_logging
from alarmd.clock import SystemClock
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.collector.traps import TrapReceiver
from alarmd.config import SnmpV2c, TrapsConfig, read_yaml
from alarmd.metrics import Metrics
from alarmd.rules.compile import compile_docs
from alarmd.rules.engine import RuleEngine
from bench.host import SNMPTRAPD, die_with_parent, host_facts, write_result
from bench.sender import encode_traps

ROOT: Final = Path(__file__).resolve().parent.parent
RATES: Final = (1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000, 80_000)
DURATION: Final = 10.0
QUICK_DURATION: Final = 2.0
LOSS_LIMIT: Final = 0.001  # a step is lossless when it loses less than 0.1 % of what was sent
COMMUNITY: Final = "alarmd-bench"
MARKER: Final = "alarmd-bench-trap"
WANTED_BUFFER: Final = 8 * 1024 * 1024  # alarmd's default traps.receive_buffer
SETTLE_QUIET: Final = 0.5  # a peer has drained once its count stays put this long ...
SETTLE_MAX: Final = 20.0  # ... or after this long, whichever is first
POLL: Final = 0.05
PROBE_ID: Final = 1 << 26  # request-id offset of readiness probes, far above any step's ids


@dataclass
class Step:
    """One rate step against one peer."""

    rate: int
    sent: int
    received: int
    send_errors: int
    send_seconds: float
    achieved_per_s: float
    drain_seconds: float
    socket_drops: int | None
    detail: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Traps sent but never received (negative if the peer saw more than was sent)."""
        return self.sent - self.received

    @property
    def loss_ratio(self) -> float:
        """Share of the sent traps that were lost."""
        return self.lost / self.sent if self.sent else 0.0

    @property
    def lossless(self) -> bool:
        """Whether this step lost less than :data:`LOSS_LIMIT` and the sender kept its rate."""
        return self.sent > 0 and self.loss_ratio < LOSS_LIMIT

    @property
    def sender_limited(self) -> bool:
        """Whether the sender fell more than 5 % short of the rate asked for (the result is a bound)."""
        return self.achieved_per_s < 0.95 * self.rate

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON-ready data."""
        return {
            **asdict(self),
            "lost": self.lost,
            "loss_ratio": round(self.loss_ratio, 6),
            "lossless": self.lossless,
            "sender_limited": self.sender_limited,
        }


@dataclass
class PeerResult:
    """Every step one peer ran, and its lossless rate."""

    name: str
    steps: list[Step]
    stopped: str
    receive_buffer: int | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lossless_per_s(self) -> int:
        """The highest step rate before the first lossy step (0 when the first step lost traps)."""
        best = 0
        for step in self.steps:
            if not step.lossless:
                break
            best = step.rate
        return best

    def as_dict(self) -> dict[str, Any]:
        """The peer's result as JSON-ready data."""
        return {
            "lossless_per_s": self.lossless_per_s,
            "stopped": self.stopped,
            "receive_buffer_granted": self.receive_buffer,
            "steps": [s.as_dict() for s in self.steps],
            **self.notes,
        }


class Peer(Protocol):
    """A trap receiver under test, started before the steps and stopped after them."""

    port: int

    def received(self) -> int:
        """Traps fully processed so far."""
        ...

    def detail(self) -> dict[str, int]:
        """Peer-specific counters (drops, rejections) so far."""
        ...

    def busy(self) -> bool:
        """Whether work is still queued inside the peer."""
        ...


@dataclass(frozen=True)
class Options:
    """What to run: rates, step length, peers, and CPU pinning."""

    rates: tuple[int, ...] = RATES
    duration: float = DURATION
    peers: tuple[str, ...] = ("alarmd", "snmptrapd")
    pin: bool = True


# --------------------------------------------------------------------------- host facts


def receive_buffer() -> int:
    """The buffer both peers ask for: alarmd's default, capped where snmptrapd would be capped."""
    try:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return WANTED_BUFFER
    return max(65_536, min(WANTED_BUFFER, rmem_max))


def cpus() -> tuple[int, int] | None:
    """(receiver CPU, sender CPU) when there are two usable CPUs to keep them apart."""
    usable = sorted(os.sched_getaffinity(0))
    return (usable[0], usable[-1]) if len(usable) >= 2 else None


def socket_info(port: int) -> tuple[int | None, int | None]:
    """The receive buffer and the drop counter of the UDP socket on 127.0.0.1:``port``, from ``ss``."""
    ss = shutil.which("ss")
    if ss is None:
        return None, None
    try:
        out = subprocess.run(
            [ss, "-uanmH", "src", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    rb = re.search(r"\brb(\d+)", out)
    drops = re.search(r"\bd(\d+)\)", out)
    return (int(rb.group(1)) if rb else None), (int(drops.group(1)) if drops else None)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- stepping


async def send(
    port: int, rate: int, duration: float, first_id: int, cpu: int | None, *, distinct: bool = False
) -> dict[str, float]:
    """Run :mod:`bench.sender` in its own process and return its summary."""
    argv = [sys.executable, "-m", "bench.sender", "--port", str(port), "--rate", str(rate)]
    argv += ["--duration", str(duration), "--community", COMMUNITY, "--first-id", str(first_id)]
    if distinct:
        argv.append("--distinct")
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=duration * 2 + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"the sender did not finish a {duration}s step at {rate}/s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the sender failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    result: dict[str, float] = json.loads(out)
    return result


async def settle(peer: Peer) -> float:
    """Wait until the peer's count stops moving and nothing is queued in it; the seconds waited."""
    start = time.monotonic()
    last, quiet_since = peer.received(), start
    while (now := time.monotonic()) - start < SETTLE_MAX:
        await asyncio.sleep(POLL)
        count = peer.received()
        if count != last or peer.busy():
            last, quiet_since = count, time.monotonic()
        elif now - quiet_since >= SETTLE_QUIET:
            break
    return round(time.monotonic() - start, 3)


async def probe(peer: Peer, what: str) -> None:
    """Send one trap and wait for the peer to count it: the whole path works before timing starts."""
    before = peer.received()
    (packet,) = encode_traps(COMMUNITY.encode(), 1, PROBE_ID)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet, ("127.0.0.1", peer.port))
    for _ in range(200):  # 10 s
        if peer.received() > before:
            await settle(peer)
            return
        await asyncio.sleep(POLL)
    raise RuntimeError(f"{what} did not take a probe trap within 10 s: {peer.detail()}")


async def run_steps(name: str, peer: Peer, options: Options, say: Callable[[str], None]) -> PeerResult:
    """Step through the rates until the first lossy (or sender-limited) step."""
    pinned = cpus() if options.pin else None
    steps: list[Step] = []
    stopped = "all rates lossless"
    first_id = 0
    _, drops_before = socket_info(peer.port)
    for rate in options.rates:
        count_before, detail_before = peer.received(), peer.detail()
        summary = await send(peer.port, rate, options.duration, first_id, pinned[1] if pinned else None)
        drained = await settle(peer)
        first_id += int(summary["sent"] + summary["errors"])
        _, drops_after = socket_info(peer.port)
        detail_after = peer.detail()
        step = Step(
            rate=rate,
            sent=int(summary["sent"]),
            received=peer.received() - count_before,
            send_errors=int(summary["errors"]),
            send_seconds=summary["seconds"],
            achieved_per_s=summary["achieved_per_s"],
            drain_seconds=drained,
            socket_drops=(
                drops_after - drops_before if drops_after is not None and drops_before is not None else None
            ),
            detail={k: v - detail_before.get(k, 0) for k, v in detail_after.items()},
        )
        drops_before = drops_after
        steps.append(step)
        say(
            f"  {name:<10} {rate:>7}/s  sent {step.sent:>7}  received {step.received:>7}  "
            f"loss {step.loss_ratio:7.3%}  (sender {step.achieved_per_s:.0f}/s, drained in {drained}s)"
        )
        if not step.lossless:
            stopped = f"lost {step.loss_ratio:.3%} at {rate}/s"
            break
        if step.sender_limited:
            stopped = f"sender reached only {step.achieved_per_s:.0f}/s of {rate}/s"
            break
    rb, _ = socket_info(peer.port)
    return PeerResult(name, steps, stopped, rb)


# --------------------------------------------------------------------------- alarmd


class AlarmdPeer:
    """alarmd's trap path in this process: TrapReceiver → queue → RuleEngine.evaluate_event."""

    def __init__(self, buffer: int) -> None:
        config = TrapsConfig(enabled=True, listen="127.0.0.1:0", receive_buffer=buffer, credentials=["bench"])
        credentials = {"bench": SnmpV2c.model_validate({"version": "2c", "community": COMMUNITY})}
        definitions = TrapDefinitions.load_globs(["traps/standard.yml"], ROOT / "config")
        rules = compile_docs(read_yaml(p) for p in sorted((ROOT / "rules").glob("*.yml")))
        self.engine = RuleEngine(rules)
        self.metrics = Metrics()
        self.receiver = TrapReceiver(config, credentials, definitions, self.metrics, SystemClock())
        self.port = 0
        self.events = 0
        self.matched = 0
        self._busy = False
        self._consumer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the receiver and start the consumer."""
        await self.receiver.start()
        if self.receiver.port is None:
            raise RuntimeError("the trap receiver did not report its port")
        self.port = self.receiver.port
        self._consumer = asyncio.create_task(self._consume(), name="bench-trap-consumer")
        heap.settle()  # as `alarmd run` does once it is up

    async def stop(self) -> None:
        """Stop the receiver and the consumer."""
        await self.receiver.stop()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer

    async def _consume(self) -> None:
        queue, engine = self.receiver.queue, self.engine
        while True:
            event = await queue.get()
            self._busy = True
            if engine.evaluate_event(event):
                self.matched += 1
            self.events += 1
            self._busy = not queue.empty()

    def received(self) -> int:
        """Events the rule engine has evaluated."""
        return self.events

    def busy(self) -> bool:
        """Whether events wait in the receiver's queue."""
        return self._busy or not self.receiver.queue.empty()

    def detail(self) -> dict[str, int]:
        """The trap counters of alarmd itself."""
        return {
            "traps_received": _total(self.metrics.traps_received),
            "traps_dropped": _total(self.metrics.traps_dropped),
            "traps_rejected": _total(self.metrics.traps_rejected),
            "traps_malformed": _total(self.metrics.traps_malformed),
            "rule_matches": self.matched,
        }


def _total(metric: Any) -> int:
    """The sum of a prometheus_client counter's ``_total`` samples, over all its labels."""
    return int(sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total")))


async def bench_alarmd(options: Options, say: Callable[[str], None]) -> PeerResult:
    """Run the steps against alarmd's trap path in this process (under uvloop)."""
    pinned = cpus() if options.pin else None
    affinity = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {pinned[0]})
    peer = AlarmdPeer(receive_buffer())
    await peer.start()
    try:
        await probe(peer, "alarmd")
        result = await run_steps("alarmd", peer, options, say)
    finally:
        await peer.stop()
        os.sched_setaffinity(0, affinity)
    result.notes["queue_size"] = peer.receiver.queue.maxsize
    result.notes["rules"] = len(peer.engine.rules)
    return result


# --------------------------------------------------------------------------- snmptrapd


class SnmptrapdPeer:
    """Debian's snmptrapd logging each trap as one marker line to a file."""

    def __init__(self, workdir: Path, buffer: int) -> None:
        self.workdir = workdir
        self.port = free_udp_port()
        self.log = workdir / "snmptrapd.log"
        self.conf = workdir / "snmptrapd.conf"
        self.stderr = workdir / "snmptrapd.stderr"
        self.conf.write_text(
            f"authCommunity log {COMMUNITY}\ndisableAuthorization no\n[snmp] serverRecvBuf {buffer}\n",
            encoding="ascii",
        )
        self.argv = [
            SNMPTRAPD, "-f", "-C", "-c", str(self.conf), "-Lf", str(self.log), "-n", "-m", "",
            "-F", f"{MARKER} %b %v\\n", f"udp:127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._offset = 0
        self._partial = b""
        self._marker = f"\n{MARKER} ".encode()

    async def start(self, cpu: int | None) -> None:
        """Start snmptrapd and wait until it has logged its startup line."""
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(self.workdir / "persist")}
        with self.stderr.open("wb") as stderr:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; it lives for all steps
                self.argv,
                cwd=self.workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        for _ in range(200):  # 10 s
            if self.proc.poll() is not None:
                err = self.stderr.read_text(encoding="utf-8", errors="replace")
                raise RuntimeError(f"snmptrapd exited with {self.proc.returncode}: {err[-2000:]}")
            if self.log.exists() and b"NET-SNMP version" in self.log.read_bytes():
                return
            await asyncio.sleep(POLL)
        raise RuntimeError(f"snmptrapd did not start within 10 s: {' '.join(self.argv)}")

    async def stop(self) -> None:
        """Stop snmptrapd (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        for _ in range(100):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(POLL)
        self.proc.kill()
        self.proc.wait(timeout=5)

    def received(self) -> int:
        """Marker lines logged so far (read incrementally from the log file)."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        buf = self._partial + chunk  # _partial always starts at the start of a line
        cut = buf.rfind(b"\n") + 1  # count complete lines only; keep the rest for next time
        self._count += (b"\n" + buf[:cut]).count(self._marker)
        self._partial = buf[cut:]
        return self._count

    def busy(self) -> bool:
        """Never: the backlog of snmptrapd is not visible; :func:`settle` waits for the count to settle."""
        return False

    def detail(self) -> dict[str, int]:
        """Nothing beyond the log-line count."""
        return {}


async def bench_snmptrapd(options: Options, say: Callable[[str], None]) -> PeerResult:
    """Run the steps against snmptrapd."""
    pinned = cpus() if options.pin else None
    with tempfile.TemporaryDirectory(prefix="alarmd-bench-snmptrapd-") as tmp:
        peer = SnmptrapdPeer(Path(tmp), receive_buffer())
        await peer.start(pinned[0] if pinned else None)
        try:
            await probe(peer, "snmptrapd")
            result = await run_steps("snmptrapd", peer, options, say)
        finally:
            await peer.stop()
        result.notes["argv"] = peer.argv
        result.notes["conf"] = peer.conf.read_text(encoding="ascii")
    return result


# --------------------------------------------------------------------------- the workload


PEERS: Final = {"alarmd": bench_alarmd, "snmptrapd": bench_snmptrapd}


async def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Run every peer one after the other and return the full result."""
    results: dict[str, PeerResult] = {}
    for name in options.peers:
        say(f"traps: {name} ({len(options.rates)} steps max, {options.duration:g}s each)")
        results[name] = await PEERS[name](options, say)
    alarmd, snmptrapd = results.get("alarmd"), results.get("snmptrapd")
    ratio = (
        round(alarmd.lossless_per_s / snmptrapd.lossless_per_s, 3)
        if alarmd is not None and snmptrapd is not None and snmptrapd.lossless_per_s
        else None
    )
    pinned = cpus() if options.pin else None
    return {
        "workload": "traps",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "rates_per_s": list(options.rates),
            "step_seconds": options.duration,
            "loss_limit": LOSS_LIMIT,
            "receive_buffer_requested": receive_buffer(),
            "pinning": {"receiver_cpu": pinned[0], "sender_cpu": pinned[1]} if pinned else None,
            "trap": "SNMPv2c linkDown (ifIndex, ifAdminStatus, ifOperStatus), 64 ifIndex values",
        },
        "host": host_facts(),
        "peers": {name: r.as_dict() for name, r in results.items()},
        "alarmd_lossless_per_s": alarmd.lossless_per_s if alarmd else None,
        "snmptrapd_lossless_per_s": snmptrapd.lossless_per_s if snmptrapd else None,
        "ratio": ratio,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table, one row per step, then the summary."""
    lines = [
        f"{'peer':<10} {'rate/s':>8} {'sent':>8} {'received':>9} {'lost':>7} {'loss':>8} "
        f"{'sender/s':>9} {'sock drops':>10}"
    ]
    for name, peer in result["peers"].items():
        for s in peer["steps"]:
            drops = "-" if s["socket_drops"] is None else str(s["socket_drops"])
            lines.append(
                f"{name:<10} {s['rate']:>8} {s['sent']:>8} {s['received']:>9} {s['lost']:>7} "
                f"{s['loss_ratio']:>8.3%} {s['achieved_per_s']:>9.0f} {drops:>10}"
            )
        lines.append(f"{name:<10} lossless: {peer['lossless_per_s']}/s ({peer['stopped']})")
    lines.append(f"ratio alarmd/snmptrapd: {result['ratio']}")
    return "\n".join(lines)


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload under uvloop, write ``traps.json`` and return the summary for ``latest.json``."""
    if "snmptrapd" in options.peers and not Path(SNMPTRAPD).exists():
        raise RuntimeError(f"{SNMPTRAPD} is missing: apt-get install snmptrapd (make system-deps)")
    alarmd_logging.setup("warning")
    result = uvloop.run(bench(options, say))
    write_result(results_dir, "traps", result)
    say(table(result))
    return {
        "alarmd_lossless_per_s": result["alarmd_lossless_per_s"],
        "snmptrapd_lossless_per_s": result["snmptrapd_lossless_per_s"],
        "ratio": result["ratio"],
        "timestamp": result["timestamp"],
        "step_seconds": options.duration,
        "details": "traps.json",
    }


def parse_rates(text: str) -> tuple[int, ...]:
    """``1000,2k,5k`` → (1000, 2000, 5000)."""
    out = []
    for item in text.split(","):
        part = item.strip().lower()
        out.append(int(float(part[:-1]) * 1000) if part.endswith("k") else int(part))
    if not out or min(out) <= 0:
        raise ValueError(f"'{text}' is not a list of positive rates")
    return tuple(out)


def options_from(rates: str | None, duration: float | None, quick: bool, peers: Sequence[str]) -> Options:
    """Options from command-line values (``--quick`` shortens steps to 2 s)."""
    return Options(
        rates=parse_rates(rates) if rates else RATES,
        duration=duration if duration is not None else (QUICK_DURATION if quick else DURATION),
        peers=tuple(peers),
    )
