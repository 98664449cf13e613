"""A batch on a PostgreSQL journal: the claim loop that makes every process a worker.

``client.batch(journal="postgresql://...", batch_id=ID)`` opens the batch in the
database and runs a feed beside it that claims rows nobody alive owns (``FOR UPDATE
SKIP LOCKED``), as many as the process has room for: running tasks are adopted and
polled, creates that may have been sent are looked up by external id first, the rest
are submitted. The feed ends when every row that still needs work is this process's
own; until then it waits, so a worker that dies is replaced by the ones still running.
"""

import contextlib
import os
from collections.abc import AsyncIterator

import anyio

from .._core.models import Request
from .._engine import BatchControl, Outcome
from .bridge import JournalBatchStore, download_outcome, resume_work
from .downloads import Downloader, file_stem
from .postgres import PostgresJournal
from .postgres_db import split_url
from .records import ResumePlan
from .restart import restart

__all__ = ["prepare_postgres"]


async def prepare_postgres(
    control: BatchControl,
    stack: contextlib.AsyncExitStack,
    url: str,
    *,
    out_dir: "str | os.PathLike[str] | None",
    batch_id: str | None,
) -> None:
    """Attach a PostgreSQL journal (and downloads) to a batch and start claiming."""
    _, settings = split_url(url)
    store = await stack.enter_async_context(PostgresJournal.open(url, batch_id=batch_id))
    bridge = JournalBatchStore(store, check_key=None if out_dir is None else file_stem)
    control.configure(batch_id=store.batch_id, store=bridge)
    if out_dir is not None:
        downloader = await stack.enter_async_context(Downloader(out_dir))

        async def finish(outcome: Outcome) -> Outcome:
            return await download_outcome(downloader, bridge, outcome)

        control.configure(finisher=finish)
    prefetch = settings.prefetch or max(8, 2 * sum(control.statistics().limits.values()))
    idle = min(0.25, settings.lease / 4)
    control.start_soon(control.feed, _claims(store, control, bridge, out_dir, prefetch, idle))


async def _claims(  # noqa: PLR0917 -- private, called once
    store: PostgresJournal,
    control: BatchControl,
    bridge: JournalBatchStore,
    out_dir: "str | os.PathLike[str] | None",
    prefetch: int,
    idle: float,
) -> AsyncIterator[tuple[str, Request]]:
    """Claim rows while there is room; yield the never-sent ones for ``feed`` to submit."""
    while True:
        if store.broken is not None:
            raise store.broken
        if control.stop_reason() is not None:
            return
        stats = control.statistics()
        room = prefetch - (stats.queued + stats.submitting + stats.running)
        if room >= max(1, prefetch // 4):
            rows = await store.claim(room, succeeded=out_dir is not None)
            if rows:
                work = resume_work(ResumePlan.from_rows(rows))
                for key, request in await restart(control, bridge, work, out_dir=out_dir):
                    yield key, request
                continue
            if await store.unclaimed(succeeded=out_dir is not None) == 0:
                return
        await anyio.sleep(idle)
