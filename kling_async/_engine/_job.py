"""The engine's record of one job, and the small interfaces the engine talks through."""

import enum
from typing import Protocol

import attrs

from .._core.errors import KlingError
from .._core.models import Kind, Request, Task
from ._outcome import JobStatus, Outcome

__all__ = ["Job", "JobOwner", "Phase", "TaskApi"]


class TaskApi(Protocol):
    """The three calls the engine makes; :class:`~kling_async.Client` provides them."""

    async def create_task(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Create one task (one HTTP call)."""
        ...

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        """Query one task by task id or external id (one HTTP call)."""
        ...

    async def list_tasks(self, kind: Kind, page: int = 1, page_size: int = 30) -> list[Task]:
        """Read one page of the account's tasks (one HTTP call)."""
        ...


class Phase(enum.Enum):
    """Where a job is in the engine."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    ENDED = "ended"


class JobOwner(Protocol):
    """Who started a job (``generate()`` or a batch): it hears about each change."""

    def count_request(self, what: str) -> None:
        """One request (``create``, ``query``, ``list``) was made for this owner."""
        ...

    def count_retry(self) -> None:
        """A request was retried for this owner."""
        ...

    def phase_changed(self, job: "Job", old: Phase, new: Phase) -> None:
        """``job`` moved from ``old`` to ``new`` (counters)."""
        ...

    async def submitting(self, job: "Job") -> None:
        """A create is about to be sent (the journal writes SUBMITTING first)."""
        ...

    async def submitted(self, job: "Job") -> None:
        """The task exists on the server (``job.task_id`` is set)."""
        ...

    async def finished(self, job: "Job", outcome: Outcome) -> None:
        """The job ended, once; ``outcome`` is final for the caller."""
        ...

    def stop_reason(self) -> KlingError | None:
        """The error that opened this owner's circuit, if any (no more creates)."""
        ...

    def open_circuit(self, reason: KlingError) -> None:
        """A batch-scoped error: stop sending creates for this owner."""
        ...


@attrs.define(eq=False, kw_only=True)
class Job:
    """One job as the engine tracks it (mutable, engine-internal)."""

    key: str
    request: Request
    kind: Kind
    slots: int
    external_id: str
    owner: JobOwner
    queued_at: float
    deadline: float | None = None
    phase: Phase = Phase.QUEUED
    attempts: int = 0
    task_id: str | None = None
    # Poll bookkeeping (the scheduler's).
    submitted_at: float = 0.0
    last_running_at: float = 0.0
    polls: int = 0
    poll_gen: int = 0
    querying: bool = False  # a query or list page asking about it is in flight
    recheck: bool = False  # hinted while querying: ask again unless the answer is an end
    next_interval: float = 0.0
    timed_out: bool = False
    delivered: bool = False
    holds_slots: bool = False
    webhook: bool = False  # created with the client's callback_url: deliveries make it due
    reconcile_first: bool = False  # resumed after SUBMITTING: look the task up before any send
    awaited: bool = False  # a caller awaits this one job (``generate()``): its polls come first
    runtime_key: str | None = None  # what its run time is learned under (kind, model, mode...)
    cold: bool = False  # its next poll was planned without a learned distribution
    scout: bool = False  # one of the few cold tasks of its kind that probe for everyone

    def outcome(
        self,
        status: JobStatus,
        wall: float,
        *,
        task: Task | None = None,
        error: KlingError | None = None,
    ) -> Outcome:
        """Return this job's :class:`Outcome` with ``status``, ended at wall time ``wall``."""
        if error is not None and error.job_key is None:
            error.job_key = self.key
        return Outcome(
            key=self.key,
            kind=self.kind,
            status=status,
            task=task,
            error=error,
            task_id=self.task_id,
            attempts=self.attempts,
            queued_at=self.queued_at,
            finished_at=wall,
        )

    def move(self, new: Phase) -> None:
        """Change phase and tell the owner."""
        old, self.phase = self.phase, new
        if old is not new:
            self.owner.phase_changed(self, old, new)
