"""The real net-snmp snmpd peer (tools/snmpd.py): v1/v2c, every SNMPv3 user, the wrap counters."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator

import pytest

import snmpd

pytestmark = pytest.mark.integration

SYS_NAME = "1.3.6.1.2.1.1.5.0"


@pytest.fixture(scope="module")
def agent() -> Iterator[snmpd.Snmpd]:
    """One snmpd for the module, with the default users."""
    sd = snmpd.start()
    try:
        yield sd
    finally:
        sd.stop()


def _value(proc_stdout: str) -> int:
    """The integer after the type in ``-On`` output (``.1.3... = Counter32: 123``)."""
    return int(proc_stdout.rsplit(":", 1)[1].strip())


def test_serves_v2c_and_v1_on_loopback(agent: snmpd.Snmpd) -> None:
    assert agent.host == "127.0.0.1"
    v2c = agent.snmpget(SYS_NAME)
    assert v2c.returncode == 0, v2c.stderr
    assert "alarmd-snmpd-peer" in v2c.stdout
    assert agent.engine_id is not None
    assert agent.engine_id.startswith("80001f88")


def test_default_users_cover_every_level(agent: snmpd.Snmpd) -> None:
    names = {u.name for u in agent.users}
    assert {"alarmd-sha256-aes128", "alarmd-md5", "alarmd-noauth"} <= names
    assert {u.level for u in agent.users} == {"authPriv", "authNoPriv", "noAuthNoPriv"}
    creds = agent.user("alarmd-sha256-aes128").as_config()
    assert creds["auth_protocol"] == "sha256"
    assert creds["priv_protocol"] == "aes128"


@pytest.mark.parametrize("name", [u.name for u in snmpd.DEFAULT_USERS])
def test_each_v3_user_can_read(agent: snmpd.Snmpd, name: str) -> None:
    if name not in {u.name for u in agent.users}:
        pytest.skip(f"this net-snmp build does not support the protocols of {name}")
    proc = agent.snmpget(SYS_NAME, user=agent.user(name))
    assert proc.returncode == 0, proc.stderr
    assert "alarmd-snmpd-peer" in proc.stdout


def test_wrong_auth_key_is_refused(agent: snmpd.Snmpd) -> None:
    wrong = dataclasses.replace(agent.user("alarmd-sha256-aes128"), auth_key="not-the-right-key")
    proc = agent.snmpget(SYS_NAME, user=wrong, timeout=1.0, retries=0)
    assert proc.returncode != 0
    assert "Authentication failure" in proc.stderr


def test_wrong_priv_key_gets_no_answer(agent: snmpd.Snmpd) -> None:
    wrong = dataclasses.replace(agent.user("alarmd-sha256-aes128"), priv_key="not-the-right-key")
    proc = agent.snmpget(SYS_NAME, user=wrong, timeout=1.0, retries=0)
    assert proc.returncode != 0
    assert "alarmd-snmpd-peer" not in proc.stdout


def test_unknown_user_is_refused(agent: snmpd.Snmpd) -> None:
    proc = agent.snmpget(SYS_NAME, user=snmpd.V3User("nobody-here"), timeout=1.0, retries=0)
    assert proc.returncode != 0
    assert "Unknown user name" in proc.stderr


def test_counter32_wraps_while_counter64_keeps_counting(agent: snmpd.Snmpd) -> None:
    period = 2**32 / agent.wrap["rate"]
    deadline = time.monotonic() + period + 5.0
    prev32 = prev64 = None
    wrapped = False
    while time.monotonic() < deadline and not wrapped:
        proc = agent.snmpget(snmpd.IF_IN_OCTETS, snmpd.IF_HC_IN_OCTETS)
        assert proc.returncode == 0, proc.stderr
        line32, line64 = proc.stdout.strip().splitlines()
        assert "Counter32" in line32
        assert "Counter64" in line64
        now32, now64 = _value(line32), _value(line64)
        # each OID is one run of the pass script, so the two reads are a few ms apart
        skew = (now64 - now32) % 2**32
        assert min(skew, 2**32 - skew) < agent.wrap["rate"], "Counter32 is the low half of Counter64"
        if prev32 is not None and prev64 is not None:
            assert now64 > prev64
            wrapped = now32 < prev32
        prev32, prev64 = now32, now64
        time.sleep(0.5)
    assert wrapped, f"ifInOctets.{snmpd.WRAP_IFINDEX} did not wrap within {period + 5.0:.0f}s"


def test_private_subtree_walks(agent: snmpd.Snmpd) -> None:
    cmd = ["snmpbulkwalk", "-v2c", "-c", agent.community, "-On", "-t", "1", "-r", "1"]
    proc = subprocess.run(
        [*cmd, agent.target, snmpd.WRAP_ROOT],
        capture_output=True,
        text=True,
        check=False,
        env=agent.client_env(),
        timeout=15,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    oids = [line.split(" ", 1)[0].lstrip(".") for line in lines]
    assert oids == [snmpd.WRAP32, snmpd.WRAP64, snmpd.WRAP64_EDGE, snmpd.WRAP_RATE]
    kinds = [line.split("=", 1)[1].split(":", 1)[0].strip() for line in lines]
    assert kinds == ["Counter32", "Counter64", "Counter64", "Gauge32"]
    assert _value(lines[-1]) == agent.wrap["rate"]
