"""A hostile API gateway on loopback: it echoes the caller's ``Authorization`` header.

Each :data:`CASES` entry names the field the header is echoed in; every answer also
carries it in ``X-Request-Id``. Routes are matched loosely (any POST creates, any GET
whose last segment is not a list query reads a task) so the CometAPI and Kling profiles
both talk to it. ``/files/...`` serves result downloads and echoes the last header seen
in a redirect and an error body (a file host that knows the key).
"""

import json
import urllib.parse
from typing import Final, Self

import attrs
from aiohttp import web

__all__ = ["CASES", "SLOW_CASE", "HostileGateway"]

#: Tasks never end; every answer echoes the key (for runs killed midway: the WAL).
SLOW_CASE: Final = "processing"

CASES: Final = (
    "error_message",  # 400 whose message, request_id and header hold the key
    "escaped_message",  # the same, the key \\u-escaped inside the JSON text
    "request_id",  # success envelopes whose request_id is the key; the task then fails
    "redirect",  # every API call answers 307 to a Location holding the key
    "failed_message",  # the task fails with the key in task_status_msg / fail_reason
    "result_url",  # the task succeeds; its result URLs hold the key (path and query)
    "file_loop",  # the task succeeds; its file host redirects in a loop, the key in each hop
    "task_id",  # create answers with the key as task id; queries 404 echoing it
    "drop",  # the connection is cut after the request is read (wrapped network error)
    "html",  # a 502 HTML page echoing the key
)


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in text)


@attrs.define
class HostileGateway:
    """Serve one hostile ``case`` on 127.0.0.1 (``async with``); :attr:`url` is its base."""

    case: str
    url: str = ""
    last_authorization: str = ""
    calls: int = 0
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        if self.case not in (*CASES, SLOW_CASE):
            raise ValueError(f"unknown case {self.case!r}")
        app = web.Application()
        app.router.add_get("/files/{name:.*}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- answers -------------------------------------------------------------------

    def _json(
        self, status: int, body: dict[str, object], echo: str, *, escaped: bool = False
    ) -> web.Response:
        text = json.dumps(body)
        if escaped:
            text = text.replace(echo, _escaped(echo))
        return web.Response(
            status=status,
            text=text,
            content_type="application/json",
            headers={"X-Request-Id": echo},
        )

    def _task(self, task_id: str, status: str, **extra: object) -> dict[str, object]:
        return {
            "task_id": task_id,
            "task_status": status,
            "task_status_msg": "",
            "task_info": {},
            "task_result": {},
            "created_at": 1722769557708,
            "updated_at": 1722769557708,
            **extra,
        }

    def _ok(self, data: object, echo: str, request_id: str = "r-1") -> web.Response:
        body = {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data}
        return self._json(200, body, echo)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        echo = request.headers.get("Authorization", "")
        self.last_authorization = echo
        bare = echo.partition(" ")[2]
        case = self.case
        if request.method == "POST":
            await request.read()
        if case == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if case == "redirect":
            where = f"http://127.0.0.1:9/steal?auth={urllib.parse.quote(echo)}&raw={bare}"
            return web.Response(status=307, headers={"Location": where, "X-Request-Id": echo})
        if case == "html":
            page = f"<html><body>Bad gateway for {echo}</body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        if case in ("error_message", "escaped_message"):
            body = {
                "code": 1200,
                "message": f"invalid header Authorization: {echo} (request id: {bare})",
                "request_id": echo,
            }
            return self._json(400, body, echo, escaped=case == "escaped_message")
        is_list = "pageNum" in request.query
        if request.method == "POST":
            task_id = bare if case == "task_id" else "7000000000000000001"
            return self._ok(self._task(task_id, "submitted"), echo, request_id=echo)
        if is_list:
            return self._json(404, {"code": 1203, "message": f"no list for {echo}"}, echo)
        task_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if case == "task_id" or task_id != "7000000000000000001":
            body = {"code": 1202, "message": f"task {echo} not found", "request_id": echo}
            return self._json(404, body, echo)
        if case == SLOW_CASE:
            working = self._task(task_id, "processing", task_status_msg=f"working for {echo}")
            return self._ok(working, echo, request_id=echo)
        if case == "request_id":
            failed = self._task(task_id, "failed", task_status_msg="content refused")
            return self._ok(failed, echo, request_id=echo)
        if case == "failed_message":
            failed = self._task(
                task_id, "failed", task_status_msg=f"refused for {echo}", fail_reason=bare
            )
            return self._ok(failed, echo)
        # result_url, file_loop
        quoted = urllib.parse.quote(echo)
        videos = [
            {"id": "v1", "url": f"{self.url}/files/{bare}.mp4", "duration": "5"},
            {"id": "v2", "url": f"{self.url}/files/v.mp4?auth={quoted}", "duration": "5"},
        ]
        images = [{"index": 0, "url": f"{self.url}/files/i.png?key={bare}"}]
        if case == "file_loop":
            videos = [{"id": "v1", "url": f"{self.url}/files/loop.mp4", "duration": "5"}]
            images = [{"index": 0, "url": f"{self.url}/files/loop.png"}]
        done = self._task(task_id, "succeed", task_result={"videos": videos, "images": images})
        return self._ok(done, echo)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        echo = self.last_authorization
        if request.match_info["name"].startswith("loop"):
            # A redirect loop with the bare key in every hop's URL (TooManyRedirects names it).
            hop = int(request.query.get("hop", "0")) + 1
            where = f"{self.url}/files/loop?hop={hop}&raw={echo.partition(' ')[2]}"
            return web.Response(status=302, headers={"Location": where})
        if request.query.get("hop") is None:
            where = f"{self.url}/files/gone?hop=1&auth={urllib.parse.quote(echo)}"
            return web.Response(status=302, headers={"Location": where, "X-Request-Id": echo})
        return web.Response(status=404, text=f"no file for {echo}", headers={"X-Echo": echo})
