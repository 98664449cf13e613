"""Hostile input: job files, keys and images that must be refused before anything is sent.

Each case of issue 12's "paying twice" and "input" classes is one test here, plus the
command line's robustness (Ctrl-C, a full disk, read-only status, a changed job file, a
plain install) and Hypothesis fuzzing of job-file rows: no exception escapes but the
library's own typed errors and the CLI's exit codes.
"""

import base64
import contextlib
import errno
import fcntl
import importlib.metadata
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

import kling_async as ka
import kling_async._cli.app as cli_mod
import kling_async._cli.commands as run_mod
import kling_async._cli.results as results_mod
from kling_async._api.images import check_image, read_image_file, validate_image_bytes
from kling_async._api.wire import request_to_record
from kling_async._cli.app import main
from kling_async._cli.commands import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    RunSettings,
    save_settings,
)
from kling_async._cli.jobs import MAX_JSON_DEPTH, load_jobs
from kling_async._cli.progress import JobRecord, make_display
from kling_async._cli.results import ResultsWriteError, ResultsWriter
from kling_async._durable.records import ErrorRecord, fingerprint

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FAST = "0.002"
GOOD = {"kind": "video", "images": ["images/beach.png", "images/house.png"]}
KEY_NAMES = (
    "COMETAPI_KEY",
    "COMETAPI_BASE_URL",
    "KLING_API_KEY",
    "KLING_ACCESS_KEY",
    "KLING_SECRET_KEY",
    "KLING_BASE_URL",
)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key in the environment: runs go to the in-process simulator."""
    for name in KEY_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def folder(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A copy of the bundled examples, with the working directory inside it."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target)
    monkeypatch.chdir(target)
    return target


def _write_jsonl(path: pathlib.Path, *rows: object) -> pathlib.Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(path: pathlib.Path) -> list[tuple[int, str | None, str | None, str]]:
    _, _, problems = load_jobs(path)
    return [(p.line, p.key, p.field, p.rule) for p in problems]


def _valid_keys(path: pathlib.Path) -> list[str]:
    _, jobs, _ = load_jobs(path)
    return [job.key for job in jobs]


def _jpeg(size: tuple[int, int] = (600, 600)) -> bytes:
    buffer = io.BytesIO()
    PILImage.effect_noise(size, 60).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _png(size: tuple[int, int] = (400, 400)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, "orange").save(buffer, "PNG")
    return buffer.getvalue()


# --- one key rule, checked before anything is paid --------------------------------------

UNSAFE_KEYS = ["../x", "/abs", "C:\\x", "\ud800", "a/../../b", "\\\\server\\share"]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_check_job_key_refuses_keys_that_cannot_name_a_file(key: str) -> None:
    """ka.check_job_key raises UnsafeKey (a ValueError) with the rule, for every unsafe key."""
    with pytest.raises(ka.UnsafeKey) as caught:
        ka.check_job_key(key)
    assert caught.value.rule.startswith("cannot name a file")
    assert isinstance(caught.value, ValueError)


def test_check_job_key_accepts_what_the_downloader_accepts() -> None:
    """Ordinary keys (slashes inside, spaces, Unicode) pass: they are flattened, not refused."""
    for key in ("a", "sub/dir", "with space", "日本", "x..y", ".hidden", "CON"):
        ka.check_job_key(key)


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_validate_and_run_refuse_an_unsafe_key_with_its_line(
    folder: pathlib.Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 good rows and one unsafe key: validate exits 2 naming line 41; run sends nothing."""
    rows: list[object] = [{"key": f"job-{i}", **GOOD} for i in range(40)]
    rows.append({"key": key, **GOOD})
    path = _write_jsonl(folder / "jobs.jsonl", *rows)
    problems = _problems(path)
    assert [(p[0], p[2]) for p in problems] == [(41, "key")], problems
    assert problems[0][3].startswith("cannot name a file")
    assert main(["validate", str(path), "-q"]) == EXIT_USAGE
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "-q"]) == EXIT_USAGE
    assert not (out / "journal.sqlite").exists()
    assert "line 41" in capsys.readouterr().err


def test_control_characters_in_a_key_are_refused(folder: pathlib.Path) -> None:
    """A key with NUL, ESC or a C1 control is refused as such, before the file-name rule."""
    path = _write_jsonl(
        folder / "jobs.jsonl",
        {"key": "a\x00b", **GOOD},
        {"key": "a\x1b[31m", **GOOD},
        {"key": "a\x85b", **GOOD},
        {"key": "fine", **GOOD},
    )
    assert [p[:3] for p in _problems(path)] == [
        (1, None, "key"),
        (2, None, "key"),
        (3, None, "key"),
    ]
    assert _valid_keys(path) == ["fine"]


# --- input parsing that cannot crash -----------------------------------------------------


def test_a_100000_deep_json_array_is_a_problem_not_a_crash(folder: pathlib.Path) -> None:
    """A 100,000-deep array is refused with its line; the other rows are read."""
    deep = "[" * 100_000 + "]" * 100_000
    inside = json.dumps({"key": "nested", **GOOD})[:-1] + ', "prompt": ' + deep + "}"
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "ok", **GOOD}, deep, inside)
    problems = _problems(path)
    assert problems == [
        (2, None, None, f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (3, None, None, f"nested deeper than {MAX_JSON_DEPTH} levels"),
    ]
    assert _valid_keys(path) == ["ok"]


def test_brackets_inside_strings_do_not_count_as_depth(folder: pathlib.Path) -> None:
    """A prompt full of brackets and escaped quotes is text, not nesting."""
    prompt = '[[[[{{{{ "quoted \\" [[[[ ' * 10
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "ok", **GOOD, "prompt": prompt})
    assert _problems(path) == []


def test_a_5000_digit_integer_is_a_problem_not_a_crash(folder: pathlib.Path) -> None:
    """A 5,000-digit number (JSON or CSV) is refused with its line, without a ValueError."""
    huge = "9" * 5000
    path = folder / "jobs.jsonl"
    path.write_text(
        '{"key": "big", "kind": "image", "n": ' + huge + ', "images": ["images/beach.png", '
        '"images/house.png"]}\n' + json.dumps({"key": "ok", **GOOD}) + "\n",
        encoding="utf-8",
    )
    assert _problems(path) == [(1, None, None, "a number of 5000 characters (at most 40)")]
    assert _valid_keys(path) == ["ok"]
    csv_path = folder / "jobs.csv"
    csv_path.write_text(
        f"key,kind,images,n,cfg_scale\nbig,image,images/beach.png|images/house.png,{huge},\n"
        f"f,video,images/beach.png|images/house.png,,{huge}\n",
        encoding="utf-8",
    )
    problems = _problems(csv_path)
    assert [p[:3] for p in problems] == [(2, "big", "n"), (3, "f", "cfg_scale")]
    assert all(len(p[3]) < 120 for p in problems)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(folder: pathlib.Path, literal: str) -> None:
    """NaN, Infinity and an overflowing float are refused in JSON and in CSV."""
    row = json.dumps({"key": "x", **GOOD})[:-1] + f', "cfg_scale": {literal}}}'
    path = _write_jsonl(folder / "jobs.jsonl", row)
    assert len(_problems(path)) == 1
    csv_path = folder / "jobs.csv"
    csv_path.write_text(
        f"key,kind,images,cfg_scale\nx,video,images/beach.png|images/house.png,{literal}\n",
        encoding="utf-8",
    )
    assert [p[:3] for p in _problems(csv_path)] == [(2, "x", "cfg_scale")]


def test_an_unterminated_csv_quote_is_found_and_later_rows_are_read(
    folder: pathlib.Path,
) -> None:
    """A quote left open on line 3 is a problem on line 3; the rows after it still count."""
    path = folder / "jobs.csv"
    images = "images/beach.png|images/house.png"
    path.write_text(
        "key,kind,images,prompt\n"
        f"a,video,{images},fine\n"
        f'b,video,{images},"never closed\n'
        f"c,video,{images},hello\n"
        f"d,video,{images},last\n",
        encoding="utf-8",
    )
    problems = _problems(path)
    assert problems == [
        (3, None, None, "unterminated quote: the quoted cell runs to the end of the file")
    ]
    assert _valid_keys(path) == ["a", "c", "d"]
    job_file, _, _ = load_jobs(path)
    assert job_file.rows == 4


def test_an_unbalanced_csv_quote_midway_is_found_and_later_rows_are_read(
    folder: pathlib.Path,
) -> None:
    """A quote closed by a later row's quote is a problem on its line; the rows between count."""
    path = folder / "jobs.csv"
    images = "images/beach.png|images/house.png"
    path.write_text(
        "key,kind,images,prompt\n"
        f'a,video,{images},"opened\n'
        f"b,video,{images},hello\n"
        f'c,video,{images},"quoted"\n',
        encoding="utf-8",
    )
    problems = _problems(path)
    assert [p[:3] for p in problems] == [(2, None, None)]
    assert problems[0][3].startswith("unbalanced quote: a quoted cell runs on to line 4")
    assert _valid_keys(path) == ["b", "c"]


def test_multi_line_quoted_cells_are_still_read(folder: pathlib.Path) -> None:
    """A properly quoted prompt over two lines is one cell of one row."""
    path = folder / "jobs.csv"
    path.write_text(
        'key,kind,images,prompt\na,video,images/beach.png|images/house.png,"two\nlines"\n',
        encoding="utf-8",
    )
    _, jobs, problems = load_jobs(path)
    assert problems == ()
    assert jobs[0].request.prompt == "two\nlines"


def test_a_duplicated_json_key_is_refused(folder: pathlib.Path) -> None:
    """{"prompt": "a", "prompt": "b"} is refused naming the key, not silently last-wins."""
    row = '{"key": "k", "kind": "video", "prompt": "a", "prompt": "b", "images": []}'
    nested = (
        '{"key": "m", "kind": "video", "images": ["images/beach.png", '
        '{"path": "images/house.png", "path": "images/cat.jpg"}]}'
    )
    path = _write_jsonl(folder / "jobs.jsonl", row, nested, {"key": "ok", **GOOD})
    assert _problems(path) == [
        (1, None, "prompt", "given twice in one object"),
        (2, None, "path", "given twice in one object"),
    ]
    assert _valid_keys(path) == ["ok"]


def test_a_duplicated_csv_column_is_refused(folder: pathlib.Path) -> None:
    """Two columns that read as one field ("Prompt" and "prompt"): every row is refused."""
    path = folder / "jobs.csv"
    path.write_text(
        "key,kind,images,Prompt,prompt\n"
        "a,video,images/beach.png|images/house.png,x,y\n"
        "b,video,images/beach.png|images/house.png,x,y\n",
        encoding="utf-8",
    )
    problems = _problems(path)
    assert [p[0] for p in problems] == [2, 3]
    assert all("names column 'prompt' twice (4 and 5)" in p[3] for p in problems)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", 5),
        ("prompt", 5.5),
        ("prompt", True),
        ("negative_prompt", ["a"]),
        ("model_name", 1),
        ("mode", 0),
        ("aspect_ratio", 16),
        ("callback_url", 8080),
        ("duration", 5.0),
        ("duration", False),
    ],
)
def test_text_fields_are_strictly_strings(folder: pathlib.Path, field: str, value: object) -> None:
    """A prompt (or any text field) that is a number, boolean or list is refused."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "k", **GOOD, field: value})
    problems = _problems(path)
    assert [p[2] for p in problems] == [field]
    assert "must be a string" in problems[0][3]


def test_duration_may_be_a_whole_number_of_seconds(folder: pathlib.Path) -> None:
    """ "duration": 10 is read as the wire's "10" (the documented convenience)."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "k", **GOOD, "duration": 10})
    _, jobs, problems = load_jobs(path)
    assert problems == ()
    request = jobs[0].request
    assert isinstance(request, ka.MultiImageToVideo)
    assert request.duration is ka.Duration.TEN


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("prompt", "a\x00b", "U+0000"),
        ("prompt", "bell\x07", "U+0007"),
        ("prompt", "esc\x1b[2J", "U+001B"),
        ("negative_prompt", "del\x7f", "U+007F"),
        ("aspect_ratio", "16:9\n", "U+000A"),
        ("images", ["images/beach.png", "images/house.png\x00"], "U+0000"),
        ("images", ["images/beach.png", "images/\nhouse.png"], "U+000A"),
    ],
)
def test_control_characters_are_refused(
    folder: pathlib.Path, field: str, value: object, code: str
) -> None:
    """NUL and other control characters are refused in text, paths and codes."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "k", **GOOD, field: value})
    problems = _problems(path)
    assert len(problems) == 1, problems
    assert str(problems[0][2]).startswith(field)
    assert problems[0][3] == f"must not contain control characters ({code})"


def test_prompts_may_hold_tabs_and_line_breaks(folder: pathlib.Path) -> None:
    """Free text keeps tabs and line breaks (a multi-line prompt is legitimate)."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "k", **GOOD, "prompt": "a\tb\nc\r\nd"})
    assert _problems(path) == []


def test_a_lone_surrogate_anywhere_is_refused(folder: pathlib.Path) -> None:
    """JSON escapes that decode to a lone surrogate are refused: they cannot be sent as UTF-8."""
    path = folder / "jobs.jsonl"
    path.write_text(
        '{"key": "k", "kind": "video", "prompt": "x\\udc00", '
        '"images": ["images/beach.png", "images/house.png"]}\n'
        '{"key": "m", "kind": "video", "images": ["images/beach.png", "images/\\ud800.png"]}\n',
        encoding="utf-8",
    )
    problems = _problems(path)
    assert [p[:3] for p in problems] == [(1, "k", "prompt"), (2, "m", "images[1]")]
    assert all("lone surrogate" in p[3] for p in problems)


def test_a_nul_byte_in_a_csv_cell_is_refused(folder: pathlib.Path) -> None:
    """A NUL in a CSV cell is refused with its line and column, the next row is read."""
    path = folder / "jobs.csv"
    path.write_text(
        "key,kind,images,prompt\n"
        "a,video,images/beach.png|images/house.png,nul\x00here\n"
        "b,video,images/beach.png|images/house.png,fine\n",
        encoding="utf-8",
    )
    assert [p[:3] for p in _problems(path)] == [(2, "a", "prompt")]
    assert _valid_keys(path) == ["b"]


def test_unprintable_field_names_are_escaped_in_problems(folder: pathlib.Path) -> None:
    """An unknown field named with escape codes is shown escaped (no terminal injection)."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "k", **GOOD, "\x1b[2Jx": 1})
    problems = _problems(path)
    assert problems == [(1, "k", "\\x1b[2Jx", "unknown field")]


def test_unicode_line_separators_do_not_split_jsonl_rows(folder: pathlib.Path) -> None:
    """U+2028 inside a JSON string is text: the row is not cut in two."""
    path = folder / "jobs.jsonl"
    row = json.dumps({"key": "k", **GOOD, "prompt": "a\u2028b"}, ensure_ascii=False)
    path.write_text(row + "\n", encoding="utf-8")
    _, jobs, problems = load_jobs(path)
    assert problems == ()
    assert jobs[0].request.prompt == "a\u2028b"


# --- truncated images ---------------------------------------------------------------------


def test_a_png_cut_to_40_bytes_is_refused(folder: pathlib.Path) -> None:
    """A PNG whose header is whole but which ends at 40 bytes is refused before sending."""
    (folder / "cut.png").write_bytes(_png()[:40])
    path = _write_jsonl(
        folder / "jobs.jsonl",
        {"key": "k", "kind": "video", "images": ["images/beach.png", "cut.png"]},
    )
    assert _problems(path) == [
        (1, "k", "images[1]", "truncated PNG (the file ends without its IEND chunk)")
    ]
    assert main(["validate", str(path), "-q"]) == EXIT_USAGE


def test_a_jpeg_cut_to_300_bytes_is_refused(folder: pathlib.Path) -> None:
    """A JPEG whose frame header is in its first 300 bytes but that ends there is refused."""
    (folder / "cut.jpg").write_bytes(_jpeg()[:300])
    path = _write_jsonl(
        folder / "jobs.jsonl",
        {"key": "k", "kind": "video", "images": ["images/beach.png", "cut.jpg"]},
    )
    assert _problems(path) == [
        (1, "k", "images[1]", "truncated JPEG (the file ends without its EOI marker)")
    ]


@pytest.mark.parametrize(
    ("data", "good"),
    [
        (_png(), True),
        (_jpeg(), True),
        (_png()[:40], False),
        (_jpeg()[:300], False),
        (_jpeg()[:-2], False),
        (_png()[:-1], False),
        (_png() + b"\x00" * 64, True),
        (_jpeg() + b"\x00" * 300_000, True),
        (_jpeg()[:-2] + b"\x00" * 300_000, False),
    ],
)
def test_truncation_is_judged_the_same_for_files_bytes_and_base64(
    tmp_path: pathlib.Path, data: bytes, good: bool
) -> None:
    """A file, raw bytes and Base64 of the same image give the same verdict on its end."""
    path = tmp_path / "image"
    path.write_bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    checks = [
        lambda: read_image_file(path),
        lambda: validate_image_bytes(data),
        lambda: check_image(ka.Image.from_base64(encoded), "image"),
    ]
    for check in checks:
        if good:
            check()
        else:
            with pytest.raises(ka.InvalidRequest, match="truncated"):
                check()


def test_a_thumbnail_end_marker_does_not_pass_for_the_image(tmp_path: pathlib.Path) -> None:
    """A cut JPEG whose metadata holds a thumbnail (with its own EOI) is still refused."""
    thumbnail = b"\xff\xd8" + b"\x00" * 20 + b"\xff\xd9"
    exif = b"Exif\x00\x00" + thumbnail
    whole = _jpeg()
    data = whole[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + whole[2:]
    path = tmp_path / "thumb.jpg"
    path.write_bytes(data[:400])
    with pytest.raises(ka.InvalidRequest, match="truncated JPEG"):
        read_image_file(path)
    path.write_bytes(data)
    assert read_image_file(path).width == 600


# --- the command line: Ctrl-C, a full disk, status, a changed file, a plain install -------


def test_ctrl_c_during_validation_exits_130_without_a_traceback(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KeyboardInterrupt while a job file is read: exit 130 and one line, for every command."""

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "load_jobs", interrupted)
    monkeypatch.setattr(run_mod, "load_jobs", interrupted)
    assert main(["validate", "jobs.jsonl"]) == EXIT_INTERRUPTED
    assert main(["run", "jobs.jsonl", "--out", "out"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("kling-async: interrupted") == 2
    assert "Traceback" not in err


def test_ctrl_c_during_start_up_exits_130(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KeyboardInterrupt while the target is chosen or the parser built: exit 130."""

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "resolve_target", interrupted)
    assert main(["run", "jobs.jsonl", "--out", "out", "-q"]) == EXIT_INTERRUPTED
    monkeypatch.setattr(cli_mod, "build_parser", interrupted)
    assert main(["status", "x"]) == EXIT_INTERRUPTED
    assert "Traceback" not in capsys.readouterr().err


def _env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in KEY_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("command", [["validate"], ["run", "--out", "out"]])
def test_ctrl_c_while_reading_a_job_file_in_a_real_process(
    tmp_path: pathlib.Path, command: list[str]
) -> None:
    """SIGINT to a process blocked reading its job file (a FIFO): exit 130, no traceback."""
    fifo = tmp_path / "jobs.jsonl"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, "-m", "kling_async._cli.app", command[0], str(fifo), *command[1:]],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    writer = None
    try:
        deadline = time.monotonic() + 30
        while writer is None and time.monotonic() < deadline:
            try:  # succeeds once the child has opened the FIFO for reading
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.02)
        assert writer is not None, "the child never opened its job file"
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Never hang the suite: a read still blocked on the FIFO gets EOF, and the
            # assertions below say whether the interrupt was honoured.
            os.close(writer)
            writer = None
            _, err = process.communicate(timeout=30)
    finally:
        if writer is not None:
            os.close(writer)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == EXIT_INTERRUPTED, err
    assert b"Traceback" not in err
    assert b"interrupted" in err


def _record(key: str) -> JobRecord:
    return JobRecord(key=key, kind="video", status="succeeded", files=(f"{key}.mp4",))


def test_a_full_disk_never_leaves_half_a_results_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC mid-line: ResultsWriteError, and the file holds only whole lines."""
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.open()
    writer.write(_record("first"))
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(ResultsWriteError, match="No space left on device"):
        writer.write(_record("second"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["first"]
    monkeypatch.setattr(os, "write", real_write)
    writer.write(_record("third"))
    writer.close(["first", "second", "third"])
    keys = [json.loads(line)["key"] for line in path.read_text("utf-8").splitlines()]
    assert keys == ["first", "second", "third"]


def test_a_full_disk_at_compaction_keeps_the_appended_lines(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the compacted copy cannot be written, the appended lines stay and no .tmp is left."""
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.open()
    writer.write(_record("a"))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ResultsWriteError):
        writer.close(["a"])
    assert [json.loads(line)["key"] for line in path.read_text("utf-8").splitlines()] == ["a"]
    assert not (tmp_path / "results.jsonl.tmp").exists()


def test_a_results_line_with_a_lone_surrogate_is_escaped(tmp_path: pathlib.Path) -> None:
    """Text from a server that is not valid Unicode is written escaped, not a crash."""
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as writer:
        writer.write(JobRecord(key="k", kind="video", status="failed", error={"message": "\ud800"}))
    assert json.loads(path.read_text("ascii"))["error"]["message"] == "\ud800"


def test_a_full_disk_during_a_run_is_a_clear_error(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """results.jsonl fills the disk mid-run: exit 2, the reason and resume hint, whole lines."""
    real_append = results_mod._append_whole
    calls = {"n": 0}

    def full_after_two(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(fd, data)

    monkeypatch.setattr(results_mod, "_append_whole", full_after_two)
    out = folder / "out"
    code = main(["run", "jobs.jsonl", "--out", str(out), "--time-scale", FAST, "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "No space left on device" in err
    assert "kling-async resume" in err
    assert "Traceback" not in err
    for line in (out / "results.jsonl").read_text("utf-8").splitlines():
        json.loads(line)


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str) -> Iterator[pathlib.Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _finished_run(folder: pathlib.Path) -> pathlib.Path:
    out = folder / "out"
    assert main(["run", "jobs.jsonl", "--out", str(out), "--time-scale", FAST, "-q"]) == EXIT_OK
    return out / "journal.sqlite"


def test_status_works_beside_a_live_run(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a run holds the journal's lock, status still reads it (resume is refused)."""
    journal = _finished_run(folder)
    capsys.readouterr()
    lock = os.open(f"{journal}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["status", str(journal)]) == EXIT_OK
        assert "7 job(s): DOWNLOADED 7" in capsys.readouterr().out
        assert main(["resume", str(journal), "-q"]) == EXIT_USAGE
    finally:
        os.close(lock)


def test_status_falls_back_to_an_immutable_read(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When a read-only open fails (no -shm can be made), status reads the file as immutable."""
    import sqlite3  # noqa: PLC0415 - only this test patches it

    journal = _finished_run(folder)
    capsys.readouterr()
    real_connect = sqlite3.connect
    uris: list[str] = []

    def read_only_media(database: str, *args: Any, **kwargs: Any) -> Any:
        uris.append(database)
        if "immutable=1" not in database:
            database = "file:/nonexistent/dir/journal.sqlite?mode=ro"
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_media)
    assert main(["status", str(journal)]) == EXIT_OK
    assert "DOWNLOADED 7" in capsys.readouterr().out
    assert uris[-1].endswith("?mode=ro&immutable=1")


def test_status_on_read_only_media(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal on a read-only file system is shown by status (needs a tmpfs mount)."""
    journal = _finished_run(folder)
    capsys.readouterr()
    with _tmpfs(folder.parent / "media", "4m") as media:
        shutil.copy(journal, media / "journal.sqlite")
        remount = ["mount", "-o", "remount,ro", str(media)]
        subprocess.run(remount, check=True, capture_output=True)
        assert main(["status", str(media / "journal.sqlite")]) == EXIT_OK
        assert "DOWNLOADED 7" in capsys.readouterr().out


async def _journal_pending(journal: pathlib.Path, jobs: list[Any]) -> None:
    async with ka.SqliteJournal.open(journal) as store:
        for job in jobs:
            record = request_to_record(job.request)
            await store.add(job.key, job.request.kind.value, fingerprint(record), record)


def test_resume_with_jobs_removed_from_the_file_asks_for_a_flag(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unsent journaled jobs missing from the job file: resume says so, exit 2, until allowed."""
    jobs_path = folder / "jobs.jsonl"
    _, jobs, _ = load_jobs(jobs_path)
    out = folder / "out"
    journal = out / "journal.sqlite"
    out.mkdir()
    anyio.run(_journal_pending, journal, list(jobs[:3]))
    save_settings(RunSettings(jobs=jobs_path, out_dir=out, journal=journal))
    lines = jobs_path.read_text("utf-8").splitlines()
    jobs_path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    removed = jobs[0].key
    resume = ["resume", str(journal), "--time-scale", FAST]
    assert main(resume) == EXIT_USAGE
    captured = capsys.readouterr()
    assert f"no longer in it ({removed})" in captured.out
    assert "--allow-removed" in captured.err
    assert not (out / "results.jsonl").exists()
    assert main(["run", str(jobs_path), "--out", str(out), "-q"]) == EXIT_USAGE
    assert main([*resume, "--allow-removed", "-q"]) == EXIT_OK
    results = [json.loads(line) for line in (out / "results.jsonl").read_text("utf-8").splitlines()]
    assert {row["key"] for row in results} == {job.key for job in jobs}


def test_resume_with_only_new_jobs_in_the_file_just_says_so(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job file that only grew needs no flag: the new jobs are named and sent."""
    jobs_path = folder / "jobs.jsonl"
    _, jobs, _ = load_jobs(jobs_path)
    out = folder / "out"
    journal = out / "journal.sqlite"
    out.mkdir()
    anyio.run(_journal_pending, journal, list(jobs[:2]))
    save_settings(RunSettings(jobs=jobs_path, out_dir=out, journal=journal))
    assert main(["resume", str(journal), "--time-scale", FAST]) == EXIT_OK
    assert f"{len(jobs) - 2} job(s) new since the run began" in capsys.readouterr().out


def test_removed_jobs_that_already_ran_need_no_flag(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finished jobs missing from the file are only reported: nothing of them is sent again."""
    journal = _finished_run(folder)
    jobs_path = folder / "jobs.jsonl"
    lines = jobs_path.read_text("utf-8").splitlines()
    jobs_path.write_text("\n".join(lines[2:]) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["resume", str(journal), "--time-scale", FAST]) == EXIT_OK
    text = capsys.readouterr().out
    assert "2 journaled job(s) are no longer in it" in text
    assert "have tasks already" in text


def _without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name.lower() == "pillow":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def test_a_plain_install_says_what_to_install_before_anything_runs(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key and no simulator extra: run, resume and simulate exit 2 naming the pip command."""
    journal = _finished_run(folder)
    capsys.readouterr()
    _without_pillow(monkeypatch)
    out = folder / "fresh"
    assert main(["run", "jobs.jsonl", "--out", str(out)]) == EXIT_USAGE
    assert not out.exists()
    assert main(["run", "jobs.jsonl", "--out", str(out), "--simulate"]) == EXIT_USAGE
    assert main(["resume", str(journal)]) == EXIT_USAGE
    assert main(["simulate", "--port", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("pip install 'kling-async[simulator]'") == 4
    assert "missing: pillow" in err
    assert err.count("or set COMETAPI_KEY") == 2


def test_a_key_needs_no_simulator_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra is only checked for the simulator; a source tree without metadata passes."""
    _without_pillow(monkeypatch)
    assert run_mod.missing_simulator_packages() == ["pillow"]
    settings = RunSettings(jobs=None, out_dir=pathlib.Path("o"), journal=pathlib.Path("j"))
    target = run_mod.resolve_target(settings, {"COMETAPI_KEY": "sk-test"})
    assert run_mod._check_simulator(settings, target, make_display(json_events=False, quiet=True))

    def no_metadata(name: str) -> list[str]:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", no_metadata)
    assert run_mod.missing_simulator_packages() == []


# --- fuzzing: no exception escapes ------------------------------------------------------

_FIELD_NAMES = [
    "key",
    "kind",
    "images",
    "image_list",
    "prompt",
    "negative_prompt",
    "mode",
    "duration",
    "cfg_scale",
    "n",
    "aspect_ratio",
    "static_mask",
    "dynamic_masks",
    "scene_image",
    "external_task_id",
    "callback_url",
]
_STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["video", "image", "a.png", "b.jpg", "../x", "/abs", "http://h/x.png", "5", "16:9"]
    ),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _STRINGS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["x", "y", "mask", "trajectories", "path", "url"]), children, max_size=3
        )
    ),
    max_leaves=12,
)
_ROW = st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=5), _JSON, max_size=8)
_LINE = st.one_of(
    _ROW.map(lambda row: json.dumps(row, allow_nan=True)),
    st.text(max_size=60),
    st.sampled_from(['{"key": 1, "key": 2}', "[" * 50, '{"n": 1e999}', '{"a": "\\ud800"}']),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder with two good images the fuzzed rows may name."""
    path = tmp_path_factory.mktemp("fuzz")
    (path / "a.png").write_bytes(_png())
    (path / "b.jpg").write_bytes(_jpeg())
    return path


def _load_never_raises(path: pathlib.Path) -> None:
    job_file, jobs, problems = load_jobs(path)
    assert len(jobs) <= job_file.rows
    assert all(isinstance(job.request, ka.MultiImageToVideo | ka.MultiImageToImage) for job in jobs)
    for problem in problems:
        str(problem)
        json.dumps(problem.to_json())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_LINE, max_size=6))
def test_fuzzed_jsonl_rows_never_crash(fuzz_dir: pathlib.Path, lines: list[str]) -> None:
    """Any JSONL content: load_jobs returns jobs and problems, never raises."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=fuzz_dir, delete=False) as f:
        f.write("\n".join(lines))
    path = pathlib.Path(f.name)
    try:
        _load_never_raises(path)
    finally:
        path.unlink()


_CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ['"', '""', '"a', 'a"', '"a,b"', "a|b", "a.png|b.jpg", "\n", "\r\n", ";", "\t"]
    ),
)
_HEADER = st.lists(st.sampled_from([*_FIELD_NAMES, "image1", "image_2", "Prompt", ""]), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=_HEADER,
    rows=st.lists(st.lists(_CELL, max_size=6), max_size=5),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_fuzzed_csv_rows_never_crash(
    fuzz_dir: pathlib.Path, header: list[str], rows: list[list[str]], delimiter: str
) -> None:
    """Any CSV content, quotes and line breaks included: load_jobs never raises."""
    text = "\n".join(delimiter.join(cells) for cells in [header, *rows])
    with tempfile.NamedTemporaryFile("w", suffix=".csv", dir=fuzz_dir, delete=False) as f:
        f.write(text)
    path = pathlib.Path(f.name)
    try:
        _load_never_raises(path)
    finally:
        path.unlink()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=200) | _LINE.map(str.encode),
    suffix=st.sampled_from([".jsonl", ".csv", ".txt"]),
    output=st.sampled_from([[], ["--json"], ["-q"]]),
)
def test_fuzzed_bytes_give_a_clean_exit_code(
    fuzz_dir: pathlib.Path, data: bytes, suffix: str, output: list[str]
) -> None:
    """Any bytes as a job file, any output mode: validate returns 0 or 2, never raises."""
    with tempfile.NamedTemporaryFile("wb", suffix=suffix, dir=fuzz_dir, delete=False) as f:
        f.write(data)
    path = pathlib.Path(f.name)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["validate", str(path), *output]) in {EXIT_OK, EXIT_USAGE}
    finally:
        path.unlink()


def test_more_refusals_of_numbers_headers_and_base64(folder: pathlib.Path) -> None:
    """Over-long floats, a CSV header with an open quote and a damaged Base64 end are refused."""
    row = json.dumps({"key": "x", **GOOD})[:-1] + ', "cfg_scale": 0.' + "1" * 60 + "}"
    assert _problems(_write_jsonl(folder / "jobs.jsonl", row)) == [
        (1, None, None, "a number of 62 characters (at most 40)")
    ]
    header = folder / "header.csv"
    header.write_text('key,"kind\nx,video\n', encoding="utf-8")
    assert [p[0] for p in _problems(header)] == [1]
    assert _problems(header)[0][3].startswith("unreadable CSV header")
    word = folder / "word.csv"
    word.write_text(
        "key,kind,images,cfg_scale\nx,video,images/beach.png|images/house.png,abc\n",
        encoding="utf-8",
    )
    assert _problems(word) == [(2, "x", "cfg_scale", "must be a number, not 'abc'")]
    encoded = base64.b64encode(_jpeg()).decode("ascii")
    with pytest.raises(ka.InvalidRequest, match="not valid Base64"):
        check_image(ka.Image.from_base64(encoded[:-8] + "@@@@" + encoded[-4:]), "image")


def test_results_that_cannot_be_written_stop_before_the_run(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk while the skipped rows are written: exit 2 before any job is sent."""
    _write_jsonl(folder / "mixed.jsonl", {"key": "ok", **GOOD}, {"key": "../bad", **GOOD})

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_mod, "_append_whole", full)
    out = folder / "out"
    code = main(["run", "mixed.jsonl", "--out", str(out), "--skip-invalid", "-q"])
    assert code == EXIT_USAGE
    assert "No space left on device" in capsys.readouterr().err
    assert not (out / "ok.png").exists()


def test_results_that_cannot_be_compacted_end_the_run_with_exit_2(
    folder: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run finished but results.jsonl cannot be rewritten: a clear error, exit 2."""

    def full(self: ResultsWriter, order: object = ()) -> None:
        raise ResultsWriteError(self.path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(ResultsWriter, "close", full)
    out = folder / "out"
    code = main(["run", "jobs.jsonl", "--out", str(out), "--time-scale", FAST, "-q"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot write" in err
    assert "Traceback" not in err


def test_an_emptied_journal_stops_run_resume_and_status(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """journal.sqlite truncated to 0 bytes: run, resume and status exit 2; nothing is re-sent."""
    journal = _finished_run(folder)
    journal.write_bytes(b"")
    results = (journal.parent / "results.jsonl").read_text("utf-8")
    capsys.readouterr()
    assert main(["status", str(journal)]) == EXIT_USAGE
    assert main(["resume", str(journal), "-q"]) == EXIT_USAGE
    assert main(["run", "jobs.jsonl", "--out", str(journal.parent), "-q"]) == EXIT_USAGE
    assert "Nothing was sent" in capsys.readouterr().err
    assert journal.read_bytes() == b""
    assert (journal.parent / "results.jsonl").read_text("utf-8") == results


async def _journal_hostile_failure(journal: pathlib.Path, job: Any, message: str) -> None:
    async with ka.SqliteJournal.open(journal) as store:
        record = request_to_record(job.request)
        await store.add(job.key, job.request.kind.value, fingerprint(record), record)
        await store.mark_submitting(job.key, "ext-1")
        await store.mark_submitted(job.key, "task-1")
        error = ErrorRecord(type="TaskFailed", message=message)
        await store.mark_terminal(job.key, ka.JobState.FAILED, error=error)


def test_status_shows_hostile_server_text_inert(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure message with rich markup and a terminal escape code: shown inert."""
    _, jobs, _ = load_jobs(folder / "jobs.jsonl")
    journal = folder / "journal.sqlite"
    message = "[/red] boom \x1b[2J gone"
    anyio.run(_journal_hostile_failure, journal, jobs[0], message)
    assert main(["status", str(journal)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "[/red] boom \\x1b[2J gone" in text
    assert "\x1b" not in text
    assert main(["status", str(journal), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][0]["error"]["message"] == message
    assert run_mod._printable("tab\tok \ud800") == "tab\tok \\ud800"


def test_markup_in_a_job_file_is_shown_as_text(
    folder: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key and a field named like rich markup ("[/red]") are printed as they are."""
    path = _write_jsonl(folder / "jobs.jsonl", {"key": "[/red]k", **GOOD, "[/bold]": 1})
    assert main(["validate", str(path)]) == EXIT_USAGE
    text = capsys.readouterr().out
    assert "[/red]k" in text
    assert "[/bold]" in text
