"""A batch with a journal and downloads: ``client.batch(journal=..., out_dir=...)``.

Opens the journal (or an in-memory store) and the downloader for the life of the batch,
writes every state change through the journal, downloads each success before yielding
it, and resumes what an existing journal holds: ended jobs are yielded without network,
SUBMITTED tasks are polled, SUBMITTING creates are reconciled by external id, PENDING
jobs are sent.
"""

import contextlib
import os

from .._engine import Batch, Outcome
from .bridge import JournalBatchStore, download_outcome, resume_work
from .downloads import Downloader, file_stem
from .postgres_db import is_postgres_url
from .restart import restart
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
    if is_postgres_url(journal):
        from .postgres_work import prepare_postgres  # noqa: PLC0415 -- optional driver

        assert isinstance(journal, str)
        await prepare_postgres(batch, stack, journal, out_dir=out_dir, batch_id=batch_id)
        return
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
    submit = await restart(batch, bridge, work, download=out_dir is not None)
    if submit:
        batch.resume_pending(submit)
