"""``kling-async`` as a user runs it: a separate process, on the sample files, with exit codes."""

import asyncio
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from kling_async.simulator import AccountState, Simulator, SimulatorConfig
from tests.conftest import API_ENV

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KEY = "sk-cli-test-0123456789"
KEY_NAMES = API_ENV
SAMPLE_KEYS = [
    "sunset-walk",
    "robot-visits-house",
    "mountain-forest-flyover",
    "cat-on-stage",
    "robot-and-cat-portrait",
    "stage-show",
    "polka-house",
]


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in KEY_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "120"
    env.update(extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kling_async._cli.app", *args]


@pytest.fixture
def workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder holding a copy of the bundled examples."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path


def _results(out: pathlib.Path) -> dict[str, dict[str, object]]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["key"]: row for row in map(json.loads, lines)}


def _assert_no_key_in(folder: pathlib.Path) -> None:
    for path in folder.rglob("*.json*"):
        assert KEY not in path.read_text("utf-8", "replace"), path


def _assert_files(out: pathlib.Path, results: dict[str, dict[str, object]]) -> None:
    for row in results.values():
        files = row["files"]
        assert isinstance(files, list)
        assert files, row
        for name in files:
            assert (out / name).stat().st_size > 0


def test_run_csv_without_a_terminal(workdir: pathlib.Path) -> None:
    """CSV run with no key and stdout a pipe: plain lines, results, files, exit 0."""
    done = subprocess.run(
        _cli("run", "examples/jobs.csv", "--out", "out", "--time-scale", "0.002"),
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("No COMETAPI_KEY in the environment: running against a local")
    assert any(line.startswith("kling-async: 5 job(s): 3 video, 2 image") for line in lines)
    assert any("5/5 done | queued 0" in line for line in lines)
    assert "kling-async summary" in done.stdout
    results = _results(workdir / "out")
    assert set(results) == {
        "beach-cat",
        "robot-forest",
        "mountain-dawn",
        "house-party",
        "stage-dots",
    }
    assert {row["status"] for row in results.values()} == {"succeeded"}
    _assert_files(workdir / "out", results)


def test_run_jsonl_json_events(workdir: pathlib.Path) -> None:
    """JSONL run with --json: one JSON event per line, a job event per job, a summary."""
    done = subprocess.run(
        _cli("run", "examples/jobs.jsonl", "--out", "out", "--time-scale", "0.002", "--json"),
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    names = [event["event"] for event in events]
    assert names[:3] == ["validated", "notice", "start"]
    assert names.count("job") == 7
    assert events[-1]["event"] == "summary"
    assert events[-1]["counts"] == {"succeeded": 7}
    assert sorted(_results(workdir / "out")) == sorted(SAMPLE_KEYS)


async def _run_cli(*args: str, cwd: pathlib.Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *_cli(*args),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _run_sample_against(
    sim: Simulator, workdir: pathlib.Path, env: dict[str, str]
) -> tuple[int, str, str]:
    """Run the sample jobs against a stand-alone simulator scaled to x0.002."""
    return await _run_cli(
        "run",
        "examples/jobs.jsonl",
        *("--out", "out", "--base-url", sim.url, "--time-scale", "0.002"),
        cwd=workdir,
        env=env,
    )


async def test_key_and_base_url_reach_a_stand_alone_simulator(workdir: pathlib.Path) -> None:
    """With a key and --base-url, the run goes there; every job is created exactly once."""
    config = SimulatorConfig(api_keys=(KEY,), time_scale=0.002)
    async with Simulator(config) as sim:
        code, out, err = await _run_sample_against(sim, workdir, _env(COMETAPI_KEY=KEY))
        stats = sim.statistics()
    assert code == 0, out + err
    assert f"Sending to {sim.url} (profile cometapi)." in out
    assert "simulator" not in out.splitlines()[0]
    assert stats.tasks_created == 7
    assert set(stats.tasks_created_per_external_id.values()) == {1}
    assert KEY not in out + err
    _assert_no_key_in(workdir)
    _assert_files(workdir / "out", _results(workdir / "out"))


async def test_stopped_batch_exits_3_then_resumes(workdir: pathlib.Path) -> None:
    """An account in arrears stops the batch (exit 3); after paying, resume finishes it."""
    config = SimulatorConfig(api_keys=(KEY,), time_scale=0.002, account_state=AccountState.ARREARS)
    env = _env(COMETAPI_KEY=KEY)
    async with Simulator(config) as sim:
        code, out, err = await _run_sample_against(sim, workdir, env)
        assert code == 3, out + err
        assert "stopped" in out
        assert "kling-async resume out/journal.sqlite" in out
        results = _results(workdir / "out")
        assert {row["status"] for row in results.values()} == {"stopped"}
        assert sim.statistics().tasks_created == 0

        sim.set_account_state(AccountState.ACTIVE)
        code, out, err = await _run_cli("resume", "out/journal.sqlite", cwd=workdir, env=env)
        stats = sim.statistics()
    assert code == 0, out + err
    results = _results(workdir / "out")
    assert sorted(results) == sorted(SAMPLE_KEYS)
    assert {row["status"] for row in results.values()} == {"succeeded"}
    assert stats.tasks_created == 7
    _assert_files(workdir / "out", results)


async def test_ctrl_c_stops_cleanly_and_resume_finishes(workdir: pathlib.Path) -> None:
    """SIGINT mid-run: exit 130 with the resume command; resume ends every job, none paid twice."""
    config = SimulatorConfig(api_keys=(KEY,), time_scale=0.02)
    env = _env(COMETAPI_KEY=KEY)
    async with Simulator(config) as sim:
        process = await asyncio.create_subprocess_exec(
            *_cli("run", "examples/jobs.jsonl", "--out", "out", "--base-url", sim.url),
            *("--time-scale", "0.02"),
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(400):
            if sim.statistics().tasks_created >= 3:
                break
            await asyncio.sleep(0.025)
        assert sim.statistics().tasks_created >= 3
        process.send_signal(signal.SIGINT)
        out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), 30)
        out = out_bytes.decode()
        assert process.returncode == 130, out + err_bytes.decode()
        assert "Interrupted" in out
        assert "Nothing is lost" in out
        assert "kling-async resume out/journal.sqlite" in out

        code, out, err = await _run_cli("resume", "out/journal.sqlite", cwd=workdir, env=env)
        stats = sim.statistics()
    assert code == 0, out + err
    results = _results(workdir / "out")
    assert sorted(results) == sorted(SAMPLE_KEYS)
    assert {row["status"] for row in results.values()} == {"succeeded"}
    assert set(stats.tasks_created_per_external_id.values()) == {1}
    _assert_files(workdir / "out", results)
