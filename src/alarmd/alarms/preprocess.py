"""Where a fault sits, from the dial tests of the pre-processing (SPEC §4: own network first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from alarmd.model import ProbeOutcome

Verdict = Literal["operator_network", "customer_side", "path_healthy", "not_tested"]


def verdict(
    path: Sequence[str], probes: Mapping[str, ProbeOutcome], dial_targets: Sequence[str]
) -> tuple[Verdict, str | None]:
    """Judge a circuit from its probes.

    ``path`` lists the circuit's devices from the customer side inwards; the first device that
    does not answer, looking from the operator's side outwards, bounds the faulty segment.  If
    the whole path answers but a customer-side dial target (CPE LAN, say) does not, the fault
    sits on the customer's side; if everything answers, the path is healthy.
    """
    tested = [d for d in path if d in probes]
    if not tested and not any(t in probes for t in dial_targets):
        return "not_tested", None
    for i in range(len(path) - 1, -1, -1):
        device = path[i]
        if device in probes and probes[device].loss_percent >= 100:
            upstream = path[i + 1] if i + 1 < len(path) else "the operator's network"
            return "operator_network", f"between {upstream} and {device}"
    silent = [t for t in dial_targets if t in probes and probes[t].loss_percent >= 100]
    if silent:
        return "customer_side", f"beyond {path[0]} ({', '.join(silent)} silent)" if path else None
    return "path_healthy", None
