"""Turn validated rule files into compiled rules, rejecting what cannot be evaluated."""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from alarmd.config import ConfigError, YamlDoc, validate
from alarmd.matchers import Matcher, parse_matchers
from alarmd.model import AlarmClass
from alarmd.rules.baseline import BaselineConfig
from alarmd.rules.schema import BaselineSpec, RuleFileSpec, RuleSpec

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = ("critical", "major", "minor", "warning")

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SELECTOR = r"(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>[^}]*)\})?"
_EXPR = re.compile(rf"^\s*{_SELECTOR}\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>{_NUMBER})\s*$")
_METRIC = re.compile(rf"^\s*{_SELECTOR}\s*$")
_CLEAR = re.compile(rf"^\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>{_NUMBER})\s*$")
_EVENT = re.compile(r"^\s*\{(?P<matchers>[^}]*)\}\s*$")
_TEMPLATE = re.compile(r"\{\{\s*\$(?P<what>labels\.[a-zA-Z_][a-zA-Z0-9_]*|value|threshold)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule of one of three kinds: ``metric``, ``event`` or ``baseline``."""

    name: str
    group: str
    kind: Literal["metric", "event", "baseline"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    source: str
    for_seconds: float = 0.0
    keep_firing_for: float = 0.0
    metric: str = ""
    matchers: tuple[Matcher, ...] = ()
    op: str = ">"
    threshold: float = 0.0
    clear_op: str | None = None
    clear_threshold: float | None = None
    resolve: tuple[Matcher, ...] | None = None
    by: tuple[str, ...] = ()
    auto_clear: float | None = None
    polled: str = ""
    baseline: BaselineConfig | None = None
    circuits_only: bool = False
    #: What tells a metric or baseline rule's alarms from those of the alert's other rules on the
    #: same series: its metric and labels (then its rank among rules that share both), never its
    #: file or line, so that an alarm keeps its identity when its rule moves (see :func:`compile_docs`).
    identity: str = ""

    def breaches(self, value: float) -> bool:
        """Whether a value breaks the rule's threshold."""
        return OPS[self.op](value, self.threshold)

    def cleared(self, value: float) -> bool:
        """Whether a value ends a firing alarm: the ``clear`` condition, else no longer breaching."""
        if self.clear_op is not None and self.clear_threshold is not None:
            return OPS[self.clear_op](value, self.clear_threshold)
        return not self.breaches(value)

    def describe(self) -> str:
        """One line for ``check-rules``."""
        if self.kind == "event":
            text = "event " + ", ".join(f"{m.name}{m.op}{m.value!r}" for m in self.matchers)
            if self.resolve is not None:
                text += " resolved by " + ", ".join(f"{m.name}{m.op}{m.value!r}" for m in self.resolve)
            if self.polled:
                text += f", confirmed or cleared by the next poll of {self.polled}"
            return text
        if self.kind == "baseline":
            return f"baseline of {self.metric} departs by > {self.threshold:g}"
        selector = self.metric
        if self.matchers:
            selector += "{" + ", ".join(f'{m.name}{m.op}"{m.value}"' for m in self.matchers) + "}"
        text = f"{selector} {self.op} {self.threshold:g} for {self.for_seconds:g}s"
        if self.clear_op is not None:
            text += f", clears at {self.clear_op} {self.clear_threshold:g}"
        return text


def render(template: str, labels: Mapping[str, str], value: float, threshold: float) -> str:
    """Fill ``{{ $labels.x }}``, ``{{ $value }}`` and ``{{ $threshold }}`` in an annotation."""

    def sub(match: re.Match[str]) -> str:
        what = match.group("what")
        if what == "value":
            return f"{value:.1f}"
        if what == "threshold":
            return f"{threshold:g}"
        return labels.get(what.removeprefix("labels."), "")

    return _TEMPLATE.sub(sub, template)


def _compile_rule(doc: YamlDoc, loc: tuple[str | int, ...], group: str, rule: RuleSpec) -> Rule:
    labels = dict(rule.labels)
    cls = labels.setdefault("alarm_class", AlarmClass.DATA_ANOMALY.value)
    if cls not in {c.value for c in AlarmClass}:
        raise ConfigError(
            f"{doc.where((*loc, 'labels', 'alarm_class'))}: rule {rule.alert}: alarm_class must be one of "
            f"{', '.join(c.value for c in AlarmClass)}, not '{cls}'"
        )
    sev = labels.setdefault("severity", "major")
    if sev not in SEVERITIES:
        raise ConfigError(
            f"{doc.where((*loc, 'labels', 'severity'))}: rule {rule.alert}: severity must be one of "
            f"{', '.join(SEVERITIES)}, not '{sev}'"
        )
    base = Rule(
        name=rule.alert,
        group=group,
        kind="metric",
        labels=labels,
        annotations=dict(rule.annotations),
        source=doc.where(loc),
        for_seconds=rule.for_,
        keep_firing_for=rule.keep_firing_for,
    )

    def fail(key: str, what: str) -> ConfigError:
        return ConfigError(f"{doc.where((*loc, key))}: rule {rule.alert}: {what}")

    if rule.event is not None:
        return replace(
            base,
            kind="event",
            matchers=_event(rule.event, fail, "event"),
            resolve=_event(rule.resolve, fail, "resolve") if rule.resolve else None,
            by=tuple(rule.by),
            auto_clear=rule.auto_clear,
            polled=rule.polled or "",
        )
    if rule.baseline is not None:
        m = _METRIC.match(rule.baseline.metric)
        if m is None:
            raise fail(
                "baseline", f"cannot parse metric {rule.baseline.metric!r}; write <metric>{{<matchers>}}"
            )
        return replace(
            base,
            kind="baseline",
            metric=m.group("metric"),
            matchers=_matchers(m, fail, "baseline"),
            op=">",
            threshold=rule.baseline.deviation,
            baseline=_baseline_config(rule.baseline, fail),
            circuits_only=rule.baseline.circuits_only,
        )
    m = _EXPR.match(rule.expr or "")
    if m is None:
        raise fail(
            "expr",
            f"cannot parse expr {rule.expr!r}; write <metric> <op> <number>, "
            f"e.g. interface_utilisation_percent > 80",
        )
    clear_op = clear_threshold = None
    if rule.clear is not None:
        c = _CLEAR.match(rule.clear)
        if c is None:
            raise fail("clear", f"cannot parse clear {rule.clear!r}; write <op> <number>, e.g. '< 70'")
        clear_op, clear_threshold = c.group("op"), float(c.group("threshold"))
        if OPS[m.group("op")](clear_threshold, float(m.group("threshold"))):
            raise fail(
                "clear",
                f"clear '{rule.clear}' would also fire the rule; it must lie outside "
                f"'{m.group('op')} {m.group('threshold')}'",
            )
    return replace(
        base,
        metric=m.group("metric"),
        matchers=_matchers(m, fail, "expr"),
        op=m.group("op"),
        threshold=float(m.group("threshold")),
        clear_op=clear_op,
        clear_threshold=clear_threshold,
    )


def _baseline_config(spec: BaselineSpec, fail: Callable[[str, str], ConfigError]) -> BaselineConfig:
    try:
        return BaselineConfig(
            bucket=spec.bucket,
            history=spec.history,
            resolution=int(spec.resolution),
            min_history=spec.min_history,
            mad_floor=spec.mad_floor,
            utc_offset_hours=spec.utc_offset_hours,
        )
    except ValueError as exc:
        raise fail("baseline", str(exc)) from None


def _matchers(m: re.Match[str], fail: Callable[[str, str], ConfigError], key: str) -> tuple[Matcher, ...]:
    try:
        return parse_matchers(m.group("matchers"))
    except ValueError as exc:
        raise fail(key, str(exc)) from None


def _event(text: str, fail: Callable[[str, str], ConfigError], key: str) -> tuple[Matcher, ...]:
    m = _EVENT.match(text)
    if m is None:
        raise fail(
            key, f'cannot parse {key} {text!r}; write {{label="value", ...}}, e.g. {{trap="linkDown"}}'
        )
    matchers = _matchers(m, fail, key)
    if not matchers:
        raise fail(key, f"{key} needs at least one matcher")
    return matchers


def compile_doc(doc: YamlDoc) -> list[Rule]:
    """Compile one parsed rule file; every problem in it is reported, not only the first."""
    spec = validate(doc, RuleFileSpec)
    rules: list[Rule] = []
    problems: list[str] = []
    for g, group in enumerate(spec.groups):
        for r, rule in enumerate(group.rules):
            try:
                rules.append(_compile_rule(doc, ("groups", g, "rules", r), group.name, rule))
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return rules


def _identified(rules: list[Rule]) -> list[Rule]:
    """Each metric and baseline rule with its :attr:`Rule.identity`, in load order."""
    ranks: Counter[tuple[str, str]] = Counter()
    out = []
    for rule in rules:
        if rule.kind == "event":
            out.append(rule)
            continue
        base = json.dumps([rule.metric, sorted(rule.labels.items())], separators=(",", ":"))
        rank = ranks[(rule.name, base)]
        ranks[(rule.name, base)] += 1
        out.append(replace(rule, identity=base if not rank else f"{base}#{rank}"))
    return out


def compile_docs(docs: Iterable[YamlDoc]) -> list[Rule]:
    """Compile several rule files; one alert name may have several rules, but never two identical ones."""
    rules: list[Rule] = []
    problems: list[str] = []
    seen: dict[tuple[object, ...], str] = {}
    for doc in docs:
        try:
            compiled = compile_doc(doc)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        for rule in compiled:
            key = (rule.name, rule.kind, rule.metric, rule.matchers, rule.op, rule.threshold, rule.resolve)
            if key in seen:
                problems.append(f"{rule.source}: alert {rule.name} repeats the rule at {seen[key]}")
                continue
            seen[key] = rule.source
            rules.append(rule)
    if problems:
        raise ConfigError("\n".join(problems))
    return _identified(rules)
