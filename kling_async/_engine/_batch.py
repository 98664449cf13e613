"""A batch: many jobs fed with back-pressure, one :class:`Outcome` per job as they finish."""

import collections
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias

import anyio
import anyio.abc

from .._core import lifetime
from .._core.clock import Clock
from .._core.errors import BatchStopped, KlingError, Scope
from .._core.models import Kind, Request
from ._ids import external_id_for
from ._job import Job, Phase
from ._lane import Lane
from ._outcome import BatchStatistics, JobStatus, Outcome
from ._store import BatchStore, NullStore

__all__ = ["Batch", "BatchControl", "BatchHost", "BatchProducer", "Prepare"]


class BatchHost(Protocol):
    """What a batch needs of the engine it runs on (the engine implements it)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def lane(self) -> Lane: ...

    def check_open(self) -> None: ...

    def limits_now(self) -> dict[Kind, int]: ...


logger = logging.getLogger("kling_async")


class Batch:
    """Many jobs through one client: submit them, read one outcome per job as jobs finish.

    Use it as an async context manager (``async with client.batch() as batch``).
    :meth:`submit` waits while ``max_pending`` jobs are not yet sent (back-pressure);
    finished outcomes are kept until read, so no way of mixing submits and reads
    deadlocks. ``async for outcome in batch`` yields one :class:`Outcome` per job and
    never raises for a job's failure. It ends once no input is open and every job
    submitted so far has been read:

    - submit everything, then iterate: the end of input is implicit;
    - a producer task beside the loop (or several): take one :meth:`producer` handle
      per producer *before* starting its task, and close it when the producer is done
      (``async with producer:``); input ends when the last open handle closes, as a
      memory stream ends when its last send clone closes. ``tg.start_soon(batch.feed,
      jobs)`` does the same for one iterable (it takes its handle at the call);
    - :meth:`submit` from inside the loop body (follow-up jobs) is always accepted:
      the loop has not ended while its body runs.

    Once the loop has ended, submitting raises ``RuntimeError``. Errors raised by your
    own code inside the ``async with`` block come out as themselves; a single error of
    the batch's own tasks comes out unwrapped (several: one ``ExceptionGroup``).

    Leaving the ``async with`` block stops the batch: jobs not yet sent end STOPPED
    (recorded in the store), tasks already running stay counted against the account
    limit and are polled by the client until they end, but no longer reported.
    """

    def __init__(
        self,
        engine: "BatchHost",  # a string: help(ka.Batch) shows no private type
        *,
        batch_id: str,
        max_pending: int = 1000,
        deadline: float | None = None,
        store: BatchStore | None = None,
        finisher: Callable[[Outcome], Awaitable[Outcome]] | None = None,
        max_finishing: int = 4,
        prepare: "Prepare | None" = None,
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
        self._in_finisher = 0  # succeeded tasks whose files are downloading
        self._requests = collections.Counter[str]()
        self._retries = 0
        self._reason: KlingError | None = None
        self._closed = False
        self._inputs = 0  # open producer handles (and internal feeders)
        self._submits = 0  # submit() calls under way
        self._ended = False  # the outcome stream has ended
        self._entered = False
        self._detached = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._finisher = finisher
        self._finishing = anyio.Semaphore(max_finishing)
        self._prepare = prepare
        self._stack = contextlib.AsyncExitStack()
        self._journaled: set[str] = set()
        self._reconcile_new = False
        self._owner = _JobOwner(self)
        self._control = BatchControl(self)

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
                await self._prepare(self._control, self._stack)
            self._engine.lane.scheduler.attach_store(self._store)  # learned run times
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _configure(
        self,
        *,
        batch_id: str | None = None,
        store: BatchStore | None = None,
        finisher: Callable[[Outcome], Awaitable[Outcome]] | None = None,
        prepare: "Prepare | None" = None,
    ) -> None:
        """Set the batch id, store, finisher or set-up while the batch has no job yet.

        ``prepare(control, stack)`` runs when the batch is entered (after its dispatchers
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
            try:
                suppress = await tg.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                leaves = _leaves(group, keep=exc)
                if len(leaves) != 1:
                    raise
                if leaves[0] is exc:
                    return False  # the caller's own error, re-raised as it was
                raise leaves[0] from None
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
                await self._finished(
                    job,
                    job.outcome(JobStatus.STOPPED, self._engine.clock.wall(), error=stopped),
                )

    # -- feeding ----------------------------------------------------------------------------

    async def submit(self, request: Request, *, key: str) -> None:
        """Queue one job; wait while ``max_pending`` jobs are not yet sent.

        Args:
            request: The job's request.
            key: The job's key, unique within the batch (part of its external task id).

        Accepted until the outcome loop has ended: before it, beside it (from a task
        holding a :meth:`producer` handle) and from inside its body.

        Raises:
            ValueError: ``key`` is empty or already used in this batch.
            RuntimeError: The outcome loop has ended, or the batch was left.
        """
        self._check_submittable()
        self._submits += 1
        try:
            if key in self._journaled:
                # Known from the journal: the same request again is a no-op (the store
                # raises if the request differs).
                await self._store.pending(
                    key, request.kind, request, external_id_for(self.batch_id, key)
                )
                return
            await self._submit(request, key)
        finally:
            self._submits -= 1
            self._notify()

    async def _submit(self, request: Request, key: str) -> None:
        job = self._new_job(key, request)
        job.reconcile_first = self._reconcile_new
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

    def producer(self) -> "BatchProducer":
        """Open an input handle for one producer; input ends when every open handle is closed.

        Take it *before* starting the producer's task, so the outcome loop knows more
        jobs may come however the tasks are scheduled; close it when the producer is
        done (``async with batch.producer() as producer:`` or ``producer.close()``)::

            async with client.batch() as batch, anyio.create_task_group() as tg:
                tg.start_soon(produce, batch.producer())  # produce() submits, then closes
                async for outcome in batch:
                    ...

        Raises:
            RuntimeError: The outcome loop has ended, or the batch was left.
        """
        self._check_submittable()
        return BatchProducer(self)

    def feed(
        self, jobs: AsyncIterable[tuple[str, Request]] | Iterable[tuple[str, Request]]
    ) -> Coroutine[Any, Any, None]:
        """Submit ``(key, request)`` pairs from ``jobs``; one producer, open from this call.

        The producer handle is taken when ``feed`` is called, not when its coroutine first
        runs, so ``tg.start_soon(batch.feed, jobs)`` (or ``tg.create_task(batch.feed(jobs))``)
        beside ``async for`` works in any order; await the result (or run it as a task).
        """
        return self.producer().feed(jobs)

    def _open_input(self) -> None:
        self._inputs += 1

    def _close_input(self) -> None:
        self._inputs -= 1
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
            owner=self._owner,
            queued_at=clock.wall(),
            deadline=None if self._deadline is None else clock.now() + self._deadline,
        )

    # -- resuming (the journal's seam, reached through BatchControl) -------------------------

    def _restore(self, outcome: Outcome, *, finish: bool = False) -> None:
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
        if finish and outcome.ok and self._finisher is not None and self._tg is not None:
            self._in_finisher += 1
            self._tg.start_soon(self._finish, outcome)
            return
        self._ends[outcome.status] += 1
        self._emit(outcome)

    def _start_soon(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        """Run ``func(*args)`` in the batch's own task group (it ends with the batch)."""
        if self._tg is None:
            raise RuntimeError("the batch is not running")
        self._tg.start_soon(func, *args)

    def _reconcile_new_jobs(self) -> None:
        """Look each job submitted from now on up by external id before its first create.

        For a journal that lost rows: a job it does not know may have been created by an
        earlier run. The lookup adopts the task found; only a definite "not found" lets
        the create go (one query per job, no create paid twice).
        """
        self._reconcile_new = True

    def _resume_pending(self, jobs: Iterable[tuple[str, Request]]) -> None:
        """Queue journaled PENDING jobs (already in the store) in the background.

        Their keys count as journaled at once: submitting one again before its turn comes
        is the usual no-op (or conflict), never a second job with the same key. They are
        queued with back-pressure, like a :meth:`feed` (iteration waits for them).
        """
        self._check_submittable()
        pending = list(jobs)
        self._journaled.update(key for key, _ in pending)
        self._open_input()
        self._start_soon(self._queue_pending, pending)

    async def _queue_pending(self, jobs: list[tuple[str, Request]]) -> None:
        try:
            for key, request in jobs:
                await self._submit(request, key)
        finally:
            self._close_input()

    async def _resume(
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
        if self._closed:
            raise RuntimeError("the batch was left: no more jobs can be submitted")
        if not self._entered or self._tg is None:
            raise RuntimeError("use the batch inside `async with client.batch() as batch:`")
        if self._ended:
            raise RuntimeError(
                "the batch's outcome loop has ended: no more jobs can be submitted (a "
                "producer task beside the loop takes `batch.producer()` before it starts)"
            )

    # -- reading ----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        while True:
            if self._outcomes:
                return self._outcomes.popleft()
            if self._detached or (
                not self._inputs and not self._submits and self._delivered >= self._accepted
            ):
                self._ended = True
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
            downloading=self._in_finisher,
            download_failed=self._ends[JobStatus.DOWNLOAD_FAILED],
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
        await self._finished(
            job, job.outcome(JobStatus.STOPPED, self._engine.clock.wall(), error=stopped)
        )

    # -- the jobs' owner (called by the lane and the scheduler through _JobOwner) -------------

    def _count_request(self, what: str) -> None:
        """Count one request made for this batch."""
        self._requests[what] += 1

    def _count_retry(self) -> None:
        """Count one retried request."""
        self._retries += 1

    def _phase_changed(self, job: Job, old: Phase, new: Phase) -> None:
        """Keep the phase counters and the pending room up to date."""
        if job.delivered:
            return  # a timed-out job whose task still runs: already counted as ended
        self._phases[old] -= 1
        if new is not Phase.ENDED:
            self._phases[new] += 1
        if new in (Phase.RUNNING, Phase.ENDED) and job in self._unsent:
            self._unsent.discard(job)
            self._room.release()

    async def _submitting(self, job: Job) -> None:
        """Write SUBMITTING before the create."""
        await self._store.submitting(job.key, job.external_id)

    async def _submitted(self, job: Job) -> None:
        """Write SUBMITTED with the task id."""
        assert job.task_id is not None
        if not self._detached:
            await self._store.submitted(job.key, job.task_id)

    async def _finished(self, job: Job, outcome: Outcome) -> None:
        """Record the job's end and keep its outcome until read."""
        if self._detached:
            return
        if job.phase is Phase.RUNNING:  # timed out while its task runs on
            self._phases[Phase.RUNNING] -= 1
        if job in self._unsent:
            self._unsent.discard(job)
            self._room.release()
        await self._store.finished(outcome)
        if outcome.ok and self._finisher is not None and self._tg is not None:
            # Downloads and the like run in the batch's own tasks, bounded, not in the poller;
            # the job is counted by how it ends once they are done (DOWNLOAD_FAILED too).
            self._in_finisher += 1
            self._tg.start_soon(self._finish, outcome)
            return
        self._ends[outcome.status] += 1
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
        self._in_finisher -= 1
        self._ends[outcome.status] += 1
        self._emit(outcome)

    def _emit(self, outcome: Outcome) -> None:
        self._delivered += 1
        self._outcomes.append(outcome)
        self._notify()

    def stop_reason(self) -> KlingError | None:
        """The error that opened this batch's circuit, if any."""
        return self._reason

    def _open_circuit(self, reason: KlingError) -> None:
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


class _JobOwner:
    """The batch as its jobs see it (the engine's ``JobOwner``), kept out of its public face."""

    def __init__(self, batch: Batch) -> None:
        self.count_request = batch._count_request
        self.count_retry = batch._count_retry
        self.phase_changed = batch._phase_changed
        self.submitting = batch._submitting
        self.submitted = batch._submitted
        self.finished = batch._finished
        self.stop_reason = batch.stop_reason
        self.open_circuit = batch._open_circuit


class BatchControl:
    """The owner's side of a :class:`Batch`: what the durable layer does to it.

    The journal and the downloads configure the batch, restore the jobs a journal holds
    and resume the ones still running; a ``prepare`` set-up receives this object, so the
    user's ``Batch`` handle shows only what users call.
    """

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self.configure = batch._configure
        self.restore = batch._restore
        self.start_soon = batch._start_soon
        self.reconcile_new_jobs = batch._reconcile_new_jobs
        self.resume_pending = batch._resume_pending
        self.resume = batch._resume
        self.feed = batch.feed
        self.statistics = batch.statistics
        self.stop_reason = batch.stop_reason

    @property
    def batch_id(self) -> str:
        """The batch id (part of every external task id)."""
        return self._batch.batch_id


Prepare: TypeAlias = Callable[[BatchControl, contextlib.AsyncExitStack], Awaitable[None]]
"""A batch's set-up, run when it is entered: ``prepare(control, stack)``."""


class BatchProducer:
    """One producer's input to a :class:`Batch` (from :meth:`Batch.producer`).

    The batch's outcome loop does not end while a handle is open. Close it when the
    producer is done: ``async with producer:``, ``await producer.aclose()`` or
    ``producer.close()`` (idempotent). Several handles may be open at once, one per
    producer task.
    """

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._open = True
        batch._open_input()

    async def __aenter__(self) -> Self:
        return self

    __aexit__ = lifetime.__aexit__

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<BatchProducer of batch {self._batch.batch_id!r} ({state})>"

    @property
    def closed(self) -> bool:
        """True once this handle is closed."""
        return not self._open

    async def submit(self, request: Request, *, key: str) -> None:
        """Submit one job through the batch (see :meth:`Batch.submit`).

        Raises:
            RuntimeError: This handle is closed.
        """
        if not self._open:
            raise RuntimeError("this producer is closed")
        await self._batch.submit(request, key=key)

    async def feed(
        self, jobs: AsyncIterable[tuple[str, Request]] | Iterable[tuple[str, Request]]
    ) -> None:
        """Submit every ``(key, request)`` pair of ``jobs``, then close this handle."""
        async with self:
            if isinstance(jobs, AsyncIterable):
                async for key, request in jobs:
                    await self.submit(request, key=key)
            else:
                for key, request in jobs:
                    await self.submit(request, key=key)

    def close(self) -> None:
        """End this producer's input (idempotent)."""
        if self._open:
            self._open = False
            self._batch._close_input()

    def __del__(self) -> None:
        # A handle dropped open (e.g. ``batch.feed(jobs)`` never awaited) must not keep the
        # outcome loop waiting forever.
        if getattr(self, "_open", False):
            self.close()

    async def aclose(self) -> None:
        """End this producer's input (idempotent)."""
        self.close()


def _leaves(
    group: BaseExceptionGroup[BaseException], *, keep: BaseException | None
) -> list[BaseException]:
    """The exceptions inside ``group``, nested groups flattened (``keep`` is not opened)."""
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup) and exc is not keep:
            leaves.extend(_leaves(exc, keep=keep))
        else:
            leaves.append(exc)
    return leaves
