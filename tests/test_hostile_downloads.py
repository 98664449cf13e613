"""Downloads against a hostile file host (issue 12): bounded in bytes and time, media checked.

Each case the issue reported is a test: an endless body, a 1-byte-per-tick trickle, an
HTML error page served with 200, a body that is not the media expected, a body cut
short, a result URL the client cannot parse, an unexpected error inside the downloader,
a slow host beside healthy downloads; and a job whose files did not arrive is reported
DOWNLOAD_FAILED (exit code 1 in the CLI), never "succeeded".
"""

import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

import kling_async as ka
import kling_async._durable.downloads as _download
from kling_async import Downloader, DownloadLimits, JobState
from kling_async._cli.app import main
from kling_async._core.errors import DownloadError
from kling_async._core.models import GeneratedImage, Kind, Task, TaskStatus, Video
from kling_async._durable.bridge import JournalBatchStore, download_outcome
from kling_async._durable.downloads import media_of
from kling_async._durable.store import MemoryStore
from kling_async._engine._outcome import JobStatus, Outcome
from tests._engine_helpers import video
from tests._hostile_files import MP4, PNG, HostileHost, hostile_host

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
CAP = 1024 * 1024


class NoWait:
    """Backoff waits that do not wait (the bounds under test are the downloader's own)."""

    async def __call__(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()


@pytest.fixture
async def host() -> AsyncIterator[HostileHost]:
    """The hostile host on loopback."""
    async with hostile_host() as running:
        yield running


def _downloader(out: pathlib.Path, **kwargs: Any) -> Downloader:
    limits: dict[str, Any] = {
        "attempts": 2,
        "max_video_bytes": CAP,
        "max_image_bytes": CAP,
        "min_speed": 2000.0,
        "speed_grace": 0.3,
    }
    limits.update(kwargs)
    return Downloader(out, sleep=NoWait(), limits=DownloadLimits(**limits))


def _left(out: pathlib.Path) -> list[str]:
    return sorted(path.name for path in out.iterdir()) if out.exists() else []


async def _fails(downloader: Downloader, url: str, key: str = "job") -> DownloadError:
    with anyio.fail_after(10):  # far above every bound the downloader sets itself
        with pytest.raises(DownloadError) as caught:
            await downloader.download(url, key=key, default_suffix=".mp4")
    return caught.value


async def test_well_formed_media_is_saved(host: HostileHost, tmp_path: pathlib.Path) -> None:
    """The positive control: an MP4 and a PNG pass every check and are saved whole."""
    async with _downloader(tmp_path) as downloader:
        mp4 = await downloader.download(host.link("/ok.mp4"), key="v")
        png = await downloader.download(host.link("/ok.png"), key="i")
    assert (pathlib.Path(mp4.path).name, mp4.size) == ("v.mp4", len(MP4))
    assert (pathlib.Path(png.path).name, png.size) == ("i.png", len(PNG))
    assert _left(tmp_path) == ["i.png", "v.mp4"]


async def test_endless_body_stops_at_the_cap_and_leaves_nothing(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """An endless (chunked) body fails at the byte cap, not retried, with no file left."""
    async with _downloader(tmp_path) as downloader:
        error = await _fails(downloader, host.link("/endless.mp4"))
    assert "cap" in str(error)
    assert host.requests == ["/endless.mp4"]  # a cap is final: no second attempt
    assert host.sent["/endless.mp4"] < 64 * CAP  # the client hung up soon after the cap
    assert _left(tmp_path) == []


async def test_a_length_over_the_cap_is_refused_before_the_body(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """A Content-Length over the cap ends the file at once (the host then stalls for 5 s)."""
    async with _downloader(tmp_path) as downloader:
        with anyio.fail_after(3):
            error = await _fails(downloader, host.link("/huge.mp4"))
    assert "over the cap" in str(error)
    assert _left(tmp_path) == []


async def test_caps_follow_the_media(host: HostileHost, tmp_path: pathlib.Path) -> None:
    """The image cap applies to an image, the video cap to a video."""
    async with _downloader(tmp_path, max_image_bytes=100, max_video_bytes=CAP) as downloader:
        await downloader.download(host.link("/ok.mp4"), key="v")
        error = await _fails(downloader, host.link("/ok.png"), key="i")
    assert "cap of 100 bytes" in str(error)
    assert _left(tmp_path) == ["v.mp4"]


async def test_a_trickling_host_fails_the_file_instead_of_holding_the_slot(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """1 byte per tick is under the minimum speed: each attempt ends after the grace period."""
    async with _downloader(tmp_path, attempts=2) as downloader:
        error = await _fails(downloader, host.link("/trickle.png"))
        assert downloader.statistics().active == 0
    assert "too slow" in str(error)
    assert host.requests == ["/trickle.png"] * 2
    assert _left(tmp_path) == []  # the part file of the last attempt is removed


async def test_the_file_budget_bounds_all_attempts_together(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """Many attempts allowed, but the file's budget of transfer time ends them early."""
    async with _downloader(tmp_path, attempts=100, file_budget=0.7) as downloader:
        error = await _fails(downloader, host.link("/trickle.png"))
    assert "budget" in str(error)
    assert 2 <= len(host.requests) <= 4
    assert _left(tmp_path) == []


async def test_slow_hosts_do_not_starve_other_downloads(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """Four trickles queued before two good files on two slots: the good ones still arrive."""
    done: dict[str, float] = {}
    failed: list[str] = []
    async with _downloader(tmp_path, concurrency=2, attempts=1) as downloader:
        started = anyio.current_time()

        async def one(key: str, path: str) -> None:
            try:
                await downloader.download(host.link(path), key=key)
            except DownloadError:
                failed.append(key)
            else:
                done[key] = anyio.current_time() - started

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, f"slow-{i}", "/trickle.png")
                    await anyio.sleep(0.01)  # queued in this order
                tg.start_soon(one, "good-mp4", "/ok.mp4")
                tg.start_soon(one, "good-png", "/ok.png")
    assert sorted(failed) == [f"slow-{i}" for i in range(4)]
    assert sorted(done) == ["good-mp4", "good-png"]
    # each trickle held its slot for about the grace period (0.3 s), not for its length
    # (1,008 ticks of 0.02 s = 20 s)
    assert max(done.values()) < 5.0, done


async def test_an_html_page_served_with_200_is_refused(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """An HTML error page answered with 200 for a .mp4 is not saved as a video."""
    async with _downloader(tmp_path) as downloader:
        error = await _fails(downloader, host.link("/html.mp4"))
    assert "not a video or image" in str(error)
    assert "<!DOCTYPE" in str(error)
    assert host.requests == ["/html.mp4"]  # the wrong media is final
    assert _left(tmp_path) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/junk.png", "not a video or image"),
        ("/video-as-image.png", "not the image expected"),
    ],
)
async def test_wrong_magic_bytes_are_refused(
    host: HostileHost, tmp_path: pathlib.Path, path: str, message: str
) -> None:
    """Bytes that are no media, or a video where an image is expected, are refused."""
    async with _downloader(tmp_path) as downloader:
        error = await _fails(downloader, host.link(path))
    assert message in str(error)
    assert _left(tmp_path) == []


def test_media_is_told_by_its_first_bytes() -> None:
    """MP4, MOV, PNG, JPEG, GIF and WebP are known by their signatures; anything else is not."""
    assert media_of(MP4) == ("video", ".mp4")
    assert media_of(b"\x00\x00\x00\x14ftypqt  \x00\x00") == ("video", ".mov")
    assert media_of(PNG) == ("image", ".png")
    assert media_of(b"\xff\xd8\xff\xe0\x00\x10JFIF") == ("image", ".jpg")
    assert media_of(b"GIF89a\x01\x00") == ("image", ".gif")
    assert media_of(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image", ".webp")
    assert media_of(b"<!DOCTYPE html>") is None
    assert media_of(b"") is None


async def test_a_truncated_body_fails_and_leaves_no_partial_file(
    host: HostileHost, tmp_path: pathlib.Path
) -> None:
    """A body cut short every time: retried, then a DownloadError; the .part is removed."""
    async with _downloader(tmp_path, attempts=3) as downloader:
        error = await _fails(downloader, host.link("/truncated.mp4"))
    assert "after 3 attempts" in str(error)
    assert len(host.requests) == 3
    assert _left(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999/a.png", "cannot be parsed"),
        ("http://[::1/a.png", "cannot be parsed"),
        ("http://[zz]/a.png", "cannot be parsed"),
        ("http://h:abc/a.png", "cannot be parsed"),
        ("http:///a.png", "no host"),
        ("ftp://127.0.0.1/a.png", "not http(s)"),
    ],
)
async def test_a_url_the_client_cannot_parse_is_a_clear_error(
    tmp_path: pathlib.Path, url: str, message: str
) -> None:
    """Bad port, broken IPv6 literal, no host, other scheme: a DownloadError, no connection."""
    async with _downloader(tmp_path) as downloader:
        error = await _fails(downloader, url)
        assert downloader.statistics().retries == 0
    assert message in str(error)
    assert error.url == url
    assert error.job_key == "job"


async def test_an_unexpected_error_inside_the_downloader_is_a_download_error(
    host: HostileHost, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A surprise (here a bug in publishing the file) ends as a DownloadError naming it."""

    def broken(self: object, final: pathlib.Path) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(_download._PartWriter, "publish", broken)
    async with _downloader(tmp_path) as downloader:
        error = await _fails(downloader, host.link("/ok.mp4"))
        assert downloader.statistics().failed == 1
    assert "unexpected error while downloading: KeyError" in str(error)
    assert isinstance(error.__cause__, KeyError)


def test_limits_are_checked() -> None:
    """Caps, speeds, budgets and timeouts must be positive; counts at least one."""
    for bad in (
        {"max_video_bytes": 0},
        {"max_image_bytes": 0},
        {"min_speed": 0},
        {"speed_grace": 0},
        {"file_budget": -1},
        {"concurrency": 0},
        {"attempts": 0},
        {"connect_timeout": 0},
        {"read_timeout": -1},
    ):
        with pytest.raises(ValueError, match="must be"):
            DownloadLimits(**bad)


# -- a job whose files did not arrive --------------------------------------------------------

TASK = Task(task_id="t-1", status=TaskStatus.SUCCEEDED, external_task_id="b-k")


async def _finish(
    tmp_path: pathlib.Path, task: Task, downloader: Downloader
) -> tuple[Outcome, MemoryStore]:
    store = MemoryStore(batch_id="b")
    bridge = JournalBatchStore(store)
    await bridge.pending("k", Kind.VIDEO, video(), "b-k")
    await bridge.submitting("k", "b-k")
    await bridge.submitted("k", "t-1")
    outcome = Outcome(key="k", kind=Kind.VIDEO, status=JobStatus.SUCCEEDED, task=task)
    await bridge.finished(outcome)
    return await download_outcome(downloader, bridge, outcome), store


@pytest.mark.parametrize(
    "path", ["/html.mp4", "/endless.mp4", "/truncated.mp4", "http://[::1/a.mp4", None]
)
async def test_a_job_without_its_files_is_download_failed_not_succeeded(
    host: HostileHost, tmp_path: pathlib.Path, path: str | None
) -> None:
    """Files that did not arrive (or no URL at all): DOWNLOAD_FAILED, the why, no file."""
    if path is None:
        videos: tuple[Video, ...] = ()
    else:
        url = path if path.startswith("http") else host.link(path)
        videos = (Video(id="v", url=url),)
    task = attrs.evolve(TASK, videos=videos)
    async with _downloader(tmp_path / "out") as downloader:
        outcome, store = await _finish(tmp_path, task, downloader)
    assert outcome.status is JobStatus.DOWNLOAD_FAILED
    assert not outcome.ok
    assert isinstance(outcome.error, DownloadError)
    assert outcome.error.job_key == "k"
    assert outcome.files == ()
    row = await store.get("k")
    assert row is not None
    assert row.state is JobState.SUCCEEDED  # paid for: a resume downloads it again
    assert row.error is not None
    assert _left(tmp_path / "out") == []


async def test_any_error_of_the_download_step_is_download_failed(
    host: HostileHost, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even an error outside the downloader's own checks ends the job DOWNLOAD_FAILED."""

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("surprise")

    task = attrs.evolve(TASK, images=(GeneratedImage(index=0, url=host.link("/ok.png")),))
    async with _downloader(tmp_path / "out") as downloader:
        monkeypatch.setattr(downloader, "download_all", broken)
        outcome, _ = await _finish(tmp_path, task, downloader)
    assert outcome.status is JobStatus.DOWNLOAD_FAILED
    assert isinstance(outcome.error, DownloadError)
    assert "RuntimeError: surprise" in str(outcome.error)
    assert isinstance(outcome.error.__cause__, RuntimeError)


def test_the_cli_exits_1_and_says_the_files_did_not_arrive(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every download refused: exit 1, the summary counts "download failed", none "succeeded"."""
    for name in ("COMETAPI_KEY", "COMETAPI_BASE_URL", "KLING_API_KEY", "KLING_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_download, "media_of", lambda head: None)  # no body is media
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES, examples)
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(examples / "jobs.jsonl"), "--out", "out", "--time-scale", "0.002"])
    text = capsys.readouterr().out
    assert code == 1, text
    assert "download failed" in text
    assert "NO FILES" in text
    results = (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8")
    assert '"status": "download_failed"' in results
    assert '"status": "succeeded"' not in results
    assert ka.Status.DOWNLOAD_FAILED.value == "download_failed"
