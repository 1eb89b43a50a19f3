"""A small asyncio HTTP server for ``/metrics`` and health checks; binds 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alarmd.metrics import Metrics

log = structlog.get_logger("alarmd.http")

Reply = tuple[int, str, bytes]
Guarded = Callable[[str, str, str | None, str, bytes], Reply]
#: The largest request body taken (the API's JSON); anything larger is refused with 413.
MAX_BODY = 65536

_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    200: "OK",
    201: "Created",
    409: "Conflict",
    413: "Content Too Large",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    500: "Internal Server Error",
    503: "Unavailable",
}


class HttpServer:
    """Serves ``GET /metrics``, ``/-/healthy``, ``/-/ready`` and ``POST /-/reload``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], bool],
        *,
        reload: Callable[[], bool] | None = None,
        guarded: Guarded | None = None,
        pages: Mapping[str, tuple[str, bytes]] | None = None,
        problem: Callable[[], str | None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.metrics = metrics
        self.ready = ready
        self.reload = reload
        self.guarded = guarded
        self.pages = dict(pages or {})
        self.problem = problem
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("http_listening", address=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        """Stop accepting and close."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(
        self, method: str, target: str, authorization: str | None = None, peer: str = "", body: bytes = b""
    ) -> Reply:
        path = target.split("?", 1)[0]
        if path.startswith("/api/") or path == "/-/reload":
            return self._control(method, target, authorization, peer, body)
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if (unwell := self._unwell(path)) is not None:
            return unwell
        pages = {"/-/healthy": ("text/plain", b"OK\n"), "/-/ready": ("text/plain", b"ready\n"), **self.pages}
        if path not in pages:
            return 404, "text/plain", b"not found; try /metrics, /-/healthy, /-/ready, POST /-/reload\n"
        ctype, body = pages[path]
        return 200, ctype, body

    def _unwell(self, path: str) -> Reply | None:
        """503 for ``/-/ready`` while starting and for ``/-/healthy`` while something is wrong."""
        if path == "/-/ready" and not self.ready():
            return 503, "text/plain", b"starting\n"
        trouble = self.problem() if self.problem is not None and path == "/-/healthy" else None
        if trouble:
            return 503, "text/plain", f"unhealthy: {trouble}\n".encode()
        return None

    def _control(self, method: str, target: str, authorization: str | None, peer: str, body: bytes) -> Reply:
        """The API and reload: through the token guard when one is configured."""
        if self.guarded is not None:
            return self.guarded(method, target, authorization, peer, body)
        if target.startswith("/api/"):
            return 403, "text/plain", b"the API is closed: configure api.tokens_file\n"
        return self._reload(method)

    def _reload(self, method: str) -> Reply:
        if self.reload is None or method != "POST":
            return 405, "text/plain", b"POST /-/reload\n"
        if self.reload():
            return 200, "text/plain", b"reloaded\n"
        return 500, "text/plain", b"reload failed; the previous configuration stays in force (see the log)\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            peer = writer.get_extra_info("peername")
            length = headers.get("content-length", "0")
            if len(parts) != 3 or not length.isdigit():
                status, ctype, body = 400, "text/plain", b"bad request\n"
            elif int(length) > MAX_BODY:
                status, ctype, body = (
                    413,
                    "text/plain",
                    f"a request body is at most {MAX_BODY} bytes\n".encode(),
                )
            else:
                request = await asyncio.wait_for(reader.readexactly(int(length)), 10) if int(length) else b""
                status, ctype, body = self._route(
                    parts[0], parts[1], headers.get("authorization"), str(peer[0]) if peer else "", request
                )
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
