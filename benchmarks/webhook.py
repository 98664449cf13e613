"""Webhooks on versus off, same run: ``python -m benchmarks.webhook [--jobs N] [--scale S]``.

Both clients run the same workload against a fresh simulator with the same seed (same
run times, same failures), each in a child process so its work (rendering results,
posting callbacks) does not load the client's event loop; time is scaled, and so are
the clients' poll policies. The webhook client serves a receiver on 127.0.0.1 and sends
its URL with each create; the simulator POSTs every status change to it (signed, some
duplicated and reordered).

Columns:
  req/job   API requests the simulator answered (creates + queries + lists) per job
  query/job queries (and list pages) per job
  detect    median delay from a task's completion to the client knowing, as a share of
            its run time (p90 in brackets)
  hooks     deliveries accepted / duplicates / stale / rejected
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import statistics
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import attrs

from kling_async._client import Client
from kling_async._engine import Outcome
from kling_async._models import Image, MultiImageToImage, MultiImageToVideo, Request, Task
from kling_async._policy import Limits, PollPolicy
from kling_async._webhook import WebhookConfig
from kling_async.simulator import CallbackConfig, LogNormal, SimulatorConfig, serve

URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))
SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
# The simulator's deliveries (signed; some duplicated, some reordered) and the client's
# receiver (checks signatures; no rate cap, the benchmark is the only sender). Shared with
# the engine table's ``engine+webhook`` row.
CALLBACKS = CallbackConfig(secret=SECRET, duplicate_rate=0.1, reorder_rate=0.1)
WEBHOOK = WebhookConfig(secret=SECRET, max_rate=1e6)


@attrs.define
class Row:
    """One line of the table."""

    mode: str
    jobs: int = 0
    requests: int = 0
    queries: int = 0
    detect: list[float] = attrs.Factory(list)
    hooks: str = "-"


def _serve(config: SimulatorConfig, conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(serve(config, started=lambda sim: conn.send((sim.url, sim.api_key))))


@contextlib.contextmanager
def simulator(config: SimulatorConfig) -> Iterator[tuple[str, str]]:
    """Run the simulator in a child process; yield its URL and key."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(config, child), daemon=True)
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

    async def create_task(self, request: Request, **kw: Any) -> Task:
        """Create, and remember (receive wall time, server created_at)."""
        task = await super().create_task(request, **kw)
        if task.created_at is not None:
            self.created.append((time.time(), task.created_at))
        return task


def _jobs(count: int) -> Iterator[tuple[str, Request]]:
    for i in range(count):
        if i % 2:
            yield f"v{i}", MultiImageToVideo(images=URLS, prompt=f"job {i}")
        else:
            yield f"i{i}", MultiImageToImage(images=URLS, n=1)


async def measure(mode: str, jobs: int, scale: float, slots: int | None) -> Row:
    """One client over every job on a fresh simulator."""
    config = SimulatorConfig(
        time_scale=scale,
        durations={
            "video": LogNormal(median=60, sigma=0.25),
            "image": LogNormal(median=15, sigma=0.25),
        },
        video_slots=slots,
        image_slots=slots,
        failure_rate=0.05,
        start_time=0.0,
        callbacks=CALLBACKS,
        seed=1,
    )
    webhook = WEBHOOK if mode == "webhooks on" else None
    row = Row(mode, jobs=jobs)
    outcomes: list[Outcome] = []
    with simulator(config) as (url, key):
        client = TimedClient(
            api_key=key,
            base_url=url,
            limits=Limits(
                requests_per_second=None,
                max_queries=32,
                video_slots=slots or jobs,
                image_slots=slots or jobs,
                max_video_slots=slots or jobs,
                max_image_slots=slots or jobs,
            ),
            poll=PollPolicy(expected_video=60, expected_image=15).scaled(scale),
            webhook=webhook,
        )
        client.created = []
        async with client, client.batch(batch_id=mode.replace(" ", "-")) as batch:
            await batch.feed(_jobs(jobs))
            outcomes = [o async for o in batch]
            if client.webhook is not None:
                h = client.webhook.statistics()
                row.hooks = f"{h.accepted}/{h.duplicates}/{h.stale}/{h.rejected_total}"
        stats = await sim_stats(url)
    for name, count in stats["requests"].items():
        endpoint = name.split()[0]
        if endpoint.endswith((".create", ".query", ".list")):
            row.requests += count
            if not endpoint.endswith(".create"):
                row.queries += count
    # Place server times on the client's wall clock: the earliest create answer bounds it.
    origin = min(wall - created / 1000 * scale for wall, created in client.created)
    for outcome in outcomes:
        task = outcome.task
        if task is None or task.created_at is None or task.updated_at is None:
            continue
        run = (task.updated_at - task.created_at) / 1000 * scale
        ended = origin + task.updated_at / 1000 * scale
        if run > 0:
            row.detect.append(max(0.0, outcome.finished_at - ended) / run)
    return row


def _print(rows: list[Row]) -> None:
    print(f"{'mode':<13} {'jobs':>5} {'req/job':>8} {'query/job':>9} {'detect':>16}  hooks")
    for r in rows:
        detect = "-"
        if r.detect:
            p90 = statistics.quantiles(r.detect, n=10)[-1] if len(r.detect) > 1 else r.detect[0]
            detect = f"{statistics.median(r.detect):.1%} ({p90:.0%})"
        print(
            f"{r.mode:<13} {r.jobs:>5} {r.requests / r.jobs:>8.2f} {r.queries / r.jobs:>9.2f}"
            f" {detect:>16}  {r.hooks}"
        )


async def main(jobs: int, scale: float, slots: int | None) -> None:
    """Measure both modes in one run and print the table."""
    rows = [await measure(mode, jobs, scale, slots) for mode in ("webhooks off", "webhooks on")]
    _print(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--slots", type=int, default=20, help="account slots per kind (0: none)")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.scale, args.slots or None))
