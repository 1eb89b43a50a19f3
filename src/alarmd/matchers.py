"""Prometheus-style label matchers (``=``, ``!=``, ``=~``, ``!~``) shared by rules, routing and inhibition."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

_MATCHER = re.compile(
    r'^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*$'
)
MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One Prometheus-style label matcher; regexes match the whole value."""

    name: str
    op: MatchOp
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.regex is not None:
            return (self.regex.fullmatch(actual) is not None) == (self.op == "=~")
        return (actual == self.value) == (self.op == "=")


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    """Whether every matcher holds."""
    for m in matchers:  # noqa: SIM110 - all() over a generator costs twice as much, for every event and sample
        if not m.matches(labels):
            return False
    return True


def parse_matchers(text: str | None) -> tuple[Matcher, ...]:
    """``name="v", other!~"re.*"`` → matchers; raises ValueError naming the bad part."""
    if not text or not text.strip():
        return ()
    out = []
    for part in _split(text):
        m = _MATCHER.match(part)
        if m is None:
            raise ValueError(f'bad label matcher {part.strip()!r}; write name="value" (or !=, =~, !~)')
        op: MatchOp = m.group("op")  # type: ignore[assignment]
        value = m.group("value").replace('\\"', '"')
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except (re.error, OverflowError, RecursionError) as exc:  # a{2**32}, (((...))) nested too deep
                raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        out.append(Matcher(m.group("name"), op, value, regex))
    return tuple(out)


def _split(text: str) -> list[str]:
    """Split matchers on commas outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def parse_matcher_list(items: Iterable[str]) -> tuple[Matcher, ...]:
    """Alertmanager's list form: ``['alarm_class="transmission"', 'tier=~"gold|diamond"']``."""
    out: list[Matcher] = []
    for item in items:
        out.extend(parse_matchers(item.strip().removeprefix("{").removesuffix("}")))
    return tuple(out)
