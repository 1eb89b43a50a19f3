from __future__ import annotations

import json
from pathlib import Path

import pytest

from alarmd.alarms.clocks import Timer
from alarmd.cluster.changelog import Changelog, ChangelogError, ChangelogStore, decode, encode
from alarmd.model import Alarm, AlarmClass, Team, Tier

T0 = 1_767_225_600.0


def fault(alarm_id: str = "A1", device: str = "cpe-01") -> Alarm:
    return Alarm(
        alarm_id=alarm_id,
        rule="LinkDown",
        fingerprint=f"fp-{alarm_id}",
        labels={"device": device, "if_index": "2"},
        annotations={},
        alarm_class=AlarmClass.TRANSMISSION,
        lead_team=Team.SERVICE_SUPPORT,
        severity="critical",
        value=1,
        threshold=0,
        raised_at=T0,
        circuit="CIR-1",
        tier=Tier.GOLD,
        dispatched=True,
    )


@pytest.fixture
def store(tmp_path: Path) -> ChangelogStore:
    return ChangelogStore(tmp_path / "alarmd.sqlite")


def test_a_changed_fault_is_one_record_with_its_clocks_in_its_partition(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 7 if alarm.labels["device"] == "cpe-01" else 0)
    with store.transaction():
        store.save(fault(), "raised", at=T0)
        store.add_timers([Timer("A1", "escalation", T0 + 3600)])
    ((partition, key, value),) = log.take()
    assert (partition, key) == (7, b"A1")
    assert value is not None
    alarm, timers = decode(value)
    assert alarm == fault()
    assert timers == [Timer("A1", "escalation", T0 + 3600)]
    assert log.take() == []  # nothing changed since


def close(store: ChangelogStore) -> None:
    """Fault A1 closes a minute after it was raised."""
    closed = fault()
    closed.state, closed.cleared_at, closed.extra["closed"] = "cleared", T0 + 60, "true"
    store.save(closed, "closed", at=T0 + 60)


def test_a_closed_fault_is_a_tombstone_in_the_partition_it_was_written_to(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 3)
    store.save(fault(), "raised", at=T0)
    log.take()
    close(store)
    assert log.take() == [(3, b"A1", None)]


def test_a_fired_clock_changes_the_record(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 0)
    store.save(fault(), "raised", at=T0)
    store.add_timers([Timer("A1", "escalation", T0 + 10), Timer("A1", "close", T0 + 20)])
    log.take()
    assert store.done(Timer("A1", "escalation", T0 + 10))
    ((_, _, value),) = log.take()
    assert value is not None
    assert decode(value)[1] == [Timer("A1", "close", T0 + 20)]
    assert not store.done(Timer("A1", "escalation", T0 + 10))
    assert log.take() == []  # a timer already gone changes nothing


def test_records_that_could_not_be_written_go_again(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 0)
    store.save(fault(), "raised", at=T0)
    records = log.take()
    log.put_back(records)
    assert log.take() == records


def test_a_tombstone_that_could_not_be_written_goes_again(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 3)
    store.save(fault(), "raised", at=T0)
    log.take()
    close(store)
    tombstone = log.take()
    log.put_back(tombstone)  # its transaction was aborted: the next owner must not find the fault open
    assert log.take() == [(3, b"A1", None)]


def test_records_of_partitions_that_left_are_dropped_and_the_others_kept(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 7 if alarm.labels["device"] == "cpe-01" else 0)
    store.save(fault("A1", "cpe-01"), "raised", at=T0)
    store.save(fault("A2", "cpe-02"), "raised", at=T0)
    log.drop({7})
    assert [(p, k) for p, k, _ in log.take()] == [(0, b"A2")]


def test_a_restored_fault_keeps_its_due_times_replaces_the_cached_one_and_is_not_written_back(
    store: ChangelogStore,
) -> None:
    stale = fault()
    stale.occurrences = 1
    store.save(stale, "raised", at=T0)
    store.add_timers([Timer("A1", "escalation", T0 + 1)])
    store.changed.clear()
    newer = fault()
    newer.occurrences = 3
    log = Changelog(store, lambda alarm: 5)
    found = {5: {b"A1": encode(newer, [Timer("A1", "escalation", T0 + 3600)])}}
    alarms, skipped = log.restore(found, T0 + 7200)
    assert (alarms, skipped) == ([newer], [])
    assert store.open_alarms() == [newer]
    assert store.due_timers(T0 + 7200) == [Timer("A1", "escalation", T0 + 3600)]  # overdue: fires next tick
    assert store.history("A1")[-1][1:] == ("restored", "from the changelog")
    assert log.take() == []
    closed = fault()
    closed.state, closed.extra["closed"] = "cleared", "true"
    store.save(closed, "closed", at=T0 + 7300)
    assert log.take() == [(5, b"A1", None)]  # its tombstone goes where it came from


def test_an_unreadable_record_is_skipped_and_named(store: ChangelogStore) -> None:
    log = Changelog(store, lambda alarm: 0)
    alarms, skipped = log.restore({2: {b"A9": b"{not json", b"A1": encode(fault(), [])}}, T0)
    assert alarms == [fault()]
    assert len(skipped) == 1 and skipped[0].startswith("2/A9: unreadable changelog record")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda body: body.update(format=2), "format 2"),
        (lambda body: body.update(timers=[["coffee", 0, T0]]), "unknown timer kind 'coffee'"),
        (lambda body: body.pop("alarm"), "unreadable"),
    ],
)
def test_a_record_of_another_format_or_with_bad_fields_is_refused(change: object, message: str) -> None:
    body = json.loads(encode(fault(), [Timer("A1", "escalation", T0)]))
    change(body)  # type: ignore[operator]
    with pytest.raises(ChangelogError, match=message):
        decode(json.dumps(body).encode())
