"""The run report in a real browser: headless Chromium renders it from the folder alone.

Driven by Playwright with Debian's Chromium (``/usr/bin/chromium``, or ``KLING_CHROMIUM``).
Skips with the reason when either is missing, except where ``KLING_REQUIRE_ALL=1`` (CI)
turns every skip into a failure. Screenshots land in the test's folder, and are copied to
``KLING_REPORT_SHOTS`` when that names a folder.
"""

import concurrent.futures
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest

from kling_async._cli.app import main
from kling_async._cli.commands import EXIT_FAILED, EXIT_OK
from kling_async._cli.report import REPORT_FILE, write_report

from ._report_helpers import (
    CONTENDED,
    KEY,
    LOAD_ALL,
    busy_config,
    copy_examples,
    many_jobs,
    run_cli,
    video_run,
)

CHROMIUM = os.environ.get("KLING_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
BIG = 1000
T = TypeVar("T")


def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread of its own: Playwright's sync API holds this thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=120)


class Browser:
    """One headless Chromium with a fresh profile, recording what a page complains about."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.problems: list[str] = []
        self.requests: list[str] = []

    def open(self, page_path: pathlib.Path) -> tuple[Any, float]:
        """Open a file; return the page and the seconds until its load event."""
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("request", lambda request: self.requests.append(request.url))
        started = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load")
        return page, time.perf_counter() - started

    def _failed(self, request: Any) -> None:
        # A <video> aborts its first request of a file when it switches to range reads
        # (net::ERR_ABORTED), more often on a loaded machine; that is no failure of the
        # page: whether each player got its file is checked through its own readyState.
        if request.resource_type == "media" and "ERR_ABORTED" in (request.failure or ""):
            return
        self.problems.append(f"failed: {request.url} ({request.failure})")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium through Playwright (skips with the reason when either is missing)."""
    if not pathlib.Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install playwright"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=list(LAUNCH_ARGS),
            viewport={"width": 1280, "height": 900},
            offline=True,
        )
        context.set_default_timeout(60_000)
        try:
            yield Browser(context)
        finally:
            context.close()


def _keep(shot: pathlib.Path) -> None:
    target = os.environ.get("KLING_REPORT_SHOTS")
    if target and pathlib.Path(target).is_dir():
        shutil.copy(shot, pathlib.Path(target) / shot.name)


def _check_page(browser: Browser, out: pathlib.Path, shot: str) -> tuple[dict[str, Any], float]:
    browser.problems.clear()
    browser.requests.clear()
    page, seconds = browser.open(out / REPORT_FILE)
    try:
        loaded: dict[str, Any] = page.evaluate(LOAD_ALL)
        path = out.parent / shot
        page.screenshot(path=str(path), full_page=len(loaded["images"]) < 100)
        _keep(path)
    finally:
        page.close()
    assert browser.problems == []
    for url in browser.requests:
        assert url.startswith(out.as_uri() + "/"), url
    for src, width in loaded["images"]:
        assert width > 0, f"{src} did not load"
    for src, ready, error in loaded["videos"]:
        assert src, "every player got its file once scrolled into view"
        assert error is None, f"{src}: media error {error}"
        assert ready >= 1, f"{src}: no metadata"
    return loaded, seconds


def test_demo_report_renders_with_every_file_loaded(
    browser: Browser, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's report opens with no console error; each image and video loads from its folder."""
    examples = copy_examples(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("COMETAPI_KEY", "COMETAPI_BASE_URL", "KLING_API_KEY", "KLING_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    argv = ["run", str(examples / "jobs.jsonl"), "--out", "out", "-q", "--time-scale", "0.002"]
    code = _in_thread(main, argv)
    assert code == EXIT_OK
    out = tmp_path / "out"
    shutil.move(out, tmp_path / "shared-copy")  # the folder works wherever it is moved
    out = tmp_path / "shared-copy"
    loaded, seconds = _check_page(browser, out, "report-demo.png")
    files = [
        file
        for line in (out / "results.jsonl").read_text().splitlines()
        for file in json.loads(line)["files"]
    ]
    shown = {src for src, _ in loaded["images"]} | {src for src, _, _ in loaded["videos"]}
    assert set(files) <= shown
    assert len(loaded["images"]) > len(files)  # the input thumbnails too
    print(f"demo report: {len(files)} result files, opened in {seconds:.3f} s")


def _thousand_jobs(root: pathlib.Path) -> pathlib.Path:
    """A 1,000-job output folder: a real busy run of 40 jobs, its results repeated 25 times.

    Each copy has its own result files (hard links), so the page refers to 1,000 jobs'
    worth of distinct files, with the failures and the 1303s of the real run.
    """
    examples = copy_examples(root)
    jobs = many_jobs(examples, 40, invalid_every=10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMETAPI_KEY", KEY)
        patch.chdir(root)
        config = busy_config(time_scale=0.001, failure_rate=0.1, faults=0.1, **CONTENDED)
        code = _in_thread(
            anyio.run,
            run_cli,
            config,
            *("run", str(jobs), "--out", "out", "--skip-invalid", "-q", "--concurrency", "12"),
            *("--rate", "500"),
        )
    assert code == EXIT_FAILED
    out = root / "out"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    lines = []
    for copy in range(BIG // len(records)):
        for record in records:
            files = []
            for name in record["files"]:
                new = f"c{copy:02d}-{name}"
                if copy and not (out / new).exists():
                    os.link(out / name, out / new)
                files.append(new if copy else name)
            key = record["key"] if copy == 0 else f"{record['key']}-c{copy:02d}"
            lines.append(json.dumps({**record, "key": key, "files": files}))
    (out / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _in_thread(lambda: write_report(out, env={"COMETAPI_KEY": KEY}))
    return out


def test_a_thousand_job_report_opens_quickly(browser: Browser, tmp_path: pathlib.Path) -> None:
    """A 1,000-job report with failures and 1303s renders cleanly; its open time is printed."""
    out = _thousand_jobs(tmp_path)
    page_text = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert "mark-busy" in page_text
    assert KEY not in page_text
    _, seconds = _check_page(browser, out, "report-1000.png")
    print(f"1,000-job report ({len(page_text) // 1024} KiB) opened in {seconds:.3f} s")


def test_mp4_players_load_with_their_posters(browser: Browser, tmp_path: pathlib.Path) -> None:
    """Real MP4s play in the page: posters show, players further down get their file on view."""
    pytest.importorskip("av")
    out = tmp_path / "out"
    _in_thread(video_run, out, 16)
    _in_thread(lambda: write_report(out, env={}))
    loaded, seconds = _check_page(browser, out, "report-videos.png")
    assert len(loaded["videos"]) == 16
    assert loaded["posters"] == 16
    assert all(ready >= 1 for _, ready, _ in loaded["videos"])
    print(f"16-video report opened in {seconds:.3f} s")
