"""``--no-strict-rules``: past a client-side profile rule, the server decides."""

import json
import pathlib

import pytest

from kling_async._cli.app import main
from kling_async._cli.commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RunSettings,
    _engine_knobs,
    settings_path,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
LONG_PROMPT = "a cat walks along the beach " * 25  # 700 characters: CometAPI allows 500


pytestmark = pytest.mark.usefixtures("no_keys")


@pytest.fixture
def jobs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A job file with one video job past CometAPI's documented prompt length."""
    monkeypatch.chdir(tmp_path)
    image = (EXAMPLES / "images" / "beach.png").resolve()
    row = {"key": "long", "kind": "video", "images": [str(image)], "prompt": LONG_PROMPT}
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def test_validate_lists_the_rule_and_passes_with_the_flag(
    jobs: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate refuses a profile rule break; --no-strict-rules lists it and exits 0."""
    assert main(["validate", str(jobs)]) == EXIT_USAGE
    capsys.readouterr()
    assert main(["validate", str(jobs), "--no-strict-rules"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "line 1: prompt: 700 characters, at most 500" in out
    assert "1 job(s) break a documented rule of the CometAPI profile" in out


def test_run_sends_past_the_rule_and_the_server_decides(
    jobs: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run refuses before any send; with --no-strict-rules the job reaches the server."""
    out = tmp_path / "out"
    assert main(["run", str(jobs), "--out", str(out), "--time-scale", "0.002"]) == EXIT_USAGE
    assert "nothing was sent" in capsys.readouterr().err
    code = main(["run", str(jobs), "--out", str(out), "--no-strict-rules", "--time-scale", "0.002"])
    assert code == EXIT_FAILED  # the simulator keeps CometAPI's rule: a server-side 400
    result = json.loads((out / "results.jsonl").read_text("utf-8").splitlines()[0])
    assert result["status"] == "failed"
    assert result["task_id"] is None
    assert "BadRequest" in json.dumps(result)
    saved = json.loads(settings_path(out / "journal.sqlite").read_text("utf-8"))
    assert saved["strict_rules"] is False  # a resume keeps the choice


def test_the_flag_builds_the_client_with_strict_rules_off() -> None:
    """RunSettings(strict_rules=False) builds Client(strict_rules=False)."""
    here = pathlib.Path()
    relaxed = RunSettings(jobs=None, out_dir=here, journal=here, strict_rules=False)
    assert _engine_knobs(relaxed, 1.0)["strict_rules"] is False
    strict = RunSettings(jobs=None, out_dir=here, journal=here)
    assert _engine_knobs(strict, 1.0)["strict_rules"] is True
