"""Inventory: customers, tiers, circuits and the device path of each circuit."""

from __future__ import annotations

from dataclasses import dataclass

from alarmd.config import CircuitConfig, Config, CustomerConfig, DeviceConfig, ElementConfig


@dataclass(frozen=True, slots=True)
class Placement:
    """Which circuit (and so which customer) a device interface serves."""

    circuit: CircuitConfig
    customer: CustomerConfig


class Inventory:
    """Look-ups from devices and interfaces to circuits and customers."""

    def __init__(self, config: Config) -> None:
        self.customers = {c.id: c for c in config.customers}
        self.devices: dict[str, DeviceConfig] = {d.name: d for d in config.devices}
        self.circuits = {c.id: c for c in config.circuits}
        self.elements: dict[str, ElementConfig] = {e.name: e for e in config.elements}
        self.sharing: dict[str, list[str]] = {e.name: [] for e in config.elements}
        for circuit in config.circuits:
            for name in circuit.shared:
                self.sharing.setdefault(name, []).append(circuit.id)
        self._by_address: dict[str, DeviceConfig] = {}
        for device in config.devices:
            self._by_address.setdefault(device.address, device)
        self._by_interface: dict[tuple[str, str], Placement] = {}
        self._by_device: dict[str, Placement] = {}
        for circuit in config.circuits:
            placement = Placement(circuit, self.customers[circuit.customer])
            for hop in circuit.path:
                if hop.interface is not None:
                    self._by_interface.setdefault((hop.device, hop.interface), placement)
                else:
                    self._by_device.setdefault(hop.device, placement)

    def shared_by(self, circuit: str | None) -> list[ElementConfig]:
        """The shared elements a circuit names, the one shared by the fewest circuits first."""
        found = self.circuits.get(circuit or "")
        if found is None:
            return []
        named = [self.elements[n] for n in found.shared if n in self.elements]
        return sorted(named, key=lambda e: (len(self.sharing.get(e.name, ())), e.name))

    def carries_circuit(self, device: str | None, interface: str | None) -> bool:
        """Whether ``interface`` of ``device`` is on a circuit's path (a customer's line)."""
        return (device, interface) in self._by_interface

    def device_at(self, address: str | None) -> DeviceConfig | None:
        """The device polled at an address (first one, if several share it)."""
        return self._by_address.get(address) if address else None

    def place(
        self, device: str | None, interface: str | None, circuit: str | None = None
    ) -> Placement | None:
        """The circuit named, else the one carried by ``interface`` on ``device``, else the device's."""
        if circuit is not None and circuit in self.circuits:
            found = self.circuits[circuit]
            return Placement(found, self.customers[found.customer])
        if device is None:
            return None
        if interface is not None and (device, interface) in self._by_interface:
            return self._by_interface[(device, interface)]
        return self._by_device.get(device)
