"""The run report: report.html from a real run against the simulator, and its parts."""

import html.parser
import json
import pathlib
import shutil
import sys
from types import SimpleNamespace

import anyio
import pytest

from kling_async._cli import report as report_mod
from kling_async._cli.app import main
from kling_async._cli.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from kling_async._cli.report import (
    REPORT_FILE,
    build_report,
    render_report,
    scrub,
    timeline_svg,
    write_report,
)
from kling_async._cli.timeline import (
    MIN_INTERVAL,
    TIMELINE_FILE,
    RunTimeline,
    Sample,
    TimelineWriter,
    read_timeline,
    record_timeline,
)

from ._report_helpers import (
    CONTENDED,
    KEY,
    busy_config,
    copy_examples,
    many_jobs,
    run_cli,
    video_run,
)

FAST = 0.001


class _Links(html.parser.HTMLParser):
    """Every src/poster/href value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "poster", "href", "data-src", "data-poster") and value:
                self.links.append((tag, name, value))


def _links(page: str) -> list[tuple[str, str, str]]:
    parser = _Links()
    parser.feed(page)
    return parser.links


@pytest.fixture(scope="module")
def busy_run(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One run of 24 jobs (3 invalid) with failures, server errors and 1303 answers."""

    root = tmp_path_factory.mktemp("busy")
    examples = copy_examples(root)
    jobs = many_jobs(examples, 24, invalid_every=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMETAPI_KEY", KEY)
        patch.chdir(root)
        config = busy_config(time_scale=FAST, failure_rate=0.25, faults=0.15, **CONTENDED)
        code = anyio.run(
            run_cli,
            config,
            *("run", str(jobs), "--out", "out", "--skip-invalid", "-q", "--concurrency", "12"),
        )
    assert code == EXIT_FAILED
    return root / "out"


def test_run_writes_a_report_without_secrets_or_absolute_paths(busy_run: pathlib.Path) -> None:
    """A run leaves report.html: no key, no absolute path, no signed URL, every link local."""
    page = (busy_run / REPORT_FILE).read_text(encoding="utf-8")
    assert KEY not in page
    assert str(busy_run.parent) not in page
    assert "sig=" not in page
    assert "expires=" not in page
    links = _links(page)
    assert links, "the gallery shows files"
    for _, _, value in links:
        assert not value.startswith(("/", "file:", "http:", "https:")), value
        if not value.startswith("data:"):
            assert (busy_run / value).is_file(), value
    assert {tag for tag, _, _ in links} >= {"img"}


def test_report_summarises_states_units_and_requests(busy_run: pathlib.Path) -> None:
    """The summary counts jobs by state as results.jsonl does, and units and requests."""
    records = [json.loads(line) for line in (busy_run / "results.jsonl").read_text().splitlines()]
    report = build_report(busy_run, env={"COMETAPI_KEY": KEY})
    states = dict(report.states)
    assert sum(states.values()) == report.total == 24
    assert states["invalid"] == 3
    assert states["succeeded"] == sum(r["status"] == "succeeded" for r in records)
    facts = {fact.label: fact for fact in report.facts}
    units = sum(float(r["units_charged"]) for r in records if r["units_charged"] is not None)
    assert facts["units charged"].value == f"{units:g}"
    assert int(facts["requests"].value) >= 21
    assert int(facts["1303 answers"].value) > 0
    assert int(facts["retries"].value) >= int(facts["1303 answers"].value)
    assert len(report.cards) == states["succeeded"]
    assert all(card.prompt.startswith("scene ") and card.inputs for card in report.cards)
    assert all(input_.src for card in report.cards for input_ in card.inputs)


def test_failures_are_grouped_by_error_with_field_or_reason(busy_run: pathlib.Path) -> None:
    """Invalid rows group by field and rule; failed tasks group under their reason."""
    report = build_report(busy_run)
    groups = {(group.title, group.detail): group for group in report.failures}
    invalid = [group for group in report.failures if group.status == "invalid"]
    assert {group.detail.split(":")[0] for group in invalid} == {
        "field duration",
        "field images",
        "field aspect_ratio",
    }
    assert sum(len(group.keys) for group in invalid) == 3
    failed = [
        key for (title, _), group in groups.items() if "TaskFailed" in title for key in group.keys
    ]
    assert failed
    assert any("risk control" in detail for (title, detail) in groups if "TaskFailed" in title)
    assert report.failed_jobs == sum(
        count for state, count in report.states if state != "succeeded"
    )
    page = (busy_run / REPORT_FILE).read_text(encoding="utf-8")
    assert "field duration" in page
    assert "Failure to pass the risk control system" in page


def test_timeline_chart_marks_submissions_retries_and_1303s(busy_run: pathlib.Path) -> None:
    """The page holds an inline SVG timeline with the three kinds of marks and the limit."""
    page = (busy_run / REPORT_FILE).read_text(encoding="utf-8")
    assert page.count("<svg") == 1
    assert 'class="timeline"' in page
    for mark in ("mark-creates", "mark-retries", "mark-busy"):
        assert mark in page, mark
    assert 'class="limit"' in page
    assert "video slots" in page
    assert "image slots" in page
    assert "1303 (account concurrency limit)" in page
    runs = read_timeline(busy_run / TIMELINE_FILE)
    assert len(runs) == 1
    assert runs[0].last.creates >= 21
    assert runs[0].last.busy > 0


def test_report_command_rewrites_the_page(
    busy_run: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kling-async report DIR`` writes the page again; a folder with no run exits 2."""
    (busy_run / REPORT_FILE).unlink()
    assert main(["report", str(busy_run)]) == EXIT_OK
    assert "Report:" in capsys.readouterr().out
    assert (busy_run / REPORT_FILE).is_file()
    empty = busy_run.parent / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == EXIT_USAGE
    assert "no run in" in capsys.readouterr().err


def test_a_journal_that_cannot_be_read_exits_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken journal: the report command says so and exits 2."""
    (tmp_path / "journal.sqlite").write_bytes(b"not a database at all" * 100)
    assert main(["report", str(tmp_path)]) == EXIT_USAGE
    assert "cannot write the report" in capsys.readouterr().err


def _fake_run(out: pathlib.Path, records: list[dict[str, object]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record) for record in records]
    (out / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _record(key: str, *files: str, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "key": key,
        "kind": "video",
        "status": "succeeded",
        "files": list(files),
        "units_charged": "1",
    }
    record.update(extra)
    return record


def test_videos_get_a_player_with_their_poster_and_gifs_an_image(tmp_path: pathlib.Path) -> None:
    """An .mp4 plays in a <video> (poster when the folder has one); a .gif is an <img>."""
    out = tmp_path / "out"
    _fake_run(
        out,
        [
            _record("with poster", "a b.mp4"),
            _record("no poster", "c.mp4"),
            _record("animated", "d.gif"),
            _record("gone", "e.mp4", "notes.txt"),
        ],
    )
    for name in ("a b.mp4", "a b.poster.jpg", "c.mp4", "d.gif", "notes.txt"):
        (out / name).write_bytes(b"x")
    write_report(out, env={})
    page = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert 'src="a%20b.mp4"' in page
    assert '<video src="a%20b.mp4" poster="a%20b.poster.jpg" controls' in page
    assert 'preload="none"' in page
    assert '<video src="c.mp4" controls muted loop playsinline preload="metadata"' in page
    assert '<img src="d.gif"' in page
    assert "missing: e.mp4, notes.txt" in page
    assert "No timeline was recorded" in page


def test_inputs_without_pillow_are_named_not_drawn(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Pillow no thumbnail is made: each input shows as its name."""
    monkeypatch.setitem(sys.modules, "PIL", None)
    inputs = report_mod._Inputs(tmp_path)
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG")
    thumbs = inputs.thumbs(
        {"images": [{"path": str(picture)}, {"url": "https://cdn.invalid/x/dog.jpg?sig=1"}]}
    )
    assert [(thumb.label, thumb.src) for thumb in thumbs] == [("cat.png", None), ("dog.jpg", None)]


def test_input_thumbnails_from_paths_and_base64(tmp_path: pathlib.Path) -> None:
    """Paths and Base64 inputs become small JPEG thumbnails, one per distinct image."""
    image_module = pytest.importorskip("PIL.Image")
    import base64  # noqa: PLC0415
    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    image_module.new("RGB", (800, 600), "red").save(buffer, format="PNG")
    picture = tmp_path / "big.png"
    picture.write_bytes(buffer.getvalue())
    encoded = base64.b64encode(buffer.getvalue()).decode()
    inputs = report_mod._Inputs(tmp_path)
    record = {
        "images": [
            {"path": str(picture)},
            {"base64": encoded},
            {"path": str(picture)},
            {"path": str(tmp_path / "gone.png")},
            {"base64": "!!not base64!!"},
            {"other": 1},
        ]
    }
    thumbs = inputs.thumbs(record)
    assert thumbs[0] == thumbs[2]
    assert thumbs[0].src is not None
    assert thumbs[1].src is not None
    assert thumbs[1].label == "Base64 image"
    assert (thumbs[3].label, thumbs[3].src) == ("gone.png", None)
    assert thumbs[4].src is None
    assert thumbs[5].label == "image"
    made = sorted((tmp_path / "report-files" / "inputs").iterdir())
    assert len(made) == 2
    with image_module.open(made[0]) as thumb:
        assert max(thumb.size) <= report_mod.THUMB_SIZE


def test_scrub_removes_keys_queries_and_folders() -> None:
    """Keys, URL queries and the folders of absolute paths never reach the page."""
    text = (
        f"key {KEY} failed for https://files.invalid/v/1.mp4?sig=abc&expires=9 "
        "reading /home/alice/secret/run/a.png and C:\\Users\\bob\\x.png, ratio 16:9, 1/2"
    )
    clean = scrub(text, [KEY])
    assert KEY not in clean
    assert "[redacted]" in clean
    assert "https://files.invalid/v/1.mp4 " in clean
    assert "sig=" not in clean
    assert "alice" not in clean
    assert ".../a.png" in clean
    assert "bob" not in clean
    assert "16:9, 1/2" in clean


def test_timeline_file_keeps_changes_only_and_survives_a_torn_line(tmp_path: pathlib.Path) -> None:
    """Unchanged samples are not written; runs split at start lines; a torn line is ignored."""
    path = tmp_path / TIMELINE_FILE
    for run in range(2):
        writer = TimelineWriter(path)
        writer.open(time_scale=0.5)
        base = 1000.0 + run * 100
        writer.add(Sample(t=base, slots={"video": (1, 5, 0)}, creates=1))
        writer.add(Sample(t=base + 1, slots={"video": (1, 5, 0)}, creates=1))
        writer.add(Sample(t=base + 2, slots={"video": (2, 5, 1)}, creates=2, busy=1))
        writer.flush()
        writer.close()
        assert writer.lines == 3
    with path.open("a", encoding="utf-8") as stream:
        stream.write('{"t": 1300.0, "slots": {"video": [')
    runs = read_timeline(path)
    assert [len(run.samples) for run in runs] == [2, 2]
    assert runs[1].time_scale == 0.5
    assert runs[1].last.busy == 1
    assert read_timeline(tmp_path / "absent.jsonl") == []
    assert RunTimeline(start=5.0).last == Sample(t=5.0)
    assert RunTimeline(start=5.0).end == 5.0
    assert MIN_INTERVAL > 0


def test_chart_shades_waits_and_bins_marks() -> None:
    """Waiting spans are shaded, the limit is dashed, marks are binned with their counts."""
    samples = tuple(
        Sample(
            t=100.0 + step,
            slots={"video": (min(step, 4), 4, max(0, step - 4)), "image": (0, 9, 0)},
            creates=step,
            retries=step // 3,
            busy=step // 5,
        )
        for step in range(10)
    )
    svg = str(timeline_svg(RunTimeline(start=100.0, samples=samples)))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert 'class="waiting"' in svg
    assert "video slots" in svg
    assert "image slots" not in svg  # an idle kind is left out
    assert svg.count("mark-creates") == 9
    assert "1 1303 answers at" in svg
    assert "1.0 s" in svg or "1 s" in svg
    long = str(
        timeline_svg(RunTimeline(start=0.0, samples=(Sample(t=0.0), Sample(t=4000.0, creates=1))))
    )
    assert "1:00:00" in long


def test_a_run_cut_short_is_reported_from_its_journal(
    busy_run: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Without results.jsonl or timeline.jsonl the journal alone gives states, files, time."""
    out = tmp_path / "copy"
    shutil.copytree(busy_run, out)
    full = build_report(out)
    (out / "results.jsonl").unlink()
    (out / TIMELINE_FILE).unlink()
    (out / "journal.sqlite.lock").unlink(missing_ok=True)
    report = build_report(out)
    states = dict(report.states)
    assert "invalid" not in states  # skipped rows never reached the journal
    assert states["succeeded"] == dict(full.states)["succeeded"]
    assert sum(states.values()) == full.total - 3
    assert [card.key for card in report.cards] == [card.key for card in full.cards]
    assert all(card.media for card in report.cards)
    facts = {fact.label: fact.value for fact in report.facts}
    assert facts["wall time"] != "n/a"
    assert facts["requests"] == "n/a"
    assert report.timeline is None


def test_a_failed_download_is_a_failure_of_its_own(tmp_path: pathlib.Path) -> None:
    """A task that succeeded but whose file could not be fetched is listed as a failure."""
    out = tmp_path / "out"
    error = {"type": "DownloadError", "message": "URL expired", "url": "https://x.invalid/a?s=1"}
    _fake_run(out, [_record("late", error=error)])
    report = build_report(out, env={})
    (group,) = report.failures
    assert group.title == "DownloadError"
    assert group.detail == "the task succeeded but its download failed: URL expired"
    assert group.keys == ("late",)


def test_an_unreadable_input_gets_no_thumbnail(tmp_path: pathlib.Path) -> None:
    """An input that is not a picture is named, not drawn."""
    pytest.importorskip("PIL.Image")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    (thumb,) = report_mod._Inputs(tmp_path).thumbs({"images": [{"path": str(broken)}]})
    assert (thumb.label, thumb.src) == ("broken.png", None)


def test_poll_lag_needs_both_clocks() -> None:
    """Rows without a server result or timestamps are left out of the polling finding."""
    rows = [
        SimpleNamespace(result=None, submitted_at=1.0, finished_at=2.0),
        SimpleNamespace(result={"created_at": "x"}, submitted_at=1.0, finished_at=2.0),
        SimpleNamespace(
            result={"created_at": 0, "updated_at": 500}, submitted_at=10.0, finished_at=11.0
        ),
    ]
    assert report_mod._poll_lags(rows, 1.0) == [(0.5, 1.0)]
    assert report_mod._step(10 * 86400 * 3) == 3 * 86400


async def test_timeline_recorder_samples_until_cancelled(tmp_path: pathlib.Path) -> None:
    """The recorder writes a start line and samples; an unwritable folder leaves no file."""

    slot = SimpleNamespace(in_use=1, limit=5, waiting=0, congestions=2)
    stats = SimpleNamespace(
        slots={"video": slot}, lane=SimpleNamespace(creates=3, retries=4), requests={"create": 3}
    )
    client = SimpleNamespace(engine_statistics=lambda: stats)
    with anyio.move_on_after(0.1):
        await record_timeline(tmp_path, 0.5, client)
    (run,) = read_timeline(tmp_path / TIMELINE_FILE)
    assert run.time_scale == 0.5
    assert run.last.slots == {"video": (1, 5, 0)}
    assert (run.last.creates, run.last.retries, run.last.busy) == (3, 4, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    await record_timeline(blocker, 1.0, client)  # returns at once: nowhere to write
    assert blocker.read_text() == ""


def test_players_past_the_first_few_load_lazily_with_first_frame_posters(
    tmp_path: pathlib.Path,
) -> None:
    """Each MP4 gets a poster from its first frame; players past the first few load on view."""
    pytest.importorskip("av")
    out = tmp_path / "out"
    video_run(out, report_mod.EAGER_VIDEOS + 2)
    report = build_report(out, env={})
    media = [item for card in report.cards for item in card.media]
    assert [item.lazy for item in media] == [False] * report_mod.EAGER_VIDEOS + [True, True]
    assert all(item.poster and item.preload == "none" for item in media)
    posters = sorted((out / report_mod.ASSETS_DIR / "posters").iterdir())
    assert len(posters) == len(media)
    from PIL import Image  # noqa: PLC0415

    with Image.open(posters[0]) as poster:
        assert poster.size == (160, 120)
    page = render_report(report, {})
    assert page.count("<video data-src=") == 2
    assert page.count('data-poster="report-files/posters/') == 2
    again = build_report(out, env={})  # posters are made once
    assert [item.poster for card in again.cards for item in card.media] == [
        item.poster for item in media
    ]


def test_a_video_that_cannot_be_decoded_has_no_poster(tmp_path: pathlib.Path) -> None:
    """A broken video file still gets a player, without a poster."""
    pytest.importorskip("av")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    assert report_mod._first_frame(broken, tmp_path) is None
