"""Shared pytest configuration."""

# --- KLING_REQUIRE_ALL=1 (set by .ci/run): nothing may skip --------------------------------
# A test that skips for a missing tool (Chromium, Playwright, ...) is a pass that tested
# nothing; where the environment promises every tool, such a skip fails instead.
import os

import pytest

REQUIRE_ALL = "KLING_REQUIRE_ALL"


def _no_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and os.environ.get(REQUIRE_ALL) == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_ALL}=1 says nothing may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A test that skips fails instead when ``KLING_REQUIRE_ALL=1``."""
    outcome = yield
    _no_skip(outcome.get_result())  # type: ignore[attr-defined]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    """A module that skips at import (``importorskip``) fails instead when required."""
    outcome = yield
    _no_skip(outcome.get_result())  # type: ignore[attr-defined]
    return None
