from __future__ import annotations

import json

import pytest

from alarmd.cluster.changelog import encode
from alarmd.cluster.codec import Feedback, Keys, decode
from alarmd.cluster.rekey import FeedbackRekeyer, RekeyError
from alarmd.cluster.view import ClusterView
from alarmd.config import Config, KafkaConfig
from alarmd.dispatch.kafka import ConsumeStopped
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.testing import FakeSink
from tests.cluster.test_changelog import T0, fault

ALARM_ID = "0123456789abcdef0123"
CONFIG = {
    "customers": [{"id": "CUST-1", "name": "Harbour", "tier": "gold"}],
    "devices": [{"name": "cpe-01", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "x"}}],
    "circuits": [{"id": "CIR-1", "customer": "CUST-1", "path": [{"device": "cpe-01", "interface": "Gi0/1"}]}],
}


def feedback(alarm_id: str = ALARM_ID, kind: str = "acknowledged") -> bytes:
    body = {"type": kind, "work_order_id": f"WO-{alarm_id}", "ticket_id": "T-1", "at": "2026-12-06T10:00:00Z"}
    return json.dumps(body).encode()


def rekeyer(view: ClusterView, sink: FakeSink, metrics: Metrics, wait: float = 0.01) -> FeedbackRekeyer:
    keys = Keys(Inventory(Config.model_validate(CONFIG)))
    return FeedbackRekeyer(view, lambda: keys, sink, "alarmd.events", metrics, wait=wait, backoff=0.01)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def view(metrics: Metrics) -> ClusterView:
    return ClusterView(KafkaConfig(), "alarmd.events.changelog", 4, metrics)


async def test_feedback_goes_to_its_faults_partition_keyed_by_its_circuit_with_an_id_of_its_bytes(
    view: ClusterView, metrics: Metrics
) -> None:
    view.take(3, ALARM_ID.encode(), encode(fault(ALARM_ID), []), T0)
    sink = FakeSink()
    await rekeyer(view, sink, metrics).handle(feedback(), b"ticketing's own key")
    ((topic, partition, key, value),) = sink.placed
    assert (topic, partition, key) == ("alarmd.events", 3, b"CIR-1")
    assert value is not None
    envelope = decode(value)
    assert envelope.item == Feedback(feedback())
    await rekeyer(view, sink, metrics).handle(feedback(), None)  # ticketing delivered it twice
    assert decode(sink.placed[1][3] or b"").id == envelope.id  # the owner counts the copy as a duplicate
    assert metrics.registry.get_sample_value("alarmd_cluster_feedback_total", {"outcome": "rekeyed"}) == 2


async def test_feedback_for_a_fault_closed_lately_still_reaches_its_partition(
    view: ClusterView, metrics: Metrics
) -> None:
    view.take(1, ALARM_ID.encode(), encode(fault(ALARM_ID), []), T0)
    view.take(1, ALARM_ID.encode(), None, T0)
    sink = FakeSink()
    await rekeyer(view, sink, metrics).handle(feedback(kind="closed"), None)
    assert [(p, k) for _, p, k, _ in sink.placed] == [(1, ALARM_ID.encode())]


async def test_feedback_for_a_fault_no_one_has_is_dead_lettered_after_the_wait_and_counted(
    view: ClusterView, metrics: Metrics
) -> None:
    sink = FakeSink()
    with pytest.raises(RekeyError) as raised:
        await rekeyer(view, sink, metrics).handle(feedback(), None)
    assert raised.value.reason == "unknown_alarm"
    assert f"WO-{ALARM_ID}" in raised.value.detail and "waited" in raised.value.detail
    assert not sink.placed
    assert metrics.registry.get_sample_value("alarmd_cluster_feedback_total", {"outcome": "unknown"}) == 1


async def test_feedback_that_is_not_ticketings_schema_is_dead_lettered_naming_the_field(
    view: ClusterView, metrics: Metrics
) -> None:
    with pytest.raises(RekeyError) as raised:
        await rekeyer(view, FakeSink(), metrics).handle(b'{"type": "acknowledged"}', None)
    assert raised.value.reason == "schema"
    assert "work_order_id" in raised.value.detail


async def test_when_intake_stops_unsent_feedback_stays_uncommitted(
    view: ClusterView, metrics: Metrics
) -> None:
    view.take(0, ALARM_ID.encode(), encode(fault(ALARM_ID), []), T0)
    view.stopped = True
    with pytest.raises(ConsumeStopped):
        await rekeyer(view, FakeSink(failing=True), metrics).handle(feedback(), None)
    with pytest.raises(ConsumeStopped):
        await rekeyer(view, FakeSink(), metrics).handle(feedback("f" * 20), None)
