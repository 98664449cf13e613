"""The server remembers even when the journal does not (issue 12).

A journal truncated to 0 bytes, deleted, swapped for another run's, or stripped of its
``-wal`` file before a ``kill -9``; an output folder moved between run and resume. In
every case no job is created twice: the batch id lives beside the journal in
``<journal>.batch.json`` (durable before the first create), a journal that lost rows is
refused where it is only read and, where a batch opens it, every job it cannot prove
unsent is looked up on the server by its external id before any create.
"""

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import sys

import anyio
import anyio.to_thread
import pytest

import kling_async as ka
from kling_async import JournalLost
from kling_async._cli.app import main
from kling_async._durable.anchor import anchor_path, new_anchor, read_anchor, write_anchor
from kling_async._durable.bridge import JournalBatchStore
from kling_async._durable.journaled import refuse_orphan_results
from kling_async._durable.sqlite import SqliteJournal
from kling_async.simulator import Simulator, SimulatorConfig
from tests._hostile_journal_child import SCALE as CHILD_SCALE
from tests._hostile_journal_child import jobs as child_jobs
from tests.conftest import API_ENV
from tests.test_journal_resume import SCALE, client_for, jobs

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
N = 6


async def _run(
    sim: Simulator, journal: pathlib.Path, out: pathlib.Path, n: int = N
) -> list[ka.Outcome]:
    """Run (or resume) ``n`` jobs on ``journal`` to their end; return the outcomes."""
    async with (
        client_for(sim) as kling,
        kling.batch(journal=journal, out_dir=out) as batch,
    ):
        await batch.feed(jobs(n))
        return [outcome async for outcome in batch]


def _paid_once(sim: Simulator, n: int = N) -> None:
    """The server made exactly one task per job and refused no duplicate create."""
    stats = sim.statistics()
    assert stats.tasks_created == n
    assert stats.max_creates_per_external_id == 1
    assert stats.duplicates_rejected == 0


async def _refused(sim: Simulator, journal: pathlib.Path, out: pathlib.Path) -> BaseException:
    """Run the batch, which must fail as it opens; return the error (out of its group)."""
    with pytest.raises(BaseException) as caught:
        await _run(sim, journal, out, n=2)
    error: BaseException = caught.value
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(b"")


async def test_the_batch_id_is_beside_the_journal_before_the_first_create(
    tmp_path: pathlib.Path,
) -> None:
    """The anchor holds the batch id (live) once the batch is open; every external id has it."""
    journal = tmp_path / "run.sqlite"
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=3)) as sim:
        async with client_for(sim) as kling, kling.batch(journal=journal) as batch:
            anchor = await anyio.to_thread.run_sync(read_anchor, journal)
            assert anchor is not None
            assert (anchor.batch_id, anchor.live) == (batch.batch_id, True)
            assert sim.statistics().tasks_created == 0
            await batch.feed(jobs(2))
            assert all([o.ok async for o in batch])
        created = sim.statistics().tasks_created_per_external_id
    assert all(external.startswith(f"{anchor.batch_id}-") for external in created)
    closed = await anyio.to_thread.run_sync(read_anchor, journal)
    assert closed is not None
    assert (closed.batch_id, closed.live) == (anchor.batch_id, False)  # closed cleanly


@pytest.mark.parametrize("loss", ["truncated", "deleted"])
async def test_an_empty_or_missing_journal_is_reconciled_not_paid_again(
    tmp_path: pathlib.Path, loss: str
) -> None:
    """Journal emptied or deleted after a run: read-only use refuses, a batch pays nothing."""
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=4)) as sim:
        assert all(o.ok for o in await _run(sim, journal, out))
        if loss == "truncated":
            await anyio.to_thread.run_sync(_truncate, journal)
        else:
            await anyio.Path(journal).unlink()
        with pytest.raises(JournalLost, match=r"is empty|is missing") as lost:
            async with SqliteJournal.open(journal):
                pass
        assert "paid" in str(lost.value)
        queries = sim.statistics().requests_to("video.query")
        outcomes = await _run(sim, journal, out)
        assert sorted(o.key for o in outcomes) == [f"k{i}" for i in range(N)]
        assert all(o.ok and o.files for o in outcomes)
        _paid_once(sim)
        # each job was looked up by its external id (and adopted) instead of created
        assert sim.statistics().requests_to("video.query") >= queries + N
    async with SqliteJournal.open(journal, readonly=True) as reopened:
        rows = (await reopened.resume()).rows()
    assert sorted(row.state.value for row in rows) == ["DOWNLOADED"] * N


async def test_a_foreign_journal_is_refused(tmp_path: pathlib.Path) -> None:
    """Another run's journal copied over this one's: refused by its anchor, nothing sent."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=5)) as sim:
        await _run(sim, mine / "run.sqlite", mine / "out", n=2)
        await _run(sim, other / "run.sqlite", other / "out", n=2)
        shutil.copyfile(other / "run.sqlite", mine / "run.sqlite")
        before = sim.statistics()
        error = await _refused(sim, mine / "run.sqlite", mine / "out")
        assert isinstance(error, ka.JournalConflict)
        assert "another run's journal" in str(error)
        with pytest.raises(ka.JournalConflict, match="another run's journal"):
            async with SqliteJournal.open(mine / "run.sqlite", readonly=True):
                pass
        after = sim.statistics()
    assert after.tasks_created == before.tasks_created == 4
    assert after.requests_to("video.create") == before.requests_to("video.create")


async def test_results_without_journal_or_anchor_are_refused(tmp_path: pathlib.Path) -> None:
    """An output folder with results but neither journal nor anchor: refused, nothing paid."""
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=6)) as sim:
        await _run(sim, journal, out, n=2)
        for path in (journal, anchor_path(journal)):
            await anyio.Path(path).unlink()
        error = await _refused(sim, journal, out)
        assert isinstance(error, ka.JournalError)
        assert "holds results of an earlier run" in str(error)
        assert sim.statistics().tasks_created == 2
    assert not journal.exists()  # refused before anything was written


async def test_a_damaged_anchor_or_another_batch_id_is_refused(tmp_path: pathlib.Path) -> None:
    """An anchor that does not parse, or a batch id other than the anchored one, is refused."""
    journal = tmp_path / "run.sqlite"
    async with SqliteJournal.open(journal, batch_id="first"):
        pass
    with pytest.raises(ka.JournalConflict, match="anchored to batch 'first'"):
        async with SqliteJournal.open(journal, batch_id="second"):
            pass
    anchor_path(journal).write_text("{not json", encoding="utf-8")
    with pytest.raises(ka.JournalError, match="damaged"):
        async with SqliteJournal.open(journal):
            pass


def test_the_anchor_cannot_be_written_into_a_missing_folder(tmp_path: pathlib.Path) -> None:
    """Writing the anchor where it cannot go is a JournalError, not a stray OSError."""
    anchor = read_anchor(tmp_path / "none.sqlite")
    assert anchor is None
    with pytest.raises(ka.JournalError, match="cannot write the batch anchor"):
        write_anchor(tmp_path / "missing" / "run.sqlite", new_anchor("b"))


def _run_the_examples(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the bundled examples into ``tmp_path/out`` on the in-process simulator."""
    for name in API_ENV:
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "examples/jobs.jsonl", "--out", "out", "--time-scale", "0.002"]) == 0


def test_status_refuses_an_emptied_journal_with_a_clear_message(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` on a journal truncated to 0 bytes: exit 2 and why, not "0 jobs", exit 0."""
    _run_the_examples(tmp_path, monkeypatch)
    capsys.readouterr()
    _truncate(tmp_path / "out" / "journal.sqlite")
    code = main(["status", "out/journal.sqlite"])
    captured = capsys.readouterr()
    assert code == 2
    assert "is empty" in captured.err
    assert "0 job" not in captured.out


def test_resume_of_a_deleted_journal_says_its_anchor_remains(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resume` of a deleted journal whose .batch.json remains says so and looks jobs up."""
    _run_the_examples(tmp_path, monkeypatch)
    journal = tmp_path / "out" / "journal.sqlite"
    journal.unlink()
    capsys.readouterr()
    code = main(["resume", "out/journal.sqlite"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out + captured.err
    assert "no journal at" not in text
    assert "is missing, but journal.sqlite.batch.json" in text
    assert "looks every job up" in text
    # without its run settings there is no job file to look up: refused, and why
    journal.unlink()
    (tmp_path / "out" / "journal.sqlite.run.json").unlink()
    code = main(["resume", "out/journal.sqlite"])
    captured = capsys.readouterr()
    assert code == 2
    assert "is missing, but journal.sqlite.batch.json" in captured.out + captured.err
    assert "no job file is left to resume from" in captured.err
    assert not journal.exists()  # looking at a missing journal does not create one


def test_a_moved_output_folder_resumes_where_it_is_now(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run, move the output folder, resume it: everything lands in the new folder."""
    _run_the_examples(tmp_path, monkeypatch)
    saved = json.loads((tmp_path / "out" / "journal.sqlite.run.json").read_text("utf-8"))
    assert (saved["out_dir"], saved["journal"]) == (".", "journal.sqlite")
    (tmp_path / "out").rename(tmp_path / "moved")
    capsys.readouterr()
    code = main(["resume", "moved/journal.sqlite"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert not (tmp_path / "out").exists()  # nothing written into the old place
    lines = (tmp_path / "moved" / "results.jsonl").read_text("utf-8").splitlines()
    results = [json.loads(line) for line in lines]
    assert len(results) == 7
    for result in results:
        assert result["status"] == "succeeded"
        for name in result["files"]:
            assert (tmp_path / "moved" / name).is_file(), name


async def test_restored_files_are_named_in_the_output_folder_as_it_is_now(
    tmp_path: pathlib.Path,
) -> None:
    """A finished job's files are reported under the folder given now, not the journal's."""
    (tmp_path / "a").mkdir()
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=8)) as sim:
        await _run(sim, tmp_path / "a" / "run.sqlite", tmp_path / "a" / "out", n=2)
        (tmp_path / "a").rename(tmp_path / "b")
        outcomes = await _run(sim, tmp_path / "b" / "run.sqlite", tmp_path / "b" / "out", n=2)
        _paid_once(sim, 2)
    for outcome in outcomes:
        assert outcome.files
        for path in outcome.files:
            assert path.parent == tmp_path / "b" / "out"
            assert path.is_file()


# -- the -wal file deleted mid-run, then kill -9 -------------------------------------------


async def _until(proc: asyncio.subprocess.Process, lines: list[str], count: int) -> None:
    """Read the child's lines until ``count`` outcomes were printed (or it ended)."""
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while sum(line.startswith("outcome ") for line in lines) < count:
            raw = await proc.stdout.readline()
            if not raw:
                return
            lines.append(raw.decode().strip())


async def test_a_deleted_wal_then_kill9_pays_no_job_twice(tmp_path: pathlib.Path) -> None:
    """-wal removed mid-run, then SIGKILL: the resume looks jobs up, none is paid twice."""
    n = 40
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    config = SimulatorConfig(time_scale=CHILD_SCALE, seed=11)
    async with Simulator(config) as sim:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests._hostile_journal_child", sim.url, sim.api_key),
            *(str(journal), str(out), str(n)),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        lines: list[str] = []
        try:
            await _until(proc, lines, 5)
            # the writer goes on into a file nobody can open again
            await anyio.Path(f"{journal}-wal").unlink()
            await _until(proc, lines, 15)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)  # not send_signal: see test_journal_kill9
            assert proc.stdout is not None
            await proc.stdout.read()
            assert await proc.wait() == -signal.SIGKILL, lines[-3:]
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        before = sim.statistics().tasks_created
        assert "done" not in lines
        # the loss is seen: read-only use refuses, with the reason
        with pytest.raises(JournalLost, match=r"write-ahead log|holds no batch"):
            async with SqliteJournal.open(journal):
                pass
        async with (
            client_for(sim) as kling,
            kling.batch(journal=journal, out_dir=out) as batch,
        ):
            await batch.feed(child_jobs(n))
            outcomes = [outcome async for outcome in batch]
        stats = sim.statistics()
    assert before >= 15
    assert sorted(o.key for o in outcomes) == sorted(key for key, _ in child_jobs(n))
    assert all(o.ok and o.files for o in outcomes)
    assert stats.tasks_created == n
    assert stats.max_creates_per_external_id == 1
    assert stats.duplicates_rejected == 0


# -- the anchor's own edges -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (65 * 1024),
        b'{"batch_id": "", "created_at": 1}',
        b'{"batch_id": "b", "created_at": 1, "live": "yes"}',
        b'{"created_at": 1}',
        b"[1, 2]",
        b"\xff\xfe",
    ],
)
def test_an_anchor_that_is_not_one_is_damaged(tmp_path: pathlib.Path, body: bytes) -> None:
    """Too large, empty batch id, a non-boolean flag, missing fields, not UTF-8: refused."""
    journal = tmp_path / "run.sqlite"
    anchor_path(journal).write_bytes(body)
    with pytest.raises(ka.JournalError, match="damaged"):
        read_anchor(journal)


def test_an_unreadable_anchor_is_a_journal_error(tmp_path: pathlib.Path) -> None:
    """An anchor path that cannot be read (here a folder) is a JournalError."""
    journal = tmp_path / "run.sqlite"
    anchor_path(journal).mkdir()
    with pytest.raises(ka.JournalError, match="cannot read the batch anchor"):
        read_anchor(journal)


async def test_a_journal_without_its_batch_row_is_lost(tmp_path: pathlib.Path) -> None:
    """The batch row gone while the anchor stays: JournalLost unless opened to recover."""
    journal = tmp_path / "run.sqlite"
    async with SqliteJournal.open(journal, batch_id="b1"):
        pass
    await anyio.to_thread.run_sync(_sql, journal, "DELETE FROM batch")
    with pytest.raises(JournalLost, match="holds no batch"):
        async with SqliteJournal.open(journal):
            pass
    async with SqliteJournal.open(journal, recover=True) as recovered:
        assert (recovered.batch_id, recovered.recovering) == ("b1", True)
    async with SqliteJournal.open(journal) as reopened:  # recovered: whole again
        assert (reopened.batch_id, reopened.recovering) == ("b1", False)


async def test_without_an_anchor_the_journal_batch_id_still_rules(tmp_path: pathlib.Path) -> None:
    """An older journal with no anchor: another batch id is refused; opening writes the anchor."""
    journal = tmp_path / "run.sqlite"
    async with SqliteJournal.open(journal, batch_id="old"):
        pass
    await anyio.Path(anchor_path(journal)).unlink()
    with pytest.raises(ka.JournalConflict, match="belongs to batch 'old'"):
        async with SqliteJournal.open(journal, batch_id="new"):
            pass
    async with SqliteJournal.open(journal):
        pass
    anchor = await anyio.to_thread.run_sync(read_anchor, journal)
    assert anchor is not None
    assert anchor.batch_id == "old"


def _sql(path: pathlib.Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(statement)


async def test_pending_rows_of_a_lost_journal_are_looked_up_first(tmp_path: pathlib.Path) -> None:
    """After a lost -wal, PENDING rows may hide sent creates: each is looked up, then created."""
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    async with SqliteJournal.open(journal, batch_id="p") as opened:
        bridge = JournalBatchStore(opened)
        for key, request in jobs(3):
            await bridge.pending(key, request.kind, request, key)
    # as if the session had died with its -wal file gone
    await anyio.to_thread.run_sync(write_anchor, journal, new_anchor("p"))
    async with Simulator(SimulatorConfig(time_scale=SCALE, seed=12)) as sim:
        outcomes = await _run(sim, journal, out, n=3)
        stats = sim.statistics()
    assert all(o.ok and o.files for o in outcomes)
    assert stats.tasks_created == 3
    assert stats.requests_to("video.query", 404) >= 3  # looked up, found absent, then created


def test_results_that_name_no_task_are_no_earlier_run(tmp_path: pathlib.Path) -> None:
    """Only results naming a server task count as an earlier run; rows refused before any
    create (--skip-invalid) or a missing folder do not."""
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    refuse_orphan_results(journal, out)  # no folder yet
    out.mkdir()
    results = out / "results.jsonl"
    results.write_text('{"key": "a", "status": "invalid", "task_id": null}\nnot json\n')
    refuse_orphan_results(journal, out)
    results.write_text('{"key": "a", "status": "failed", "task_id": "t-1"}\n')
    with pytest.raises(ka.JournalError, match=r"results\.jsonl"):
        refuse_orphan_results(journal, out)
    anchor_path(journal).write_text("{}")  # an anchor (even damaged) is the journal's business
    refuse_orphan_results(journal, out)
