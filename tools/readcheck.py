"""How the shipped profiles read real devices: serve SNMP recordings with snmpsim, poll each once.

    python tools/readcheck.py --recordings DIR            # every *.snmprec / *.snmprec.bz2 under DIR
    python tools/readcheck.py --recordings DIR --json     # the readings themselves, as JSON
    python tools/readcheck.py --snmpsim-data              # the snmpsim-data package's recordings

Each recording is served by snmpsim on 127.0.0.1 (its community is the file's name) and polled
by alarmd's own poller with the shipped profiles (``config/profiles``: the device profile given
by ``--profile`` plus the vendor extensions for the recording's sysObjectID).  A recording is
first cut down to the OIDs the profiles poll, so that large dumps load quickly.  Printed per
recording: the optical rx/tx values read, temperatures and interfaces with a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simnet
from alarmd import logging
from alarmd.clock import SystemClock
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.poller import DevicePoller
from alarmd.collector.profile import SYS_OBJECT_ID, Profile, load_profiles
from alarmd.config import DeviceConfig, PollingConfig
from alarmd.metrics import Metrics
from devenv import REPO, PeerError

PROFILES = REPO / "config" / "profiles"
#: The metrics counted; each maps a port (or sensor) label to a value.
METRICS = (
    "optical_rx_power_dbm",
    "optical_tx_power_dbm",
    "module_temperature_celsius",
    "chassis_temperature_celsius",
)
#: Subtrees kept beside the profiles' own columns: system group, DS1-MIB.
_ALWAYS = ("1.3.6.1.2.1.1.", "1.3.6.1.2.1.10.18.")


@dataclass
class Readings:
    """What one poll of one recording gave."""

    name: str
    sys_object_id: str = ""
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    interfaces_with_speed: int = 0
    error: str = ""

    @property
    def optical(self) -> int:
        """Optical rx and tx values read."""
        return len(self.values.get("optical_rx_power_dbm", {})) + len(
            self.values.get("optical_tx_power_dbm", {})
        )


def _where(labels: dict[str, str]) -> str:
    """What a reading is of: its interface, else its sensor or module, else its row's other labels."""
    for name in ("interface", "sensor", "module"):
        if labels.get(name):
            return labels[name]
    return ",".join(v for k, v in labels.items() if k not in {"device", "device_kind"})


def community(path: Path) -> str:
    """The community (and device name) a recording is served under: its file name, made safe."""
    stem = path.name.removesuffix(".bz2").removesuffix(".snmprec")
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem)


def find(directory: Path) -> list[Path]:
    """Every recording under a directory."""
    return sorted(p for p in directory.rglob("*") if p.name.endswith((".snmprec", ".snmprec.bz2")))


def prefixes(profiles: Iterable[Profile]) -> tuple[str, ...]:
    """The OID subtrees the profiles poll."""
    found = set(_ALWAYS)
    for profile in profiles:
        found.add(profile.spec.uptime_oid)
        found.update(c.oid + "." for c in profile.spec.scalars)
        for table in profile.spec.tables:
            found.update(oid + "." for oid in profile.columns(table))
    return tuple(sorted(found))


def _lines(path: Path) -> Iterator[str]:
    opener = bz2.open if path.name.endswith(".bz2") else open
    with opener(path, "rt", encoding="latin-1", newline="\n") as fh:
        yield from fh


def stage(recordings: Iterable[Path], dest: Path, keep: tuple[str, ...]) -> list[str]:
    """Write each recording, cut down to the ``keep`` subtrees, as ``dest/<community>.snmprec``."""
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for path in recordings:
        name = community(path)
        kept: list[tuple[tuple[int, ...], str]] = []
        for line in _lines(path):
            oid = line.split("|", 1)[0]
            if oid.startswith(keep) or oid + "." in keep or oid == SYS_OBJECT_ID:
                try:
                    kept.append((tuple(int(part) for part in oid.split(".")), line.rstrip("\n")))
                except ValueError:
                    continue  # a comment or a broken line
        kept.sort()  # snmpsim walks a file in the order it is written
        (dest / f"{name}.snmprec").write_text("".join(line + "\n" for _, line in kept), encoding="latin-1")
        names.append(name)
    return names


async def read(
    sim_port: int, names: Iterable[str], profile: str, profiles: dict[str, Profile]
) -> list[Readings]:
    """Poll each served recording once with the shipped profiles."""
    client = FastSnmpClient()
    extensions = [p for p in profiles.values() if p.spec.sys_object_ids]
    out: list[Readings] = []
    try:
        for name in names:
            device = DeviceConfig.model_validate(
                {
                    "name": name,
                    "kind": "cpe_router",
                    "address": "127.0.0.1",
                    "port": sim_port,
                    "snmp": {"community": name},
                    "timeout": "5s",
                    "retries": 1,
                }
            )
            assert device.snmp is not None
            poller = DevicePoller(
                device,
                credentials=device.snmp,
                profile=profiles[profile],
                polling=PollingConfig(),
                client=client,
                clock=SystemClock(),
                metrics=Metrics(),
                extensions=extensions,
            )
            readings = Readings(name)
            samples = await poller.poll_once()
            if not any(s.metric == "device_up" and s.value == 1 for s in samples):
                readings.error = "no answer"
            readings.sys_object_id = poller.sys_object_id or ""
            for sample in samples:
                if sample.metric in METRICS:
                    readings.values.setdefault(sample.metric, {})[_where(sample.labels)] = round(
                        sample.value, 2
                    )
            readings.interfaces_with_speed = len(
                {
                    s.labels.get("if_index")
                    for s in samples
                    if s.metric in {"if_speed", "if_high_speed"} and s.value
                }
            )
            out.append(readings)
    finally:
        client.close()
    return out


def check(recordings: list[Path], profile: str = "cpe_router") -> list[Readings]:
    """Serve the recordings with snmpsim and read each; snmpsim stops before this returns."""
    profiles = load_profiles(sorted(PROFILES.glob("*.yml")))
    with tempfile.TemporaryDirectory(prefix="alarmd-readcheck-") as tmp:
        names = stage(recordings, Path(tmp), prefixes(profiles.values()))
        sim = simnet.start(devices_dir=Path(tmp), timeout=300)
        try:
            return asyncio.run(read(sim.port, names, profile, profiles))
        finally:
            sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    logging.setup("warning", "console")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--recordings", type=Path, help="a directory of .snmprec (or .snmprec.bz2) files")
    where.add_argument("--snmpsim-data", action="store_true", help="the snmpsim-data package's recordings")
    parser.add_argument("--profile", default="cpe_router", help="the device profile to poll with")
    parser.add_argument("--only", default="", help="a regular expression: only recordings whose name matches")
    parser.add_argument("--json", action="store_true", help="print every reading as JSON")
    args = parser.parse_args(argv)
    try:
        directory = simnet.recorded() if args.snmpsim_data else args.recordings
        recordings = [p for p in find(directory) if re.search(args.only, community(p))]
        if not recordings:
            print(f"readcheck: no recordings under {directory}", file=sys.stderr)
            return 1
        results = check(recordings, args.profile)
    except PeerError as exc:
        print(f"readcheck: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2, sort_keys=True))
        return 0
    width = max(len(r.name) for r in results)
    for r in results:
        temps = sum(len(r.values.get(m, {})) for m in METRICS[2:])
        rx, tx = len(r.values.get(METRICS[0], {})), len(r.values.get(METRICS[1], {}))
        status = r.error or (
            f"optical {r.optical:3d} (rx {rx}, tx {tx})  temperatures {temps:3d}  "
            f"interfaces with a speed {r.interfaces_with_speed}"
        )
        print(f"{r.name.ljust(width)}  {r.sys_object_id or '-':40s}  {status}")
    total = sum(r.optical for r in results)
    with_optics = sum(1 for r in results if r.optical)
    print(f"{total} optical rx/tx values read from {with_optics} of {len(results)} recordings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
