"""Evaluate samples against compiled rules: pending → firing after ``for``, resolved when back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from alarmd.model import AlarmTransition, Sample, fingerprint
from alarmd.rules.compile import Rule, render


@dataclass(slots=True)
class _State:
    active_since: float
    firing: bool = False


class RuleEngine:
    """Pure rule evaluation: feed samples in time order, get firing/resolved transitions out."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._by_metric: dict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            self._by_metric[rule.metric].append(rule)
        self._state: dict[tuple[str, str], _State] = {}

    def evaluate(self, sample: Sample) -> list[AlarmTransition]:
        """Evaluate one sample against every rule on its metric."""
        out: list[AlarmTransition] = []
        for rule in self._by_metric.get(sample.metric, ()):
            if not rule.matches(sample.labels):
                continue
            labels = {**sample.labels, **rule.labels, "alertname": rule.name}
            key = (rule.name, fingerprint(sample.labels))
            state = self._state.get(key)
            if rule.breaches(sample.value):
                if state is None:
                    state = self._state[key] = _State(active_since=sample.at)
                if not state.firing and sample.at - state.active_since >= rule.for_seconds:
                    state.firing = True
                    out.append(self._transition("firing", rule, labels, sample, state))
            elif state is not None:
                del self._state[key]
                if state.firing:
                    out.append(self._transition("resolved", rule, labels, sample, state))
        return out

    @staticmethod
    def _transition(
        kind: str, rule: Rule, labels: dict[str, str], sample: Sample, state: _State
    ) -> AlarmTransition:
        annotations = {
            k: render(v, labels, sample.value, rule.threshold) for k, v in rule.annotations.items()
        }
        return AlarmTransition(
            kind="firing" if kind == "firing" else "resolved",
            rule=rule.name,
            labels=labels,
            annotations=annotations,
            value=sample.value,
            threshold=rule.threshold,
            at=sample.at,
            active_since=state.active_since,
        )

    @property
    def pending(self) -> int:
        """Series currently breaching a rule but not yet firing."""
        return sum(1 for s in self._state.values() if not s.firing)

    @property
    def firing(self) -> int:
        """Series currently firing."""
        return sum(1 for s in self._state.values() if s.firing)
