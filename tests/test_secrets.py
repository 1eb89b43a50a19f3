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
