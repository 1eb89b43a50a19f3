from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from alarmd.dispatch.kafka import default_partition


@pytest.mark.parametrize("partitions", [1, 2, 3, 12, 64])
def test_a_fault_goes_to_the_partition_the_producer_gives_its_circuit_key(partitions: int) -> None:
    every = list(range(partitions))
    for key in (b"CIR-0001", b"CIR-0002", b"cpe-router-01", b"10.0.0.7", b""):
        assert default_partition(key, partitions) == DefaultPartitioner()(key, every, every)


def test_keys_spread_over_the_partitions() -> None:
    assert len({default_partition(f"CIR-{n:04d}".encode(), 12) for n in range(200)}) == 12
