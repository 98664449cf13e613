"""Scheduler rows of ``benchmarks.engine`` (``--profiles spread``): run-time spreads, wrong
priors and a cold start, against the independent peer server (``benchmarks._peer_server``),
each engine row side by side with the naive baseline in the same run.

Naive: one coroutine per job, a semaphore per kind at the account limit (told), a fixed
poll every ``mean / 12`` (the mean it is told: the true one, or the wrong prior in the
prior rows). Engine: one batch, told the account limit, cold (no journal), prior = the
median (or the wrong prior). ``engine+list``: the same with list polling.
"""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs

from kling_async._client import Client
from kling_async._core.config import Backoff, Limits, PollPolicy
from kling_async._core.errors import KlingError
from kling_async._core.models import Image, Kind, MultiImageToImage, MultiImageToVideo, Request

from ._peer_server import RunTimes, peer_server

URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))
MEDIAN = {Kind.VIDEO: 60.0, Kind.IMAGE: 15.0}  # server seconds
LIMIT = 20


@attrs.frozen
class Spread:
    """One run-time profile of the peer server, and the prior the clients are told."""

    name: str
    shape: str
    spread: float
    slow: float = 1.0
    prior: float = 1.0  # the prior given to the clients, as a multiple of the true median

    def runs(self, kind: Kind) -> RunTimes:
        """The peer's distribution for ``kind``."""
        return RunTimes(self.shape, MEDIAN[kind], self.spread, self.slow)


SPREADS = (
    Spread("uniform +/-50%", "uniform", 0.5),
    Spread("lognormal s0.25", "lognormal", 0.25),
    Spread("lognormal s0.6", "lognormal", 0.6),
    Spread("70/30 mix 3.5x", "mix", 0.3, 3.5),
)
PRIORS = (
    Spread("prior 4x long", "lognormal", 0.25, prior=4.0),
    Spread("prior 3x short", "lognormal", 0.25, prior=1 / 3),
)


@attrs.define
class Row:
    """One measured row."""

    profile: str
    client: str
    jobs: int = 0
    ok: int = 0
    requests: int = 0
    detect: float = 0.0
    makespan: float = 0.0
    ideal: float = 0.0
    cpu: float = 0.0
    lag_p99: float = 0.0
    lag_max: float = 0.0
    rejected: int = 0


def workload(count: int) -> list[tuple[str, Request]]:
    """``count`` keyed requests, alternating image and video."""
    out: list[tuple[str, Request]] = []
    for i in range(count):
        if i % 2:
            out.append((f"v{i}", MultiImageToVideo(images=URLS, prompt=f"job {i}")))
        else:
            out.append((f"i{i}", MultiImageToImage(images=URLS, n=1)))
    return out


def ideal(runs: dict[Kind, list[float]], slots: int) -> float:
    """Makespan if each slot were refilled the instant its task ended (creation order)."""
    worst = 0.0
    for durations in runs.values():
        free = [0.0] * slots
        for run in durations:
            start = min(free)
            free[free.index(start)] = start + run
        worst = max(worst, *free) if durations else worst
    return worst


class Lag:
    """Event-loop lag of a 5 ms ticker."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(max(0.0, time.perf_counter() - start - 0.005))

    def p99_max(self) -> tuple[float, float]:
        """99th percentile and worst lag, seconds."""
        lags = sorted(self.lags) or [0.0]
        return lags[max(0, int(len(lags) * 0.99) - 1)], lags[-1]


Finished = tuple[Kind, dict[str, Any] | None, float]  # kind, (created, updated) ms, known wall


def client_for(url: str, key: str, spread: Spread, scale: float, *, lists: bool) -> Client:
    """An engine client told the account limit and the profile's prior."""
    poll = PollPolicy(
        expected_video=MEDIAN[Kind.VIDEO] * spread.prior,
        expected_image=MEDIAN[Kind.IMAGE] * spread.prior,
        use_list=lists,
        list_interval=1.0,
    ).scaled(scale)
    limits = Limits(
        max_creates=16,
        max_queries=32,
        requests_per_second=None,
        video_slots=LIMIT,
        max_video_slots=LIMIT,
        image_slots=LIMIT,
        max_image_slots=LIMIT,
    )
    return Client(
        api_key=key,
        base_url=url,
        limits=limits,
        poll=poll,
        backoff=Backoff().scaled(scale),
        server_time_scale=scale,  # run times come from the peer's scaled timestamps
    )


async def run_engine(
    url: str, key: str, spread: Spread, scale: float, jobs: int, lists: bool
) -> list[Finished]:
    """All jobs through one batch."""
    finished: list[Finished] = []
    client = client_for(url, key, spread, scale, lists=lists)
    async with client, client.batch(max_pending=jobs) as batch:
        for job_key, request in workload(jobs):
            await batch.submit(request, key=job_key)
        async for outcome in batch:
            task = outcome.task
            stamps = None
            if task is not None and task.created_at is not None:
                stamps = {"created": task.created_at, "updated": task.updated_at}
            finished.append((outcome.kind, stamps, outcome.finished_at))
    return finished


async def run_naive(
    url: str, key: str, spread: Spread, scale: float, jobs: int, lists: bool
) -> list[Finished]:
    """One coroutine per job, a semaphore per kind, fixed polls every mean / 12."""
    del lists
    finished: list[Finished] = []
    semaphores = {kind: asyncio.Semaphore(LIMIT) for kind in Kind}
    every = {kind: spread.runs(kind).mean * spread.prior / 12 * scale for kind in Kind}
    async with Client(
        api_key=key, base_url=url, limits=Limits(requests_per_second=None, max_queries=10_000)
    ) as client:

        async def one(job_key: str, request: Request) -> None:
            async with semaphores[request.kind]:
                while True:
                    try:
                        task = await client.tasks.create(request, external_task_id=f"n-{job_key}")
                        break
                    except KlingError:
                        await asyncio.sleep(every[request.kind])
                while not task.status.is_terminal:
                    await asyncio.sleep(every[request.kind])
                    try:
                        task = await client.tasks.get(task.task_id, kind=request.kind)
                    except KlingError:
                        continue
            stamps = {"created": task.created_at, "updated": task.updated_at}
            finished.append((request.kind, stamps, time.time()))

        async with asyncio.TaskGroup() as tg:
            for job_key, request in workload(jobs):
                tg.create_task(one(job_key, request))
    return finished


CLIENTS: dict[str, tuple[Callable[..., Awaitable[list[Finished]]], bool]] = {
    "engine": (run_engine, False),
    "engine+list": (run_engine, True),
    "naive": (run_naive, False),
}


async def _stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_peer/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def measure(spread: Spread, client_name: str, scale: float, jobs: int) -> Row:
    """One run: a fresh peer server, one client, every job."""
    row = Row(spread.name, client_name, jobs=jobs)
    runs = {kind.value: spread.runs(kind) for kind in Kind}
    with peer_server(runs, limit=LIMIT, scale=scale, seed=11) as (url, key):
        lag = Lag()
        run, lists = CLIENTS[client_name]
        cpu0 = time.process_time()
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(lag.run())
            start = time.time()
            finished = await run(url, key, spread, scale, jobs, lists)
            ticker.cancel()
        row.cpu = time.process_time() - cpu0
        stats = await _stats(url)
    row.requests = sum(stats["requests"].values())
    row.rejected = stats["rejected_concurrency"]
    t0 = stats["t0_wall"]
    row.makespan = max(known for _, _, known in finished) - start
    shares: list[float] = []
    by_kind: dict[Kind, list[tuple[int, float]]] = {kind: [] for kind in Kind}
    for kind, stamps, known in finished:
        if stamps is None or stamps["updated"] is None:
            continue
        row.ok += 1
        run_s = (stamps["updated"] - stamps["created"]) / 1000 * scale
        by_kind[kind].append((stamps["created"], run_s))
        ended = t0 + stamps["updated"] / 1000 * scale
        if run_s > 0:
            shares.append(max(0.0, known - ended) / run_s)
    row.ideal = ideal({k: [r for _, r in sorted(v)] for k, v in by_kind.items()}, LIMIT)
    row.detect = statistics.median(shares) if shares else float("nan")
    row.lag_p99, row.lag_max = lag.p99_max()
    return row


async def cold_start(spread: Spread, scale: float, repeats: int) -> list[float]:
    """generate() duration over the task's run time, one fresh (cold) client each time."""
    ratios: list[float] = []
    runs = {kind.value: spread.runs(kind) for kind in Kind}
    with peer_server(runs, limit=LIMIT, scale=scale, seed=5) as (url, key):
        for i in range(repeats):
            async with client_for(url, key, spread, scale, lists=False) as client:
                start = time.time()
                task = await client.generate(
                    MultiImageToVideo(images=URLS, prompt=f"cold {i}"), key=f"cold{i}"
                )
                took = time.time() - start
            assert task.created_at is not None
            assert task.updated_at is not None
            ratios.append(took / ((task.updated_at - task.created_at) / 1000 * scale))
    return ratios


HEADER = (
    "| profile | client | ok/jobs | req/job | detect | mk/ideal | cpu ms/job | lag p99 | lag max "
    "| 1303 |\n|---|---|---|---|---|---|---|---|---|---|"
)


def format_row(r: Row) -> str:
    """One table line."""
    return (
        f"| {r.profile} | {r.client} | {r.ok}/{r.jobs} | {r.requests / r.jobs:.2f} "
        f"| {r.detect * 100:.1f}% | {r.makespan / r.ideal:.3f} | {r.cpu / r.jobs * 1000:.3f} "
        f"| {r.lag_p99 * 1000:.2f} | {r.lag_max * 1000:.2f} | {r.rejected} |"
    )


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run_all(*, quick: bool, scale: float, print_line: Callable[[str], None]) -> list[str]:
    """Measure every spread, prior and cold-start row; print the tables; return target lines."""
    jobs = 100 if quick else 200
    print_line(HEADER)
    results: dict[tuple[str, str], Row] = {}
    for spread in (*SPREADS, *PRIORS):
        names = ("engine", "engine+list", "naive") if spread in SPREADS else ("engine", "naive")
        for name in names:
            row = asyncio.run(measure(spread, name, scale, jobs))
            results[spread.name, name] = row
            print_line(format_row(row))
    targets = ["", "| target | profile | measured | status |", "|---|---|---|---|"]
    for spread in SPREADS:  # the prior rows are shown side by side, without targets
        engine, naive = results[spread.name, "engine"], results[spread.name, "naive"]
        # Each client draws its own run times (in its own create order): compare each
        # makespan with the ideal of its own draws.
        mk = (engine.makespan / engine.ideal) / (naive.makespan / naive.ideal)
        req = engine.requests / naive.requests
        targets.append(f"| mk/ideal <= naive's | {spread.name} | {mk:.3f}x | {_mark(mk <= 1.0)} |")
        targets.append(
            f"| requests <= 0.5x naive | {spread.name} | {req:.2f}x | {_mark(req <= 0.5)} |"
        )
        targets.append(
            f"| detection <= 5% | {spread.name} | {engine.detect * 100:.1f}% "
            f"| {_mark(engine.detect <= 0.05)} |"
        )
        if (spread.name, "engine+list") in results:
            listed = results[spread.name, "engine+list"]
            ratio = listed.makespan / listed.ideal
            targets.append(
                f"| list makespan <= 1.03x ideal | {spread.name} | {ratio:.3f} "
                f"| {_mark(ratio <= 1.03)} |"
            )
    cold_scale = scale * 2
    for spread, bound in ((PRIORS[0], 1.5), (PRIORS[1], 1.2)):
        ratios = asyncio.run(cold_start(spread, cold_scale, 3 if quick else 5))
        worst = max(ratios)
        targets.append(
            f"| cold generate() <= {bound}x run | {spread.name} "
            f"| median {statistics.median(ratios):.2f}x, worst {worst:.2f}x "
            f"| {_mark(worst <= bound)} |"
        )
    for line in targets:
        print_line(line)
    return targets
