from __future__ import annotations

from pathlib import Path

import pytest

from alarmd.collector.profile import load_profiles
from alarmd.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_profiles_cover_the_three_device_kinds() -> None:
    profiles = load_profiles(sorted((REPO / "config" / "profiles").glob("*.yml")))
    assert set(profiles) == {"cpe_router", "optical_transceiver", "protocol_converter"}
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
