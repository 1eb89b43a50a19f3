"""SNMP as a role (``SnmpClient``) and its pysnmp 7 implementation (``PysnmpClient``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pyasn1.type import univ
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    next_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as usm
from pysnmp.proto import errind, rfc1905
from pysnmp.proto.rfc1902 import ObjectName

from alarmd.config import SnmpV1, SnmpV2c, SnmpV3

SnmpValue = int | bytes | str | None
Reason = Literal["timeout", "auth", "error_status", "transport", "decode", "internal"]


class SnmpError(Exception):
    """An SNMP request failed; ``reason`` is one of a fixed set, for metrics."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to reach one agent."""

    name: str
    address: str
    port: int
    credentials: SnmpV1 | SnmpV2c | SnmpV3
    timeout: float
    retries: int


class SnmpClient(Protocol):
    """What the poller needs from SNMP."""

    async def get(self, target: Target, oids: Sequence[str]) -> dict[str, SnmpValue]:
        """GET scalars; missing objects come back as ``None``."""
        ...

    async def walk(
        self, target: Target, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, SnmpValue]]:
        """GETBULK-walk table columns: ``{column_oid: {index: value}}``."""
        ...

    def close(self) -> None:
        """Release sockets."""
        ...


def _convert(value: Any) -> SnmpValue:
    if isinstance(value, rfc1905.NoSuchObject | rfc1905.NoSuchInstance | rfc1905.EndOfMibView):
        return None
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.OctetString):
        return bytes(value)
    if isinstance(value, univ.ObjectIdentifier):
        return str(value)
    if isinstance(value, univ.Null):
        return None
    raise SnmpError("decode", f"unsupported value type {type(value).__name__}")


def _oid(obj: Any) -> tuple[int, ...]:
    name = obj[0]
    if isinstance(name, ObjectIdentity):
        name = name.get_oid()
    return tuple(ObjectName(name))


_AUTH_ERRORS = (
    errind.WrongDigest,
    errind.DecryptionError,
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.AuthenticationError,
    errind.AuthenticationFailure,
    errind.UnsupportedSecurityLevel,
    errind.UnknownCommunityName,
    errind.NotInTimeWindow,
    errind.UnknownEngineID,
    errind.NoAuthentication,
    errind.NoEncryption,
)
_DECODE_ERRORS = (
    errind.DeserializationError,
    errind.InvalidMsg,
    errind.OidNotIncreasing,
    errind.EmptyResponse,
)


def _reason(indication: object) -> Reason:
    if isinstance(indication, errind.RequestTimedOut):
        return "timeout"
    if isinstance(indication, _AUTH_ERRORS):
        return "auth"
    if isinstance(indication, _DECODE_ERRORS):
        return "decode"
    return "transport"


AUTH = {
    "md5": usm.USM_AUTH_HMAC96_MD5,
    "sha": usm.USM_AUTH_HMAC96_SHA,
    "sha224": usm.USM_AUTH_HMAC128_SHA224,
    "sha256": usm.USM_AUTH_HMAC192_SHA256,
    "sha384": usm.USM_AUTH_HMAC256_SHA384,
    "sha512": usm.USM_AUTH_HMAC384_SHA512,
}
PRIV = {
    "des": usm.USM_PRIV_CBC56_DES,
    "aes128": usm.USM_PRIV_CFB128_AES,
    "aes192": usm.USM_PRIV_CFB192_AES,
    "aes256": usm.USM_PRIV_CFB256_AES,
}


def auth_data(credentials: SnmpV1 | SnmpV2c | SnmpV3) -> CommunityData | UsmUserData:
    """Pysnmp's authentication object for a set of credentials."""
    if isinstance(credentials, SnmpV3):
        return UsmUserData(
            credentials.user,
            authKey=credentials.auth_key.get_secret_value() if credentials.auth_key else None,
            privKey=credentials.priv_key.get_secret_value() if credentials.priv_key else None,
            authProtocol=AUTH[credentials.auth_protocol] if credentials.auth_protocol else usm.USM_AUTH_NONE,
            privProtocol=PRIV[credentials.priv_protocol] if credentials.priv_protocol else usm.USM_PRIV_NONE,
        )
    return CommunityData(
        credentials.community.get_secret_value(), mpModel=0 if credentials.version == "1" else 1
    )


NO_SUCH_NAME = 2


#: One fetched variable binding: (numeric OID, value, whether it is endOfMibView).
Fetched = tuple[str, SnmpValue, bool]
#: One GETBULK (or, for v1, GETNEXT) round: OIDs in, (v1 error-status, varbinds) out.
Fetch = Callable[[list[str]], Awaitable[tuple[int, list[Fetched]]]]


async def walk_columns(columns: Sequence[str], v1: bool, fetch: Fetch) -> dict[str, dict[str, SnmpValue]]:
    """Walk table columns with ``fetch``: ``{column_oid: {index: value}}``.

    A column ends at endOfMibView, at the first OID outside it, or when a round does not take
    it past where it was (an agent looping).  v1 has no GETBULK and ends a walk with
    noSuchName: one column per GETNEXT there.
    """
    prefixes = {col: col.strip(".") + "." for col in columns}
    result: dict[str, dict[str, SnmpValue]] = {col: {} for col in columns}
    cursor: dict[str, tuple[int, ...]] = dict.fromkeys(columns, ())
    last: dict[str, str] = {col: col.strip(".") for col in columns}
    active = list(columns)
    while active:
        batch = active[:1] if v1 else active
        status, varbinds = await fetch([last[c] for c in batch])
        if status == NO_SUCH_NAME:
            active = active[1:]
            continue
        done: set[str] = set(batch[len(varbinds) :])
        width = len(batch)
        reached = dict(last)
        for i, (oid, value, end_of_mib) in enumerate(varbinds):
            col = batch[i % width]
            if col in done:
                continue
            prefix = prefixes[col]
            if end_of_mib or not oid.startswith(prefix):
                done.add(col)
                continue
            result[col][oid[len(prefix) :]] = value
            reached[col] = oid
        for col in batch:
            if col in done:
                continue
            # Progress is checked once per column and round: the OID it reached must be past the cursor.
            try:
                position = tuple(map(int, reached[col][len(prefixes[col]) :].split(".")))
            except ValueError:
                position = ()
            if position <= cursor[col]:
                done.add(col)
                continue
            cursor[col] = position
            last[col] = reached[col]
        active = [c for c in active if c not in done]
    return result


class PysnmpClient:
    """SNMP v1, v2c and v3 over pysnmp 7's asyncio API: one shared engine, MIB lookups off."""

    def __init__(self, max_in_flight: int = 64) -> None:
        self._engine = SnmpEngine()
        self._limit = asyncio.Semaphore(max_in_flight)
        self._targets: dict[tuple[str, int, float, int], UdpTransportTarget] = {}

    async def _transport(self, target: Target) -> UdpTransportTarget:
        key = (target.address, target.port, target.timeout, target.retries)
        transport = self._targets.get(key)
        if transport is None:
            transport = await UdpTransportTarget.create(
                (target.address, target.port), timeout=target.timeout, retries=target.retries
            )
            self._targets[key] = transport
        return transport

    @staticmethod
    def _auth(target: Target) -> CommunityData | UsmUserData:
        return auth_data(target.credentials)

    @staticmethod
    def _context(target: Target) -> ContextData:
        creds = target.credentials
        return ContextData(contextName=creds.context_name) if isinstance(creds, SnmpV3) else ContextData()

    @staticmethod
    def _check(target: Target, indication: object, status: object, index: object) -> None:
        if indication:
            raise SnmpError(_reason(indication), f"{target.name}: {indication}")
        if status and int(status):  # type: ignore[call-overload]
            raise SnmpError("error_status", f"{target.name}: {status} at varbind {index}")

    async def get(self, target: Target, oids: Sequence[str]) -> dict[str, SnmpValue]:
        """GET scalars; missing objects come back as ``None``."""
        transport = await self._transport(target)
        async with self._limit:
            indication, status, index, varbinds = await get_cmd(
                self._engine,
                self._auth(target),
                transport,
                self._context(target),
                *(ObjectType(ObjectIdentity(oid)) for oid in oids),
                lookupMib=False,
            )
        self._check(target, indication, status, index)
        return {".".join(map(str, _oid(vb))): _convert(vb[1]) for vb in varbinds}

    async def walk(
        self, target: Target, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, SnmpValue]]:
        """GETBULK-walk table columns: ``{column_oid: {index: value}}``."""
        transport = await self._transport(target)
        v1 = isinstance(target.credentials, SnmpV1)

        async def fetch(oids: list[str]) -> tuple[int, list[Fetched]]:
            objects = [ObjectType(ObjectIdentity(oid)) for oid in oids]
            async with self._limit:
                if v1:
                    indication, status, index, varbinds = await next_cmd(
                        self._engine,
                        self._auth(target),
                        transport,
                        self._context(target),
                        *objects,
                        lookupMib=False,
                    )
                else:
                    indication, status, index, varbinds = await bulk_cmd(
                        self._engine,
                        self._auth(target),
                        transport,
                        self._context(target),
                        0,
                        max_repetitions,
                        *objects,
                        lookupMib=False,
                    )
            if v1 and not indication and status and int(status) == NO_SUCH_NAME:
                return NO_SUCH_NAME, []
            self._check(target, indication, status, index)
            return 0, [
                (".".join(map(str, _oid(vb))), _convert(vb[1]), isinstance(vb[1], rfc1905.EndOfMibView))
                for vb in varbinds
            ]

        return await walk_columns(columns, v1, fetch)

    def close(self) -> None:
        """Release sockets."""
        self._engine.close_dispatcher()
