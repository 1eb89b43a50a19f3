"""The API guard against the obvious attacks (SPEC §8): no token, wrong token, other customer, brute force."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.alarms.store import Store
from alarmd.api import Api
from alarmd.config import ApiConfig, Config
from alarmd.dispatch.routing import Router
from alarmd.http import HttpServer
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, fingerprint

CONFIG = Config.model_validate(
    {
        "customers": [
            {"id": "HARBOUR", "name": "Harbour Logistics", "tier": "gold"},
            {"id": "SCHOOL", "name": "Riverside School", "tier": "ordinary"},
        ],
        "devices": [
            {"name": "r1", "kind": "cpe_router", "address": "127.0.0.1", "snmp": {"community": "c"}},
            {"name": "r2", "kind": "cpe_router", "address": "127.0.0.2", "snmp": {"community": "c"}},
        ],
        "circuits": [
            {"id": "CIR-H", "customer": "HARBOUR", "path": [{"device": "r1"}]},
            {"id": "CIR-S", "customer": "SCHOOL", "path": [{"device": "r2"}]},
        ],
    }
)
TOKENS = {"noc": "noc-secret-token", "harbour": "harbour-portal-token", "ops": "ops-reload-token"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def api(tmp_path: Path) -> Api:
    (tmp_path / "tokens.yml").write_text(
        "tokens:\n"
        f"  - {{name: noc, sha256: {sha(TOKENS['noc'])}, scope: all}}\n"
        f"  - {{name: harbour, sha256: {sha(TOKENS['harbour'])}, scope: 'customer:HARBOUR'}}\n"
        f"  - {{name: ops, sha256: {sha(TOKENS['ops'])}, scope: all, can_reload: true}}\n"
    )
    inventory = Inventory(CONFIG)
    book = AlarmBook(inventory, Router().lead_team, Metrics(), Correlator(inventory))
    store = Store(tmp_path / "alarmd.sqlite")
    for device in ("r1", "r2"):
        labels = {"alertname": "BandwidthOccupancyHigh", "device": device, "alarm_class": "data_anomaly"}
        for change in book.apply(
            AlarmTransition(
                kind="firing",
                rule="BandwidthOccupancyHigh",
                labels=labels,
                annotations={},
                value=90,
                threshold=80,
                at=100,
                active_since=100,
                fingerprint=fingerprint(labels),
            )
        ):
            store.save(change.alarm, "raised")
    return Api.from_config(
        ApiConfig(tokens_file="tokens.yml", lockout_after=3, lockout_for=60),
        tmp_path,
        tmp_path,
        book=lambda: book,
        store=store,
        inventory=lambda: inventory,
        clocks=ClockPolicy,
    )


def get(api: Api, path: str, token: str | None = None, peer: str = "10.0.0.9") -> tuple[int, object]:
    status, _, body = api.handle("GET", path, f"Bearer {token}" if token else None, peer)
    return status, json.loads(body) if status == 200 else body.decode()


def test_no_token_and_a_wrong_token_are_refused(api: Api) -> None:
    assert get(api, "/api/v1/alarms")[0] == 401
    assert get(api, "/api/v1/alarms", "not-a-token")[0] == 401
    status, alarms = get(api, "/api/v1/alarms", TOKENS["noc"])
    assert status == 200
    assert {a["customer"] for a in alarms} == {"HARBOUR", "SCHOOL"}  # type: ignore[union-attr]


def test_a_customer_token_never_sees_another_customers_data(api: Api) -> None:
    status, alarms = get(api, "/api/v1/alarms", TOKENS["harbour"])
    assert status == 200
    assert [a["customer"] for a in alarms] == ["HARBOUR"]  # type: ignore[union-attr]
    school = next(a for a in get(api, "/api/v1/alarms", TOKENS["noc"])[1] if a["customer"] == "SCHOOL")  # type: ignore[union-attr]
    assert get(api, f"/api/v1/alarms/{school['alarm_id']}", TOKENS["harbour"])[0] == 403
    assert get(api, "/api/v1/circuits/CIR-S", TOKENS["harbour"])[0] == 403
    status, circuit = get(api, "/api/v1/circuits/CIR-H", TOKENS["harbour"])
    assert status == 200 and circuit["open_faults"][0]["circuit"] == "CIR-H"  # type: ignore[index]
    status, detail = get(api, f"/api/v1/alarms/{school['alarm_id']}", TOKENS["noc"])
    assert status == 200 and detail["history"][0]["event"] == "raised"  # type: ignore[index]


def test_filters(api: Api) -> None:
    status, alarms = get(api, "/api/v1/alarms?tier=gold&class=data_anomaly", TOKENS["noc"])
    assert status == 200 and [a["tier"] for a in alarms] == ["gold"]  # type: ignore[union-attr]


def test_brute_force_locks_the_address_out_and_is_audited(api: Api, tmp_path: Path) -> None:
    for guess in range(3):
        assert get(api, "/api/v1/alarms", f"guess-{guess}", peer="10.6.6.6")[0] == 401
    assert get(api, "/api/v1/alarms", TOKENS["noc"], peer="10.6.6.6")[0] == 429, (
        "even the right token, for now"
    )
    assert get(api, "/api/v1/alarms", TOKENS["noc"], peer="10.0.0.7")[0] == 200, (
        "other addresses are not locked"
    )
    audit = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert {"lockout", "denied", "request"} <= {e["action"] for e in audit}
    assert all(TOKENS["noc"] not in json.dumps(e) and "guess-" not in json.dumps(e) for e in audit), (
        "no secrets"
    )


async def test_over_http_and_reload_needs_a_token_that_may_reload(api: Api) -> None:
    reloads: list[bool] = []

    def reload() -> bool:
        reloads.append(True)
        return True

    server = HttpServer("127.0.0.1", 0, Metrics(), lambda: True, guarded=api.guard(reload))
    await server.start()

    def call(path: str, token: str | None, method: str = "GET") -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert await asyncio.to_thread(call, "/api/v1/alarms", None) == 401
        assert await asyncio.to_thread(call, "/api/v1/alarms", TOKENS["noc"]) == 200
        assert await asyncio.to_thread(call, "/-/reload", TOKENS["noc"], "POST") == 403
        assert await asyncio.to_thread(call, "/-/reload", TOKENS["ops"], "POST") == 200
        assert await asyncio.to_thread(call, "/metrics", None) == 200, "metrics and health stay open"
        assert reloads == [True]
    finally:
        await server.stop()


async def test_without_tokens_the_api_is_closed() -> None:
    server = HttpServer("127.0.0.1", 0, Metrics(), lambda: True)
    await server.start()
    try:

        def call() -> int:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/v1/alarms", timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            return 200

        assert await asyncio.to_thread(call) == 403
    finally:
        await server.stop()
