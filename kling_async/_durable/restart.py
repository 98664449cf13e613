"""Hand a journal's rows back to a batch (a resume, or a worker's claim)."""

from .._core.models import Kind, Request
from .._engine import Batch, JobStatus, Outcome, external_id_for
from .bridge import JournalBatchStore, ResumeWork

__all__ = ["restart"]


async def restart(
    batch: Batch, bridge: JournalBatchStore, work: ResumeWork, *, download: bool
) -> list[tuple[str, Request]]:
    """Hand journaled jobs to ``batch``: yield the ended, poll the running, reconcile the sent.

    Returns:
        The PENDING (never sent) jobs, for the caller to queue.
    """
    to_download = {row.key for row, _ in work.downloads}
    for outcome in work.outcomes:
        batch.restore(outcome, finish=download and outcome.key in to_download)
    for row, error in work.broken:
        outcome = Outcome(
            key=row.key,
            kind=Kind(row.kind),
            status=JobStatus.FAILED,
            error=error,
            task_id=row.task_id,
            attempts=row.attempts,
            queued_at=row.created_at,
        )
        await bridge.finished(outcome)
        batch.restore(outcome)
    for job in work.poll:
        await batch.resume(
            job.request,
            key=job.row.key,
            external_id=job.row.external_id or external_id_for(batch.batch_id, job.row.key),
            task_id=job.row.task_id,
        )
    for job in work.reconcile:
        await batch.resume(
            job.request,
            key=job.row.key,
            external_id=job.row.external_id or external_id_for(batch.batch_id, job.row.key),
        )
    return [(job.row.key, job.request) for job in work.submit]
