"""Configuration: YAML files validated into pydantic models, errors that name file, line and key."""

from __future__ import annotations

import datetime
import difflib
import glob
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from alarmd.inventory_csv import read_inventory_csv
from alarmd.matchers import parse_matcher_list
from alarmd.model import DeviceKind, Team, Tier

CONFIG_FILE = "alarmd.yml"
Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration or rule file is unusable; the message names file, line and key."""


# --------------------------------------------------------------------------- YAML with positions

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE = re.compile(r"\$\{file:([^}]+)\}")


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML file and the line of every key and list item in it."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    #: The column of a location, where the file has columns (a CSV export).
    columns: dict[Loc, int] = field(default_factory=dict)
    #: What to call a location in an error, where its dotted path would mean nothing (a CSV column).
    keys: dict[Loc, str] = field(default_factory=dict)

    def line_of(self, loc: Iterable[str | int]) -> tuple[int | None, Loc]:
        """The line of the deepest known prefix of ``loc``, skipping segments YAML never had."""
        found: Loc = ()
        line = None
        for seg in loc:
            candidate = (*found, seg)
            if candidate in self.lines:
                found = candidate
                line = self.lines[candidate]
        return line, found

    def where(self, loc: Iterable[str | int]) -> str:
        """``file:line`` (``file:line:column`` in a CSV export) for a location."""
        line, found = self.line_of(loc)
        if not line:
            return str(self.path)
        column = self.columns.get(found)
        return f"{self.path}:{line}:{column}" if column else f"{self.path}:{line}"

    def key(self, loc: Loc) -> str:
        """How an error names a location: its dotted path, or the CSV column it came from."""
        return self.keys.get(loc) or ".".join(str(s) for s in loc) or "(top level)"


def _interpolate(value: str, path: Path, line: int) -> str:
    def read(match: re.Match[str]) -> str:
        target = Path(match.group(1).strip())
        target = target if target.is_absolute() else path.parent / target
        try:
            return target.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{path}:{line}: cannot read secret file {target}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}:{line}: secret file {target} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None

    value = _FILE.sub(read, value)

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{path}:{line}: environment variable {name} is not set and has no default "
            f"(write ${{{name}:-default}} to give one)"
        )

    return _ENV.sub(sub, value)


def _walk(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: yaml.SafeLoader, path: Path, *, seen: set[int]
) -> None:
    # An alias is the node of its anchor again: walk (and interpolate) each node once.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key is no config key; construct_document refuses it
            key = key_node.value
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), lines, loader, path, seen=seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _walk(item, (*loc, i), lines, loader, path, seen=seen)
    elif isinstance(node, yaml.ScalarNode) and "${" in node.value:
        node.value = _interpolate(node.value, path, node.start_mark.line + 1)
        if node.style is None:
            node.tag = loader.resolve(yaml.ScalarNode, node.value, (True, False))  # type: ignore[no-untyped-call]


MAX_ALIAS_EXPANSION = 100_000
"""Values that aliases may add to a document once expanded; a "billion laughs" adds 9**9."""


def _expanded_size(node: yaml.Node, path: Path, sizes: dict[int, int], active: set[int]) -> int:
    """The number of nodes in the document under ``node`` with every alias expanded (memoised by node)."""
    size = sizes.get(id(node))
    if size is not None:
        return size
    if id(node) in active:
        line = node.start_mark.line + 1
        raise ConfigError(f"{path}:{line}: invalid YAML: an anchor (&) is used inside itself")
    size = 1
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        active.add(id(node))
        for item in node.value:
            for child in item if isinstance(node, yaml.MappingNode) else (item,):
                size += _expanded_size(child, path, sizes, active)
        active.discard(id(node))
    sizes[id(node)] = size
    return size


def read_yaml(path: Path) -> YamlDoc:
    """Parse one YAML file, expanding ``${VAR}`` / ``${VAR:-default}`` in its values."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        lineno = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # control characters are refused before any parsing
        lineno = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{path}:{lineno}: invalid YAML: {exc.reason} (#x{exc.character:04x})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(path, None)
        sizes: dict[int, int] = {}
        if _expanded_size(node, path, sizes, set()) - len(sizes) > MAX_ALIAS_EXPANSION:
            raise ConfigError(
                f"{path}: invalid YAML: aliases (*) expand to more than {MAX_ALIAS_EXPANSION} values"
            )
        lines: dict[Loc, int] = {}
        _walk(node, (), lines, loader, path, seen=set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return YamlDoc(path, data, lines)


M = TypeVar("M", bound=BaseModel)


def _known_fields(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the (sub)model found at ``loc``, for a "did you mean" hint."""
    current: Any = model
    for seg in loc:
        if isinstance(seg, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or seg not in fields:
            return []
        current = _model_in(fields[seg].annotation)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate(doc: YamlDoc, model: type[M]) -> M:
    """Validate a YAML document into ``model``; errors become one ConfigError naming every problem."""
    try:
        return model.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            _, found = doc.line_of(loc)
            where = doc.where(loc)
            dotted = doc.key(found)
            if err["type"] == "extra_forbidden":
                key = str(found[-1]) if found else str(loc[-1])
                hint = difflib.get_close_matches(key, _known_fields(model, found[:-1]), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(f"{where}: unknown key '{dotted}'{suggestion}")
            elif err["type"] == "missing":
                missing = ".".join(str(s) for s in (*found, loc[-1]))
                what = doc.keys.get((*found, loc[-1])) or f"key '{missing}'"  # a CSV export: its column
                problems.append(f"{where}: missing required {what}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "enum":  # name what was written, e.g. an unknown tier
                    msg = f"{msg}, not '{err['input']}'"
                problems.append(f"{where}: {dotted}: {msg}")
        raise ConfigError("\n".join(problems)) from None


# --------------------------------------------------------------------------- value types

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"`` → seconds; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number with a unit, like 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number with a unit, like 30s, 5m or 1h")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration; use a number with a unit: 500ms, 30s, 5m, 1h, 1d")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Secret(SecretStr):
    """A credential: shown as ``<secret>`` everywhere, its value only by ``get_secret_value()``."""

    def _display(self) -> str:
        return "<secret>"


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors; errors never repeat their input (secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# --------------------------------------------------------------------------- the config


AuthProtocol = Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"]
PrivProtocol = Literal["des", "aes128", "aes192", "aes256"]


class SnmpV1(Strict):
    """SNMP v1 credentials (a community)."""

    version: Literal["1"]
    community: Secret


class SnmpV2c(Strict):
    """SNMP v2c credentials (a community)."""

    version: Literal["2c"] = "2c"
    community: Secret


class SnmpV3(Strict):
    """SNMP v3 USM credentials: noAuthNoPriv, authNoPriv or authPriv."""

    version: Literal["3"]
    user: str = Field(min_length=1)
    auth_protocol: AuthProtocol | None = None
    auth_key: Secret | None = None
    priv_protocol: PrivProtocol | None = None
    priv_key: Secret | None = None
    context_name: str = ""
    engine_id: str | None = Field(None, description="hex engine id of a trap sender (v3 traps only)")

    @model_validator(mode="after")
    def _levels(self) -> SnmpV3:
        if (self.auth_protocol is None) != (self.auth_key is None):
            raise ValueError("auth_protocol and auth_key go together")
        if (self.priv_protocol is None) != (self.priv_key is None):
            raise ValueError("priv_protocol and priv_key go together")
        if self.priv_protocol is not None and self.auth_protocol is None:
            raise ValueError("privacy (priv_protocol) needs authentication (auth_protocol) too")
        for key in (self.auth_key, self.priv_key):
            if key is not None and len(key.get_secret_value()) < 8:
                raise ValueError("USM keys must be at least 8 characters (RFC 3414)")
        if self.engine_id is not None:
            try:
                bytes.fromhex(self.engine_id.removeprefix("0x"))
            except ValueError:
                raise ValueError(f"engine_id '{self.engine_id}' is not hex") from None
        return self

    @property
    def level(self) -> Literal["noAuthNoPriv", "authNoPriv", "authPriv"]:
        """The USM security level these credentials give."""
        if self.priv_protocol is not None:
            return "authPriv"
        return "authNoPriv" if self.auth_protocol is not None else "noAuthNoPriv"


def _version_text(value: object) -> object:
    """YAML reads ``version: 3`` as a number and a missing version means v2c."""
    if isinstance(value, dict):
        return {**value, "version": str(value.get("version", "2c"))}
    return value


SnmpCredentials = Annotated[
    Annotated[SnmpV1 | SnmpV2c | SnmpV3, Field(discriminator="version")], BeforeValidator(_version_text)
]


class PollingConfig(Strict):
    """Defaults for every device's polling."""

    interval: Duration = Field(300.0, description="how often each device is polled (operator base: 5m)")
    timeout: Duration = 2.0
    retries: int = Field(1, ge=0, le=10)
    max_in_flight: int = Field(64, ge=1, description="SNMP requests in flight across all devices")
    max_repetitions: int = Field(25, ge=1, le=200)

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, value: float) -> float:
        if value < 1:
            raise ValueError("interval must be at least 1s")
        return value


class DeviceConfig(Strict):
    """A polled device."""

    name: str = Field(min_length=1)
    kind: DeviceKind
    address: str
    port: int = Field(161, ge=1, le=65535)
    snmp: SnmpCredentials | None = Field(None, description="inline credentials")
    credentials: str | None = Field(None, description="name of an entry in the top-level credentials")
    profile: str | None = Field(None, description="device profile (config/profiles); defaults to the kind")
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(None, ge=0, le=10)
    location: str = Field(
        "default",
        min_length=1,
        description="where the device is reached from: the collectors of this location poll it",
    )

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"'{value}' is not an IP address") from None
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> DeviceConfig:
        if (self.snmp is None) == (self.credentials is None):
            raise ValueError("give either snmp (inline) or credentials (a name from the credentials section)")
        return self


class CustomerConfig(Strict):
    """A group customer and its service tier."""

    id: str = Field(min_length=1)
    name: str
    tier: Tier


class HopConfig(Strict):
    """One device on a circuit's path, and the interface that carries the circuit there."""

    device: str
    interface: str | None = None


class CircuitConfig(Strict):
    """A leased line: its customer and its device path from the customer side inwards."""

    id: str = Field(min_length=1)
    customer: str
    service: Literal["data_line", "transmission_lease", "ip_voice", "sms_gprs"] = "data_line"
    path: list[HopConfig] = Field(min_length=1)
    dial_targets: dict[str, str] = Field({}, description="dial-test targets by name, e.g. cpe_wan: 10.1.2.3")
    shared: list[str] = Field(
        [], description="shared elements upstream of the polled devices (names from elements:), e.g. SEG-A"
    )

    @field_validator("dial_targets")
    @classmethod
    def _target_ips(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"dial target {name}: '{address}' is not an IP address") from None
        return value


ElementKind = Literal["pe", "aggregation_ring", "transmission_segment"]


class ElementConfig(Strict):
    """Something many circuits share upstream of the polled devices: a PE, an aggregation ring, a segment."""

    name: str = Field(min_length=1)
    kind: ElementKind
    lead_team: Team | None = Field(
        None, description="who leads its major faults; default: by the routing tree"
    )


class MajorFaultsConfig(Strict):
    """Major faults (重大故障, SPEC §9): many circuits of one shared element down at once, handled as one."""

    enabled: bool = True
    min_circuits: int = Field(3, ge=2, description="circuits of one element raising one class of alarm ...")
    window: Duration = Field(120.0, description="... within this window open a major fault")
    escalation_team: str = Field(
        "maintenance_management", min_length=1, description="told at once of every major fault"
    )
    straggler_wait: Duration = Field(
        60.0, description="once most circuits recovered, those still down after this get their own work order"
    )
    repeat_window: Duration = Field(
        7 * 86400.0, description="the same circuit and alert again within this after a clear is a repeat"
    )


class KafkaTopics(Strict):
    """Topic names."""

    work_orders: str = "alarmd.workorders"
    notices: str = Field("alarmd.notices", description="notices, escalations, status updates, closes")


def _readable_file(value: str | None) -> str | None:
    """An absolute path to a readable file (TLS material is checked at load time, not at first use)."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"'{value}' must be an absolute path")
    if not path.is_file():
        raise ValueError(f"{value}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{value}: not readable by this user")
    return value


TlsFile = Annotated[str | None, AfterValidator(_readable_file)]


class KafkaTls(Strict):
    """TLS towards the brokers: whom to trust, and an optional client certificate (mutual TLS)."""

    ca_file: TlsFile = Field(
        None, description="PEM CA certificate(s) the brokers' certificates must chain to; default: system CAs"
    )
    cert_file: TlsFile = Field(None, description="PEM client certificate (chain), for mutual TLS")
    key_file: TlsFile = Field(None, description="PEM private key of cert_file, unless cert_file holds it")
    key_password: Secret | None = Field(None, description="passphrase of an encrypted key_file")
    check_hostname: bool = Field(True, description="the broker's certificate must name the host connected to")

    @model_validator(mode="after")
    def _loadable(self) -> KafkaTls:
        if self.cert_file is None and (self.key_file is not None or self.key_password is not None):
            raise ValueError("key_file and key_password need cert_file (the client certificate)")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except ssl.SSLError:
                raise ValueError(f"ca_file {self.ca_file} holds no PEM CA certificate") from None
        if self.cert_file is not None:
            # "" rather than None: OpenSSL would otherwise prompt on the terminal for an encrypted key
            password = self.key_password.get_secret_value() if self.key_password is not None else ""
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=password)
            except (ssl.SSLError, ValueError):
                raise ValueError(
                    f"cannot load the client certificate {self.cert_file} with key "
                    f"{self.key_file or self.cert_file}: not PEM, a wrong or missing key_password, "
                    "or a key that does not match the certificate"
                ) from None
        return self


SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


class KafkaSasl(Strict):
    """SASL credentials of alarmd's Kafka user."""

    mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str = Field(min_length=1)
    password: Secret

    @field_validator("password")
    @classmethod
    def _not_empty(cls, value: Secret) -> Secret:
        if not value.get_secret_value():
            raise ValueError("the SASL password is empty")
        return value


KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class KafkaSecurity(Strict):
    """How alarmd connects to Kafka: in clear (default), over TLS, with SASL, or both.

    ``SSL`` and ``SASL_SSL`` trust the system CAs unless ``tls.ca_file`` is given.  ``sasl``
    is required with ``SASL_*`` and refused without.  ``PLAIN`` over ``SASL_PLAINTEXT`` is
    refused: it would send the password in clear (SPEC §8).
    """

    protocol: KafkaProtocol = "PLAINTEXT"
    tls: KafkaTls | None = Field(None, description="with SSL / SASL_SSL; default: system CAs")
    sasl: KafkaSasl | None = Field(None, description="with SASL_PLAINTEXT / SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        uses_tls = self.protocol in ("SSL", "SASL_SSL")
        uses_sasl = self.protocol.startswith("SASL_")
        if self.tls is not None and not uses_tls:
            raise ValueError(f"tls is set but protocol is {self.protocol}; use SSL or SASL_SSL")
        if uses_sasl and self.sasl is None:
            raise ValueError(f"protocol {self.protocol} needs sasl: {{mechanism, username, password}}")
        if self.sasl is not None and not uses_sasl:
            raise ValueError(f"sasl is set but protocol is {self.protocol}; use SASL_SSL or SASL_PLAINTEXT")
        if self.protocol == "SASL_PLAINTEXT" and self.sasl is not None and self.sasl.mechanism == "PLAIN":
            raise ValueError(
                "SASL mechanism PLAIN over SASL_PLAINTEXT would send the password in clear; "
                "use protocol SASL_SSL or a SCRAM mechanism"
            )
        return self


class KafkaConfig(Strict):
    """The Kafka cluster that carries work orders.  ``KAFKA_BOOTSTRAP_SERVERS`` overrides it."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "alarmd"
    topics: KafkaTopics = KafkaTopics()
    request_timeout: Duration = 30.0
    retry_backoff: Duration = 1.0
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="replicas of each topic alarmd creates (min.insync.replicas 2 from 3 on); "
        "default: 3, or the brokers up at creation if fewer; set it to wait for them instead",
    )
    security: KafkaSecurity = Field(
        KafkaSecurity(), description="TLS and SASL towards the brokers, for every Kafka client of alarmd"
    )


class ListenAddress(Strict):
    """A ``host:port`` to listen on, with its parts."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{value}' is not host:port")
        return value

    @property
    def host(self) -> str:
        """Host part of ``listen``."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of ``listen``."""
        return int(self.listen.rpartition(":")[2])


class HttpConfig(ListenAddress):
    """The HTTP listener for ``/metrics`` and health."""

    listen: str = "127.0.0.1:9464"


class TrapsConfig(ListenAddress):
    """The trap and INFORM listener."""

    enabled: bool = False
    listen: str = Field("127.0.0.1:1162", description="host:port; production: 0.0.0.0:162")
    receive_buffer: int = Field(8 * 1024 * 1024, ge=65536, description="SO_RCVBUF bytes, for bursts")
    queue_size: int = Field(50_000, ge=1, description="decoded traps waiting for the rule stage")
    credentials: list[str] = Field([], description="names from the credentials section accepted on traps")
    allowed_sources: list[str] = Field([], description="CIDRs traps may come from; empty = any")
    definitions: list[str] = Field(["traps/*.yml"], description="trap definition files, relative to config")
    engine_id: str | None = Field(
        None, description="alarmd's SNMPv3 engine id (hex) for INFORMs; default: stable per host and port"
    )

    @field_validator("engine_id")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = bytes.fromhex(value.removeprefix("0x"))
            except ValueError:
                raise ValueError(f"engine_id '{value}' is not hex") from None
            if not 5 <= len(raw) <= 32:
                raise ValueError("an SNMP engine id is 5 to 32 bytes (RFC 3411)")
        return value

    @field_validator("allowed_sources")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"'{cidr}' is not a network (e.g. 10.0.0.0/8)") from None
        return value


class ConsumedTopic(Strict):
    """A topic alarmd consumes in a consumer group, with a dead-letter topic for bad messages."""

    enabled: bool = False
    topic: str
    group_id: str
    dead_letter_topic: str


class UpstreamConfig(ConsumedTopic):
    """Alarms forwarded by upstream systems (TeMIP, IPNET, transmission NMS) on a Kafka topic."""

    topic: str = "alarmd.upstream"
    group_id: str = "alarmd-upstream"
    dead_letter_topic: str = "alarmd.upstream.dead-letter"


class TicketingConfig(ConsumedTopic):
    """Feedback from ticketing (acknowledged, in progress, resolved, closed) on a Kafka topic."""

    topic: str = "alarmd.ticket-feedback"
    group_id: str = "alarmd-ticketing"
    dead_letter_topic: str = "alarmd.ticket-feedback.dead-letter"


class DialTestConfig(Strict):
    """The active ICMP echo test (拨测) to a circuit's customer equipment."""

    every: Duration = Field(
        300.0, description="how often each circuit's targets are tested; 0 = on demand only"
    )
    count: int = Field(5, ge=1, le=100)
    interval: Duration = Field(0.2, description="between echo requests of one test")
    size: int = Field(56, ge=0, le=65000, description="ICMP payload bytes")
    timeout: Duration = 1.0
    preprocess_budget: Duration = Field(
        3.0, description="the most the first work order of a fault waits for its pre-processing; 0 = skip"
    )


def _matcher_list(value: list[str]) -> list[str]:
    try:
        parse_matcher_list(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


MatcherList = Annotated[list[str], AfterValidator(_matcher_list)]


class RouteConfig(Strict):
    """Alertmanager-shaped routing: the first matching child route wins, else this route's receiver."""

    receiver: Team
    matchers: MatcherList = []
    routes: list[RouteConfig] = []


class ReceiverConfig(Strict):
    """A team that can lead a fault, and the specialist teams that stand by when it does (SPEC §3)."""

    name: Team
    related_teams: list[str] = []


class InhibitRuleConfig(Strict):
    """Alertmanager-shaped inhibition: a firing source alarm makes matching targets its children."""

    source_matchers: MatcherList = Field(min_length=1)
    target_matchers: MatcherList = Field(min_length=1)
    equal: list[str] = []


class RoutingConfig(Strict):
    """Lead team, standing-by teams, and which alarms fold under which (SPEC §3)."""

    route: RouteConfig = RouteConfig(
        receiver=Team.SERVICE_SUPPORT,
        routes=[RouteConfig(receiver=Team.TRANSPORT_NETWORK, matchers=['alarm_class="transmission"'])],
    )
    receivers: list[ReceiverConfig] = [
        ReceiverConfig(name=Team.TRANSPORT_NETWORK, related_teams=["service_support", "data_network"]),
        ReceiverConfig(name=Team.SERVICE_SUPPORT, related_teams=["transport_network", "data_network"]),
    ]
    path_correlation: bool = Field(
        True,
        description="data anomalies fold under transmission faults of their "
        "circuit; unreachable devices under the one upstream",
    )
    inhibit_rules: list[InhibitRuleConfig] = [
        InhibitRuleConfig(
            source_matchers=['alertname="BandwidthOccupancyHigh"'],
            target_matchers=['alertname="FluctuationWarning"'],
            equal=["device", "interface"],
        ),
        InhibitRuleConfig(
            source_matchers=['alertname="LinkDown"', 'trap="linkDown"'],
            target_matchers=['alertname="LinkDown"', 'trap=""'],
            equal=["device", "if_index"],
        ),
    ]


class ClocksConfig(Strict):
    """The clock of every fault (SPEC §4, §5); the defaults are the operator's."""

    important_escalation: Duration = Field(3600.0, description="diamond/gold unresolved -> joint handling")
    ordinary_escalation: Duration = Field(10800.0, description="ordinary unresolved -> joint handling")
    on_site_deadline: Duration = Field(7200.0, description="teams on site, after the fault (important)")
    status_update_every: Duration = Field(3600.0, description="status updates during joint handling")
    observation: Duration = Field(3600.0, description="after clear, before close; a relapse re-opens")
    business_watch: Duration = Field(86400.0, description="after clear, a relapse is flagged on the fault")
    summary_working_days: int = Field(2, ge=0, description="fault summary due, in working days after clear")
    callback: Duration = Field(14 * 86400.0, description="satisfaction call-back due after clear")
    holidays: list[datetime.date] = Field([], description="non-working days besides weekends")
    utc_offset_hours: float = Field(8.0, description="where the operator's days begin")


class ApiConfig(Strict):
    """The HTTP API's access control (SPEC §8); without a tokens file the API answers 403 to everyone."""

    tokens_file: str | None = Field(None, description="YAML of hashed bearer tokens; relative to the config")
    lockout_after: int = Field(5, ge=1, description="failed logins from one address before it is locked out")
    lockout_for: Duration = Field(300.0, description="how long a locked-out address is refused")
    audit_log: str = Field("audit.log", description="JSON lines of who did what; relative to state_dir")


class MaintenanceConfig(Strict):
    """Planned outages (割接, SPEC §9): where they are kept, how long a fault may outlive one, notice lead."""

    files: list[str] = Field(
        ["maintenance/*.yml"], description="planned-outage files, relative to the config; none found is fine"
    )
    grace: Duration = Field(
        900.0, description="a fault still there this long after its window ends is dispatched then"
    )
    notice_lead: Duration = Field(
        86400.0, description="customers are reminded this long before the start; less notice is flagged"
    )


class SecurityConfig(Strict):
    """Operator-wide security switches (SPEC §8)."""

    v3_only: bool = Field(False, description="refuse SNMP v1/v2c for polling and traps; only USM (v3)")


JOIN_LIMIT_FLOOR = 20.0
"""Seconds: the least derived ``cluster.join_timeout`` (a new group's first join alone waits 3 s more)."""


class ClusterConfig(Strict):
    """Distributed mode (``alarmd run --role collector|correlator``): the topics and groups of the roles."""

    location: str = Field(
        "default", min_length=1, description="the location this instance collects for (devices[].location)"
    )
    events_topic: str = Field("alarmd.events", description="samples and trap events, keyed by circuit")
    events_partitions: int = Field(
        12, ge=1, le=10_000, description="fixed when the topic is created; changing it is a migration"
    )
    inventory_topic: str = Field(
        "alarmd.inventory", description="membership topic of collectors; '.<location>' is appended"
    )
    inventory_partitions: int = Field(
        12, ge=1, le=10_000, description="devices of a location are shared out in this many parts"
    )
    collector_group: str = Field("alarmd-collectors", description="'.<location>' is appended")
    correlator_group: str = "alarmd-correlators"
    transactional_id_prefix: str | None = Field(
        None,
        min_length=1,
        description="correlators' transactional ids are '<prefix>-<events partition>'; "
        "default '<correlator_group>.<events_topic>'",
    )
    session_timeout: Duration = Field(
        10.0, description="a silent member is dropped after this (broker bounds: 6s-30min by default)"
    )
    join_timeout: Duration | None = Field(
        None,
        gt=0,
        description="a member that has no assignment this long after it began joining (or after a "
        "rebalance began) leaves the group and joins again as a new member, counted in "
        "alarmd_cluster_join_stalls_total; default 3 x session_timeout, at least 20s",
    )
    spool_size: int = Field(100_000, ge=1, description="messages kept while Kafka cannot be reached")
    spool_disk_bytes: int = Field(
        0,
        ge=0,
        description="if above 0, the spool is also kept on disk (state_dir/spool, at most this many "
        "bytes of messages; the oldest dropped past that, counted), so a collector killed while Kafka "
        "is away sends what it held after its restart",
    )
    takeover_spread: Duration = Field(
        5.0,
        ge=0,
        description="devices taken over from a collector that died or left are first polled within "
        "this many seconds (at most their interval), then on their usual slot",
    )
    rebalance_check: Duration = Field(
        60.0,
        ge=0,
        description="correlators: how often the group's leader checks whether assigning the events "
        "partitions by their measured traffic would share it clearly more evenly, and if so asks "
        "for a rebalance (at most one per check); 0 turns the check and the measuring off",
    )
    dedup_window: Duration = Field(
        600.0, description="how long an event id is remembered: a copy within it is a duplicate"
    )
    dedup_size: int = Field(1_000_000, ge=1, description="event ids remembered at most")
    dedup_rebuild: Duration = Field(
        2.0,
        ge=0,
        description="correlators: how long at most a newly assigned events partition's input before "
        "its committed offset (the last dedup_window of it, the newest first) is read back for the "
        "event ids seen, so a copy arriving after the hand-over is still a duplicate; 0 reads nothing",
    )
    feedback_wait: Duration = Field(
        30.0,
        description="how long ticketing feedback for a fault not yet in the cluster view is held "
        "before it goes to the dead-letter topic",
    )

    @field_validator("session_timeout")
    @classmethod
    def _session_floor(cls, value: float) -> float:
        if not 1 <= value <= 1800:
            raise ValueError("session_timeout must be between 1s and 30m")
        return value

    @property
    def join_limit(self) -> float:
        """Seconds a group member waits for an assignment before it joins again (``join_timeout``)."""
        if self.join_timeout is not None:
            return self.join_timeout
        return max(3 * self.session_timeout, JOIN_LIMIT_FLOOR)

    @property
    def location_topic(self) -> str:
        """The inventory (membership) topic of this location."""
        return f"{self.inventory_topic}.{self.location}"

    @property
    def transactional_prefix(self) -> str:
        """The prefix of the correlators' transactional ids (one id per events partition)."""
        return self.transactional_id_prefix or f"{self.correlator_group}.{self.events_topic}"

    @property
    def location_group(self) -> str:
        """The consumer group of this location's collectors."""
        return f"{self.collector_group}.{self.location}"


class Config(Strict):
    """The whole daemon configuration (``alarmd.yml``)."""

    rule_files: list[str] = ["rules/*.yml"]
    profile_files: list[str] = Field(
        ["profiles/*.yml"], description="device profiles, relative to the config"
    )
    credentials: dict[str, SnmpCredentials] = Field({}, description="named SNMP credentials")
    inventory_files: list[str] = Field(
        [],
        description="more customers, devices, circuits and credentials: YAML files or the resource "
        "system's CSV export (docs/inventory.md); globs relative to the config",
    )
    traps: TrapsConfig = TrapsConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    ticketing: TicketingConfig = TicketingConfig()
    dial_test: DialTestConfig = DialTestConfig()
    routing: RoutingConfig = RoutingConfig()
    clocks: ClocksConfig = ClocksConfig()
    polling: PollingConfig = PollingConfig()
    customers: list[CustomerConfig] = []
    devices: list[DeviceConfig] = []
    circuits: list[CircuitConfig] = []
    elements: list[ElementConfig] = Field([], description="shared elements that circuits name in shared:")
    major_faults: MajorFaultsConfig = MajorFaultsConfig()
    locale: Literal["en", "zh-CN"] = Field(
        "en", description="language of the NOC board and message summaries"
    )
    kafka: KafkaConfig = KafkaConfig()
    http: HttpConfig = HttpConfig()
    api: ApiConfig = ApiConfig()
    security: SecurityConfig = SecurityConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    cluster: ClusterConfig = ClusterConfig()
    queue_size: int = Field(10_000, ge=1, description="capacity of each queue between stages")
    state_dir: str = Field("/var/lib/alarmd", description="outbox and state; relative to the config file")
    shutdown_timeout: Duration = Field(10.0, description="how long SIGTERM waits to flush the outbox")


@dataclass(frozen=True)
class Loaded:
    """A validated config with the file it came from and the rule files it names."""

    config: Config
    path: Path
    rule_paths: list[Path]
    state_dir: Path
    profile_paths: list[Path]
    inventory_paths: list[Path] = field(default_factory=list)

    def device_credentials(self, device: DeviceConfig) -> SnmpV1 | SnmpV2c | SnmpV3:
        """The credentials a device is polled with (inline or named)."""
        if device.snmp is not None:
            return device.snmp
        return self.config.credentials[device.credentials or ""]


class InventoryFile(Strict):
    """An inventory file beside ``alarmd.yml``: the same sections, nothing else."""

    credentials: dict[str, SnmpCredentials] = {}
    customers: list[CustomerConfig] = []
    devices: list[DeviceConfig] = []
    circuits: list[CircuitConfig] = []


INVENTORY_SECTIONS = ("customers", "devices", "circuits")


@dataclass
class _Origins:
    """Where each customer, device, circuit and credential of the merged config was written."""

    items: dict[str, list[tuple[YamlDoc, int]]] = field(
        default_factory=lambda: {s: [] for s in INVENTORY_SECTIONS}
    )
    credentials: dict[str, YamlDoc] = field(default_factory=dict)

    def where(self, section: str, i: int, *rest: str | int) -> str:
        doc, local = self.items[section][i]
        return doc.where((section, local, *rest))

    def name(self, section: str, i: int, *rest: str | int) -> str:
        doc, local = self.items[section][i]
        loc = (section, local, *rest)
        if loc in doc.keys:
            return doc.keys[loc]
        return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in loc).removeprefix(".")


def _unique(origins: _Origins, items: list[Any], attr: str, section: str, problems: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        key = getattr(item, attr)
        if key in seen:
            problems.append(
                f"{origins.where(section, i, attr)}: {origins.name(section, i, attr)}: duplicate "
                f"{section[:-1]} '{key}' (first at {origins.where(section, seen[key], attr)})"
            )
        else:
            seen[key] = i
    return set(seen)


def _check_references(doc: YamlDoc, cfg: Config, origins: _Origins) -> None:
    """Duplicate ids and unknown names anywhere in the inventory: every problem, with its place."""
    problems: list[str] = []
    customers = _unique(origins, cfg.customers, "id", "customers", problems)
    devices = _unique(origins, cfg.devices, "name", "devices", problems)
    for i, device in enumerate(cfg.devices):
        if device.credentials is not None and device.credentials not in cfg.credentials:
            problems.append(
                f"{origins.where('devices', i, 'credentials')}: {origins.name('devices', i, 'credentials')}: "
                f"unknown credentials '{device.credentials}' "
                f"(known: {', '.join(cfg.credentials) or 'none'})"
            )
    if cfg.security.v3_only:
        _check_v3_only(doc, cfg, origins, problems)
    for i, name in enumerate(cfg.traps.credentials):
        if name not in cfg.credentials:
            problems.append(
                f"{doc.where(('traps', 'credentials', i))}: traps.credentials[{i}]: "
                f"unknown credentials '{name}'"
            )
    _unique(origins, cfg.circuits, "id", "circuits", problems)
    for i, circuit in enumerate(cfg.circuits):
        if circuit.customer not in customers:
            problems.append(
                f"{origins.where('circuits', i, 'customer')}: {origins.name('circuits', i, 'customer')}: "
                f"unknown customer '{circuit.customer}'"
            )
        for j, hop in enumerate(circuit.path):
            if hop.device not in devices:
                problems.append(
                    f"{origins.where('circuits', i, 'path', j, 'device')}: "
                    f"{origins.name('circuits', i, 'path', j, 'device')}: unknown device '{hop.device}'"
                    f" on the path of circuit '{circuit.id}'"
                )
    _check_shared(doc, cfg, origins, problems)
    if problems:
        raise ConfigError("\n".join(problems))


def _check_shared(doc: YamlDoc, cfg: Config, origins: _Origins, problems: list[str]) -> None:
    """Every element a circuit names in ``shared`` is defined once under ``elements``."""
    elements: dict[str, int] = {}
    for i, element in enumerate(cfg.elements):
        if element.name in elements:
            problems.append(
                f"{doc.where(('elements', i, 'name'))}: elements[{i}].name: duplicate element "
                f"'{element.name}' (first at {doc.where(('elements', elements[element.name], 'name'))})"
            )
        else:
            elements[element.name] = i
    for i, circuit in enumerate(cfg.circuits):
        for j, name in enumerate(circuit.shared):
            if name not in elements:
                problems.append(
                    f"{origins.where('circuits', i, 'shared', j)}: "
                    f"{origins.name('circuits', i, 'shared', j)}: unknown element '{name}' "
                    f"(known: {', '.join(sorted(elements)) or 'none'})"
                )


def _check_v3_only(doc: YamlDoc, cfg: Config, origins: _Origins, problems: list[str]) -> None:
    """With ``security.v3_only`` no device is polled and no trap is taken with a community."""
    for i, device in enumerate(cfg.devices):
        creds = device.snmp if device.snmp is not None else cfg.credentials.get(device.credentials or "")
        if creds is not None and not isinstance(creds, SnmpV3):
            key = "snmp" if device.snmp is not None else "credentials"
            problems.append(
                f"{origins.where('devices', i, key)}: {origins.name('devices', i)} ({device.name}) uses "
                f"SNMP v{creds.version}, but security.v3_only is set"
            )
    for i, name in enumerate(cfg.traps.credentials):
        creds = cfg.credentials.get(name)
        if creds is not None and not isinstance(creds, SnmpV3):
            problems.append(
                f"{doc.where(('traps', 'credentials', i))}: traps.credentials[{i}] ({name}) is "
                f"SNMP v{creds.version}, but security.v3_only is set"
            )


def read_inventory(path: Path) -> YamlDoc:
    """Read one inventory file: YAML, or the resource system's CSV export (by its ``.csv`` suffix)."""
    if path.suffix.lower() != ".csv":
        return read_yaml(path)
    found = read_inventory_csv(path)
    if found.problems:
        raise ConfigError("\n".join(found.problems))
    return YamlDoc(path, found.data, found.lines, found.columns, found.keys)


def _merge_inventory(doc: YamlDoc, cfg: Config, paths: list[Path]) -> tuple[Config, _Origins]:
    """Add the inventory files' customers, devices, circuits and credentials to the config."""
    origins = _Origins()
    for section in INVENTORY_SECTIONS:
        origins.items[section] = [(doc, i) for i in range(len(getattr(cfg, section)))]
    origins.credentials = dict.fromkeys(cfg.credentials, doc)
    merged: dict[str, Any] = {
        "credentials": dict(cfg.credentials),
        **{s: list(getattr(cfg, s)) for s in INVENTORY_SECTIONS},
    }
    problems: list[str] = []
    for path in paths:
        try:
            part_doc = read_inventory(path)
            part = validate(part_doc, InventoryFile)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        for name, creds in part.credentials.items():
            if name in merged["credentials"]:
                problems.append(
                    f"{part_doc.where(('credentials', name))}: credentials.{name}: duplicate credentials "
                    f"'{name}' (first in {origins.credentials[name].where(('credentials', name))})"
                )
                continue
            merged["credentials"][name] = creds
            origins.credentials[name] = part_doc
        for section in INVENTORY_SECTIONS:
            items = getattr(part, section)
            merged[section].extend(items)
            origins.items[section].extend((part_doc, i) for i in range(len(items)))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg.model_copy(update=merged), origins


def config_file(path: Path) -> Path:
    """``-c`` may name the config directory or the file itself."""
    return path / CONFIG_FILE if path.is_dir() else path


def load(path: Path, env: Mapping[str, str] | None = None) -> Loaded:
    """Read, validate and cross-check the config; resolve its rule file globs."""
    env = os.environ if env is None else env
    file = config_file(path)
    if not file.exists():
        raise ConfigError(f"{file}: no such file (pass -c with the config directory or file)")
    doc = read_yaml(file)
    cfg = validate(doc, Config)
    inventory_paths = _glob(doc, file, "inventory_files", cfg.inventory_files)
    cfg, origins = _merge_inventory(doc, cfg, inventory_paths)
    _check_references(doc, cfg, origins)
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        kafka = cfg.kafka.model_copy(update={"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
        cfg = cfg.model_copy(update={"kafka": kafka})
    rule_paths = _glob(doc, file, "rule_files", cfg.rule_files)
    profile_paths = _glob(doc, file, "profile_files", cfg.profile_files)
    state_dir = Path(cfg.state_dir)
    if not state_dir.is_absolute():
        state_dir = file.parent / state_dir
    return Loaded(cfg, file, rule_paths, state_dir, profile_paths, inventory_paths)


def _glob(doc: YamlDoc, file: Path, key: str, patterns: list[str]) -> list[Path]:
    """Resolve file globs relative to the config file; a glob that matches nothing is an error."""
    paths: list[Path] = []
    for i, pattern in enumerate(patterns):
        full = pattern if os.path.isabs(pattern) else str(file.parent / pattern)
        matches = sorted(Path(p) for p in glob.glob(full))
        if not matches:
            raise ConfigError(
                f"{doc.where((key, i))}: {key}[{i}]: '{pattern}' matches no file (relative to {file.parent})"
            )
        paths.extend(matches)
    return paths
