from __future__ import annotations

import dataclasses
from pathlib import Path

from alarmd.alarms.store import Store
from alarmd.cluster.changelog import decode
from alarmd.cluster.history import ClosedFaults
from alarmd.config import KafkaConfig
from alarmd.metrics import Metrics
from alarmd.testing import FakeSink
from tests.cluster.test_changelog import T0, fault


def closed_faults(tmp_path: Path, owned: set[int], sink: FakeSink, metrics: Metrics) -> ClosedFaults:
    store = Store(tmp_path / "alarmd.sqlite")
    history = ClosedFaults(
        store, lambda: owned, sink, "alarmd.events.history", metrics, kafka=KafkaConfig(), partitions=4
    )
    history._created = True  # the topic exists (creating it needs a broker: tests/test_scaleout_view.py)
    return history


async def test_a_fault_closed_here_goes_to_the_history_topic_as_closed_in_its_partition(
    tmp_path: Path,
) -> None:
    sink, metrics = FakeSink(), Metrics()
    history = closed_faults(tmp_path, {2}, sink, metrics)
    closed = dataclasses.replace(fault("A1"), state="cleared", cleared_at=T0 + 60, extra={"closed": "true"})
    history.store.save(closed, "closed", at=T0 + 60)
    history.closed(2, "A1")
    history.closed(3, "A2")  # another instance's partition: its owner writes it
    await history.flush()
    ((topic, partition, key, value),) = sink.placed
    assert (topic, partition, key) == ("alarmd.events.history", 2, b"A1")
    assert decode(value or b"")[0] == closed
    assert (
        metrics.registry.get_sample_value("alarmd_cluster_history_records_total", {"outcome": "written"}) == 1
    )


async def test_what_the_brokers_refused_goes_with_the_next_flush_and_a_fault_no_longer_stored_is_counted(
    tmp_path: Path,
) -> None:
    sink, metrics = FakeSink(failing=True), Metrics()
    history = closed_faults(tmp_path, {0}, sink, metrics)
    closed = dataclasses.replace(fault("A1"), state="cleared", cleared_at=T0 + 60, extra={"closed": "true"})
    history.store.save(closed, "closed", at=T0 + 60)
    history.closed(0, "A1")
    history.closed(0, "A9")  # moved away before it was noted: not in this store
    await history.flush()
    assert not sink.placed
    sink.failing = False
    await history.flush()
    assert [k for _, _, k, _ in sink.placed] == [b"A1"]
    assert (
        metrics.registry.get_sample_value("alarmd_cluster_history_records_total", {"outcome": "missing"}) == 1
    )
