"""Kafka over TLS and SASL (SCRAM) against a real broker whose SCRAM user the test creates.

The broker (``kafka_local.start_secure``) has a SASL_SSL listener (SCRAM-SHA-256/512) and an
SSL listener that requires a client certificate, both with a CA made at its start.  The
user is created here through the admin API.  Every Kafka client alarmd builds (the
work-order producer, the upstream consumer and its dead-letter producer) connects with
``kafka.security``; a wrong password or an untrusted CA fails with an error that names
the servers and the reason, and no password shows in errors or logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer

import kafka_local  # tools/, on sys.path via conftest
from alarmd.config import ConfigError, ConsumedTopic, KafkaConfig, Strict, read_yaml, validate
from alarmd.dispatch.kafka import KafkaSink, KafkaSource, client_options
from alarmd.dispatch.outbox import SinkError
from alarmd.metrics import Metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0
USER = "alarmd-noc"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.SecureBroker]:
    """A local broker with SASL_SSL and SSL listeners, for this module."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; the TLS/SASL broker is local only")
    secure = kafka_local.start_secure(tmp_path_factory.mktemp("kafka-secure"), with_parent=True)
    try:
        yield secure
    finally:
        secure.stop()


@pytest.fixture(scope="module")
def password(broker: kafka_local.SecureBroker) -> str:
    """The password of the SCRAM user this module creates on the broker (both mechanisms)."""
    secret = f"scram-{secrets.token_urlsafe(18)}"
    broker.add_scram_user(USER, secret)
    return secret


def sasl_config(
    broker: kafka_local.SecureBroker,
    password: str,
    *,
    mechanism: str = "SCRAM-SHA-512",
    ca_file: Path | None = None,
    user: str = USER,
) -> KafkaConfig:
    return KafkaConfig.model_validate(
        {
            "bootstrap_servers": broker.sasl_ssl,
            "client_id": f"test-{uuid.uuid4().hex[:6]}",
            "request_timeout": "20s",
            "retry_backoff": "200ms",
            "security": {
                "protocol": "SASL_SSL",
                "tls": {"ca_file": str(ca_file or broker.ca_file)},
                "sasl": {"mechanism": mechanism, "username": user, "password": password},
            },
        }
    )


def ssl_config(broker: kafka_local.SecureBroker, *, client_cert: bool = True) -> KafkaConfig:
    tls: dict[str, Any] = {"ca_file": str(broker.ca_file)}
    if client_cert:
        tls |= {
            "cert_file": str(broker.client_cert),
            "key_file": str(broker.client_key),
            "key_password": broker.client_key_password,
        }
    return KafkaConfig.model_validate(
        {
            "bootstrap_servers": broker.ssl,
            "request_timeout": "20s",
            "retry_backoff": "200ms",
            "security": {"protocol": "SSL", "tls": tls},
        }
    )


def topic_config(name: str) -> ConsumedTopic:
    return ConsumedTopic(enabled=True, topic=name, group_id=f"{name}-group", dead_letter_topic=f"{name}.dlq")


async def read_back(config: KafkaConfig, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic``, read by a consumer that connects as ``config`` says."""
    consumer = AIOKafkaConsumer(topic, **client_options(config), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + WAIT
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{len(found)} of {count} records on {topic} within {WAIT:.0f}s"
    return found


def work_order(circuit: str) -> bytes:
    return json.dumps(
        {"kind": "work_order", "alert": "BandwidthOccupancyHigh", "circuit": circuit, "lead_team": "x"}
    ).encode()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_work_order_goes_out_and_is_read_back_over_sasl_ssl(
    broker: kafka_local.SecureBroker, password: str, mechanism: str
) -> None:
    config = sasl_config(broker, password, mechanism=mechanism)
    topic = f"alarmd.workorders.{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(config)
    try:
        await sink.send(topic, b"CIR-0001", work_order("CIR-0001"), [("alarmd-type", b"work_order")])
    finally:
        await sink.stop()
    (record,) = await read_back(config, topic, 1)
    assert record.key == b"CIR-0001"
    assert json.loads(record.value)["circuit"] == "CIR-0001"
    assert tuple(record.headers) == (("alarmd-type", b"work_order"),)


async def test_the_upstream_consumer_and_its_dead_letter_producer_use_sasl_ssl(
    broker: kafka_local.SecureBroker, password: str
) -> None:
    config = sasl_config(broker, password)
    upstream = topic_config(f"alarmd.upstream.{uuid.uuid4().hex[:8]}")
    sink = KafkaSink(config)
    try:
        await sink.send(upstream.topic, b"CIR-0001", b'{"ok": 1}')
        await sink.send(upstream.topic, b"CIR-0001", b"{not json")
    finally:
        await sink.stop()

    accepted: list[bytes] = []

    async def handle(payload: bytes, key: bytes | None) -> None:
        json.loads(payload)
        accepted.append(payload)

    def rejection_of(exc: Exception) -> tuple[str, str] | None:
        return ("invalid_json", str(exc)) if isinstance(exc, ValueError) else None

    source = KafkaSource(config, upstream, handle, rejection_of, Metrics(), poll_interval=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        dead = await read_back(config, upstream.dead_letter_topic, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
    assert accepted == [b'{"ok": 1}']
    assert dead[0].value == b"{not json"
    assert dict(dead[0].headers)["alarmd-reason"] == b"invalid_json"


async def test_mutual_tls_with_an_encrypted_client_key(broker: kafka_local.SecureBroker) -> None:
    config = ssl_config(broker)
    topic = f"alarmd.workorders.{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(config)
    try:
        await sink.send(topic, b"CIR-0002", work_order("CIR-0002"))
    finally:
        await sink.stop()
    (record,) = await read_back(config, topic, 1)
    assert record.key == b"CIR-0002"


class Captured:
    """Everything alarmd (structlog) and aiokafka (stdlib logging) logged, as one text."""

    def __init__(self, logs: list[Any], caplog: pytest.LogCaptureFixture) -> None:
        self.logs, self.caplog = logs, caplog

    def text(self) -> str:
        return "\n".join([*map(repr, self.logs), *(r.getMessage() for r in self.caplog.records)])


async def start_failure(config: KafkaConfig, caplog: pytest.LogCaptureFixture) -> tuple[SinkError, str]:
    """Start a sink that must fail; the error and every log line written meanwhile."""
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    with structlog.testing.capture_logs() as logs:
        sink = KafkaSink(config)
        try:
            with pytest.raises(SinkError) as failed:
                await sink.start()
        finally:
            await sink.stop()
    return failed.value, Captured(logs, caplog).text()


async def test_a_wrong_password_says_sasl_authentication_failed_and_never_shows_a_password(
    broker: kafka_local.SecureBroker, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    error, logged = await start_failure(sasl_config(broker, wrong, mechanism="SCRAM-SHA-256"), caplog)
    assert error.reason == "rejected"
    assert broker.sasl_ssl in error.detail
    assert f"SASL authentication failed for user '{USER}' (SCRAM-SHA-256)" in error.detail, error.detail
    for text in (str(error), repr(error), logged):
        assert wrong not in text
        assert password not in text


async def test_an_unknown_user_is_an_authentication_failure_too(
    broker: kafka_local.SecureBroker, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    error, logged = await start_failure(sasl_config(broker, password, user="nobody"), caplog)
    assert "SASL authentication failed for user 'nobody' (SCRAM-SHA-512)" in error.detail, error.detail
    assert password not in f"{error} {logged}"


async def test_an_untrusted_broker_certificate_says_tls_handshake_failed(
    broker: kafka_local.SecureBroker, password: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_ca, _ = kafka_local.make_ca(tmp_path, "other", "some other CA")
    error, logged = await start_failure(sasl_config(broker, password, ca_file=other_ca), caplog)
    assert error.reason == "rejected"
    assert broker.sasl_ssl in error.detail
    assert "TLS handshake failed: certificate verify failed" in error.detail, error.detail
    assert password not in f"{error} {logged}"


async def test_a_listener_that_wants_a_client_certificate_says_so(
    broker: kafka_local.SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    error, _ = await start_failure(ssl_config(broker, client_cert=False), caplog)
    assert broker.ssl in error.detail
    assert "client certificate" in error.detail, error.detail


async def test_the_upstream_consumer_logs_why_it_cannot_connect(
    broker: kafka_local.SecureBroker, password: str
) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    config = sasl_config(broker, wrong)

    async def handle(payload: bytes, key: bytes | None) -> None:
        raise AssertionError("nothing is consumed without authentication")

    source = KafkaSource(
        config, topic_config(f"alarmd.upstream.{uuid.uuid4().hex[:8]}"), handle, lambda _: None, Metrics()
    )
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(source.run(stop))
        try:
            async with asyncio.timeout(WAIT):
                while not any(e["event"] == "upstream_kafka_unavailable" for e in logs):
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT)
    unavailable = next(e for e in logs if e["event"] == "upstream_kafka_unavailable")
    assert f"SASL authentication failed for user '{USER}'" in unavailable["error"], unavailable
    assert wrong not in repr(logs)


# --------------------------------------------------------------------------- the config


class KafkaConfigFile(Strict):
    """Just the ``kafka`` section of an ``alarmd.yml``."""

    kafka: KafkaConfig


def kafka_yaml(tmp_path: Path, security: str) -> Path:
    path = tmp_path / "alarmd.yml"
    path.write_text(f"kafka:\n  bootstrap_servers: 127.0.0.1:9093\n  security:\n{security}")
    return path


@pytest.mark.parametrize(
    ("security", "line", "message"),
    [
        ("    protocol: SASL_SSL\n", 3, "kafka.security: protocol SASL_SSL needs sasl"),
        (
            "    protocol: SSL\n    sasl: {username: a, password: p}\n",
            3,
            "kafka.security: sasl is set but protocol is SSL",
        ),
        (
            "    protocol: SASL_PLAINTEXT\n    sasl: {mechanism: PLAIN, username: a, password: p}\n",
            3,
            "PLAIN over SASL_PLAINTEXT would send the password in clear",
        ),
        (
            "    protocol: PLAINTEXT\n    tls: {check_hostname: false}\n",
            3,
            "kafka.security: tls is set but protocol is PLAINTEXT",
        ),
        (
            "    protocol: SSL\n    tls:\n      ca_file: ca.pem\n",
            6,
            "kafka.security.tls.ca_file: 'ca.pem' must be an absolute path",
        ),
        (
            "    protocol: SSL\n    tls:\n      ca_file: /nonexistent/ca.pem\n",
            6,
            "/nonexistent/ca.pem: no such file",
        ),
        (
            "    protocol: SASL_SSL\n    sasl: {mechanism: SCRAM-SHA-1, username: a, password: p}\n",
            5,
            "kafka.security.sasl.mechanism: Input should be 'SCRAM-SHA-256', 'SCRAM-SHA-512' or 'PLAIN'",
        ),
    ],
    ids=[
        "sasl-missing",
        "sasl-without-sasl-protocol",
        "plain-in-clear",
        "tls-without-tls",
        "relative-file",
        "missing-file",
        "unknown-mechanism",
    ],
)
def test_security_settings_that_do_not_fit_are_errors_with_file_and_line(
    tmp_path: Path, security: str, line: int, message: str
) -> None:
    path = kafka_yaml(tmp_path, security)
    with pytest.raises(ConfigError) as failed:
        validate(read_yaml(path), KafkaConfigFile)
    assert f"{path}:{line}: " in str(failed.value), str(failed.value)
    assert message in str(failed.value), str(failed.value)


def test_a_ca_file_without_a_certificate_and_a_key_that_does_not_load_are_errors(tmp_path: Path) -> None:
    ca, ca_key = kafka_local.make_ca(tmp_path, "ca", "test CA")
    cert, key = kafka_local.issue(tmp_path, ca, ca_key, "client", server=False, password="right-one")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    path = kafka_yaml(tmp_path, f"    protocol: SSL\n    tls: {{ca_file: {not_pem}}}\n")
    with pytest.raises(ConfigError, match="holds no PEM CA certificate"):
        validate(read_yaml(path), KafkaConfigFile)
    tls = f"{{ca_file: {ca}, cert_file: {cert}, key_file: {key}, key_password: wrong-one}}"
    path = kafka_yaml(tmp_path, f"    protocol: SSL\n    tls: {tls}\n")
    with pytest.raises(ConfigError, match="cannot load the client certificate") as failed:
        validate(read_yaml(path), KafkaConfigFile)
    assert "wrong-one" not in str(failed.value)
    path = kafka_yaml(tmp_path, f"    protocol: SSL\n    tls: {tls.replace('wrong-one', 'right-one')}\n")
    config = validate(read_yaml(path), KafkaConfigFile).kafka
    assert config.security.tls is not None and config.security.tls.check_hostname
    assert client_options(config)["ssl_context"].check_hostname


def test_without_a_security_section_clients_connect_in_plaintext_as_before() -> None:
    options = client_options(KafkaConfig())
    assert options["security_protocol"] == "PLAINTEXT"
    assert not {"ssl_context", "sasl_mechanism", "sasl_plain_password"} & set(options)


# --------------------------------------------------------------------------- the daemon itself

DAEMON_CONFIG = """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1m, timeout: 1s, retries: 0}}
customers: [{{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}]
devices:
  - {{name: cpe-router-01, kind: cpe_router, address: 127.0.0.1, port: {dead_port}, snmp: {{community: x}}}}
circuits:
  - {{id: CIR-0001, customer: CUST-0001, path: [{{device: cpe-router-01}}]}}
kafka:
  bootstrap_servers: {bootstrap}
  request_timeout: 20s
  retry_backoff: 500ms
  topics: {{work_orders: {topic}.workorders}}
  security:
    protocol: SASL_SSL
    tls: {{ca_file: "{ca}"}}
    sasl: {{mechanism: SCRAM-SHA-256, username: {user}, password: "{password}"}}
upstream: {{enabled: true, topic: {topic}, group_id: {topic}-group, dead_letter_topic: {topic}.dlq}}
http: {{listen: "127.0.0.1:0"}}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(directory: Path, broker: kafka_local.SecureBroker, topic: str, password: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "alarmd.yml").write_text(
        DAEMON_CONFIG.format(
            repo=REPO,
            dead_port=free_udp_port(),
            bootstrap=broker.sasl_ssl,
            topic=topic,
            ca=broker.ca_file,
            user=USER,
            password=password,
        )
    )


def log_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def until_logged(log: Path, event: str, timeout: float = WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in log_events(log):
            if entry.get("event") == event:
                return entry
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {event} in {log} within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


class Daemon:
    """``alarmd run`` as a child process, its log in a file; stopped by SIGTERM."""

    def __init__(self, config_dir: Path, env: dict[str, str]) -> None:
        self.log = config_dir / "alarmd.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "alarmd", "run", "-c", str(config_dir), "--log-format", "json"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def daemon_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}


async def test_the_daemon_takes_upstream_alarms_and_sends_work_orders_over_sasl_ssl(
    broker: kafka_local.SecureBroker, password: str, tmp_path: Path
) -> None:
    topic = f"alarmd.upstream.{uuid.uuid4().hex[:8]}"
    (tmp_path / "kafka-password").write_text(password + "\n")
    daemon_config(tmp_path, broker, topic, "${file:kafka-password}")
    config = sasl_config(broker, password)
    daemon = Daemon(tmp_path, daemon_env())
    try:
        await until_logged(daemon.log, "upstream_consumer_started")
        sink = KafkaSink(config)
        try:
            upstream_alarm = {
                "schema_version": 1,
                "source_system": "transmission_nms",
                "alarm_id": "TNMS-1",
                "event_type": "raise",
                "alarm_type": "LOS",
                "severity": "critical",
                "raised_at": "2026-11-22T01:00:00Z",
                "circuit": "CIR-0001",
            }
            await sink.send(topic, b"CIR-0001", json.dumps(upstream_alarm).encode())
        finally:
            await sink.stop()
        (record,) = await read_back(config, f"{topic}.workorders", 1)
        order = json.loads(record.value)
        assert (order["alert"], order["circuit"], order["lead_team"]) == (
            "UpstreamTransmissionAlarm",
            "CIR-0001",
            "transport_network",
        )
        assert await daemon.stop() == 0
    finally:
        await daemon.stop()
    assert password not in daemon.log.read_text()


async def test_the_daemon_logs_a_wrong_password_as_an_authentication_failure_without_it(
    broker: kafka_local.SecureBroker, password: str, tmp_path: Path
) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    daemon_config(tmp_path, broker, f"alarmd.upstream.{uuid.uuid4().hex[:8]}", "${KAFKA_SASL_PASSWORD}")
    daemon = Daemon(tmp_path, {**daemon_env(), "KAFKA_SASL_PASSWORD": wrong})
    try:
        failed = await until_logged(daemon.log, "upstream_kafka_unavailable")
        assert await daemon.stop() == 0
    finally:
        await daemon.stop()
    assert broker.sasl_ssl in failed["bootstrap_servers"]
    assert f"SASL authentication failed for user '{USER}' (SCRAM-SHA-256)" in failed["error"], failed
    text = daemon.log.read_text()
    assert wrong not in text
    assert password not in text
