"""The running daemon's inventory snapshot in ``state_dir``: what ``check-config --diff`` compares with.

The daemon writes it at start and after every reload that applied.  It holds digests only
(salted SHA-256, see :func:`alarmd.inventory.reconcile.snapshot`), never a credential, and is
readable by the daemon's user alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from alarmd.config import ConfigError
from alarmd.inventory.reconcile import Snapshot

RUNNING_FILE = "running-inventory.json"


@dataclass(frozen=True)
class Running:
    """What the daemon last applied: its PID, when, the config file, and the snapshot with its salt."""

    pid: int
    applied_at: float
    config: str
    salt: bytes
    snapshot: Snapshot


def write_running(state_dir: Path, running: Running) -> None:
    """Replace the snapshot file atomically (mode 0600)."""
    path = state_dir / RUNNING_FILE
    temp = path.with_suffix(".tmp")
    body = {
        "pid": running.pid,
        "applied_at": running.applied_at,
        "config": running.config,
        "salt": running.salt.hex(),
        "snapshot": running.snapshot,
    }
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(body, separators=(",", ":")))  # one shot: the C encoder
    temp.replace(path)


def read_running(state_dir: Path) -> Running:
    """Read the running daemon's snapshot; a missing or unreadable file is a ConfigError that says why."""
    path = state_dir / RUNNING_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return Running(
            pid=int(body["pid"]),
            applied_at=float(body["applied_at"]),
            config=str(body["config"]),
            salt=bytes.fromhex(body["salt"]),
            snapshot=body["snapshot"],
        )
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no running daemon's inventory here (alarmd writes it at start; is it running "
            "with this state_dir?)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the running daemon's inventory: {exc}") from None


def describe(running: Running) -> str:
    """One line naming the daemon compared against, and whether it still runs."""
    try:
        os.kill(running.pid, 0)
        state = "running"
    except ProcessLookupError:
        state = "no longer running"
    except PermissionError:
        state = "running"
    applied = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(running.applied_at))
    return f"against alarmd PID {running.pid} ({state}), configuration applied {applied}"
