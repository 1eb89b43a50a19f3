"""Trap definitions: which notification OIDs alarmd knows by name, and the labels each one carries."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, field_validator

from alarmd.config import ConfigError, Strict, YamlDoc, read_yaml, validate
from alarmd.model import VarBind

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")
RESERVED_LABELS = frozenset({"source_address", "agent_address", "trap", "device", "interface", "circuit"})
SYS_UPTIME: Final = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID: Final = "1.3.6.1.6.3.1.1.4.1.0"


def _numeric_oid(value: str) -> str:
    oid = value.strip().removeprefix(".")
    if not _OID.match(oid):
        raise ValueError(
            f"'{value}' is not a numeric OID (write it like 1.3.6.1.6.3.1.1.5.3; MIB names are not resolved)"
        )
    return oid


def _short_label(value: object) -> object:
    return {"oid": value} if isinstance(value, str) else value


class LabelSpec(Strict):
    """Where a label's value comes from: the first varbind under ``oid``, its value or its index."""

    oid: str = Field(description="OID prefix of the varbind, usually a table column")
    part: Literal["value", "index"] = Field(
        "value", description="value: the varbind's value; index: the OID suffix after the prefix"
    )
    bit: int | None = Field(
        None, gt=0, description='a bit of an integer value (a BITS-like status): "1" when set, "0" when not'
    )

    @field_validator("oid")
    @classmethod
    def _numeric(cls, value: str) -> str:
        return _numeric_oid(value)


class TrapSpec(Strict):
    """One notification as written in a definitions file."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    oid: str
    labels: dict[str, Annotated[LabelSpec, BeforeValidator(_short_label)]] = {}

    @field_validator("oid")
    @classmethod
    def _numeric(cls, value: str) -> str:
        return _numeric_oid(value)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, LabelSpec]) -> dict[str, LabelSpec]:
        for name in value:
            if not _LABEL.match(name):
                raise ValueError(f"label '{name}' must be snake_case ([a-z_][a-z0-9_]*)")
            if name in RESERVED_LABELS:
                raise ValueError(f"label '{name}' is set by alarmd itself; choose another name")
        return value


class TrapFileSpec(Strict):
    """A whole definitions file: ``traps:`` and a list of notifications."""

    traps: list[TrapSpec] = []


@dataclass(frozen=True, slots=True)
class LabelRule:
    """A compiled label: take ``part`` of the first varbind whose OID is ``prefix`` or under it."""

    name: str
    prefix: str
    part: Literal["value", "index"]
    bit: int = 0
    _under: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_under", self.prefix + ".")

    def covers(self, oid: str) -> bool:
        """Whether a varbind with this OID would be the label's."""
        return oid.startswith(self._under) or oid == self.prefix

    def extract(self, varbinds: Sequence[VarBind]) -> str | None:
        """The label's value from a notification's varbinds, or None if no varbind matches."""
        under, prefix = self._under, self.prefix
        for vb in varbinds:
            oid = vb.oid
            if oid.startswith(under) or oid == prefix:
                if self.part == "index":
                    return oid[len(under) :]
                if self.bit:
                    return ("1" if vb.value & self.bit else "0") if isinstance(vb.value, int) else None
                return label_value(vb.value)
        return None


@dataclass(frozen=True, slots=True)
class TrapDefinition:
    """A known notification: its name, its snmpTrapOID and the labels extracted from its varbinds."""

    name: str
    oid: str
    labels: tuple[LabelRule, ...] = ()
    source: str = ""
    #: No label takes sysUpTime.0 or snmpTrapOID.0, the two varbinds every notification starts with.
    _header_free: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        header_free = not any(r.covers(SYS_UPTIME) or r.covers(SNMP_TRAP_OID) for r in self.labels)
        object.__setattr__(self, "_header_free", header_free)

    def extract(self, varbinds: Sequence[VarBind]) -> dict[str, str]:
        """Every label whose varbind is present in the notification."""
        if (
            self._header_free
            and len(varbinds) >= 2
            and varbinds[0].oid == SYS_UPTIME
            and varbinds[1].oid == SNMP_TRAP_OID
        ):
            varbinds = varbinds[2:]  # RFC 3416 §4.2.6: the header, which no label takes
        out: dict[str, str] = {}
        for rule in self.labels:
            value = rule.extract(varbinds)
            if value is not None:
                out[rule.name] = value
        return out


def label_value(value: int | str | bytes | None) -> str | None:
    """A varbind value as label text: numbers in decimal, printable UTF-8 as text, other octets in hex."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
        return text if text.isprintable() else value.hex()
    return str(value)


class TrapDefinitions:
    """All trap definitions, looked up by snmpTrapOID."""

    def __init__(self, definitions: Iterable[TrapDefinition] = ()) -> None:
        self._by_oid: dict[str, TrapDefinition] = {}
        by_name: dict[str, TrapDefinition] = {}
        for d in definitions:
            for seen, key, what in ((self._by_oid, d.oid, "oid"), (by_name, d.name, "name")):
                if key in seen:
                    raise ConfigError(
                        f"{d.source or d.name}: trap {d.name}: {what} {key} is already defined "
                        f"at {seen[key].source or seen[key].name}"
                    )
                seen[key] = d

    def get(self, oid: str) -> TrapDefinition | None:
        """The definition of a notification OID, if there is one."""
        return self._by_oid.get(oid)

    def __len__(self) -> int:
        return len(self._by_oid)

    def __iter__(self) -> Iterator[TrapDefinition]:
        return iter(self._by_oid.values())

    @classmethod
    def from_docs(cls, docs: Iterable[YamlDoc]) -> TrapDefinitions:
        """Compile parsed definition files; an OID or a name may be defined only once across them."""
        out: list[TrapDefinition] = []
        for doc in docs:
            spec = validate(doc, TrapFileSpec)
            for i, trap in enumerate(spec.traps):
                rules = tuple(LabelRule(name, s.oid, s.part, s.bit or 0) for name, s in trap.labels.items())
                out.append(TrapDefinition(trap.name, trap.oid, rules, doc.where(("traps", i))))
        return cls(out)

    @classmethod
    def load(cls, paths: Iterable[Path]) -> TrapDefinitions:
        """Read, validate and compile definition files."""
        return cls.from_docs(read_yaml(p) for p in paths)

    @classmethod
    def load_globs(cls, patterns: Iterable[str], base: Path) -> TrapDefinitions:
        """Load every file matched by ``patterns`` (``TrapsConfig.definitions``), relative to ``base``."""
        paths: list[Path] = []
        for pattern in patterns:
            full = pattern if os.path.isabs(pattern) else str(base / pattern)
            matches = sorted(Path(p) for p in glob.glob(full))
            if not matches:
                raise ConfigError(f"traps.definitions: '{pattern}' matches no file (relative to {base})")
            paths.extend(matches)
        return cls.load(paths)
