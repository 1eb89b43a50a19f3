from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.cli import main
from alarmd.config import ConfigError, Secret, load, parse_duration

REPO = Path(__file__).resolve().parent.parent

PROFILES = REPO / "config" / "profiles" / "*.yml"
MINIMAL = f"""\
rule_files: [rules.yml]
profile_files: ["{PROFILES}"]
customers:
  - id: C1
    name: Customer One
    tier: gold
devices:
  - name: r1
    kind: cpe_router
    address: 127.0.0.1
    snmp:
      community: s3cret-community
circuits:
  - id: CIR-1
    customer: C1
    path:
      - device: r1
        interface: Gi0/1
"""

RULES = """\
groups:
  - name: g
    rules:
      - alert: High
        expr: interface_utilisation_percent > 80
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "alarmd.yml").write_text(text)
    (tmp_path / "rules.yml").write_text(RULES)
    return tmp_path


def test_shipped_config_is_valid() -> None:
    loaded = load(REPO / "config", env={})
    assert {d.kind.value for d in loaded.config.devices} == {
        "cpe_router",
        "optical_transceiver",
        "protocol_converter",
    }
    assert loaded.rule_paths, "the shipped config names the shipped rules"


def test_misspelt_key_is_named_with_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL.replace("      community:", "      comunity:"))
    with pytest.raises(ConfigError) as err:
        load(cfg, env={})
    message = str(err.value)
    assert f"{cfg / 'alarmd.yml'}:12: unknown key 'devices.0.snmp.comunity'" in message
    assert "did you mean 'community'" in message
    assert "missing required key 'devices.0.snmp.community'" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "kafak:\n  client_id: x\n")
    with pytest.raises(ConfigError, match=r"alarmd.yml:19: unknown key 'kafak' \(did you mean 'kafka'\?\)"):
        load(cfg, env={})


def test_bad_tier_names_value_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL.replace("tier: gold", "tier: platinum"))
    with pytest.raises(
        ConfigError, match=r"alarmd.yml:6: customers.0.tier: Input should be 'diamond', 'gold'"
    ):
        load(cfg, env={})


def test_circuit_with_unknown_device(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL.replace("      - device: r1", "      - device: r9"))
    with pytest.raises(
        ConfigError, match=r"alarmd.yml:17: circuits\[0\].path\[0\].device: unknown device 'r9'"
    ):
        load(cfg, env={})


def test_environment_interpolation_and_kafka_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("R1_COMMUNITY", "from-env")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    cfg = write(
        tmp_path,
        MINIMAL.replace("s3cret-community", "${R1_COMMUNITY}") + "polling:\n  interval: ${POLL:-30s}\n",
    )
    loaded = load(cfg)
    assert loaded.config.devices[0].snmp.community.get_secret_value() == "from-env"
    assert loaded.config.polling.interval == 30.0
    assert loaded.config.kafka.bootstrap_servers == "127.0.0.1:19092"


def test_missing_environment_variable_is_an_error(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL.replace("s3cret-community", "${NO_SUCH_VAR_FOR_ALARMD}"))
    with pytest.raises(
        ConfigError, match=r"alarmd.yml:12: environment variable NO_SUCH_VAR_FOR_ALARMD is not set"
    ):
        load(cfg, env={})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), (10, 10)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "5 minutes", "", "1h-5m", "-3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_secrets_never_print() -> None:
    secret = Secret("public-community")
    assert str(secret) == "<secret>"
    assert "public-community" not in repr(secret)


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, MINIMAL)
    assert main(["check-config", "-c", str(good)]) == 0
    assert "OK: 1 customers, 1 circuits, 1 devices, 1 rules" in capsys.readouterr().out
    write(tmp_path, MINIMAL.replace("  - name: r1", "  - nmae: r1"))
    assert main(["check-config", "-c", str(good)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'devices.0.nmae' (did you mean 'name'?)" in err
    assert "s3cret-community" not in err


V3 = """\
credentials:
  noc-v3:
    version: 3
    user: noc
    auth_protocol: sha256
    auth_key: ${V3_AUTH:-authpass123}
    priv_protocol: aes128
    priv_key: privpass123
"""


def test_named_v3_credentials_are_resolved_for_a_device(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        V3 + MINIMAL.replace("    snmp:\n      community: s3cret-community\n", "    credentials: noc-v3\n"),
    )
    loaded = load(cfg, env={})
    creds = loaded.device_credentials(loaded.config.devices[0])
    assert (creds.version, creds.level) == ("3", "authPriv")  # type: ignore[union-attr]
    assert "authpass123" not in repr(loaded.config)


def test_unknown_credentials_name_is_an_error(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, MINIMAL.replace("    snmp:\n      community: s3cret-community\n", "    credentials: nope\n")
    )
    with pytest.raises(ConfigError, match=r"devices\[0\].credentials: unknown credentials 'nope'"):
        load(cfg, env={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("    auth_protocol: sha256\n", "auth_protocol and auth_key go together"),
        ("    priv_key: privpass123\n", "priv_protocol and priv_key go together"),
    ],
)
def test_v3_credentials_must_be_consistent(tmp_path: Path, change: str, message: str) -> None:
    cfg = write(tmp_path, V3.replace(change, "") + MINIMAL)
    with pytest.raises(ConfigError, match=message):
        load(cfg, env={})


def test_v3_keys_shorter_than_eight_characters_are_rejected(tmp_path: Path) -> None:
    cfg = write(tmp_path, V3.replace("privpass123", "short") + MINIMAL)
    with pytest.raises(ConfigError, match=r"alarmd.yml:2: credentials.noc-v3: USM keys must be at least 8"):
        load(cfg, env={})


def test_secret_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "community.txt").write_text("from-file\n")
    cfg = write(tmp_path, MINIMAL.replace("s3cret-community", "${file:community.txt}"))
    loaded = load(cfg, env={})
    assert loaded.config.devices[0].snmp.community.get_secret_value() == "from-file"  # type: ignore[union-attr]
    (tmp_path / "community.txt").unlink()
    with pytest.raises(ConfigError, match=r"alarmd.yml:12: cannot read secret file .*community.txt"):
        load(cfg, env={})


def test_v3_only_refuses_communities_for_polling_and_traps(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "security: {v3_only: true}\n")
    with pytest.raises(
        ConfigError, match=r"alarmd.yml:11: devices\[0\] \(r1\) uses SNMP v2c, but security.v3_only"
    ):
        load(cfg, env={})
    v3_device = MINIMAL.replace("    snmp:\n      community: s3cret-community\n", "    credentials: noc-v3\n")
    cfg = write(tmp_path, V3 + v3_device + "security: {v3_only: true}\n")
    assert load(cfg, env={}).config.security.v3_only


def test_circuit_sharing_an_unknown_element_is_named_with_file_and_line(tmp_path: Path) -> None:
    shared = (
        MINIMAL + "    shared: [SEG-A, SEG-X]\nelements:\n  - {name: SEG-A, kind: transmission_segment}\n"
    )
    cfg = write(tmp_path, shared)
    with pytest.raises(
        ConfigError,
        match=r"alarmd.yml:19: circuits\[0\].shared\[1\]: unknown element 'SEG-X' \(known: SEG-A\)",
    ):
        load(cfg, env={})
    write(tmp_path, shared.replace("SEG-A, SEG-X", "SEG-A"))
    assert load(cfg, env={}).config.circuits[0].shared == ["SEG-A"]


def test_element_of_unknown_kind_is_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "elements:\n  - {name: SEG-A, kind: ring}\n")
    with pytest.raises(ConfigError, match=r"alarmd.yml:20: elements.0.kind: Input should be 'pe'"):
        load(cfg, env={})
