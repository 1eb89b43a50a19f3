"""The fuzz suite's summary: one per session, written to its file and printed at the end of the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.summary import SUMMARY_FILE, Summary

_SUMMARY = pytest.StashKey[Summary]()


@pytest.fixture(scope="session")
def fuzz_summary(pytestconfig: pytest.Config) -> Iterator[Summary]:
    """The run's summary; written again when the session ends."""
    summary = Summary(SUMMARY_FILE)
    pytestconfig.stash[_SUMMARY] = summary
    yield summary
    summary.write()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the fuzz summary after the run, when fuzz targets ran."""
    summary = config.stash.get(_SUMMARY, None)
    if summary is None or not summary.targets:
        return
    terminalreporter.section("fuzz summary")
    terminalreporter.write_line(f"{summary.path}:")
    terminalreporter.write_line(json.dumps(summary.document(), indent=2))
