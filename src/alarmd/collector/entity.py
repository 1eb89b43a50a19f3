"""ENTITY-MIB as one device reports it: which port a sensor or a module belongs to.

Devices say it three ways, tried in this order: ``entAliasMappingTable`` maps an entity, or
one it is contained in, to its ifIndex; else its single mapped sibling (a port and its
sensors side by side inside a transceiver); else an entity's name names the port ("Te1/1/1 Receive
Power Sensor", "DOM RX Power Sensor for Ethernet1"), itself or an entity it is contained in
(``entPhysicalContainedIn``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from alarmd.collector.snmp import SnmpValue

ENT_DESCR = "1.3.6.1.2.1.47.1.1.1.1.2"
ENT_CONTAINED_IN = "1.3.6.1.2.1.47.1.1.1.1.4"
ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.7"
ENT_ALIAS_MAPPING_IDENTIFIER = "1.3.6.1.2.1.47.1.3.2.1.2"
_IF_INDEX_PREFIX = "1.3.6.1.2.1.2.2.1.1."
#: Containment levels walked up from a sensor before giving up (sensor, module, port, slot, ...).
_MAX_DEPTH = 6
_WORDS = re.compile(r"[\s,;()\[\]\"']+")


def _text(value: SnmpValue) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return value.strip() if isinstance(value, str) else ""


@dataclass
class EntityTree:
    """The entities of one poll: their names, containment and ifIndex aliases, and the ports by name."""

    names: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    #: interface name -> ifIndex
    ports: dict[str, str] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_columns(
        cls, columns: Mapping[str, Mapping[str, SnmpValue]], interfaces: Mapping[str, str]
    ) -> EntityTree:
        """Build it from walked columns (``{column OID: {index: value}}``) and interface names by ifIndex."""
        tree = cls(ports={name: if_index for if_index, name in interfaces.items()})
        for index, value in columns.get(ENT_DESCR, {}).items():
            if text := _text(value):
                tree.names[index] = text
        for index, value in columns.get(ENT_NAME, {}).items():
            if text := _text(value):
                tree.names[index] = text  # the name, where there is one, else the description
        for index, value in columns.get(ENT_CONTAINED_IN, {}).items():
            if isinstance(value, int) and value > 0:
                tree.parents[index] = str(value)
        for index, value in columns.get(ENT_ALIAS_MAPPING_IDENTIFIER, {}).items():
            target = _text(value).lstrip(".")
            if target.startswith(_IF_INDEX_PREFIX):
                tree.aliases[index.split(".")[0]] = target.rsplit(".", 1)[1]
        for child, parent in tree.parents.items():
            tree.children.setdefault(parent, []).append(child)
        return tree

    def port_of(self, index: str) -> str | None:
        """The ifIndex an entity belongs to, or None where the device does not say."""
        return self._by_alias(index) or self._by_name(index)

    def _by_alias(self, index: str) -> str | None:
        """The alias of the entity or of an entity it is contained in, else of its single mapped sibling."""
        if not self.aliases:
            return None
        current: str | None = index
        for _ in range(_MAX_DEPTH):
            if current is None:
                break
            if current in self.aliases:
                return self.aliases[current]
            current = self.parents.get(current)
        parent = self.parents.get(index)
        if parent is None:
            return None
        mapped = {self.aliases[c] for c in self.children.get(parent, ()) if c in self.aliases}
        return mapped.pop() if len(mapped) == 1 else None

    def _by_name(self, index: str) -> str | None:
        by_name = self.ports
        if not by_name:
            return None
        current: str | None = index
        for _ in range(_MAX_DEPTH):
            if current is None:
                return None
            text = self.names.get(current, "")
            if text in by_name:
                return by_name[text]
            for word in _WORDS.split(text):
                if word in by_name:
                    return by_name[word]
            current = self.parents.get(current)
        return None
