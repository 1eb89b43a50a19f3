"""The simulated demo network: snmpsim serving the recorded devices in ``sim/devices``.

    python tools/simnet.py setup            # the simulator's own venv, in the cache
    python tools/simnet.py run [--port N]   # serve until interrupted

Each ``sim/devices/<name>.snmprec`` is one device; its SNMP v2c community is ``<name>``.
Interface counters use the ``ratecounter`` variation module (``sim/variation``), whose
rates can be changed while the agent runs with :meth:`SimNet.set_rates` (used to congest
a line and relieve it again).  Status values (ifOperStatus, dsx1LineStatus, optical power)
use the ``controlled`` module and are changed the same way with :meth:`SimNet.set_values`.

snmpsim drops root privileges to ``nobody``, so its interpreter is a venv on Debian's
``/usr/bin/python3`` in a world-readable cache, and each run copies its data files into a
fresh world-readable directory under the system temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devenv import REPO, PeerError, cache_dir, free_port, serve_until_interrupted, stop_pid, track, wait_until

SNMPSIM = ("snmpsim==1.2.2", "pysmi==2.0.0")
DEVICES = REPO / "sim" / "devices"
VARIATION = REPO / "sim" / "variation"


def venv_dir() -> Path:
    """The simulator's venv."""
    return cache_dir() / "simvenv"


def setup() -> Path:
    """Create the simulator's venv once; return its responder executable."""
    venv = venv_dir()
    exe = venv / "bin" / "snmpsim-command-responder"
    marker = venv / ".complete"
    if marker.exists() and marker.read_text().strip() == " ".join(SNMPSIM):
        return exe
    python = os.environ.get("ALARMD_SIM_PYTHON", "/usr/bin/python3")
    if not Path(python).exists():
        python = sys.executable
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *SNMPSIM], check=True)
    if os.geteuid() == 0:
        subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    marker.write_text(" ".join(SNMPSIM) + "\n")
    return exe


def _get_request(community: str) -> bytes:
    """A minimal SNMPv2c GET for sysUpTime.0, BER-encoded by hand."""

    def tlv(tag: int, body: bytes) -> bytes:
        return bytes([tag, len(body)]) + body

    varbind = tlv(0x30, tlv(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 3, 0])) + b"\x05\x00")
    pdu = tlv(0xA0, b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + tlv(0x30, varbind))
    return tlv(0x30, b"\x02\x01\x01" + tlv(0x04, community.encode()) + pdu)


def _answers(port: int, community: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(_get_request(community), ("127.0.0.1", port))
            data, _ = sock.recvfrom(4096)
        except OSError:
            return False
    return data[:1] == b"\x30"


@dataclass
class SimNet:
    """A running snmpsim agent serving every device file on one UDP port of 127.0.0.1."""

    port: int
    pid: int
    workdir: Path
    devices: list[str] = field(default_factory=list)

    def set_rates(self, rates: dict[str, float | str | None]) -> None:
        """Change counter rates live: ``{"cpe-router-01/2/in": 125000.0, ...}`` bytes/s; None: the default."""
        self._update_controls(rates)

    def set_values(self, values: dict[str, int | str | None]) -> None:
        """Change status values live: ``{"proto-conv-01/1/line_status": 66}``; ``None`` restores the default.

        The ``controlled`` variation module reads the same control file as ``ratecounter``,
        so this is :meth:`set_rates` under a name that says what the values are.
        """
        self._update_controls(values)

    def _update_controls(self, controls: Mapping[str, object]) -> None:
        """Merge ``controls`` into the JSON control file, replacing it atomically."""
        path = self.workdir / "rates.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(controls)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        tmp.chmod(0o644)
        time.sleep(0.01)
        tmp.replace(path)

    def stop(self) -> None:
        """Stop the agent and remove its working copy."""
        stop_pid(self.workdir / "snmpsim.pid", grace=5.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


#: Tables of the recorded protocol converter whose rows are indexed by ifIndex (its E1 is row 1).
_PER_PORT_TABLES = (
    "1.3.6.1.2.1.2.2.1.",
    "1.3.6.1.2.1.31.1.1.1.",
    "1.3.6.1.2.1.10.18.6.1.",
    "1.3.6.1.2.1.10.18.7.1.",
)
#: Their columns that hold the row's own index (ifIndex, dsx1LineIndex, dsx1IfIndex, dsx1CurrentIndex).
_INDEX_COLUMNS = (
    "1.3.6.1.2.1.2.2.1.1.1",
    "1.3.6.1.2.1.10.18.6.1.1.1",
    "1.3.6.1.2.1.10.18.6.1.2.1",
    "1.3.6.1.2.1.10.18.7.1.1.1",
)


def write_e1_mux(directory: Path, name: str, ports: int) -> Path:
    """Write ``<name>.snmprec``: the recorded protocol converter with ``ports`` E1 lines (ifIndex 1..ports).

    Port ``i`` is ``E1-i``; its status values are controlled as ``<name>/<i>/line_status`` etc.
    The device answers to the community ``<name>``.
    """
    source = (DEVICES / "proto-conv-01.snmprec").read_text(encoding="utf-8").splitlines()
    rows: list[tuple[tuple[int, ...], str]] = []
    for line in source:
        oid, rest = line.split("|", 1)
        table = next((t for t in _PER_PORT_TABLES if oid.startswith(t)), None)
        if table is None:
            if oid == "1.3.6.1.2.1.2.1.0":  # ifNumber
                rest = f"2|{ports}"
            rows.append((tuple(map(int, oid.split("."))), rest.replace("proto-conv-01", name)))
            continue
        if not oid.endswith(".1"):
            continue  # the Ethernet side is left out; only the E1 lines are multiplied
        for port in range(1, ports + 1):
            text = rest.replace("proto-conv-01/1/", f"{name}/{port}/").replace("E1-1", f"E1-{port}")
            text = f"2|{port}" if oid in _INDEX_COLUMNS else text
            rows.append((tuple(map(int, f"{oid[:-2]}.{port}".split("."))), text))
    rows.sort()
    path = directory / f"{name}.snmprec"
    path.write_text("".join(f"{'.'.join(map(str, o))}|{r}\n" for o, r in rows), encoding="utf-8")
    return path


def start(port: int = 0, devices_dir: Path = DEVICES, timeout: float = 60.0) -> SimNet:
    """Start snmpsim on 127.0.0.1 (``port`` 0 picks a free one) and wait until it answers."""
    exe = setup()
    workdir = Path(tempfile.mkdtemp(prefix="alarmd-sim-"))
    workdir.chmod(0o755)
    data, variation, index = workdir / "data", workdir / "variation", workdir / "cache"
    shutil.copytree(devices_dir, data)
    shutil.copytree(VARIATION, variation, ignore=shutil.ignore_patterns("__pycache__"))
    index.mkdir()
    (workdir / "rates.json").write_text("{}")
    (workdir / "snmpsim.log").touch(mode=0o666)
    if os.geteuid() == 0:
        subprocess.run(["chmod", "-R", "a+rX", str(workdir)], check=True)
        index.chmod(0o777)
        (workdir / "snmpsim.log").chmod(0o666)
    devices = sorted(p.stem for p in data.glob("*.snmprec"))
    if not devices:
        raise PeerError(f"no .snmprec files in {devices_dir}")
    port = port or free_port(socket.SOCK_DGRAM)
    cmd = [
        str(exe),
        f"--data-dir={data}",
        f"--agent-udpv4-endpoint=127.0.0.1:{port}",
        f"--cache-dir={index}",
        f"--variation-modules-dir={variation}",
        f"--variation-module-options=ratecounter:{workdir / 'rates.json'}",
        f"--variation-module-options=controlled:{workdir / 'rates.json'}",
        f"--logging-method=file:{workdir / 'snmpsim.log'}",
    ]
    if os.geteuid() == 0:
        cmd += ["--process-user=nobody", "--process-group=nogroup"]
    log = workdir / "stdout.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    track(proc)
    (workdir / "snmpsim.pid").write_text(f"{proc.pid}\n")
    sim = SimNet(port, proc.pid, workdir, devices)
    try:
        wait_until(lambda: _answers(port, devices[0]), timeout, f"snmpsim on 127.0.0.1:{port}", proc)
    except PeerError as exc:
        output = log.read_text(errors="replace").splitlines()
        errors = [line for line in output if line and not line.startswith((" ", "usage:"))]
        sim.stop()
        raise PeerError(f"{exc}: {' | '.join(errors[-10:]) or 'no output'}") from None
    return sim


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="create the simulator's venv in the cache")
    run = sub.add_parser("run", help="serve the demo network until interrupted")
    run.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (default: pick one)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "setup":
            print(setup())
            return 0
        sim = start(args.port)
    except PeerError as exc:
        print(f"simnet: {exc}", file=sys.stderr)
        return 1
    print(f"snmpsim on 127.0.0.1:{sim.port} serving {', '.join(sim.devices)}", flush=True)
    return serve_until_interrupted(sim.stop)


if __name__ == "__main__":
    sys.exit(main())
