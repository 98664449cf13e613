"""The PostgreSQL journal: the store protocol, group commit, leases, claims and bad states."""

import asyncio
import collections
from pathlib import Path

import psycopg
import pytest

from kling_async._api.wire import request_to_record, task_to_wire
from kling_async._durable.postgres import PostgresJournal
from kling_async._durable.postgres_db import SCHEMA_VERSION, describe_url, split_url
from kling_async._durable.records import (
    ErrorRecord,
    FileRecord,
    JobState,
    JournalConflict,
    JournalError,
    fingerprint,
)
from kling_async._durable.store import JobStore
from kling_async._engine import JobStatus
from kling_async.simulator import LogNormal, Simulator, SimulatorConfig
from tests._journal_batch_child import SCALE, client_for, request_for


def _rec(i: int) -> dict[str, object]:
    return {"prompt": f"job {i}"}


async def test_the_store_keeps_every_state_change_across_opens(fresh_database: str) -> None:
    """A row written through every mark_* reads back the same after the journal is reopened."""
    async with PostgresJournal.open(fresh_database, batch_id="b1") as journal:
        assert isinstance(journal, JobStore)
        assert journal.created
        assert await journal.add("a", "video", fingerprint(_rec(1)), _rec(1), durable=False) is None
        await journal.add("b", "image", fingerprint(_rec(2)), _rec(2))
        await journal.mark_submitting("a", "ext-a")
        await journal.mark_submitted("a", "task-a")
        await journal.mark_terminal("a", JobState.SUCCEEDED, result={"task_id": "task-a"})
        await journal.mark_downloaded("a", [FileRecord(path="/x/a.mp4", sha256="00", size=3)])
        await journal.mark_submitting("b", "ext-b")
        await journal.mark_terminal(
            "b", JobState.FAILED, error=ErrorRecord(type="TaskFailed", message="no")
        )
        again = await journal.add("a", "video", fingerprint(_rec(1)), _rec(1))
        assert again is not None
        assert again.state is JobState.DOWNLOADED
        with pytest.raises(JournalConflict):
            await journal.add("a", "video", fingerprint(_rec(9)), _rec(9))
        assert journal.statistics().states[JobState.DOWNLOADED] == 1
    async with PostgresJournal.open(fresh_database, batch_id="b1", must_exist=True) as journal:
        assert not journal.created
        a = await journal.get("a")
        assert a is not None
        assert a.files[0].path == "/x/a.mp4"
        assert a.external_id == "ext-a"
        assert a.task_id == "task-a"
        assert a.attempts == 1
        b = await journal.get("b")
        assert b is not None
        assert b.error == ErrorRecord(type="TaskFailed", message="no")
        plan = await journal.resume()
        assert [row.key for row in plan.finished] == ["a", "b"]
        assert await journal.get("zzz") is None
        with pytest.raises(KeyError):
            await journal.mark_submitted("zzz", "t")


async def test_concurrent_changes_share_commits(fresh_database: str) -> None:
    """Two hundred concurrent SUBMITTING writes take far fewer commits than writes."""
    async with PostgresJournal.open(fresh_database) as journal:
        await journal.enqueue((f"k{i}", "video", fingerprint(_rec(i)), _rec(i)) for i in range(200))
        rows = await journal.claim(200)
        assert len(rows) == 200
        before = journal.statistics().commits
        await asyncio.gather(*(journal.mark_submitting(f"k{i}", f"e{i}") for i in range(200)))
        commits = journal.statistics().commits - before
    assert commits < 50


async def test_enqueue_refuses_a_changed_request_and_adds_nothing(fresh_database: str) -> None:
    """A second job file with a different request for a known key raises JournalConflict."""
    async with PostgresJournal.open(fresh_database, batch_id="jobs") as journal:
        assert await journal.enqueue([("a", "video", "f1", _rec(1))]) == 1
        assert await journal.enqueue([("a", "video", "f1", _rec(1))]) == 0
        with pytest.raises(JournalConflict, match="different request"):
            await journal.enqueue([("b", "video", "f2", _rec(2)), ("a", "video", "fX", _rec(3))])
        counts = await journal.counts()
    assert counts[JobState.PENDING] == 1


async def test_a_wrong_schema_version_is_refused(fresh_database: str) -> None:
    """A database holding another schema version gives a JournalError naming both versions."""
    async with PostgresJournal.open(fresh_database):
        pass
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE kling_meta SET schema_version = 99")
    with pytest.raises(JournalError, match=f"schema 99.*schema {SCHEMA_VERSION}"):
        async with PostgresJournal.open(fresh_database):
            pass


async def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    """No server at the URL: JournalError names host and database, never the password."""
    url = "postgresql://me:s3cret@127.0.0.1:9/nowhere?connect_timeout=1"
    with pytest.raises(JournalError, match="cannot reach PostgreSQL") as info:
        async with PostgresJournal.open(url, retry_for=1.0):
            pass
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:9/nowhere" in str(info.value)


async def test_joining_a_batch_that_does_not_exist_is_refused(fresh_database: str) -> None:
    """A worker or resume naming an unknown batch id gets JournalConflict, not a new batch."""
    with pytest.raises(JournalConflict, match="no batch 'ghost'"):
        async with PostgresJournal.open(fresh_database, batch_id="ghost", must_exist=True):
            pass


async def test_a_read_only_journal_refuses_writes(fresh_database: str) -> None:
    """``readonly`` (status) reads rows and counts; any write raises JournalError."""
    async with PostgresJournal.open(fresh_database, batch_id="ro") as journal:
        await journal.add("a", "video", "f", _rec(1))
    async with PostgresJournal.open(fresh_database, batch_id="ro", readonly=True) as journal:
        assert (await journal.counts())[JobState.PENDING] == 1
        assert len(await journal.resume()) == 1
        assert await journal.get("a") is not None
        with pytest.raises(JournalError, match="read-only"):
            await journal.mark_submitting("a", "e")


async def test_a_dead_holder_loses_its_claims_and_cannot_send_afterwards(
    fresh_database: str,
) -> None:
    """Claims expire with the lease; the dead holder's next SUBMITTING is refused."""
    async with (
        PostgresJournal.open(fresh_database, batch_id="l", lease=1.0, holder="one") as first,
        PostgresJournal.open(fresh_database, batch_id="l", lease=1.0, holder="two") as second,
    ):
        await first.enqueue((f"k{i}", "video", "f", _rec(i)) for i in range(6))
        mine = await first.claim(4)
        assert [row.key for row in mine] == ["k0", "k1", "k2", "k3"]
        await first.mark_submitting("k0", "e0")
        await first.mark_submitted("k0", "t0")
        await first.mark_submitting("k1", "e1")
        assert [row.key for row in await second.claim(10)] == ["k4", "k5"]
        assert await second.unclaimed() == 4
        assert first._heart is not None
        first._heart.cancel()  # the first process "dies": no more heartbeats
        await asyncio.sleep(1.3)
        adopted = await second.claim(10)
        # running tasks first, then creates that may have been sent, then the rest
        assert [row.key for row in adopted] == ["k0", "k1", "k2", "k3"]
        with pytest.raises(JournalError, match="owned by"):
            await first.mark_submitting("k2", "e2")
        assert await second.unclaimed() == 0


async def test_one_batch_closing_leaves_the_rows_another_batch_of_its_process_holds(
    fresh_database: str,
) -> None:
    """Two journals of one process (one holder): closing one hands back only its own rows."""
    async with PostgresJournal.open(fresh_database, batch_id="p") as first:
        await first.enqueue((f"k{i}", "video", "f", _rec(i)) for i in range(6))
        assert [row.key for row in await first.claim(3)] == ["k0", "k1", "k2"]
        async with PostgresJournal.open(fresh_database, batch_id="p") as second:
            assert second.holder == first.holder
            assert [row.key for row in await second.claim(10)] == ["k3", "k4", "k5"]
        # the second's clean exit released k3..k5, never the first's k0..k2
        async with PostgresJournal.open(fresh_database, batch_id="p", holder="other") as third:
            assert [row.key for row in await third.claim(10)] == ["k3", "k4", "k5"]
            assert [row.key for row in await first.claim(10)] == []
        await first.mark_submitting("k0", "e0")  # still the first's: the fence lets it pass


async def test_lease_lapse_alone_fences_the_create(fresh_database: str) -> None:
    """A holder whose lease lapsed may not write SUBMITTING even if nobody claimed the row."""
    async with PostgresJournal.open(
        fresh_database, batch_id="f", lease=0.3, holder="fenced"
    ) as journal:
        await journal.add("a", "video", "f", _rec(1))
        assert journal._heart is not None
        journal._heart.cancel()
        await asyncio.sleep(0.5)
        with pytest.raises(JournalError, match="lease ran out"):
            await journal.mark_submitting("a", "e")


def test_url_settings_are_split_from_the_libpq_url() -> None:
    """``kling_lease``/``kling_prefetch`` leave the URL; other parameters stay; bad ones raise."""
    url, settings = split_url("postgresql://u:p@h/db?sslmode=disable&kling_lease=2.5")
    assert url == "postgresql://u:p@h/db?sslmode=disable"
    assert settings.lease == 2.5
    assert settings.prefetch is None
    assert split_url("postgresql://h/db?kling_prefetch=7")[1].prefetch == 7
    with pytest.raises(ValueError, match="unknown"):
        split_url("postgresql://h/db?kling_leese=1")
    with pytest.raises(ValueError, match="bad kling_"):
        split_url("postgresql://h/db?kling_lease=soon")
    with pytest.raises(ValueError, match="> 0"):
        split_url("postgresql://h/db?kling_lease=0")
    assert (
        describe_url("postgresql://u:pw@db.example:5433/prod")
        == "postgresql://db.example:5433/prod"
    )


def _sim() -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=SCALE,
        durations={"video": LogNormal(median=60, sigma=0.25), "image": LogNormal(median=15)},
        video_slots=20,
        image_slots=20,
        seed=3,
    )


async def test_a_batch_on_postgres_runs_and_resumes_like_sqlite(
    fresh_database: str, tmp_path: Path
) -> None:
    """client.batch(journal=postgresql://...) runs jobs to DOWNLOADED, one create each."""
    n = 30
    async with Simulator(_sim()) as sim, client_for(sim.url, sim.api_key) as client:
        async with client.batch(journal=fresh_database, out_dir=tmp_path / "out") as batch:
            await batch.feed((f"job-{i}", request_for(i)) for i in range(n))
            outcomes = [o async for o in batch]
            batch_id = batch.batch_id
        created = sim.statistics().tasks_created_per_external_id
    assert len(outcomes) == n
    assert all(o.status is JobStatus.SUCCEEDED and o.files for o in outcomes)
    assert set(created.values()) == {1}
    async with PostgresJournal.open(fresh_database, batch_id=batch_id, readonly=True) as journal:
        assert (await journal.counts())[JobState.DOWNLOADED] == n


async def test_two_workers_share_one_batch_and_each_job_ends_once(
    fresh_database: str,
) -> None:
    """Two batches joining one enqueued batch split its jobs; every job runs exactly once."""
    n = 60
    async with PostgresJournal.open(fresh_database, batch_id="shared") as journal:
        jobs = []
        for i in range(n):
            record = request_to_record(request_for(i))
            jobs.append((f"job-{i}", request_for(i).kind.value, fingerprint(record), record))
        await journal.enqueue(jobs)
    ends: collections.Counter[str] = collections.Counter()
    per_worker: list[int] = []

    async with Simulator(_sim()) as sim:

        async def worker() -> None:
            url = f"{fresh_database}&kling_prefetch=10"
            async with (
                client_for(sim.url, sim.api_key) as client,
                client.batch(journal=url, batch_id="shared") as batch,
            ):
                count = 0
                async for outcome in batch:
                    assert outcome.status is JobStatus.SUCCEEDED
                    ends[outcome.key] += 1
                    count += 1
                per_worker.append(count)

        await asyncio.gather(worker(), worker())
        created = sim.statistics().tasks_created_per_external_id
    assert len(ends) == n
    assert set(ends.values()) == {1}
    assert len(created) == n
    assert set(created.values()) == {1}
    assert all(count > 0 for count in per_worker)


def _cut(url: str, *, allow: bool) -> None:
    """Close every connection to the database of ``url``; refuse new ones unless ``allow``."""
    name = url.partition("?")[0].rsplit("/", 1)[1]
    admin = url.replace(f"/{name}", "/postgres", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if allow else 'false'}")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


async def test_a_dropped_connection_is_replaced_and_nothing_is_lost(fresh_database: str) -> None:
    """Connections killed by the server: the next writes reconnect and commit."""
    async with PostgresJournal.open(fresh_database, batch_id="drop") as journal:
        await journal.add("a", "video", "f", _rec(1))
        await asyncio.to_thread(_cut, fresh_database, allow=True)
        await journal.mark_submitting("a", "e")
        await journal.mark_submitted("a", "t")
        row = await journal.get("a")
    assert row is not None
    assert row.state is JobState.SUBMITTED


async def test_a_lost_server_breaks_the_journal_with_a_clear_error(fresh_database: str) -> None:
    """No connection for longer than the lease: every write raises 'lost the connection'."""
    try:
        async with PostgresJournal.open(
            fresh_database, batch_id="lost", lease=0.4, retry_for=0.4
        ) as journal:
            await journal.add("a", "video", "f", _rec(1))
            await asyncio.to_thread(_cut, fresh_database, allow=False)
            for _ in range(50):
                if journal.broken is not None:
                    break
                await asyncio.sleep(0.05)
            assert journal.broken is not None
            with pytest.raises(JournalError, match="lost the connection"):
                await journal.mark_submitting("a", "e")
    finally:
        await asyncio.to_thread(_cut, fresh_database, allow=True)


async def test_a_joining_batch_adopts_what_a_dead_worker_left_in_every_state(
    fresh_database: str, tmp_path: Path
) -> None:
    """Running tasks are polled, sent creates looked up, successes downloaded, bad rows failed."""
    from kling_async._engine import external_id_for  # noqa: PLC0415

    bid = "adopt"
    async with Simulator(_sim()) as sim, client_for(sim.url, sim.api_key) as client:
        async with PostgresJournal.open(
            fresh_database, batch_id=bid, lease=0.3, holder="dead"
        ) as dead:
            jobs = []
            for i in range(6):
                record = request_to_record(request_for(i))
                jobs.append((f"job-{i}", request_for(i).kind.value, fingerprint(record), record))
            jobs.append(("broken", "video", "f", {"kind": "video", "images": []}))
            await dead.enqueue(jobs)
            assert len(await dead.claim(10)) == 7
            # job-0: a running task; job-1: a create that reached the server; job-2: a
            # create that did not; job-3: ended SUCCEEDED, not downloaded; 4, 5: pending
            for i in (0, 1, 3):
                key = f"job-{i}"
                task = await client.tasks.create(
                    request_for(i), external_task_id=external_id_for(bid, key)
                )
                await dead.mark_submitting(key, external_id_for(bid, key))
                if i == 0:
                    await dead.mark_submitted(key, task.task_id)
                if i == 3:
                    await dead.mark_submitted(key, task.task_id)
                    for _ in range(200):
                        task = await client.tasks.get(task.task_id)
                        if task.status.is_terminal:
                            break
                        await asyncio.sleep(0.02)
                    await dead.mark_terminal(key, JobState.SUCCEEDED, result=task_to_wire(task))
            await dead.mark_submitting("job-2", external_id_for(bid, "job-2"))
            assert dead._heart is not None
            dead._heart.cancel()  # the worker dies
            await asyncio.sleep(0.5)
            async with client.batch(
                journal=f"{fresh_database}&kling_lease=2", batch_id=bid, out_dir=tmp_path
            ) as batch:
                outcomes = {o.key: o async for o in batch}
        created = sim.statistics().tasks_created_per_external_id
    assert set(outcomes) == {*(f"job-{i}" for i in range(6)), "broken"}
    assert outcomes["broken"].status is JobStatus.FAILED
    assert all(outcomes[f"job-{i}"].status is JobStatus.SUCCEEDED for i in range(6))
    assert all(outcomes[f"job-{i}"].files for i in range(6))
    assert set(created.values()) == {1}
    assert len(created) == 6


async def test_a_row_the_server_refuses_fails_alone(fresh_database: str) -> None:
    """A write PostgreSQL rejects raises JournalError for its caller; later writes go on."""
    async with PostgresJournal.open(fresh_database, batch_id="nul") as journal:
        with pytest.raises(JournalError):
            await journal.add("bad", "video", "f", {"prompt": "nul \x00 byte"})
        await journal.add("good", "video", "f", _rec(1), durable=False)
        await asyncio.sleep(0.1)  # the lazy add commits on its own
        await journal.flush()
        await journal.mark_submitting("good", "e")
        await journal.mark_submitted("good", "t")
        await journal.mark_terminal("good", JobState.SUCCEEDED, result={"task_id": "t"})
        error = ErrorRecord(type="DownloadError", message="gone", url="https://x/y.mp4")
        row = await journal.mark_download_failed("good", error)
        assert row.error == error
        assert journal.holder
        assert await journal.get("bad") is None
    with pytest.raises(JournalError, match="closed"):
        await journal.flush()
    with pytest.raises(ValueError, match="lease"):
        PostgresJournal(fresh_database, lease=0)
