"""Issue 13's acceptance: workers in many processes on one PostgreSQL and one account limit.

The simulator runs in this process (a real loopback server); workers are
``kling-async worker`` subprocesses, SIGKILLed at random and restarted; generate()
loops are subprocesses too. The simulator's counters show one create per external id
and how many creates it answered with 1303; the journal shows one final row per job.
"""

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import pathlib
import random
import signal
import sys

import pytest

import kling_async as ka
from kling_async._durable.records import JobRecord
from kling_async._engine import external_id_for
from kling_async.simulator import LogNormal, Simulator, SimulatorConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCALE = 0.005
URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)


def _env(key: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COMETAPI_KEY": key}


def _request(i: int) -> ka.Request:
    if i % 2:
        return ka.MultiImageToVideo(images=URLS, prompt=f"job {i}")
    return ka.MultiImageToImage(images=URLS, n=1 + i // 2 % 2)


def _config(slots: int, seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=SCALE,
        durations={"video": LogNormal(median=20, sigma=0.2), "image": LogNormal(median=10)},
        video_slots=slots,
        image_slots=slots,
        url_ttl=1e7,
        seed=seed,
    )


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Worker:
    """One ``kling-async worker`` process and the JSON events it printed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: pathlib.Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.events: list[dict[str, object]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT, env=self.env
            )
        self.reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.events.append(json.loads(raw))

    async def kill(self) -> None:
        assert self.proc is not None
        assert self.reader is not None
        await _stop(self.proc)
        await self.reader

    async def wait(self, seconds: float) -> int:
        assert self.proc is not None
        assert self.reader is not None
        try:
            await asyncio.wait_for(self.proc.wait(), seconds)
        finally:
            await _stop(self.proc)
            await self.reader
        assert self.proc.returncode is not None
        return self.proc.returncode


def _worker_argv(url: str, pg: str, batch: str, out: pathlib.Path, slots: int) -> list[str]:
    return [
        *(sys.executable, "-m", "kling_async._cli.app", "worker", "--journal", pg),
        *("--batch", batch, "--out", str(out), "--base-url", url),
        *("--time-scale", str(SCALE), "--concurrency", str(slots), "--rate", "1000", "--json"),
    ]


@pytest.mark.slow
async def test_three_workers_killed_five_times_run_every_job_once(
    fresh_database: str, tmp_path: pathlib.Path
) -> None:
    """1,000 jobs, 3 workers, one SIGKILLed 5 times: one create and one end per job."""
    jobs, slots, kills = 1000, 10, 5
    pg = f"{fresh_database}&kling_lease=2"
    rng = random.Random(13)
    async with ka.PostgresJournal.open(pg, batch_id="accept") as journal:
        assert (
            await journal.enqueue_requests((f"job-{i}", _request(i)) for i in range(jobs)) == jobs
        )
    out = tmp_path / "out"
    async with Simulator(_config(slots, seed=13)) as sim:
        env = _env(sim.api_key)
        workers = [
            Worker(
                f"w{n}",
                _worker_argv(sim.url, pg, "accept", out, slots),
                env,
                tmp_path / f"w{n}.err",
            )
            for n in range(3)
        ]
        for worker in workers:
            await worker.start()
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.8, 1.6))
            victim = rng.choice(workers)
            await victim.kill()
            await victim.start()
        codes = [await worker.wait(120) for worker in workers]
        stats = sim.statistics()
    logs = {w.name: w.log.read_text(errors="replace")[-2000:] for w in workers}
    assert codes == [0, 0, 0], logs

    # the server: one task per job, never over the limit, almost no 1303
    keys = [f"job-{i}" for i in range(jobs)]
    assert stats.tasks_created_per_external_id == {
        external_id_for("accept", key): 1 for key in keys
    }
    assert all(peak <= slots for peak in stats.peak_concurrency.values()), stats.peak_concurrency
    assert stats.rejected_concurrency <= jobs // 100, stats.rejected_concurrency

    # each job reported at most once, by whichever worker ended it
    reported = collections.Counter(
        str(e["key"]) for w in workers for e in w.events if e["event"] == "job"
    )
    assert max(reported.values()) == 1
    assert all(e["status"] == "succeeded" for w in workers for e in w.events if e["event"] == "job")

    # the journal: every job DOWNLOADED, each file there with its sha256
    async with ka.PostgresJournal.open(pg, batch_id="accept", readonly=True) as journal:
        rows = (await journal.resume()).rows()
    assert sorted(row.key for row in rows) == sorted(keys)
    await asyncio.to_thread(_check_files, rows)


def _check_files(rows: tuple[JobRecord, ...]) -> None:
    """Each row is DOWNLOADED and each file it names holds the recorded sha256."""
    for row in rows:
        assert row.state is ka.JobState.DOWNLOADED, (row.key, row.state, row.error)
        assert row.files
        for file in row.files:
            data = pathlib.Path(file.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file.sha256


async def _generate_loops(sim: Simulator, pg: str, shared: bool, tmp: pathlib.Path) -> None:
    procs = []
    for n in range(4):
        with (tmp / f"gen{n}.err").open("ab") as err:
            procs.append(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "tests._postgres_generate_child"),
                    *(sim.url, sim.api_key, pg, "24", "6", str(SCALE)),
                    *(["shared"] if shared else []),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                    cwd=ROOT,
                    env=_env(sim.api_key),
                )
            )
    try:
        outs = [await asyncio.wait_for(p.communicate(), 90) for p in procs]
    finally:
        for p in procs:
            await _stop(p)
    assert [p.returncode for p in procs] == [0] * 4, [
        (tmp / f"gen{n}.err").read_text()[-1500:] for n in range(4)
    ]
    assert all(out.strip() == b"done" for out, _ in outs)


async def test_four_generate_loops_share_the_limit(
    fresh_database: str, tmp_path: pathlib.Path
) -> None:
    """Four processes calling generate(), each allowed the whole limit, never exceed it."""
    async with Simulator(_config(4, seed=21)) as sim:
        await _generate_loops(sim, fresh_database, True, tmp_path)
        stats = sim.statistics()
    assert stats.tasks_created == 96
    assert stats.rejected_concurrency == 0
    assert all(peak <= 4 for peak in stats.peak_concurrency.values())
