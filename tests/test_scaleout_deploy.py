"""deploy/scaleout: the role units verify, and the three-machine example config is valid on each machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCALEOUT = REPO / "deploy" / "scaleout"
ALARMD = Path(sys.executable).parent / "alarmd"


@pytest.mark.parametrize(
    ("template", "name", "role"),
    [
        ("alarmd-collector@.service", "alarmd-collector@north.service", "collector"),
        ("alarmd-correlator.service", "alarmd-correlator.service", "correlator"),
    ],
)
def test_each_role_unit_passes_systemd_analyze_verify(
    tmp_path: Path, template: str, name: str, role: str
) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by tools/system-deps.sh"
    unit = (SCALEOUT / template).read_text().replace("/opt/alarmd/bin/alarmd", str(ALARMD))
    (tmp_path / name).write_text(unit)
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert f"run --role {role}" in unit and "Type=notify" in unit


@pytest.mark.parametrize("location", ["north", "south"])
def test_the_example_config_is_valid_for_each_location(location: str) -> None:
    env = {
        **os.environ,
        "ALARMD_LOCATION": location,
        "ALARMD_RULES": str(REPO / "rules" / "*.yml"),
        "ALARMD_PROFILES": str(REPO / "config" / "profiles" / "*.yml"),
        "ALARMD_TRAPS": str(REPO / "config" / "traps" / "*.yml"),
    }
    proc = subprocess.run(
        [str(ALARMD), "check-config", "-c", str(SCALEOUT)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 devices" in proc.stdout
