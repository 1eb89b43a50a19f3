"""SNMP as a role (``SnmpClient``) and its pysnmp 7 implementation (``PysnmpClient``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
    bulk_cmd,
    get_cmd,
)
from pysnmp.proto import errind, rfc1905
from pysnmp.proto.rfc1902 import ObjectName

from alarmd.config import Secret

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
    community: Secret
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


def _reason(indication: object) -> Reason:
    if isinstance(indication, errind.RequestTimedOut):
        return "timeout"
    text = str(indication).lower()
    if "auth" in text or "unknown community" in text or "usm" in text:
        return "auth"
    return "transport"


def _parse(oid: str) -> tuple[int, ...]:
    return tuple(int(p) for p in oid.strip(".").split("."))


class PysnmpClient:
    """SNMP v2c over pysnmp 7's asyncio API: one shared engine, MIB lookups off."""

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

    def _auth(self, target: Target) -> CommunityData:
        return CommunityData(target.community.get_secret_value(), mpModel=1)

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
                ContextData(),
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
        prefixes = {col: _parse(col) for col in columns}
        result: dict[str, dict[str, SnmpValue]] = {col: {} for col in columns}
        cursor = {col: prefixes[col] for col in columns}
        active = list(columns)
        while active:
            async with self._limit:
                indication, status, index, varbinds = await bulk_cmd(
                    self._engine,
                    self._auth(target),
                    transport,
                    ContextData(),
                    0,
                    max_repetitions,
                    *(ObjectType(ObjectIdentity(".".join(map(str, cursor[c])))) for c in active),
                    lookupMib=False,
                )
            self._check(target, indication, status, index)
            if not varbinds:
                break
            done: set[str] = set()
            for i, vb in enumerate(varbinds):
                col = active[i % len(active)]
                if col in done:
                    continue
                oid = _oid(vb)
                prefix = prefixes[col]
                if (
                    isinstance(vb[1], rfc1905.EndOfMibView)
                    or oid[: len(prefix)] != prefix
                    or oid <= cursor[col]
                ):
                    done.add(col)
                    continue
                result[col][".".join(map(str, oid[len(prefix) :]))] = _convert(vb[1])
                cursor[col] = oid
            if len(varbinds) < len(active):
                done.update(active[len(varbinds) :])
            active = [c for c in active if c not in done]
        return result

    def close(self) -> None:
        """Release sockets."""
        self._engine.close_dispatcher()
