"""Who leads a fault (SPEC §3): transmission alarms → transport network, all else → service support."""

from __future__ import annotations

from alarmd.model import AlarmClass, Team


def lead_team(alarm_class: AlarmClass) -> Team:
    """The team that leads a fault of this class."""
    if alarm_class is AlarmClass.TRANSMISSION:
        return Team.TRANSPORT_NETWORK
    return Team.SERVICE_SUPPORT
