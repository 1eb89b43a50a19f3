"""A real single-node Apache Kafka (KRaft) on 127.0.0.1 for the demo and the tests.

    python tools/kafka_local.py resolve                 # jars from Maven Central into the cache
    python tools/kafka_local.py start --state-dir DIR   # format storage, start, print bootstrap
    python tools/kafka_local.py start --secure --state-dir DIR   # also SASL_SSL and SSL listeners
    python tools/kafka_local.py scram-user --state-dir DIR --user NAME   # password on stdin
    python tools/kafka_local.py stop --state-dir DIR    # stop the broker started there
    python tools/kafka_local.py cluster --brokers 3 --state-dir DIR   # N-node KRaft cluster until Ctrl-C

The broker (``org.apache.kafka:kafka_2.13`` with its runtime dependencies and the
logging backend) is resolved once with the machine's Maven into
``<cache>/kafka/<version>/lib`` and reused by later runs.  Ports are picked at run time.
If ``KAFKA_BOOTSTRAP_SERVERS`` is set, callers use that cluster and start nothing.

``ALARMD_KAFKA_VERSION`` picks the release (default 3.9.1; 4.x, e.g. ``ALARMD_KAFKA_VERSION=4.4.0``,
is resolved and started the same way).  3.x logs through log4j 1 (reload4j); 4.x through log4j2,
and its admin tools (``ConfigCommand``) live in ``org.apache.kafka:kafka-tools``.

``start_secure`` starts the same broker with two more listeners: ``SASL_SSL`` (SCRAM-SHA-256
and SCRAM-SHA-512, no users until ``add_scram_user`` creates them through the admin API)
and ``SSL`` that requires a client certificate.  A throw-away CA, the broker's certificate
(for 127.0.0.1 and localhost) and a client certificate with an encrypted key are made
with the ``openssl`` command at start, in ``<state-dir>/tls``.  The inter-broker and
controller listeners stay PLAINTEXT.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devenv import (
    PeerError,
    cache_dir,
    die_with_parent,
    free_port,
    log_tail,
    serve_until_interrupted,
    stop_pid,
    track,
    wait_until,
)

KAFKA_VERSION = os.environ.get("ALARMD_KAFKA_VERSION", "3.9.1")
SLF4J_VERSION = "1.7.36"
LOG4J2_SLF4J_VERSION = "2.24.3"  # the slf4j 1.x binding Kafka 4.x ships; log4j-api/core come from Kafka

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alarmd.dev</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
{logging}  </dependencies>
</project>
"""

POM_LOG4J1 = """    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
"""

POM_LOG4J2 = """    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j2}</version>
      <exclusions><exclusion><groupId>org.apache.logging.log4j</groupId><artifactId>*</artifactId>
      </exclusion></exclusions></dependency>
"""

LOG4J = """log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""

SERVER = """process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}{more_listeners}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker}{more_listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{more_protocols}
log.dirs={logs}
num.partitions=3
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=3
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=3
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""

SECURE = """ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram} required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram} required;
"""
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def major(version: str = KAFKA_VERSION) -> int:
    """The major release of a Kafka version string (``"4.4.0"`` -> 4)."""
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        raise PeerError(
            f"ALARMD_KAFKA_VERSION={version!r} is not a Kafka version such as 3.9.1 or 4.4.0"
        ) from None


def _log_config(state_dir: Path, name: str, log: Path, version: str = KAFKA_VERSION) -> str:
    """Write the logging config ``name`` (log4j 1 for 3.x, log4j2 for 4.x) sending WARN and up
    (and the broker's start line) to ``log``; the JVM flag that points the broker at it."""
    if major(version) >= 4:
        path = state_dir / f"{name}.log4j2.properties"
        path.write_text(LOG4J2.format(log=log))
        return f"-Dlog4j2.configurationFile=file:{path}"
    path = state_dir / f"{name}.properties"
    path.write_text(LOG4J.format(log=log))
    return f"-Dlog4j.configuration=file:{path}"


def _config_command() -> str:
    """The class of ``kafka-configs``: Scala in 3.x's core, Java in 4.x's kafka-tools."""
    return "org.apache.kafka.tools.ConfigCommand" if major() >= 4 else "kafka.admin.ConfigCommand"


def lib_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the broker's jars live once resolved."""
    return cache_dir() / "kafka" / version / "lib"


def resolve(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker (``version``) and its runtime dependencies from Maven Central (once)."""
    lib = lib_dir(version)
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PeerError("Maven (mvn) is not on PATH; install it (Debian package 'maven')")
    lib.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        logging = POM_LOG4J2 if major(version) >= 4 else POM_LOG4J1
        pom.write_text(
            POM.format(
                kafka=version,
                logging=logging.format(kafka=version, slf4j=SLF4J_VERSION, log4j2=LOG4J2_SLF4J_VERSION),
            )
        )
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
                f"resolving kafka_2.13:{version} with Maven failed "
                f"(exit {proc.returncode}):\n" + "\n".join(out)
            )
    if not any(lib.glob(f"kafka_2.13-{version}.jar")):
        raise PeerError(f"Maven finished but kafka_2.13-{version}.jar is not in {lib}")
    marker.write_text(version + "\n")
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


@dataclass(frozen=True)
class SecureBroker(Broker):
    """A running local broker with SASL_SSL and SSL listeners besides PLAINTEXT (``bootstrap``)."""

    sasl_ssl: str
    ssl: str
    ca_file: Path
    client_cert: Path
    client_key: Path
    client_key_password: str

    def add_scram_user(
        self, user: str, password: str, mechanisms: tuple[str, ...] = SCRAM_MECHANISMS, timeout: float = 120.0
    ) -> None:
        """Create or update a SCRAM user through the admin API, as ``kafka-configs --alter`` does."""
        add_scram_user(self.state_dir, self.bootstrap, user, password, mechanisms, timeout)


def _ports(count: int) -> list[int]:
    ports: list[int] = []
    for _ in range(100 * count):
        port = free_port()
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise PeerError(f"could not find {count} distinct free ports on 127.0.0.1")


def _fresh(state_dir: Path) -> list[str]:
    """Stop what ran in ``state_dir``, clear its data; the java command line that runs Kafka's classes."""
    lib = resolve()
    java = _java()
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / "kafka.pid").exists():
        stop(state_dir)
    shutil.rmtree(state_dir / "data", ignore_errors=True)
    log = state_dir / "server.log"
    log.unlink(missing_ok=True)
    return [java, _log_config(state_dir, "log4j", log), "-cp", f"{lib}/*"]


def start(state_dir: Path, timeout: float = 120.0, *, with_parent: bool = False) -> Broker:
    """Format fresh KRaft storage in ``state_dir`` and start a broker+controller there.

    With ``with_parent`` (tests, benchmarks) the broker gets SIGTERM when the process that
    started it dies, however it dies; without it (``start`` on the command line) it outlives it.
    The thread that calls this must live as long as the broker should (Linux ties the signal to it).
    """
    base = _fresh(state_dir)
    broker_port, controller_port = _ports(2)
    _format(base, _properties(state_dir, broker_port, controller_port))
    return _launch(state_dir, base, broker_port, timeout, with_parent)


def _properties(
    state_dir: Path,
    broker: int,
    controller: int,
    listeners: str = "",
    protocols: str = "",
    extra: str = "",
    *,
    node_id: int = 1,
    voters: str = "",
    size: int = 1,
) -> Path:
    """Write ``server.properties``: the PLAINTEXT broker and controller, more ``listeners`` with
    their ``protocols`` map entries, and ``extra`` settings.

    In a cluster of ``size`` nodes (``node_id`` among the controller ``voters``) internal
    topics get replication factor min(3, size) and min.insync.replicas 2 from three nodes on.
    """
    props = state_dir / "server.properties"
    replicas = min(3, size)
    props.write_text(
        SERVER.format(
            node_id=node_id,
            voters=voters or f"{node_id}@127.0.0.1:{controller}",
            replicas=replicas,
            min_isr=2 if replicas >= 3 else 1,
            broker=broker,
            controller=controller,
            logs=state_dir / "data",
            more_listeners=listeners,
            more_protocols=protocols,
        )
        + extra
    )
    return props


def start_secure(state_dir: Path, timeout: float = 120.0, *, with_parent: bool = False) -> SecureBroker:
    """Like ``start``, plus a SASL_SSL (SCRAM) and an SSL (client certificate) listener."""
    base = _fresh(state_dir)
    broker_port, controller_port, sasl_port, ssl_port = _ports(4)
    tls = state_dir / "tls"
    shutil.rmtree(tls, ignore_errors=True)
    tls.mkdir()
    ca, ca_key = make_ca(tls, "ca", "alarmd test CA")
    cert, key = issue(tls, ca, ca_key, "broker", server=True)
    keystore = tls / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text() + ca.read_text())
    keystore.chmod(0o600)
    client_password = secrets.token_urlsafe(16)
    client_cert, client_key = issue(tls, ca, ca_key, "client", server=False, password=client_password)
    password_file = tls / "client.key.password"
    password_file.touch(mode=0o600)
    password_file.write_text(client_password + "\n")
    props = _properties(
        state_dir,
        broker_port,
        controller_port,
        listeners=f",SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}",
        protocols=",SASL_SSL:SASL_SSL,SSL:SSL",
        extra=SECURE.format(keystore=keystore, ca=ca, scram=SCRAM_LOGIN),
    )
    _format(base, props)
    broker = _launch(state_dir, base, broker_port, timeout, with_parent)
    return SecureBroker(
        broker.bootstrap,
        broker.pid,
        broker.state_dir,
        sasl_ssl=f"127.0.0.1:{sasl_port}",
        ssl=f"127.0.0.1:{ssl_port}",
        ca_file=ca,
        client_cert=client_cert,
        client_key=client_key,
        client_key_password=client_password,
    )


def _openssl(args: list[str], cwd: Path, password: str | None = None) -> None:
    """Run ``openssl`` in ``cwd``; ``password`` (for ``-passout stdin``) goes to its standard input."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PeerError("openssl is not on PATH; install it (Debian package 'openssl')")
    out = cwd / "openssl.log"
    with out.open("ab") as sink:
        proc = subprocess.run(
            [openssl, *args],
            cwd=cwd,
            input=b"" if password is None else f"{password}\n".encode(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0:
        raise PeerError(f"openssl {args[0]} failed (exit {proc.returncode}){log_tail(out)}")


def make_ca(directory: Path, name: str, subject: str) -> tuple[Path, Path]:
    """A self-signed CA valid for two days: ``(<name>.pem, <name>.key)`` in ``directory``."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        [
            "req", "-x509", "-new", "-newkey", "rsa:2048", "-noenc", "-days", "2", "-sha256",
            "-subj", f"/CN={subject}", "-keyout", str(key), "-out", str(cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )  # fmt: skip
    return cert, key


def issue(
    directory: Path, ca: Path, ca_key: Path, name: str, *, server: bool, password: str | None = None
) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` for 127.0.0.1 and localhost: ``(<name>.pem, <name>.key)``.

    The key is PKCS#8 PEM, encrypted with ``password`` if one is given.
    """
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    ext.write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    secret = ["-passout", "stdin"] if password is not None else ["-noenc"]
    _openssl(
        ["req", "-new", "-newkey", "rsa:2048", *secret, "-subj", f"/CN={name}", "-keyout", str(key),
         "-out", str(csr)],
        directory,
        password,
    )  # fmt: skip
    _openssl(
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert)],
        directory,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def add_scram_user(
    state_dir: Path,
    bootstrap: str,
    user: str,
    password: str,
    mechanisms: tuple[str, ...] = SCRAM_MECHANISMS,
    timeout: float = 120.0,
) -> None:
    """Create or update a SCRAM user on the broker at ``bootstrap`` (kafka.admin.ConfigCommand, admin API).

    One request per mechanism (the broker refuses two credentials of one user in one request).
    The password goes to the tool in a file readable only by this user, never on its command line.
    """
    lib = resolve()
    log_flag = _log_config(state_dir, "tools-log4j", state_dir / "tools.log")
    value = password.replace("\\", "\\\\")  # a Java properties value: the file form takes no [brackets]
    out = state_dir / "tools.out"
    for mechanism in mechanisms:
        secret = state_dir / f"scram-{uuid.uuid4().hex}.properties"
        secret.touch(mode=0o600)
        secret.write_text(f"{mechanism}=iterations=8192,password={value}\n")
        try:
            with out.open("wb") as sink:
                proc = subprocess.run(
                    [
                        _java(), "-Xmx256m", "-XX:+UseSerialGC", log_flag,
                        "-cp", f"{lib}/*", _config_command(),
                        "--bootstrap-server", bootstrap, "--alter", "--add-config-file", str(secret),
                        "--entity-type", "users", "--entity-name", user,
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )  # fmt: skip
        finally:
            secret.unlink(missing_ok=True)
        if proc.returncode != 0:
            tail = log_tail(out).replace(password, "<secret>")
            raise PeerError(
                f"creating SCRAM user {user!r} ({mechanism}) failed (exit {proc.returncode}){tail}"
            )


def _cluster_id() -> str:
    cluster_id = "-"
    while cluster_id.startswith("-"):  # as Kafka's own Uuid.randomUuid: a leading '-' reads as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def _format(base: list[str], props: Path, cluster_id: str | None = None) -> None:
    cluster_id = cluster_id or _cluster_id()
    fmt = subprocess.run(
        [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise PeerError(f"formatting KRaft storage failed: {fmt.stdout}{fmt.stderr}")


def _spawn(state_dir: Path, base: list[str], *, with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start the broker of ``state_dir`` (its own process group); ``with_parent``: it dies with us."""
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
        preexec_fn=die_with_parent if with_parent else None,  # noqa: PLW1509 - prctl only, no locks taken
    )
    out.close()
    track(proc)
    (state_dir / "kafka.pid").write_text(f"{proc.pid}\n")
    return proc


def _await(state_dir: Path, proc: subprocess.Popen[bytes], broker_port: int, timeout: float) -> Broker:
    """Wait until the broker answers; stop it and say why if it does not."""
    log = state_dir / "server.log"
    bootstrap = f"127.0.0.1:{broker_port}"
    try:
        wait_until(lambda: _answers(broker_port, log), timeout, f"Kafka broker at {bootstrap}", proc, log)
    except PeerError as exc:
        stop(state_dir)
        raise PeerError(f"{exc}{log_tail(state_dir / 'stdout.log')}") from None
    (state_dir / "bootstrap").write_text(bootstrap + "\n")
    return Broker(bootstrap, proc.pid, state_dir)


def _launch(
    state_dir: Path, base: list[str], broker_port: int, timeout: float, with_parent: bool = False
) -> Broker:
    return _await(state_dir, _spawn(state_dir, base, with_parent=with_parent), broker_port, timeout)


@dataclass(frozen=True)
class Cluster:
    """A running local KRaft cluster: every node is a broker and a controller."""

    brokers: tuple[Broker, ...]

    @property
    def bootstrap(self) -> str:
        """Every broker's ``host:port``, comma-separated, as clients take it."""
        return ",".join(b.bootstrap for b in self.brokers)

    def stop(self) -> None:
        """Stop every broker, all at once (one by one, each would wait for the others' quorum)."""
        with ThreadPoolExecutor(len(self.brokers)) as pool:
            list(pool.map(Broker.stop, self.brokers))


def _until_registered(cluster: Cluster, timeout: float) -> None:
    """Wait until every broker's metadata lists every broker (a topic created sooner gets fewer replicas)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def seen_by(bootstrap: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return len((await admin.describe_cluster())["brokers"])
        finally:
            await admin.close()

    size = len(cluster.brokers)
    wait_until(
        lambda: all(asyncio.run(seen_by(b.bootstrap)) == size for b in cluster.brokers),
        timeout,
        f"all {size} brokers registered in the cluster's metadata",
    )


def start_cluster(
    state_dir: Path, size: int = 3, timeout: float = 180.0, *, with_parent: bool = True
) -> Cluster:
    """Format and start ``size`` KRaft nodes (broker+controller each) in ``state_dir/node-<id>``.

    Ports are picked at run time.  Internal topics (consumer offsets, transaction state) get
    replication factor min(3, size) and, from three nodes on, ``min.insync.replicas=2``; so do
    topics created without an explicit setting.  With ``with_parent`` (the default) every
    broker gets SIGTERM when the process that started it dies, so a killed test run leaves no
    JVM behind.
    """
    if size < 1:
        raise PeerError("a cluster has at least one node")
    ports = _ports(2 * size)
    brokers, controllers = ports[:size], ports[size:]
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controllers))
    cluster_id = _cluster_id()
    procs: list[tuple[Path, subprocess.Popen[bytes], int]] = []
    try:
        for i in range(size):
            node = state_dir / f"node-{i + 1}"
            base = _fresh(node)
            props = _properties(node, brokers[i], controllers[i], node_id=i + 1, voters=voters, size=size)
            _format(base, props, cluster_id)
            procs.append((node, _spawn(node, base, with_parent=with_parent), brokers[i]))
        cluster = Cluster(tuple(_await(node, proc, port, timeout) for node, proc, port in procs))
        _until_registered(cluster, timeout)
        return cluster
    except BaseException:
        for node, _, _ in procs:
            stop(node)
        raise


def restart(
    state_dir: Path, timeout: float = 120.0, *, with_parent: bool = False, version: str = KAFKA_VERSION
) -> Broker:
    """Start again a broker that ran in ``state_dir``: same ports and data (``with_parent``: as ``start``).

    ``version`` another release than the one it ran is a rolling upgrade (or downgrade) of that node.
    """
    bootstrap = (state_dir / "bootstrap").read_text().strip()
    log_flag = _log_config(state_dir, "log4j", state_dir / "server.log", version)
    base = [_java(), log_flag, "-cp", f"{resolve(version)}/*"]
    return _launch(state_dir, base, int(bootstrap.rsplit(":", 1)[1]), timeout, with_parent)


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
    for name in ("start", "stop", "scram-user"):
        p = sub.add_parser(name, help=f"{name} a broker whose files live in --state-dir")
        p.add_argument("--state-dir", type=Path, required=True)
    cluster_cmd = sub.add_parser("cluster", help="run an N-node cluster in --state-dir until Ctrl-C")
    cluster_cmd.add_argument("--state-dir", type=Path, required=True)
    cluster_cmd.add_argument("--brokers", type=int, default=3, help="nodes, each broker+controller")
    start_cmd, scram_cmd = sub.choices["start"], sub.choices["scram-user"]
    start_cmd.add_argument("--secure", action="store_true", help="also SASL_SSL and SSL listeners")
    scram_cmd.add_argument(
        "--user", required=True, help="SCRAM user to create; the password is read from stdin"
    )
    args = parser.parse_args(argv)
    try:
        if args.cmd == "resolve":
            print(resolve())
        elif args.cmd == "start" and args.secure:
            broker = start_secure(args.state_dir)
            print(f"PLAINTEXT {broker.bootstrap}\nSASL_SSL {broker.sasl_ssl}\nSSL {broker.ssl}")
            print(f"ca_file {broker.ca_file}\ncert_file {broker.client_cert}\nkey_file {broker.client_key}")
            print(f"key_password_file {broker.client_key.parent / 'client.key.password'}")
        elif args.cmd == "start":
            print(start(args.state_dir).bootstrap)
        elif args.cmd == "cluster":
            cluster = start_cluster(args.state_dir, args.brokers)
            print(cluster.bootstrap, flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            return serve_until_interrupted(cluster.stop)
        elif args.cmd == "scram-user":
            bootstrap = (args.state_dir / "bootstrap").read_text().strip()
            password = sys.stdin.readline().rstrip("\n")
            add_scram_user(args.state_dir, bootstrap, args.user, password)
        else:
            stop(args.state_dir)
    except PeerError as exc:
        print(f"kafka_local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
