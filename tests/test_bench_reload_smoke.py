"""The reload benchmark (bench/reload.py) end to end, small and short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import reload

pytestmark = pytest.mark.integration  # the real event loop and clock for a few seconds


def test_reload_bench_times_each_reload_and_finds_no_missed_cycle(tmp_path: Path) -> None:
    options = reload.Options(devices=200, reloads=4, interval=2.0, spacing=0.3)

    summary = reload.run(options, tmp_path, say=lambda _: None)

    result = json.loads((tmp_path / "reload.json").read_text(encoding="utf-8"))
    assert result["reloads"] == 4 and len(result["reload_seconds"]) == 4
    assert result["changed_per_reload"] == 2
    assert result["unchanged_devices_checked"] == 200 - 4 * 2
    assert result["missed_cycles"] == 0, result["longest_gap_seconds"]
    assert 0 < result["reload_cpu_seconds_max"] <= result["reload_seconds_max"] * 2
    assert result["rss_mb_after_10"] > 0 and result["rss_mb_after_last"] > 0
    for key in ("reload_seconds_p50", "reload_seconds_max", "reload_missed_cycles", "reload_rss_growth_mb"):
        assert key in summary, key
    assert summary["reload_devices"] == 200 and summary["reload_interfaces"] == 2000
