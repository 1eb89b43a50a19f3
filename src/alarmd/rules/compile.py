"""Turn validated rule files into compiled rules, rejecting what cannot be evaluated."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from alarmd.config import ConfigError, YamlDoc, validate
from alarmd.model import AlarmClass
from alarmd.rules.schema import RuleFileSpec

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = ("critical", "major", "minor", "warning")

_EXPR = re.compile(
    r"^\s*(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*"
    r"(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$"
)
_MATCHER = re.compile(r'^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>!=|=)\s*"(?P<value>[^"]*)"\s*$')
_TEMPLATE = re.compile(r"\{\{\s*\$(?P<what>labels\.[a-zA-Z_][a-zA-Z0-9_]*|value|threshold)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled threshold rule."""

    name: str
    group: str
    metric: str
    matchers: tuple[tuple[str, str, str], ...]
    op: str
    threshold: float
    for_seconds: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    source: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series' labels satisfy the rule's label matchers."""
        return all((labels.get(name, "") == value) == (op == "=") for name, op, value in self.matchers)

    def breaches(self, value: float) -> bool:
        """Whether a value breaks the rule's threshold."""
        return OPS[self.op](value, self.threshold)


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


def _parse_matchers(text: str | None) -> tuple[tuple[str, str, str], ...]:
    if not text or not text.strip():
        return ()
    out = []
    for part in text.split(","):
        m = _MATCHER.match(part)
        if m is None:
            raise ValueError(f'bad label matcher {part.strip()!r}; write name="value" or name!="value"')
        out.append((m.group("name"), m.group("op"), m.group("value")))
    return tuple(out)


def compile_doc(doc: YamlDoc) -> list[Rule]:
    """Compile one parsed rule file."""
    spec = validate(doc, RuleFileSpec)
    rules: list[Rule] = []
    for g, group in enumerate(spec.groups):
        for r, rule in enumerate(group.rules):
            loc = ("groups", g, "rules", r)
            where = doc.where((*loc, "expr"))
            m = _EXPR.match(rule.expr)
            if m is None:
                raise ConfigError(
                    f"{where}: rule {rule.alert}: cannot parse expr {rule.expr!r}; "
                    f"write <metric> <op> <number>, e.g. interface_utilisation_percent > 80"
                )
            try:
                matchers = _parse_matchers(m.group("matchers"))
            except ValueError as exc:
                raise ConfigError(f"{where}: rule {rule.alert}: {exc}") from None
            labels = dict(rule.labels)
            cls = labels.setdefault("alarm_class", AlarmClass.DATA_ANOMALY.value)
            if cls not in {c.value for c in AlarmClass}:
                raise ConfigError(
                    f"{doc.where((*loc, 'labels', 'alarm_class'))}: rule {rule.alert}: "
                    f"alarm_class must be one of {', '.join(c.value for c in AlarmClass)}, "
                    f"not '{cls}'"
                )
            sev = labels.setdefault("severity", "major")
            if sev not in SEVERITIES:
                raise ConfigError(
                    f"{doc.where((*loc, 'labels', 'severity'))}: rule {rule.alert}: "
                    f"severity must be one of {', '.join(SEVERITIES)}, not '{sev}'"
                )
            rules.append(
                Rule(
                    name=rule.alert,
                    group=group.name,
                    metric=m.group("metric"),
                    matchers=matchers,
                    op=m.group("op"),
                    threshold=float(m.group("threshold")),
                    for_seconds=rule.for_,
                    labels=labels,
                    annotations=dict(rule.annotations),
                    source=doc.where(loc),
                )
            )
    return rules


def compile_docs(docs: Iterable[YamlDoc]) -> list[Rule]:
    """Compile several rule files; an alert name may appear only once across them."""
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for doc in docs:
        for rule in compile_doc(doc):
            if rule.name in seen:
                raise ConfigError(f"{rule.source}: alert {rule.name} is already defined at {seen[rule.name]}")
            seen[rule.name] = rule.source
            rules.append(rule)
    return rules
