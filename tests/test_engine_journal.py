"""client.batch(journal=..., out_dir=...): state written through, resumed from the journal."""

import pathlib

import pytest

from kling_async import (
    Backoff,
    Client,
    DownloadLimits,
    Image,
    JobState,
    Limits,
    MultiImageToVideo,
    PollPolicy,
    SqliteJournal,
)
from kling_async._engine import JobStatus, NullStore
from kling_async.simulator import Simulator, SimulatorConfig

SCALE = 0.0005
URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))


def client_for(sim: Simulator) -> Client:
    """A time-scaled client of ``sim``."""
    return Client(
        api_key=sim.api_key,
        base_url=sim.url,
        limits=Limits(requests_per_second=None),
        backoff=Backoff().scaled(SCALE * 20),
        poll=PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
        server_time_scale=SCALE,
    )


def jobs(count: int) -> list[tuple[str, MultiImageToVideo]]:
    """``count`` video jobs."""
    return [(f"k{i}", MultiImageToVideo(images=URLS, prompt=f"job {i}")) for i in range(count)]


async def test_a_journaled_batch_resumes_without_paying_twice(tmp_path: pathlib.Path) -> None:
    """A second run on the same journal yields every job from it, with no new create."""
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    config = SimulatorConfig(time_scale=SCALE, seed=2)
    async with Simulator(config) as sim, client_for(sim) as client:
        async with client.batch(journal=path, out_dir=out, batch_id="j1") as batch:
            await batch.feed(jobs(6))
            first = {o.key: o for o in [o async for o in batch]}
        created = sim.statistics().tasks_created
        async with client.batch(journal=path, out_dir=out) as batch:
            assert batch.batch_id == "j1"
            await batch.feed(jobs(6))  # the same jobs again: no-ops
            second = {o.key: o for o in [o async for o in batch]}
        assert sim.statistics().tasks_created == created == 6
    assert set(first) == set(second) == {f"k{i}" for i in range(6)}
    assert all(o.status is JobStatus.SUCCEEDED for o in second.values())
    assert all(o.files and o.files[0].exists() for o in first.values())
    async with SqliteJournal.open(path, readonly=True) as journal:
        row = await journal.get("k0")
    assert row is not None
    assert row.state is JobState.DOWNLOADED


async def test_a_journal_left_mid_run_is_resumed(tmp_path: pathlib.Path) -> None:
    """Jobs left running or unsent when a batch is left are finished by the next run."""
    path = tmp_path / "run.sqlite"
    config = SimulatorConfig(time_scale=SCALE * 20, video_slots=2, seed=4)
    async with Simulator(config) as sim, client_for(sim) as client:
        async with client.batch(journal=path, batch_id="j2") as batch:
            for key, request in jobs(5):
                await batch.submit(request, key=key)
        # Left at once: two tasks were running, three never sent.
        async with client.batch(journal=path) as batch:
            outcomes = [o async for o in batch]
        assert sorted(o.key for o in outcomes) == [f"k{i}" for i in range(5)]
        assert all(o.ok for o in outcomes)
        assert sim.statistics().max_creates_per_external_id == 1


async def test_journal_and_store_together_are_refused(tmp_path: pathlib.Path) -> None:
    """A batch takes either a journal or a custom store."""
    async with Simulator(SimulatorConfig(time_scale=SCALE)) as sim, client_for(sim) as client:
        with pytest.raises(ValueError, match="not both"):
            client.batch(journal=tmp_path / "x.sqlite", store=NullStore())


async def test_out_dir_without_a_journal_downloads_each_success(tmp_path: pathlib.Path) -> None:
    """With out_dir alone, each success is downloaded before it is yielded."""
    out = tmp_path / "out"
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=6)) as sim,
        client_for(sim) as client,
        client.batch(out_dir=out) as batch,
    ):
        await batch.feed(jobs(3))
        outcomes = [o async for o in batch]
    assert len(outcomes) == 3
    assert all(o.files and o.files[0].parent == out for o in outcomes)


async def test_download_limits_reach_the_downloader_and_failures_count_apart(
    tmp_path: pathlib.Path,
) -> None:
    """client.batch(downloads=...) bounds each file; a job whose file failed is not succeeded."""
    limits = DownloadLimits(max_video_bytes=64, attempts=1)  # every simulated video is larger
    async with (
        Simulator(SimulatorConfig(time_scale=SCALE, seed=6)) as sim,
        client_for(sim) as client,
        client.batch(out_dir=tmp_path / "out", downloads=limits) as batch,
    ):
        await batch.feed(jobs(2))
        outcomes = [o async for o in batch]
        stats = batch.statistics()
    assert [o.status for o in outcomes] == [JobStatus.DOWNLOAD_FAILED] * 2
    assert all("cap of 64 bytes" in str(o.error) for o in outcomes)
    assert (stats.succeeded, stats.download_failed, stats.downloading) == (0, 2, 0)


async def test_download_limits_need_an_output_folder() -> None:
    """downloads= without out_dir= is a misuse, refused before the batch starts."""
    async with Simulator(SimulatorConfig(time_scale=SCALE)) as sim, client_for(sim) as client:
        with pytest.raises(ValueError, match="out_dir"):
            client.batch(downloads=DownloadLimits())
