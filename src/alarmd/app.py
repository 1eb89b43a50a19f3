"""Wiring: pollers → samples queue → rule engine → alarms → outbox → Kafka, with a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from alarmd import heap, systemd
from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.grouping import Grouper
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.alarms.maintenance import FileOutage, Outages, load_outage_files
from alarmd.alarms.preprocess import verdict
from alarmd.alarms.repeats import Repeats
from alarmd.alarms.store import Store, StoreError
from alarmd.announce import Announcer, FeedbackRejectedError
from alarmd.api import Api
from alarmd.board import BOARD_HTML
from alarmd.clock import Clock, SystemClock
from alarmd.cluster.codec import EventDecodeError, Keys, decode, encode_event, encode_sample
from alarmd.cluster.dedup import SeenIds
from alarmd.cluster.membership import DeviceShare
from alarmd.cluster.spool import Message, Spool
from alarmd.collector.fastsnmp import FastSnmpClient
from alarmd.collector.poller import DevicePoller
from alarmd.collector.probe import IcmpProber
from alarmd.collector.profile import Profile, load_profiles
from alarmd.collector.snmp import PysnmpClient, SnmpClient
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.collector.traps import TrapReceiver
from alarmd.collector.upstream import UpstreamError, parse_upstream
from alarmd.config import ConfigError, ConsumedTopic, Loaded, load, read_yaml
from alarmd.dispatch.kafka import KafkaMembership, KafkaSink, KafkaSource, KafkaStartError, ensure_topics
from alarmd.dispatch.outbox import Dispatcher, Outbox, WorkOrderSink
from alarmd.dispatch.routing import Router
from alarmd.http import HttpServer
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import Alarm, AlarmClass, AlarmTransition, Event, Preprocessing, ProbeOutcome, Sample
from alarmd.rules.compile import Rule, compile_docs
from alarmd.rules.engine import RuleEngine

log = structlog.get_logger("alarmd")

#: Samples or events a stage handles before it lets the other tasks of the loop run.
YIELD_EVERY = 100

Role = Literal["all", "collector", "correlator"]
"""What one process does: everything (one machine), or one side of distributed mode."""


def _rejection(exc: Exception) -> tuple[str, str] | None:
    """A consumed message that is bad in itself goes to the dead-letter topic; anything else is ours."""
    if isinstance(exc, UpstreamError | FeedbackRejectedError | EventDecodeError):
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
            self.inventory, self.book, self.config.major_faults, self.metrics, self.router.lead_team
        )
        self.repeats = Repeats(self.config.major_faults.repeat_window, self.metrics)
        self.store = Store(loaded.state_dir / "alarmd.sqlite")
        self.outbox = Outbox(self.store.connection)
        self.outages = Outages(
            self.store, self.config.maintenance, self.config.clocks.utc_offset_hours, self.metrics
        )
        self.dispatcher = Dispatcher(
            self.outbox, self.sink, self.metrics, backoff=self.config.kafka.retry_backoff
        )
        self.announcer = Announcer(
            self.config.kafka.topics,
            store=self.store,
            dispatcher=self.dispatcher,
            router=self.router,
            clocks=ClockPolicy(self.config.clocks),
            clock=self.clock,
            metrics=self.metrics,
            outages=self.outages,
            major_faults=self.config.major_faults,
            locale=self.config.locale,
        )
        self.samples: asyncio.Queue[Sample | None] = asyncio.Queue(self.config.queue_size)
        self.events: asyncio.Queue[Event] = asyncio.Queue(self.config.queue_size)
        self.changes: asyncio.Queue[Change | None] = asyncio.Queue()
        self.pollers = {
            d.name: DevicePoller(
                d,
                credentials=loaded.device_credentials(d),
                profile=self.profiles[d.profile or d.kind.value],
                polling=self.config.polling,
                client=self.snmp,
                clock=self.clock,
                metrics=self.metrics,
                extensions=[p for p in self.profiles.values() if p.spec.sys_object_ids],
            )
            for d in self.config.devices
            if role == "all" or (role == "collector" and d.location == self.config.cluster.location)
        }
        self.traps: TrapReceiver | None = None
        if self.config.traps.enabled and role != "correlator":
            credentials = {name: self.config.credentials[name] for name in self.config.traps.credentials}
            definitions = TrapDefinitions.load_globs(self.config.traps.definitions, loaded.path.parent)
            self.traps = TrapReceiver(
                self.config.traps,
                credentials,
                definitions,
                self.metrics,
                self.clock,
                engine_id=self.config.traps.engine_id,
                v3_only=self.config.security.v3_only,
            )
        self.prober = IcmpProber(metrics=self.metrics)
        self.ready = False
        self._cluster_roles()
        self.api = Api.from_config(
            self.config.api,
            loaded.path.parent,
            loaded.state_dir,
            book=lambda: self.book,
            store=self.store,
            inventory=lambda: self.inventory,
            clocks=lambda: self.announcer.clocks,
            outages=self.outages,
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
        """Announce changes in order; the first work order of a fault waits for its pre-processing."""
        while (change := await self.changes.get()) is not None:
            if (
                change.kind in ("raised", "released")
                and not change.alarm.dispatched
                and not change.alarm.parent_id
            ):
                await self._preprocess(change.alarm)
            delay = 1.0
            while not self._stored("announce", lambda: self.announcer.tell(change)):
                # Held in memory, in order, until the store takes it: stored first, then sent.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            self.changes.task_done()

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
            majors = self.grouper.open_majors()
            self.metrics.major_faults_open.set(len(majors))
            self.metrics.major_fault_circuits.set(sum(self.grouper.circuits_down(m) for m in majors))
            self._stored("timers", functools.partial(self.announcer.on_timers, self.book, now))
            self._stored(
                "maintenance", functools.partial(self.announcer.on_outages, self.book, self.inventory, now)
            )
            self.dispatcher.refresh_metrics(now)
            self._export_outages()
            stages = Counter(a.lifecycle for a in (*self.book.active.values(), *self.book.recent.values()))
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
        every = self.config.dial_test.every
        targets = [
            (c.id, name, address) for c in self.config.circuits for name, address in c.dial_targets.items()
        ]
        if every <= 0 or not targets:
            return
        while not stop.is_set():
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
        self.metrics.rule_evaluations.inc()
        self._export(sample)
        labels = sample.labels
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
        self, tg: asyncio.TaskGroup, intake_stop: asyncio.Event, sources: list[KafkaSource]
    ) -> tuple[list[asyncio.Task[None]], list[asyncio.Task[None]]]:
        """Start what brings data in: pollers, dial tests, consumed topics, trap forwarding."""
        intake: list[asyncio.Task[None]] = []
        if self.role == "all":
            intake.extend(tg.create_task(p.run(self.samples.put, intake_stop)) for p in self.pollers.values())
            intake.append(tg.create_task(self._dial_tests(intake_stop)))
        else:
            intake.extend(self._start_cluster(tg, intake_stop))
        intake.append(tg.create_task(self._tick(intake_stop)))
        intake.extend(tg.create_task(source.run(intake_stop)) for source in sources)
        side = [tg.create_task(self._consume_events())]
        if self.traps is not None:
            side.append(tg.create_task(self._forward_traps(self.traps)))
        return intake, side

    def reload(self) -> bool:
        """Build the new config, rules, profiles and routing first; swap them in only if all are valid.

        Rules, routing, inhibition, inventory (customers, circuits) and clocks apply at once, with
        the state of kept rules carried over; devices, listeners, Kafka and credentials need a
        restart, and the log names which of them changed.
        """
        systemd.notify("RELOADING=1")
        try:
            loaded = load(self.loaded.path)
            rules = load_rules(loaded)
            load_profiles_for(loaded)
            outages = load_outage_files(loaded)
            self.outages.check_files(outages)
        except ConfigError as exc:
            self.metrics.reload_ok.set(0)
            log.error(  # noqa: TRY400 - the reason is the message; a traceback would only hide it
                "reload_failed", reason=str(exc), detail="the running configuration stays in force"
            )
            systemd.notify("READY=1", "STATUS=reload failed; running on the previous configuration")
            return False
        engine = RuleEngine(rules)
        carried = engine.adopt(self.engine)
        old, new = self.config, loaded.config
        self.engine = engine
        self.router = Router(new.routing)
        self.inventory = Inventory(new)
        self.book.inventory = self.inventory
        self.book.route = self.router.lead_team
        self.book.correlator = Correlator(self.inventory, new.routing)
        self.grouper.inventory, self.grouper.config = self.inventory, new.major_faults
        self.grouper.route = self.router.lead_team
        self.repeats.window = new.major_faults.repeat_window
        self.announcer.router = self.router
        self.announcer.clocks = ClockPolicy(new.clocks)
        self.outages.configure(new.maintenance, new.clocks.utc_offset_hours)
        self._sync_outages(outages)
        restart = [
            key
            for key in (
                "devices",
                "credentials",
                "polling",
                "traps",
                "http",
                "kafka",
                "upstream",
                "ticketing",
                "state_dir",
                "profile_files",
            )
            if getattr(old, key) != getattr(new, key)
        ]
        self.config, self.loaded = new, loaded
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(self.clock.now())
        log.info("config_reloaded", rules=len(rules), state_carried=carried, restart_required=restart)
        systemd.notify("READY=1", f"STATUS=reloaded: {len(rules)} rules")
        return True

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

    def _sources(self) -> list[KafkaSource]:
        sources: list[KafkaSource] = []
        if self.role == "collector":
            return sources
        for topic, handle in (
            (self.config.upstream, self._on_upstream),
            (self.config.ticketing, self._on_feedback),
        ):
            if topic.enabled:
                sources.append(KafkaSource(self.config.kafka, topic, handle, _rejection, self.metrics))
        return sources

    # ------------------------------------------------------------------ distributed mode (roles)

    def _cluster_roles(self) -> None:
        """What a collector or a correlator needs besides the stages: keys, spool, share, dedup set."""
        cluster = self.config.cluster
        self.assigned = self.role == "all"  # /-/ready waits for the first assignment in the other roles
        self.keys = Keys(self.inventory)
        self.spool = Spool(cluster.spool_size, self.metrics)
        self.events_sink = KafkaSink(self.config.kafka)
        self.seen = SeenIds(cluster.dedup_window, cluster.dedup_size)
        self._device_stops: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self._spool_task: asyncio.Task[None] | None = None
        self._spool_stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.share = DeviceShare(
            self.pollers, cluster.inventory_partitions, self._poll_device, self._drop_device
        )

    def _start_cluster(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Collector: join the location's group and publish; correlator: consume the events topic."""
        cluster = self.config.cluster
        self._tg = tg
        if self.role == "correlator":
            return [tg.create_task(self._consume_cluster_events(stop))]
        self._spool_task = tg.create_task(self.spool.run(self._publish, self._spool_stop))
        membership = KafkaMembership(
            self.config.kafka,
            cluster.location_topic,
            cluster.location_group,
            cluster.inventory_partitions,
            self._assigned_devices,
            session_timeout=cluster.session_timeout,
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

    def _poll_device(self, name: str) -> None:
        if self._tg is None or name in self._device_stops:
            return
        stop = asyncio.Event()
        self._device_stops[name] = (
            stop,
            self._tg.create_task(self.pollers[name].run(self._publish_sample, stop)),
        )

    def _drop_device(self, name: str) -> None:
        entry = self._device_stops.pop(name, None)
        if entry is not None:
            entry[0].set()

    async def _publish_sample(self, sample: Sample) -> None:
        self.spool.put(self.keys.of(sample.labels), encode_sample(sample)[1])

    async def _events_topic(self) -> None:
        cluster = self.config.cluster
        await ensure_topics(self.config.kafka, [(cluster.events_topic, cluster.events_partitions)])

    async def _publish(self, batch: Sequence[Message]) -> None:
        if not self._events_ready:
            await self._events_topic()
            self._events_ready = True
        await self.events_sink.send_many(self.config.cluster.events_topic, batch)

    _events_ready = False

    async def _stop_collecting(self) -> None:
        """Stop the device pollers, then send what the spool holds within the shutdown deadline."""
        stops = list(self._device_stops.values())
        self._device_stops.clear()
        for stop, _ in stops:
            stop.set()
        await asyncio.gather(*(task for _, task in stops))
        if self._spool_task is not None:
            self._spool_stop.set()  # the batch in flight finishes first: cancelled, it would go twice
            await self._spool_task
            left = await self.spool.drain(self._publish, self.config.shutdown_timeout)
            if left:
                log.warning("spool_not_drained", left=left, detail="lost: the spool lives in memory")

    async def _consume_cluster_events(self, stop: asyncio.Event) -> None:
        """Correlator: make sure the events topic exists, then consume it in the correlators' group."""
        cluster = self.config.cluster
        delay = max(self.config.kafka.retry_backoff, 0.05)
        while not stop.is_set():
            try:
                await self._events_topic()
                break
            except KafkaStartError as exc:
                log.warning("events_topic_unavailable", error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        topic = ConsumedTopic(
            enabled=True,
            topic=cluster.events_topic,
            group_id=cluster.correlator_group,
            dead_letter_topic=f"{cluster.events_topic}.dead-letter",
        )
        source = KafkaSource(
            self.config.kafka,
            topic,
            self._on_cluster_event,
            _rejection,
            self.metrics,
            on_assign=lambda partitions: self._took("events", partitions),
            session_timeout=cluster.session_timeout,
        )
        try:
            await source.run(stop)
        finally:
            await source.close()

    async def _on_cluster_event(self, payload: bytes, key: bytes | None) -> None:
        """Judge a sample or event; return once the alarm changes it caused are stored (then it commits)."""
        envelope = decode(payload)
        item = envelope.item
        kind = "sample" if isinstance(item, Sample) else "event"
        if self.seen.check(envelope.id, self.clock.now()):
            self.metrics.events_consumed.labels(kind, "duplicate").inc()
            return
        self.metrics.events_consumed.labels(kind, "judged").inc()
        if isinstance(item, Sample):
            self._judge_sample(item)
        else:
            self._judge_event(self.enrich(item))
        await self.changes.join()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop intake, drain, flush the outbox within the deadline."""
        self._sync_outages(load_outage_files(self.loaded))
        restored = self._restore()
        if restored:
            log.info(
                "alarms_restored", count=restored, timers_due=len(self.store.due_timers(self.clock.now()))
            )
        await self.http.start()
        intake_stop, dispatch_stop = asyncio.Event(), asyncio.Event()
        sources = self._sources()
        if self.traps is not None:
            await self.traps.start()
        try:
            async with asyncio.TaskGroup() as tg:
                intake, side = self._start_intake(tg, intake_stop, sources)
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
            for source in sources:
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
        await self._stop_traps()
        await asyncio.gather(*intake)
        await self._stop_collecting()
        for task in side:
            task.cancel()
        await self.samples.put(None)
        await stages[0]
        self.changes.put_nowait(None)
        await stages[1]
