"""A real single-node Apache Kafka (KRaft) on 127.0.0.1 for the demo and the tests.

    python tools/kafka_local.py resolve                 # jars from Maven Central into the cache
    python tools/kafka_local.py start --state-dir DIR   # format storage, start, print bootstrap
    python tools/kafka_local.py stop --state-dir DIR    # stop the broker started there

The broker (``org.apache.kafka:kafka_2.13`` with its runtime dependencies and the
reload4j logging backend) is resolved once with the machine's Maven into
``<cache>/kafka/<version>/lib`` and reused by later runs.  Ports are picked at run time.
If ``KAFKA_BOOTSTRAP_SERVERS`` is set, callers use that cluster and start nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devenv import PeerError, cache_dir, free_port, log_tail, stop_pid, track, wait_until

KAFKA_VERSION = os.environ.get("ALARMD_KAFKA_VERSION", "3.9.1")
SLF4J_VERSION = "1.7.36"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alarmd.dev</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""

SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={logs}
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


def lib_dir() -> Path:
    """Where the broker's jars live once resolved."""
    return cache_dir() / "kafka" / KAFKA_VERSION / "lib"


def resolve() -> Path:
    """Resolve the broker and its runtime dependencies from Maven Central (once)."""
    lib = lib_dir()
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PeerError("Maven (mvn) is not on PATH; install it (Debian package 'maven')")
    lib.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(POM.format(kafka=KAFKA_VERSION, slf4j=SLF4J_VERSION))
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
            raise PeerError(
                f"resolving kafka_2.13:{KAFKA_VERSION} with Maven failed "
                f"(exit {proc.returncode}):\n" + "\n".join(out)
            )
    if not any(lib.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise PeerError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {lib}")
    marker.write_text(KAFKA_VERSION + "\n")
    return lib


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise PeerError("java is not on PATH; Kafka needs Java 17 (Debian 'openjdk-17-jre-headless')")
    return java


def _answers(port: int, log: Path) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError:
        return False
    return log.exists() and "Kafka Server started" in log.read_text(errors="replace")


@dataclass(frozen=True)
class Broker:
    """A running local broker."""

    bootstrap: str
    pid: int
    state_dir: Path

    def stop(self) -> None:
        """Stop the broker by its PID."""
        stop(self.state_dir)


def start(state_dir: Path, timeout: float = 120.0) -> Broker:
    """Format fresh KRaft storage in ``state_dir`` and start a broker+controller there."""
    lib = resolve()
    java = _java()
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / "kafka.pid").exists():
        stop(state_dir)
    logs = state_dir / "data"
    shutil.rmtree(logs, ignore_errors=True)
    broker_port, controller_port = free_port(), free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    props = state_dir / "server.properties"
    props.write_text(SERVER.format(broker=broker_port, controller=controller_port, logs=logs))
    log = state_dir / "server.log"
    log.unlink(missing_ok=True)
    (state_dir / "log4j.properties").write_text(LOG4J.format(log=log))
    classpath = f"{lib}/*"
    base = [java, f"-Dlog4j.configuration=file:{state_dir / 'log4j.properties'}", "-cp", classpath]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise PeerError(f"formatting KRaft storage failed: {fmt.stdout}{fmt.stderr}")
    return _launch(state_dir, base, broker_port, timeout)


def _launch(state_dir: Path, base: list[str], broker_port: int, timeout: float) -> Broker:
    props, log = state_dir / "server.properties", state_dir / "server.log"
    log.unlink(missing_ok=True)
    heap = os.environ.get("ALARMD_KAFKA_HEAP", "512m")
    out = open(state_dir / "stdout.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [base[0], f"-Xmx{heap}", "-Xms128m", "-XX:+UseSerialGC", *base[1:], "kafka.Kafka", str(props)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    track(proc)
    (state_dir / "kafka.pid").write_text(f"{proc.pid}\n")
    bootstrap = f"127.0.0.1:{broker_port}"
    try:
        wait_until(lambda: _answers(broker_port, log), timeout, f"Kafka broker at {bootstrap}", proc, log)
    except PeerError as exc:
        stop(state_dir)
        raise PeerError(f"{exc}{log_tail(state_dir / 'stdout.log')}") from None
    (state_dir / "bootstrap").write_text(bootstrap + "\n")
    return Broker(bootstrap, proc.pid, state_dir)


def restart(state_dir: Path, timeout: float = 120.0) -> Broker:
    """Start again a broker that ran in ``state_dir``: same ports, same data."""
    bootstrap = (state_dir / "bootstrap").read_text().strip()
    base = [_java(), f"-Dlog4j.configuration=file:{state_dir / 'log4j.properties'}", "-cp", f"{resolve()}/*"]
    return _launch(state_dir, base, int(bootstrap.rsplit(":", 1)[1]), timeout)


def kill(state_dir: Path) -> None:
    """Kill the broker abruptly (SIGKILL), as a crash or a pulled cable would stop it."""
    pid_file = state_dir / "kafka.pid"
    pid = int(pid_file.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    stop_pid(pid_file, grace=10)


def stop(state_dir: Path) -> bool:
    """Stop the broker whose PID file is in ``state_dir``."""
    return stop_pid(state_dir / "kafka.pid")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("resolve", help="resolve the broker's jars from Maven Central into the cache")
    for name in ("start", "stop"):
        p = sub.add_parser(name, help=f"{name} a broker whose files live in --state-dir")
        p.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "resolve":
            print(resolve())
        elif args.cmd == "start":
            print(start(args.state_dir).bootstrap)
        else:
            stop(args.state_dir)
    except PeerError as exc:
        print(f"kafka_local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
