"""The distributed-mode cost benchmark (bench/scaleout.py), small: every trap arrives, every cost is read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_scaleout_bench_measures_both_roles_against_one_process(tmp_path: Path) -> None:
    args = ["--quick", "--window", "8", "--trap-seconds", "3", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scaleout", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((tmp_path / "scaleout.json").read_text(encoding="utf-8"))
    for layout, roles in (("distributed", ("collector", "correlator")), ("all", ("all",))):
        run = result[layout]
        assert run["traps_sent"]["sent"] == 3000
        assert run["traps_received"] == 3000, layout  # the collector (or the one process) got every trap
        assert run["interface_polls"] > 0
        for role in roles:
            assert run[role]["cpu_s_per_1k_interface_polls"] > 0, (layout, role)
            assert run[role]["cpu_s_per_1k_traps"] is not None, (layout, role)
            assert 0 < run[role]["rss_mb"] <= run[role]["hwm_mb"], (layout, role)  # memory per role
    # the correlator judged the collector's samples and every distinct trap (some after the trap window)
    correlator = result["distributed"]["correlator"]
    assert sum(w["events_judged"] for w in correlator["windows"]) >= 3000
    assert correlator["events_per_interface_poll"] > 1  # device_up, gauges and rates of each interface
    assert correlator["backlog_drain"]["judged_per_s"] > 0  # started late, it caught up with a backlog
    sizing = result["sizing"]
    assert sizing["collector"]["instances"] >= 1
    assert sizing["correlator"]["instances"] >= sizing["correlator"]["instances_by_throughput"] >= 1
