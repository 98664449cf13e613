"""The journal after kill -9: every acknowledged write survives, every state resumes right."""

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from kling_async import JobState, SqliteJournal
from tests._journal_helpers import PATH, STOP_STATES, record_for

ROOT = Path(__file__).resolve().parent.parent


async def _spawn(path: Path, n: int, mode: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests._journal_helpers",
        str(path),
        str(n),
        mode,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.stdout is not None
    await proc.stdout.read()
    assert await proc.wait() == -signal.SIGKILL


async def test_each_state_a_crash_can_leave_resumes_right(tmp_path: Path) -> None:
    """Jobs left in every state by a SIGKILLed writer come back in the right resume group."""
    path = tmp_path / "run.sqlite"
    n = 32
    proc = await _spawn(path, n, "states")
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while (line := await proc.stdout.readline()) != b"done\n":
            assert line, "writer exited early"
    await _kill(proc)

    async with SqliteJournal.open(path, batch_id="crash-test") as journal:
        plan = await journal.resume()
        rows = {row.key: row for row in plan.rows()}
        assert len(rows) == n
        for i in range(n):
            row = rows[f"job-{i}"]
            expected = STOP_STATES[i % len(STOP_STATES)]
            assert row.state is expected
            assert row.record == record_for(i)
            if expected not in {JobState.PENDING, JobState.STOPPED}:
                assert row.external_id == f"ext-{i}"
            if expected in {JobState.SUBMITTED, JobState.SUCCEEDED, JobState.FAILED}:
                assert row.task_id == f"task-{i}"
            if expected is JobState.DOWNLOADED:
                assert row.files[0].size == i
            if expected in {JobState.FAILED, JobState.TIMED_OUT}:
                assert row.error is not None
                assert row.error.message == f"no {i}"
        assert {r.state for r in plan.pending} == {JobState.PENDING, JobState.STOPPED}
        assert {r.state for r in plan.submitting} == {JobState.SUBMITTING}
        assert {r.state for r in plan.submitted} == {JobState.SUBMITTED}
        assert {r.state for r in plan.succeeded} == {JobState.SUCCEEDED}
        assert {r.state for r in plan.finished} == {
            JobState.DOWNLOADED,
            JobState.FAILED,
            JobState.TIMED_OUT,
        }


@pytest.mark.parametrize("mode", ["stream", "lazy"])
@pytest.mark.parametrize("seed", range(3))
async def test_kill_mid_stream_loses_no_acknowledged_write(
    tmp_path: Path, seed: int, mode: str
) -> None:
    """A writer killed at a random moment keeps every write it had acknowledged, no more rows.

    ``lazy`` adds each job as the engine does (``durable=False``, not acknowledged): a
    PENDING row may be lost, but every job whose create would have been sent (its
    SUBMITTING acknowledged) has a SUBMITTING-or-later row.
    """
    path = tmp_path / "run.sqlite"
    n = 300
    proc = await _spawn(path, n, mode)
    assert proc.stdout is not None
    acks = n * (len(PATH) - 1 if mode == "lazy" else len(PATH))
    stop_after = random.Random(seed).randrange(50, acks - 50)
    acked: dict[str, JobState] = {}
    async with asyncio.timeout(60):
        for _ in range(stop_after):
            line = await proc.stdout.readline()
            assert line.startswith(b"ack "), line
            _, key, value = line.decode().split()
            acked[key] = JobState(value)
    await _kill(proc)

    order = {state: i for i, state in enumerate(PATH)}
    async with SqliteJournal.open(path) as journal:
        assert journal.batch_id == "crash-test"
        plan = await journal.resume()
        rows = {row.key: row for row in plan.rows()}
        for key, state in acked.items():
            assert key in rows, key
            assert order[rows[key].state] >= order[state], (key, rows[key].state, state)
        # all rows are consistent: a state is never ahead of its data
        for row in rows.values():
            if row.state is not JobState.PENDING:
                assert row.external_id is not None
                assert row.attempts == 1
            if order[row.state] >= order[JobState.SUBMITTED]:
                assert row.task_id is not None
        # and the journal carries on after the crash
        await journal.add("after", "video", "f" * 64, {"x": 1})
        assert journal.statistics().jobs == len(rows) + 1
