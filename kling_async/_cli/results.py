"""The results file of a run: one JSON line per job, and the counts of the final summary.

Lines are appended as jobs finish (a crash keeps what was written), and the file is
rewritten once at the end with one line per key, in job-file order, so a resumed run
leaves a single clean ``results.jsonl``.
"""

import contextlib
import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Final

import kling_async as ka

from .jobs import JobProblem
from .progress import JobRecord

__all__ = [
    "RESULTS_FILE",
    "ResultsWriteError",
    "ResultsWriter",
    "count_statuses",
    "error_json",
    "invalid_record",
    "record_from_outcome",
    "total_units",
]

RESULTS_FILE: Final = "results.jsonl"
# What a damaged line of an earlier run raises when read back (it is skipped).
_UNREADABLE_LINE: Final = (ValueError, LookupError, TypeError, AttributeError, RecursionError)


def error_json(error: BaseException) -> dict[str, object]:
    """An error as a JSON object: type, message and whatever the caller can act on."""
    data: dict[str, object] = {"type": type(error).__name__}
    if isinstance(error, ka.KlingError):
        data["message"] = error.message
        data["scope"] = error.scope.value
        for name in ("code", "http_status", "request_id"):
            value = getattr(error, name)
            if value is not None:
                data[name] = value
        if isinstance(error, ka.BatchStopped):
            data["reason"] = error_json(error.reason)
        field = getattr(error, "field", None)
        if isinstance(field, str):
            data["field"] = field
    else:
        data["message"] = str(error)
    return data


def _relative(path: pathlib.Path, base: pathlib.Path | None) -> str:
    if base is not None:
        with contextlib.suppress(ValueError):
            return path.resolve().relative_to(base.resolve()).as_posix()
    return str(path)


def record_from_outcome(
    outcome: ka.Outcome, out_dir: pathlib.Path | None, *, time_scale: float = 1.0
) -> JobRecord:
    """The results-file record of one engine outcome (file paths relative to ``out_dir``).

    Args:
        outcome: The engine's outcome of the job.
        out_dir: Where result files were downloaded.
        time_scale: Real seconds per server second (a time-scaled simulator), for the run
            time read from the task's timestamps.
    """
    task = outcome.task
    urls: tuple[str, ...] = ()
    units = None
    run_time = None
    if task is not None:
        urls = tuple(video.url for video in task.videos) + tuple(image.url for image in task.images)
        units = task.units_charged
        if task.created_at is not None and task.updated_at is not None:
            run_time = max(task.updated_at - task.created_at, 0) / 1000 * time_scale
    return JobRecord(
        key=outcome.key,
        kind=outcome.kind.value,
        status=outcome.status.value,
        task_id=outcome.task_id,
        files=tuple(_relative(path, out_dir) for path in outcome.files),
        urls=urls,
        error=None if outcome.error is None else error_json(outcome.error),
        units_charged=units,
        attempts=outcome.attempts,
        run_time=run_time,
    )


def invalid_record(problem: JobProblem, kind: str | None) -> JobRecord:
    """The record of a row skipped by ``--skip-invalid``."""
    error: dict[str, object] = {
        "type": "InvalidRequest",
        "message": str(problem),
        "line": problem.line,
        "rule": problem.rule,
    }
    if problem.field is not None:
        error["field"] = problem.field
    return JobRecord(
        key=problem.key if problem.key is not None else f"line-{problem.line}",
        kind=kind or "",
        status="invalid",
        error=error,
    )


def count_statuses(records: Iterable[JobRecord]) -> dict[str, int]:
    """How many records have each status."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def total_units(records: Iterable[JobRecord]) -> float | None:
    """The sum of the units charged where the server reported them (None: never)."""
    total: float | None = None
    for record in records:
        if record.units_charged is None:
            continue
        try:
            value = float(record.units_charged)
        except ValueError:
            continue
        total = value if total is None else total + value
    return total


class ResultsWriteError(OSError):
    """``results.jsonl`` cannot be written (a full disk, a lost mount): the run stops."""

    def __init__(self, path: pathlib.Path, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"cannot write {path}: {reason}")
        self.path = path

    def __str__(self) -> str:
        return str(self.args[1])


def _line(record: JobRecord) -> bytes:
    """One results line, UTF-8; text a server sent that is not valid Unicode is escaped."""
    data = record.to_json()
    try:
        return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a hostile server
        return (json.dumps(data) + "\n").encode("ascii")


def _append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to ``fd`` entirely or not at all (a short write is cut back off)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


class ResultsWriter:
    """Appends one line per finished job to ``results.jsonl``; compacts it on close.

    Lines of an earlier run in the same folder are kept (a resume adds to them); the
    last line for a key wins. Every line is written whole or not at all: when the disk
    is full, the part written is cut off again and :class:`ResultsWriteError` is raised.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._records: dict[str, JobRecord] = {}
        self._fd: int | None = None

    def __enter__(self) -> "ResultsWriter":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def records(self) -> Mapping[str, JobRecord]:
        """The latest record of every key seen (earlier runs included)."""
        return self._records

    def open(self) -> None:
        """Read the lines of an earlier run, then open the file for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as stream:
                for line in stream:
                    with contextlib.suppress(
                        ValueError, LookupError, TypeError, AttributeError, RecursionError
                    ):
                        record = JobRecord.from_json(json.loads(line))
                        self._records[record.key] = record
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: JobRecord) -> None:
        """Append one record (a whole line, or nothing).

        Raises:
            ResultsWriteError: the line cannot be written (the file holds no part of it).
        """
        self._records[record.key] = record
        if self._fd is not None:
            try:
                _append_whole(self._fd, _line(record))
            except OSError as exc:
                raise ResultsWriteError(self.path, exc) from None

    def close(self, order: Iterable[str] = ()) -> None:
        """Rewrite the file with one line per key: ``order`` first, then the rest.

        Raises:
            ResultsWriteError: the compacted file cannot be written; the appended lines
                are left as they are (whole).
        """
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        keys = [key for key in dict.fromkeys(order) if key in self._records]
        listed = set(keys)
        keys += [key for key in self._records if key not in listed]
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with temporary.open("wb") as stream:
                for key in keys:
                    stream.write(_line(self._records[key]))
                stream.flush()
                os.fsync(stream.fileno())
            temporary.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise ResultsWriteError(self.path, exc) from None
