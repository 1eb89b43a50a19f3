from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.collector.profile import INTERFACE_FALLBACK_COLUMNS, load_profiles
from alarmd.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_profiles_cover_the_three_device_kinds() -> None:
    profiles = load_profiles(sorted((REPO / "config" / "profiles").glob("*.yml")))
    kind_profiles = {name for name, p in profiles.items() if not p.spec.sys_object_ids}
    assert kind_profiles == {"cpe_router", "optical_transceiver", "protocol_converter"}
    kinds = {name: {t.kind for t in p.spec.tables} for name, p in profiles.items()}
    assert "interfaces" in kinds["cpe_router"]
    assert "entity_sensor" in kinds["optical_transceiver"]
    e1 = next(t for t in profiles["protocol_converter"].spec.tables if t.name == "e1")
    assert {b for c in e1.columns for b in c.bits} >= {"e1_loss_of_signal", "e1_ais", "e1_loss_of_frame"}


def test_a_vendor_column_is_added_by_configuration(tmp_path: Path) -> None:
    path = tmp_path / "vendor_box.yml"
    path.write_text(
        "tables:\n  - name: psu\n    columns:\n      - {name: psu_voltage, oid: .1.3.6.1.4.1.99999.1.2.3}\n"
    )
    profile = load_profiles([path])["vendor_box"]
    assert profile.columns(profile.spec.tables[0]) == ["1.3.6.1.4.1.99999.1.2.3"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "tables:\n  - name: t\n    colums: []\n",
            r"vendor_box.yml:3: unknown key 'tables.0.colums' \(did you mean 'columns'\?\)",
        ),
        (
            "tables:\n  - name: t\n    columns:\n      - {name: x, oid: not.an.oid}\n",
            r"vendor_box.yml:4: .*is not a numeric OID",
        ),
        (
            "tables:\n  - name: t\n    kind: interfaces\n",
            r"needs columns if_hc_in_octets, if_hc_out_octets, if_high_speed",
        ),
        (
            "tables:\n  - name: t\n    columns:\n      - {name: s, oid: 1.2.3, type: bits}\n",
            r"type bits needs a bits map",
        ),
    ],
)
def test_bad_profiles_are_named_with_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "vendor_box.yml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_profiles([path])


def test_every_shipped_interfaces_table_polls_what_basic_agents_have() -> None:
    profiles = load_profiles(sorted((REPO / "config" / "profiles").glob("*.yml")))
    tables = [t for p in profiles.values() for t in p.spec.tables if t.kind == "interfaces"]
    assert len(tables) == 3
    for table in tables:
        assert set(INTERFACE_FALLBACK_COLUMNS) <= {c.name for c in table.columns}, table.name


def test_vendor_extensions_apply_by_sys_object_id() -> None:
    profiles = load_profiles(sorted((REPO / "config" / "profiles").glob("*.yml")))
    huawei, mrv = profiles["vendor_huawei"], profiles["vendor_mrv"]
    assert huawei.applies_to("1.3.6.1.4.1.2011.2.224.67")
    assert huawei.applies_to(".1.3.6.1.4.1.2011")
    assert not huawei.applies_to("1.3.6.1.4.1.20110.1")  # another enterprise that starts alike
    assert mrv.applies_to("1.3.6.1.4.1.629.22.1.1") and not mrv.applies_to("1.3.6.1.4.1.9.1.2661")


def test_a_scaled_vendor_column_and_its_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "vendor_box.yml"
    path.write_text(
        "sys_object_ids: [1.3.6.1.4.1.99999]\n"
        "tables:\n  - name: optics\n    port: if_index\n    columns:\n"
        "      - {name: optical_rx_power_dbm, oid: 1.3.6.1.4.1.99999.1.8,"
        " scale: 0.01, unit: dBm, missing: [-1]}\n"
    )
    column = load_profiles([path])["vendor_box"].spec.tables[0].columns[0]
    assert (column.scale, column.unit, column.missing) == (0.01, "dBm", [-1])
    path.write_text(
        "tables:\n  - name: t\n    columns:\n      - {name: c, oid: 1.2.3, type: counter32, scale: 8}\n"
    )
    with pytest.raises(ConfigError, match="scale applies to gauge columns only"):
        load_profiles([path])
