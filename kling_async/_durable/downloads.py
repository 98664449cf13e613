"""Durable downloads of result files: streamed, fsynced, renamed atomically, hashed.

Result URLs expire, so a batch fetches each file as soon as its task succeeds. A file is
streamed into ``.<name>.part`` beside its final name, fsynced, then renamed over it: a
reader never sees half a file, and a crash leaves at most a ``.part`` file that the next
attempt continues with an HTTP ``Range`` request (or restarts when the server answers
200). File names come from the job key, never from the server.

A hostile or broken file host is bounded: each file has a byte cap (by media, checked
against ``Content-Length`` and while streaming), a minimum speed after a grace period
and an overall time budget (so a trickling host releases its slot and others proceed),
and its first bytes must be the media expected (an MP4/MOV ``ftyp`` box, PNG, JPEG,
GIF or WebP; an HTML error page served with 200 is refused). A file that fails for
good leaves no partial file behind. A URL that cannot be parsed and any unexpected
error end as a ``DownloadError``: a job never "succeeds" without its files.
"""

import contextlib
import hashlib
import os
import pathlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Self

import aiohttp
import anyio
import attrs
import yarl

from .._core import lifetime
from .._core.errors import DownloadError, ResultExpired
from .files import replace_durably, write_all
from .records import FileRecord

__all__ = [
    "ALLOWED_SUFFIXES",
    "DEFAULT_DOWNLOAD_LIMITS",
    "DEFAULT_FILE_BUDGET",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_VIDEO_BYTES",
    "DEFAULT_MIN_SPEED",
    "DEFAULT_SPEED_GRACE",
    "DownloadLimits",
    "DownloadStatistics",
    "Downloader",
    "UnsafeKey",
    "check_job_key",
    "file_stem",
    "media_of",
    "result_suffix",
    "url_expiry",
]

ALLOWED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".mp4", ".webp"})
_CONTENT_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
}
# Kling's results: videos of 5-10 s at 1080p are tens of MB, images a few MB; the caps
# leave a wide margin and still stop an endless body long before the disk fills.
DEFAULT_MAX_VIDEO_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MIN_SPEED = 32 * 1024
"""Bytes per second a file must average once ``DEFAULT_SPEED_GRACE`` has passed."""
DEFAULT_SPEED_GRACE = 15.0
DEFAULT_FILE_BUDGET = 1800.0
"""Seconds of transfer (all attempts together) one file may take at most."""


@attrs.frozen(kw_only=True)
class DownloadLimits:
    """Bounds on the result files a batch downloads (``client.batch(downloads=...)``).

    A hostile or broken file host cannot fill the disk, hold a download slot for as long
    as it likes, or starve other jobs' files.

    Attributes:
        concurrency: Files downloading at once.
        attempts: Tries per file (network errors, 5xx, 429, truncation, too slow).
        max_video_bytes: Largest video file accepted; a longer body fails the file.
        max_image_bytes: Largest image file accepted (also for a file of unknown kind).
        min_speed: Bytes per second a file must average once ``speed_grace`` seconds of
            an attempt have passed; slower, the attempt ends and frees its slot.
        speed_grace: Seconds an attempt may take before ``min_speed`` applies.
        file_budget: Seconds of transfer one file may take over all its attempts.
        connect_timeout: Seconds to connect to the file host.
        read_timeout: Seconds between two reads of a body (a stall); not in total, so a
            large video on a slow link may take long while a stall may not.
    """

    concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_video_bytes: int = attrs.field(
        default=DEFAULT_MAX_VIDEO_BYTES, validator=attrs.validators.ge(1)
    )
    max_image_bytes: int = attrs.field(
        default=DEFAULT_MAX_IMAGE_BYTES, validator=attrs.validators.ge(1)
    )
    min_speed: float = attrs.field(default=DEFAULT_MIN_SPEED, validator=attrs.validators.gt(0))
    speed_grace: float = attrs.field(default=DEFAULT_SPEED_GRACE, validator=attrs.validators.gt(0))
    file_budget: float = attrs.field(default=DEFAULT_FILE_BUDGET, validator=attrs.validators.gt(0))
    connect_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    read_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


DEFAULT_DOWNLOAD_LIMITS = DownloadLimits()
_VIDEO_SUFFIXES = frozenset({".mp4", ".mov"})
_HEAD = 16  # bytes needed to tell the media
_CHUNK = 256 * 1024
# Bytes gathered in memory before they are written to the part file (one thread hop).
_SPILL = 4 * 1024 * 1024
_MAX_STEM = 100
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
_GONE = frozenset({403, 404, 410})
_MS_THRESHOLD = 1e11  # Unix seconds pass 1e11 in the year 5138


class UnsafeKey(ValueError):  # noqa: N818 -- a misuse error named for what is wrong
    """A job key cannot name a file: empty, NUL, not UTF-8, absolute, or with a ``..`` part.

    ``rule`` says what is wrong, without the key (a job file shows it beside its line).
    """

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"job key {key!r} {rule}")
        self.rule = rule


def check_job_key(key: str) -> None:
    """Check that ``key`` can name a job's result files, as a batch with ``out_dir`` will.

    The same rule the batch applies when the job is fed, so a job file can be checked
    before anything is sent (and paid for).

    Raises:
        UnsafeKey: the key cannot name a file (see :func:`file_stem`).
    """
    file_stem(key)


def file_stem(key: str) -> str:
    """Return the flat, safe file name stem for a job key.

    Characters outside ``[A-Za-z0-9._-]`` become ``_`` and leading dots or dashes are
    dropped; when that changed the key (or it is too long, or a reserved device name), a
    short hash of the key is appended, so two different keys never share a name.

    Raises:
        UnsafeKey: the key is empty, holds NUL or a lone surrogate (not UTF-8), is an
            absolute path or has a ``..`` part.
    """
    if not key or "\x00" in key:
        raise UnsafeKey(key, "cannot name a file (empty or NUL)")
    if _SURROGATE.search(key) is not None:
        raise UnsafeKey(key, "cannot name a file (a lone surrogate is not valid Unicode)")
    if key.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", key):
        raise UnsafeKey(key, "cannot name a file (an absolute path)")
    if ".." in re.split(r"[\\/]", key):
        raise UnsafeKey(key, "cannot name a file (a '..' part climbs out of the output folder)")
    stem = _SAFE.sub("_", key).lstrip(".-")
    if stem != key or len(stem) > _MAX_STEM or stem.split(".", 1)[0].lower() in _WINDOWS_RESERVED:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        stem = f"{stem[:_MAX_STEM]}-{digest}" if stem else f"job-{digest}"
    return stem


def result_suffix(url: str, content_type: str | None, default: str = ".bin") -> str:
    """Return the file suffix for a result: from the URL path, else the content type.

    Only suffixes in ``ALLOWED_SUFFIXES`` are kept; anything else gives ``default``.
    """
    try:
        path = yarl.URL(url).path
    except (ValueError, TypeError):
        path = ""
    suffix = pathlib.PurePosixPath(path).suffix.lower()
    if suffix in ALLOWED_SUFFIXES:
        return suffix
    if content_type:
        mapped = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if mapped is not None:
            return mapped
    return default


def media_of(head: bytes) -> tuple[str, str] | None:
    """Tell a file's media from its first bytes: ``(kind, suffix)``, or None if unknown.

    ``kind`` is ``"video"`` (an ISO-BMFF ``ftyp`` box: MP4, MOV) or ``"image"`` (PNG,
    JPEG, GIF, WebP).
    """
    if head[4:8] == b"ftyp":
        return ("video", ".mov" if head[8:12] == b"qt  " else ".mp4")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("image", ".png")
    if head.startswith(b"\xff\xd8\xff"):
        return ("image", ".jpg")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ("image", ".gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("image", ".webp")
    return None


def _kind_of_suffix(suffix: str) -> str | None:
    if suffix in _VIDEO_SUFFIXES:
        return "video"
    if suffix in ALLOWED_SUFFIXES:
        return "image"
    return None


def url_expiry(url: str) -> float | None:
    """Return when a signed result URL expires (Unix seconds), if the URL says so.

    Understands ``Expires=<unix s or ms>`` (OSS, CloudFront style) and
    ``X-Amz-Date`` + ``X-Amz-Expires`` (S3 SigV4).
    """
    try:
        query = yarl.URL(url).query
    except (ValueError, TypeError):
        return None
    lowered = {k.lower(): v for k, v in query.items()}
    expires = lowered.get("expires")
    if expires is not None and expires.isdigit():
        value = float(expires)
        # 13 digits are milliseconds (some CDNs, the simulator); 10 are seconds
        return value / 1000 if value > _MS_THRESHOLD else value
    amz_date, amz_expires = lowered.get("x-amz-date"), lowered.get("x-amz-expires")
    if amz_date and amz_expires and amz_expires.isdigit():
        try:
            start = time.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        except ValueError:
            return None
        return float(_timegm(start) + int(amz_expires))
    return None


def _timegm(value: time.struct_time) -> int:
    import calendar  # noqa: PLC0415 -- only for the rare S3-signed URL

    return calendar.timegm(value)


@attrs.frozen
class DownloadStatistics:
    """Counters of a ``Downloader``."""

    active: int
    completed: int
    failed: int
    retries: int
    resumed: int
    """Attempts continued from a partial file with an HTTP Range answer (206)."""
    restarted: int
    """Attempts that asked for a range but got the whole file (200) and started over."""
    bytes_received: int


class _Retry(Exception):  # noqa: N818 -- internal signal, never escapes
    """This attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, *, status: int | None = None, after: float | None = None):
        super().__init__(reason)
        self.status = status
        self.after = after


class Downloader:
    """Downloads result files into one folder with its own bounded concurrency.

    Use it as ``async with Downloader(out_dir) as downloader:``; pass ``session`` to share
    an aiohttp session (it is then not closed here).

    Args:
        out_dir: The folder for the files (created if missing).
        limits: Concurrency, attempts, byte caps, minimum speed, time budget and
            timeouts of each file.
        session: An aiohttp session to use; one is made and owned when None.
        backoff_base: First retry waits up to this many seconds (full jitter, doubling).
        backoff_max: Cap of one wait, also of an honoured ``Retry-After``.
        sleep: How to wait between attempts (injected in tests).
        check_media: Refuse a body whose first bytes are not the media expected.
    """

    def __init__(
        self,
        out_dir: "str | os.PathLike[str]",
        *,
        limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
        session: aiohttp.ClientSession | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        check_media: bool = True,
    ) -> None:
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")
        self._limits = limits
        self._caps = {"video": limits.max_video_bytes, "image": limits.max_image_bytes}
        self._min_speed = limits.min_speed
        self._grace = limits.speed_grace
        self._budget = limits.file_budget
        self._check_media = check_media
        self._dir = pathlib.Path(out_dir)
        self._session = session
        self._owns_session = session is None
        self._limiter = anyio.CapacityLimiter(limits.concurrency)
        self._attempts = limits.attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
        )
        self._sleep = sleep
        self._completed = 0
        self._failed = 0
        self._retries = 0
        self._resumed = 0
        self._restarted = 0
        self._bytes = 0
        self._busy: set[pathlib.Path] = set()

    @property
    def out_dir(self) -> pathlib.Path:
        """The folder files are saved in."""
        return self._dir

    @property
    def limits(self) -> DownloadLimits:
        """The bounds of each file."""
        return self._limits

    async def __aenter__(self) -> Self:
        await anyio.Path(self._dir).mkdir(parents=True, exist_ok=True)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    __aexit__ = lifetime.__aexit__

    async def aclose(self) -> None:
        """Close the session if this downloader made it."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            with anyio.CancelScope(shield=True):
                await session.close()

    def statistics(self) -> DownloadStatistics:
        """Return the downloader's counters."""
        return DownloadStatistics(
            active=self._limiter.borrowed_tokens,
            completed=self._completed,
            failed=self._failed,
            retries=self._retries,
            resumed=self._resumed,
            restarted=self._restarted,
            bytes_received=self._bytes,
        )

    async def download_all(
        self,
        key: str,
        urls: Sequence[str],
        *,
        default_suffix: str = ".bin",
        task_id: str | None = None,
    ) -> tuple[FileRecord, ...]:
        """Download every result of one job; names are ``<stem>`` or ``<stem>-<i>`` + suffix.

        All files are tried even when one fails; then the first failure is raised.

        Raises:
            DownloadError: a file could not be saved (``ResultExpired`` for a gone URL).
            UnsafeKey: the key cannot name a file.
        """
        file_stem(key)
        results: list[FileRecord | None] = [None] * len(urls)
        errors: list[DownloadError] = []

        async def one(i: int, url: str) -> None:
            try:
                results[i] = await self.download(
                    url,
                    key=key,
                    index=i if len(urls) > 1 else None,
                    default_suffix=default_suffix,
                    task_id=task_id,
                )
            except DownloadError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i, url in enumerate(urls):
                tg.start_soon(one, i, url)
        if errors:
            raise errors[0]
        return tuple(r for r in results if r is not None)

    async def download(
        self,
        url: str,
        *,
        key: str,
        index: int | None = None,
        default_suffix: str = ".bin",
        task_id: str | None = None,
    ) -> FileRecord:
        """Download one result file; return its path, sha256 and size.

        Args:
            url: The result URL (http or https).
            key: The job key; names the file (see ``file_stem``).
            index: Appended to the name (``-<index>``) for jobs with several files.
            default_suffix: Suffix when neither the URL nor the content type tells one.
            task_id: Put on errors, for the report.

        Raises:
            DownloadError: every attempt failed, or the server refused for good.
            ResultExpired: the URL answered 403, 404 or 410.
            UnsafeKey: the key cannot name a file.
        """
        stem = file_stem(key) if index is None else f"{file_stem(key)}-{int(index)}"
        _check_url(url, key, task_id)
        if self._session is None:
            raise RuntimeError("use the Downloader in 'async with' before downloading")
        part = self._dir / f".{stem}.part"
        if part in self._busy:
            raise RuntimeError(f"{part.name} is already downloading (same key and index)")
        self._busy.add(part)
        try:
            return await self._download(url, key, stem, part, default_suffix, task_id=task_id)
        except DownloadError:
            raise
        except Exception as exc:  # a bug or a surprise must not end as "succeeded, no file"
            self._failed += 1
            raise DownloadError(
                f"unexpected error while downloading: {type(exc).__name__}: {exc}",
                url=url,
                task_id=task_id,
                job_key=key,
            ) from exc
        finally:
            self._busy.discard(part)

    async def _download(
        self,
        url: str,
        key: str,
        stem: str,
        part: pathlib.Path,
        default_suffix: str,
        *,
        task_id: str | None,
    ) -> FileRecord:
        attempt = 0
        budget = _Budget(self._budget)
        while True:
            attempt += 1
            try:
                # the slot is held for one attempt, not through the backoff wait
                async with self._limiter:
                    record = await self._attempt(url, stem, part, default_suffix, budget)
            except _Retry as retry:
                if attempt >= self._attempts or budget.left() <= 0:
                    self._failed += 1
                    await _discard(part)
                    spent = "" if budget.left() > 0 else f" and its {self._budget:g} s budget"
                    raise DownloadError(
                        f"download failed after {attempt} attempts{spent}: {retry}",
                        url=url,
                        http_status=retry.status,
                        task_id=task_id,
                        job_key=key,
                        expires_at=url_expiry(url),
                    ) from retry
                self._retries += 1
                await self._sleep(self._delay(attempt, retry.after))
            except DownloadError as exc:
                self._failed += 1
                await _discard(part)
                exc.job_key, exc.task_id = key, task_id
                raise
            else:
                self._completed += 1
                return record

    def _delay(self, attempt: int, after: float | None) -> float:
        if after is not None:
            return min(after, self._backoff_max)
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    async def _attempt(
        self, url: str, stem: str, part: pathlib.Path, default: str, budget: "_Budget"
    ) -> FileRecord:
        began = anyio.current_time()
        # the attempt's deadline: the grace period, pushed on by every byte that arrives
        # at the minimum speed, never past what is left of the file's budget
        limit = began + budget.left()
        pace = _Pace(began + self._grace, self._min_speed, limit)
        record: FileRecord | None = None
        try:
            with anyio.CancelScope(deadline=min(pace.deadline, limit)) as scope:
                pace.scope = scope
                record = await self._fetch(url, stem, part, default, pace)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # the disk, not the network: another attempt will not help
            raise DownloadError(f"cannot write {part}: {exc}", url=url) from exc
        finally:
            budget.spend(anyio.current_time() - began)
        if record is None:  # the deadline passed: too slow, the slot goes to others
            elapsed = anyio.current_time() - began
            raise _Retry(
                f"too slow: {pace.received} bytes in {elapsed:.1f} s (at least"
                f" {self._min_speed:g} bytes/s after {self._grace:g} s)"
            )
        return record

    async def _fetch(
        self, url: str, stem: str, part: pathlib.Path, default: str, pace: "_Pace"
    ) -> FileRecord:
        assert self._session is not None
        offset = await _size_or_zero(part)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._session.get(url, headers=headers, timeout=self._timeout) as resp:
            start = self._check_status(resp, url, offset)
            if start is None:
                await anyio.Path(part).unlink(missing_ok=True)
                raise _Retry(f"HTTP {resp.status} for bytes={offset}-, starting over")
            if offset and start == 0:
                self._restarted += 1
            elif start:
                self._resumed += 1
            expected = _expected_size(resp, start)
            suffix = result_suffix(url, resp.headers.get("Content-Type"), default)
            kind = _kind_of_suffix(suffix)
            cap = self._caps[kind or "video"]
            if expected is not None and expected > cap:
                raise DownloadError(
                    f"result file is {expected} bytes, over the cap of {cap} bytes",
                    url=url,
                )
            writer = _PartWriter(part, start)
            hasher, head = (
                await anyio.to_thread.run_sync(_hash_prefix, part, start)
                if start
                else (hashlib.sha256(), b"")
            )
            check = _MediaCheck(url, kind, head) if self._check_media else None
            try:
                size = await self._stream(resp, writer, hasher, cap=cap, check=check, pace=pace)
            except (aiohttp.ClientError, TimeoutError):
                await anyio.to_thread.run_sync(writer.spill)  # a Range request continues it
                raise
            if check is not None:
                check.done()
        if expected is not None and size != expected:
            # the body ended early without the client noticing: keep the part, Range next time
            await anyio.to_thread.run_sync(writer.spill)
            raise _Retry(f"body ended at {size} of {expected} bytes")
        final = self._dir / f"{stem}{suffix}"
        await anyio.to_thread.run_sync(writer.publish, final)
        return FileRecord(path=str(final), sha256=hasher.hexdigest(), size=size, url=url)

    def _check_status(self, resp: aiohttp.ClientResponse, url: str, offset: int) -> int | None:
        """Return the offset the body starts at (None: range not satisfiable)."""
        status = resp.status
        if status == 200:
            return 0
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                # an answer for another range than asked: not trustworthy, start over
                return None
            return start
        if status == 416:
            return None
        if status in _GONE:
            raise ResultExpired(
                f"result URL answered HTTP {status}: expired or gone",
                url=url,
                http_status=status,
                expires_at=url_expiry(url),
            )
        if status == 429 or status >= 500:
            raise _Retry(
                f"HTTP {status}", status=status, after=_retry_after(resp.headers.get("Retry-After"))
            )
        raise DownloadError(
            f"result URL answered HTTP {status}",
            url=url,
            http_status=status,
            expires_at=url_expiry(url),
        )

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        writer: "_PartWriter",
        hasher: "hashlib._Hash",
        *,
        cap: int,
        check: "_MediaCheck | None",
        pace: "_Pace",
    ) -> int:
        """Read the body into ``writer``, spilling to the part file every few chunks.

        Raises:
            DownloadError: the body passed ``cap`` or is not the media expected.
        """
        size = writer.start
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise DownloadError(
                    f"result file is longer than the cap of {cap} bytes", url=str(resp.url)
                )
            if check is not None:
                check.feed(chunk)
            writer.add(chunk)
            hasher.update(chunk)
            self._bytes += len(chunk)
            pace.arrived(len(chunk))
            if writer.buffered >= _SPILL:
                await anyio.to_thread.run_sync(writer.spill)
        return size


class _PartWriter:
    """The part file of one attempt: chunks gathered in memory, written in few thread hops.

    A result file is usually small: it is then written, fsynced and renamed in one hop
    instead of one per chunk, open, flush, fsync and rename. Larger bodies are spilled to
    the part file every ``_SPILL`` bytes, and what arrived before a network error is
    spilled too, so the next attempt continues it with a Range request. The methods that
    touch the disk block: run them in a worker thread.
    """

    def __init__(self, part: pathlib.Path, start: int) -> None:
        self.part = part
        self.start = start
        self._chunks: list[bytes] = []
        self.buffered = 0
        self._append = start > 0  # else the first write truncates (a fresh or restarted file)

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk`` for the next write."""
        self._chunks.append(chunk)
        self.buffered += len(chunk)

    def _write(self) -> int:
        """Append what is gathered; return the open file descriptor."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self._append else os.O_TRUNC)
        fd = os.open(self.part, flags, 0o644)
        try:
            for chunk in self._chunks:
                write_all(fd, chunk)
        except BaseException:
            os.close(fd)
            raise
        self._chunks.clear()
        self.buffered = 0
        self._append = True
        return fd

    def spill(self) -> None:
        """Write what is gathered to the part file."""
        os.close(self._write())

    def publish(self, final: pathlib.Path) -> None:
        """Write the rest, fsync, and rename the part over ``final`` (durably)."""
        fd = self._write()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(self.part, final)


async def _size_or_zero(path: pathlib.Path) -> int:
    try:
        return (await anyio.Path(path).stat()).st_size
    except FileNotFoundError:
        return 0


def _hash_prefix(path: pathlib.Path, length: int) -> tuple["hashlib._Hash", bytes]:
    """Return the sha256 of the first ``length`` bytes of ``path``, and its first bytes."""
    hasher = hashlib.sha256()
    head = b""
    with path.open("rb") as file:
        remaining = length
        while remaining > 0 and (block := file.read(min(_CHUNK, remaining))):
            if len(head) < _HEAD:
                head += block[: _HEAD - len(head)]
            hasher.update(block)
            remaining -= len(block)
    return hasher, head


async def _discard(part: pathlib.Path) -> None:
    """Remove the part file of a download that failed for good."""
    with contextlib.suppress(OSError):
        await anyio.Path(part).unlink(missing_ok=True)


def _check_url(url: str, key: str, task_id: str | None) -> None:
    """Refuse a result URL that cannot be fetched, before any connection.

    Raises:
        DownloadError: it does not parse (bad port, broken IPv6 literal), is not http(s)
            or has no host.
    """
    try:
        parsed = yarl.URL(url)
        host, _ = parsed.host, parsed.port
    except (ValueError, TypeError) as exc:
        raise DownloadError(
            f"result URL cannot be parsed: {exc}", url=url, task_id=task_id, job_key=key
        ) from exc
    if parsed.scheme not in {"http", "https"}:
        raise DownloadError(
            f"result URL scheme {parsed.scheme!r} is not http(s)",
            url=url,
            task_id=task_id,
            job_key=key,
        )
    if not host:
        raise DownloadError("result URL has no host", url=url, task_id=task_id, job_key=key)


class _Budget:
    """Seconds of transfer a file has left over all its attempts."""

    def __init__(self, seconds: float) -> None:
        self._left = seconds

    def left(self) -> float:
        return self._left

    def spend(self, seconds: float) -> None:
        self._left -= seconds


class _Pace:
    """Moves an attempt's deadline on as bytes arrive: at least ``speed`` after the grace."""

    def __init__(self, grace_end: float, speed: float, limit: float) -> None:
        self.deadline = grace_end
        self.received = 0
        self._speed = speed
        self._limit = limit
        self.scope: anyio.CancelScope | None = None

    def arrived(self, n: int) -> None:
        self.received += n
        due = self.deadline + n / self._speed
        self.deadline = due
        if self.scope is not None:
            self.scope.deadline = min(due, self._limit)


class _MediaCheck:
    """Checks the first bytes of a body against the media its job expects."""

    def __init__(self, url: str, kind: str | None, head: bytes) -> None:
        self._url = url
        self._kind = kind
        self._head = head
        self._checked = False

    def feed(self, chunk: bytes) -> None:
        if self._checked:
            return
        self._head += chunk[: _HEAD - len(self._head)]
        if len(self._head) >= _HEAD:
            self.done()

    def done(self) -> None:
        """Judge the head gathered so far (the whole body, when it is short).

        Raises:
            DownloadError: the body is not a video or image, or not the kind expected.
        """
        if self._checked:
            return
        self._checked = True
        media = media_of(self._head)
        if media is None:
            raise DownloadError(
                f"result file is not a video or image (it begins {self._head[:12]!r})",
                url=self._url,
            )
        if self._kind is not None and media[0] != self._kind:
            raise DownloadError(
                f"result file is a{'n' if media[0] == 'image' else ''} {media[0]}"
                f" ({media[1]}), not the {self._kind} expected",
                url=self._url,
            )


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def _expected_size(resp: aiohttp.ClientResponse, start: int) -> int | None:
    if resp.status == 206:
        match = re.fullmatch(r"\s*bytes\s+\d+-\d+/(\d+)\s*", resp.headers.get("Content-Range", ""))
        if match:
            return int(match.group(1))
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return start + int(length)
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
