"""A location's devices shared by inventory partitions: a rebalance moves only what changed owner."""

from __future__ import annotations

from alarmd.cluster.membership import DeviceShare, partition_of

DEVICES = [f"cpe-{i:03d}" for i in range(60)]


def share() -> tuple[DeviceShare, list[str], list[str]]:
    started: list[str] = []
    stopped: list[str] = []
    return DeviceShare(DEVICES, 6, started.append, stopped.append), started, stopped


def test_two_members_poll_every_device_once() -> None:
    a, _, _ = share()
    b, _, _ = share()
    a.assign({0, 1, 2})
    b.assign({3, 4, 5})
    assert a.owned.isdisjoint(b.owned)
    assert a.owned | b.owned == set(DEVICES)
    assert 15 <= len(a.owned) <= 45, "crc32 spreads the names"


def test_taking_over_starts_only_the_devices_that_came_and_keeps_the_others_running() -> None:
    member, started, stopped = share()
    member.assign({0, 1, 2})
    kept = set(started)
    started.clear()
    came, left = member.assign({0, 1, 2, 3, 4, 5})  # the other member died
    assert set(started) == came == set(DEVICES) - kept
    assert not stopped and not left
    member.assign({0, 1, 2})  # it came back
    assert set(stopped) == came


def test_a_device_belongs_to_one_partition_whoever_computes_it() -> None:
    assert {partition_of(d, 6) for d in ["cpe-001"] * 5} == {partition_of("cpe-001", 6)}
    assert all(0 <= partition_of(d, 6) < 6 for d in DEVICES)


def test_release_stops_everything() -> None:
    member, started, stopped = share()
    member.assign({0, 1})
    assert member.release() == set(started) == set(stopped)
    assert member.owned == set()
