"""The rule-file shape, after Prometheus: ``groups:`` of rules with ``alert``, ``expr``, ``for``."""

from __future__ import annotations

from pydantic import Field

from alarmd.config import Duration, Strict


class RuleSpec(Strict):
    """One alerting rule as written in YAML."""

    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str = Field(min_length=1, description="<metric>{<matchers>} <op> <number>")
    for_: Duration = Field(0.0, alias="for")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class GroupSpec(Strict):
    """A named group of rules."""

    name: str = Field(min_length=1)
    rules: list[RuleSpec] = []


class RuleFileSpec(Strict):
    """A whole rule file."""

    groups: list[GroupSpec] = []
