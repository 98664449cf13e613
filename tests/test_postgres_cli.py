"""The command line on a PostgreSQL journal: run, worker, resume, status and their errors."""

import asyncio
import json
import pathlib

import pytest

import kling_async as ka
from kling_async._cli.app import main
from kling_async.simulator import Fixed, Simulator, SimulatorConfig

A = "https://example.com/a.png"
B = "https://example.com/b.png"


def _jobs(path: pathlib.Path, prompt: str) -> pathlib.Path:
    rows = [
        {"key": f"j{i}", "kind": "video" if i % 2 else "image", "images": [A, B], "prompt": prompt}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _sim() -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=0.002, durations={"video": Fixed(seconds=20), "image": Fixed(seconds=10)}
    )


async def test_run_then_status_then_a_conflicting_run(
    fresh_database: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """run --journal postgresql:// runs every job; status counts them; a changed file conflicts."""
    out = tmp_path / "out"
    async with Simulator(_sim()) as sim:
        monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
        common = ["--out", str(out), "--base-url", sim.url, "--time-scale", "0.002"]
        argv = ["run", str(_jobs(tmp_path / "a.jsonl", "one")), "--journal", fresh_database]
        code = await asyncio.to_thread(main, [*argv, "--batch", "cli", *common, "--json"])
        assert code == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [e["event"] for e in events][:2] == ["enqueued", "started"]
        assert sorted(e["key"] for e in events if e["event"] == "job") == [
            f"j{i}" for i in range(6)
        ]
        assert len(list(out.iterdir())) >= 6

        code = await asyncio.to_thread(main, ["status", fresh_database, "--batch", "cli", "--json"])
        assert code == 0
        assert json.loads(capsys.readouterr().out) == {"batch": "cli", "states": {"DOWNLOADED": 6}}

        changed = ["run", str(_jobs(tmp_path / "b.jsonl", "two")), "--journal", fresh_database]
        code = await asyncio.to_thread(main, [*changed, "--batch", "cli", *common])
        assert code == 3
        assert "different request" in capsys.readouterr().err

        # resuming a finished batch has nothing to do
        code = await asyncio.to_thread(
            main, ["resume", fresh_database, "--batch", "cli", *common, "-q"]
        )
        assert code == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--journal", "postgresql://h/db", "--out", "o"], "give --batch"),
        (["worker", "--journal", "run.sqlite", "--batch", "b", "--out", "o"], "postgresql://"),
        (["status", "postgresql://h/db"], "--batch"),
        (["resume", "postgresql://h/db", "--batch", "b"], "--out"),
    ],
)
def test_usage_errors_are_exit_code_two(argv: list[str], message: str, capsys) -> None:
    """Missing or wrong options of the PostgreSQL commands: exit 2 with a message."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_worker_needs_a_real_key(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Without an API key a worker refuses to start (an in-process simulator is no account)."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    argv = ["worker", "--journal", "postgresql://h/db", "--batch", "b", "--out", "o"]
    assert main(argv) == 2
    assert "API key" in capsys.readouterr().err


async def test_joining_an_unknown_batch_stops_with_a_clear_message(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: pathlib.Path
) -> None:
    """worker --batch ID for a batch not in the database: exit 3, 'no batch' on stderr."""
    monkeypatch.setenv("COMETAPI_KEY", "sk-test")
    argv = ["worker", "--journal", fresh_database, "--batch", "ghost", "--out", str(tmp_path)]
    code = await asyncio.to_thread(main, [*argv, "--base-url", "http://127.0.0.1:9"])
    assert code == 3
    assert "no batch 'ghost'" in capsys.readouterr().err
    code = await asyncio.to_thread(main, ["status", fresh_database, "--batch", "ghost"])
    assert code == 2


async def test_status_in_text_and_bad_job_files(
    fresh_database: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """status prints counts per state; an invalid or unreadable job file sends nothing (exit 2)."""
    async with ka.PostgresJournal.open(fresh_database, batch_id="t") as journal:
        await journal.add("a", "video", "f", {"prompt": "x"})
    assert await asyncio.to_thread(main, ["status", fresh_database, "--batch", "t"]) == 0
    assert capsys.readouterr().out.strip() == "batch t: 1 PENDING"
    monkeypatch.setenv("COMETAPI_KEY", "sk-test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x", "kind": "video", "images": []}\n', encoding="utf-8")
    base = ["worker", "--journal", fresh_database, "--out", str(tmp_path)]
    assert main([*base, "--jobs", str(bad)]) == 2
    assert "nothing is sent" in capsys.readouterr().err
    assert main([*base, "--jobs", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
