"""``report.html``: one self-contained page about a run, made from its journal and files.

The page has the summary (jobs by state, units, wall time, requests, retries, 1303
answers), a gallery of the results (images, animations and video players with their
key, prompt and input thumbnails), the failures grouped by error, and a timeline chart
of the account slots in use per kind with the submissions, 1303 answers and retries
marked (inline SVG drawn here, from ``timeline.jsonl``).

The page needs no network (no script, no font, no stylesheet from elsewhere), refers to
files by paths relative to the output folder (zip the folder and share it), and holds no
secret: no key, no absolute path, no signed download URL.

The chart is drawn by hand as SVG: a step area per kind with the limit as a dashed line
and the waits for a slot shaded, over a strip of binned event ticks. Chart libraries
(pygal, for one) draw line and bar charts with JavaScript tooltips loaded from a CDN by
default; this chart is a few dozen SVG elements and needs neither.
"""

import base64
import binascii
import contextlib
import hashlib
import importlib
import io
import json
import math
import os
import pathlib
import re
import statistics
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import anyio
import attrs
import jinja2
from markupsafe import Markup, escape

import kling_async as ka

from .progress import JobRecord, format_duration
from .results import RESULTS_FILE, count_statuses, total_units
from .timeline import TIMELINE_FILE, RunTimeline, Sample, read_timeline

__all__ = [
    "ASSETS_DIR",
    "REPORT_FILE",
    "SECRET_ENV",
    "Report",
    "build_report",
    "render_report",
    "scrub",
    "timeline_svg",
    "write_report",
]

REPORT_FILE: Final = "report.html"
ASSETS_DIR: Final = "report-files"
"""Thumbnails made for the report, inside the output folder."""
SECRET_ENV: Final = ("COMETAPI_KEY", "KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY")
THUMB_SIZE: Final = 160
SHOWN_KEYS: Final = 40
"""Keys listed per failure group before the rest folds away."""
IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
VIDEO_SUFFIXES: Final = frozenset({".mp4", ".webm", ".mov", ".m4v"})
POSTER_SIZE: Final = 480
EAGER_VIDEOS: Final = 12
"""Players given their file and poster in the page; the others get them from a small
inline script as they come near the view (hundreds of players that all read their
files and posters at once take seconds to open; these take a blink)."""
POSTER_PATTERNS: Final = ("{}.poster{}", "{}-poster{}", "{}{}")
POSTER_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".webp")
STATE_ORDER: Final = ("succeeded", "failed", "timed_out", "stopped", "invalid", "unfinished")

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s/\"'<>?#]+)([^\s\"'<>?#]*)[^\s\"'<>]*")
_ABSOLUTE = re.compile(r"(?<![\w./:~-])(?:~|[A-Za-z]:)?[/\\](?:[^\s/\\\"'<>:]+[/\\])+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without secrets, URL queries (signatures) or folders of absolute paths."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}{m.group(3)}", text)
    return _ABSOLUTE.sub(".../", text)


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(value for name in SECRET_ENV if (value := env.get(name, "")) and len(value) >= 4)


# --- the page's data ------------------------------------------------------------------------


@attrs.frozen
class Media:
    """One result file as the gallery shows it."""

    element: str  # "img" or "video"
    src: str  # URL-quoted path relative to the report
    name: str
    poster: str | None = None
    lazy: bool = False

    @property
    def preload(self) -> str:
        """A poster shows until play; without one the player reads the first frame."""
        return "none" if self.poster else "metadata"


@attrs.frozen
class InputThumb:
    """One input image: a thumbnail, or a label when none could be made."""

    label: str
    src: str | None = None


@attrs.frozen
class Card:
    """A gallery card: one job that succeeded."""

    key: str
    kind: str
    prompt: str
    media: tuple[Media, ...]
    missing: tuple[str, ...]
    inputs: tuple[InputThumb, ...]
    units: str | None


@attrs.frozen
class FailureGroup:
    """Jobs that ended with the same error."""

    title: str
    detail: str
    status: str
    keys: tuple[str, ...]

    @property
    def shown(self) -> tuple[str, ...]:
        """The first keys, listed openly."""
        return self.keys[:SHOWN_KEYS]

    @property
    def folded(self) -> tuple[str, ...]:
        """The rest of the keys (in a fold)."""
        return self.keys[SHOWN_KEYS:]


@attrs.frozen
class Fact:
    """A label and a value of the summary."""

    label: str
    value: str
    note: str = ""


@attrs.frozen
class Report:
    """Everything the page shows."""

    title: str
    generated: str
    total: int
    states: tuple[tuple[str, int], ...]
    facts: tuple[Fact, ...]
    findings: tuple[str, ...]
    cards: tuple[Card, ...]
    failures: tuple[FailureGroup, ...]
    timeline: Markup | None
    runs: int

    @property
    def failed_jobs(self) -> int:
        """Jobs in the failure groups."""
        return sum(len(group.keys) for group in self.failures)


# --- reading the run ------------------------------------------------------------------------


def _read_results(path: pathlib.Path) -> list[JobRecord]:
    records: dict[str, JobRecord] = {}
    if path.is_file():
        with path.open(encoding="utf-8") as stream:
            for line in stream:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = JobRecord.from_json(json.loads(line))
                    records[record.key] = record
    return list(records.values())


async def _read_rows(journal: pathlib.Path) -> list[ka.JobRecord]:
    async with ka.SqliteJournal.open(journal, readonly=True) as store:
        plan = await store.resume()
        return sorted(plan.rows(), key=lambda row: row.created_at)


_ROW_STATUS: Final[Mapping[str, str]] = {
    "DOWNLOADED": "succeeded",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "TIMED_OUT": "timed_out",
}


def _record_of_row(row: ka.JobRecord, out_dir: pathlib.Path) -> JobRecord | None:
    """What results.jsonl would say of a journal row that ended (None: not ended)."""
    status = _ROW_STATUS.get(row.state.value)
    if status is None:
        return None
    units = (row.result or {}).get("final_unit_deduction")
    files = (_moved_file(file.path, out_dir) for file in row.files)
    return JobRecord(
        key=row.key,
        kind=row.kind,
        status=status,
        task_id=row.task_id,
        files=tuple(path for path in files if path is not None),
        error=None if row.error is None else row.error.to_json(),
        units_charged=None if units is None else str(units),
        attempts=row.attempts,
    )


def _moved_file(path: str, out_dir: pathlib.Path) -> str | None:
    """A journal's absolute path, relative to ``out_dir`` (also after the folder moved)."""
    relative = _relative_file(path, out_dir)
    if relative is None and (out_dir / pathlib.PurePath(path).name).is_file():
        return pathlib.PurePath(path).name
    return relative


def _relative_file(path: str, out_dir: pathlib.Path) -> str | None:
    candidate = pathlib.Path(path)
    if not candidate.is_absolute():
        return candidate.as_posix()
    with contextlib.suppress(ValueError):
        return candidate.resolve().relative_to(out_dir.resolve()).as_posix()
    return None


def _quote(relative: str) -> str:
    return urllib.parse.quote(relative, safe="/")


def _thumbnail(source: bytes | pathlib.Path, target: pathlib.Path) -> bool:
    """Write a JPEG thumbnail of ``source`` to ``target`` (Pillow); False when not possible."""
    if target.is_file():
        return True
    try:
        from PIL import Image  # noqa: PLC0415 - optional: the simulator extra brings it
    except ImportError:
        return False
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with opened as picture:
            picture.thumbnail((THUMB_SIZE, THUMB_SIZE))
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".tmp")
            picture.convert("RGB").save(temporary, format="JPEG", quality=80)
            temporary.replace(target)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


class _Inputs:
    """Thumbnails of the jobs' input images, made once per distinct image."""

    def __init__(self, out_dir: pathlib.Path) -> None:
        self.folder = out_dir / ASSETS_DIR / "inputs"
        self._done: dict[str, InputThumb] = {}

    def thumbs(self, record: Mapping[str, Any] | None) -> tuple[InputThumb, ...]:
        if not record:
            return ()
        images = record.get("images") or ()
        return tuple(self._thumb(image) for image in images if isinstance(image, Mapping))

    def _thumb(self, image: Mapping[str, Any]) -> InputThumb:
        for origin in ("path", "base64", "url"):
            value = image.get(origin)
            if isinstance(value, str) and value:
                cached = self._done.get(value)
                if cached is None:
                    cached = self._done[value] = self._make(origin, value)
                return cached
        return InputThumb(label="image")

    def _make(self, origin: str, value: str) -> InputThumb:
        if origin == "url":
            parsed = urllib.parse.urlsplit(value)
            return InputThumb(label=parsed.path.rsplit("/", 1)[-1] or parsed.netloc or "URL")
        if origin == "path":
            path = pathlib.Path(value)
            label = path.name
            try:
                stat = path.stat()
            except OSError:
                return InputThumb(label=label)
            digest = hashlib.sha256(f"{value}\0{stat.st_mtime_ns}\0{stat.st_size}".encode())
            source: bytes | pathlib.Path = path
        else:
            label = "Base64 image"
            digest = hashlib.sha256(value.encode())
            try:
                source = base64.b64decode(value.split(",", 1)[-1], validate=False)
            except (binascii.Error, ValueError):
                return InputThumb(label=label)
        name = digest.hexdigest()[:20] + ".jpg"
        if _thumbnail(source, self.folder / name):
            return InputThumb(label=label, src=_quote(f"{ASSETS_DIR}/inputs/{name}"))
        return InputThumb(label=label)


def _poster(file: pathlib.Path, out_dir: pathlib.Path) -> str | None:
    """A poster image the folder has for ``file`` (``x.poster.jpg``, ``x.jpg``...), else one
    made from the video's first frame (PyAV, when installed)."""
    for pattern in POSTER_PATTERNS:
        for suffix in POSTER_SUFFIXES:
            candidate = file.with_name(pattern.format(file.stem, suffix))
            if candidate.is_file():
                relative = _relative_file(str(candidate), out_dir)
                if relative is not None:
                    return _quote(relative)
    return _first_frame(file, out_dir)


def _first_frame(file: pathlib.Path, out_dir: pathlib.Path) -> str | None:
    try:
        av: Any = importlib.import_module("av")  # optional: the simulator extra brings it
    except ImportError:
        return None
    stat = file.stat()
    digest = hashlib.sha256(f"{file.name}\0{stat.st_mtime_ns}\0{stat.st_size}".encode())
    name = f"{file.stem[:40]}-{digest.hexdigest()[:12]}.jpg"
    target = out_dir / ASSETS_DIR / "posters" / name
    if not target.is_file():
        try:
            with av.open(str(file)) as container:
                picture = next(container.decode(video=0)).to_image()
            picture.thumbnail((POSTER_SIZE, POSTER_SIZE))
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".tmp")
            picture.convert("RGB").save(temporary, format="JPEG", quality=80)
            temporary.replace(target)
        except (OSError, ValueError, StopIteration, ImportError, av.FFmpegError):
            return None
    return _quote(f"{ASSETS_DIR}/posters/{name}")


def _media(
    files: Sequence[str], out_dir: pathlib.Path, eager: list[int]
) -> tuple[list[Media], list[str]]:
    media: list[Media] = []
    missing: list[str] = []
    for relative in files:
        path = out_dir / relative
        name = pathlib.PurePath(relative).name
        suffix = path.suffix.lower()
        if not path.is_file():
            missing.append(name)
        elif suffix in VIDEO_SUFFIXES:
            eager[0] -= 1
            lazy = eager[0] < 0
            media.append(Media("video", _quote(relative), name, _poster(path, out_dir), lazy))
        elif suffix in IMAGE_SUFFIXES:
            media.append(Media("img", _quote(relative), name))
        else:
            missing.append(name)
    return media, missing


def _files_of(record: JobRecord, out_dir: pathlib.Path) -> list[str]:
    relative = (_relative_file(path, out_dir) for path in record.files)
    return [path for path in relative if path is not None and not path.startswith("../")]


# --- failures -------------------------------------------------------------------------------


def _group_failures(
    keys: Sequence[str],
    records: Mapping[str, JobRecord],
    rows: Mapping[str, ka.JobRecord],
    secrets: Sequence[str],
) -> tuple[FailureGroup, ...]:
    groups: dict[tuple[str, str, str], list[str]] = {}
    for key in keys:
        record, row = records.get(key), rows.get(key)
        if record is not None and record.status == "succeeded" and not _download_failed(record):
            continue
        if record is None:
            state = row.state.value if row is not None else "unknown"
            title, detail, status = "Unfinished", f"journal state {state}", "unfinished"
        else:
            title, detail = _describe_error(record.error or {}, record.status, secrets)
            status = record.status
        groups.setdefault((status, title, detail), []).append(key)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return tuple(
        FailureGroup(title=title, detail=detail, status=status, keys=tuple(group))
        for (status, title, detail), group in ordered
    )


def _download_failed(record: JobRecord) -> bool:
    return record.error is not None


def _describe_error(
    error: Mapping[str, Any], status: str, secrets: Sequence[str]
) -> tuple[str, str]:
    kind = str(error.get("type") or status.replace("_", " "))
    code = error.get("code")
    title = f"{kind} (code {code})" if isinstance(code, int) else kind
    parts: list[str] = []
    field = error.get("field")
    rule = error.get("rule")
    if isinstance(field, str) and field:
        parts.append(f"field {field}")
    if isinstance(rule, str) and rule:
        parts.append(rule)
    else:
        reason = error.get("reason")
        message = reason.get("message") if isinstance(reason, Mapping) else error.get("message")
        if isinstance(message, str) and message:
            parts.append(message)
    if status == "succeeded":
        parts.insert(0, "the task succeeded but its download failed")
    return title, scrub(": ".join(parts), secrets) or status


# --- summary and findings -------------------------------------------------------------------


def _states(keys: Sequence[str], records: Mapping[str, JobRecord]) -> tuple[tuple[str, int], ...]:
    counts = count_statuses(records[key] for key in keys if key in records)
    unfinished = sum(1 for key in keys if key not in records)
    if unfinished:
        counts["unfinished"] = unfinished
    order = {name: index for index, name in enumerate(STATE_ORDER)}
    return tuple(sorted(counts.items(), key=lambda item: (order.get(item[0], 99), item[0])))


def _wall_time(runs: Sequence[RunTimeline], rows: Sequence[ka.JobRecord]) -> float | None:
    if runs:
        return sum(max(0.0, run.end - run.start) for run in runs)
    if rows:
        span: float = max(row.updated_at for row in rows) - min(row.created_at for row in rows)
        return max(0.0, span)
    return None


def _totals(runs: Sequence[RunTimeline]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for run in runs:
        last = run.last
        for name, value in (("retries", last.retries), ("busy", last.busy)):
            totals[name] = totals.get(name, 0) + value
        for name, value in last.requests.items():
            totals[f"requests.{name}"] = totals.get(f"requests.{name}", 0) + value
    return totals


def _waiting_share(runs: Sequence[RunTimeline]) -> float | None:
    """Share of run time during which some job waited for an account slot."""
    total = waited = 0.0
    for run in runs:
        previous: Sample | None = None
        for sample in run.samples:
            if previous is not None:
                span = max(0.0, sample.t - previous.t)
                total += span
                if any(value[2] > 0 for value in previous.slots.values()):
                    waited += span
            previous = sample
    return waited / total if total > 0 else None


def _poll_lags(rows: Sequence[Any], time_scale: float) -> list[tuple[float, float]]:
    """(lag, slot time) per finished job: how long after the server's end the client saw it."""
    lags: list[tuple[float, float]] = []
    for row in rows:
        result = row.result
        if not result or row.submitted_at is None or row.finished_at is None:
            continue
        created, updated = result.get("created_at"), result.get("updated_at")
        if not isinstance(created, int | float) or not isinstance(updated, int | float):
            continue
        held = row.finished_at - row.submitted_at
        server = max(0.0, (updated - created) / 1000 * time_scale)
        if held > 0:
            lags.append((max(0.0, held - server), held))
    return lags


def _findings(
    runs: Sequence[RunTimeline], rows: Sequence[ka.JobRecord], totals: Mapping[str, int]
) -> tuple[str, ...]:
    findings: list[str] = []
    share = _waiting_share(runs)
    if share is not None:
        percent = round(share * 100)
        if share >= 0.2:
            findings.append(
                f"The account's slot limit held the run back: jobs waited for a free slot "
                f"during {percent}% of the run."
            )
        else:
            findings.append(
                f"The slot limit was not the bottleneck: jobs waited for a free slot during "
                f"{percent}% of the run."
            )
    scale = runs[-1].time_scale if runs else 1.0
    lags = _poll_lags(rows, scale)
    if lags:
        median = statistics.median(lag for lag, _ in lags)
        held = sum(span for _, span in lags)
        wasted = sum(lag for lag, _ in lags) / held if held else 0.0
        findings.append(
            f"Polling: a task was seen to end a median {format_duration(median)} after it "
            f"ended on the server ({round(wasted * 100)}% of the time slots were held)."
        )
    busy = totals.get("busy", 0)
    if busy:
        findings.append(
            f"The server answered 1303 (account concurrency limit) {busy} time(s); the client "
            "lowered its slot limit and sent those jobs again."
        )
    return tuple(findings)


def _facts(
    total: int,
    records: Sequence[JobRecord],
    runs: Sequence[RunTimeline],
    rows: Sequence[ka.JobRecord],
    totals: Mapping[str, int],
) -> tuple[Fact, ...]:
    units = total_units(records)
    wall = _wall_time(runs, rows)
    requests = {name[9:]: n for name, n in totals.items() if name.startswith("requests.")}
    facts = [
        Fact("jobs", str(total)),
        Fact("units charged", "n/a" if units is None else f"{units:g}"),
        Fact(
            "wall time",
            "n/a" if wall is None else format_duration(wall),
            f"{len(runs)} runs" if len(runs) > 1 else "",
        ),
        Fact(
            "requests",
            str(sum(requests.values())) if runs else "n/a",
            ", ".join(f"{name} {n}" for name, n in sorted(requests.items())),
        ),
        Fact("retries", str(totals.get("retries", 0)) if runs else "n/a"),
        Fact("1303 answers", str(totals.get("busy", 0)) if runs else "n/a"),
    ]
    return tuple(facts)


# --- the timeline chart ---------------------------------------------------------------------

_W: Final = 960
_LEFT: Final = 96
_RIGHT: Final = 44
_PANEL: Final = 110
_GAP: Final = 26
_MARK_ROW: Final = 18
_AXIS: Final = 26
_BINS: Final = 240
_KIND_COLOUR: Final[Mapping[str, str]] = {"video": "#3b6fd8", "image": "#2e9d62"}
_MARKS: Final = (
    ("creates", "submissions", "#3b6fd8"),
    ("retries", "retries", "#e08a1e"),
    ("busy", "1303 answers", "#d33a3a"),
)
_NICE_STEPS: Final = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
    7200, 14400, 21600, 43200, 86400,
)  # fmt: skip


def _step(span: float) -> float:
    for step in _NICE_STEPS:
        if span / step <= 10:
            return step
    return span / 10


def _tick_label(seconds: float, step: float) -> str:
    if step >= 60:
        minutes, rest = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"
    digits = 0 if step >= 1 else (1 if step >= 0.1 else 2)
    return f"{seconds:.{digits}f} s"


def _kinds(samples: Sequence[Sample]) -> list[str]:
    seen: dict[str, bool] = {}
    for sample in samples:
        for kind, (in_use, _, waiting) in sample.slots.items():
            seen[kind] = seen.get(kind, False) or in_use > 0 or waiting > 0
    active = [kind for kind, used in seen.items() if used]
    return sorted(active or seen, key=lambda kind: (kind != "video", kind))


def timeline_svg(run: RunTimeline) -> Markup:
    """The chart of one run: slots in use per kind over time, and the events below."""
    samples = run.samples
    kinds = _kinds(samples)
    t0 = run.start
    span = max(run.end - t0, 1e-3)
    plot = _W - _LEFT - _RIGHT

    def x(t: float) -> float:
        return round(_LEFT + (t - t0) / span * plot, 1)

    parts: list[str] = []
    top = 8
    for kind in kinds:
        parts.extend(_panel(kind, samples, top, x))
        top += _PANEL + _GAP
    parts.extend(_marks(samples, top, t0, span, x))
    top += _MARK_ROW * len(_MARKS)
    step = _step(span)
    ticks = int(span / step) + 1
    for index in range(ticks):
        at = index * step
        left = x(t0 + at)
        parts.append(
            f'<line x1="{left}" y1="8" x2="{left}" y2="{top}" class="grid"/>'
            f'<text x="{left}" y="{top + 16}" class="tick" text-anchor="middle">'
            f"{_tick_label(at, step)}</text>"
        )
    height = top + _AXIS
    label = escape(f"Account slots in use per kind over {format_duration(span)}")
    # Every text inside is escaped above or is a number: the SVG is safe markup.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
        f'width="100%" role="img" aria-label="{label}" class="timeline">'
        f"<title>{label}</title>{''.join(parts)}</svg>"
    )


def _panel(kind: str, samples: Sequence[Sample], top: int, x: Any) -> list[str]:
    points = [(s.t, *s.slots[kind]) for s in samples if kind in s.slots]
    colour = _KIND_COLOUR.get(kind, "#7a5cc7")
    ceiling = max([1, *(max(use, limit) for _, use, limit, _ in points)])
    bottom = top + _PANEL

    def y(value: int) -> float:
        return round(bottom - value / ceiling * (_PANEL - 8), 1)

    parts = [
        f'<text x="{_LEFT}" y="{top + 4}" class="panel">{escape(kind)} slots</text>',
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{_W - _RIGHT}" y2="{bottom}" class="axis"/>',
        f'<text x="{_LEFT - 6}" y="{y(ceiling) + 4}" class="tick" text-anchor="end">'
        f"{ceiling}</text>",
        f'<text x="{_LEFT - 6}" y="{bottom + 4}" class="tick" text-anchor="end">0</text>',
    ]
    # Shaded: some job of this kind waited for a slot (the limit held it back).
    start: float | None = None
    for (t, _, _, waiting), nxt in zip(points, [*points[1:], None], strict=True):
        if waiting > 0 and start is None:
            start = t
        end = nxt[0] if nxt is not None else t
        if start is not None and (nxt is None or nxt[3] == 0):
            parts.append(
                f'<rect x="{x(start)}" y="{top + 8}" width="{max(0.5, x(end) - x(start))}" '
                f'height="{_PANEL - 8}" class="waiting"><title>jobs waiting for a slot</title>'
                "</rect>"
            )
            start = None
    used = [f"M{x(points[0][0])},{bottom}"]
    limit = [f"M{x(points[0][0])},{y(points[0][2])}"]
    for index, (t, use, cap, _) in enumerate(points):
        following = points[index + 1][0] if index + 1 < len(points) else t
        used.append(f"V{y(use)}H{x(following)}")
        limit.append(f"V{y(cap)}H{x(following)}")
    used.append(f"V{bottom}Z")
    peak = max(use for _, use, _, _ in points)
    parts.append(
        f'<path d="{"".join(used)}" fill="{colour}" fill-opacity="0.35" stroke="{colour}" '
        f'stroke-width="1.2"><title>{escape(kind)}: up to {peak} slot(s) in use</title></path>'
    )
    parts.append(
        f'<path d="{"".join(limit)}" class="limit"><title>slot limit (adapts to 1303 answers)'
        "</title></path>"
    )
    return parts


def _marks(samples: Sequence[Sample], top: int, t0: float, span: float, x: Any) -> list[str]:
    parts: list[str] = []
    width = span / _BINS
    for row, (field, label, colour) in enumerate(_MARKS):
        bins: dict[int, int] = {}
        previous = 0
        for sample in samples:
            value = int(getattr(sample, field))
            if value > previous:
                index = min(_BINS - 1, int((sample.t - t0) / width))
                bins[index] = bins.get(index, 0) + value - previous
            previous = value
        base = top + (row + 1) * _MARK_ROW - 4
        total = sum(bins.values())
        parts.append(
            f'<text x="{_LEFT - 6}" y="{base}" class="tick" text-anchor="end">{label}</text>'
        )
        if not bins:
            continue
        biggest = max(bins.values())
        for index, count in sorted(bins.items()):
            height = round(4 + 9 * math.sqrt(count / biggest), 1)
            at = x(t0 + index * width)
            parts.append(
                f'<rect x="{at}" y="{base - height}" width="3" height="{height}" '
                f'fill="{colour}" class="mark mark-{field}"><title>{count} {label} '
                f"at {_tick_label(index * width, _step(span))}</title></rect>"
            )
        parts.append(f'<text x="{_W - 2}" y="{base}" class="tick" text-anchor="end">{total}</text>')
    return parts


# --- building and writing -------------------------------------------------------------------


def build_report(
    out_dir: pathlib.Path,
    *,
    journal: pathlib.Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Read the run in ``out_dir`` (results, journal, timeline) into what the page shows.

    Raises:
        kling_async.JournalError: the journal exists but cannot be read.
    """
    secrets = _secrets(os.environ if env is None else env)
    journal = journal if journal is not None else out_dir / "journal.sqlite"
    records_list = _read_results(out_dir / RESULTS_FILE)
    rows_list: list[ka.JobRecord] = anyio.run(_read_rows, journal) if journal.is_file() else []
    runs = read_timeline(out_dir / TIMELINE_FILE)
    records = {record.key: record for record in records_list}
    for row in rows_list:  # a run cut short before its results were written
        if row.key not in records and (derived := _record_of_row(row, out_dir)) is not None:
            records[row.key] = derived
            records_list.append(derived)
    rows = {row.key: row for row in rows_list}
    keys = list(dict.fromkeys([*(row.key for row in rows_list), *records]))
    inputs = _Inputs(out_dir)
    eager = [EAGER_VIDEOS]
    cards: list[Card] = []
    for key in keys:
        record, journaled = records.get(key), rows.get(key)
        if record is None or record.status != "succeeded":
            continue
        media, missing = _media(_files_of(record, out_dir), out_dir, eager)
        request = journaled.record if journaled is not None else None
        prompt = request.get("prompt") if request else None
        cards.append(
            Card(
                key=key,
                kind=record.kind,
                prompt=scrub(prompt, secrets) if isinstance(prompt, str) else "",
                media=tuple(media),
                missing=tuple(missing),
                inputs=inputs.thumbs(request),
                units=record.units_charged,
            )
        )
    totals = _totals(runs)
    chart = timeline_svg(runs[-1]) if runs and runs[-1].samples else None
    return Report(
        title=f"Run report: {out_dir.resolve().name}",
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        total=len(keys),
        states=_states(keys, records),
        facts=_facts(len(keys), records_list, runs, rows_list, totals),
        findings=_findings(runs, rows_list, totals),
        cards=tuple(cards),
        failures=_group_failures(keys, records, rows, secrets),
        timeline=chart,
        runs=len(runs),
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kling_async._cli", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(report: Report, env: Mapping[str, str] | None = None) -> str:
    """The HTML page of ``report`` (any key found in ``env`` is redacted once more)."""
    html = _environment().get_template("report.html.j2").render(report=report)
    for secret in _secrets(os.environ if env is None else env):
        html = html.replace(secret, "[redacted]")
    return html


def write_report(
    out_dir: pathlib.Path,
    *,
    journal: pathlib.Path | None = None,
    env: Mapping[str, str] | None = None,
) -> pathlib.Path:
    """Build and write ``out_dir/report.html`` (atomically); return its path.

    Raises:
        OSError: the folder cannot be written.
        kling_async.JournalError: the journal exists but cannot be read.
    """
    report = build_report(out_dir, journal=journal, env=env)
    html = render_report(report, env)
    target = out_dir / REPORT_FILE
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(target)
    return target
