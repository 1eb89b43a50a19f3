"""Quality figures against a fixture computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.maintenance import Outage
from alarmd.alarms.quality import quality
from alarmd.alarms.store import Store
from alarmd.cli import main
from alarmd.model import Alarm, AlarmClass, Team, Tier, isotime

H = 3600.0
DAY = 24 * H
T0 = 1_800_000_000.0  # window start


def fault(
    n: int,
    circuit: str,
    tier: Tier,
    cls: AlarmClass,
    raised: float,
    cleared: float | None,
    parent: str | None = None,
) -> Alarm:
    return Alarm(
        alarm_id=f"{n:020d}",
        rule="R",
        fingerprint=f"fp{n}",
        labels={"device": f"dev-{circuit}"},
        annotations={},
        alarm_class=cls,
        lead_team=Team.SERVICE_SUPPORT,
        severity="major",
        value=1,
        threshold=0,
        raised_at=T0 + raised,
        cleared_at=None if cleared is None else T0 + cleared,
        state="firing" if cleared is None else "cleared",
        circuit=circuit,
        customer=f"cust-{circuit}",
        customer_name=f"Customer {circuit}",
        tier=tier,
        parent_id=parent,
    )


# Window: one day.  By hand:
# CIR-A (gold): transmission 1h-1h30 (30 min, repaired in 0.5 h: on time), transmission 1h15-3h15 (2 h,
#   repaired in 2 h > 1 h: late), overlapping -> outage 1h..3h15 = 2.25 h; a data anomaly 5h-6h (1 h,
#   on time, not an outage).  Faults 3, fault time 0.5 + 2 + 1 = 3.5 h, availability 1 - 2.25/24,
#   timeliness 2/3.
# CIR-B (ordinary): transmission from 23h, still open at "now" = window end + 1 h: 1 h in the window;
#   its 3 h limit falls after the window: not due.  A child alarm (folded) is not counted.
#   A fault that ended before the window is not counted.
FAULTS = [
    fault(1, "CIR-A", Tier.GOLD, AlarmClass.TRANSMISSION, 1 * H, 1.5 * H),
    fault(2, "CIR-A", Tier.GOLD, AlarmClass.TRANSMISSION, 1.25 * H, 3.25 * H),
    fault(3, "CIR-A", Tier.GOLD, AlarmClass.DATA_ANOMALY, 5 * H, 6 * H),
    fault(4, "CIR-B", Tier.ORDINARY, AlarmClass.TRANSMISSION, 23 * H, None),
    fault(5, "CIR-B", Tier.ORDINARY, AlarmClass.DATA_ANOMALY, 23 * H, None, parent="00000000000000000004"),
    fault(6, "CIR-B", Tier.ORDINARY, AlarmClass.TRANSMISSION, -5 * H, -4 * H),
]


def test_figures_match_the_hand_computed_fixture() -> None:
    rows = {r.key: r for r in quality(FAULTS, start=T0, end=T0 + DAY, now=T0 + DAY + H, clocks=ClockPolicy())}
    a, b = rows["CIR-A"], rows["CIR-B"]
    assert (a.faults, a.fault_seconds, a.repaired_on_time, a.repairs_due) == (3, 3.5 * H, 2, 3)
    assert a.availability == pytest.approx(1 - 2.25 / 24)
    assert a.timeliness == pytest.approx(2 / 3)
    assert (b.faults, b.fault_seconds, b.repairs_due, b.timeliness) == (1, 1 * H, 0, None)
    assert b.availability == pytest.approx(1 - 1 / 24)


def test_report_command_reads_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "alarmd.yml").write_text(
        "rule_files: [rules.yml]\n"
        f"profile_files: ['{Path(__file__).resolve().parents[2]}/config/profiles/*.yml']\n"
        "state_dir: state\n"
    )
    store = Store(tmp_path / "state" / "alarmd.sqlite")
    for alarm in FAULTS[:3]:
        store.save(alarm, "raised")
    window = planned("CHG-1", 1 * H, 2 * H, ["CIR-A"])
    store.save_outage(window.id, window.model_dump_json(), window.ends_at)
    store.close()
    start = "2027-01-15T08:00:00+00:00"  # T0
    assert (
        main(
            [
                "report",
                "-c",
                str(tmp_path),
                "--from",
                start,
                "--to",
                "2027-01-16T08:00:00+00:00",
                "--format",
                "json",
            ]
        )
        == 0
    )
    [row] = json.loads(capsys.readouterr().out)
    assert (row["circuit"], row["faults"], row["fault_hours"], row["timeliness_percent"]) == (
        "CIR-A",
        3,
        3.5,
        66.7,
    )
    assert row["availability_percent"] == pytest.approx(90.625)
    # the planned hour 1h-2h is left out: 2h-3h15 down of 23 h
    assert (row["planned_faults"], row["planned_hours"]) == (0, 1.0)
    assert row["availability_unplanned_percent"] == pytest.approx(round(100 * (1 - 1.25 / 23), 3))
    assert (
        main(["report", "-c", str(tmp_path), "--from", start, "--to", "2027-01-16", "--by", "customer"]) == 0
    )
    assert "cust-CIR-A" in capsys.readouterr().out


def planned(
    outage_id: str, start: float, end: float, circuits: list[str], *, cancelled: bool = False
) -> Outage:
    return Outage(
        id=outage_id,
        reason="cutover",
        created_by="change-desk",
        source="api",
        created_at=T0 - DAY,
        starts_at=T0 + start,
        ends_at=T0 + end,
        circuits=circuits,
        affected_circuits=circuits,
        affected_customers=[f"cust-{c}" for c in circuits],
        cancelled=cancelled,
    )


def test_planned_outages_are_counted_apart_and_left_out_of_the_second_availability() -> None:
    # CIR-C (gold), a planned outage 2h-4h.  Inside it: a transmission fault 2h-3h (over within the
    # window: no work order) and one 3h30-5h (outlived the window, dispatched at 4h15).  Outside: a
    # transmission fault 10h-11h.  Outage time 1 + 1.5 + 1 = 3.5 h of 24: availability 1 - 3.5/24.
    # Without the planned 2h-4h, what is left is 4h-5h and 10h-11h = 2 h of 22 h: 1 - 2/22.  A
    # cancelled outage counts for nothing.
    inside = fault(7, "CIR-C", Tier.GOLD, AlarmClass.TRANSMISSION, 2 * H, 3 * H)
    inside.extra["planned_outage"] = "CHG-1"
    outlived = fault(8, "CIR-C", Tier.GOLD, AlarmClass.TRANSMISSION, 3.5 * H, 5 * H)
    outlived.extra.update(planned_outage="CHG-1", released_at=isotime(T0 + 4.25 * H))
    outlived.dispatched = True
    outside = fault(9, "CIR-C", Tier.GOLD, AlarmClass.TRANSMISSION, 10 * H, 11 * H)
    windows = [
        planned("CHG-1", 2 * H, 4 * H, ["CIR-C"]),
        planned("CHG-2", 12 * H, 20 * H, ["CIR-C"], cancelled=True),
    ]
    (row,) = quality(
        [inside, outlived, outside],
        start=T0,
        end=T0 + DAY,
        now=T0 + DAY,
        clocks=ClockPolicy(),
        outages=windows,
    )
    assert (row.faults, row.planned_faults, row.planned_seconds) == (1, 2, 2 * H)
    assert row.availability == pytest.approx(1 - 3.5 / 24)
    assert row.availability_unplanned == pytest.approx(1 - 2 / 22)
    # the outlived fault's clock ran from its release at 4h15: repaired at 5h, within 1 h; the one
    # over within its window had no limit at all
    assert (row.repaired_on_time, row.repairs_due) == (2, 2)
