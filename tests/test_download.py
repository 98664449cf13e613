"""Durable result downloads: atomic files, sha256, Range resume, retries, expiry, limits."""

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from kling_async import Downloader, DownloadError, DownloadLimits, KlingError, ResultExpired
from kling_async._durable import downloads as _download
from kling_async._durable.downloads import _retry_after, result_suffix, url_expiry
from tests._download_helpers import FileServer, Served, file_server

BODY = bytes(range(256)) * 4099  # ~1 MiB, not a multiple of the chunk size
DIGEST = hashlib.sha256(BODY).hexdigest()


class Sleeps:
    """Records the backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    """A loopback file server."""
    async with file_server() as running:
        yield running


@pytest.fixture
def sleeps() -> Sleeps:
    """A sleep that does not wait."""
    return Sleeps()


async def _read(path: str | Path) -> bytes:
    return await anyio.Path(path).read_bytes()


def _downloader(out: Path, sleeps: Sleeps, **limits: Any) -> Downloader:
    # these bodies are arbitrary bytes: the media check is pinned in test_hostile_downloads
    return Downloader(
        out,
        sleep=sleeps,
        backoff_base=0.01,
        backoff_max=limits.pop("backoff_max", 30.0),
        session=limits.pop("session", None),
        check_media=False,
        limits=DownloadLimits(**limits),
    )


async def test_download_is_atomic_with_sha256_and_size(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A file is saved under the key's name with its sha256 and size; no temp file remains."""
    server.files["/r/abc.mp4"] = Served(BODY, content_type="video/mp4")
    async with _downloader(tmp_path / "out", sleeps) as downloader:
        record = await downloader.download(server.link("/r/abc.mp4"), key="job-1")
    path = Path(record.path)
    assert path == tmp_path / "out" / "job-1.mp4"
    assert await _read(path) == BODY
    assert (record.sha256, record.size) == (DIGEST, len(BODY))
    assert record.url == server.link("/r/abc.mp4")
    assert [p.name async for p in anyio.Path(tmp_path / "out").iterdir()] == ["job-1.mp4"]
    stats = downloader.statistics()
    assert (stats.completed, stats.failed, stats.retries, stats.active) == (1, 0, 0, 0)
    assert stats.bytes_received == len(BODY)


async def test_truncated_body_resumes_with_range(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A body cut mid-way is continued with a Range request answered 206; the hash is right."""
    server.files["/v.mp4"] = Served(BODY, truncate=1)
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert await _read(record.path) == BODY
    assert record.sha256 == DIGEST
    assert server.requests[0] == ("/v.mp4", None)
    assert server.requests[1][1] is not None
    assert server.requests[1][1].startswith("bytes=")
    assert server.requests[1][1] != "bytes=0-"
    stats = downloader.statistics()
    assert (stats.retries, stats.resumed, stats.restarted) == (1, 1, 0)
    assert stats.bytes_received == len(BODY)
    assert len(sleeps.waits) == 1


async def test_server_without_range_restarts_from_zero(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """When the server answers 200 to a Range request, the file is rewritten from the start."""
    server.files["/v.mp4"] = Served(BODY, ranges=False, truncate=2)
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert await _read(record.path) == BODY
    assert record.size == len(BODY)
    assert record.sha256 == DIGEST
    assert downloader.statistics().restarted == 2


async def test_partial_file_from_a_crash_is_continued(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A .part file left by a killed process is continued with one Range request."""
    server.files["/v.mp4"] = Served(BODY)
    await anyio.Path(tmp_path / ".k.part").write_bytes(BODY[:1000])
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert server.requests == [("/v.mp4", "bytes=1000-")]
    assert record.sha256 == DIGEST
    assert downloader.statistics().bytes_received == len(BODY) - 1000


async def test_oversized_partial_file_starts_over(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A .part file longer than the result (416) is dropped and the file fetched whole."""
    server.files["/v.mp4"] = Served(BODY[:500])
    await anyio.Path(tmp_path / ".k.part").write_bytes(b"x" * 900)
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert await _read(record.path) == BODY[:500]
    assert [r for _, r in server.requests] == ["bytes=900-", None]


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_expired_url_is_a_typed_error_without_retry(
    server: FileServer, sleeps: Sleeps, tmp_path: Path, status: int
) -> None:
    """403/404/410 raise ResultExpired at once, with URL, expiry, key and task id."""
    server.files["/gone.mp4"] = Served(BODY, fail=[status])
    url = server.link("/gone.mp4", "Expires=1700000000&sig=abc")
    async with _downloader(tmp_path, sleeps) as downloader:
        with pytest.raises(ResultExpired) as caught:
            await downloader.download(url, key="k", task_id="77")
    error = caught.value
    assert isinstance(error, KlingError)
    assert (error.url, error.http_status, error.expires_at) == (url, status, 1700000000.0)
    assert (error.job_key, error.task_id) == ("k", "77")
    assert len(server.requests) == 1
    assert downloader.statistics().failed == 1
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


async def test_server_errors_are_retried_with_backoff(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """5xx and 429 are retried with growing jittered waits; Retry-After is honoured."""
    server.files["/a.png"] = Served(BODY, fail=[500, 503])
    server.files["/b.png"] = Served(BODY, fail=[429], retry_after="3")
    async with _downloader(tmp_path, sleeps, backoff_max=2.0) as downloader:
        a = await downloader.download(server.link("/a.png"), key="a")
        assert len(sleeps.waits) == 2
        assert 0 <= sleeps.waits[0] <= 0.01
        assert 0 <= sleeps.waits[1] <= 0.02
        b = await downloader.download(server.link("/b.png"), key="b")
    assert sleeps.waits[2] == 2.0  # Retry-After 3 s capped by backoff_max
    assert a.sha256 == b.sha256 == DIGEST
    assert downloader.statistics().retries == 3


async def test_retries_are_bounded(server: FileServer, sleeps: Sleeps, tmp_path: Path) -> None:
    """After the last attempt a DownloadError names the status and keeps the cause."""
    server.files["/a.png"] = Served(BODY, fail=[503] * 5)
    async with _downloader(tmp_path, sleeps, attempts=3) as downloader:
        with pytest.raises(DownloadError, match="after 3 attempts") as caught:
            await downloader.download(server.link("/a.png"), key="a")
    assert caught.value.http_status == 503
    assert caught.value.__cause__ is not None
    assert len(server.requests) == 3


async def test_other_client_errors_are_not_retried(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A 400 answer raises DownloadError (not ResultExpired) after one request."""
    server.files["/a.png"] = Served(BODY, fail=[400])
    async with _downloader(tmp_path, sleeps) as downloader:
        with pytest.raises(DownloadError) as caught:
            await downloader.download(server.link("/a.png"), key="a")
    assert not isinstance(caught.value, ResultExpired)
    assert len(server.requests) == 1


async def test_connection_refused_and_stalls_are_retried(sleeps: Sleeps, tmp_path: Path) -> None:
    """A closed port is retried, then reported as DownloadError."""
    async with file_server() as srv:
        url = srv.link("/x.png")
    async with _downloader(tmp_path, sleeps, attempts=2) as downloader:
        with pytest.raises(DownloadError, match=r"ClientConnectorError|Connect"):
            await downloader.download(url, key="x")
    assert len(sleeps.waits) == 1


async def test_read_timeout_is_retried(server: FileServer, sleeps: Sleeps, tmp_path: Path) -> None:
    """A server that stalls past the read timeout is retried until it answers."""
    server.files["/slow.png"] = Served(BODY[:100], delay=0.3)
    async with _downloader(tmp_path, sleeps, attempts=2, read_timeout=0.05) as downloader:
        with pytest.raises(DownloadError, match="Timeout"):
            await downloader.download(server.link("/slow.png"), key="s")
    assert len(server.requests) == 2


async def test_concurrency_is_bounded(server: FileServer, sleeps: Sleeps, tmp_path: Path) -> None:
    """No more files download at once than the downloader's concurrency."""
    for i in range(8):
        server.files[f"/{i}.png"] = Served(BODY[:1000], delay=0.02)
    async with (
        _downloader(tmp_path, sleeps, concurrency=3) as downloader,
        asyncio.TaskGroup() as tg,
    ):
        for i in range(8):
            tg.create_task(downloader.download(server.link(f"/{i}.png"), key=f"k{i}"))
    assert server.peak == 3
    assert downloader.statistics().completed == 8


async def test_download_all_names_each_file_and_reports_failures(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A job with several results gets <stem>-<i> names; a failure is raised after the rest."""
    server.files["/0.png"] = Served(b"zero")
    server.files["/1.jpg"] = Served(b"one")
    urls = [server.link("/0.png"), server.link("/1.jpg")]
    async with _downloader(tmp_path, sleeps) as downloader:
        files = await downloader.download_all("cat/1", urls, task_id="9")
        assert [Path(f.path).name for f in files] == [
            f"{Path(files[0].path).stem.rsplit('-', 1)[0]}-0.png",
            f"{Path(files[0].path).stem.rsplit('-', 1)[0]}-1.jpg",
        ]
        assert all(Path(f.path).parent == tmp_path for f in files)
        single = await downloader.download_all("solo", [server.link("/0.png")])
        assert Path(single[0].path).name == "solo.png"
        with pytest.raises(ResultExpired):
            await downloader.download_all("mixed", [server.link("/0.png"), server.link("/no")])
    assert await _read(tmp_path / "mixed-0.png") == b"zero"


async def test_url_cannot_choose_the_location(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A hostile URL path or content type never changes the folder or the allowed suffix."""
    server.files["/x/evil.exe"] = Served(b"MZ", content_type="application/x-msdownload")
    async with _downloader(tmp_path / "out", sleeps) as downloader:
        record = await downloader.download(
            server.link("/x/evil.exe"), key="job", default_suffix=".mp4"
        )
        assert Path(record.path) == tmp_path / "out" / "job.mp4"
        with pytest.raises(DownloadError, match="scheme"):
            await downloader.download("file:///etc/passwd", key="job")


async def test_given_session_is_used_and_left_open(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A session passed in is used and not closed by the downloader."""
    server.files["/a.gif"] = Served(b"GIF89a")
    async with aiohttp.ClientSession() as session:
        async with _downloader(tmp_path, sleeps, session=session) as downloader:
            record = await downloader.download(server.link("/a.gif"), key="a")
        assert not session.closed
    assert record.path.endswith("a.gif")


async def test_misuse_raises(tmp_path: Path) -> None:
    """Bad knobs raise ValueError; downloading outside 'async with' raises RuntimeError."""
    with pytest.raises(ValueError, match="concurrency' must be >= 1"):
        DownloadLimits(concurrency=0)
    with pytest.raises(ValueError, match=">= 0"):
        Downloader(tmp_path, backoff_base=-1)
    downloader = Downloader(tmp_path)
    assert downloader.out_dir == tmp_path
    with pytest.raises(RuntimeError, match="async with"):
        await downloader.download("http://127.0.0.1:1/x.png", key="x")
    await downloader.aclose()


async def test_disk_errors_are_download_errors(server: FileServer, tmp_path: Path) -> None:
    """A folder removed under the downloader raises DownloadError, not a bare OSError."""
    server.files["/a.png"] = Served(b"x")
    out = tmp_path / "out"
    async with Downloader(out, check_media=False) as downloader:
        await anyio.Path(out).rmdir()
        await anyio.Path(out).write_bytes(b"")  # the folder became a file under our feet
        with pytest.raises(DownloadError, match="cannot write"):
            await downloader.download(server.link("/a.png"), key="a")


@pytest.mark.parametrize(
    ("url", "content_type", "suffix"),
    [
        ("https://cdn/x/video.MP4?sig=1", None, ".mp4"),
        ("https://cdn/x/img.jpeg", "image/png", ".jpeg"),
        ("https://cdn/x/blob", "image/jpeg; charset=binary", ".jpg"),
        ("https://cdn/x/blob", "image/webp", ".webp"),
        ("https://cdn/x/blob.exe", "text/html", ".bin"),
        ("https://cdn/x/blob", None, ".bin"),
        ("http://[bad", None, ".bin"),
    ],
)
def test_result_suffix_uses_the_allow_list(url: str, content_type: str | None, suffix: str) -> None:
    """The suffix comes from the URL path, then the content type, only from the allow-list."""
    assert result_suffix(url, content_type) == suffix


@pytest.mark.parametrize(
    ("url", "expiry"),
    [
        ("https://cdn/a.mp4?Expires=1800000000&Signature=x", 1800000000.0),
        ("http://127.0.0.1/f/0.gif?expires=1800000000500&sig=x", 1800000000.5),
        ("https://s3/a.mp4?X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600", 1767229200.0),
        ("https://s3/a.mp4?X-Amz-Date=garbage&X-Amz-Expires=3600", None),
        ("https://cdn/a.mp4?expires=soon", None),
        ("https://cdn/a.mp4", None),
        ("http://[bad", None),
    ],
)
def test_url_expiry(url: str, expiry: float | None) -> None:
    """The expiry of a signed URL is read from its query when it carries one."""
    assert url_expiry(url) == expiry


def test_retry_after_parses_seconds_and_dates() -> None:
    """Retry-After is read as seconds or an HTTP date; junk gives None."""
    assert _retry_after("5") == 5.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _retry_after("soon") is None
    assert _retry_after(None) is None


async def test_range_answer_for_another_start_is_not_trusted(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A 206 whose Content-Range starts elsewhere than asked drops the part and starts over."""
    server.files["/v.mp4"] = Served(BODY, wrong_range=1)
    await anyio.Path(tmp_path / ".k.part").write_bytes(BODY[:10])
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert record.sha256 == DIGEST
    assert [r for _, r in server.requests] == ["bytes=10-", None]


async def test_chunked_body_without_length_is_saved(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A body sent without Content-Length (chunked) is saved whole."""
    server.files["/v.webp"] = Served(BODY, chunked=True)
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.webp"), key="k")
    assert (record.sha256, Path(record.path).name) == (DIGEST, "k.webp")


async def test_the_same_file_is_not_downloaded_twice_at_once(
    server: FileServer, sleeps: Sleeps, tmp_path: Path
) -> None:
    """A second download of the same key and index while the first runs raises RuntimeError."""
    server.files["/slow.png"] = Served(b"x", delay=0.05)
    async with _downloader(tmp_path, sleeps) as downloader:
        first = asyncio.ensure_future(downloader.download(server.link("/slow.png"), key="k"))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already downloading"):
            await downloader.download(server.link("/slow.png"), key="k")
        record = await first
    assert record.size == 1


async def test_large_bodies_are_spilled_to_the_part_file_as_they_arrive(
    server: FileServer, sleeps: Sleeps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the in-memory bound, chunks go to the part file early; a cut still resumes right."""
    monkeypatch.setattr(_download, "_SPILL", 100_000)
    spills: list[int] = []
    real = _download._PartWriter.spill

    def spill(writer: _download._PartWriter) -> None:
        spills.append(writer.buffered)
        real(writer)

    monkeypatch.setattr(_download._PartWriter, "spill", spill)
    server.files["/v.mp4"] = Served(BODY, truncate=1)
    async with _downloader(tmp_path, sleeps) as downloader:
        record = await downloader.download(server.link("/v.mp4"), key="k")
    assert await _read(record.path) == BODY
    assert record.sha256 == DIGEST
    assert len(spills) > 2  # during both attempts, and what arrived before the cut
    assert downloader.statistics().resumed == 1
    assert not (tmp_path / ".k.part").exists()
