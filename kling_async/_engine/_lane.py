"""The submission lane: account slots, request rate, bounded creates, retries and adoption."""

import logging
import random
from collections.abc import Mapping

import anyio
import attrs

from .._core.clock import Clock
from .._core.config import Backoff
from .._core.errors import (
    BatchStopped,
    ConcurrencyLimited,
    DuplicateExternalId,
    JobTimedOut,
    KlingError,
    NotFound,
    RateLimited,
    Scope,
    may_have_created,
)
from .._core.models import Kind, Task
from ._job import Job, Phase, TaskApi
from ._limits import RateLimiter, SlotLimiter
from ._outcome import JobStatus
from ._scheduler import PollScheduler

__all__ = ["Lane", "LaneStatistics"]

logger = logging.getLogger("kling_async")


@attrs.frozen(kw_only=True)
class LaneStatistics:
    """The submission lane's counters.

    Attributes:
        creating: Create calls in flight now.
        creates: Create calls sent.
        lookups: Lookups by external id (after an ambiguous create or a duplicate).
        adopted: Tasks adopted instead of created again.
        retries: Requests sent again after a transient error.
    """

    creating: int
    creates: int
    lookups: int
    adopted: int
    retries: int


@attrs.define(kw_only=True)
class _Attempts:
    """One job's way through the lane: retries, sends charged, reconciliation."""

    started: float
    epoch: int
    retry: int = 0
    charged: int = 0  # sends that count against Backoff.max_attempts (1303s do not)
    reconcile: bool = False  # the create may have made a task: look it up first
    congested: bool = False  # a create was answered 1303: its success means a task ended
    duplicate: DuplicateExternalId | None = None


class Lane:
    """Sends each job's create once it holds an account slot, retrying and reconciling.

    Use :meth:`admit` (wait for the job's slots) then :meth:`run` (send, retry, adopt,
    hand the task to the scheduler or end the job). Slots are held from admission
    until the task ends; a job that does not create a task gives them back.
    """

    def __init__(
        self,
        api: TaskApi,
        clock: Clock,
        *,
        backoff: Backoff,
        max_creates: int,
        rate: RateLimiter,
        slots: Mapping[Kind, SlotLimiter],
        scheduler: PollScheduler,
        rng: random.Random,
    ) -> None:
        self._api = api
        self._clock = clock
        self._backoff = backoff
        self._creates = anyio.Semaphore(max_creates)
        self._rate = rate
        self._slots = slots
        self._scheduler = scheduler
        self._rng = rng
        self.callback_url: str | None = None  # set while the client's webhook receiver runs
        self._creating = 0
        self._n_creates = 0
        self._n_lookups = 0
        self._n_adopted = 0
        self._n_retries = 0

    @property
    def scheduler(self) -> PollScheduler:
        """The poll scheduler the lane hands created tasks to."""
        return self._scheduler

    def statistics(self) -> LaneStatistics:
        """Return the lane's counters."""
        return LaneStatistics(
            creating=self._creating,
            creates=self._n_creates,
            lookups=self._n_lookups,
            adopted=self._n_adopted,
            retries=self._n_retries,
        )

    async def admit(self, job: Job) -> int | None:
        """Wait until ``job`` holds its account slots.

        Returns:
            The slot limiter's round at admission, or None when the job's deadline came
            first (the job is then ended TIMED_OUT).
        """
        limiter = self._slots[job.kind]
        if await limiter.acquire(job.slots, self._clock, job.deadline):
            job.holds_slots = True
            return limiter.epoch
        await self._end(job, JobStatus.TIMED_OUT, self._timed_out(job))
        return None

    def abandon(self, job: Job) -> None:
        """Give back the slots of a job that will not be sent (its batch was left)."""
        if job.holds_slots and job.phase is not Phase.RUNNING:
            job.holds_slots = False
            self._slots[job.kind].release(job.slots)

    async def run(self, job: Job, epoch: int) -> None:
        """Create ``job``'s task (``job`` holds its slots), then hand it to the scheduler.

        Never raises a :class:`KlingError`: every way the job ends is reported to its owner.
        """
        try:
            await self._run(job, epoch)
        finally:
            self.abandon(job)  # cancelled before its task existed: the slots go back

    async def _run(self, job: Job, epoch: int) -> None:
        state = _Attempts(started=self._clock.now(), epoch=epoch, reconcile=job.reconcile_first)
        while True:
            reason = job.owner.stop_reason()
            if reason is not None and not state.reconcile:
                await self._end(job, JobStatus.STOPPED, BatchStopped(reason, job_key=job.key))
                return
            if job.deadline is not None and self._clock.now() >= job.deadline:
                await self._end(job, JobStatus.TIMED_OUT, self._timed_out(job))
                return
            if not job.holds_slots:
                admitted = await self.admit(job)
                if admitted is None:
                    return
                state.epoch = admitted
            try:
                if state.reconcile:
                    task = await self._lookup(job)
                else:
                    state.charged += 1
                    task = await self._create(job)
            except DuplicateExternalId as exc:
                if not await self._on_duplicate(job, exc, state):
                    return
            except NotFound as exc:
                if not await self._on_absent(job, exc, state):
                    return
            except KlingError as exc:
                delay = await self._on_error(job, exc, state)
                if delay is None:
                    return
                await self._sleep(job, delay)
            else:
                if state.congested and not state.reconcile:
                    # Refused for want of a slot, accepted now: a task of this kind has
                    # ended on the server, maybe before any poll saw it.
                    self._scheduler.slot_freed(job.kind)
                if state.reconcile:
                    self._n_adopted += 1
                    logger.info(
                        "adopted task %s of job %s found by external id %s",
                        task.task_id,
                        job.key,
                        job.external_id,
                        extra={"job_key": job.key, "task_id": task.task_id, "request_id": None},
                    )
                return

    async def _on_duplicate(self, job: Job, exc: DuplicateExternalId, state: "_Attempts") -> bool:
        """The external id exists: adopt its task. Returns False when the job ended."""
        if state.duplicate is not None:  # looked up once already and it was not there
            await self._end(job, JobStatus.FAILED, exc)
            return False
        state.duplicate, state.reconcile = exc, True
        logger.info(
            "external id %s of job %s already exists: adopting the task",
            job.external_id,
            job.key,
            extra={"job_key": job.key, "task_id": None, "request_id": exc.request_id},
        )
        return True

    async def _on_absent(self, job: Job, exc: NotFound, state: "_Attempts") -> bool:
        """A create or lookup answered not found. Returns False when the job ended."""
        if not state.reconcile:
            await self._end(job, JobStatus.FAILED, exc)
            return False
        if state.duplicate is not None:
            await self._end(job, JobStatus.FAILED, state.duplicate)
            return False
        # Provably absent: the create may be sent again, with the same external id.
        state.reconcile = False
        logger.info(
            "no task with external id %s: sending the create of job %s again",
            job.external_id,
            job.key,
            extra={"job_key": job.key, "task_id": None, "request_id": exc.request_id},
        )
        return True

    async def _on_error(self, job: Job, exc: KlingError, state: "_Attempts") -> float | None:
        """Decide what an error means for the job: the wait before the next try, or None."""
        if exc.scope is Scope.JOB:
            await self._end(job, JobStatus.FAILED, exc)
            return None
        if exc.scope is Scope.BATCH:
            reason = exc.reason if isinstance(exc, BatchStopped) else exc
            job.owner.open_circuit(reason)
            await self._end(job, JobStatus.STOPPED, BatchStopped(reason, job_key=job.key))
            return None
        limiter = self._slots[job.kind]
        concurrency = isinstance(exc, ConcurrencyLimited)
        if concurrency:
            state.congested = True
            state.charged -= 1
            limiter.congested(state.epoch)
            job.holds_slots = False
            limiter.release(job.slots)
        if not state.reconcile and may_have_created(exc):
            state.reconcile = True
        state.retry += 1
        delay = self._backoff.delay(
            state.retry,
            retry_after=exc.retry_after,
            concurrency=concurrency,
            rng=self._rng.random,
        )
        if isinstance(exc, RateLimited):
            self._rate.pause(delay)
        elapsed = self._clock.now() - state.started
        if (
            state.charged >= self._backoff.max_attempts
            or elapsed + delay > self._backoff.max_elapsed
        ):
            logger.warning(
                "job %s gives up after %d attempts in %.1f s: %s",
                job.key,
                job.attempts,
                elapsed,
                exc,
                extra={"job_key": job.key, "task_id": None, "request_id": exc.request_id},
            )
            await self._end(job, JobStatus.FAILED, exc)
            return None
        self._n_retries += 1
        job.owner.count_retry()
        if job.phase is Phase.SUBMITTING:
            job.move(Phase.QUEUED)  # backing off: counted as queued again
        logger.info(
            "job %s: %s; %s in %.2f s (retry %d)",
            job.key,
            type(exc).__name__,
            "looking the task up" if state.reconcile else "retrying",
            delay,
            state.retry,
            extra={"job_key": job.key, "task_id": None, "request_id": exc.request_id},
        )
        return delay

    async def _sleep(self, job: Job, delay: float) -> None:
        if job.deadline is not None:
            delay = min(delay, max(0.0, job.deadline - self._clock.now()))
        await self._clock.sleep(delay)

    async def _create(self, job: Job) -> Task:
        async with self._creates:
            await self._rate.acquire()
            reason = job.owner.stop_reason()
            if reason is not None:  # the circuit opened while this job waited its turn
                raise BatchStopped(reason, job_key=job.key)
            if job.phase is Phase.QUEUED:
                job.move(Phase.SUBMITTING)
            await job.owner.submitting(job)
            job.attempts += 1
            self._n_creates += 1
            self._creating += 1
            job.owner.count_request("create")
            # A create in flight always gets its answer, even if the caller is cancelled:
            # a task it made is then handed to the scheduler instead of being lost.
            # A callback_url the caller put in the request wins: its deliveries are theirs.
            callback = self.callback_url if job.request.callback_url is None else None
            job.webhook = callback is not None
            with anyio.CancelScope(shield=True):
                try:
                    task = await self._api.create_task(
                        job.request, external_task_id=job.external_id, callback_url=callback
                    )
                finally:
                    self._creating -= 1
                await self._hand_off(job, task)
            return task

    async def _lookup(self, job: Job) -> Task:
        await self._rate.acquire()
        self._n_lookups += 1
        job.owner.count_request("query")
        task = await self._api.get_task(job.kind, job.external_id)
        with anyio.CancelScope(shield=True):
            await self._hand_off(job, task)
        return task

    async def adopt(self, job: Job) -> None:
        """Take over a task known to exist (``job.task_id``, resumed from a journal).

        Its slots are counted at once, over the limit if need be: the task holds them on
        the server whatever this client thinks.
        """
        assert job.task_id is not None
        self._slots[job.kind].force(job.slots)
        job.holds_slots = True
        job.move(Phase.RUNNING)
        await self._scheduler.watch(job, None, adopted=True)

    async def _hand_off(self, job: Job, task: Task) -> None:
        if job.phase is Phase.RUNNING:
            return  # already handed off (inside the shield)
        job.task_id = task.task_id
        job.move(Phase.RUNNING)
        self._slots[job.kind].succeeded()
        await job.owner.submitted(job)
        await self._scheduler.watch(job, task)

    def _timed_out(self, job: Job) -> JobTimedOut:
        return JobTimedOut("the job's deadline passed before its task was created", job_key=job.key)

    async def _end(self, job: Job, status: JobStatus, error: KlingError) -> None:
        if job.holds_slots:
            job.holds_slots = False
            self._slots[job.kind].release(job.slots)
        job.move(Phase.ENDED)
        job.delivered = True
        await job.owner.finished(job, job.outcome(status, self._clock.wall(), error=error))
