"""``alarmd maintenance add|list|end`` against the API over loopback HTTP: rights, scopes, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.maintenance import Outages
from alarmd.alarms.store import Store
from alarmd.api import Api
from alarmd.cli import main
from alarmd.config import ApiConfig, MaintenanceConfig
from alarmd.dispatch.routing import Router
from alarmd.http import HttpServer
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from tests.test_api import CONFIG, sha

TOKENS = {"desk": "change-desk-token", "noc": "noc-wall-token", "harbour": "harbour-portal-token"}


class Daemon:
    """The API with planned outages behind a real HTTP server on a free loopback port."""

    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "tokens.yml").write_text(
            "tokens:\n"
            f"  - {{name: change-desk, sha256: {sha(TOKENS['desk'])}, scope: all, can_maintain: true}}\n"
            f"  - {{name: noc, sha256: {sha(TOKENS['noc'])}, scope: all}}\n"
            f"  - {{name: harbour, sha256: {sha(TOKENS['harbour'])}, scope: 'customer:HARBOUR'}}\n"
        )
        inventory = Inventory(CONFIG)
        self.store = Store(tmp_path / "alarmd.sqlite")
        self.outages = Outages(self.store, MaintenanceConfig(), 8.0, Metrics())
        self.audit = tmp_path / "audit.log"
        self.api = Api.from_config(
            ApiConfig(tokens_file="tokens.yml"),
            tmp_path,
            tmp_path,
            book=lambda: AlarmBook(inventory, Router().lead_team, Metrics(), Correlator(inventory)),
            store=self.store,
            inventory=lambda: inventory,
            clocks=ClockPolicy,
            outages=self.outages,
        )
        self.server = HttpServer(
            "127.0.0.1", 0, Metrics(), lambda: True, guarded=self.api.guard(lambda: True)
        )


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    running = Daemon(tmp_path)
    await running.server.start()
    try:
        yield running
    finally:
        await running.server.stop()


async def cli(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], token: str, *args: str
) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{daemon.server.port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ALARMD_API_TOKEN", TOKENS[token])
        code = await asyncio.to_thread(main, ["maintenance", "--url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_add_list_and_end_round_trip_with_audit(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(
        daemon, capsys, "desk", "add", "--id", "CHG-42", "--start", "+1h", "--for", "2h",
        "--device", "r1", "--reason", "converter swap", "--by", "Li Wei",
    )  # fmt: skip
    assert code == 0
    assert out.startswith("CHG-42: scheduled ") and out.rstrip().endswith("circuits: CIR-H")
    code, out, _ = await cli(daemon, capsys, "noc", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["id", "state", "starts_at", "ends_at", "circuits", "reason", "created_by"]
    assert row.split()[:2] == ["CHG-42", "scheduled"] and "Li Wei" in row
    code, out, _ = await cli(daemon, capsys, "desk", "end", "CHG-42")
    assert (code, out.strip()) == (0, "CHG-42: cancelled (by change-desk)")
    assert (await cli(daemon, capsys, "noc", "list"))[1].startswith("no planned outages scheduled or active")
    code, out, _ = await cli(daemon, capsys, "noc", "list", "--all", "--format", "json")
    assert [(o["id"], o["state"], o["created_by"]) for o in json.loads(out)] == [
        ("CHG-42", "cancelled", "Li Wei")
    ]
    audit = [json.loads(line) for line in daemon.audit.read_text().splitlines()]
    changes = [
        (e["action"], e["token"], e["detail"].split(" -> ")[0]) for e in audit if e["action"] == "maintenance"
    ]
    assert changes == [
        ("maintenance", "change-desk", "POST /api/v1/maintenance"),
        ("maintenance", "change-desk", "POST /api/v1/maintenance/CHG-42/end"),
    ]
    assert all(TOKENS["desk"] not in json.dumps(e) for e in audit)


async def test_only_a_token_that_may_maintain_changes_outages(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await cli(
        daemon, capsys, "noc", "add", "--for", "1h", "--circuit", "CIR-H", "--reason", "x"
    )
    assert code == 1
    assert "403: this token may not change planned outages" in err
    assert daemon.outages.by_id == {}


async def test_bad_requests_say_what_is_wrong(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cli(
        daemon, capsys, "desk", "add", "--for", "1h", "--circuit", "CIR-X", "--reason", "x"
    )
    assert (code, err.strip()) == (
        1,
        "alarmd: POST /api/v1/maintenance: 400: circuits[0]: unknown circuit 'CIR-X'",
    )
    code, _, err = await cli(daemon, capsys, "desk", "add", "--for", "1h", "--reason", "x")
    assert code == 1 and "needs a scope" in err
    code, _, err = await cli(daemon, capsys, "desk", "end", "CHG-404")
    assert code == 1 and "404: no outage 'CHG-404'" in err
    code, _, err = await cli(
        daemon, capsys, "desk", "add", "--start", "tomorrow", "--for", "1h", "--reason", "x"
    )
    assert code == 1 and "'tomorrow' is not an RFC 3339 time" in err


async def test_a_customer_token_sees_only_its_own_circuits_in_an_outage(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    await cli(
        daemon, capsys, "desk", "add", "--for", "1h", "--device", "r1", "--device", "r2", "--reason", "core"
    )
    _, out, _ = await cli(daemon, capsys, "harbour", "list", "--format", "json")
    (seen,) = json.loads(out)
    assert (seen["affected_circuits"], seen["affected_customers"], seen["devices"]) == (
        ["CIR-H"],
        ["HARBOUR"],
        [],
    )


async def test_without_a_token_or_a_daemon_the_cli_says_so(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALARMD_API_TOKEN", raising=False)
    url = f"http://127.0.0.1:{daemon.server.port}"
    assert await asyncio.to_thread(main, ["maintenance", "--url", url, "list"]) == 1
    assert "no API token: set ALARMD_API_TOKEN or pass --token-file" in capsys.readouterr().err
    await daemon.server.stop()
    monkeypatch.setenv("ALARMD_API_TOKEN", TOKENS["noc"])
    assert await asyncio.to_thread(main, ["maintenance", "--url", url, "list"]) == 1
    assert f"cannot reach alarmd at {url}" in capsys.readouterr().err


async def test_a_request_body_over_64_kib_is_refused_unread(daemon: Daemon) -> None:
    async def post(length: int, body: bytes = b"") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.server.port)
        writer.write(
            f"POST /api/v1/maintenance HTTP/1.1\r\nAuthorization: Bearer {TOKENS['desk']}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status = await reader.readline()
        writer.close()
        return status

    assert (await post(65_537)).startswith(b"HTTP/1.1 413 ")  # answered before any of it is sent
    assert (await post(2, b"{}")).startswith(b"HTTP/1.1 400 "), "a body within the limit is read and judged"
