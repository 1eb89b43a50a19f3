"""A location's devices shared by inventory partitions: a rebalance moves only what changed owner."""

from __future__ import annotations

from alarmd.cluster.membership import DeviceShare, balance, partition_of

DEVICES = [f"cpe-{i:03d}" for i in range(60)]


def share() -> tuple[DeviceShare, list[str], list[str]]:
    started: list[str] = []
    stopped: list[str] = []
    return (
        DeviceShare(DEVICES, 6, lambda devices, _taken_over: started.extend(devices), stopped.extend),
        started,
        stopped,
    )


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


def test_devices_gained_after_the_first_assignment_are_taken_over() -> None:
    calls: list[tuple[int, bool]] = []
    member = DeviceShare(
        DEVICES, 6, lambda devices, taken_over: calls.append((len(devices), taken_over)), print
    )
    member.assign({0, 1, 2})  # this collector starting: nobody polled its share before
    member.assign({0, 1, 2, 3, 4, 5})  # another one died or left
    assert [taken_over for _, taken_over in calls] == [False, True]


WEIGHTS = dict(enumerate([9, 7, 8, 12, 6, 9, 8, 10, 7, 9, 8, 7]))  # devices per partition


def load(shares: dict[str, set[int]]) -> dict[str, int]:
    return {m: sum(WEIGHTS[p] for p in ps) for m, ps in shares.items()}


def test_balance_shares_devices_not_partition_counts() -> None:
    shares = balance(WEIGHTS, {"a": set(), "b": set()})
    assert shares["a"] | shares["b"] == set(WEIGHTS) and not shares["a"] & shares["b"]
    even = sum(WEIGHTS.values()) / 2
    assert all(abs(w - even) <= max(WEIGHTS.values()) / 2 for w in load(shares).values()), load(shares)


def test_balance_moves_only_a_dead_members_partitions() -> None:
    before = balance(WEIGHTS, {"a": set(), "b": set(), "c": set()})
    after = balance(WEIGHTS, {"a": before["a"], "b": before["b"]})  # c died
    assert before["a"] <= after["a"] and before["b"] <= after["b"]
    assert after["a"] | after["b"] == set(WEIGHTS)


def test_balance_gives_a_new_member_only_what_the_others_give_up() -> None:
    before = balance(WEIGHTS, {"a": set(), "b": set()})
    after = balance(WEIGHTS, {"a": before["a"], "b": before["b"], "c": set()})
    assert after["a"] <= before["a"] and after["b"] <= before["b"], "nobody gains from somebody else"
    assert after["c"] == (before["a"] - after["a"]) | (before["b"] - after["b"])
    even = sum(WEIGHTS.values()) / 3
    assert all(abs(w - even) / even <= 0.2 for w in load(after).values()), load(after)


def test_balance_of_no_members_is_empty() -> None:
    assert balance(WEIGHTS, {}) == {}
