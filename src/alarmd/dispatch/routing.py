"""Who leads a fault (SPEC §3), decided by an Alertmanager-shaped route tree.

The default tree says: transmission alarms → transport network team, everything else →
service support team; each receiver names the specialist teams that stand by.
"""

from __future__ import annotations

from collections.abc import Mapping

from alarmd.config import RouteConfig, RoutingConfig
from alarmd.matchers import Matcher, matches_all, parse_matcher_list
from alarmd.model import AlarmClass, Team


class _Route:
    def __init__(self, config: RouteConfig) -> None:
        self.receiver = config.receiver
        self.matchers: tuple[Matcher, ...] = parse_matcher_list(config.matchers)
        self.routes = [_Route(r) for r in config.routes]

    def find(self, labels: Mapping[str, str]) -> Team | None:
        if not matches_all(self.matchers, labels):
            return None
        for child in self.routes:
            found = child.find(labels)
            if found is not None:
                return found
        return self.receiver


class Router:
    """Picks the lead team of an alarm from its labels, and names the teams that stand by."""

    def __init__(self, config: RoutingConfig | None = None) -> None:
        config = config or RoutingConfig()
        self._root = _Route(config.route)
        self._related = {r.name: tuple(r.related_teams) for r in config.receivers}

    def lead_team(self, labels: Mapping[str, str]) -> Team:
        """The team that leads a fault with these labels."""
        return self._root.find(labels) or self._root.receiver

    def related_teams(self, team: Team) -> tuple[str, ...]:
        """The specialist teams that stand by while ``team`` leads."""
        return self._related.get(team, ())


_DEFAULT = Router()


def lead_team(alarm_class: AlarmClass) -> Team:
    """The team that leads a fault of this class under the default route tree."""
    return _DEFAULT.lead_team({"alarm_class": alarm_class.value})
