"""Shared pytest configuration and the fixtures several test files use."""

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

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
