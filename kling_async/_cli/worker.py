"""``kling-async worker``: join a run kept in PostgreSQL, from any number of machines.

Every worker claims jobs of the batch that no live worker holds, runs them under the
account limit shared by all of them (slot leases in the same database), downloads the
results into its ``--out`` folder, and stays until no job of the batch needs work. A
worker that dies loses its claims after the lease (``?kling_lease=S`` in the URL,
default 15 s): the others adopt its running tasks and look up its sent creates by
external id before anything is sent again.

Also the PostgreSQL side of ``run --journal postgresql://...`` (enqueue the job file,
then work), ``resume postgresql://... --batch ID`` and ``status postgresql://...``.
"""

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

import kling_async as ka

from . import commands as run
from .jobs import load_jobs

__all__ = ["add_worker_parser", "is_postgres", "run_postgres", "status_postgres", "work_command"]


def is_postgres(value: object) -> bool:
    """True for a ``postgresql://`` journal."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def journal_arg(text: str) -> "pathlib.Path | str":
    """A journal argument: a PostgreSQL URL stays text, anything else is a path."""
    return text if is_postgres(text) else pathlib.Path(text)


def add_worker_parser(commands: Any, add_run_flags: Any) -> None:
    """Add ``worker`` to the subcommands."""
    parser = commands.add_parser(
        "worker",
        help="join a run kept in PostgreSQL (any number of machines)",
        description="Claim and run jobs of a batch kept in PostgreSQL, beside any number "
        "of other workers on one account limit; stay until the batch is done.",
    )
    parser.add_argument(
        "--journal", required=True, metavar="URL", help="postgresql://user:pass@host/db"
    )
    parser.add_argument("--batch", metavar="ID", help="the batch to join")
    parser.add_argument(
        "--jobs", type=pathlib.Path, metavar="FILE", help="add this job file to the batch first"
    )
    parser.add_argument(
        "--out", "-o", required=True, type=pathlib.Path, metavar="DIR", help="result files"
    )
    add_run_flags(parser, resume=False)
    parser.set_defaults(handler=work_command)


def _say(args: argparse.Namespace, event: str, text: str, **fields: object) -> None:
    if getattr(args, "quiet", False):
        return
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _settings(args: argparse.Namespace) -> "run.RunSettings":
    return run.RunSettings(
        jobs=None,
        out_dir=args.out.resolve(),
        journal=pathlib.Path(os.devnull),
        concurrency=args.concurrency,
        rate=args.rate,
        deadline=args.deadline,
        simulate=bool(args.simulate),
        base_url=args.base_url,
        profile=args.profile or "cometapi",
        time_scale=args.time_scale,
    )


def work_command(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """``kling-async worker``: return the exit code."""
    env = os.environ if env is None else env
    if not is_postgres(args.journal):
        print("kling-async: --journal must be a postgresql:// URL", file=sys.stderr)
        return run.EXIT_USAGE
    if args.batch is None and args.jobs is None:
        print("kling-async: give --batch ID (or --jobs FILE to start one)", file=sys.stderr)
        return run.EXIT_USAGE
    settings = _settings(args)
    try:
        target = run.resolve_target(settings, env)
    except run.UsageError as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return run.EXIT_USAGE
    if target.simulated:
        print(
            "kling-async: a worker shares a real account: set the API key in the environment "
            "(and --base-url for a stand-alone simulator)",
            file=sys.stderr,
        )
        return run.EXIT_USAGE
    jobs: Sequence[tuple[str, ka.Request]] = ()
    if args.jobs is not None:
        try:
            job_file, parsed, problems = load_jobs(args.jobs)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"kling-async: cannot read {args.jobs}: {exc}", file=sys.stderr)
            return run.EXIT_USAGE
        if problems or not job_file.rows:
            for problem in problems:
                print(f"kling-async: {args.jobs}: {problem}", file=sys.stderr)
            print(
                f"kling-async: {args.jobs}: nothing is sent while a row is invalid", file=sys.stderr
            )
            return run.EXIT_USAGE
        jobs = [(job.key, job.request) for job in parsed]
    try:
        return anyio.run(_work, args, settings, target, env, jobs)
    except KeyboardInterrupt:
        return run.EXIT_INTERRUPTED


async def _work(
    args: argparse.Namespace,
    settings: "run.RunSettings",
    target: Any,
    env: Mapping[str, str],
    jobs: Sequence[tuple[str, ka.Request]],
) -> int:
    url: str = args.journal
    failed = done = 0
    try:
        batch_id = args.batch
        if jobs:
            async with ka.PostgresJournal.open(url, batch_id=batch_id) as journal:
                added = await journal.enqueue_requests(jobs)
                batch_id = journal.batch_id
            _say(
                args,
                "enqueued",
                f"batch {batch_id}: {added} new job(s) of {len(jobs)}",
                batch=batch_id,
                added=added,
            )
        scale = run.time_scale(settings, target)
        client = ka.Client(
            profile=run._profile(target, env, None),
            coordination=url,
            **run._engine_knobs(settings, scale),
        )
        async with (
            client,
            ka.PostgresJournal.open(url, batch_id=batch_id, must_exist=True, readonly=True),
            client.batch(journal=url, batch_id=batch_id, out_dir=settings.out_dir) as batch,
        ):
            _say(args, "started", f"worker joined batch {batch_id}", batch=batch_id)
            async for outcome in batch:
                done += 1
                failed += not outcome.ok
                _say(
                    args,
                    "job",
                    f"{outcome.status.value:9} {outcome.key}"
                    + (f"  {outcome.error}" if outcome.error is not None else ""),
                    key=outcome.key,
                    status=outcome.status.value,
                    files=len(outcome.files),
                )
    except (ka.JournalError, ka.JournalConflict, BaseExceptionGroup) as exc:
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if not isinstance(leaf, ka.JournalError | ka.JournalConflict):
            raise
        print(f"kling-async: worker stops: {leaf}", file=sys.stderr)
        return run.EXIT_STOPPED
    _say(args, "done", f"worker done: {done} job(s), {failed} not succeeded", jobs=done)
    return run.EXIT_FAILED if failed else run.EXIT_OK


def run_postgres(args: argparse.Namespace) -> int:
    """``run JOBS --journal postgresql://...``: add the job file to a batch, then work on it."""
    worker_args = argparse.Namespace(**vars(args))
    worker_args.jobs = args.jobs
    worker_args.batch = getattr(args, "batch", None)
    return work_command(worker_args)


def status_postgres(url: str, batch_id: str | None, *, json_output: bool) -> int:
    """``status postgresql://... --batch ID``: the batch's jobs by state (no API call)."""
    if batch_id is None:
        print("kling-async: give --batch ID with a postgresql:// journal", file=sys.stderr)
        return run.EXIT_USAGE

    async def read() -> dict[str, int]:
        async with ka.PostgresJournal.open(url, batch_id=batch_id, readonly=True) as journal:
            counts = await journal.counts()
        return {state.value: count for state, count in counts.items() if count}

    try:
        counts = anyio.run(read)
    except (ka.JournalError, ka.JournalConflict) as exc:
        print(f"kling-async: {exc}", file=sys.stderr)
        return run.EXIT_USAGE
    if json_output:
        print(json.dumps({"batch": batch_id, "states": counts}))
    else:
        print(f"batch {batch_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return run.EXIT_OK
