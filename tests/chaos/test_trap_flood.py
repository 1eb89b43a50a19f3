"""A trap flood at 10x the lossless rate for 30 s: bounded memory, every drop counted, polling on time."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import GOLD_CIRCUIT, PROFILES, REPO, Daemon, free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FLOOD_SECONDS = 30.0
RSS_BOUND_MB = 200.0
COMMUNITY = "alarmd-flood"

CONFIG = (
    """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{profiles}"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
credentials:
  flood: {{version: 2c, community: {community}}}
"""
    + GOLD_CIRCUIT
    + """\
traps:
  enabled: true
  listen: 127.0.0.1:{trap_port}
  credentials: [flood]
  definitions: ["{repo}/config/traps/*.yml"]
kafka:
  topics: {{work_orders: {topic}.workorders, notices: {topic}.notices}}
http: {{listen: "127.0.0.1:{http}"}}
"""
)


def lossless_capacity() -> int:
    """alarmd's lossless trap rate from the committed benchmark results."""
    latest = json.loads((REPO / "bench" / "results" / "latest.json").read_text(encoding="utf-8"))
    return int(latest["traps"]["alarmd_lossless_per_s"])


def send(port: int, rate: float, seconds: float, out: Path, first_id: int = 0) -> subprocess.Popen[bytes]:
    """The bench's paced trap sender as its own process, pinned away from CPU 0 when it can be."""
    cpus = sorted(os.sched_getaffinity(0))
    args = ["--port", str(port), "--rate", str(rate), "--duration", str(seconds)]
    args += ["--community", COMMUNITY, "--unique", "20000", "--first-id", str(first_id)]
    if len(cpus) > 1:
        args += ["--cpu", str(cpus[-1])]
    with out.open("wb") as stdout:
        return subprocess.Popen([sys.executable, "-m", "bench.sender", *args], cwd=REPO, stdout=stdout)


async def settle(daemon: Daemon) -> tuple[float, float, float]:
    """Wait until the trap counters stop moving; (received, dropped on the queue, dropped by the kernel)."""
    last: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    for _ in range(120):
        now = (
            daemon.metric("alarmd_traps_received_total"),
            daemon.metric("alarmd_traps_dropped_total"),
            daemon.metric("alarmd_traps_socket_drops"),
        )
        if now == last:
            return now
        last = now
        await asyncio.sleep(1.0)
    raise AssertionError(f"trap counters still moving: {last}")


async def test_a_flood_is_absorbed_with_every_drop_counted_and_polling_on_schedule(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, chaos_report: Callable[..., None]
) -> None:
    capacity = lossless_capacity()
    rate = 10 * capacity
    trap_port, http = free_port(socket.SOCK_DGRAM), free_port()
    topic = f"alarmd.flood.{uuid.uuid4().hex[:8]}"
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO,
            profiles=PROFILES,
            port=sim_network.port,
            trap_port=trap_port,
            community=COMMUNITY,
            topic=topic,
            http=http,
        )
    )
    daemon = Daemon(tmp_path, kafka_bootstrap, http)
    daemon.start()
    try:
        await daemon.wait_ready()
        periods_before = daemon.metric("alarmd_collection_periods_total", device="cpe-router-01")
        flood_out = tmp_path / "flood.json"
        sender = send(trap_port, rate, FLOOD_SECONDS, flood_out)
        started = time.monotonic()
        max_rss = daemon.rss_mb()
        while sender.poll() is None and time.monotonic() - started < FLOOD_SECONDS * 3:
            max_rss = max(max_rss, daemon.rss_mb())
            await asyncio.sleep(0.5)
        assert sender.wait(30) == 0
        flood_seconds = time.monotonic() - started
        periods = daemon.metric("alarmd_collection_periods_total", device="cpe-router-01") - periods_before
        flood = json.loads(flood_out.read_text())
        received, dropped, socket_drops = await settle(daemon)
        max_rss = max(max_rss, daemon.rss_mb())
        rejected = daemon.metric("alarmd_traps_rejected_total") + daemon.metric(
            "alarmd_traps_malformed_total"
        )

        # Every trap sent is accounted for: taken in, dropped on the full queue, or dropped by the kernel.
        assert rejected == 0
        assert received + dropped + socket_drops == flood["sent"], (flood, received, dropped, socket_drops)
        assert max_rss < RSS_BOUND_MB, f"RSS reached {max_rss:.0f} MiB"
        assert periods >= 0.8 * flood_seconds, f"{periods:.0f} polls in {flood_seconds:.0f}s of flood"
        assert daemon.get("/-/healthy") == (200, "OK\n")

        # Afterwards: healthy and lossless again at an ordinary rate.
        calm_out = tmp_path / "calm.json"
        calm = send(trap_port, 500, 4, calm_out, first_id=1_000_000)
        assert calm.wait(60) == 0
        calm_sent = json.loads(calm_out.read_text())["sent"]
        after = await settle(daemon)
        assert after[0] - received == calm_sent, "traps lost after the flood"
        assert after[1:] == (dropped, socket_drops)
        assert await daemon.stop() == 0
    finally:
        daemon.close()
    chaos_report(
        "3 trap flood at 10x lossless capacity",
        expected=int(flood["sent"]),
        delivered=int(received),
        duplicates=0,
        max_rss_mb=round(max_rss),
        drops_counted=int(dropped + socket_drops),
        note=(
            f"{flood['achieved_per_s']:.0f} traps/s offered for {flood['seconds']:.0f}s "
            f"(capacity {capacity}/s); "
            f"{int(dropped)} dropped on the full queue, {int(socket_drops)} by the kernel; "
            f"{periods:.0f} polls meanwhile; then {calm_sent}/{calm_sent} at 500/s"
        ),
    )
