"""deploy/prometheus and deploy/grafana: promtool accepts the rules, and every query uses shipped metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alarmd.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "alarmd.rules.yml"
RULE_TESTS = PROMETHEUS / "alarmd.rules.test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "alarmd-noc.json"
PROMTOOL_TIMEOUT = 60  # seconds; promtool answers these in well under one

# Series names each metric family exposes, by type (prometheus_client drops `_total` from
# a counter's family name; an Info family `x` exposes `x_info`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"atan2", "inf", "nan"}
)
# Grafana's interval variables stand where PromQL wants a duration; other variables only
# appear inside label-matcher strings, which stay valid PromQL as they are.
GRAFANA_DURATIONS = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}"
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def promql_metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', GRAFANA_DURATIONS.sub("5m", expr))
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # by (...), on (...), group_left (...)
    for match in _IDENT.finditer(text):
        word = match.group()
        if word in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(word)
    return names


def grafana_query_expr(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, None when it selects no series."""
    if m := _LABEL_VALUES.match(query):
        return m.group("selector")
    if m := _QUERY_RESULT.match(query):
        return m.group("expr")
    if query.strip().startswith(("label_names(", "metrics(")):
        return None
    return query


def shipped_series_names() -> set[str]:
    """Every series name alarmd's /metrics can expose."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """All rules of a Prometheus rule file, across its groups."""
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def recording_rule_names(path: Path = RULES) -> set[str]:
    """Names the rule file records."""
    return {rule["record"] for rule in load_rules(path) if "record" in rule}


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a dashboard."""
    exprs = [
        (f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"])
        for panel in _walk_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        if (expr := grafana_query_expr(query)) is not None:
            exprs.append((f"variable {var['name']!r}", expr))
    return exprs


def rule_exprs(path: Path = RULES) -> list[tuple[str, str]]:
    """(where, PromQL) for every rule of a rule file."""
    return [(f"rule {rule.get('record') or rule.get('alert')!r}", rule["expr"]) for rule in load_rules(path)]


def unknown_metrics(exprs: list[tuple[str, str]], known: set[str]) -> list[str]:
    """One line per metric name used in ``exprs`` that is not in ``known``."""
    return [
        f"{where}: unknown metric {name!r} in {expr!r}"
        for where, expr in exprs
        for name in sorted(promql_metric_names(expr) - known)
    ]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian package prometheus) is installed by tools/system-deps.sh"
    return path


@pytest.fixture(scope="module")
def known_metrics() -> set[str]:
    return shipped_series_names() | recording_rule_names() | {"up"}


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT, check=False
    )


def test_promtool_checks_the_rules(promtool: str) -> None:
    proc = run_promtool(promtool, "check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    proc = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_checks_the_example_scrape_config(promtool: str) -> None:
    proc = run_promtool(promtool, "check", "config", SCRAPE_CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_for_severity_and_annotations_and_a_unit_test() -> None:
    alerts = [rule for rule in load_rules() if "alert" in rule]
    assert alerts
    for alert in alerts:
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert {"summary", "description"} <= alert["annotations"].keys(), alert["alert"]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in alerts:
        mine = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{alert['alert']}: no test where it fires"
        assert any(not case.get("exp_alerts") for case in mine), (
            f"{alert['alert']}: no test where it is quiet"
        )


def test_rules_use_only_shipped_metrics(known_metrics: set[str]) -> None:
    problems = unknown_metrics(rule_exprs(), known_metrics)
    assert not problems, "\n".join(problems)


def test_dashboard_uses_only_shipped_metrics(known_metrics: set[str]) -> None:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) > 20
    problems = unknown_metrics(exprs, known_metrics)
    assert not problems, "\n".join(problems)


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline "parse this expression"; a rule file of them is the next best thing.
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    rules = [
        {"record": f"dashboard:query:{i}", "expr": GRAFANA_DURATIONS.sub("5m", expr)}
        for i, (_, expr) in enumerate(exprs)
    ]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run_promtool(promtool, "check", "rules", rule_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _walk_panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (reason) (rate(alarmd_poll_errors_total{job=~"$job", reason!="x y"}[$__rate_interval]))',
            {"alarmd_poll_errors_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(alarmd_dispatch_kafka_produce_seconds_bucket[5m])))",
            {"alarmd_dispatch_kafka_produce_seconds_bucket"},
        ),
        (
            "topk(10, circuit:alarmd_interface_utilisation_ratio:avg5m)",
            {"circuit:alarmd_interface_utilisation_ratio:avg5m"},
        ),
        ("a / on (job) group_left (version) b offset 5m and bool c == 1e3", {"a", "b", "c"}),
        ('{__name__="alarmd_build_info"}', {"alarmd_build_info"}),
        ("sum(x) without (instance) * 100 / max_over_time(y[1h:5m])", {"x", "y"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_a_typo_in_a_dashboard_copy_is_named(tmp_path: Path, known_metrics: set[str]) -> None:
    text = DASHBOARD.read_text()
    assert "alarmd_dispatch_outbox_depth" in text
    copy = tmp_path / "typo.json"
    copy.write_text(text.replace("alarmd_dispatch_outbox_depth", "alarmd_dispatch_outbox_dept", 1))
    problems = unknown_metrics(dashboard_exprs(json.loads(copy.read_text())), known_metrics)
    assert len(problems) == 1
    assert "'alarmd_dispatch_outbox_dept'" in problems[0]
    assert "Outbox depth and oldest age" in problems[0]


def test_a_typo_in_a_rules_copy_is_named(tmp_path: Path, known_metrics: set[str]) -> None:
    copy = tmp_path / "typo.rules.yml"
    copy.write_text(RULES.read_text().replace("alarmd_traps_dropped_total", "alarmd_traps_dropped", 1))
    problems = unknown_metrics(rule_exprs(copy), known_metrics)
    assert problems == [
        "rule 'AlarmdTrapsDropped': unknown metric 'alarmd_traps_dropped' in "
        "'increase(alarmd_traps_dropped[5m]) > 0'"
    ]
