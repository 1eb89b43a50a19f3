"""The correlators' changelog: every open fault with its clocks, and the rule state no fault holds.

A fault's record goes to the changelog partition of the same number as the events partition
its circuit is keyed to, with the alarm id as key; a closed fault (or one that left the
store) is a tombstone.  A metric rule's series that is pending under ``for``, or whose
firing alarm is in its clear hysteresis, has a record of kind ``rule`` keyed
``rule/<rule>/<fingerprint>`` in the same partition as its circuit's faults; it is written
only when that state changes meaning (see :meth:`RuleEngine.watch`) and is a tombstone once
neither holds.  The instance that is assigned an events partition reads that changelog
partition back before it judges the partition's input, so a fault keeps its id, lifecycle
and clocks (with their original due times), and a rule's ``for`` and clear hysteresis
continue from their original start, when its partition moves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

from alarmd.alarms.clocks import Timer, TimerKind
from alarmd.alarms.store import Store, alarm_from_json, alarm_to_json
from alarmd.model import Alarm
from alarmd.rules.engine import HeldState, RuleEngine

FORMAT = 1
"""Version of the changelog record; a reader skips records of another version (and says so)."""

RULE_PREFIX = b"rule/"
"""Key prefix of a rule state's record (``rule/<rule>/<fingerprint>``); other keys are alarm ids."""

KINDS = ("fault", "rule")
"""Record kinds this version reads (``kind``; a record without one is a fault's)."""

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
        body = _body(value, "fault")
        alarm = alarm_from_json(json.dumps(body["alarm"]))
        timers = [_timer(alarm.alarm_id, kind, seq, due) for kind, seq, due in body["timers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChangelogError(f"unreadable changelog record: {exc}") from None
    return alarm, timers


def _body(value: bytes, kind: str) -> dict[str, Any]:
    """A record's JSON body, checked for this version's format and the kind expected."""
    body = json.loads(value)
    if not isinstance(body, dict):
        raise ChangelogError("changelog record is not an object")
    if body.get("format") != FORMAT:
        raise ChangelogError(f"changelog record format {body.get('format')!r}, expected {FORMAT}")
    found = body.get("kind", "fault")
    if found != kind:
        what = "unknown" if found not in KINDS else "unexpected"
        raise ChangelogError(f"{what} changelog record kind {found!r}, expected {kind!r}")
    return body


def is_fault(key: bytes) -> bool:
    """Whether a changelog key is a fault's (its alarm id), not a rule state's."""
    return not key.startswith(RULE_PREFIX)


def rule_key(rule: str, fingerprint: str) -> bytes:
    """The changelog key of a rule's series state."""
    return RULE_PREFIX + f"{rule}/{fingerprint}".encode()


def encode_rule(rule: str, fingerprint: str, held: HeldState) -> bytes:
    """A rule's series state as a changelog value."""
    body = {
        "format": FORMAT,
        "kind": "rule",
        "rule": rule,
        "fingerprint": fingerprint,
        "labels": dict(held.labels),
        "active_since": held.active_since,
        "firing": held.firing,
        "clear_since": held.clear_since,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_rule(value: bytes) -> tuple[str, str, HeldState]:
    """A rule state's changelog value back as (rule, fingerprint, state); raises ChangelogError if bad."""
    try:
        body = _body(value, "rule")
        labels = cast(dict[str, str], body["labels"])
        clear_since = body["clear_since"]
        held = HeldState(
            {str(k): str(v) for k, v in labels.items()},
            float(cast(float, body["active_since"])),
            bool(body["firing"]),
            None if clear_since is None else float(cast(float, clear_since)),
        )
        return str(body["rule"]), str(body["fingerprint"]), held
    except (ValueError, KeyError, TypeError) as exc:
        raise ChangelogError(f"unreadable changelog record: {exc}") from None


def read_back(
    found: Mapping[int, Mapping[bytes, bytes]], skipped: list[str], where: str = ""
) -> Iterator[tuple[int, Alarm, list[Timer]]]:
    """``(partition, fault, clocks)`` of each fault's record read back; the unreadable go to ``skipped``."""
    for partition, values in found.items():
        for key, value in values.items():
            if not is_fault(key):
                continue
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


@dataclass
class RuleStates:
    """The rule states of a correlator's engine that no fault holds, as changelog records.

    ``home`` gives the partition of a series by its labels (that of its circuit's faults).
    """

    engine: Callable[[], RuleEngine]
    home: Callable[[Mapping[str, str]], int]
    #: The partition of every rule state written, so that its tombstone goes to the same place.
    homes: dict[bytes, int] = field(default_factory=dict)

    def take(self) -> list[Record]:
        """The records of every rule state whose meaning changed since the last call."""
        engine = self.engine()
        noted = engine.watch()
        records: list[Record] = []
        for rule, fingerprint in sorted(noted):
            key = rule_key(rule, fingerprint)
            held = engine.held(rule, fingerprint)
            if held is None:
                partition = self.homes.pop(key, None)
                if partition is not None:
                    records.append((partition, key, None))
                continue
            partition = self.homes[key] = self.home(held.labels)
            records.append((partition, key, encode_rule(rule, fingerprint, held)))
        noted.clear()
        return records

    def put_back(self, partition: int, key: bytes, value: bytes | None) -> None:
        """A record that could not be written goes again with the next :meth:`take`."""
        rule, _, fingerprint = key[len(RULE_PREFIX) :].decode().rpartition("/")
        if value is None:
            self.homes[key] = partition
        self.engine().watch().add((rule, fingerprint))

    def restore(self, found: Mapping[int, Mapping[bytes, bytes]], skipped: list[str]) -> int:
        """Take the rule states read back into the engine (after their faults); how many applied."""
        engine = self.engine()
        engine.watch()  # from here on, what changes is noted
        resumed = 0
        for partition, values in found.items():
            for key, value in values.items():
                if is_fault(key):
                    continue
                try:
                    rule, fingerprint, held = decode_rule(value)
                except ChangelogError as exc:
                    skipped.append(f"{partition}/{key.decode(errors='replace')}: {exc}")
                    continue
                self.homes[key] = partition
                resumed += engine.resume(rule, fingerprint, held)
        return resumed

    def release(self, leaving: Callable[[int], bool]) -> int:
        """Drop the engine's state of series whose partition left (no tombstone: its new owner carries it)."""
        gone = self.engine().release(lambda _rule, _fp, labels: leaving(self.home(labels)))
        for rule, fingerprint in gone:
            self.homes.pop(rule_key(rule, fingerprint), None)
        return len(gone)


class Changelog:
    """Turns the faults and rule states a correlator changed into records, each to its circuit's partition."""

    def __init__(
        self, store: ChangelogStore, home: Callable[[Alarm], int], rules: RuleStates | None = None
    ) -> None:
        self.store = store
        self.home = home
        #: The rule states kept beside the faults (none without an engine).
        self.rules = rules
        #: The partition of every fault written, so that its tombstone goes to the same place.
        self._homes: dict[str, int] = {}

    def take(self) -> list[Record]:
        """The records of every fault and rule state changed since the last call (they start afresh)."""
        changed, self.store.changed = self.store.changed, set()
        records: list[Record] = self.rules.take() if self.rules is not None else []
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
            if not is_fault(key):
                if self.rules is not None:
                    self.rules.put_back(partition, key, value)
                continue
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
