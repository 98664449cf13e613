"""A batch: many jobs fed with back-pressure, one :class:`Outcome` per job as they finish."""

import collections
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import anyio.abc
import anyio.lowlevel

from .._core.clock import Clock
from .._core.errors import BatchStopped, KlingError, Scope
from .._core.models import Kind, Request
from ._ids import external_id_for
from ._job import Job, Phase
from ._lane import Lane
from ._outcome import BatchStatistics, JobStatus, Outcome
from ._store import BatchStore, NullStore

__all__ = ["Batch", "BatchHost"]


class BatchHost(Protocol):
    """What a batch needs of the engine it runs on (the engine implements it)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def lane(self) -> Lane: ...

    def check_open(self) -> None: ...

    def limits_now(self) -> dict[Kind, int]: ...


logger = logging.getLogger("kling_async")

_STATUS_FIELD = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.TIMED_OUT: "timed_out",
    JobStatus.STOPPED: "stopped",
}


class Batch:
    """Many jobs through one client: submit them, then read one outcome per job.

    Use it as an async context manager (``async with client.batch() as batch``).
    :meth:`submit` waits while ``max_pending`` jobs are not yet sent (back-pressure);
    finished outcomes are kept until read, so submitting everything and only then
    iterating never deadlocks. ``async for outcome in batch`` yields one
    :class:`Outcome` per job as jobs finish and never raises for a job's failure; it
    ends when submissions are closed and every job has ended. Starting to iterate
    closes submissions, unless a :meth:`feed` runs beside the loop (then they close
    when it ends).

    Leaving the ``async with`` block stops the batch: jobs not yet sent end STOPPED
    (recorded in the store), tasks already running stay counted against the account
    limit and are polled by the client until they end, but no longer reported.
    """

    def __init__(
        self,
        engine: BatchHost,
        *,
        batch_id: str,
        max_pending: int = 1000,
        deadline: float | None = None,
        store: BatchStore | None = None,
        finisher: Callable[[Outcome], Awaitable[Outcome]] | None = None,
        max_finishing: int = 4,
        prepare: "Callable[[Batch, contextlib.AsyncExitStack], Awaitable[None]] | None" = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be > 0 seconds")
        self.batch_id = batch_id
        self._engine = engine
        self._max_pending = max_pending
        self._deadline = deadline
        self._store: BatchStore = store if store is not None else NullStore()
        self._queues: dict[Kind, collections.deque[Job]] = {k: collections.deque() for k in Kind}
        self._queue_events = {kind: anyio.Event() for kind in Kind}
        self._admitting: dict[Kind, anyio.CancelScope | None] = dict.fromkeys(Kind)
        self._room = anyio.Semaphore(max_pending)
        self._outcomes: collections.deque[Outcome] = collections.deque()
        self._outcome_event = anyio.Event()
        self._keys: set[str] = set()
        self._unsent: set[Job] = set()
        self._accepted = 0
        self._delivered = 0
        self._phases = collections.Counter[Phase]()
        self._ends = collections.Counter[JobStatus]()
        self._requests = collections.Counter[str]()
        self._retries = 0
        self._reason: KlingError | None = None
        self._closed = False
        self._feeding = 0
        self._iterating = False
        self._entered = False
        self._detached = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._finisher = finisher
        self._finishing = anyio.Semaphore(max_finishing)
        self._prepare = prepare
        self._stack = contextlib.AsyncExitStack()
        self._journaled: set[str] = set()

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Batch can be entered only once")
        self._entered = True
        self._engine.check_open()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            for kind in Kind:
                await tg.start(self._dispatch, kind)
            if self._prepare is not None:
                await self._prepare(self, self._stack)
            self._engine.lane.scheduler.attach_store(self._store)  # learned run times
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def configure(
        self,
        *,
        batch_id: str | None = None,
        store: BatchStore | None = None,
        finisher: Callable[[Outcome], Awaitable[Outcome]] | None = None,
        prepare: "Callable[[Batch, contextlib.AsyncExitStack], Awaitable[None]] | None" = None,
    ) -> None:
        """Set the batch id, store, finisher or set-up while the batch has no job yet.

        ``prepare(batch, stack)`` runs when the batch is entered (after its dispatchers
        start); what it enters on ``stack`` is closed when the batch is left.

        Raises:
            RuntimeError: Jobs were already accepted.
        """
        if self._accepted:
            raise RuntimeError("configure() must come before the first job")
        if batch_id is not None:
            self.batch_id = batch_id
        if store is not None:
            self._store = store
        if finisher is not None:
            self._finisher = finisher
        if prepare is not None:
            self._prepare = prepare

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        try:
            suppress = await tg.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._stop_unsent()
                finally:
                    self._detached = True
                    self._notify()
                    await self._engine.lane.scheduler.detach_store(self._store)
                    await self._stack.aclose()
        return suppress

    async def _stop_unsent(self) -> None:
        left = KlingError("the batch was left before the job was sent", scope=Scope.BATCH)
        for job in list(self._unsent):
            self._engine.lane.abandon(job)
            if job.phase is not Phase.ENDED:
                job.move(Phase.ENDED)
                job.delivered = True
                stopped = BatchStopped(self._reason or left, job_key=job.key)
                await self.finished(
                    job,
                    job.outcome(JobStatus.STOPPED, self._engine.clock.wall(), error=stopped),
                )

    # -- feeding ----------------------------------------------------------------------------

    async def submit(self, request: Request, *, key: str) -> None:
        """Queue one job; wait while ``max_pending`` jobs are not yet sent.

        Args:
            request: The job's request.
            key: The job's key, unique within the batch (part of its external task id).

        Raises:
            ValueError: ``key`` is empty or already used in this batch.
            RuntimeError: Submissions are closed (iteration started, or the batch was left).
        """
        self._check_submittable()
        if key in self._journaled:
            # Known from the journal: the same request again is a no-op (the store raises
            # if the request differs).
            await self._store.pending(
                key, request.kind, request, external_id_for(self.batch_id, key)
            )
            return
        await self._submit(request, key)

    async def _submit(self, request: Request, key: str) -> None:
        job = self._new_job(key, request)
        self._keys.add(key)
        try:
            await self._room.acquire()
        except BaseException:
            self._keys.discard(key)
            raise
        try:
            await self._store.pending(key, job.kind, request, job.external_id)
        except BaseException:
            self._keys.discard(key)
            self._room.release()
            raise
        self._accepted += 1
        self._unsent.add(job)
        self._phases[Phase.QUEUED] += 1
        self._queues[job.kind].append(job)
        self._queue_events[job.kind].set()

    async def feed(
        self, jobs: AsyncIterable[tuple[str, Request]] | Iterable[tuple[str, Request]]
    ) -> None:
        """Submit ``(key, request)`` pairs from ``jobs``, beside an ``async for`` reading outcomes.

        While a feed runs, iteration does not end; submissions close when the last feed
        ends (if iteration has started).
        """
        self._feeding += 1
        try:
            self._check_submittable()
            if isinstance(jobs, AsyncIterable):
                async for key, request in jobs:
                    await self.submit(request, key=key)
            else:
                for key, request in jobs:
                    await self.submit(request, key=key)
        finally:
            self._feeding -= 1
            if self._iterating and self._feeding == 0:
                self._closed = True
            self._notify()

    def _new_job(self, key: str, request: Request, external_id: str | None = None) -> Job:
        if not isinstance(key, str) or not key:
            raise ValueError("a job key must be a non-empty string")
        if key in self._keys:
            raise ValueError(f"job key {key!r} is already used in this batch")
        clock = self._engine.clock
        return Job(
            key=key,
            request=request,
            kind=request.kind,
            slots=request.slots,
            external_id=external_id or external_id_for(self.batch_id, key),
            owner=self,
            queued_at=clock.wall(),
            deadline=None if self._deadline is None else clock.now() + self._deadline,
        )

    # -- resuming (the journal's seam) ------------------------------------------------------

    def restore(self, outcome: Outcome, *, finish: bool = False) -> None:
        """Yield ``outcome`` of a job that already ended (read back from a journal; no network).

        Args:
            outcome: The job's outcome.
            finish: Run the finisher on it first (a success whose files are missing).

        Raises:
            ValueError: The key is already used in this batch.
        """
        self._check_submittable()
        if outcome.key in self._keys:
            raise ValueError(f"job key {outcome.key!r} is already used in this batch")
        self._keys.add(outcome.key)
        self._journaled.add(outcome.key)
        self._accepted += 1
        self._ends[outcome.status] += 1
        if finish and outcome.ok and self._finisher is not None and self._tg is not None:
            self._tg.start_soon(self._finish, outcome)
            return
        self._emit(outcome)

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        """Run ``func(*args)`` in the batch's own task group (it ends with the batch)."""
        if self._tg is None:
            raise RuntimeError("the batch is not running")
        self._tg.start_soon(func, *args)

    def resume_pending(self, jobs: Iterable[tuple[str, Request]]) -> None:
        """Queue journaled PENDING jobs (already in the store) in the background.

        Their keys count as journaled at once: submitting one again before its turn comes
        is the usual no-op (or conflict), never a second job with the same key. They are
        queued with back-pressure, like a :meth:`feed` (iteration waits for them).
        """
        self._check_submittable()
        pending = list(jobs)
        self._journaled.update(key for key, _ in pending)
        self._feeding += 1
        self.start_soon(self._queue_pending, pending)

    async def _queue_pending(self, jobs: list[tuple[str, Request]]) -> None:
        try:
            for key, request in jobs:
                await self._submit(request, key)
        finally:
            self._feeding -= 1
            if self._iterating and self._feeding == 0:
                self._closed = True
            self._notify()

    async def resume(
        self,
        request: Request,
        *,
        key: str,
        external_id: str,
        task_id: str | None = None,
    ) -> None:
        """Continue a journaled job: poll its task, or reconcile its create.

        Args:
            request: The job's request (rebuilt from the journal).
            key: The job's key.
            external_id: The external id its create carried (or will carry).
            task_id: The task, when the journal says SUBMITTED: it goes straight to the
                scheduler. None (SUBMITTING): the task is looked up by ``external_id``
                first, adopted if found, created again only if provably absent.
        """
        self._check_submittable()
        job = self._new_job(key, request, external_id)
        self._keys.add(key)
        self._journaled.add(key)
        self._accepted += 1
        if task_id is not None:
            job.task_id = task_id
            self._phases[Phase.QUEUED] += 1  # moves to RUNNING at once
            await self._engine.lane.adopt(job)
            return
        await self._room.acquire()
        job.reconcile_first = True
        self._unsent.add(job)
        self._phases[Phase.QUEUED] += 1
        self._queues[job.kind].append(job)
        self._queue_events[job.kind].set()

    def _check_submittable(self) -> None:
        if not self._entered or self._tg is None:
            raise RuntimeError("use the batch inside `async with client.batch() as batch:`")
        if self._closed:
            raise RuntimeError("submissions to this batch are closed (iteration started)")

    # -- reading ----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        if not self._iterating:
            self._iterating = True
            # A feed() started beside this loop gets the chance to register first.
            await anyio.lowlevel.checkpoint()
            if self._feeding == 0:
                self._closed = True
        while True:
            if self._outcomes:
                return self._outcomes.popleft()
            if self._closed and self._feeding == 0 and self._delivered >= self._accepted:
                raise StopAsyncIteration
            if self._detached:
                raise StopAsyncIteration
            self._outcome_event = anyio.Event()
            await self._outcome_event.wait()

    def _notify(self) -> None:
        self._outcome_event.set()

    def statistics(self) -> BatchStatistics:
        """Return the batch's counters now."""
        return BatchStatistics(
            queued=self._phases[Phase.QUEUED],
            submitting=self._phases[Phase.SUBMITTING],
            running=self._phases[Phase.RUNNING],
            succeeded=self._ends[JobStatus.SUCCEEDED],
            failed=self._ends[JobStatus.FAILED],
            timed_out=self._ends[JobStatus.TIMED_OUT],
            stopped=self._ends[JobStatus.STOPPED],
            retries=self._retries,
            requests={what: self._requests[what] for what in ("create", "query", "list")},
            limits=self._engine.limits_now(),
        )

    # -- the dispatcher ---------------------------------------------------------------------

    async def _dispatch(self, kind: Kind, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        queue = self._queues[kind]
        lane = self._engine.lane
        task_status.started()
        while True:
            if not queue:
                self._queue_events[kind] = event = anyio.Event()
                await event.wait()
                continue
            job = queue.popleft()
            if self._reason is not None:
                await self._stop(job)
                continue
            with anyio.CancelScope() as scope:
                self._admitting[kind] = scope
                epoch = await lane.admit(job)
            self._admitting[kind] = None
            if scope.cancelled_caught:
                await self._stop(job)
                continue
            if epoch is not None and self._tg is not None:
                self._tg.start_soon(lane.run, job, epoch)

    async def _stop(self, job: Job) -> None:
        assert self._reason is not None
        job.move(Phase.ENDED)
        job.delivered = True
        stopped = BatchStopped(self._reason, job_key=job.key)
        await self.finished(
            job, job.outcome(JobStatus.STOPPED, self._engine.clock.wall(), error=stopped)
        )

    # -- JobOwner ---------------------------------------------------------------------------

    def count_request(self, what: str) -> None:
        """Count one request made for this batch."""
        self._requests[what] += 1

    def count_retry(self) -> None:
        """Count one retried request."""
        self._retries += 1

    def phase_changed(self, job: Job, old: Phase, new: Phase) -> None:
        """Keep the phase counters and the pending room up to date."""
        if job.delivered:
            return  # a timed-out job whose task still runs: already counted as ended
        self._phases[old] -= 1
        if new is not Phase.ENDED:
            self._phases[new] += 1
        if new in (Phase.RUNNING, Phase.ENDED) and job in self._unsent:
            self._unsent.discard(job)
            self._room.release()

    async def submitting(self, job: Job) -> None:
        """Write SUBMITTING before the create."""
        await self._store.submitting(job.key, job.external_id)

    async def submitted(self, job: Job) -> None:
        """Write SUBMITTED with the task id."""
        assert job.task_id is not None
        if not self._detached:
            await self._store.submitted(job.key, job.task_id)

    async def finished(self, job: Job, outcome: Outcome) -> None:
        """Record the job's end and keep its outcome until read."""
        if self._detached:
            return
        if job.phase is Phase.RUNNING:  # timed out while its task runs on
            self._phases[Phase.RUNNING] -= 1
        if job in self._unsent:
            self._unsent.discard(job)
            self._room.release()
        await self._store.finished(outcome)
        self._ends[outcome.status] += 1
        if outcome.ok and self._finisher is not None and self._tg is not None:
            # Downloads and the like run in the batch's own tasks, bounded, not in the poller.
            self._tg.start_soon(self._finish, outcome)
            return
        self._emit(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        assert self._finisher is not None
        async with self._finishing:
            try:
                outcome = await self._finisher(outcome)
            except Exception:
                logger.exception(
                    "finishing job %s failed; its outcome is reported as it was",
                    outcome.key,
                    extra={"job_key": outcome.key, "task_id": outcome.task_id, "request_id": None},
                )
        self._emit(outcome)

    def _emit(self, outcome: Outcome) -> None:
        self._delivered += 1
        self._outcomes.append(outcome)
        self._notify()

    def stop_reason(self) -> KlingError | None:
        """The error that opened this batch's circuit, if any."""
        return self._reason

    def open_circuit(self, reason: KlingError) -> None:
        """Stop sending creates: pending jobs will end STOPPED; running tasks are still polled."""
        if self._reason is not None:
            return
        self._reason = reason
        logger.error(
            "batch %s stopped: %s; unsent jobs end STOPPED, running tasks are still polled",
            self.batch_id,
            reason,
            extra={
                "job_key": reason.job_key,
                "task_id": reason.task_id,
                "request_id": reason.request_id,
            },
        )
        for scope in self._admitting.values():
            if scope is not None:
                scope.cancel()
