"""Between the engine and a job store: requests, outcomes and tasks as journal rows.

``JournalBatchStore`` is the engine's ``BatchStore`` seam written through a ``JobStore``;
``outcome_from_row`` turns a finished row back into the ``Outcome`` a resume yields
without any network call.
"""

import pathlib
from collections.abc import Iterable

from . import _errors
from ._engine._outcome import JobStatus, Outcome
from ._errors import KlingError, Scope
from ._journal import ErrorRecord, FileRecord, JobRecord, JobState, JobStore, fingerprint
from ._models import Kind, Request
from ._wire import parse_task, request_to_record, task_to_wire

__all__ = ["JournalBatchStore", "error_from_record", "outcome_from_row"]

_STATE_OF = {
    JobStatus.SUCCEEDED: JobState.SUCCEEDED,
    JobStatus.FAILED: JobState.FAILED,
    JobStatus.TIMED_OUT: JobState.TIMED_OUT,
    JobStatus.STOPPED: JobState.STOPPED,
}
_STATUS_OF = {
    JobState.SUCCEEDED: JobStatus.SUCCEEDED,
    JobState.DOWNLOADED: JobStatus.SUCCEEDED,
    JobState.FAILED: JobStatus.FAILED,
    JobState.TIMED_OUT: JobStatus.TIMED_OUT,
    JobState.STOPPED: JobStatus.STOPPED,
}


class JournalBatchStore:
    """The engine's ``BatchStore`` written through a ``JobStore`` (journal or memory).

    Every method returns once the change is durable, so the engine may then take the
    step it guards (``submitting`` before the create is sent).
    """

    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def pending(
        self, key: str, kind: Kind, request: Request, external_id: str
    ) -> JobRecord | None:
        """Add the job as PENDING; return the existing row if the same job is known.

        Raises:
            JournalConflict: ``key`` is known with another request.
        """
        del external_id  # derived again from batch id and key; written at SUBMITTING
        record = request_to_record(request)
        return await self.store.add(key, kind.value, fingerprint(record), record)

    async def submitting(self, key: str, external_id: str) -> None:
        """Write SUBMITTING (one more attempt) before the create is sent."""
        await self.store.mark_submitting(key, external_id)

    async def submitted(self, key: str, task_id: str) -> None:
        """Write SUBMITTED with the task id."""
        await self.store.mark_submitted(key, task_id)

    async def finished(self, outcome: Outcome) -> None:
        """Write the job's end: its task (as Kling's JSON) and its error."""
        await self.store.mark_terminal(
            outcome.key,
            _STATE_OF[outcome.status],
            result=None if outcome.task is None else task_to_wire(outcome.task),
            error=None if outcome.error is None else ErrorRecord.from_exception(outcome.error),
        )

    async def downloaded(self, key: str, files: Iterable[FileRecord]) -> None:
        """Write DOWNLOADED with each file's path, sha256 and size."""
        await self.store.mark_downloaded(key, files)

    async def download_failed(self, key: str, error: KlingError) -> None:
        """Keep the job SUCCEEDED-not-downloaded, with the URL and its expiry."""
        await self.store.mark_download_failed(key, ErrorRecord.from_exception(error))


def error_from_record(record: ErrorRecord, *, key: str, task_id: str | None) -> KlingError:
    """Rebuild the error of a finished row (its class when known, else ``KlingError``).

    The class's own constructor is not called (subclasses take other arguments): the
    attributes every ``KlingError`` has are set from the record.
    """
    cls = getattr(_errors, record.type, None)
    if not (isinstance(cls, type) and issubclass(cls, KlingError)):
        cls = KlingError
    error = cls.__new__(cls)
    Exception.__init__(error, record.message)
    error.message = record.message
    error.scope = cls.default_scope if cls is not KlingError else Scope.JOB
    error.http_status = record.http_status
    error.code = record.code
    error.request_id = None
    error.task_id = task_id
    error.job_key = key
    error.retry_after = None
    if isinstance(error, _errors.DownloadError):
        error.url = record.url or ""
        error.expires_at = record.expires_at
    return error


def outcome_from_row(row: JobRecord) -> Outcome:
    """Return the ``Outcome`` of a row that ended (what a resume yields without network).

    Raises:
        ValueError: the row has not ended (PENDING, SUBMITTING or SUBMITTED).
    """
    status = _STATUS_OF.get(row.state)
    if status is None:
        raise ValueError(f"job {row.key!r} has not ended ({row.state.value})")
    task = None if row.result is None else parse_task(row.result, path="$journal.result")
    error = None
    if row.error is not None and row.state is not JobState.SUCCEEDED:
        error = error_from_record(row.error, key=row.key, task_id=row.task_id)
    return Outcome(
        key=row.key,
        kind=Kind(row.kind),
        status=status,
        task=task,
        error=error,
        task_id=row.task_id,
        attempts=row.attempts,
        queued_at=row.created_at,
        finished_at=row.finished_at if row.finished_at is not None else row.updated_at,
        files=tuple(pathlib.Path(f.path) for f in row.files),
    )
