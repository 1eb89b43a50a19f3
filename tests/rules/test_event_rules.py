"""Event rules: the engine's index and memos never change what a plain match of every rule gives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmd.config import ConfigError, read_yaml
from alarmd.matchers import matches_all
from alarmd.model import AlarmTransition, Event, fingerprint
from alarmd.rules import engine as engine_module
from alarmd.rules.compile import Rule, compile_docs, render
from alarmd.rules.engine import RuleEngine

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"

# Every kind of condition the index files or leaves unfiled: `=` (also `=""`, which a missing
# label satisfies), `!=`, `=~`, `!~`, rules without a trap matcher, resolve matchers with and
# without an `=`, one alert name on several rules, `alertname` among the `by` labels.
RULES = """
groups:
  - name: g
    rules:
      - alert: LinkDown
        event: '{trap="linkDown"}'
        resolve: '{trap="linkUp"}'
        by: [device, if_index]
        annotations:
          summary: "down {{ $labels.device }} {{ $labels.if_index }} at {{ $value }}"
      - alert: LinkDown
        event: '{kind="1.3.6.1.6.3.1.1.5.3", device=~"r.*"}'
        resolve: '{trap=~"linkUp|coldStart"}'
        by: [device, if_index]
        annotations:
          summary: "by kind on {{ $labels.device }}"
      - alert: Restarted
        event: '{trap=~"cold.*|warmStart"}'
        by: [device]
      - alert: NotFromTraps
        event: '{source!="trap", event_type!~"clear|ack"}'
        resolve: '{source!="trap", event_type="clear"}'
        by: [device]
      - alert: Upstream
        event: '{source="upstream", event_type="raise", kind=~"LOS|AIS"}'
        resolve: '{source="upstream", event_type="clear"}'
        by: [device]
        annotations:
          summary: "{{ $labels.kind }} on {{ $labels.device }}"
      - alert: Anonymous
        event: '{device="", trap!=""}'
        by: [trap]
      - alert: Named
        event: '{trap="linkDown", device="r2"}'
        resolve: '{event_type="clear", trap="linkUp"}'
        by: [alertname, device]
"""


def rules(tmp_path: Path) -> list[Rule]:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    return compile_docs([read_yaml(path)])


def plain(rules: Iterable[Rule], events: Iterable[Event]) -> list[AlarmTransition]:
    """Event rule semantics without an index or a memo: every event against every rule."""
    firing: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
    out: list[AlarmTransition] = []

    def transition(kind: str, rule: Rule, fp: str, at: float, value: float) -> AlarmTransition:
        since, labels = firing[rule.name, fp]
        annotations = {k: render(v, labels, value, rule.threshold) for k, v in rule.annotations.items()}
        return AlarmTransition(
            kind=kind,  # type: ignore[arg-type]
            rule=rule.name,
            labels=dict(labels),
            annotations=annotations,
            value=value,
            threshold=rule.threshold,
            at=at,
            active_since=since,
            fingerprint=fp,
        )

    for event in events:
        labels = {"source": event.source, "kind": event.kind, **event.labels}
        for rule in rules:
            if rule.kind != "event":
                continue
            resolves = rule.resolve is not None and matches_all(rule.resolve, labels)
            if not resolves and not matches_all(rule.matchers, labels):
                continue
            fp = fingerprint({"alertname": rule.name, **{name: labels.get(name, "") for name in rule.by}})
            if resolves:
                if (rule.name, fp) in firing:
                    out.append(transition("resolved", rule, fp, event.at, 0.0))
                    del firing[rule.name, fp]
                continue
            kind = "repeat" if (rule.name, fp) in firing else "firing"
            firing.setdefault((rule.name, fp), (event.at, {**labels, **rule.labels, "alertname": rule.name}))
            out.append(transition(kind, rule, fp, event.at, 1.0))
    return out


def maybe(*values: str) -> st.SearchStrategy[str | None]:
    return st.sampled_from([*values, None])


event_labels = st.fixed_dictionaries(
    {},
    optional={
        "trap": maybe("linkDown", "linkUp", "coldStart", "warmStart", ""),
        "device": maybe("r1", "r2", "x9", ""),
        "if_index": maybe("1", "2"),
        "event_type": maybe("raise", "clear", "ack"),
        "kind": maybe("LOS", LINK_DOWN),  # a label may stand in for the event's own kind
    },
).map(lambda labels: {k: v for k, v in labels.items() if v is not None})
events = st.lists(
    st.tuples(
        st.sampled_from(["trap", "inform", "upstream"]),
        st.sampled_from([LINK_DOWN, "1.3.6.1.6.3.1.1.5.4", "AIS", "LOS", "other"]),
        event_labels,
    ),
    max_size=30,
)


def timeline(drawn: list[tuple[str, str, Mapping[str, str]]]) -> list[Event]:
    return [Event(source, kind, 10.0 * i, dict(labels)) for i, (source, kind, labels) in enumerate(drawn)]  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(drawn=events, memo_size=st.sampled_from([1, 2, 4096]))
def test_event_rules_give_what_matching_every_rule_gives(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[tuple[str, str, Mapping[str, str]]], memo_size: int
) -> None:
    compiled = rules(tmp_path_factory.mktemp("rules"))
    engine = RuleEngine(compiled)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "_MEMO_SIZE", memo_size)  # 1 and 2: the memos start over all the time
        got = [t for event in timeline(drawn) for t in engine.evaluate_event(event)]
    assert got == plain(compiled, timeline(drawn))


def test_rules_without_an_equality_matcher_are_never_skipped(tmp_path: Path) -> None:
    engine = RuleEngine(rules(tmp_path))
    drawn = [
        ("trap", "1.3.6.1.6.3.1.1.5.1", {"trap": "coldStart", "device": "r1"}),  # =~ only
        ("upstream", "AIS", {"device": "r1", "event_type": "raise"}),  # != and !~ only
        ("trap", LINK_DOWN, {"trap": "linkDown", "device": "r1", "if_index": "1"}),
        ("trap", "x", {"trap": "coldStart", "device": "r1", "if_index": "1"}),  # resolve without =
        ("trap", LINK_DOWN, {"trap": "linkDown"}),  # device="" holds for a missing device
    ]
    got = [(t.kind, t.rule) for event in timeline(drawn) for t in engine.evaluate_event(event)]
    assert got == [
        ("firing", "Restarted"),
        ("firing", "NotFromTraps"),
        ("firing", "Upstream"),
        ("firing", "LinkDown"),
        ("repeat", "LinkDown"),
        ("resolved", "LinkDown"),
        ("repeat", "Restarted"),
        ("firing", "LinkDown"),
        ("firing", "Anonymous"),
    ]


def test_a_repeat_after_a_reload_renders_the_reloaded_rules_annotations(tmp_path: Path) -> None:
    before = RuleEngine(rules(tmp_path))
    down = Event("trap", "x", 0.0, {"trap": "linkDown", "device": "r1", "if_index": "1"})
    assert [(t.kind, t.annotations["summary"]) for t in before.evaluate_event(down)] == [
        ("firing", "down r1 1 at 1.0")
    ]
    (tmp_path / "rules.yml").write_text(RULES.replace("down {{", "still down {{"))
    after = RuleEngine(compile_docs([read_yaml(tmp_path / "rules.yml")]))
    assert after.adopt(before) == 1
    assert [(t.kind, t.annotations["summary"]) for t in after.evaluate_event(down)] == [
        ("repeat", "still down r1 1 at 1.0")
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{alert: A, expr: e1_ais == 1, polled: e1_ais}", "polled belong to event rules"),
        ("""{alert: A, event: '{trap="t"}', polled: e1_ais}""", "polled needs by"),
    ],
)
def test_polled_belongs_to_event_rules_with_by(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(f"groups:\n  - name: g\n    rules:\n      - {rule}\n")
    with pytest.raises(ConfigError, match=message):
        compile_docs([read_yaml(path)])
