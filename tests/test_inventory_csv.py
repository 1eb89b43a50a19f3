"""Inventory files beside alarmd.yml: YAML, and the CSV export with file:line:column errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.cli import main
from alarmd.config import ConfigError, load
from alarmd.inventory_csv import COLUMNS, read_inventory_csv

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "config" / "inventory" / "resource-export.example.csv"
PROFILES = REPO / "config" / "profiles" / "*.yml"

CONFIG = f"""\
rule_files: [rules.yml]
profile_files: ["{PROFILES}"]
inventory_files: [inventory/*.yml, inventory/*.csv]
credentials:
  demo-cpe: {{community: cpe-secret}}
  demo-otx: {{community: otx-secret}}
  demo-pcv: {{community: pcv-secret}}
customers:
  - {{id: CUST-0001, name: Harbour Logistics Group, tier: gold}}
devices:
  - {{name: core-pe-01, kind: cpe_router, address: 127.0.0.1, credentials: demo-cpe}}
"""
RULES = """\
groups:
  - name: g
    rules:
      - alert: High
        expr: interface_utilisation_percent > 80
"""
HEADER = ",".join(COLUMNS)


def config_dir(tmp_path: Path, csv_text: str | None = None, yaml_text: str | None = None) -> Path:
    (tmp_path / "alarmd.yml").write_text(CONFIG)
    (tmp_path / "rules.yml").write_text(RULES)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "export.csv").write_text(csv_text if csv_text is not None else SAMPLE.read_text())
    (inventory / "extra.yml").write_text(yaml_text or "customers: []\n")
    return tmp_path


def row(**cells: str) -> str:
    return ",".join(cells.get(c, "") for c in COLUMNS)


def test_the_sample_export_loads_with_paths_in_row_order(tmp_path: Path) -> None:
    cfg = load(config_dir(tmp_path), env={}).config
    devices = {d.name: d for d in cfg.devices}
    assert {"core-pe-01", "cpe-eastgate-01", "otx-eastgate-01", "pcv-lakeside-01", "spare-cpe-01"} <= set(
        devices
    )
    assert devices["pcv-lakeside-01"].interval == 300.0
    circuits = {c.id: c for c in cfg.circuits}
    eastgate = circuits["CIR-1001"]
    assert [(h.device, h.interface) for h in eastgate.path] == [
        ("cpe-eastgate-01", "GigabitEthernet0/0/1"),
        ("otx-eastgate-01", None),
    ]
    assert eastgate.dial_targets == {"cpe_wan": "192.0.2.11", "cpe_lan": "198.51.100.1"}
    assert circuits["CIR-1002"].service == "transmission_lease"
    customers = {c.id: c for c in cfg.customers}
    assert customers["CUST-1001"].tier.value == "diamond"
    assert circuits["CIR-1003"].customer == "CUST-1001"


def test_a_yaml_inventory_file_adds_devices_and_credentials(tmp_path: Path) -> None:
    extra = """\
credentials:
  site-v3: {version: 3, user: noc, auth_protocol: sha256, auth_key: auth-key-123}
devices:
  - {name: v3-router, kind: cpe_router, address: 127.0.0.2, credentials: site-v3}
circuits:
  - {id: CIR-9, customer: CUST-0001, path: [{device: v3-router}, {device: core-pe-01}]}
"""
    loaded = load(config_dir(tmp_path, yaml_text=extra), env={})
    device = next(d for d in loaded.config.devices if d.name == "v3-router")
    assert loaded.device_credentials(device).version == "3"
    circuit = next(c for c in loaded.config.circuits if c.id == "CIR-9")
    assert [h.device for h in circuit.path] == ["v3-router", "core-pe-01"]


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ({"tier": "platinum"}, r"export.csv:2:4: column 'tier': Input should be .*not 'platinum'"),
        ({"address": "10.0.0.x"}, r"export.csv:2:8: column 'address': '10.0.0.x' is not an IP address"),
        ({"kind": "router"}, r"export.csv:2:7: column 'kind': .*not 'router'"),
        ({"port": "seventy"}, r"export.csv:2:9: column 'port'"),
        (
            {"dial_targets": "cpe_wan"},
            r"export.csv:2:14: column 'dial_targets': 'cpe_wan' is not name=address",
        ),
    ],
)
def test_a_bad_cell_is_named_by_file_line_and_column(
    tmp_path: Path, cells: dict[str, str], message: str
) -> None:
    good = {
        "circuit": "CIR-1",
        "customer": "CUST-1",
        "customer_name": "One",
        "tier": "gold",
        "device": "r1",
        "kind": "cpe_router",
        "address": "127.0.0.1",
        "credentials": "demo-cpe",
    }
    text = f"{HEADER}\n{row(**{**good, **cells})}\n"
    with pytest.raises(ConfigError, match=message):
        load(config_dir(tmp_path, text), env={})


def test_cross_file_problems_are_all_named_with_their_places(tmp_path: Path) -> None:
    text = "\n".join(
        [
            HEADER,
            row(device="core-pe-01", kind="cpe_router", address="127.0.0.9", credentials="demo-cpe"),
            row(circuit="CIR-1", customer="CUST-0001", device="r-missing", interface="Gi0/1"),
            row(circuit="CIR-2", customer="CUST-0009", device="core-pe-01"),
            row(device="r2", kind="cpe_router", address="127.0.0.3", credentials="nope"),
        ]
    )
    with pytest.raises(ConfigError) as raised:
        load(config_dir(tmp_path, text + "\n"), env={})
    problems = str(raised.value).splitlines()
    assert any(
        "export.csv:2:6: column 'device': duplicate device 'core-pe-01' (first at " in p
        and "alarmd.yml:11" in p
        for p in problems
    ), problems
    assert any("export.csv:3:6: column 'device': unknown device 'r-missing'" in p for p in problems)
    assert any("export.csv:4:2: column 'customer': unknown customer 'CUST-0009'" in p for p in problems)
    assert any("export.csv:5:10: column 'credentials': unknown credentials 'nope'" in p for p in problems)


def test_rows_that_contradict_each_other_are_named(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\n".join(
            [
                HEADER,
                row(
                    circuit="C1",
                    customer="K1",
                    customer_name="K",
                    tier="gold",
                    device="a",
                    kind="cpe_router",
                    address="127.0.0.1",
                ),
                row(circuit="C1", customer="K1", device="a", address="127.0.0.2"),
            ]
        )
    )
    found = read_inventory_csv(path)
    assert found.problems == [
        f"{path}:3:8: column 'address': '127.0.0.2' contradicts '127.0.0.1' given for device 'a' on line 2"
    ]


def test_unknown_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("circuit,adress\nC1,127.0.0.1\n")
    assert read_inventory_csv(path).problems == [
        f"{path}:1:2: unknown column 'adress' (did you mean 'address'?)",
        f"{path}:1: no column 'device' (docs/inventory.md lists the columns)",
    ]


def test_check_config_prints_every_bad_row_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = SAMPLE.read_text().splitlines()
    lines[2] = lines[2].replace("192.0.2.12", "192.0.2.300")
    lines[3] = lines[3].replace("ordinary", "bronze")
    cfg = config_dir(tmp_path, "\n".join(lines) + "\n")
    assert main(["check-config", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "export.csv:3:8: column 'address': '192.0.2.300' is not an IP address" in err
    assert "export.csv:4:4: column 'tier'" in err
    assert "not 'bronze'" in err


def test_an_export_of_ten_thousand_devices_loads(tmp_path: Path) -> None:
    text = [HEADER]
    for n in range(10_000):
        customer = f"CUST-{n // 4:05d}"
        cells = {
            "circuit": f"CIR-{n:05d}",
            "customer": customer,
            "device": f"cpe-{n:05d}",
            "kind": "cpe_router",
            "address": f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
            "credentials": "demo-cpe",
            "interface": "Gi0/0/1",
        }
        if n % 4 == 0:
            cells |= {"customer_name": f"Customer {n // 4}", "tier": "ordinary"}
        text.append(row(**cells))
    cfg = load(config_dir(tmp_path, "\n".join(text) + "\n"), env={}).config
    assert len(cfg.devices) == 10_001
    assert len(cfg.circuits) == 10_000
    assert len(cfg.customers) == 2_501
