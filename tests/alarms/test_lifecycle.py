from __future__ import annotations

from alarmd.alarms.lifecycle import AlarmBook
from alarmd.config import Config
from alarmd.dispatch.routing import lead_team
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmClass, AlarmTransition, Team, WorkOrder

CONFIG = Config.model_validate(
    {
        "customers": [{"id": "C1", "name": "Harbour Logistics", "tier": "gold"}],
        "devices": [
            {
                "name": "cpe-router-01",
                "kind": "cpe_router",
                "address": "127.0.0.1",
                "snmp": {"community": "c"},
            }
        ],
        "circuits": [
            {
                "id": "CIR-0001",
                "customer": "C1",
                "path": [{"device": "cpe-router-01", "interface": "GigabitEthernet0/0/1"}],
            }
        ],
    }
)
LABELS = {
    "alertname": "BandwidthOccupancyHigh",
    "device": "cpe-router-01",
    "device_kind": "cpe_router",
    "interface": "GigabitEthernet0/0/1",
    "if_index": "2",
    "alarm_class": "data_anomaly",
    "severity": "major",
    "unit": "percent",
}


def transition(kind: str, value: float, at: float, labels: dict[str, str] | None = None) -> AlarmTransition:
    return AlarmTransition(
        kind=kind,
        rule="BandwidthOccupancyHigh",
        labels=labels or LABELS,  # type: ignore[arg-type]
        annotations={"summary": "busy"},
        value=value,
        threshold=80,
        at=at,
        active_since=0,
    )


def test_lead_team_follows_the_alarm_class() -> None:
    assert lead_team(AlarmClass.TRANSMISSION) is Team.TRANSPORT_NETWORK
    assert lead_team(AlarmClass.DATA_ANOMALY) is Team.SERVICE_SUPPORT


def test_raised_alarm_carries_circuit_customer_tier_and_lead_team() -> None:
    metrics = Metrics()
    book = AlarmBook(Inventory(CONFIG), lead_team, metrics)
    alarm = book.apply(transition("firing", 91.5, 30))
    assert alarm is not None
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
    assert (order.observed_value, order.threshold, order.unit) == (91.5, 80, "percent")
    assert order.work_order_id == f"WO-{alarm.alarm_id}"
    assert (
        metrics.registry.get_sample_value(
            "alarmd_alarms_active",
            {"alarm_class": "data_anomaly", "lead_team": "service_support", "tier": "gold"},
        )
        == 1
    )


def test_clear_keeps_the_work_order_id_and_a_repeat_firing_is_ignored() -> None:
    book = AlarmBook(Inventory(CONFIG), lead_team, Metrics())
    raised = book.apply(transition("firing", 91.5, 30))
    assert book.apply(transition("firing", 95, 40)) is None
    cleared = book.apply(transition("resolved", 12, 50))
    assert raised is not None and cleared is not None
    order = WorkOrder.from_alarm(cleared, sent_at=51)
    assert order.type == "work_order_clear"
    assert order.work_order_id == f"WO-{raised.alarm_id}"
    assert order.cleared_at is not None and order.observed_value == 12
    assert book.apply(transition("resolved", 10, 60)) is None


def test_alarm_on_an_interface_of_no_circuit_has_no_customer() -> None:
    book = AlarmBook(Inventory(CONFIG), lead_team, Metrics())
    alarm = book.apply(transition("firing", 99, 10, {**LABELS, "interface": "GigabitEthernet0/0/0"}))
    assert alarm is not None and alarm.circuit is None and alarm.tier is None
