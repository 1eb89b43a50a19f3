"""A real Debian net-snmp ``snmpd`` on 127.0.0.1 for the SNMPv3 and counter-wrap tests.

    python tools/snmpd.py run [--port N]    # serve until interrupted, print users and OIDs

Each start gets its own temp dir with a generated ``snmpd.conf`` (``-C``: no system
config is read), its log, PID file and persistent dir (``SNMP_PERSISTENT_DIR``), so
nothing touches ``/etc/snmp`` or ``/var/lib/snmp``.  It answers SNMP v1/v2c on the
community (``public`` by default) and SNMPv3 for the :data:`DEFAULT_USERS`
(protocol names as in alarmd's config: ``sha256`` / ``aes128`` ...).

The wrap counters are served by a ``pass`` script (``wrapcounter.py`` in the temp dir).
With ``rate`` bytes/s (default 2**32 / 10, so the 32-bit counter wraps every 10 s) and
``wrap_after`` seconds (default 5), every value is ``start + rate * (now - t0)`` reduced
modulo the counter's width, ``t0`` being the moment :func:`start` wrote the config:

=======================================  =========  =============================================
OID                                      type       value
=======================================  =========  =============================================
``1.3.6.1.2.1.2.2.1.10.9999``            Counter32  ifInOctets of fake ifIndex 9999 (GET only)
``1.3.6.1.2.1.31.1.1.1.6.9999``          Counter64  ifHCInOctets of fake ifIndex 9999 (GET only)
``1.3.6.1.4.1.8072.9999.1.1.0``          Counter32  same as ifInOctets.9999
``1.3.6.1.4.1.8072.9999.1.2.0``          Counter64  same as ifHCInOctets.9999
``1.3.6.1.4.1.8072.9999.1.3.0``          Counter64  wraps at 2**64 once, ``wrap_after`` s after t0
``1.3.6.1.4.1.8072.9999.1.4.0``          Gauge32    the rate in bytes/s
=======================================  =========  =============================================

The Counter32 starts ``rate * wrap_after`` below 2**32, so it first wraps ``wrap_after``
seconds after t0 and then every ``2**32 / rate`` seconds.  The Counter64 is what a real
agent keeps: the same traffic, never wrapping (it starts at ``7 * 2**32`` plus the
Counter32's start, so its low 32 bits are always the Counter32).  The two shadow
instances under IF-MIB are registered with ``pass -p 10``: net-snmp answers GET for them
but its ifTable handler skips them on GETNEXT, so walks only see them under
``1.3.6.1.4.1.8072.9999.1`` (netSnmpExperimental).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devenv import PeerError, free_port, log_tail, serve_until_interrupted, stop_pid, track, wait_until

SNMPD = "/usr/sbin/snmpd"
SNMPGET = "snmpget"

AUTH = {
    "md5": "MD5",
    "sha": "SHA",
    "sha224": "SHA-224",
    "sha256": "SHA-256",
    "sha384": "SHA-384",
    "sha512": "SHA-512",
}
PRIV = {"des": "DES", "aes128": "AES", "aes192": "AES-192", "aes256": "AES-256"}

WRAP_IFINDEX = 9999
IF_IN_OCTETS = f"1.3.6.1.2.1.2.2.1.10.{WRAP_IFINDEX}"
IF_HC_IN_OCTETS = f"1.3.6.1.2.1.31.1.1.1.6.{WRAP_IFINDEX}"
WRAP_ROOT = "1.3.6.1.4.1.8072.9999.1"
WRAP32 = f"{WRAP_ROOT}.1.0"
WRAP64 = f"{WRAP_ROOT}.2.0"
WRAP64_EDGE = f"{WRAP_ROOT}.3.0"
WRAP_RATE = f"{WRAP_ROOT}.4.0"
SNMP_ENGINE_ID = "1.3.6.1.6.3.10.2.1.1.0"


@dataclass(frozen=True)
class V3User:
    """One USM user: protocols spelled as in alarmd's config, ``None`` where the level has none."""

    name: str
    auth_protocol: str | None = None
    auth_key: str | None = None
    priv_protocol: str | None = None
    priv_key: str | None = None

    @property
    def level(self) -> str:
        """The USM security level: ``noAuthNoPriv``, ``authNoPriv`` or ``authPriv``."""
        if self.priv_protocol:
            return "authPriv"
        return "authNoPriv" if self.auth_protocol else "noAuthNoPriv"

    def create_user(self) -> str:
        """The ``createUser`` line of ``snmpd.conf``."""
        words = ["createUser", self.name]
        if self.auth_protocol and self.auth_key:
            words += [AUTH[self.auth_protocol], _quote(self.auth_key)]
            if self.priv_protocol and self.priv_key:
                words += [PRIV[self.priv_protocol], _quote(self.priv_key)]
        return " ".join(words)

    def rouser(self) -> str:
        """The ``rouser`` line granting read access at this user's level."""
        level = {"authPriv": "priv", "authNoPriv": "auth", "noAuthNoPriv": "noauth"}[self.level]
        return f"rouser {self.name} {level}"

    def cli_args(self) -> list[str]:
        """net-snmp command-line options (``snmpget``, ``snmpwalk`` ...) that log in as this user."""
        args = ["-v3", "-l", self.level, "-u", self.name]
        if self.auth_protocol and self.auth_key:
            args += ["-a", AUTH[self.auth_protocol], "-A", self.auth_key]
        if self.priv_protocol and self.priv_key:
            args += ["-x", PRIV[self.priv_protocol], "-X", self.priv_key]
        return args

    def as_config(self) -> dict[str, str]:
        """The user as an alarmd ``snmp: {version: "3", ...}`` credentials mapping."""
        out = {"version": "3", "user": self.name}
        for key in ("auth_protocol", "auth_key", "priv_protocol", "priv_key"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


DEFAULT_USERS = (
    V3User("alarmd-sha256-aes128", "sha256", "auth-sha256-key", "aes128", "priv-aes128-key"),
    V3User("alarmd-sha512-aes256", "sha512", "auth-sha512-key", "aes256", "priv-aes256-key"),
    V3User("alarmd-sha-des", "sha", "auth-sha1-key", "des", "priv-des56-key"),
    V3User("alarmd-md5", "md5", "auth-md5-key"),
    V3User("alarmd-noauth"),
)


def _quote(text: str) -> str:
    if any(c in text for c in " \t\"'#\\"):
        raise PeerError(f"USM key {text!r} must not contain blanks, quotes, '#' or '\\'")
    return text


def supported_protocols() -> tuple[set[str], set[str]]:
    """The auth and priv protocols (alarmd spelling) this net-snmp build lists in ``snmpget -h``."""
    snmpget = shutil.which(SNMPGET)
    if snmpget is None:
        raise PeerError("snmpget is not on PATH; install Debian's 'snmp' package")
    text = subprocess.run([snmpget, "-h"], capture_output=True, text=True, check=False).stderr
    auth: set[str] = set()
    priv: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] in ("-a", "-x") and words[-1].endswith(")"):
            names = words[-1].strip("()").split("|")
            table, found = (AUTH, auth) if words[0] == "-a" else (PRIV, priv)
            found.update(ours for ours, theirs in table.items() if theirs in names)
    return auth, priv


def default_users() -> list[V3User]:
    """:data:`DEFAULT_USERS` minus those whose protocols this net-snmp build does not list."""
    auth, priv = supported_protocols()
    return [
        u
        for u in DEFAULT_USERS
        if (u.auth_protocol is None or u.auth_protocol in auth)
        and (u.priv_protocol is None or u.priv_protocol in priv)
    ]


PASS_SCRIPT = '''\
"""net-snmp ``pass`` script: deterministic counters that wrap (generated by tools/snmpd.py)."""
import json, sys, time

def key(oid):
    return tuple(int(x) for x in oid.strip(".").split("."))

def main():
    root, op, oid = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(sys.argv[0].rsplit("/", 1)[0] + "/wrapcounter.json") as fh:
        cfg = json.load(fh)
    elapsed = time.time() - cfg["t0"]
    objects = {}
    for name, (kind, start, rate, width) in cfg["objects"].items():
        objects[name] = (kind, (start + int(rate * elapsed)) % width if width else start)
    mine = sorted((o for o in objects if key(o)[: len(key(root))] == key(root)), key=key)
    if op == "-g":
        found = oid.lstrip(".") if oid.lstrip(".") in mine else None
    elif op == "-n":
        found = next((o for o in mine if key(o) > key(oid)), None)
    else:
        print("not-writable")
        return
    if found is not None:
        kind, value = objects[found]
        print("." + found)
        print(kind)
        print(value)

main()
'''


@dataclass
class Snmpd:
    """A running snmpd on 127.0.0.1 with its users, community and wrap-counter settings."""

    host: str
    port: int
    pid: int
    workdir: Path
    community: str
    users: list[V3User]
    engine_id: str | None = None
    wrap: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The net-snmp agent address, ``udp:127.0.0.1:<port>``."""
        return f"udp:{self.host}:{self.port}"

    def user(self, name: str) -> V3User:
        """The configured user called ``name``."""
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)

    def client_env(self) -> dict[str, str]:
        """Environment for net-snmp client tools: no MIB loading, persistent files in the temp dir."""
        return {**os.environ, "MIBS": ":", "SNMP_PERSISTENT_DIR": str(self.workdir / "client")}

    def snmpget(
        self, *oids: str, user: V3User | None = None, timeout: float = 1.0, retries: int = 1
    ) -> subprocess.CompletedProcess[str]:
        """Run ``snmpget -On`` against this agent, v2c on the community unless a v3 ``user`` is given."""
        auth = user.cli_args() if user else ["-v2c", "-c", self.community]
        cmd = [SNMPGET, *auth, "-On", "-t", str(timeout), "-r", str(retries), self.target, *oids]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            env=self.client_env(),
            timeout=(timeout * (retries + 1)) + 10,
        )

    def stop(self) -> None:
        """Stop snmpd by its PID and remove the temp dir."""
        pid_file = self.workdir / "snmpd.pid"
        if not pid_file.exists():
            pid_file.write_text(f"{self.pid}\n")
        stop_pid(pid_file, grace=5.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _config(port: int, community: str, users: list[V3User], script: Path, persistent: Path) -> str:
    passes = [
        f"pass -p 10 .{IF_IN_OCTETS} {script} .{IF_IN_OCTETS}",
        f"pass -p 10 .{IF_HC_IN_OCTETS} {script} .{IF_HC_IN_OCTETS}",
        f"pass .{WRAP_ROOT} {script} .{WRAP_ROOT}",
    ]
    return "\n".join(
        [
            "# generated by tools/snmpd.py; snmpd runs with -C, so this is its only config",
            f"[snmp] persistentDir {persistent}",
            "dontLogTCPWrappersConnects yes",
            "sysName alarmd-snmpd-peer",
            "sysLocation 127.0.0.1 test peer",
            "sysContact alarmd developers",
            "sysServices 72",
            f"rocommunity {_quote(community)} 127.0.0.1",
            *[u.create_user() for u in users],
            *[u.rouser() for u in users],
            *passes,
            "",
        ]
    )


def _wrap_objects(rate: int, wrap_after: float) -> dict[str, list[Any]]:
    start32 = 2**32 - int(rate * wrap_after)
    start64 = 7 * 2**32 + start32
    return {
        IF_IN_OCTETS: ["counter", start32, rate, 2**32],
        IF_HC_IN_OCTETS: ["counter64", start64, rate, 2**64],
        WRAP32: ["counter", start32, rate, 2**32],
        WRAP64: ["counter64", start64, rate, 2**64],
        WRAP64_EDGE: ["counter64", 2**64 - int(rate * wrap_after), rate, 2**64],
        WRAP_RATE: ["gauge", rate, 0, 0],
    }


def _engine_id(sd: Snmpd) -> str | None:
    proc = sd.snmpget(SNMP_ENGINE_ID)
    if proc.returncode != 0 or "Hex-STRING:" not in proc.stdout:
        return None
    return "".join(proc.stdout.split("Hex-STRING:", 1)[1].split()).lower()


def _answers(sd: Snmpd) -> bool:
    return sd.snmpget("1.3.6.1.2.1.1.5.0", timeout=0.5, retries=0).returncode == 0


def start(
    users: list[dict[str, Any]] | None = None,
    community: str = "public",
    port: int = 0,
    rate: int = 2**32 // 10,
    wrap_after: float = 5.0,
    timeout: float = 20.0,
) -> Snmpd:
    """Start snmpd on 127.0.0.1 (``port`` 0 picks one), wait until v2c and every v3 user answer.

    ``users`` are mappings with the fields of :class:`V3User`; by default
    :func:`default_users`.  ``rate`` and ``wrap_after`` shape the wrap counters (see the
    module docstring).
    """
    if not Path(SNMPD).exists():
        raise PeerError(f"{SNMPD} is missing; install Debian's 'snmpd' package (tools/system-deps.sh)")
    v3 = [V3User(**u) for u in users] if users is not None else default_users()
    workdir = Path(tempfile.mkdtemp(prefix="alarmd-snmpd-"))
    persistent, client = workdir / "persist", workdir / "client"
    persistent.mkdir()
    client.mkdir()
    script, log = workdir / "wrapcounter.py", workdir / "snmpd.log"
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    script.write_text(f"#!{python}\n{PASS_SCRIPT}")
    script.chmod(0o755)
    wrap = {
        "t0": time.time(),
        "rate": rate,
        "wrap_after": wrap_after,
        "objects": _wrap_objects(rate, wrap_after),
    }
    (workdir / "wrapcounter.json").write_text(json.dumps(wrap))
    port = port or free_port(socket.SOCK_DGRAM)
    conf = workdir / "snmpd.conf"
    conf.write_text(_config(port, community, v3, script, persistent))
    cmd = [SNMPD, "-f", "-Lf", str(log), "-C", "-c", str(conf), "-p", str(workdir / "snmpd.pid")]
    cmd.append(f"udp:127.0.0.1:{port}")
    env = {**os.environ, "MIBS": ":", "SNMP_PERSISTENT_DIR": str(persistent)}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    track(proc)
    sd = Snmpd("127.0.0.1", port, proc.pid, workdir, community, v3, wrap=wrap)
    try:
        wait_until(lambda: _answers(sd), timeout, f"snmpd on 127.0.0.1:{port}", proc, log)
        for user in v3:
            check = sd.snmpget("1.3.6.1.2.1.1.5.0", user=user)
            if check.returncode != 0:
                raise PeerError(
                    f"snmpd on 127.0.0.1:{port} refuses v3 user {user.name} ({user.level}): "
                    f"{(check.stderr or check.stdout).strip()}{log_tail(log)}"
                )
        sd.engine_id = _engine_id(sd)
    except PeerError:
        sd.stop()
        raise
    return sd


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="serve until interrupted")
    run.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (default: pick one)")
    run.add_argument("--community", default="public", help="v1/v2c read community")
    sub.add_parser("protocols", help="list the auth/priv protocols this net-snmp build supports")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "protocols":
            auth, priv = supported_protocols()
            print(f"auth: {' '.join(sorted(auth))}\npriv: {' '.join(sorted(priv))}")
            return 0
        sd = start(community=args.community, port=args.port)
    except PeerError as exc:
        print(f"snmpd: {exc}", file=sys.stderr)
        return 1
    print(f"snmpd on {sd.host}:{sd.port} (engine id {sd.engine_id}), community {sd.community!r}")
    for user in sd.users:
        print(f"  v3 user: {json.dumps(asdict(user))}")
    print(f"  wrap counters: {IF_IN_OCTETS} {IF_HC_IN_OCTETS} {WRAP_ROOT}.*", flush=True)
    return serve_until_interrupted(sd.stop)


if __name__ == "__main__":
    sys.exit(main())
