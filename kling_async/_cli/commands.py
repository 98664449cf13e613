"""The ``run``, ``resume`` and ``status`` commands: from a checked job file to files on disk.

``run`` checks the whole job file first, picks the target (the real API when a key is in
the environment, else an in-process simulator), then drives one batch with a journal
and downloads, feeding the progress display and ``results.jsonl`` as jobs finish. The
settings of a run are saved next to its journal so ``resume`` needs only the journal.
"""

import contextlib
import importlib.metadata
import json
import os
import pathlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import anyio
import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import kling_async as ka
from kling_async.simulator import Simulator, SimulatorConfig

from .jobs import PROFILE_RULES, JobProblem, ParsedJob, load_jobs
from .progress import Display, JobRecord, ProgressTracker, RunSummary, format_duration
from .report import write_report
from .results import (
    RESULTS_FILE,
    ResultsWriteError,
    ResultsWriter,
    count_statuses,
    invalid_record,
    record_from_outcome,
    total_units,
)
from .timeline import record_timeline

__all__ = [
    "DEMO_TIME_SCALE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "JOURNAL_FILE",
    "RunSettings",
    "report_command",
    "resume_command",
    "run_command",
    "show_relaxed_rules",
    "status_command",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_STOPPED: Final = 3
EXIT_INTERRUPTED: Final = 130

JOURNAL_FILE: Final = "journal.sqlite"
SETTINGS_SUFFIX: Final = ".run.json"
DEMO_TIME_SCALE: Final = 0.02
"""Real seconds per simulated second for the in-process simulator: a 60 s video in 1.2 s."""
TICK: Final = 0.25
STATUS_ROWS: Final = 40


@attrs.frozen(kw_only=True)
class RunSettings:
    """Everything a run needs besides the key (which is read from the environment only)."""

    jobs: pathlib.Path | None
    out_dir: pathlib.Path
    journal: pathlib.Path
    concurrency: int | None = None
    rate: float | None = None
    deadline: float | None = None
    simulate: bool = False
    base_url: str | None = None
    profile: str | None = "cometapi"
    time_scale: float | None = None
    skip_invalid: bool = False
    strict_rules: bool = True
    """False: jobs past a documented profile rule are sent (``--no-strict-rules``)."""

    def to_json(self, base: pathlib.Path | None = None) -> dict[str, object]:
        """The settings as saved next to the journal (no secrets in here).

        With ``base`` (the settings file's folder), paths are saved relative to it, so a
        moved output folder (journal and settings inside) resumes where it is now.
        """
        data = attrs.asdict(self)
        for name in ("jobs", "out_dir", "journal"):
            value = data[name]
            data[name] = None if value is None else _relative(value, base)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], journal: pathlib.Path) -> "RunSettings":
        """Read saved settings (the journal's own path wins over the saved one)."""
        names = {field.name for field in attrs.fields(cls)}
        values = {name: value for name, value in data.items() if name in names}
        base = journal.parent  # relative paths are relative to the settings file
        values["jobs"] = None if values.get("jobs") is None else base / values["jobs"]
        values["out_dir"] = base / (values.get("out_dir") or ".")
        values["journal"] = journal
        return cls(**values)


def _relative(path: pathlib.Path, base: pathlib.Path | None) -> str:
    if base is None:
        return str(path)
    try:
        return os.path.relpath(path.absolute(), base.absolute())
    except ValueError:  # another drive (Windows): only an absolute path reaches it
        return str(path.absolute())


def settings_path(journal: pathlib.Path) -> pathlib.Path:
    """Where the settings of the run with this journal are saved."""
    return journal.with_name(journal.name + SETTINGS_SUFFIX)


def save_settings(settings: RunSettings) -> None:
    """Write the settings next to the journal (atomically)."""
    path = settings_path(settings.journal)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    data = settings.to_json(path.parent)
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


class UsageError(Exception):
    """Bad input or configuration: reported, exit code 2."""


DISTRIBUTION: Final = "kling-async"
SIMULATOR_EXTRA: Final = "simulator"
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']simulator["']""")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_simulator_packages() -> list[str]:
    """The packages of the ``simulator`` extra that are not installed (none: it can run).

    Read from the installed package's own metadata, so whatever the extra lists (Pillow
    for images, a video encoder) is checked. A source tree that is not installed has no
    metadata: nothing is reported then.
    """
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing: list[str] = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        name = _REQUIREMENT_NAME.match(spec.strip())
        if name is None or _EXTRA_MARKER.search(marker) is None:
            continue
        try:
            importlib.metadata.distribution(name.group())
        except importlib.metadata.PackageNotFoundError:
            missing.append(name.group())
    return missing


def simulator_missing_message(*, key_hint: str | None) -> str | None:
    """Why the simulator cannot run here and what to install, or None when it can."""
    missing = missing_simulator_packages()
    if not missing:
        return None
    message = (
        f"the local simulator needs the '{SIMULATOR_EXTRA}' extra, which is not installed "
        f"(missing: {', '.join(missing)}). Install it with:  "
        f"pip install '{DISTRIBUTION}[{SIMULATOR_EXTRA}]'"
    )
    if key_hint is not None:
        message += f"  (or set {key_hint} to send the jobs to the real API)"
    return message + ". Nothing was sent."


@attrs.frozen
class Target:
    """Where the requests go. Holds no key: keys stay in the environment."""

    simulated: bool
    profile: str
    base_url: str | None
    notice: str


_KEY_NAMES: Final[Mapping[str, str]] = {
    "cometapi": "COMETAPI_KEY",
    "kling": "KLING_API_KEY or KLING_ACCESS_KEY + KLING_SECRET_KEY",
}
_BASE_URL_ENV: Final[Mapping[str, str]] = {
    "cometapi": "COMETAPI_BASE_URL",
    "kling": "KLING_BASE_URL",
}


def _has_key(profile: str, env: Mapping[str, str]) -> bool:
    if profile == "kling":
        return bool(env.get("KLING_API_KEY")) or bool(
            env.get("KLING_ACCESS_KEY") and env.get("KLING_SECRET_KEY")
        )
    return bool(env.get("COMETAPI_KEY"))


def resolve_target(settings: RunSettings, env: Mapping[str, str]) -> Target:
    """Choose where the run goes, and say it.

    Raises:
        UsageError: a base URL was given but no key to use with it.
    """
    profile = settings.profile or "cometapi"
    base_url = settings.base_url or env.get(_BASE_URL_ENV[profile]) or None
    scale = settings.time_scale or DEMO_TIME_SCALE
    simulator = (
        f"a local in-process simulator (time x{scale:g}: a 60 s video takes {60 * scale:g} s); "
        "nothing is sent to the real API and nothing is charged"
    )
    if settings.simulate:
        return Target(True, profile, None, f"--simulate: running against {simulator}.")
    if not _has_key(profile, env):
        if base_url is not None:
            raise UsageError(
                f"no API key in the environment for {base_url}: set {_KEY_NAMES[profile]} "
                "(keys are never taken from the command line)"
            )
        return Target(
            True,
            profile,
            None,
            f"No {_KEY_NAMES[profile]} in the environment: running against {simulator}.",
        )
    where = base_url or ("the CometAPI relay" if profile == "cometapi" else "Kling's API")
    return Target(False, profile, base_url, f"Sending to {where} (profile {profile}).")


def _check_simulator(settings: RunSettings, target: Target, display: Display) -> bool:
    if not target.simulated:
        return True
    hint = None if settings.simulate else _KEY_NAMES[target.profile]
    message = simulator_missing_message(key_hint=hint)
    if message is None:
        return True
    display.warning(f"kling-async: {message}")
    return False


@attrs.define
class RunState:
    """What the batch loop learned, for the summary."""

    stats: ka.BatchStatistics | None = None
    interrupted: bool = False
    stop_reason: str | None = None


def _profile(target: Target, env: Mapping[str, str], sim: Any | None) -> Any:
    if sim is not None:
        if target.profile == "kling":
            return ka.Kling(sim.api_key, base_url=sim.url)
        return ka.CometAPI(sim.api_key, base_url=sim.url)
    options: dict[str, Any] = {}
    if target.base_url is not None:
        options["base_url"] = target.base_url
    if target.profile == "kling":
        return ka.Kling(
            env.get("KLING_API_KEY") or None,
            access_key=env.get("KLING_ACCESS_KEY") or None,
            secret_key=env.get("KLING_SECRET_KEY") or None,
            **options,
        )
    return ka.CometAPI(env.get("COMETAPI_KEY"), **options)


def time_scale(settings: RunSettings, target: Target) -> float:
    """Real seconds per server second: ``--time-scale``, else the in-process default, else 1.

    A stand-alone simulator started with ``--time-scale`` needs the same value here, so
    the client's polls and backoff shrink with the simulated run times.
    """
    if settings.time_scale is not None:
        return settings.time_scale
    return DEMO_TIME_SCALE if target.simulated else 1.0


@contextlib.asynccontextmanager
async def open_client(
    settings: RunSettings, target: Target, env: Mapping[str, str]
) -> AsyncIterator[Any]:
    """The client of a run (and the in-process simulator it talks to, when simulated)."""
    async with contextlib.AsyncExitStack() as stack:
        sim = None
        scale = time_scale(settings, target)
        if target.simulated:
            sim = Simulator(SimulatorConfig(time_scale=scale))
            await sim.__aenter__()
            stack.push_async_callback(_close_shielded, sim)
        client = ka.Client(profile=_profile(target, env, sim), **_engine_knobs(settings, scale))
        await client.__aenter__()
        stack.push_async_callback(_close_shielded, client)
        yield client


async def _close_shielded(resource: Any) -> None:
    # Ctrl-C cancels the run; closing must still finish (sockets, sessions, the server).
    with anyio.CancelScope(shield=True):
        await resource.aclose()


def _engine_knobs(settings: RunSettings, scale: float) -> dict[str, Any]:
    limits = ka.Limits()
    if settings.concurrency is not None:
        n = settings.concurrency
        limits = attrs.evolve(
            limits, video_slots=n, image_slots=n, max_video_slots=n, max_image_slots=n
        )
    if settings.rate is not None:
        limits = attrs.evolve(
            limits, requests_per_second=settings.rate, burst=max(1, min(10, int(settings.rate)))
        )
    # Against a time-scaled simulator, the client's waits shrink by the same factor.
    return {
        "limits": limits,
        "poll": ka.PollPolicy().scaled(scale),
        "backoff": ka.Backoff().scaled(scale),
        "server_time_scale": scale,
        "strict_rules": settings.strict_rules,
    }


async def _watch_signals(scope: anyio.CancelScope, state: RunState) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                # The first signal stops the run cleanly; leaving this block restores the
                # default handlers, so a second Ctrl-C forces the exit.
                state.interrupted = True
                scope.cancel()
                return
    except (NotImplementedError, ValueError, RuntimeError):
        # Windows, or main() called outside the main thread: no handlers to install, so
        # Ctrl-C arrives as KeyboardInterrupt (and is still reported as an interruption).
        await anyio.sleep_forever()


async def _tick(batch: Any, tracker: ProgressTracker, display: Display, state: RunState) -> None:
    while True:
        state.stats = batch.statistics()
        display.update(tracker.snapshot(state.stats))
        await anyio.sleep(TICK)


def _reason(error: BaseException | None) -> str | None:
    if isinstance(error, ka.BatchStopped):
        return str(error.reason)
    return None if error is None else str(error)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe_jobs(total: int, jobs: Sequence[ParsedJob]) -> str:
    if not jobs:
        return f"{total} job(s)"
    kinds = [job.request.kind.value for job in jobs]
    return f"{total} job(s): {kinds.count('video')} video, {kinds.count('image')} image"


@attrs.define
class BatchRun:
    """One run of a batch: drives it, writes the results, shows the summary."""

    settings: RunSettings
    target: Target
    display: Display
    env: Mapping[str, str]
    jobs: Sequence[ParsedJob]
    skipped: Sequence[JobRecord] = ()
    known_keys: Sequence[str] = ()
    state: RunState = attrs.Factory(RunState)
    order: list[str] = attrs.Factory(list)
    tracker: ProgressTracker = attrs.field(init=False)
    writer: ResultsWriter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        keys = [*self.known_keys, *(job.key for job in self.jobs)]
        self.order = list(dict.fromkeys([*keys, *(record.key for record in self.skipped)]))
        kinds: dict[str, int] = {}
        for job in self.jobs:
            kinds[job.request.kind.value] = kinds.get(job.request.kind.value, 0) + 1
        poll = ka.PollPolicy().scaled(self.time_scale)
        priors = {"video": poll.expected_video, "image": poll.expected_image}
        # Rows skipped as invalid are in the results and the summary, not in the progress.
        self.tracker = ProgressTracker(
            len(self.order) - len(self.skipped), kinds=kinds, priors=priors
        )
        self.writer = ResultsWriter(self.settings.out_dir / RESULTS_FILE)

    @property
    def time_scale(self) -> float:
        """Real seconds per server second (below 1 against a time-scaled simulator)."""
        return time_scale(self.settings, self.target)

    @property
    def total(self) -> int:
        """Jobs in the run (journaled, fed and skipped)."""
        return len(self.order)

    def title(self) -> str:
        """The first line of the progress display."""
        where = _display_path(self.settings.out_dir)
        title = f"kling-async: {_describe_jobs(self.tracker.total, self.jobs)} -> {where}"
        return title + " (simulator)" if self.target.simulated else title

    async def drive(self) -> None:
        """Run the jobs as one batch until every job ended or a signal stops it."""
        settings, state, tracker, display = self.settings, self.state, self.tracker, self.display
        started = False
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(_watch_signals, scope, state)
                try:
                    async with (
                        open_client(settings, self.target, self.env) as client,
                        client.batch(
                            journal=settings.journal,
                            out_dir=settings.out_dir,
                            deadline=settings.deadline,
                        ) as batch,
                    ):
                        state.stats = batch.statistics()
                        display.start(tracker.snapshot(state.stats), self.title())
                        started = True
                        await self._consume(batch, client)
                        state.stats = batch.statistics()
                finally:
                    if started:
                        display.stop(tracker.snapshot(state.stats))
                    watchers.cancel_scope.cancel()

    async def _consume(self, batch: Any, client: Any) -> None:
        state, tracker = self.state, self.tracker
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_tick, batch, tracker, self.display, state)
            tasks.start_soon(record_timeline, self.settings.out_dir, self.time_scale, client)
            # feed() takes its producer handle at this call: the loop waits for its jobs.
            tasks.start_soon(batch.feed, [(job.key, job.request) for job in self.jobs])
            async for outcome in batch:
                record = record_from_outcome(
                    outcome, self.settings.out_dir, time_scale=self.time_scale
                )
                self.writer.write(record)
                if record.status == "stopped" and state.stop_reason is None:
                    state.stop_reason = _reason(outcome.error)
                tracker.job_finished(record.kind, record.status, record.run_time)
                state.stats = batch.statistics()
                self.display.job(record, tracker.snapshot(state.stats))
            tasks.cancel_scope.cancel()

    def execute(self) -> int:
        """Run the batch, write the results, show the summary; return the exit code."""
        try:
            self.writer.open()
            for record in self.skipped:
                self.writer.write(record)
        except OSError as exc:
            self.display.warning(f"kling-async: cannot write {self.writer.path}: {exc}")
            self._close_results()
            return EXIT_USAGE
        code: int | None = None
        try:
            anyio.run(self.drive)
        except BaseException as exc:  # a second Ctrl-C, or an error of the whole run
            code = self._failure(_first_leaf(exc))
        finally:
            if not self._close_results() and code is None:
                code = EXIT_USAGE
        records = [self.writer.records[key] for key in self.order if key in self.writer.records]
        if code is None:
            code = self._exit_code(records)
        self._report()
        self._summarize(records, code)
        return code

    def _report(self) -> None:
        """Write ``report.html`` in the output folder (a failure is a warning only)."""
        try:
            path = write_report(self.settings.out_dir, journal=self.settings.journal, env=self.env)
        except (OSError, ka.JournalError) as exc:
            self.display.warning(f"kling-async: no report: {exc}")
            return
        self.display.notice(f"Report: {_display_path(path)}")

    def _close_results(self) -> bool:
        """Compact ``results.jsonl``; on a full disk say so and keep the appended lines."""
        try:
            self.writer.close(self.order)
        except ResultsWriteError as exc:
            self.display.warning(f"kling-async: {exc}")
            return False
        return True

    def _failure(self, leaf: BaseException) -> int | None:
        if isinstance(leaf, KeyboardInterrupt):
            self.state.interrupted = True
            return None
        if isinstance(leaf, ResultsWriteError):
            self.display.warning(
                f"kling-async: {leaf}. The run stopped; the journal keeps every job. "
                f"Free some space, then:  kling-async resume {_display_path(self.settings.journal)}"
            )
            return EXIT_USAGE
        if isinstance(leaf, ka.JournalConflict | ka.JournalError | ValueError | OSError):
            self.display.warning(f"kling-async: {leaf}")
            return EXIT_USAGE
        if isinstance(leaf, ka.KlingError):
            self.display.warning(f"kling-async: {type(leaf).__name__}: {leaf}")
            return EXIT_STOPPED if leaf.scope is ka.Scope.BATCH else EXIT_FAILED
        raise leaf

    def _exit_code(self, records: Sequence[JobRecord]) -> int:
        statuses = [record.status for record in records]
        if self.state.interrupted:
            return EXIT_INTERRUPTED
        if self.state.stop_reason is not None or "stopped" in statuses:
            return EXIT_STOPPED
        if len(statuses) < self.total or any(status != "succeeded" for status in statuses):
            return EXIT_FAILED
        return EXIT_OK

    def _hints(self, summary: RunSummary, code: int) -> tuple[str, ...]:
        resume = f"kling-async resume {summary.journal}"
        if self.state.interrupted:
            left = summary.total - summary.counts.get("succeeded", 0)
            if self.target.simulated:
                return (
                    f"Interrupted: {left} job(s) not done. The in-process simulator stopped "
                    "with this run, so the tasks it was running are gone; resume sends the "
                    "jobs not yet sent (a real API or a stand-alone simulator keeps them all).",
                    f"Continue with:  {resume}",
                )
            return (
                f"Interrupted: {left} job(s) not done. Nothing is lost: running tasks go "
                "on server-side and the journal knows them.",
                f"Continue with:  {resume}",
            )
        if code == EXIT_STOPPED:
            reason = self.state.stop_reason or "see above"
            return (
                f"The batch was stopped: {reason}. "
                f"Fix the key or the account, then continue with:  {resume}",
            )
        if code == EXIT_FAILED and summary.results_path:
            return (f"Some jobs did not succeed; details in {summary.results_path}.",)
        return ()

    def _summarize(self, records: Sequence[JobRecord], code: int) -> None:
        state, display = self.state, self.display
        counts = count_statuses(records)
        if len(records) < self.total:
            counts["unfinished"] = self.total - len(records)
        stats = state.stats
        journal = _display_path(self.settings.journal)
        summary = RunSummary(
            total=self.total,
            counts=counts,
            units_charged=total_units(records),
            wall_time=self.tracker.elapsed,
            requests=dict(stats.requests) if stats is not None else {},
            retries=stats.retries if stats is not None else 0,
            results_path=_display_path(self.writer.path),
            out_dir=_display_path(self.settings.out_dir),
            journal=journal,
            exit_code=code,
            stop_reason=state.stop_reason,
            interrupted=state.interrupted,
        )
        display.summary(attrs.evolve(summary, hints=self._hints(summary, code)))


def _display_path(path: pathlib.Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    return str(path)


def _check_file(
    settings: RunSettings, display: Display
) -> tuple[list[ParsedJob], list[JobRecord]] | int:
    assert settings.jobs is not None
    try:
        rules = PROFILE_RULES[settings.profile or "cometapi"]
        checked = rules if settings.strict_rules else None
        job_file, jobs, problems = load_jobs(settings.jobs, rules=checked)
    except (OSError, UnicodeDecodeError) as exc:
        display.warning(f"kling-async: cannot read {settings.jobs}: {exc}")
        return EXIT_USAGE
    display.problems(_display_path(settings.jobs), problems, rows=job_file.rows)
    if not settings.strict_rules:
        show_relaxed_rules(jobs, rules, display)
    if not job_file.rows:
        display.warning(f"kling-async: {settings.jobs} holds no jobs")
        return EXIT_USAGE
    if problems and not settings.skip_invalid:
        display.warning(
            f"kling-async: {len(problems)} problem(s) in {settings.jobs}; nothing was sent. "
            "Fix them, or run the valid rows with --skip-invalid."
        )
        return EXIT_USAGE
    if not jobs:
        display.warning(f"kling-async: no valid job in {settings.jobs}; nothing was sent.")
        return EXIT_USAGE
    kinds = {raw.key: raw.kind for raw in job_file.jobs}
    skipped = _skipped_records(problems, kinds)
    if skipped:
        display.notice(f"Skipping {len(skipped)} invalid row(s) (--skip-invalid).")
    return list(jobs), skipped


def show_relaxed_rules(jobs: Sequence[ParsedJob], rules: ka.Rules, display: Display) -> int:
    """Say which jobs break a documented rule of the profile (``--no-strict-rules``).

    Returns:
        How many jobs break one; they are valid still, and sent as they are.
    """
    breaking = 0
    for job in jobs:
        broken = next(iter(rules.violations(job.request)), None)
        if broken is None:
            continue
        breaking += 1
        if breaking <= STATUS_ROWS:  # the first few, then only the count
            display.notice(f"line {job.line}: {broken.field}: {broken.rule}")
    if breaking:
        display.notice(
            f"{breaking} job(s) break a documented rule of the {rules.name} profile; "
            "--no-strict-rules: they are sent anyway."
        )
    return breaking


def _skipped_records(problems: Sequence[JobProblem], kinds: Mapping[str, str]) -> list[JobRecord]:
    first: dict[str, JobProblem] = {}
    for problem in problems:
        key = problem.key if problem.key is not None else f"line-{problem.line}"
        if problem.rule.startswith("duplicate key"):
            key = f"line-{problem.line}"
        first.setdefault(key, problem)
    return [
        attrs.evolve(invalid_record(problem, kinds.get(key)), key=key)
        for key, problem in first.items()
    ]


def run_command(
    settings: RunSettings,
    display: Display,
    env: Mapping[str, str],
    *,
    allow_removed: bool = False,
) -> int:
    """``kling-async run``: check the file, then run it; return the exit code."""
    checked = _check_file(settings, display)
    if isinstance(checked, int):
        return checked
    jobs, skipped = checked
    try:
        target = resolve_target(settings, env)
    except UsageError as exc:
        display.warning(f"kling-async: {exc}")
        return EXIT_USAGE
    if not _check_simulator(settings, target, display):
        return EXIT_USAGE
    display.notice(target.notice)
    known: list[str] = []
    if settings.journal.exists():
        rows = _journal_rows(settings.journal, display)
        if rows is None:
            return EXIT_USAGE
        if not _removed_jobs_allowed(settings, jobs, rows, display, allow=allow_removed):
            return EXIT_USAGE
        known = [row.key for row in rows]
        display.notice(
            f"Continuing the run in {_display_path(settings.journal)}: "
            "finished jobs are not sent again."
        )
    try:
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        save_settings(settings)
    except OSError as exc:
        display.warning(f"kling-async: cannot write to {settings.out_dir}: {exc}")
        return EXIT_USAGE
    return BatchRun(settings, target, display, env, jobs, skipped, known).execute()


def resume_command(
    journal: pathlib.Path,
    overrides: Mapping[str, Any],
    display: Display,
    env: Mapping[str, str],
    *,
    allow_removed: bool = False,
) -> int:
    """``kling-async resume``: continue the run of a journal; return the exit code."""
    saved_path = settings_path(journal)
    # A journal gone while its batch anchor remains was run: its jobs are looked up, not lost.
    lost = None if journal.is_file() else _lost_journal(journal)
    if lost is None and not journal.is_file():
        display.warning(f"kling-async: no journal at {journal}")
        return EXIT_USAGE
    if lost is not None:
        display.notice(f"kling-async: {lost}")
    if saved_path.exists():
        try:
            saved = RunSettings.from_json(json.loads(saved_path.read_text("utf-8")), journal)
        except (OSError, ValueError, TypeError) as exc:
            display.warning(f"kling-async: cannot read {saved_path}: {exc}")
            return EXIT_USAGE
    else:
        saved = RunSettings(jobs=None, out_dir=journal.parent, journal=journal)
    settings = attrs.evolve(saved, **overrides)
    jobs: list[ParsedJob] = []
    skipped: list[JobRecord] = []
    if settings.jobs is not None and settings.jobs.exists():
        checked = _check_file(settings, display)
        if isinstance(checked, int):
            return checked
        jobs, skipped = checked
    elif settings.jobs is not None:
        display.notice(f"{settings.jobs} is gone: resuming the jobs recorded in the journal.")
    if lost is not None and not jobs:
        display.warning(
            f"kling-async: the journal is gone and no job file is left to resume from: run"
            f" the job file again with  kling-async run JOBS --journal {journal}"
        )
        return EXIT_USAGE
    try:
        target = resolve_target(settings, env)
    except UsageError as exc:
        display.warning(f"kling-async: {exc}")
        return EXIT_USAGE
    if not _check_simulator(settings, target, display):
        return EXIT_USAGE
    display.notice(target.notice)
    if target.simulated:
        display.notice(
            "Note: tasks that ran on an earlier in-process simulator are gone with it; "
            "the journal still holds every finished job."
        )
    if lost is not None:
        known: list[str] = []
    else:
        rows = _journal_rows(journal, display)
        if rows is None:
            return EXIT_USAGE
        from_file = settings.jobs is not None and settings.jobs.exists()
        if from_file and not _removed_jobs_allowed(
            settings, jobs, rows, display, allow=allow_removed
        ):
            return EXIT_USAGE
        known = [row.key for row in rows]
    display.notice(f"Resuming {len(known)} journaled job(s) from {_display_path(journal)}.")
    return BatchRun(settings, target, display, env, jobs, skipped, known).execute()


def _journal_rows(journal: pathlib.Path, display: Display) -> list[ka.JobRecord] | None:
    """The journal's rows, or None (and why) when it cannot be read.

    Nothing may be sent then: an unreadable journal taken for a new run would send its
    finished jobs again.
    """
    try:
        _, _, plan = anyio.run(_read_journal, journal)
    except (ka.JournalError, OSError) as exc:
        display.warning(f"kling-async: cannot read the journal {journal}: {exc}. Nothing was sent.")
        return None
    return list(plan.rows())


def _some(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"


def _removed_jobs_allowed(
    settings: RunSettings,
    jobs: Sequence[ParsedJob],
    rows: Sequence[ka.JobRecord],
    display: Display,
    *,
    allow: bool,
) -> bool:
    """Say how the job file differs from the journal; refuse to send jobs it no longer has.

    A journaled job missing from the file is still run from the journal: harmless once
    its task exists or it ended, but one never sent (PENDING) or maybe sent (SUBMITTING)
    would be paid for. Those need ``--allow-removed``.
    """
    in_file = {job.key for job in jobs}
    journaled = {row.key for row in rows}
    removed = [row.key for row in rows if row.key not in in_file]
    added = [job.key for job in jobs if job.key not in journaled]
    if not removed:
        if added and journaled:
            display.notice(f"{settings.jobs} has {len(added)} job(s) new since the run began.")
        return True
    unsent = [
        row.key
        for row in rows
        if row.key not in in_file and row.state in {ka.JobState.PENDING, ka.JobState.SUBMITTING}
    ]
    display.notice(
        f"{settings.jobs} changed since the run began: {len(removed)} journaled job(s) are "
        f"no longer in it ({_some(removed)}); {len(added)} job(s) are new."
    )
    if not unsent:
        display.notice("The jobs no longer in the file have tasks already; they are followed up.")
        return True
    if allow:
        display.notice(f"--allow-removed: sending {len(unsent)} of them ({_some(unsent)}).")
        return True
    display.warning(
        f"kling-async: {len(unsent)} job(s) no longer in {settings.jobs} were not sent yet "
        f"({_some(unsent)}); continuing would send them and they would be paid for. Nothing "
        "was sent. Put them back in the file, or send them anyway with --allow-removed."
    )
    return False


def _lost_journal(journal: pathlib.Path) -> str | None:
    """Why a missing journal is not simply absent: its batch anchor says a run wrote it."""
    try:
        anyio.run(_open_readonly, journal)
    except ka.JournalLost as exc:
        return str(exc)
    except (ka.JournalError, OSError):
        return None
    return None  # pragma: no cover - only when the journal came back meanwhile


async def _open_readonly(journal: pathlib.Path) -> None:
    async with ka.SqliteJournal.open(journal, readonly=True):
        pass  # pragma: no cover - only when the journal came back meanwhile


async def _read_journal(journal: pathlib.Path) -> tuple[str, Mapping[str, Any], ka.ResumePlan]:
    # Read-only: no lock, no write, so it works beside a live run and on read-only media.
    async with ka.SqliteJournal.open(journal, readonly=True) as store:
        return store.batch_id, dict(store.options), await store.resume()


def status_command(journal: pathlib.Path, *, json_output: bool) -> int:
    """``kling-async status``: what a journal holds, without any network call."""
    if not journal.is_file():
        print(f"kling-async: no journal at {journal}", file=sys.stderr)
        return EXIT_USAGE
    try:
        batch_id, _, plan = anyio.run(_read_journal, journal)
    except (ka.JournalError, OSError) as exc:
        print(f"kling-async: cannot read the journal {journal}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = sorted(plan.rows(), key=lambda row: row.created_at)
    states: dict[str, int] = {}
    for row in rows:
        states[row.state.value] = states.get(row.state.value, 0) + 1
    unfinished = sum(1 for row in rows if not row.state.is_final)
    if json_output:
        print(
            json.dumps(
                {
                    "journal": str(journal),
                    "batch_id": batch_id,
                    "jobs": len(rows),
                    "states": states,
                    "unfinished": unfinished,
                    "rows": [_row_json(row) for row in rows],
                },
                ensure_ascii=False,
            )
            .encode("utf-8", "backslashreplace")
            .decode("utf-8")
        )
        return EXIT_OK
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 160  # logs and pipes: keep ids and keys on one line
    console.print(f"journal {journal}  (batch {batch_id})", markup=False)
    counts = ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
    console.print(f"{len(rows)} job(s): {counts or 'none'}", markup=False)
    shown = [row for row in rows if row.state.value != "DOWNLOADED"]
    if shown:
        table = Table(box=box.SIMPLE if console.is_terminal else box.ASCII)
        for column in ("key", "kind", "state", "task id", "attempts"):
            table.add_column(column, no_wrap=True)
        table.add_column("error", overflow="fold")
        for row in shown[:STATUS_ROWS]:
            error = "" if row.error is None else f"{row.error.type}: {row.error.message}"
            cells = (
                row.key,
                row.kind,
                row.state.value,
                row.task_id or "",
                str(row.attempts),
                error,
            )
            table.add_row(*(Text(_printable(str(cell))) for cell in cells))
        console.print(table)
        if len(shown) > STATUS_ROWS:
            console.print(f"... and {len(shown) - STATUS_ROWS} more (use --json for all)")
    if unfinished:
        console.print(f"{unfinished} job(s) unfinished: kling-async resume {journal}", markup=False)
    elif rows:
        age = max(row.updated_at for row in rows) - min(row.created_at for row in rows)
        console.print(f"every job has ended ({format_duration(age)} from first to last)")
    return EXIT_OK


def report_command(
    out_dir: pathlib.Path, journal: pathlib.Path | None, env: Mapping[str, str]
) -> int:
    """``kling-async report``: write ``out_dir/report.html``; return the exit code."""
    journal = journal if journal is not None else out_dir / JOURNAL_FILE
    if not journal.is_file() and not (out_dir / RESULTS_FILE).is_file():
        print(f"kling-async: no run in {out_dir} (no journal, no {RESULTS_FILE})", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = write_report(out_dir, journal=journal, env=env)
    except (OSError, ka.JournalError) as exc:
        print(f"kling-async: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Report: {_display_path(path)}")
    return EXIT_OK


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(text: str) -> str:
    """Text from a journal (so from a server) as a terminal may show it: no escape codes,
    no lone surrogates (they are shown escaped)."""
    return _UNPRINTABLE.sub(lambda match: ascii(match.group())[1:-1], text)


def _row_json(row: ka.JobRecord) -> dict[str, object]:
    return {
        "key": row.key,
        "kind": row.kind,
        "state": row.state.value,
        "task_id": row.task_id,
        "external_id": row.external_id,
        "attempts": row.attempts,
        "files": [file.path for file in row.files],
        "error": None if row.error is None else row.error.to_json(),
    }
