"""What the engine hands back: one :class:`Outcome` per job, and batch counters."""

import pathlib
from collections.abc import Mapping

import attrs

from .._core.errors import KlingError
from .._core.models import Kind, Status, Task

__all__ = ["BatchStatistics", "JobStatus", "Outcome"]


JobStatus = Status
"""The name the engine uses for how a job ended (a :class:`Status`)."""


@attrs.frozen(kw_only=True)
class Outcome:
    """The end of one job: its result or its error, never both.

    Attributes:
        key: The caller's job key.
        kind: Video or image.
        status: How the job ended.
        task: The finished task (SUCCEEDED, or FAILED when the task itself failed).
        error: Why the job did not succeed (None when it did).
        task_id: The server's task id, when a task was created.
        attempts: Create calls sent for this job.
        queued_at: Wall time (``time.time()``) the job was queued.
        finished_at: Wall time the job ended.
        files: Downloaded result files, when downloads are on.
    """

    key: str
    kind: Kind
    status: JobStatus
    task: Task | None = None
    error: KlingError | None = None
    task_id: str | None = None
    attempts: int = 0
    queued_at: float = 0.0
    finished_at: float = 0.0
    files: tuple[pathlib.Path, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status is JobStatus.SUCCEEDED


@attrs.frozen(kw_only=True)
class BatchStatistics:
    """Counters of one batch at one instant.

    Attributes:
        queued: Jobs accepted and not yet sent (waiting for a slot, or backing off).
        submitting: Jobs whose create call is in flight.
        running: Jobs whose task runs on the server.
        downloading: Jobs whose task succeeded and whose result files are downloading
            (with ``out_dir``); each then counts as succeeded or download_failed.
        succeeded: Jobs that ended SUCCEEDED (their files saved, with ``out_dir``).
        failed: Jobs that ended FAILED.
        timed_out: Jobs that ended TIMED_OUT.
        stopped: Jobs that ended STOPPED (the batch circuit opened or the batch was left).
        download_failed: Jobs whose task succeeded but whose files did not arrive
            (DOWNLOAD_FAILED: not counted as succeeded).
        retries: Requests sent again after a transient error.
        requests: Requests made for this batch by type (``create``, ``query``, ``list``).
        limits: The current adaptive slot limit per kind.
    """

    queued: int = 0
    submitting: int = 0
    running: int = 0
    downloading: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    stopped: int = 0
    download_failed: int = 0
    retries: int = 0
    requests: Mapping[str, int] = attrs.field(factory=dict)
    limits: Mapping[Kind, int] = attrs.field(factory=dict)

    @property
    def finished(self) -> int:
        """Jobs that ended, whatever the status."""
        return self.succeeded + self.failed + self.timed_out + self.stopped + self.download_failed
