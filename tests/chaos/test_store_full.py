"""The disk under the alarm store fills up: a loud error and a failing health check, then nothing lost."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import CONGESTED, Daemon, Inbox, free_port, one_circuit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RELIEVED = 125_000.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that can really fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte with one file; return it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (65536, 1):
            try:
                while out.write(b"\0" * chunk):
                    pass
            except OSError:
                pass
    return filler


async def test_a_full_disk_fails_health_loudly_and_the_work_order_follows_once_space_returns(
    tmp_path: Path,
    small_disk: Path,
    kafka_bootstrap: str,
    sim_network: Any,
    chaos_report: Callable[..., None],
) -> None:
    topic = f"alarmd.diskfull.{uuid.uuid4().hex[:8]}"
    http = free_port()
    one_circuit(tmp_path, sim_network.port, topic, http, state=str(small_disk / "state"))
    sim_network.set_rates({"cpe-router-01/2/in": RELIEVED})
    daemon = Daemon(tmp_path, kafka_bootstrap, http)
    async with Inbox(kafka_bootstrap, f"{topic}.workorders") as inbox:
        daemon.start()
        try:
            await daemon.wait_ready()
            assert daemon.get("/-/healthy") == (200, "OK\n")
            filler = fill(small_disk)

            # A fault while the disk is full: it cannot be stored, so it is not sent either.
            sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})
            assert await inbox.until(lambda _: daemon.events("store_write_failed"), 30), "no store error"
            status, body = daemon.get("/-/healthy")
            assert status == 503, body
            assert "unhealthy:" in body and "disk is full" in body and str(small_disk) in body, body
            assert daemon.metric("alarmd_store_writable") == 0
            assert daemon.metric("alarmd_store_write_errors_total", operation="announce") >= 1
            failure = daemon.events("store_write_failed")[0]
            assert "database or disk is full" in failure["error"] and failure["level"] == "error"
            await inbox.collect(3)
            assert inbox.of_type("work_order") == [], "a work order was sent that is not stored"
            errors = daemon.metric("alarmd_store_write_errors_total")

            # Space returns: the held change is stored and sent, once; health recovers.
            filler.unlink()
            assert await inbox.until(lambda _: inbox.of_type("work_order"), 60), (
                "no work order after recovery"
            )
            await inbox.collect(3)
            orders = inbox.of_type("work_order")
            assert len(orders) == 1, orders
            assert orders[0]["circuit"] == "CIR-0001"
            assert daemon.get("/-/healthy") == (200, "OK\n")
            assert daemon.metric("alarmd_store_writable") == 1
            assert await daemon.stop() == 0
        finally:
            daemon.close()
            sim_network.set_rates({"cpe-router-01/2/in": None})  # back to the recording's rate
    chaos_report(
        "5 disk full under the store",
        expected=1,
        delivered=len(orders),
        duplicates=len(orders) - 1,
        drops_counted=int(errors),
        note=f"{int(errors)} failed writes counted and retried; health 503 while full: {body.strip()[:120]}",
    )
