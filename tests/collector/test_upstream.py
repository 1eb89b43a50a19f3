"""The upstream alarm message: normalisation to ``Event``, refusal reasons, and the committed JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmd.collector.upstream import (
    MAX_MESSAGE_BYTES,
    UPSTREAM_REASONS,
    UpstreamAlarm,
    UpstreamError,
    parse_upstream,
    schema_json,
)
from alarmd.model import Event

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "upstream-alarm.schema.json"
AT = 1_714_528_800.25

FULL: dict[str, Any] = {
    "schema_version": 1,
    "source_system": "transmission_nms",
    "alarm_id": "OTN-2024-0001187",
    "event_type": "raise",
    "alarm_type": "LOS",
    "severity": "critical",
    "raised_at": "2024-05-01T10:00:00.000+08:00",
    "circuit": "CIR-0001",
    "device": "otn-ne-0231",
    "managed_object": "NE=0231,SHELF=1,SLOT=3,PORT=2",
    "interface": "1-3-2",
    "probable_cause": "lossOfSignal",
    "text": "E1 2 on board 3: loss of signal",
    "attributes": {"ems": "U2000", "board": "PQ1"},
}
MINIMAL: dict[str, Any] = {
    "schema_version": 1,
    "source_system": "temip",
    "alarm_id": "42",
    "event_type": "raise",
    "alarm_type": "LINK_DOWN",
    "severity": "major",
    "raised_at": "2024-05-01T02:00:00Z",
}


def encode(message: object) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode()


def reason_of(payload: bytes) -> str:
    with pytest.raises(UpstreamError) as info:
        parse_upstream(payload, AT)
    assert info.value.detail
    return info.value.reason


# --------------------------------------------------------------------------- valid messages


def test_full_message_becomes_an_event_with_every_label_and_attribute() -> None:
    event = parse_upstream(encode(FULL), AT)
    assert event == Event(
        source="upstream",
        kind="LOS",
        at=AT,
        labels={
            "source_system": "transmission_nms",
            "upstream_alarm_id": "OTN-2024-0001187",
            "event_type": "raise",
            "severity": "critical",
            "circuit": "CIR-0001",
            "device": "otn-ne-0231",
            "interface": "1-3-2",
        },
        attributes={
            "raised_at": "2024-05-01T02:00:00.000Z",
            "managed_object": "NE=0231,SHELF=1,SLOT=3,PORT=2",
            "probable_cause": "lossOfSignal",
            "text": "E1 2 on board 3: loss of signal",
            "attributes.ems": "U2000",
            "attributes.board": "PQ1",
        },
    )


def test_minimal_message_has_only_the_labels_it_carries() -> None:
    event = parse_upstream(encode(MINIMAL), AT)
    assert event.kind == "LINK_DOWN"
    assert event.at == AT
    assert dict(event.labels) == {
        "source_system": "temip",
        "upstream_alarm_id": "42",
        "event_type": "raise",
        "severity": "major",
    }
    assert dict(event.attributes) == {"raised_at": "2024-05-01T02:00:00.000Z"}


def test_empty_and_null_optional_fields_are_absent_labels() -> None:
    message = {**MINIMAL, "circuit": "", "device": None, "interface": "", "text": "", "probable_cause": None}
    event = parse_upstream(encode(message), AT)
    assert set(event.labels) == {"source_system", "upstream_alarm_id", "event_type", "severity"}
    assert set(event.attributes) == {"raised_at"}


def test_clear_carries_its_cleared_at_in_utc() -> None:
    message = {
        **FULL,
        "event_type": "clear",
        "severity": "cleared",
        "cleared_at": "2024-05-01T10:42:10.5+08:00",
    }
    event = parse_upstream(encode(message), AT)
    assert event.labels["event_type"] == "clear"
    assert event.labels["severity"] == "cleared"
    assert event.attributes["cleared_at"] == "2024-05-01T02:42:10.500Z"


def test_a_clear_may_repeat_the_raise_severity() -> None:
    event = parse_upstream(encode({**MINIMAL, "event_type": "clear"}), AT)
    assert (event.labels["event_type"], event.labels["severity"]) == ("clear", "major")


def test_unknown_alarm_types_are_kept_verbatim() -> None:
    assert parse_upstream(encode({**MINIMAL, "alarm_type": "BER_SD"}), AT).kind == "BER_SD"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_json"),
        (b"{", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b'{"a": NaN}', "not_json"),
        (b"{} trailing", "not_json"),
        (b"[" * 10_000, "not_json"),
        (b'"\\ud800"', "not_json"),
        (b"[]", "not_an_object"),
        (b"null", "not_an_object"),
        (b"1", "not_an_object"),
        (b'"alarm"', "not_an_object"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_undecodable_messages_are_refused_with_their_reason(payload: bytes, reason: str) -> None:
    assert reason_of(payload) == reason


@pytest.mark.parametrize("version", [0, 2, 99, -1])
def test_other_integer_versions_are_unsupported(version: int) -> None:
    assert reason_of(encode({**FULL, "schema_version": version})) == "unsupported_version"


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": "1"},
        {"schema_version": True},
        {"schema_version": 1.0},
        {"schema_version": None},
        {"source_system": "netcool"},
        {"event_type": "update"},
        {"severity": "indeterminate"},
        {"severity": "CRITICAL"},
        {"alarm_id": ""},
        {"alarm_id": 42},
        {"alarm_type": ""},
        {"raised_at": "2024-05-01T10:00:00"},
        {"raised_at": "yesterday"},
        {"raised_at": 1714528800},
        {"raised_at": "1969-12-31T23:59:59Z"},
        {"raised_at": "0001-01-01T00:00:00+01:00"},
        {"severity": "cleared"},
        {"cleared_at": "2024-05-01T10:42:10Z"},
        {"circuit": 1},
        {"circuit": "C" * 257},
        {"attributes": {"ems": 1}},
        {"attributes": {"": "x"}},
        {"attributes": ["ems"]},
        {"attributes": {f"k{i}": "v" for i in range(65)}},
        {"text": "x" * 4097},
        {"unexpected": "field"},
    ],
)
def test_schema_violations_are_refused_as_schema(change: dict[str, Any]) -> None:
    assert reason_of(encode({**FULL, **change})) == "schema"


@pytest.mark.parametrize("field", ["schema_version", "source_system", "alarm_id", "event_type", "raised_at"])
def test_missing_required_fields_are_named(field: str) -> None:
    message = {k: v for k, v in MINIMAL.items() if k != field}
    with pytest.raises(UpstreamError) as info:
        parse_upstream(encode(message), AT)
    assert info.value.reason == "schema"
    assert field in info.value.detail


def test_detail_names_the_field_and_not_the_payload() -> None:
    with pytest.raises(UpstreamError) as info:
        parse_upstream(encode({**FULL, "severity": "catastrophic", "text": "secret-customer-data"}), AT)
    assert info.value.detail.startswith("severity:")
    assert "secret-customer-data" not in info.value.detail
    assert str(info.value).startswith("schema: severity:")


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


def outcome(payload: bytes) -> Event | UpstreamError:
    try:
        return parse_upstream(payload, AT)
    except UpstreamError as exc:
        error = exc
    assert error.reason in UPSTREAM_REASONS
    return error


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_nothing_but_upstream_error(payload: bytes) -> None:
    outcome(payload)


@given(json_values)
def test_arbitrary_json_raises_nothing_but_upstream_error(value: object) -> None:
    result = outcome(encode(value))
    if not isinstance(value, dict):
        assert isinstance(result, UpstreamError) and result.reason == "not_an_object"


@given(st.sampled_from(sorted(FULL)), json_values)
def test_any_field_replaced_by_any_json_raises_nothing_but_upstream_error(field: str, value: object) -> None:
    outcome(encode({**FULL, field: value}))


severities = st.sampled_from(["critical", "major", "minor", "warning"])
names = st.text(min_size=1, max_size=40)
valid_messages = st.fixed_dictionaries(
    {
        "schema_version": st.just(1),
        "source_system": st.sampled_from(["temip", "ipnet", "transmission_nms", "other"]),
        "alarm_id": names,
        "event_type": st.just("raise"),
        "alarm_type": st.sampled_from(["LOS", "LOF", "AIS", "LINK_DOWN", "OPTICAL_POWER_LOW", "EQUIPMENT"])
        | names,
        "severity": severities,
        "raised_at": st.datetimes(
            min_value=datetime(1971, 1, 1),
            max_value=datetime(9998, 1, 1),
            timezones=st.timezones(),
        ).map(lambda d: d.isoformat()),
    },
    optional={
        "circuit": st.none() | st.text(max_size=40),
        "device": st.none() | st.text(max_size=40),
        "interface": st.none() | st.text(max_size=40),
        "managed_object": st.none() | st.text(max_size=80),
        "probable_cause": st.none() | st.text(max_size=40),
        "text": st.text(max_size=200),
        "attributes": st.dictionaries(names, st.text(max_size=40), max_size=8),
    },
)


@settings(max_examples=200)
@given(valid_messages)
def test_valid_messages_normalise_to_the_labels_they_carry(message: dict[str, Any]) -> None:
    event = parse_upstream(encode(message), AT)
    expected = {
        "source_system": message["source_system"],
        "upstream_alarm_id": message["alarm_id"],
        "event_type": "raise",
        "severity": message["severity"],
    }
    for name in ("circuit", "device", "interface"):
        if message.get(name):
            expected[name] = message[name]
    assert dict(event.labels) == expected
    assert (event.source, event.kind, event.at) == ("upstream", message["alarm_type"], AT)
    for key, value in message.get("attributes", {}).items():
        assert event.attributes[f"attributes.{key}"] == value
    assert event.attributes["raised_at"].endswith("Z")


# --------------------------------------------------------------------------- the committed schema


def test_committed_schema_matches_the_model() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == schema_json(), (
        f"{SCHEMA_FILE} is out of date with UpstreamAlarm; regenerate it with\n"
        "  .venv/bin/python -c 'from alarmd.collector.upstream import schema_json; "
        'print(schema_json(), end="")\' > schemas/upstream-alarm.schema.json'
    )


def test_schema_examples_are_accepted() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert len(schema["examples"]) >= 2
    for example in schema["examples"]:
        parse_upstream(encode(example), AT)


def test_schema_documents_every_field() -> None:
    schema = UpstreamAlarm.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(UpstreamAlarm.model_fields)
    for name, prop in schema["properties"].items():
        assert len(prop.get("description", "")) > 20, name
