"""An independent stand-in Kling server for the scheduler benchmark (``benchmarks.engine``).

Written from /work/shared/API.md alone: a plain aiohttp app that imports nothing of
``kling_async`` (its simulator included), with its own run-time distributions, an
account limit per kind (1303 over it), task, query and list endpoints, and counters.
The scheduler is measured against it so that it is not tuned to our simulator's priors.

Time is scaled: the server's clock runs ``1 / scale`` times faster than the wall clock,
so a task of 60 server seconds takes ``60 * scale`` real seconds; its timestamps
(``created_at``/``updated_at``, ms) are in server time, counted from its start.
"""

import asyncio
import contextlib
import heapq
import itertools
import math
import multiprocessing
import multiprocessing.connection
import random
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

__all__ = ["RunTimes", "peer_server"]

VIDEO = "/kling/v1/videos/multi-image2video"
IMAGE = "/kling/v1/images/generations"
KEY = "peer-key"


class RunTimes:
    """A run-time distribution, in server seconds (picklable: it crosses to the server)."""

    def __init__(self, shape: str, median: float, spread: float, slow: float = 1.0) -> None:
        self.shape = shape
        self.median = median
        self.spread = spread
        self.slow = slow

    @property
    def mean(self) -> float:
        """The true mean (what the naive client is told)."""
        if self.shape == "lognormal":
            return self.median * math.exp(self.spread**2 / 2)
        if self.shape == "mix":
            return self.median * (1 - self.spread + self.spread * self.slow)
        return self.median

    def draw(self, rng: random.Random) -> float:
        """One run time."""
        if self.shape == "uniform":
            return self.median * rng.uniform(1 - self.spread, 1 + self.spread)
        if self.shape == "lognormal":
            return self.median * math.exp(rng.gauss(0.0, self.spread))
        # mix: ``median`` (+/-10%) for most, ``slow`` times longer for a share ``spread``
        base = self.median * self.slow if rng.random() < self.spread else self.median
        return base * rng.uniform(0.9, 1.1)

    @classmethod
    def uniform(cls, median: float, spread: float) -> "RunTimes":
        """Uniform within median * (1 +/- spread)."""
        return cls("uniform", median, spread)

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> "RunTimes":
        """Log-normal around ``median``."""
        return cls("lognormal", median, sigma)

    @classmethod
    def mix(cls, fast: float, slow_factor: float, slow_share: float) -> "RunTimes":
        """``fast`` (+/-10%) for most tasks, ``slow_factor`` times longer for ``slow_share``."""
        return cls("mix", fast, slow_share, slow_factor)


class _Task:
    __slots__ = ("created", "ends", "external", "kind", "slots", "task_id")

    def __init__(
        self, task_id: str, kind: str, created: float, ends: float, slots: int, external: str
    ) -> None:
        self.task_id = task_id
        self.kind = kind
        self.created = created
        self.ends = ends
        self.slots = slots
        self.external = external


class PeerServer:
    """The app's state: tasks, slots, counters."""

    def __init__(self, runs: dict[str, RunTimes], *, limit: int, scale: float, seed: int) -> None:
        self.runs = runs
        self.limit = limit
        self.scale = scale
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.tasks: dict[str, _Task] = {}
        self.by_external: dict[str, _Task] = {}
        self.newest: dict[str, list[_Task]] = {"video": [], "image": []}
        self.ending: dict[str, list[tuple[float, int]]] = {"video": [], "image": []}
        self.in_use = {"video": 0, "image": 0}
        self.ids = itertools.count(700_000_000_000_000_001)
        self.requests: dict[str, int] = {"create": 0, "query": 0, "list": 0}
        self.rejected = 0

    def now(self) -> float:
        """Server seconds since start."""
        return (time.monotonic() - self.t0) / self.scale

    def _release(self, kind: str, now: float) -> None:
        ending = self.ending[kind]
        while ending and ending[0][0] <= now:
            self.in_use[kind] -= heapq.heappop(ending)[1]

    def render(self, task: _Task, now: float) -> dict[str, Any]:
        """The task object of API.md."""
        done = now >= task.ends
        status = "succeed" if done else ("submitted" if now - task.created < 1.0 else "processing")
        result: dict[str, Any] = {}
        if done:
            if task.kind == "video":
                result = {"videos": [{"id": "v1", "url": "https://x/v.mp4", "duration": "5"}]}
            else:
                result = {"images": [{"index": 0, "url": "https://x/i.png"}]}
        return {
            "task_id": task.task_id,
            "task_status": status,
            "task_status_msg": None,
            "task_info": {"external_task_id": task.external} if task.external else {},
            "task_result": result,
            "created_at": int(task.created * 1000),
            "updated_at": int((task.ends if done else task.created) * 1000),
        }


def _ok(data: object) -> web.Response:
    return web.json_response({"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "request_id": "r"}, status=status)


def make_app(server: PeerServer) -> web.Application:
    """The aiohttp app serving ``server``."""

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    async def create(request: web.Request, kind: str) -> web.Response:
        if not authorised(request):
            return _error(401, 1000, "authentication failed")
        server.requests["create"] += 1
        body = await request.json()
        external = str(body.get("external_task_id") or "")
        if external and external in server.by_external:
            return _error(400, 1201, "external_task_id already exists")
        slots = int(body.get("n", 1)) if kind == "image" else 1
        now = server.now()
        server._release(kind, now)
        if server.in_use[kind] + slots > server.limit:
            server.rejected += 1
            return _error(429, 1303, "parallel task over resource pack limit")
        run = server.runs[kind].draw(server.rng)
        task = _Task(str(next(server.ids)), kind, now, now + run, slots, external)
        server.tasks[task.task_id] = task
        if external:
            server.by_external[external] = task
        server.newest[kind].append(task)
        server.in_use[kind] += slots
        heapq.heappush(server.ending[kind], (task.ends, slots))
        return _ok(server.render(task, now))

    async def query(request: web.Request, kind: str) -> web.Response:
        if not authorised(request):
            return _error(401, 1000, "authentication failed")
        server.requests["query"] += 1
        ident = request.match_info["ident"]
        task = server.tasks.get(ident) or server.by_external.get(ident)
        if task is None or task.kind != kind:
            return _error(404, 1203, "task not found")
        return _ok(server.render(task, server.now()))

    async def listing(request: web.Request, kind: str) -> web.Response:
        if not authorised(request):
            return _error(401, 1000, "authentication failed")
        server.requests["list"] += 1
        page = max(1, int(request.query.get("pageNum", "1")))
        size = min(500, max(1, int(request.query.get("pageSize", "30"))))
        newest = server.newest[kind]
        stop = len(newest) - (page - 1) * size
        chunk = newest[max(0, stop - size) : max(0, stop)]
        now = server.now()
        return _ok([server.render(task, now) for task in reversed(chunk)])

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": server.requests,
                "rejected_concurrency": server.rejected,
                "t0_wall": server.t0_wall,
                "scale": server.scale,
            }
        )

    app = web.Application()
    for kind, path in (("video", VIDEO), ("image", IMAGE)):
        app.router.add_post(path, lambda r, k=kind: create(r, k))  # type: ignore[misc]
        app.router.add_get(f"{path}/{{ident}}", lambda r, k=kind: query(r, k))  # type: ignore[misc]
        app.router.add_get(path, lambda r, k=kind: listing(r, k))  # type: ignore[misc]
    app.router.add_get("/_peer/stats", stats)
    return app


def _serve(
    runs: dict[str, RunTimes],
    limit: int,
    scale: float,
    seed: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - an optional extra

        uvloop.install()

    async def main() -> None:
        server = PeerServer(runs, limit=limit, scale=scale, seed=seed)
        runner = web.AppRunner(make_app(server), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        conn.send(f"http://127.0.0.1:{port}")
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def peer_server(
    runs: dict[str, RunTimes], *, limit: int, scale: float, seed: int = 1
) -> Iterator[tuple[str, str]]:
    """Run the peer server in a child process; yield its URL and API key."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(runs, limit, scale, seed, child), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the peer server did not start")
        yield parent.recv(), KEY
    finally:
        process.terminate()
        process.join(10)
