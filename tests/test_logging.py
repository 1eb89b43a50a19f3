from __future__ import annotations

import json
import logging

import pytest

from alarmd import logging as alarmd_logging


def test_a_library_log_line_is_json_like_ours(capsys: pytest.CaptureFixture[str]) -> None:
    alarmd_logging.setup("info", "json")
    try:
        logging.getLogger("aiokafka.conn").warning("Unable to connect to node %s", 1)
        lines = capsys.readouterr().err.splitlines()
    finally:
        logging.basicConfig(force=True)
    entry = json.loads(lines[-1])
    assert entry["event"] == "Unable to connect to node 1"
    assert (entry["level"], entry["logger"]) == ("warning", "aiokafka.conn")
    assert entry["timestamp"].endswith("Z")
