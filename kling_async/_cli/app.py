"""``kling-async``: bulk runs from a job file, with progress, results and resume.

Commands::

    kling-async run JOBS --out DIR      run a JSONL/CSV job file (resumable: DIR/journal.sqlite)
    kling-async resume JOURNAL          continue an interrupted or stopped run
    kling-async status JOURNAL          what a journal holds, without any network
    kling-async validate JOBS           check a job file; nothing is sent
    kling-async report DIR              write DIR/report.html (also done after run/resume)
    kling-async simulate [...]          run the local simulator stand-alone

Exit codes: 0 every job succeeded, 1 some jobs failed, 2 bad usage or input, 3 the batch
was stopped (authentication, balance), 130 interrupted (resume it).
"""

import argparse
import contextlib
import importlib.metadata
import logging
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Final

from rich.console import Console

from . import commands as run
from . import worker
from .jobs import PROFILE_RULES, load_jobs
from .progress import Display, make_display

__all__ = ["main"]

PROG: Final = "kling-async"
COMMANDS: Final = ("run", "resume", "status", "validate", "simulate", "report")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but errors (see the exit code)"
    )
    group.add_argument(
        "--json", action="store_true", help="print one JSON event per line instead of text"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the library's decisions (retries, backoff, adoption); -vv for debug",
    )


def _add_run_flags(parser: argparse.ArgumentParser, *, resume: bool) -> None:
    parser.add_argument(
        "--allow-removed",
        action="store_true",
        help="send journaled jobs that were never sent and are no longer in the job file "
        "(without it such a run is refused)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="tasks running at once per kind (the account limit; adapts down on 1303)",
    )
    limits.add_argument(
        "--rate", type=_positive_float, metavar="R", help="API requests per second at most"
    )
    limits.add_argument(
        "--deadline",
        type=_positive_float,
        metavar="S",
        help="give up on a job after S seconds (its task may still finish server-side)",
    )
    target = parser.add_argument_group(
        "target",
        "The API key comes from the environment only: COMETAPI_KEY (profile cometapi), "
        "KLING_API_KEY or KLING_ACCESS_KEY + KLING_SECRET_KEY (profile kling). "
        "With no key the run goes to a local in-process simulator.",
    )
    target.add_argument(
        "--simulate",
        action="store_true",
        default=None,
        help="run against a local in-process simulator even when a key is set",
    )
    target.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: env COMETAPI_BASE_URL / KLING_BASE_URL, else the "
        "profile's); e.g. a stand-alone simulator or a proxy",
    )
    target.add_argument(
        "--profile",
        choices=("cometapi", "kling"),
        default=None if resume else "cometapi",
        help="CometAPI relay (default) or Kling's own API",
    )
    _add_strict_rules_flag(target)
    target.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="F",
        help="real seconds per simulated second of a simulator (in-process default "
        f"{run.DEMO_TIME_SCALE}; give a stand-alone simulator's value with --base-url)",
    )
    _add_output_flags(parser)


def _add_strict_rules_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--no-strict-rules",
        dest="strict_rules",
        action="store_false",
        default=None,
        help="send a job past a documented rule of the profile (model, image count, prompt "
        "length, masks) that the server may have relaxed; each one is listed first",
    )


def _version() -> str:
    try:
        return importlib.metadata.version("kling-async")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kling-async``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Bulk multi-image video and image generation with Kling (via CometAPI).",
        epilog="Exit codes: 0 all succeeded, 1 some failed, 2 bad usage or input, "
        "3 batch stopped (auth, balance), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run_parser = commands.add_parser(
        "run",
        help="run every job of a JSONL or CSV file",
        description="Run every job of a JSONL or CSV job file and download the results. "
        "The whole file is checked first; nothing is sent while a row is invalid "
        "(unless --skip-invalid).",
    )
    run_parser.add_argument("jobs", type=pathlib.Path, metavar="JOBS", help="JSONL or CSV file")
    run_parser.add_argument(
        "--out",
        "-o",
        required=True,
        type=pathlib.Path,
        metavar="DIR",
        help="folder for the result files and results.jsonl",
    )
    run_parser.add_argument(
        "--journal",
        type=worker.journal_arg,
        metavar="FILE",
        help="the run's journal, for resume (default DIR/journal.sqlite); a postgresql:// "
        "URL keeps the run in PostgreSQL, where `kling-async worker` processes join it",
    )
    run_parser.add_argument("--batch", metavar="ID", help="batch id in a PostgreSQL journal")
    run_parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="run the valid rows when some are invalid (they are reported and skipped)",
    )
    _add_run_flags(run_parser, resume=False)
    run_parser.set_defaults(handler=_cmd_run)

    resume_parser = commands.add_parser(
        "resume",
        help="continue a run from its journal",
        description="Continue a run from its journal: finished jobs are not sent again, "
        "running tasks are picked up, pending jobs are submitted. Settings come from the "
        "first run unless given again.",
    )
    resume_parser.add_argument(
        "journal", type=worker.journal_arg, metavar="JOURNAL", help="the journal of the run"
    )
    resume_parser.add_argument("--batch", metavar="ID", help="batch id in a PostgreSQL journal")
    resume_parser.add_argument("--out", "-o", type=pathlib.Path, metavar="DIR")
    _add_run_flags(resume_parser, resume=True)
    resume_parser.set_defaults(handler=_cmd_resume)

    status_parser = commands.add_parser(
        "status",
        help="show what a journal holds (no network)",
        description="Show the jobs of a run's journal by state, without any network call.",
    )
    status_parser.add_argument(
        "journal", type=worker.journal_arg, metavar="JOURNAL", help="the journal of the run"
    )
    status_parser.add_argument("--batch", metavar="ID", help="batch id in a PostgreSQL journal")
    status_parser.add_argument("--json", action="store_true", help="print one JSON object")
    status_parser.set_defaults(handler=_cmd_status)

    worker.add_worker_parser(commands, _add_run_flags)

    validate_parser = commands.add_parser(
        "validate",
        help="check a job file without sending anything",
        description="Check every row of a job file: fields, values and the local images' "
        "format, size and dimensions. Nothing is sent.",
    )
    validate_parser.add_argument("jobs", type=pathlib.Path, metavar="JOBS")
    validate_parser.add_argument(
        "--profile",
        choices=("cometapi", "kling"),
        default="cometapi",
        help="check against the rules this profile documents (default cometapi)",
    )
    _add_strict_rules_flag(validate_parser)
    validate_parser.add_argument("--json", action="store_true", help="print JSON events")
    validate_parser.add_argument("-q", "--quiet", action="store_true", help="only the exit code")
    validate_parser.set_defaults(handler=_cmd_validate)

    report_parser = commands.add_parser(
        "report",
        help="write DIR/report.html from a run's journal and files (no network)",
        description="Write one self-contained HTML page about the run in DIR: summary, "
        "results gallery, failures by error and a timeline of the account slots. "
        "Each run and resume writes it too.",
    )
    report_parser.add_argument("out", type=pathlib.Path, metavar="DIR", help="the run's --out")
    report_parser.add_argument(
        "--journal", type=pathlib.Path, metavar="FILE", help="default DIR/journal.sqlite"
    )
    report_parser.set_defaults(handler=_cmd_report)

    commands.add_parser(
        "simulate",
        help="run the local CometAPI/Kling simulator (see: simulate --help)",
        add_help=False,
    )
    return parser


def _setup_logging(verbosity: int, console: Console | None) -> None:
    if verbosity <= 0:
        return
    level = logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if console is not None and console.is_terminal:
        from rich.logging import RichHandler  # noqa: PLC0415 - only when asked for

        handler = RichHandler(console=console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("kling_async")
    logger.setLevel(level)
    logger.addHandler(handler)


def _display(args: argparse.Namespace) -> tuple[Display, Console | None]:
    quiet = bool(getattr(args, "quiet", False))
    json_events = bool(getattr(args, "json", False))
    console = None if quiet or json_events else Console(highlight=False)
    display = make_display(json_events=json_events, quiet=quiet, console=console)
    _setup_logging(getattr(args, "verbose", 0), console)
    return display, console


def _cmd_validate(args: argparse.Namespace) -> int:
    display, _ = _display(args)
    try:
        rules = PROFILE_RULES[args.profile]
        strict = args.strict_rules is not False
        job_file, jobs, problems = load_jobs(args.jobs, rules=rules if strict else None)
    except (OSError, UnicodeDecodeError) as exc:
        display.warning(f"{PROG}: cannot read {args.jobs}: {exc}")
        return run.EXIT_USAGE
    display.problems(str(args.jobs), problems, rows=job_file.rows)
    if not strict:
        run.show_relaxed_rules(jobs, rules, display)
    kinds = [job.request.kind.value for job in jobs]
    summary = (
        f"{args.jobs}: {len(jobs)} of {job_file.rows} job(s) valid "
        f"({kinds.count('video')} video, {kinds.count('image')} image)"
    )
    if not args.json and not getattr(args, "quiet", False):
        display.notice(summary)
    if problems or not job_file.rows:
        if not job_file.rows:
            display.warning(f"{args.jobs}: no jobs found")
        return run.EXIT_USAGE
    return run.EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    if isinstance(args.journal, str):
        return worker.run_postgres(args)
    display, _ = _display(args)
    settings = run.RunSettings(
        jobs=args.jobs.resolve(),
        out_dir=args.out.resolve(),
        journal=(args.journal or args.out / run.JOURNAL_FILE).resolve(),
        concurrency=args.concurrency,
        rate=args.rate,
        deadline=args.deadline,
        simulate=bool(args.simulate),
        base_url=args.base_url,
        profile=args.profile,
        time_scale=args.time_scale,
        skip_invalid=args.skip_invalid,
        strict_rules=args.strict_rules is not False,
    )
    return run.run_command(settings, display, env=os.environ, allow_removed=args.allow_removed)


def _cmd_resume(args: argparse.Namespace) -> int:
    if isinstance(args.journal, str):
        if args.out is None:
            print("kling-async: give --out DIR with a postgresql:// journal", file=sys.stderr)
            return run.EXIT_USAGE
        args.jobs = None
        return worker.work_command(args)
    display, _ = _display(args)
    overrides = {
        name: getattr(args, name)
        for name in (
            "concurrency",
            "rate",
            "deadline",
            "simulate",
            "base_url",
            "profile",
            "strict_rules",
        )
        if getattr(args, name) is not None
    }
    if args.time_scale is not None:
        overrides["time_scale"] = args.time_scale
    return run.resume_command(
        args.journal.resolve(), overrides, display, env=os.environ, allow_removed=args.allow_removed
    )


def _cmd_status(args: argparse.Namespace) -> int:
    if isinstance(args.journal, str):
        return worker.status_postgres(args.journal, args.batch, json_output=args.json)
    return run.status_command(args.journal, json_output=args.json)


def _cmd_report(args: argparse.Namespace) -> int:
    return run.report_command(args.out, args.journal, env=os.environ)


def _simulate(argv: Sequence[str]) -> int:
    from ..simulator import main as simulator_main  # noqa: PLC0415 - aiohttp.web only when used

    missing = run.simulator_missing_message(key_hint=None)
    if missing is not None and not {"-h", "--help"} & set(argv):
        print(f"{PROG}: {missing}", file=sys.stderr)
        return run.EXIT_USAGE

    try:
        return simulator_main(list(argv))
    except SystemExit as exc:  # argparse inside the simulator: --help or a usage error
        return exc.code if isinstance(exc.code, int) else run.EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Run ``kling-async`` with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Ctrl-C anywhere (start-up, validation, the run, the summary) ends with exit code 130
    and one line on stderr, never a traceback.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):
            print(f"\n{PROG}: interrupted", file=sys.stderr, flush=True)
        return run.EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list and args_list[0] == "simulate":
        return _simulate(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else run.EXIT_USAGE
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover - exercised by the subprocess tests
    raise SystemExit(main())
