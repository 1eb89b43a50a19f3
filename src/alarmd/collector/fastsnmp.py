"""SNMP v1/v2c GET and GETBULK over one UDP socket and the project's BER codec (``ber``).

pysnmp builds a tree of pyasn1 objects for every message; a 300-varbind GETBULK response
costs it ~57 ms.  This client encodes requests and decodes responses with :mod:`ber`
(plain ints, bytes and strings) and matches responses to requests by request-id on one
shared socket per address family.  SNMPv3 needs USM (keys, engine discovery, time
windows), which stays with pysnmp: :class:`FastSnmpClient` hands v3 targets to the
client it was given.

A response counts only if it comes from the target's address and port, carries the
request's version, community and request-id, and is a Response-PDU; anything else is
ignored, as net-snmp does.  A malformed datagram from a target that then times out turns
the timeout into ``decode``, so a device answering garbage is told apart from a silent one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog

from alarmd.collector import ber
from alarmd.collector.snmp import (
    NO_SUCH_NAME,
    Fetched,
    SnmpClient,
    SnmpError,
    SnmpValue,
    Target,
    walk_columns,
)
from alarmd.config import SnmpV1, SnmpV3
from alarmd.model import VarBind

log = structlog.get_logger("alarmd.snmp")

_ABSENT: Final = frozenset({"noSuchObject", "noSuchInstance", "endOfMibView", "Null"})
_PLAIN: Final = frozenset(
    {"Integer", "OctetString", "Counter32", "Gauge32", "TimeTicks", "Counter64", "Opaque", "ObjectIdentifier"}
)
_Address = tuple[str, int]


def _value(vb: VarBind) -> SnmpValue:
    if vb.type in _ABSENT:
        return None
    if vb.type == "IpAddress" and isinstance(vb.value, str):
        return socket.inet_aton(vb.value)
    return vb.value


class _Pending:
    __slots__ = ("address", "community", "future", "garbage", "version")

    def __init__(
        self, address: _Address, version: int, community: bytes, future: asyncio.Future[ber.Message]
    ) -> None:
        self.address = address
        self.version = version
        self.community = community
        self.future = future
        self.garbage: str | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: FastSnmpClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.client._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("snmp_socket_error", error=str(exc))


class FastSnmpClient:
    """SNMP v1/v2c through :mod:`ber` on a shared socket; v3 targets go to ``v3``.

    ``v3`` may be a factory, called when the first v3 target is polled: pysnmp's engine costs
    a few megabytes that a network of v1/v2c devices never needs.
    """

    def __init__(
        self, max_in_flight: int = 64, *, v3: SnmpClient | Callable[[], SnmpClient] | None = None
    ) -> None:
        self._limit = asyncio.Semaphore(max_in_flight)
        self._v3: SnmpClient | None = None
        self._v3_factory: Callable[[], SnmpClient] | None = None
        if callable(v3):
            self._v3_factory = v3
        else:
            self._v3 = v3
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._opening = asyncio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = secrets.randbelow(1 << 30) + 1
        self._addresses: dict[tuple[str, int], _Address] = {}
        #: Datagrams that were not a well-formed SNMP message, and responses matching no request.
        self.malformed = 0
        self.unmatched = 0

    # ------------------------------------------------------------------ transport

    async def _address(self, target: Target) -> _Address:
        key = (target.address, target.port)
        found = self._addresses.get(key)
        if found is None:
            try:
                found = (str(ipaddress.ip_address(target.address)), target.port)
            except ValueError:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    target.address, target.port, type=socket.SOCK_DGRAM
                )
                if not infos:
                    raise SnmpError("transport", f"{target.name}: cannot resolve {target.address}") from None
                host, port = infos[0][4][:2]
                found = (str(host), int(port))
            self._addresses[key] = found
        return found

    async def _transport(self, address: _Address) -> asyncio.DatagramTransport:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        transport = self._transports.get(family)
        if transport is None:
            async with self._opening:
                transport = self._transports.get(family)
                if transport is None:
                    # Unbound: the kernel picks the source port on the first send, like any manager.
                    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                        lambda: _Protocol(self), family=family
                    )
                    self._transports[family] = transport
        return transport

    def _received(self, data: bytes, addr: _Address) -> None:
        try:
            message = ber.decode_message(data)
        except ber.BerError as exc:
            self.malformed += 1
            for waiting in self._pending.values():
                if waiting.address == addr:
                    waiting.garbage = exc.reason
            return
        pending = self._pending.get(message.request_id)
        if (
            pending is None
            or pending.future.done()
            or pending.address != addr
            or message.pdu_type is not ber.PduType.RESPONSE
            or message.version != pending.version
            or message.community != pending.community
        ):
            self.unmatched += 1
            return
        pending.future.set_result(message)

    def _request_id(self) -> int:
        self._next_id = self._next_id + 1 if self._next_id < (1 << 31) - 1 else 1
        return self._next_id

    async def _exchange(
        self,
        target: Target,
        pdu_type: ber.PduType,
        oids: Sequence[str],
        *,
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> ber.Message:
        credentials = target.credentials
        assert not isinstance(credentials, SnmpV3)
        version = ber.VERSION_1 if isinstance(credentials, SnmpV1) else ber.VERSION_2C
        community = credentials.community.get_secret_value().encode()
        address = await self._address(target)
        transport = await self._transport(address)
        request_id = self._request_id()
        try:
            datagram = ber.encode_message(
                version,
                community,
                pdu_type,
                [VarBind(oid.strip("."), "Null", None) for oid in oids],
                request_id=request_id,
                error_status=non_repeaters,
                error_index=max_repetitions,
            )
        except ber.BerError as exc:
            raise SnmpError("internal", f"{target.name}: {exc.reason}") from None
        future: asyncio.Future[ber.Message] = asyncio.get_running_loop().create_future()
        pending = _Pending(address, version, community, future)
        async with self._limit:
            self._pending[request_id] = pending
            try:
                for _ in range(target.retries + 1):
                    transport.sendto(datagram, address)
                    try:
                        return await asyncio.wait_for(asyncio.shield(future), target.timeout)
                    except TimeoutError:
                        continue
            finally:
                del self._pending[request_id]
                future.cancel()
        if pending.garbage is not None:
            raise SnmpError("decode", f"{target.name}: malformed response: {pending.garbage}")
        tries = target.retries + 1
        raise SnmpError("timeout", f"{target.name}: no response after {tries} tries of {target.timeout:g}s")

    @staticmethod
    def _status(target: Target, message: ber.Message) -> None:
        if message.error_status:
            raise SnmpError(
                "error_status",
                f"{target.name}: error-status {message.error_status} at varbind {message.error_index}",
            )

    # ------------------------------------------------------------------ SnmpClient

    async def get(self, target: Target, oids: Sequence[str]) -> dict[str, SnmpValue]:
        """GET scalars; missing objects come back as ``None``."""
        if isinstance(target.credentials, SnmpV3):
            return await self._v3_client().get(target, oids)
        message = await self._exchange(target, ber.PduType.GET_REQUEST, oids)
        if isinstance(target.credentials, SnmpV1) and message.error_status == NO_SUCH_NAME:
            # v1 answers a GET with one missing object by failing the whole request.
            found: dict[str, SnmpValue] = {}
            for oid in oids:
                one = await self._exchange(target, ber.PduType.GET_REQUEST, [oid])
                found[oid.strip(".")] = None if one.error_status else _value(one.varbinds[0])
            return found
        self._status(target, message)
        return {vb.oid: _value(vb) for vb in message.varbinds}

    async def walk(
        self, target: Target, columns: Sequence[str], max_repetitions: int
    ) -> dict[str, dict[str, SnmpValue]]:
        """GETBULK-walk table columns (GETNEXT for v1): ``{column_oid: {index: value}}``."""
        if isinstance(target.credentials, SnmpV3):
            return await self._v3_client().walk(target, columns, max_repetitions)
        v1 = isinstance(target.credentials, SnmpV1)

        async def fetch(oids: list[str]) -> tuple[int, list[Fetched]]:
            if v1:
                message = await self._exchange(target, ber.PduType.GET_NEXT_REQUEST, oids)
                if message.error_status == NO_SUCH_NAME:
                    return NO_SUCH_NAME, []
            else:
                message = await self._exchange(
                    target, ber.PduType.GET_BULK_REQUEST, oids, max_repetitions=max_repetitions
                )
            self._status(target, message)
            fetched: list[Fetched] = []
            for vb in message.varbinds:
                kind = vb.type
                if kind in _PLAIN:  # most of a walk: numbers and strings as they are
                    fetched.append((vb.oid, vb.value, False))
                else:
                    fetched.append((vb.oid, _value(vb), kind == "endOfMibView"))
            return 0, fetched

        return await walk_columns(columns, v1, fetch)

    def _v3_client(self) -> SnmpClient:
        if self._v3 is None and self._v3_factory is not None:
            self._v3 = self._v3_factory()
        if self._v3 is None:
            raise SnmpError("internal", "SNMPv3 target but no v3 client configured")
        return self._v3

    def renew_v3(self) -> SnmpClient | None:
        """Build the v3 client afresh at the next v3 poll; return the old one for the caller to close.

        pysnmp's engine keeps each user's keys localized for every agent engine it discovered,
        and a changed key does not reach those copies: after SNMPv3 credentials change, only a
        new engine polls with the new keys.  Without a factory the client stays.
        """
        if self._v3_factory is None:
            return None
        old, self._v3 = self._v3, None
        return old

    def close(self) -> None:
        """Release sockets (and the v3 client's)."""
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        if self._v3 is not None:
            self._v3.close()
