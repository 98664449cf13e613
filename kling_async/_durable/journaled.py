"""A batch with a journal and downloads: ``client.batch(journal=..., out_dir=...)``.

Opens the journal (or an in-memory store) and the downloader for the life of the batch,
writes every state change through the journal, downloads each success before yielding
it, and resumes what an existing journal holds: ended jobs are yielded without network,
SUBMITTED tasks are polled, SUBMITTING creates are reconciled by external id, PENDING
jobs are sent.
"""

import contextlib
import json
import os
import pathlib

import anyio

from .._engine import BatchControl, Outcome
from .anchor import anchor_path
from .bridge import JournalBatchStore, download_outcome, resume_work
from .downloads import (
    ALLOWED_SUFFIXES,
    DEFAULT_DOWNLOAD_LIMITS,
    Downloader,
    DownloadLimits,
    file_stem,
)
from .postgres_db import is_postgres_url
from .records import JournalError
from .restart import restart
from .sqlite import SqliteJournal
from .store import JobStore, MemoryStore

__all__ = ["prepare"]


async def prepare(
    control: BatchControl,
    stack: contextlib.AsyncExitStack,
    *,
    journal: "str | os.PathLike[str] | None",
    out_dir: "str | os.PathLike[str] | None",
    batch_id: str | None,
    downloads: DownloadLimits | None = None,
) -> None:
    """Attach the journal and downloads to a batch (through ``control``); queue the resume."""
    if is_postgres_url(journal):
        from .postgres_work import prepare_postgres  # noqa: PLC0415 -- optional driver

        assert isinstance(journal, str)
        await prepare_postgres(control, stack, journal, out_dir=out_dir, batch_id=batch_id)
        return
    store: JobStore
    recovering = False
    if journal is not None:
        if out_dir is not None:
            await anyio.to_thread.run_sync(refuse_orphan_results, journal, out_dir)
        opened = await stack.enter_async_context(
            SqliteJournal.open(journal, batch_id=batch_id, recover=True)
        )
        store, recovering = opened, opened.recovering
        if recovering:
            # rows were lost: any job the journal does not hold as sent may have been paid
            control.reconcile_new_jobs()
    else:
        store = MemoryStore(batch_id=batch_id or control.batch_id, keep_records=False)
        stack.push_async_callback(store.aclose)
    # With downloads, a key that cannot name a file is refused at submit, before it is paid.
    bridge = JournalBatchStore(
        store, check_key=None if out_dir is None else file_stem, recovering=recovering
    )
    control.configure(batch_id=store.batch_id, store=bridge)
    if out_dir is not None:
        downloader = await stack.enter_async_context(
            Downloader(out_dir, limits=downloads or DEFAULT_DOWNLOAD_LIMITS)
        )

        async def finish(outcome: Outcome) -> Outcome:
            return await download_outcome(downloader, bridge, outcome)

        control.configure(finisher=finish)
    if journal is None:
        return
    work = resume_work(await store.resume())
    submit = await restart(
        control, bridge, work, out_dir=out_dir, recover_from=store if recovering else None
    )
    if submit:
        control.resume_pending(submit)


_RESULTS_FILES = frozenset({"results.jsonl"})
_MAX_RESULTS_SCAN = 64 * 1024 * 1024


def _names_a_task(path: pathlib.Path) -> bool:
    """Whether a results file has a line naming a server task (rows refused before any
    create, written by the same run, name none)."""
    try:
        with path.open("rb") as file:
            for line in file:
                if file.tell() > _MAX_RESULTS_SCAN:
                    return True
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("task_id"):
                        return True
    except OSError:
        return False
    return False


def refuse_orphan_results(
    journal: "str | os.PathLike[str]", out_dir: "str | os.PathLike[str]"
) -> None:
    """Refuse a new journal where an earlier run left results but no journal nor anchor.

    Without the journal or its anchor, the batch id of that run is unknown, so its jobs
    cannot be looked up on the server: a new run would pay for each of them again.
    Blocking: run it in a thread.

    Raises:
        JournalError: ``out_dir`` holds results (``results.jsonl``, result or part files)
            while ``journal`` is missing or empty and has no anchor.
    """
    path = pathlib.Path(journal)
    if anchor_path(path).exists() or (path.exists() and path.stat().st_size > 0):
        return
    folder = pathlib.Path(out_dir)
    if not folder.is_dir():
        return
    found = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file()
        and (
            entry.suffix.lower() in ALLOWED_SUFFIXES
            or entry.name.endswith(".part")
            or (entry.name in _RESULTS_FILES and _names_a_task(entry))
        )
    )
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise JournalError(
            f"{str(folder)!r} holds results of an earlier run ({shown}) but its journal"
            f" {str(path)!r} and the batch anchor {anchor_path(path).name} are gone: that"
            " run's jobs may already be paid for and cannot be looked up without its batch"
            " id. Put the journal (or its .batch.json) back, or use a new output folder."
        )
