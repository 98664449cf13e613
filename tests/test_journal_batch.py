"""A real batch writing the journal through the engine's store seam, against the simulator."""

import asyncio
import collections
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from kling_async import JobState, SqliteJournal
from kling_async._durable.bridge import JournalBatchStore, outcome_from_row
from kling_async._engine import JobStatus, external_id_for
from kling_async.simulator import Fault, FaultKind, LogNormal, Simulator, SimulatorConfig
from tests._journal_batch_child import SCALE, client_for, request_for

ROOT = Path(__file__).resolve().parent.parent


def _config(seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=SCALE,
        durations={"video": LogNormal(median=60, sigma=0.25), "image": LogNormal(median=15)},
        video_slots=20,
        image_slots=20,
        faults=(
            Fault(kind=FaultKind.RESET_AFTER, rate=0.05, on=("create",)),
            Fault(kind=FaultKind.SLOW, rate=0.03, on=("create",), delay=1.0),
        ),
        failure_rate=0.05,
        seed=seed,
    )


async def test_every_state_change_of_a_batch_reaches_the_journal(tmp_path: Path) -> None:
    """After a batch, each job's row is final, matches its outcome, and the task it names."""
    path = tmp_path / "run.sqlite"
    n = 120
    async with (
        Simulator(_config(seed=5)) as sim,
        client_for(sim.url, sim.api_key) as client,
        SqliteJournal.open(path, batch_id="full") as journal,
    ):
        store = JournalBatchStore(journal)
        async with client.batch(store=store, batch_id=journal.batch_id) as batch:
            await batch.feed((f"job-{i}", request_for(i)) for i in range(n))
            outcomes = {o.key: o async for o in batch}
        plan = await journal.resume()
        created = sim.statistics().tasks_created_per_external_id
    assert len(outcomes) == n
    assert plan.pending == plan.submitting == plan.submitted == ()
    rows = {row.key: row for row in plan.rows()}
    assert len(rows) == n
    for key, outcome in outcomes.items():
        row = rows[key]
        assert row.external_id == external_id_for("full", key)
        back = outcome_from_row(row)
        assert (back.status, back.task_id) == (outcome.status, outcome.task_id)
        if outcome.status is JobStatus.SUCCEEDED:
            assert row.state is JobState.SUCCEEDED
            assert back.task == outcome.task
        assert row.attempts == outcome.attempts
    assert all(count == 1 for count in created.values())
    statuses = collections.Counter(o.status for o in outcomes.values())
    assert statuses[JobStatus.SUCCEEDED] > n * 0.8


@pytest.mark.parametrize("seed", [1, 2])
async def test_sigkill_mid_batch_leaves_every_created_task_in_the_journal(
    tmp_path: Path, seed: int
) -> None:
    """Killed at a random moment, the journal knows every task the server created (no loss)."""
    path = tmp_path / "run.sqlite"
    n = 300
    async with Simulator(_config(seed=seed)) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests._journal_batch_child",
            sim.url,
            sim.api_key,
            str(path),
            str(n),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        stop_after = random.Random(seed).randrange(20, 120)
        ended: dict[str, str] = {}
        async with asyncio.timeout(60):
            while len(ended) < stop_after:
                line = await proc.stdout.readline()
                assert line, "the batch ended early"
                _, key, status = line.decode().split()
                ended[key] = status
        proc.send_signal(signal.SIGKILL)
        await proc.stdout.read()
        assert await proc.wait() == -signal.SIGKILL
        created = dict(sim.statistics().tasks_created_per_external_id)

    async with SqliteJournal.open(path) as journal:
        rows = {row.external_id: row for row in (await journal.resume()).rows()}
        by_key = {row.key: row for row in rows.values()}
    # SUBMITTING is durable before each create: every created task has its row
    assert created
    for external_id, count in created.items():
        assert count == 1
        row = rows.get(external_id)
        assert row is not None, external_id
        assert row.state is not JobState.PENDING
    # every outcome the batch reported is in the journal as ended
    for key in ended:
        assert by_key[key].state in {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.TIMED_OUT,
            JobState.STOPPED,
        }
    # rows past SUBMITTED name a task the server created
    for row in by_key.values():
        if row.state is JobState.SUBMITTED:
            assert row.task_id is not None
            assert row.external_id in created
