"""``make bench``: run the benchmark workloads and merge their summaries into ``latest.json``.

Each workload is a function ``(args, results_dir) -> summary``: it runs on 127.0.0.1 only,
writes its own ``<name>.json`` next to ``latest.json`` and returns the few figures that go
under its key there:

* ``traps``: alarmd's full trap path against snmptrapd, highest lossless rate (bench/traps.py);
* ``polling``: the collector against prometheus-snmp-exporter on snmpd agents, varbinds per
  CPU-second of the poller process (bench/polling.py);
* ``latency``: trap → work order acknowledged by Kafka at 1k traps/s background (bench/latency.py);
* ``memory``: the daemon's RSS polling 10k and 100k interfaces (bench/memory.py);
* ``rules``: rule-engine evaluations per second on the shipped rules (bench/rules.py);
* ``storm``: linkDown traps from 500 circuits of one ring → one major fault, last trap → the
  major fault's last update on Kafka (bench/storm.py);
* ``reload``: a 10k-device (100k-interface) daemon reloaded 100 times with 1 % changed: daemon
  time per reload, missed poll cycles of unchanged devices, RSS over the reloads (bench/reload.py);
* ``scaleout``: distributed mode's cost per instance: a collector and a correlator on snmpd agents,
  polling then 1k traps/s, against one ``--role all`` process on the same load; CPU seconds per
  1k interface polls and per 1k traps, and the instances 100k devices and 10k traps/s need
  (bench/scaleout.py).

    python -m bench.run                      # every workload, full length (about 18 minutes)
    python -m bench.run --quick              # short steps: a smoke run
    python -m bench.run --only traps --trap-rates 500 --trap-duration 1 --results-dir /tmp/b

Kafka: ``KAFKA_BOOTSTRAP_SERVERS``, else a local broker started by the workload that needs one.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from bench import host, latency, memory, polling, reload, rules, scaleout, storm, traps

RESULTS: Final = Path(__file__).resolve().parent / "results"

Workload = Callable[[argparse.Namespace, Path], dict[str, Any]]


def _traps(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Trap intake: alarmd against snmptrapd, stepped rates, lossless rate each."""
    options = traps.options_from(args.trap_rates, args.trap_duration, args.quick, args.trap_peers)
    return traps.run(options, results_dir)


def _polling(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Polling: alarmd's collector against prometheus-snmp-exporter, varbinds per CPU-second."""
    return polling.run(polling.options_from(args.quick), results_dir)


def _latency(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Trap → work order acknowledged by the broker, p50 / p99."""
    return latency.run(latency.options_from(args.quick), results_dir)


def _memory(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """RSS of the daemon polling 10k and 100k interfaces."""
    return memory.run(memory.options_from(args.quick), results_dir)


def _rules(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Rule-engine evaluations per second."""
    return rules.run(rules.options_from(args.quick), results_dir)


def _storm(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """A 500-circuit trap storm on one ring: time to the major fault's last update."""
    return storm.run(storm.options_from(args.quick), results_dir)


def _reload(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Reloads of a 10k-device inventory, 1 % changed each: daemon time, missed cycles, RSS."""
    return reload.run(reload.options_from(args.quick), results_dir)


def _scaleout(args: argparse.Namespace, results_dir: Path) -> dict[str, Any]:
    """Distributed mode's CPU per interface poll and per trap, by role, and the sizing from it."""
    return scaleout.run(scaleout.options_from(args.quick), results_dir)


WORKLOADS: Final[dict[str, Workload]] = {
    "traps": _traps,
    "polling": _polling,
    "latency": _latency,
    "memory": _memory,
    "rules": _rules,
    "storm": _storm,
    "reload": _reload,
    "scaleout": _scaleout,
}


def merge_latest(path: Path, updates: dict[str, dict[str, Any]]) -> None:
    """Set ``updates``' keys in the JSON object at ``path``, keeping every other key."""
    try:
        latest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        latest = {}
    if not isinstance(latest, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    latest.update(updates)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(latest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps (2 s): a smoke run")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only these")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help=f"default {RESULTS}")
    traps_args = parser.add_argument_group("traps")
    traps_args.add_argument(
        "--trap-rates", help="comma-separated steps, e.g. 1k,2k,5k (default 1k..80k in 10 steps)"
    )
    traps_args.add_argument("--trap-duration", type=float, help="seconds per step (default 10, quick 2)")
    traps_args.add_argument(
        "--trap-peers", default="alarmd,snmptrapd", type=lambda s: s.split(","), help="default both"
    )
    return parser.parse_args(argv)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen workloads and merge their summaries into ``latest.json``."""
    args = parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every workload stops its agents,
    # brokers and daemons in its `finally` instead of leaving them running.
    signal.signal(signal.SIGTERM, _terminated)
    unknown = set(args.trap_peers) - set(traps.PEERS)
    if unknown:
        print(f"bench: unknown trap peer(s) {sorted(unknown)}; known: {sorted(traps.PEERS)}", file=sys.stderr)
        return 2
    summaries: dict[str, dict[str, Any]] = {}
    for name in args.only or list(WORKLOADS):
        start = time.monotonic()
        summaries[name] = WORKLOADS[name](args, args.results_dir)
        summaries[name]["wall_seconds"] = round(time.monotonic() - start, 1)
        summaries[name]["quick"] = args.quick
    args.results_dir.mkdir(parents=True, exist_ok=True)
    merge_latest(args.results_dir / "latest.json", {**summaries, "machine": host.host_facts()})
    print(f"bench: wrote {args.results_dir / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
