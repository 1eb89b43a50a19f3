"""The daemon as a subprocess with a generated config, and what the fault-injection tests read off it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "config" / "profiles" / "*.yml"


CONGESTED = 1_125_000.0  # bytes/s on cpe-router-01's 10 Mbit/s WAN port: 90% occupancy
#: The inventory every single-circuit config shares: one gold customer, the simulated CPE router
#: (``{port}``: the simulated network's port) and the circuit on its GigabitEthernet0/0/1.
GOLD_CIRCUIT = """\
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {port},
     snmp: {{community: cpe-router-01}}}}
circuits:
  - id: CIR-0001
    customer: CUST-0001
    path: [{{device: cpe-router-01, interface: GigabitEthernet0/0/1}}]
"""
ONE_CIRCUIT = (
    """\
rule_files: [rules.yml]
profile_files: ["{profiles}"]
state_dir: {state}
polling: {{interval: 1s, timeout: 1s, retries: 0}}
clocks: {{observation: {observation}s}}
"""
    + GOLD_CIRCUIT
    + """\
kafka:
  request_timeout: 3s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
http: {{listen: "127.0.0.1:{http}"}}
"""
)
BANDWIDTH_RULE = """\
groups:
  - name: g
    rules:
      - alert: BandwidthOccupancyHigh
        expr: interface_utilisation_percent > 80
        for: 2s
        labels: {severity: major, alarm_class: data_anomaly}
"""


def one_circuit(
    config_dir: Path, sim_port: int, topic: str, http: int, *, state: str = "state", observation: float = 3600
) -> None:
    """Write a config of one gold circuit on the simulated CPE router and the 80% occupancy rule."""
    (config_dir / "alarmd.yml").write_text(
        ONE_CIRCUIT.format(
            profiles=PROFILES, state=state, port=sim_port, topic=topic, http=http, observation=observation
        )
    )
    (config_dir / "rules.yml").write_text(BANDWIDTH_RULE)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """``alarmd run -c <dir>``, JSON logs in ``<dir>/alarmd-<run>.log``, on an HTTP port the caller chose."""

    #: Run in the child before exec (e.g. to die with the parent); none by default.
    preexec: Callable[[], None] | None = None
    #: The Python whose ``alarmd`` runs: this one, or another release's venv (a rolling upgrade).
    python: str = sys.executable

    def __init__(self, config_dir: Path, bootstrap: str, http_port: int, *args: str) -> None:
        self.dir = config_dir
        self.bootstrap = bootstrap
        self.http_port = http_port
        self.args = args  # more arguments of `alarmd run`, e.g. --role collector
        self.run = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start a new run (the previous one must have ended)."""
        self.run += 1
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "alarmd",
                    "run",
                    "-c",
                    str(self.dir),
                    "--log-format",
                    "json",
                    *self.args,
                ],
                env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap},
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=self.preexec,  # noqa: PLW1509 - see the subclass that sets it
            )

    @property
    def log_path(self) -> Path:
        return self.dir / f"alarmd-{self.run}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def logs(self, run: int | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of a run (the current one by default)."""
        path = self.dir / f"alarmd-{run or self.run}.log"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def events(self, name: str, run: int | None = None) -> list[dict[str, Any]]:
        """Log lines whose event is ``name``."""
        return [e for e in self.logs(run) if e.get("event") == name]

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the daemon's HTTP port: (status, body); (0, reason) if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code), err.read().decode()
        except OSError as err:
            return 0, str(err)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels`` (0 if none)."""
        status, body = self.get("/metrics")
        assert status == 200, body
        total = 0.0
        for line in body.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/-/ready`` answers 200."""
        deadline = time.monotonic() + timeout
        while self.get("/-/ready")[0] != 200:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("the daemon did not become ready")
            await asyncio.sleep(0.2)

    def rss_mb(self) -> float:
        """The daemon's resident set size in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (a zombie once its group's session timeout passes)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused process goes on where it stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> int:
        """SIGTERM and the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 60)

    def close(self) -> None:
        """Make sure nothing is left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Inbox:
    """Every committed record of the topics (``read_committed``, as ticketing reads) and when it was read."""

    def __init__(self, bootstrap: str, *topics: str, isolation: str = "read_committed") -> None:
        self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            metadata_max_age_ms=1000,
            isolation_level=isolation,
        )
        self.records: list[tuple[str, dict[str, Any], float]] = []

    async def __aenter__(self) -> Inbox:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def collect(self, seconds: float) -> None:
        """Read for ``seconds``."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for records in (await self.consumer.getmany(timeout_ms=300)).values():
                self.records.extend((r.topic, json.loads(r.value), time.time()) for r in records)

    async def until(self, predicate: Any, timeout: float) -> bool:
        """Read until ``predicate(records)`` holds or ``timeout`` passes; whether it held."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                return False
            await self.collect(0.5)
        return True

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Messages whose ``type`` is ``kind``."""
        return [m for _, m, _ in self.records if m.get("type") == kind]
