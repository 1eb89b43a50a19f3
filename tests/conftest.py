"""Session-wide real peers: an Apache Kafka broker and the snmpsim demo network, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

# Property tests judge behaviour, not speed: on a loaded 2-core CI machine one example can take
# longer than hypothesis's 200 ms default, which would fail a test for time alone.
settings.register_profile("alarmd", deadline=None)
settings.load_profile("alarmd")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import kafka_local  # noqa: E402
import simnet  # noqa: E402


def pytest_report_header() -> str:
    """Which Kafka the session's brokers run, in pytest's header."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return f"kafka: the cluster at KAFKA_BOOTSTRAP_SERVERS={os.environ['KAFKA_BOOTSTRAP_SERVERS']}"
    return f"kafka: local KRaft {kafka_local.KAFKA_VERSION} (ALARMD_KAFKA_VERSION)"


@pytest.fixture(autouse=True)
def _logs_go_to_the_stream_of_the_moment() -> Iterator[None]:
    """After each test, structlog's defaults again.

    A test that runs the CLI in-process configures logging to the stderr pytest captured for
    it, a stream closed once the test ends: a later test's log line would raise.
    """
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.Broker | None]:
    """The local KRaft node started for the session; None when ``KAFKA_BOOTSTRAP_SERVERS`` names one."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = kafka_local.start(tmp_path_factory.mktemp("kafka"), with_parent=True)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: kafka_local.Broker | None) -> str:
    """A real broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft node started for the session."""
    return kafka_broker.bootstrap if kafka_broker is not None else os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.Cluster]:
    """A real three-node KRaft cluster on 127.0.0.1 (each node broker and controller), for the session."""
    os.environ.setdefault("ALARMD_KAFKA_HEAP", "384m")
    cluster = kafka_local.start_cluster(tmp_path_factory.mktemp("kafka-cluster"), 3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sim_network() -> Iterator[simnet.SimNet]:
    """snmpsim serving sim/devices on a free UDP port of 127.0.0.1."""
    sim = simnet.start()
    try:
        yield sim
    finally:
        sim.stop()


# --------------------------------------------------------------------------- fault-injection summary

CHAOS_SUMMARY = REPO / "tests" / "artifacts" / "chaos-summary.json"
CHAOS_COLUMNS = ("expected", "delivered", "duplicates", "max_rss_mb", "drops_counted")
_chaos_rows: list[dict[str, Any]] = []


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record this scenario's row of the fault-injection table (printed at the end of the run)."""

    def record(scenario: str, **figures: Any) -> None:
        unknown = set(figures) - set(CHAOS_COLUMNS) - {"note"}
        assert not unknown, f"unknown chaos columns {unknown}"
        _chaos_rows.append({"scenario": scenario, "nodeid": request.node.nodeid, **figures})

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault-injection table and keep it in tests/artifacts/chaos-summary.json."""
    if not _chaos_rows:
        return
    outcome = {
        report.nodeid: report.outcome
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
    }
    rows = [{**row, "result": outcome.get(row["nodeid"], "error")} for row in _chaos_rows]
    header = ("scenario", *CHAOS_COLUMNS, "result")
    table = [[str(row.get(col, "-")) for col in header] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    terminalreporter.section("fault injection")
    terminalreporter.write_line("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for line in table:
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    for row in rows:
        if row.get("note"):
            terminalreporter.write_line(f"{row['scenario']}: {row['note']}")
    CHAOS_SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    CHAOS_SUMMARY.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
