"""Command line: ``alarmd run | check-config | check-rules``."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from alarmd import __version__, client
from alarmd import logging as alarmd_logging
from alarmd.alarms.analysis import analysis_report
from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.maintenance import Outage, PlannedOutageNotice, load_outage_files
from alarmd.alarms.quality import major_faults, quality
from alarmd.alarms.store import Store, StoreError
from alarmd.cluster.history import cluster_faults
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.collector.upstream import schema_json
from alarmd.config import Config, ConfigError, Loaded, load, read_yaml, validate
from alarmd.dispatch.kafka import KafkaStartError
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.inventory.reconcile import diff_snapshots, snapshot
from alarmd.inventory.running import describe, read_running
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmTransition, Notice, Team, TicketFeedback, WorkOrder
from alarmd.rules.compile import Rule, compile_docs
from alarmd.rules.replay import RuleTestFile, run_test

if TYPE_CHECKING:
    from alarmd.app import Role

EX_CONFIG = 78  # sysexits.h: configuration error; systemd units keep it from restart loops

DESCRIPTION = """\
alarmd polls CPE routers, optical transceivers and protocol converters over SNMP,
judges what it sees with the operator's rules (rules/*.yml), and sends work orders
for each fault to ticketing over Kafka.

examples:
  alarmd check-config -c config/        validate config and rules, print a summary
  alarmd run -c config/                 run the daemon (SIGTERM stops it cleanly)
  alarmd check-rules rules/             validate rule files only (files or directories)
  alarmd test-rules rules/tests/*.yml   run rule unit tests (promtool's test-file shape)
  alarmd maintenance add --circuit CIR-0001 --start 2026-12-01T01:00+08:00 --for 2h --reason "..."
                                        plan an outage (割接) on the running daemon; also list, end

environment:
  KAFKA_BOOTSTRAP_SERVERS   overrides kafka.bootstrap_servers in the config
  ALARMD_API_TOKEN          the API token of `alarmd maintenance` (or --token-file)
  ${VAR} / ${VAR:-default}  in any config value is replaced from the environment
"""


RUN_DESCRIPTION = """\
Run the daemon until SIGTERM or Ctrl-C.

roles (--role):
  all          one process does everything: polls, receives traps, judges, dispatches.
               The default, and all one machine needs.
  collector    distributed mode: polls and receives traps for the devices whose location is
               cluster.location, and publishes samples and trap events to cluster.events_topic
               (keyed by circuit). The collectors of one location share its devices through a
               Kafka consumer group: when one dies, the others take its devices within
               cluster.session_timeout plus one polling interval. While Kafka cannot be
               reached, messages wait in a bounded spool (cluster.spool_size); drops are counted.
  correlator   distributed mode: consumes cluster.events_topic in a consumer group and runs
               rules -> alarms -> work orders for the partitions it owns. A trap that two
               collectors received is judged once. Input offsets are committed after the alarm
               changes are stored.
  /-/ready stays 503 in the distributed roles until the group has assigned partitions.
  See docs/scaleout.md.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alarmd", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"alarmd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=Path("config"),
            help="config directory holding alarmd.yml, or the file itself (default: config)",
        )

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(run)
    run.add_argument(
        "--role",
        default="all",
        choices=["all", "collector", "correlator"],
        help="what this process does (default: all; see above)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="auto: JSON unless stderr is a terminal",
    )
    check = sub.add_parser("check-config", help="validate the config and its rules, then exit (0 = valid)")
    with_config(check)
    check.add_argument(
        "--diff",
        action="store_true",
        help="also show what a reload would add (+), change (~) and remove (-) in the running daemon",
    )
    rules = sub.add_parser("check-rules", help="validate rule files, then exit (0 = valid)")
    rules.add_argument("files", nargs="+", type=Path, help="rule files, or directories of *.yml")
    report = sub.add_parser(
        "report",
        help="quality figures (SPEC §7) from the alarm store over a window; "
        "faults and availability with and without planned outages (SPEC §9)",
    )
    with_config(report)
    report.add_argument("--from", dest="start", help="start, e.g. 2026-11-01 or 2026-11-01T08:00+08:00")
    report.add_argument("--to", dest="end", help="end (exclusive), same forms")
    report.add_argument("--by", choices=["circuit", "customer", "device"], default="circuit")
    report.add_argument("--customer", help="only this customer id")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument(
        "--major-faults", action="store_true", help="list the major faults of the window instead (SPEC §9)"
    )
    report.add_argument(
        "--cluster",
        action="store_true",
        help="distributed mode: every correlator's faults, read from Kafka (closed: the history topic, "
        "open: the changelog); without it a correlator's store holds only what it owned",
    )
    report.add_argument(
        "--major-fault",
        metavar="WO-ID",
        help="the analysis report (markdown) of one major fault, by its work order id; no window needed",
    )
    schemas = sub.add_parser("schemas", help="write the JSON Schemas of every Kafka message alarmd speaks")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="directory (default: schemas)")
    maintenance = sub.add_parser(
        "maintenance", help="planned outages on the running daemon, through its API: add, list, end"
    )
    with_config(maintenance)
    client.add_arguments(maintenance)
    tests = sub.add_parser("test-rules", help="run rule unit tests, then exit (0 = all passed)")
    tests.add_argument("files", nargs="+", type=Path, help="test files, or directories of *.yml")
    return parser


def _load(path: Path) -> tuple[Loaded, list[Rule]]:
    from alarmd.app import load_profiles_for, load_rules  # noqa: PLC0415 - keeps pysnmp/aiokafka imports lazy

    loaded = load(path)
    load_profiles_for(loaded)
    if loaded.config.traps.enabled:
        # The daemon reads them again when it starts the receiver; a broken file must stop it here.
        TrapDefinitions.load_globs(loaded.config.traps.definitions, loaded.path.parent)
    load_outage_files(loaded)
    return loaded, load_rules(loaded)


def _check_config(path: Path, *, diff: bool = False) -> int:
    try:
        loaded, rules = _load(path)
    except ConfigError as exc:
        print(f"alarmd: config is not valid:\n{exc}", file=sys.stderr)
        return 1
    cfg = loaded.config
    print(
        f"{loaded.path}: OK: {len(cfg.customers)} customers, {len(cfg.circuits)} circuits, "
        f"{len(cfg.devices)} devices, {len(rules)} rules from {len(loaded.rule_paths)} file(s), "
        f"{len(loaded.profile_paths)} device profiles, {len(load_outage_files(loaded))} planned outages"
        + (f", {len(cfg.elements)} shared elements" if cfg.elements else "")
    )
    return _diff_running(loaded) if diff else 0


def _diff_running(loaded: Loaded) -> int:
    """Print what a reload of ``loaded`` would change in the daemon running on its state_dir."""
    from alarmd.app import load_profiles_for, profile_text  # noqa: PLC0415 - keeps pysnmp/aiokafka imports lazy

    try:
        running = read_running(loaded.state_dir)
    except ConfigError as exc:
        print(f"alarmd: cannot compare: {exc}", file=sys.stderr)
        return 1
    new = snapshot(loaded.config, profile_text(load_profiles_for(loaded)), running.salt)
    print(describe(running) + (f", from {running.config}" if running.config != str(loaded.path) else ""))
    print(
        "\n".join(
            diff_snapshots(running.snapshot, new).lines() or ["no change: a reload would apply nothing new"]
        )
    )
    return 0


def _when(text: str, tz: datetime.tzinfo) -> float:
    moment = datetime.datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def _open_store(config: Path) -> tuple[Loaded, Store] | int:
    """The config and the alarm store it names, or the exit status after saying why not."""
    try:
        loaded = load(config)
    except ConfigError as exc:
        print(f"alarmd: config is not valid:\n{exc}", file=sys.stderr)
        return 1
    path = loaded.state_dir / "alarmd.sqlite"
    if not path.exists():
        print(f"alarmd: no alarm store at {path}", file=sys.stderr)
        return 1
    try:
        return loaded, Store(path)
    except StoreError as exc:
        print(f"alarmd: {exc}", file=sys.stderr)
        return 1


def _window(args: argparse.Namespace, tz: datetime.tzinfo) -> tuple[float, float] | None:
    if not (args.start and args.end):
        print("alarmd: report needs --from and --to (or --major-fault WO-ID)", file=sys.stderr)
        return None
    try:
        return _when(args.start, tz), _when(args.end, tz)
    except ValueError as exc:
        print(f"alarmd: --from/--to: {exc}", file=sys.stderr)
        return None


def _report(args: argparse.Namespace) -> int:
    opened = _open_store(args.config)
    if isinstance(opened, int):
        return opened
    loaded, store = opened
    tz = datetime.timezone(datetime.timedelta(hours=loaded.config.clocks.utc_offset_hours))
    try:
        if args.major_fault:
            return _analysis(store, args.major_fault, loaded.config.clocks.utc_offset_hours)
        window = _window(args, tz)
        alarms = store.all_alarms()
        outages = [Outage.model_validate_json(body) for body in store.outages()]
    finally:
        store.close()
    if window is None:
        return 2
    if args.cluster:
        try:
            alarms, skipped = asyncio.run(cluster_faults(loaded.config))
        except (KafkaStartError, TimeoutError) as exc:
            why = str(exc) or "a topic was not read to its end in time"
            print(f"alarmd: report --cluster: cannot read the cluster's faults: {why}", file=sys.stderr)
            return 1
        for reason in skipped:
            print(f"alarmd: report --cluster: record skipped: {reason}", file=sys.stderr)
    start, end = window
    if args.major_faults:
        return _major_faults(args, alarms, start, end, tz)
    rows = quality(
        alarms,
        start=start,
        end=end,
        now=time.time(),
        clocks=ClockPolicy(loaded.config.clocks),
        by=args.by,
        customer=args.customer,
        outages=outages,
    )
    fields = [
        args.by,
        "customer",
        "tier",
        "faults",
        "fault_hours",
        "availability_percent",
        "repaired_on_time",
        "repairs_due",
        "timeliness_percent",
        "planned_faults",
        "planned_hours",
        "availability_unplanned_percent",
        "repeats",
    ]
    table: list[list[object]] = [
        [
            r.key,
            r.customer,
            r.tier,
            r.faults,
            round(r.fault_seconds / 3600, 3),
            round(r.availability * 100, 3),
            r.repaired_on_time,
            r.repairs_due,
            "" if r.timeliness is None else round(r.timeliness * 100, 1),
            r.planned_faults,
            round(r.planned_seconds / 3600, 3),
            round(r.availability_unplanned * 100, 3),
            r.repeats,
        ]
        for r in rows
    ]
    _print(args.format, fields, table)
    if args.format == "table":
        majors = major_faults(alarms, start=start, end=end, now=time.time())
        hours = round(sum(m.seconds for m in majors) / 3600, 3)
        print(f"\nmajor faults: {len(majors)}, {hours} h in the window (details: --major-faults)")
    return 0


def _print(fmt: str, fields: list[str], table: list[list[object]]) -> None:
    if fmt == "json":
        print(
            json.dumps([dict(zip(fields, row, strict=True)) for row in table], ensure_ascii=False, indent=2)
        )
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(fields)
        writer.writerows(table)
    else:
        lines: list[list[object]] = [list(fields), *table]
        widths = [max(len(str(x)) for x in col) for col in zip(*lines, strict=True)]
        for row in lines:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def _major_faults(
    args: argparse.Namespace, alarms: list[Alarm], start: float, end: float, tz: datetime.tzinfo
) -> int:
    def local(epoch: float | None) -> str:
        return datetime.datetime.fromtimestamp(epoch, tz).isoformat(timespec="seconds") if epoch else ""

    rows = major_faults(alarms, start=start, end=end, now=time.time())
    fields = ["work_order_id", "element", "element_kind", "alarm_class", "tier", "circuits"]
    fields += ["customers", "raised_at", "cleared_at", "hours_in_window"]
    table: list[list[object]] = [
        [
            *(r.work_order_id, r.element, r.element_kind, r.alarm_class, r.tier, r.circuits, r.customers),
            *(local(r.raised_at), local(r.cleared_at), round(r.seconds / 3600, 3)),
        ]
        for r in rows
    ]
    _print(args.format, fields, table)
    return 0


def _analysis(store: Store, work_order: str, utc_offset_hours: float) -> int:
    alarm_id = work_order.removeprefix("WO-")
    alarms = store.all_alarms()
    major = next((a for a in alarms if a.alarm_id == alarm_id), None)
    if major is None:
        print(f"alarmd: no alarm {work_order} in the store", file=sys.stderr)
        return 1
    try:
        text = analysis_report(
            major, alarms, store.history, utc_offset_hours=utc_offset_hours, now=time.time()
        )
    except ValueError as exc:
        print(f"alarmd: {exc}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


def message_schemas() -> dict[str, str]:
    """File name -> JSON Schema text of every message on alarmd's Kafka topics."""

    def dump(schema: dict[str, object]) -> str:
        return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"

    return {
        "work-order.schema.json": dump(WorkOrder.model_json_schema()),
        "notice.schema.json": dump(Notice.model_json_schema()),
        "ticket-feedback.schema.json": dump(TicketFeedback.model_json_schema()),
        "planned-outage.schema.json": dump(PlannedOutageNotice.model_json_schema()),
        "upstream-alarm.schema.json": schema_json(),
    }


def _yaml_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        out.extend(sorted(path.glob("*.yml")) + sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return out


def _check_rules(files: list[Path]) -> int:
    try:
        rules = compile_docs(read_yaml(f) for f in _yaml_files(files))
    except ConfigError as exc:
        print(f"alarmd: rules are not valid:\n{exc}", file=sys.stderr)
        return 1
    for rule in rules:
        print(f"{rule.source}: {rule.name}: {rule.describe()}")
    return 0


class _BookJudge:
    """Rule tests through the real alarm stage: lead team after correlation, root causes."""

    def __init__(self, config: Config) -> None:
        inventory = Inventory(config)
        self.book = AlarmBook(
            inventory, Router(config.routing).lead_team, Metrics(), Correlator(inventory, config.routing)
        )

    def judge(self, transitions: list[AlarmTransition], now: float) -> None:
        for transition in transitions:
            self.book.apply(transition)
        self.book.tick(now)

    def lead_team(self, fingerprint: str, labels: Mapping[str, str]) -> Team:
        alarm = self.book.active.get(fingerprint)
        if alarm is None:
            raise ValueError(f"alarm {dict(labels)} fires in the engine but not in the alarm stage")
        return alarm.lead_team

    def parent(self, fingerprint: str) -> str | None:
        alarm = self.book.active.get(fingerprint)
        parent = self.book.parent_of(alarm) if alarm is not None else None
        return parent.rule if parent is not None else None


def _test_rules(files: list[Path]) -> int:
    failed = passed = 0
    for path in _yaml_files(files):
        try:
            doc = read_yaml(path)
            spec = validate(doc, RuleTestFile)
            rule_paths = [path.parent / f for f in spec.rule_files]
            rules = compile_docs(read_yaml(p) for p in rule_paths)
            config = load(path.parent / spec.config).config if spec.config else Config()
            for i, test in enumerate(spec.tests):
                failures = run_test(test, rules, _BookJudge(config))
                where = doc.where(("tests", i))
                if failures:
                    failed += 1
                    for f in failures:
                        print(f"FAIL {where}: {test.name}: at {f.eval_time:g}s {f.alertname}: {f.message}")
                else:
                    passed += 1
                    print(f"ok   {where}: {test.name}")
        except (ConfigError, ValueError) as exc:
            failed += 1
            print(f"FAIL {path}: {exc}", file=sys.stderr)
    print(f"rule tests: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


async def _serve(loaded: Loaded, rules: list[Rule], role: Role = "all") -> None:
    from alarmd.app import Daemon  # noqa: PLC0415 - keeps pysnmp/aiokafka imports lazy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            os._exit(130)
        stop.set()

    daemon = Daemon(loaded, rules, settle_heap=True, role=role)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    await daemon.run(stop)


def _run(path: Path, level: str, fmt: str, role: Role = "all") -> int:

    alarmd_logging.setup(level, fmt)  # type: ignore[arg-type]
    try:
        loaded, rules = _load(path)
    except ConfigError as exc:
        print(f"alarmd: config is not valid, not starting:\n{exc}", file=sys.stderr)
        return EX_CONFIG
    import uvloop  # noqa: PLC0415 - only the daemon needs the event loop

    try:
        uvloop.run(_serve(loaded, rules, role))
    except (OSError, StoreError) as exc:
        print(f"alarmd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alarmd`` command."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config, args.log_level, args.log_format, args.role)
    if args.command == "maintenance":
        return client.run(args)
    # The checking commands speak through their output; the stages they exercise stay quiet.
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        return _command(args)
    finally:
        structlog.configure(**previous)


def _command(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return _check_config(args.config, diff=args.diff)
    if args.command == "check-rules":
        return _check_rules(args.files)
    if args.command == "test-rules":
        return _test_rules(args.files)
    if args.command == "report":
        return _report(args)
    if args.command == "schemas":
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in message_schemas().items():
            (args.out / name).write_text(text, encoding="utf-8")
            print(args.out / name)
        return 0
    print(f"alarmd: unknown command {args.command}", file=sys.stderr)
    return 2
