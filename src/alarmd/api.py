"""The read API and its guard (SPEC §8): hashed bearer tokens, customer scopes, lockout, audit.

Tokens live in a YAML file (``api.tokens_file``) as SHA-256 hashes, never in clear::

    tokens:
      - {name: noc-wall, sha256: <hex>, scope: all}
      - {name: harbour-portal, sha256: <hex>, scope: "customer:CUST-0001"}
      - {name: ops, sha256: <hex>, scope: all, can_reload: true}
      - {name: change-desk, sha256: <hex>, scope: all, can_maintain: true}

``/api/v1/board`` (the NOC board's rows), ``/api/v1/alarms`` (filters ``state``, ``class``,
``team``, ``tier``, ``customer``),
``/api/v1/alarms/{id}`` (with its history), ``/api/v1/circuits/{id}`` and
``/api/v1/maintenance`` (planned outages) need a token; a customer-scoped token sees only its
customer's faults, circuits and outages.  ``POST /api/v1/maintenance`` (a JSON outage) and
``POST /api/v1/maintenance/{id}/end`` need a token with ``can_maintain``.  An address that fails
``lockout_after`` times is refused for ``lockout_for``.  Every request and reload is written to
the audit log with the token's name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, ValidationError

from alarmd.alarms.clocks import ClockPolicy
from alarmd.alarms.maintenance import Outage, OutageError, Outages, OutageSpec
from alarmd.alarms.store import Store, StoreError
from alarmd.board import OpenFaults, board_json, board_rows
from alarmd.config import ApiConfig, Strict, read_yaml, validate
from alarmd.inventory import Inventory
from alarmd.locale import Locale
from alarmd.model import Alarm

Reply = tuple[int, str, bytes]


class TokenSpec(Strict):
    """One API token, by its hash."""

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scope: str = Field("all", pattern=r"^(all|customer:.+)$")
    can_reload: bool = False
    can_maintain: bool = Field(False, description="may add and end planned outages")


class TokenFile(Strict):
    """The tokens file."""

    tokens: list[TokenSpec] = []


def load_tokens(path: Path) -> list[TokenSpec]:
    """Read and validate a tokens file."""
    return validate(read_yaml(path), TokenFile).tokens


@dataclass
class Api:
    """Answers ``/api/v1/...`` for callers that show a valid token, and keeps the audit trail."""

    config: ApiConfig
    tokens: list[TokenSpec]
    book: Callable[[], OpenFaults]
    store: Store
    inventory: Callable[[], Inventory]
    clocks: Callable[[], ClockPolicy]
    audit_path: Path
    now: Callable[[], float] = time.time
    outages: Outages | None = None
    locale: Callable[[], Locale] = lambda: "en"
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: ApiConfig, base: Path, state_dir: Path, **kwargs: Any) -> Api:
        """Build the API, reading the tokens file named in the config (relative to ``base``)."""
        tokens: list[TokenSpec] = []
        if config.tokens_file:
            path = Path(config.tokens_file)
            tokens = load_tokens(path if path.is_absolute() else base / path)
        return cls(config=config, tokens=tokens, audit_path=state_dir / config.audit_log, **kwargs)

    # ------------------------------------------------------------------ guard

    def authenticate(self, authorization: str | None, peer: str) -> TokenSpec | Reply:
        """The caller's token, or the reply that refuses it (401, or 429 while locked out)."""
        now = self.now()
        if self._locked.get(peer, 0) > now:
            return 429, "text/plain", b"too many failed attempts; locked out for a while\n"
        presented = (authorization or "").removeprefix("Bearer ").strip()
        if presented and authorization and authorization.startswith("Bearer "):
            digest = hashlib.sha256(presented.encode()).hexdigest()
            for token in self.tokens:
                if hmac.compare_digest(digest, token.sha256):
                    self._failures.pop(peer, None)
                    return token
        recent = [t for t in self._failures.get(peer, []) if now - t < self.config.lockout_for] + [now]
        self._failures[peer] = recent
        if len(recent) >= self.config.lockout_after:
            self._locked[peer] = now + self.config.lockout_for
            self._failures.pop(peer, None)
            self.audit("lockout", None, peer, f"after {len(recent)} failed attempts")
        return 401, "text/plain", b"a valid bearer token is required\n"

    def audit(self, action: str, token: TokenSpec | None, peer: str, detail: str = "") -> None:
        """Append who did what to the audit log."""
        entry = {
            "at": self.now(),
            "action": action,
            "token": token.name if token else None,
            "peer": peer,
            "detail": detail,
        }
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        with self.audit_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def guard(self, reload: Callable[[], bool]) -> Callable[[str, str, str | None, str, bytes], Reply]:
        """The HTTP server's handler for ``/api/...`` and ``POST /-/reload`` (tokens with ``can_reload``)."""

        def guarded(
            method: str, target: str, authorization: str | None, peer: str, body: bytes = b""
        ) -> Reply:
            if urlsplit(target).path != "/-/reload":
                return self.handle(method, target, authorization, peer, body)
            found = self.authenticate(authorization, peer)
            if isinstance(found, tuple):
                self.audit("denied", None, peer, f"{method} /-/reload -> {found[0]}")
                return found
            if method != "POST" or not found.can_reload:
                self.audit("denied", found, peer, f"{method} /-/reload -> 403")
                return 403, "text/plain", b"this token may not reload\n"
            ok = reload()
            self.audit("reload", found, peer, "applied" if ok else "refused: invalid configuration")
            if ok:
                return 200, "text/plain", b"reloaded\n"
            return (
                500,
                "text/plain",
                b"reload failed; the previous configuration stays in force (see the log)\n",
            )

        return guarded

    # ------------------------------------------------------------------ requests

    def handle(
        self, method: str, target: str, authorization: str | None, peer: str, body: bytes = b""
    ) -> Reply:
        """Answer one API request."""
        found = self.authenticate(authorization, peer)
        if isinstance(found, tuple):
            self.audit("denied", None, peer, f"{method} {urlsplit(target).path} -> {found[0]}")
            return found
        token = found
        url = urlsplit(target)
        if url.path.startswith("/api/v1/maintenance"):
            return self._maintenance(method, url.path, body, token, peer)
        reply = self._route(method, url.path, parse_qs(url.query), token)
        if not (
            url.path == "/api/v1/board" and reply[0] == 200
        ):  # the wall polls every 5 s; not worth a line
            self.audit("request", token, peer, f"{method} {url.path} -> {reply[0]}")
        return reply

    def _route(self, method: str, path: str, query: dict[str, list[str]], token: TokenSpec) -> Reply:
        if method != "GET":
            return 405, "text/plain", b"the API is read-only\n"
        parts = path.strip("/").split("/")
        if parts == ["api", "v1", "board"]:
            locale = self.locale()
            rows = board_rows(
                self.book(), self.clocks(), self.now(), sees=lambda c: self._sees(token, c), locale=locale
            )
            return 200, "application/json", board_json(rows, locale)
        if parts[:3] == ["api", "v1", "alarms"] and len(parts) == 3:
            return _json([self._alarm(a) for a in self._alarms(query) if self._sees(token, a.customer)])
        if parts[:3] == ["api", "v1", "alarms"] and len(parts) == 4:
            return self._alarm_detail(parts[3], token)
        if parts[:3] == ["api", "v1", "circuits"] and len(parts) == 4:
            return self._circuit(parts[3], token)
        return (
            404,
            "text/plain",
            b"not found; try /api/v1/alarms, /api/v1/alarms/{id}, /api/v1/circuits/{id}\n",
        )

    def _maintenance(self, method: str, path: str, body: bytes, token: TokenSpec, peer: str) -> Reply:
        """Planned outages: list them (GET), add one (POST a JSON outage), end one (POST .../{id}/end)."""
        parts = path.strip("/").split("/")[3:]
        ending = len(parts) == 2 and parts[1] == "end"
        reply: Reply
        if self.outages is None:
            reply = 404, "text/plain", b"planned outages are not kept by this daemon\n"
        elif method == "GET" and not parts:
            now = self.now()
            seen = [self._outage(o, now, token) for o in self.outages.by_id.values()]
            reply = _json(sorted((o for o in seen if o is not None), key=lambda o: str(o["starts_at"])))
        elif method != "POST" or (parts and not ending):
            reply = 405, "text/plain", b"GET or POST /api/v1/maintenance, POST /api/v1/maintenance/{id}/end\n"
        elif not token.can_maintain or token.scope != "all":
            reply = 403, "text/plain", b"this token may not change planned outages\n"
        else:
            reply = self._change_outage(self.outages, parts, body, token)
        self.audit(
            "maintenance" if method == "POST" and reply[0] in (200, 201) else "request",
            token,
            peer,
            f"{method} {path} -> {reply[0]}"
            + (f": {reply[2].decode(errors='replace')[:200]}" if method == "POST" else ""),
        )
        return reply

    def _change_outage(self, outages: Outages, parts: list[str], body: bytes, token: TokenSpec) -> Reply:
        now = self.now()
        try:
            if parts:
                by = json.loads(body or b"{}").get("by") or token.name
                outage = outages.end(parts[0], str(by), now)
                return _json(outage.view(now))
            spec = OutageSpec.model_validate_json(body or b"{}")
            outage = outages.add(spec, self.inventory(), created_by=token.name, now=now)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            return 400, "text/plain", f"{where}: {first['msg'].removeprefix('Value error, ')}\n".encode()
        except OutageError as exc:
            return exc.status, "text/plain", f"{exc}\n".encode()
        except (ValueError, AttributeError):
            return 400, "text/plain", b'the body is a JSON object: {"by": "who"}\n'
        except StoreError as exc:
            return 503, "text/plain", f"{exc}\n".encode()
        return 201, "application/json", _json(outage.view(now))[2]

    def _outage(self, outage: Outage, now: float, token: TokenSpec) -> dict[str, object] | None:
        """An outage as the caller may see it: a customer's token sees its own circuits in it only."""
        view = outage.view(now)
        if token.scope == "all":
            return view
        mine = token.scope.removeprefix("customer:")
        if mine not in outage.affected_customers:
            return None
        circuits = self.inventory().circuits

        def own(ids: list[str]) -> list[str]:
            return [c for c in ids if c in circuits and circuits[c].customer == mine]

        view.update(
            affected_customers=[mine],
            customers=[mine] if mine in outage.customers else [],
            affected_circuits=own(outage.affected_circuits),
            circuits=own(outage.circuits),
            devices=[],
            matchers=[],
        )
        return view

    def _alarm_detail(self, alarm_id: str, token: TokenSpec) -> Reply:
        alarm = next((a for a in self._alarms({}) if a.alarm_id == alarm_id), None)
        if alarm is None:
            return 404, "text/plain", b"no such alarm\n"
        if not self._sees(token, alarm.customer):
            return 403, "text/plain", b"this alarm belongs to another customer\n"
        history = [
            {"at": at, "event": event, "detail": detail}
            for at, event, detail in self.store.history(alarm.alarm_id)
        ]
        return _json({**self._alarm(alarm), "history": history})

    def _circuit(self, circuit_id: str, token: TokenSpec) -> Reply:
        circuit = self.inventory().circuits.get(circuit_id)
        if circuit is None:
            return 404, "text/plain", b"no such circuit\n"
        if not self._sees(token, circuit.customer):
            return 403, "text/plain", b"this circuit belongs to another customer\n"
        open_faults = [self._alarm(a) for a in self._alarms({}) if a.circuit == circuit.id]
        return _json(
            {
                "id": circuit.id,
                "customer": circuit.customer,
                "service": circuit.service,
                "path": [h.model_dump() for h in circuit.path],
                "shared": [e.model_dump(mode="json") for e in self.inventory().shared_by(circuit.id)],
                "open_faults": open_faults,
            }
        )

    @staticmethod
    def _sees(token: TokenSpec, customer: str | None) -> bool:
        return token.scope in ("all", f"customer:{customer}")

    def _alarms(self, query: dict[str, list[str]]) -> list[Alarm]:
        book = self.book()
        alarms = [*book.active.values(), *book.recent.values()]
        filters: dict[str, Callable[[Alarm], str | None]] = {
            "state": lambda a: a.lifecycle,
            "class": lambda a: a.alarm_class.value,
            "team": lambda a: a.lead_team.value,
            "tier": lambda a: a.tier.value if a.tier else None,
            "customer": lambda a: a.customer,
        }
        for key, get in filters.items():
            if key in query:
                alarms = [a for a in alarms if get(a) in query[key]]
        return sorted(alarms, key=lambda a: a.raised_at)

    def _alarm(self, alarm: Alarm) -> dict[str, Any]:
        due = self.clocks().due(alarm).as_text()
        return {
            "alarm_id": alarm.alarm_id,
            "work_order_id": f"WO-{alarm.alarm_id}",
            "alert": alarm.rule,
            "summary": alarm.annotations.get("summary", alarm.rule),
            "lifecycle": alarm.lifecycle,
            "alarm_class": alarm.alarm_class.value,
            "lead_team": alarm.lead_team.value,
            "severity": alarm.severity,
            "circuit": alarm.circuit,
            "customer": alarm.customer,
            "tier": alarm.tier.value if alarm.tier else None,
            "device": alarm.labels.get("device"),
            "interface": alarm.labels.get("interface"),
            "parent_alarm_id": alarm.parent_id,
            "major_fault": json.loads(alarm.extra["major_fault"]) if "major_fault" in alarm.extra else None,
            "repeat_of": alarm.extra.get("repeat_of"),
            "raised_at": alarm.raised_at,
            "cleared_at": alarm.cleared_at,
            "occurrences": alarm.occurrences,
            "ticket_state": alarm.extra.get("ticket_state"),
            "due": due,
        }


def _json(body: object) -> Reply:
    return 200, "application/json", json.dumps(body, ensure_ascii=False, default=str).encode()
