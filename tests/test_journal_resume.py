"""Resuming a journaled batch through the public API: stops, same-key rules, expired URLs."""

import asyncio
import contextlib
import json
import pathlib
import sqlite3

import pytest

import kling_async as ka
from kling_async import JobState, SqliteJournal
from kling_async._durable.bridge import JournalBatchStore
from kling_async.simulator import Simulator, SimulatorConfig

SCALE = 0.0005
URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)


def client_for(sim: Simulator) -> ka.Client:
    """A time-scaled client of ``sim``."""
    return ka.Client(
        api_key=sim.api_key,
        base_url=sim.url,
        limits=ka.Limits(requests_per_second=None),
        backoff=ka.Backoff().scaled(SCALE * 20),
        poll=ka.PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
        server_time_scale=SCALE,
    )


def jobs(count: int, prompt: str = "job") -> list[tuple[str, ka.MultiImageToVideo]]:
    """``count`` video jobs ``k0``, ``k1``, ..."""
    return [
        (f"k{i}", ka.MultiImageToVideo(images=URLS, prompt=f"{prompt} {i}")) for i in range(count)
    ]


async def _rows(path: pathlib.Path) -> dict[str, JobState]:
    async with SqliteJournal.open(path, readonly=True) as journal:
        return {row.key: row.state for row in (await journal.resume()).rows()}


async def test_pending_rows_fed_again_before_their_turn_run_once(tmp_path: pathlib.Path) -> None:
    """PENDING rows submitted again while the resume still queues them are no-ops, not a crash.

    Regression: the resume queued PENDING rows in the background and marked each key
    as journaled only when its turn came; a feed that got there first made a second job
    with the same key and the batch died with "already used in this batch".
    """
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path, batch_id="p") as journal:
        bridge = JournalBatchStore(journal)
        for key, request in jobs(6):
            await bridge.pending(key, request.kind, request, key)
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=1)) as sim,
        client_for(sim) as kling,
    ):
        async with kling.batch(journal=path, max_pending=2) as batch:
            await batch.feed(list(reversed(jobs(6))))
            outcomes = [o async for o in batch]
        stats = sim.statistics()
    assert sorted(o.key for o in outcomes) == [f"k{i}" for i in range(6)]
    assert all(o.ok for o in outcomes)
    assert stats.tasks_created == 6
    assert stats.max_creates_per_external_id == 1


async def test_a_cancelled_batch_leaves_running_tasks_submitted(tmp_path: pathlib.Path) -> None:
    """Cancelling the task running a batch keeps running tasks SUBMITTED, unsent ones resumable."""
    path = tmp_path / "run.sqlite"
    config = SimulatorConfig(time_scale=SCALE * 20, video_slots=2, seed=3)
    async with Simulator(config) as sim, client_for(sim) as kling:
        accepted = asyncio.Event()

        async def run() -> None:
            async with kling.batch(journal=path, batch_id="c") as batch:
                for key, request in jobs(5):
                    await batch.submit(request, key=key)
                accepted.set()
                async for _ in batch:
                    pass  # pragma: no cover -- cancelled before any task ends

        runner = asyncio.create_task(run())
        await asyncio.wait_for(accepted.wait(), 10)
        for _ in range(2000):  # bounded: the two tasks are made within milliseconds
            if sim.statistics().tasks_created >= 2:
                break
            await asyncio.sleep(0.005)
        assert sim.statistics().tasks_created == 2
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        states = await _rows(path)
        assert sorted(states.values(), key=lambda s: s.value) == [
            JobState.STOPPED,
            JobState.STOPPED,
            JobState.STOPPED,
            JobState.SUBMITTED,
            JobState.SUBMITTED,
        ]
        async with SqliteJournal.open(path, readonly=True) as journal:
            plan = await journal.resume()
        assert len(plan.submitted) == 2
        assert all(row.task_id for row in plan.submitted)
        # never sent, or sent and refused (1303): submitted again, or looked up first
        assert len(plan.pending) + len(plan.submitting) == 3

        async with kling.batch(journal=path) as batch:
            outcomes = [o async for o in batch]
        stats = sim.statistics()
    assert sorted(o.key for o in outcomes) == [f"k{i}" for i in range(5)]
    assert all(o.ok for o in outcomes)
    assert stats.tasks_created == 5
    assert stats.max_creates_per_external_id == 1
    assert set((await _rows(path)).values()) == {JobState.SUCCEEDED}


async def test_same_key_same_request_is_a_no_op_another_request_a_conflict(
    tmp_path: pathlib.Path,
) -> None:
    """On resume a known key with its request is a no-op; another request: JournalConflict."""
    path = tmp_path / "run.sqlite"
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=5)) as sim,
        client_for(sim) as kling,
    ):
        async with kling.batch(journal=path, batch_id="s") as batch:
            await batch.feed(jobs(2))
            first = [o async for o in batch]
        async with kling.batch(journal=path) as batch:
            for key, request in jobs(2):
                await batch.submit(request, key=key)
            other = jobs(2, prompt="changed")[1]
            with pytest.raises(ka.JournalConflict, match="'k1'") as caught:
                await batch.submit(other[1], key=other[0])
            assert caught.value.key == "k1"
            again = [o async for o in batch]
        stats = sim.statistics()
    assert sorted(o.key for o in first) == sorted(o.key for o in again) == ["k0", "k1"]
    assert stats.tasks_created == 2


async def test_an_expired_url_leaves_the_job_to_a_later_resume(tmp_path: pathlib.Path) -> None:
    """An expired result URL: DOWNLOAD_FAILED, the row stays SUCCEEDED, each resume retries."""
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    config = SimulatorConfig(time_scale=SCALE, url_ttl=600, seed=7)
    async with Simulator(config) as sim, client_for(sim) as kling:
        async with kling.batch(journal=path, batch_id="e") as batch:
            await batch.feed(jobs(2))
            assert all([o.ok async for o in batch])
        sim.advance(3600)  # every result URL has expired
        for _ in range(2):
            served = sim.statistics().requests_to("file", 403)
            async with kling.batch(journal=path, out_dir=out) as batch:
                outcomes = [o async for o in batch]
            assert sim.statistics().requests_to("file", 403) == served + 2  # retried, refused
            assert {o.status for o in outcomes} == {ka.Status.DOWNLOAD_FAILED}
            assert all(isinstance(o.error, ka.ResultExpired) for o in outcomes)
            assert all(o.files == () for o in outcomes)
        stats = sim.statistics()
    async with SqliteJournal.open(path, readonly=True) as journal:
        rows = (await journal.resume()).rows()
    for row in rows:
        assert row.state is JobState.SUCCEEDED
        assert row.error is not None
        assert row.error.type == "ResultExpired"
        assert row.error.url is not None
        assert "/_sim/files/" in row.error.url
        assert row.error.expires_at is not None
    assert not out.exists() or not list(out.iterdir())
    assert stats.tasks_created == 2


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "nul\x00"])
async def test_with_out_dir_an_unsafe_key_is_refused_before_any_create(
    tmp_path: pathlib.Path, key: str
) -> None:
    """A key that cannot name a file raises UnsafeKey at submit; nothing is created or written."""
    out = tmp_path / "out"
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=9)) as sim,
        client_for(sim) as kling,
    ):
        async with kling.batch(journal=tmp_path / "run.sqlite", out_dir=out) as batch:
            with pytest.raises(ka.UnsafeKey):
                await batch.submit(jobs(1)[0][1], key=key)
            await batch.submit(jobs(1)[0][1], key="sub/dir key")  # made safe, not refused
            outcomes = [o async for o in batch]
        stats = sim.statistics()
    assert [o.key for o in outcomes] == ["sub/dir key"]
    assert stats.tasks_created == 1
    [path] = outcomes[0].files
    assert path.parent == out
    assert path.name.startswith("sub_dir_key-")
    assert key not in await _rows(tmp_path / "run.sqlite")


async def test_a_row_whose_request_no_longer_builds_ends_failed_unsent(
    tmp_path: pathlib.Path,
) -> None:
    """A journaled request that no longer validates ends FAILED on resume; no create is sent."""
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path, batch_id="r") as journal:
        bridge = JournalBatchStore(journal)
        for key, request in jobs(2):
            await bridge.pending(key, request.kind, request, key)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE jobs SET record = ? WHERE key = 'k1'", (json.dumps({"x": 1}),))
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=11)) as sim,
        client_for(sim) as kling,
    ):
        async with kling.batch(journal=path) as batch:
            outcomes = {o.key: o async for o in batch}
        stats = sim.statistics()
    assert outcomes["k0"].ok
    assert outcomes["k1"].status is ka.Status.FAILED
    assert isinstance(outcomes["k1"].error, ka.InvalidRequest)
    assert stats.tasks_created == 1
    assert (await _rows(path))["k1"] is JobState.FAILED
