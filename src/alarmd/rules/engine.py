"""Evaluate samples and events against compiled rules: pure, deterministic, on the times given.

Metric rules go pending → firing after ``for`` and resolve when the ``clear`` condition
holds (or the threshold no longer breaks) for ``keep_firing_for``.  Event rules fire on a
matching trap or upstream alarm, count repeats, and resolve on the matching ``resolve``
event with the same ``by`` labels or after ``auto_clear`` of quiet (see :meth:`tick`).
Baseline rules fire when a series departs from its own normal pattern.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from alarmd.matchers import matches_all
from alarmd.model import AlarmTransition, Event, Sample, fingerprint
from alarmd.rules.baseline import BaselineConfig, RobustBaseline
from alarmd.rules.compile import Rule, render


@dataclass(slots=True)
class _State:
    active_since: float
    labels: dict[str, str] = field(default_factory=dict)
    firing: bool = False
    clear_since: float | None = None
    last_seen: float = 0.0
    #: Kept by an event rule (its auto_clear applies), not by a metric rule of the same name.
    event: bool = False


def event_labels(event: Event) -> dict[str, str]:
    """An event's labels with ``source`` and ``kind`` added, as event rules match them."""
    return {"source": event.source, "kind": event.kind, **event.labels}


def _event_fingerprint(rule: Rule, labels: Mapping[str, str]) -> str:
    """An event rule's alarm identity: its name and its ``by`` labels."""
    return fingerprint({"alertname": rule.name, **{name: labels.get(name, "") for name in rule.by}})


class RuleEngine:
    """Pure rule evaluation: feed samples and events in time order, get transitions out."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._by_metric: dict[str, list[Rule]] = defaultdict(list)
        self._events = [r for r in self.rules if r.kind == "event"]
        for rule in self.rules:
            if rule.kind in ("metric", "baseline"):
                self._by_metric[rule.metric].append(rule)
        self._baselines = {
            r.source: RobustBaseline(r.baseline or BaselineConfig())
            for r in self.rules
            if r.kind == "baseline"
        }
        self._state: dict[tuple[str, str], _State] = {}

    # ------------------------------------------------------------------ samples

    def evaluate(self, sample: Sample, *, on_circuit: bool = True) -> list[AlarmTransition]:
        """Evaluate one sample against every metric and baseline rule on its metric.

        ``on_circuit`` says whether the sample's interface carries a circuit: baseline rules
        with ``circuits_only`` watch only those.
        """
        out: list[AlarmTransition] = []
        for rule in self._by_metric.get(sample.metric, ()):
            if not matches_all(rule.matchers, sample.labels):
                continue
            if rule.circuits_only and not on_circuit:
                continue
            value = sample.value
            if rule.kind == "baseline":
                key = fingerprint(sample.labels)
                score = self._baselines[rule.source].observe(key, sample.value, sample.at)
                if score is None:
                    continue
                value = abs(score)
            transition = self._metric(rule, sample, value)
            if transition is not None:
                out.append(transition)
        return out

    def _metric(self, rule: Rule, sample: Sample, value: float) -> AlarmTransition | None:
        key = (rule.name, fingerprint({**sample.labels, "__rule__": rule.source}))
        state = self._state.get(key)
        if state is None or not state.firing:
            if not rule.breaches(value):
                self._state.pop(key, None)
                return None
            if state is None:
                labels = {**sample.labels, **rule.labels, "alertname": rule.name}
                state = self._state[key] = _State(sample.at, labels)
            if sample.at - state.active_since < rule.for_seconds:
                return None
            state.firing = True
            return self._transition("firing", rule, state, value=value, at=sample.at, fp=key[1])
        if not rule.cleared(value):
            state.clear_since = None
            return None
        if state.clear_since is None:
            state.clear_since = sample.at
        if sample.at - state.clear_since < rule.keep_firing_for:
            return None
        del self._state[key]
        return self._transition("resolved", rule, state, value=value, at=sample.at, fp=key[1])

    # ------------------------------------------------------------------ events

    def evaluate_event(self, event: Event) -> list[AlarmTransition]:
        """Evaluate one trap, INFORM or upstream alarm against every event rule."""
        labels = event_labels(event)
        out: list[AlarmTransition] = []
        for rule in self._events:
            resolves = rule.resolve is not None and matches_all(rule.resolve, labels)
            if not resolves and not matches_all(rule.matchers, labels):
                continue
            key = (rule.name, _event_fingerprint(rule, labels))
            state = self._state.get(key)
            if resolves:
                if state is not None and state.firing:
                    del self._state[key]
                    out.append(self._transition("resolved", rule, state, value=0.0, at=event.at, fp=key[1]))
                continue
            if state is None:
                state = self._state[key] = _State(event.at, {**labels, **rule.labels, "alertname": rule.name})
                state.firing = True
                state.event = True
                state.last_seen = event.at
                out.append(self._transition("firing", rule, state, value=1.0, at=event.at, fp=key[1]))
            else:
                state.last_seen = event.at
                out.append(self._transition("repeat", rule, state, value=1.0, at=event.at, fp=key[1]))
        return out

    def tick(self, now: float) -> list[AlarmTransition]:
        """Resolve event alarms whose ``auto_clear`` time has passed without a repeat."""
        out: list[AlarmTransition] = []
        for rule in self._events:
            if rule.auto_clear is None:
                continue
            for key, state in list(self._state.items()):
                if (
                    key[0] == rule.name
                    and state.event
                    and state.firing
                    and now - state.last_seen >= rule.auto_clear
                ):
                    del self._state[key]
                    out.append(self._transition("resolved", rule, state, value=0.0, at=now, fp=key[1]))
        return out

    # ------------------------------------------------------------------ common

    @staticmethod
    def _transition(
        kind: Literal["firing", "resolved", "repeat"],
        rule: Rule,
        state: _State,
        *,
        value: float,
        at: float,
        fp: str,
    ) -> AlarmTransition:
        annotations = {k: render(v, state.labels, value, rule.threshold) for k, v in rule.annotations.items()}
        return AlarmTransition(
            kind=kind,
            rule=rule.name,
            labels=dict(state.labels),
            annotations=annotations,
            value=value,
            threshold=rule.threshold,
            at=at,
            active_since=state.active_since,
            fingerprint=fp,
        )

    def adopt(self, old: RuleEngine) -> int:
        """Carry over the pending and firing state (and baselines) of rules that a reload kept."""
        names = {r.name for r in self.rules}
        kept = {k: v for k, v in old._state.items() if k[0] in names}
        self._state.update(kept)
        for source, baseline in old._baselines.items():
            if source in self._baselines:
                self._baselines[source] = baseline
        return len(kept)

    def restore(
        self, rule: str, fingerprint: str, labels: Mapping[str, str], since: float, now: float
    ) -> None:
        """Mark an alarm restored from the store as firing, so the next input continues it."""
        event = any(r.name == rule and _event_fingerprint(r, labels) == fingerprint for r in self._events)
        self._state[(rule, fingerprint)] = _State(
            since, dict(labels), firing=True, last_seen=now, event=event
        )

    @property
    def baseline_series(self) -> int:
        """Series whose history a baseline rule keeps (each costs its fixed ring of slots)."""
        return sum(len(b) for b in self._baselines.values())

    @property
    def pending(self) -> int:
        """Series currently breaching a rule but not yet firing."""
        return sum(1 for s in self._state.values() if not s.firing)

    @property
    def firing(self) -> int:
        """Alarms currently firing."""
        return sum(1 for s in self._state.values() if s.firing)

    def firing_alarms(self) -> list[tuple[str, Mapping[str, str], str]]:
        """Every firing alarm as (alert name, labels, fingerprint), for rule tests and diagnostics."""
        return [(k[0], dict(s.labels), k[1]) for k, s in self._state.items() if s.firing]
