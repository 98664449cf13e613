"""A journal writer run in a subprocess that the tests kill with SIGKILL.

``python -m tests._journal_helpers PATH N MODE``:

- ``states``: job ``i`` is taken to the ``i % 8``-th entry of ``STOP_STATES``, then the
  process prints ``done`` and waits to be killed;
- ``stream``: N jobs go through every state concurrently, one ``ack KEY STATE`` line is
  printed after each write returns; the parent kills it at a random moment;
- ``lazy``: as ``stream``, but each job is added as the engine adds it
  (``durable=False``: not acknowledged, it may be lost), and the first ack of a job is its
  SUBMITTING: the moment the engine would send its create.
"""

import asyncio
import sys

from kling_async import ErrorRecord, FileRecord, JobState, SqliteJournal
from kling_async._durable.records import fingerprint

STOP_STATES = (
    JobState.PENDING,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.SUCCEEDED,
    JobState.DOWNLOADED,
    JobState.FAILED,
    JobState.TIMED_OUT,
    JobState.STOPPED,
)
# The order a job walks in ``stream`` mode.
PATH = (
    JobState.PENDING,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.SUCCEEDED,
    JobState.DOWNLOADED,
)


def record_for(i: int) -> dict[str, object]:
    """The request record of job ``i``."""
    return {"prompt": f"job {i}", "images": [f"/in/{i}-a.png", f"/in/{i}-b.png"]}


def ack(key: str, state: JobState) -> None:
    """Tell the parent a write returned (so it must be durable)."""
    sys.stdout.write(f"ack {key} {state.value}\n")
    sys.stdout.flush()


async def walk(
    journal: SqliteJournal,
    i: int,
    until: JobState,
    path: tuple[JobState, ...],
    *,
    lazy: bool = False,
) -> None:
    """Take job ``i`` through ``path`` up to ``until``, acking each durable step."""
    key = f"job-{i}"
    await journal.add(key, "video", fingerprint(record_for(i)), record_for(i), durable=not lazy)
    if not lazy:
        ack(key, JobState.PENDING)
    if until is JobState.PENDING:
        return
    for state in path[1:]:
        if state is JobState.SUBMITTING:
            await journal.mark_submitting(key, f"ext-{i}")
        elif state is JobState.SUBMITTED:
            await journal.mark_submitted(key, f"task-{i}")
        elif state is JobState.SUCCEEDED:
            await journal.mark_terminal(key, state, result={"task_id": f"task-{i}", "n": i})
        elif state is JobState.DOWNLOADED:
            await journal.mark_downloaded(
                key, [FileRecord(path=f"/out/{key}.mp4", sha256="0" * 64, size=i, url="u")]
            )
        else:
            await journal.mark_terminal(
                key, state, error=ErrorRecord(type="TaskFailed", message=f"no {i}", code=1)
            )
        ack(key, state)
        if state is until:
            return


def path_to(state: JobState) -> tuple[JobState, ...]:
    """The states a job passes to reach ``state``."""
    if state in PATH:
        return PATH
    if state is JobState.STOPPED:
        return (JobState.PENDING, JobState.STOPPED)
    return (JobState.PENDING, JobState.SUBMITTING, JobState.SUBMITTED, state)


async def main(path: str, n: int, mode: str) -> None:
    """Write the journal, then wait to be killed."""
    async with SqliteJournal.open(path, batch_id="crash-test") as journal:
        if mode == "states":
            async with asyncio.TaskGroup() as tg:
                for i in range(n):
                    until = STOP_STATES[i % len(STOP_STATES)]
                    tg.create_task(walk(journal, i, until, path_to(until)))
            sys.stdout.write("done\n")
            sys.stdout.flush()
        else:
            async with asyncio.TaskGroup() as tg:
                for i in range(n):
                    tg.create_task(walk(journal, i, JobState.DOWNLOADED, PATH, lazy=mode == "lazy"))
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
