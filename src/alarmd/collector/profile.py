"""Device profiles: which SNMP scalars, tables and columns to collect, and how to label them.

Profiles live in ``config/profiles/*.yml`` (after snmp_exporter's modules).  A column's
``type`` says what a sample is: ``gauge`` values are emitted as they are, ``counter32`` /
``counter64`` become per-second rates (``<name>_per_second``), ``bits`` become one 0/1
sample per named bit, ``string`` columns are labels only.  A table's ``kind`` adds the
derived figures the operator's rules need: ``interfaces`` (utilisation, error ratio, link
state) and ``entity_sensor`` (ENTITY-SENSOR-MIB or CISCO-ENTITY-SENSOR-MIB values with
scale and precision applied, watts turned into dBm, mapped to ports through ENTITY-MIB).  A
vendor OID is added by adding a column: ``scale`` turns its raw value into its unit (0.01 for
hundredths of a dBm), and a table's ``port`` (its index is an ifIndex, or an entPhysicalIndex) or
a label of ``kind: if_index`` names the port a row belongs to.  A profile with
``sys_object_ids`` is a vendor extension: its tables are polled, beside the device's own
profile, on every device whose sysObjectID lies under one of those OIDs (docs/devices.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from alarmd.config import ConfigError, Strict, YamlDoc, read_yaml, validate

ColumnType = Literal["gauge", "counter32", "counter64", "timeticks", "bits", "string"]
_OID = re.compile(r"^\d+(\.\d+)+$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

INTERFACE_COLUMNS = ("if_hc_in_octets", "if_hc_out_octets", "if_high_speed")
#: What an interfaces table polls so that basic agents (ifTable only: no ifHighSpeed, no 64-bit
#: counters) still give utilisation and loss figures.
INTERFACE_FALLBACK_COLUMNS = (
    "if_speed",
    "if_in_octets",
    "if_out_octets",
    "if_in_ucast_pkts",
    "if_out_ucast_pkts",
)
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SENSOR_COLUMNS = ("sensor_type", "sensor_scale", "sensor_precision", "sensor_value")


def _oid(value: str) -> str:
    value = value.strip().lstrip(".")
    if not _OID.match(value):
        raise ValueError(f"'{value}' is not a numeric OID")
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"'{value}' must be snake_case (a-z, 0-9, _)")
    return value


Oid = Annotated[str, AfterValidator(_oid)]
SnakeName = Annotated[str, AfterValidator(_name)]


class ColumnSpec(Strict):
    """One table column (or scalar) to collect."""

    name: SnakeName
    oid: Oid
    type: ColumnType = "gauge"
    bits: dict[str, int] = Field({}, description="for type bits: sample name -> bit value")
    scale: float = Field(1.0, description="a gauge's raw value times this is its value (0.01: hundredths)")
    unit: str = Field("", description="the unit of the scaled value, for people (dBm, celsius)")
    missing: list[int] = Field([], description="raw values that mean no reading (e.g. -2147483648)")
    help: str = ""

    @functools.cached_property
    def rate_name(self) -> str:
        """The sample name of a counter column's rate."""
        return f"{self.name}_per_second"

    @functools.cached_property
    def octets(self) -> bool:
        """Whether the column counts octets (so its rate cannot exceed the line's speed)."""
        return self.name.endswith("octets")

    @model_validator(mode="after")
    def _bits(self) -> ColumnSpec:
        if (self.type == "bits") != bool(self.bits):
            raise ValueError("type bits needs a bits map, and a bits map needs type bits")
        for bit_name in self.bits:
            _name(bit_name)
        if self.scale != 1.0 and self.type != "gauge":
            raise ValueError("scale applies to gauge columns only")
        return self


class LabelSpec(Strict):
    """A column whose value labels the table's rows (e.g. ifName), or names the row's port."""

    name: SnakeName
    oid: Oid
    fallback_oid: Oid | None = Field(None, description="used where the first column has no value")
    kind: Literal["text", "if_index"] = Field(
        "text",
        description="text: the value is the label; if_index: the value is the row's port's ifIndex "
        "(labels if_index and interface)",
    )


SensorType = Literal["dBm", "watts", "celsius", "voltsDC", "voltsAC", "amperes", "percentRH", "rpm", "other"]


class SensorMetric(Strict):
    """Name ENTITY-SENSOR-MIB sensors of some types (and a name pattern) as a metric of their own."""

    sensor_type: SensorType | list[SensorType] = Field(
        description="the sensor types read; watts become dBm where the unit is dbm"
    )
    name_pattern: str = Field(".*", description="matched against entPhysicalName, else entPhysicalDescr")
    unit: Literal["dbm", "celsius", "volts", "amperes", "percent", "rpm", "raw"] = "raw"
    on_port: bool | None = Field(
        None, description="true: only sensors mapped to a port; false: only the others (chassis)"
    )

    @functools.cached_property
    def types(self) -> frozenset[str]:
        """The sensor types this metric takes."""
        return frozenset([self.sensor_type] if isinstance(self.sensor_type, str) else self.sensor_type)

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """The compiled name pattern."""
        return re.compile(self.name_pattern)

    @field_validator("name_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except (re.error, OverflowError, RecursionError) as exc:  # a{2**32}, (((...))) nested too deep
            raise ValueError(f"'{value}' is not a regular expression: {exc}") from None
        return value


class TableSpec(Strict):
    """A table walked with GETBULK; rows are keyed by the index after each column's OID."""

    name: SnakeName
    kind: Literal["generic", "interfaces", "entity_sensor", "entity_alias"] = "generic"
    index_label: SnakeName = "index"
    labels: list[LabelSpec] = []
    columns: list[ColumnSpec] = []
    discontinuity_oid: Oid | None = Field(
        None, description="a TimeStamp column; a change drops that row's rates"
    )
    sensor_metrics: dict[str, SensorMetric] = Field({}, description="for kind entity_sensor")
    port: Literal["none", "if_index", "entity"] = Field(
        "none",
        description="what the row index says of the row's port: if_index (it is the ifIndex), entity "
        "(an entPhysicalIndex, mapped to its port through ENTITY-MIB as sensors are)",
    )

    @model_validator(mode="after")
    def _required(self) -> TableSpec:
        names = {c.name for c in self.columns}
        need = {"interfaces": INTERFACE_COLUMNS, "entity_sensor": SENSOR_COLUMNS}.get(self.kind, ())
        missing = [n for n in need if n not in names]
        if missing:
            raise ValueError(f"a table of kind {self.kind} needs columns {', '.join(missing)}")
        return self


class ProfileSpec(Strict):
    """A device profile file."""

    description: str = ""
    uptime_oid: Oid = "1.3.6.1.2.1.1.3.0"
    sys_object_ids: list[Oid] = Field(
        [],
        description="a vendor extension: its tables are polled on every device whose sysObjectID "
        "is one of these or under one, beside the device's own profile",
    )
    scalars: list[ColumnSpec] = []
    tables: list[TableSpec] = []


@dataclass(frozen=True)
class Profile:
    """A loaded profile, named after its file."""

    name: str
    spec: ProfileSpec
    source: str

    def applies_to(self, sys_object_id: str) -> bool:
        """Whether this vendor extension applies to a device with this sysObjectID."""
        oid = sys_object_id.lstrip(".")
        return any(oid == base or oid.startswith(base + ".") for base in self.spec.sys_object_ids)

    def columns(self, table: TableSpec) -> list[str]:
        """Every OID to walk for a table."""
        oids = [c.oid for c in table.columns] + [lb.oid for lb in table.labels]
        oids += [lb.fallback_oid for lb in table.labels if lb.fallback_oid]
        if table.discontinuity_oid:
            oids.append(table.discontinuity_oid)
        return list(dict.fromkeys(oids))


def compile_profile(doc: YamlDoc) -> Profile:
    """Validate one profile file."""
    return Profile(doc.path.stem, validate(doc, ProfileSpec), str(doc.path))


def load_profiles(paths: Iterable[Path]) -> dict[str, Profile]:
    """Load profile files; a profile is named after its file (``cpe_router.yml`` → ``cpe_router``)."""
    profiles: dict[str, Profile] = {}
    for path in paths:
        profile = compile_profile(read_yaml(path))
        if profile.name in profiles:
            raise ConfigError(
                f"{path}: profile {profile.name} is already defined in {profiles[profile.name].source}"
            )
        profiles[profile.name] = profile
    return profiles
