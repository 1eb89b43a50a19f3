"""Wiring: pollers → samples queue → rule engine → alarms → outbox → Kafka, with a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Literal

import structlog

from alarmd import heap, systemd
from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.grouping import Grouper, is_major
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.maintenance import FileOutage, Outages, load_outage_files
from alarmd.alarms.preprocess import verdict
from alarmd.alarms.repeats import Repeats
from alarmd.alarms.store import Store, StoreError
from alarmd.announce import Announcer, FeedbackRejectedError
from alarmd.api import Api
from alarmd.board import BOARD_HTML, OpenFaults
from alarmd.clock import Clock, SystemClock
from alarmd.cluster.changelog import ChangelogStore
from alarmd.cluster.codec import (
    EventDecodeError,
    Feedback,
    Item,
    Keys,
    Samples,
    encode_event,
    encode_poll,
)
from alarmd.cluster.correlator import Correlation
from alarmd.cluster.elements import ElementStage, local_grouping
from alarmd.cluster.history import ClosedFaults, history_topic
from alarmd.cluster.membership import DeviceShare
from alarmd.cluster.rekey import FeedbackRekeyer, RekeyError
from alarmd.cluster.spool import Message, Spool
from alarmd.cluster.transactions import StagedDispatcher
from alarmd.cluster.view import ClusterView, Together
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.fleet import PollerFleet
from alarmd.collector.poller import DevicePoller
from alarmd.collector.probe import IcmpProber
from alarmd.collector.profile import Profile, load_profiles
from alarmd.collector.snmp import PysnmpClient, SnmpClient
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.collector.traps import TrapReceiver
from alarmd.collector.upstream import UpstreamError, parse_upstream
from alarmd.config import Config, ConfigError, DeviceConfig, Loaded, SnmpV3, load, read_yaml
from alarmd.dispatch.kafka import BULK_BATCH_BYTES, KafkaMembership, KafkaSink, KafkaSource, ensure_topics
from alarmd.dispatch.outbox import Dispatcher, Outbox, WorkOrderSink
from alarmd.dispatch.routing import Router
from alarmd.http import HttpServer
from alarmd.inventory import Inventory
from alarmd.inventory.reconcile import ConfigDiff, diff_snapshots, snapshot
from alarmd.inventory.running import Running, write_running
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmClass, AlarmTransition, Event, Preprocessing, ProbeOutcome, Sample
from alarmd.rules.compile import Rule, compile_docs
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd")

#: Samples or events a stage handles before it lets the other tasks of the loop run.
YIELD_EVERY = 100
#: The most alarm changes the announce stage stores in one transaction.
ANNOUNCE_BATCH = 500

Role = Literal["all", "collector", "correlator"]
"""What one process does: everything (one machine), or one side of distributed mode."""


def _rejection(exc: Exception) -> tuple[str, str] | None:
    """A consumed message that is bad in itself goes to the dead-letter topic; anything else is ours."""
    if isinstance(exc, UpstreamError | FeedbackRejectedError | EventDecodeError | RekeyError):
        return exc.reason, exc.detail
    return None


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


def _trap_definitions(loaded: Loaded) -> TrapDefinitions:
    return TrapDefinitions.load_globs(loaded.config.traps.definitions, loaded.path.parent)


def profile_text(profiles: dict[str, Profile]) -> Callable[[str], str]:
    """A device profile's content by name, as the inventory snapshot compares it."""
    texts = {name: profile.spec.model_dump_json() for name, profile in profiles.items()}
    return lambda name: texts.get(name, "")


def load_rules(loaded: Loaded) -> list[Rule]:
    """Read and compile the rule files a config names."""
    rules = compile_docs(read_yaml(path) for path in loaded.rule_paths)
    if not rules:
        raise ConfigError(f"{loaded.path}: rule_files name {len(loaded.rule_paths)} file(s) but no rules")
    return rules


class Daemon:
    """One running alarmd: owns the queues between stages and the order of shutdown.

    With ``settle_heap`` (as ``alarmd run`` starts it) what start-up built is put out of the
    garbage collector's reach once everything runs (:func:`alarmd.heap.settle`).
    """

    def __init__(
        self,
        loaded: Loaded,
        rules: list[Rule],
        *,
        snmp: SnmpClient | None = None,
        sink: WorkOrderSink | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        settle_heap: bool = False,
        role: Role = "all",
    ) -> None:
        self.loaded = loaded
        self.role: Role = role
        self._settle_heap = settle_heap
        self.config = loaded.config
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        in_flight = self.config.polling.max_in_flight
        self.snmp = snmp or FastSnmpClient(in_flight, v3=lambda: PysnmpClient(in_flight))
        self.sink = sink or KafkaSink(self.config.kafka)
        self.engine = RuleEngine(rules)
        self.profiles = load_profiles_for(loaded)
        self.router = Router(self.config.routing)
        self.inventory = Inventory(self.config)
        self.book = AlarmBook(
            self.inventory,
            self.router.lead_team,
            self.metrics,
            Correlator(self.inventory, self.config.routing),
            reopen_window=self.config.clocks.observation,
            watch_window=self.config.clocks.business_watch,
        )
        self.grouper = Grouper(
            self.inventory,
            self.book,
            local_grouping(self.config.major_faults, role),
            self.metrics,
            self.router.lead_team,
        )
        self.repeats = Repeats(self.config.major_faults.repeat_window, self.metrics)
        self.store = (ChangelogStore if role == "correlator" else Store)(loaded.state_dir / "alarmd.sqlite")
        self.outbox = Outbox(self.store.connection)
        self.outages = Outages(
            self.store, self.config.maintenance, self.config.clocks.utc_offset_hours, self.metrics
        )
        # a correlator's outbox is sent by its partitions' transactions
        self.dispatcher = (StagedDispatcher if role == "correlator" else Dispatcher)(
            self.outbox, self.sink, self.metrics, backoff=self.config.kafka.retry_backoff
        )
        self.announcer = self._announcer(self.store, self.dispatcher, self.outages)
        self.samples: asyncio.Queue[Sample | None] = asyncio.Queue(self.config.queue_size)
        self.events: asyncio.Queue[Event] = asyncio.Queue(self.config.queue_size)
        self.changes: asyncio.Queue[Change | None] = asyncio.Queue()
        self.fleet = PollerFleet(
            self._poller,
            self._own_devices(self.config),
            owns=(lambda name: name in self.share.owned) if role == "collector" else None,
        )
        #: Digests of the inventory applied, which the next reload compares against (salted: on disk too).
        self._salt = os.urandom(16)
        self._snapshot = snapshot(self.config, profile_text(self.profiles), self._salt)
        #: Devices that left the inventory: samples still queued from their last poll are dropped.
        self._retired: set[str] = set()
        self._group: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._source_runs: list[tuple[KafkaSource, asyncio.Event, asyncio.Task[None]]] = []
        self.traps: TrapReceiver | None = None
        if self.config.traps.enabled and role != "correlator":
            self.traps = self._trap_receiver(loaded, _trap_definitions(loaded))
        self.prober = IcmpProber(metrics=self.metrics)
        self.ready = False
        self._cluster_roles()
        self.elements = self._element_stage()
        #: A correlator's view of the element stage's major faults (its changelog), beside the cluster view.
        self.majors: ClusterView | None = None
        if self.elements is not None and self.view is not None:
            self.majors = ClusterView(
                self.config.kafka,
                self.elements.changelog_topic,
                self.config.cluster.events_partitions,
                self.metrics,
                keep=is_major,
            )
        self.api = Api.from_config(
            self.config.api,
            loaded.path.parent,
            loaded.state_dir,
            book=self.faults,
            store=self.store,
            inventory=lambda: self.inventory,
            clocks=lambda: self.announcer.clocks,
            outages=self.outages,
            locale=lambda: self.config.locale,
        )
        self.http = HttpServer(
            self.config.http.host,
            self.config.http.port,
            self.metrics,
            lambda: self.ready and self.assigned,
            reload=self.reload,
            guarded=self.api.guard(self.reload) if self.api.tokens else None,
            pages={"/board": ("text/html; charset=utf-8", BOARD_HTML)},
            problem=self.problem,
        )

    def _announcer(self, store: Store, dispatcher: Dispatcher, outages: Outages | None = None) -> Announcer:
        """The announce stage over ``store`` and ``dispatcher``: the daemon's own, or the element stage's."""
        return Announcer(
            self.config.kafka.topics,
            store=store,
            dispatcher=dispatcher,
            router=self.router,
            clocks=ClockPolicy(self.config.clocks),
            clock=self.clock,
            metrics=self.metrics,
            outages=outages,
            major_faults=self.config.major_faults,
            locale=self.config.locale,
        )

    @property
    def pollers(self) -> dict[str, DevicePoller]:
        """The poller of every device, by name."""
        return self.fleet.pollers

    def _poller(self, device: DeviceConfig) -> DevicePoller:
        return DevicePoller(
            device,
            credentials=self.loaded.device_credentials(device),
            profile=self.profiles[device.profile or device.kind.value],
            polling=self.config.polling,
            client=self.snmp,
            clock=self.clock,
            metrics=self.metrics,
            extensions=[p for p in self.profiles.values() if p.spec.sys_object_ids],
        )

    def _own_devices(self, config: Config) -> list[DeviceConfig]:
        """The devices this instance may poll: all in one process, a collector its location's."""
        if self.role == "all":
            return list(config.devices)
        if self.role == "collector":
            return [d for d in config.devices if d.location == config.cluster.location]
        return []

    def _trap_receiver(
        self, loaded: Loaded, definitions: TrapDefinitions, queue: asyncio.Queue[Event] | None = None
    ) -> TrapReceiver:
        config = loaded.config
        return TrapReceiver(
            config.traps,
            {name: config.credentials[name] for name in config.traps.credentials},
            definitions,
            self.metrics,
            self.clock,
            engine_id=config.traps.engine_id,
            v3_only=config.security.v3_only,
            queue=queue,
        )

    def _emit(self, sample: Sample) -> None:
        try:
            self.samples.put_nowait(sample)
        except asyncio.QueueFull:
            self.metrics.samples_dropped.inc()

    def enrich(self, event: Event) -> Event:
        """Resolve an event's address and ifIndex to device, interface, circuit, customer and tier."""
        labels = dict(event.labels)
        device = self.inventory.devices.get(labels.get("device", "")) or self.inventory.device_at(
            labels.get("agent_address") or labels.get("source_address")
        )
        if device is not None:
            labels["device"], labels["device_kind"] = device.name, device.kind.value
            if_index = labels.get("if_index")
            poller = self.pollers.get(device.name)
            if if_index and poller is not None and if_index in poller.interface_names:
                labels.setdefault("interface", poller.interface_names[if_index])
        placement = self.inventory.place(labels.get("device"), labels.get("interface"), labels.get("circuit"))
        if placement is not None:
            labels["circuit"] = placement.circuit.id
            labels["customer"] = placement.customer.id
            labels["tier"] = placement.customer.tier.value
        return dataclasses.replace(event, labels=labels)

    async def _on_upstream(self, payload: bytes, key: bytes | None) -> None:
        await self.events.put(self.enrich(parse_upstream(payload, self.clock.now())))

    async def _on_feedback(self, payload: bytes, key: bytes | None) -> None:
        if not self._stored("ticket_feedback", lambda: self.announcer.feedback(payload, self.book)):
            raise StoreError(self.store.problem or "the alarm store is not writable")  # fetched again later

    async def _forward_traps(self, receiver: TrapReceiver) -> None:
        while True:
            event = self.enrich(await receiver.queue.get())
            if self.role == "collector":
                self.spool.put(self.keys.of(event.labels), encode_event(event)[1])
            else:
                await self.events.put(event)

    def _judge(self, transitions: list[AlarmTransition]) -> None:
        for transition in transitions:
            self._tell_all(self.grouper.feed(self.book.apply(transition), transition.at))

    def _tell_all(self, changes: list[Change]) -> None:
        """Mark repeats, then queue the changes for the announcer, in order."""
        self.repeats.mark(changes)
        for change in changes:
            self._tell(change)

    def _tell(self, change: Change) -> None:
        self.changes.put_nowait(change)

    async def _announce(self) -> None:
        """Announce changes in order; the first work order of a fault waits for its pre-processing.

        What is queued by then is stored in one transaction (at most ``ANNOUNCE_BATCH``), so that a
        storm of alarm changes costs a few commits rather than one each.
        """
        done = False
        while not done and (change := await self.changes.get()) is not None:
            batch = [change]
            while len(batch) < ANNOUNCE_BATCH and not self.changes.empty():
                more = self.changes.get_nowait()
                if more is None:
                    done = True
                    break
                batch.append(more)
            for queued in batch:
                alarm = queued.alarm
                if queued.kind in ("raised", "released") and not alarm.dispatched and not alarm.parent_id:
                    await self._preprocess(alarm)
            delay = 1.0
            while not self._stored("announce", functools.partial(self.announcer.tell_all, batch)):
                # Held in memory, in order, until the store takes it: stored first, then sent.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            for _ in batch:
                self.changes.task_done()  # a correlator commits its input once its changes are stored

    def _stored(self, operation: str, write: Callable[[], object]) -> bool:
        """Run a store write; on failure say so loudly, count it and fail the health check."""
        failure: str | None = None
        try:
            write()
        except StoreError as exc:
            failure = str(exc)
        if failure is not None:
            self.metrics.store_errors.labels(operation).inc()
            self.metrics.store_writable.set(0)
            log.error(
                "store_write_failed",
                operation=operation,
                error=failure,
                detail="alarm changes wait in memory and are retried; /-/healthy fails meanwhile",
            )
            return False
        if self.store.problem is None:
            self.metrics.store_writable.set(1)
        return True

    def problem(self) -> str | None:
        """Why the daemon is unhealthy (the store or outbox cannot be written), or None."""
        return self.store.problem or self.dispatcher.problem

    async def _preprocess(self, alarm: Alarm) -> None:
        """Dial-test the circuit's path and targets within the budget and attach a verdict (SPEC §4)."""
        budget = self.config.dial_test.preprocess_budget
        circuit = self.inventory.circuits.get(alarm.circuit or "")
        if budget <= 0 or circuit is None:
            return
        path = [hop.device for hop in circuit.path]
        targets = {d: self.inventory.devices[d].address for d in path}
        targets.update(circuit.dial_targets)
        started = self.clock.monotonic()
        tasks = {
            name: asyncio.ensure_future(self.prober.run(address, self.config.dial_test))
            for name, address in targets.items()
        }
        done, pending = await asyncio.wait(tasks.values(), timeout=budget)
        for task in pending:
            task.cancel()
        probes = {}
        for name, task in tasks.items():
            if task in done and task.exception() is None:
                r = task.result()
                probes[name] = ProbeOutcome(
                    target=name,
                    address=r.address,
                    loss_percent=r.loss_percent,
                    rtt_avg_ms=r.rtt_avg_ms,
                    error=r.error,
                )
        found, segment = verdict(path, probes, list(circuit.dial_targets))
        result = Preprocessing(
            probes=list(probes.values()),
            verdict=found,
            segment=segment,
            seconds=round(self.clock.monotonic() - started, 3),
        )
        alarm.extra["preprocessing"] = result.model_dump_json()
        log.info(
            "preprocessed",
            alarm_id=alarm.alarm_id,
            circuit=circuit.id,
            verdict=found,
            segment=segment,
            seconds=result.seconds,
        )

    def _restore(self) -> int:
        """Take back the open faults (and their clocks, which stay in the store) after a restart."""
        now = self.clock.now()
        restored = self.store.open_alarms()
        for alarm in restored:
            self.book.restore(alarm)
            if alarm.state == "firing":
                self.engine.restore(alarm.rule, alarm.fingerprint, alarm.labels, alarm.raised_at, now)
        self.grouper.restore()
        self.repeats.load(self.store.all_alarms())
        return len(restored)

    async def _tick(self, stop: asyncio.Event) -> None:
        """Let time act (auto_clear, fault clocks, flapping) and tell systemd's watchdog the loop is alive."""
        watchdog = systemd.watchdog_interval()
        last_ping = 0.0
        while not stop.is_set():
            if watchdog is not None and self.clock.monotonic() - last_ping >= watchdog:
                systemd.notify("WATCHDOG=1")
                last_ping = self.clock.monotonic()
            now = self.clock.now()
            self._judge(self.engine.tick(now))
            self._tell_all(self.grouper.feed(self.book.tick(now), now) + self.grouper.tick(now))
            if self.elements is None:  # a correlator's major faults are the element stage's
                majors = self.grouper.open_majors()
                self.metrics.major_faults_open.set(len(majors))
                self.metrics.major_fault_circuits.set(sum(self.grouper.circuits_down(m) for m in majors))
            if self.owner is None or self.owner.settled:  # a correlator's clocks wait out a rebalance
                self._stored("timers", functools.partial(self.announcer.on_timers, self.book, now))
            if self.correlation is not None:  # its partitions' transactions
                await self.correlation.tick()
            self._stored(
                "maintenance", functools.partial(self.announcer.on_outages, self.book, self.inventory, now)
            )
            self.dispatcher.refresh_metrics(now)
            self._export_outages()
            faults = self.faults()
            stages = Counter(a.lifecycle for a in (*faults.active.values(), *faults.recent.values()))
            for stage in ("firing", "dispatched", "acknowledged", "escalated", "observing"):
                self.metrics.alarms_open.labels(stage).set(stages.get(stage, 0))
            upcoming = self.store.next_due()
            self.metrics.clocks_due.set(upcoming - now if upcoming is not None else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _consume_events(self) -> None:
        done = 0
        while True:
            event = await self.events.get()
            done += 1
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # in a trap storm, let polls, timers and dispatch run too
            self._judge_event(event)

    def _judge_event(self, event: Event) -> None:
        self.metrics.events.labels(event.source).inc()
        self._judge(self.engine.evaluate_event(event))
        log.debug(  # one line per event is too many in a trap storm; alarm transitions are logged
            "event_received",
            source=event.source,
            kind=event.kind,
            trap=event.labels.get("trap"),
            device=event.labels.get("device"),
            interface=event.labels.get("interface"),
            circuit=event.labels.get("circuit"),
        )

    async def _dial_tests(self, stop: asyncio.Event) -> None:
        """Test every circuit's dial targets on schedule; loss and RTT become samples for the rules."""
        while not stop.is_set():
            every = self.config.dial_test.every  # read again each round: a reload may change both
            targets = [
                (c.id, name, address)
                for c in self.config.circuits
                for name, address in c.dial_targets.items()
            ]
            if every <= 0 or not targets:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 60.0)
                continue
            results = await asyncio.gather(
                *(self.prober.run(address, self.config.dial_test) for _, _, address in targets)
            )
            at = self.clock.now()
            for (circuit, name, address), result in zip(targets, results, strict=True):
                labels = {"circuit": circuit, "target": name, "address": address}
                self._emit(Sample("dial_test_loss_percent", labels, result.loss_percent, at))
                if result.rtt_avg_ms is not None:
                    self._emit(Sample("dial_test_rtt_ms", labels, result.rtt_avg_ms, at))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _evaluate(self) -> None:
        done = 0
        while (sample := await self.samples.get()) is not None:
            done += 1
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a poll's burst of samples must not hold traps and timers up
            self._judge_sample(sample)

    def _judge_sample(self, sample: Sample) -> None:
        labels = sample.labels
        if self._retired and labels.get("device") in self._retired:
            return  # polled before its device left the inventory
        self.metrics.rule_evaluations.inc()
        self._export(sample)
        on_circuit = "interface" in labels and self.inventory.carries_circuit(
            labels.get("device"), labels["interface"]
        )
        with self.metrics.rule_duration.time():
            transitions = self.engine.evaluate(sample, on_circuit=on_circuit)
        self._judge(transitions)

    def _export_outages(self) -> None:
        """Per circuit, whether a transmission fault is open: availability for dashboards (SPEC §7)."""
        down = {a.circuit for a in self.book.active.values() if a.alarm_class is AlarmClass.TRANSMISSION}
        for circuit in self.inventory.circuits.values():
            tier = self.inventory.customers[circuit.customer].tier.value
            self.metrics.circuit_outage.labels(circuit.id, circuit.customer, tier).set(circuit.id in down)

    def _export(self, sample: Sample) -> None:
        """Utilisation, error ratio and dial tests of the circuits as metrics (bounded by the inventory)."""
        labels = sample.labels
        if sample.metric == "dial_test_loss_percent":
            self.metrics.dial_test_loss.labels(labels["circuit"], labels["target"]).set(sample.value / 100)
        elif sample.metric == "dial_test_rtt_ms":
            self.metrics.dial_test_rtt.labels(labels["circuit"], labels["target"]).set(sample.value / 1000)
        elif sample.metric in ("interface_utilisation_percent", "interface_error_ratio_percent"):
            placement = self.inventory.place(labels.get("device"), labels.get("interface"))
            if placement is None or not any(
                h.interface == labels.get("interface") for h in placement.circuit.path
            ):
                return
            gauge = (
                self.metrics.interface_utilisation
                if sample.metric == "interface_utilisation_percent"
                else self.metrics.interface_error_ratio
            )
            gauge.labels(labels["device"], labels["interface"], placement.circuit.id).set(sample.value / 100)

    async def _stop_traps(self) -> None:
        if self.traps is not None:
            traps, self.traps = self.traps, None
            await traps.stop()

    def _start_intake(
        self, tg: asyncio.TaskGroup, intake_stop: asyncio.Event
    ) -> tuple[list[asyncio.Task[None]], list[asyncio.Task[None]]]:
        """Start what brings data in: pollers, dial tests, consumed topics, trap forwarding."""
        self._group = tg
        intake: list[asyncio.Task[None]] = []
        if self.role == "all":
            self.fleet.start(tg, self._queue_samples)
            intake.append(tg.create_task(self._dial_tests(intake_stop)))
        else:
            intake.extend(self._start_cluster(tg, intake_stop))
        intake.append(tg.create_task(self._tick(intake_stop)))
        if self.elements is not None:
            intake.append(tg.create_task(self.elements.run(intake_stop)))
        self._run_sources(self._sources())
        side = self._side = [tg.create_task(self._consume_events())]
        if self.traps is not None:
            side.append(tg.create_task(self._forward_traps(self.traps)))
        return intake, side

    def _run_sources(self, sources: list[KafkaSource]) -> None:
        """Start consuming the topics, each with its own stop (a reload may replace them)."""
        if self._group is None:
            return
        for source in sources:
            stop = asyncio.Event()
            self._source_runs.append((source, stop, self._group.create_task(source.run(stop))))

    async def _stop_sources(self, runs: list[tuple[KafkaSource, asyncio.Event, asyncio.Task[None]]]) -> None:
        for _, stop, _ in runs:
            stop.set()
        await asyncio.gather(*(task for _, _, task in runs))
        for source, _, _ in runs:
            await source.close()

    def reload(self) -> bool:
        """Apply the configuration files as they are now (SIGHUP, ``POST /-/reload``); see :meth:`_reload`."""
        with heap.paused():
            return self._reload()

    def _reload(self) -> bool:
        """Build the new config, rules, profiles and routing first; apply them only if all are valid.

        Everything applies without a restart except ``state_dir``, ``queue_size`` and ``api``
        (:mod:`alarmd.inventory.reconcile` says what changed): rules keep their state, unchanged
        devices keep their pollers, changed ones get new pollers, removed devices and circuits
        have their open faults cleared as ``decommissioned``, and the trap listener, the Kafka
        clients and the HTTP listener take their new settings in the background.
        """
        started = time.perf_counter()
        systemd.notify("RELOADING=1")
        try:
            loaded = load(self.loaded.path)
            rules = load_rules(loaded)
            profiles = load_profiles_for(loaded)
            definitions = (
                _trap_definitions(loaded)
                if loaded.config.traps.enabled and self.role != "correlator"
                else None
            )
            outages = load_outage_files(loaded)
            self.outages.check_files(outages)
        except ConfigError as exc:
            self.metrics.reload_ok.set(0)
            log.error(  # noqa: TRY400 - the reason is the message; a traceback would only hide it
                "reload_failed", reason=str(exc), detail="the running configuration stays in force"
            )
            systemd.notify("READY=1", "STATUS=reload failed; running on the previous configuration")
            return False
        new = loaded.config
        inventory = snapshot(new, profile_text(profiles), self._salt)
        diff = diff_snapshots(self._snapshot, inventory)
        engine = RuleEngine(rules)
        carried = engine.adopt(self.engine)
        self.engine = engine
        self.router = Router(new.routing)
        self.inventory = Inventory(new)
        self.keys = Keys(self.inventory)
        self.book.inventory = self.inventory
        self.book.route = self.router.lead_team
        self.book.correlator = Correlator(self.inventory, new.routing)
        self.grouper.inventory = self.inventory
        self.grouper.config = local_grouping(new.major_faults, self.role)
        self.grouper.route = self.router.lead_team
        self.repeats.window = new.major_faults.repeat_window
        self.announcer.router = self.router
        self.announcer.clocks = ClockPolicy(new.clocks)
        self.outages.configure(new.maintenance, new.clocks.utc_offset_hours)
        if self.elements is not None:
            self.elements.configure(new, self.inventory, self.router.lead_team)
        self._sync_outages(outages)
        self.config, self.loaded, self.profiles, self._snapshot = new, loaded, profiles, inventory
        self._write_running()
        cleared = self._apply_inventory(diff)
        self._apply_listeners(diff, loaded, definitions)
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(self.clock.now())
        seconds = time.perf_counter() - started
        self.metrics.reload_duration.set(seconds)
        log.info(
            "config_reloaded",
            rules=len(rules),
            state_carried=carried,
            decommissioned=cleared,
            seconds=round(seconds, 3),
            **diff.summary(),
        )
        systemd.notify("READY=1", f"STATUS=reloaded: {len(rules)} rules, {len(self.fleet)} devices")
        return True

    def _apply_inventory(self, diff: ConfigDiff) -> int:
        """Pollers started, re-created and retired; removed devices' and circuits' faults cleared."""
        self._apply_devices(self.config, diff.devices.changed, diff.devices.removed)
        return self._decommission(diff.devices.removed, diff.circuits.removed)

    def _apply_listeners(self, diff: ConfigDiff, loaded: Loaded, definitions: TrapDefinitions | None) -> None:
        """The trap listener, the Kafka clients and the HTTP listener take their new settings."""
        new = loaded.config
        if diff.traps_rebind and self._group is None:  # not started yet: run() binds the new one
            self.traps = self._trap_receiver(loaded, definitions) if definitions is not None else None
        elif diff.traps_rebind:
            self._in_background(self._rebind_traps(loaded, definitions))
        elif diff.traps_accept and self.traps is not None and definitions is not None:
            self.traps.update(
                new.traps,
                {name: new.credentials[name] for name in new.traps.credentials},
                definitions,
                v3_only=new.security.v3_only,
            )
        if diff.kafka:
            old_sink = self.dispatcher.replace_sink(KafkaSink(new.kafka))
            self.sink = self.dispatcher.sink
            self._in_background(self._reconnect_kafka(old_sink))
        if diff.http:
            self._in_background(self.http.rebind(new.http.host, new.http.port))

    def _apply_devices(self, config: Config, changed: Collection[str], removed: Collection[str]) -> None:
        """Start, re-create and retire the pollers of the devices this instance polls, as ``config`` says."""
        self._retired = set(removed)  # their last polls may still be queued
        own = self._own_devices(config)
        if self.role == "collector":
            self.share.reindex(d.name for d in own)
        names = {d.name for d in own}
        retiring = self.fleet.apply(
            own,
            added=[n for n in names if n not in self.fleet.pollers],
            changed=[n for n in changed if n in names and n in self.fleet.pollers],
            removed=[n for n in self.fleet.pollers if n not in names],
        )
        if retiring and removed:
            self._in_background(self._forget_series(retiring, removed))
        if isinstance(self.snmp, FastSnmpClient) and any(
            isinstance(self.pollers[name].target.credentials, SnmpV3) for name in changed if name in names
        ):
            old_v3 = self.snmp.renew_v3()  # pysnmp keeps keys localized per agent engine: start afresh
            if old_v3 is not None:
                self._in_background(self._close_later(old_v3))

    def _sync_outages(self, found: list[FileOutage]) -> None:
        """Make the file outages those of the files now, audited; if that fails, the log says why."""
        try:
            sync = self.outages.sync_files(found, self.inventory, self.clock.now())
        except (StoreError, ConfigError) as exc:
            log.error("maintenance_files_not_applied", error=str(exc))  # noqa: TRY400 - the message is the reason
            return
        if sync.added or sync.changed or sync.withdrawn:
            self.api.audit("maintenance", None, "", f"maintenance files: {sync}")
        log.info(
            "maintenance_files_applied",
            outages=len(found),
            added=len(sync.added),
            changed=len(sync.changed),
            removed=len(sync.withdrawn),
        )

    def _write_running(self) -> None:
        """Leave the applied inventory's digests in state_dir for ``check-config --diff``."""
        running = Running(os.getpid(), self.clock.now(), str(self.loaded.path), self._salt, self._snapshot)
        try:
            write_running(self.loaded.state_dir, running)
        except OSError as exc:
            log.warning(
                "running_inventory_not_written", error=str(exc), detail="check-config --diff cannot compare"
            )

    def _decommission(self, devices: Collection[str], circuits: Collection[str]) -> int:
        """Clear the open faults of devices and circuits that left the inventory, and drop their series."""
        if not devices and not circuits:
            return 0
        gone_devices, gone_circuits = set(devices), set(circuits)

        def gone(alarm: Alarm) -> bool:
            return alarm.labels.get("device") in gone_devices or alarm.circuit in gone_circuits

        changes = self.book.decommission(gone, self.clock.now())
        cleared = {(c.alarm.rule, c.alarm.fingerprint) for c in changes if c.kind == "cleared"}
        self.engine.forget(
            lambda rule, fp, labels: labels.get("device") in gone_devices or (rule, fp) in cleared
        )
        for change in changes:
            self._tell(change)
        self.metrics.forget(gone_devices, gone_circuits)
        for alarm in (c.alarm for c in changes if c.kind == "cleared"):
            log.info("alarm_decommissioned", alarm_id=alarm.alarm_id, circuit=alarm.circuit)
        return len(cleared)

    async def _close_later(self, client: SnmpClient) -> None:
        """Close a replaced SNMP client once the polls it has in flight are over."""
        longest = max((p.target.timeout * (p.target.retries + 1) for p in self.pollers.values()), default=0.0)
        await asyncio.sleep(longest + 1.0)
        client.close()

    async def _forget_series(self, retiring: list[asyncio.Task[None]], devices: Collection[str]) -> None:
        """Once the retired pollers' last polls have ended, drop the series those polls set again."""
        await asyncio.gather(*retiring, return_exceptions=True)
        self.metrics.forget(devices)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a reload's slow part (binding, reconnecting) without holding the reload up."""
        if self._group is None:  # not running yet: nothing is bound or connected to move
            work.close()
            return
        task = self._group.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _rebind_traps(self, loaded: Loaded, definitions: TrapDefinitions | None) -> None:
        """Bind the trap listener anew; the old one's queued traps go on to the rule stage."""
        if not loaded.config.traps.enabled or definitions is None:
            await self._stop_traps()
            return
        old = self.traps
        new = self._trap_receiver(loaded, definitions, old.queue if old is not None else None)
        shared = old is not None and new.queue is old.queue
        if old is not None and old.listens_like(new):
            await self._stop_traps()  # the same port: the old socket goes first, what it holds handled
        try:
            await new.start()
        except OSError as exc:
            log.error(  # noqa: TRY400 - the reason is the message
                "trap_listener_rebind_failed", listen=loaded.config.traps.listen, error=str(exc)
            )
            return  # at a new address the old listener stays; at the same one it is gone
        old, self.traps = self.traps, new
        if old is not None:
            await old.stop()
        if not shared and self._group is not None:
            self._side.append(self._group.create_task(self._forward_traps(new)))

    async def _reconnect_kafka(self, old_sink: WorkOrderSink) -> None:
        """Consume with the new Kafka settings and close the old producer; the outbox stays."""
        runs, self._source_runs = self._source_runs, []
        await self._stop_sources(runs)
        self._run_sources(self._sources())
        with contextlib.suppress(Exception):
            await old_sink.stop()
        log.info("kafka_reconnected", bootstrap_servers=self.config.kafka.bootstrap_servers)

    def _sources(self) -> list[KafkaSource]:
        sources: list[KafkaSource] = []
        if self.role == "collector":
            return sources
        for topic, handle in (
            (self.config.upstream, self._on_upstream),
            (self.config.ticketing, self._on_feedback),
        ):
            if topic.enabled and topic is self.config.ticketing and self.rekeyer is not None:
                group = f"{self.config.cluster.correlator_group}.feedback"  # one correlator reads each
                ticketing = topic.model_copy(update={"group_id": group})
                sources.append(
                    KafkaSource(self.config.kafka, ticketing, self.rekeyer.handle, _rejection, self.metrics)
                )
            elif topic.enabled:
                sources.append(KafkaSource(self.config.kafka, topic, handle, _rejection, self.metrics))
        return sources

    # ------------------------------------------------------------------ major faults across correlators

    def _element_stage(self) -> ElementStage | None:
        """Correlator with shared elements: the stage keyed by element that opens major faults (#17)."""
        if self.role != "correlator" or not self.config.major_faults.enabled or not self.config.elements:
            return None
        stage = ElementStage(
            self.config,
            self.loaded.state_dir,
            inventory=self.inventory,
            route=self.router.lead_team,
            metrics=self.metrics,
            clock=self.clock,
            announcer=self._announcer,
            rejection_of=_rejection,
        )
        self.announcer.also = functools.partial(stage.publish, self.dispatcher.submit)
        return stage

    # ------------------------------------------------------------------ distributed mode (roles)

    def _cluster_roles(self) -> None:
        """What a collector or a correlator needs besides the stages: keys, spool, share, dedup set."""
        cluster = self.config.cluster
        self.assigned = self.role == "all"  # /-/ready waits for the first assignment in the other roles
        self.keys = Keys(self.inventory)
        on_disk = self.loaded.state_dir if self.role == "collector" else None
        self.spool = Spool.configured(cluster.spool_size, self.metrics, on_disk, cluster.spool_disk_bytes)
        self.events_sink = KafkaSink(self.config.kafka, batch_bytes=BULK_BATCH_BYTES)
        self._spool_task: asyncio.Task[None] | None = None
        self._spool_stop = asyncio.Event()
        self._events_ready = False  # the events topic is known to exist
        self.share = DeviceShare.polled_by(
            self.fleet, cluster, self.metrics, self.clock, slots=self.role == "collector"
        )
        self.correlation: Correlation | None = None
        if isinstance(self.store, ChangelogStore):
            self.correlation = Correlation(
                self.config,
                self.store,
                self.outbox,
                book=lambda: self.book,
                engine=lambda: self.engine,
                keys=lambda: self.keys,
                judge=self._judge_cluster_item,
                rejection_of=_rejection,
                metrics=self.metrics,
                clock=self.clock,
                took=lambda partitions: self._took("events", partitions),
                restoring=self._unassigned,
            )
        self.owner = self.correlation.owner if self.correlation is not None else None
        self.view: ClusterView | None = None
        self.rekeyer: FeedbackRekeyer | None = None
        self.history: ClosedFaults | None = None
        if self.owner is not None:
            owner = self.owner
            changelog = f"{cluster.events_topic}.changelog"
            self.view = ClusterView(self.config.kafka, changelog, cluster.events_partitions, self.metrics)
            self.history = ClosedFaults(
                self.store,
                lambda: owner.owned,
                self.events_sink,
                history_topic(cluster.events_topic),
                self.metrics,
                kafka=self.config.kafka,
                partitions=cluster.events_partitions,
            )
            self.view.on_close = self.history.closed
            self.rekeyer = FeedbackRekeyer(
                self.view,
                lambda: self.keys,
                self.events_sink,
                cluster.events_topic,
                self.metrics,
                wait=cluster.feedback_wait,
                backoff=self.config.kafka.retry_backoff,
            )

    def faults(self) -> OpenFaults:
        """What the board, the API and open-fault metrics read: a correlator's cluster view, else the book."""
        if self.view is None:
            return self.book
        return self.view if self.majors is None else Together(self.view, self.majors)

    def _start_cluster(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Collector: join the location's group and publish; correlator: consume the events topic."""
        cluster = self.config.cluster
        if self.correlation is not None:
            assert self.view is not None
            assert self.history is not None
            views = [tg.create_task(self.view.run(stop)), tg.create_task(self.history.run(stop))]
            if self.majors is not None:
                views.append(tg.create_task(self.majors.run(stop)))
            return [tg.create_task(self.correlation.run(stop)), *views]
        self.fleet.start(tg, self._publish_samples)  # each device once this collector is assigned it
        self._spool_task = tg.create_task(self.spool.run(self._publish, self._spool_stop))
        membership = KafkaMembership(
            self.config.kafka,
            cluster.location_topic,
            cluster.location_group,
            cluster.inventory_partitions,
            self._assigned_devices,
            session_timeout=cluster.session_timeout,
            balance=self.share.balance,
            metrics=self.metrics,
            join_timeout=cluster.join_limit,
        )
        return [tg.create_task(membership.run(stop))]

    def _assigned_devices(self, partitions: set[int]) -> None:
        self.share.assign(partitions)
        self._took("inventory", partitions)
        self.metrics.devices_owned.set(len(self.share.owned))

    def _took(self, group: Literal["inventory", "events"], partitions: set[int]) -> None:
        self.assigned = True
        self.metrics.partitions_owned.labels(group).set(len(partitions))
        self.metrics.rebalances.labels(group).inc()
        log.info("partitions_assigned", group=group, partitions=sorted(partitions))

    async def _queue_samples(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            await self.samples.put(sample)  # a full queue holds the poll back

    async def _publish_samples(self, samples: Sequence[Sample]) -> None:
        """A collector sends one device poll as one message (per key)."""
        for key, value in encode_poll(self.keys, samples):
            self.spool.put(key, value)

    async def _events_topic(self) -> None:
        cluster = self.config.cluster
        await ensure_topics(self.config.kafka, [(cluster.events_topic, cluster.events_partitions)])

    async def _publish(self, batch: Sequence[Message]) -> None:
        if not self._events_ready:
            await self._events_topic()
            self._events_ready = True
        await self.events_sink.send_many(self.config.cluster.events_topic, batch)

    async def _drain_spool(self) -> None:
        """Once the pollers have stopped, send what the spool holds within the shutdown deadline."""
        if self._spool_task is not None:
            self._spool_stop.set()  # the batch in flight finishes first: cancelled, it would go twice
            await self._spool_task
            left = await self.spool.drain(self._publish, self.config.shutdown_timeout)
            self.spool.close()
            if left:
                log.warning("spool_not_drained", left=left, detail=self.spool.left_behind)

    def _unassigned(self) -> None:
        """A correlator restores a new assignment: /-/ready is false until it is done."""
        self.assigned = False

    async def _judge_cluster_item(self, item: Item) -> None:
        """Judge a sample, poll, event or re-keyed feedback; return once the changes it caused are stored."""
        if isinstance(item, Feedback):
            await self._on_feedback(item.payload, None)  # re-keyed here by FeedbackRekeyer
        elif isinstance(item, Sample):
            self._judge_sample(item)
        elif isinstance(item, Samples):
            for sample in item.samples:  # in the order the poll took them
                self._judge_sample(sample)
        else:
            self._judge_event(self.enrich(item))
        await self.changes.join()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop intake, drain, flush the outbox within the deadline."""
        self._sync_outages(load_outage_files(self.loaded))
        if self.correlation is not None:  # a correlator's open faults come from the changelog on assignment
            cached, dropped = self.correlation.start()
            if dropped:
                log.info("outbox_uncommitted_dropped", messages=dropped, faults_cached=cached)
        restored = self._restore()
        self._write_running()
        if restored:
            log.info(
                "alarms_restored", count=restored, timers_due=len(self.store.due_timers(self.clock.now()))
            )
        await self.http.start()
        intake_stop, dispatch_stop = asyncio.Event(), asyncio.Event()
        if self.traps is not None:
            await self.traps.start()
        try:
            async with asyncio.TaskGroup() as tg:
                intake, side = self._start_intake(tg, intake_stop)
                stages = (tg.create_task(self._evaluate()), tg.create_task(self._announce()))
                send_task = tg.create_task(self.dispatcher.run(dispatch_stop))
                frozen = heap.settle() if self._settle_heap else 0
                self.ready = True
                systemd.notify(
                    "READY=1",
                    f"STATUS=polling {len(self.pollers)} devices, "
                    f"{len(self.engine.rules)} rules, {len(self.book.active)} faults open",
                )
                log.info(
                    "daemon_started",
                    devices=len(self.pollers),
                    rules=len(self.engine.rules),
                    kafka=self.config.kafka.bootstrap_servers,
                    pending=self.outbox.depth(),
                    startup_objects_frozen=frozen,
                )
                await stop.wait()
                await self._shutdown(intake_stop, intake, side, stages)
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
            with contextlib.suppress(Exception):
                await self.events_sink.stop()
            self.snmp.close()
            self.prober.close()
            for source, _, _ in self._source_runs:
                await source.close()
            await self._stop_traps()
            self.outbox.close()
            self.store.close()
            await self.http.stop()
            log.info("shutdown_complete")

    async def _shutdown(
        self,
        intake_stop: asyncio.Event,
        intake: list[asyncio.Task[None]],
        side: list[asyncio.Task[None]],
        stages: tuple[asyncio.Task[None], asyncio.Task[None]],
    ) -> None:
        """Stop intake, then let the rule and announce stages drain what is queued."""
        self.ready = False
        systemd.notify("STOPPING=1", "STATUS=stopping: draining and flushing the outbox")
        log.info("shutdown_started")
        intake_stop.set()
        for task in list(self._background):
            task.cancel()
        await self._stop_traps()
        await asyncio.gather(*intake, self.fleet.stop())
        await self._drain_spool()
        runs, self._source_runs = self._source_runs, []
        await self._stop_sources(runs)
        for task in side:
            task.cancel()
        await self.samples.put(None)
        await stages[0]
        self.changes.put_nowait(None)
        await stages[1]
