"""A scripted SNMP v1/v2c agent on 127.0.0.1 for tests: a MIB as a dict, and ways to misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import cast

from alarmd.collector import ber
from alarmd.collector.ber import PduType
from alarmd.model import VarBind

Mib = Mapping[str, VarBind]
#: A scripted reply: the datagrams to send back for one request.
Answer = Callable[[ber.Message], list[bytes]]


def _key(oid: str) -> tuple[int, ...]:
    return tuple(map(int, oid.split(".")))


def respond(request: ber.Message, varbinds: list[VarBind], **fields: int) -> bytes:
    """A Response to ``request`` (same version, community, request-id unless given)."""
    return ber.encode_message(
        request.version,
        request.community,
        PduType.RESPONSE,
        varbinds,
        request_id=fields.pop("request_id", request.request_id),
        **fields,
    )


def mib_answer(mib: Callable[[], Mib]) -> Answer:
    """GET, GETNEXT and GETBULK (non-repeaters 0) over the MIB ``mib()`` returns, as RFC 3416 says."""

    def answer(request: ber.Message) -> list[bytes]:
        current = mib()
        order = sorted(current, key=_key)

        def after(oid: str) -> VarBind:
            key = _key(oid)
            for candidate in order:
                if _key(candidate) > key:
                    return current[candidate]
            return VarBind(oid, "endOfMibView", None)

        if request.pdu_type is PduType.GET_REQUEST:
            vbs = [current.get(vb.oid, VarBind(vb.oid, "noSuchInstance", None)) for vb in request.varbinds]
            return [respond(request, vbs)]
        cursors = [vb.oid for vb in request.varbinds]
        rounds = request.error_index if request.pdu_type is PduType.GET_BULK_REQUEST else 1
        out: list[VarBind] = []
        for _ in range(max(1, rounds)):
            found = [after(oid) for oid in cursors]
            out.extend(found)
            cursors = [vb.oid for vb in found]
            if all(vb.type == "endOfMibView" for vb in found):
                break
        return [respond(request, out)]

    return answer


class Agent(asyncio.DatagramProtocol):
    """Answers each request with ``answer(request)``, after ``delay`` seconds."""

    def __init__(self, answer: Answer, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: list[ber.Message] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.peer: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = ber.decode_message(data)
        self.requests.append(request)
        self.peer = addr
        for datagram in self.answer(request):
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._send, datagram, addr)
            else:
                self._send(datagram, addr)

    def _send(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(datagram, addr)

    def close(self) -> None:
        """Stop answering."""
        if self.transport is not None:
            self.transport.close()


async def start(answer: Answer, delay: float = 0.0) -> Agent:
    """An agent on a free port of 127.0.0.1."""
    loop = asyncio.get_running_loop()
    _, agent = await loop.create_datagram_endpoint(lambda: Agent(answer, delay), local_addr=("127.0.0.1", 0))
    return agent
