"""Flow control: the adaptive account-slot limiter (AIMD) and the shared request-rate limiter."""

import collections
import logging
from typing import Protocol

import anyio
import attrs

from .._core.clock import Clock, wait_event_until
from .._core.models import Kind

__all__ = ["RateLimiter", "RateStatistics", "SlotGate", "SlotLimiter", "SlotStatistics"]

logger = logging.getLogger("kling_async")


@attrs.frozen(kw_only=True)
class SlotStatistics:
    """A slot limiter at one instant: ``in_use`` of ``limit`` slots, ``waiting`` requests."""

    kind: Kind
    limit: int
    in_use: int
    waiting: int
    maximum: int
    decreases: int
    increases: int
    congestions: int = 0
    """1303 answers counted (a burst in one round lowers the limit once)."""


class SlotGate(Protocol):
    """Account slots shared with other processes of the account (the engine's seam).

    A slot limiter with a gate takes each slot from the gate after its own queue: the
    gate holds the account-wide limit and its adaptive state; the limiter keeps the
    order of this process's waiters. ``release``, ``force``, ``succeeded`` and
    ``congested`` must not block (a gate queues the work and does it in order).
    """

    async def acquire(self, kind: Kind, slots: int, clock: Clock, deadline: float | None) -> bool:
        """Wait for ``slots`` of ``kind`` account-wide; False when ``deadline`` came first."""
        ...

    def release(self, kind: Kind, slots: int) -> None:
        """Give back ``slots`` taken by ``acquire`` or ``force``."""
        ...

    def force(self, kind: Kind, slots: int) -> None:
        """Count ``slots`` as held now, over the limit if need be (a task known to run)."""
        ...

    def succeeded(self, kind: Kind) -> None:
        """A task of ``kind`` was created: the shared limit may grow."""
        ...

    def congested(self, kind: Kind) -> None:
        """The server said 1303: lower the shared limit."""
        ...

    def limit(self, kind: Kind) -> int | None:
        """The shared limit last seen (None before the first look)."""
        ...


class SlotLimiter:
    """The account's running-task slots of one kind, with an adaptive limit (AIMD).

    The limit starts at ``initial``; each success adds one slot per round while in
    slow start (before the first 1303), then ``1 / limit`` (one slot per round); a 1303
    multiplies it by ``decrease``, at most once per round (a burst of 1303s answering
    creates admitted under one limit is one signal). Never above ``maximum``, never
    below 1. Waiters are served first come, first served.

    With a ``gate`` (slots shared by many processes), this process's own limit is the
    ``maximum`` and every slot is also taken from the gate, which keeps the adaptive
    limit for the whole account.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        initial: int,
        maximum: int,
        decrease: float,
        gate: SlotGate | None = None,
    ) -> None:
        self.kind = kind
        self._gate = gate
        self._limit = float(initial if gate is None else maximum)
        self._maximum = maximum
        self._decrease = decrease
        self._in_use = 0
        self._epoch = 0
        self._slow_start = True
        self._waiters: collections.deque[tuple[int, anyio.Event]] = collections.deque()
        self._decreases = 0
        self._increases = 0
        self._congestions = 0

    @property
    def limit(self) -> int:
        """The current limit, in whole slots (the shared one, with a gate)."""
        if self._gate is not None:
            shared = self._gate.limit(self.kind)
            if shared is not None:
                return shared
        return self._own_limit

    @property
    def _own_limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Requests waiting for slots now (queued jobs a finished task would let in)."""
        return len(self._waiters)

    @property
    def epoch(self) -> int:
        """The round: it changes at each decrease (pass it back to :meth:`congested`)."""
        return self._epoch

    def _fits(self, slots: int) -> bool:
        # A task wider than the whole limit may still run alone, or it would never run.
        return self._in_use + slots <= self._own_limit or self._in_use == 0

    def acquire_nowait(self, slots: int) -> bool:
        """Take ``slots`` if they are free and nobody waits before us."""
        if not self._waiters and self._fits(slots):
            self._in_use += slots
            return True
        return False

    async def acquire(self, slots: int, clock: Clock, deadline: float | None = None) -> bool:
        """Wait for ``slots`` (first come, first served).

        Returns:
            True when the slots are held, False when ``deadline`` came first.
        """
        if not await self._acquire_own(slots, clock, deadline):
            return False
        if self._gate is None:
            return True
        try:
            granted = await self._gate.acquire(self.kind, slots, clock, deadline)
        except BaseException:
            self._release_own(slots)
            raise
        if not granted:
            self._release_own(slots)
        return granted

    async def _acquire_own(self, slots: int, clock: Clock, deadline: float | None) -> bool:
        if self.acquire_nowait(slots):
            return True
        event = anyio.Event()
        entry = (slots, event)
        self._waiters.append(entry)
        try:
            granted = await wait_event_until(clock, event, deadline)
        except BaseException:
            if event.is_set():  # granted just as we were cancelled: hand it back
                self.release(slots)
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        if not granted:
            if event.is_set():  # pragma: no cover - granted in the same instant as the deadline
                return True
            self._waiters.remove(entry)
            self._wake()
        return granted

    def force(self, slots: int) -> None:
        """Count ``slots`` as held now, even over the limit (a task known to be running)."""
        self._in_use += slots
        if self._gate is not None:
            self._gate.force(self.kind, slots)

    def release(self, slots: int) -> None:
        """Give back ``slots`` (the task ended, or the create did not create it)."""
        if self._gate is not None:
            self._gate.release(self.kind, slots)
        self._release_own(slots)

    def _release_own(self, slots: int) -> None:
        self._in_use = max(0, self._in_use - slots)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            slots, event = self._waiters.popleft()
            self._in_use += slots
            event.set()

    def succeeded(self) -> None:
        """A task of this kind ended: raise the limit if it was the bottleneck."""
        if self._gate is not None:
            self._gate.succeeded(self.kind)
            return
        if self._limit >= self._maximum:
            return
        if not self._waiters and self._in_use < self.limit - 1:
            return  # the limit is not what holds us back: do not inflate it
        before = self.limit
        self._limit = min(
            float(self._maximum), self._limit + (1.0 if self._slow_start else 1.0 / self._limit)
        )
        if self.limit != before:
            self._increases += 1
            self._wake()

    def congested(self, epoch: int) -> bool:
        """The server said 1303 to a create admitted in round ``epoch``: lower the limit.

        Returns:
            True when the limit was lowered (first 1303 of the round).
        """
        self._slow_start = False
        self._congestions += 1
        if epoch != self._epoch:
            return False
        self._epoch += 1
        if self._gate is not None:
            self._gate.congested(self.kind)
            self._decreases += 1
            return True
        before = self.limit
        self._limit = max(1.0, min(self._limit, float(self._in_use)) * self._decrease)
        self._decreases += 1
        logger.info(
            "slot limit of %s lowered from %d to %d after 1303",
            self.kind.value,
            before,
            self.limit,
            extra={"kind": self.kind.value, "limit": self.limit},
        )
        return True

    def statistics(self) -> SlotStatistics:
        """Return the limiter's state."""
        return SlotStatistics(
            kind=self.kind,
            limit=self.limit,
            in_use=self._in_use,
            waiting=len(self._waiters),
            maximum=self._maximum,
            decreases=self._decreases,
            increases=self._increases,
            congestions=self._congestions,
        )


@attrs.frozen(kw_only=True)
class RateStatistics:
    """The request-rate limiter at one instant."""

    rate: float | None
    granted: int
    waited: int
    pauses: int


class RateLimiter:
    """A token bucket shared by every request of one client, on the injected clock.

    ``pause(seconds)`` (after a 429) holds every request for that long, so a rate limit
    is answered by the whole client slowing down, not by each request on its own.
    """

    def __init__(self, clock: Clock, rate: float | None, burst: int) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = clock.now()
        self._paused_until = 0.0
        self._lock = anyio.Lock()
        self._granted = 0
        self._waited = 0
        self._pauses = 0

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for a token (first come, first served)."""
        if self._rate is None and self._paused_until <= self._clock.now():
            self._granted += 1
            return
        async with self._lock:
            while True:
                now = self._clock.now()
                if self._paused_until > now:
                    self._waited += 1
                    await self._clock.sleep_until(self._paused_until)
                    continue
                if self._rate is None:
                    break
                self._refill(now)
                if self._tokens >= 1.0 - 1e-9:  # float dust must not stall a waiter
                    self._tokens = max(0.0, self._tokens - 1.0)
                    break
                self._waited += 1
                await self._clock.sleep((1.0 - self._tokens) / self._rate)
        self._granted += 1

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (the server said slow down)."""
        until = self._clock.now() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._pauses += 1

    def statistics(self) -> RateStatistics:
        """Return the limiter's counters."""
        return RateStatistics(
            rate=self._rate, granted=self._granted, waited=self._waited, pauses=self._pauses
        )
