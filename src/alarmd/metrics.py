"""The daemon's Prometheus metrics, on a registry passed in so tests get their own."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from alarmd import __version__

POLL_ERROR_REASONS = ("timeout", "auth", "error_status", "transport", "decode", "internal")
KAFKA_ERROR_REASONS = ("timeout", "unavailable", "rejected", "internal")


class Metrics:
    """Every metric alarmd exports; names follow ``alarmd_<subsystem>_<name>_<unit>``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("alarmd_build", "Version of the running daemon.", registry=r)
        self.build_info.info({"version": __version__})
        self._reloads(r)
        self.poll_requests = Counter(
            "alarmd_poll_requests_total", "Device polls started, by device kind.", ["device_kind"], registry=r
        )
        self.poll_errors = Counter(
            "alarmd_poll_errors_total",
            "Device polls that failed, by device kind and reason.",
            ["device_kind", "reason"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "alarmd_poll_duration_seconds",
            "Time to poll one device, by device kind.",
            ["device_kind"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.interface_utilisation = Gauge(
            "alarmd_interface_utilisation_ratio",
            "Bandwidth occupancy (busier direction / ifHighSpeed, 0-1) of interfaces that carry a circuit.",
            ["device", "interface", "circuit"],
            registry=r,
        )
        self.interface_error_ratio = Gauge(
            "alarmd_interface_error_ratio",
            "Share of packets lost to errors and discards (0-1) on interfaces that carry a circuit.",
            ["device", "interface", "circuit"],
            registry=r,
        )
        self.dial_test_loss = Gauge(
            "alarmd_dial_test_loss_ratio",
            "Loss of the last dial test (0-1), per circuit and target.",
            ["circuit", "target"],
            registry=r,
        )
        self.dial_test_rtt = Gauge(
            "alarmd_dial_test_rtt_seconds",
            "Average round trip of the last dial test, per circuit and target.",
            ["circuit", "target"],
            registry=r,
        )
        self.clocks_due = Gauge(
            "alarmd_clocks_next_due_seconds",
            "Seconds until the earliest fault clock (escalation, update, close) "
            "falls due; negative when overdue.",
            registry=r,
        )
        self.poll_periods = Counter(
            "alarmd_collection_periods_total",
            "Collection periods started per device (SPEC §7 completeness).",
            ["device", "device_kind"],
            registry=r,
        )
        self.poll_failed_periods = Counter(
            "alarmd_collection_failed_periods_total",
            "Collection periods that failed per device (SPEC §7).",
            ["device", "device_kind"],
            registry=r,
        )
        self.device_up = Gauge(
            "alarmd_device_up",
            "1 if the device answered its last poll, else 0.",
            ["device", "device_kind"],
            registry=r,
        )
        self.samples_dropped = Counter(
            "alarmd_pipeline_samples_dropped_total",
            "Samples dropped because the rule stage's queue was full.",
            registry=r,
        )
        self.rule_evaluations = Counter(
            "alarmd_rules_evaluations_total", "Samples evaluated by the rule engine.", registry=r
        )
        self.rule_duration = Histogram(
            "alarmd_rules_evaluation_duration_seconds",
            "Time to evaluate one sample or event against the rules.",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2),
            registry=r,
        )
        self.faults = Counter(
            "alarmd_faults_total",
            "Faults dispatched (root alarms with a work order), by class and tier.",
            ["alarm_class", "tier"],
            registry=r,
        )
        self._major_faults(r)
        self.repairs = Counter(
            "alarmd_faults_repaired_total",
            "Faults cleared, by tier and whether within their limit "
            "(1 h important, 3 h ordinary): repair timeliness (SPEC §7).",
            ["tier", "on_time"],
            registry=r,
        )
        self.circuit_outage = Gauge(
            "alarmd_circuit_outage",
            "1 while a transmission fault is open on the circuit, else 0; availability "
            "over a window is 1 - avg_over_time of it.",
            ["circuit", "customer", "tier"],
            registry=r,
        )
        self.alarms_open = Gauge(
            "alarmd_alarms_open",
            "Open faults by lifecycle stage (dispatched, acknowledged, escalated, observing).",
            ["lifecycle"],
            registry=r,
        )
        self.alarms_active = Gauge(
            "alarmd_alarms_active",
            "Alarms currently firing, by class, lead team and customer tier.",
            ["alarm_class", "lead_team", "tier"],
            registry=r,
        )
        self.alarm_transitions = Counter(
            "alarmd_alarms_transitions_total", "Alarms raised and cleared.", ["transition"], registry=r
        )
        self.workorders_sent = Counter(
            "alarmd_dispatch_messages_sent_total",
            "Messages acknowledged by Kafka, by type.",
            ["type"],
            registry=r,
        )
        self.kafka_errors = Counter(
            "alarmd_dispatch_kafka_errors_total",
            "Failed Kafka sends, by reason (each is retried).",
            ["reason"],
            registry=r,
        )
        self.kafka_latency = Histogram(
            "alarmd_dispatch_kafka_produce_seconds",
            "Time from send to broker acknowledgement.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.outbox_age = Gauge(
            "alarmd_dispatch_outbox_oldest_age_seconds",
            "Age of the oldest message waiting in the outbox.",
            registry=r,
        )
        self.outbox_depth = Gauge(
            "alarmd_dispatch_outbox_depth", "Messages waiting to be acknowledged by Kafka.", registry=r
        )
        self.store_errors = Counter(
            "alarmd_store_write_errors_total",
            "Failed alarm store and outbox writes (disk full, I/O error), by operation; each is retried.",
            ["operation"],
            registry=r,
        )
        self.store_writable = Gauge(
            "alarmd_store_writable",
            "1 while the alarm store accepts writes, 0 after a failed write until one succeeds again.",
            registry=r,
        )
        self.traps_received = Counter(
            "alarmd_traps_received_total",
            "Traps and INFORMs accepted, by SNMP version and PDU type.",
            ["version", "pdu"],
            registry=r,
        )
        self.traps_rejected = Counter(
            "alarmd_traps_rejected_total",
            "Traps refused, by reason (unknown_community, unknown_user, auth_failed, source_not_allowed, "
            "v3_decrypt_failed, not_a_notification, v1v2c_disabled).",
            ["reason"],
            registry=r,
        )
        self.traps_malformed = Counter(
            "alarmd_traps_malformed_total", "Datagrams on the trap port that are not valid SNMP.", registry=r
        )
        self.traps_dropped = Counter(
            "alarmd_traps_dropped_total",
            "Decoded traps dropped because the queue behind the listener was full.",
            registry=r,
        )
        self.traps_socket_drops = Gauge(
            "alarmd_traps_socket_drops",
            "Datagrams the kernel dropped on the trap socket, its receive buffer full (since it opened).",
            registry=r,
        )
        self.informs_acknowledged = Counter(
            "alarmd_traps_informs_acknowledged_total", "INFORMs answered with a Response PDU.", registry=r
        )
        self.upstream_received = Counter(
            "alarmd_upstream_messages_total",
            "Upstream alarm messages consumed, by outcome (accepted, dead_letter).",
            ["outcome"],
            registry=r,
        )
        self.events = Counter(
            "alarmd_events_total",
            "Events (traps, INFORMs, upstream alarms) passed to the rule stage, by source.",
            ["source"],
            registry=r,
        )
        self.probe_runs = Counter(
            "alarmd_probe_runs_total",
            "Dial tests run, by outcome (ok, unreachable, error).",
            ["outcome"],
            registry=r,
        )
        self._planned_outages(r)
        self._cluster(r)
        self._cluster_view(r)
        for kind in ("cpe_router", "optical_transceiver", "protocol_converter"):
            self.poll_requests.labels(kind)
            for reason in POLL_ERROR_REASONS:
                self.poll_errors.labels(kind, reason)
        for reason in KAFKA_ERROR_REASONS:
            self.kafka_errors.labels(reason)
        for transition in ("raised", "cleared"):
            self.alarm_transitions.labels(transition)

    def _reloads(self, r: CollectorRegistry) -> None:
        """Whether, when and how fast the configuration last applied."""
        self.reload_ok = Gauge(
            "alarmd_config_last_reload_successful",
            "1 if the last reload (SIGHUP, /-/reload) applied, else 0.",
            registry=r,
        )
        self.reload_ok.set(1)
        self.reload_time = Gauge(
            "alarmd_config_last_reload_success_timestamp_seconds", "When the config last applied.", registry=r
        )
        self.reload_duration = Gauge(
            "alarmd_config_last_reload_duration_seconds",
            "How long the last applied reload held the daemon (reading, validating, applying).",
            registry=r,
        )

    def _planned_outages(self, r: CollectorRegistry) -> None:
        """The metrics of planned outages (SPEC §9)."""
        self.maintenance_windows = Gauge(
            "alarmd_maintenance_windows",
            "Planned outages by state: scheduled (not yet started) and active (window open).",
            ["state"],
            registry=r,
        )
        self.maintenance_held = Gauge(
            "alarmd_maintenance_alarms_held",
            "Faults in a planned outage's scope, recorded without a work order while it lasts (plus grace).",
            registry=r,
        )
        self.maintenance_released = Counter(
            "alarmd_maintenance_alarms_released_total",
            "Faults that outlived their planned outage plus grace, so their work order went out then.",
            registry=r,
        )
        for state in ("scheduled", "active"):
            self.maintenance_windows.labels(state)

    def _major_faults(self, r: CollectorRegistry) -> None:
        """Major faults and repeat faults (SPEC §9)."""
        self.major_faults = Counter(
            "alarmd_major_faults_total",
            "Major faults opened (重大故障: circuits of one shared element down at once), by class.",
            ["alarm_class"],
            registry=r,
        )
        self.major_fault_seconds = Counter(
            "alarmd_major_fault_seconds_total",
            "Summed duration of cleared major faults, by class (SPEC §9 quality figure).",
            ["alarm_class"],
            registry=r,
        )
        self.major_faults_open = Gauge("alarmd_major_faults_open", "Major faults open now.", registry=r)
        self.major_fault_circuits = Gauge(
            "alarmd_major_fault_circuits",
            "Circuits folded under the open major faults.",
            registry=r,
        )
        self.repeat_faults = Counter(
            "alarmd_repeat_faults_total",
            "Faults raised again on the same circuit and alert within the repeat window after a "
            "clear (同一问题重复修理), by class and tier.",
            ["alarm_class", "tier"],
            registry=r,
        )
        for cls in ("transmission", "data_anomaly"):
            self.major_faults.labels(cls)
            self.major_fault_seconds.labels(cls)

    def _cluster(self, r: CollectorRegistry) -> None:
        """Distributed mode: what this instance owns, rebalances, the spool, and duplicates seen."""
        self.partitions_owned = Gauge(
            "alarmd_cluster_partitions_owned",
            "Partitions assigned to this instance, by group "
            "(collectors: inventory; correlators: events, elements).",
            ["group"],
            registry=r,
        )
        self.devices_owned = Gauge(
            "alarmd_cluster_devices_owned",
            "Devices this collector polls (its share of its location).",
            registry=r,
        )
        self.rebalances = Counter(
            "alarmd_cluster_rebalances_total",
            "Assignments taken after a group rebalance, by group.",
            ["group"],
            registry=r,
        )
        self.rebalance_requests = Counter(
            "alarmd_cluster_rebalance_requests_total",
            "Rebalances the group's leader asked for because a new assignment shares the traffic "
            "clearly better (cluster.rebalance_check), by group.",
            ["group"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "alarmd_cluster_spool_depth", "Messages waiting in the local spool for Kafka.", registry=r
        )
        self.spool_dropped = Counter(
            "alarmd_cluster_spool_dropped_total",
            "Messages dropped from the full spool (oldest first) while Kafka could not be reached.",
            registry=r,
        )
        self.events_published = Counter(
            "alarmd_cluster_events_published_total",
            "Messages the brokers acknowledged: one per device poll (all its samples), one per event.",
            registry=r,
        )
        self.events_consumed = Counter(
            "alarmd_cluster_events_consumed_total",
            "Samples and events read from the events topic (a device poll's message as its samples), "
            "by type and outcome (judged, duplicate).",
            ["type", "outcome"],
            registry=r,
        )
        self.messages_consumed = Counter(
            "alarmd_cluster_messages_consumed_total",
            "Messages read from the events topic (a device poll's message is one): against a collector's "
            "alarmd_cluster_events_published_total, how far behind the correlators are.",
            registry=r,
        )
        self.restore_seconds = Histogram(
            "alarmd_cluster_restore_seconds",
            "Time a correlator took to restore the state of newly assigned partitions from the changelog.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.restored_records = Counter(
            "alarmd_cluster_restored_records_total",
            "Faults (each with its clocks) restored from the changelog.",
            registry=r,
        )
        self.ids_rebuilt = Counter(
            "alarmd_cluster_event_ids_rebuilt_total",
            "Event ids read back from newly assigned partitions' recent input: their copies stay duplicates.",
            registry=r,
        )
        self.changelog_records = Counter(
            "alarmd_cluster_changelog_records_total",
            "Changelog records the brokers acknowledged, by kind (state, tombstone).",
            ["kind"],
            registry=r,
        )
        self.changelog_failures = Counter(
            "alarmd_cluster_changelog_failures_total",
            "Changelog writes that failed; the records stay pending and are sent with the next write.",
            registry=r,
        )
        self.transactions = Counter(
            "alarmd_cluster_transactions_total",
            "Per-partition Kafka transactions of a correlator (messages, changelog and offsets together), "
            "by group (events, elements) and outcome: committed, aborted, or fenced (a newer owner "
            "holds the partition).",
            ["group", "outcome"],
            registry=r,
        )
        self.join_stalls = Counter(
            "alarmd_cluster_join_stalls_total",
            "Group joins or rebalances that brought no assignment within cluster.join_timeout, by group "
            "(inventory, events, elements); each time the member left and joined again as a new one.",
            ["group"],
            registry=r,
        )
        self.takeover_seconds = Histogram(
            "alarmd_cluster_takeover_seconds",
            "Seconds from a partition's assignment to its first committed output (events, elements) "
            "or its devices' first completed poll (inventory).",
            ["group"],
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        for outcome in ("committed", "aborted", "fenced"):
            self.transactions.labels("events", outcome)
        for kind in ("state", "tombstone"):
            self.changelog_records.labels(kind)
        for group in ("inventory", "events", "elements"):
            self.partitions_owned.labels(group)
            self.rebalances.labels(group)
            self.join_stalls.labels(group)
        for kind in ("sample", "event"):
            for outcome in ("judged", "duplicate"):
                self.events_consumed.labels(kind, outcome)

    def _cluster_view(self, r: CollectorRegistry) -> None:
        """Distributed mode: the cluster view a correlator reads from the changelog, and feedback re-keyed."""
        self.view_faults = Gauge(
            "alarmd_cluster_view_faults",
            "Open faults of the whole cluster in this correlator's view (read from the changelog).",
            registry=r,
        )
        self.view_lag = Gauge(
            "alarmd_cluster_view_lag_seconds",
            "Seconds from the last changelog record's write to its arrival in the view (0 once caught up).",
            registry=r,
        )
        self.view_ready = Gauge(
            "alarmd_cluster_view_ready",
            "1 once the view has read the changelog to the end it had when reading began, else 0.",
            registry=r,
        )
        self.feedback_rekeyed = Counter(
            "alarmd_cluster_feedback_total",
            "Ticketing feedback a correlator read, by outcome: rekeyed (sent to its fault's partition "
            "on the events topic) or unknown (no such fault in the view in time: dead-lettered).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("rekeyed", "unknown"):
            self.feedback_rekeyed.labels(outcome)
        self.history_records = Counter(
            "alarmd_cluster_history_records_total",
            "Closed faults written to the history topic (written), or closed here but gone from the "
            "store before they could be (missing: their partition moved meanwhile).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("written", "missing"):
            self.history_records.labels(outcome)
        self.events_consumed.labels("feedback", "judged")
        self.events_consumed.labels("feedback", "duplicate")

    def forget(self, devices: Collection[str] = (), circuits: Collection[str] = ()) -> int:
        """Remove the series of devices and circuits that left the inventory; return how many went."""
        by_label: list[tuple[Counter | Gauge, tuple[str, ...], str, Collection[str]]] = [
            (self.poll_periods, ("device", "device_kind"), "device", devices),
            (self.poll_failed_periods, ("device", "device_kind"), "device", devices),
            (self.device_up, ("device", "device_kind"), "device", devices),
            (self.interface_utilisation, ("device", "interface", "circuit"), "device", devices),
            (self.interface_error_ratio, ("device", "interface", "circuit"), "device", devices),
            (self.interface_utilisation, ("device", "interface", "circuit"), "circuit", circuits),
            (self.interface_error_ratio, ("device", "interface", "circuit"), "circuit", circuits),
            (self.dial_test_loss, ("circuit", "target"), "circuit", circuits),
            (self.dial_test_rtt, ("circuit", "target"), "circuit", circuits),
            (self.circuit_outage, ("circuit", "customer", "tier"), "circuit", circuits),
        ]
        removed = 0
        for metric, names, label, gone in by_label:
            if not gone:
                continue
            series = {
                tuple(sample.labels[n] for n in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get(label) in gone
            }
            for values in series:
                metric.remove(*values)
            removed += len(series)
        return removed
