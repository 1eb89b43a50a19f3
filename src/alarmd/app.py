"""Wiring: pollers → samples queue → rule engine → alarms → outbox → Kafka, with a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from alarmd.alarms.lifecycle import AlarmBook
from alarmd.clock import Clock, SystemClock
from alarmd.collector.poller import DevicePoller
from alarmd.collector.profile import Profile, load_profiles
from alarmd.collector.snmp import PysnmpClient, SnmpClient
from alarmd.config import ConfigError, Loaded, read_yaml
from alarmd.dispatch.kafka import KafkaSink
from alarmd.dispatch.outbox import Dispatcher, Outbox, WorkOrderSink
from alarmd.dispatch.routing import lead_team
from alarmd.http import HttpServer
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import Alarm, Sample, WorkOrder
from alarmd.rules.compile import Rule, compile_docs
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd")


def load_profiles_for(loaded: Loaded) -> dict[str, Profile]:
    """Load the device profiles and check that every device's profile exists."""
    profiles = load_profiles(loaded.profile_paths)
    for device in loaded.config.devices:
        name = device.profile or device.kind.value
        if name not in profiles:
            raise ConfigError(
                f"{loaded.path}: device {device.name}: unknown profile '{name}' "
                f"(known: {', '.join(sorted(profiles)) or 'none'})"
            )
    return profiles


def load_rules(loaded: Loaded) -> list[Rule]:
    """Read and compile the rule files a config names."""
    rules = compile_docs(read_yaml(path) for path in loaded.rule_paths)
    if not rules:
        raise ConfigError(f"{loaded.path}: rule_files name {len(loaded.rule_paths)} file(s) but no rules")
    return rules


class Daemon:
    """One running alarmd: owns the queues between stages and the order of shutdown."""

    def __init__(
        self,
        loaded: Loaded,
        rules: list[Rule],
        *,
        snmp: SnmpClient | None = None,
        sink: WorkOrderSink | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.snmp = snmp or PysnmpClient(self.config.polling.max_in_flight)
        self.sink = sink or KafkaSink(self.config.kafka)
        self.engine = RuleEngine(rules)
        self.profiles = load_profiles_for(loaded)
        self.book = AlarmBook(Inventory(self.config), lead_team, self.metrics)
        self.outbox = Outbox(loaded.state_dir / "outbox.sqlite")
        self.dispatcher = Dispatcher(
            self.outbox, self.sink, self.metrics, backoff=self.config.kafka.retry_backoff
        )
        self.http = HttpServer(self.config.http.host, self.config.http.port, self.metrics, lambda: self.ready)
        self.samples: asyncio.Queue[Sample | None] = asyncio.Queue(self.config.queue_size)
        self.ready = False

    def _emit(self, sample: Sample) -> None:
        try:
            self.samples.put_nowait(sample)
        except asyncio.QueueFull:
            self.metrics.samples_dropped.inc()

    async def _evaluate(self) -> None:
        while (sample := await self.samples.get()) is not None:
            self.metrics.rule_evaluations.inc()
            for transition in self.engine.evaluate(sample):
                alarm = self.book.apply(transition)
                if alarm is not None:
                    self._dispatch(alarm)

    def _dispatch(self, alarm: Alarm) -> None:
        order = WorkOrder.from_alarm(alarm, self.clock.now())
        key = (alarm.circuit or alarm.labels.get("device") or alarm.fingerprint).encode()
        self.dispatcher.submit(
            self.config.kafka.topics.work_orders, key, order.model_dump_json().encode(), order.type
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop intake, drain, flush the outbox within the deadline."""
        await self.http.start()
        intake_stop, dispatch_stop = asyncio.Event(), asyncio.Event()
        pollers = [
            DevicePoller(
                d,
                credentials=self.loaded.device_credentials(d),
                profile=self.profiles[d.profile or d.kind.value],
                polling=self.config.polling,
                client=self.snmp,
                clock=self.clock,
                metrics=self.metrics,
            )
            for d in self.config.devices
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                poll_tasks = [tg.create_task(p.run(self._emit, intake_stop)) for p in pollers]
                rule_task = tg.create_task(self._evaluate())
                send_task = tg.create_task(self.dispatcher.run(dispatch_stop))
                self.ready = True
                log.info(
                    "daemon_started",
                    devices=len(pollers),
                    rules=len(self.engine.rules),
                    kafka=self.config.kafka.bootstrap_servers,
                    pending=self.outbox.depth(),
                )
                await stop.wait()
                self.ready = False
                log.info("shutdown_started")
                intake_stop.set()
                await asyncio.gather(*poll_tasks)
                await self.samples.put(None)
                await rule_task
                dispatch_stop.set()
                try:
                    await asyncio.wait_for(asyncio.shield(send_task), self.config.shutdown_timeout)
                except TimeoutError:
                    send_task.cancel()
                    log.warning(
                        "outbox_not_drained",
                        pending=self.outbox.depth(),
                        detail="kept on disk; sent at next start",
                    )
        finally:
            with contextlib.suppress(Exception):
                await self.sink.stop()
            self.snmp.close()
            self.outbox.close()
            await self.http.stop()
            log.info("shutdown_complete")
