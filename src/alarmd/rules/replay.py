"""Rule unit tests in promtool's test-file shape, replayed on virtual time (pure, no I/O).

A test file names rule files and lists tests; each test feeds ``input_series`` (values in
promtool's expanding notation: ``1+2x3`` is 1 3 5 7, ``80x5`` is six 80s, ``_`` a missing
sample) every ``interval`` and ``input_events`` at their times, and expects, at each
``eval_time``, exactly the listed alarms of ``alertname`` (each expected label must match;
other labels may be present).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field

from alarmd.config import Duration, Strict
from alarmd.matchers import parse_matchers
from alarmd.model import AlarmClass, AlarmTransition, Event, Sample, Team
from alarmd.rules.compile import Rule
from alarmd.rules.engine import RuleEngine

_TERM = re.compile(
    r"^(?P<start>[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?:(?P<sign>[-+])(?P<step>\d+(?:\.\d+)?))?x(?P<n>\d+)$"
)
_SERIES = re.compile(r"^\s*(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>[^}]*)\})?\s*$")


#: The longest series a rule test may describe.
MAX_VALUES = 7 * 24 * 60


def expand(values: str) -> list[float | None]:
    """Promtool's expanding notation → one value (or None for ``_``) per interval.

    A series holds at most :data:`MAX_VALUES` values (a week of minutes): a test that asks
    for more is refused rather than allowed to exhaust memory.
    """
    out: list[float | None] = []
    for term in values.split():
        if term == "_":
            out.append(None)
            continue
        repeat = term.rpartition("x")[2]
        if repeat.isdigit() and len(out) + int(repeat) + 1 > MAX_VALUES:
            raise ValueError(f"{term!r} makes the series longer than {MAX_VALUES} values")
        if term.startswith("_x") and term[2:].isdigit():
            out.extend([None] * (int(term[2:]) + 1))
            continue
        m = _TERM.match(term)
        if m is None:
            try:
                out.append(float(term))
            except ValueError:
                raise ValueError(f"bad value {term!r}; write 80, 80x5, 10+5x3 or _") from None
            continue
        start, n = float(m.group("start")), int(m.group("n"))
        step = float(m.group("step") or 0) * (-1 if m.group("sign") == "-" else 1)
        out.extend(start + step * i for i in range(n + 1))
    return out


def _labels(text: str | None) -> dict[str, str]:
    matchers = parse_matchers(text)
    bad = [m for m in matchers if m.op != "="]
    if bad:
        raise ValueError(f"input labels use = only, not {bad[0].op}")
    return {m.name: m.value for m in matchers}


class InputSeries(Strict):
    """A series and its values."""

    series: str
    values: str


class InputEvent(Strict):
    """A trap or upstream alarm at a time."""

    at: Duration
    source: str = "trap"
    kind: str = ""
    labels: dict[str, str] = {}


class ExpectedAlarm(Strict):
    """An alarm that must be firing."""

    exp_labels: dict[str, str] = {}
    exp_lead_team: Team | None = None
    exp_parent: str | None = Field(
        None, description="alert name of the root cause it is folded under; '' = none"
    )


class AlertTest(Strict):
    """What must fire at one evaluation time."""

    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpectedAlarm] = []


class RuleTest(Strict):
    """One test: inputs and expectations."""

    name: str = ""
    interval: Duration = 60.0
    input_series: list[InputSeries] = []
    input_events: list[InputEvent] = []
    alert_rule_test: list[AlertTest] = Field(min_length=1)


class RuleTestFile(Strict):
    """A rule test file."""

    rule_files: list[str] = Field(min_length=1)
    config: str | None = Field(None, description="alarmd.yml whose inventory and routing the tests use")
    tests: list[RuleTest] = Field(min_length=1)


class Judge(Protocol):
    """What happens to transitions after the engine: alarms, lead teams, root causes."""

    def judge(self, transitions: list[AlarmTransition], now: float) -> None:
        """Take the transitions of one input (and the clock's progress)."""
        ...

    def lead_team(self, fingerprint: str, labels: Mapping[str, str]) -> Team:
        """The lead team of a firing alarm."""
        ...

    def parent(self, fingerprint: str) -> str | None:
        """The alert name of the alarm this one is folded under, if any."""
        ...


@dataclass
class ClassJudge:
    """The engine alone: lead team by alarm class, no root causes."""

    route: Callable[[AlarmClass], Team]

    def judge(self, transitions: list[AlarmTransition], now: float) -> None:
        """Nothing beyond the engine."""

    def lead_team(self, fingerprint: str, labels: Mapping[str, str]) -> Team:
        """The lead team of the alarm's class."""
        return self.route(AlarmClass(labels.get("alarm_class", "data_anomaly")))

    def parent(self, fingerprint: str) -> str | None:
        """No correlation without the alarm stage."""
        return None


@dataclass(frozen=True)
class Failure:
    """A test expectation that did not hold."""

    test: str
    eval_time: float
    alertname: str
    message: str


def run_test(test: RuleTest, rules: Iterable[Rule], judge: Judge, start: float = 0.0) -> list[Failure]:
    """Replay one test against fresh rules and compare what fires with what is expected."""
    engine = RuleEngine(rules)
    timeline: list[tuple[float, int, Sample | Event]] = []
    for series in test.input_series:
        m = _SERIES.match(series.series)
        if m is None:
            raise ValueError(f'bad series {series.series!r}; write metric{{label="value"}}')
        labels = _labels(m.group("labels"))
        for i, value in enumerate(expand(series.values)):
            if value is not None:
                at = i * test.interval
                timeline.append((at, 0, Sample(m.group("metric"), labels, value, start + at)))
    for ev in test.input_events:
        event = Event(source=ev.source, kind=ev.kind, at=start + ev.at, labels=ev.labels)  # type: ignore[arg-type]
        timeline.append((ev.at, 1, event))
    timeline.sort(key=lambda item: (item[0], item[1]))
    failures: list[Failure] = []
    pos = 0
    for check in sorted(test.alert_rule_test, key=lambda c: c.eval_time):
        while pos < len(timeline) and timeline[pos][0] <= check.eval_time:
            at, _, item = timeline[pos]
            found = engine.evaluate(item) if isinstance(item, Sample) else engine.evaluate_event(item)
            judge.judge(found, start + at)
            pos += 1
        judge.judge(engine.tick(start + check.eval_time), start + check.eval_time)
        firing = [(labels, fp) for name, labels, fp in engine.firing_alarms() if name == check.alertname]
        failures.extend(_compare(test, check, firing, judge))
    return failures


def _compare(
    test: RuleTest, check: AlertTest, firing: list[tuple[Mapping[str, str], str]], judge: Judge
) -> list[Failure]:
    def fail(message: str) -> Failure:
        return Failure(test.name, check.eval_time, check.alertname, message)

    unmatched = list(firing)
    out: list[Failure] = []
    for expected in check.exp_alerts:
        found = next(
            (a for a in unmatched if all(a[0].get(k) == v for k, v in expected.exp_labels.items())), None
        )
        if found is None:
            shown = [dict(labels) for labels, _ in firing] or "none"
            out.append(fail(f"expected an alarm with {expected.exp_labels}, firing: {shown}"))
            continue
        unmatched.remove(found)
        labels, fp = found
        if expected.exp_lead_team is not None:
            team = judge.lead_team(fp, labels)
            if team is not expected.exp_lead_team:
                out.append(fail(f"lead team {team.value}, expected {expected.exp_lead_team.value}"))
        if expected.exp_parent is not None:
            parent = judge.parent(fp) or ""
            if parent != expected.exp_parent:
                out.append(
                    fail(f"folded under {parent or 'nothing'}, expected {expected.exp_parent or 'nothing'}")
                )
    if unmatched:
        out.append(fail(f"unexpected alarms firing: {[dict(labels) for labels, _ in unmatched]}"))
    return out
