from __future__ import annotations

import asyncio
import dataclasses

from alarmd.cluster.changelog import encode
from alarmd.cluster.view import ClusterView
from alarmd.config import KafkaConfig
from alarmd.metrics import Metrics
from alarmd.model import Alarm
from tests.cluster.test_changelog import T0, fault


def view(metrics: Metrics | None = None) -> ClusterView:
    return ClusterView(KafkaConfig(), "alarmd.events.changelog", 4, metrics or Metrics(), now=lambda: T0 + 2)


def record(alarm: Alarm) -> bytes:
    return encode(alarm, [])


def cleared(alarm: Alarm) -> Alarm:
    return dataclasses.replace(alarm, state="cleared", cleared_at=T0 + 60)


def test_the_view_holds_every_partitions_faults_firing_in_active_and_cleared_in_recent() -> None:
    metrics = Metrics()
    seen = view(metrics)
    seen.take(0, b"A1", record(fault("A1")), T0)
    seen.take(3, b"A2", record(cleared(fault("A2", device="cpe-02"))), T0 + 1)
    assert [a.alarm_id for a in seen.active.values()] == ["A1"]
    assert [a.alarm_id for a in seen.recent.values()] == ["A2"]
    assert seen.where("A2") == (3, cleared(fault("A2", device="cpe-02")))
    assert metrics.registry.get_sample_value("alarmd_cluster_view_faults") == 2
    assert (
        metrics.registry.get_sample_value("alarmd_cluster_view_lag_seconds") == 1.0
    )  # written at T0 + 1, read at T0 + 2


def test_a_new_state_replaces_the_old_and_a_tombstone_removes_the_fault_but_keeps_its_partition() -> None:
    seen = view()
    seen.take(2, b"A1", record(fault("A1")), T0)
    seen.take(2, b"A1", record(cleared(fault("A1"))), T0)
    assert not seen.active
    assert list(seen.recent) == ["fp-A1"]
    seen.take(2, b"A1", None, T0)
    assert not seen.active and not seen.recent and len(seen) == 0
    assert seen.where("A1") == (2, None)  # closed lately: feedback still finds its owner
    assert seen.where("A9") is None


def test_an_unreadable_record_is_skipped_and_the_rest_is_kept() -> None:
    seen = view()
    seen.take(0, b"A1", record(fault("A1")), T0)
    seen.take(0, b"A2", b"{not json", T0)
    assert seen.where("A2") is None
    assert len(seen) == 1


def test_reading_again_after_a_broken_link_shows_the_old_view_until_the_new_one_caught_up() -> None:
    seen = view()
    seen.take(0, b"A1", record(fault("A1")), T0)
    seen._caught_up()
    seen._reloading = {}  # what run() does before it reads the changelog again
    seen.take(1, b"A2", record(fault("A2", device="cpe-02")), T0)
    assert [a.alarm_id for a in seen.active.values()] == ["A1"]
    seen._caught_up()
    assert [a.alarm_id for a in seen.active.values()] == ["A2"]  # A1 was compacted away meanwhile
    assert seen.ready


async def test_waiting_for_a_fault_returns_once_its_record_arrives_and_gives_up_after_the_wait() -> None:
    seen = view()
    waiting = asyncio.create_task(seen.wait_for("A1", 5.0))
    await asyncio.sleep(0)
    seen.take(1, b"A1", record(fault("A1")), T0)
    assert await waiting == (1, fault("A1"))
    assert await seen.wait_for("A7", 0.01) is None


def test_a_rule_states_record_and_its_tombstone_leave_the_faults_alone() -> None:
    closed: list[str] = []
    seen = view()
    seen.on_close = lambda partition, alarm_id: closed.append(alarm_id)
    seen.take(1, b"A1", record(fault("A1")), T0)
    seen.take(1, b"rule/Busy/fp1", b'{"format":1,"kind":"rule"}', T0)
    seen.take(1, b"rule/Busy/fp1", None, T0)
    assert len(seen) == 1 and list(seen.active) == ["fp-A1"]
    assert closed == [] and seen.where("rule/Busy/fp1") is None
