"""The job store interface the engine writes through, its transition rules, and the in-memory store.

``mark_submitting`` returns only after the commit that holds it, so the create it guards
can be sent. PENDING guards nothing paid for, so the engine adds it lazily
(``add(..., durable=False)``): it is committed with the next durable write.
"""

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from .._core import lifetime
from .records import (
    TERMINAL_STATES,
    ErrorRecord,
    FileRecord,
    JobRecord,
    JobState,
    JournalConflict,
    JournalError,
    JournalStatistics,
    ResumePlan,
    new_batch_id,
)

__all__ = [
    "JobStore",
    "MemoryStore",
    "RowRules",
]


@runtime_checkable
class JobStore(Protocol):
    """Where a batch keeps its jobs; SQLite here, a server database later.

    Every ``mark_*`` and ``add`` returns after the change is durable (committed), so the
    caller may then take the step the change guards (except ``add(..., durable=False)``,
    made durable by the next durable write). Concurrent callers share commits.
    A key is unique within the store; a store belongs to one batch (``batch_id``).
    """

    @property
    def batch_id(self) -> str:
        """The batch this store belongs to (part of every external task id)."""
        ...

    @property
    def options(self) -> Mapping[str, Any]:
        """Options saved when the batch was created (JSON object)."""
        ...

    async def add(
        self,
        key: str,
        kind: str,
        fingerprint: str,
        record: Mapping[str, Any],
        *,
        durable: bool = True,
    ) -> JobRecord | None:
        """Add a PENDING job; return None if new, or the existing row if the same job is known.

        ``durable=True`` (the default) returns once the row is committed, like every
        ``mark_*``. ``durable=False`` returns once the same-key check is answered, in order
        with every other write, and lets the commit come later: the row is durable no
        later than the next durable write of the store returns (a store applies writes in
        order), so the ``mark_submitting`` guarding the job's create commits it too. A
        PENDING row guards nothing paid for; lost in a crash, it is re-added by the feed
        of the resumed run, as if the crash had come a moment earlier. The engine adds
        with ``durable=False``.

        Raises:
            JournalConflict: ``key`` is known with another fingerprint.
        """
        ...

    async def mark_submitting(self, key: str, external_id: str) -> JobRecord:
        """Record that a create is about to be sent (counts one attempt)."""
        ...

    async def mark_submitted(self, key: str, task_id: str) -> JobRecord:
        """Record that the task exists on the server."""
        ...

    async def mark_terminal(
        self,
        key: str,
        state: JobState,
        *,
        result: Mapping[str, Any] | None = None,
        error: ErrorRecord | None = None,
    ) -> JobRecord:
        """Record that the job ended: SUCCEEDED, FAILED, TIMED_OUT or STOPPED."""
        ...

    async def mark_downloaded(self, key: str, files: Iterable[FileRecord]) -> JobRecord:
        """Record the result files of a SUCCEEDED job (state DOWNLOADED)."""
        ...

    async def mark_download_failed(self, key: str, error: ErrorRecord) -> JobRecord:
        """Keep the job SUCCEEDED-not-downloaded with why (URL, expiry), for a later resume."""
        ...

    async def get(self, key: str) -> JobRecord | None:
        """Return the row of ``key``, or None."""
        ...

    async def resume(self) -> ResumePlan:
        """Return every row, grouped by what a resume does with it."""
        ...

    async def flush(self) -> None:
        """Return when every change made so far is durable."""
        ...

    def statistics(self) -> JournalStatistics:
        """Return the store's counters."""
        ...

    async def aclose(self) -> None:
        """Flush and release the store."""
        ...


class RowRules:
    """The transition logic shared by both stores, over any key -> row mapping."""

    @staticmethod
    def add(
        existing: JobRecord | None,
        key: str,
        kind: str,
        print_: str,
        record: Mapping[str, Any],
    ) -> tuple[JobRecord | None, JobRecord | None]:
        """Return (row to insert, existing row to return)."""
        if existing is not None:
            if existing.fingerprint != print_:
                raise JournalConflict(
                    f"job {key!r} is already in the journal with a different request",
                    key=key,
                )
            return None, existing
        now = time.time()
        row = JobRecord(
            key=key,
            kind=kind,
            fingerprint=print_,
            record=record,
            created_at=now,
            updated_at=now,
        )
        return row, None

    @staticmethod
    def require(row: JobRecord | None, key: str) -> JobRecord:
        if row is None:
            raise KeyError(key)
        return row

    @staticmethod
    def submitting(row: JobRecord, external_id: str) -> JobRecord:
        return row.moved(JobState.SUBMITTING, external_id=external_id, attempts=row.attempts + 1)

    @staticmethod
    def submitted(row: JobRecord, task_id: str) -> JobRecord:
        return row.moved(
            JobState.SUBMITTED,
            task_id=task_id,
            submitted_at=row.submitted_at if row.submitted_at is not None else time.time(),
        )

    @staticmethod
    def terminal(
        row: JobRecord,
        state: JobState,
        result: Mapping[str, Any] | None,
        error: ErrorRecord | None,
    ) -> JobRecord:
        if state not in TERMINAL_STATES and state is not JobState.STOPPED:
            raise ValueError(f"not an end state: {state.value}")
        task_id = row.task_id
        if result is not None and task_id is None:
            found = result.get("task_id")
            task_id = found if isinstance(found, str) else None
        return row.moved(
            state,
            result=result if result is not None else row.result,
            error=error,
            task_id=task_id,
        )

    @staticmethod
    def downloaded(row: JobRecord, files: Iterable[FileRecord]) -> JobRecord:
        return row.moved(JobState.DOWNLOADED, files=tuple(files), error=None)

    @staticmethod
    def download_failed(row: JobRecord, error: ErrorRecord) -> JobRecord:
        if row.state is not JobState.SUCCEEDED:
            raise JournalError(
                f"job {row.key!r}: a download failure needs SUCCEEDED, not {row.state.value}"
            )
        return attrs.evolve(row, error=error, updated_at=time.time())


class MemoryStore:
    """A ``JobStore`` in memory: the same rules as the journal, nothing survives the process.

    Args:
        batch_id: The batch id (a fresh one when None).
        options: Kept as ``options``.
        keep_records: Keep each job's request record. A batch without a journal never
            rebuilds a request, so it passes False: rows stay small (key, fingerprint,
            state) however large the requests are (base64 images).
    """

    def __init__(
        self,
        *,
        batch_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_records: bool = True,
    ) -> None:
        self._keep_records = keep_records
        self._batch_id = batch_id or new_batch_id()
        self._options: Mapping[str, Any] = dict(options or {})
        self._rows: dict[str, JobRecord] = {}
        self._states: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self._writes = 0
        self._runtime_model: str | None = None

    @property
    def batch_id(self) -> str:
        """The batch this store belongs to."""
        return self._batch_id

    @property
    def options(self) -> Mapping[str, Any]:
        """Options given when the store was made."""
        return self._options

    async def __aenter__(self) -> "MemoryStore":
        return self

    def _put(self, row: JobRecord, old: JobRecord | None) -> JobRecord:
        if old is not None:
            self._states[old.state] -= 1
        self._states[row.state] += 1
        self._rows[row.key] = row
        self._writes += 1
        return row

    def _change(self, key: str, move: Callable[[JobRecord], JobRecord]) -> JobRecord:
        old = RowRules.require(self._rows.get(key), key)
        return self._put(move(old), old)

    async def add(
        self,
        key: str,
        kind: str,
        fingerprint: str,
        record: Mapping[str, Any],
        *,
        durable: bool = True,
    ) -> JobRecord | None:
        """Add a PENDING job; see ``JobStore.add`` (``durable`` changes nothing in memory)."""
        del durable
        new, existing = RowRules.add(self._rows.get(key), key, kind, fingerprint, record)
        if new is not None:
            self._put(new if self._keep_records else attrs.evolve(new, record={}), None)
        return existing

    async def mark_submitting(self, key: str, external_id: str) -> JobRecord:
        """See ``JobStore.mark_submitting``."""
        return self._change(key, lambda row: RowRules.submitting(row, external_id))

    async def mark_submitted(self, key: str, task_id: str) -> JobRecord:
        """See ``JobStore.mark_submitted``."""
        return self._change(key, lambda row: RowRules.submitted(row, task_id))

    async def mark_terminal(
        self,
        key: str,
        state: JobState,
        *,
        result: Mapping[str, Any] | None = None,
        error: ErrorRecord | None = None,
    ) -> JobRecord:
        """See ``JobStore.mark_terminal``."""
        return self._change(key, lambda row: RowRules.terminal(row, state, result, error))

    async def mark_downloaded(self, key: str, files: Iterable[FileRecord]) -> JobRecord:
        """See ``JobStore.mark_downloaded``."""
        return self._change(key, lambda row: RowRules.downloaded(row, files))

    async def mark_download_failed(self, key: str, error: ErrorRecord) -> JobRecord:
        """See ``JobStore.mark_download_failed``."""
        return self._change(key, lambda row: RowRules.download_failed(row, error))

    async def get(self, key: str) -> JobRecord | None:
        """Return the row of ``key``, or None."""
        return self._rows.get(key)

    async def resume(self) -> ResumePlan:
        """Return every row grouped by what a resume does with it."""
        return ResumePlan.from_rows(self._rows.values())

    async def flush(self) -> None:
        """Nothing to flush in memory."""

    async def load_runtime_model(self) -> str | None:
        """Return the run-time model saved here (JSON text), or None."""
        return self._runtime_model

    async def save_runtime_model(self, model: str) -> None:
        """Keep the engine's run-time model (JSON text)."""
        self._runtime_model = model

    def statistics(self) -> JournalStatistics:
        """Return the store's counters."""
        return JournalStatistics(
            jobs=len(self._rows),
            states=dict(self._states),
            writes=self._writes,
            commits=self._writes,
            largest_group=1 if self._writes else 0,
            queued=0,
        )

    __aexit__ = lifetime.__aexit__

    async def aclose(self) -> None:
        """Nothing to release in memory."""
