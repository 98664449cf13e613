"""What the command line shows while a batch runs: live rich view, plain lines, JSON events.

The run loop feeds one :class:`Display` with a :class:`Snapshot` (built by a
:class:`ProgressTracker` from the batch's ``statistics()``) a few times a second and
with each finished job; the display decides what to print. Four displays share the
interface: :class:`LiveDisplay` (a terminal), :class:`PlainDisplay` (a pipe or a log
file: periodic lines, no colours), :class:`JsonDisplay` (one JSON event per line) and
:class:`QuietDisplay`.
"""

import collections
import datetime
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Final, Protocol

import attrs
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = [
    "Display",
    "JobRecord",
    "JsonDisplay",
    "LiveDisplay",
    "PlainDisplay",
    "ProgressTracker",
    "QuietDisplay",
    "RunSummary",
    "Snapshot",
    "make_display",
]

PLAIN_INTERVAL: Final = 10.0
LIVE_JOB_LINES: Final = 200
RATE_WINDOW: Final = 60.0
_STATUS_STYLE: Final[Mapping[str, str]] = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "yellow",
    "stopped": "magenta",
    "invalid": "red",
    "download_failed": "red",
}
_STATUS_MARK: Final[Mapping[str, str]] = {
    "succeeded": "ok",
    "failed": "FAILED",
    "timed_out": "TIMED OUT",
    "stopped": "STOPPED",
    "invalid": "INVALID",
    "download_failed": "NO FILES",
}


class BatchStatisticsLike(Protocol):
    """The part of the engine's ``BatchStatistics`` the display reads."""

    @property
    def queued(self) -> int: ...
    @property
    def submitting(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def timed_out(self) -> int: ...
    @property
    def stopped(self) -> int: ...
    @property
    def download_failed(self) -> int: ...
    @property
    def downloading(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def requests(self) -> Mapping[str, int]: ...
    @property
    def limits(self) -> Mapping[Any, int]: ...


@attrs.frozen
class JobRecord:
    """One finished job as the results file and the displays see it."""

    key: str
    kind: str
    status: str
    task_id: str | None = None
    files: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    error: Mapping[str, object] | None = None
    units_charged: str | None = None
    attempts: int = 0
    run_time: float | None = None

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.status == "succeeded"

    def to_json(self) -> dict[str, object]:
        """The record as one line of ``results.jsonl``."""
        return {
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "task_id": self.task_id,
            "files": list(self.files),
            "urls": list(self.urls),
            "error": dict(self.error) if self.error is not None else None,
            "units_charged": self.units_charged,
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "JobRecord":
        """Read a record back from a line of ``results.jsonl``."""
        error = data.get("error")
        return cls(
            key=str(data["key"]),
            kind=str(data.get("kind", "")),
            status=str(data["status"]),
            task_id=data.get("task_id"),
            files=tuple(data.get("files") or ()),
            urls=tuple(data.get("urls") or ()),
            error=error if isinstance(error, dict) else None,
            units_charged=data.get("units_charged"),
            attempts=int(data.get("attempts") or 0),
        )

    def describe_error(self) -> str:
        """The error as one short line (empty when there is none)."""
        if not self.error:
            return ""
        kind = self.error.get("type")
        message = self.error.get("message") or ""
        return f"{kind}: {message}" if kind else str(message)


@attrs.frozen
class Snapshot:
    """The state of a run at one moment, ready to show."""

    total: int
    queued: int = 0
    submitting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    stopped: int = 0
    downloading: int = 0
    retries: int = 0
    requests: int = 0
    limits: Mapping[str, int] = attrs.field(factory=dict)
    elapsed: float = 0.0
    rate: float | None = None
    eta: float | None = None
    run_time: float | None = None

    @property
    def done(self) -> int:
        """Jobs that have ended, whatever the outcome."""
        return self.succeeded + self.failed + self.timed_out + self.stopped

    def to_json(self) -> dict[str, object]:
        """The snapshot as a JSON-ready mapping."""
        return {
            "total": self.total,
            "queued": self.queued,
            "submitting": self.submitting,
            "running": self.running,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "stopped": self.stopped,
            "downloading": self.downloading,
            "retries": self.retries,
            "requests": self.requests,
            "limits": dict(self.limits),
            "elapsed": round(self.elapsed, 3),
            "rate_per_min": None if self.rate is None else round(self.rate, 2),
            "eta": None if self.eta is None else round(self.eta, 1),
        }


@attrs.frozen
class RunSummary:
    """What the final table says."""

    total: int
    counts: Mapping[str, int]
    units_charged: float | None
    wall_time: float
    requests: Mapping[str, int]
    retries: int
    results_path: str | None
    out_dir: str | None
    journal: str | None
    exit_code: int
    stop_reason: str | None = None
    interrupted: bool = False
    hints: tuple[str, ...] = ()
    """What to do next (how to resume, where the errors are), shown after the table."""

    def to_json(self) -> dict[str, object]:
        """The summary as a JSON-ready mapping."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "units_charged": self.units_charged,
            "wall_time": round(self.wall_time, 3),
            "requests": dict(self.requests),
            "retries": self.retries,
            "results": self.results_path,
            "out_dir": self.out_dir,
            "journal": self.journal,
            "exit_code": self.exit_code,
            "stop_reason": self.stop_reason,
            "interrupted": self.interrupted,
            "hints": list(self.hints),
        }


class ProgressTracker:
    """Turns batch statistics and finished jobs into snapshots with a rate and an ETA.

    The ETA comes from the learned run times: per kind, the jobs left in waves of the
    current slot limit, each wave as long as the median run time of that kind (``priors``
    until a job of the kind has finished). Once the
    run is in a steady state (enough jobs finished, well past one run time), the recent
    completion rate takes over, since it already accounts for queueing and limits.
    """

    def __init__(
        self,
        total: int,
        *,
        kinds: Mapping[str, int] | None = None,
        priors: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self._priors = dict(priors or {})
        self._clock = clock
        self._started = clock()
        self._finished: collections.deque[float] = collections.deque()
        self._finished_count = 0
        self._kind_totals = dict(kinds or {})
        self._kind_done: collections.Counter[str] = collections.Counter()
        self._statuses: collections.Counter[str] = collections.Counter()
        self._run_times: dict[str, list[float]] = {}

    @property
    def elapsed(self) -> float:
        """Seconds since the tracker started."""
        return self._clock() - self._started

    def job_finished(self, kind: str, status: str, run_time: float | None) -> None:
        """Count one job whose outcome arrived, with its run time in seconds when known."""
        self._finished.append(self._clock())
        self._finished_count += 1
        self._kind_done[kind] += 1
        self._statuses[status] += 1
        if run_time is not None and run_time >= 0:
            self._run_times.setdefault(kind, []).append(run_time)

    def rate(self) -> float | None:
        """Jobs finished per minute over the last minute (or since the start)."""
        now = self._clock()
        while self._finished and now - self._finished[0] > RATE_WINDOW:
            self._finished.popleft()
        if self._finished_count < 2:
            return None
        window = min(RATE_WINDOW, max(now - self._started, 1.0))
        return len(self._finished) * 60.0 / window

    def run_time(self, kind: str | None = None) -> float | None:
        """The median run time of finished jobs (of one kind, or all), seconds."""
        if kind is not None:
            times = self._run_times.get(kind, [])
        else:
            times = [t for kind_times in self._run_times.values() for t in kind_times]
        return statistics.median(times) if times else None

    def eta(self, remaining: int, limits: Mapping[str, int]) -> float | None:
        """Seconds until every job has ended, or None while there is nothing to go by."""
        if remaining <= 0:
            return 0.0
        overall = self.run_time()
        rate = self.rate()
        steady = overall is not None and self._finished_count >= 10 and self.elapsed >= 2 * overall
        if steady and rate:
            return remaining * 60.0 / rate
        pools: dict[str, int] = {}
        for kind, total in self._kind_totals.items():
            left = max(total - self._kind_done[kind], 0)
            if left:
                pools[kind] = left
        rest = remaining - sum(pools.values())
        if rest > 0:
            pools[""] = rest
        known = [t for t in (self.run_time(kind) for kind in self._run_times) if t]
        fallback = max([*known, *self._priors.values()], default=None)
        waves = []
        for kind, left in pools.items():
            run_time = self.run_time(kind) or self._priors.get(kind) or fallback
            if run_time is None:
                return None
            slots = limits.get(kind) or max(sum(limits.values()), 1)
            # The first wave started with the run: count the time it has already had.
            waves.append(math.ceil(left / slots) * run_time - min(self.elapsed, run_time))
        return max(0.0, *waves)

    def snapshot(self, stats: BatchStatisticsLike | None) -> Snapshot:
        """A snapshot from the engine's statistics (None before the batch starts)."""
        if stats is None:
            return Snapshot(total=self.total, queued=self.total, elapsed=self.elapsed)
        limits = {str(getattr(kind, "value", kind)): int(n) for kind, n in stats.limits.items()}
        # The engine counts a job as downloading from its task's end until its files are
        # saved; its outcome (and the progress bar) comes a moment after that.
        ended = (
            stats.succeeded
            + stats.failed
            + stats.timed_out
            + stats.stopped
            + stats.download_failed
            + stats.downloading
        )
        delivered = self._finished_count
        return Snapshot(
            total=self.total,
            queued=stats.queued,
            submitting=stats.submitting,
            running=stats.running,
            succeeded=self._statuses["succeeded"],
            failed=self._statuses["failed"],
            timed_out=self._statuses["timed_out"],
            stopped=self._statuses["stopped"],
            downloading=max(ended - delivered, 0),
            retries=stats.retries,
            requests=sum(stats.requests.values()),
            limits=limits,
            elapsed=self.elapsed,
            rate=self.rate(),
            eta=self.eta(self.total - delivered, limits),
            run_time=self.run_time(),
        )


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` / ``4.2s``; a dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _limits_text(limits: Mapping[str, int]) -> str:
    if not limits:
        return "-"
    return " ".join(f"{kind} {n}" for kind, n in sorted(limits.items()))


def _rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/min"


def _counts_line(snap: Snapshot) -> str:
    parts = [
        f"queued {snap.queued}",
        f"submitting {snap.submitting}",
        f"running {snap.running}",
        *([f"downloading {snap.downloading}"] if snap.downloading else []),
        f"succeeded {snap.succeeded}",
        f"failed {snap.failed}",
    ]
    if snap.timed_out:
        parts.append(f"timed out {snap.timed_out}")
    if snap.stopped:
        parts.append(f"stopped {snap.stopped}")
    return " | ".join(parts)


class Display:
    """Base display: ignores everything (also the ``--quiet`` display)."""

    def notice(self, text: str) -> None:
        """A line worth reading before the run (target, simulator, resume hints)."""

    def warning(self, text: str) -> None:
        """Something went wrong that the user must see, even when quiet."""
        print(text, file=sys.stderr, flush=True)

    def problems(self, path: str, problems: Sequence[Any], *, rows: int) -> None:
        """Report a job file's validation problems (``JobProblem`` objects)."""
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        if problems:
            print(
                f"{path}: {len(problems)} problem(s) in {rows} row(s)", file=sys.stderr, flush=True
            )

    def start(self, snap: Snapshot, title: str) -> None:
        """The run begins."""

    def update(self, snap: Snapshot) -> None:
        """Called a few times a second while the run goes on."""

    def job(self, record: JobRecord, snap: Snapshot) -> None:
        """One job ended."""

    def stop(self, snap: Snapshot) -> None:
        """The run ended (before the summary); tear down any live view."""

    def summary(self, summary: RunSummary) -> None:
        """The final summary (quiet: only its hints, when the run did not succeed)."""
        if summary.exit_code:
            for hint in summary.hints:
                self.warning(hint)


QuietDisplay = Display


class JsonDisplay(Display):
    """One JSON object per line on stdout: machine-readable progress."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 1.0) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._interval = interval
        self._last = -math.inf

    def _emit(self, event: str, **fields: object) -> None:
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"event": event, "time": stamp, **fields}, ensure_ascii=False)
        self._stream.write(line + "\n")
        self._stream.flush()

    def notice(self, text: str) -> None:
        self._emit("notice", message=text)

    def warning(self, text: str) -> None:
        self._emit("warning", message=text)

    def problems(self, path: str, problems: Sequence[Any], *, rows: int) -> None:
        for problem in problems:
            self._emit("invalid", file=path, **problem.to_json())
        self._emit("validated", file=path, rows=rows, problems=len(problems))

    def start(self, snap: Snapshot, title: str) -> None:
        self._emit("start", title=title, **snap.to_json())
        self._last = snap.elapsed

    def update(self, snap: Snapshot) -> None:
        if snap.elapsed - self._last >= self._interval:
            self._last = snap.elapsed
            self._emit("progress", **snap.to_json())

    def job(self, record: JobRecord, snap: Snapshot) -> None:
        self._emit("job", **record.to_json())

    def stop(self, snap: Snapshot) -> None:
        self._emit("progress", **snap.to_json())

    def summary(self, summary: RunSummary) -> None:
        self._emit("summary", **summary.to_json())


class _ConsoleDisplay(Display):
    """Shared by the terminal and plain displays: notices, problems and the summary."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def notice(self, text: str) -> None:
        # Pipes and logs keep one line per message; terminals wrap at word boundaries.
        soft_wrap = not self.console.is_terminal
        self.console.print(text, highlight=False, markup=False, soft_wrap=soft_wrap)

    def problems(self, path: str, problems: Sequence[Any], *, rows: int) -> None:
        if not problems:
            return
        table = Table(
            title=f"{path}: {len(problems)} problem(s) in {rows} row(s)",
            box=box.SIMPLE if self.console.is_terminal else box.ASCII,
            title_justify="left",
        )
        table.add_column("line", justify="right")
        table.add_column("key")
        table.add_column("field")
        table.add_column("rule", overflow="fold")
        for problem in problems:
            cells = (str(problem.line), problem.key or "", problem.field or "", problem.rule)
            table.add_row(*map(Text, cells))  # Text: a job file's "[/red]" is not markup
        self.console.print(table)

    def summary(self, summary: RunSummary) -> None:
        self.console.print(render_summary(summary, terminal=self.console.is_terminal))
        for hint in summary.hints:
            self.notice(hint)


def render_summary(summary: RunSummary, *, terminal: bool) -> RenderableType:
    """The final table: counts, units charged, wall time, requests, where things are."""
    table = Table(
        title="kling-async summary",
        box=box.ROUNDED if terminal else box.ASCII,
        show_header=False,
        title_justify="left",
    )
    table.add_column("what", style="bold" if terminal else None)
    table.add_column("value")
    table.add_row("jobs", str(summary.total))
    statuses = ("succeeded", "download_failed", "failed", "timed_out", "stopped", "invalid")
    for status in (*statuses, "unfinished"):
        count = summary.counts.get(status, 0)
        if count or status in {"succeeded", "failed"}:
            style = _STATUS_STYLE.get(status) if terminal and count else None
            table.add_row(f"  {status.replace('_', ' ')}", Text(str(count), style=style or ""))
    units = "not reported" if summary.units_charged is None else f"{summary.units_charged:g}"
    table.add_row("units charged", units)
    table.add_row("wall time", format_duration(summary.wall_time))
    requests = sum(summary.requests.values())
    detail = ", ".join(f"{name} {n}" for name, n in sorted(summary.requests.items()) if n)
    table.add_row("requests made", f"{requests} ({detail})" if detail else str(requests))
    table.add_row("retries", str(summary.retries))
    if summary.results_path:
        table.add_row("results", Text(summary.results_path))
    if summary.out_dir:
        table.add_row("files in", Text(summary.out_dir))
    if summary.journal:
        table.add_row("journal", Text(summary.journal))
    if summary.stop_reason:
        table.add_row("stopped by", Text(summary.stop_reason, style="magenta" if terminal else ""))
    return table


class PlainDisplay(_ConsoleDisplay):
    """For pipes and log files: a progress line every ``interval`` seconds, failures as
    they happen, no colours and no cursor tricks."""

    def __init__(self, console: Console, interval: float = PLAIN_INTERVAL) -> None:
        super().__init__(console)
        self._interval = interval
        self._last = 0.0

    def _line(self, snap: Snapshot) -> None:
        self.console.print(
            f"[{format_duration(snap.elapsed)}] {snap.done}/{snap.total} done | "
            f"{_counts_line(snap)} | rate {_rate_text(snap.rate)} | "
            f"ETA {format_duration(snap.eta)} | slots {_limits_text(snap.limits)} | "
            f"retries {snap.retries} | requests {snap.requests}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def start(self, snap: Snapshot, title: str) -> None:
        self.console.print(title, highlight=False, markup=False, soft_wrap=True)
        self._last = snap.elapsed

    def update(self, snap: Snapshot) -> None:
        if snap.elapsed - self._last >= self._interval:
            self._last = snap.elapsed
            self._line(snap)

    def job(self, record: JobRecord, snap: Snapshot) -> None:
        if not record.ok:
            text = f"{_STATUS_MARK.get(record.status, record.status)} {record.key}"
            detail = record.describe_error()
            self.console.print(
                f"{text}: {detail}" if detail else text,
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def stop(self, snap: Snapshot) -> None:
        self._line(snap)


class LiveDisplay(_ConsoleDisplay):
    """A live view for terminals: a bar, the counts by state, rate, ETA, slot limits and
    retries, with each finished job printed above it (only failures past
    ``LIVE_JOB_LINES`` jobs)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._title = ""
        self._snap = Snapshot(total=0)
        self._live: Live | None = None

    def _render(self) -> RenderableType:
        snap = self._snap
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(snap.total, 1), completed=snap.done, width=40),
            Text(f"{snap.done}/{snap.total}", style="bold"),
            Text(f"{format_duration(snap.elapsed)} elapsed", style="dim"),
        )
        counts = Table.grid(padding=(0, 2))
        cells = [
            ("queued", snap.queued, "white"),
            ("submitting", snap.submitting, "cyan"),
            ("running", snap.running, "blue"),
            *([("downloading", snap.downloading, "cyan")] if snap.downloading else []),
            ("succeeded", snap.succeeded, "green"),
            ("failed", snap.failed, "red"),
        ]
        if snap.timed_out:
            cells.append(("timed out", snap.timed_out, "yellow"))
        if snap.stopped:
            cells.append(("stopped", snap.stopped, "magenta"))
        counts.add_row(
            *(Text.assemble((f"{n}", f"bold {style}"), f" {label}") for label, n, style in cells)
        )
        info = Table.grid(padding=(0, 2))
        run_time = "" if snap.run_time is None else f" (run time ~{format_duration(snap.run_time)})"
        info.add_row(
            Text(f"rate {_rate_text(snap.rate)}"),
            Text(f"ETA {format_duration(snap.eta)}{run_time}"),
            Text(f"slots {_limits_text(snap.limits)}"),
            Text(f"retries {snap.retries}"),
            Text(f"requests {snap.requests}"),
        )
        return Group(Text(self._title, style="bold"), bar, counts, info)

    def start(self, snap: Snapshot, title: str) -> None:
        self._title = title
        self._snap = snap
        self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def update(self, snap: Snapshot) -> None:
        self._snap = snap
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def job(self, record: JobRecord, snap: Snapshot) -> None:
        self._snap = snap
        if record.ok and snap.total > LIVE_JOB_LINES:
            # Big batches: only the jobs that need attention scroll by.
            self.update(snap)
            return
        style = _STATUS_STYLE.get(record.status, "")
        mark = "✓" if record.ok else "✗"
        line = Text.assemble((f"{mark} ", style), (record.key, "bold"), f"  {record.kind}")
        if record.ok:
            files = ", ".join(record.files) if record.files else "no files"
            line.append(f"  {files}", style="dim")
        else:
            line.append(f"  {_STATUS_MARK.get(record.status, record.status)}", style=style)
            detail = record.describe_error()
            if detail:
                line.append(f"  {detail}")
        self.console.print(line)
        self.update(snap)

    def stop(self, snap: Snapshot) -> None:
        self._snap = snap
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None


def make_display(*, json_events: bool, quiet: bool, console: Console | None = None) -> Display:
    """The display for the given flags and stdout: live when it is a terminal."""
    if json_events:
        return JsonDisplay()
    if quiet:
        return QuietDisplay()
    console = console if console is not None else Console(highlight=False)
    return LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
