"""A rule's pending ``for`` and clear hysteresis in the changelog: written when they change, taken back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from alarmd.cluster.changelog import (
    Changelog,
    ChangelogError,
    ChangelogStore,
    Record,
    RuleStates,
    decode_rule,
    read_back,
    rule_key,
)
from alarmd.config import read_yaml
from alarmd.model import Alarm, AlarmTransition, Sample
from alarmd.rules.compile import compile_docs
from alarmd.rules.engine import RuleEngine
from tests.cluster.test_changelog import T0, fault

RULES = """groups:
  - name: g
    rules:
      - alert: Busy
        expr: util > 80
        for: 5m
        clear: "< 70"
        keep_firing_for: 2m
"""
LINE = {"device": "cpe-01", "if_index": "2"}
OTHER = {"device": "cpe-02", "if_index": "2"}


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "r.yml"
    path.write_text(RULES)
    return path


class Correlator:
    """One correlator's engine and changelog, as :class:`PartitionOwner` wires them (partition by device)."""

    def __init__(self, rules_path: Path, store_path: Path, *, watched: bool = True) -> None:
        self.engine = RuleEngine(compile_docs([read_yaml(rules_path)]))
        if watched:
            self.engine.watch()
        self.store = ChangelogStore(store_path)
        self.rules = RuleStates(lambda: self.engine, lambda labels: 1 if labels["device"] == "cpe-01" else 2)
        self.changelog = Changelog(self.store, lambda alarm: self.rules.home(alarm.labels), self.rules)

    def util(self, value: float, at: float, line: Mapping[str, str] = LINE) -> list[AlarmTransition]:
        return self.engine.evaluate(Sample("util", dict(line), value, at))

    def take_over(self, topic: dict[int, dict[bytes, bytes]], now: float, *faults: Alarm) -> int:
        """What :meth:`PartitionOwner.assign` does: faults first, their firing state, then the rule states."""
        for alarm in faults:
            self.engine.restore(alarm.rule, alarm.fingerprint, alarm.labels, alarm.raised_at, now)
        skipped: list[str] = []
        resumed = self.rules.restore(topic, skipped)
        assert skipped == []
        return resumed


def compact(topic: dict[int, dict[bytes, bytes]], records: list[Record]) -> None:
    """Apply records as the compacted topic keeps them: the latest value per key, a tombstone removes it."""
    for partition, key, value in records:
        if value is None:
            topic.setdefault(partition, {}).pop(key, None)
        else:
            topic.setdefault(partition, {})[key] = value


def test_the_for_clock_continues_on_the_new_owner(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    assert a.util(90, T0) == []
    (record,) = a.changelog.take()
    assert record[0] == 1 and record[1].startswith(rule_key("Busy", ""))
    for at in range(30, 299, 30):  # still pending: no record per sample
        assert a.util(91, T0 + at) == []
    assert a.changelog.take() == []
    topic: dict[int, dict[bytes, bytes]] = {}
    compact(topic, [record])

    b = Correlator(rules_path, tmp_path / "b.sqlite")  # partition 1 moves to b after 4m59s
    assert b.take_over(topic, T0 + 299) == 1
    assert b.engine.pending == 1
    assert b.util(92, T0 + 299) == []
    (fired,) = b.util(93, T0 + 300)
    assert (fired.kind, fired.active_since, fired.at) == ("firing", T0, T0 + 300)  # not T0 + 599


def test_an_ended_pending_state_is_a_tombstone_and_not_taken_back(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    topic: dict[int, dict[bytes, bytes]] = {}
    a.util(90, T0)
    compact(topic, a.changelog.take())
    a.util(50, T0 + 60)  # it ended without firing
    (tombstone,) = a.changelog.take()
    assert tombstone[0] == 1 and tombstone[2] is None
    compact(topic, [tombstone])
    a.util(90, T0 + 70)
    a.util(50, T0 + 80)  # began and ended between two writes: nothing to write
    assert a.changelog.take() == []

    b = Correlator(rules_path, tmp_path / "b.sqlite")
    assert b.take_over(topic, T0 + 120) == 0
    assert b.util(90, T0 + 130) == []
    assert b.util(90, T0 + 300) == []  # its own for from T0 + 130
    assert [t.kind for t in b.util(90, T0 + 430)] == ["firing"]


def test_a_firing_alarms_clear_hysteresis_continues_and_its_pending_record_goes(
    rules_path: Path, tmp_path: Path
) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    topic: dict[int, dict[bytes, bytes]] = {}
    a.util(90, T0)
    compact(topic, a.changelog.take())
    (fired,) = a.util(90, T0 + 300)
    (tombstone,) = a.changelog.take()  # the fault carries the firing state from here: no double
    assert tombstone[2] is None
    compact(topic, [tombstone])
    assert a.util(75, T0 + 310) == []  # not below the clear condition: nothing changes
    assert a.changelog.take() == []
    a.util(60, T0 + 320)  # the clear hysteresis begins
    (record,) = a.changelog.take()
    assert record[2] is not None
    held = decode_rule(record[2])[2]
    assert (held.firing, held.clear_since, held.active_since) == (True, T0 + 320, T0)
    a.util(60, T0 + 340)
    assert a.changelog.take() == []  # still clearing: no record per sample
    compact(topic, [record])

    alarm = fault("A1", "cpe-01")
    alarm.rule, alarm.fingerprint, alarm.labels = "Busy", fired.fingerprint, dict(fired.labels)
    b = Correlator(rules_path, tmp_path / "b.sqlite")
    assert b.take_over(topic, T0 + 400, alarm) == 1
    (resolved,) = b.util(60, T0 + 440)
    assert (resolved.kind, resolved.at) == ("resolved", T0 + 440)  # clear_since T0 + 320 plus 2m


def clearing(rules_path: Path, tmp_path: Path) -> Correlator:
    """A correlator whose alarm fired at T0 + 300 and has been clearing since T0 + 320."""
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    a.util(90, T0)
    a.util(90, T0 + 300)
    a.util(60, T0 + 320)
    return a


def test_a_clear_hysteresis_that_starts_over_is_a_tombstone(rules_path: Path, tmp_path: Path) -> None:
    a = clearing(rules_path, tmp_path)
    a.changelog.take()
    a.util(95, T0 + 330)
    (tombstone,) = a.changelog.take()
    assert tombstone[2] is None


def test_a_hysteresis_without_its_firing_alarm_is_not_taken_back(rules_path: Path, tmp_path: Path) -> None:
    a = clearing(rules_path, tmp_path)
    topic: dict[int, dict[bytes, bytes]] = {}
    compact(topic, a.changelog.take())
    b = Correlator(rules_path, tmp_path / "b.sqlite")
    assert b.take_over(topic, T0 + 330) == 0
    assert b.engine.firing == 0 and b.engine.pending == 0


def test_an_engine_nobody_watches_notes_nothing(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite", watched=False)
    a.util(90, T0)
    assert a.engine._noted is None  # --role all: nothing is kept for a changelog
    a.engine.watch()
    assert a.changelog.take() == []


def test_a_reload_keeps_noting_and_a_gone_rules_state_goes(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    a.util(90, T0)
    a.changelog.take()
    kept = RuleEngine(compile_docs([read_yaml(rules_path)]))
    kept.adopt(a.engine)
    a.engine = kept
    a.util(50, T0 + 10)
    assert [r[2] for r in a.changelog.take()] == [None]
    a.util(90, T0 + 20)
    a.changelog.take()
    emptied = RuleEngine([])
    emptied.adopt(a.engine)
    a.engine = emptied
    assert [r[2] for r in a.changelog.take()] == [None]


def test_a_partition_that_left_takes_its_states_without_tombstones(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    a.util(90, T0)
    a.util(90, T0, OTHER)
    a.changelog.take()
    a.util(50, T0 + 10, OTHER)  # ended, not yet written, and its partition leaves
    a.changelog.drop({2})
    assert a.rules.release(lambda partition: partition == 2) == 0  # already ended here
    assert a.rules.release(lambda partition: partition == 1) == 1
    assert a.engine.pending == 0
    assert a.changelog.take() == []  # their new owner writes what follows


def test_records_that_could_not_be_written_go_again(rules_path: Path, tmp_path: Path) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    a.util(90, T0)
    records = a.changelog.take()
    a.changelog.put_back(records)
    assert a.changelog.take() == records
    a.util(50, T0 + 10)
    tombstone = a.changelog.take()
    a.changelog.put_back(tombstone)
    assert a.changelog.take() == tombstone


def test_rule_records_are_not_read_back_as_faults_and_an_unknown_kind_is_skipped(
    rules_path: Path, tmp_path: Path
) -> None:
    a = Correlator(rules_path, tmp_path / "a.sqlite")
    a.util(90, T0)
    ((partition, key, value),) = a.changelog.take()
    assert value is not None
    body = json.loads(value)
    body["kind"] = "baseline"
    found = {partition: {key: value, b"rule/Busy/x": json.dumps(body).encode()}}
    skipped: list[str] = []
    assert list(read_back(found, skipped)) == []
    assert skipped == []
    b = Correlator(rules_path, tmp_path / "b.sqlite")
    assert b.rules.restore(found, skipped) == 1
    assert len(skipped) == 1 and "unknown changelog record kind 'baseline'" in skipped[0]
    body["kind"] = "rule"
    body.pop("active_since")
    with pytest.raises(ChangelogError, match="unreadable"):
        decode_rule(json.dumps(body).encode())
