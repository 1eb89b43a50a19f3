"""The fuzz suite's budget and its record: cases run per target, exceptions seen, seconds taken.

``ALARMD_FUZZ_CASES`` (default 1,000,000) is how many mutated datagrams the decoder sees per
run, split over its entry points; ``ALARMD_FUZZ_SEED`` (default 8) seeds the mutator.  Every
target's figures go to ``tests/artifacts/fuzz-summary.json`` as they come in.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

SUMMARY_FILE = Path(__file__).resolve().parents[1] / "artifacts" / "fuzz-summary.json"
DEFAULT_CASES = 1_000_000
DEFAULT_SEED = 8


def fuzz_cases() -> int:
    """The decoder's budget for this run: mutated datagrams over all its entry points."""
    return int(os.environ.get("ALARMD_FUZZ_CASES", DEFAULT_CASES))


def fuzz_seed() -> int:
    """The mutator's seed for this run."""
    return int(os.environ.get("ALARMD_FUZZ_SEED", DEFAULT_SEED))


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz test: a fixed number of examples, the same ones on every run."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Summary:
    """Figures per fuzz target, written to ``SUMMARY_FILE`` whenever they change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.targets: dict[str, dict[str, Any]] = {}
        self._first: dict[str, float] = {}

    def record(self, target: str, **figures: Any) -> None:
        """Set a target's figures (cases, exceptions, seconds, ...) and rewrite the file."""
        self.targets[target] = figures
        self.write()

    def example(self, target: str, kind: str | None = None) -> None:
        """Count one hypothesis example of a target (and of its kind); seconds run from its first example."""
        now = time.monotonic()
        first = self._first.setdefault(target, now)
        entry = self.targets.setdefault(target, {"cases": 0, "exceptions": 0, "seconds": 0.0})
        entry["cases"] += 1
        entry["seconds"] = round(now - first, 3)
        if kind is not None:
            by = entry.setdefault("by_kind", {})
            by[kind] = by.get(kind, 0) + 1
            entry["by_kind"] = dict(sorted(by.items()))

    def refused(self, target: str) -> None:
        """Count an example that the target refused with its own error type (the rest it accepted)."""
        entry = self.targets[target]
        entry["refused"] = entry.get("refused", 0) + 1

    def failed(self, target: str) -> None:
        """Count an exception that escaped a hypothesis example, and write the file at once."""
        self.targets.setdefault(target, {"cases": 0, "exceptions": 0, "seconds": 0.0})["exceptions"] += 1
        self.write()

    def document(self) -> dict[str, Any]:
        """The summary as written: budget, seed, totals and the figures of every target run."""
        decoder = sum(f["cases"] for f in self.targets.values() if f.get("decoder"))
        return {
            "budget": fuzz_cases(),
            "seed": fuzz_seed(),
            "python": platform.python_version(),
            "decoder_cases": decoder,
            "exceptions": sum(f.get("exceptions", 0) for f in self.targets.values()),
            "seconds": round(sum(f.get("seconds", 0.0) for f in self.targets.values()), 3),
            "targets": self.targets,
        }

    def write(self) -> None:
        """Write the summary file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.document(), indent=2) + "\n", encoding="utf-8")
