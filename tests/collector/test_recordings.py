"""Real and synthetic device recordings, served by snmpsim and read with the shipped profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import readcheck
import simnet

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parents[1] / "recordings"
#: From the snmpsim-data package (tests/recordings/README.md says what each is and how it was checked).
PACKAGED = (
    "cloud/arista-dcs-7150s-52-cl.snmprec.bz2",
    "network/switch/cisco-c3750.snmprec.bz2",
    "network/switch/huawei-s12704.snmprec.bz2",
    "os/windows/XP.snmprec.bz2",
)


def test_every_readable_value_of_every_recording_is_read() -> None:
    expected = json.loads((HERE / "expected.json").read_text())
    recordings = readcheck.find(HERE / "synthetic") + [simnet.recorded() / p for p in PACKAGED]
    results = {r.name: r for r in readcheck.check(recordings)}
    assert set(results) == set(expected)
    for name, want in expected.items():
        got = results[name]
        assert not got.error, (name, got.error)
        assert got.interfaces_with_speed == want["interfaces_with_speed"], name
        for metric in readcheck.METRICS:
            read, wanted = got.values.get(metric, {}), want.get(metric, {})
            assert set(read) == set(wanted), (name, metric, read, wanted)
            for where, value in wanted.items():
                assert read[where] == pytest.approx(value, abs=0.1), (name, metric, where)
    optical = sum(r.optical for r in results.values())
    assert optical == 2 * (9 + 2 + 13) + 4 + 2 + 2 + 2 + 2  # 48 real, 12 synthetic
