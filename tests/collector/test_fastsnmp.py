"""FastSnmpClient against scripted agents: matching, retries, garbage, loops, v1 quirks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from alarmd.collector import ber
from alarmd.collector.ber import PduType
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.snmp import SnmpError, Target
from alarmd.config import SnmpV1, SnmpV2c
from alarmd.model import VarBind
from tests.snmp_agent import mib_answer, respond, start

IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
SYS_NAME = "1.3.6.1.2.1.1.5.0"

TABLE = {f"{IF_DESCR}.{i}": VarBind(f"{IF_DESCR}.{i}", "OctetString", f"eth{i}".encode()) for i in (1, 2, 10)}
TABLE |= {f"{IF_OPER}.{i}": VarBind(f"{IF_OPER}.{i}", "Integer", 1) for i in (1, 2, 10)}
table_agent = mib_answer(lambda: TABLE)


@pytest.fixture
async def client() -> AsyncIterator[FastSnmpClient]:
    c = FastSnmpClient(max_in_flight=16)
    try:
        yield c
    finally:
        c.close()


def v2c(port: int, community: str = "public", timeout: float = 0.3, retries: int = 0) -> Target:
    creds = SnmpV2c(community=community)  # type: ignore[arg-type]
    return Target(
        name="dev", address="127.0.0.1", port=port, credentials=creds, timeout=timeout, retries=retries
    )


async def test_walk_reads_every_column_with_getbulk_and_stops_at_the_column_end(
    client: FastSnmpClient,
) -> None:
    agent = await start(table_agent)
    try:
        table = await client.walk(v2c(agent.port), [IF_DESCR, IF_OPER], 2)
    finally:
        agent.close()
    assert table == {
        IF_DESCR: {"1": b"eth1", "2": b"eth2", "10": b"eth10"},
        IF_OPER: {"1": 1, "2": 1, "10": 1},
    }
    first = agent.requests[0]
    assert first.pdu_type is PduType.GET_BULK_REQUEST
    assert (first.error_status, first.error_index) == (0, 2)  # non-repeaters, max-repetitions
    assert [vb.type for vb in first.varbinds] == ["Null", "Null"]


async def test_get_maps_missing_objects_to_none(client: FastSnmpClient) -> None:
    agent = await start(table_agent)
    try:
        got = await client.get(v2c(agent.port), [f"{IF_DESCR}.2", SYS_NAME])
    finally:
        agent.close()
    assert got == {f"{IF_DESCR}.2": b"eth2", SYS_NAME: None}


async def test_answers_not_from_the_request_are_ignored_and_it_times_out(client: FastSnmpClient) -> None:
    def impostor(request: ber.Message) -> list[bytes]:
        vbs = [VarBind(SYS_NAME, "OctetString", b"forged")]
        return [
            respond(request, vbs, request_id=request.request_id + 1),  # another request
            ber.encode_message(
                request.version, b"other", PduType.RESPONSE, vbs, request_id=request.request_id
            ),
            ber.encode_message(0, request.community, PduType.RESPONSE, vbs, request_id=request.request_id),
            ber.encode_message(
                request.version, request.community, PduType.SNMPV2_TRAP, vbs, request_id=request.request_id
            ),
        ]

    agent = await start(impostor)
    try:
        with pytest.raises(SnmpError) as err:
            await client.get(v2c(agent.port, retries=1), [SYS_NAME])
    finally:
        agent.close()
    assert err.value.reason == "timeout"
    assert "2 tries" in err.value.detail
    assert len(agent.requests) == 2
    assert client.unmatched == 8


async def test_a_response_from_another_port_is_ignored(client: FastSnmpClient) -> None:
    other = await start(lambda request: [])

    def via_other_port(request: ber.Message) -> list[bytes]:
        assert other.transport is not None
        other.transport.sendto(respond(request, [TABLE[f"{IF_DESCR}.1"]]), agent.peer)
        return []

    agent = await start(via_other_port)
    try:
        with pytest.raises(SnmpError) as err:
            await client.get(v2c(agent.port), [f"{IF_DESCR}.1"])
    finally:
        agent.close()
        other.close()
    assert err.value.reason == "timeout"
    assert client.unmatched == 1


async def test_garbage_from_the_agent_is_a_decode_error_not_a_timeout(client: FastSnmpClient) -> None:
    agent = await start(lambda request: [b"\x30\x82\xff\xff garbage"])
    try:
        with pytest.raises(SnmpError) as err:
            await client.get(v2c(agent.port), [SYS_NAME])
    finally:
        agent.close()
    assert err.value.reason == "decode"
    assert "malformed response" in err.value.detail
    assert client.malformed == 1


async def test_a_lost_request_is_retried_with_the_same_request_id(client: FastSnmpClient) -> None:
    seen = 0

    def drops_the_first(request: ber.Message) -> list[bytes]:
        nonlocal seen
        seen += 1
        return [] if seen == 1 else table_agent(request)

    agent = await start(drops_the_first)
    try:
        got = await client.get(v2c(agent.port, timeout=0.2, retries=2), [f"{IF_OPER}.10"])
    finally:
        agent.close()
    assert got == {f"{IF_OPER}.10": 1}
    assert [r.request_id for r in agent.requests] == [agent.requests[0].request_id] * 2


async def test_error_status_is_reported_with_its_index(client: FastSnmpClient) -> None:
    agent = await start(
        lambda request: [respond(request, list(request.varbinds), error_status=5, error_index=1)]
    )
    try:
        with pytest.raises(SnmpError) as err:
            await client.get(v2c(agent.port), [SYS_NAME])
    finally:
        agent.close()
    assert err.value.reason == "error_status"
    assert "error-status 5 at varbind 1" in err.value.detail


async def test_an_agent_that_loops_ends_the_walk_instead_of_spinning(client: FastSnmpClient) -> None:
    agent = await start(lambda request: [respond(request, [TABLE[f"{IF_DESCR}.2"]])])
    try:
        table = await client.walk(v2c(agent.port), [IF_DESCR], 10)
    finally:
        agent.close()
    assert table == {IF_DESCR: {"2": b"eth2"}}
    assert len(agent.requests) == 2


async def test_concurrent_requests_are_each_matched_to_their_answer(client: FastSnmpClient) -> None:
    loop = asyncio.get_running_loop()

    def late_and_shuffled(request: ber.Message) -> list[bytes]:
        answer = table_agent(request)
        delay = (request.request_id % 7) / 200
        assert agent.transport is not None
        loop.call_later(delay, agent.transport.sendto, answer[0], agent.peer)
        return []

    agent = await start(late_and_shuffled)
    oids = [f"{IF_DESCR}.{i}" for i in (1, 2, 10)] * 40
    try:
        answers = await asyncio.gather(*(client.get(v2c(agent.port, timeout=2), [oid]) for oid in oids))
    finally:
        agent.close()
    assert [next(iter(a)) for a in answers] == oids
    assert [a[oid] for a, oid in zip(answers, oids, strict=True)] == [TABLE[oid].value for oid in oids]


async def test_v1_get_with_a_missing_object_still_returns_the_others(client: FastSnmpClient) -> None:
    def v1_agent(request: ber.Message) -> list[bytes]:
        missing = [i for i, vb in enumerate(request.varbinds, 1) if vb.oid not in TABLE]
        if missing:
            return [respond(request, list(request.varbinds), error_status=2, error_index=missing[0])]
        return table_agent(request)

    agent = await start(v1_agent)
    creds = SnmpV1(version="1", community="public")  # type: ignore[arg-type]
    target = Target(
        name="old", address="127.0.0.1", port=agent.port, credentials=creds, timeout=0.5, retries=0
    )
    try:
        got = await client.get(target, [f"{IF_DESCR}.1", SYS_NAME])
    finally:
        agent.close()
    assert got == {f"{IF_DESCR}.1": b"eth1", SYS_NAME: None}
    assert {r.version for r in agent.requests} == {0}
