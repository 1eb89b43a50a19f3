"""The polling and memory benchmarks (bench/polling.py, bench/memory.py) end to end, small and short."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench import memory, polling, snmpd_fleet

from devenv import alive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fleet_allowed() -> None:
    reason = snmpd_fleet.namespaces_allowed()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.usefixtures("fleet_allowed")
def test_polling_bench_quick_run_counts_300_varbinds_per_device_poll_on_both_sides(tmp_path: Path) -> None:
    if not Path(polling.EXPORTER).exists():
        pytest.skip(f"{polling.EXPORTER} is missing (apt-get install prometheus-snmp-exporter)")
    said: list[str] = []
    options = polling.options_from(True, agents=2, duration=1.5, profile=False)

    summary = polling.run(options, tmp_path, say=said.append)

    result = json.loads((tmp_path / "polling.json").read_text(encoding="utf-8"))
    for name in ("alarmd", "exporter"):
        peer = result["peers"][name]
        assert peer["varbinds"] > 0, (name, peer)
        assert peer["failed_polls"] == 0, (name, peer)
        assert peer["varbinds"] == 300 * peer["polls"], (name, peer)
        assert peer["varbinds_per_poll"] == 300
        assert peer["cpu_seconds"] > 0
        assert 1.0 < peer["wall_seconds"] < 10, (name, peer)
    assert result["peers"]["exporter"]["detail"]["short_scrapes"] == 0
    assert result["peers"]["exporter"]["detail"]["pdus_returned"] == result["peers"]["exporter"]["varbinds"]
    assert result["peers"]["alarmd"]["detail"]["samples_per_poll"] > 50
    assert result["profile"] is None

    for key in ("alarmd_varbinds_per_cpu_s", "exporter_varbinds_per_cpu_s", "ratio", "versions"):
        assert summary[key], key
    assert summary["alarmd_varbinds_per_cpu_s"] == result["alarmd_varbinds_per_cpu_s"]
    assert summary["versions"]["net_snmp"] and summary["versions"]["snmp_exporter"]
    assert "ratio alarmd/exporter" in "\n".join(said)


@pytest.mark.usefixtures("fleet_allowed")
def test_memory_bench_reads_rss_after_three_full_cycles(tmp_path: Path, kafka_bootstrap: str) -> None:
    options = memory.options_from(
        True, sizes=[250], agents=1, cycles=3, interval=1.0, kafka_bootstrap=kafka_bootstrap, breakdown=False
    )

    summary = memory.run(options, tmp_path, say=lambda _: None)

    result = json.loads((tmp_path / "memory.json").read_text(encoding="utf-8"))
    size = result["sizes"]["250"]
    assert (size["devices"], size["interfaces"]) == (5, 250)
    assert size["cycles"] >= 3
    assert size["polling"]["polls_finished"] >= 15
    assert size["polling"]["failed_periods"] == 0
    assert size["polling"]["devices_up"] == 5
    assert size["exit_code"] == 0
    assert 20 < size["rss_mb"] <= size["hwm_mb"] < 1000
    assert summary["rss_mb_250_interfaces"] == size["rss_mb"]
    assert result["heap_breakdown"] is None


@pytest.mark.usefixtures("fleet_allowed")
def test_the_agents_of_a_bench_killed_outright_stop_with_it() -> None:
    script = (
        "from bench import snmpd_fleet\n"
        "import sys, time\n"
        "fleet = snmpd_fleet.Fleet(2, 'public')\n"
        "fleet.start()\n"
        "print(*fleet.pids(), flush=True)\n"
        "time.sleep(120)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as bench:
        try:
            assert bench.stdout is not None
            pids = [int(p) for p in bench.stdout.readline().split()]
            assert len(pids) == 2 and all(alive(p) for p in pids)
            bench.kill()  # no finally, no context manager runs: only the kernel can stop its agents
            bench.wait(10)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not [p for p in pids if alive(p)], "an snmpd agent outlived the bench that started it"
        finally:
            if bench.poll() is None:
                bench.kill()
