"""The daemon SIGKILLed at points of a fault's life and restarted: nothing forgotten or sent twice, on time.

(Between dispatch and escalation is covered by tests/test_lifecycle_e2e.py.)
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import CONGESTED, Daemon, Inbox, free_port, one_circuit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RELIEVED = 125_000.0
OBSERVATION = 10.0


def seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def setup(tmp_path: Path, sim_network: Any) -> tuple[str, int]:
    topic = f"alarmd.kill.{uuid.uuid4().hex[:8]}"
    http = free_port()
    one_circuit(tmp_path, sim_network.port, topic, http, observation=OBSERVATION)
    return topic, http


async def test_killed_before_dispatch_the_stored_work_order_is_sent_once_after_restart(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, chaos_report: Callable[..., None]
) -> None:
    topic, http = setup(tmp_path, sim_network)
    unreachable = f"127.0.0.1:{free_port()}"
    sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})
    daemon = Daemon(tmp_path, unreachable, http)  # the broker cannot be reached: orders wait in the outbox
    try:
        daemon.start()
        await daemon.wait_ready()
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            assert await inbox.until(lambda _: daemon.metric("alarmd_dispatch_outbox_depth") >= 1, 60)
            daemon.kill()
            daemon.bootstrap = kafka_bootstrap
            daemon.start()
            assert await inbox.until(lambda _: inbox.of_type("work_order") and inbox.of_type("notice"), 60)
            await inbox.collect(4)
            orders, notices = inbox.of_type("work_order"), inbox.of_type("notice")
            assert len(orders) == 1, orders
            assert len(notices) == 1, notices
            started = daemon.events("daemon_started")[0]
            assert started["pending"] >= 1, "the restart found the stored order"
            assert started["startup_objects_frozen"] > 10_000, "`alarmd run` settles its start-up heap"
            assert await daemon.stop() == 0
    finally:
        daemon.close()
        sim_network.set_rates({"cpe-router-01/2/in": None})  # back to the recording's rate
    chaos_report(
        "2 daemon SIGKILLed before dispatch (broker unreachable)",
        expected=2,
        delivered=len(orders) + len(notices),
        duplicates=len(orders) + len(notices) - 2,
        note="the order stored in the outbox before the kill was sent once by the next run",
    )


async def test_killed_during_observation_the_fault_closes_once_on_time(
    tmp_path: Path, kafka_bootstrap: str, sim_network: Any, chaos_report: Callable[..., None]
) -> None:
    topic, http = setup(tmp_path, sim_network)
    sim_network.set_rates({"cpe-router-01/2/in": CONGESTED})
    daemon = Daemon(tmp_path, kafka_bootstrap, http)
    try:
        async with Inbox(kafka_bootstrap, f"{topic}.workorders", f"{topic}.notices") as inbox:
            daemon.start()
            assert await inbox.until(lambda _: inbox.of_type("work_order"), 60)
            sim_network.set_rates({"cpe-router-01/2/in": RELIEVED})
            assert await inbox.until(lambda _: inbox.of_type("work_order_clear"), 60)
            clear = inbox.of_type("work_order_clear")[0]
            due = seconds(clear["cleared_at"]) + OBSERVATION
            await inbox.collect(2)
            assert not inbox.of_type("closed"), "closed before the observation ended"
            daemon.kill()  # in the middle of the observation window
            daemon.start()
            assert await inbox.until(lambda _: inbox.of_type("closed"), OBSERVATION + 30)
            await inbox.collect(4)
            closed = inbox.of_type("closed")
            clears = inbox.of_type("work_order_clear")
            assert len(closed) == 1, closed
            assert len(clears) == 1, clears
            assert len(inbox.of_type("work_order")) == 1
            assert seconds(closed[0]["sent_at"]) == pytest.approx(due, abs=2.5)
            assert await daemon.stop() == 0
    finally:
        daemon.close()
        sim_network.set_rates({"cpe-router-01/2/in": None})  # back to the recording's rate
    late = seconds(closed[0]["sent_at"]) - due
    chaos_report(
        "2 daemon SIGKILLed during observation",
        expected=3,  # work order, clear, close
        delivered=len(closed) + len(clears) + 1,
        duplicates=len(closed) + len(clears) - 2,
        note=f"close {late:+.1f}s from due after the restart",
    )
