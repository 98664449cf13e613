"""The ``kling-async`` command line, run in-process through ``main()`` against the simulator."""

import importlib.metadata
import io
import json
import logging
import pathlib
import shutil
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from rich.console import Console

import kling_async._cli.app as cli_mod
import kling_async._cli.commands as run_mod
from kling_async import AccountError, CometAPI, Kling, ServerError
from kling_async._cli.app import main
from kling_async._cli.commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RunSettings,
    UsageError,
    resolve_target,
    settings_path,
)
from kling_async._cli.progress import Display
from kling_async.simulator import AccountState, Simulator, SimulatorConfig

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
FAST = "0.002"
"""Simulator time scale for tests: a 60 s video takes 0.12 s."""


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key in the environment: runs go to the in-process simulator."""
    for name in (
        "COMETAPI_KEY",
        "COMETAPI_BASE_URL",
        "KLING_API_KEY",
        "KLING_ACCESS_KEY",
        "KLING_SECRET_KEY",
        "KLING_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def examples(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A copy of the bundled examples, with the working directory inside it."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target)
    monkeypatch.chdir(tmp_path)
    return target


def _results(out: pathlib.Path) -> list[dict[str, object]]:
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Missing command, missing --out, bad numbers: exit 2 with argparse's message."""
    assert main([]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", "o", "--concurrency", "0"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", "o", "--rate", "fast"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", "o", "--concurrency", "x"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", "o", "--deadline", "-1"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", "o", "--quiet", "--json"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "the following arguments are required: --out" in err
    assert "must be at least 1" in err
    assert "expected a number" in err
    assert "expected a whole number" in err
    assert "must be a positive number" in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and names every command and the exit codes."""
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for command in ("run", "resume", "status", "validate", "simulate"):
        assert command in out
    assert "3 batch stopped" in " ".join(out.split())
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("kling-async ")


def test_version_from_a_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an installed distribution the version says so instead of failing."""

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli_mod._version() == "(not installed)"


def test_simulate_delegates_to_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    """`kling-async simulate` is the simulator's own command line."""
    assert main(["simulate", "--help"]) == EXIT_OK
    assert "--account-state" in capsys.readouterr().out
    assert main(["simulate", "--port", "x"]) == EXIT_USAGE


def test_validate_good_files(examples: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate on the samples: exit 0 and a count by kind."""
    assert main(["validate", str(examples / "jobs.jsonl")]) == EXIT_OK
    assert main(["validate", str(examples / "jobs.csv"), "--quiet"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "7 of 7 job(s) valid (4 video, 3 image)" in out
    assert "jobs.csv" not in out


def test_validate_reports_every_bad_line(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate on a bad file: exit 2, each bad line with its field and rule."""
    bad = examples / "bad.jsonl"
    bad.write_text(
        '{"key": "a", "kind": "video", "images": ["images/cat.jpg", "images/nope.png"]}\n'
        '{"key": "b", "kind": "image", "images": ["images/cat.jpg", "images/beach.png"], '
        '"n": 12}\n'
        '{"key": "c", "kind": "video", "images": ["images/cat.jpg", "images/beach.png"]}\n',
        encoding="utf-8",
    )
    assert main(["validate", str(bad)]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert "2 problem(s) in 3 row(s)" in out
    assert "images[1]" in out
    assert "file not found: images/nope.png" in out
    assert "12 is outside 1..9" in out
    assert "1 of 3 job(s) valid" in out
    assert main(["validate", str(bad), "--json"]) == EXIT_USAGE
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    invalid = [event for event in events if event["event"] == "invalid"]
    assert [(event["line"], event["field"]) for event in invalid] == [(1, "images[1]"), (2, "n")]


def test_validate_checks_the_rules_of_the_chosen_profile(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 600-character video prompt breaks CometAPI's rules and passes --profile kling."""
    long = examples / "long.jsonl"
    long.write_text(
        json.dumps(
            {
                "key": "a",
                "kind": "video",
                "images": ["images/cat.jpg"],
                "prompt": "p" * 600,
            }
        )
        + "\n",
        encoding="utf-8",
    )
    assert main(["validate", str(long)]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert "600 characters, at most 500 by the CometAPI profile" in out
    assert main(["validate", str(long), "--profile", "kling"]) == EXIT_OK
    assert "1 of 1 job(s) valid" in capsys.readouterr().out


def test_validate_unreadable_and_empty(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file or a file without jobs is bad input (exit 2)."""
    assert main(["validate", str(examples / "missing.jsonl")]) == EXIT_USAGE
    empty = examples / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert main(["validate", str(empty)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot read" in err
    assert "no jobs found" in err


def test_run_jsonl_on_the_in_process_simulator(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key: the run goes to the simulator, says so, and leaves results and files."""
    out = examples.parent / "out"
    code = main(["run", str(examples / "jobs.jsonl"), "--out", str(out), "--time-scale", FAST])
    text = capsys.readouterr().out
    assert code == EXIT_OK, text
    assert "No COMETAPI_KEY in the environment: running against a local in-process simulator" in (
        text
    )
    assert "\x1b[" not in text
    assert "7/7 done" in text
    assert "kling-async summary" in text
    assert "requests made" in text
    results = _results(out)
    assert [r["key"] for r in results] == [
        "sunset-walk",
        "robot-visits-house",
        "mountain-forest-flyover",
        "cat-on-stage",
        "robot-and-cat-portrait",
        "stage-show",
        "polka-house",
    ]
    assert {r["status"] for r in results} == {"succeeded"}
    for result in results:
        assert result["task_id"]
        assert result["error"] is None
        files = result["files"]
        assert isinstance(files, list)
        assert files
        for name in files:
            assert (out / name).stat().st_size > 0
    assert (out / "journal.sqlite").is_file()
    saved = json.loads(settings_path(out / "journal.sqlite").read_text(encoding="utf-8"))
    # saved relative to the settings file, so a moved folder still finds its files
    assert saved["jobs"] == "../examples/jobs.jsonl"
    assert saved["out_dir"] == "."


def test_status_shows_the_journal_without_network(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status prints the states of a finished run; --json gives one object."""
    out = examples.parent / "out"
    assert main(["run", str(examples / "jobs.csv"), "--out", str(out), "--time-scale", FAST]) == 0
    capsys.readouterr()
    journal = out / "journal.sqlite"
    assert main(["status", str(journal)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "5 job(s)" in text
    assert "every job has ended" in text
    assert main(["status", str(journal), "--json"]) == EXIT_OK
    status = json.loads(capsys.readouterr().out)
    assert status["jobs"] == 5
    assert status["unfinished"] == 0
    assert {row["key"] for row in status["rows"]} == {
        "beach-cat",
        "robot-forest",
        "mountain-dawn",
        "house-party",
        "stage-dots",
    }
    assert main(["status", str(out / "missing.sqlite")]) == EXIT_USAGE
    not_a_journal = out / "results.jsonl"
    assert main(["status", str(not_a_journal)]) == EXIT_USAGE


def test_invalid_rows_stop_the_run_before_anything_is_sent(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad row: exit 2, nothing written; --skip-invalid runs the rest and exits 1."""
    jobs = examples / "mixed.jsonl"
    good = (examples / "jobs.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    jobs.write_text(
        "\n".join([*good, '{"key": "broken", "kind": "video", "images": []}']) + "\n",
        encoding="utf-8",
    )
    out = examples.parent / "out"
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", FAST]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "0 images, must be 1 to 4" in captured.out
    assert "nothing was sent" in captured.err
    assert not out.exists()
    code = main(
        ["run", str(jobs), "--out", str(out), "--time-scale", FAST, "--skip-invalid", "--json"]
    )
    assert code == EXIT_FAILED
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "summary"
    assert events[-1]["counts"] == {"succeeded": 2, "invalid": 1}
    statuses = {r["key"]: r["status"] for r in _results(out)}
    assert statuses == {
        "sunset-walk": "succeeded",
        "robot-visits-house": "succeeded",
        "broken": "invalid",
    }


def test_nothing_valid_and_unreadable_files(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--skip-invalid with no valid row, a missing file, an empty file: exit 2."""
    bad = examples / "bad.jsonl"
    bad.write_text('{"key": "x"}\n', encoding="utf-8")
    out = str(examples.parent / "out")
    assert main(["run", str(bad), "--out", out, "--skip-invalid"]) == EXIT_USAGE
    assert main(["run", str(examples / "missing.csv"), "--out", out]) == EXIT_USAGE
    empty = examples / "empty.csv"
    empty.write_text("key,kind,images\n", encoding="utf-8")
    assert main(["run", str(empty), "--out", out]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no valid job" in err
    assert "cannot read" in err
    assert "holds no jobs" in err


def test_a_base_url_without_a_key_is_refused(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base-url with no key in the environment: exit 2, never a silent simulator."""
    code = main(
        [
            "run",
            str(examples / "jobs.jsonl"),
            "--out",
            "out",
            "--base-url",
            "http://127.0.0.1:9",
        ]
    )
    assert code == EXIT_USAGE
    assert "no API key in the environment for http://127.0.0.1:9" in capsys.readouterr().err


def test_target_resolution() -> None:
    """Keys only from the environment; --simulate wins; profiles read their own variables."""
    settings = RunSettings(jobs=None, out_dir=pathlib.Path("o"), journal=pathlib.Path("j"))
    target = resolve_target(settings, {})
    assert target.simulated
    assert "No COMETAPI_KEY" in target.notice
    target = resolve_target(settings, {"COMETAPI_KEY": "sk-x"})
    assert not target.simulated
    assert "CometAPI relay" in target.notice
    assert "sk-x" not in repr(target)
    kling = RunSettings(
        jobs=None, out_dir=pathlib.Path("o"), journal=pathlib.Path("j"), profile="kling"
    )
    env = {"KLING_ACCESS_KEY": "a", "KLING_SECRET_KEY": "s", "KLING_BASE_URL": "https://k.test"}
    target = resolve_target(kling, env)
    assert not target.simulated
    assert target.base_url == "https://k.test"
    assert resolve_target(kling, {"KLING_ACCESS_KEY": "a"}).simulated
    forced = RunSettings(
        jobs=None, out_dir=pathlib.Path("o"), journal=pathlib.Path("j"), simulate=True
    )
    assert resolve_target(forced, {"COMETAPI_KEY": "sk-x"}).simulated
    with pytest.raises(UsageError, match="COMETAPI_KEY"):
        resolve_target(settings, {"COMETAPI_BASE_URL": "https://proxy.test"})


def test_resume_needs_a_journal(examples: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """resume of a missing journal or unreadable settings: exit 2."""
    assert main(["resume", str(examples / "nope.sqlite")]) == EXIT_USAGE
    journal = examples / "j.sqlite"
    journal.write_bytes(b"")
    settings_path(journal).write_text("{not json", encoding="utf-8")
    assert main(["resume", str(journal)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no journal at" in err
    assert "cannot read" in err


def test_resume_a_finished_run_sends_nothing_again(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming (or re-running) a finished run yields the journal's outcomes: exit 0."""
    out = examples.parent / "out"
    jobs = str(examples / "jobs.csv")
    assert main(["run", jobs, "--out", str(out), "--time-scale", FAST]) == EXIT_OK
    capsys.readouterr()
    assert main(["resume", str(out / "journal.sqlite"), "--json"]) == EXIT_OK
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["counts"] == {"succeeded": 5}
    assert summary["requests"].get("create", 0) == 0
    assert len(_results(out)) == 5


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Leave the kling_async logger as it was."""
    logger = logging.getLogger("kling_async")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_kling_profile_limits_and_verbose_logging(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--profile kling, --concurrency, --rate and -v work together on the simulator."""
    out = examples.parent / "out"
    code = main(
        [
            *("run", str(examples / "jobs.csv"), "--out", str(out), "--time-scale", FAST),
            *("--profile", "kling", "--concurrency", "2", "--rate", "50", "-vv"),
        ]
    )
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.out + captured.err
    assert "No KLING_API_KEY or KLING_ACCESS_KEY + KLING_SECRET_KEY" in captured.out
    assert "slots image 2 video 2" in captured.out
    assert logging.getLogger("kling_async").level == logging.DEBUG
    saved = json.loads(settings_path(out / "journal.sqlite").read_text(encoding="utf-8"))
    assert saved["profile"] == "kling"
    assert saved["concurrency"] == 2


def test_setup_logging_on_a_terminal(restore_logging: None) -> None:
    """-v on a terminal logs through rich; without -v nothing is configured."""
    logger = logging.getLogger("kling_async")
    before = list(logger.handlers)
    cli_mod._setup_logging(0, None)
    assert logger.handlers == before
    console = Console(file=io.StringIO(), force_terminal=True)
    cli_mod._setup_logging(1, console)
    assert logger.level == logging.INFO
    assert type(logger.handlers[-1]).__name__ == "RichHandler"


def test_deadline_ends_jobs_timed_out(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--deadline: jobs past it end timed_out and the run exits 1."""
    out = examples.parent / "out"
    code = main(
        [
            *("run", str(examples / "jobs.csv"), "--out", str(out)),
            *("--time-scale", "0.01", "--deadline", "0.05", "--json"),
        ]
    )
    assert code == EXIT_FAILED
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["counts"].get("timed_out", 0) >= 1
    assert summary["hints"] == ["Some jobs did not succeed; details in out/results.jsonl."]
    assert "timed_out" in {r["status"] for r in _results(out)}


def test_changed_request_under_a_known_key_is_refused(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-running into the same journal with a different request for a key: exit 2."""
    out = examples.parent / "out"
    jobs = examples / "jobs.jsonl"
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", FAST, "-q"]) == EXIT_OK
    jobs.write_text(
        jobs.read_text(encoding="utf-8").replace("strolls along", "runs along"), encoding="utf-8"
    )
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", FAST, "-q"]) == EXIT_USAGE
    assert "sunset-walk" in capsys.readouterr().err


def test_resume_when_the_job_file_and_settings_are_gone(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resume works from the journal alone; flags given again override the saved ones."""
    out = examples.parent / "out"
    jobs = examples / "jobs.csv"
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", FAST, "-q"]) == EXIT_OK
    jobs.unlink()
    journal = str(out / "journal.sqlite")
    assert main(["resume", journal, "--concurrency", "3", "--time-scale", FAST]) == EXIT_OK
    text = capsys.readouterr().out
    assert "jobs.csv is gone: resuming the jobs recorded in the journal." in text
    assert "Resuming 5 journaled job(s)" in text
    settings_path(out / "journal.sqlite").unlink()
    assert main(["resume", journal, "--simulate", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["counts"] == {"succeeded": 5}


def test_profiles_for_real_targets() -> None:
    """The real-API profile carries the base URL and the environment's keys."""
    env = {"COMETAPI_KEY": "sk-a", "KLING_API_KEY": "kk", "KLING_ACCESS_KEY": "ak"}
    comet = run_mod._profile(run_mod.Target(False, "cometapi", "https://proxy.test", ""), env, None)
    assert isinstance(comet, CometAPI)
    assert comet.base_url == "https://proxy.test"
    assert comet.api_key == "sk-a"
    kling = run_mod._profile(run_mod.Target(False, "kling", None, ""), env, None)
    assert isinstance(kling, Kling)
    assert kling.api_key == "kk"
    assert kling.access_key == "ak"
    assert kling.secret_key is None


def test_run_failures_map_to_exit_codes(tmp_path: pathlib.Path) -> None:
    """Errors of the whole run: bad input 2, a batch-scoped API error 3, others 1."""
    settings = RunSettings(jobs=None, out_dir=tmp_path, journal=tmp_path / "j.sqlite")
    target = run_mod.Target(True, "cometapi", None, "")
    display = Display()
    batch_run = run_mod.BatchRun(settings, target, display, {}, [])
    assert batch_run._failure(ValueError("bad base URL")) == EXIT_USAGE
    assert batch_run._failure(AccountError("arrears")) == run_mod.EXIT_STOPPED
    assert batch_run._failure(ServerError("down")) == EXIT_FAILED
    assert batch_run._failure(KeyboardInterrupt()) is None
    assert batch_run.state.interrupted
    with pytest.raises(ZeroDivisionError):
        batch_run._failure(ZeroDivisionError())
    group = BaseExceptionGroup("g", [ExceptionGroup("h", [KeyError("k")])])
    assert isinstance(run_mod._first_leaf(group), KeyError)


def test_unwritable_output_folder(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --out that is a file: exit 2 with the reason, nothing sent."""
    blocker = examples.parent / "file"
    blocker.write_text("x", encoding="utf-8")
    code = main(["run", str(examples / "jobs.jsonl"), "--out", str(blocker), "-q"])
    assert code == EXIT_USAGE
    assert "cannot write" in capsys.readouterr().err


KEY = "sk-cli-inprocess-test"


async def test_stopped_batch_then_resume_in_process(
    examples: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arrears stop the batch (exit 3, with the reason and how to resume); resume finishes."""
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    config = SimulatorConfig(api_keys=(KEY,), time_scale=0.002, account_state=AccountState.ARREARS)
    out = examples.parent / "out"
    async with Simulator(config) as sim:
        args = ["run", str(examples / "jobs.csv"), "--out", str(out), "--base-url", sim.url]
        code = await anyio.to_thread.run_sync(main, [*args, "--time-scale", "0.002"])
        text = capsys.readouterr().out
        assert code == run_mod.EXIT_STOPPED, text
        assert "The batch was stopped:" in text
        assert "kling-async resume out/journal.sqlite" in text
        assert {r["status"] for r in _results(out)} == {"stopped"}
        sim.set_account_state(AccountState.ACTIVE)
        code = await anyio.to_thread.run_sync(main, ["resume", str(out / "journal.sqlite")])
        text = capsys.readouterr().out
        assert sim.statistics().tasks_created == 5
    assert code == EXIT_OK, text
    assert f"Sending to {sim.url} (profile cometapi)." in text
    assert {r["status"] for r in _results(out)} == {"succeeded"}


def test_ctrl_c_in_process_leaves_a_resumable_journal(
    examples: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT during a run: exit 130, the summary says how to resume, status shows the rest."""
    tick = run_mod._tick

    async def tick_then_interrupt(*args: Any) -> None:
        with anyio.move_on_after(0.3):
            await tick(*args)
        signal.raise_signal(signal.SIGINT)
        await tick(*args)

    monkeypatch.setattr(run_mod, "_tick", tick_then_interrupt)
    out = examples.parent / "out"
    code = main(["run", str(examples / "jobs.jsonl"), "--out", str(out), "--time-scale", "0.05"])
    text = capsys.readouterr().out
    assert code == run_mod.EXIT_INTERRUPTED, text
    assert "Interrupted:" in text
    assert "The in-process simulator stopped with this run" in text
    assert "Continue with:  kling-async resume out/journal.sqlite" in text
    assert "unfinished" in text
    assert main(["status", str(out / "journal.sqlite")]) == EXIT_OK
    status = capsys.readouterr().out
    assert "job(s) unfinished: kling-async resume" in status
    assert "SUBMITTED" in status or "STOPPED" in status


def test_a_damaged_journal_is_bad_input(
    examples: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal file that is not a journal: reported, exit 2."""
    out = examples.parent / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"this is not sqlite" * 100)
    code = main(["run", str(examples / "jobs.jsonl"), "--out", str(out), "-q"])
    assert code == EXIT_USAGE
    assert "cannot read the journal" in capsys.readouterr().err
