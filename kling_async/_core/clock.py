"""Time for the engine: a :class:`Clock` protocol, the real one, and a virtual one for tests.

The engine never calls ``time`` or ``anyio.sleep`` directly; it reads and waits on a
clock, so a 15-minute deadline or a 10-attempt backoff can be tested in milliseconds
with :class:`VirtualClock`.
"""

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import anyio
import anyio.abc

__all__ = ["Clock", "SystemClock", "VirtualClock", "wait_event_until"]


@runtime_checkable
class Clock(Protocol):
    """Where the engine reads the time and sleeps."""

    def now(self) -> float:
        """Return monotonic seconds (only differences mean anything)."""
        ...

    def wall(self) -> float:
        """Return wall-clock seconds since the epoch (for records shown to people)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (cancellable)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Wait until :meth:`now` reaches ``deadline`` (cancellable)."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and :func:`anyio.sleep`."""

    def now(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def wall(self) -> float:
        """Return :func:`time.time`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await anyio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``time.monotonic()`` reaches ``deadline``."""
        await anyio.sleep(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        return "SystemClock()"


class VirtualClock:
    """A clock whose sleeps finish at once, in virtual-time order (like trio's ``MockClock``).

    Use it as an async context manager: while entered, a driver task waits until the
    event loop has nothing else to run and then jumps the time to the earliest pending
    sleep. Code doing real I/O under a virtual clock sees time run ahead of it; use it
    with fakes that answer without sockets. :meth:`advance` moves time by hand.

    Args:
        start: The initial value of :meth:`now`.
        wall_start: The wall time that corresponds to ``start``.
        autojump: Whether the driver jumps time when the loop is idle.
    """

    def __init__(
        self, *, start: float = 0.0, wall_start: float = 1_700_000_000.0, autojump: bool = True
    ) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.jumps = 0

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    def wall(self) -> float:
        """Return the virtual time shifted to look like an epoch time."""
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        """Wait until the virtual time reaches ``deadline``."""
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        if self._wakeup is not None:
            self._wakeup.set()
        await future

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` and wake every sleep now due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._set(self._now + seconds)

    def _set(self, value: float) -> None:
        self._now = max(self._now, value)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleeps
        return self._sleepers[0][0] if self._sleepers else None

    async def _drive(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._wakeup = asyncio.Event()
        idle = _idle_probe()
        task_status.started()
        while True:
            deadline = self._next_deadline()
            if deadline is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Let everything runnable run first: jump only when the loop is idle twice
            # in a row (one pass can still have callbacks chained behind it).
            quiet = 0
            while quiet < 2:
                await asyncio.sleep(0)
                quiet = quiet + 1 if idle() else 0
            deadline = self._next_deadline()
            if deadline is not None:
                self.jumps += 1
                self._set(deadline)

    async def __aenter__(self) -> Self:
        if self._autojump:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            await self._tg.start(self._drive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            tg, self._tg = self._tg, None
            try:
                await tg.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                if exc is None or list(group.exceptions) != [exc]:
                    raise  # pragma: no cover - the driver task itself never fails
                # The caller's own error, not wrapped in a group: re-raised as it was.
            finally:
                self._wakeup = None
            return
        self._wakeup = None

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g})"


def _idle_probe() -> Callable[[], bool]:
    """Return a check "is nothing else ready to run?" for the running loop."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    if ready is None:  # pragma: no cover - loops without the asyncio internals (uvloop)
        counter = itertools.count()
        return lambda: next(counter) % 8 == 7
    # Our own sleep(0) resumption is already popped when this runs: anything left is others'.
    return lambda: len(ready) == 0


async def wait_event_until(clock: Clock, event: anyio.Event, deadline: float | None) -> bool:
    """Wait for ``event`` or until ``clock`` reaches ``deadline``, whichever comes first.

    Returns:
        True if the event was set, False if the deadline came first.
    """
    if event.is_set():
        return True
    if deadline is None:
        await event.wait()
        return True
    if deadline <= clock.now():
        return False
    woke = False
    async with anyio.create_task_group() as tg:

        async def _timer() -> None:
            await clock.sleep_until(deadline)
            tg.cancel_scope.cancel()

        tg.start_soon(_timer)
        await event.wait()
        woke = True
        tg.cancel_scope.cancel()
    return woke
