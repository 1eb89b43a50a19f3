"""Every Kafka request alarmd's clients make has a version that both aiokafka and the broker speak.

Run against the session's broker: Kafka 3.9.1 by default, 4.x with ``ALARMD_KAFKA_VERSION=4.4.0``
(``make test-kafka4``).  Kafka 4.0 dropped old request versions (KIP-896); aiokafka 0.14 only
sends the versions it implements, and fails a call with ``NotImplementedError`` when the
broker accepts none of them, so a broker that outgrows aiokafka is named here, request by request.
"""

from __future__ import annotations

import pytest
from aiokafka.conn import create_conn
from aiokafka.protocol import admin, commit, coordination, fetch, group, metadata, offset, produce
from aiokafka.protocol import transaction as txn
from aiokafka.protocol.api import Request

pytestmark = pytest.mark.integration

# What alarmd's producer (idempotent and transactional), consumers (groups), admin client
# (ensure_topics, describe_cluster) and SASL logins send.
USED: tuple[type[Request], ...] = (
    produce.ProduceRequest,
    fetch.FetchRequest,
    offset.OffsetRequest,
    metadata.MetadataRequest,
    coordination.FindCoordinatorRequest,
    group.JoinGroupRequest,
    group.SyncGroupRequest,
    group.HeartbeatRequest,
    group.LeaveGroupRequest,
    commit.OffsetCommitRequest,
    commit.OffsetFetchRequest,
    txn.InitProducerIdRequest,
    txn.AddPartitionsToTxnRequest,
    txn.AddOffsetsToTxnRequest,
    txn.TxnOffsetCommitRequest,
    txn.EndTxnRequest,
    admin.CreateTopicsRequest,
    admin.SaslHandShakeRequest,
    admin.SaslAuthenticateRequest,
)


async def broker_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions answer: API key -> (oldest, newest) version it accepts."""
    host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
    conn = await create_conn(host, int(port))
    try:
        response = await conn.send(admin.ApiVersionRequest())
    finally:
        conn.close()
    return {key: (low, high) for key, low, high in response.api_versions}


def aiokafka_versions(request: type[Request]) -> list[int]:
    """The versions of ``request`` aiokafka implements (it sends the newest the broker accepts)."""
    return sorted(struct.API_VERSION for struct in request._CLASSES)


async def test_the_broker_accepts_a_version_of_every_request_alarmd_sends(kafka_bootstrap: str) -> None:
    versions = await broker_versions(kafka_bootstrap)
    refused: list[str] = []
    for request in USED:
        ours = aiokafka_versions(request)
        low, high = versions.get(request.API_KEY, (-1, -1))
        if not any(low <= v <= high for v in ours):
            refused.append(f"{request.__name__}: aiokafka sends v{ours}, the broker accepts v{low}-v{high}")
    assert refused == []


async def test_transactions_still_go_out_as_txn_offset_commit_v0(kafka_bootstrap: str) -> None:
    """As docs/kafka-versions.md says: the newest version both speak is v0, so no KIP-447 fencing."""
    low, high = (await broker_versions(kafka_bootstrap))[txn.TxnOffsetCommitRequest.API_KEY]
    shared = [v for v in aiokafka_versions(txn.TxnOffsetCommitRequest) if low <= v <= high]
    assert max(shared) == 0
