"""Evaluate samples and events against compiled rules: pure, deterministic, on the times given.

Metric rules go pending → firing after ``for`` and resolve when the ``clear`` condition
holds (or the threshold no longer breaks) for ``keep_firing_for``.  Event rules fire on a
matching trap or upstream alarm, count repeats, and resolve on the matching ``resolve``
event with the same ``by`` labels or after ``auto_clear`` of quiet (see :meth:`tick`).
Baseline rules fire when a series departs from its own normal pattern.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from alarmd.matchers import Matcher, matches_all
from alarmd.model import AlarmTransition, Event, Sample, fingerprint
from alarmd.rules.baseline import BaselineConfig, RobustBaseline
from alarmd.rules.compile import Rule, render

#: Bound of each memo below; a memo that reaches it starts over.
_MEMO_SIZE: Final = 4096


@dataclass(slots=True)
class _State:
    active_since: float
    labels: dict[str, str] = field(default_factory=dict)
    firing: bool = False
    clear_since: float | None = None
    last_seen: float = 0.0
    #: Kept by an event rule (its auto_clear applies), not by a metric rule of the same name.
    event: bool = False
    #: The annotations of the alarm's firing and repeat transitions (value 1) and the rule they
    #: were rendered for: the labels never change while a state lives, so neither do they.
    rendered: tuple[Rule, dict[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class HeldState:
    """A metric rule's series state no fault holds: pending under ``for``, or its alarm's clear hysteresis."""

    labels: Mapping[str, str]
    active_since: float
    firing: bool
    clear_since: float | None


def event_labels(event: Event) -> dict[str, str]:
    """An event's labels with ``source`` and ``kind`` added, as event rules match them."""
    return {"source": event.source, "kind": event.kind, **event.labels}


def _event_fingerprint(rule: Rule, labels: Mapping[str, str]) -> str:
    """An event rule's alarm identity: its name and its ``by`` labels."""
    return fingerprint({"alertname": rule.name, **{name: labels.get(name, "") for name in rule.by}})


class _EventRule:
    """An event rule and its alarm identities, remembered by the values of its ``by`` labels."""

    __slots__ = ("_blanks", "_fingerprints", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._blanks = ("",) * len(rule.by)
        self._fingerprints: dict[tuple[str, ...], str] = {}

    def fingerprint(self, labels: Mapping[str, str]) -> str:
        """:func:`_event_fingerprint` of the labels."""
        values = tuple(map(labels.get, self.rule.by, self._blanks))
        fp = self._fingerprints.get(values)
        if fp is None:
            if len(self._fingerprints) >= _MEMO_SIZE:
                self._fingerprints.clear()
            fp = self._fingerprints[values] = _event_fingerprint(self.rule, labels)
        return fp


#: An event rule to match, whether its event matchers may hold, whether its resolve matchers may.
_Candidate = tuple[_EventRule, bool, bool]


class _EventIndex:
    """The event rules whose event or resolve matchers an event's labels could satisfy.

    A condition (a rule's event matchers, or its resolve matchers) holds only if each of its
    ``=`` matchers does, so it is filed under one of them: the label name and the value it
    must have (a missing label is the empty string, as for the matchers).  A condition without
    an ``=`` matcher may hold for any event.  Candidates keep the order of the rules, and the
    conditions that may hold are still matched in full.
    """

    def __init__(self, rules: Sequence[_EventRule]) -> None:
        self._rules = tuple(rules)
        conditions = [_conditions(r.rule) for r in self._rules]
        # File conditions under the most used label names, so that few names need looking up.
        uses = Counter(m.name for conds in conditions for cond in conds for m in cond if m.op == "=")
        #: label name -> value -> (rule position, condition: 0 event matchers, 1 resolve matchers)
        self._table: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self._unfiled: list[tuple[int, int]] = []
        for position, conds in enumerate(conditions):
            for which, cond in enumerate(conds):
                equal = [m for m in cond if m.op == "="]
                if not equal:
                    self._unfiled.append((position, which))
                    continue
                key = max(equal, key=lambda m: uses[m.name])
                self._table.setdefault(key.name, {}).setdefault(key.value, []).append((position, which))
        self._names = tuple(self._table)
        self._blanks = ("",) * len(self._names)
        self._memo: dict[tuple[str, ...], tuple[_Candidate, ...]] = {}

    def candidates(self, labels: Mapping[str, str]) -> tuple[_Candidate, ...]:
        """The rules to match against these labels, in rule order."""
        values = tuple(map(labels.get, self._names, self._blanks))
        found = self._memo.get(values)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[values] = self._find(values)
        return found

    def _find(self, values: tuple[str, ...]) -> tuple[_Candidate, ...]:
        hits = list(self._unfiled)
        for name, value in zip(self._names, values, strict=True):
            hits.extend(self._table[name].get(value, ()))
        held: dict[int, list[bool]] = {}
        for position, which in hits:
            held.setdefault(position, [False, False])[which] = True
        return tuple((self._rules[p], fires, resolves) for p, (fires, resolves) in sorted(held.items()))


def _conditions(rule: Rule) -> tuple[tuple[Matcher, ...], ...]:
    """What makes an event rule act: its event matchers, and its resolve matchers if it has them."""
    return (rule.matchers,) if rule.resolve is None else (rule.matchers, rule.resolve)


class RuleEngine:
    """Pure rule evaluation: feed samples and events in time order, get transitions out."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._by_metric: dict[str, list[Rule]] = defaultdict(list)
        self._events = [r for r in self.rules if r.kind == "event"]
        event_rules = [_EventRule(r) for r in self._events]
        self._event_index = _EventIndex(event_rules)
        #: metric -> the event rules whose alarms its polls confirm or clear
        self._polled: dict[str, list[_EventRule]] = defaultdict(list)
        for event_rule in event_rules:
            if event_rule.rule.polled:
                self._polled[event_rule.rule.polled].append(event_rule)
        self._polled_by = {e.rule.name: e.rule.by for rules in self._polled.values() for e in rules}
        #: (alert, its polled rule's by-label values) -> the key of that alert's firing metric alarm
        self._polled_alarms: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}
        for rule in self.rules:
            if rule.kind in ("metric", "baseline"):
                self._by_metric[rule.metric].append(rule)
        self._baselines = {
            (r.name, r.identity or r.source): RobustBaseline(r.baseline or BaselineConfig())
            for r in self.rules
            if r.kind == "baseline"
        }
        self._state: dict[tuple[str, str], _State] = {}
        #: A series' key -> the key of the alarm restored for it under another fingerprint (one an
        #: earlier version gave it, from its rule's file and line): its samples go on with it.
        self._aliases: dict[tuple[str, str], tuple[str, str]] = {}
        self._metric_rules = {r.name for r in self.rules if r.kind in ("metric", "baseline")}
        #: Keys whose :meth:`held` state changed meaning, once :meth:`watch` was called (else None).
        self._noted: set[tuple[str, str]] | None = None

    # ------------------------------------------------------------------ samples

    def evaluate(self, sample: Sample, *, on_circuit: bool = True) -> list[AlarmTransition]:
        """Evaluate one sample against every metric and baseline rule on its metric.

        ``on_circuit`` says whether the sample's interface carries a circuit: baseline rules
        with ``circuits_only`` watch only those.
        """
        out: list[AlarmTransition] = []
        held = self._poll_event_alarms(sample, out) if sample.metric in self._polled else ()
        for rule in self._by_metric.get(sample.metric, ()):
            if rule.name in held or not matches_all(rule.matchers, sample.labels):
                continue
            if rule.circuits_only and not on_circuit:
                continue
            value = sample.value
            if rule.kind == "baseline":
                key = fingerprint(sample.labels)
                score = self._baselines[(rule.name, rule.identity or rule.source)].observe(
                    key, sample.value, sample.at
                )
                if score is None:
                    continue
                value = abs(score)
            transition = self._metric(rule, sample, value)
            if transition is not None:
                out.append(transition)
        return out

    def _poll_event_alarms(self, sample: Sample, out: list[AlarmTransition]) -> set[str]:
        """Confirm or clear the event alarms on this sample's line; return the alerts they hold.

        A poll read after the event (``at`` later) decides: a non-zero value confirms the
        alarm, which then stands until a poll reads 0 (no ``auto_clear`` any more); 0 clears
        it.  While such an alarm stands, the alert's metric rules raise no second alarm there.
        """
        held: set[str] = set()
        for candidate in self._polled[sample.metric]:
            rule = candidate.rule
            key = (rule.name, candidate.fingerprint(sample.labels))
            state = self._state.get(key)
            if state is None or not state.firing:
                continue
            held.add(rule.name)
            if sample.at <= state.last_seen:
                continue  # read before the event: it says nothing of it
            if sample.value == 0:
                del self._state[key]
                out.append(self._transition("resolved", rule, state, value=0.0, at=sample.at, fp=key[1]))
            else:
                state.event = False
                state.last_seen = sample.at
        return held

    def _metric(self, rule: Rule, sample: Sample, value: float) -> AlarmTransition | None:
        series = (rule.name, _series_fingerprint(rule, sample.labels))
        key = self._aliases.get(series, series)
        state = self._state.get(key)
        if state is None or not state.firing:
            if not rule.breaches(value):
                if self._state.pop(key, None) is not None:
                    self._note(key)  # pending ended without firing
                return None
            if state is None:
                labels = {**sample.labels, **rule.labels, "alertname": rule.name}
                state = self._state[key] = _State(sample.at, labels)
                self._note(key)  # pending began
            if sample.at - state.active_since < rule.for_seconds:
                return None
            state.firing = True
            self._note(key)  # the fault carries it from here
            if rule.name in self._polled_by:
                self._polled_alarms[self._line(rule.name, sample.labels)] = key
            return self._transition("firing", rule, state, value=value, at=sample.at, fp=key[1])
        if not rule.cleared(value):
            if state.clear_since is not None:
                self._note(key)  # the clear hysteresis starts over
            state.clear_since = None
            return None
        if state.clear_since is None:
            state.clear_since = sample.at
            self._note(key)  # the clear hysteresis began
        if sample.at - state.clear_since < rule.keep_firing_for:
            return None
        del self._state[key]
        self._aliases.pop(series, None)
        self._note(key)
        if rule.name in self._polled_by:
            self._polled_alarms.pop(self._line(rule.name, sample.labels), None)
        return self._transition("resolved", rule, state, value=value, at=sample.at, fp=key[1])

    # ------------------------------------------------------------------ events

    def evaluate_event(self, event: Event) -> list[AlarmTransition]:
        """Evaluate one trap, INFORM or upstream alarm against every event rule."""
        labels = event_labels(event)
        out: list[AlarmTransition] = []
        for candidate, may_fire, may_resolve in self._event_index.candidates(labels):
            rule = candidate.rule
            resolves = may_resolve and rule.resolve is not None and matches_all(rule.resolve, labels)
            if not resolves and not (may_fire and matches_all(rule.matchers, labels)):
                continue
            key = (rule.name, candidate.fingerprint(labels))
            state = self._state.get(key)
            if resolves:
                if state is not None and state.firing:
                    del self._state[key]
                    out.append(self._transition("resolved", rule, state, value=0.0, at=event.at, fp=key[1]))
                continue
            kind: Literal["firing", "repeat"] = "repeat"
            if state is None and rule.polled:
                polled_key = self._polled_alarms.get(self._line(rule.name, labels))
                if polled_key is not None and polled_key in self._state:
                    key, state = polled_key, self._state[polled_key]  # the poll saw it first
            if state is None:
                state = self._state[key] = _State(event.at, {**labels, **rule.labels, "alertname": rule.name})
                state.firing = True
                state.event = True
                kind = "firing"
            state.last_seen = event.at
            out.append(
                self._transition(
                    kind,
                    rule,
                    state,
                    value=1.0,
                    at=event.at,
                    fp=key[1],
                    rendered=_event_annotations(rule, state),
                )
            )
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

    def _line(self, alert: str, labels: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
        """An alert on one line, by the ``by`` labels of its polled event rule."""
        return alert, tuple(labels.get(name, "") for name in self._polled_by[alert])

    @staticmethod
    def _transition(
        kind: Literal["firing", "resolved", "repeat"],
        rule: Rule,
        state: _State,
        *,
        value: float,
        at: float,
        fp: str,
        rendered: Mapping[str, str] | None = None,
    ) -> AlarmTransition:
        """The transition of a rule's alarm; ``rendered``: its annotations for this value, if known."""
        return AlarmTransition(
            kind=kind,
            rule=rule.name,
            labels=dict(state.labels),
            annotations=_annotations(rule, state, value) if rendered is None else dict(rendered),
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
        self._aliases.update((k, v) for k, v in old._aliases.items() if v in kept)
        if old._noted is not None:
            self._noted = old._noted
            self._noted.update(k for k in old._state if k[0] not in names)
        self._polled_alarms.update(
            (line, key)
            for line, key in old._polled_alarms.items()
            if key in kept and line[0] in self._polled_by
        )
        for rule_key, baseline in old._baselines.items():
            if rule_key in self._baselines:
                self._baselines[rule_key] = baseline
        return len(kept)

    def forget(self, gone: Callable[[str, str, Mapping[str, str]], bool]) -> int:
        """Drop the pending and firing state ``gone(rule, fingerprint, labels)`` picks; return how many."""
        keys = self.release(gone)
        if self._noted is not None:
            self._noted.update(keys)
        return len(keys)

    def release(self, gone: Callable[[str, str, Mapping[str, str]], bool]) -> list[tuple[str, str]]:
        """Drop the state ``gone`` picks without noting it (another instance carries it on); its keys."""
        keys = [k for k, state in self._state.items() if gone(k[0], k[1], state.labels)]
        for key in keys:
            del self._state[key]
            if self._noted is not None:
                self._noted.discard(key)
        self._unalias(set(keys))
        return keys

    def _unalias(self, keys: set[tuple[str, str]]) -> None:
        for series in [s for s, key in self._aliases.items() if key in keys]:
            del self._aliases[series]

    def _note(self, key: tuple[str, str]) -> None:
        if self._noted is not None:
            self._noted.add(key)

    def watch(self) -> set[tuple[str, str]]:
        """The keys whose :meth:`held` state changed meaning since the caller last emptied this set.

        Noting starts with the first call (``--role all`` never makes it): a pending state
        begins or ends, a firing alarm's state passes to its fault, a clear hysteresis
        begins, starts over or ends; a sample that changes none of these notes nothing.
        """
        if self._noted is None:
            self._noted = set()
        return self._noted

    def held(self, rule: str, fingerprint: str) -> HeldState | None:
        """A metric rule's pending state, or a firing alarm's running clear hysteresis; None if neither."""
        state = self._state.get((rule, fingerprint))
        if state is None or state.event or (state.firing and state.clear_since is None):
            return None
        return HeldState(state.labels, state.active_since, state.firing, state.clear_since)

    def resume(self, rule: str, fingerprint: str, held: HeldState) -> bool:
        """Take back a :meth:`held` state kept elsewhere, its clocks unchanged; False if it does not apply.

        A pending state continues its ``for`` from its own ``active_since``; a clear
        hysteresis applies only to its alarm, firing here already (restored from its fault).
        """
        key = (rule, fingerprint)
        if held.firing:
            state = self._state.get(key)
            if state is None or not state.firing or state.event:
                return False
            state.clear_since = held.clear_since
            return True
        if rule not in self._metric_rules:
            return False
        self._state[key] = _State(held.active_since, dict(held.labels))
        return True

    def restore(
        self, rule: str, fingerprint: str, labels: Mapping[str, str], since: float, now: float
    ) -> None:
        """Mark an alarm restored from the store as firing, so the next input continues it.

        A metric alarm stored under another fingerprint than its series gives now (an earlier
        version named its rule by file and line) is continued by that series' samples all the same.
        """
        event = any(r.name == rule and _event_fingerprint(r, labels) == fingerprint for r in self._events)
        key = (rule, fingerprint)
        self._state[key] = _State(since, dict(labels), firing=True, last_seen=now, event=event)
        if event:
            return
        for candidate in self.rules:
            if candidate.name != rule or candidate.kind == "event":
                continue
            if any(labels.get(k) != v for k, v in candidate.labels.items()):
                continue
            series = {k: v for k, v in labels.items() if k != "alertname" and k not in candidate.labels}
            now_key = (rule, _series_fingerprint(candidate, series))
            if now_key != key and now_key not in self._state:
                self._aliases[now_key] = key

    def drop(self, rule: str, fingerprint: str) -> None:
        """Forget an alarm's rule state without a transition (another instance owns it now)."""
        self._state.pop((rule, fingerprint), None)
        self._unalias({(rule, fingerprint)})

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


def _series_fingerprint(rule: Rule, labels: Mapping[str, str]) -> str:
    """A metric or baseline rule's alarm on a series: fingerprint of its labels and the rule's identity."""
    return fingerprint({**labels, "__rule__": rule.identity or rule.source})


def _annotations(rule: Rule, state: _State, value: float) -> dict[str, str]:
    """A rule's annotations rendered for an alarm's labels and value."""
    return {k: render(v, state.labels, value, rule.threshold) for k, v in rule.annotations.items()}


def _event_annotations(rule: Rule, state: _State) -> dict[str, str]:
    """The annotations of an event alarm's firing and repeat transitions, rendered once per rule."""
    if state.rendered is None or state.rendered[0] is not rule:
        state.rendered = (rule, _annotations(rule, state, 1.0))
    return state.rendered[1]
