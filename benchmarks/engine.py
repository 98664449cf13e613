"""The engine benchmark: ``python -m benchmarks.engine [--quick] [--loops asyncio,uvloop]``.

Runs the engine (per-task polls, list polling, and -- realistic profile only -- per-task
polls with webhook hints) and a naive baseline (one coroutine per job, a semaphore, fixed
5 s polling, retry on every error) against the simulator, which runs in a child process so
the client's CPU time and memory are its own. Time is scaled: the simulator and the
clients' poll and backoff policies use the same factor.

engine+webhook serves a receiver on 127.0.0.1 (in the client's process, so its CPU counts)
and sends its URL with each create; the simulator POSTs every status change to it, signed,
some duplicated and reordered (the setup of ``benchmarks.webhook``). Its req/job and detect
against the engine row are the webhook on/off comparison, same run.

Columns:
  req/job     API requests (creates + queries + lists, as counted by the simulator) per job
  detect      median delay from a task's completion to the client knowing, as a share of its
              run time
  make/ideal  makespan over the ideal one (a slot refilled the instant its task ends)
  cpu ms/job  client process CPU per job; cpu us/req the same per HTTP request
  B/pending   peak RSS growth over the peak number of jobs in flight in the client
  lag p99/max event-loop lag of a 5 ms ticker, in ms
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs

from kling_async._core.config import Backoff, Limits, PollPolicy
from kling_async._core.errors import KlingError
from kling_async._core.models import Kind, Request, Task
from kling_async.simulator import LogNormal, SimulatorConfig

from . import _spread
from ._common import CALLBACKS, URLS, WEBHOOK, TimedClient, sim_stats, simulator, workload

PAGE = os.sysconf("SC_PAGE_SIZE")


@attrs.frozen
class Profile:
    """One workload."""

    name: str
    jobs: int
    slots: int | None  # account limit per kind (None: unlimited)
    video: float  # median run time, simulated seconds
    image: float
    scale: float  # real seconds per simulated second


@attrs.define
class Result:
    """One row of the table."""

    profile: str
    client: str
    loop: str
    jobs: int = 0
    ok: int = 0
    requests: int = 0
    detect: float = 0.0
    makespan: float = 0.0
    ideal: float = 0.0
    cpu: float = 0.0
    rss_per_pending: float = 0.0
    lag_p99: float = 0.0
    lag_max: float = 0.0
    rejected: int = 0


# -- measuring ---------------------------------------------------------------------------------


class Probe:
    """Loop lag and RSS, sampled by a ticker on the loop under test."""

    def __init__(self) -> None:
        # Kept open and read with one pread per tick: the probe runs in the client's process,
        # so its own CPU lands in the client's column (opening the file each tick cost ~5%).
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self.lags: list[float] = []
        self.rss_base = self.rss()
        self.rss_peak = self.rss_base
        self.pending = 0
        self.pending_peak = 0

    def rss(self) -> int:
        """Resident set size now, in bytes."""
        return int(os.pread(self._statm, 128, 0).split()[1]) * PAGE

    def close(self) -> None:
        """Close the statm file."""
        os.close(self._statm)

    async def run(self) -> None:
        """Tick every 5 ms until cancelled."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(max(0.0, time.perf_counter() - start - 0.005))
            self.rss_peak = max(self.rss_peak, self.rss())

    def add(self, delta: int) -> None:
        """Jobs in flight in the client changed."""
        self.pending += delta
        self.pending_peak = max(self.pending_peak, self.pending)


def _ideal(durations: dict[Kind, list[float]], slots: int | None) -> float:
    worst = 0.0
    for runs in durations.values():
        if not runs:
            continue
        if slots is None:
            worst = max(worst, *runs)
            continue
        free = [0.0] * slots
        for run in runs:
            start = min(free)
            free[free.index(start)] = start + run
        worst = max(worst, *free)
    return worst


# -- the clients -------------------------------------------------------------------------------

Finished = tuple[Kind, Task | None, float]  # kind, final task, wall time the client knew


async def run_engine(
    client: TimedClient, profile: Profile, probe: Probe, finished: list[Finished]
) -> None:
    """All jobs through one batch."""
    async with client.batch(max_pending=profile.jobs) as batch:
        for key, request in workload(profile.jobs):
            await batch.submit(request, key=key)
            probe.add(1)
        async for outcome in batch:
            probe.add(-1)
            finished.append((outcome.kind, outcome.task, outcome.finished_at))


async def run_naive(
    client: TimedClient, profile: Profile, probe: Probe, finished: list[Finished]
) -> None:
    """One coroutine per job, a semaphore per kind, fixed 5 s polls, retry on every error."""
    bound = profile.slots or profile.jobs
    semaphores = {kind: asyncio.Semaphore(bound) for kind in Kind}
    every = 5.0 * profile.scale

    async def one(key: str, request: Request) -> None:
        async with semaphores[request.kind]:
            while True:
                try:
                    task = await client.tasks.create(request, external_task_id=f"naive-{key}")
                    break
                except KlingError:
                    await asyncio.sleep(every)
            while not task.status.is_terminal:
                await asyncio.sleep(every)
                with contextlib.suppress(KlingError):
                    task = await client.tasks.get(task.task_id)
        finished.append((request.kind, task, time.time()))
        probe.add(-1)

    async with asyncio.TaskGroup() as tg:
        for key, request in workload(profile.jobs):
            probe.add(1)
            tg.create_task(one(key, request))


CLIENTS: dict[str, Callable[[TimedClient, Profile, Probe, list[Finished]], Awaitable[None]]] = {
    "engine": run_engine,
    "engine+list": run_engine,
    "engine+webhook": run_engine,
    "naive": run_naive,
}
# The clients each profile runs unless --clients says otherwise.
PROFILE_CLIENTS = {
    "realistic": "engine,engine+list,engine+webhook,naive",
    "scale": "engine,engine+list,naive",
}


async def measure(profile: Profile, client_name: str, loop_name: str) -> Result:
    """One run: a fresh simulator, one client, every job."""
    config = SimulatorConfig(
        time_scale=profile.scale,
        durations={
            "video": LogNormal(median=profile.video, sigma=0.25),
            "image": LogNormal(median=profile.image, sigma=0.25),
        },
        video_slots=profile.slots,
        image_slots=profile.slots,
        start_time=0.0,
        callbacks=CALLBACKS,  # delivered only to a client that sends a callback URL
        seed=1,
    )
    result = Result(profile.name, client_name, loop_name, jobs=profile.jobs)
    slots = profile.slots or profile.jobs
    limits = Limits(
        max_creates=16,
        max_queries=32,
        requests_per_second=None,
        video_slots=slots,
        max_video_slots=slots,
        image_slots=slots,
        max_image_slots=slots,
    )
    poll = PollPolicy(
        expected_video=profile.video,
        expected_image=profile.image,
        use_list=client_name == "engine+list",
        list_interval=1.0,
    ).scaled(profile.scale)
    with simulator(config, uvloop=True) as (url, key):
        probe = Probe()
        client = TimedClient(
            api_key=key,
            base_url=url,
            limits=limits,
            poll=poll,
            backoff=Backoff().scaled(profile.scale),
            webhook=WEBHOOK if client_name == "engine+webhook" else None,
            server_time_scale=profile.scale,
        )
        client.created = []
        finished: list[Finished] = []
        cpu0 = time.process_time()
        async with client, asyncio.TaskGroup() as tg:
            ticker = tg.create_task(probe.run())
            start = time.time()
            await CLIENTS[client_name](client, profile, probe, finished)
            end = max((t for _, _, t in finished), default=time.time())
            ticker.cancel()
        result.cpu = time.process_time() - cpu0
        probe.close()
        stats = await sim_stats(url)
    api = ("create", "query", "list")
    result.requests = sum(
        count for name, count in stats["requests"].items() if name.split()[0].split(".")[-1] in api
    )
    result.rejected = stats["rejected_concurrency"]
    result.makespan = end - start
    # Place server times on the client's wall clock: the earliest create answer bounds it.
    origin = min(wall - created / 1000 * profile.scale for wall, created in client.created)
    durations: dict[Kind, list[tuple[int, float]]] = {kind: [] for kind in Kind}
    shares: list[float] = []
    for kind, task, known in finished:
        if task is None or task.created_at is None or task.updated_at is None:
            continue
        result.ok += 1
        run = (task.updated_at - task.created_at) / 1000 * profile.scale
        durations[kind].append((task.created_at, run))
        ended = origin + task.updated_at / 1000 * profile.scale
        if run > 0:
            shares.append(max(0.0, known - ended) / run)
    ordered = {kind: [run for _, run in sorted(pairs)] for kind, pairs in durations.items()}
    result.ideal = _ideal(ordered, profile.slots)
    result.detect = statistics.median(shares) if shares else float("nan")
    result.rss_per_pending = (probe.rss_peak - probe.rss_base) / max(1, probe.pending_peak)
    lags = sorted(probe.lags) or [0.0]
    result.lag_p99 = lags[int(len(lags) * 0.99) - 1 if len(lags) > 1 else 0]
    result.lag_max = lags[-1]
    return result


async def bare_aiohttp(requests: int) -> float:
    """CPU seconds per GET of a bare aiohttp loop (64 at a time) against the simulator."""
    config = SimulatorConfig(seed=1)
    with simulator(config, uvloop=True) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(
                f"{url}/kling/v1/videos/multi-image2video",
                json={"image_list": [{"image": u.source} for u in URLS]},
            ) as resp:
                task_id = (await resp.json())["data"]["task_id"]
            query = f"{url}/kling/v1/videos/multi-image2video/{task_id}"
            semaphore = asyncio.Semaphore(64)

            async def one() -> None:
                async with semaphore, session.get(query) as resp:
                    await resp.read()

            cpu0 = time.process_time()
            async with asyncio.TaskGroup() as tg:
                for _ in range(requests):
                    tg.create_task(one())
            return (time.process_time() - cpu0) / requests


def _run(coro: Callable[[], Awaitable[Any]], loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop  # noqa: PLC0415 - an optional extra

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro())  # type: ignore[arg-type]
    return asyncio.run(coro())  # type: ignore[arg-type]


def _row(r: Result) -> str:
    per_req = r.cpu / max(1, r.requests) * 1e6
    return (
        f"| {r.profile:<9} | {r.client:<14} | {r.loop:<7} | {r.ok:>6}/{r.jobs:<6}"
        f"| {r.requests / r.jobs:7.2f} | {r.detect * 100:6.1f}% | {r.makespan / r.ideal:6.3f} "
        f"| {r.cpu / r.jobs * 1000:6.3f} | {per_req:6.1f} | {r.rss_per_pending:8.0f} "
        f"| {r.lag_p99 * 1000:6.2f} | {r.lag_max * 1000:6.2f} | {r.rejected:5d} |"
    )


HEADER = (
    "| profile   | client         | loop    | ok/jobs      | req/job | detect  | mk/ideal "
    "| cpu ms/job | us/req | B/pending | lag p99 | lag max | 1303 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated loops")
    parser.add_argument(
        "--clients",
        default=None,
        help="comma-separated clients for every profile (default: "
        + "; ".join(f"{name}: {clients}" for name, clients in PROFILE_CLIENTS.items())
        + ")",
    )
    parser.add_argument(
        "--profiles",
        default="spread,realistic,scale",
        help="spread: the scheduler rows against the independent peer server "
        "(benchmarks._spread); realistic, scale: against the simulator",
    )
    parser.add_argument(
        "--spread-scale", type=float, default=0.02, help="real seconds per server second (spread)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        profiles = {
            "realistic": Profile("realistic", 400, 20, 60.0, 15.0, 0.005),
            "scale": Profile("scale", 2000, None, 600.0, 150.0, 0.005),
        }
    else:
        profiles = {
            "realistic": Profile("realistic", 2000, 20, 60.0, 15.0, 0.01),
            "scale": Profile("scale", 10000, None, 600.0, 150.0, 0.01),
        }
    loops = [name for name in args.loops.split(",") if name]
    print(HEADER, flush=True)
    for loop_name in loops:
        per_request = _run(lambda: bare_aiohttp(5000), loop_name)
        print(
            f"| bare      | aiohttp GET    | {loop_name:<7} | | | | "
            f"| | {per_request * 1e6:6.1f} | | | | |",
            flush=True,
        )
    for profile_name in args.profiles.split(","):
        if profile_name == "spread":
            _spread.run_all(
                quick=args.quick,
                scale=args.spread_scale,
                print_line=lambda line: print(line, flush=True),
            )
            print(HEADER, flush=True)
            continue
        profile = profiles[profile_name]
        for loop_name in loops:
            for client_name in (args.clients or PROFILE_CLIENTS[profile_name]).split(","):
                result = _run(lambda: measure(profile, client_name, loop_name), loop_name)  # noqa: B023
                print(_row(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
