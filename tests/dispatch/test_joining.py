"""A group member's wait for its assignment is bounded: past the limit it is logged, counted and ends."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from alarmd.config import ClusterConfig
from alarmd.dispatch.joining import JoinStalled, JoinWatch
from alarmd.metrics import Metrics
from alarmd.testing import FakeClock

GROUP_ID = "alarmd-collectors.north"


def stalls(metrics: Metrics, group: str = "inventory") -> float | None:
    return metrics.registry.get_sample_value("alarmd_cluster_join_stalls_total", {"group": group})


def watch(limit: float = 30.0) -> tuple[JoinWatch, Metrics, FakeClock]:
    metrics, clock = Metrics(), FakeClock()
    return JoinWatch(GROUP_ID, "inventory", limit, metrics, clock), metrics, clock


def test_a_rebalance_that_brings_no_assignment_within_the_limit_is_logged_counted_and_raised() -> None:
    w, metrics, clock = watch()
    assert stalls(metrics) == 0, "the series exists before the first stall"
    w.waiting()  # partitions revoked: a rebalance began
    clock.advance(30)
    w.check()  # at the limit: still a healthy (if slow) join
    clock.advance(1)
    with (
        capture_logs() as logs,
        pytest.raises(JoinStalled, match=r"no assignment after 31\.0s \(limit 30s\)"),
    ):
        w.check()
    assert stalls(metrics) == 1
    [line] = [entry for entry in logs if entry["event"] == "group_join_stalled"]
    assert line["group_id"] == GROUP_ID
    assert line["waited_s"] == 31.0
    assert line["log_level"] == "warning"
    w.check()  # the next wait starts with the next join, not from the stalled one
    assert stalls(metrics) == 1


def test_an_assignment_ends_the_wait_and_a_second_revocation_does_not_restart_it() -> None:
    w, metrics, clock = watch()
    w.waiting()
    clock.advance(20)
    w.waiting()  # another revocation within the same wait keeps the first start
    clock.advance(11)
    with pytest.raises(JoinStalled):
        w.check()
    w.waiting()
    clock.advance(29)
    w.assigned()
    clock.advance(100)
    w.check()  # assigned members never stall
    assert w.waited() == 0.0
    assert stalls(metrics) == 1


async def test_a_start_that_never_returns_is_given_up_at_the_limit() -> None:
    w, metrics, clock = watch(limit=30.0)
    w.waiting()
    clock.advance(30)  # the whole limit already went by: the start is given no more time
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(JoinStalled):
        await w.within(never)
    assert never.cancelled()
    assert stalls(metrics) == 1


async def test_a_start_that_returns_in_time_ends_the_wait() -> None:
    w, metrics, _ = watch()

    async def joined() -> str:
        return "assigned"

    assert await w.within(joined()) == "assigned"
    assert w.since is None
    assert stalls(metrics) == 0


def test_the_limit_is_three_session_timeouts_at_least_twenty_seconds_unless_set() -> None:
    assert ClusterConfig().join_limit == 30.0  # 10s sessions
    assert ClusterConfig(session_timeout="6s").join_limit == 20.0
    assert ClusterConfig(session_timeout="1m").join_limit == 180.0
    assert ClusterConfig(session_timeout="6s", join_timeout="45s").join_limit == 45.0
