"""``alarmd maintenance add|list|end``: planned outages through the running daemon's token-guarded API.

The token comes from ``ALARMD_API_TOKEN`` or ``--token-file`` (never the command line, where
``ps`` would show it); the address from ``--url``, else the config's ``http.listen``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from alarmd.config import ConfigError, load, parse_duration
from alarmd.model import isotime

TOKEN_ENV = "ALARMD_API_TOKEN"  # noqa: S105 - the name of the variable, not a token


class ClientError(Exception):
    """The command cannot be carried out; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``maintenance`` subcommands and their options."""
    parser.add_argument("--url", help="the daemon's HTTP address (default: from the config's http.listen)")
    parser.add_argument("--token-file", type=Path, help=f"file holding an API token (default: ${TOKEN_ENV})")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="plan an outage: its scope, window and reason")
    add.add_argument("--id", help="the change number (default: one is made, MW-<date>-<n>)")
    add.add_argument("--reason", required=True, help="what the work is, as the customer will read it")
    add.add_argument("--start", default="now", help="RFC 3339, now, or +30m (default: now)")
    end = add.add_mutually_exclusive_group(required=True)
    end.add_argument("--end", help="RFC 3339 end of the window")
    end.add_argument("--for", dest="duration", help="length of the window, e.g. 2h")
    add.add_argument("--circuit", action="append", default=[], help="a circuit in scope (repeat for more)")
    add.add_argument("--device", action="append", default=[], help="a device in scope (repeat for more)")
    add.add_argument("--customer", action="append", default=[], help="a customer in scope (repeat for more)")
    add.add_argument(
        "--matcher",
        action="append",
        default=[],
        help="and every alarm must match, e.g. 'alertname=\"LinkDown\"'",
    )
    add.add_argument("--by", default="", help="who asks for it (default: the token's name)")
    listing = actions.add_parser("list", help="planned outages that are scheduled or active")
    listing.add_argument("--all", action="store_true", help="ended and cancelled ones too")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    ending = actions.add_parser("end", help="end an outage now (withdraw it, if it has not started)")
    ending.add_argument("outage_id", metavar="ID")
    ending.add_argument("--by", default="", help="who ends it (default: the token's name)")


def run(args: argparse.Namespace) -> int:
    """Carry out one ``maintenance`` command; 0 on success."""
    try:
        url, token = _url(args), _token(args)
        if args.action == "add":
            outage = _call(url, token, "POST", "/api/v1/maintenance", _spec(args))
            print(f"{outage['id']}: {outage['state']} {outage['starts_at']} .. {outage['ends_at']}", end="")
            print(f", circuits: {', '.join(outage['affected_circuits']) or 'none'}")
        elif args.action == "end":
            outage = _call(url, token, "POST", f"/api/v1/maintenance/{args.outage_id}/end", {"by": args.by})
            print(f"{outage['id']}: {outage['state']} (by {outage['ended_by']})")
        else:
            outages = _call(url, token, "GET", "/api/v1/maintenance")
            shown = [o for o in outages if args.all or o["state"] in ("scheduled", "active")]
            if not shown and args.format == "table":
                print(
                    "no planned outages" + ("" if args.all else " scheduled or active (--all shows the rest)")
                )
            else:
                _print(shown, args.format)
    except ClientError as exc:
        print(f"alarmd: {exc}", file=sys.stderr)
        return 1
    return 0


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    try:
        listen = load(args.config).config.http
    except ConfigError as exc:
        raise ClientError(f"config is not valid (or pass --url):\n{exc}") from None
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host  # noqa: S104 - only compared
    return f"http://{host}:{listen.port}"


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            return str(args.token_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ClientError(f"{args.token_file}: cannot read the token: {exc.strerror}") from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ClientError(f"no API token: set {TOKEN_ENV} or pass --token-file")
    return token


def _when(text: str) -> str:
    """``now``, ``+30m`` or an RFC 3339 time, as the API takes it."""
    if text == "now":
        return isotime(time.time())
    if text.startswith("+"):
        try:
            return isotime(time.time() + parse_duration(text[1:]))
        except ValueError as exc:
            raise ClientError(f"--start: {exc}") from None
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ClientError(
            f"--start/--end: '{text}' is not an RFC 3339 time like 2026-12-01T01:00+08:00"
        ) from None
    return text


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "reason": args.reason,
        "created_by": args.by,
        "starts_at": _when(args.start),
        "circuits": args.circuit,
        "devices": args.device,
        "customers": args.customer,
        "matchers": args.matcher,
    }
    if args.id:
        spec["id"] = args.id
    if args.end:
        spec["ends_at"] = _when(args.end)
    else:
        spec["duration"] = args.duration
    return spec


def _call(url: str, token: str, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own daemon
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise ClientError(f"{method} {path}: {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach alarmd at {url}: {reason}") from None


def _print(outages: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(outages, ensure_ascii=False, indent=2))
        return
    fields = ["id", "state", "starts_at", "ends_at", "circuits", "reason", "created_by"]
    rows = [
        [
            o["id"],
            o["state"],
            o["starts_at"],
            o["ends_at"],
            ",".join(o["affected_circuits"]),
            o["reason"],
            o["created_by"],
        ]
        for o in outages
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(fields, *rows, strict=True)]
    for row in [fields, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
