"""A batch with a journal and downloads: ``client.batch(journal=..., out_dir=...)``.

Opens the journal (or an in-memory store) and the downloader for the life of the batch,
writes every state change through the journal, downloads each success before yielding
it, and resumes what an existing journal holds: ended jobs are yielded without network,
SUBMITTED tasks are polled, SUBMITTING creates are reconciled by external id, PENDING
jobs are sent.
"""

import contextlib
import os

from .._core.models import Kind
from .._engine import Batch, JobStatus, Outcome, external_id_for
from .bridge import JournalBatchStore, download_outcome, resume_work
from .downloads import Downloader, file_stem
from .sqlite import SqliteJournal
from .store import JobStore, MemoryStore

__all__ = ["prepare"]


async def prepare(
    batch: Batch,
    stack: contextlib.AsyncExitStack,
    *,
    journal: "str | os.PathLike[str] | None",
    out_dir: "str | os.PathLike[str] | None",
    batch_id: str | None,
) -> None:
    """Attach the journal and downloads to ``batch`` and queue what a resume must do."""
    store: JobStore
    if journal is not None:
        store = await stack.enter_async_context(SqliteJournal.open(journal, batch_id=batch_id))
    else:
        store = MemoryStore(batch_id=batch_id or batch.batch_id, keep_records=False)
        stack.push_async_callback(store.aclose)
    # With downloads, a key that cannot name a file is refused at submit, before it is paid.
    bridge = JournalBatchStore(store, check_key=None if out_dir is None else file_stem)
    batch.configure(batch_id=store.batch_id, store=bridge)
    if out_dir is not None:
        downloader = await stack.enter_async_context(Downloader(out_dir))

        async def finish(outcome: Outcome) -> Outcome:
            return await download_outcome(downloader, bridge, outcome)

        batch.configure(finisher=finish)
    if journal is None:
        return
    work = resume_work(await store.resume())
    to_download = {row.key for row, _ in work.downloads}
    for outcome in work.outcomes:
        batch.restore(outcome, finish=out_dir is not None and outcome.key in to_download)
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
    if work.submit:
        batch.resume_pending((job.row.key, job.request) for job in work.submit)
