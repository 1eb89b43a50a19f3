"""Session-wide real peers: an Apache Kafka broker and the snmpsim demo network, on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import kafka_local  # noqa: E402
import simnet  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft node started for the session."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    broker = kafka_local.start(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def sim_network() -> Iterator[simnet.SimNet]:
    """snmpsim serving sim/devices on a free UDP port of 127.0.0.1."""
    sim = simnet.start()
    try:
        yield sim
    finally:
        sim.stop()
