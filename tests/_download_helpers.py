"""A tiny file server on 127.0.0.1 for the download tests: Range, truncation, errors, delays."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from aiohttp import web


@attrs.define
class Served:
    """One file the server answers for, and how it misbehaves."""

    body: bytes
    content_type: str = "application/octet-stream"
    ranges: bool = True
    """Answer Range requests with 206 (else ignore them and send 200)."""
    truncate: int = 0
    """This many next answers stop halfway through the body and drop the connection."""
    fail: list[int] = attrs.field(factory=list)
    """Statuses to answer first, one per request, before serving the file."""
    delay: float = 0.0
    retry_after: str | None = None
    wrong_range: int = 0
    """This many next Range answers claim a start other than the one asked."""
    chunked: bool = False
    """Send without Content-Length (chunked transfer encoding)."""


@attrs.define
class FileServer:
    """Serves ``files`` by path; records each request's Range header and peak concurrency."""

    files: dict[str, Served] = attrs.field(factory=dict)
    requests: list[tuple[str, str | None]] = attrs.field(factory=list)
    active: int = 0
    peak: int = 0
    url: str = ""

    def link(self, path: str, query: str = "") -> str:
        """The full URL of ``path``."""
        return f"{self.url}{path}{'?' + query if query else ''}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one file, honouring the configured faults."""
        self.requests.append((request.path, request.headers.get("Range")))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await self._answer(request)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        served = self.files.get(request.path)
        if served is None:
            return web.Response(status=404, text="no such file")
        if served.delay:
            await asyncio.sleep(served.delay)
        if served.fail:
            status = served.fail.pop(0)
            headers = {"Retry-After": served.retry_after} if served.retry_after else {}
            return web.Response(status=status, text="nope", headers=headers)
        body, start, status = served.body, 0, 200
        wanted = request.headers.get("Range")
        headers = {"Content-Type": served.content_type}
        if wanted and served.ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return web.Response(status=416)
            status = 206
            claimed = start
            if served.wrong_range:
                served.wrong_range -= 1
                claimed = start + 1
            headers["Content-Range"] = f"bytes {claimed}-{len(body) - 1}/{len(body)}"
        chunk = body[start:]
        response = web.StreamResponse(status=status, headers=headers)
        if served.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(chunk)
        await response.prepare(request)
        if served.truncate:
            served.truncate -= 1
            await response.write(chunk[: len(chunk) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(chunk)
        await response.write_eof()
        return response


@asynccontextmanager
async def file_server() -> AsyncIterator[FileServer]:
    """Run a FileServer on a free loopback port for the block."""
    server = FileServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        yield server
    finally:
        await runner.cleanup()
