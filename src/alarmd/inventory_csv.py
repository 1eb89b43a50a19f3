"""The resource system's CSV export: one row per circuit hop, read into the inventory's YAML shape.

The layout (docs/inventory.md) is what a resource system exports as a flat table: each row
names a circuit hop (``circuit``, ``customer`` …, ``device``, ``interface``) and may carry the
device's own columns (``kind``, ``address`` …) and the customer's (``customer_name``,
``tier``).  A device or customer that appears on several rows is defined once: every row
must agree with the first one that defined it.  A row without ``circuit`` only defines a
device (or a customer).  Hops of a circuit follow the order of its rows.

:func:`read_inventory_csv` returns the same nested data a YAML inventory file holds, with
the line and column of every value, so that validation names file, line and column.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Loc = tuple[str | int, ...]

CUSTOMER_COLUMNS = {"customer": "id", "customer_name": "name", "tier": "tier"}
DEVICE_COLUMNS = {
    "device": "name",
    "kind": "kind",
    "address": "address",
    "port": "port",
    "credentials": "credentials",
    "profile": "profile",
    "interval": "interval",
}
CIRCUIT_COLUMNS = {
    "circuit": "id",
    "customer": "customer",
    "service": "service",
    "dial_targets": "dial_targets",
}
HOP_COLUMNS = {"device": "device", "interface": "interface"}
#: Every column of the layout, in the documented order.
COLUMNS = (
    "circuit",
    "customer",
    "customer_name",
    "tier",
    "service",
    "device",
    "kind",
    "address",
    "port",
    "credentials",
    "profile",
    "interval",
    "interface",
    "dial_targets",
)


@dataclass
class CsvInventory:
    """A CSV export read into ``{customers, devices, circuits}`` with positions and layout problems."""

    data: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"customers": [], "devices": [], "circuits": []}
    )
    lines: dict[Loc, int] = field(default_factory=dict)
    columns: dict[Loc, int] = field(default_factory=dict)
    keys: dict[Loc, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self.out = CsvInventory()
        self.out.lines.update({(section,): 1 for section in self.out.data})
        self._index: dict[str, dict[str, int]] = {"customers": {}, "devices": {}, "circuits": {}}

    def where(self, line: int, column: str) -> str:
        return f"{self.path}:{line}:{self.header.index(column) + 1}"

    def _place(self, loc: Loc, line: int, column: str) -> None:
        self.out.lines[loc] = line
        self.out.columns[loc] = self.header.index(column) + 1
        self.out.keys[loc] = f"column '{column}'"

    def _entity(self, section: str, key: str, row: dict[str, str], line: int, names: dict[str, str]) -> int:
        """The index of the entity named by ``row[key]``, defining it or checking the row agrees."""
        ident = row[key]
        items = self.out.data[section]
        known = self._index[section]
        if ident not in known:
            known[ident] = len(items)
            items.append({})
            self.out.lines[(section, known[ident])] = line
        i = known[ident]
        item = items[i]
        for column, attr in names.items():
            value = row.get(column, "")
            if not value or attr == "dial_targets":
                continue
            if attr in item:
                if item[attr] != value:
                    first = self.out.lines[(section, i, attr)]
                    self.out.problems.append(
                        f"{self.where(line, column)}: column '{column}': '{value}' contradicts "
                        f"'{item[attr]}' given for {key} '{ident}' on line {first}"
                    )
                continue
            item[attr] = value
            self._place((section, i, attr), line, column)
        return i

    def row(self, row: dict[str, str], line: int) -> None:
        has_device_columns = any(row.get(c) for c in DEVICE_COLUMNS if c != "device")
        if row.get("customer") and (row.get("customer_name") or row.get("tier") or not row.get("circuit")):
            self._entity("customers", "customer", row, line, CUSTOMER_COLUMNS)
        if row.get("device") and (has_device_columns or not row.get("circuit")):
            self._entity("devices", "device", row, line, DEVICE_COLUMNS)
        elif has_device_columns:
            first = next(c for c in DEVICE_COLUMNS if c != "device" and row.get(c))
            self.out.problems.append(
                f"{self.where(line, first)}: column '{first}' is set but column 'device' is empty"
            )
        if not row.get("circuit"):
            return
        i = self._entity("circuits", "circuit", row, line, CIRCUIT_COLUMNS)
        circuit = self.out.data["circuits"][i]
        if row.get("dial_targets"):
            self._dial_targets(circuit, i, row["dial_targets"], line)
        path = circuit.setdefault("path", [])
        j = len(path)
        self.out.lines[("circuits", i, "path")] = self.out.lines[("circuits", i)]
        self.out.lines[("circuits", i, "path", j)] = line
        hop: dict[str, Any] = {}
        for column, attr in HOP_COLUMNS.items():
            if row.get(column):
                hop[attr] = row[column]
                self._place(("circuits", i, "path", j, attr), line, column)
        if "device" not in hop:
            self.out.problems.append(
                f"{self.where(line, 'device')}: circuit '{row['circuit']}': column 'device' is empty "
                "(each row is one hop of the circuit's path)"
            )
        path.append(hop)

    def _dial_targets(self, circuit: dict[str, Any], i: int, text: str, line: int) -> None:
        targets = circuit.setdefault("dial_targets", {})
        self._place(("circuits", i, "dial_targets"), line, "dial_targets")
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, sep, address = part.partition("=")
            if not sep or not name.strip() or not address.strip():
                self.out.problems.append(
                    f"{self.where(line, 'dial_targets')}: column 'dial_targets': '{part}' is not "
                    "name=address (several are separated by ';')"
                )
                continue
            targets[name.strip()] = address.strip()


def _header_problems(path: Path, header: list[str]) -> list[str]:
    """What is wrong with the first line: nothing, or unknown, repeated or missing columns."""
    if not any(header):
        return [f"{path}:1: empty file: the first line names the columns"]
    problems = []
    for n, name in enumerate(header, start=1):
        if name not in COLUMNS:
            hint = difflib.get_close_matches(name, COLUMNS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(f"{path}:1:{n}: unknown column '{name}'{suggestion}")
        elif header.index(name) != n - 1:
            problems.append(f"{path}:1:{n}: column '{name}' appears twice")
    if "device" not in header:
        problems.append(f"{path}:1: no column 'device' (docs/inventory.md lists the columns)")
    return problems


def read_inventory_csv(path: Path) -> CsvInventory:
    """Read a CSV export (UTF-8, an Excel BOM allowed) into the inventory's shape, with positions."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        return CsvInventory(problems=[f"{path}: cannot read: {exc.strerror or exc}"])
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            problems = _header_problems(path, header)
            if problems:
                return CsvInventory(problems=problems)
            state = _Reader(path, header)
            line = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) != len(header):
                        state.out.problems.append(
                            f"{path}:{line}: {len(cells)} cells, but the header names {len(header)} columns"
                        )
                    else:
                        state.row({h: c.strip() for h, c in zip(header, cells, strict=True)}, line)
                line = reader.line_num + 1
        except csv.Error as exc:
            return CsvInventory(problems=[f"{path}:{reader.line_num}: not CSV: {exc}"])
        except UnicodeDecodeError as exc:
            return CsvInventory(problems=[f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"])
    return state.out
