"""The trap benchmark (bench/traps.py) end to end at one low rate: both peers must get every trap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_trap_bench_quick_run_is_lossless_for_both_peers(tmp_path: Path) -> None:
    args = ["--quick", "--only", "traps", "--trap-rates", "500", "--trap-duration", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *args, "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((tmp_path / "traps.json").read_text(encoding="utf-8"))
    for name in ("alarmd", "snmptrapd"):
        (step,) = result["peers"][name]["steps"]
        assert step["rate"] == 500
        assert step["sent"] == 500, step
        assert step["received"] == step["sent"], (name, step)
        assert result["peers"][name]["lossless_per_s"] == 500
    alarmd_step = result["peers"]["alarmd"]["steps"][0]
    assert alarmd_step["detail"]["rule_matches"] == 500  # every linkDown reached the LinkDown rule
    assert alarmd_step["detail"]["traps_dropped"] == 0
    assert result["ratio"] == 1.0
    assert result["host"]["net_snmp"]

    latest = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert latest["traps"]["alarmd_lossless_per_s"] == 500
    assert latest["traps"]["snmptrapd_lossless_per_s"] == 500
