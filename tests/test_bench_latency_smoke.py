"""Quick runs of the latency (bench/latency.py) and rule-engine (bench/rules.py) workloads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench import latency, rules

pytestmark = pytest.mark.integration


def test_every_latency_probe_yields_exactly_one_work_order_on_the_real_broker(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # A 2 s poll interval: the daemon polls the router (and so knows its interfaces) within 2 s of start.
    options = latency.Options(
        duration=3.0,
        warmup_probes=1,
        lead_in=1.0,
        poll_interval=2.0,
        bootstrap=kafka_bootstrap,
        py_spy=None,
        stall_check=False,
    )
    summary = latency.run(options, tmp_path, say=lambda _: None)

    result = json.loads((tmp_path / "latency.json").read_text(encoding="utf-8"))
    assert result["probes"] >= 10, result["probes"]
    assert result["missing"] == [], "a probe produced no work order"
    assert result["duplicates"] == [], "a probe produced more than one work order"
    assert result["not_log_append_time"] == []
    assert result["latency_ms"]["count"] == result["probes"]
    assert all(0 < x < 10_000 for x in result["latencies_ms"]), result["latencies_ms"]
    assert result["background"]["sent"] >= 0.9 * 1_000 * (options.lead_in + options.duration)
    assert result["background"]["daemon_traps_dropped"] == 0
    assert result["breakdown"]["probes_with_all_log_lines"] == result["probes"]
    assert result["daemon_exit_code"] == 0

    for key in ("trap_to_workorder_p50_ms", "trap_to_workorder_p99_ms"):
        assert math.isfinite(summary[key]) and summary[key] > 0, (key, summary[key])
    assert summary["trap_to_workorder_p50_ms"] <= summary["trap_to_workorder_p99_ms"]
    assert summary["missing"] == 0


def test_rule_engine_quick_run_evaluates_the_shipped_rules(tmp_path: Path) -> None:
    summary = rules.run(rules.Options(interfaces=1_000, rounds=8), tmp_path, say=lambda _: None)

    result = json.loads((tmp_path / "rules.json").read_text(encoding="utf-8"))
    assert summary["evaluations_per_s"] > 0 and summary["rule_matches_per_s"] > 0
    assert summary["rules"] == result["rules"]["total"] >= 10
    assert result["samples"] == result["series"] * 8
    assert result["transitions"].get("firing:BandwidthOccupancyHigh", 0) > 0
    assert result["transitions"].get("firing:FluctuationWarning", 0) > 0, "the baselines scored"
    assert result["transitions"].get("resolved:LinkDown", 0) > 0
