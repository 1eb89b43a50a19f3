"""Secrets never show (SPEC §8): not in check-config, errors, logs, metrics or API answers."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ALARMD = Path(sys.executable).parent / "alarmd"
COMMUNITY = "cpe-router-01"  # the simulated router's community (its device is named router-a here)
SECRETS = {
    "trap community": "trap-community-S3cr3t",
    "v3 auth key": "auth-key-S3cr3t-123",
    "v3 priv key": "priv-key-S3cr3t-456",
    "api token": "api-token-S3cr3t-789",
}
CONFIG = """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
polling: {{interval: 1s, timeout: 1s, retries: 0}}
credentials:
  sim: {{version: 2c, community: "${{SIM_COMMUNITY}}"}}
  traps-v2: {{version: 2c, community: "{trap}"}}
  noc-v3: {{version: 3, user: noc, auth_protocol: sha256, auth_key: "{auth}", priv_protocol: aes128,
           priv_key: "{priv}"}}
traps: {{enabled: true, listen: "127.0.0.1:0", credentials: [traps-v2, noc-v3],
        definitions: ["{repo}/config/traps/*.yml"]}}
customers: [{{id: C1, name: Harbour Logistics, tier: gold}}]
devices:
  - {{name: router-a, kind: cpe_router, address: 127.0.0.1, port: {port}, credentials: sim}}
  - {{name: wrong-key, kind: cpe_router, address: 127.0.0.1, port: {port}, credentials: noc-v3}}
circuits: [{{id: CIR-0001, customer: C1, path: [{{device: router-a, interface: GigabitEthernet0/0/1}}]}}]
http: {{listen: "127.0.0.1:{http}"}}
api: {{tokens_file: tokens.yml}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leaks(text: str) -> list[str]:
    return [name for name, secret in {**SECRETS, "sim community": COMMUNITY}.items() if secret in text]


def test_secrets_do_not_show_anywhere(tmp_path: Path, kafka_bootstrap: str, sim_network: Any) -> None:
    http = free_port()
    (tmp_path / "alarmd.yml").write_text(
        CONFIG.format(
            repo=REPO,
            port=sim_network.port,
            http=http,
            trap=SECRETS["trap community"],
            auth=SECRETS["v3 auth key"],
            priv=SECRETS["v3 priv key"],
        )
    )
    digest = hashlib.sha256(SECRETS["api token"].encode()).hexdigest()
    (tmp_path / "tokens.yml").write_text(f"tokens:\n  - {{name: noc, sha256: {digest}, scope: all}}\n")
    env = {**os.environ, "SIM_COMMUNITY": COMMUNITY, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    outputs: dict[str, str] = {}

    check = subprocess.run(
        [str(ALARMD), "check-config", "-c", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    outputs["check-config"] = check.stdout + check.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "alarmd.yml").write_text(
        (tmp_path / "alarmd.yml").read_text().replace("priv_protocol: aes128", "priv_protocol: aes999")
    )
    bad = subprocess.run(
        [str(ALARMD), "check-config", "-c", str(broken)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "priv_protocol" in bad.stderr
    outputs["check-config error"] = bad.stdout + bad.stderr

    log = tmp_path / "alarmd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(ALARMD), "run", "-c", str(tmp_path), "--log-format", "json", "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not ('"poll_failed"' in log.read_text() and '"poll_done"' in log.read_text()):
            assert time.monotonic() < deadline, "both devices are polled within 30 s"
            time.sleep(0.5)
        assert '"poll_failed"' in log.read_text(), "the v3 device with no agent behind it fails its polls"
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as response:
            outputs["metrics"] = response.read().decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/api/v1/alarms",
            headers={"Authorization": f"Bearer {SECRETS['api token']}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            outputs["api"] = response.read().decode()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    outputs["daemon log"] = log.read_text()
    outputs["audit log"] = (tmp_path / "state" / "audit.log").read_text()
    assert "poll_done" in outputs["daemon log"], "the router was polled with its community"
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert found == {}, f"secrets shown: {found}"


KAFKA_SECRETS = {
    "kafka sasl password": "kafka-sasl-S3cr3t-246",
    "kafka tls key password": "kafka-key-S3cr3t-135",
}
KAFKA_CONFIG = """\
rule_files: ["{repo}/rules/*.yml"]
profile_files: ["{repo}/config/profiles/*.yml"]
state_dir: state
kafka:
  bootstrap_servers: 127.0.0.1:9093
  security:
    protocol: SASL_SSL
    tls: {{ca_file: "{ca}", cert_file: "{cert}", key_file: "{key}", key_password: "${{KAFKA_KEY_PASSWORD}}"}}
    sasl: {{mechanism: {mechanism}, username: alarmd, password: "${{file:kafka-password}}"}}
"""


def test_kafka_sasl_and_tls_key_passwords_do_not_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka_local  # noqa: PLC0415 - tools/, on sys.path via conftest

    ca, ca_key = kafka_local.make_ca(tmp_path, "ca", "test CA")
    cert, key = kafka_local.issue(
        tmp_path, ca, ca_key, "client", server=False, password=KAFKA_SECRETS["kafka tls key password"]
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
        "KAFKA_KEY_PASSWORD": KAFKA_SECRETS["kafka tls key password"],
    }
    outputs: dict[str, str] = {}

    def check(name: str, mechanism: str, expect_ok: bool, key_password_env: str | None = None) -> str:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "kafka-password").write_text(KAFKA_SECRETS["kafka sasl password"] + "\n")
        (directory / "alarmd.yml").write_text(
            KAFKA_CONFIG.format(repo=REPO, ca=ca, cert=cert, key=key, mechanism=mechanism)
        )
        run_env = env if key_password_env is None else {**env, "KAFKA_KEY_PASSWORD": key_password_env}
        done = subprocess.run(
            [str(ALARMD), "check-config", "-c", str(directory)],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=60,
            check=False,
        )
        assert (done.returncode == 0) is expect_ok, done.stdout + done.stderr
        outputs[name] = done.stdout + done.stderr
        return outputs[name]

    check("valid", "SCRAM-SHA-256", expect_ok=True)
    assert "kafka.security.sasl.mechanism" in check("bad-mechanism", "SCRAM-SHA-999", expect_ok=False)
    wrong_key = check(
        "wrong-key-password", "SCRAM-SHA-256", expect_ok=False, key_password_env="not-it-S3cr3t"
    )
    assert "cannot load the client certificate" in wrong_key
    assert "not-it-S3cr3t" not in wrong_key

    from alarmd.config import load  # noqa: PLC0415 - the in-process view of the same config

    monkeypatch.setenv("KAFKA_KEY_PASSWORD", KAFKA_SECRETS["kafka tls key password"])
    loaded = load(tmp_path / "valid", env={})
    sasl = loaded.config.kafka.security.sasl
    assert sasl is not None and sasl.password.get_secret_value() == KAFKA_SECRETS["kafka sasl password"]
    outputs["repr"] = repr(loaded.config)
    outputs["json"] = loaded.config.model_dump_json()
    assert "<secret>" in outputs["repr"]
    found = {
        where: [name for name, secret in KAFKA_SECRETS.items() if secret in text]
        for where, text in outputs.items()
    }
    assert {where: names for where, names in found.items() if names} == {}, "secrets shown"
