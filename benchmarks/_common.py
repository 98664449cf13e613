"""Pieces the benchmarks share: the workload, the simulator in a child process, its counters."""

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from kling_async._client import Client
from kling_async._core.models import Image, MultiImageToImage, MultiImageToVideo, Request, Task
from kling_async._webhooks.config import WebhookConfig
from kling_async.simulator import CallbackConfig, SimulatorConfig, serve

URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))
SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
# The simulator's deliveries (signed; some duplicated, some reordered) and the client's
# receiver (checks signatures; no rate cap, the benchmark is the only sender). Used by
# ``benchmarks.webhook`` and the engine table's ``engine+webhook`` row.
CALLBACKS = CallbackConfig(secret=SECRET, duplicate_rate=0.1, reorder_rate=0.1)
WEBHOOK = WebhookConfig(secret=SECRET, max_rate=1e6)


def _serve(
    config: SimulatorConfig, conn: multiprocessing.connection.Connection, uvloop: bool
) -> None:
    if uvloop:
        with contextlib.suppress(ImportError):
            import uvloop as _uvloop  # noqa: PLC0415 - an optional extra

            _uvloop.install()
    asyncio.run(serve(config, started=lambda sim: conn.send((sim.url, sim.api_key))))


@contextlib.contextmanager
def simulator(config: SimulatorConfig, *, uvloop: bool) -> Iterator[tuple[str, str]]:
    """Run the simulator in a child process; yield its URL and key.

    ``uvloop``: run the child's loop on uvloop when it is installed (asyncio otherwise).
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(config, child, uvloop), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the simulator did not start")
        yield parent.recv()
    finally:
        process.terminate()
        process.join(10)


async def sim_stats(url: str) -> dict[str, Any]:
    """The simulator's counters (its admin endpoint)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_sim/statistics") as resp:
        data: dict[str, Any] = await resp.json()
        return data


class TimedClient(Client):
    """A client that notes when each create's answer arrived (to place server times)."""

    created: list[tuple[float, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        create = self.tasks.create

        async def timed_create(request: Request, **kw: Any) -> Task:
            """Create, and remember (receive wall time, server created_at)."""
            task = await create(request, **kw)
            if task.created_at is not None:
                self.created.append((time.time(), task.created_at))
            return task

        self.tasks.create = timed_create  # type: ignore[method-assign]


def workload(count: int) -> Iterator[tuple[str, Request]]:
    """``count`` keyed requests, alternating multi-image-to-image and -to-video."""
    for i in range(count):
        if i % 2:
            yield f"v{i}", MultiImageToVideo(images=URLS, prompt=f"job {i}")
        else:
            yield f"i{i}", MultiImageToImage(images=URLS, n=1)
