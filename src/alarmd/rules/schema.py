"""The rule-file shape, after Prometheus: ``groups:`` of rules with ``alert``, ``expr``, ``for``.

Three kinds of rule share it: a *metric* rule (``expr``, optional ``clear`` for hysteresis and
``keep_firing_for``), an *event* rule (``event`` matchers on traps and upstream alarms, an
optional ``resolve``, ``by`` for identity, ``auto_clear`` and ``polled``, the metric whose next
poll confirms or clears the alarm) and a *baseline* rule
(``baseline``: departure from the series' own normal pattern).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alarmd.config import Duration, Strict


class BaselineSpec(Strict):
    """A fluctuation rule: how far a series may depart from its own hour-of-week normal."""

    metric: str = Field(min_length=1, description="<metric>{<matchers>} whose baseline is watched")
    deviation: float = Field(4.0, gt=0, description="robust z-score (|x - median| / spread) that warns")
    bucket: Literal["hour_of_week", "hour_of_day"] = "hour_of_week"
    history: int = Field(4, ge=1, le=52, description="past weeks (or days) kept per bucket")
    resolution: Duration = Field(900.0, description="samples are averaged into slots this long first")
    min_history: int = Field(4, ge=1, description="closed slots a bucket needs before it scores")
    mad_floor: float = Field(1.0, gt=0, description="smallest spread, in the metric's units")
    utc_offset_hours: float = Field(8.0, description="where local hours begin (China: +8)")
    circuits_only: bool = Field(
        False,
        description="watch only interfaces that carry a circuit (customer lines); each watched series "
        "keeps its own history (about 11 KiB with 15-minute slots)",
    )


class RuleSpec(Strict):
    """One alerting rule as written in YAML."""

    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str | None = Field(None, description="<metric>{<matchers>} <op> <number>")
    clear: str | None = Field(None, description="<op> <number> that ends a firing alarm (hysteresis)")
    event: str | None = Field(None, description='{label="value", ...} matchers on traps and upstream alarms')
    resolve: str | None = Field(None, description="matchers of the event that clears it")
    by: list[str] = Field([], description="labels that identify one alarm of an event rule")
    auto_clear: Duration | None = Field(
        None, description="an event alarm clears itself after this quiet time"
    )
    polled: str | None = Field(
        None,
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="a 0/1 metric whose next poll of the same `by` labels confirms the event's alarm "
        "(non-zero) or clears it (0); meanwhile the alert's metric rules raise no second alarm there",
    )
    baseline: BaselineSpec | None = None
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_kind(self) -> RuleSpec:
        kinds = [k for k in ("expr", "event", "baseline") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a rule has exactly one of expr (metric rule), event (event rule) or baseline")
        if self.event is None and (self.resolve or self.by or self.auto_clear is not None or self.polled):
            raise ValueError("resolve, by, auto_clear and polled belong to event rules")
        if self.polled and not self.by:
            raise ValueError("polled needs by: the labels that find the alarm's line in the poll's samples")
        if self.expr is None and self.clear is not None:
            raise ValueError("clear belongs to metric rules (expr)")
        return self


class GroupSpec(Strict):
    """A named group of rules."""

    name: str = Field(min_length=1)
    rules: list[RuleSpec] = []


class RuleFileSpec(Strict):
    """A whole rule file."""

    groups: list[GroupSpec] = []
