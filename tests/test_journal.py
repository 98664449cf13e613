"""The job journal: same-key rules, state changes, reopen, group commit, errors."""

import asyncio
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import (
    DownloadError,
    ErrorRecord,
    FileRecord,
    JobRecord,
    JobState,
    JobStore,
    JournalConflict,
    JournalError,
    MemoryStore,
    ResumePlan,
    SqliteJournal,
    TaskFailed,
)
from kling_async._durable.records import fingerprint

RECORD = {"prompt": "two friends", "images": ["/in/a.png", "/in/b.png"], "duration": "5"}
PRINT = fingerprint(RECORD)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Each store kind, open for the test."""
    if request.param == "memory":
        async with MemoryStore(batch_id="b1") as memory:
            yield memory
    else:
        async with SqliteJournal.open(tmp_path / "run.sqlite", batch_id="b1") as journal:
            yield journal


def test_fingerprint_is_canonical() -> None:
    """The fingerprint ignores key order and whitespace but not values."""
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(PRINT) == 64


async def test_both_stores_satisfy_the_protocol(store: JobStore) -> None:
    """SqliteJournal and MemoryStore are JobStores with the batch id they were given."""
    assert isinstance(store, JobStore)
    assert store.batch_id == "b1"
    assert store.options == {}


async def test_add_same_key_same_request_is_a_no_op(store: JobStore) -> None:
    """Adding a key again with the same fingerprint returns the existing row, unchanged."""
    assert await store.add("k1", "video", PRINT, RECORD) is None
    await store.mark_submitting("k1", "b1-k1")
    existing = await store.add("k1", "video", PRINT, RECORD)
    assert existing is not None
    assert existing.state is JobState.SUBMITTING
    assert existing.record == RECORD
    assert store.statistics().jobs == 1


async def test_add_same_key_other_request_names_the_key(store: JobStore) -> None:
    """Adding a key again with another request raises JournalConflict naming the key."""
    await store.add("job/7", "video", PRINT, RECORD)
    other = {**RECORD, "prompt": "changed"}
    with pytest.raises(JournalConflict, match="job/7") as caught:
        await store.add("job/7", "video", fingerprint(other), other)
    assert caught.value.key == "job/7"
    assert isinstance(caught.value, ValueError)


async def test_full_life_is_recorded(store: JobStore) -> None:
    """Every field written along PENDING -> DOWNLOADED is read back."""
    await store.add("k", "image", PRINT, RECORD)
    row = await store.mark_submitting("k", "b1-k")
    assert (row.state, row.attempts, row.external_id) == (JobState.SUBMITTING, 1, "b1-k")
    row = await store.mark_submitting("k", "b1-k")
    assert row.attempts == 2
    row = await store.mark_submitted("k", "8000001")
    assert row.submitted_at is not None
    result = {"task_id": "8000001", "task_result": {"images": [{"index": 0, "url": "u"}]}}
    row = await store.mark_terminal("k", JobState.SUCCEEDED, result=result)
    assert row.finished_at is not None
    files = [FileRecord(path="/out/k.png", sha256="ab" * 32, size=10, url="u")]
    await store.mark_downloaded("k", files)
    got = await store.get("k")
    assert got is not None
    assert got.state is JobState.DOWNLOADED
    assert got.state.is_final
    assert got.task_id == "8000001"
    assert got.result == result
    assert got.files == tuple(files)
    assert got.kind == "image"
    assert got.created_at <= got.updated_at
    assert await store.get("missing") is None


async def test_terminal_takes_the_task_id_from_the_result(store: JobStore) -> None:
    """A job adopted straight to SUCCEEDED keeps the task id found in its result."""
    await store.add("k", "video", PRINT, RECORD)
    await store.mark_submitting("k", "b1-k")
    row = await store.mark_terminal("k", JobState.SUCCEEDED, result={"task_id": "9"})
    assert row.task_id == "9"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((), JobState.SUBMITTED),
        ((), JobState.DOWNLOADED),
        ((JobState.SUBMITTING, JobState.SUBMITTED), JobState.SUBMITTING),
        ((JobState.SUBMITTING, JobState.SUBMITTED, JobState.FAILED), JobState.SUCCEEDED),
    ],
)
async def test_illegal_state_changes_raise(
    store: JobStore, path: tuple[JobState, ...], bad: JobState
) -> None:
    """A state change the life of a job does not allow raises JournalError, row unchanged."""
    await store.add("k", "video", PRINT, RECORD)
    for state in path:
        await _move(store, "k", state)
    with pytest.raises(JournalError, match="illegal state change"):
        await _move(store, "k", bad)
    row = await store.get("k")
    assert row is not None
    assert row.state is (path[-1] if path else JobState.PENDING)


async def test_unknown_key_and_non_end_state_raise(store: JobStore) -> None:
    """Marking an unknown key raises KeyError; mark_terminal refuses a non-end state."""
    with pytest.raises(KeyError):
        await store.mark_submitted("nope", "1")
    await store.add("k", "video", PRINT, RECORD)
    with pytest.raises(ValueError, match="not an end state"):
        await store.mark_terminal("k", JobState.SUBMITTED)


async def test_download_failure_keeps_succeeded_with_url_and_expiry(store: JobStore) -> None:
    """A failed download leaves the job SUCCEEDED with the URL and expiry for a later resume."""
    await store.add("k", "video", PRINT, RECORD)
    await store.mark_submitting("k", "e")
    await store.mark_submitted("k", "1")
    await store.mark_terminal("k", JobState.SUCCEEDED, result={"task_id": "1"})
    exc = DownloadError("gone", url="https://cdn/x.mp4", http_status=404, expires_at=1.5e9)
    row = await store.mark_download_failed("k", ErrorRecord.from_exception(exc))
    assert row.state is JobState.SUCCEEDED
    assert row.error == ErrorRecord(
        type="DownloadError",
        message="gone",
        http_status=404,
        url="https://cdn/x.mp4",
        expires_at=1.5e9,
    )
    plan = await store.resume()
    assert [r.key for r in plan.succeeded] == ["k"]
    await store.mark_downloaded("k", [])
    got = await store.get("k")
    assert got is not None
    assert got.error is None


async def test_download_failure_needs_succeeded(store: JobStore) -> None:
    """Recording a download failure on a job that did not succeed raises JournalError."""
    await store.add("k", "video", PRINT, RECORD)
    with pytest.raises(JournalError, match="needs SUCCEEDED"):
        await store.mark_download_failed("k", ErrorRecord(type="X", message="m"))


async def test_resume_groups_rows_by_what_resume_does(store: JobStore) -> None:
    """resume() puts each state in its group, in the order the jobs were added."""
    targets = {
        "p": JobState.PENDING,
        "stop": JobState.STOPPED,
        "sing": JobState.SUBMITTING,
        "sted": JobState.SUBMITTED,
        "ok": JobState.SUCCEEDED,
        "dl": JobState.DOWNLOADED,
        "bad": JobState.FAILED,
        "late": JobState.TIMED_OUT,
    }
    for key, state in targets.items():
        await store.add(key, "video", PRINT, RECORD)
        for step in _path_to(state):
            await _move(store, key, step)
    plan = await store.resume()
    assert [r.key for r in plan.pending] == ["p", "stop"]
    assert [r.key for r in plan.submitting] == ["sing"]
    assert [r.key for r in plan.submitted] == ["sted"]
    assert [r.key for r in plan.succeeded] == ["ok"]
    assert [r.key for r in plan.finished] == ["dl", "bad", "late"]
    assert len(plan) == len(targets)
    stats = store.statistics()
    assert stats.jobs == len(targets)
    assert all(stats.states[state] == 1 for state in targets.values())


async def test_stopped_jobs_can_be_sent_on_resume(store: JobStore) -> None:
    """A STOPPED job resumes as pending if never sent, else is reconciled by external id."""
    await store.add("k", "video", PRINT, RECORD)
    await store.mark_terminal("k", JobState.STOPPED)
    await store.add("sent", "video", PRINT, RECORD)
    await store.mark_submitting("sent", "e")
    await store.mark_terminal("sent", JobState.STOPPED)
    plan = await store.resume()
    assert [r.key for r in plan.pending] == ["k"]
    assert [r.key for r in plan.submitting] == ["sent"]
    row = await store.mark_submitting("k", "e")
    assert row.state is JobState.SUBMITTING


async def test_timed_out_job_may_still_end(store: JobStore) -> None:
    """A TIMED_OUT job polled further may still be recorded as SUCCEEDED."""
    await store.add("k", "video", PRINT, RECORD)
    for step in _path_to(JobState.TIMED_OUT):
        await _move(store, "k", step)
    row = await store.mark_terminal("k", JobState.SUCCEEDED, result={"task_id": "1"})
    assert row.state is JobState.SUCCEEDED


async def test_memory_store_makes_a_batch_id() -> None:
    """A MemoryStore without a batch id makes a fresh short one and keeps options."""
    async with MemoryStore(options={"out_dir": "x"}) as a, MemoryStore() as b:
        assert a.batch_id != b.batch_id
        assert len(a.batch_id) == 16
        assert a.options == {"out_dir": "x"}
        await a.flush()
        assert a.statistics().commits == 0


async def test_reopen_keeps_rows_batch_id_and_options(tmp_path: Path) -> None:
    """Closing and reopening a journal gives back its rows, batch id and options."""
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path, options={"out_dir": "out", "n": 2}) as journal:
        assert journal.created
        batch_id = journal.batch_id
        assert journal.path == str(path)
        await journal.add("a", "video", PRINT, RECORD)
        await journal.add("b", "image", PRINT, RECORD)
        await journal.mark_submitting("b", "x-b")
    async with SqliteJournal.open(path) as journal:
        assert not journal.created
        assert journal.batch_id == batch_id
        assert journal.options == {"out_dir": "out", "n": 2}
        assert journal.statistics().states[JobState.SUBMITTING] == 1
        plan = await journal.resume()
        assert [r.key for r in plan.pending] == ["a"]
        assert [r.key for r in plan.submitting] == ["b"]
        await journal.add("c", "video", PRINT, RECORD)
        plan = await journal.resume()
        assert [r.key for r in plan.pending] == ["a", "c"]
    async with SqliteJournal.open(path, batch_id=batch_id) as journal:
        assert journal.statistics().jobs == 3


async def test_reopen_with_another_batch_id_is_refused(tmp_path: Path) -> None:
    """Opening a journal with a batch id other than its own raises JournalConflict."""
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path, batch_id="first"):
        pass
    with pytest.raises(JournalConflict, match="first"):
        async with SqliteJournal.open(path, batch_id="second"):
            pass


async def test_group_commit_many_concurrent_writes_are_all_durable(tmp_path: Path) -> None:
    """Concurrent writers share commits, and each write is visible to another reader on return."""
    path = tmp_path / "run.sqlite"
    n = 400
    async with SqliteJournal.open(path, synchronous="NORMAL") as journal:

        async def job(i: int) -> None:
            key = f"k{i}"
            await journal.add(key, "video", PRINT, RECORD)
            await journal.mark_submitting(key, f"e{i}")
            # the create would be sent now: the row must already be on disk
            assert await anyio.to_thread.run_sync(_state_on_disk, path, key) == "SUBMITTING"

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(job(i))
        stats = journal.statistics()
        assert stats.writes == 2 * n
        assert stats.commits < stats.writes / 4
        assert stats.largest_group > 10
        assert stats.queued == 0


async def test_lazy_adds_share_commits_and_a_durable_write_commits_them(tmp_path: Path) -> None:
    """Adds with durable=False, one after another, take a few commits, not one each.

    Each still answers the same-key check in order, and a later durable write returns only
    once the lazy rows before it are on disk too (the guard of the create still holds).
    """
    path = tmp_path / "run.sqlite"
    n = 500
    async with SqliteJournal.open(path) as journal:
        before = journal.statistics().commits
        for i in range(n):
            assert await journal.add(f"k{i}", "video", PRINT, RECORD, durable=False) is None
        # the same-key rules are answered at once, in order with the adds before
        existing = await journal.add("k7", "video", PRINT, RECORD, durable=False)
        assert existing is not None
        assert existing.state is JobState.PENDING
        with pytest.raises(JournalConflict, match="k7"):
            await journal.add("k7", "video", "0" * 64, RECORD, durable=False)
        await journal.mark_submitting("k0", "e0")
        # the durable write committed every lazy row queued before it
        on_disk = await anyio.to_thread.run_sync(_states_on_disk, path)
        assert len(on_disk) == n
        assert on_disk["k0"] == "SUBMITTING"
        assert on_disk[f"k{n - 1}"] == "PENDING"
        stats = journal.statistics()
        assert stats.commits - before < n / 10, stats
        assert stats.largest_group > 10
        assert stats.queued == 0

        # concurrent lazy adds share commits as well
        before = journal.statistics().commits
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(journal.add(f"c{i}", "video", PRINT, RECORD, durable=False))
        await journal.flush()
        assert journal.statistics().commits - before < n / 10
        assert len(await anyio.to_thread.run_sync(_states_on_disk, path)) == 2 * n


async def test_durable_adds_each_wait_for_a_commit(tmp_path: Path) -> None:
    """The default add returns once committed: one after another, one commit each."""
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path) as journal:
        before = journal.statistics().commits
        for i in range(20):
            await journal.add(f"k{i}", "video", PRINT, RECORD)
            assert await anyio.to_thread.run_sync(_state_on_disk, path, f"k{i}") == "PENDING"
        assert journal.statistics().commits - before == 20


async def test_lazy_adds_are_committed_without_a_durable_write(tmp_path: Path) -> None:
    """A lazy add left alone is committed after a short delay, and by the close."""
    path = tmp_path / "run.sqlite"
    async with SqliteJournal.open(path) as journal:
        await journal.add("a", "video", PRINT, RECORD, durable=False)
        for _ in range(500):  # committed within _LAZY_COMMIT_DELAY; 5 s for a slow machine
            if await anyio.to_thread.run_sync(_state_on_disk, path, "a") is not None:
                break
            await anyio.sleep(0.01)
        assert await anyio.to_thread.run_sync(_state_on_disk, path, "a") == "PENDING"
        await journal.add("b", "video", PRINT, RECORD, durable=False)
    assert await anyio.to_thread.run_sync(_state_on_disk, path, "b") == "PENDING"


async def test_a_rolled_back_lazy_add_breaks_the_journal(tmp_path: Path) -> None:
    """A lazy add answered, then lost in a rollback, stops the journal instead of lying."""
    async with SqliteJournal.open(tmp_path / "run.sqlite") as journal:
        await journal.add("a", "video", PRINT, RECORD, durable=False)

        def fail(conn: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(JournalError, match="disk I/O error"):
            await journal._call(fail)
        with pytest.raises(JournalError, match="disk I/O error"):
            await journal.mark_submitting("a", "e")


async def test_a_failed_durable_write_alone_does_not_break_the_journal(tmp_path: Path) -> None:
    """A failed transaction without lazy rows answered only fails its own callers."""
    async with SqliteJournal.open(tmp_path / "run.sqlite") as journal:
        await journal.add("a", "video", PRINT, RECORD)

        def fail(conn: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(JournalError, match="disk I/O error"):
            await journal._call(fail)
        row = await journal.mark_submitting("a", "e")
        assert row.state is JobState.SUBMITTING


async def test_a_cancelled_writer_still_gets_its_write(tmp_path: Path) -> None:
    """Cancelling a caller waiting for its commit does not undo or corrupt the write."""
    async with SqliteJournal.open(tmp_path / "j.sqlite") as journal:
        await journal.add("k", "video", PRINT, RECORD)
        waiter = asyncio.ensure_future(journal.mark_submitting("k", "e"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await journal.flush()
        row = await journal.get("k")
        assert row is not None
        assert row.state is JobState.SUBMITTING


async def test_closed_journal_refuses_work(tmp_path: Path) -> None:
    """After aclose (idempotent), every operation raises JournalError."""
    async with SqliteJournal.open(tmp_path / "j.sqlite") as journal:
        pass
    await journal.aclose()
    with pytest.raises(JournalError, match="closed"):
        await journal.get("k")


async def test_not_a_database_raises_journal_error(tmp_path: Path) -> None:
    """A file that is not SQLite raises JournalError (no sqlite3 error leaks)."""
    path = tmp_path / "junk.sqlite"
    await anyio.Path(path).write_bytes(b"this is not a database file, not at all" * 100)
    with pytest.raises(JournalError, match=r"junk\.sqlite"):
        async with SqliteJournal.open(path):
            pass


async def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    """A journal written by another schema version raises JournalError."""
    path = tmp_path / "j.sqlite"
    async with SqliteJournal.open(path):
        pass
    await anyio.to_thread.run_sync(_sql, path, "UPDATE batch SET schema_version = 99")
    with pytest.raises(JournalError, match="schema 99"):
        async with SqliteJournal.open(path):
            pass


async def test_write_failure_fails_the_whole_group(tmp_path: Path) -> None:
    """A SQLite error during a commit reaches every caller of that group as JournalError."""
    path = tmp_path / "j.sqlite"
    async with SqliteJournal.open(path) as journal:
        await journal.add("k", "video", PRINT, RECORD)
        await anyio.to_thread.run_sync(_sql, path, "DROP TABLE jobs")
        with pytest.raises(JournalError, match="no such table"):
            await journal.mark_submitting("k", "e")


def test_synchronous_must_be_normal_or_full() -> None:
    """Only NORMAL and FULL are accepted for synchronous."""
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJournal("x.sqlite", synchronous="OFF")


def test_error_record_from_kling_error() -> None:
    """ErrorRecord keeps a KlingError's type, message and codes, and round-trips JSON."""
    record = ErrorRecord.from_exception(TaskFailed("bad prompt", code=1301, http_status=400))
    assert record == ErrorRecord(
        type="TaskFailed", message="bad prompt", code=1301, http_status=400
    )
    assert ErrorRecord.from_json({**record.to_json(), "future": 1}) == record
    plain = ErrorRecord.from_exception(OSError("disk"))
    assert (plain.type, plain.message, plain.code) == ("OSError", "disk", None)


def test_resume_plan_from_no_rows_is_empty() -> None:
    """An empty journal resumes to an empty plan."""
    assert len(ResumePlan.from_rows([])) == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.text(min_size=1, max_size=60),
    record=st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=4),
)
def test_any_key_and_record_round_trip(key: str, record: dict[str, object]) -> None:
    """Any text key and JSON record comes back from the journal exactly as written."""

    async def check(path: Path) -> JobRecord | None:
        async with MemoryStore() as memory:
            await memory.add(key, "video", fingerprint(record), record)
        async with SqliteJournal.open(path) as journal:
            await journal.add(key, "video", fingerprint(record), record)
        async with SqliteJournal.open(path) as journal:
            return await journal.get(key)

    with tempfile.TemporaryDirectory() as folder:
        row = asyncio.run(check(Path(folder) / "j.sqlite"))
    assert row is not None
    assert (row.key, row.record, row.fingerprint) == (key, record, fingerprint(record))


def _sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
    conn.close()


def _state_on_disk(path: Path, key: str) -> str | None:
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()
    conn.close()
    return None if found is None else str(found[0])


def _states_on_disk(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        found = dict(conn.execute("SELECT key, state FROM jobs").fetchall())
    conn.close()
    return found


def _path_to(state: JobState) -> tuple[JobState, ...]:
    if state is JobState.PENDING:
        return ()
    if state is JobState.STOPPED:
        return (JobState.STOPPED,)
    if state is JobState.SUBMITTING:
        return (JobState.SUBMITTING,)
    if state is JobState.DOWNLOADED:
        return (*_path_to(JobState.SUCCEEDED), JobState.DOWNLOADED)
    return (
        JobState.SUBMITTING,
        JobState.SUBMITTED,
        *(() if state is JobState.SUBMITTED else (state,)),
    )


async def _move(store: JobStore, key: str, state: JobState) -> None:
    if state is JobState.SUBMITTING:
        await store.mark_submitting(key, f"x-{key}")
    elif state is JobState.SUBMITTED:
        await store.mark_submitted(key, f"t-{key}")
    elif state is JobState.DOWNLOADED:
        await store.mark_downloaded(key, [])
    else:
        await store.mark_terminal(key, state)


async def test_aclose_commits_what_is_queued(tmp_path: Path) -> None:
    """Writes queued when the journal closes are committed, and their callers told so."""
    path = tmp_path / "j.sqlite"
    async with SqliteJournal.open(path) as journal:
        writers = [
            asyncio.ensure_future(journal.add(f"k{i}", "video", PRINT, RECORD)) for i in range(50)
        ]
        await asyncio.sleep(0)
    assert [await w for w in writers] == [None] * 50
    async with SqliteJournal.open(path) as journal:
        assert journal.statistics().jobs == 50


async def test_a_journal_needs_wal(tmp_path: Path) -> None:
    """A database that cannot use WAL (in memory) is refused with JournalError."""
    with pytest.raises(JournalError, match="WAL"):
        async with SqliteJournal.open(":memory:"):
            pass


async def test_one_journal_serves_one_run(tmp_path: Path) -> None:
    """A journal already open (here or in another process) cannot be opened again."""
    path = tmp_path / "j.sqlite"
    async with SqliteJournal.open(path):
        with pytest.raises(JournalError, match="in use by another run"):
            async with SqliteJournal.open(path):
                pass
    async with SqliteJournal.open(path) as journal:
        assert not journal.created


async def test_a_broken_writer_fails_callers_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the writer thread itself fails, waiting and later callers get JournalError."""
    async with SqliteJournal.open(tmp_path / "j.sqlite") as journal:

        def explode(conn: object, group: object) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(journal, "_commit_group", explode)
        with pytest.raises(JournalError, match="writer thread failed"):
            await journal.add("k", "video", PRINT, RECORD)
        with pytest.raises(JournalError, match="writer thread failed"):
            await journal.get("k")


async def test_memory_store_can_drop_records() -> None:
    """keep_records=False keeps rows small but still enforces the same-key rules."""
    async with MemoryStore(keep_records=False) as memory:
        await memory.add("k", "video", PRINT, RECORD)
        row = await memory.get("k")
        assert row is not None
        assert row.record == {}
        assert await memory.add("k", "video", PRINT, RECORD) is not None
        with pytest.raises(JournalConflict):
            await memory.add("k", "video", "0" * 64, RECORD)


async def test_readonly_open_reads_a_journal_in_use(tmp_path: Path) -> None:
    """A read-only open works beside the writing run, sees its commits, and cannot write."""
    path = tmp_path / "j.sqlite"
    async with SqliteJournal.open(path, batch_id="b", options={"o": 1}) as journal:
        await journal.add("k", "video", PRINT, RECORD)
        async with SqliteJournal.open(path, readonly=True) as reader:
            assert (reader.batch_id, reader.options) == ("b", {"o": 1})
            plan = await reader.resume()
            assert [r.key for r in plan.pending] == ["k"]
            with pytest.raises(JournalError, match="readonly"):
                await reader.add("x", "video", PRINT, RECORD)
            await journal.mark_submitting("k", "e")
            row = await reader.get("k")
            assert row is not None
            assert row.state is JobState.SUBMITTING


async def test_readonly_open_refuses_what_is_not_a_journal(tmp_path: Path) -> None:
    """A read-only open of a missing file or of another SQLite database raises JournalError."""
    with pytest.raises(JournalError):
        async with SqliteJournal.open(tmp_path / "missing.sqlite", readonly=True):
            pass
    other = tmp_path / "other.sqlite"
    await anyio.to_thread.run_sync(_sql, other, "CREATE TABLE t (x)")
    with pytest.raises(JournalError):
        async with SqliteJournal.open(other, readonly=True):
            pass
    empty = tmp_path / "empty.sqlite"
    async with SqliteJournal.open(empty):
        pass
    await anyio.to_thread.run_sync(_sql, empty, "DELETE FROM batch")
    with pytest.raises(JournalError, match=r"not a journal|holds no batch"):
        async with SqliteJournal.open(empty, readonly=True):
            pass
