"""Shared helpers for the development peers (Kafka broker, simulated SNMP network).

These scripts start real processes on 127.0.0.1 for the demo and the integration
tests.  Nothing here is imported by the daemon itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


_children: dict[int, subprocess.Popen[bytes]] = {}


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """In a child before exec: ``sig`` when the thread that started it dies, however it dies (Linux prctl).

    Pass it as ``preexec_fn``; ``functools.partial(die_with_parent, signal.SIGKILL)`` for a
    child that must die even while stopped.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def track(proc: subprocess.Popen[bytes]) -> None:
    """Keep a started child so that stopping it can reap it (and Python does not warn about it)."""
    _children[proc.pid] = proc


class PeerError(RuntimeError):
    """A development peer could not be resolved, started or reached."""


def cache_dir() -> Path:
    """Directory reused across runs for downloaded jars and the simulator's venv.

    ``ALARMD_CACHE_DIR`` wins.  As root the default is world-readable
    (``/var/cache/alarmd-dev``) because snmpsim drops privileges to ``nobody``
    and must still be able to read its own Python.
    """
    env = os.environ.get("ALARMD_CACHE_DIR")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/cache/alarmd-dev")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alarmd-dev"
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        path.chmod(0o755)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default, UDP on request)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"{what} exited with code {proc.returncode} before it answered{log_tail(log)}")
        if check():
            return
        time.sleep(0.2)
    raise PeerError(f"{what} did not answer within {timeout:.0f}s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 25) -> str:
    """The last lines of a log file, formatted for an error message."""
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail)


def stop_pid(pid_file: Path, grace: float = 20.0) -> bool:
    """Stop the process group whose leader's PID is in ``pid_file``: SIGTERM, then SIGKILL."""
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)
    return True


def serve_until_interrupted(stop: Callable[[], None]) -> int:
    """Keep a started peer running until Ctrl-C, then stop it; the exit code of a ``run`` command."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
