"""Hypothesis on what alarmd consumes from Kafka: ticketing feedback and upstream alarms.

A consumed message is either used or refused with the module's rejection error
(``FeedbackRejectedError``, ``UpstreamError``), which sends it to the dead-letter topic; any
other exception stops the consumer on that message, so none may escape.  The upstream tests
here add what ``tests/collector/test_upstream.py`` does not: damaged valid messages, extreme
timestamps, deep and odd JSON; an accepted upstream alarm must also be sendable (UTF-8).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.store import Store
from alarmd.announce import Announcer, FeedbackRejectedError
from alarmd.collector.upstream import UPSTREAM_REASONS, UpstreamAlarm, UpstreamError, parse_upstream
from alarmd.config import ClocksConfig, Config, KafkaTopics
from alarmd.dispatch.outbox import Dispatcher, Outbox
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, TicketFeedback, fingerprint
from alarmd.testing import FakeClock, FakeSink
from tests.fuzz.summary import Summary, fuzz_settings

AT = 1_800_000_000.0
CONFIG = Config.model_validate(
    {
        "customers": [{"id": "GOLD", "name": "Harbour Logistics", "tier": "gold"}],
        "devices": [{"name": "r1", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}}],
        "circuits": [{"id": "CIR-G", "customer": "GOLD", "path": [{"device": "r1"}]}],
    }
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
extreme_times = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+23:59",
            "0001-01-01T00:00:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59.999999Z",
            "1969-12-31T23:59:59Z",
            "2024-02-30T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01",
            "1714528800",
            "2024-05-01T10:00:00.000+08:00",
            "",
            "now",
        ]
    ),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _damage(payload: bytes, data: st.DataObject) -> bytes:
    """A valid message's bytes truncated, a byte changed, or a slice repeated."""
    how = data.draw(st.sampled_from(["truncate", "byte", "repeat"]), label="damage")
    pos = data.draw(st.integers(0, len(payload) - 1), label="at")
    if how == "truncate":
        return payload[:pos]
    if how == "byte":
        return payload[:pos] + bytes([data.draw(st.integers(0, 255), label="byte")]) + payload[pos + 1 :]
    return payload[:pos] + payload[pos : pos + data.draw(st.integers(1, 20), label="span")] + payload[pos:]


# --------------------------------------------------------------------------- ticketing feedback


class Ticketing:
    """The alarm stage and announcer on a fake clock, with one dispatched alarm to give feedback on."""

    def __init__(self, path: Path) -> None:
        self.clock = FakeClock(start=AT)
        self.store = Store(path / "alarmd.sqlite")
        inventory = Inventory(CONFIG)
        router = Router()
        self.book = AlarmBook(inventory, router.lead_team, Metrics(), Correlator(inventory))
        self.announcer = Announcer(
            KafkaTopics(),
            store=self.store,
            dispatcher=Dispatcher(Outbox(self.store.connection), FakeSink(), Metrics()),
            router=router,
            clocks=ClockPolicy(ClocksConfig()),
            clock=self.clock,
        )
        labels = {"alertname": "LinkDown", "device": "r1", "alarm_class": "transmission", "severity": "major"}
        transition = AlarmTransition(
            kind="firing",
            rule="LinkDown",
            labels=labels,
            annotations={"summary": "down"},
            value=1.0,
            threshold=1.0,
            at=AT,
            active_since=AT,
            fingerprint=fingerprint(labels),
        )
        for change in self.book.apply(transition):
            self.announcer.tell(change)
        (alarm,) = self.book.active.values()
        self.work_order_id = f"WO-{alarm.alarm_id}"

    def outcome(self, payload: bytes) -> FeedbackRejectedError | None:
        """Apply the feedback; None if used, the rejection if refused.  Nothing else may escape."""
        try:
            self.announcer.feedback(payload, self.book)
        except FeedbackRejectedError as exc:
            error = exc
        else:
            return None
        assert error.reason == "schema"
        assert error.detail
        return error


@pytest.fixture(scope="module")
def ticketing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ticketing]:
    world = Ticketing(tmp_path_factory.mktemp("ticketing"))
    yield world
    world.store.close()


def feedback_messages(work_order_id: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "type": st.sampled_from(["acknowledged", "in_progress", "resolved", "closed"]),
            "work_order_id": st.just(work_order_id) | st.from_regex(r"WO-[0-9a-f]{20}", fullmatch=True),
            "ticket_id": st.text(min_size=1, max_size=40),
            "at": extreme_times,
        },
        optional={
            "schema_version": st.just(1) | json_values,
            "by": st.text(max_size=40),
            "note": st.text(max_size=200),
        },
    )


@fuzz_settings(800)
@given(data=st.data())
def test_ticket_feedback_is_used_or_refused_with_feedback_rejected_error(
    ticketing: Ticketing, fuzz_summary: Summary, data: st.DataObject
) -> None:
    how = data.draw(st.sampled_from(["bytes", "json", "field", "valid", "damaged"]), label="how")
    fuzz_summary.example("announce.Announcer.feedback", how)
    if how == "bytes":
        payload = data.draw(st.binary(max_size=600), label="payload")
    elif how == "json":
        payload = json.dumps(data.draw(json_values, label="value")).encode()
    else:
        message = data.draw(feedback_messages(ticketing.work_order_id), label="message")
        if how == "field":
            key = data.draw(st.sampled_from([*TicketFeedback.model_fields, "extra"]), label="field")
            message[key] = data.draw(json_values, label="value")
        payload = json.dumps(message, ensure_ascii=False).encode()
        if how == "damaged":
            payload = _damage(payload, data)
    try:
        if ticketing.outcome(payload) is not None:
            fuzz_summary.refused("announce.Announcer.feedback")
    except BaseException:
        fuzz_summary.failed("announce.Announcer.feedback")
        raise


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"])
def test_feedback_at_a_time_outside_any_timestamp_is_refused_not_a_crash(
    ticketing: Ticketing, at: str
) -> None:
    payload = json.dumps(
        {"type": "acknowledged", "work_order_id": ticketing.work_order_id, "ticket_id": "T-1", "at": at}
    ).encode()
    error = ticketing.outcome(payload)
    assert error is not None
    assert error.detail == "at: Value error, timestamp is out of range"


# --------------------------------------------------------------------------- upstream alarms

_EXAMPLES: list[dict[str, Any]] = UpstreamAlarm.model_config["json_schema_extra"]["examples"]  # type: ignore[index,call-overload]
#: The schema's own examples, raise then clear, as one clear that carries every optional field.
VALID_UPSTREAM: dict[str, Any] = {**_EXAMPLES[0], **_EXAMPLES[1]}


def upstream_outcome(payload: bytes) -> UpstreamError | None:
    """Parse; None if used, the rejection if refused.  An accepted alarm must be sendable as UTF-8."""
    try:
        event = parse_upstream(payload, AT)
    except UpstreamError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.reason in UPSTREAM_REASONS
        assert error.detail
        return error
    for text in (event.kind, *event.labels.keys(), *event.labels.values(), *event.attributes.values()):
        text.encode("utf-8")
    return None


@fuzz_settings(800)
@given(data=st.data())
def test_upstream_alarms_are_used_or_refused_with_upstream_error(
    fuzz_summary: Summary, data: st.DataObject
) -> None:
    message = dict(VALID_UPSTREAM)
    how = data.draw(st.sampled_from(["times", "field", "damaged", "deep", "text"]), label="how")
    fuzz_summary.example("upstream.parse_upstream", how)
    if how == "times":
        for key in ("raised_at", "cleared_at"):
            message[key] = data.draw(extreme_times, label=key)
        payload = json.dumps(message).encode()
    elif how == "field":
        key = data.draw(st.sampled_from(sorted(VALID_UPSTREAM)), label="field")
        message[key] = data.draw(json_values | extreme_times, label="value")
        payload = json.dumps(message, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode()
    elif how == "damaged":
        payload = _damage(json.dumps(message, ensure_ascii=False).encode(), data)
    elif how == "deep":
        depth = data.draw(st.integers(1, 5000), label="depth")
        payload = json.dumps(message).encode()[:-1] + b', "attributes": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        text = data.draw(
            st.text(st.characters(codec="utf-8"), max_size=80)
            | st.sampled_from(["\\ud800", "\\udfff\\ud800", "\x00"]),
            label="text",
        )
        key = data.draw(st.sampled_from(["alarm_id", "circuit", "text", "alarm_type"]), label="field")
        payload = (
            json.dumps(message)
            .encode()
            .replace(f'"{key}": "'.encode(), f'"{key}": "{text.replace(chr(34), "")}'.encode(), 1)
        )
    try:
        if upstream_outcome(payload) is not None:
            fuzz_summary.refused("upstream.parse_upstream")
    except BaseException:
        fuzz_summary.failed("upstream.parse_upstream")
        raise


@pytest.mark.parametrize("field", ["raised_at", "cleared_at"])
def test_an_upstream_time_that_rounds_past_year_9999_is_refused_not_a_crash(field: str) -> None:
    payload = json.dumps({**VALID_UPSTREAM, field: "9999-12-31T23:59:59.999999Z"}).encode()
    error = upstream_outcome(payload)
    assert error is not None
    assert (error.reason, error.detail) == ("schema", f"{field}: Value error, timestamp is out of range")


def test_the_valid_upstream_alarm_is_used() -> None:
    assert upstream_outcome(json.dumps(VALID_UPSTREAM).encode()) is None


def test_feedback_for_the_dispatched_work_order_is_used(ticketing: Ticketing) -> None:
    message = {
        "type": "in_progress",
        "work_order_id": ticketing.work_order_id,
        "ticket_id": "T-1",
        "at": "2027-01-01T00:00:00Z",
    }
    assert ticketing.outcome(json.dumps(message).encode()) is None
