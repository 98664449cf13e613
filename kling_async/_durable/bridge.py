"""Between the engine and a job store: requests, outcomes and tasks as journal rows.

``JournalBatchStore`` is the engine's ``BatchStore`` seam written through a ``JobStore``;
``resume_work`` turns an existing journal into what a batch must do (outcomes to yield
without network, tasks to poll, creates to reconcile, jobs to submit);
``download_outcome`` saves a succeeded job's files and records them.
"""

import pathlib
from collections.abc import Callable, Iterable

import attrs

from .._api.wire import parse_task, request_from_record, request_to_record, task_to_wire
from .._core import errors as _errors
from .._core.errors import DownloadError, InvalidRequest, KlingError, Scope
from .._core.models import Kind, Request
from .._engine._outcome import JobStatus, Outcome
from .downloads import Downloader
from .records import ErrorRecord, FileRecord, JobRecord, JobState, ResumePlan, fingerprint
from .store import JobStore

__all__ = [
    "JournalBatchStore",
    "ResumeWork",
    "ResumedJob",
    "download_outcome",
    "error_from_record",
    "outcome_from_row",
    "result_urls",
    "resume_work",
]

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

    Every method but ``pending`` returns once the change is durable, so the engine may
    then take the step it guards (``submitting`` before the create is sent). ``pending``
    adds the row lazily (``durable=False``): it guards nothing paid for, and is committed
    by the job's own ``submitting`` at the latest, so a feed does not pay one fsync per job.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        check_key: Callable[[str], object] | None = None,
        recovering: bool = False,
    ) -> None:
        """Write through ``store``; ``check_key`` vets each new key (raises to refuse it).

        ``recovering``: the journal lost rows, so a job it does not know may have been
        created already: each new row is written SUBMITTING at once (durably), the state
        of a job whose create may have been sent; the engine looks it up first.
        """
        self.store = store
        self._check_key = check_key
        self.recovering = recovering

    async def pending(
        self, key: str, kind: Kind, request: Request, external_id: str
    ) -> JobRecord | None:
        """Add the job as PENDING; return the existing row if the same job is known.

        Returns once the same-key check is answered, before the row is committed (see
        ``JobStore.add``): a crash may lose it, and the resumed feed adds it again.

        Raises:
            JournalConflict: ``key`` is known with another request.
            Exception: whatever ``check_key`` raises (``UnsafeKey`` when results are
                downloaded: refused before any create is paid for, not after).
        """
        if self._check_key is not None:
            self._check_key(key)
        record = request_to_record(request)
        existing = await self.store.add(key, kind.value, fingerprint(record), record, durable=False)
        if existing is None and self.recovering:
            await self.store.mark_submitting(key, external_id)
        return existing

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

    async def load_runtime_model(self) -> str | None:
        """Return the engine's run-time model kept in the store, or None (none, or unsupported)."""
        load = getattr(self.store, "load_runtime_model", None)
        if load is None:
            return None
        text = await load()
        return text if isinstance(text, str) else None

    async def save_runtime_model(self, model: str) -> None:
        """Keep the engine's run-time model in the store (nothing when it cannot)."""
        save = getattr(self.store, "save_runtime_model", None)
        if save is not None:
            await save(model)

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


@attrs.frozen
class ResumedJob:
    """A journaled job that still needs the network, rebuilt for the engine.

    Attributes:
        row: The journal row.
        kind: Video or image.
        request: The request rebuilt from the row's record (no file is read).
    """

    row: JobRecord
    kind: Kind
    request: Request


@attrs.frozen
class ResumeWork:
    """What a batch does when it opens an existing journal, group by group.

    Attributes:
        outcomes: Jobs that ended: yield them at once, no network (SUCCEEDED ones whose
            files are missing are also in ``downloads`` when the batch has an out_dir).
        downloads: SUCCEEDED-not-downloaded rows and their result URLs.
        poll: SUBMITTED jobs: hand to the poll scheduler with ``row.task_id``.
        reconcile: SUBMITTING jobs (or STOPPED after a send): look up ``row.external_id``,
            adopt the task, or send the create again if provably absent.
        submit: PENDING (and never-sent STOPPED) jobs: submit as new.
        broken: Rows whose record no longer makes a valid request, with the error: end
            them FAILED with that error (no create is sent).
    """

    outcomes: tuple[Outcome, ...] = ()
    downloads: tuple[tuple[JobRecord, tuple[str, ...]], ...] = ()
    poll: tuple[ResumedJob, ...] = ()
    reconcile: tuple[ResumedJob, ...] = ()
    submit: tuple[ResumedJob, ...] = ()
    broken: tuple[tuple[JobRecord, InvalidRequest], ...] = ()


def result_urls(row: JobRecord) -> tuple[str, ...]:
    """Return the result file URLs held in a row's task JSON (videos, then images)."""
    if row.result is None:
        return ()
    task = parse_task(row.result, path="$journal.result")
    return tuple(v.url for v in task.videos) + tuple(i.url for i in task.images)


def resume_work(plan: ResumePlan) -> ResumeWork:
    """Turn a journal's ``ResumePlan`` into domain objects the engine acts on."""
    outcomes = tuple(outcome_from_row(row) for row in (*plan.finished, *plan.succeeded))
    downloads = tuple((row, result_urls(row)) for row in plan.succeeded)
    broken: list[tuple[JobRecord, InvalidRequest]] = []

    def rebuild(rows: tuple[JobRecord, ...]) -> tuple[ResumedJob, ...]:
        jobs = []
        for row in rows:
            try:
                request = request_from_record(row.record)
            except InvalidRequest as exc:
                broken.append((row, exc))
                continue
            except (ValueError, KeyError, TypeError) as exc:
                broken.append((row, InvalidRequest("$journal.record", str(exc), job_key=row.key)))
                continue
            jobs.append(ResumedJob(row=row, kind=Kind(row.kind), request=request))
        return tuple(jobs)

    return ResumeWork(
        outcomes=outcomes,
        downloads=downloads,
        poll=rebuild(plan.submitted),
        reconcile=rebuild(plan.submitting),
        submit=rebuild(plan.pending),
        broken=tuple(broken),
    )


async def download_outcome(
    downloader: Downloader, store: JournalBatchStore, outcome: Outcome
) -> Outcome:
    """Download a SUCCEEDED job's files, record them, and return the outcome with its files.

    A download that fails for good leaves the job SUCCEEDED-not-downloaded in the store
    (with the URL and its expiry, for a later resume) and comes back with status
    ``DOWNLOAD_FAILED`` and the ``DownloadError``: a job whose files did not arrive is
    never reported as succeeded. This never raises for a download problem (an
    unexpected error becomes a ``DownloadError`` too).
    """
    if outcome.status is not JobStatus.SUCCEEDED or outcome.task is None:
        return outcome
    task = outcome.task
    urls = tuple(v.url for v in task.videos) + tuple(i.url for i in task.images)
    default = ".mp4" if outcome.kind is Kind.VIDEO else ".png"
    try:
        if not urls:
            raise DownloadError(  # noqa: TRY301 -- one failure path for every cause
                "the task succeeded without any result URL", url="", task_id=task.task_id
            )
        files = await downloader.download_all(
            outcome.key, urls, default_suffix=default, task_id=task.task_id
        )
    except Exception as exc:
        error = exc if isinstance(exc, DownloadError) else _unexpected(exc, outcome, urls)
        error.job_key = outcome.key
        await store.download_failed(outcome.key, error)
        return attrs.evolve(outcome, status=JobStatus.DOWNLOAD_FAILED, error=error)
    await store.downloaded(outcome.key, files)
    return attrs.evolve(outcome, files=tuple(pathlib.Path(f.path) for f in files))


def _unexpected(exc: Exception, outcome: Outcome, urls: tuple[str, ...]) -> DownloadError:
    error = DownloadError(
        f"the result files could not be saved: {type(exc).__name__}: {exc}",
        url=urls[0] if urls else "",
        task_id=outcome.task_id,
        job_key=outcome.key,
    )
    error.__cause__ = exc
    return error
