"""The read-only NOC board: firing root faults with their folded children, as rows, JSON and one HTML page.

:func:`board_rows` is pure: it reads the open faults (an alarm book, or a correlator's
cluster view) and a :class:`ClockPolicy` at a given time and changes neither.
:data:`BOARD_HTML` is a self-contained page (inline CSS and JavaScript, no external
assets) that polls ``/api/v1/board`` every 5 s with the bearer token given once in the
address (``/board#token=...``; a fragment never reaches the server or its logs) and renders
every text with ``textContent``, never ``innerHTML``.  The page holds no data, so it may be
served without a token; the rows behind it may not.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from alarmd.alarms.clocks import ClockPolicy
from alarmd.locale import BOARD_TEXT, Locale
from alarmd.model import Alarm, Team, Tier, major_detail, summary_of

BoardRow = dict[str, Any]


class OpenFaults(Protocol):
    """What the board and the read API read: firing faults and cleared ones, each by fingerprint."""

    @property
    def active(self) -> Mapping[str, Alarm]:
        """Firing faults."""

    @property
    def recent(self) -> Mapping[str, Alarm]:
        """Cleared faults (in observation, or closed lately)."""


BOARD_SCHEMA_VERSION = 1
_TIER_RANK = {Tier.DIAMOND: 0, Tier.GOLD: 1, Tier.ORDINARY: 2}


def _epoch(text: str | None) -> float | None:
    """An RFC 3339 timestamp from ``Alarm.extra`` as epoch seconds, None if absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _clock(alarm: Alarm, clocks: ClockPolicy, now: float) -> tuple[str | None, float | None]:
    """Which clock runs on a fault and the seconds left on it (negative when overdue)."""
    due = clocks.due(alarm)
    if _planned(alarm):
        return "release", (_epoch(alarm.extra.get("held_until")) or now) - now
    if alarm.state == "cleared":
        return ("close", due.observation_ends - now) if due.observation_ends is not None else (None, None)
    if "escalated_at" not in alarm.extra:
        return "escalation", (due.escalation_at or alarm.raised_at) - now
    escalated = _epoch(alarm.extra["escalated_at"]) or due.escalation_at or alarm.raised_at
    sent_text = alarm.extra.get("status_updates", "0")
    sent = int(sent_text) if sent_text.isdigit() else 0
    return "status_update", escalated + (sent + 1) * clocks.config.status_update_every - now


def _planned(alarm: Alarm) -> bool:
    """Held back by a planned outage: recorded and shown, no work order (yet)."""
    return "planned_outage" in alarm.extra and not alarm.dispatched and alarm.state == "firing"


def _row(alarm: Alarm, clocks: ClockPolicy, now: float, locale: Locale = "en") -> BoardRow:
    """One alarm as a board row; a folded child runs no clock of its own (SPEC §3)."""
    folded = alarm.state == "firing" and alarm.parent_id is not None
    clock, left = (None, None) if folded else _clock(alarm, clocks, now)
    major = major_detail(alarm)
    return {
        "major_fault": major is not None,
        "element": major.element if major else None,
        "element_kind": major.element_kind if major else None,
        "affected_circuits": major.circuit_count if major else None,
        "repeat_of": alarm.extra.get("repeat_of"),
        "alarm_id": alarm.alarm_id,
        "parent_alarm_id": alarm.parent_id if folded else None,
        "customer": alarm.customer,
        "customer_name": alarm.customer_name or alarm.customer,
        "tier": alarm.tier.value if alarm.tier else None,
        "circuit": alarm.circuit,
        "lead_team": alarm.lead_team.value,
        "alarm_class": alarm.alarm_class.value,
        "alert": alarm.rule,
        "summary": summary_of(alarm, locale),
        "severity": alarm.severity,
        "device": alarm.labels.get("device"),
        "interface": alarm.labels.get("interface"),
        "lifecycle": alarm.lifecycle,
        "cleared": alarm.state == "cleared",
        "flapping": alarm.flapping,
        "planned_outage": alarm.extra["planned_outage"] if _planned(alarm) else None,
        "occurrences": alarm.occurrences,
        "age_seconds": round(now - alarm.raised_at, 1),
        "clock": clock,
        "time_left_seconds": round(left, 1) if left is not None else None,
        "joint_handling": alarm.state == "firing" and "escalated_at" in alarm.extra,
        "children": [],
    }


def _sort_key(row: BoardRow) -> tuple[bool, int, bool, float]:
    """Firing major faults first, then important tiers, firing before observing, then the least time left."""
    tier = _TIER_RANK.get(Tier(row["tier"]), 3) if row["tier"] else 3
    left = row["time_left_seconds"]
    return (
        not (row["major_fault"] and not row["cleared"]),
        tier,
        row["cleared"],
        left if left is not None else float("inf"),
    )


def board_rows(
    book: OpenFaults,
    clocks: ClockPolicy,
    now: float,
    *,
    sees: Callable[[str | None], bool] | None = None,
    locale: Locale = "en",
) -> list[BoardRow]:
    """The board at ``now``: firing root faults with their children folded in, and those in observation.

    ``sees`` (customer id -> bool) limits the board to what a scoped caller may see (SPEC §8): a
    visible child of a hidden root cause gets a row of its own, still without a clock.
    """
    visible = sees or (lambda _customer: True)
    firing = [a for a in book.active.values() if visible(a.customer)]
    shown_roots = {a.alarm_id for a in firing if a.parent_id is None}
    children: dict[str, list[Alarm]] = {}
    for alarm in firing:
        if alarm.parent_id in shown_roots:
            children.setdefault(alarm.parent_id or "", []).append(alarm)
    rows = []
    for alarm in firing:
        if alarm.parent_id in shown_roots:
            continue
        row = _row(alarm, clocks, now, locale)
        kids = sorted(children.get(alarm.alarm_id, ()), key=lambda a: (a.raised_at, a.rule))
        row["children"] = [_row(kid, clocks, now, locale) for kid in kids]
        rows.append(row)
    observing = (
        a
        for a in book.recent.values()
        if a.state == "cleared" and not a.extra.get("closed") and a.parent_id is None and visible(a.customer)
    )
    rows.extend(_row(alarm, clocks, now, locale) for alarm in observing)
    rows.sort(key=_sort_key)
    return rows


def board_counts(rows: Sequence[BoardRow]) -> dict[str, Any]:
    """Head counts for the board: firing root faults by lead team, folded children, faults in observation."""
    firing = [r for r in rows if not r["cleared"]]
    observing = [r for r in rows if r["cleared"]]
    by_team = Counter(str(r["lead_team"]) for r in firing)
    return {
        "firing": len(firing),
        "major_faults": sum(1 for r in firing if r["major_fault"]),
        "observing": len(observing),
        "folded_children": sum(len(r["children"]) for r in firing),
        "joint_handling": sum(1 for r in firing if r["joint_handling"]),
        "planned": sum(1 for r in firing if r["planned_outage"]),
        "by_lead_team": {team.value: by_team.get(team.value, 0) for team in Team},
    }


def board_json(rows: list[BoardRow], locale: Locale = "en") -> bytes:
    """The body of ``GET /api/v1/board``: rows, head counts and the page's words, as ASCII JSON.

    ``<>&`` are escaped too, so that no content sniffing can take the body for markup.
    """
    body = {
        "schema_version": BOARD_SCHEMA_VERSION,
        "locale": locale,
        "text": BOARD_TEXT[locale],
        "counts": board_counts(rows),
        "rows": rows,
    }
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    # these occur only inside JSON strings, so escaping them keeps the value and defeats content sniffing
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


_CSS = """
:root { --bg:#0b0f14; --panel:#121922; --line:#223041; --fg:#e6edf3; --dim:#8b9bb0;
  --red:#ff4d4f; --amber:#f5a524; --green:#3fb950; --blue:#58a6ff; }
* { box-sizing:border-box; }
html, body { margin:0; background:var(--bg); color:var(--fg);
  font:18px/1.35 "DejaVu Sans","Liberation Sans","Noto Sans CJK SC","WenQuanYi Zen Hei",Arial,sans-serif; }
header { display:flex; align-items:center; gap:28px; padding:14px 24px;
  background:var(--panel); border-bottom:2px solid var(--line); }
h1 { font-size:26px; margin:0; letter-spacing:.5px; white-space:nowrap; }
.stats { display:flex; gap:14px; flex-wrap:wrap; flex:1; }
.stat { background:#0e141b; border:1px solid var(--line); border-radius:6px; padding:4px 12px; }
.stat b { font-size:24px; margin-left:8px; font-variant-numeric:tabular-nums; }
.stat.warn b { color:var(--red); }
#refresh { color:var(--dim); white-space:nowrap; font-variant-numeric:tabular-nums; }
#refresh.stale { color:var(--red); font-weight:bold; }
main { padding:12px 24px; }
table { width:100%; border-collapse:collapse; table-layout:fixed; }
th { text-align:left; color:var(--dim); font-weight:normal; font-size:15px; text-transform:uppercase;
  letter-spacing:.6px; padding:6px 8px; border-bottom:2px solid var(--line); }
td { padding:8px; border-bottom:1px solid var(--line); vertical-align:top;
  overflow:hidden; text-overflow:ellipsis; }
td.wrap { white-space:normal; overflow-wrap:anywhere; }
td.nowrap { white-space:nowrap; }
tr.root > td { background:#101720; }
tr.root.joint > td:first-child { box-shadow:inset 5px 0 0 var(--red); }
tr.cleared > td { color:var(--dim); background:transparent; }
tr.child > td { font-size:16px; color:#c9d4e0; background:#0d1319; }
tr.child td.cust { padding-left:40px; }
.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.left .val { display:block; }
.left .what { display:block; color:var(--dim); font-size:13px; font-weight:normal; }
.left.urgent .val { color:var(--red); font-weight:bold; }
.left.soon .val { color:var(--amber); }
.badge { display:inline-block; min-width:84px; text-align:center; padding:2px 8px; border-radius:4px;
  font-size:14px; font-weight:bold; text-transform:uppercase; letter-spacing:.5px; }
.tier-diamond { background:#7c4dff; color:#fff; }
.tier-gold { background:#d4a017; color:#111; }
.tier-ordinary { background:#30363d; color:#c9d1d9; }
.tier-none { background:transparent; color:var(--dim); border:1px solid var(--line); }
.tag { display:inline-block; font-size:13px; padding:1px 6px; border-radius:3px; margin-left:6px;
  border:1px solid var(--line); color:var(--dim); vertical-align:middle; }
.tag.joint { border-color:var(--red); color:var(--red); }
.tag.obs { border-color:var(--green); color:var(--green); }
.tag.flap { border-color:var(--amber); color:var(--amber); }
.tag.planned { border-color:var(--dim); color:var(--dim); }
.alert { font-weight:bold; }
.summary { display:block; color:var(--dim); font-size:15px; }
.where { display:block; color:var(--dim); font-size:14px; }
button.fold { background:none; border:1px solid var(--line); color:var(--blue); border-radius:4px;
  font:inherit; font-size:14px; padding:0 6px; margin-right:8px; cursor:pointer; }
tr.major > td { background:#2b1216; }
tr.major > td:first-child { box-shadow:inset 5px 0 0 var(--red); }
.tag.major { border-color:var(--red); background:var(--red); color:#fff; font-weight:bold; margin-left:0; }
.element { font-weight:bold; }
td.count b { color:var(--red); font-size:22px; }
#empty { padding:40px; text-align:center; color:var(--green); font-size:26px; }
"""

_SCRIPT = """
"use strict";
const collapsed = new Set();
const seen = new Set();
let lastOk = null;
let T = {};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function t(key, fallback) { return T[key] || fallback || key; }
function dur(seconds) {
  const s = Math.abs(Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  if (h >= 24) return Math.floor(h / 24) + "d " + (h % 24) + "h";
  if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
  return m + "m " + String(s % 60).padStart(2, "0") + "s";
}
function clockCell(td, row, child) {
  const left = row.time_left_seconds;
  if (child || left === null || left === undefined) {
    td.appendChild(el("span", "val", child ? t("folded_clock") : "\\u2014"));
    return;
  }
  td.appendChild(el("span", "val", left < 0 ? t("overdue") + dur(left) : dur(left)));
  const what = row.clock ? t("to_" + row.clock, "") : "";
  td.appendChild(el("span", "what", (left < 0 ? t("past_due") : "") + what));
  if (row.planned_outage) return;  // held by planned work: no repair clock runs yet
  if (!row.cleared && left < 600) td.classList.add("urgent");
  else if (!row.cleared && left < 1800) td.classList.add("soon");
}
function cell(tr, cls, text) { const td = el("td", cls, text); tr.appendChild(td); return td; }

function renderRow(tbody, row, child) {
  const tr = el("tr", child ? "child" : "root");
  if (row.cleared) tr.classList.add("cleared");
  if (row.joint_handling) tr.classList.add("joint");
  if (row.major_fault) tr.classList.add("major");
  tr.dataset.alarmId = row.alarm_id;
  const cust = cell(tr, "cust wrap");
  if (!child && row.children.length) {
    if (row.major_fault && row.children.length > 5 && !seen.has(row.alarm_id)) collapsed.add(row.alarm_id);
    seen.add(row.alarm_id);
    const btn = el("button", "fold", (collapsed.has(row.alarm_id) ? "+" : "\\u2212") + row.children.length);
    btn.title = "fold or unfold the alarms under this root cause";
    btn.addEventListener("click", () => {
      if (collapsed.has(row.alarm_id)) collapsed.delete(row.alarm_id); else collapsed.add(row.alarm_id);
      render(window.lastBoard);
    });
    cust.appendChild(btn);
  }
  if (child) cust.appendChild(el("span", "tag", t("child")));
  if (row.major_fault) {
    cust.appendChild(el("span", "tag major", t("major_tag")));
    cust.appendChild(el("span", "element", " " + row.element));
  } else {
    const name = row.customer_name || (child ? "" : "\\u2014");
    cust.appendChild(el("span", null, child ? " " + name : name));
  }
  const tierTd = cell(tr, "nowrap");
  if (!child) {
    const tier = row.tier || "none";
    tierTd.appendChild(el("span", "badge tier-" + tier, row.tier ? t("tier_" + tier, tier) : tier));
  }
  if (row.major_fault) {
    const count = cell(tr, "nowrap count");
    count.appendChild(el("b", null, row.affected_circuits));
    count.appendChild(el("span", null, " " + t("circuits")));
  } else {
    cell(tr, "nowrap", row.circuit || "\\u2014");
  }
  cell(tr, "nowrap", t("team_" + row.lead_team, row.lead_team));
  cell(tr, "nowrap", t("class_" + row.alarm_class, row.alarm_class));
  const what = cell(tr, "wrap");
  what.appendChild(el("span", "alert", row.alert));
  if (row.joint_handling) what.appendChild(el("span", "tag joint", t("joint_tag")));
  if (row.cleared) what.appendChild(el("span", "tag obs", t("observing_tag")));
  if (row.flapping) what.appendChild(el("span", "tag flap", t("flapping_tag")));
  if (row.repeat_of) what.appendChild(el("span", "tag flap", t("repeat_tag")));
  if (row.planned_outage) what.appendChild(el("span", "tag planned", t("planned_tag") + row.planned_outage));
  if (row.summary && row.summary !== row.alert) what.appendChild(el("span", "summary", row.summary));
  const where = [row.device, row.interface].filter(Boolean).join(" / ");
  if (where) what.appendChild(el("span", "where", where));
  cell(tr, "nowrap", t("lc_" + row.lifecycle, row.lifecycle));
  cell(tr, "num", dur(row.age_seconds));
  clockCell(cell(tr, "num left"), row, child);
  tbody.appendChild(tr);
  if (child && collapsed.has(row.parent_alarm_id)) tr.hidden = true;
}

function stat(box, label, value, warn) {
  const s = el("span", "stat" + (warn ? " warn" : ""), label);
  s.appendChild(el("b", null, value));
  box.appendChild(s);
}

function render(board) {
  window.lastBoard = board;
  T = board.text || {};
  document.documentElement.lang = board.locale || "en";
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  const c = board.counts;
  const stats = document.getElementById("stats");
  stats.replaceChildren();
  stat(stats, t("firing"), c.firing, c.firing > 0);
  stat(stats, t("major"), c.major_faults || 0, c.major_faults > 0);
  stat(stats, t("transport_network"), c.by_lead_team.transport_network || 0);
  stat(stats, t("service_support"), c.by_lead_team.service_support || 0);
  stat(stats, t("joint"), c.joint_handling, c.joint_handling > 0);
  stat(stats, t("folded"), c.folded_children);
  stat(stats, t("observing"), c.observing);
  const tbody = document.getElementById("rows");
  tbody.replaceChildren();
  for (const row of board.rows) {
    renderRow(tbody, row, false);
    for (const kid of row.children) {
      kid.parent_alarm_id = row.alarm_id;
      renderRow(tbody, kid, true);
    }
  }
  document.getElementById("empty").hidden = board.rows.length > 0;
}

function clockText(when) { return when.toLocaleTimeString([], { hour12: false }); }
function stamp() {
  const r = document.getElementById("refresh");
  r.textContent = lastOk
    ? t("refreshed", "refreshed ") + clockText(lastOk)
    : t("not_loaded", "not yet loaded");
}

// The API wants a bearer token: open the wall as /board#token=..., kept for this tab only.
function token() {
  const found = new URLSearchParams(location.hash.slice(1)).get("token");
  if (found) {
    sessionStorage.setItem("alarmd-board-token", found);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("alarmd-board-token");
}

async function refresh() {
  const r = document.getElementById("refresh");
  try {
    const bearer = token();
    const headers = bearer ? { Authorization: "Bearer " + bearer } : {};
    const resp = await fetch("/api/v1/board", { cache: "no-store", headers: headers });
    if (!resp.ok) {
      const why = (await resp.text()).trim().slice(0, 200);
      const hint = bearer ? "" : "; open /board#token=...";
      throw new Error("HTTP " + resp.status + (why ? ": " + why : "") + hint);
    }
    render(await resp.json());
    lastOk = new Date();
    r.classList.remove("stale");
    stamp();
  } catch (err) {
    r.classList.add("stale");
    r.textContent = t("refresh_failed", "REFRESH FAILED") + " (" + String(err.message || err) + ")" +
      (lastOk ? " \\u2014 data of " + clockText(lastOk) : "");
  }
}
refresh();
setInterval(refresh, 5000);
"""

_BODY = """<header>
<h1 data-t="title">alarmd &middot; NOC board</h1>
<div id="stats" class="stats"></div>
<div id="refresh">not yet loaded</div>
</header>
<main>
<table>
<colgroup>
<col style="width:17%"><col style="width:7%"><col style="width:8%">
<col style="width:10%"><col style="width:9%"><col style="width:25%">
<col style="width:7%"><col style="width:6%"><col style="width:11%">
</colgroup>
<thead><tr>
<th data-t="customer">Customer</th><th data-t="tier">Tier</th><th data-t="circuit">Circuit</th>
<th data-t="lead_team">Lead team</th><th data-t="class">Class</th><th data-t="alert">Alert / summary</th>
<th data-t="lifecycle">Lifecycle</th><th class="num" data-t="age">Age</th>
<th class="num" data-t="left">Time left</th>
</tr></thead>
<tbody id="rows"></tbody>
</table>
<div id="empty" hidden data-t="empty">No firing faults</div>
</main>"""


def _page() -> bytes:
    """Assemble the page, with a Content-Security-Policy that admits only its own inline script and style."""
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        "connect-src 'self'; "
        "img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        "<title>alarmd NOC board</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n{_BODY}\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    ).encode()


BOARD_HTML: bytes = _page()
"""The board page (``GET /board``), self-contained: inline CSS and script, no external assets."""
