"""Shared pytest configuration and the fixtures several test files use."""

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests._postgres_helpers import fresh_database, postgres_url  # noqa: F401 -- fixtures

DEFAULT_GUARDED = ("kling_async._engine", "kling_async._core.clock")


@pytest.fixture
def no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[BlockBuster]:
    """Fail the test if the guarded modules make a blocking call on the event loop.

    A test module names what it guards in ``NO_BLOCKING_MODULES`` (default: the engine
    and the clock) and opts in with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    modules = list(getattr(request.module, "NO_BLOCKING_MODULES", DEFAULT_GUARDED))
    with blockbuster_ctx(modules) as guard:
        yield guard


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session for talking to a local server (simulator, receiver)."""
    async with aiohttp.ClientSession() as s:
        yield s


API_ENV = (
    "COMETAPI_KEY",
    "COMETAPI_BASE_URL",
    "KLING_API_KEY",
    "KLING_ACCESS_KEY",
    "KLING_SECRET_KEY",
    "KLING_BASE_URL",
)
"""The environment variables that send a CLI run to a real API."""


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key nor base URL in the environment: CLI runs go to the in-process simulator."""
    for name in API_ENV:
        monkeypatch.delenv(name, raising=False)


# --- KLING_REQUIRE_ALL=1 (set by .ci/run): nothing may skip --------------------------------
# A test that skips for a missing tool (Chromium, Playwright, ...) is a pass that tested
# nothing; where the environment promises every tool, such a skip fails instead.
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
