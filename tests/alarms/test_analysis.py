"""The major-fault analysis report and the report command's major faults and repeats, from a real store."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from alarmd.cli import main
from tests.alarms.test_grouping import Timeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def timeline(tmp_path: Path) -> Timeline:
    """CIR-A1 fails alone and is closed; then SEG-A is cut (five circuits) and mended, CIR-A4 last."""
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "alarmd.yml").write_text(
        f"rule_files: [rules.yml]\nprofile_files: ['{REPO}/config/profiles/*.yml']\nstate_dir: .\n"
    )
    tl = Timeline(tmp_path, straggler_wait="1m")
    tl.los("A1")
    tl.wait(600)
    tl.los("A1", "resolved")
    tl.wait(2 * 3600, step=600)  # observed, then closed
    for c in ("A1", "A2", "A3", "A4", "A5"):
        tl.los(c)
        tl.wait(5)
    tl.wait(1800, step=60)
    for c in ("A1", "A2", "A3", "A5"):
        tl.los(c, "resolved")
    tl.wait(120)  # CIR-A4 stays down: released to its own work order
    tl.los("A4", "resolved")
    tl.wait(60)
    return tl


def window(tl: Timeline) -> list[str]:
    def iso(epoch: float) -> str:
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()

    return ["--from", iso(tl.start), "--to", iso(tl.clock.now() + 1)]


def test_report_counts_repeats_per_circuit_and_the_major_faults_of_the_window(
    timeline: Timeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "-c", str(tmp_path), *window(timeline)]
    assert main([*args, "--format", "json"]) == 0
    rows = {r["circuit"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["CIR-A1"]["faults"], rows["CIR-A1"]["repeats"]) == (2, 1)
    assert (rows["CIR-A2"]["faults"], rows["CIR-A2"]["repeats"]) == (1, 0), "folded circuits count as faults"
    assert "(none)" not in rows, "the major fault is not a circuit's fault"
    assert main([*args, "--by", "customer"]) == 0
    table = capsys.readouterr().out
    assert "C-A1" in table and "repeats" in table
    # 1885 s: from CIR-A1 down (25 s of circuits failing, 30 min cut) to 1 min after four recovered
    assert "major faults: 1, 0.524 h in the window" in table
    assert main([*args, "--major-faults", "--format", "json"]) == 0
    [major] = json.loads(capsys.readouterr().out)
    assert (major["element"], major["circuits"], major["customers"], major["tier"]) == (
        "SEG-A",
        5,
        5,
        "diamond",
    )


def test_analysis_report_gives_element_circuits_by_tier_timeline_and_repeats(
    timeline: Timeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = timeline.orders()
    major = next(o for o in orders if o["major_fault"])
    assert main(["report", "-c", str(tmp_path), "--major-fault", major["work_order_id"]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"# Major fault {major['work_order_id']}: transmission_segment SEG-A\n")
    assert "- Circuits: 5; customers: 5" in text
    sections = [line for line in text.splitlines() if line.startswith("### ")]
    assert sections == [
        "### diamond: 1 circuits, 1 customers",
        "### gold: 1 circuits, 1 customers",
        "### ordinary: 3 circuits, 3 customers",
    ]
    timeline_rows = text.split("## Timeline")[1].split("## Repeats")[0]
    milestones = [
        line.split(" | ")[1].rstrip(" |") for line in timeline_rows.splitlines() if line[:3] == "| 2"
    ]
    assert milestones[:4] == [
        "CIR-A1 down (LineLOS)",
        "CIR-A2 down (LineLOS)",
        "CIR-A3 down (LineLOS)",
        ("major fault opened (threshold reached); work order sent, escalated at once"),
    ]
    assert "CIR-A4 still down: released to a work order of its own" in milestones
    assert milestones.index("major fault cleared") < milestones.index("CIR-A4 back")
    assert milestones.count("circuit added to the major fault") == 2  # CIR-A4 and CIR-A5
    first = orders[0]["work_order_id"]
    assert f"- CIR-A1 (Customer A1) repeated {first}" in text.split("## Repeats")[1]
    assert main(["report", "-c", str(tmp_path), "--major-fault", first]) == 1
    assert "is not a major fault" in capsys.readouterr().err
