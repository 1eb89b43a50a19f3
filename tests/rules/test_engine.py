from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmd.cli import main
from alarmd.config import ConfigError, read_yaml
from alarmd.model import Event, Sample
from alarmd.rules.compile import compile_docs
from alarmd.rules.engine import RuleEngine
from alarmd.rules.replay import MAX_VALUES, expand

REPO = Path(__file__).resolve().parents[2]
WAN = {
    "device": "cpe-router-01",
    "device_kind": "cpe_router",
    "interface": "GigabitEthernet0/0/1",
    "if_index": "2",
}


def shipped() -> RuleEngine:
    return RuleEngine(compile_docs(read_yaml(p) for p in sorted((REPO / "rules").glob("*.yml"))))


def util(value: float, at: float) -> Sample:
    return Sample("interface_utilisation_percent", WAN, value, at)


def test_bandwidth_occupancy_fires_only_after_its_for_duration() -> None:
    engine = shipped()
    assert engine.evaluate(util(90, 0)) == []
    assert engine.evaluate(util(91, 20)) == []
    fired = engine.evaluate(util(92, 30))
    assert [(t.kind, t.rule) for t in fired] == [("firing", "BandwidthOccupancyHigh")]
    assert fired[0].labels["alarm_class"] == "data_anomaly"
    assert fired[0].active_since == 0
    assert fired[0].annotations["summary"] == (
        "Bandwidth occupancy 92.0% (> 80%) on cpe-router-01 GigabitEthernet0/0/1"
    )
    assert engine.evaluate(util(93, 40)) == [], "a firing alarm does not fire again"


def test_exactly_80_percent_is_not_an_anomaly() -> None:
    engine = shipped()
    assert engine.evaluate(util(80.0, 0)) == []
    assert engine.evaluate(util(80.0, 100)) == []


def test_a_dip_below_the_threshold_restarts_the_for_clock() -> None:
    engine = shipped()
    engine.evaluate(util(90, 0))
    engine.evaluate(util(50, 20))
    assert engine.evaluate(util(90, 40)) == []
    assert engine.evaluate(util(90, 70))[0].kind == "firing"


def test_resolves_when_utilisation_falls_back() -> None:
    engine = shipped()
    engine.evaluate(util(90, 0))
    engine.evaluate(util(90, 30))
    resolved = engine.evaluate(util(12, 40))
    assert [(t.kind, t.value) for t in resolved] == [("resolved", 12)]
    assert engine.firing == 0


def rule_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.yml"
    path.write_text(body)
    return path


def test_unparseable_expr_is_named_with_file_and_line(tmp_path: Path) -> None:
    path = rule_file(
        tmp_path, "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: util >> 80\n"
    )
    with pytest.raises(ConfigError, match=r"r.yml:5: rule X: cannot parse expr 'util >> 80'"):
        compile_docs([read_yaml(path)])


def test_unknown_alarm_class_is_rejected(tmp_path: Path) -> None:
    path = rule_file(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: m > 1\n"
        "        labels:\n          alarm_class: power\n",
    )
    with pytest.raises(
        ConfigError, match=r"r.yml:7: rule X: alarm_class must be one of transmission, data_anomaly"
    ):
        compile_docs([read_yaml(path)])


def test_label_matchers_select_series(tmp_path: Path) -> None:
    path = rule_file(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n"
        '        expr: m{device_kind="cpe_router", interface!="NULL0"} > 1\n',
    )
    engine = RuleEngine(compile_docs([read_yaml(path)]))
    assert engine.evaluate(Sample("m", {"device_kind": "cpe_router", "interface": "Gi0"}, 2, 0))
    assert not engine.evaluate(Sample("m", {"device_kind": "cpe_router", "interface": "NULL0"}, 2, 0))
    assert not engine.evaluate(Sample("m", {"device_kind": "protocol_converter", "interface": "Gi0"}, 2, 0))


def test_shipped_rule_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test-rules", str(REPO / "rules" / "tests")]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out
    assert "FAIL" not in out


def test_a_failing_rule_test_fails_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.yml").write_text(
        f"rule_files: [{REPO / 'rules' / 'data_anomaly.yml'}]\n"
        "tests:\n  - name: wrong on purpose\n    interval: 10s\n    input_series:\n"
        "      - {series: 'interface_utilisation_percent{device=\"r\"}', values: 79x10}\n"
        "    alert_rule_test:\n"
        "      - {eval_time: 1m, alertname: BandwidthOccupancyHigh,\n"
        "         exp_alerts: [{exp_labels: {device: r}}]}\n"
    )
    assert main(["test-rules", str(tmp_path / "t.yml")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_rules_names_file_and_line_of_every_kind_of_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rule_file(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: m > 80\n        clear: '> 90'\n",
    )
    assert main(["check-rules", str(tmp_path)]) == 1
    assert f"{path}:6: rule X: clear '> 90' would also fire the rule" in capsys.readouterr().err


def test_event_rule_counts_repeats_and_resolves_by_identity() -> None:
    engine = shipped()
    down = {"trap": "linkDown", "device": "r1", "if_index": "2"}
    first = engine.evaluate_event(Event("trap", "1.3.6.1.6.3.1.1.5.3", 10, down))
    assert [(t.kind, t.rule) for t in first] == [("firing", "LinkDown")]
    assert [t.kind for t in engine.evaluate_event(Event("trap", "x", 20, down))] == ["repeat"]
    other_up = {"trap": "linkUp", "device": "r1", "if_index": "3"}
    assert engine.evaluate_event(Event("trap", "x", 30, other_up)) == []
    resolved = engine.evaluate_event(Event("trap", "x", 40, {**other_up, "if_index": "2"}))
    assert [(t.kind, t.fingerprint) for t in resolved] == [("resolved", first[0].fingerprint)]


def test_keep_firing_for_holds_an_alarm_through_a_short_dip(tmp_path: Path) -> None:
    path = rule_file(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: m > 80\n"
        "        keep_firing_for: 1m\n",
    )
    engine = RuleEngine(compile_docs([read_yaml(path)]))
    assert engine.evaluate(Sample("m", {}, 90, 0))[0].kind == "firing"
    assert engine.evaluate(Sample("m", {}, 50, 30)) == []
    assert engine.evaluate(Sample("m", {}, 90, 60)) == []
    assert engine.evaluate(Sample("m", {}, 50, 90)) == []
    assert [t.kind for t in engine.evaluate(Sample("m", {}, 50, 150))] == ["resolved"]


label_sets = st.dictionaries(
    st.sampled_from(["device", "interface", "if_index", "circuit"]),
    st.text(min_size=1, max_size=5),
    min_size=1,
)
series_values = st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40)


@given(labels=label_sets, values=series_values)
def test_evaluation_is_deterministic_and_label_order_independent(
    labels: dict[str, str], values: list[float]
) -> None:
    def run(order: list[str]) -> list[tuple[str, float, str]]:
        engine = shipped()
        out = []
        for i, value in enumerate(values):
            sample = Sample("interface_utilisation_percent", {k: labels[k] for k in order}, value, i * 10.0)
            out.extend((t.kind, t.at, t.fingerprint) for t in engine.evaluate(sample))
        return out

    keys = list(labels)
    assert run(keys) == run(list(reversed(keys)))


@given(values=series_values)
def test_no_alarm_fires_and_clears_in_the_same_instant(values: list[float]) -> None:
    engine = shipped()
    seen: dict[float, set[str]] = {}
    firing = False
    for i, value in enumerate(values):
        for t in engine.evaluate(util(value, i * 10.0)):
            seen.setdefault(t.at, set()).add(t.kind)
            assert t.kind == ("resolved" if firing else "firing"), "transitions alternate"
            firing = t.kind == "firing"
    assert all(len(kinds) == 1 for kinds in seen.values())


def test_check_rules_reports_every_problem_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: m >> 1\n"
        "      - alert: B\n        expr: m > 1\n        labels: {severity: loud}\n"
    )
    (tmp_path / "b.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: C\n        exprr: m > 1\n"
    )
    assert main(["check-rules", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a.yml'}:5: rule A: cannot parse expr" in err
    assert f"{tmp_path / 'a.yml'}:8: rule B: severity must be one of" in err
    assert f"{tmp_path / 'b.yml'}:5: unknown key 'groups.0.rules.0.exprr' (did you mean 'expr'?)" in err


def test_an_event_rules_auto_clear_leaves_a_polled_alarm_of_the_same_name_alone() -> None:
    engine = shipped()
    down = Sample("interface_link_down", WAN, 1.0, 100.0)
    assert [(t.kind, t.rule) for t in engine.evaluate(down)] == [("firing", "LinkDown")]
    assert engine.tick(101.0) == [], "the polled LinkDown is not the trap LinkDown's to clear"
    assert engine.tick(100.0 + 2 * 86400) == []

    trap = Event(source="trap", kind="1.3.6.1.6.3.1.1.5.3", at=200.0, labels={**WAN, "trap": "linkDown"})
    assert [t.kind for t in engine.evaluate_event(trap)] == ["firing"]
    cleared = engine.tick(200.0 + 86400)
    assert [(t.kind, t.rule) for t in cleared] == [("resolved", "LinkDown")]
    assert engine.firing == 1, "the polled alarm still fires"


def test_a_restored_trap_alarm_keeps_its_auto_clear() -> None:
    engine = shipped()
    trap = Event(source="trap", kind="1.3.6.1.6.3.1.1.5.3", at=0.0, labels={**WAN, "trap": "linkDown"})
    (fired,) = engine.evaluate_event(trap)
    after_restart = shipped()
    after_restart.restore("LinkDown", fired.fingerprint, fired.labels, since=0.0, now=10.0)
    assert [t.kind for t in after_restart.tick(10.0 + 86400)] == ["resolved"]


def test_a_rule_test_series_is_bounded_instead_of_exhausting_memory() -> None:
    assert len(expand("0+1x9")) == 10
    assert len(expand(f"1x{MAX_VALUES - 1}")) == MAX_VALUES
    with pytest.raises(ValueError, match="longer than"):
        expand("1x99999999999")
    with pytest.raises(ValueError, match="longer than"):
        expand(f"1x{MAX_VALUES // 2} _x{MAX_VALUES // 2}")


def test_the_shipped_fluctuation_warning_keeps_history_for_customer_lines_only() -> None:
    engine = shipped()
    uplink = {**WAN, "interface": "GigabitEthernet0/0/9", "if_index": "9"}
    for minute in range(30):
        at = 1_700_000_000.0 + 60 * minute
        engine.evaluate(Sample("interface_utilisation_percent", uplink, 20.0, at), on_circuit=False)
    assert engine.baseline_series == 0, "an interface without a circuit costs no baseline"
    for minute in range(30):
        engine.evaluate(util(20.0, 1_700_000_000.0 + 60 * minute), on_circuit=True)
    assert engine.baseline_series == 1


RULE = "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: m > 80\n        for: 10s\n"
TWO = RULE + "      - alert: X\n        expr: m > 95\n        labels: {severity: critical}\n"


def engine_of(path: Path, body: str) -> RuleEngine:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return RuleEngine(compile_docs([read_yaml(path)]))


def test_an_alarm_keeps_its_identity_when_its_rule_moves_in_its_file_or_the_file_moves(
    tmp_path: Path,
) -> None:
    series = {"device": "cpe-01", "interface": "Gi0"}
    before = engine_of(tmp_path / "a" / "r.yml", RULE)
    (fired,) = [*before.evaluate(Sample("m", series, 90, 0)), *before.evaluate(Sample("m", series, 90, 10))]
    moved = engine_of(tmp_path / "b" / "rules.yml", "# a comment line shifts every rule down\n" + RULE)
    (again,) = [*moved.evaluate(Sample("m", series, 90, 0)), *moved.evaluate(Sample("m", series, 90, 10))]
    assert again.fingerprint == fired.fingerprint

    moved.adopt(before)  # a reload after the edit: the firing alarm goes on, and resolves
    reloaded = engine_of(tmp_path / "b" / "rules.yml", "# a comment line shifts every rule down\n" + RULE)
    reloaded.adopt(before)
    assert reloaded.evaluate(Sample("m", series, 95, 20)) == [], "no second alarm for the same breach"
    (resolved,) = reloaded.evaluate(Sample("m", series, 10, 30))
    assert (resolved.kind, resolved.fingerprint) == ("resolved", fired.fingerprint)


def test_two_rules_of_one_alert_on_one_series_are_two_alarms(tmp_path: Path) -> None:
    engine = engine_of(tmp_path / "r.yml", TWO)
    series = {"device": "cpe-01"}
    fired = [*engine.evaluate(Sample("m", series, 99, 0)), *engine.evaluate(Sample("m", series, 99, 10))]
    assert [t.labels["severity"] for t in fired] == ["critical", "major"]
    assert len({t.fingerprint for t in fired}) == 2


def test_an_alarm_restored_under_a_fingerprint_of_an_earlier_version_resolves_by_its_samples(
    tmp_path: Path,
) -> None:
    engine = engine_of(tmp_path / "r.yml", RULE)
    series = {"device": "cpe-01", "interface": "Gi0"}
    labels = {**series, "alarm_class": "data_anomaly", "severity": "major", "alertname": "X"}
    engine.restore("X", "0123456789abcdef", labels, since=0, now=100)  # the file's path and line named it
    assert engine.evaluate(Sample("m", series, 90, 110)) == [], "the restored alarm goes on"
    (resolved,) = engine.evaluate(Sample("m", series, 10, 120))
    assert (resolved.kind, resolved.fingerprint) == ("resolved", "0123456789abcdef")
    assert engine.firing == 0
