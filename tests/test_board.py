"""The NOC board: rows from a real AlarmBook, their JSON, and the page as a headless Chromium renders it."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.inhibit import Correlator
from alarmd.alarms.lifecycle import AlarmBook
from alarmd.board import BOARD_HTML, board_json, board_rows
from alarmd.config import Config
from alarmd.dispatch.routing import Router
from alarmd.inventory import Inventory
from alarmd.metrics import Metrics
from alarmd.model import AlarmTransition, fingerprint, isotime

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
T0 = 1_750_000_000.0
WALL_TOKEN = "wall-secret-0123456789"


def _device(name: str, kind: str, address: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "address": address, "snmp": {"community": "c"}}


CONFIG = Config.model_validate(
    {
        "customers": [
            {"id": "C1", "name": "Harbour Logistics", "tier": "gold"},
            {"id": "C2", "name": "Riverside School", "tier": "ordinary"},
            {"id": "C3", "name": "City Bank Data Centre", "tier": "diamond"},
            {"id": "C4", "name": "Northgate Hospital", "tier": "gold"},
        ],
        "devices": [
            _device("cpe-router-01", "cpe_router", "127.0.0.1"),
            _device("optical-tx-01", "optical_transceiver", "127.0.0.2"),
            _device("cpe-router-02", "cpe_router", "127.0.0.3"),
            _device("cpe-router-03", "cpe_router", "127.0.0.4"),
            _device("cpe-router-04", "cpe_router", "127.0.0.5"),
            _device("cpe-router-05", "cpe_router", "127.0.0.6"),
        ],
        "circuits": [
            {
                "id": "CIR-0001",
                "customer": "C1",
                "path": [
                    {"device": "cpe-router-01", "interface": "GigabitEthernet0/0/1"},
                    {"device": "optical-tx-01"},
                ],
            },
            {"id": "CIR-0002", "customer": "C2", "path": [{"device": "cpe-router-02"}]},
            {"id": "CIR-0003", "customer": "C3", "path": [{"device": "cpe-router-03"}]},
            {"id": "CIR-0004", "customer": "C4", "path": [{"device": "cpe-router-04"}]},
            # a second customer behind the same optical transceiver as CIR-0001
            {
                "id": "CIR-0005",
                "customer": "C2",
                "path": [{"device": "cpe-router-05"}, {"device": "optical-tx-01"}],
            },
        ],
    }
)


def wan(device: str, alert: str = "BandwidthOccupancyHigh") -> dict[str, str]:
    return {
        "alertname": alert,
        "device": device,
        "device_kind": "cpe_router",
        "interface": "GigabitEthernet0/0/1",
        "alarm_class": "data_anomaly",
        "severity": "major",
    }


LOS = {
    "alertname": "LineLOS",
    "device": "optical-tx-01",
    "interface": "fiber-1",
    "alarm_class": "transmission",
    "circuit": "CIR-0001",
    "severity": "critical",
}


def make_book() -> AlarmBook:
    inventory = Inventory(CONFIG)
    return AlarmBook(inventory, Router().lead_team, Metrics(), Correlator(inventory))


def fire(labels: dict[str, str], at: float, summary: str = "", kind: str = "firing") -> AlarmTransition:
    return AlarmTransition(
        kind=kind,  # type: ignore[arg-type]
        rule=labels["alertname"],
        labels=labels,
        annotations={"summary": summary or f"{labels['alertname']} on {labels['device']}"},
        value=91.5,
        threshold=80,
        at=at,
        active_since=at,
        fingerprint=fingerprint(labels),
    )


def clear(labels: dict[str, str], at: float) -> AlarmTransition:
    return fire(labels, at, kind="resolved")


def clocks() -> ClockPolicy:
    return ClockPolicy(CONFIG.clocks)


# ---------------------------------------------------------------------------- rows


def test_important_tiers_first_then_least_time_left_and_overdue_is_negative() -> None:
    book = make_book()
    book.apply(fire(wan("cpe-router-02"), T0 - 12_000))  # ordinary: 3 h clock, 1200 s overdue at T0
    book.apply(fire(wan("cpe-router-01"), T0 - 900))  # gold: 1 h clock, 2700 s left
    book.apply(fire(wan("cpe-router-04"), T0 - 1500))  # gold: 2100 s left
    book.apply(fire(wan("cpe-router-03"), T0 - 60))  # diamond: 3540 s left

    rows = board_rows(book, clocks(), T0)

    assert [(r["customer_name"], r["tier"], r["time_left_seconds"]) for r in rows] == [
        ("City Bank Data Centre", "diamond", 3540.0),
        ("Northgate Hospital", "gold", 2100.0),
        ("Harbour Logistics", "gold", 2700.0),
        ("Riverside School", "ordinary", -1200.0),
    ]
    ordinary = rows[-1]
    assert (ordinary["clock"], ordinary["age_seconds"], ordinary["lifecycle"]) == (
        "escalation",
        12_000.0,
        "firing",
    )
    assert (ordinary["circuit"], ordinary["lead_team"], ordinary["alarm_class"]) == (
        "CIR-0002",
        "service_support",
        "data_anomaly",
    )
    assert (ordinary["device"], ordinary["interface"], ordinary["joint_handling"]) == (
        "cpe-router-02",
        "GigabitEthernet0/0/1",
        False,
    )


def test_children_are_folded_under_their_root_cause_not_listed_on_their_own() -> None:
    book = make_book()
    book.apply(fire(wan("cpe-router-01"), T0 - 300))  # raised alone, then folded under the LOS
    los = book.apply(fire(LOS, T0 - 200))[0].alarm
    book.apply(fire(wan("cpe-router-01", "PacketLossHigh"), T0 - 100))  # a child from the start
    book.apply(fire(wan("cpe-router-02"), T0 - 50))  # another customer, unrelated

    rows = board_rows(book, clocks(), T0)

    assert [r["alert"] for r in rows] == ["LineLOS", "BandwidthOccupancyHigh"]
    root = rows[0]
    assert (root["alarm_id"], root["lead_team"], root["alarm_class"]) == (
        los.alarm_id,
        "transport_network",
        "transmission",
    )
    assert [(c["alert"], c["lead_team"], c["children"]) for c in root["children"]] == [
        ("BandwidthOccupancyHigh", "transport_network", []),
        ("PacketLossHigh", "transport_network", []),
    ]
    # a folded child has no work order, so no clock of its own (SPEC §3)
    assert [(c["clock"], c["time_left_seconds"]) for c in root["children"]] == [(None, None), (None, None)]
    assert rows[1]["children"] == []
    # reading the board changes nothing in the book
    assert len(book.active) == 4


def test_after_escalation_the_clock_counts_to_the_next_status_update() -> None:
    book = make_book()
    alarm = book.apply(fire(wan("cpe-router-01"), T0))[0].alarm
    alarm.extra["escalated_at"] = isotime(T0 + 3600)
    alarm.extra["status_updates"] = "1"  # the first hourly update went out at T0 + 7200

    (row,) = board_rows(book, clocks(), T0 + 7300)
    assert (row["lifecycle"], row["clock"], row["time_left_seconds"], row["joint_handling"]) == (
        "escalated",
        "status_update",
        3500.0,
        True,
    )
    (late,) = board_rows(book, clocks(), T0 + 11_400)
    assert late["time_left_seconds"] == -600.0


def test_cleared_faults_in_observation_are_marked_and_follow_the_firing_ones_of_their_tier() -> None:
    book = make_book()
    gone = book.apply(fire(wan("cpe-router-01"), T0 - 2000))[0].alarm
    book.apply(clear(wan("cpe-router-01"), T0 - 1000))
    book.apply(fire(wan("cpe-router-04"), T0 - 3000))  # gold, firing, 600 s left
    closed = book.apply(fire(wan("cpe-router-02"), T0 - 5000))[0].alarm
    book.apply(clear(wan("cpe-router-02"), T0 - 4000))
    closed.extra["closed"] = "true"

    rows = board_rows(book, clocks(), T0)

    assert [(r["customer_name"], r["cleared"], r["lifecycle"]) for r in rows] == [
        ("Northgate Hospital", False, "firing"),
        ("Harbour Logistics", True, "observing"),
    ]
    observed = rows[1]
    assert (observed["alarm_id"], observed["clock"], observed["time_left_seconds"]) == (
        gone.alarm_id,
        "close",
        2600.0,
    )
    assert observed["joint_handling"] is False


def test_a_scoped_caller_sees_only_its_customers_faults_and_never_another_customers_root() -> None:
    book = make_book()
    otx = {"alertname": "DeviceUnreachable", "device": "optical-tx-01", "alarm_class": "transmission"}
    cpe = {"alertname": "DeviceUnreachable", "device": "cpe-router-05", "alarm_class": "data_anomaly"}
    root = book.apply(fire(otx, T0 - 300))[0].alarm
    assert book.apply(fire(cpe, T0 - 290)) == []  # folded under the transceiver
    book.apply(fire(wan("cpe-router-03"), T0 - 100))
    child = book.active[fingerprint(cpe)]
    assert (root.customer, child.customer, child.parent_id) == ("C1", "C2", root.alarm_id)

    everyone = board_rows(book, clocks(), T0)
    assert [(r["alert"], r["customer"], [c["customer"] for c in r["children"]]) for r in everyone] == [
        ("BandwidthOccupancyHigh", "C3", []),
        ("DeviceUnreachable", "C1", ["C2"]),
    ]

    def only(customer: str) -> Any:
        return lambda seen: seen == customer

    # C1 sees its root cause, but not C2's fault folded under it
    (c1,) = board_rows(book, clocks(), T0, sees=only("C1"))
    assert (c1["alarm_id"], c1["children"]) == (root.alarm_id, [])
    # C2 sees its own fault on a row of its own, still clockless, and nothing of C1's
    (c2,) = board_rows(book, clocks(), T0, sees=only("C2"))
    assert (c2["alarm_id"], c2["customer"], c2["clock"], c2["time_left_seconds"]) == (
        child.alarm_id,
        "C2",
        None,
        None,
    )
    assert "Harbour" not in board_json([c2]).decode()
    assert board_rows(book, clocks(), T0, sees=only("C4")) == []


def test_board_json_carries_rows_and_counts_by_lead_team() -> None:
    book = make_book()
    book.apply(fire(LOS, T0 - 200))
    book.apply(fire(wan("cpe-router-01"), T0 - 100))
    book.apply(fire(wan("cpe-router-02"), T0 - 100))
    book.apply(fire(wan("cpe-router-03"), T0 - 100))
    book.apply(fire(wan("cpe-router-04"), T0 - 100))
    book.apply(clear(wan("cpe-router-04"), T0 - 10))

    body = json.loads(board_json(board_rows(book, clocks(), T0)))

    assert body["schema_version"] == 1
    assert body["counts"] == {
        "firing": 3,
        "observing": 1,
        "folded_children": 1,
        "joint_handling": 0,
        "planned": 0,
        "by_lead_team": {"transport_network": 1, "service_support": 2},
    }
    assert [(r["tier"], r["alert"]) for r in body["rows"]] == [
        ("diamond", "BandwidthOccupancyHigh"),
        ("gold", "LineLOS"),
        ("gold", "BandwidthOccupancyHigh"),
        ("ordinary", "BandwidthOccupancyHigh"),
    ]
    assert [r["alert"] for r in body["rows"][1]["children"]] == ["BandwidthOccupancyHigh"]


def test_board_json_is_ascii_json_even_for_hostile_text() -> None:
    book = make_book()
    book.apply(fire(wan("cpe-router-01"), T0, summary="<script>alert(1)</script> 光纤 \u2028"))
    raw = board_json(board_rows(book, clocks(), T0))
    assert raw.isascii() and not {"<", ">", "&"} & set(raw.decode())
    assert json.loads(raw)["rows"][0]["summary"] == "<script>alert(1)</script> 光纤 \u2028"


# ---------------------------------------------------------------------------- page


def _script(page: str) -> str:
    match = re.search(r"<script>(.*?)</script>", page, re.S)
    assert match is not None
    return match.group(1)


def test_page_is_self_contained_and_never_writes_data_as_markup() -> None:
    page = BOARD_HTML.decode()
    script = _script(page)
    # nothing from the network but our own API: no external scripts, styles, fonts or images
    assert not re.search(r"(?:src|href)\s*=", page)
    assert "@import" not in page and "url(" not in page
    assert re.findall(r"https?://", page) == []
    assert "/api/v1/board" in script and "5000" in script
    # text goes in as text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    # the CSP admits exactly this inline script
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page
    assert "connect-src 'self'" in page and "default-src 'none'" in page


# ---------------------------------------------------------------------------- real Chromium


@pytest.fixture
def board_server() -> Iterator[str]:
    """BOARD_HTML at /board, and at /api/v1/board (bearer token required) a gold root cause with its child."""
    book = make_book()
    book.apply(fire(wan("cpe-router-01"), T0 - 2400, "Bandwidth occupancy 91% on the WAN port"))
    book.apply(fire(LOS, T0 - 2280, "Loss of signal on fiber-1 (optical transceiver)"))
    book.apply(fire(wan("cpe-router-02"), T0 - 10_920, "Occupancy 88% for 15 minutes"))
    escalated = book.apply(fire(wan("cpe-router-03", "PacketLossHigh"), T0 - 4000, "Loss 42% to the PE"))
    escalated[0].alarm.extra["escalated_at"] = isotime(T0 - 400)
    book.apply(fire(wan("cpe-router-04", "InterfaceFlapping"), T0 - 7000, "<b>not bold</b> & <i>x</i>"))
    book.apply(clear(wan("cpe-router-04", "InterfaceFlapping"), T0 - 900))
    body = board_json(board_rows(book, clocks(), T0))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            routes = {
                "/board": ("text/html; charset=utf-8", BOARD_HTML),
                "/api/v1/board": ("application/json", body),
            }
            path = self.path.split("?", 1)[0]
            ctype, payload = routes.get(path, ("text/plain", b"not found\n"))
            status = 200 if ctype != "text/plain" else 404
            if path == "/api/v1/board" and self.headers.get("Authorization") != f"Bearer {WALL_TOKEN}":
                status, ctype, payload = 401, "text/plain", b"a valid bearer token is required\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/board"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe, "Debian chromium is missing: run `make system-deps` (tools/system-deps.sh)"
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1920,1080",
        "--virtual-time-budget=3000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.integration
def test_headless_chromium_renders_the_board_with_the_child_folded_under_its_root(
    board_server: str, tmp_path: Path
) -> None:
    shot = tmp_path / "noc-board.png"
    wall = f"{board_server}#token={WALL_TOKEN}"  # the fragment never reaches the server
    done = chromium(tmp_path, f"--screenshot={shot}", wall)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert png_size(shot) == (1920, 1080)
    assert shot.stat().st_size > 20_000, "the screenshot looks blank"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "noc-board.png")

    dom = chromium(tmp_path, "--dump-dom", wall)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert re.search(r'<div id="refresh">refreshed \d\d:\d\d:\d\d</div>', html), html[:3000]
    for text in ("Harbour Logistics", "CIR-0001", "Transport network", "LineLOS", "BandwidthOccupancyHigh"):
        assert text in html, text
    # the child row follows its root row, marked as a child
    rows = re.findall(r'<tr class="([^"]*)" data-alarm-id="[0-9a-f]+">(.*?)</tr>', html, re.S)
    assert [cls for cls, _ in rows][:3] == ["root joint", "root", "child"], rows
    assert "LineLOS" in rows[1][1] and "BandwidthOccupancyHigh" in rows[2][1]
    assert "Harbour Logistics" in rows[1][1]
    # the overdue ordinary fault is shown as overdue, in red
    assert re.search(r'class="num left urgent"><span class="val">OVERDUE 2m 00s</span>', html)
    # text from the data is text, never markup
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; &lt;i&gt;x&lt;/i&gt;" in html
    assert "<b>not bold</b>" not in html


@pytest.mark.integration
def test_headless_chromium_without_a_token_says_so_and_shows_no_rows(
    board_server: str, tmp_path: Path
) -> None:
    dom = chromium(tmp_path, "--dump-dom", board_server)
    assert dom.returncode == 0, dom.stderr[-2000:]
    refresh = re.search(r'<div id="refresh" class="stale">(.*?)</div>', dom.stdout, re.S)
    assert refresh is not None, dom.stdout[:3000]
    assert refresh.group(1) == (
        "REFRESH FAILED (HTTP 401: a valid bearer token is required; open /board#token=...)"
    )
    assert '<tbody id="rows"></tbody>' in dom.stdout
