"""The alarm store: alarms, their history and their clocks in SQLite (WAL), next to the outbox.

One connection serves the store and the outbox, so that a fault's new state, its timers and
the messages that announce it are committed together or not at all: after a crash nothing
is forgotten and no escalation is sent twice.  The schema is versioned (``PRAGMA
user_version``) and migrated forward at open.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from alarmd.alarms.clocks import Timer
from alarmd.model import Alarm, AlarmClass, Team, Tier

MIGRATIONS = (
    """
    CREATE TABLE alarms (
        alarm_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        body TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX alarms_open ON alarms (state);
    CREATE TABLE history (
        alarm_id TEXT NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE timers (
        alarm_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq INTEGER NOT NULL,
        due REAL NOT NULL,
        PRIMARY KEY (alarm_id, kind, seq)
    );
    CREATE INDEX timers_due ON timers (due);
    """,
    """
    CREATE TABLE outages (
        outage_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        ends REAL NOT NULL
    );
    """,
)


class StoreError(Exception):
    """The store cannot be opened or written; the message says which file and why."""


def write_failure(path: Path, exc: BaseException) -> str:
    """Why a write to the database at ``path`` failed, with the free space left beside it."""
    try:
        free = f"{shutil.disk_usage(path.parent).free} bytes free on {path.parent}"
    except OSError as err:
        free = f"free space of {path.parent} unknown: {err.strerror}"
    return f"{path}: cannot write the alarm store: {exc} ({free})"


def alarm_to_json(alarm: Alarm) -> str:
    """An alarm as JSON."""
    return json.dumps(dataclasses.asdict(alarm), sort_keys=True)


def alarm_from_json(text: str) -> Alarm:
    """An alarm back from JSON."""
    data = json.loads(text)
    data["alarm_class"] = AlarmClass(data["alarm_class"])
    data["lead_team"] = Team(data["lead_team"])
    data["tier"] = Tier(data["tier"]) if data.get("tier") else None
    return Alarm(**data)


class Store:
    """Alarms that are open (firing or in observation), their history and their timers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(str(path), isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the alarm store: {exc}") from None
        self._depth = 0
        #: Why the last transaction failed to commit; None once one commits again.
        self.problem: str | None = None

    def _migrate(self) -> None:
        version = int(self.connection.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.connection.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    @property
    def version(self) -> int:
        """The schema version on disk."""
        return int(self.connection.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is committed together (nesting joins the outer transaction).

        A database error (disk full, I/O error, a read-only file) rolls back, is remembered in
        :attr:`problem` until a later transaction commits, and is raised as :class:`StoreError`.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                if self.connection.in_transaction:
                    with suppress(sqlite3.Error):
                        self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.connection.in_transaction:
                with suppress(sqlite3.Error):
                    self.connection.execute("ROLLBACK")
            self.problem = write_failure(self.path, exc)
            raise StoreError(self.problem) from exc
        finally:
            self._depth = 0
        self.problem = None

    def save(self, alarm: Alarm, event: str, detail: str = "") -> None:
        """Store an alarm's current state and note the event in its history."""
        now = time.time()
        state = "closed" if alarm.state == "cleared" and alarm.extra.get("closed") else alarm.state
        self.connection.execute(
            "INSERT INTO alarms (alarm_id, fingerprint, state, body, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (alarm_id) DO UPDATE SET state = excluded.state, body = excluded.body, "
            "updated = excluded.updated",
            (alarm.alarm_id, alarm.fingerprint, state, alarm_to_json(alarm), now),
        )
        self.connection.execute(
            "INSERT INTO history (alarm_id, at, event, detail) VALUES (?, ?, ?, ?)",
            (alarm.alarm_id, now, event, detail),
        )

    def open_alarms(self) -> list[Alarm]:
        """Alarms firing or in observation, oldest first."""
        rows = self.connection.execute(
            "SELECT body FROM alarms WHERE state != 'closed' ORDER BY updated"
        ).fetchall()
        return [alarm_from_json(row[0]) for row in rows]

    def all_alarms(self) -> list[Alarm]:
        """Every alarm the store knows, open or closed."""
        return [alarm_from_json(row[0]) for row in self.connection.execute("SELECT body FROM alarms")]

    def history(self, alarm_id: str) -> list[tuple[float, str, str]]:
        """An alarm's events, in order."""
        return [
            (r[0], r[1], r[2])
            for r in self.connection.execute(
                "SELECT at, event, detail FROM history WHERE alarm_id = ? ORDER BY rowid", (alarm_id,)
            )
        ]

    def add_timers(self, timers: list[Timer]) -> None:
        """Start timers (a timer that exists already is kept as it is)."""
        self.connection.executemany(
            "INSERT OR IGNORE INTO timers (alarm_id, kind, seq, due) VALUES (?, ?, ?, ?)",
            [(t.alarm_id, t.kind, t.seq, t.due) for t in timers],
        )

    def drop_timers(self, alarm_id: str, *kinds: str) -> None:
        """Stop a fault's timers of the given kinds (all if none given)."""
        if kinds:
            marks = ",".join("?" * len(kinds))
            self.connection.execute(
                f"DELETE FROM timers WHERE alarm_id = ? AND kind IN ({marks})",  # noqa: S608
                (alarm_id, *kinds),
            )
        else:
            self.connection.execute("DELETE FROM timers WHERE alarm_id = ?", (alarm_id,))

    def timers(self, alarm_id: str) -> list[Timer]:
        """A fault's running timers."""
        return [
            Timer(r[0], r[1], r[3], r[2])
            for r in self.connection.execute(
                "SELECT alarm_id, kind, seq, due FROM timers WHERE alarm_id = ? ORDER BY due", (alarm_id,)
            )
        ]

    def due_timers(self, now: float) -> list[Timer]:
        """Timers due at ``now``, earliest first."""
        return [
            Timer(r[0], r[1], r[3], r[2])
            for r in self.connection.execute(
                "SELECT alarm_id, kind, seq, due FROM timers WHERE due <= ? ORDER BY due, rowid", (now,)
            )
        ]

    def next_due(self) -> float | None:
        """When the earliest timer falls due."""
        row = self.connection.execute("SELECT min(due) FROM timers").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def done(self, timer: Timer) -> bool:
        """Retire a timer; False if it was already gone (so it is never acted on twice)."""
        cur = self.connection.execute(
            "DELETE FROM timers WHERE alarm_id = ? AND kind = ? AND seq = ?",
            (timer.alarm_id, timer.kind, timer.seq),
        )
        return cur.rowcount == 1

    def save_outage(self, outage_id: str, body: str, ends: float) -> None:
        """Store a planned outage (its JSON body) as it now stands."""
        self.connection.execute(
            "INSERT INTO outages (outage_id, body, ends) VALUES (?, ?, ?) "
            "ON CONFLICT (outage_id) DO UPDATE SET body = excluded.body, ends = excluded.ends",
            (outage_id, body, ends),
        )

    def outages(self) -> list[str]:
        """Every planned outage the store knows (JSON bodies), by end time."""
        return [row[0] for row in self.connection.execute("SELECT body FROM outages ORDER BY ends")]

    def close(self) -> None:
        """Close the database."""
        self.connection.close()
