"""The machine and the versions behind a benchmark's figures: one record for every workload."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from alarmd.collector import ber

SNMPD: Final = "/usr/sbin/snmpd"
SNMPTRAPD: Final = "/usr/sbin/snmptrapd"
EXPORTER: Final = "/usr/bin/prometheus-snmp-exporter"
TOOLS: Final = Path(__file__).resolve().parent.parent / "tools"
"""The development peers (``kafka_local``, ``simnet``) and their helpers: importable from here on."""
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from devenv import die_with_parent  # noqa: E402, F401 - on the path just above; benchmarks take it from here


def _reported(argv: list[str], pattern: str) -> str | None:
    """What a program says its version is (``pattern``'s first group), or None if it is missing."""
    if not Path(argv[0]).exists():
        return None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else None


def net_snmp_version() -> str | None:
    """The net-snmp version of Debian's snmpd (snmptrapd comes from the same source)."""
    return _reported([SNMPD, "-v"], r"NET-SNMP [Vv]ersion:\s*(\S+)")


def exporter_version() -> str | None:
    """The version ``prometheus-snmp-exporter --version`` reports."""
    return _reported([EXPORTER, "--version"], r"version (\S+)")


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def host_facts() -> dict[str, Any]:
    """CPU model and count, kernel, and the versions of alarmd's libraries and of every peer."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "alarmd": _package("alarmd"),
        "ber_codec": ber.CODEC,
        "uvloop": _package("uvloop"),
        "pysnmp": _package("pysnmp"),
        "aiokafka": _package("aiokafka"),
        "net_snmp": net_snmp_version(),
        "snmp_exporter": exporter_version(),
        "kafka": f"external cluster {external}"
        if external
        else os.environ.get("ALARMD_KAFKA_VERSION", "3.9.1"),
    }


def write_result(results_dir: Path, workload: str, result: dict[str, Any]) -> None:
    """Write a workload's whole result to ``<results_dir>/<workload>.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{workload}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a peer we started: SIGTERM, SIGKILL after 5 s; nothing if it has already ended."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
