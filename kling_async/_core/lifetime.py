"""The one ``async with`` convention of the package: leaving always ends in ``aclose()``."""

from types import TracebackType

__all__ = ["AsyncClosing"]


class AsyncClosing:
    """Mixin for an object with an idempotent ``aclose()``: ``__aexit__`` closes it.

    Each class keeps its own ``__aenter__`` (what it opens differs); the way out is the same
    everywhere, so it is written once.
    """

    async def aclose(self) -> None:  # pragma: no cover - every user defines its own
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
