"""The correlators' changelog: every open fault with its clocks, one compacted record per fault.

A fault's record goes to the changelog partition of the same number as the events partition
its circuit is keyed to, with the alarm id as key; a closed fault (or one that left the
store) is a tombstone.  The instance that is assigned an events partition reads that
changelog partition back before it judges the partition's input, so a fault keeps its id,
lifecycle and clocks (with their original due times) when its partition moves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import cast, get_args

from alarmd.alarms.clocks import Timer, TimerKind
from alarmd.alarms.store import Store, alarm_from_json, alarm_to_json
from alarmd.model import Alarm

FORMAT = 1
"""Version of the changelog record; a reader skips records of another version (and says so)."""

Record = tuple[int, bytes, bytes | None]
"""``(partition, key, value)``; ``value`` None is a tombstone."""


class ChangelogError(ValueError):
    """A changelog record that cannot be read back."""


class ChangelogStore(Store):
    """The alarm store of a correlator: it also notes which faults changed since the last changelog write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        #: Alarm ids whose state or clocks changed and are not yet in the changelog.
        self.changed: set[str] = set()

    def save(self, alarm: Alarm, event: str, detail: str = "", *, at: float | None = None) -> None:
        """Store the alarm (see :meth:`Store.save`) and note it for the changelog."""
        super().save(alarm, event, detail, at=at)
        self.changed.add(alarm.alarm_id)

    def add_timers(self, timers: list[Timer]) -> None:
        """Start timers (see :meth:`Store.add_timers`) and note their faults for the changelog."""
        super().add_timers(timers)
        self.changed.update(t.alarm_id for t in timers)

    def drop_timers(self, alarm_id: str, *kinds: str) -> None:
        """Stop timers (see :meth:`Store.drop_timers`) and note the fault for the changelog."""
        super().drop_timers(alarm_id, *kinds)
        self.changed.add(alarm_id)

    def done(self, timer: Timer) -> bool:
        """Retire a timer (see :meth:`Store.done`) and note its fault for the changelog."""
        retired = super().done(timer)
        if retired:
            self.changed.add(timer.alarm_id)
        return retired

    def current(self, alarm_id: str) -> Alarm | None:
        """The fault as stored if it is open (firing or in observation); None if closed or unknown."""
        row = self.connection.execute(
            "SELECT state, body FROM alarms WHERE alarm_id = ?", (alarm_id,)
        ).fetchone()
        return alarm_from_json(row[1]) if row and row[0] != "closed" else None

    def alarm(self, alarm_id: str) -> Alarm | None:
        """The fault as stored, open or closed; None if this store does not have it (any more)."""
        row = self.connection.execute("SELECT body FROM alarms WHERE alarm_id = ?", (alarm_id,)).fetchone()
        return alarm_from_json(row[0]) if row else None

    def load(self, alarm: Alarm, timers: list[Timer], at: float) -> None:
        """Take in a fault restored from the changelog, with its clocks, without noting it as changed."""
        Store.save(self, alarm, "restored", "from the changelog", at=at)
        Store.add_timers(self, timers)


def encode(alarm: Alarm, timers: Iterable[Timer]) -> bytes:
    """A fault and its clocks as a changelog value."""
    body = {
        "format": FORMAT,
        "alarm": json.loads(alarm_to_json(alarm)),
        "timers": [[t.kind, t.seq, t.due] for t in timers],
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode(value: bytes) -> tuple[Alarm, list[Timer]]:
    """A changelog value back as a fault and its clocks; raises ChangelogError if it cannot be read."""
    try:
        body = json.loads(value)
        if body.get("format") != FORMAT:
            raise ChangelogError(f"changelog record format {body.get('format')!r}, expected {FORMAT}")
        alarm = alarm_from_json(json.dumps(body["alarm"]))
        timers = [_timer(alarm.alarm_id, kind, seq, due) for kind, seq, due in body["timers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChangelogError(f"unreadable changelog record: {exc}") from None
    return alarm, timers


def read_back(
    found: Mapping[int, Mapping[bytes, bytes]], skipped: list[str], where: str = ""
) -> Iterator[tuple[int, Alarm, list[Timer]]]:
    """``(partition, fault, clocks)`` of each record read back; what cannot be read goes to ``skipped``."""
    for partition, values in found.items():
        for key, value in values.items():
            try:
                alarm, timers = decode(value)
            except ChangelogError as exc:
                skipped.append(f"{where}{partition}/{key.decode(errors='replace')}: {exc}")
                continue
            yield partition, alarm, timers


def _timer(alarm_id: str, kind: object, seq: object, due: object) -> Timer:
    if kind not in get_args(TimerKind):
        raise ChangelogError(f"unknown timer kind {kind!r}")
    return Timer(alarm_id, cast(TimerKind, kind), float(cast(float, due)), int(cast(int, seq)))


class Changelog:
    """Turns the faults a correlator changed into changelog records, each to its circuit's partition."""

    def __init__(self, store: ChangelogStore, home: Callable[[Alarm], int]) -> None:
        self.store = store
        self.home = home
        #: The partition of every fault written, so that its tombstone goes to the same place.
        self._homes: dict[str, int] = {}

    def take(self) -> list[Record]:
        """The records of every fault changed since the last call (the changed set starts afresh)."""
        changed, self.store.changed = self.store.changed, set()
        records: list[Record] = []
        for alarm_id in sorted(changed):
            alarm = self.store.current(alarm_id)
            if alarm is None:
                partition = self._homes.pop(alarm_id, None)
                if partition is not None:
                    records.append((partition, alarm_id.encode(), None))
                continue
            partition = self._homes[alarm_id] = self.home(alarm)
            records.append((partition, alarm_id.encode(), encode(alarm, self.store.timers(alarm_id))))
        return records

    def put_back(self, records: Iterable[Record]) -> None:
        """Records that could not be written: their faults go again with the next :meth:`take`.

        A tombstone goes again too: its fault's partition is remembered once more.
        """
        for partition, key, value in records:
            alarm_id = key.decode()
            if value is None:
                self._homes[alarm_id] = partition
            self.store.changed.add(alarm_id)

    def drop(self, partitions: set[int]) -> None:
        """Forget the records waiting to be written to these partitions (their faults left this instance)."""
        self.put_back(r for r in self.take() if r[0] not in partitions)

    def restore(self, found: Mapping[int, Mapping[bytes, bytes]], at: float) -> tuple[list[Alarm], list[str]]:
        """Load the faults read back from the changelog into the store; the faults and the records skipped."""
        alarms: list[Alarm] = []
        skipped: list[str] = []
        with self.store.transaction():
            for partition, alarm, timers in read_back(found, skipped):
                self.store.drop(alarm.alarm_id)
                self.store.load(alarm, timers, at)
                self._homes[alarm.alarm_id] = partition
                alarms.append(alarm)
        return alarms, skipped

    def forget(self, alarm_id: str) -> None:
        """A fault left this instance: no tombstone of ours for it."""
        self._homes.pop(alarm_id, None)
        self.store.changed.discard(alarm_id)
