"""The collectors' partition assignor: the leader hands ``balance`` what each member says it holds."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from alarmd.dispatch.kafka import BalancedAssignor

TOPIC = "alarmd.inventory.north"


def test_the_leader_passes_each_members_holdings_to_balance_and_assigns_its_answer() -> None:
    seen: list[tuple[list[int], dict[str, set[int]]]] = []

    def balance(partitions: list[int], held: dict[str, set[int]]) -> dict[str, set[int]]:
        seen.append((partitions, held))
        return {"m-1": {0, 1, 2}, "m-2": {3}}

    member = BalancedAssignor(TOPIC, balance)
    member.on_assignment(ConsumerProtocolMemberAssignment(0, [(TOPIC, [2, 0])], b""))
    said = member.metadata([TOPIC])
    assert said.subscription == [TOPIC]
    members = {
        "m-1": ConsumerProtocolMemberMetadata.decode(said.encode()),  # as the broker relays it
        "m-2": ConsumerProtocolMemberMetadata(0, [TOPIC], b"not json"),
    }
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: {3, 1, 0, 2} if topic == TOPIC else None)
    assignment = member.assign(cluster, members)
    assert seen == [([0, 1, 2, 3], {"m-1": {0, 2}, "m-2": set()})], (
        "a member saying nothing usable holds nothing"
    )
    assert [tp.partition for tp in assignment["m-1"].partitions()] == [0, 1, 2]
    assert [tp.partition for tp in assignment["m-2"].partitions()] == [3]
