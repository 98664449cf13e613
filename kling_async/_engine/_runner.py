"""The engine of one client: one lane, one scheduler, one set of limits for every job."""

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Self

import anyio
import attrs

from .._core import lifetime
from .._core.clock import Clock, SystemClock
from .._core.config import (
    DEFAULT_BACKOFF,
    DEFAULT_LIMITS,
    DEFAULT_POLL,
    WEBHOOK_POLL_GRACE,
    WEBHOOK_POLL_INTERVAL,
    Backoff,
    Limits,
    PollPolicy,
)
from .._core.errors import BatchStopped, KlingError
from .._core.models import Kind, Request, Task, TaskStatus
from ._batch import Batch, Prepare
from ._ids import external_id_for
from ._job import Job, Phase, TaskApi
from ._lane import Lane, LaneStatistics
from ._limits import RateLimiter, RateStatistics, SlotGate, SlotLimiter, SlotStatistics
from ._outcome import Outcome
from ._scheduler import PollScheduler, SchedulerStatistics
from ._store import BatchStore

__all__ = ["Engine", "EngineStatistics"]

logger = logging.getLogger("kling_async")


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """Everything the engine of one client counts.

    Attributes:
        requests: Requests sent by type (``create``, ``query``, ``list``).
        slots: The adaptive account-slot limiter of each kind.
        rate: The shared request-rate limiter.
        lane: The submission lane.
        scheduler: The poll scheduler.
    """

    requests: Mapping[str, int]
    slots: Mapping[Kind, SlotStatistics]
    rate: RateStatistics
    lane: LaneStatistics
    scheduler: SchedulerStatistics


class _Single:
    """The owner of one ``generate()`` job: waits for its one outcome."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None
        self.done = anyio.Event()

    def count_request(self, what: str) -> None:
        pass

    def count_retry(self) -> None:
        pass

    def phase_changed(self, job: Job, old: Phase, new: Phase) -> None:
        pass

    async def submitting(self, job: Job) -> None:
        pass

    async def submitted(self, job: Job) -> None:
        pass

    async def finished(self, job: Job, outcome: Outcome) -> None:
        self.outcome = outcome
        self.done.set()

    def stop_reason(self) -> KlingError | None:
        return None

    def open_circuit(self, reason: KlingError) -> None:
        pass


class Engine:
    """Runs jobs for one client: the submission lane and the poll scheduler.

    An async context manager: entering starts the scheduler service in a task group;
    leaving cancels everything (nothing runs afterwards).

    Args:
        api: The three calls (create, get, list); the client.
        limits: Concurrency, rate and account-slot knobs.
        backoff: The retry policy.
        poll: The poll policy.
        clock: Where time is read and slept.
        seed: Seed of the jitter (None: random).
        server_time_scale: Client seconds per server second, for run times read from the
            server's timestamps (1 except against a time-scaled simulator).
        slot_gate: Account slots shared with other processes (None: this process alone).
    """

    def __init__(
        self,
        api: TaskApi,
        *,
        limits: Limits = DEFAULT_LIMITS,
        backoff: Backoff = DEFAULT_BACKOFF,
        poll: PollPolicy = DEFAULT_POLL,
        clock: Clock | None = None,
        seed: int | None = None,
        server_time_scale: float = 1.0,
        slot_gate: SlotGate | None = None,
    ) -> None:
        if not server_time_scale > 0:
            raise ValueError(f"server_time_scale must be > 0, got {server_time_scale!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.limits = limits
        self.backoff = backoff
        self.poll = poll
        rng = random.Random(seed)
        self.slots = {
            Kind.VIDEO: SlotLimiter(
                Kind.VIDEO,
                initial=limits.video_slots,
                maximum=limits.max_video_slots,
                decrease=limits.slot_decrease,
                gate=slot_gate,
            ),
            Kind.IMAGE: SlotLimiter(
                Kind.IMAGE,
                initial=limits.image_slots,
                maximum=limits.max_image_slots,
                decrease=limits.slot_decrease,
                gate=slot_gate,
            ),
        }
        self.rate = RateLimiter(self.clock, limits.requests_per_second, limits.burst)
        self.scheduler = PollScheduler(
            api,
            self.clock,
            poll,
            max_queries=limits.max_queries,
            rate=self.rate,
            slots=self.slots,
            rng=rng,
        )
        self.scheduler.time_scale = server_time_scale
        self.lane = Lane(
            api,
            self.clock,
            backoff=backoff,
            max_creates=limits.max_creates,
            rate=self.rate,
            slots=self.slots,
            scheduler=self.scheduler,
            rng=rng,
        )
        self._session = uuid.uuid4().hex[:10]
        self._host: asyncio.Task[None] | None = None
        self._running = False
        self._closed = False

    async def start(self) -> None:
        """Start the scheduler service; start-up errors reach the caller.

        The service runs in a task group inside one host task that this engine owns and
        :meth:`aclose` cancels and awaits, so the engine may be closed from another task
        than the one that started it (fixtures, frameworks' lifespans).
        """
        if self._host is not None or self._closed:
            raise RuntimeError("an Engine can be started only once")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._host = asyncio.get_running_loop().create_task(self._serve(ready))
        try:
            await ready
        except BaseException:
            await self.aclose()
            raise

    async def _serve(self, ready: "asyncio.Future[None]") -> None:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.scheduler.run)
                self._running = True
                ready.set_result(None)
                await anyio.sleep_forever()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            raise
        finally:
            self._running = False

    __aexit__ = lifetime.__aexit__

    async def aclose(self) -> None:
        """Stop everything the engine runs and wait for it to end. Idempotent."""
        self._closed = True
        host, self._host = self._host, None
        if host is None:
            return
        host.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({host})
        if not host.cancelled() and host.exception() is not None:  # pragma: no cover
            logger.error("the engine's service ended with an error", exc_info=host.exception())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    def check_open(self) -> None:
        """Raise RuntimeError unless the engine runs."""
        if not self._running or self._closed:
            raise RuntimeError("the client is not open: use `async with Client(...) as client:`")

    async def generate(
        self, request: Request, *, key: str | None = None, deadline: float | None = None
    ) -> Task:
        """Run one job to its end and return the finished task.

        Args:
            request: What to generate.
            key: A stable job key: its external task id is derived from it, so calling
                again with the same key (even from another process) adopts the task made
                the first time instead of paying twice. None: a fresh random id.
            deadline: Seconds from now after which the job ends with JobTimedOut (its
                task, if made, keeps running on the server and is polled to its end).

        Raises:
            KlingError: The job's error (TaskFailed, JobTimedOut, a job- or batch-scoped
                API error, or the last transient error once retries are used up).
        """
        self.check_open()
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be > 0 seconds")
        owner = _Single()
        job = Job(
            key=key if key is not None else uuid.uuid4().hex,
            request=request,
            kind=request.kind,
            slots=request.slots,
            external_id=external_id_for(
                "gen" if key is not None else f"gen{self._session}", key or uuid.uuid4().hex[:16]
            ),
            owner=owner,
            queued_at=self.clock.wall(),
            deadline=None if deadline is None else self.clock.now() + deadline,
            awaited=True,
        )
        epoch = await self.lane.admit(job)
        if epoch is not None:
            await self.lane.run(job, epoch)
        await owner.done.wait()
        outcome = owner.outcome
        assert outcome is not None
        if outcome.error is not None:
            if isinstance(outcome.error, BatchStopped):
                raise outcome.error.reason
            raise outcome.error
        assert outcome.task is not None
        return outcome.task

    def batch(
        self,
        *,
        batch_id: str | None = None,
        max_pending: int = 1000,
        deadline: float | None = None,
        store: BatchStore | None = None,
        finisher: Callable[[Outcome], Awaitable[Outcome]] | None = None,
        prepare: Prepare | None = None,
    ) -> Batch:
        """Return a new :class:`Batch` running on this engine (enter it with ``async with``).

        Args:
            batch_id: Part of every external task id (default: random).
            max_pending: Jobs accepted but not yet sent before ``submit`` waits.
            deadline: Seconds per job, from its submission, before it ends TIMED_OUT.
            store: Told of every state change (the journal's seam).
            finisher: Run on each SUCCEEDED outcome before it is yielded (downloads);
                returns the outcome to yield.
            prepare: Run as ``prepare(control, stack)`` when the batch is entered (the
                journal's set-up); what it enters on ``stack`` closes with the batch.
        """
        return Batch(
            self,
            batch_id=batch_id if batch_id is not None else uuid.uuid4().hex[:12],
            max_pending=max_pending,
            deadline=deadline,
            store=store,
            finisher=finisher,
            prepare=prepare,
        )

    def refresh(self, task_id: str) -> bool:
        """Make a running task due for a poll now; False when no running task has that id."""
        return self.scheduler.refresh(task_id)

    def use_webhooks(
        self,
        callback_url: str | None,
        *,
        poll_interval: float = WEBHOOK_POLL_INTERVAL,
        poll_grace: float = WEBHOOK_POLL_GRACE,
    ) -> None:
        """Send ``callback_url`` with every create from now on (None: stop sending one).

        Args:
            callback_url: Where the server delivers status changes.
            poll_interval: Safety interval between polls of a task deliveries cover.
            poll_grace: Share of the expected run time a task is covered for.
        """
        self.lane.callback_url = callback_url
        self.scheduler.webhook_interval = poll_interval
        self.scheduler.webhook_grace = poll_grace

    def hint(self, task_id: str, status: TaskStatus | None) -> None:
        """A webhook delivery: re-query the task now if it claims to have ended.

        The payload is never trusted; only the query's answer ends a job. A delivery for
        a task still running changes nothing (the task is polled at the safety pace).
        One that outruns its create's answer is remembered until the task is known.
        """
        if status is None or status.is_terminal:
            self.scheduler.refresh(task_id)

    def limits_now(self) -> dict[Kind, int]:
        """Return the current adaptive slot limit per kind."""
        return {kind: limiter.limit for kind, limiter in self.slots.items()}

    def statistics(self) -> EngineStatistics:
        """Return the engine's counters now."""
        lane = self.lane.statistics()
        scheduler = self.scheduler.statistics()
        return EngineStatistics(
            requests={
                "create": lane.creates,
                "query": scheduler.queries + lane.lookups,
                "list": scheduler.lists,
            },
            slots={kind: limiter.statistics() for kind, limiter in self.slots.items()},
            rate=self.rate.statistics(),
            lane=lane,
            scheduler=scheduler,
        )
