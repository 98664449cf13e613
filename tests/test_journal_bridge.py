"""The engine's store seam written through the journal, and outcomes read back from rows."""

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import attrs
import pytest

from kling_async import (
    Downloader,
    DownloadError,
    ErrorRecord,
    FileRecord,
    GeneratedImage,
    Image,
    InvalidRequest,
    JobState,
    JournalConflict,
    Kind,
    KlingError,
    MultiImageToVideo,
    Outcome,
    ResultExpired,
    Scope,
    SqliteJournal,
    Task,
    TaskFailed,
)
from kling_async._api.wire import request_from_record, request_to_record
from kling_async._core.models import TaskStatus
from kling_async._durable.bridge import (
    JournalBatchStore,
    download_outcome,
    error_from_record,
    outcome_from_row,
    resume_work,
)
from kling_async._engine._outcome import JobStatus
from tests._download_helpers import Served, file_server

REQUEST = MultiImageToVideo(
    images=(Image.from_url("https://img/a.png"), Image.from_path("/data/in/b.png")),
    prompt="two friends",
)
TASK = Task(
    task_id="8000000000000000001",
    status=TaskStatus.SUCCEEDED,
    external_task_id="b-k",
    images=(GeneratedImage(index=0, url="https://cdn/r0.png"),),
    created_at=1_700_000_000_000,
    updated_at=1_700_000_060_000,
)


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[JournalBatchStore]:
    """A bridge over a real journal."""
    async with SqliteJournal.open(tmp_path / "j.sqlite", batch_id="b") as journal:
        yield JournalBatchStore(journal)


async def test_pending_stores_a_rebuildable_request(bridge: JournalBatchStore) -> None:
    """The row of a new job holds a record that rebuilds the same request; repeats are no-ops."""
    assert await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k") is None
    row = await bridge.store.get("k")
    assert row is not None
    assert (row.kind, row.state) == ("video", JobState.PENDING)
    assert request_from_record(row.record) == REQUEST
    again = await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k")
    assert again is not None
    other = MultiImageToVideo(images=REQUEST.images, prompt="other")
    with pytest.raises(JournalConflict, match="'k'"):
        await bridge.pending("k", Kind.VIDEO, other, "b-k")


async def test_success_round_trips_to_the_same_outcome(bridge: JournalBatchStore) -> None:
    """A SUCCEEDED outcome written by the engine reads back with its task and files."""
    await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k")
    await bridge.submitting("k", "b-k")
    await bridge.submitted("k", TASK.task_id)
    outcome = Outcome(key="k", kind=Kind.VIDEO, status=JobStatus.SUCCEEDED, task=TASK)
    await bridge.finished(outcome)
    row = await bridge.store.get("k")
    assert row is not None
    back = outcome_from_row(row)
    assert (back.status, back.task, back.error, back.attempts) == (
        JobStatus.SUCCEEDED,
        TASK,
        None,
        1,
    )
    assert back.files == ()
    await bridge.download_failed("k", ResultExpired("gone", url="https://cdn/r0.png"))
    row = await bridge.store.get("k")
    assert row is not None
    assert row.error is not None
    assert outcome_from_row(row).error is None
    files = [FileRecord(path="/out/k-0.png", sha256="a" * 64, size=3)]
    await bridge.downloaded("k", files)
    row = await bridge.store.get("k")
    assert row is not None
    assert outcome_from_row(row).files == (Path("/out/k-0.png"),)


async def test_failure_round_trips_with_its_error(bridge: JournalBatchStore) -> None:
    """A FAILED outcome reads back with the same error class, message, code and key."""
    await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k")
    await bridge.submitting("k", "b-k")
    await bridge.submitted("k", "1")
    failed = Task(task_id="1", status=TaskStatus.FAILED, status_message="nsfw")
    error = TaskFailed("nsfw", task_id="1", code=1301)
    await bridge.finished(
        Outcome(key="k", kind=Kind.VIDEO, status=JobStatus.FAILED, task=failed, error=error)
    )
    row = await bridge.store.get("k")
    assert row is not None
    back = outcome_from_row(row)
    assert back.status is JobStatus.FAILED
    assert back.task == failed
    assert isinstance(back.error, TaskFailed)
    assert (back.error.message, back.error.code, back.error.job_key) == ("nsfw", 1301, "k")
    assert back.error.task_id == "1"


def test_error_from_record_handles_odd_classes() -> None:
    """Unknown types become KlingError; classes with other constructors are rebuilt too."""
    unknown = error_from_record(ErrorRecord(type="OSError", message="disk"), key="k", task_id=None)
    assert type(unknown) is KlingError
    assert unknown.scope is Scope.JOB
    invalid = error_from_record(
        ErrorRecord(type="InvalidRequest", message="x: y"), key="k", task_id=None
    )
    assert isinstance(invalid, InvalidRequest)
    assert str(invalid) == "x: y [job='k']"
    gone = error_from_record(
        ErrorRecord(type="ResultExpired", message="gone", url="u", expires_at=5.0),
        key="k",
        task_id="1",
    )
    assert isinstance(gone, DownloadError)
    assert (gone.url, gone.expires_at) == ("u", 5.0)


async def test_rows_that_have_not_ended_have_no_outcome(bridge: JournalBatchStore) -> None:
    """outcome_from_row refuses PENDING, SUBMITTING and SUBMITTED rows."""
    await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k")
    row = await bridge.store.get("k")
    assert row is not None
    with pytest.raises(ValueError, match="has not ended"):
        outcome_from_row(row)


async def test_stopped_outcome_is_recorded_for_resume(bridge: JournalBatchStore) -> None:
    """A STOPPED outcome is written as STOPPED and resumes as pending."""
    await bridge.pending("k", Kind.VIDEO, REQUEST, "b-k")
    await bridge.finished(
        Outcome(
            key="k",
            kind=Kind.VIDEO,
            status=JobStatus.STOPPED,
            error=KlingError("left", scope=Scope.BATCH),
        )
    )
    plan = await bridge.store.resume()
    assert [r.key for r in plan.pending] == ["k"]
    assert outcome_from_row(plan.pending[0]).status is JobStatus.STOPPED


async def test_resume_work_rebuilds_what_each_group_needs(bridge: JournalBatchStore) -> None:
    """Each journal state becomes the right work: outcomes, downloads, polls, lookups, sends."""
    store = bridge.store
    for key in ("done", "ok", "run", "sending", "new", "bad", "junk"):
        await bridge.pending(key, Kind.VIDEO, REQUEST, f"b-{key}")
    for key in ("done", "ok", "run", "sending"):
        await bridge.submitting(key, f"b-{key}")
    for key in ("done", "ok", "run"):
        await bridge.submitted(key, f"t-{key}")
    for key in ("done", "ok"):
        await bridge.finished(
            Outcome(
                key=key,
                kind=Kind.VIDEO,
                status=JobStatus.SUCCEEDED,
                task=attrs.evolve(TASK, task_id=f"t-{key}"),
            )
        )
    await bridge.downloaded("done", [FileRecord(path="/o/done-0.png", sha256="0" * 64, size=1)])
    # rows whose record no longer builds a request (edited, or from another version)
    journal = store
    assert isinstance(journal, SqliteJournal)
    bad: dict[str, object] = {"kind": "video"}
    await anyio.to_thread.run_sync(_edit_record, Path(journal.path), "bad", bad)
    record: dict[str, object] = {**request_to_record(REQUEST), "prompt": "x" * 3000}
    await anyio.to_thread.run_sync(_edit_record, Path(journal.path), "junk", record)

    work = resume_work(await store.resume())
    assert [o.key for o in work.outcomes] == ["done", "ok"]
    assert [(row.key, urls) for row, urls in work.downloads] == [("ok", ("https://cdn/r0.png",))]
    assert [(j.row.key, j.row.task_id, j.kind) for j in work.poll] == [("run", "t-run", Kind.VIDEO)]
    assert [(j.row.key, j.row.external_id) for j in work.reconcile] == [("sending", "b-sending")]
    assert [j.row.key for j in work.submit] == ["new"]
    assert work.submit[0].request == REQUEST
    assert sorted(row.key for row, _ in work.broken) == ["bad", "junk"]
    assert all(isinstance(error, InvalidRequest) for _, error in work.broken)


async def test_download_outcome_records_files_or_the_failure(
    bridge: JournalBatchStore, tmp_path: Path
) -> None:
    """A succeeded job's files are saved and recorded; a gone URL leaves it SUCCEEDED with why."""
    async with file_server() as server:
        server.files["/r0.png"] = Served(b"PNGDATA")
        good = attrs.evolve(TASK, images=(GeneratedImage(index=0, url=server.link("/r0.png")),))
        gone = attrs.evolve(TASK, images=(GeneratedImage(index=0, url=server.link("/none")),))
        async with Downloader(tmp_path / "out", check_media=False) as downloader:
            for key, task in (("good", good), ("gone", gone)):
                await bridge.pending(key, Kind.IMAGE, REQUEST, key)
                await bridge.submitting(key, key)
                await bridge.submitted(key, task.task_id)
                outcome = Outcome(key=key, kind=Kind.IMAGE, status=JobStatus.SUCCEEDED, task=task)
                await bridge.finished(outcome)
                done = await download_outcome(downloader, bridge, outcome)
                if key == "good":
                    assert done.files == (tmp_path / "out" / "good.png",)
                    assert done.error is None
                else:
                    assert done.files == ()
                    assert isinstance(done.error, ResultExpired)
            failed = Outcome(key="f", kind=Kind.IMAGE, status=JobStatus.FAILED)
            assert await download_outcome(downloader, bridge, failed) is failed
    good_row = await bridge.store.get("good")
    gone_row = await bridge.store.get("gone")
    assert good_row is not None
    assert gone_row is not None
    assert good_row.state is JobState.DOWNLOADED
    assert good_row.files[0].size == 7
    assert gone_row.state is JobState.SUCCEEDED
    assert gone_row.error is not None
    assert gone_row.error.url == server.link("/none")
    assert gone_row.error.type == "ResultExpired"


def _edit_record(path: Path, key: str, record: dict[str, object]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE jobs SET record = ? WHERE key = ?", (json.dumps(record), key))
    conn.close()
