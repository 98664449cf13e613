"""A hostile file host on 127.0.0.1 for the download reliability tests.

Each path misbehaves in one way a real CDN, a broken gateway or an attacker could:
an endless body, a 1-byte-per-tick trickle, an HTML error page served with 200, bytes
that are not the media the name says, a body cut short, a ``Content-Length`` far over
any cap. ``/ok.mp4`` and ``/ok.png`` are well-formed, for the jobs that must not suffer.
Every stream is bounded on the server side too (count and time), so a client that does
not stop cannot keep the test running.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from aiohttp import web

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 1000
"""The start of an MP4 file (an ``ftyp`` box), padded."""
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000
"""A PNG signature, padded."""
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n" * 20
ENDLESS_LIMIT = 256 * 1024 * 1024
"""The most an endless body sends (a client without a cap would read all of it)."""
TRICKLE_LIMIT = 2000
"""The most ticks a trickle lasts."""


@attrs.define
class HostileHost:
    """The running host: its URL, and what it was asked."""

    url: str = ""
    tick: float = 0.02
    """Seconds between two bytes of a trickle (1 byte per tick)."""
    requests: list[str] = attrs.field(factory=list)
    sent: dict[str, int] = attrs.field(factory=dict)
    """Body bytes sent per path."""

    def link(self, path: str) -> str:
        """The full URL of ``path``."""
        return f"{self.url}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request the way its path says."""
        path = request.path
        self.requests.append(path)
        name = path.rsplit("/", 1)[-1].split(".", 1)[0]
        answer = getattr(self, f"_{name.replace('-', '_')}", None)
        if answer is None:
            return web.Response(status=404, text="no such file")
        response: web.StreamResponse = await answer(request)
        return response

    def _count(self, request: web.Request, n: int) -> None:
        self.sent[request.path] = self.sent.get(request.path, 0) + n

    async def _ok(self, request: web.Request) -> web.Response:
        body = MP4 if request.path.endswith(".mp4") else PNG
        self._count(request, len(body))
        return web.Response(body=body, content_type="application/octet-stream")

    async def _html(self, request: web.Request) -> web.Response:
        self._count(request, len(HTML))
        return web.Response(body=HTML, content_type="text/html")

    async def _junk(self, request: web.Request) -> web.Response:
        body = b"\x00\x01\x02\x03" * 300
        self._count(request, len(body))
        return web.Response(body=body, content_type="application/octet-stream")

    async def _video_as_image(self, request: web.Request) -> web.Response:
        self._count(request, len(MP4))
        return web.Response(body=MP4, content_type="image/png")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        # claims 10 GiB; sends a little and waits: a client must refuse it from the header
        response = web.StreamResponse(headers={"Content-Length": str(10 * 1024**3)})
        await response.prepare(request)
        await response.write(MP4)
        self._count(request, len(MP4))
        await asyncio.sleep(5)
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length to refuse it by
        response.content_type = "video/mp4"
        await response.prepare(request)
        block = MP4[:64] + b"\x00" * (64 * 1024 - 64)
        try:
            while self.sent.get(request.path, 0) < ENDLESS_LIMIT:
                await response.write(block)
                self._count(request, len(block))
                block = b"\x00" * len(block)
        except (ConnectionError, RuntimeError):  # the client hung up
            pass
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(PNG))})
        response.content_type = "image/png"
        await response.prepare(request)
        try:
            for i in range(min(TRICKLE_LIMIT, len(PNG))):
                await response.write(PNG[i : i + 1])
                self._count(request, 1)
                await asyncio.sleep(self.tick)
        except (ConnectionError, RuntimeError):  # the client hung up
            pass
        return response

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        # promises the whole file, sends half of it, drops the connection (no Range support)
        response = web.StreamResponse(headers={"Content-Length": str(len(MP4))})
        response.content_type = "video/mp4"
        await response.prepare(request)
        await response.write(MP4[: len(MP4) // 2])
        self._count(request, len(MP4) // 2)
        assert request.transport is not None
        request.transport.close()
        return response


@asynccontextmanager
async def hostile_host(tick: float = 0.02) -> AsyncIterator[HostileHost]:
    """Run a ``HostileHost`` on a free loopback port for the block."""
    host = HostileHost(tick=tick)
    app = web.Application()
    app.router.add_get("/{tail:.*}", host.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield host
    finally:
        await runner.cleanup()
