"""Rule engine: samples per second through alarmd's RuleEngine with the shipped rules, in process.

:class:`~alarmd.rules.engine.RuleEngine` is built from ``rules/*.yml`` (``compile_docs``) and fed
the stream a poller and the trap listener would hand it for a network of ``interfaces`` CPE
router ports (four per router, the router's port 1 being a customer circuit):

* per interface: ``interface_utilisation_percent`` (also watched by the FluctuationWarning
  baseline), ``interface_error_ratio_percent``, ``interface_link_down``;
* per router: ``device_up``; per circuit: an optical transceiver (``optical_rx_power_dbm``,
  ``device_up``), a dial test (``dial_test_loss_percent``), and on every fifth circuit an E1
  protocol converter (``e1_loss_of_signal``, ``e1_ais``, ``e1_loss_of_frame``, ``device_up``);
* traps: each round, 0.5 % of the interfaces send a linkDown, and those of the round before
  send their linkUp, as enriched events (device, interface, circuit, customer, tier).

Labels are those the poller sets.  One round is one poll of everything, ``round_seconds`` (5
minutes, the operator's base granularity) of sample time apart.  1 % of the series are
anomalous in the middle half of the rounds (busy or erroring ports, links down, devices
unreachable, low light, E1 alarms, dial-test loss), so alarms go pending, fire after their
``for:`` and resolve with their ``clear:``.  Before timing starts, the baselines get four weeks of
ordinary history for the hours the rounds cover (one sample per 15-minute slot, through the
same ``evaluate``), so FluctuationWarning scores every utilisation sample as it does in a
daemon that has run a month.

Each round's samples and events are built first, untimed; then ``evaluate`` on every sample,
``evaluate_event`` on every event and one ``tick`` are timed (``time.perf_counter``) separately.
``evaluations_per_s`` = samples ÷ seconds spent in ``evaluate``; ``rule_matches_per_s`` =
(rule, sample) pairs whose metric and matchers selected the rule ÷ the same seconds;
``events_per_s`` likewise for traps.  A daemon ticks once a second, not once a round, so the
cost of one tick with the final alarm state is reported on its own.  No peer runs the same
rule semantics (promtool evaluates PromQL over a TSDB), so none is compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from alarmd.config import read_yaml
from alarmd.matchers import matches_all
from alarmd.model import AlarmTransition, Event, Sample
from alarmd.rules.compile import Rule, compile_docs
from alarmd.rules.engine import RuleEngine
from bench.host import host_facts, write_result

ROOT: Final = Path(__file__).resolve().parent.parent
START: Final = datetime(2026, 11, 16, 2, 0, tzinfo=UTC).timestamp()  # Monday 10:00 in China
WEEK: Final = 7 * 86400.0
SLOT: Final = 900.0  # the shipped FluctuationWarning's resolution
HISTORY_WEEKS: Final = 4
PORTS_PER_ROUTER: Final = 4
LINK_DOWN: Final = "1.3.6.1.6.3.1.1.5.3"
LINK_UP: Final = "1.3.6.1.6.3.1.1.5.4"
TIERS: Final = ("diamond", "gold", "ordinary")


@dataclass(frozen=True)
class Options:
    """Network size, rounds, share of anomalous series and of interfaces sending traps."""

    interfaces: int = 10_000
    rounds: int = 12
    round_seconds: float = 300.0
    anomalous: float = 0.01
    trap_share: float = 0.005
    seed: int = 11
    rules_dir: Path = ROOT / "rules"


def options_from(quick: bool, interfaces: int | None = None, rounds: int | None = None) -> Options:
    """Options from command-line values (quick: 2,000 interfaces, 8 rounds)."""
    return Options(
        interfaces=interfaces if interfaces is not None else (2_000 if quick else 10_000),
        rounds=rounds if rounds is not None else (8 if quick else 12),
    )


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True, slots=True)
class Series:
    """One labelled series, its ordinary level and what it shows while anomalous."""

    metric: str
    labels: dict[str, str]
    normal: float
    jitter: float
    anomaly: float | None
    floor: float = 0.0
    ceiling: float = 100.0


def network(options: Options, rng: random.Random) -> list[Series]:
    """Every series of the network, in the order a poll of each device yields them."""
    out: list[Series] = []

    def add(
        metric: str, labels: dict[str, str], normal: float, jitter: float, bad: float, **kw: float
    ) -> None:
        anomaly = bad if rng.random() < options.anomalous else None
        out.append(Series(metric, labels, normal, jitter, anomaly, **kw))

    routers = max(1, options.interfaces // PORTS_PER_ROUTER)
    for r in range(routers):
        router = f"cpe-{r:05d}"
        base = {"device": router, "device_kind": "cpe_router"}
        add("device_up", base, 1, 0, 0, floor=0, ceiling=1)
        for port in range(PORTS_PER_ROUTER):
            labels = {
                **base,
                "if_index": str(port + 1),
                "interface": f"GigabitEthernet0/0/{port}",
                "if_alias": f"CIR-{r:05d}" if port == 1 else "",
            }
            add("interface_utilisation_percent", labels, rng.uniform(5, 60), 2.0, rng.uniform(88, 98))
            add("interface_error_ratio_percent", labels, rng.uniform(0, 1), 0.1, 45)
            add("interface_link_down", labels, 0, 0, 1, floor=0, ceiling=1)
        circuit = f"CIR-{r:05d}"
        otx = {"device": f"otx-{r:05d}", "device_kind": "optical_transceiver"}
        add("device_up", otx, 1, 0, 0, floor=0, ceiling=1)
        optical = {**otx, "port": "1", "interface": "fiber-1"}
        add("optical_rx_power_dbm", optical, rng.uniform(-18, -8), 0.2, -30, floor=-40, ceiling=0)
        target = {"circuit": circuit, "target": "cpe_wan", "address": f"10.{r // 250}.{r % 250}.1"}
        add("dial_test_loss_percent", target, 0, 0, 60)
        if r % 5 == 0:
            pcv = {"device": f"pcv-{r:05d}", "device_kind": "protocol_converter"}
            add("device_up", pcv, 1, 0, 0, floor=0, ceiling=1)
            e1 = {**pcv, "if_index": "1", "interface": "E1 0/0/1"}
            for metric in ("e1_loss_of_signal", "e1_ais", "e1_loss_of_frame"):
                add(metric, e1, 0, 0, 1, floor=0, ceiling=1)
    return out


def value(series: Series, anomalous: bool, rng: random.Random) -> float:
    """One reading of a series: its anomaly while anomalous, else its level with some jitter."""
    if anomalous and series.anomaly is not None:
        return series.anomaly
    if not series.jitter:
        return series.normal
    return min(series.ceiling, max(series.floor, rng.gauss(series.normal, series.jitter)))


def round_samples(
    all_series: Sequence[Series], at: float, anomalous: bool, rng: random.Random, step: float
) -> list[Sample]:
    """One poll of every series; samples of one device are ``step`` seconds apart from the next."""
    return [
        Sample(s.metric, s.labels, value(s, anomalous, rng), at + i * step) for i, s in enumerate(all_series)
    ]


def trap(kind: str, labels: dict[str, str], at: float) -> Event:
    """A linkDown or linkUp as the trap listener and enrichment hand it to the rule stage."""
    router = int(labels["device"].removeprefix("cpe-"))
    return Event(
        source="trap",
        kind=kind,
        at=at,
        labels={
            "if_index": labels["if_index"],
            "if_admin_status": "1",
            "if_oper_status": "2" if kind == LINK_DOWN else "1",
            "source_address": f"10.{router // 250}.{router % 250}.254",
            "agent_address": f"10.{router // 250}.{router % 250}.254",
            "trap": "linkDown" if kind == LINK_DOWN else "linkUp",
            "device": labels["device"],
            "device_kind": "cpe_router",
            "interface": labels["interface"],
            "circuit": f"CIR-{router:05d}",
            "customer": f"CUST-{router % 300:03d}",
            "tier": TIERS[router % 3],
        },
    )


def selected(rules: Sequence[Rule], sample: Sample) -> int:
    """How many metric and baseline rules select a sample (metric name and label matchers)."""
    return sum(
        1
        for r in rules
        if r.kind in ("metric", "baseline")
        and r.metric == sample.metric
        and matches_all(r.matchers, sample.labels)
    )


# --------------------------------------------------------------------------- the run


def load_rules(rules_dir: Path) -> list[Rule]:
    """The shipped rules."""
    return compile_docs(read_yaml(p) for p in sorted(rules_dir.glob("*.yml")))


def prefill_times(options: Options) -> list[float]:
    """When the history samples are taken, in time order.

    One per slot of the hours the rounds cover, in each of the weeks before; then one per slot of
    the hour just before the first round, so that the first timed round only closes the slot
    before it, as in a daemon that never stopped polling.
    """
    end = START + options.rounds * options.round_seconds
    slots = [START - START % SLOT + k * SLOT for k in range(int((end - START) // SLOT) + 2)]
    past = [slot - week * WEEK for week in range(HISTORY_WEEKS, 0, -1) for slot in slots]
    recent = [START - k * SLOT for k in range(int(3600 // SLOT), 0, -1)]
    return [t + 60 for t in (*past, *recent)]


def prefill(engine: RuleEngine, all_series: Sequence[Series], options: Options, rng: random.Random) -> int:
    """Ordinary history for every baseline-watched series, through ``evaluate``; the samples fed."""
    watched = [s for s in all_series if s.metric == "interface_utilisation_percent"]
    fed = 0
    for at in prefill_times(options):
        for s in watched:
            engine.evaluate(Sample(s.metric, s.labels, value(s, False, rng), at))
            fed += 1
    return fed


def windows(options: Options) -> Iterator[tuple[int, float, bool]]:
    """(round, time, anomalous) for every round; anomalies in the middle half."""
    first, last = options.rounds // 4, (3 * options.rounds) // 4
    for n in range(options.rounds):
        yield n, START + n * options.round_seconds, first <= n < last


def bench(options: Options, say: Callable[[str], None]) -> dict[str, Any]:
    """Build the network, prefill the baselines, time the rounds; the full result."""
    rng = random.Random(options.seed)  # noqa: S311 - synthetic data, not crypto
    rules = load_rules(options.rules_dir)
    engine = RuleEngine(rules)
    all_series = network(options, rng)
    matches_per_round = sum(selected(rules, Sample(s.metric, s.labels, 0.0, 0.0)) for s in all_series)
    interfaces = [s.labels for s in all_series if s.metric == "interface_link_down"]
    say(f"rules: {len(rules)} rules, {len(all_series)} series, prefilling {HISTORY_WEEKS} weeks of baseline")
    prefill_start = time.perf_counter()
    prefilled = prefill(engine, all_series, options, rng)
    prefill_seconds = time.perf_counter() - prefill_start

    transitions: Counter[str] = Counter()
    samples = events = 0
    t_samples = t_events = t_ticks = 0.0
    down: list[dict[str, str]] = []
    step = options.round_seconds / (2 * len(all_series))  # a poll round takes half the interval
    gc.collect()
    for _, at, anomalous in windows(options):
        batch = round_samples(all_series, at, anomalous, rng, step)
        up, down = down, rng.sample(interfaces, max(1, int(len(interfaces) * options.trap_share)))
        traps = [trap(LINK_UP, labels, at + 1) for labels in up] + [
            trap(LINK_DOWN, labels, at + 2) for labels in down
        ]
        out: list[AlarmTransition] = []
        started = time.perf_counter()
        for sample in batch:
            out += engine.evaluate(sample)
        t_samples += time.perf_counter() - started
        started = time.perf_counter()
        for event in traps:
            out += engine.evaluate_event(event)
        t_events += time.perf_counter() - started
        started = time.perf_counter()
        out += engine.tick(at + options.round_seconds - 1)
        t_ticks += time.perf_counter() - started
        samples += len(batch)
        events += len(traps)
        transitions.update(f"{t.kind}:{t.rule}" for t in out)

    tick_runs = 50
    started = time.perf_counter()
    for k in range(tick_runs):
        engine.tick(START + options.rounds * options.round_seconds + k)
    tick_us = (time.perf_counter() - started) / tick_runs * 1e6

    kinds = Counter(r.kind for r in rules)
    return {
        "workload": "rules",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {**asdict(options), "rules_dir": str(options.rules_dir)},
        "host": host_facts(),
        "rules": {
            "total": len(rules),
            **dict(kinds),
            "files": sorted(p.name for p in options.rules_dir.glob("*.yml")),
        },
        "series": len(all_series),
        "series_by_metric": dict(Counter(s.metric for s in all_series)),
        "anomalous_series": sum(1 for s in all_series if s.anomaly is not None),
        "baseline_prefill": {"samples": prefilled, "seconds": round(prefill_seconds, 3)},
        "samples": samples,
        "events": events,
        "rule_matches": matches_per_round * options.rounds,
        "seconds": {
            "evaluate": round(t_samples, 4),
            "evaluate_event": round(t_events, 4),
            "tick": round(t_ticks, 4),
        },
        "evaluations_per_s": round(samples / t_samples),
        "rule_matches_per_s": round(matches_per_round * options.rounds / t_samples),
        "events_per_s": round(events / t_events) if t_events else None,
        "us_per_sample": round(t_samples / samples * 1e6, 3),
        "tick_us_at_end": round(tick_us, 1),
        "alarms_firing_at_end": engine.firing,
        "transitions": dict(sorted(transitions.items())),
    }


def table(result: dict[str, Any]) -> str:
    """The result as plain text."""
    s = result["seconds"]
    return "\n".join(
        [
            f"rules: {result['rules']['total']} ({result['rules'].get('metric', 0)} metric, "
            f"{result['rules'].get('event', 0)} event, {result['rules'].get('baseline', 0)} baseline); "
            f"series: {result['series']} ({result['anomalous_series']} anomalous)",
            f"samples: {result['samples']} in {s['evaluate']:.3f} s → {result['evaluations_per_s']}/s "
            f"({result['us_per_sample']} µs each); rule matches {result['rule_matches_per_s']}/s",
            f"events: {result['events']} in {s['evaluate_event']:.3f} s → {result['events_per_s']}/s; "
            f"tick with {result['alarms_firing_at_end']} firing: {result['tick_us_at_end']} µs",
            "transitions: " + ", ".join(f"{k} {v}" for k, v in result["transitions"].items()),
        ]
    )


def run(options: Options, results_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the workload, write ``rules.json`` and return the summary for ``latest.json``."""
    result = bench(options, say)
    write_result(results_dir, "rules", result)
    say(table(result))
    return {
        "evaluations_per_s": result["evaluations_per_s"],
        "rule_matches_per_s": result["rule_matches_per_s"],
        "events_per_s": result["events_per_s"],
        "rules": result["rules"]["total"],
        "series": result["series"],
        "timestamp": result["timestamp"],
        "details": "rules.json",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.rules [--quick] [--interfaces N] [--rounds R] [--results-dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 interfaces, 8 rounds")
    parser.add_argument("--interfaces", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    print(json.dumps(run(options_from(args.quick, args.interfaces, args.rounds), args.results_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
