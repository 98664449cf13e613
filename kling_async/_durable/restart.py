"""Hand a journal's rows back to a batch (a resume, or a worker's claim)."""

import os
import pathlib

import attrs

from .._core.models import Kind, Request
from .._engine import BatchControl, JobStatus, Outcome, external_id_for
from .bridge import JournalBatchStore, ResumeWork
from .store import JobStore

__all__ = ["restart"]


async def restart(
    control: BatchControl,
    bridge: JournalBatchStore,
    work: ResumeWork,
    *,
    out_dir: "str | os.PathLike[str] | None",
    recover_from: JobStore | None = None,
) -> list[tuple[str, Request]]:
    """Hand journaled jobs to a batch: yield the ended, poll the running, reconcile the sent.

    Args:
        control: The owner's side of the batch.
        bridge: The journal as the batch writes it.
        work: What the journal's rows ask for.
        out_dir: Where result files go (None: no downloads). Files of ended jobs are
            reported where the folder is now, even if it was moved since.
        recover_from: The store, when it lost rows (a deleted ``-wal``): a PENDING job may
            then be a lost SUBMITTING, so each is marked SUBMITTING and looked up by
            external id before any create.

    Returns:
        The PENDING (never sent) jobs, for the caller to queue.
    """
    to_download = {row.key for row, _ in work.downloads}
    for ended in work.outcomes:
        outcome = ended
        if out_dir is not None and ended.files:
            here = pathlib.Path(out_dir)
            outcome = attrs.evolve(ended, files=tuple(here / f.name for f in ended.files))
        control.restore(outcome, finish=out_dir is not None and outcome.key in to_download)
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
        control.restore(outcome)
    for job in work.poll:
        await control.resume(
            job.request,
            key=job.row.key,
            external_id=job.row.external_id or external_id_for(control.batch_id, job.row.key),
            task_id=job.row.task_id,
        )
    lookup = list(work.reconcile)
    if recover_from is not None:
        for job in work.submit:  # PENDING may be a lost SUBMITTING: look it up first
            external_id = external_id_for(control.batch_id, job.row.key)
            await recover_from.mark_submitting(job.row.key, external_id)
        lookup.extend(work.submit)
    for job in lookup:
        await control.resume(
            job.request,
            key=job.row.key,
            external_id=job.row.external_id or external_id_for(control.batch_id, job.row.key),
        )
    if recover_from is not None:
        return []
    return [(job.row.key, job.request) for job in work.submit]
