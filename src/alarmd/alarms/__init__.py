"""Alarms: the lifecycle of each fault from the rule engine's transitions."""
