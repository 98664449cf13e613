"""The one ``async with`` convention of the package: leaving always ends in ``aclose()``.

Each class writes ``__aexit__ = lifetime.__aexit__`` and keeps its own ``__aenter__``
(what it opens differs); the way out is the same everywhere, so it is written once, and
(unlike a shared base class) it shows no private module in ``help()``.
"""

from types import TracebackType
from typing import Protocol

__all__ = ["__aexit__"]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


async def __aexit__(  # noqa: N807 -- it is the method, assigned in each class body
    self: "_Closable",  # a string: help() of a public class shows no private type
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Leave the ``async with`` block: ``aclose()``."""
    await self.aclose()
