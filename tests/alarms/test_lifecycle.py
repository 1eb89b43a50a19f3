from __future__ import annotations

from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook, Change
from alarmd.config import Config
from alarmd.dispatch.routing import Router, lead_team
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmClass, AlarmTransition, Team, WorkOrder, fingerprint

CONFIG = Config.model_validate(
    {
        "customers": [
            {"id": "C1", "name": "Harbour Logistics", "tier": "gold"},
            {"id": "C2", "name": "Riverside School", "tier": "ordinary"},
        ],
        "devices": [
            {
                "name": "cpe-router-01",
                "kind": "cpe_router",
                "address": "127.0.0.1",
                "snmp": {"community": "c"},
            },
            {
                "name": "optical-tx-01",
                "kind": "optical_transceiver",
                "address": "127.0.0.2",
                "snmp": {"community": "c"},
            },
            {
                "name": "cpe-router-02",
                "kind": "cpe_router",
                "address": "127.0.0.3",
                "snmp": {"community": "c"},
            },
        ],
        "circuits": [
            {
                "id": "CIR-0001",
                "customer": "C1",
                "path": [
                    {"device": "cpe-router-01", "interface": "GigabitEthernet0/0/1"},
                    {"device": "optical-tx-01"},
                ],
            },
            {"id": "CIR-0002", "customer": "C2", "path": [{"device": "cpe-router-02"}]},
        ],
    }
)
WAN = {
    "alertname": "BandwidthOccupancyHigh",
    "device": "cpe-router-01",
    "device_kind": "cpe_router",
    "interface": "GigabitEthernet0/0/1",
    "if_index": "2",
    "alarm_class": "data_anomaly",
    "severity": "major",
    "unit": "percent",
}


def book(metrics: Metrics | None = None, **kwargs: float) -> AlarmBook:
    inventory = Inventory(CONFIG)
    return AlarmBook(inventory, Router().lead_team, metrics or Metrics(), Correlator(inventory), **kwargs)  # type: ignore[arg-type]


def fire(labels: dict[str, str], at: float, value: float = 91.5, kind: str = "firing") -> AlarmTransition:
    return AlarmTransition(
        kind=kind,
        rule=labels["alertname"],
        labels=labels,  # type: ignore[arg-type]
        annotations={"summary": "s"},
        value=value,
        threshold=80,
        at=at,
        active_since=at,
        fingerprint=fingerprint(labels),
    )


def clear(labels: dict[str, str], at: float) -> AlarmTransition:
    return fire(labels, at, 10, "resolved")


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.alarm.rule) for c in changes]


LOS = {
    "alertname": "LineLOS",
    "device": "optical-tx-01",
    "interface": "fiber-1",
    "alarm_class": "transmission",
    "circuit": "CIR-0001",
    "severity": "critical",
}


def test_lead_team_follows_the_alarm_class() -> None:
    assert lead_team(AlarmClass.TRANSMISSION) is Team.TRANSPORT_NETWORK
    assert lead_team(AlarmClass.DATA_ANOMALY) is Team.SERVICE_SUPPORT


def test_raised_alarm_carries_circuit_customer_tier_and_lead_team() -> None:
    metrics = Metrics()
    changes = book(metrics).apply(fire(WAN, 30))
    assert kinds(changes) == [("raised", "BandwidthOccupancyHigh")]
    alarm = changes[0].alarm
    order = WorkOrder.from_alarm(alarm, sent_at=31)
    assert (order.type, order.circuit, order.customer, order.tier, order.important_customer) == (
        "work_order",
        "CIR-0001",
        "C1",
        "gold",
        True,
    )
    assert (order.alarm_class, order.lead_team, order.device, order.interface) == (
        "data_anomaly",
        "service_support",
        "cpe-router-01",
        "GigabitEthernet0/0/1",
    )
    assert order.work_order_id == f"WO-{alarm.alarm_id}"
    assert (
        metrics.registry.get_sample_value(
            "alarmd_alarms_active",
            {"alarm_class": "data_anomaly", "lead_team": "service_support", "tier": "gold"},
        )
        == 1
    )


def test_clear_keeps_the_work_order_id_and_repeats_are_counted_not_raised() -> None:
    b = book()
    raised = b.apply(fire(WAN, 30))[0].alarm
    assert b.apply(fire(WAN, 40)) == []
    assert b.apply(fire(WAN, 45, kind="repeat")) == []
    assert raised.occurrences == 2
    cleared = b.apply(clear(WAN, 50))
    assert kinds(cleared) == [("cleared", "BandwidthOccupancyHigh")]
    order = WorkOrder.from_alarm(cleared[0].alarm, sent_at=51)
    assert (order.type, order.work_order_id) == ("work_order_clear", f"WO-{raised.alarm_id}")


def test_a_transmission_alarm_folds_the_circuits_open_80_percent_alarm_under_it_and_nothing_else() -> None:
    metrics = Metrics()
    b = book(metrics)
    wan = b.apply(fire(WAN, 10))[0].alarm
    other = {**WAN, "device": "cpe-router-02", "interface": "Gi0/0/0"}
    unrelated = b.apply(fire(other, 10))[0].alarm
    changes = b.apply(fire(LOS, 20))
    assert kinds(changes) == [("raised", "LineLOS"), ("reparented", "BandwidthOccupancyHigh")]
    los = changes[0].alarm
    assert (wan.parent_id, wan.lead_team, changes[1].previous_lead_team) == (
        los.alarm_id,
        Team.TRANSPORT_NETWORK,
        Team.SERVICE_SUPPORT,
    )
    assert (unrelated.parent_id, unrelated.lead_team) == (None, Team.SERVICE_SUPPORT)
    assert (
        metrics.registry.get_sample_value(
            "alarmd_alarms_active",
            {"alarm_class": "data_anomaly", "lead_team": "transport_network", "tier": "gold"},
        )
        == 1
    )

    # a data anomaly raised while the root cause fires is a child from the start: no work order of its own
    loss = {**WAN, "alertname": "PacketLossHigh"}
    assert b.apply(fire(loss, 30)) == []
    assert b.active[fingerprint(loss)].parent_id == los.alarm_id

    # when the root cause clears, its children stand on their own again
    released = b.apply(clear(LOS, 40))
    assert kinds(released) == [
        ("cleared", "LineLOS"),
        ("released", "BandwidthOccupancyHigh"),
        ("released", "PacketLossHigh"),
    ]
    assert (wan.parent_id, wan.lead_team) == (None, Team.SERVICE_SUPPORT)


def test_an_unreachable_upstream_device_suppresses_the_one_behind_it() -> None:
    b = book()
    otx = {"alertname": "DeviceUnreachable", "device": "optical-tx-01", "alarm_class": "transmission"}
    cpe = {"alertname": "DeviceUnreachable", "device": "cpe-router-01", "alarm_class": "data_anomaly"}
    root = b.apply(fire(otx, 10))[0].alarm
    assert b.apply(fire(cpe, 11)) == []
    assert b.active[fingerprint(cpe)].parent_id == root.alarm_id
    # the other way round: the device behind does not explain the one upstream
    b2 = book()
    b2.apply(fire(cpe, 10))
    assert kinds(b2.apply(fire(otx, 11))) == [
        ("raised", "DeviceUnreachable"),
        ("reparented", "DeviceUnreachable"),
    ]


def test_inhibit_rule_folds_a_fluctuation_warning_under_the_threshold_alarm() -> None:
    b = book()
    busy = b.apply(fire(WAN, 10))[0].alarm
    wobble = {**WAN, "alertname": "FluctuationWarning", "severity": "warning"}
    assert b.apply(fire(wobble, 11)) == []
    assert b.active[fingerprint(wobble)].parent_id == busy.alarm_id


def test_flapping_is_one_alarm_with_a_count_not_many() -> None:
    b = book(flap_window=600, flap_threshold=4)
    first = b.apply(fire(WAN, 0))
    seen = kinds(first)
    for t in range(10, 100, 20):
        seen += kinds(b.apply(clear(WAN, t)))
        seen += kinds(b.apply(fire(WAN, t + 10)))
    alarm = first[0].alarm
    assert seen[:4] == [
        ("raised", "BandwidthOccupancyHigh"),
        ("cleared", "BandwidthOccupancyHigh"),
        ("reopened", "BandwidthOccupancyHigh"),
        ("cleared", "BandwidthOccupancyHigh"),
    ]
    assert seen.count(("flapping", "BandwidthOccupancyHigh")) == 1
    assert alarm.flapping and alarm.occurrences == 6
    assert b.apply(clear(WAN, 200)) == [], "a flapping alarm's clear waits for quiet"
    assert kinds(b.tick(500)) == []
    assert kinds(b.tick(800)) == [("cleared", "BandwidthOccupancyHigh")]


def test_alarm_on_an_interface_of_no_circuit_has_no_customer() -> None:
    alarm = book().apply(fire({**WAN, "interface": "GigabitEthernet0/0/0"}, 10))[0].alarm
    assert alarm.circuit is None and alarm.tier is None
