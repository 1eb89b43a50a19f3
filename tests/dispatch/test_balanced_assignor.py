"""The group's partition assignor: the leader hands ``balance`` what each member holds and measured."""

from __future__ import annotations

import json
from types import SimpleNamespace

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from alarmd.dispatch.kafka import BalancedAssignor, Told

TOPIC = "alarmd.inventory.north"
CLUSTER = SimpleNamespace(partitions_for_topic=lambda topic: {3, 1, 0, 2} if topic == TOPIC else None)

Seen = list[tuple[list[int], dict[str, set[int]], Told]]


def recording(seen: Seen, shares: dict[str, set[int]]) -> BalancedAssignor:
    """A leader's assignor whose ``balance`` notes its arguments and answers ``shares``."""

    def balance(partitions: list[int], held: dict[str, set[int]], told: Told) -> dict[str, set[int]]:
        seen.append((partitions, held, told))
        return shares

    return BalancedAssignor(TOPIC, balance)


def relayed(member: BalancedAssignor, holds: list[int]) -> ConsumerProtocolMemberMetadata:
    """What the broker relays to the leader of a member that was assigned ``holds``."""
    member.on_assignment(ConsumerProtocolMemberAssignment(0, [(TOPIC, holds)], b""))
    said = member.metadata([TOPIC])
    assert said.subscription == [TOPIC]
    return ConsumerProtocolMemberMetadata.decode(said.encode())


def test_the_leader_passes_each_members_holdings_to_balance_and_assigns_its_answer() -> None:
    seen: Seen = []
    leader = recording(seen, {"m-1": {0, 1, 2}, "m-2": {3}})
    members = {
        "m-1": relayed(leader, [2, 0]),
        "m-2": ConsumerProtocolMemberMetadata(0, [TOPIC], b"not json"),
    }
    assignment = leader.assign(CLUSTER, members)
    assert seen == [([0, 1, 2, 3], {"m-1": {0, 2}, "m-2": set()}, {})], (
        "a member saying nothing usable holds nothing and tells nothing"
    )
    assert [tp.partition for tp in assignment["m-1"].partitions()] == [0, 1, 2]
    assert [tp.partition for tp in assignment["m-2"].partitions()] == [3]


def test_a_member_that_measures_tells_its_measures_with_what_it_holds() -> None:
    seen: Seen = []
    leader = recording(seen, {"new": {0, 1}, "old": {2, 3}})
    measuring = BalancedAssignor(TOPIC, lambda *_: {}, tell=lambda: {0: 49.8765, 1: 1.0})
    members = {
        "new": relayed(measuring, [1, 0]),
        "old": relayed(BalancedAssignor(TOPIC, lambda *_: {}), [3, 2]),  # an earlier version: the list
    }
    assert json.loads(members["new"].user_data) == {"held": [0, 1], "measured": {"0": 49.877, "1": 1.0}}
    assert json.loads(members["old"].user_data) == [2, 3], "without measures the user data stays the list"
    leader.assign(CLUSTER, members)
    assert seen == [([0, 1, 2, 3], {"new": {0, 1}, "old": {2, 3}}, {"new": {0: 49.877, 1: 1.0}})], (
        "both forms are read in one group; only the object form tells measures"
    )


def test_measures_that_are_not_positive_numbers_are_left_out() -> None:
    seen: Seen = []
    leader = recording(seen, {"m": {0, 1, 2, 3}})
    said = {"held": [0], "measured": {"0": 2.5, "1": -1, "2": "NaN", "3": 0}}
    leader.assign(CLUSTER, {"m": ConsumerProtocolMemberMetadata(0, [TOPIC], json.dumps(said).encode())})
    assert seen[0][1:] == ({"m": {0}}, {"m": {0: 2.5}})
