from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.config import ConfigError, read_yaml
from alarmd.model import Sample
from alarmd.rules.compile import compile_docs
from alarmd.rules.engine import RuleEngine

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
