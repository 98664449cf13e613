"""The command line's progress displays, ETA tracker, results file and summary (in-process)."""

import io
import json
import pathlib
from typing import Any

import attrs
import pytest
from rich.console import Console

from kling_async import (
    AccountError,
    BatchStatistics,
    BatchStopped,
    GeneratedImage,
    InvalidRequest,
    Kind,
    Outcome,
    Task,
    TaskFailed,
    Video,
)
from kling_async._cli.jobs import JobProblem
from kling_async._cli.progress import (
    Display,
    JobRecord,
    JsonDisplay,
    LiveDisplay,
    PlainDisplay,
    ProgressTracker,
    RunSummary,
    Snapshot,
    format_duration,
    make_display,
    render_summary,
)
from kling_async._cli.results import (
    ResultsWriter,
    count_statuses,
    error_json,
    invalid_record,
    record_from_outcome,
    total_units,
)
from kling_async._core.models import TaskStatus
from kling_async._engine import JobStatus


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stats(**counts: int) -> BatchStatistics:
    return BatchStatistics(
        requests={"create": counts.pop("creates", 0), "query": counts.pop("queries", 0)},
        limits={Kind.VIDEO: counts.pop("video_limit", 5), Kind.IMAGE: counts.pop("image_limit", 9)},
        **counts,
    )


def _summary(**changes: Any) -> RunSummary:
    summary = RunSummary(
        total=3,
        counts={"succeeded": 2, "failed": 1},
        units_charged=3.5,
        wall_time=12.3,
        requests={"create": 3, "query": 5, "list": 0},
        retries=1,
        results_path="out/results.jsonl",
        out_dir="out",
        journal="out/journal.sqlite",
        exit_code=1,
    )
    return attrs.evolve(summary, **changes)


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=120, color_system=None)
    return console, buffer


def test_tracker_eta_uses_learned_run_times_in_waves() -> None:
    """The ETA is waves of the slot limit times each kind's median run time."""
    clock = FakeClock()
    tracker = ProgressTracker(
        20, kinds={"video": 12, "image": 8}, priors={"video": 100.0, "image": 10.0}, clock=clock
    )
    assert tracker.snapshot(None).queued == 20
    # Nothing learned yet: the priors give a first estimate (3 waves of 5 videos).
    first = tracker.snapshot(_stats(queued=20))
    assert first.eta == pytest.approx(300.0)
    assert first.rate is None
    clock.now += 4
    tracker.job_finished("image", "succeeded", 4.0)
    snap = tracker.snapshot(_stats(succeeded=1, running=10, queued=9))
    # videos: 12 left / 5 slots -> 3 waves x prior 100 s, minus the 4 s already run.
    assert snap.eta == pytest.approx(296.0)
    assert snap.run_time == 4.0
    clock.now += 60
    tracker.job_finished("video", "failed", 60.0)
    snap = tracker.snapshot(_stats(succeeded=1, failed=1, running=10, queued=8))
    assert snap.eta == pytest.approx(3 * 60.0 - 60.0)
    assert (snap.succeeded, snap.failed, snap.downloading) == (1, 1, 0)
    assert snap.rate == pytest.approx(2 * 60.0 / 60.0)


def test_tracker_switches_to_the_rate_in_steady_state() -> None:
    """After ten jobs and two run times, the ETA follows the recent completion rate."""
    clock = FakeClock()
    tracker = ProgressTracker(40, clock=clock)
    for _ in range(12):
        clock.now += 1
        tracker.job_finished("video", "succeeded", 1.0)
    snap = tracker.snapshot(_stats(succeeded=12, running=5, queued=23))
    assert snap.rate == pytest.approx(60.0)
    assert snap.eta == pytest.approx(28.0)
    assert tracker.eta(0, {}) == 0.0
    # Ended for the engine but not yet delivered (downloading): not done for the bar.
    snap = tracker.snapshot(_stats(succeeded=14, running=5, queued=21))
    assert snap.downloading == 2
    assert snap.succeeded == 12
    # The engine's own downloading count, and a job whose files did not arrive.
    tracker.job_finished("video", "download_failed", 1.0)
    snap = tracker.snapshot(_stats(succeeded=12, download_failed=1, downloading=3, queued=21))
    assert snap.downloading == 3
    assert snap.succeeded == 12


def test_tracker_without_anything_to_go_by() -> None:
    """No priors and nothing finished: no ETA; unknown kinds use the longest run time."""
    clock = FakeClock()
    tracker = ProgressTracker(3, clock=clock)
    assert tracker.snapshot(_stats(queued=3)).eta is None
    tracker.job_finished("", "stopped", None)
    assert tracker.run_time() is None
    tracker.job_finished("image", "timed_out", 2.0)
    assert tracker.eta(1, {}) == pytest.approx(2.0)
    # rate window drops finishes older than a minute
    clock.now += 120
    assert tracker.rate() == 0.0


def test_format_duration() -> None:
    """Durations print as seconds, m:ss or h:mm:ss."""
    assert format_duration(None) == "-"
    assert format_duration(float("nan")) == "-"
    assert format_duration(4.24) == "4.2s"
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"


def test_plain_display_prints_calm_periodic_lines() -> None:
    """Without a terminal: a line per interval, failures as they happen, no escapes."""
    console, buffer = _console(terminal=False)
    display = PlainDisplay(console, interval=10.0)
    snap = Snapshot(total=2, queued=2, limits={"video": 5})
    display.notice("No COMETAPI_KEY: " + "x" * 150)
    display.start(snap, "kling-async: 2 job(s)")
    display.update(attrs.evolve(snap, elapsed=5.0))
    display.update(attrs.evolve(snap, elapsed=11.0, queued=1, running=1, downloading=1))
    ok = JobRecord(key="a", kind="video", status="succeeded", files=("a.mp4",))
    bad = JobRecord(
        key="b", kind="image", status="failed", error={"type": "TaskFailed", "message": "risk"}
    )
    display.job(ok, snap)
    display.job(bad, snap)
    display.job(attrs.evolve(bad, key="c", status="stopped", error=None), snap)
    display.stop(attrs.evolve(snap, elapsed=12.0, succeeded=1, failed=1, timed_out=1, stopped=1))
    display.summary(_summary(hints=("Some jobs did not succeed.",)))
    text = buffer.getvalue()
    assert text.endswith("Some jobs did not succeed.\n")
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("No COMETAPI_KEY")
    assert len(lines[0]) > 150
    assert lines[1] == "kling-async: 2 job(s)"
    assert lines[2].startswith(
        "[0:11] 0/2 done | queued 1 | submitting 0 | running 1 | downloading 1 | succeeded 0"
    )
    assert "slots video 5" in lines[2]
    assert "FAILED b: TaskFailed: risk" in text
    assert "STOPPED c" in text
    assert "timed out 1 | stopped 1" in text
    assert "units charged | 3.5" in text
    assert "requests made | 8 (create 3, query 5)" in text
    assert " a " not in text.split("FAILED")[0].split("\n", 2)[-1]


def test_live_display_renders_counts_and_job_lines() -> None:
    """On a terminal: a live bar with counts, rate, ETA, slots, retries; job lines above it."""
    console, buffer = _console(terminal=True)
    display = LiveDisplay(console)
    snap = Snapshot(total=4, limits={"video": 5, "image": 9})
    display.start(snap, "kling-async: 4 job(s)")
    running = attrs.evolve(
        snap,
        running=2,
        downloading=1,
        succeeded=1,
        failed=1,
        rate=2.0,
        eta=30.0,
        run_time=12.0,
        retries=3,
    )
    display.update(running)
    display.job(JobRecord(key="ok", kind="video", status="succeeded", files=("ok.mp4",)), running)
    display.job(JobRecord(key="bare", kind="video", status="succeeded"), running)
    display.job(
        JobRecord(key="no", kind="image", status="failed", error={"message": "bad"}), running
    )
    display.job(JobRecord(key="gone", kind="image", status="timed_out"), running)
    big = attrs.evolve(running, total=1000)
    display.job(JobRecord(key="quiet-success", kind="video", status="succeeded"), big)
    display.job(JobRecord(key="loud-failure", kind="video", status="failed"), big)
    display.stop(attrs.evolve(running, timed_out=1, stopped=1))
    display.stop(running)
    display.summary(_summary(stop_reason="AccountError: arrears", counts={"stopped": 3}))
    text = buffer.getvalue()
    for piece in (
        "kling-async: 4 job(s)",
        "2 running",
        "1 downloading",
        "rate 2.0/min",
        "ETA 0:30 (run time ~0:12)",
        "slots image 9 video 5",
        "retries 3",
        "✓ ok  video  ok.mp4",
        "bare  video  no files",
        "✗ no  image  FAILED  bad",
        "gone  image  TIMED OUT",
        "1 timed out",
        "1 stopped",
        "stopped by",
        "AccountError: arrears",
        "loud-failure",
    ):
        assert piece in text, piece
    assert "quiet-success" not in text


def test_json_display_emits_one_event_per_line() -> None:
    """--json: every line is a JSON object with an event name."""
    buffer = io.StringIO()
    display = JsonDisplay(buffer, interval=1.0)
    snap = Snapshot(total=1, queued=1)
    display.notice("hello")
    display.warning("careful")
    display.problems("jobs.jsonl", [JobProblem(2, "k", "n", "12 is outside 1..9")], rows=3)
    display.start(snap, "title")
    display.update(attrs.evolve(snap, elapsed=0.5))
    display.update(attrs.evolve(snap, elapsed=1.5, eta=3.0, rate=1.0))
    display.job(JobRecord(key="k", kind="video", status="succeeded"), snap)
    display.stop(snap)
    display.summary(_summary())
    events = [json.loads(line) for line in buffer.getvalue().splitlines()]
    names = [event["event"] for event in events]
    assert names == [
        "notice",
        "warning",
        "invalid",
        "validated",
        "start",
        "progress",
        "job",
        "progress",
        "summary",
    ]
    assert events[2]["line"] == 2
    assert events[2]["field"] == "n"
    assert events[5]["eta"] == 3.0
    assert events[5]["rate_per_min"] == 1.0
    assert events[6]["key"] == "k"
    assert events[6]["status"] == "succeeded"
    assert events[8]["exit_code"] == 1


def test_quiet_display_prints_only_problems_and_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--quiet: nothing on stdout; warnings and validation problems on stderr."""
    display = make_display(json_events=False, quiet=True)
    assert type(display) is Display
    snap = Snapshot(total=1)
    display.notice("hidden")
    display.start(snap, "hidden")
    display.update(snap)
    display.job(JobRecord(key="k", kind="video", status="failed"), snap)
    display.stop(snap)
    display.summary(_summary(exit_code=0, hints=("not shown",)))
    display.summary(_summary(hints=("Continue with:  kling-async resume j",)))
    display.problems("f.jsonl", [], rows=1)
    display.problems("f.jsonl", [JobProblem(1, None, None, "not valid JSON")], rows=1)
    display.warning("stopped")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "Continue with:  kling-async resume j",
        "f.jsonl: line 1: not valid JSON",
        "f.jsonl: 1 problem(s) in 1 row(s)",
        "stopped",
    ]


def test_make_display_picks_by_terminal() -> None:
    """A terminal gets the live view, anything else the plain lines, --json the events."""
    assert isinstance(make_display(json_events=True, quiet=False), JsonDisplay)
    terminal, _ = _console(terminal=True)
    pipe, _ = _console(terminal=False)
    assert isinstance(make_display(json_events=False, quiet=False, console=terminal), LiveDisplay)
    assert isinstance(make_display(json_events=False, quiet=False, console=pipe), PlainDisplay)
    assert isinstance(make_display(json_events=False, quiet=False), PlainDisplay)


def test_problem_table_for_people() -> None:
    """Validation problems show as a table with line, key, field and rule."""
    console, buffer = _console(terminal=False)
    display = PlainDisplay(console)
    display.problems("jobs.csv", [], rows=2)
    assert buffer.getvalue() == ""
    display.problems("jobs.csv", [JobProblem(3, "k", "images[1]", "file not found: x.png")], rows=2)
    text = buffer.getvalue()
    assert "jobs.csv: 1 problem(s) in 2 row(s)" in text
    assert "| 3 | k   | images[1] | file not found: x.png |" in text.replace("    ", " ")


def test_summary_table_variants() -> None:
    """The summary lists counts, units (or 'not reported'), requests and where things are."""
    console, buffer = _console(terminal=False)
    console.print(
        render_summary(
            _summary(
                units_charged=None,
                requests={},
                results_path=None,
                out_dir=None,
                journal=None,
                counts={"succeeded": 1, "unfinished": 2},
            ),
            terminal=False,
        )
    )
    text = buffer.getvalue()
    assert "not reported" in text
    assert "requests made | 0" in text
    assert "|   unfinished  | 2 " in text
    assert "results" not in text


def test_job_record_round_trip_and_errors() -> None:
    """A record survives results.jsonl; its error prints as 'Type: message'."""
    record = JobRecord(
        key="k",
        kind="video",
        status="failed",
        task_id="1",
        files=("k.mp4",),
        urls=("http://x",),
        error={"type": "TaskFailed", "message": "risk"},
        units_charged="1",
        attempts=2,
    )
    assert JobRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert record.describe_error() == "TaskFailed: risk"
    assert JobRecord(key="k", kind="", status="ok").describe_error() == ""
    assert JobRecord(key="k", kind="", status="x", error={"message": "m"}).describe_error() == "m"
    loose = JobRecord.from_json({"key": 5, "status": "failed", "error": "text"})
    assert loose.key == "5"
    assert loose.error is None
    assert loose.files == ()


def test_record_from_outcome(tmp_path: pathlib.Path) -> None:
    """An engine outcome becomes a record: status, task id, relative files, urls, units."""
    task = Task(
        task_id="77",
        status=TaskStatus.SUCCEEDED,
        videos=(Video(id="v", url="http://h/v.mp4"),),
        images=(GeneratedImage(index=0, url="http://h/i.png"),),
        created_at=1_000,
        updated_at=61_000,
        units_charged="2.5",
    )
    outcome = Outcome(
        key="k",
        kind=Kind.VIDEO,
        status=JobStatus.SUCCEEDED,
        task=task,
        task_id="77",
        attempts=1,
        queued_at=1.0,
        finished_at=2.0,
        files=(tmp_path / "k" / "k.mp4", pathlib.Path("/elsewhere/x.png")),
    )
    record = record_from_outcome(outcome, tmp_path, time_scale=0.5)
    assert record.status == "succeeded"
    assert record.files == ("k/k.mp4", "/elsewhere/x.png")
    assert record.urls == ("http://h/v.mp4", "http://h/i.png")
    assert record.units_charged == "2.5"
    assert record.run_time == pytest.approx(30.0)
    failed = Outcome(
        key="f",
        kind=Kind.IMAGE,
        status=JobStatus.FAILED,
        error=TaskFailed("risk control", task_id="9"),
        task_id="9",
    )
    record = record_from_outcome(failed, None)
    assert record.error == {"type": "TaskFailed", "message": "risk control", "scope": "job"}
    assert record.run_time is None


def test_error_json_keeps_what_the_user_acts_on() -> None:
    """Errors carry type, message, scope, code, status, request id, field and reason."""
    reason = AccountError("arrears", http_status=429, code=1101, request_id="r")
    stopped = error_json(BatchStopped(reason, job_key="k"))
    assert stopped["type"] == "BatchStopped"
    assert stopped["scope"] == "batch"
    assert stopped["reason"] == {
        "type": "AccountError",
        "message": "arrears",
        "scope": "batch",
        "code": 1101,
        "http_status": 429,
        "request_id": "r",
    }
    assert error_json(InvalidRequest("n", "12 is outside 1..9"))["field"] == "n"
    assert error_json(OSError("disk full")) == {"type": "OSError", "message": "disk full"}


def test_results_writer_appends_then_compacts(tmp_path: pathlib.Path) -> None:
    """results.jsonl keeps earlier lines, appends as jobs end, ends with one line per key."""
    path = tmp_path / "out" / "results.jsonl"
    path.parent.mkdir()
    earlier = JobRecord(key="b", kind="video", status="failed")
    path.write_text(json.dumps(earlier.to_json()) + "\nnot json\n", encoding="utf-8")
    with ResultsWriter(path) as writer:
        assert writer.records == {"b": earlier}
        writer.write(JobRecord(key="c", kind="image", status="succeeded"))
        writer.write(JobRecord(key="b", kind="video", status="succeeded"))
        assert len(path.read_text(encoding="utf-8").splitlines()) == 4
        writer.close(["a", "b"])
        writer.close()
    keys = [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert keys == ["b", "c"]
    assert writer.records["b"].status == "succeeded"


def test_counts_units_and_invalid_records() -> None:
    """Counting statuses and units; skipped rows become 'invalid' records."""
    records = [
        JobRecord(key="a", kind="video", status="succeeded", units_charged="1.5"),
        JobRecord(key="b", kind="video", status="succeeded", units_charged="string"),
        JobRecord(key="c", kind="video", status="failed", units_charged="2"),
        JobRecord(key="d", kind="video", status="failed"),
    ]
    assert count_statuses(records) == {"succeeded": 2, "failed": 2}
    assert total_units(records) == 3.5
    assert total_units(records[3:]) is None
    record = invalid_record(JobProblem(4, "k", "n", "12 is outside 1..9"), "image")
    assert record.status == "invalid"
    assert record.kind == "image"
    assert record.error is not None
    assert record.error["field"] == "n"
    assert record.error["line"] == 4
    anonymous = invalid_record(JobProblem(5, None, None, "not valid JSON"), None)
    assert anonymous.key == "line-5"
    assert anonymous.error is not None
    assert "field" not in anonymous.error
