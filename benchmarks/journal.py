"""Journal overhead per job: SQLite (FULL, NORMAL) against the in-memory store.

Part 1, the store alone: each job goes through every state a batch writes (add,
SUBMITTING, SUBMITTED, SUCCEEDED, DOWNLOADED), ``--concurrency`` jobs in flight at once.
Part 2, a whole batch (``--batch`` jobs) against the in-process simulator, without a
store and with the journal behind the engine's store seam. CPU is process time (it
includes the writer thread and, in part 2, the simulator). Run:
``python -m benchmarks.journal --jobs 10000 --batch 2000``.
"""

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from kling_async._client import Client
from kling_async._core.config import Backoff, Limits, PollPolicy, Timeouts
from kling_async._core.models import MultiImageToImage, MultiImageToVideo, Request
from kling_async._durable.bridge import JournalBatchStore
from kling_async._durable.records import FileRecord, JobState, fingerprint
from kling_async._durable.sqlite import SqliteJournal
from kling_async._durable.store import JobStore, MemoryStore
from kling_async.simulator import Fixed, Simulator, SimulatorConfig

from ._common import URLS

STATES_PER_JOB = 5


def _record(i: int) -> dict[str, object]:
    return {
        "kind": "video",
        "images": [{"path": f"/data/in/{i:06d}-a.png"}, {"path": f"/data/in/{i:06d}-b.png"}],
        "prompt": f"the two friends walk towards the camera, take {i}",
        "mode": "std",
        "duration": "5",
        "model_name": "kling-v1-6",
    }


async def _job(store: JobStore, i: int) -> None:
    key = f"job-{i:06d}"
    record = _record(i)
    await store.add(key, "video", fingerprint(record), record)
    await store.mark_submitting(key, f"batch-{key}")
    await store.mark_submitted(key, f"8{i:018d}")
    result = {
        "task_id": f"8{i:018d}",
        "task_status": "succeed",
        "task_result": {"videos": [{"id": "v", "url": f"https://cdn/{key}.mp4", "duration": "5"}]},
    }
    await store.mark_terminal(key, JobState.SUCCEEDED, result=result)
    await store.mark_downloaded(
        key, [FileRecord(path=f"/out/{key}.mp4", sha256="0" * 64, size=1 << 20, url="u")]
    )


async def _run(store: JobStore, jobs: int, concurrency: int) -> None:
    queue = iter(range(jobs))

    async def worker() -> None:
        for i in queue:
            await _job(store, i)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())


async def _measure(
    name: str,
    opener: Callable[[], AbstractAsyncContextManager[JobStore]],
    jobs: int,
    concurrency: int,
) -> tuple[str, int, float, float, int]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with opener() as store:
        await _run(store, jobs, concurrency)
        await store.flush()
        commits = store.statistics().commits
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return name, concurrency, wall, cpu, commits


async def main(jobs: int, concurrency: int) -> None:
    """Print the table."""
    with tempfile.TemporaryDirectory() as folder:
        counter = iter(range(1000))

        def sqlite(sync: str) -> Callable[[], AbstractAsyncContextManager[JobStore]]:
            def opener() -> AbstractAsyncContextManager[JobStore]:
                path = Path(folder) / f"run-{next(counter)}.sqlite"
                return SqliteJournal.open(path, synchronous=sync)

            return opener

        rows = []
        for level in (concurrency, 1):
            n = jobs if level > 1 else min(jobs, 1000)
            rows.append((n, await _measure("memory", _memory, n, level)))
            rows.append((n, await _measure("sqlite FULL", sqlite("FULL"), n, level)))
            rows.append((n, await _measure("sqlite NORMAL", sqlite("NORMAL"), n, level)))

    print(f"journal overhead, {STATES_PER_JOB} writes per job (add + 4 state changes)")
    header = (
        f"{'store':<14} {'jobs':>6} {'in flight':>9} {'wall s':>8} {'wall/job':>10} "
        f"{'cpu/job':>10} {'+wall/job':>10} {'+cpu/job':>10} {'commits':>8} {'writes/commit':>13}"
    )
    _print_header(header)
    base: dict[int, tuple[float, float]] = {}
    for n, (name, level, wall, cpu, commits) in rows:
        per_wall, per_cpu = wall / n, cpu / n
        if name == "memory":
            base[level] = (per_wall, per_cpu)
        extra_wall = per_wall - base[level][0]
        extra_cpu = per_cpu - base[level][1]
        ratio = n * STATES_PER_JOB / commits if commits else 0.0
        print(
            f"{name:<14} {n:>6} {level:>9} {wall:>8.2f} {_us(per_wall):>10} {_us(per_cpu):>10} "
            f"{_us(extra_wall):>10} {_us(extra_cpu):>10} {commits:>8} {ratio:>13.1f}"
        )


async def batch_table(jobs: int) -> None:
    """Print the whole-batch comparison."""
    scale = 0.0005

    def request(i: int) -> Request:
        if i % 2:
            return MultiImageToVideo(images=URLS, prompt=f"job {i}")
        return MultiImageToImage(images=URLS, n=1 + i % 3)

    async def one(kind: str, folder: str) -> tuple[float, float]:
        config = SimulatorConfig(
            time_scale=scale,
            durations={"video": Fixed(seconds=60), "image": Fixed(seconds=15)},
            video_slots=100,
            image_slots=100,
            seed=1,
        )
        async with Simulator(config) as sim:
            client = Client(
                api_key=sim.api_key,
                base_url=sim.url,
                timeouts=Timeouts(connect=1.0, read=1.0, total=2.0),
                limits=Limits(
                    requests_per_second=None, max_creates=16, video_slots=100, image_slots=100
                ),
                backoff=Backoff().scaled(scale * 20),
                poll=PollPolicy(expected_video=60, expected_image=15).scaled(scale),
                server_time_scale=scale,
            )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            async with client:
                if kind == "none":
                    async with client.batch(max_pending=500) as batch:
                        await batch.feed((f"k{i}", request(i)) for i in range(jobs))
                        count = len([o async for o in batch])
                else:
                    path = Path(folder) / f"{kind}.sqlite"
                    opener: AbstractAsyncContextManager[JobStore] = (
                        MemoryStore(keep_records=False)
                        if kind == "memory"
                        else SqliteJournal.open(path, synchronous=kind.rsplit(maxsplit=1)[-1])
                    )
                    async with opener as store:
                        bridge = JournalBatchStore(store)
                        async with client.batch(
                            store=bridge,
                            batch_id=store.batch_id,
                            max_pending=500,
                        ) as batch:
                            await batch.feed((f"k{i}", request(i)) for i in range(jobs))
                            count = len([o async for o in batch])
            assert count == jobs
            return time.perf_counter() - wall0, time.process_time() - cpu0

    print()
    print(f"whole batch, {jobs} jobs against the in-process simulator (cpu includes it)")
    header = (
        f"{'store':<18} {'wall s':>8} {'cpu s':>8} {'cpu/job':>10} "
        f"{'+cpu/job':>10} {'+wall/job':>10}"
    )
    _print_header(header)
    with tempfile.TemporaryDirectory() as folder:
        base: tuple[float, float] | None = None
        for kind in ("none", "memory", "sqlite FULL", "sqlite NORMAL"):
            wall, cpu = await one(kind, folder)
            if base is None:
                base = (wall, cpu)
            print(
                f"{kind:<18} {wall:>8.2f} {cpu:>8.2f} {_us(cpu / jobs):>10} "
                f"{_us((cpu - base[1]) / jobs):>10} {_us((wall - base[0]) / jobs):>10}"
            )


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def _print_header(header: str) -> None:
    print(header)
    print("-" * len(header))


def _memory() -> AbstractAsyncContextManager[JobStore]:
    return MemoryStore()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2000, help="jobs of part 2 (0: skip)")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.concurrency))
    if args.batch:
        asyncio.run(batch_table(args.batch))
