"""The report benchmark: ``python -m benchmarks.report [--jobs 1000] [--shots DIR]``.

Makes two runs against the simulator through the command line: the bundled demo (the
baseline) and a busy run of ``--jobs`` jobs (few account slots, so 1303 answers; failing
tasks; server errors; invalid rows skipped). Then opens each ``report.html`` in headless
Chromium (Debian's, through Playwright) and prints a table. With ``--shots DIR`` it saves
a screenshot of each page there (report-demo.png, report-<jobs>.png).

Columns:
  jobs       jobs in the report
  KiB        size of report.html
  build s    seconds to write the report from the folder (``kling-async report``)
  open s     seconds from navigation to the page's load event, in Chromium (first open)
  warm s     the same, opened a second time (the browser's caches warm)
  open/demo  open time over the demo's (same machine, same run)
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

import anyio

from kling_async._cli.app import main
from kling_async._cli.report import REPORT_FILE, write_report
from tests._report_helpers import KEY, LOAD_ALL, busy_config, copy_examples, many_jobs, run_cli

CHROMIUM = os.environ.get("KLING_CHROMIUM", "/usr/bin/chromium")
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _demo(root: pathlib.Path) -> pathlib.Path:
    examples = copy_examples(root / "demo")
    out = root / "demo" / "out"
    code = main(["run", str(examples / "jobs.jsonl"), "--out", str(out), "-q"])
    assert code == 0, code
    return out


def _busy(root: pathlib.Path, jobs: int) -> pathlib.Path:
    examples = copy_examples(root / "busy")
    job_file = many_jobs(examples, jobs, invalid_every=25)
    out = root / "busy" / "out"
    os.environ["COMETAPI_KEY"] = KEY
    try:
        config = busy_config(time_scale=0.0005, failure_rate=0.06, faults=0.03)
        argv = ("run", str(job_file), "--out", str(out), "--skip-invalid", "-q")
        anyio.run(run_cli, config, *argv, "--concurrency", "12", "--rate", "500")
    finally:
        del os.environ["COMETAPI_KEY"]
    return out


def _build(out: pathlib.Path) -> float:
    started = time.perf_counter()
    write_report(out, env={"COMETAPI_KEY": KEY})
    return time.perf_counter() - started


def _open(context: Any, out: pathlib.Path, shot: pathlib.Path | None, full: bool) -> float:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    started = time.perf_counter()
    page.goto((out / REPORT_FILE).as_uri(), wait_until="load")
    seconds = time.perf_counter() - started
    if shot is not None:
        page.evaluate(LOAD_ALL)  # lazy images below the fold too
        page.screenshot(path=str(shot), full_page=full)
    page.close()
    if errors:
        print(f"console errors in {out}: {errors[:5]}", file=sys.stderr)
    return seconds


def main_benchmark(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--shots", type=pathlib.Path, help="folder for the screenshots")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        print("needs Playwright: pip install playwright", file=sys.stderr)
        return 2
    if not pathlib.Path(CHROMIUM).is_file():
        print(f"needs Chromium at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        root = pathlib.Path(tmp)
        runs = {"demo": _demo(root), f"busy {args.jobs}": _busy(root, args.jobs)}
        builds = {name: _build(out) for name, out in runs.items()}
        opens: dict[str, float] = {}
        warm: dict[str, float] = {}
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(root / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=list(ARGS),
                viewport={"width": 1280, "height": 900},
                offline=True,
            )
            for index, (name, out) in enumerate(runs.items()):
                shot = None
                if args.shots is not None:
                    label = "demo" if index == 0 else str(args.jobs)
                    shot = args.shots / f"report-{label}.png"
                opens[name] = _open(context, out, None, False)  # first open: cold caches
                warm[name] = _open(context, out, shot, index == 0)
            context.close()
        print(
            f"{'page':<12} {'jobs':>6} {'KiB':>7} {'build s':>8} {'open s':>7} "
            f"{'warm s':>7} {'open/demo':>9}"
        )
        base = opens["demo"]
        for name, out in runs.items():
            jobs = len((out / "results.jsonl").read_text().splitlines())
            size = (out / REPORT_FILE).stat().st_size / 1024
            print(
                f"{name:<12} {jobs:>6} {size:>7.0f} {builds[name]:>8.3f} "
                f"{opens[name]:>7.3f} {warm[name]:>7.3f} {opens[name] / base:>9.2f}"
            )
        shutil.rmtree(root / "profile", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_benchmark())
